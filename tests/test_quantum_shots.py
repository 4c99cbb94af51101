"""Finite-shot estimates: unbiased, with the binomial variance, seeded; input derivatives by the parameter-shift
rule with their own shot noise, weight derivatives exact.

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
from qallegro.quantum.shots import sample_counts, sample_expectations

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


def test_counts_frequencies():
    probs = jnp.asarray([[0.1, 0.0, 0.6, 0.3], [0.25, 0.25, 0.25, 0.25]])
    counts = np.asarray(sample_counts(jax.random.PRNGKey(1), probs, 20000))
    np.testing.assert_array_equal(counts.sum(-1), [20000, 20000])
    assert counts[0, 1] == 0.0 and np.all(counts == np.round(counts))
    np.testing.assert_allclose(counts / 20000, probs, atol=5 * np.sqrt(0.25 / 20000))


def test_wire_estimates_are_correlated_as_whole_bitstrings():
    # Cov(est_a, est_b) = (<Z_a Z_b> - <Z_a><Z_b>) / S: the wires of one shot come from one bitstring
    cfg = QDIConfig(n_qubits=2, depth=1, rotation="Y", measure="Z")
    probs = np.array([0.4, 0.1, 0.1, 0.4])  # |00> and |11> likely: the two wires agree
    z = np.array([[1, 1], [1, -1], [-1, 1], [-1, -1]], float)  # (-1)^bit of wires 0, 1 per basis state
    from qallegro.quantum.shots import _estimates

    est = np.asarray(_estimates(cfg, jax.random.PRNGKey(3), jnp.asarray(np.tile(probs, (R, 1)), jnp.float32), S))
    mean = probs @ z
    cov = (probs @ (z[:, 0] * z[:, 1]) - mean[0] * mean[1]) / S
    assert abs(np.cov(est.T)[0, 1] - cov) < 5 * np.sqrt(2.0 / (R - 1)) * cov


def test_shots_seeded_and_weight_gradient_is_exact():
    x, w = _setup()
    k1, k2 = jax.random.PRNGKey(5), jax.random.PRNGKey(6)
    sample = jax.jit(lambda xx, ww, k: sample_expectations(CFG, xx, ww, 16, k))  # jit-compatible
    a = sample(x, w, k1)
    assert a.shape == (2, CFG.n_outputs)
    np.testing.assert_array_equal(np.asarray(a), np.asarray(sample(x, w, k1)))
    assert not np.array_equal(np.asarray(a), np.asarray(sample(x, w, k2)))

    def loss_shots(ww):
        return jnp.sum(sample_expectations(CFG, x, ww, 16, k1, method="gates") ** 1)

    def loss_exact(ww):
        return jnp.sum(qdi_expectations(CFG, x, ww, method="gates"))

    np.testing.assert_allclose(np.asarray(jax.jit(jax.grad(loss_shots))(w)),
                               np.asarray(jax.jit(jax.grad(loss_exact))(w)), atol=1e-5)

    # what training on forces differentiates: the weight gradient of an input derivative. Its shot noise is a
    # constant, so the weight gradient of a linear function of it is the exact one
    c = np.random.default_rng(0).normal(size=x.shape).astype(np.float32)

    def force_like(expectations):
        return lambda ww: jnp.sum(jax.grad(lambda xx: jnp.sum(expectations(xx, ww)))(x) * c)

    shots_fn = lambda xx, ww: sample_expectations(CFG, xx, ww, 16, k1, method="gates")  # noqa: E731
    exact_fn = lambda xx, ww: qdi_expectations(CFG, xx, ww, method="gates")  # noqa: E731
    assert not np.allclose(np.asarray(jax.grad(lambda xx: jnp.sum(shots_fn(xx, w)))(x)),
                           np.asarray(jax.grad(lambda xx: jnp.sum(exact_fn(xx, w)))(x)))  # noisy input derivative
    np.testing.assert_allclose(np.asarray(jax.jit(jax.grad(force_like(shots_fn)))(w)),
                               np.asarray(jax.jit(jax.grad(force_like(exact_fn)))(w)), atol=1e-5)


@pytest.mark.parametrize("rotation", ["X", "Y", "Z"])
def test_parameter_shift_rule_is_exact_for_the_encoding(rotation, x64):
    # the premise of the shot-noise derivatives: every input angle sits in one Pauli rotation, so the two-term
    # shift rule equals the analytic Jacobian (it would not if an angle were uploaded twice)
    cfg = QDIConfig(n_qubits=2, depth=2, in_features=4, rotation=rotation, measure="X")
    rng = np.random.default_rng(7)
    x = rng.uniform(-np.pi, np.pi, (cfg.in_features,))
    w = rng.uniform(0, 2 * np.pi, cfg.weight_shape)
    f = lambda xx: qdi_expectations(cfg, xx, jnp.asarray(w), method="gates")  # noqa: E731
    jac = np.asarray(jax.jacfwd(f)(jnp.asarray(x)))  # (n_out, F)
    shift = np.eye(cfg.in_features) * np.pi / 2
    rule = np.stack([np.asarray(f(jnp.asarray(x + s)) - f(jnp.asarray(x - s))) / 2 for s in shift], axis=-1)
    assert np.abs(jac).max() > 1e-3
    np.testing.assert_allclose(rule, jac, atol=1e-10)


def test_input_derivative_is_a_parameter_shift_estimate_with_shot_noise():
    # what forces see on a device: unbiased, with variance (var(<P>+) + var(<P>-)) / 4 per angle, where
    # var = (1 - m^2) / S for each shifted circuit
    x, w = _setup()
    x0 = jnp.asarray(x[:1])
    reps = jnp.repeat(x0, R, axis=0)
    f = CFG.in_features
    jac_exact = np.asarray(jax.jacfwd(lambda xx: qdi_expectations(CFG, xx, w, method="fused")[0])(x0))[:, 0]  # (o, F)
    shift = np.eye(f, dtype=np.float32) * np.pi / 2
    plus = np.asarray(qdi_expectations(CFG, x0 + shift, w, method="fused"))  # (F, o)
    minus = np.asarray(qdi_expectations(CFG, x0 - shift, w, method="fused"))
    var_exact = ((1 - plus**2) + (1 - minus**2)).T / (4 * S)  # (o, F)
    # the derivative along each input angle for every replica at once (one noise draw: the key is fixed)
    def along(tangent):
        f_ = lambda xx: sample_expectations(CFG, xx, w, S, jax.random.PRNGKey(2), method="fused")  # noqa: E731
        return jax.jvp(f_, (reps,), (tangent,))[1]

    tangents = jnp.zeros((f,) + reps.shape).at[jnp.arange(f), :, jnp.arange(f)].set(1.0)  # (F, R, F)
    grads = np.moveaxis(np.asarray(jax.jit(jax.vmap(along))(tangents)), 0, -1)  # (R, o, F): shift-rule estimates
    np.testing.assert_array_less(np.abs(grads.mean(0) - jac_exact), 5 * np.sqrt(var_exact / R) + 1e-6)
    ratio = grads.var(0, ddof=1) / var_exact
    assert np.all(np.abs(ratio - 1.0) <= 5 * np.sqrt(2.0 / (R - 1))), ratio


@pytest.mark.parametrize("shots", [0, -3, 2.5, True])
def test_invalid_shots(shots):
    x, w = _setup()
    with pytest.raises(ValueError, match="shots must be a positive integer"):
        sample_expectations(CFG, x, w, shots, jax.random.PRNGKey(0))
