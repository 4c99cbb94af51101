"""Statevector primitives, the QDI circuit's invariants, jax transformations and error handling."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from qallegro.quantum import (
    QDIConfig,
    chunk_unitary,
    init_qdi_weights,
    qdi_expectations,
    qdi_output_size,
    qdi_probabilities,
    qdi_state,
    qdi_weight_shape,
    select_method,
    uniform_angle_init,
    z_expectations,
)
from qallegro.quantum import simulator as sim
from qallegro.quantum.config import readout_cascade
from qallegro.quantum.method import FUSED_MAX_QUBITS, heuristic_method

qml = pytest.importorskip("pennylane")

RNG = np.random.default_rng(7)


def _random_state(n, batch=()):
    v = RNG.normal(size=batch + (2**n,)) + 1j * RNG.normal(size=batch + (2**n,))
    v /= np.linalg.norm(v, axis=-1, keepdims=True)
    return v.reshape(batch + (2,) * n)


def _dense(op, n):
    return qml.matrix(op, wire_order=list(range(n)))


# ------------------------------------------------------------------ gates against PennyLane
@pytest.mark.parametrize(
    "ours, theirs",
    [
        (lambda: sim.rx(0.37), lambda: qml.RX(0.37, 0)),
        (lambda: sim.ry(-1.1), lambda: qml.RY(-1.1, 0)),
        (lambda: sim.rz(2.5), lambda: qml.RZ(2.5, 0)),
        (lambda: sim.rot(0.3, -0.8, 1.9), lambda: qml.Rot(0.3, -0.8, 1.9, 0)),
        (lambda: sim.HADAMARD, lambda: qml.Hadamard(0)),
    ],
)
def test_single_qubit_gate_matrices(ours, theirs):
    np.testing.assert_allclose(np.asarray(ours()), qml.matrix(theirs()), atol=1e-6)


def test_gate_application_matches_dense_matrices():
    n = 4
    with jax.enable_x64(True):
        psi = _random_state(n, (2,))
        flat = psi.reshape(2, -1)
        for wire in range(n):
            got = sim.apply_1q(jnp.asarray(psi), sim.rot(0.1, 0.7, -0.4), wire, n)
            want = flat @ _dense(qml.Rot(0.1, 0.7, -0.4, wire), n).T
            np.testing.assert_allclose(np.asarray(got).reshape(2, -1), want, atol=1e-12)
        for c, t in [(0, 1), (1, 0), (3, 1), (2, 3)]:
            got = sim.apply_cnot(jnp.asarray(psi), c, t, n)
            np.testing.assert_allclose(np.asarray(got).reshape(2, -1),
                                       flat @ _dense(qml.CNOT([c, t]), n).T, atol=1e-12)
            got = sim.apply_cz(jnp.asarray(psi), c, t, n)
            np.testing.assert_allclose(np.asarray(got).reshape(2, -1),
                                       flat @ _dense(qml.CZ([c, t]), n).T, atol=1e-12)
        pairs = [(0, 1), (1, 2), (2, 3), (3, 0)]
        perm = sim.cnot_sequence_permutation(pairs, n)
        want = flat
        for c, t in pairs:
            want = want @ _dense(qml.CNOT([c, t]), n).T
        got = sim.apply_permutation(jnp.asarray(psi), perm, n)
        np.testing.assert_allclose(np.asarray(got).reshape(2, -1), want, atol=1e-12)
        # per-sample (batched) gates
        thetas = jnp.asarray([0.3, -1.2])
        got = sim.apply_1q(jnp.asarray(psi), sim.ry(thetas), 2, n)
        for b in range(2):
            np.testing.assert_allclose(np.asarray(got[b]).reshape(-1),
                                       _dense(qml.RY(float(thetas[b]), 2), n) @ flat[b], atol=1e-12)
        # blocked product layer on the real-pair layout
        gates = jnp.stack([sim.rot(*RNG.normal(size=3)) for _ in range(n)])
        want = flat
        for k in range(n):
            want = sim.apply_1q(jnp.asarray(want.reshape((2,) + (2,) * n)), gates[k], k, n).reshape(2, -1)
        for block in (1, 3, 4):
            got = sim.apply_product_pairs(sim.to_pairs(jnp.asarray(psi), n), gates, n, block)
            np.testing.assert_allclose(np.asarray(sim.from_pairs(got, n)).reshape(2, -1),
                                       np.asarray(want), atol=1e-12)


def test_pauli_expectations_match_dense():
    n = 3
    psi = _random_state(n, (4,))
    flat = psi.reshape(4, -1)
    with jax.enable_x64(True):
        for name, op in (("X", qml.PauliX), ("Y", qml.PauliY), ("Z", qml.PauliZ)):
            got = sim.expval_pauli(jnp.asarray(psi), name, range(n), n)
            want = np.stack([np.einsum("bi,ij,bj->b", flat.conj(), _dense(op(w), n), flat).real
                             for w in range(n)], -1)
            np.testing.assert_allclose(np.asarray(got), want, atol=1e-12)


# ------------------------------------------------------------------ circuit invariants
@pytest.mark.parametrize("method", ["fused", "gates"])
def test_fused_and_gates_agree_at_8_qubits(method):
    # float32, against the gate-by-gate reference state (itself equal to PennyLane's)
    cfg = QDIConfig(n_qubits=8, depth=3, in_features=16, rotation="Y", measure="X")
    x = RNG.uniform(-3, 3, (5, 16)).astype(np.float32)
    w = RNG.uniform(0, 6, cfg.weight_shape).astype(np.float32)
    state = qdi_state(cfg, x, w)
    want = sim.expval_pauli(state, "X", range(8), 8)
    np.testing.assert_allclose(np.asarray(qdi_expectations(cfg, x, w, method=method)),
                               np.asarray(want), atol=2e-5)


def test_norm_stays_one():
    # shapes as in test_quantum_pennylane (batch 2^n) so compiled kernels are reused
    for cfg in (QDIConfig(4, 2, 8, "X", "strong"), QDIConfig(3, 2, 6, "Z", "basic", "Z", "single")):
        x = RNG.uniform(-3, 3, (cfg.dim, cfg.in_features)).astype(np.float32)
        w = RNG.uniform(0, 6, cfg.weight_shape).astype(np.float32)
        np.testing.assert_allclose(np.asarray(sim.state_norm(qdi_state(cfg, x, w), cfg.n_qubits)),
                                   1.0, atol=1e-5)
        # float32 expectations of both fast paths against the gate-by-gate reference state
        ref = qdi_state(cfg, x, w)
        for c, t in readout_cascade(cfg.n_qubits, cfg.measurement_mode):
            ref = sim.apply_cnot(ref, c, t, cfg.n_qubits)
        want = sim.expval_pauli(ref, cfg.measure, cfg.measured_wires, cfg.n_qubits)
        for method in ("fused", "gates"):
            np.testing.assert_allclose(np.asarray(qdi_expectations(cfg, x, w, method=method)),
                                       np.asarray(want), atol=2e-5)
        for method in ("fused", "gates"):
            p = qdi_probabilities(cfg, x, w, method=method)
            assert p.shape == (cfg.dim, cfg.dim) and float(jnp.min(p)) >= 0.0
            np.testing.assert_allclose(np.asarray(p.sum(-1)), 1.0, atol=1e-5)
    # the fused matrices are unitary (without the non-unitary encoding fold)
    cfg = QDIConfig(4, 4)
    w = init_qdi_weights(jax.random.PRNGKey(0), cfg)
    u = np.asarray(chunk_unitary(cfg, w, 0, fold_readout=True))
    np.testing.assert_allclose(u.conj().T @ u, np.eye(16), atol=1e-5)


def test_large_register_uses_gates_path():
    cfg = QDIConfig(n_qubits=FUSED_MAX_QUBITS + 2, depth=1, measurement_mode="even")
    assert select_method(cfg, 2) == "gates" and heuristic_method(cfg) == "gates"
    x = RNG.uniform(-3, 3, (2, cfg.in_features)).astype(np.float32)
    w = RNG.uniform(0, 6, cfg.weight_shape).astype(np.float32)
    out = qdi_expectations(cfg, x, w)
    want = sim.expval_pauli(qdi_state(cfg, x, w), "Y", cfg.measured_wires, cfg.n_qubits)
    np.testing.assert_allclose(np.asarray(out), np.asarray(want), atol=2e-5)


# ------------------------------------------------------------------ jax transformations
def test_jit_vmap_grad_compose():
    cfg = QDIConfig(2, 1, 4, "Z", "strong", "Y", "none")
    x = jnp.asarray(RNG.uniform(-3, 3, (3, 4)), jnp.float32)
    ws = jnp.asarray(RNG.uniform(0, 6, (2,) + cfg.weight_shape), jnp.float32)
    for method in ("fused", "gates"):
        f = lambda xx, ww, method=method: qdi_expectations(cfg, xx, ww, method=method)  # noqa: E731
        eager = f(x, ws[0])
        np.testing.assert_allclose(np.asarray(jax.jit(f)(x, ws[0])), np.asarray(eager), atol=1e-6)
        if method != "fused":
            continue  # vmap and autodiff go through the same kernels for both paths
        # vmap over samples (no batch axis inside) and over weight sets
        per_sample = jax.vmap(f, in_axes=(0, None))(x, ws[0])
        np.testing.assert_allclose(np.asarray(per_sample), np.asarray(eager), atol=1e-6)
        per_w = jax.vmap(f, in_axes=(None, 0))(x, ws)
        np.testing.assert_allclose(np.asarray(per_w[1]), np.asarray(f(x, ws[1])), atol=1e-6)
        # grad of a scalar against central finite differences (float64)
        with jax.enable_x64(True):
            x64, w64 = x.astype(jnp.float64), ws[0].astype(jnp.float64)
            loss = lambda xx, ww, f=f: jnp.sum(jnp.sin(f(xx, ww)))  # noqa: E731
            gx, gw = jax.jit(jax.grad(loss, argnums=(0, 1)))(x64, w64)
            eps = 1e-6
            dx = jnp.zeros_like(x64).at[1, 3].set(eps)
            fd = (loss(x64 + dx, w64) - loss(x64 - dx, w64)) / (2 * eps)
            np.testing.assert_allclose(float(gx[1, 3]), float(fd), atol=1e-7)
            dw = jnp.zeros_like(w64).at[1, 0, 1, 1].set(eps)
            fd = (loss(x64, w64 + dw) - loss(x64, w64 - dw)) / (2 * eps)
            np.testing.assert_allclose(float(gw[1, 0, 1, 1]), float(fd), atol=1e-7)
            # second derivatives (forces of a hybrid potential need grad-of-grad), fwd and rev
            h_fwd = jax.jit(jax.jacfwd(jax.grad(loss), argnums=0))(x64[:1], w64)
            h_rev = jax.jit(jax.jacrev(jax.grad(loss), argnums=0))(x64[:1], w64)
            np.testing.assert_allclose(np.asarray(h_fwd), np.asarray(h_rev), atol=1e-9)


def test_any_leading_batch_shape():
    cfg = QDIConfig(2, 1)
    w = init_qdi_weights(jax.random.PRNGKey(1), cfg)
    x = jnp.asarray(RNG.uniform(-3, 3, (3, 5, 2)), jnp.float32)
    out = qdi_expectations(cfg, x, w, method="fused")
    assert out.shape == (3, 5, 2)
    single = qdi_expectations(cfg, x[1, 2], w, method="gates")
    assert single.shape == (2,)
    np.testing.assert_allclose(np.asarray(single), np.asarray(out[1, 2]), atol=1e-6)


# ------------------------------------------------------------------ sizes and errors
def test_output_size_and_weight_shape():
    assert [qdi_output_size(n, "none") for n in (1, 4, 7)] == [1, 4, 7]
    assert [qdi_output_size(n, "even") for n in (1, 4, 7)] == [1, 2, 4]
    assert [qdi_output_size(n, "single") for n in (1, 4, 7)] == [1, 1, 1]
    assert qdi_weight_shape(4, 3, 8, "strong") == (2, 3, 4, 3)
    assert qdi_weight_shape(4, 3, None, "basic") == (1, 3, 4)
    assert QDIConfig(rotation="x", measure="y").rotation == "X"
    assert QDIConfig(n_qubits=25).n_qubits == 25


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(n_qubits=4, in_features=6), "in_features=6 is not a multiple of n_qubits=4"),
        (dict(n_qubits=0), "n_qubits must be in 1..25"),
        (dict(n_qubits=26), "n_qubits must be in 1..25"),
        (dict(n_qubits=2.0), "n_qubits must be an integer"),
        (dict(depth=0), "depth must be in 1..30"),
        (dict(rotation="W"), "unknown rotation 'W'"),
        (dict(entangling="medium"), "unknown entangling 'medium'"),
        (dict(measure="Q"), "unknown measure 'Q'"),
        (dict(measurement_mode="odd"), "unknown measurement_mode 'odd'"),
    ],
)
def test_invalid_hyperparameters_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        QDIConfig(**kwargs)


def test_invalid_calls_raise():
    cfg = QDIConfig(2, 1)
    w = np.zeros(cfg.weight_shape, np.float32)
    with pytest.raises(ValueError, match="in_features=2"):
        qdi_expectations(cfg, np.zeros((3, 4), np.float32), w)
    with pytest.raises(ValueError, match="weights must have shape"):
        qdi_expectations(cfg, np.zeros((3, 2), np.float32), np.zeros((1, 2, 2, 3)))
    with pytest.raises(ValueError, match="unknown method 'magic'"):
        qdi_expectations(cfg, np.zeros((3, 2), np.float32), w, method="magic")
    with pytest.raises(ValueError, match="measurement_mode"):
        qdi_output_size(3, "all")
    with pytest.raises(ValueError, match="n_qubits"):
        qdi_output_size(30)
    big = QDIConfig(FUSED_MAX_QUBITS + 1, 1)
    with pytest.raises(ValueError, match="method='fused' supports"):
        qdi_expectations(big, np.zeros((1, big.in_features), np.float32),
                         np.zeros(big.weight_shape, np.float32), method="fused")


def test_select_method_heuristic_and_cache(monkeypatch):
    cfg = QDIConfig(2, 1)
    monkeypatch.setenv("QALLEGRO_QDI_AUTOTUNE", "0")
    assert select_method(cfg, 100) == heuristic_method(cfg) == "fused"
    assert heuristic_method(QDIConfig(11, 4)) == "gates"
    monkeypatch.setenv("QALLEGRO_QDI_AUTOTUNE", "1")
    # selection inside a trace runs the timing eagerly and does not leak tracers
    out = jax.jit(lambda x, w: qdi_expectations(cfg, x, w))(jnp.zeros((3, 2)), jnp.zeros((1, 1, 2, 3)))
    assert out.shape == (3, 2) and math.isfinite(float(out.sum()))
    first = select_method(cfg, 4)
    assert first in ("fused", "gates")
    assert select_method(cfg, 3) == first  # same batch bucket: cached, no new timing


# ------------------------------------------------------------------ public readout and helpers
@pytest.mark.parametrize("n, mode, measure", [(3, "none", "Y"), (4, "even", "X"), (3, "single", "Z")])
def test_z_expectations_is_the_readout_of_the_probabilities(n, mode, measure):
    cfg = QDIConfig(n_qubits=n, depth=2, in_features=2 * n, measure=measure, measurement_mode=mode)
    with jax.enable_x64(True):
        x = jnp.asarray(RNG.uniform(-3, 3, (2, 3, cfg.in_features)))
        w = jnp.asarray(RNG.uniform(0, 6, cfg.weight_shape))
        for method in ("fused", "gates"):
            probs = qdi_probabilities(cfg, x, w, method=method)
            z = z_expectations(cfg, probs)
            assert z.shape == (2, 3, cfg.n_outputs)
            np.testing.assert_array_equal(np.asarray(z), np.asarray(qdi_expectations(cfg, x, w, method=method)))
            # sum_s p_s (-1)^{bit_w(s)}, wire 0 the most significant bit
            s = np.arange(cfg.dim)
            signs = np.stack([1 - 2 * ((s >> (n - 1 - k)) & 1) for k in cfg.measured_wires], axis=-1)
            np.testing.assert_allclose(np.asarray(z), np.asarray(probs) @ signs, atol=1e-12)


def test_z_expectations_large_register_and_errors():
    # above 14 qubits the readout reduces marginals instead of multiplying by a sign matrix
    cfg = QDIConfig(n_qubits=15, depth=1, measurement_mode="even")
    p = RNG.uniform(size=(2, cfg.dim))
    p /= p.sum(-1, keepdims=True)
    s = np.arange(cfg.dim)
    signs = np.stack([1 - 2 * ((s >> (14 - k)) & 1) for k in cfg.measured_wires], axis=-1)
    with jax.enable_x64(True):
        np.testing.assert_allclose(np.asarray(z_expectations(cfg, p)), p @ signs, atol=1e-12)
    with pytest.raises(ValueError, match="2\\*\\*n_qubits=32768"):
        z_expectations(cfg, p[:, :8])


def test_one_dtype_helper_and_one_initialiser():
    assert sim.complex_dtype(jnp.float32) == sim.complex_dtype(np.zeros(2, np.float32)) == jnp.complex64
    with jax.enable_x64(True):
        assert sim.complex_dtype(jnp.float64) == sim.complex_dtype(np.dtype("float64")) == jnp.complex128
        assert sim.complex_dtype(jnp.float32, np.zeros(1)) == jnp.complex128  # either 64-bit input
    with jax.enable_x64(False):
        assert sim.real_dtype(np.zeros(2)) == jnp.float32  # no x64: float32 whatever the input
    cfg = QDIConfig(3, 2, 6)
    key = jax.random.PRNGKey(4)
    np.testing.assert_array_equal(np.asarray(init_qdi_weights(key, cfg)),
                                  np.asarray(uniform_angle_init()(key, cfg.weight_shape)))
