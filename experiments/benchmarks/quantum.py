"""Benchmark of the QDI layer: forward + backward, ours vs PennyLane.

``python -m experiments.benchmarks.quantum [--out experiments/results/quantum_benchmark.md]``

Measured quantity: one call computing the expectation values of a batch of circuits *and* the
gradient of ``sum(cotangent * outputs)`` w.r.t. the weights and the inputs (a fixed random
cotangent; what training a hybrid model needs per step). Circuit: the default QDI shape
(H on all, one RZ upload, ``depth`` strongly entangling layers, Pauli-Y on every qubit), float32.

Contenders, all in this one process:

* ours: ``qdi_expectations`` (method ``auto``: the path chosen by the one-off timing, reported),
  ``jax.jit(jax.value_and_grad(...))``;
* PennyLane ``default.qubit``, jax interface, backprop, ``jax.jit(jax.vmap(value_and_grad))`` over
  the batch (per-sample weight gradients summed inside the jit);
* PennyLane ``lightning.qubit``, adjoint differentiation, autograd interface, the batch as a
  broadcast input (PennyLane splits it into one tape per sample).

Timing: one warm-up call (compilation for the jit contenders, reported separately), then the
median of ``--repeats`` calls, each ``block_until_ready``. Cases that do not fit in memory are
skipped with the estimate that ruled them out; lightning runs at the large batch only if the
small batch predicts under ``--lightning-budget`` seconds per call, otherwise its time is a linear
extrapolation from the small batch, marked as such.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import time

# lightning.qubit parallelises within one state with OpenMP; at <= 12 qubits that does not pay,
# and on 2 shared cores its spinning threads slowed it ~10x here when another process was busy.
# Must be set before lightning is loaded.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402


def _median_time(fn, repeats: int) -> float:
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        ts.append(time.perf_counter() - t0)
    return float(np.median(ts))


def _mem_total_bytes() -> int:
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemTotal"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 16 * 2**30


def _problem(n: int, depth: int, batch: int, seed: int = 0):
    from qallegro.quantum import QDIConfig

    cfg = QDIConfig(n_qubits=n, depth=depth)
    rng = np.random.default_rng(seed)
    x = rng.uniform(-np.pi, np.pi, (batch, cfg.in_features)).astype(np.float32)
    w = rng.uniform(0, 2 * np.pi, cfg.weight_shape).astype(np.float32)
    ct = rng.normal(size=(batch, cfg.n_outputs)).astype(np.float32)
    return cfg, x, w, ct


def bench_ours(cfg, x, w, ct, repeats, method="auto"):
    from qallegro.quantum import qdi_expectations, select_method

    chosen = select_method(cfg, x.shape[0]) if method == "auto" else method

    def loss(xx, ww, cc):
        out = qdi_expectations(cfg, xx, ww, method=chosen)
        return jnp.sum(out * cc), out

    f = jax.jit(jax.value_and_grad(loss, argnums=(0, 1), has_aux=True))
    xj, wj, cj = jnp.asarray(x), jnp.asarray(w), jnp.asarray(ct)
    t0 = time.perf_counter()
    (_, out), _ = jax.block_until_ready(f(xj, wj, cj))
    compile_s = time.perf_counter() - t0
    return {"seconds": _median_time(lambda: f(xj, wj, cj), repeats), "compile_s": compile_s,
            "method": chosen, "out": np.asarray(out[:8])}


def bench_default_qubit(cfg, x, w, ct, repeats):
    from qallegro.quantum.pennylane_twin import make_qnode

    qnode = make_qnode(cfg, device="default.qubit", interface="jax", diff_method="backprop")

    def per_sample(xx, ww, cc):
        out = jnp.stack(qnode(xx, ww), -1)
        return jnp.sum(out * cc), out

    vg = jax.vmap(jax.value_and_grad(per_sample, argnums=(0, 1), has_aux=True), in_axes=(0, None, 0))

    def batched(xx, ww, cc):
        (val, out), (gx, gw) = vg(xx, ww, cc)
        return (jnp.sum(val), out), (gx, jnp.sum(gw, axis=0))

    f = jax.jit(batched)
    xj, wj, cj = jnp.asarray(x), jnp.asarray(w), jnp.asarray(ct)
    t0 = time.perf_counter()
    (_, out), _ = jax.block_until_ready(f(xj, wj, cj))
    compile_s = time.perf_counter() - t0
    return {"seconds": _median_time(lambda: f(xj, wj, cj), repeats), "compile_s": compile_s,
            "out": np.asarray(out[:8])}


def bench_lightning(cfg, x, w, ct, repeats):
    """Time ``repeats`` calls (median); lightning compiles nothing, so no warm-up call."""
    import pennylane as qml
    from pennylane import numpy as pnp

    from qallegro.quantum.pennylane_twin import make_qnode

    qnode = make_qnode(cfg, device=qml.device("lightning.qubit", wires=cfg.n_qubits),
                       interface="autograd", diff_method="adjoint")
    ct64 = ct.astype(np.float64)

    def loss(xx, ww):
        return pnp.sum(pnp.stack(list(qnode(xx, ww)), -1) * ct64)

    grad = qml.grad(loss, argnums=[0, 1])
    xx = pnp.array(x.astype(np.float64), requires_grad=True)
    ww = pnp.array(w.astype(np.float64), requires_grad=True)

    def call():
        return grad(xx, ww)  # the forward values are computed inside the gradient call

    return {"seconds": _median_time(call, max(1, repeats))}


def _fmt_s(s):
    if s is None:
        return "—"
    return f"{s * 1e3:.1f} ms" if s < 1 else f"{s:.2f} s"


def run(args) -> dict:
    from qallegro.quantum import qdi_expectations  # noqa: F401  (import cost outside timings)

    mem = _mem_total_bytes()
    rows = []
    for n in args.n_qubits:
        probe = None  # (batch, seconds) of the largest lightning run so far for this n
        for batch in args.batches:
            cfg, x, w, ct = _problem(n, args.depth, batch)
            row = {"n_qubits": n, "depth": args.depth, "batch": batch, "notes": []}
            print(f"[bench] n={n} batch={batch}", flush=True)
            # ours
            r = bench_ours(cfg, x, w, ct, args.repeats)
            row.update(ours_s=r["seconds"], ours_compile_s=r["compile_s"], ours_method=r["method"])
            print(f"  ours ({r['method']}): {_fmt_s(r['seconds'])}", flush=True)
            if args.both_methods and n <= 12:
                other = "gates" if r["method"] == "fused" else "fused"
                flops = 3 * 2 * batch * cfg.dim * 2 * cfg.dim  # the three GEMMs of the fused path
                if other == "fused" and flops > 2e12:
                    row["notes"].append(f"fused path not timed ({flops / 1e12:.1f} TFLOP per call)")
                else:
                    r2 = bench_ours(cfg, x, w, ct, max(1, args.repeats // 2), method=other)
                    row[f"ours_{other}_s"] = r2["seconds"]
                    print(f"  ours ({other}): {_fmt_s(r2['seconds'])}", flush=True)
            # default.qubit jit + vmap backprop: it keeps every gate's output for the backward pass
            n_ops = cfg.n_qubits * (2 + args.depth * 2) + cfg.n_outputs
            need = batch * cfg.dim * 8 * n_ops * 2
            if need > 0.6 * mem:
                row["dq_s"] = None
                row["notes"].append(f"default.qubit skipped: needs ~{need / 2**30:.0f} GiB "
                                    f"(> 60% of {mem / 2**30:.0f} GiB RAM)")
                print("  default.qubit: skipped (memory)", flush=True)
            else:
                r = bench_default_qubit(cfg, x, w, ct, args.pl_repeats)
                row.update(dq_s=r["seconds"], dq_compile_s=r["compile_s"])
                ours_out = np.asarray(qdi_expectations(cfg, x[:8], w))
                row["max_abs_diff_vs_default_qubit"] = float(np.max(np.abs(r["out"] - ours_out)))
                print(f"  default.qubit: {_fmt_s(r['seconds'])} (compile {r['compile_s']:.1f} s)", flush=True)
            # lightning.qubit adjoint: probe on a small batch, run the real batch if it is
            # predicted to fit the budget, else extrapolate linearly from the largest run
            if args.skip_lightning:
                row["lq_s"] = None
            else:
                if probe is None:
                    pb = min(args.lightning_probe, batch)
                    _, xp, wp, cp = _problem(n, args.depth, pb)
                    probe = (pb, bench_lightning(cfg, xp, wp, cp, 1)["seconds"])
                    print(f"  lightning.qubit probe (batch {pb}): {_fmt_s(probe[1])}", flush=True)
                predicted = probe[1] * batch / probe[0]
                if predicted <= args.lightning_budget:
                    r = bench_lightning(cfg, x, w, ct, args.lightning_repeats)
                    row["lq_s"] = r["seconds"]
                    probe = (batch, r["seconds"])
                    print(f"  lightning.qubit: {_fmt_s(r['seconds'])}", flush=True)
                else:
                    b0, s0 = probe
                    row["lq_s"] = predicted
                    row["lq_extrapolated"] = True
                    row["notes"].append(f"lightning.qubit extrapolated linearly from a measured batch of "
                                        f"{b0} ({_fmt_s(s0)}): a measured call would take about "
                                        f"{_fmt_s(predicted)} (> {args.lightning_budget:.0f} s budget)")
                    print(f"  lightning.qubit: extrapolated {_fmt_s(predicted)}", flush=True)
            rows.append(row)
    return {"rows": rows}


def _ratio(a, b):
    return None if a is None or b is None else b / a


def write_markdown(result: dict, path: str, args) -> None:
    rows = result["rows"]
    lines = [
        "# QDI layer benchmark: forward + backward, ours vs PennyLane",
        "",
        f"Written by `python -m experiments.benchmarks.quantum` on {result['date']} "
        f"({result['cpu']}, {result['cores']} cores visible, load average at start "
        f"{result['load_start']}, at end {result['load_end']}; jax {result['jax']}, "
        f"pennylane {result['pennylane']}, lightning {result['lightning']}). One run, all contenders "
        f"in the same process. No GPU was available for this run.",
        "",
        "Per call: expectation values of the batch and the gradient of `sum(cotangent * outputs)` "
        "w.r.t. weights and inputs. Circuit: H on all, one RZ upload, "
        f"{args.depth} strongly entangling layers, Pauli-Y on every qubit, float32 "
        "(lightning: float64, its only precision). Median of "
        f"{args.repeats} (ours) / {args.pl_repeats} (default.qubit) calls after a warm-up call "
        f"(compilation); lightning (nothing to compile): {args.lightning_repeats} call(s), "
        f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}.",
        "",
        "| qubits | batch | ours (path) | default.qubit jit+vmap | lightning adjoint | "
        "default.qubit / ours | lightning / ours |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        dq = r.get("dq_s")
        lq = r.get("lq_s")
        lq_txt = _fmt_s(lq) + (" (extrapolated)" if r.get("lq_extrapolated") else "") if lq else "—"
        rd = _ratio(r["ours_s"], dq)
        rl = _ratio(r["ours_s"], lq)
        lines.append(
            f"| {r['n_qubits']} | {r['batch']} | {_fmt_s(r['ours_s'])} ({r['ours_method']}) | "
            f"{_fmt_s(dq) if dq else 'skipped'} | {lq_txt} | "
            f"{f'{rd:.1f}x' if rd else '—'} | {f'{rl:.1f}x' if rl else '—'} |"
        )
    lines += ["", "Both simulation paths of ours (the `auto` choice is the faster by a one-off timing "
              "at batch <= 2048):", "",
              "| qubits | batch | fused | gates |", "|---:|---:|---:|---:|"]
    for r in rows:
        fused = r["ours_s"] if r["ours_method"] == "fused" else r.get("ours_fused_s")
        gates = r["ours_s"] if r["ours_method"] == "gates" else r.get("ours_gates_s")
        lines.append(f"| {r['n_qubits']} | {r['batch']} | {_fmt_s(fused)} | {_fmt_s(gates)} |")
    lines += ["", "Compile (first call) times: " + "; ".join(
        f"n={r['n_qubits']} batch={r['batch']}: ours {r['ours_compile_s']:.1f} s"
        + (f", default.qubit {r['dq_compile_s']:.1f} s" if r.get("dq_compile_s") else "")
        for r in rows) + "."]
    diffs = [r.get("max_abs_diff_vs_default_qubit") for r in rows if r.get("max_abs_diff_vs_default_qubit") is not None]
    if diffs:
        lines += ["", f"Sanity check: largest |ours - default.qubit| over the first 8 outputs of each case: "
                  f"{max(diffs):.1e}."]
    notes = [f"n={r['n_qubits']} batch={r['batch']}: {note}" for r in rows for note in r["notes"]]
    if notes:
        lines += ["", "Notes:", ""] + [f"- {n}" for n in notes]
    with open(path, "w") as fh:
        fh.write("\n".join(lines) + "\n")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n-qubits", type=int, nargs="+", default=[4, 8, 12],
                   help="register sizes (default: 4 8 12)")
    p.add_argument("--batches", type=int, nargs="+", default=[1024, 16384],
                   help="batch sizes, smallest first (default: 1024 16384)")
    p.add_argument("--depth", type=int, default=4, help="variational layers (default: 4)")
    p.add_argument("--repeats", type=int, default=7, help="timed calls for ours (default: 7)")
    p.add_argument("--pl-repeats", type=int, default=3, help="timed calls for default.qubit (default: 3)")
    p.add_argument("--lightning-repeats", type=int, default=1,
                   help="timed calls for lightning, which has no compile step (default: 1)")
    p.add_argument("--lightning-budget", type=float, default=45.0,
                   help="largest predicted seconds per lightning call actually run (default: 45)")
    p.add_argument("--lightning-probe", type=int, default=64,
                   help="batch of the first lightning call per register size, used to predict "
                        "the cost of the real batches (default: 64)")
    p.add_argument("--skip-lightning", action="store_true", help="leave lightning.qubit out")
    p.add_argument("--both-methods", action=argparse.BooleanOptionalAction, default=True,
                   help="also time the path auto did not choose (default: on)")
    p.add_argument("--out", default="experiments/results/quantum_benchmark.md",
                   help="markdown table to write; a .json with the raw numbers goes beside it "
                        "(default: experiments/results/quantum_benchmark.md)")
    args = p.parse_args(argv)

    from importlib import metadata

    import pennylane as qml

    try:
        lightning_version = metadata.version("pennylane_lightning")
    except metadata.PackageNotFoundError:
        lightning_version = "not installed"
        args.skip_lightning = True
    load_start = os.getloadavg()[0]
    t0 = time.time()
    result = run(args)
    result.update(
        date=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        cpu=platform.processor() or platform.machine(),
        cores=os.cpu_count(),
        jax=jax.__version__,
        pennylane=qml.__version__,
        lightning=lightning_version,
        load_start=f"{load_start:.1f}",
        load_end=f"{os.getloadavg()[0]:.1f}",
        total_seconds=round(time.time() - t0, 1),
    )
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    result["cpu"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    write_markdown(result, args.out, args)
    with open(os.path.splitext(args.out)[0] + ".json", "w") as fh:
        json.dump(result, fh, indent=2, default=float)
    print(open(args.out).read())
    return 0


if __name__ == "__main__":
    sys.exit(main())
