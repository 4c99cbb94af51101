"""Allegro's channel-wise tensor product as a sparse bilinear map with its own VJP (fast forces on CPU).

Allegro couples, channel by channel, the tensor features of an edge with the environment of its centre:
out[e, k, c] = sum_{i, j} CG[i, j, k] x1[e, i, c] x2[e, j, c] (channels last: see `sparse_bilinear`), where CG
is the Clebsch-Gordan map of every allowed path (l1, l2) -> l_out, in e3nn's normalisation and output order. CG is
very sparse (83 of 9 x 9 x 35 entries for l_max = 2), so the product is computed term by term, and its VJP is the same
kind of sparse product with the transposed table (d/dx1[i] = sum CG[i, j, k] g[k] x2[j]). Writing the VJP by hand
keeps XLA from building one padded array per term in the backward pass, which is where e3nn's generic `tensor_product`
spends most of the time of a force call on CPU. Higher derivatives (training on forces) differentiate the VJP, which
is again this function.

The coefficients are read off `e3nn.tensor_product` itself (applied to basis vectors, in float64), so the result
equals e3nn's channel by channel to rounding (tests/test_tensor_product.py).

Path-channel coupling (nequip-allegro 0.8's ``tp_path_channel_coupling``): a trainable weight w[c, p] per channel c
and path p = (l1, l2) -> l_out multiplies that path's output (`couple_paths`). It is applied to the product's
result, outside the hand-written VJP: one elementwise multiply of the (..., paths dim, C) array by a (paths dim, C)
array, whose derivatives are again single elementwise products (no per-term arrays), while `sparse_bilinear` and its
transposed tables stay free of traced coefficients. XLA fuses the multiply with the stacking of the product's
components: an aspirin force call measured within the noise (+-4 %) of the time without coupling, and a training
step no slower (folding the weights into the next layer's linear maps instead, which saves the per-edge multiply,
measured no faster).
"""

from __future__ import annotations

import functools
from typing import Optional, Sequence, Tuple

import e3nn_jax as e3nn
import jax
import jax.numpy as jnp
import numpy as np

#: one output component's terms: ((i, j, coefficient), ...)
Table = Tuple[Tuple[Tuple[int, int, float], ...], ...]


@functools.lru_cache(maxsize=None)
def channelwise_paths(irreps1: str, irreps2: str, filter_ir_out: Tuple[str, ...]) -> Tuple[e3nn.Irreps, Table]:
    """Output irreps and sparse coefficient table of e3nn.tensor_product(irreps1, irreps2, filter_ir_out).

    Built in numpy from e3nn's Clebsch-Gordan coefficients, in e3nn.tensor_product's conventions: inputs regrouped,
    one block per (input irrep 1, input irrep 2, output irrep) in its loop order, "component" normalisation
    (CG * sqrt(2 l_out + 1)), output blocks sorted and regrouped. (Evaluating e3nn.tensor_product on basis vectors
    gives the same table, but compiles ~100 small XLA programs in every process.)

    Returns:
        (irreps_out, table) with table[k] = ((i, j, CG_ijk), ...) over the nonzero coefficients (``|CG| > 1e-12``).

    Raises:
        ValueError: e3nn's irrep normalisation is configured to something other than "component".
    """
    if e3nn.config("irrep_normalization") != "component":
        raise ValueError(f"channelwise_paths follows e3nn's 'component' irrep normalisation, but e3nn is "
                         f"configured with {e3nn.config('irrep_normalization')!r}")
    irreps1, irreps2 = e3nn.Irreps(irreps1), e3nn.Irreps(irreps2)
    keep = [e3nn.Irrep(ir) for ir in filter_ir_out]
    cg = np.einsum("ijk,ia,jb->abk", _regrouped_table(irreps1, irreps2, keep),
                   _regroup_matrix(irreps1), _regroup_matrix(irreps2))  # back to the inputs' own order
    irreps_out = _regrouped_output(irreps1, irreps2, keep)
    table = tuple(tuple((i, j, float(cg[i, j, k])) for i in range(irreps1.dim) for j in range(irreps2.dim)
                        if abs(cg[i, j, k]) > 1e-12) for k in range(irreps_out.dim))
    return irreps_out, table


