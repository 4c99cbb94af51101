"""Circuit analyses of the QDI layer (the checks of Laskaris et al., arXiv:2602.16908, section on the
quantum layer): Fourier spectrum, classical Fisher information, ZX-calculus simplification, and
OpenQASM export.

Pure computation: every function returns arrays or dicts and writes nothing, so the analyses are
importable and testable without matplotlib or a file system. :mod:`qallegro.quantum.report` draws
their figures and writes their JSON files (``python -m experiments.run analyze-circuit``).

* Fourier: a data re-uploading circuit is a trigonometric polynomial of its inputs (Schuld,
  Sweke, Meyer, PRA 103, 032430 (2021)): with ``exp(-i x P/2)`` encodings repeated ``L`` times the
  integer frequencies of each input lie in ``-L..L``. Coefficients come from an FFT over the
  ``(2L+1)^F`` grid, the algorithm of ``qml.fourier.coefficients`` (run on the PennyLane twin as a
  cross-check when the grid is small).
* Fisher information: ``F(w) = E_x sum_s (d_w p_s)(d_w p_s)^T / p_s`` for the distribution ``p`` of
  the measured outcomes (marginal over the measured wires, in the measurement basis), averaged
  over a batch of inputs (Abbas et al., Nat. Comput. Sci. 1, 403 (2021)). Its eigenvalue spectrum and
  its rank as layers are added show when extra parameters stop adding independent directions
  (over-parameterisation: the rank saturates).
* ZX: the circuit with bound parameters becomes a ZX diagram (``qml.transforms.to_zx``), which
  ``pyzx.full_reduce`` simplifies; a circuit is re-extracted to count gates.
* OpenQASM 2.0 export with bound parameters (``qml.to_openqasm``).
"""

from __future__ import annotations

import collections
import math
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

from .circuit import qdi_expectations, qdi_probabilities
from .config import QDIConfig

__all__ = [
    "config_dict",
    "frequency_vectors",
    "fourier_coefficients",
    "fourier_spectrum",
    "classical_fisher",
    "fisher_rank",
    "default_fisher_max_depth",
    "fisher_spectrum",
    "gate_counts",
    "zx_simplification",
    "qasm_export",
]

_MAX_FOURIER_GRID = 2_000_000
#: Relative eigenvalue threshold of :func:`fisher_rank` as used by :func:`fisher_spectrum`.
FISHER_RANK_RTOL = 1e-8


def config_dict(cfg: QDIConfig) -> dict:
    """The hyperparameters and the number of weights, JSON-ready."""
    return {
        "n_qubits": cfg.n_qubits,
        "depth": cfg.depth,
        "in_features": cfg.in_features,
        "rotation": cfg.rotation,
        "entangling": cfg.entangling,
        "measure": cfg.measure,
        "measurement_mode": cfg.measurement_mode,
        "n_parameters": int(np.prod(cfg.weight_shape)),
    }


def _random_weights(rng: np.random.Generator, config: QDIConfig) -> np.ndarray:
    """Weights drawn like the default initialisation, ``Uniform[0, 2 pi)``, in float64 from a numpy generator."""
    return rng.uniform(0.0, 2 * np.pi, config.weight_shape)


# --------------------------------------------------------------------------------------- Fourier


def fourier_coefficients(config: QDIConfig, weights, degree: Optional[int] = None) -> np.ndarray:
    """Fourier coefficients ``c_omega`` of every output as a function of all inputs.

    ``f_k(x) = sum_omega c_{k, omega} exp(i omega . x)`` with ``omega`` in ``{-d..d}^F``.

    Args:
        config: circuit hyperparameters (``F = in_features`` inputs).
        weights: ``config.weight_shape``.
        degree: largest frequency ``d``; default ``n_chunks`` (exact: no higher frequency exists).

    Returns:
        Complex array ``(n_outputs, 2d+1, ..., 2d+1)`` (``F`` frequency axes, numpy FFT order:
        index ``j`` is frequency ``j`` for ``j <= d`` and ``j - (2d+1)`` above).

    Raises:
        ValueError: if the grid ``(2d+1)^F`` exceeds 2e6 points.
    """
    d = config.n_chunks if degree is None else int(degree)
    k = 2 * d + 1
    f = config.in_features
    if k**f > _MAX_FOURIER_GRID:
        raise ValueError(
            f"Fourier grid (2*{d}+1)^{f} = {k**f:.3g} points is too large (max {_MAX_FOURIER_GRID}); "
            f"lower in_features or degree"
        )
    # the same sampling as qml.fourier.coefficients: x_j = 2 pi n_j / k, n_j in {-d..d}
    n_range = np.arange(-d, d + 1)
    grid = np.stack(np.meshgrid(*([n_range] * f), indexing="ij"), axis=-1).reshape(-1, f)
    pts = (2 * np.pi / k) * grid
    with jax.enable_x64(True):
        vals = np.asarray(qdi_expectations(config, jnp.asarray(pts, jnp.float64),
                                           jnp.asarray(weights, jnp.float64)))
    out = np.zeros((config.n_outputs,) + (k,) * f)
    idx = tuple((grid % k).T)  # -d..-1 stored at the end, as in qml.fourier
    for o in range(config.n_outputs):
        out[(o,) + idx] = vals[:, o]
    return np.fft.fftn(out, axes=tuple(range(1, f + 1))) / k**f


