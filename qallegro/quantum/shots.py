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

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.custom_derivatives import SymbolicZero

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
    device's forces would; the derivative with respect to ``weights``, and the derivatives of these derivatives,
    are those of the exact expectation (a custom JVP: the shifted circuits are simulated only when a derivative
    with respect to the inputs is taken, so an energy alone costs one circuit).

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
    out = _sampled(config, shots, method, inputs.reshape((-1, f)), weights, key)
    return out.reshape(batch + (config.n_outputs,))


def _exact(config: QDIConfig, method: str, x, weights) -> jax.Array:
    return z_expectations(config, qdi_probabilities(config, x, weights, method=method))


@functools.partial(jax.custom_jvp, nondiff_argnums=(0, 1, 2))
def _sampled(config: QDIConfig, shots: int, method: str, x, weights, key) -> jax.Array:
    """``(B, n_out)`` estimates of the circuits at ``x`` ``(B, F)`` from ``shots`` measurements each."""
    probs = qdi_probabilities(config, x, weights, method=method)
    return _estimates(config, key, probs, shots)


@functools.partial(_sampled.defjvp, symbolic_zeros=True)
def _sampled_jvp(config: QDIConfig, shots: int, method: str, primals, tangents):
    # The exact derivative, plus (for the input angles) the shot noise of the parameter-shift estimate; the
    # 2F shifted circuits are simulated only here, when a derivative with respect to the inputs is taken.
    x, weights, key = primals
    x_dot, w_dot, _ = tangents
    value = _sampled(config, shots, method, x, weights, key)
    x_zero, w_zero = isinstance(x_dot, SymbolicZero), isinstance(w_dot, SymbolicZero)
    if x_zero and w_zero:
        return value, jnp.zeros_like(value)
    x_dot = jnp.zeros_like(x) if x_zero else x_dot
    w_dot = jnp.zeros_like(weights) if w_zero else w_dot
    _, exact_dot = jax.jvp(functools.partial(_exact, config, method), (x, weights), (x_dot, w_dot))
    if x_zero:
        return value, exact_dot
    f = x.shape[-1]
    x_c, w_c = jax.lax.stop_gradient(x), jax.lax.stop_gradient(weights)
    shifts = (jnp.pi / 2) * jnp.concatenate([jnp.eye(f), -jnp.eye(f)]).astype(x.dtype)  # (2F, F)
    shifted = qdi_probabilities(config, x_c[:, None, :] + shifts, w_c, method=method).reshape((-1, config.dim))
    noise = (_estimates(config, jax.random.fold_in(key, 1), shifted, shots)
             - z_expectations(config, shifted)).reshape((x.shape[0], 2 * f, -1))
    jac_noise = jax.lax.stop_gradient((noise[:, :f] - noise[:, f:]) / 2)  # (B, F, n_out): estimate minus exact
    return value, exact_dot + jnp.einsum("bf,bfo->bo", x_dot, jac_noise)


def _estimates(config: QDIConfig, key: jax.Array, probs: jax.Array, shots: int) -> jax.Array:
    """``(B, n_outputs)`` sample means of ``(-1)^bit`` on the measured wires over ``shots`` measurements of each
    row of ``probs`` ``(B, dim)``."""
    counts = sample_counts(key, probs, shots)  # (B, dim)
    n = config.n_qubits
    index = np.arange(config.dim)[:, None]
    signs = 1.0 - 2.0 * ((index >> (n - 1 - np.asarray(config.measured_wires))[None, :]) & 1)  # (dim, n_out)
    return counts @ jnp.asarray(signs, probs.dtype) / shots
