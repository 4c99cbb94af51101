"""Uncertainty of the study's numbers: a two-level bootstrap over seeds and test frames.

A final run's test error over a set of frames I is ``MAE_F(I) = sum_{i in I} S_i / sum_{i in I} C_i`` for forces
(S_i the summed absolute force error of frame i in meV/Å, C_i its number of components) and
``MAE_E(I) = mean_{i in I} |dE_i|`` for energies (meV). A family's error is the mean over its seeds.

The difference of family A from family B (``A - B``, or ``A / B - 1`` relative) is resampled as follows, for each
of `resamples` draws: draw seeds with replacement from the seeds both have; for each drawn seed draw its test
frames with replacement, the same frames for A and B when both were tested on the same frames (same seed, same
split: paired), independently otherwise; the draw's value is the mean over the drawn seeds of the difference (or
the ratio of the means minus 1). The confidence interval is the percentile interval of the draws; the estimate
is the value on all seeds and frames. This follows the variation the issue asks to cover: seeds (initialisation,
data order, split) and test frames (Efron & Tibshirani, An Introduction to the Bootstrap, 1993, ch. 13; the
two-level scheme of Davison & Hinkley, Bootstrap Methods, 1997, sec. 3.8).
"""

from __future__ import annotations

from typing import Any, Dict, Mapping, Optional, Sequence

import numpy as np

from qallegro.study.plan import BootstrapPlan


def frame_arrays(run: Mapping[str, Any], metric: str):
    """(numerators, denominators) per test frame of a run's `metric` ("forces_mae" or "energy_mae").

    Raises:
        ValueError: the run has no per-frame errors for `metric` (e.g. forces of an energy-only set).
    """
    frames = run["test_frames"]
    if metric == "forces_mae":
        if frames.get("forces_abs_sum") is None:
            raise ValueError(f"run {run.get('dataset')}/{run.get('family')}/seed {run.get('seed')} has no per-frame "
                             f"force errors (no force labels)")
        return np.asarray(frames["forces_abs_sum"], float), np.asarray(frames["forces_count"], float)
    if metric == "energy_mae":
        e = np.asarray(frames["energy_abs_error"], float)
        return e, np.ones_like(e)
    raise ValueError(f"metric must be forces_mae or energy_mae, got {metric!r}")


def run_error(run: Mapping[str, Any], metric: str) -> float:
    """The run's test `metric` over all its frames (meV/Å or meV), from the per-frame errors."""
    num, den = frame_arrays(run, metric)
    return float(num.sum() / den.sum())


def _by_seed(runs: Sequence[Mapping[str, Any]]) -> Dict[int, Mapping[str, Any]]:
    return {int(r["seed"]): r for r in runs}


def _interval(draws: np.ndarray, confidence: float):
    alpha = (1.0 - confidence) / 2.0
    return float(np.quantile(draws, alpha)), float(np.quantile(draws, 1.0 - alpha))


