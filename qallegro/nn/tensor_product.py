"""Allegro's channel-wise tensor product as a sparse bilinear map with its own VJP (fast forces on CPU).

Allegro couples, channel by channel, the tensor features of an edge with the environment of its centre:
out[e, c, k] = sum_{i, j} CG[i, j, k] x1[e, c, i] x2[e, c, j], where CG is the Clebsch-Gordan map of every
allowed path (l1, l2) -> l_out, in e3nn's normalisation and output order. CG is very sparse (83 of 9 x 9 x 35
entries for l_max = 2), so the product is computed term by term, and its VJP is the same kind of sparse product
with the transposed table (d/dx1[i] = sum CG[i, j, k] g[k] x2[j]). Writing the VJP by hand keeps XLA from
building one padded array per term in the backward pass, which is where e3nn's generic `tensor_product` spends
most of the time of a force call on CPU. Higher derivatives (training on forces) differentiate the VJP, which is
again this function.

The coefficients are read off `e3nn.tensor_product` itself (applied to basis vectors, in float64), so the result
equals `e3nn.tensor_product(x1, x2, filter_ir_out=...)` to rounding (tests/test_tensor_product.py).
"""

from __future__ import annotations

import functools
from typing import Sequence, Tuple

import e3nn_jax as e3nn
import jax
import jax.numpy as jnp
import numpy as np

#: one output component's terms: ((i, j, coefficient), ...)
Table = Tuple[Tuple[Tuple[int, int, float], ...], ...]


@functools.lru_cache(maxsize=None)
def channelwise_paths(irreps1: str, irreps2: str, filter_ir_out: Tuple[str, ...]) -> Tuple[e3nn.Irreps, Table]:
    """Output irreps and sparse coefficient table of e3nn.tensor_product(irreps1, irreps2, filter_ir_out).

    Returns:
        (irreps_out, table) with table[k] = ((i, j, CG_ijk), ...) over the nonzero coefficients (|CG| > 1e-12).
    """
    irreps1, irreps2 = e3nn.Irreps(irreps1), e3nn.Irreps(irreps2)
    with jax.enable_x64(True):
        eye1, eye2 = jnp.eye(irreps1.dim, dtype=jnp.float64), jnp.eye(irreps2.dim, dtype=jnp.float64)

        def product(a, b):
            return e3nn.tensor_product(e3nn.IrrepsArray(irreps1, a), e3nn.IrrepsArray(irreps2, b),
                                       filter_ir_out=list(filter_ir_out))

        irreps_out = product(eye1[0], eye2[0]).irreps
        cg = np.asarray(jax.vmap(lambda a: jax.vmap(lambda b: product(a, b).array)(eye2))(eye1))  # (d1, d2, D)
    table = tuple(tuple((i, j, float(cg[i, j, k])) for i in range(irreps1.dim) for j in range(irreps2.dim)
                        if abs(cg[i, j, k]) > 1e-12) for k in range(irreps_out.dim))
    return irreps_out, table


@functools.lru_cache(maxsize=None)
def _transposed(table: Table, n_in: int, side: int) -> Table:
    """Table of the VJP with respect to input `side` (0: x1, 1: x2); n_in components of that input."""
    rows = [[] for _ in range(n_in)]
    for k, terms in enumerate(table):
        for i, j, c in terms:
            if side == 0:
                rows[i].append((k, j, c))  # d/dx1[i] = sum_k c g[k] x2[j]
            else:
                rows[j].append((k, i, c))  # d/dx2[j] = sum_k c g[k] x1[i]
    return tuple(tuple(r) for r in rows)


def _apply(table: Table, a: jnp.ndarray, b: jnp.ndarray) -> jnp.ndarray:
    columns = []
    for terms in table:
        acc = jnp.zeros(jnp.broadcast_shapes(a.shape[:-1], b.shape[:-1]), jnp.result_type(a, b))
        for i, j, c in terms:
            acc = acc + c * a[..., i] * b[..., j]
        columns.append(acc)
    return jnp.stack(columns, axis=-1)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def sparse_bilinear(table: Table, a: jnp.ndarray, b: jnp.ndarray) -> jnp.ndarray:
    """out[..., k] = sum over table[k] of c * a[..., i] * b[..., j]; a (..., n_a), b (..., n_b) -> (..., len(table))."""
    return _apply(table, a, b)


def _sparse_bilinear_fwd(table, a, b):
    return _apply(table, a, b), (a, b)


def _sparse_bilinear_bwd(table, residuals, g):
    a, b = residuals
    return (sparse_bilinear(_transposed(table, a.shape[-1], 0), g, b),
            sparse_bilinear(_transposed(table, b.shape[-1], 1), g, a))


sparse_bilinear.defvjp(_sparse_bilinear_fwd, _sparse_bilinear_bwd)


def channelwise_tensor_product(x1: e3nn.IrrepsArray, x2: e3nn.IrrepsArray,
                               filter_ir_out: Sequence[str]) -> e3nn.IrrepsArray:
    """Channel-wise tensor product, equal to e3nn.tensor_product(x1, x2, filter_ir_out=filter_ir_out).

    Args:
        x1, x2: IrrepsArrays of shape (..., irreps.dim) with broadcastable leading shapes (e.g. (E, C, 9)).
        filter_ir_out: the output irreps to keep, e.g. ["0e", "1o", "2e"] or ["0e"].
    Returns:
        IrrepsArray (..., irreps_out.dim), one entry per allowed path, in e3nn's order.
    """
    irreps_out, table = channelwise_paths(str(x1.irreps), str(x2.irreps), tuple(str(e3nn.Irrep(ir))
                                                                              for ir in filter_ir_out))
    return e3nn.IrrepsArray(irreps_out, sparse_bilinear(table, x1.array, x2.array))
