"""Is qallegro's per-epoch gap to PyTorch Allegro its initial weights? qallegro trained from its own initial draw
and from nequip-allegro's, seed by seed.

    python -m experiments.benchmarks.time_to_accuracy --sides qallegro --init own  --max-epochs 10 --seed S --out DIR
    python -m experiments.benchmarks.time_to_accuracy --sides qallegro --init peer --max-epochs 10 --seed S --out DIR
    python -m experiments.benchmarks.init_swap RUNS... [--peer PEER_REPORTS...] --out experiments/results/init_swap

Each time_to_accuracy.json of RUNS is one qallegro run, labelled by its ``settings.init`` ("own": qallegro's draw;
"peer": nequip-allegro's `AllegroModel(seed=S)` weights, as its nequip-train run of seed S starts). For a seed,
both runs share the split, the batch order and everything else: only the initial weights differ, so the paired
difference peer-init - own-init per epoch isolates the initial draw. --peer adds nequip-train's own runs (reports
with a "peer" side) for reference. Writes init_swap.md (per epoch: each group's mean ± std over seeds, the paired
difference with a 95 % t interval over seeds) and init_swap.json to --out.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

GROUPS = ("own", "peer-init", "nequip-train")
LABELS = {"own": "qallegro, own initial draw", "peer-init": "qallegro from nequip-allegro's initial weights",
          "nequip-train": "nequip-train (PyTorch Allegro)"}


def curve(report: Dict[str, Any], side: str) -> List[float]:
    """Validation forces MAE (meV/Å) after each epoch of one side of a report."""
    return [float(h["val_forces_mae"]) for h in report[side]["history"]]


def paired_interval(differences: Sequence[float], level: float = 0.95) -> Optional[List[float]]:
    """t interval of the mean of paired differences (None with fewer than 2)."""
    from scipy import stats

    d = np.asarray(differences, float)
    if len(d) < 2:
        return None
    half = stats.t.ppf(0.5 + level / 2, len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d))
    return [float(d.mean() - half), float(d.mean() + half)]


def collect(runs: Sequence[Dict[str, Any]], peers: Sequence[Dict[str, Any]]) -> Dict[str, Dict[int, List[float]]]:
    """{group: {seed: curve}}."""
    out: Dict[str, Dict[int, List[float]]] = {g: {} for g in GROUPS}
    for r in runs:
        group = "peer-init" if r["settings"].get("init") == "peer" else "own"
        out[group][int(r["settings"]["seed"])] = curve(r, "qallegro")
    for r in peers:
        out["nequip-train"][int(r["settings"]["seed"])] = curve(r, "peer")
    return out


def table(curves: Dict[str, Dict[int, List[float]]]) -> Dict[str, Any]:
    """Per-epoch rows over the seeds that have both qallegro runs."""
    seeds = sorted(set(curves["own"]) & set(curves["peer-init"]))
    epochs = min(len(curves[g][s]) for g in ("own", "peer-init") for s in seeds)
    rows = []
    for e in range(epochs):
        row: Dict[str, Any] = {"epoch": e + 1}
        for g in GROUPS:
            values = [curves[g][s][e] for s in sorted(curves[g]) if len(curves[g][s]) > e]
            row[g] = {"mean": float(np.mean(values)) if values else None,
                      "std": float(np.std(values, ddof=1)) if len(values) > 1 else None, "n": len(values)}
        diffs = [curves["peer-init"][s][e] - curves["own"][s][e] for s in seeds]
        row["paired"] = {"differences": diffs, "mean": float(np.mean(diffs)), "ci95": paired_interval(diffs),
                         "negative": int(sum(d < 0 for d in diffs))}
        rows.append(row)
    return {"seeds": seeds, "nequip_seeds": sorted(curves["nequip-train"]), "rows": rows, "curves": {
        g: {str(s): c for s, c in v.items()} for g, v in curves.items()}}


def markdown(t: Dict[str, Any], commands: Sequence[str]) -> str:
    """The table as markdown."""
    lines = ["# Initial weights: qallegro from its own draw and from nequip-allegro's (rMD17 aspirin)", "",
             f"Seeds (paired qallegro runs): {t['seeds']}; nequip-train runs: seeds {t['nequip_seeds']}. Validation "
             "forces MAE (meV/Å) after each epoch, mean ± sample std over seeds; paired difference peer-init - own "
             "per seed (same split, batch order and code; only the initial weights differ) with a 95 % t interval "
             "over seeds and the number of seeds where it is negative.", "",
             "| epoch | own draw | nequip's draw | nequip-train | paired difference | 95 % CI | seeds < 0 |",
             "|---:|---:|---:|---:|---:|---:|---:|"]

    def cell(s):
        if s["mean"] is None:
            return "—"
        return f"{s['mean']:.1f} ± {s['std']:.1f}" if s["std"] is not None else f"{s['mean']:.1f}"

    for row in t["rows"]:
        p = row["paired"]
        ci = f"[{p['ci95'][0]:+.1f}, {p['ci95'][1]:+.1f}]" if p["ci95"] else "—"
        lines.append(f"| {row['epoch']} | {cell(row['own'])} | {cell(row['peer-init'])} | {cell(row['nequip-train'])} "
                     f"| {p['mean']:+.1f} | {ci} | {p['negative']}/{len(p['differences'])} |")
    lines += ["", "Commands: " + "; ".join(f"`{c}`" for c in commands) + ".", ""]
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Command line: see the module docstring."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", help="time_to_accuracy.json of qallegro runs (--init own / peer)")
    parser.add_argument("--peer", nargs="*", default=[], help="time_to_accuracy.json reports with a peer side")
    parser.add_argument("--out", required=True, help="folder for init_swap.md and init_swap.json")
    args = parser.parse_args(argv)
    runs = [json.load(open(p)) for p in args.runs]
    peers = [json.load(open(p)) for p in args.peer]
    t = table(collect(runs, peers))
    if not t["seeds"]:
        raise SystemExit("no seed has both an own-init and a peer-init run")
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "init_swap.json"), "w") as f:
        json.dump(t, f, indent=1)
    text = markdown(t, [r["command"] for r in runs])
    with open(os.path.join(args.out, "init_swap.md"), "w") as f:
        f.write(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
