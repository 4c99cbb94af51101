"""Numbers and report files of a finished (or running) study: Pareto mask, hypervolume history (Optuna's
hypervolume), the Pareto plot and table."""

from __future__ import annotations

import json
import os
import platform
from typing import Any, Dict, Optional, Sequence

import numpy as np
import optuna
from optuna.trial import TrialState

from qallegro.hpo.optuna_compat import compute_hypervolume, pareto_front_mask
from qallegro.plots import hypervolume_plot, pareto_plot

#: the two objectives of qallegro's studies, both minimised
OBJECTIVES = ("validation forces MAE (meV/Å)", "inference time (ms/structure)")


def pareto_mask(values: np.ndarray) -> np.ndarray:
    """(n,) bool: the non-dominated rows of (n, m) minimised objective values."""
    return pareto_front_mask(values)


def default_reference(values: np.ndarray, margin: float = 0.1) -> np.ndarray:
    """A reference point just beyond the worst observed values: max + margin · (max - min), shape (m,)."""
    values = np.asarray(values, float)
    lo, hi = values.min(axis=0), values.max(axis=0)
    return hi + margin * np.where(hi > lo, hi - lo, np.abs(hi) + 1.0)


def hypervolume(values: np.ndarray, reference: Sequence[float],
                feasible: Optional[np.ndarray] = None) -> float:
    """Hypervolume dominated by the (feasible) points of (n, m) minimised values up to `reference`."""
    values, reference = np.asarray(values, float), np.asarray(reference, float)
    if feasible is not None:
        values = values[np.asarray(feasible, bool)]
    values = values[np.all(values < reference, axis=1)] if len(values) else values
    return float(compute_hypervolume(values, reference)) if len(values) else 0.0


def hypervolume_history(values: np.ndarray, reference: Sequence[float],
                        feasible: Optional[np.ndarray] = None) -> np.ndarray:
    """(n,) hypervolume after each of the n evaluations, in the order given."""
    values = np.asarray(values, float)
    feasible = np.ones(len(values), bool) if feasible is None else np.asarray(feasible, bool)
    return np.array([hypervolume(values[:k + 1], reference, feasible[:k + 1]) for k in range(len(values))])


def _wall_minutes(trial) -> Optional[float]:
    """Start to completion of a finished trial (its timing, compilation, training and evaluation), in minutes."""
    if trial.datetime_start is None or trial.datetime_complete is None:
        return None
    return (trial.datetime_complete - trial.datetime_start).total_seconds() / 60.0


def write_report(study: optuna.Study, out: str, command: str, source: Optional[str] = None,
                 objectives: Sequence[str] = OBJECTIVES) -> Dict[str, Any]:
    """Pareto plot, hypervolume history, Pareto table and JSON summary of `study` into `out`
    (pareto.png, hypervolume.png, pareto.md, study.json); returns the summary.

    Raises:
        RuntimeError: the study has no completed trial yet.
    """

    done = [t for t in study.trials if t.state == TrialState.COMPLETE]
    failed = [t for t in study.trials if t.state == TrialState.FAIL]
    if not done:
        raise RuntimeError(f"study {study.study_name!r} has no completed trial yet")
    values = np.array([t.values for t in done])
    front = pareto_mask(values)
    reference = default_reference(values)
    hv = hypervolume_history(values, reference)
    metric = done[0].user_attrs.get("error_metric", "forces_mae (meV/Å)")
    labels = (f"validation {metric}", "inference time (ms/structure)")
    title = f"{study.user_attrs.get('dataset', '')} / {study.user_attrs.get('model', '')}: {study.study_name}"
    pareto_plot(values, front, os.path.join(out, "pareto.png"), labels=labels, title=title,
                numbers=[t.number for t in done], failed=len(failed))
    hypervolume_plot({study.study_name: hv}, os.path.join(out, "hypervolume.png"), title=title,
                     ylabel=f"hypervolume (reference {reference[0]:.3g}, {reference[1]:.3g})")
    best = [t for t, on in zip(done, front) if on]
    best.sort(key=lambda t: t.values[0])
    keys = sorted(best[0].params)
    lines = [f"### Pareto-optimal configurations: {title}", "",
             f"Command: `{command}`", "",
             f"{len(done)} completed trials, {len(failed)} failed; final hypervolume {hv[-1]:.4g} "
             f"(reference point {reference[0]:.4g}, {reference[1]:.4g}).", ""]
    if source:
        lines += [f"Transferred from `{source}`: `source` shows the configuration's objectives on the source "
                  "dataset.", ""]
    header = ["trial", labels[0], "ms/structure", "parameters", "epochs"] + (["source"] if source else []) + keys
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for t in best:
        row = [str(t.number), f"{t.values[0]:.1f}", f"{t.values[1]:.3f}", str(t.user_attrs.get("n_parameters", "")),
               str(t.user_attrs.get("epochs", ""))]
        if source:
            sv = t.user_attrs.get("source_values")
            row.append(f"{sv[0]:.1f} / {sv[1]:.3f}" if sv else "")
        row += [f"{t.params[k]:.3g}" if isinstance(t.params[k], float) else str(t.params[k]) for k in keys]
        lines.append("| " + " | ".join(row) + " |")
    if failed:
        lines += ["", "Failed trials:"] + [f"- trial {t.number}: {t.user_attrs.get('failure', 'stale (worker died)')}"
                                           for t in failed]
    with open(os.path.join(out, "pareto.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    summary = {"study": study.study_name, "command": command, "objectives": list(objectives),
               "reference_point": reference.tolist(), "hypervolume": hv.tolist(),
               "trials": [{"number": t.number, "values": list(t.values), "params": t.params,
                           "pareto": bool(on), "wall_minutes": _wall_minutes(t),
                           **{k: v for k, v in t.user_attrs.items() if k != "dedupe"}}
                          for t, on in zip(done, front)],
               "failed": [{"number": t.number, "params": t.params, "failure": t.user_attrs.get("failure")}
                          for t in failed],
               "machine": {"platform": platform.platform(), "cpus": os.cpu_count()}}
    with open(os.path.join(out, "study.json"), "w") as f:
        json.dump(summary, f, indent=2, default=str)
    return summary