def frequency_vectors(d: int, f: int) -> np.ndarray:
    """Frequency vectors ``(( 2d+1)^f, f)`` in the FFT index order of :func:`fourier_coefficients`, one per
    flattened coefficient."""
    freqs = np.concatenate([np.arange(0, d + 1), np.arange(-d, 0)])
    return np.stack(np.meshgrid(*([freqs] * f), indexing="ij"), axis=-1).reshape(-1, f)


def fourier_spectrum(config: QDIConfig, weights, *, n_samples: int = 20, seed: int = 0,
                     degree: Optional[int] = None, pennylane_check: bool = True) -> dict:
    """Fourier spectrum of the circuit for the given weights and for ``n_samples`` random weight draws.

    Args:
        config: circuit hyperparameters (``F = in_features`` inputs).
        weights: ``config.weight_shape``.
        n_samples: random draws (``Uniform[0, 2 pi)``, numpy generator seeded with ``seed``) for the
            spread of the coefficients; 0 for none.
        seed: seed of those draws.
        degree: largest frequency ``d`` (default ``n_chunks``, exact).
        pennylane_check: also compute output 0's coefficients with ``qml.fourier.coefficients`` on the
            PennyLane twin (only when the grid has at most 729 points).

    Returns:
        Dict with ``degree`` (``d``); ``coefficients`` (complex ``(n_outputs, 2d+1, ..., 2d+1)``, see
        :func:`fourier_coefficients`); ``draws`` (``(n_samples, n_outputs, 2d+1, ..., 2d+1)`` or
        None); ``frequencies`` (:func:`frequency_vectors`); ``order`` (indices into the flattened
        coefficients of one of each ``+-omega`` pair, the first nonzero component positive, sorted
        lexicographically); ``power`` (``(n_outputs, d F + 1)``: ``sum |c_omega|^2`` per total degree
        ``|omega|_1``); ``pennylane_max_abs_diff`` (max ``|c_PennyLane - c|`` of output 0, or None).

    Raises:
        ValueError: as :func:`fourier_coefficients`.
    """
    d = config.n_chunks if degree is None else int(degree)
    f = config.in_features
    coeffs = fourier_coefficients(config, weights, d)  # (O, k, ..., k)
    rng = np.random.default_rng(seed)
    draws = np.stack([fourier_coefficients(config, _random_weights(rng, config), d)
                      for _ in range(n_samples)]) if n_samples > 0 else None
    fv = frequency_vectors(d, f)
    flat = coeffs.reshape(config.n_outputs, -1)
    # keep one of each conjugate pair (c_{-w} = conj c_w for a real function): first nonzero >= 0
    nz = fv != 0
    first = np.where(nz.any(1), fv[np.arange(len(fv)), nz.argmax(1)], 1)
    keep = np.where(first > 0)[0]
    order = keep[np.lexsort(fv[keep].T[::-1])]
    total_degree = np.abs(fv).sum(1)
    power = np.stack([[float(np.sum(np.abs(flat[o, total_degree == t]) ** 2)) for t in range(d * f + 1)]
                      for o in range(config.n_outputs)])

    check = None
    if pennylane_check and (2 * d + 1) ** f <= 729:
        import pennylane as qml

        from .pennylane_twin import make_qnode

        qnode = make_qnode(config, interface="numpy", diff_method=None)
        w_np = np.asarray(weights, np.float64)
        ref = qml.fourier.coefficients(lambda x: qnode(np.asarray(x), w_np)[0], f, d)
        check = float(np.max(np.abs(ref - coeffs[0])))
    return {"degree": d, "coefficients": coeffs, "draws": draws, "frequencies": fv, "order": order,
            "power": power, "pennylane_max_abs_diff": check}


# ---------------------------------------------------------------------------------------- Fisher


def _marginal_probs(config: QDIConfig, inputs, weights):
    probs = qdi_probabilities(config, inputs, weights, method="gates" if config.n_qubits > 10 else "fused")
    n = config.n_qubits
    p = probs.reshape(probs.shape[:-1] + (2,) * n)
    off = probs.ndim - 1
    drop = tuple(off + k for k in range(n) if k not in config.measured_wires)
    return jnp.sum(p, axis=drop).reshape(probs.shape[:-1] + (-1,)) if drop else probs


