"""Numbers of a finished (or running) study: Pareto mask, hypervolume history (Optuna's hypervolume)."""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from qallegro.hpo.optuna_compat import compute_hypervolume, pareto_front_mask


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
