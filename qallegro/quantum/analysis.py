"""Circuit analyses of the QDI layer (the checks of Laskaris et al., arXiv:2602.16908, section on the
quantum layer): Fourier spectrum, classical Fisher information, ZX-calculus simplification, and
OpenQASM export. Each ``run_*`` function writes a PNG and a JSON into an output folder and returns
the JSON's content as a dict.

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
* OpenQASM 2.0 export with bound parameters (``qml.to_openqasm``) and a drawing of the circuit.
"""

from __future__ import annotations

import collections
import json
import math
import os
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

from .circuit import QDIConfig, qdi_expectations, qdi_probabilities

__all__ = [
    "fourier_coefficients",
    "classical_fisher",
    "fisher_rank",
    "zx_simplification",
    "run_fourier",
    "run_fisher",
    "default_fisher_max_depth",
    "run_zx",
    "run_qasm",
]

_MAX_FOURIER_GRID = 2_000_000


def _plt():
    # No matplotlib.use(): without a display matplotlib falls back to Agg by itself, and forcing it here would
    # switch off the inline figures of a notebook that calls these analyses.
    import matplotlib.pyplot as plt

    return plt


def _write_json(path: str, data: dict) -> None:
    with open(path, "w") as fh:
        json.dump(data, fh, indent=2, sort_keys=False)
        fh.write("\n")


def _config_dict(cfg: QDIConfig) -> dict:
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


def _random_weights(rng: np.random.Generator, config: QDIConfig) -> np.ndarray:
    """Weights drawn like the default initialisation, ``Uniform[0, 2 pi)``, in float64."""
    return rng.uniform(0.0, 2 * np.pi, config.weight_shape)


def _frequency_vectors(d: int, f: int):
    """Frequency vectors in FFT index order, one per flattened coefficient."""
    freqs = np.concatenate([np.arange(0, d + 1), np.arange(-d, 0)])
    return np.stack(np.meshgrid(*([freqs] * f), indexing="ij"), axis=-1).reshape(-1, f)


