"""The gate-by-gate simulation path of the QDI circuit: gates applied to the batched state.

Work ``O(batch * depth * n * 2^n)``, memory ``O(batch * 2^n)``: the only choice for large ``n``.

* :func:`probabilities` is the fast form. The state is a real array of (re, im) pairs
  (:mod:`.kernels`); H, the first encoding and the first layer's rotations act on a product state
  and are applied to ``n`` two-component vectors before expanding to ``2^n`` amplitudes; each further
  layer's rotations are a few small real GEMMs on blocks of up to 4 wires
  (:func:`~qallegro.quantum.simulator.apply_product_pairs`) and its CNOT ring one gather; for large
  states each layer is recomputed in the backward pass instead of stored.
* :func:`final_state` is the plain complex statevector, one gate after the other, written to read
  like the circuit's definition; :func:`~qallegro.quantum.circuit.qdi_state` returns it.
"""

from __future__ import annotations

import math
from typing import Optional

import jax
import jax.numpy as jnp

from . import simulator as sim
from .config import QDIConfig, entangler_pairs
from .kernels import (
    encode_pairs,
    kernel,
    layer_gates,
    layer_kernel,
    probabilities_from_pairs,
    product_t,
    readout_pairs,
    split_layers,
)

__all__ = ["final_state", "probabilities", "REMAT_MIN_AMPLITUDES"]

#: Recompute layers in the backward pass (jax.checkpoint) once a state has this many amplitudes
#: (2^22 complex pairs = 32 MiB in float32); below it storing the intermediates is cheaper.
REMAT_MIN_AMPLITUDES = 2**22

_ROT_FN = {"X": sim.rx, "Y": sim.ry, "Z": sim.rz}


# ------------------------------------------------------------------------- complex statevector


def _apply_cnots(state, pairs, n_qubits, use_perm: bool):
    if not pairs:
        return state
    if use_perm:
        return sim.apply_permutation(state, sim.cnot_sequence_permutation(pairs, n_qubits), n_qubits)
    for c, t in pairs:
        state = sim.apply_cnot(state, c, t, n_qubits)
    return state


def _variational_block(state, w_chunk, cfg: QDIConfig, use_perm: bool):
    """``depth`` layers of rotations + entangling ring; ``w_chunk`` has shape ``weight_shape[1:]``."""
    pairs = entangler_pairs(cfg.n_qubits, cfg.entangling)
    for layer in range(cfg.depth):
        gates = layer_gates(w_chunk[layer], cfg.entangling)
        state = sim.apply_single_qubit_layer(state, gates, cfg.n_qubits)
        state = _apply_cnots(state, pairs, cfg.n_qubits, use_perm)
    return state


def _z_phase(x_chunk, n_qubits, cdtype):
    """``diag(RZ(x_0) x ... x RZ(x_{n-1}))`` as a ``(*batch, 2, ..., 2)`` array."""
    p = jnp.exp(-0.5j * x_chunk.astype(cdtype))  # (*batch, n)
    vecs = jnp.stack([p, jnp.conj(p)], axis=-1)
    flat = sim.kron_vectors(vecs)
    return flat.reshape(flat.shape[:-1] + (2,) * n_qubits)


def _encode(state, x_chunk, cfg: QDIConfig):
    """Encoding rotations, ``x_chunk`` shape ``(*batch, n_qubits)``; RZ is applied as a diagonal phase."""
    n = cfg.n_qubits
    if cfg.rotation == "Z":
        return state * _z_phase(x_chunk, n, state.dtype)
    gates = _ROT_FN[cfg.rotation](x_chunk)  # (*batch, n, 2, 2)
    return sim.apply_single_qubit_layer(state, gates, n)


def final_state(cfg: QDIConfig, inputs, weights, *, use_perm: bool = False) -> jax.Array:
    """State before the readout, gate by gate on a complex statevector.

    Args:
        cfg: circuit hyperparameters.
        inputs: ``(*batch, in_features)`` angles in radians, already in the real dtype ``rdt`` of the
            computation (see :func:`~qallegro.quantum.simulator.real_dtype`).
        weights: ``cfg.weight_shape`` in ``rdt``.
        use_perm: apply each CNOT ring as one basis permutation (gather) instead of CNOT by CNOT.

    Returns:
        ``(*batch, 2, ..., 2)`` complex state, ``complex_dtype(rdt)``.
    """
    n = cfg.n_qubits
    batch = inputs.shape[:-1]
    # H^n |0> = uniform superposition, written directly.
    state = jnp.full(batch + (2,) * n, 1.0 / math.sqrt(2**n), dtype=sim.complex_dtype(inputs.dtype))
    for c in range(cfg.n_chunks):
        state = _encode(state, inputs[..., c * n:(c + 1) * n], cfg)
        state = _variational_block(state, weights[c], cfg, use_perm)
    return state


# ---------------------------------------------------------------------------- real-pair path


@kernel("entangling")
def _product_start(x0, w_layer0, t, *, entangling: str):
    """State after H, the chunk-0 encoding and the first variational layer, as real pairs.

    Up to the first CNOT ring everything acts on a product state, so it is applied to ``n``
    two-component vectors ``T (cos x_k/2, sin x_k/2)`` (``t`` is the 2x2 ``T``) and only then
    expanded to ``2^n`` amplitudes.
    """
    n = x0.shape[-1]
    cdt = sim.complex_dtype(x0.dtype)
    r = jnp.stack([jnp.cos(x0 / 2), jnp.sin(x0 / 2)], axis=-1).astype(cdt)  # (B, n, 2)
    g0 = layer_gates(w_layer0, entangling).astype(cdt)
    mat = jnp.einsum("kij,jl->kil", g0, t.astype(cdt))
    flat = sim.kron_vectors(jnp.einsum("kij,bkj->bki", mat, r))
    pairs = jnp.stack([jnp.real(flat), jnp.imag(flat)], axis=-1)  # (B, 2^n, 2)
    ring = entangler_pairs(n, entangling)
    if ring:
        pairs = sim.permute_pairs(pairs, sim.permutation_index(ring, n))
    return pairs


def probabilities(cfg: QDIConfig, x, weights, remat: Optional[bool] = None) -> jax.Array:
    """Born probabilities in the measurement basis, gate by gate on real-pair states.

    Args:
        cfg: circuit hyperparameters.
        x: ``(B, in_features)`` angles in radians, in the real dtype of the computation.
        weights: ``cfg.weight_shape`` in the same dtype.
        remat: recompute each layer in the backward pass; default: once ``B * 2^n`` reaches
            :data:`REMAT_MIN_AMPLITUDES`.

    Returns:
        ``(B, 2^n)`` probabilities.
    """
    n = cfg.n_qubits
    if remat is None:
        remat = x.shape[0] * cfg.dim >= REMAT_MIN_AMPLITUDES
    layers = split_layers(weights)
    pairs = _product_start(x[:, :n], layers[0][0], product_t(cfg, x.dtype), entangling=cfg.entangling)
    for c in range(cfg.n_chunks):
        if c > 0:
            pairs = encode_pairs(pairs, x[:, c * n:(c + 1) * n], cfg)
        for w_layer in layers[c][1 if c == 0 else 0:]:
            pairs = layer_kernel(pairs, w_layer, n=n, entangling=cfg.entangling, remat=remat)
    return probabilities_from_pairs(readout_pairs(pairs, cfg))