def classical_fisher(config: QDIConfig, weights, inputs, *, eps: float = 1e-12) -> np.ndarray:
    """Classical Fisher information of the measured-outcome distribution w.r.t. all weights,
    averaged over the inputs: ``F = (1/B) sum_x sum_s (d_w p_s(x))(d_w p_s(x))^T / p_s(x)``.

    Computed in float64 with the jax simulator (exact probabilities, ``jax.jacrev``); outcomes
    with ``p_s < eps`` are skipped (their terms vanish with ``p_s``).

    Args:
        config: circuit hyperparameters.
        weights: ``config.weight_shape``.
        inputs: ``(B, in_features)`` angles.

    Returns:
        ``(P, P)`` symmetric positive semi-definite matrix, ``P`` = number of weights.
    """
    with jax.enable_x64(True):
        w = jnp.asarray(weights, jnp.float64)
        x = jnp.asarray(inputs, jnp.float64)
        p = _marginal_probs(config, x, w)  # (B, M)
        jac = jax.jacrev(lambda ww: _marginal_probs(config, x, ww))(w)  # (B, M, *wshape)
        jac = jac.reshape(p.shape + (-1,))
        inv = jnp.where(p > eps, 1.0 / jnp.maximum(p, eps), 0.0)
        fim = jnp.einsum("bmi,bm,bmj->ij", jac, inv, jac) / x.shape[0]
        return np.asarray(fim)


def fisher_rank(fim: np.ndarray, rtol: float = FISHER_RANK_RTOL) -> int:
    """Numerical rank: eigenvalues above ``rtol`` times the largest."""
    ev = np.linalg.eigvalsh(fim)
    return int(np.sum(ev > rtol * max(ev.max(), 1e-300)))


def default_fisher_max_depth(config: QDIConfig) -> int:
    """Deepest circuit of the rank-vs-depth scan: four layers past the depth whose parameter count
    reaches ``4^n - 2^n`` (the rank's saturation value when every qubit is measured: the
    dimension of ``SU(2^n)`` less the ``2^n - 1`` phases diagonal in the measurement basis,
    which no measurement sees), at least ``config.depth`` and at most 30."""
    per_layer = int(np.prod(config.weight_shape)) // config.depth
    bound = 4**config.n_qubits - 2**config.n_qubits
    return int(min(30, max(config.depth, math.ceil(bound / per_layer) + 4)))


def fisher_spectrum(config: QDIConfig, weights, *, n_inputs: int = 64, max_depth: Optional[int] = None,
                    n_draws: int = 1, seed: int = 0) -> dict:
    """Fisher information spectrum and rank versus depth.

    Inputs are ``n_inputs`` angle vectors drawn from ``Uniform[-pi, pi)``. For the given weights the
    eigenvalues of ``F`` are normalised so that ``tr F = P`` (as in Abbas et al.); then for every depth
    ``1..max_depth`` (default :func:`default_fisher_max_depth`) the rank of ``F`` is computed for
    ``n_draws`` random weight draws (``Uniform[0, 2 pi)``) and compared with the number of parameters
    ``P``: while ``rank = P`` every parameter adds a direction, once the rank saturates the circuit is
    over-parameterised (Larocca et al., Nat. Comput. Sci. 3, 542 (2023)).

    Args:
        config: circuit hyperparameters.
        weights: ``config.weight_shape``.
        n_inputs: inputs ``F`` is averaged over.
        max_depth: deepest circuit of the scan.
        n_draws: random weight draws per depth.
        seed: seed of the numpy generator that draws the inputs, then the weights of the scan.

    Returns:
        Dict with ``inputs`` (``(n_inputs, in_features)``), ``eigenvalues_normalised`` (``(P,)``,
        ascending, clipped at 0), ``rank``, ``n_parameters`` (``P``), ``depths``,
        ``n_parameters_per_depth``, ``rank_per_depth`` (``n_draws`` ranks per depth), ``max_rank`` and
        ``first_saturated_depth`` (first depth whose rank stays below its parameter count, or None).
    """
    rng = np.random.default_rng(seed)
    x = rng.uniform(-np.pi, np.pi, (n_inputs, config.in_features))
    fim = classical_fisher(config, weights, x)
    n_par = fim.shape[0]
    ev = np.clip(np.linalg.eigvalsh(fim), 0.0, None)
    ev_norm = ev * (n_par / ev.sum()) if ev.sum() > 0 else ev
    rank = fisher_rank(fim)

    max_depth = default_fisher_max_depth(config) if max_depth is None else int(max_depth)
    depths = list(range(1, max_depth + 1))
    ranks, params = [], []
    for d in depths:
        cfg_d = QDIConfig(config.n_qubits, d, config.in_features, config.rotation, config.entangling,
                          config.measure, config.measurement_mode)
        ranks.append([fisher_rank(classical_fisher(cfg_d, _random_weights(rng, cfg_d), x))
                      for _ in range(n_draws)])
        params.append(int(np.prod(cfg_d.weight_shape)))
    return {
        "inputs": x,
        "eigenvalues_normalised": ev_norm,
        "rank": rank,
        "n_parameters": n_par,
        "depths": depths,
        "n_parameters_per_depth": params,
        "rank_per_depth": ranks,
        "max_rank": int(np.max(ranks)),
        "first_saturated_depth": next((d for d, rr, pp in zip(depths, ranks, params) if max(rr) < pp), None),
    }


