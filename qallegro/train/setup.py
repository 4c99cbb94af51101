"""From structures to a ready-to-train model: species, graphs, training statistics, initialised parameters.

Statistics (avg_num_neighbors, per-species shift/scale) come from the training structures only.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Dict, List, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import jraph
import numpy as np

from qallegro.data.graphs import batch_and_pad, structure_to_graph
from qallegro.data.statistics import DatasetStatistics, fit_statistics, species_of
from qallegro.data.structure import Structure
from qallegro.models import build_model
from qallegro.potential import edge_vectors


@dataclasses.dataclass
class Prepared:
    """Everything a run needs besides the training hyperparameters."""

    model: nn.Module
    params: Any
    model_config: Dict[str, Any]  # the family and hyperparameters (build_model(model_config, statistics))
    statistics: DatasetStatistics  # fitted on the training structures; the model's species are its species
    train_graphs: List[jraph.GraphsTuple]

    @property
    def species(self) -> List[int]:
        """The model's atomic numbers in index order."""
        return list(self.statistics.species)


def init_params(model: nn.Module, graph: jraph.GraphsTuple, seed: int, dtype=jnp.float32) -> Any:
    """Initialise the model's variables on an example graph; cast to `dtype` (float64 needs jax x64)."""
    graph = batch_and_pad([graph]) if len(graph.n_node) == 1 else graph
    positions = np.asarray(graph.nodes["positions"], dtype)

    params = _init_program(model)(seed, positions, graph)
    return jax.tree.map(lambda p: p.astype(dtype), params)


def _init_program(model: nn.Module) -> Callable:
    """`model.init` on (seed, positions, padded graph) as one jit-compiled program, edge vectors and keys included,
    instead of one XLA compilation per distinct eager operation (~300, ~20 s on 2 cores, for model.init alone; ~40
    more for the vectors, mask and keys); the same model (another seed, the next run) reuses it."""
    try:
        return _cached_init(model)
    except TypeError:  # an unhashable model attribute: nothing to share
        return _build_init(model)


def _build_init(model: nn.Module) -> Callable:
    @jax.jit
    def init(seed, positions, graph):
        params_key, shots_key = jax.random.split(jax.random.PRNGKey(seed))
        return model.init({"params": params_key, "shots": shots_key}, edge_vectors(positions, graph),
                          graph.nodes["species"], graph.senders, graph.receivers, jraph.get_edge_padding_mask(graph))

    return init


@functools.lru_cache(maxsize=8)
def _cached_init(model: nn.Module) -> Callable:
    return _build_init(model)


def prepare(train: Sequence[Structure], model_config: Dict[str, Any], seed: int,
            species: Optional[Sequence[int]] = None, dtype=jnp.float32) -> Prepared:
    """Build graphs for `train`, fit statistics, build and initialise the model.

    Args:
        train: training structures (statistics are fitted on these only).
        model_config: hyperparameters for `qallegro.models.build_model` (must include r_max).
        seed: PRNG seed of the initialisation.
        species: atomic numbers the model knows (default: those in `train`).
    """
    if "r_max" not in model_config:
        raise ValueError("model_config needs r_max (Å)")
    species = sorted(species) if species is not None else species_of(train)
    graphs = [structure_to_graph(s, model_config["r_max"], species) for s in train]
    statistics = fit_statistics(train, graphs, species)
    model = build_model(model_config, statistics)
    params = init_params(model, graphs[0], seed, dtype)
    return Prepared(model=model, params=params, model_config=dict(model_config), statistics=statistics,
                    train_graphs=graphs)


def count_parameters(params: Any) -> int:
    """Number of scalar trainable parameters."""
    return int(sum(np.prod(p.shape) for p in jax.tree.leaves(params)))
