"""Does qallegro learn as much per epoch as PyTorch Allegro? Validation forces MAE per epoch over seeds.

    python -m experiments.benchmarks.time_to_accuracy --max-epochs 10 --minutes 120 --seed S --out DIR_S ...
    python -m experiments.benchmarks.per_epoch_seeds DIR_0/time_to_accuracy.json DIR_1/... --out experiments/results

Reads several time_to_accuracy.json reports (one per seed, both sides in each), and writes per_epoch_seeds.md,
.png and .json to OUT: for every epoch, each side's mean and sample std over seeds, and the difference
peer - qallegro with a 95 % confidence interval (Welch's t interval over the seeds of each side). The gap is
"within seed noise" at an epoch when that interval contains 0. Wall time plays no part: this is the per-epoch
half of issue 15's question (the same model, loss, optimiser and schedule, learning as much per step).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

SIDES = ("qallegro", "peer")
LABELS = {"qallegro": "qallegro (JAX)", "peer": "PyTorch Allegro (nequip-allegro 0.8)"}


def per_epoch(report: Dict[str, Any], side: str) -> Dict[int, float]:
    """Validation forces MAE (meV/Å) by epoch number for one side of one report (run with --max-epochs, so every
    validation closes a whole epoch)."""
    return {int(h["epoch"]): float(h["val_forces_mae"]) for h in report[side]["history"]}


def welch_interval(a: Sequence[float], b: Sequence[float], level: float = 0.95) -> Optional[List[float]]:
    """Confidence interval of mean(b) - mean(a) by Welch's t (None with fewer than 2 values on a side)."""
    from scipy import stats

    a, b = np.asarray(a, float), np.asarray(b, float)
    if len(a) < 2 or len(b) < 2:
        return None
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    se = np.sqrt(va + vb)
    if se == 0:
        return [float(b.mean() - a.mean())] * 2
    dof = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    half = stats.t.ppf(0.5 + level / 2, dof) * se
    return [float(b.mean() - a.mean() - half), float(b.mean() - a.mean() + half)]


def combine(reports: Sequence[Dict[str, Any]]) -> Dict[str, Any]:
    """The per-epoch table: {"epochs": [...], "rows": [{"epoch", side: {"values", "mean", "std"}, "diff",
    "ci95", "within_noise"}], "seeds": {side: [...]}}; epochs are those every seed of both sides reached."""
    curves = {side: [per_epoch(r, side) for r in reports if side in r] for side in SIDES}
    common = set.intersection(*[set(c) for side in SIDES for c in curves[side]])
    rows = []
    for epoch in sorted(common):
        row: Dict[str, Any] = {"epoch": epoch}
        for side in SIDES:
            values = [c[epoch] for c in curves[side]]
            row[side] = {"values": values, "mean": float(np.mean(values)),
                         "std": float(np.std(values, ddof=1)) if len(values) > 1 else None}
        row["diff"] = row["peer"]["mean"] - row["qallegro"]["mean"]
        row["ci95"] = welch_interval(row["qallegro"]["values"], row["peer"]["values"])
        row["within_noise"] = None if row["ci95"] is None else bool(row["ci95"][0] <= 0.0 <= row["ci95"][1])
        rows.append(row)
    return {"rows": rows, "seeds": {side: [r["settings"]["seed"] for r in reports if side in r] for side in SIDES},
            "commands": [r["command"] for r in reports], "dates": [r["date"] for r in reports],
            "loadavg": [r["loadavg"] for r in reports]}


def markdown(table: Dict[str, Any]) -> str:
    """The table as markdown."""
    seeds = table["seeds"]
    lines = ["# Per-epoch learning: qallegro vs PyTorch Allegro over seeds (rMD17 aspirin)", "",
             f"Seeds: qallegro {seeds['qallegro']}, peer {seeds['peer']}. Validation forces MAE (meV/Å) after each "
             "epoch, mean ± sample std over seeds; difference peer - qallegro with Welch's 95 % t interval. "
             "Commands: " + "; ".join(f"`{c}`" for c in table["commands"]) + ".", "",
             "| epoch | qallegro | peer | peer - qallegro | 95 % CI | within seed noise |",
             "|---:|---:|---:|---:|---:|:---:|"]

    def cell(s):
        return f"{s['mean']:.1f} ± {s['std']:.1f}" if s["std"] is not None else f"{s['mean']:.1f}"

    for row in table["rows"]:
        ci = f"[{row['ci95'][0]:+.1f}, {row['ci95'][1]:+.1f}]" if row["ci95"] else "—"
        noise = {True: "yes", False: "**no**", None: "—"}[row["within_noise"]]
        lines.append(f"| {row['epoch']} | {cell(row['qallegro'])} | {cell(row['peer'])} | {row['diff']:+.1f} | "
                     f"{ci} | {noise} |")
    lines.append("")
    return "\n".join(lines)


def plot(table: Dict[str, Any], path: str) -> None:
    """Each seed's curve (thin) and the mean (thick) per side, log y."""
    from qallegro.plots import new_figure

    fig, ax = new_figure(figsize=(6.5, 4.2))
    epochs = [r["epoch"] for r in table["rows"]]
    for colour, side in zip(("C0", "C1"), SIDES):
        values = np.array([r[side]["values"] for r in table["rows"]])  # (epochs, seeds)
        for k in range(values.shape[1]):
            ax.plot(epochs, values[:, k], "-", color=colour, alpha=0.35, lw=1)
        ax.plot(epochs, values.mean(axis=1), "o-", color=colour, lw=2, ms=4, label=LABELS[side])
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation forces MAE (meV/Å)")
    ax.legend()
    ax.set_title("rMD17 aspirin: per-epoch learning over seeds")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Command line: see the module docstring."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("reports", nargs="+", help="time_to_accuracy.json files, one per seed")
    parser.add_argument("--out", required=True, help="folder for per_epoch_seeds.md, .png, .json")
    args = parser.parse_args(argv)
    reports = []
    for path in args.reports:
        with open(path) as f:
            reports.append(json.load(f))
    table = combine(reports)
    if not table["rows"]:
        raise SystemExit("the reports share no complete epoch of both sides")
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "per_epoch_seeds.json"), "w") as f:
        json.dump(table, f, indent=1)
    with open(os.path.join(args.out, "per_epoch_seeds.md"), "w") as f:
        f.write(markdown(table))
    plot(table, os.path.join(args.out, "per_epoch_seeds.png"))
    print(markdown(table))
    return 0


if __name__ == "__main__":
    sys.exit(main())
