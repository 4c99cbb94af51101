"""Finite-shot estimates of QDI expectation values, sampled from the exact Born distribution.

A device measuring ``shots`` times returns bitstrings ``s_1 .. s_S`` drawn i.i.d. from
``p(s) = |<s| V C psi>|^2`` (measurement basis: after the readout cascade and the basis change
that maps the measured Pauli to Z). The estimate of wire ``w`` is the sample mean of
``(-1)^{bit_w(s_i)}``: unbiased, with variance ``(1 - <P_w>^2) / S``, and the estimates of different
wires are correlated exactly as on hardware because whole bitstrings are sampled.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from .circuit import qdi_probabilities, z_expectations
from .config import QDIConfig

__all__ = ["sample_bitstrings", "sample_expectations"]


def sample_bitstrings(key: jax.Array, probs: jax.Array, shots: int) -> jax.Array:
    """Draw basis-state indices from each row of ``probs`` by inverse-CDF sampling.

    Args:
        key: PRNG key.
        probs: ``(B, 2**n)`` probabilities (rows sum to 1 up to rounding).
        shots: samples per row, ``>= 1``.

    Returns:
        ``(B, shots)`` int32 indices (wire 0 is the most significant bit).
    """
    cdf = jnp.cumsum(probs, axis=-1)
    # rounding can leave the last cdf entry just below 1; scale u by it so no draw runs off the end
    u = jax.random.uniform(key, (probs.shape[0], shots), dtype=probs.dtype) * cdf[:, -1:]
    idx = jax.vmap(lambda c, v: jnp.searchsorted(c, v, side="right"))(cdf, u)
    return jnp.minimum(idx, probs.shape[-1] - 1).astype(jnp.int32)


def sample_expectations(config: QDIConfig, inputs, weights, shots: int, key: jax.Array, *,
                        method: str = "auto") -> jax.Array:
    """Finite-shot estimates of :func:`~qallegro.quantum.circuit.qdi_expectations`.

    Values are shot-noise estimates; gradients are those of the exact expectation (the estimator is
    unbiased, so this is the gradient of its mean; a straight-through estimator:
    ``exact + stop_gradient(estimate - exact)``).

    Args:
        config: circuit hyperparameters.
        inputs: ``(*batch, in_features)`` angles in radians.
        weights: ``config.weight_shape``.
        shots: measurements per circuit, a positive integer.
        key: PRNG key; the same key gives the same estimates.
        method: simulation path for the exact probabilities (see ``qdi_expectations``).

    Returns:
        ``(*batch, config.n_outputs)`` estimates, multiples of ``2 / shots`` in ``[-1, 1]``.

    Raises:
        ValueError: if ``shots`` is not a positive integer, and as ``qdi_expectations``.
    """
    if isinstance(shots, bool) or not isinstance(shots, int) or shots < 1:
        raise ValueError(f"shots must be a positive integer (or None for exact), got {shots!r}")
    probs = qdi_probabilities(config, inputs, weights, method=method)
    batch = probs.shape[:-1]
    probs = probs.reshape((-1, config.dim))
    exact = z_expectations(config, probs)
    idx = sample_bitstrings(key, jax.lax.stop_gradient(probs), shots)  # (B, S)
    n = config.n_qubits
    bits = [(idx >> (n - 1 - w)) & 1 for w in config.measured_wires]
    est = jnp.stack([jnp.mean(1.0 - 2.0 * b.astype(probs.dtype), axis=-1) for b in bits], axis=-1)
    out = exact + jax.lax.stop_gradient(est - exact)
    return out.reshape(batch + (config.n_outputs,))