def bootstrap_difference(runs_a: Sequence[Mapping[str, Any]], runs_b: Sequence[Mapping[str, Any]], metric: str,
                         plan: BootstrapPlan = BootstrapPlan(), relative: bool = False) -> Dict[str, Any]:
    """Difference of family A's test error from family B's with its bootstrap interval (module docstring).

    Args:
        runs_a, runs_b: the committed results of each family's seeds on one dataset.
        metric: "forces_mae" (meV/Å) or "energy_mae" (meV).
        plan: resamples, seed, confidence.
        relative: A / B - 1 (a fraction) instead of A - B.

    Returns:
        {"estimate", "low", "high" (the interval), "seeds" (the common seeds), "paired" (bool), "relative",
        "confidence"}.

    Raises:
        ValueError: no seed in common, or no per-frame errors for `metric`.
    """
    a, b = _by_seed(runs_a), _by_seed(runs_b)
    seeds = sorted(set(a) & set(b))
    if not seeds:
        raise ValueError(f"no common seeds: {sorted(a)} vs {sorted(b)}")
    arrays = [(frame_arrays(a[s], metric), frame_arrays(b[s], metric)) for s in seeds]
    paired = all(a[s]["test_frames"].get("fingerprint") == b[s]["test_frames"].get("fingerprint")
                 and len(x[0]) == len(y[0]) for s, (x, y) in zip(seeds, arrays))
    rng = np.random.default_rng(plan.seed)
    sums = np.zeros((plan.resamples, 2))
    seed_draws = rng.integers(0, len(seeds), size=(plan.resamples, len(seeds)))
    # per (draw, seed slot): the resampled error of A and of B
    values_a = np.empty((plan.resamples, len(seeds)))
    values_b = np.empty((plan.resamples, len(seeds)))
    for k, ((na, da), (nb, db)) in enumerate(arrays):
        ia = rng.integers(0, len(na), size=(plan.resamples, len(na)))
        ib = ia if paired else rng.integers(0, len(nb), size=(plan.resamples, len(nb)))
        slot = seed_draws == k  # where seed k was drawn
        err_a = na[ia].sum(axis=1) / da[ia].sum(axis=1)
        err_b = nb[ib].sum(axis=1) / db[ib].sum(axis=1)
        # a seed drawn several times in one draw reuses one frame resample: the slots get the same values
        values_a[slot] = np.repeat(err_a[:, None], len(seeds), axis=1)[slot]
        values_b[slot] = np.repeat(err_b[:, None], len(seeds), axis=1)[slot]
    sums[:, 0], sums[:, 1] = values_a.mean(axis=1), values_b.mean(axis=1)
    full_a = np.mean([na.sum() / da.sum() for (na, da), _ in arrays])
    full_b = np.mean([nb.sum() / db.sum() for _, (nb, db) in arrays])
    if relative:
        draws, estimate = sums[:, 0] / sums[:, 1] - 1.0, full_a / full_b - 1.0
    else:
        draws, estimate = sums[:, 0] - sums[:, 1], full_a - full_b
    low, high = _interval(draws, plan.confidence)
    return {"estimate": float(estimate), "low": low, "high": high, "seeds": seeds, "paired": bool(paired),
            "relative": relative, "confidence": plan.confidence}


def bootstrap_mean(runs: Sequence[Mapping[str, Any]], metric: str,
                   plan: BootstrapPlan = BootstrapPlan()) -> Dict[str, Any]:
    """A family's test error (mean over seeds) with its bootstrap interval over seeds and frames.

    Returns:
        {"estimate", "low", "high", "seeds", "confidence"}.
    """
    by = _by_seed(runs)
    seeds = sorted(by)
    arrays = [frame_arrays(by[s], metric) for s in seeds]
    rng = np.random.default_rng(plan.seed)
    seed_draws = rng.integers(0, len(seeds), size=(plan.resamples, len(seeds)))
    values = np.empty((plan.resamples, len(seeds)))
    for k, (num, den) in enumerate(arrays):
        idx = rng.integers(0, len(num), size=(plan.resamples, len(num)))
        err = num[idx].sum(axis=1) / den[idx].sum(axis=1)
        slot = seed_draws == k
        values[slot] = np.repeat(err[:, None], len(seeds), axis=1)[slot]
    low, high = _interval(values.mean(axis=1), plan.confidence)
    return {"estimate": float(np.mean([n.sum() / d.sum() for n, d in arrays])), "low": low, "high": high,
            "seeds": seeds, "confidence": plan.confidence}


def mean_std(values: Sequence[float]) -> Optional[Dict[str, float]]:
    """{"mean", "std" (sample standard deviation, ddof 1; 0 for one value), "n"} or None for no values."""
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], float)
    if not len(v):
        return None
    return {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if len(v) > 1 else 0.0, "n": int(len(v))}


def timing_ratio(run_a: Mapping[str, Any], run_b: Mapping[str, Any]) -> Dict[str, float]:
    """Inference time of A over B (median ms per structure), with the interval [p10_A / p90_B, p90_A / p10_B] of
    their repeated timings: the ratio is resolved when the interval excludes 1."""
    ta, tb = run_a["inference"], run_b["inference"]
    return {"estimate": ta["median_ms_per_structure"] / tb["median_ms_per_structure"],
            "low": ta["p10_ms_per_batch"] / tb["p90_ms_per_batch"],
            "high": ta["p90_ms_per_batch"] / tb["p10_ms_per_batch"]}
