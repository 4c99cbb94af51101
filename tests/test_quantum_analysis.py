"""Circuit analyses: Fourier series reproduces the circuit, Fisher matches PennyLane's, ZX and QASM
are faithful, and the CLI writes every PNG/JSON."""

import argparse
import json
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from qallegro.quantum import QDIConfig, qdi_expectations
from qallegro.quantum import simulator as sim
from qallegro.quantum.analysis import (
    classical_fisher,
    fisher_rank,
    fisher_spectrum,
    fourier_coefficients,
    fourier_spectrum,
    frequency_vectors,
    zx_simplification,
)
from qallegro.quantum.pennylane_twin import qdi_ops, to_openqasm

qml = pytest.importorskip("pennylane")
pytest.importorskip("pyzx")

RNG = np.random.default_rng(11)


def test_fourier_series_reproduces_the_circuit():
    cfg = QDIConfig(n_qubits=2, depth=1, in_features=4, rotation="Y", measure="Z")
    w = RNG.uniform(0, 2 * np.pi, cfg.weight_shape)
    c = fourier_coefficients(cfg, w)  # degree = 2 chunks
    assert c.shape == (2,) + (5,) * 4
    fv = frequency_vectors(2, 4)
    x = RNG.uniform(-np.pi, np.pi, (6, 4))
    series = np.real(np.exp(1j * x @ fv.T) @ c.reshape(2, -1).T)
    with jax.enable_x64(True):
        exact = np.asarray(qdi_expectations(cfg, jnp.asarray(x), jnp.asarray(w)))
    np.testing.assert_allclose(series, exact, atol=1e-10)


def test_fisher_matches_pennylane_classical_fisher():
    cfg = QDIConfig(n_qubits=2, depth=2, measure="Z")  # Z readout of all wires = computational basis
    w = RNG.uniform(0, 2 * np.pi, cfg.weight_shape)
    x = RNG.uniform(-np.pi, np.pi, (1, 2))
    ours = classical_fisher(cfg, w, x)
    dev = qml.device("default.qubit", wires=2)

    @qml.qnode(dev, interface="jax", diff_method="backprop")
    def probs(weights):
        qdi_ops(cfg, jnp.asarray(x[0]), weights)
        return qml.probs(wires=[0, 1])

    with jax.enable_x64(True):
        ref = np.asarray(qml.gradients.classical_fisher(probs)(jnp.asarray(w)))
    n_par = int(np.prod(cfg.weight_shape))
    np.testing.assert_allclose(ours, ref.reshape(n_par, n_par), atol=1e-9)
    assert fisher_rank(ours) <= 3  # one input, 4 outcomes: at most 3 directions


def _run_qasm(text, n):
    """Minimal OpenQASM 2.0 interpreter for the gates PennyLane emits for the QDI circuit."""
    fixed = {"h": sim.HADAMARD, "x": sim.PAULI_X, "y": sim.PAULI_Y, "z": sim.PAULI_Z,
             "s": np.diag([1, 1j]), "sdg": np.diag([1, -1j])}
    rot = {"rx": sim.rx, "ry": sim.ry, "rz": sim.rz}
    state = sim.zero_state(n, dtype=jnp.complex128)
    for line in text.splitlines():
        if line.startswith(("OPENQASM", "include", "qreg", "creg", "measure")):
            continue
        m = re.match(r"(\w+)(?:\(([^)]*)\))?\s+q\[(\d+)\](?:,q\[(\d+)\])?;", line.strip())
        assert m, f"unexpected QASM line {line!r}"
        name, arg, a, b = m.group(1), m.group(2), int(m.group(3)), m.group(4)
        if name == "cx":
            state = sim.apply_cnot(state, a, int(b), n)
        elif name in rot:
            state = sim.apply_1q(state, rot[name](jnp.float64(float(arg))), a, n)
        else:
            state = sim.apply_1q(state, fixed[name], a, n)
    return state


