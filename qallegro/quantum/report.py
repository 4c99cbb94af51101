"""Figures and JSON files of the QDI circuit analyses: the file-writing edge of :mod:`.analysis`.

Each ``run_*`` function runs one analysis of :mod:`qallegro.quantum.analysis`, draws a PNG and writes a
JSON (and for QASM the program) into an output folder, and returns the JSON's content as a dict.
``python -m experiments.run analyze-circuit`` runs them all. matplotlib and PennyLane are imported
only when a function runs.
"""

from __future__ import annotations

import json
import os
from typing import Optional

import numpy as np

from .analysis import (
    FISHER_RANK_RTOL,
    config_dict,
    fisher_spectrum,
    fourier_spectrum,
    qasm_export,
    zx_simplification,
)
from .config import QDIConfig

__all__ = ["run_fourier", "run_fisher", "run_zx", "run_qasm"]


def _plt():
    # No matplotlib.use(): without a display matplotlib falls back to Agg by itself, and forcing it here would
    # switch off the inline figures of a notebook that calls these analyses.
    import matplotlib.pyplot as plt

    return plt


def _write_json(path: str, data: dict) -> None:
    with open(path, "w") as fh:
        json.dump(data, fh, indent=2, sort_keys=False)
        fh.write("\n")


def run_fourier(config: QDIConfig, weights, out_dir: str, *, n_samples: int = 20, seed: int = 0,
                degree: Optional[int] = None, pennylane_check: bool = True) -> dict:
    """Fourier spectrum of the circuit (:func:`~qallegro.quantum.analysis.fourier_spectrum`): for the
    given weights and for ``n_samples`` random weight draws (``Uniform[0, 2 pi)``), the coefficient
    magnitudes per frequency vector.

    Writes ``fourier.png`` (output 0: the given weights' ``|c_omega|`` and the spread over random
    draws, for the non-redundant frequencies ``omega >= 0`` lexicographically; and the spectral
    power per total degree ``|omega|_1`` for every output) and ``fourier.json``.

    Args:
        config, weights, n_samples, seed, degree, pennylane_check: as ``fourier_spectrum``.
        out_dir: output folder (created if missing).

    Returns:
        The content of ``fourier.json``.

    Raises:
        ValueError: if the frequency grid is too large (nothing is written then).
    """
    spec = fourier_spectrum(config, weights, n_samples=n_samples, seed=seed, degree=degree,
                            pennylane_check=pennylane_check)
    plt = _plt()
    os.makedirs(out_dir, exist_ok=True)
    d, f = spec["degree"], config.in_features
    fv, order, power, draws = spec["frequencies"], spec["order"], spec["power"], spec["draws"]
    flat = spec["coefficients"].reshape(config.n_outputs, -1)

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
        "config": config_dict(config),
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
        "pennylane_qml_fourier_max_abs_diff_output0": spec["pennylane_max_abs_diff"],
    }
    _write_json(os.path.join(out_dir, "fourier.json"), result)
    return result


def run_fisher(config: QDIConfig, weights, out_dir: str, *, n_inputs: int = 64,
               max_depth: Optional[int] = None, n_draws: int = 1, seed: int = 0) -> dict:
    """Fisher information spectrum and rank versus depth (:func:`~qallegro.quantum.analysis.fisher_spectrum`).

    Writes ``fisher.png`` (histogram of the normalised eigenvalues; rank and parameter count per
    depth) and ``fisher.json``.

    Args:
        config, weights, n_inputs, max_depth, n_draws, seed: as ``fisher_spectrum``.
        out_dir: output folder (created if missing).

    Returns:
        The content of ``fisher.json``.
    """
    spec = fisher_spectrum(config, weights, n_inputs=n_inputs, max_depth=max_depth, n_draws=n_draws, seed=seed)
    plt = _plt()
    os.makedirs(out_dir, exist_ok=True)
    ev_norm, rank, n_par = spec["eigenvalues_normalised"], spec["rank"], spec["n_parameters"]
    depths, ranks, params = spec["depths"], spec["rank_per_depth"], spec["n_parameters_per_depth"]

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
        "config": config_dict(config),
        "n_inputs": n_inputs,
        "seed": seed,
        "eigenvalues_normalised": ev_norm.tolist(),
        "rank": rank,
        "rank_rtol": FISHER_RANK_RTOL,
        "n_parameters": n_par,
        "depths": depths,
        "n_parameters_per_depth": params,
        "rank_per_depth": ranks,
        "max_rank": spec["max_rank"],
        "first_saturated_depth": spec["first_saturated_depth"],
    }
    _write_json(os.path.join(out_dir, "fisher.json"), result)
    return result


def run_zx(config: QDIConfig, inputs, weights, out_dir: str) -> dict:
    """Run :func:`~qallegro.quantum.analysis.zx_simplification`; write ``zx.png`` (counts before/after)
    and ``zx.json``.

    Args:
        config: circuit hyperparameters.
        inputs: ``(in_features,)`` angles in radians.
        weights: ``config.weight_shape``.
        out_dir: output folder (created if missing).

    Returns:
        The content of ``zx.json``.
    """
    res = zx_simplification(config, inputs, weights)
    res.pop("_graphs")
    plt = _plt()
    os.makedirs(out_dir, exist_ok=True)
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
    result = {"analysis": "zx", "config": config_dict(config),
              "inputs": np.asarray(inputs).tolist(), **res}
    _write_json(os.path.join(out_dir, "zx.json"), result)
    return result


def run_qasm(config: QDIConfig, inputs, weights, out_dir: str, *, precision: int = 12) -> dict:
    """Export the circuit with bound inputs and weights to OpenQASM 2.0 (``circuit.qasm``,
    :func:`~qallegro.quantum.analysis.qasm_export`), draw it (``circuit.png``, ``qml.draw_mpl``) and
    write gate counts and the exact expectations the exported circuit should reproduce
    (``circuit.json``).

    Args:
        config: circuit hyperparameters.
        inputs: ``(in_features,)`` angles in radians.
        weights: ``config.weight_shape``.
        out_dir: output folder (created if missing).
        precision: decimal digits of the angles in the program.

    Returns:
        The content of ``circuit.json``.
    """
    import pennylane as qml

    from .pennylane_twin import make_qnode

    export = qasm_export(config, inputs, weights, precision=precision)
    plt = _plt()
    os.makedirs(out_dir, exist_ok=True)
    x = np.asarray(inputs, np.float64)
    w = np.asarray(weights, np.float64)
    with open(os.path.join(out_dir, "circuit.qasm"), "w") as fh:
        fh.write(export["qasm"])
    qnode = make_qnode(config, interface="numpy", diff_method=None)
    fig, _ = qml.draw_mpl(qnode, decimals=2, style="pennylane", level="device")(x, w)
    fig.savefig(os.path.join(out_dir, "circuit.png"), dpi=110, bbox_inches="tight")
    plt.close(fig)
    result = {
        "analysis": "qasm",
        "config": config_dict(config),
        "inputs": x.tolist(),
        "weights_shape": list(w.shape),
        "qasm_file": "circuit.qasm",
        "qasm_gate_counts": export["qasm_gate_counts"],
        "precision": precision,
        "measured_wires": list(config.measured_wires),
        "measurement_basis_rotations_included": True,
        "expected_expectations": export["expected_expectations"],
        "circuit_gates": export["circuit_gates"],
    }
    _write_json(os.path.join(out_dir, "circuit.json"), result)
    return result
