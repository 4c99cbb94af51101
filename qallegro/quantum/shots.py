"""Finite-shot estimates of QDI expectation values, sampled from the exact Born distribution.

A device measuring ``shots`` times returns bitstrings ``s_1 .. s_S`` drawn i.i.d. from
``p(s) = |<s| V C psi>|^2`` (measurement basis: after the readout cascade and the basis change
that maps the measured Pauli to Z). The estimate of wire ``w`` is the sample mean of
``(-1)^{bit_w(s_i)}``: unbiased, with variance ``(1 - <P_w>^2) / S``, and the estimates of different
wires are correlated exactly as on hardware because whole bitstrings are sampled: as the multinomial counts of
the basis states (the bitstrings up to their order, which no estimate uses).

Derivatives with respect to the encoding angles (what forces need) are estimated as a device would: by the
two-term parameter-shift rule, ``d<P>/dx_k = (<P>(x + pi/2 e_k) - <P>(x - pi/2 e_k)) / 2``, exact here because
every input angle sits in one rotation gate ``exp(-i x G / 2)`` with ``G`` a Pauli (Schuld et al., Phys. Rev. A
99, 032331 (2019)), and each of the ``2 * in_features`` shifted circuits is itself estimated from ``shots``
samples. Derivatives with respect to the trainable weights stay exact (training is done on the simulator).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from .circuit import qdi_probabilities, z_expectations
from .config import QDIConfig

__all__ = ["sample_counts", "sample_expectations"]


def sample_counts(key: jax.Array, probs: jax.Array, shots: int) -> jax.Array:
    """How often each basis state is seen in ``shots`` measurements of each row of ``probs``: a multinomial draw,
    the same information as the ``shots`` bitstrings themselves for any estimate built from them, in
    ``O(B * 2**n)`` memory instead of ``O(B * shots)``.

    Args:
        key: PRNG key.
        probs: ``(B, 2**n)`` probabilities (rows sum to 1 up to rounding; renormalised here).
        shots: measurements per row, ``>= 1``.

    Returns:
        ``(B, 2**n)`` counts (floating point, integer-valued), each row summing to ``shots``; wire 0 is the most
        significant bit of the basis-state index.
    """
    probs = probs / jnp.sum(probs, axis=-1, keepdims=True)
    return jax.random.multinomial(key, shots, probs, dtype=probs.dtype)


def sample_expectations(config: QDIConfig, inputs, weights, shots: int, key: jax.Array, *,
                        method: str = "auto") -> jax.Array:
    """Finite-shot estimates of :func:`~qallegro.quantum.circuit.qdi_expectations`.

    Values are shot-noise estimates. The derivative with respect to ``inputs`` is the parameter-shift estimate
    from ``2 * in_features`` further finite-shot circuits (module docstring), so forces carry the shot noise a
    device's forces would; the derivative with respect to ``weights``, and every higher derivative, is that of
    the exact expectation. Built from the exact, differentiable expectation plus constant noise terms:
    ``exact + sg(estimate - exact) + sum_k (x_k - sg(x_k)) * sg(J_est[k] - J_exact[k])`` (``sg``: stop_gradient).

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
    inputs = jnp.asarray(inputs)
    batch, f = inputs.shape[:-1], inputs.shape[-1]
    x = inputs.reshape((-1, f))
    probs = qdi_probabilities(config, x, weights, method=method)  # (B, dim), differentiable
    exact = z_expectations(config, probs)  # (B, n_out)
    value_noise = _estimates(config, key, jax.lax.stop_gradient(probs), shots) - jax.lax.stop_gradient(exact)
    # the 2F shifted circuits of the parameter-shift rule, each estimated from its own `shots` samples
    x_sg, w_sg = jax.lax.stop_gradient(x), jax.lax.stop_gradient(weights)
    shifts = (jnp.pi / 2) * jnp.concatenate([jnp.eye(f), -jnp.eye(f)]).astype(x.dtype)  # (2F, F)
    shifted = qdi_probabilities(config, x_sg[:, None, :] + shifts, w_sg, method=method).reshape((-1, config.dim))
    shift_noise = (_estimates(config, jax.random.fold_in(key, 1), shifted, shots)
                   - z_expectations(config, shifted)).reshape((x.shape[0], 2 * f, -1))
    jac_noise = (shift_noise[:, :f] - shift_noise[:, f:]) / 2  # (B, F, n_out): shift-rule estimate minus exact
    out = exact + value_noise + jnp.einsum("bf,bfo->bo", x - x_sg, jac_noise)
    return out.reshape(batch + (config.n_outputs,))


def _estimates(config: QDIConfig, key: jax.Array, probs: jax.Array, shots: int) -> jax.Array:
    """``(B, n_outputs)`` sample means of ``(-1)^bit`` on the measured wires over ``shots`` measurements of each
    row of ``probs`` ``(B, dim)``."""
    counts = sample_counts(key, probs, shots)  # (B, dim)
    n = config.n_qubits
    index = np.arange(config.dim)[:, None]
    signs = 1.0 - 2.0 * ((index >> (n - 1 - np.asarray(config.measured_wires))[None, :]) & 1)  # (dim, n_out)
    return counts @ jnp.asarray(signs, probs.dtype) / shots