def run_fourier(config: QDIConfig, weights, out_dir: str, *, n_samples: int = 20, seed: int = 0,
                degree: Optional[int] = None, pennylane_check: bool = True) -> dict:
    """Fourier spectrum of the circuit: for the given weights and for ``n_samples`` random weight
    draws (``Uniform[0, 2 pi)``), the coefficient magnitudes per frequency vector.

    Writes ``fourier.png`` (output 0: the given weights' ``|c_omega|`` and the spread over random
    draws, for the non-redundant frequencies ``omega >= 0`` lexicographically; and the spectral
    power per total degree ``|omega|_1`` for every output) and ``fourier.json``.
    """
    plt = _plt()
    os.makedirs(out_dir, exist_ok=True)
    d = config.n_chunks if degree is None else int(degree)
    f = config.in_features
    coeffs = fourier_coefficients(config, weights, d)  # (O, k, ..., k)
    rng = np.random.default_rng(seed)
    draws = np.stack([fourier_coefficients(config, _random_weights(rng, config), d)
                      for _ in range(n_samples)]) if n_samples > 0 else None
    fv = _frequency_vectors(d, f)
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

    fig, axes = plt.subplots(1, 2, figsize=(13, 4.6), gridspec_kw={"width_ratios": [2.2, 1]})
    ax = axes[0]
    pos = np.arange(len(order))
    if draws is not None:
        dflat = np.abs(draws[:, 0].reshape(n_samples, -1)[:, order])
        ax.boxplot(dflat, positions=pos, widths=0.6, showfliers=False,
                   medianprops={"color": "0.4"}, boxprops={"color": "0.6"},
                   whiskerprops={"color": "0.6"}, capprops={"color": "0.6"})
    ax.plot(pos, np.abs(flat[0, order]), "o", color="C3", ms=4,
            label="given weights" + (f"; spread over {n_samples} random draws" if draws is not None else ""))
    labels = ["(" + ",".join(str(v) for v in fv[i]) + ")" for i in order]
    step = max(1, len(order) // 40)
    ax.set_xticks(pos[::step])
    ax.set_xticklabels(labels[::step], rotation=90, fontsize=7)
    ax.set_xlim(-1, len(order))
    ax.set_ylabel(r"$|c_\omega|$")
    ax.set_xlabel(r"frequency vector $\omega$ (one of each $\pm\omega$ pair)")
    ax.set_title(f"Fourier coefficients of output 0 ({config.measure} on wire {config.measured_wires[0]})")
    ax.legend(fontsize=8, loc="upper right")
    ax = axes[1]
    # exact zeros (e.g. the constant term of <Y> under Z encoding) are drawn at a floor
    floor = max(float(power.max()) * 1e-10, 1e-300)
    for o in range(config.n_outputs):
        ax.plot(np.arange(d * f + 1), np.maximum(power[o], floor), "o-", ms=3, label=f"output {o}")
    ax.set_yscale("log")
    ax.set_ylim(floor / 3, float(power.max()) * 3)
    ax.set_xlabel(r"total degree $|\omega|_1$")
    ax.set_ylabel(r"spectral power $\sum |c_\omega|^2$ (zeros at the floor)")
    ax.set_title("power per degree")
    ax.legend(fontsize=7, ncol=2)
    fig.suptitle(f"QDI n_qubits={config.n_qubits} depth={config.depth} in_features={f} "
                 f"rotation={config.rotation} entangling={config.entangling}", fontsize=10)
    fig.tight_layout()
    fig.savefig(os.path.join(out_dir, "fourier.png"), dpi=130)
    plt.close(fig)

    result = {
        "analysis": "fourier",
        "config": _config_dict(config),
        "degree": d,
        "frequencies": [fv[i].tolist() for i in order],
        "coefficients_output0": {"real": flat[0, order].real.tolist(),
                                 "imag": flat[0, order].imag.tolist()},
        "constant_term": [float(flat[o, 0].real) for o in range(config.n_outputs)],
        "power_per_total_degree": power.tolist(),
        "random_draws": None if draws is None else {
            "n_samples": n_samples,
            "seed": seed,
            "mean_abs_output0": np.abs(draws[:, 0].reshape(n_samples, -1)[:, order]).mean(0).tolist(),
        },
        "pennylane_qml_fourier_max_abs_diff_output0": check,
    }
    _write_json(os.path.join(out_dir, "fourier.json"), result)
    return result


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


def fisher_rank(fim: np.ndarray, rtol: float = 1e-8) -> int:
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


def run_fisher(config: QDIConfig, weights, out_dir: str, *, n_inputs: int = 64,
               max_depth: Optional[int] = None, n_draws: int = 1, seed: int = 0) -> dict:
    """Fisher information spectrum and rank versus depth.

    Inputs are ``n_inputs`` angle vectors drawn from ``Uniform[-pi, pi)``. For the given weights the
    eigenvalues of ``F`` (normalised so that ``tr F = P``, as in Abbas et al.) are histogrammed;
    then for every depth ``1..max_depth`` (default :func:`default_fisher_max_depth`) the rank of
    ``F`` is computed for ``n_draws`` random weight draws (``Uniform[0, 2 pi)``) and compared with
    the number of parameters ``P``: while ``rank = P`` every parameter adds a direction, once the
    rank saturates the circuit is over-parameterised (Larocca et al., Nat. Comput. Sci. 3, 542 (2023)).
    Writes ``fisher.png`` and ``fisher.json``.
    """
    plt = _plt()
    os.makedirs(out_dir, exist_ok=True)
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

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.4))
    ax = axes[0]
    floor = 1e-12
    bins = np.logspace(np.log10(floor), np.log10(max(ev_norm.max(), 10 * floor)) + 0.1, 40)
    ax.hist(np.clip(ev_norm, floor, None), bins=bins, color="C0", edgecolor="k", lw=0.4)
    ax.set_xscale("log")
    ax.set_xlabel(r"eigenvalue of normalised $F$ ($\mathrm{tr}\,F = P$; zeros shown at $10^{-12}$)")
    ax.set_ylabel("count")
    ax.set_title(f"Fisher spectrum: depth {config.depth}, P={n_par}, rank {rank}, {n_inputs} inputs")
    ax = axes[1]
    r = np.asarray(ranks)
    ax.plot(depths, params, "k--", label="number of parameters P")
    if config.measurement_mode == "none":
        ax.axhline(4**config.n_qubits - 2**config.n_qubits, color="0.5", lw=0.8, ls=":",
                   label=r"$4^n - 2^n$")
    ax.errorbar(depths, r.mean(1), yerr=[r.mean(1) - r.min(1), r.max(1) - r.mean(1)], fmt="o-",
                color="C3", capsize=3,
                label="rank of F" + (f" (mean, min-max of {n_draws} draws)" if n_draws > 1 else ""))
    ax.set_xlabel("variational layers per chunk (depth)")
    ax.set_ylabel("dimension")
    ax.set_title("Fisher rank vs depth (saturation = over-parameterised)")
    ax.legend(fontsize=8)
    fig.suptitle(f"QDI n_qubits={config.n_qubits} in_features={config.in_features} "
                 f"entangling={config.entangling} measure={config.measure} "
                 f"mode={config.measurement_mode}", fontsize=10)
    fig.tight_layout()
    fig.savefig(os.path.join(out_dir, "fisher.png"), dpi=130)
    plt.close(fig)

    result = {
        "analysis": "fisher",
        "config": _config_dict(config),
        "n_inputs": n_inputs,
        "seed": seed,
        "eigenvalues_normalised": ev_norm.tolist(),
        "rank": rank,
        "rank_rtol": 1e-8,
        "n_parameters": n_par,
        "depths": depths,
        "n_parameters_per_depth": params,
        "rank_per_depth": ranks,
        "max_rank": int(np.max(ranks)),
        "first_saturated_depth": next((d for d, rr, pp in zip(depths, ranks, params)
                                       if max(rr) < pp), None),
    }
    _write_json(os.path.join(out_dir, "fisher.json"), result)
    return result


