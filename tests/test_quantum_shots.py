"""Finite-shot estimates: unbiased, with the binomial variance, seeded, exact gradients.

Statistical tolerances (fixed seeds, so the test is deterministic): with R independent replicas of
an S-shot estimate of <P> = m, the replica mean has standard error sqrt((1 - m^2) / (S R)) and is
required within 5 of them; the replica variance must match (1 - m^2) / S within 5 standard errors
of a variance estimate, sqrt(2 / (R - 1)) relative (normal approximation, S = 50).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from qallegro.quantum import QDIConfig, qdi_expectations
from qallegro.quantum.shots import sample_bitstrings, sample_expectations

CFG = QDIConfig(n_qubits=3, depth=2, rotation="Y", measure="Y", measurement_mode="none")
R, S = 4000, 50


def _setup():
    rng = np.random.default_rng(3)
    x = rng.uniform(-np.pi, np.pi, (2, CFG.in_features)).astype(np.float32)
    w = rng.uniform(0, 2 * np.pi, CFG.weight_shape).astype(np.float32)
    return x, w


def test_shot_estimates_mean_and_variance():
    x, w = _setup()
    exact = np.asarray(qdi_expectations(CFG, x, w, method="fused"))  # (2, 3)
    reps = jnp.repeat(jnp.asarray(x), R, axis=0)  # (2R, in): R replicas of each input
    est = np.asarray(sample_expectations(CFG, reps, w, S, jax.random.PRNGKey(0), method="fused"))
    est = est.reshape(2, R, CFG.n_outputs)
    # every estimate is a mean of S values +-1
    np.testing.assert_allclose(est * S / 2, np.round(est * S / 2), atol=1e-3)
    var_exact = (1.0 - exact**2) / S
    se_mean = np.sqrt(var_exact / R)
    assert np.all(np.abs(est.mean(1) - exact) <= 5 * se_mean + 1e-6), (est.mean(1), exact)
    rel = np.sqrt(2.0 / (R - 1))
    ratio = est.var(1, ddof=1) / var_exact
    assert np.all(np.abs(ratio - 1.0) <= 5 * rel), ratio


def test_bitstring_sampler_frequencies():
    probs = jnp.asarray([[0.1, 0.0, 0.6, 0.3]])
    idx = np.asarray(sample_bitstrings(jax.random.PRNGKey(1), probs, 20000))
    freq = np.bincount(idx[0], minlength=4) / 20000
    assert freq[1] == 0.0
    np.testing.assert_allclose(freq, [0.1, 0.0, 0.6, 0.3], atol=5 * np.sqrt(0.25 / 20000))


def test_shots_seeded_and_gradient_is_exact():
    x, w = _setup()
    k1, k2 = jax.random.PRNGKey(5), jax.random.PRNGKey(6)
    a = sample_expectations(CFG, x, w, 16, k1)
    np.testing.assert_array_equal(np.asarray(a), np.asarray(sample_expectations(CFG, x, w, 16, k1)))
    assert not np.array_equal(np.asarray(a), np.asarray(sample_expectations(CFG, x, w, 16, k2)))

    def loss_shots(ww):
        return jnp.sum(sample_expectations(CFG, x, ww, 16, k1, method="gates") ** 1)

    def loss_exact(ww):
        return jnp.sum(qdi_expectations(CFG, x, ww, method="gates"))

    np.testing.assert_allclose(np.asarray(jax.grad(loss_shots)(w)), np.asarray(jax.grad(loss_exact)(w)),
                               atol=1e-5)
    # jit-compatible
    b = jax.jit(lambda xx, ww, k: sample_expectations(CFG, xx, ww, 16, k))(x, w, k1)
    assert b.shape == (2, CFG.n_outputs)


@pytest.mark.parametrize("shots", [0, -3, 2.5, True])
def test_invalid_shots(shots):
    x, w = _setup()
    with pytest.raises(ValueError, match="shots must be a positive integer"):
        sample_expectations(CFG, x, w, shots, jax.random.PRNGKey(0))
