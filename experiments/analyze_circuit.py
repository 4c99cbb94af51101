"""`python -m experiments.run analyze-circuit`: analyses of one QDI circuit.

Runs the analyses of :mod:`qallegro.quantum.analysis` through :mod:`qallegro.quantum.report` on the circuit
given by the hyperparameters (default: the default QDI, 4 qubits, depth 4) and writes into ``--out``:
``fourier.png/json``, ``fisher.png/json``, ``zx.png/json``, ``circuit.qasm`` + ``circuit.png/json``
and ``summary.json`` (configuration, weights source, timings).

Weights are random (``Uniform[0, 2 pi)``, ``--seed``) unless ``--weights FILE.npy`` gives trained
ones, e.g. exported from a model's ``QDI`` parameters.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time

import numpy as np

ANALYSES = ("fourier", "fisher", "zx", "qasm")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the options of ``analyze-circuit`` on ``parser``."""
    from qallegro.quantum.config import (
        ENTANGLINGS,
        MAX_DEPTH,
        MAX_QUBITS,
        MEASUREMENT_MODES,
        MEASURES,
        ROTATIONS,
        qdi_default,
    )

    g = parser.add_argument_group("circuit")
    g.add_argument("--n-qubits", type=int, default=qdi_default("n_qubits"),
                   help=f"number of qubits, 1..{MAX_QUBITS} (default: %(default)s)")
    g.add_argument("--depth", type=int, default=qdi_default("depth"),
                   help=f"variational layers per uploaded chunk, 1..{MAX_DEPTH} (default: %(default)s)")
    g.add_argument("--in-features", type=int, default=qdi_default("in_features"),
                   help="number of input angles, a multiple of --n-qubits (default: n_qubits, one chunk)")
    g.add_argument("--rotation", choices=ROTATIONS, default=qdi_default("rotation"),
                   help="encoding rotation (default: %(default)s)")
    g.add_argument("--entangling", choices=ENTANGLINGS, default=qdi_default("entangling"),
                   help="variational layer type (default: %(default)s)")
    g.add_argument("--measure", choices=MEASURES, default=qdi_default("measure"),
                   help="measured Pauli (default: %(default)s)")
    g.add_argument("--measurement-mode", choices=MEASUREMENT_MODES, default=qdi_default("measurement_mode"),
                   help="which qubits are read out (default: %(default)s)")
    g.add_argument("--weights", default=None,
                   help="a .npy file with the circuit weights, angles in radians of shape (chunks, depth, "
                        "n_qubits[, 3]) (default: random Uniform[0, 2 pi) from --seed)")
    g.add_argument("--seed", type=int, default=0,
                   help="seed for random weights, inputs and random draws (default: %(default)s)")

    a = parser.add_argument_group("analyses")
    a.add_argument("--analyses", default=",".join(ANALYSES),
                   help="comma-separated subset of fourier,fisher,zx,qasm (default: %(default)s)")
    a.add_argument("--fourier-degree", type=int, default=None,
                   help="largest frequency per input (default: the number of uploaded chunks, exact)")
    a.add_argument("--fourier-samples", type=int, default=20,
                   help="random weight draws for the coefficient spread (default: %(default)s)")
    a.add_argument("--fisher-inputs", type=int, default=64,
                   help="inputs the Fisher information is averaged over (default: %(default)s)")
    a.add_argument("--fisher-max-depth", type=int, default=None,
                   help="deepest circuit of the rank-vs-depth scan (default: 4 layers past the "
                        "depth whose parameter count reaches 4^n - 2^n, within [depth, 30])")
    a.add_argument("--fisher-draws", type=int, default=1,
                   help="random weight draws per depth in the rank scan (default: %(default)s)")
    a.add_argument("--qasm-precision", type=int, default=12,
                   help="decimal digits of the angles in the QASM export (default: %(default)s)")
    parser.add_argument("--out", default="experiments/results/circuit_analysis",
                        help="output folder (default: %(default)s)")


def main(args: argparse.Namespace) -> int:
    """Run the selected analyses; returns 0 on success."""
    from qallegro.quantum import report
    from qallegro.quantum.config import qdi_config_from

    cfg = qdi_config_from(args)  # the circuit options are named like QDIConfig's fields
    selected = [s.strip() for s in args.analyses.split(",") if s.strip()]
    unknown = sorted(set(selected) - set(ANALYSES))
    if unknown:
        raise ValueError(f"unknown analyses {unknown}; choose from {list(ANALYSES)}")
    rng = np.random.default_rng(args.seed)
    if args.weights:
        weights = np.load(args.weights).astype(np.float64)
        if weights.shape != cfg.weight_shape:
            raise ValueError(f"--weights has shape {weights.shape}, the circuit needs {cfg.weight_shape}")
        source = os.path.abspath(args.weights)
    else:
        weights = rng.uniform(0.0, 2 * np.pi, cfg.weight_shape)
        source = f"Uniform[0, 2pi) with seed {args.seed}"
    # one representative input for the single-instance analyses (ZX, QASM)
    x = rng.uniform(-np.pi, np.pi, cfg.in_features)
    os.makedirs(args.out, exist_ok=True)

    timings = {}
    results = {}
    for name in selected:
        t0 = time.perf_counter()
        if name == "fourier":
            try:
                r = report.run_fourier(cfg, weights, args.out, n_samples=args.fourier_samples,
                                       seed=args.seed, degree=args.fourier_degree)
            except ValueError as err:  # the frequency grid is too large: skip, say why, go on
                results[name] = {"skipped": str(err)}
            else:
                results[name] = {"power_per_total_degree_output0": r["power_per_total_degree"][0]}
        elif name == "fisher":
            r = report.run_fisher(cfg, weights, args.out, n_inputs=args.fisher_inputs,
                                  max_depth=args.fisher_max_depth, n_draws=args.fisher_draws,
                                  seed=args.seed)
            results[name] = {"rank": r["rank"], "n_parameters": r["n_parameters"],
                             "max_rank": r["max_rank"], "first_saturated_depth": r["first_saturated_depth"]}
        elif name == "zx":
            r = report.run_zx(cfg, x, weights, args.out)
            results[name] = {"before": r["zx_before"], "after": r["zx_after_full_reduce"],
                             "gates_before": r["circuit_gates"]["total"],
                             "gates_after": r["extracted_basic_optimization"]["total"]}
        elif name == "qasm":
            r = report.run_qasm(cfg, x, weights, args.out, precision=args.qasm_precision)
            results[name] = {"file": os.path.join(args.out, "circuit.qasm")}
        timings[name] = round(time.perf_counter() - t0, 2)
        print(f"[analyze-circuit] {name}: {json.dumps(results[name])} ({timings[name]} s)", flush=True)
    np.save(os.path.join(args.out, "weights.npy"), weights)
    summary = {
        "config": dataclasses.asdict(cfg),
        "weights": source,
        "input": x.tolist(),
        "results": results,
        "seconds": timings,
    }
    with open(os.path.join(args.out, "summary.json"), "w") as fh:
        json.dump(summary, fh, indent=2)
        fh.write("\n")
    print(f"[analyze-circuit] wrote {args.out}")
    return 0
