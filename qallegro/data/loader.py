"""Loaders: structures -> graphs -> padded batches, in an order that is a pure function of (seed, epoch).

`make_loader` is the one way the library turns structures into batches (training, validation, test, external
sets, HPO and timing all use it), so graph building, species indexing and padding happen in one place.
"""

from __future__ import annotations

import math
from typing import Iterator, List, Sequence, Set, Tuple

import jraph
import numpy as np

from qallegro.data.graphs import batch_and_pad, graph_shape, padding_budget, structure_to_graph
from qallegro.data.structure import Structure


class GraphLoader:
    """Batches of padded graphs, reshuffled per epoch from (seed, epoch) so any epoch can be replayed exactly
    (this is what makes `--resume` bit-for-bit)."""

    def __init__(self, graphs: List[jraph.GraphsTuple], batch_size: int, shuffle: bool, seed: int = 0,
                 sizes_per_doubling: int = 4):
        padding_budget(1, sizes_per_doubling=sizes_per_doubling)  # validates it
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if not graphs:
            raise ValueError("GraphLoader needs at least one graph")
        self.graphs = graphs
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.sizes_per_doubling = sizes_per_doubling
        self.shapes_seen: Set[Tuple[int, int, int]] = set()

    def __len__(self) -> int:
        return math.ceil(len(self.graphs) / self.batch_size)

    def order(self, epoch: int) -> np.ndarray:
        """(n_graphs,) the graph indices of `epoch` in batch order."""
        if not self.shuffle:
            return np.arange(len(self.graphs))
        return np.random.default_rng([self.seed, epoch]).permutation(len(self.graphs))

    def batches(self, epoch: int = 0, start: int = 0) -> Iterator[jraph.GraphsTuple]:
        """Yield the padded batches of `epoch`, beginning with batch number `start`."""
        order = self.order(epoch)
        for b in range(start, len(self)):
            idx = order[b * self.batch_size:(b + 1) * self.batch_size]
            batch = batch_and_pad([self.graphs[k] for k in idx], n_graph=self.batch_size + 1,
                                  sizes_per_doubling=self.sizes_per_doubling)
            self.shapes_seen.add(graph_shape(batch))
            yield batch


def make_loader(structures: Sequence[Structure], r_max: float, species: Sequence[int], batch_size: int,
                shuffle: bool = False, seed: int = 0, sizes_per_doubling: int = 4) -> GraphLoader:
    """A `GraphLoader` over the graphs of `structures` (neighbour lists within `r_max` Å, built once here).

    Args:
        structures: the structures, in order (the order of an unshuffled loader's batches).
        r_max: cutoff radius in Å.
        species: the model's atomic numbers in index order.
        batch_size: structures per batch.
        shuffle: reshuffle every epoch from (seed, epoch).
        seed: the shuffling seed.
        sizes_per_doubling: granularity of the padding ladder (`qallegro.data.graphs.padding_budget`).

    Raises:
        qallegro.data.structure.DataError: a structure with an atomic number not in `species` (names the file
            and frame).
        ValueError: no structures, batch_size < 1, or a bad `sizes_per_doubling`.
    """
    graphs = [structure_to_graph(s, r_max, species) for s in structures]
    return GraphLoader(graphs, batch_size, shuffle=shuffle, seed=seed, sizes_per_doubling=sizes_per_doubling)
