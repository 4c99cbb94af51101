"""Real-pair kernels shared by the two simulation paths of the QDI circuit.

Both paths (:mod:`.gate_path`, :mod:`.fused_path`) hold a batch of states as a real array
``(B, 2^n, 2)`` of (re, im) pairs: XLA:CPU multiplies complex matrices several times slower than
real ones, so every gate is applied as a real matrix (:func:`~qallegro.quantum.simulator.pair_matrix`).
This module holds what they have in common: one variational layer, the re-uploaded encoding, the
readout (CNOT cascade and basis change), Born probabilities and Z-expectations.

Each kernel is jit-compiled with only the static hyperparameters it needs. Under an outer jit they
are inlined (no cost); called eagerly they are compiled once per (kernel, static args, shapes) and
shared by every circuit that uses them, which keeps compile time low when many different circuits
are evaluated (tests, analyses).
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from . import simulator as sim
from .config import QDIConfig, entangler_pairs, measured_wires, readout_cascade

__all__ = [
    "MAX_BLOCK",
    "kernel",
    "layer_gates",
    "layer_kernel",
    "split_layers",
    "encode_pairs",
    "product_t",
    "readout_pairs",
    "probabilities_from_pairs",
    "z_expectations",
]

#: Wires per block of the product-gate GEMMs (:func:`~qallegro.quantum.simulator.apply_product_pairs`).
MAX_BLOCK = 4
# above this many qubits the (2^n, n_outputs) sign matrix is too large a constant; reduce instead
_ZMAT_MAX_QUBITS = 14

# RX/RY/RZ(x) H|0> = T (cos x/2, sin x/2)^T: the fixed map that lets both paths take a real input.
_PRODUCT_T = {
    "Z": np.array([[1.0, -1.0j], [1.0, 1.0j]]) / math.sqrt(2.0),
    "Y": np.array([[1.0, -1.0], [1.0, 1.0]]) / math.sqrt(2.0),
    "X": np.array([[1.0, -1.0j], [1.0, -1.0j]]) / math.sqrt(2.0),
}
_PAULI = {"X": sim.PAULI_X, "Y": sim.PAULI_Y, "Z": sim.PAULI_Z}
# V with V^dagger Z V = P: measuring Z after V is measuring P before it.
_BASIS_CHANGE = {"X": sim.HADAMARD, "Y": sim.HADAMARD @ sim.S_DAG, "Z": None}


def kernel(*static_argnames):
    """Decorator: ``jax.jit`` with the given keyword arguments static (see the module docstring)."""
    return functools.partial(jax.jit, static_argnames=static_argnames)


def layer_gates(w_layer: jax.Array, entangling: str) -> jax.Array:
    """``(n, 2, 2)`` single-qubit gates of one variational layer: ``Rot(w0, w1, w2)`` or ``RX(w)``."""
    if entangling == "strong":
        return sim.rot(w_layer[..., 0], w_layer[..., 1], w_layer[..., 2])
    return sim.rx(w_layer)


def _ring_layer_body(pairs, w_layer, n: int, entangling: str):
    """One variational layer on a real-pair state ``(B, 2^n, 2)``: rotations, then the CNOT ring."""
    gates = layer_gates(w_layer, entangling).astype(sim.complex_dtype(pairs.dtype))
    pairs = sim.apply_product_pairs(pairs, gates, n, MAX_BLOCK)
    ring = entangler_pairs(n, entangling)
    if ring:
        pairs = sim.permute_pairs(pairs, sim.permutation_index(ring, n))
    return pairs


@kernel("n", "entangling", "remat")
def layer_kernel(pairs, w_layer, *, n: int, entangling: str, remat: bool):
    """One variational layer (rotations, then the CNOT ring) as a kernel shared by every depth.

    Args:
        pairs: ``(B, 2^n, 2)`` real-pair states.
        w_layer: the layer's weights, ``weight_shape[2:]``.
        n: number of qubits.
        entangling: ``"strong"`` or ``"basic"``.
        remat: store only the layer's input for the backward pass and recompute the rest: memory
            ``O(B 2^n)`` per layer instead of per block of gates (large states).

    Returns:
        ``(B, 2^n, 2)`` states after the layer.
    """
    body = functools.partial(_ring_layer_body, n=n, entangling=entangling)
    if remat:
        body = jax.checkpoint(body)
    return body(pairs, w_layer)


def split_layers(weights) -> list[list[jax.Array]]:
    """``weights[c, l]`` for every chunk ``c`` and layer ``l`` as a nested list, in one primitive (cheap eagerly)."""
    n_chunks, depth = weights.shape[:2]
    flat = jnp.unstack(weights.reshape((n_chunks * depth,) + weights.shape[2:]))
    return [flat[c * depth:(c + 1) * depth] for c in range(n_chunks)]


@kernel("diagonal")
def _encode_kernel(pairs, x_chunk, pauli, *, diagonal: bool):
    """Encoding ``exp(-i x_k P / 2)`` on every wire of a real-pair state; ``x_chunk`` is ``(B, n)``.

    ``diagonal`` (P = Z): one elementwise phase, no gate application. Otherwise ``pauli`` is the
    (2, 2) matrix P and the per-sample gates ``cos(x/2) I - i sin(x/2) P`` are applied blockwise.
    """
    n = x_chunk.shape[-1]
    cdt = sim.complex_dtype(pairs.dtype)
    if diagonal:
        p = jnp.exp(-0.5j * x_chunk.astype(cdt))
        phase = sim.kron_vectors(jnp.stack([p, jnp.conj(p)], axis=-1))  # (B, 2^n)
        pr, pi = jnp.real(phase), jnp.imag(phase)
        re, im = pairs[..., 0], pairs[..., 1]
        return jnp.stack([re * pr - im * pi, re * pi + im * pr], axis=-1)
    c = jnp.cos(x_chunk / 2).astype(cdt)[..., None, None]
    s_ = jnp.sin(x_chunk / 2).astype(cdt)[..., None, None]
    gates = c * jnp.eye(2, dtype=cdt) - 1j * s_ * pauli.astype(cdt)  # (B, n, 2, 2)
    return sim.apply_product_pairs(pairs, gates, n, MAX_BLOCK)


def encode_pairs(pairs, x_chunk, cfg: QDIConfig):
    """Upload one chunk of data, ``x_chunk`` ``(B, n)`` radians, into ``(B, 2^n, 2)`` real-pair states."""
    pauli = jnp.asarray(_PAULI[cfg.rotation], dtype=sim.complex_dtype(pairs.dtype))
    return _encode_kernel(pairs, x_chunk, pauli, diagonal=cfg.rotation == "Z")


def product_t(cfg: QDIConfig, rdt):
    """The 2x2 ``T`` with ``R(x) H |0> = T (cos x/2, sin x/2)`` for ``cfg.rotation``, complex matching ``rdt``."""
    return jnp.asarray(_PRODUCT_T[cfg.rotation], dtype=sim.complex_dtype(rdt))


def _readout_gates(cfg: QDIConfig, cdt):
    """``(n, 2, 2)`` measurement basis change (identity on unmeasured wires), or None for Z."""
    v = _BASIS_CHANGE[cfg.measure]
    if v is None:
        return None
    eye = np.eye(2, dtype=np.complex128)
    return jnp.asarray(np.stack([v if w in cfg.measured_wires else eye
                                 for w in range(cfg.n_qubits)]), dtype=cdt)


@kernel("n", "cascade")
def _readout_kernel(pairs, basis_gates, *, n: int, cascade: bool):
    """Readout on a real-pair state: CNOT cascade (if ``cascade``), then the basis change
    ``basis_gates`` ((n, 2, 2) or None) that maps the measured Pauli to Z."""
    if cascade:
        pairs = sim.permute_pairs(pairs, sim.permutation_index(readout_cascade(n, "single"), n))
    if basis_gates is not None:
        pairs = sim.apply_product_pairs(pairs, basis_gates.astype(sim.complex_dtype(pairs.dtype)), n, MAX_BLOCK)
    return pairs


def readout_pairs(pairs, cfg: QDIConfig):
    """Map ``(B, 2^n, 2)`` states into the measurement basis: the ``"single"`` cascade, then ``H``
    (X) or ``H S^dagger`` (Y) on the measured wires, so that only Z remains to be measured."""
    return _readout_kernel(pairs, _readout_gates(cfg, sim.complex_dtype(pairs.dtype)), n=cfg.n_qubits,
                           cascade=cfg.measurement_mode == "single")


@kernel()
def probabilities_from_pairs(pairs):
    """Born probabilities ``|psi_s|^2``, ``(B, 2^n)``, of ``(B, 2^n, 2)`` real-pair states."""
    return jnp.sum(pairs * pairs, axis=-1)


@kernel("n", "mode")
def z_expectations(probs, *, n: int, mode: str):
    """``<Z_w>`` on the measured wires of ``mode`` from ``(B, 2^n)`` probabilities -> ``(B, n_outputs)``."""
    wires = measured_wires(n, mode)
    if n <= _ZMAT_MAX_QUBITS:
        return probs @ jnp.asarray(sim.expval_z_matrix(wires, n), dtype=probs.dtype)
    p = probs.reshape((probs.shape[0],) + (2,) * n)
    outs = []
    for w in wires:
        m = jnp.sum(p, axis=tuple(1 + k for k in range(n) if k != w))  # (B, 2) marginal
        outs.append(m[:, 0] - m[:, 1])
    return jnp.stack(outs, axis=-1)
