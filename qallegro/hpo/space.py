"""Search spaces: Optuna distributions <-> the unit box [0, 1]^d that SAMO-COBRA's surrogates live in, and the
YAML form in which experiments state a search space.

Mapping (one box coordinate per parameter):

- float: linear (or logarithmic when `log`) in [low, high]; with a `step`, rounded to the grid.
- int: as float, then rounded to the nearest allowed integer (step-aware; log-spaced when `log`).
- categorical with k choices: choice i owns the cell [i/k, (i+1)/k); it maps back to the cell centre. The order
  of `choices` is the order the surrogate sees, so list ordinal choices (widths, batch sizes) in order.
"""

from __future__ import annotations

import math
from typing import Any, Dict, Mapping

import numpy as np
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution


def _forward(dist: BaseDistribution, value: Any) -> float:
    """Parameter value -> box coordinate in [0, 1]."""
    if isinstance(dist, CategoricalDistribution):
        return (dist.choices.index(value) + 0.5) / len(dist.choices)
    low, high, value = float(dist.low), float(dist.high), float(value)
    if high == low:
        return 0.5
    if dist.log:
        return (math.log(value) - math.log(low)) / (math.log(high) - math.log(low))
    return (value - low) / (high - low)


def _backward(dist: BaseDistribution, x: float) -> Any:
    """Box coordinate -> the nearest valid parameter value."""
    x = min(max(float(x), 0.0), 1.0)
    if isinstance(dist, CategoricalDistribution):
        return dist.choices[min(int(x * len(dist.choices)), len(dist.choices) - 1)]
    low, high = float(dist.low), float(dist.high)
    value = math.exp(math.log(low) + x * (math.log(high) - math.log(low))) if dist.log else low + x * (high - low)
    step = getattr(dist, "step", None)
    if isinstance(dist, IntDistribution):
        step = step or 1
        value = low + round((value - low) / step) * step
        return int(min(max(value, low), high))
    if step is not None:
        value = low + round((value - low) / step) * step
    return float(min(max(value, low), high))


def to_unit(space: Mapping[str, BaseDistribution], params: Mapping[str, Any]) -> np.ndarray:
    """Parameters -> a point of the unit box, shape (d,), ordered as `space`.

    Raises:
        KeyError: a parameter of `space` is missing from `params`.
    """
    return np.array([_forward(dist, params[name]) for name, dist in space.items()], dtype=float)


def from_unit(space: Mapping[str, BaseDistribution], x: np.ndarray) -> Dict[str, Any]:
    """A point of the unit box, shape (d,), -> valid parameters (rounded, clipped, categorical chosen)."""
    return {name: _backward(dist, xi) for (name, dist), xi in zip(space.items(), np.asarray(x, float))}


def snap(space: Mapping[str, BaseDistribution], x: np.ndarray) -> np.ndarray:
    """The box point of the parameters that `x` rounds to (where the surrogate should be evaluated)."""
    return to_unit(space, from_unit(space, x))


def snap_array(space: Mapping[str, BaseDistribution], X: np.ndarray) -> np.ndarray:
    """`snap` for many points at once: (q, d) -> (q, d). Continuous parameters without a step pass through."""
    X = np.clip(np.asarray(X, float), 0.0, 1.0).copy()
    for j, dist in enumerate(space.values()):
        if isinstance(dist, FloatDistribution) and dist.step is None:
            continue
        X[:, j] = [_forward(dist, _backward(dist, x)) for x in X[:, j]]
    return X


def space_from_yaml(spec: Mapping[str, Mapping[str, Any]]) -> Dict[str, BaseDistribution]:
    """Build Optuna distributions from a YAML mapping such as::

        model.r_max: {type: float, low: 3.5, high: 6.0}
        model.l_max: {type: int, low: 1, high: 3}
        training.learning_rate: {type: float, low: 1.0e-3, high: 1.0e-2, log: true}
        model.entangling: {type: categorical, choices: [basic, strong]}

    Raises:
        ValueError: unknown type, or a missing/invalid field (names the parameter).
    """
    space: Dict[str, BaseDistribution] = {}
    for name, entry in spec.items():
        kind = entry.get("type") if isinstance(entry, Mapping) else None
        try:
            if kind == "float":
                space[name] = FloatDistribution(float(entry["low"]), float(entry["high"]),
                                                log=bool(entry.get("log", False)),
                                                step=None if entry.get("step") is None else float(entry["step"]))
            elif kind == "int":
                space[name] = IntDistribution(int(entry["low"]), int(entry["high"]),
                                              log=bool(entry.get("log", False)), step=int(entry.get("step", 1)))
            elif kind == "categorical":
                space[name] = CategoricalDistribution(list(entry["choices"]))
            else:
                raise ValueError(f"type must be float, int or categorical, got {kind!r}")
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"search space parameter {name!r}: {err}") from err
    if not space:
        raise ValueError("empty search space")
    return space