def _regroup_matrix(irreps: e3nn.Irreps) -> np.ndarray:
    """(d, d) permutation matrix taking an array of `irreps` to its regrouped (sorted) component order."""
    slices = irreps.slices()
    order = np.concatenate([np.arange(slices[i].start, slices[i].stop) for i in irreps.sort().inv] or [[]])
    return np.eye(irreps.dim)[order.astype(int)]


def _blocks(irreps1: e3nn.Irreps, irreps2: e3nn.Irreps, keep):
    """e3nn.tensor_product's output blocks, unsorted: ((mul, ir_out), (d1, d2, mul * ir_out.dim) coefficients)
    over regrouped inputs."""
    r1, r2 = irreps1.regroup(), irreps2.regroup()
    blocks = []
    for (mul1, ir1), s1 in zip(r1, r1.slices()):
        for (mul2, ir2), s2 in zip(r2, r2.slices()):
            for ir_out in ir1 * ir2:
                if ir_out not in keep:  # as e3nn.tensor_product with filter_ir_out=list(keep)
                    continue
                cg = e3nn.clebsch_gordan(ir1.l, ir2.l, ir_out.l) * np.sqrt(ir_out.dim)
                block = np.zeros((r1.dim, r2.dim, mul1 * mul2, ir_out.dim))
                for u in range(mul1):
                    for v in range(mul2):
                        i0, j0 = s1.start + u * ir1.dim, s2.start + v * ir2.dim
                        block[i0:i0 + ir1.dim, j0:j0 + ir2.dim, u * mul2 + v] = cg
                blocks.append(((mul1 * mul2, ir_out), block.reshape(r1.dim, r2.dim, -1)))
    return blocks


def _regrouped_table(irreps1, irreps2, keep) -> np.ndarray:
    """(d1, d2, D) coefficients over regrouped inputs, output blocks in sorted order (as e3nn's output.sort())."""
    blocks = _blocks(irreps1, irreps2, keep)
    order = e3nn.Irreps([b[0] for b in blocks]).sort().inv
    dims = (irreps1.dim, irreps2.dim)
    return np.concatenate([blocks[i][1] for i in order], axis=-1) if blocks else np.zeros(dims + (0,))


def _regrouped_output(irreps1, irreps2, keep) -> e3nn.Irreps:
    return e3nn.Irreps([b[0] for b in _blocks(irreps1, irreps2, keep)]).sort().irreps.simplify()


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
    components = []
    for terms in table:
        acc = jnp.zeros(jnp.broadcast_shapes(a[..., 0, :].shape, b[..., 0, :].shape), jnp.result_type(a, b))
        for i, j, c in terms:
            acc = acc + c * a[..., i, :] * b[..., j, :]
        components.append(acc)
    return jnp.stack(components, axis=-2)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def sparse_bilinear(table: Table, a: jnp.ndarray, b: jnp.ndarray) -> jnp.ndarray:
    """out[..., k, :] = sum over table[k] of c * a[..., i, :] * b[..., j, :].

    a (..., n_a, C), b (..., n_b, C) -> (..., len(table), C): the component axis is the second to last, the
    channels (which the product does not mix) the last, so every term reads contiguous rows of C numbers."""
    return _apply(table, a, b)


def _sparse_bilinear_fwd(table, a, b):
    return _apply(table, a, b), (a, b)


def _sparse_bilinear_bwd(table, residuals, g):
    a, b = residuals
    return (sparse_bilinear(_transposed(table, a.shape[-2], 0), g, b),
            sparse_bilinear(_transposed(table, b.shape[-2], 1), g, a))


sparse_bilinear.defvjp(_sparse_bilinear_fwd, _sparse_bilinear_bwd)


