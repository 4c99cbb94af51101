"""Typed, validated configuration records of a training run: the dataset section and the training section.

Both come from plain dicts (YAML) through `from_dict`, which refuses unknown keys by name, so a typo in a config
file is an error instead of a silently ignored option.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Dict, Mapping, Optional, Type, TypeVar, Union

from qallegro.errors import ConfigError

T = TypeVar("T")


def _refuse(name: str, value: Any, expected: str) -> None:
    raise ConfigError(f"training.{name} must be {expected}, got {value!r}")


def from_mapping(cls: Type[T], d: Mapping[str, Any], section: str) -> T:
    """Build the dataclass `cls` from `d`.

    Raises:
        ValueError: `d` is not a mapping, or holds keys that `cls` does not have (names them and the known ones).
    """
    if not isinstance(d, Mapping):
        raise ValueError(f"the {section} section must be a mapping, got {type(d).__name__}")
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - fields)
    if unknown:
        raise ValueError(f"unknown {section} option(s) {unknown}; known: {sorted(fields)}")
    return cls(**d)


@dataclasses.dataclass
class DatasetConfig:
    """Where the data comes from and how it is split (paths absolute or relative to the working directory).

    Attributes:
        train: the training file (rMD17 .npz, QM9 .npz, extxyz, ...; see `qallegro.data.readers.read_structures`).
        test: a separate test file, or None: then train/validation/test are all cut from `train`.
        n_train, n_val, n_test: split sizes, counts or fractions (`qallegro.data.splits.resolve_split_sizes`);
            with a `test` file n_test is unused.
        read: reader options (e.g. energy_key, forces_key, stress_key for extxyz).
        external: extra labelled sets evaluated after training, name -> path or {path, min_volume_per_atom,
            max_volume_per_atom, read} (`qallegro.train.evaluation.evaluate_external`).
    """

    train: str
    n_train: Union[int, float]
    n_val: Union[int, float]
    test: Optional[str] = None
    n_test: Union[int, float] = 0
    read: Dict[str, Any] = dataclasses.field(default_factory=dict)
    external: Dict[str, Any] = dataclasses.field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "DatasetConfig":
        """Build from a dict; raises ValueError naming unknown keys or a missing `train`."""
        if isinstance(d, Mapping) and "train" not in d:
            raise ValueError("the dataset section needs `train` (a data file)")
        cfg = from_mapping(cls, d, "dataset")
        cfg.read, cfg.external = dict(cfg.read or {}), dict(cfg.external or {})
        return cfg


@dataclasses.dataclass
class TrainConfig:
    """Training hyperparameters (units: energies eV, forces eV/Å; loss weights multiply MSEs in those units)."""

    learning_rate: float = 2e-3
    batch_size: int = 5
    eval_batch_size: int = 20
    max_epochs: int = 100
    max_minutes: Optional[float] = None
    energy_weight: float = 1.0
    forces_weight: float = 1000.0
    stress_weight: float = 0.0
    ema_decay: float = 0.99
    clip_norm: float = 10.0
    plateau_factor: float = 0.5
    plateau_patience: int = 10
    min_lr_scale: float = 1e-3
    checkpoint_minutes: float = 5.0
    #: proven (checksummed) checkpoints kept in checkpoints/last and checkpoints/best; a damaged newest one
    #: falls back to the previous (qallegro.train.checkpoint.CheckpointStore)
    keep_checkpoints: int = 3
    seed: int = 0
    #: data-parallel training over this many devices of jax.devices() (None: all of them; 1: off), see
    #: qallegro.train.parallel. The batch is split over the devices; the result equals one device's.
    devices: Optional[int] = None
    #: refit the per-species energy shifts in closed form on the training residuals
    #: (qallegro.train.evaluation.fit_shift_correction): before every validation on a fixed subset of the
    #: training structures, and after training on all of them (the saved potential keeps that refit). False:
    #: the shifts fitted before training stay (as nequip).
    refit_shift: bool = True
    #: the number of training structures (the first of the split, a fixed subset) of the per-epoch refit
    shift_refit_structures: int = 256

    def __post_init__(self):
        """Raises ConfigError (a ValueError) naming the first option of a wrong type or out of range, so a bad
        value stops the run before any data is read or model built (not a NaN or a loader error later)."""
        for name, low in (("batch_size", 1), ("eval_batch_size", 1), ("max_epochs", 1), ("plateau_patience", 0),
                          ("keep_checkpoints", 1), ("shift_refit_structures", 1), ("seed", 0), ("devices", 1)):
            value = getattr(self, name)
            if value is None and name == "devices":
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                _refuse(name, value, f"an integer >= {low}")
        # max_minutes 0: stop after the first batch; checkpoint_minutes 0: a checkpoint after every batch
        for name, low, high, closed in (("learning_rate", 0.0, None, False), ("max_minutes", 0.0, None, True),
                                        ("checkpoint_minutes", 0.0, None, True), ("clip_norm", 0.0, None, False),
                                        ("energy_weight", 0.0, None, True), ("forces_weight", 0.0, None, True),
                                        ("stress_weight", 0.0, None, True), ("ema_decay", 0.0, 1.0, True),
                                        ("plateau_factor", 0.0, 1.0, False), ("min_lr_scale", 0.0, 1.0, False)):
            value = getattr(self, name)
            if value is None and name == "max_minutes":
                continue
            number = isinstance(value, (int, float)) and not isinstance(value, bool)
            if not number or not math.isfinite(value) or (value < low if closed else value <= low) or (
                    high is not None and value > high):
                bounds = f"{'>=' if closed else '>'} {low:g}" + (f" and <= {high:g}" if high is not None else "")
                _refuse(name, value, f"a number {bounds}")
        if not (self.energy_weight or self.forces_weight or self.stress_weight):
            raise ConfigError("training: energy_weight, forces_weight and stress_weight are all 0: nothing to fit")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "TrainConfig":
        """Build from a dict; raises ValueError naming unknown keys."""
        return from_mapping(cls, d, "training")
