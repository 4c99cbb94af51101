"""`python -m experiments.run compare --dataset D --models allegro,allegro-mlp,allegro-qdi --seeds 3`:
the three model families under identical data, splits, optimiser and training budget.

Every (model, seed) run lives in OUT/MODEL/seedS and is skipped when its results.json exists, so an
interrupted comparison resumes where it stopped. Writes OUT/comparison.md (table), comparison.png (bar chart,
mean ± std over seeds) and comparison.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
from typing import Any, Dict, List

import numpy as np

from experiments.config import available_datasets, enable_x64_if_needed, load_config

METRICS = ("energy_mae", "forces_mae", "forces_rmse")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", default="rmd17-aspirin", choices=available_datasets(), help="dataset config")
    parser.add_argument("--models", default="allegro,allegro-mlp,allegro-qdi",
                        help="comma-separated model families")
    parser.add_argument("--seeds", type=int, default=3, help="number of seeds (0..N-1) per model")
    parser.add_argument("--profile", default="cpu", choices=["cpu", "paper"], help="config profile")
    parser.add_argument("--config", default=None,
                        help="YAML merged over the dataset config, e.g. block settings (default: none)")
    parser.add_argument("--max-epochs", type=int, default=None,
                        help="the shared budget: every model trains for exactly N epochs (default: from config)")
    parser.add_argument("--max-minutes", type=float, default=None,
                        help="or a shared wall-time budget in minutes per run (default: from config)")
    parser.add_argument("--timing-structures", type=int, default=10,
                        help="test structures in the fixed inference-timing batch")
    parser.add_argument("--out", default=None, help="output directory (default runs/compare-DATASET-PROFILE)")


def main(args: argparse.Namespace) -> int:
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    out = args.out or os.path.join("runs", f"compare-{args.dataset}-{args.profile}")
    os.makedirs(out, exist_ok=True)
    budget = {"max_epochs": args.max_epochs, "max_minutes": args.max_minutes}
    summary = compare(args.dataset, models, args.seeds, args.profile, args.config, budget, out,
                      args.timing_structures)
    print(open(os.path.join(out, "comparison.md")).read())
    print(f"written: {out}/comparison.md, comparison.png, comparison.json ({len(summary['models'])} models)")
    return 0


def compare(dataset: str, models: List[str], n_seeds: int, profile: str, config_file, budget: Dict[str, Any],
            out: str, timing_structures: int = 10) -> Dict[str, Any]:
    """Train every (model, seed), time inference, aggregate; returns the comparison dict written as JSON."""
    from qallegro.data.readers import read_structures
    from qallegro.potential import load as load_potential
    from qallegro.timing import time_potential
    from qallegro.train.run import run_training
    from qallegro.train.setup import count_parameters

    per_model: Dict[str, Any] = {}
    for model in models:
        runs = []
        for seed in range(n_seeds):
            run_dir = os.path.join(out, model, f"seed{seed}")
            results_path = os.path.join(run_dir, "results.json")
            if not os.path.exists(results_path):
                cfg = load_config(dataset, profile, config_file)
                cfg["model"]["family"] = model
                for key, value in budget.items():
                    if value is not None:
                        cfg["training"][key] = value
                enable_x64_if_needed(cfg)
                print(f"== {model}, seed {seed} -> {run_dir}")
                # an interrupted run continues from its checkpoints (refused if its config differs)
                resume = os.path.isdir(os.path.join(run_dir, "checkpoints", "last"))
                run_training(cfg, run_dir, seed=seed, resume=resume, title=f"{dataset} / {model} / seed {seed}")
            with open(results_path) as f:
                runs.append(json.load(f))
        potential = load_potential(os.path.join(out, model, "seed0", "potential.qallegro"))
        test_path = runs[0]["dataset"].get("test") or runs[0]["dataset"]["train"]
        timing_set = read_structures(test_path)[:timing_structures]
        per_model[model] = {
            "test": {m: [r["test"][m] for r in runs] for m in METRICS},
            "n_parameters": count_parameters(potential.params),
            "epochs": [r["epochs"] for r in runs],
            "minutes_per_epoch": [r["train_minutes"] / max(r["epochs"], 1) for r in runs],
            "inference": time_potential(potential, timing_set),
            "model_config": dict(potential.model_config),
        }
    summary = {"dataset": dataset, "profile": profile, "seeds": n_seeds, "budget": budget, "models": per_model,
               "machine": {"platform": platform.platform(), "cpus": os.cpu_count()}}
    with open(os.path.join(out, "comparison.json"), "w") as f:
        json.dump(summary, f, indent=2)
    with open(os.path.join(out, "comparison.md"), "w") as f:
        f.write(markdown_table(summary))
    bar_chart(summary, os.path.join(out, "comparison.png"))
    return summary


def _mean_std(values) -> str:
    values = np.asarray(values, dtype=float)
    return f"{values.mean():.1f} ± {values.std(ddof=1) if len(values) > 1 else 0.0:.1f}"


def markdown_table(summary: Dict[str, Any]) -> str:
    """The comparison as a markdown table (mean ± sample std over seeds; timing of seed 0's model)."""
    models = summary["models"]
    base = models.get("allegro")
    lines = [f"### {summary['dataset']} ({summary['profile']} profile, {summary['seeds']} seeds, "
             f"budget {json.dumps({k: v for k, v in summary['budget'].items() if v is not None}) or 'from config'})",
             "",
             "| model | energy MAE (meV) | forces MAE (meV/Å) | forces RMSE (meV/Å) | parameters (Δ vs allegro) "
             "| inference (ms/structure) | × allegro | training (min/epoch) |",
             "|---|---|---|---|---|---|---|---|"]
    for name, m in models.items():
        t = m["inference"]["median_ms_per_structure"]
        ratio = t / base["inference"]["median_ms_per_structure"] if base else float("nan")
        delta = m["n_parameters"] - base["n_parameters"] if base else 0
        lines.append(f"| {name} | {_mean_std(m['test']['energy_mae'])} | {_mean_std(m['test']['forces_mae'])} | "
                     f"{_mean_std(m['test']['forces_rmse'])} | {m['n_parameters']} ({delta:+d}) | {t:.2f} | "
                     f"{ratio:.2f} | {np.mean(m['minutes_per_epoch']):.2f} |")
    any_model = next(iter(models.values()))
    lines += ["", f"Inference: jit-compiled energy+forces on a fixed batch of {any_model['inference']['n_structures']} "
              f"test structures, median of {any_model['inference']['repeats']} calls after warm-up, "
              f"device {any_model['inference']['device']}.", ""]
    return "\n".join(lines)


def bar_chart(summary: Dict[str, Any], path: str) -> None:
    """Forces and energy MAE per model, mean with std error bars over seeds."""
    from qallegro.plots import new_figure

    names = list(summary["models"])
    fig, axes = new_figure(1, 3, figsize=(12, 3.8))
    for ax, (metric, label) in zip(axes, (("forces_mae", "forces MAE (meV/Å)"), ("energy_mae", "energy MAE (meV)"))):
        values = [np.asarray(summary["models"][n]["test"][metric]) for n in names]
        ax.bar(names, [v.mean() for v in values], yerr=[v.std(ddof=1) if len(v) > 1 else 0 for v in values],
               capsize=5, color=["C0", "C1", "C2", "C3"][:len(names)])
        ax.set_ylabel(label)
    axes[2].bar(names, [summary["models"][n]["inference"]["median_ms_per_structure"] for n in names],
                color=["C0", "C1", "C2", "C3"][:len(names)])
    axes[2].set_ylabel("inference (ms/structure)")
    for ax in axes:
        ax.tick_params(axis="x", rotation=20)
    fig.suptitle(f"{summary['dataset']}: test errors over {summary['seeds']} seeds")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
