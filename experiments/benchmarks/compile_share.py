"""How much of a training run is compilation? One run of a dataset's profile with every JAX compilation timed.

    python -m experiments.benchmarks.compile_share --dataset culi --profile cpu --max-epochs 3 --out runs/cs

JAX reports the duration of every tracing, lowering and XLA compilation through `jax.monitoring`; their sum is
the run's compile time. Written to OUT/compile_share.json: compile seconds (per stage, and XLA seconds per jitted
function, slowest first), training minutes, epochs, epochs per minute, the number of compiled batch shapes, the
test errors, and the machine's load.

The script uses the `qallegro` found first on sys.path, so the same command run from an older checkout (a git
worktree) measures that version: that is how before/after comparisons are made (experiments/results/datasets.md).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import defaultdict

#: jax.monitoring events of the compile pipeline (jax/_src/dispatch.py).
COMPILE_EVENTS = {"/jax/core/compile/jaxpr_trace_duration": "trace",
                  "/jax/core/compile/jaxpr_to_mlir_module_duration": "lower",
                  "/jax/core/compile/backend_compile_duration": "xla"}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="culi")
    parser.add_argument("--profile", default="cpu")
    parser.add_argument("--max-epochs", type=int, default=None, help="epoch budget (default: the profile's)")
    parser.add_argument("--max-minutes", type=float, default=None, help="wall budget (default: the profile's; "
                                                                        "0 = none)")
    parser.add_argument("--model", default=None, help="JSON object of model keys to override")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)

    import jax.monitoring

    from experiments.config import enable_x64_if_needed, load_config
    from qallegro.train.run import run_training

    seconds = defaultdict(float)
    counts = defaultdict(int)
    by_function = defaultdict(lambda: [0, 0.0])  # XLA compilations per jitted function: [count, seconds]

    def listener(event, duration, fun_name=None, **_):
        if event in COMPILE_EVENTS:
            seconds[COMPILE_EVENTS[event]] += duration
            counts[COMPILE_EVENTS[event]] += 1
            if COMPILE_EVENTS[event] == "xla":
                by_function[fun_name or "?"][0] += 1
                by_function[fun_name or "?"][1] += duration

    jax.monitoring.register_event_duration_secs_listener(listener)
    cfg = load_config(args.dataset, args.profile)
    if args.model:
        cfg["model"].update(json.loads(args.model))
    if args.max_epochs is not None:
        cfg["training"]["max_epochs"] = args.max_epochs
    if args.max_minutes is not None:
        cfg["training"]["max_minutes"] = args.max_minutes or None
    enable_x64_if_needed(cfg)
    os.makedirs(args.out, exist_ok=True)
    load_start = os.getloadavg()
    start = time.perf_counter()
    results = run_training(cfg, os.path.join(args.out, "run"), seed=args.seed)
    wall = time.perf_counter() - start
    compile_s = sum(seconds.values())
    test = results.get("test", {})
    report = {
        "command": "python -m experiments.benchmarks.compile_share " + " ".join(sys.argv[1:] if argv is None else argv),
        "qallegro": os.path.dirname(os.path.dirname(sys.modules["qallegro"].__file__)),
        "config": cfg, "wall_seconds": wall, "compile_seconds": compile_s,
        "compile_seconds_by_stage": dict(seconds), "compilations_by_stage": dict(counts),
        "xla_by_function": {name: {"compilations": n, "seconds": t} for name, (n, t)
                            in sorted(by_function.items(), key=lambda item: -item[1][1])},
        "train_minutes": results.get("train_minutes"), "epochs": results.get("epochs"),
        "epochs_per_minute": results.get("epochs", 0) / max(results.get("train_minutes") or 1e-9, 1e-9),
        "compiled_shapes": results.get("compiled_shapes"),
        "compile_share_of_wall": compile_s / wall,
        "test": {k: test.get(k) for k in ("energy_mae", "energy_per_atom_mae", "forces_mae", "stress_mae")},
        "loadavg": {"start": list(load_start), "end": list(os.getloadavg())},
        "cpu_affinity": sorted(os.sched_getaffinity(0)),
    }
    with open(os.path.join(args.out, "compile_share.json"), "w") as f:
        json.dump(report, f, indent=1)
    print(f"compile {compile_s:.1f} s of {wall:.1f} s wall ({100 * compile_s / wall:.1f} %); "
          f"{report['epochs']} epochs, {report['epochs_per_minute']:.2f} epochs/min; test {report['test']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