# -------------------------------------------------------------------------------------------- ZX


def _gate_counts(ops) -> dict:
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
        "circuit_gates": _gate_counts(ops),
        "zx_before": before,
        "zx_after_full_reduce": after,
        "extracted_circuit": _zx_circuit_counts(extracted),
        "extracted_basic_optimization": _zx_circuit_counts(optimised),
        "_graphs": (g, g_red),
    }


def run_zx(config: QDIConfig, inputs, weights, out_dir: str) -> dict:
    """Run :func:`zx_simplification`; write ``zx.png`` (counts before/after) and ``zx.json``."""
    plt = _plt()
    os.makedirs(out_dir, exist_ok=True)
    res = zx_simplification(config, inputs, weights)
    res.pop("_graphs")
    groups = ["spiders", "edges", "gates", "2-qubit gates"]
    before = [res["zx_before"]["spiders"], res["zx_before"]["edges"],
              res["circuit_gates"]["total"], res["circuit_gates"]["two_qubit"]]
    after = [res["zx_after_full_reduce"]["spiders"], res["zx_after_full_reduce"]["edges"],
             res["extracted_basic_optimization"]["total"],
             res["extracted_basic_optimization"]["two_qubit"]]
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    pos = np.arange(len(groups))
    b1 = ax.bar(pos - 0.2, before, 0.4, label="original circuit / ZX diagram")
    b2 = ax.bar(pos + 0.2, after, 0.4, label="after pyzx.full_reduce (gates: re-extracted)")
    for bars in (b1, b2):
        for rect in bars:
            ax.annotate(str(int(rect.get_height())), (rect.get_x() + rect.get_width() / 2,
                                                      rect.get_height()),
                        ha="center", va="bottom", fontsize=8)
    ax.set_xticks(pos)
    ax.set_xticklabels(groups)
    ax.set_ylabel("count")
    ax.set_title(f"ZX simplification: QDI n_qubits={config.n_qubits} depth={config.depth} "
                 f"in_features={config.in_features}", fontsize=10)
    ax.set_ylim(0, 1.25 * max(before + after))
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    fig.savefig(os.path.join(out_dir, "zx.png"), dpi=130)
    plt.close(fig)
    result = {"analysis": "zx", "config": _config_dict(config),
              "inputs": np.asarray(inputs).tolist(), **res}
    _write_json(os.path.join(out_dir, "zx.json"), result)
    return result


# ------------------------------------------------------------------------------------------ QASM


def run_qasm(config: QDIConfig, inputs, weights, out_dir: str, *, precision: int = 12) -> dict:
    """Export the circuit with bound inputs and weights to OpenQASM 2.0 (``circuit.qasm``), draw it
    (``circuit.png``, ``qml.draw_mpl``) and write gate counts and the exact expectations the
    exported circuit should reproduce (``circuit.json``)."""
    import pennylane as qml

    from .pennylane_twin import make_qnode, qdi_tape, to_openqasm

    plt = _plt()
    os.makedirs(out_dir, exist_ok=True)
    x = np.asarray(inputs, np.float64)
    w = np.asarray(weights, np.float64)
    text = to_openqasm(config, x, w, precision=precision)
    with open(os.path.join(out_dir, "circuit.qasm"), "w") as fh:
        fh.write(text)
    qnode = make_qnode(config, interface="numpy", diff_method=None)
    fig, _ = qml.draw_mpl(qnode, decimals=2, style="pennylane", level="device")(x, w)
    fig.savefig(os.path.join(out_dir, "circuit.png"), dpi=110, bbox_inches="tight")
    plt.close(fig)
    with jax.enable_x64(True):
        exact = np.asarray(qdi_expectations(config, x, w)).tolist()
    qasm_gates = collections.Counter(line.split("(")[0].split(" ")[0] for line in text.splitlines()
                                     if line and not line.startswith(("OPENQASM", "include", "qreg",
                                                                      "creg", "measure")))
    result = {
        "analysis": "qasm",
        "config": _config_dict(config),
        "inputs": x.tolist(),
        "weights_shape": list(w.shape),
        "qasm_file": "circuit.qasm",
        "qasm_gate_counts": dict(qasm_gates),
        "precision": precision,
        "measured_wires": list(config.measured_wires),
        "measurement_basis_rotations_included": True,
        "expected_expectations": exact,
        "circuit_gates": _gate_counts(list(qdi_tape(config, x, w).operations)),
    }
    _write_json(os.path.join(out_dir, "circuit.json"), result)
    return result