# -------------------------------------------------------------------------------------------- ZX


def gate_counts(ops) -> dict:
    """Total, two-qubit and per-name counts of PennyLane operations."""
    names = collections.Counter(op.name for op in ops)
    two = sum(1 for op in ops if len(op.wires) == 2)
    return {"total": int(sum(names.values())), "two_qubit": int(two), "by_type": dict(names)}


def _zx_circuit_counts(circ) -> dict:
    by = collections.Counter(type(g).__name__ for g in circ.gates)
    return {"total": int(len(circ.gates)), "two_qubit": int(circ.twoqubitcount()),
            "t_count": int(circ.tcount()), "by_type": dict(by)}


def zx_simplification(config: QDIConfig, inputs, weights) -> dict:
    """ZX-calculus simplification of one circuit instance (bound inputs and weights).

    Returns spider (vertex) and edge counts of the ZX diagram before and after
    ``pyzx.full_reduce``, the PennyLane gate counts of the circuit, and the gate counts of the
    circuit ``pyzx.extract_circuit`` recovers from the reduced diagram (then
    ``pyzx.basic_optimization``). The measurement basis change is included
    (``expand_measurements=True``).
    """
    import pennylane as qml
    import pyzx as zx

    from .pennylane_twin import qdi_tape

    tape = qdi_tape(config, np.asarray(inputs, np.float64), np.asarray(weights, np.float64))
    # expand measurements into basis rotations; to_zx needs a gate set it knows (Rot -> RZ RY RZ)
    [tape_d], _ = qml.transforms.decompose(tape, gate_set={"RX", "RY", "RZ", "Hadamard", "CNOT",
                                                           "CZ", "PauliX", "PauliY", "PauliZ", "S",
                                                           "Adjoint(S)"})
    g = qml.transforms.to_zx(tape_d, expand_measurements=True)
    before = {"spiders": int(g.num_vertices()), "edges": int(g.num_edges())}
    g_red = g.copy()
    zx.full_reduce(g_red)
    after = {"spiders": int(g_red.num_vertices()), "edges": int(g_red.num_edges())}
    extracted = zx.extract_circuit(g_red.copy())
    optimised = zx.basic_optimization(extracted.to_basic_gates())
    ops = list(tape_d.operations)
    return {
        "circuit_gates": gate_counts(ops),
        "zx_before": before,
        "zx_after_full_reduce": after,
        "extracted_circuit": _zx_circuit_counts(extracted),
        "extracted_basic_optimization": _zx_circuit_counts(optimised),
        "_graphs": (g, g_red),
    }


# ------------------------------------------------------------------------------------------ QASM


def qasm_export(config: QDIConfig, inputs, weights, *, precision: int = 12) -> dict:
    """The circuit with bound inputs and weights as OpenQASM 2.0, with what it should reproduce.

    Args:
        config: circuit hyperparameters.
        inputs: ``(in_features,)`` angles in radians.
        weights: ``config.weight_shape``.
        precision: decimal digits of the angles.

    Returns:
        Dict with ``qasm`` (the program text, measurement basis rotations included),
        ``qasm_gate_counts`` (per gate name in the program), ``expected_expectations`` (exact
        ``(n_outputs,)`` expectations, float64, the values the program's Z readout should give) and
        ``circuit_gates`` (:func:`gate_counts` of the PennyLane tape).
    """
    from .pennylane_twin import qdi_tape, to_openqasm

    x = np.asarray(inputs, np.float64)
    w = np.asarray(weights, np.float64)
    text = to_openqasm(config, x, w, precision=precision)
    with jax.enable_x64(True):
        exact = np.asarray(qdi_expectations(config, x, w)).tolist()
    qasm_gates = collections.Counter(line.split("(")[0].split(" ")[0] for line in text.splitlines()
                                     if line and not line.startswith(("OPENQASM", "include", "qreg",
                                                                      "creg", "measure")))
    return {"qasm": text, "qasm_gate_counts": dict(qasm_gates), "expected_expectations": exact,
            "circuit_gates": gate_counts(list(qdi_tape(config, x, w).operations))}