def channelwise_tensor_product(x1: jnp.ndarray, x2: jnp.ndarray, irreps1: e3nn.Irreps, irreps2: e3nn.Irreps,
                               filter_ir_out: Sequence[str], path_weights: Optional[jnp.ndarray] = None
                               ) -> Tuple[e3nn.Irreps, jnp.ndarray]:
    """Channel-wise tensor product in the channels-last layout: for every channel c, the same as
    e3nn.tensor_product(IrrepsArray(irreps1, x1[..., :, c]), IrrepsArray(irreps2, x2[..., :, c]),
    filter_ir_out=filter_ir_out), optionally with path-channel coupling.

    Args:
        x1: (..., irreps1.dim, C); x2: (..., irreps2.dim, C), leading shapes broadcastable.
        filter_ir_out: the output irreps to keep, e.g. ["0e", "1o", "2e"] or ["0e"].
        path_weights: optional (C, P) weights, P = irreps_out.num_irreps paths in the output order (see
            `channelwise_path_labels`); path p of channel c is multiplied by path_weights[c, p] (`couple_paths`).
    Returns:
        (irreps_out, array (..., irreps_out.dim, C)): one entry per allowed path (l1, l2) -> l_out, in e3nn's
        order (sorted by output irrep, then by the position of l1 in irreps1 and of l2 in irreps2).
    """
    irreps_out, table = channelwise_paths(str(irreps1), str(irreps2), _filter_key(filter_ir_out))
    out = sparse_bilinear(table, x1, x2)
    return irreps_out, out if path_weights is None else couple_paths(out, irreps_out, path_weights)


def _filter_key(filter_ir_out: Sequence[str]) -> Tuple[str, ...]:
    return tuple(str(e3nn.Irrep(ir)) for ir in filter_ir_out)


@functools.lru_cache(maxsize=None)
def channelwise_path_labels(irreps1: str, irreps2: str, filter_ir_out: Tuple[str, ...]
                            ) -> Tuple[Tuple[e3nn.Irrep, e3nn.Irrep, e3nn.Irrep], ...]:
    """The path (ir1, ir2, ir_out) of every output irrep of `channelwise_paths`, in the output order.

    Read off the coefficient table (each output component's terms all belong to one path), so the labels follow
    whatever order e3nn produced. For irreps1 = irreps2 = 0e+1o+2e and all outputs this is nequip-allegro's
    instruction order too (for each output irrep, for each ir1, for each ir2), so weights are index-compatible.
    """
    irreps1, irreps2 = e3nn.Irreps(irreps1), e3nn.Irreps(irreps2)
    irreps_out, table = channelwise_paths(str(irreps1), str(irreps2), filter_ir_out)

    def owner(irreps, index):
        return next(ir for (_, ir), sl in zip(irreps, irreps.slices()) if sl.start <= index < sl.stop)

    labels, start = [], 0
    for mul, ir in irreps_out:
        for _ in range(mul):
            i, j, _ = table[start][0]  # a path's first component has a term: CG blocks have no zero rows
            labels.append((owner(irreps1, i), owner(irreps2, j), ir))
            start += ir.dim
    return tuple(labels)


def couple_paths(tp: jnp.ndarray, irreps_out: e3nn.Irreps, path_weights: jnp.ndarray) -> jnp.ndarray:
    """Path-channel coupling: out[..., k, c] = path_weights[c, path(k)] * tp[..., k, c].

    Args:
        tp: (..., irreps_out.dim, C), a channel-wise tensor product's output.
        irreps_out: its irreps, one irrep per path (e.g. 3x0e+4x1o+4x2e: 11 paths).
        path_weights: (C, irreps_out.num_irreps).
    Returns:
        (..., irreps_out.dim, C): every path's 2l+1 components scaled by the same weight per channel.
    Raises:
        ValueError: path_weights is not (C, number of paths).
    """
    irreps_out = e3nn.Irreps(irreps_out)
    if path_weights.shape != (tp.shape[-1], irreps_out.num_irreps):
        raise ValueError(f"path_weights must be (channels, paths) = {(tp.shape[-1], irreps_out.num_irreps)}, "
                         f"got {path_weights.shape}")
    # Static gather (P, C) -> (dim, C): the weight array is tiny, and the multiply is one fused elementwise op.
    component_path = np.repeat(np.arange(irreps_out.num_irreps), [ir.dim for mul, ir in irreps_out for _ in range(mul)])
    return tp * path_weights.T[component_path].astype(tp.dtype)
