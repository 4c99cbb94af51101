"""The fused simulation path of the QDI circuit: one ``2^n x 2^n`` matrix per uploaded chunk.

Each chunk's data-independent part is multiplied into one matrix, built by running the gates on
the identity (:func:`chunk_unitary`), and applied to the batch as one real matrix product:
``O(batch * 4^n)`` work at GEMM speed, worth it for small ``n`` (:mod:`.method` chooses). Three
refinements make it fast:

1. the state after ``H`` and the first encoding is a product of ``T (cos x_k/2, sin x_k/2)`` with a
   fixed 2x2 ``T`` per rotation type, so ``T`` on every wire is folded into the matrix and the batch
   enters as the *real* Kronecker product ``r = (x) (cos x_k/2, sin x_k/2)``: the product
   ``r @ [Re M | Im M]`` is one real ``(B, N) x (N, 2N)`` GEMM, half the flops of a complex one;
2. the readout's CNOT cascade and the measurement basis change (``H`` for X, ``H S^dagger`` for Y)
   are folded into the last matrix so only Z-expectations, i.e. ``|psi|^2 @ (+-1 matrix)``, remain;
3. later chunks (re-uploading) use the complex state as a real pair and a ``(2N, 2N)`` real block
   matrix.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from . import simulator as sim
from .config import QDIConfig
from .kernels import (
    MAX_BLOCK,
    encode_pairs,
    kernel,
    layer_kernel,
    probabilities_from_pairs,
    product_t,
    readout_pairs,
    split_layers,
)

__all__ = ["chunk_unitary", "probabilities"]


@kernel("n")
def _encoded_identity(w_dummy, t, *, n: int):
    """Columns of ``T^{(x) n}`` (the identity if ``t`` is None) as real pairs ``(2^n, 2^n, 2)``;
    ``w_dummy`` only gives the real dtype."""
    dim = 2**n
    rdt = w_dummy.dtype
    cols = jnp.stack([jnp.eye(dim, dtype=rdt), jnp.zeros((dim, dim), dtype=rdt)], axis=-1)
    if t is not None:
        cols = sim.apply_product_pairs(cols, jnp.broadcast_to(t.astype(sim.complex_dtype(rdt)), (n, 2, 2)), n,
                                       MAX_BLOCK)
    return cols


def _chunk_columns(cfg: QDIConfig, w_layers, fold_encoding: bool, fold_readout: bool):
    """``U e_j`` for every basis vector ``e_j`` as a real-pair array ``(2^n [j], 2^n [s], 2)``;
    ``w_layers`` are the chunk's per-layer weights."""
    n = cfg.n_qubits
    t = product_t(cfg, w_layers[0].dtype) if fold_encoding else None
    cols = _encoded_identity(w_layers[0], t, n=n)
    for w_layer in w_layers:
        cols = layer_kernel(cols, w_layer, n=n, entangling=cfg.entangling, remat=False)
    if fold_readout:
        cols = readout_pairs(cols, cfg)
    return cols


def chunk_unitary(config: QDIConfig, weights, chunk: int, *, fold_encoding: bool = False,
                  fold_readout: bool = False) -> jax.Array:
    """The data-independent part of chunk ``chunk`` as a ``(2^n, 2^n)`` matrix ``U`` (``psi -> U psi``).

    ``U = [V C] L_depth ... L_1 [T^{(x) n}]`` where ``L`` are the variational layers of that chunk,
    ``T`` (if ``fold_encoding``) the fixed map from the real product input to the encoded state
    (only meaningful for chunk 0, see the module docstring) and ``V C`` (if ``fold_readout``) the
    readout CNOT cascade followed by the measurement basis change on the measured wires.

    Built by applying the gates to the ``2^n`` basis vectors as a batch: ``O(depth n 4^n)``.

    Args:
        config: circuit hyperparameters.
        weights: ``config.weight_shape``.
        chunk: which chunk's weights.
        fold_encoding: include ``T`` on every wire.
        fold_readout: include the readout cascade and basis change.

    Returns:
        Complex ``(2^n, 2^n)`` matrix (not unitary when ``fold_encoding`` with ``rotation="X"``).
    """
    weights = jnp.asarray(weights)
    weights = weights.astype(sim.real_dtype(weights))
    cols = _chunk_columns(config, split_layers(weights)[chunk], fold_encoding, fold_readout)
    return jax.lax.complex(cols[..., 0], cols[..., 1]).T  # cols[j, s] = U[s, j]


@kernel()
def _fused_first(x0, cols):
    """``psi = U r`` with ``r = (x)_k (cos x_k/2, sin x_k/2)`` real: one real GEMM against
    ``[Re U^T | Im U^T]``; returns real pairs ``(B, 2^n, 2)``."""
    dim = cols.shape[0]
    r = sim.kron_vectors(jnp.stack([jnp.cos(x0 / 2), jnp.sin(x0 / 2)], axis=-1))  # (B, N)
    y = r @ jnp.concatenate([cols[..., 0], cols[..., 1]], axis=1)  # (B, 2N)
    return jnp.stack([y[:, :dim], y[:, dim:]], axis=-1)


@kernel()
def _fused_apply(pairs, cols):
    """``psi -> U psi`` for a complex state as real pairs, ``U^T`` given as real-pair ``cols``:
    in the interleaved layout this is one real GEMM with ``pair_matrix(U)``."""
    dim = cols.shape[0]
    u = jax.lax.complex(cols[..., 0], cols[..., 1]).T
    a = sim.pair_matrix(u)
    return (pairs.reshape(-1, 2 * dim) @ a.T).reshape(-1, dim, 2)


def probabilities(cfg: QDIConfig, x, weights) -> jax.Array:
    """Born probabilities in the measurement basis, one matrix product per chunk.

    Args:
        cfg: circuit hyperparameters (``n_qubits`` at most :data:`~qallegro.quantum.method.FUSED_MAX_QUBITS`
            to be worth it; not checked here).
        x: ``(B, in_features)`` angles in radians, in the real dtype of the computation.
        weights: ``cfg.weight_shape`` in the same dtype.

    Returns:
        ``(B, 2^n)`` probabilities.
    """
    n = cfg.n_qubits
    last = cfg.n_chunks - 1
    layers = split_layers(weights)
    pairs = _fused_first(x[:, :n], _chunk_columns(cfg, layers[0], True, last == 0))
    for c in range(1, cfg.n_chunks):
        pairs = encode_pairs(pairs, x[:, c * n:(c + 1) * n], cfg)
        pairs = _fused_apply(pairs, _chunk_columns(cfg, layers[c], False, c == last))
    return probabilities_from_pairs(pairs)
