"""Convergence stated, not assumed: one criterion, checked on every final run's validation history.

With n epochs and a window of ``w = ceil(window_fraction * n)`` epochs (at least 1), let ``before`` be the best
(lowest) validation error of the first ``n - w`` epochs and ``best`` the best of all n. The run has converged when

    ``(before - best) / before < tolerance``   (the best error improved by less than, e.g., 2 % in the last 20 %)

and, when required, the learning rate of the last epoch is below the first epoch's (the plateau schedule had
already reduced it: a run still at its initial rate has not yet settled).
"""

from __future__ import annotations

import math
from typing import Any, Dict, Mapping, Sequence

import numpy as np

from qallegro.study.plan import ConvergenceCriterion


def check(history: Sequence[Mapping[str, Any]], metric: str, criterion: ConvergenceCriterion) -> Dict[str, Any]:
    """Whether a run met the convergence criterion (see the module docstring).

    Args:
        history: the per-epoch rows (metrics.csv of `qallegro.train.loop.fit`), each with ``learning_rate`` and
            `metric`.
        metric: the validation error column, e.g. ``val_forces_mae`` (meV/Å) or ``val_energy_mae`` (meV).
        criterion: window fraction, tolerance, whether a reduced learning rate is required.

    Returns:
        {"met": bool, "relative_improvement": float (in the window; NaN when undefined), "window_epochs": int,
        "lr_reduced": bool, "epochs": int, "metric": str, "reason": str (why not met, "" when met),
        "criterion": the criterion as a dict}.

    Raises:
        KeyError: a row without `metric` or ``learning_rate``.
    """
    values = np.array([float(row[metric]) for row in history], dtype=float)
    rates = np.array([float(row["learning_rate"]) for row in history], dtype=float)
    n = len(values)
    window = max(1, math.ceil(criterion.window_fraction * n))
    out = {"met": False, "relative_improvement": float("nan"), "window_epochs": window, "lr_reduced": False,
           "epochs": n, "metric": metric, "reason": "", "criterion": {
               "window_fraction": criterion.window_fraction, "tolerance": criterion.tolerance,
               "require_lr_reduced": criterion.require_lr_reduced}}
    if n <= window:
        out["reason"] = f"only {n} epochs: no epoch before the {window}-epoch window"
        return out
    if not np.all(np.isfinite(values)):
        out["reason"] = f"non-finite {metric} in the history"
        return out
    before, best = float(values[:n - window].min()), float(values.min())
    improvement = (before - best) / before if before > 0 else 0.0
    out["relative_improvement"] = improvement
    out["lr_reduced"] = bool(rates[-1] < rates[0] * (1 - 1e-9))
    reasons = []
    if not improvement < criterion.tolerance:
        reasons.append(f"best {metric} still improved by {100 * improvement:.1f} % in the last {window} epochs "
                       f"(tolerance {100 * criterion.tolerance:g} %)")
    if criterion.require_lr_reduced and not out["lr_reduced"]:
        reasons.append("the learning rate was never reduced")
    out["met"] = not reasons
    out["reason"] = "; ".join(reasons)
    return out


def gap_along_curve(runs_a: Sequence[Mapping[str, Any]], runs_b: Sequence[Mapping[str, Any]], metric: str,
                    fractions: Sequence[float] = (0.5, 0.75, 1.0)) -> Dict[str, Any]:
    """How the validation gap between two families develops over training: for unconverged runs, whether a
    test-set verdict is likely to hold with more epochs.

    At each fraction ``q`` of the epochs, the best validation error so far (epoch ``ceil(q * n)``) is averaged over
    the seeds of each family, and ``a - b`` is taken. Validation, never test: the test split stays with the final
    evaluation.

    Args:
        runs_a, runs_b: final runs (results.json dicts with a ``history`` of per-epoch rows).
        metric: the validation column, e.g. ``val_forces_mae`` (meV/Å).
        fractions: of the epochs, each in (0, 1].

    Returns:
        {"epochs": [epoch at each fraction], "gap": [mean a - mean b at each], "relative": [gap / mean b]};
        empty lists when a family has no runs or the runs differ in length.
    """
    def best_so_far(run):
        return np.minimum.accumulate(np.array([float(row[metric]) for row in run["history"]], dtype=float))

    curves_a, curves_b = [best_so_far(r) for r in runs_a], [best_so_far(r) for r in runs_b]
    lengths = {len(c) for c in curves_a + curves_b}
    if not curves_a or not curves_b or len(lengths) != 1 or 0 in lengths:
        return {"epochs": [], "gap": [], "relative": []}
    n = lengths.pop()
    epochs = [max(1, math.ceil(q * n)) for q in fractions]
    mean_a = [float(np.mean([c[e - 1] for c in curves_a])) for e in epochs]
    mean_b = [float(np.mean([c[e - 1] for c in curves_b])) for e in epochs]
    gap = [a - b for a, b in zip(mean_a, mean_b)]
    return {"epochs": epochs, "gap": gap, "relative": [g / b for g, b in zip(gap, mean_b)]}