def test_qasm_export_reproduces_expectations():
    cfg = QDIConfig(n_qubits=3, depth=2, in_features=6, rotation="X", entangling="basic",
                    measure="Y", measurement_mode="single")
    w = RNG.uniform(0, 2 * np.pi, cfg.weight_shape)
    x = RNG.uniform(-np.pi, np.pi, cfg.in_features)
    text = to_openqasm(cfg, x, w, precision=14)
    assert text.startswith("OPENQASM 2.0;") and "qreg q[3];" in text
    with jax.enable_x64(True):
        state = _run_qasm(text, 3)
        z = sim.expval_pauli(state, "Z", cfg.measured_wires, 3)  # basis change already in the QASM
        want = qdi_expectations(cfg, jnp.asarray(x), jnp.asarray(w))
    np.testing.assert_allclose(np.asarray(z), np.asarray(want), atol=1e-10)
    with pytest.raises(ValueError, match="inputs must be 1-D"):
        to_openqasm(cfg, x[None], w)


def test_zx_reduction_counts():
    cfg = QDIConfig(n_qubits=3, depth=2)
    res = zx_simplification(cfg, RNG.uniform(-3, 3, 3), RNG.uniform(0, 6, cfg.weight_shape))
    g, g_red = res["_graphs"]
    assert res["zx_after_full_reduce"]["spiders"] < res["zx_before"]["spiders"]
    assert res["circuit_gates"]["two_qubit"] == 2 * 3  # depth x ring CNOTs
    # the reduced diagram is the same linear map as the circuit's (up to a global scalar)
    import pyzx as zx

    assert zx.compare_tensors(g, g_red, preserve_scalar=False)


def test_cli_writes_every_artefact(tmp_path):
    import experiments.analyze_circuit as cli

    parser = argparse.ArgumentParser(formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    cli.add_arguments(parser)
    for action in parser._actions:
        if action.dest != "help":
            assert action.help and "default" in action.help, action.dest
    args = parser.parse_args(["--n-qubits", "2", "--depth", "1", "--fourier-samples", "2",
                              "--fisher-inputs", "4", "--fisher-max-depth", "2", "--out", str(tmp_path)])
    assert cli.main(args) == 0
    for name in ("fourier", "fisher", "zx", "circuit"):
        assert (tmp_path / f"{name}.png").stat().st_size > 5000
        json.loads((tmp_path / f"{name}.json").read_text())
    assert (tmp_path / "circuit.qasm").read_text().startswith("OPENQASM 2.0;")
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["results"]["fisher"]["n_parameters"] == 6


def test_analysis_needs_no_matplotlib():
    # the computational module imports without matplotlib; figures and files are report's business
    code = ("import sys; import qallegro.quantum.analysis as a; "
            "assert 'matplotlib' not in sys.modules and not hasattr(a, 'run_fourier'); "
            "import qallegro.quantum.report; assert 'matplotlib' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=300)


def test_spectra_are_plain_computations(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # nothing may be written
    cfg = QDIConfig(n_qubits=1, depth=1, in_features=2, rotation="Y", measure="Z")
    w = RNG.uniform(0, 2 * np.pi, cfg.weight_shape)
    spec = fourier_spectrum(cfg, w, n_samples=2, pennylane_check=False)
    coeffs = spec["coefficients"]
    np.testing.assert_array_equal(coeffs, fourier_coefficients(cfg, w))
    assert spec["draws"].shape == (2,) + coeffs.shape
    # power per total degree partitions Parseval's sum; order keeps omega = 0 and one of each +-omega pair
    np.testing.assert_allclose(spec["power"].sum(1), (np.abs(coeffs) ** 2).reshape(1, -1).sum(1), atol=1e-12)
    assert len(spec["order"]) == (coeffs[0].size + 1) // 2
    fisher = fisher_spectrum(cfg, w, n_inputs=4, max_depth=2)
    assert fisher["depths"] == [1, 2] and fisher["n_parameters_per_depth"] == [6, 12]
    assert fisher["rank"] == fisher_rank(classical_fisher(cfg, w, fisher["inputs"]))
    assert list(tmp_path.iterdir()) == []
