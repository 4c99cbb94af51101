"""The model registry: one place that maps a family name and its hyperparameters to a flax module.

Families: ``allegro`` (Musaelian et al. 2023) and the seed paper's variants ``allegro-mlp`` (extra classical MLP
block) and ``allegro-qdi`` (quantum depth-infused hybrid block), see qallegro.nn.variants.
A model config is a plain dict (YAML-friendly), e.g.::

    {"family": "allegro", "r_max": 5.0, "l_max": 2, "num_layers": 2, ...}

Data-derived fields (num_species, avg_num_neighbors, species_scale, species_shift) are filled in from the
training set by `qallegro.train` and stored with the checkpoint.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Optional

import flax.linen as nn

from qallegro.data.statistics import DatasetStatistics
from qallegro.nn.allegro import Allegro
from qallegro.nn.variants import AllegroMLP, AllegroQDI

MODEL_FAMILIES: Dict[str, Callable[..., nn.Module]] = {
    "allegro": Allegro, "allegro-mlp": AllegroMLP, "allegro-qdi": AllegroQDI}


def register_model(name: str, constructor: Callable[..., nn.Module]) -> None:
    """Add a model family to the registry: `build_model` then builds `constructor(**hyperparameters)` for
    ``config["family"] == name``."""
    MODEL_FAMILIES[name] = constructor


def build_model(config: Dict[str, Any], statistics: Optional[DatasetStatistics] = None) -> nn.Module:
    """Instantiate the module for `config["family"]` with the remaining keys as hyperparameters.

    Args:
        config: the family and its hyperparameters; it may already hold the data-derived fields.
        statistics: the training set's normalisation; its fields (num_species, avg_num_neighbors,
            species_scale, species_shift) override those of `config`.

    Raises:
        ValueError: unknown family, or a hyperparameter the family does not take (names it).
    """
    config = dict(config, **(statistics.model_fields() if statistics is not None else {}))
    family = config.pop("family", "allegro")
    if family not in MODEL_FAMILIES:
        raise ValueError(f"unknown model family {family!r}; known: {sorted(MODEL_FAMILIES)}")
    cls = MODEL_FAMILIES[family]
    fields = set(getattr(cls, "__dataclass_fields__", {})) - {"parent", "name"}
    unknown = sorted(set(config) - fields)
    if unknown:
        raise ValueError(f"model family {family!r} has no hyperparameter(s) {unknown}; it takes {sorted(fields)}")
    for key, value in config.items():  # flax modules must be hashable: lists -> tuples
        if isinstance(value, list):
            config[key] = tuple(value)
    return cls(**config)
