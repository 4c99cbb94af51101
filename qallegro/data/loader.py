"""Loaders: structures -> graphs -> padded batches of one fixed shape, in an order that is a pure function of
(seed, epoch).

`make_loader` is the one way the library turns structures into batches (training, validation, test, external
sets, HPO and timing all use it), so graph building, species indexing and padding happen in one place.
"""

from __future__ import annotations

import dataclasses
from typing import Dict, Iterator, List, Optional, Sequence, Set, Tuple

import jraph
import numpy as np

from qallegro.data.graphs import graph_shape, structure_to_graph
from qallegro.data.structure import Structure


@dataclasses.dataclass(frozen=True)
class BatchBudget:
    """Fixed array sizes of every padded batch of a loader: one compiled shape per loader.

    Attributes:
        n_node: nodes per batch, including at least one padding node.
        n_edge: edges per batch.
        n_graph: graphs per batch, including the padding graph (at most n_graph - 1 structures).
    """

    n_node: int
    n_edge: int
    n_graph: int

    def covering(self, graphs: Sequence[jraph.GraphsTuple]) -> "BatchBudget":
        """This budget, enlarged where needed so that each single graph of `graphs` fits (a test set may hold a
        structure larger than any training one; only then does evaluation compile a second shape)."""
        n_node = max([self.n_node] + [int(g.n_node.sum()) + 1 for g in graphs])
        n_edge = max([self.n_edge] + [int(g.n_edge.sum()) for g in graphs])
        return dataclasses.replace(self, n_node=n_node, n_edge=n_edge)


def _greedy_plan(order: np.ndarray, nodes: np.ndarray, edges: np.ndarray, max_graphs: int, n_node: int,
                 n_edge: int) -> List[np.ndarray]:
    """`order` cut into batches: take the next structure while it fits (with one padding node) and the batch
    holds fewer than `max_graphs`."""
    batches, current, n_sum, e_sum = [], [], 0, 0
    for k in order:
        n, e = nodes[k], edges[k]
        if current and (len(current) == max_graphs or n_sum + n + 1 > n_node or e_sum + e > n_edge):
            batches.append(np.array(current))
            current, n_sum, e_sum = [], 0, 0
        current.append(k)
        n_sum, e_sum = n_sum + n, e_sum + e
    batches.append(np.array(current))
    return batches


def fit_budget(graphs: Sequence[jraph.GraphsTuple], batch_size: int, n_samples: int = 4) -> BatchBudget:
    """The padded batch sizes of a loader, derived once from the data: the budget that minimises the padded work
    of an epoch.

    Random batches of `batch_size` graphs are drawn (`n_samples` shuffles of a fixed generator, so the budget is
    a function of the data alone). Each candidate budget, a quantile of their node and edge totals (median to
    maximum) and at least the largest single graph, is scored by the padded nodes + edges of an epoch packed
    greedily with it (`GraphLoader.plan`: a batch closes early when the next structure would overflow); the
    cheapest wins. For data of one size (rMD17) every batch holds `batch_size` structures and the budget is
    exact; for mixed cell sizes (Cu–Li cells of 4-64 atoms) a few large batches are split instead of padding
    every batch to the largest, and the step still compiles once.

    Args:
        graphs: single-structure graphs (`qallegro.data.graphs.structure_to_graph`).
        batch_size: the most structures a batch holds (>= 1).
        n_samples: shuffles drawn.

    Raises:
        ValueError: no graphs or batch_size < 1.
    """
    if not graphs:
        raise ValueError("fit_budget needs at least one graph")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    nodes = np.array([int(g.n_node.sum()) for g in graphs])
    edges = np.array([int(g.n_edge.sum()) for g in graphs])
    size = min(batch_size, len(graphs))
    rng = np.random.default_rng(0)
    orders = [rng.permutation(len(graphs)) for _ in range(n_samples)]
    totals = np.array([(nodes[o[b:b + size]].sum(), edges[o[b:b + size]].sum())
                       for o in orders for b in range(0, len(o) - size + 1, size)])
    best = None
    for q in (0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0):
        n_node = max(int(np.ceil(np.quantile(totals[:, 0], q))), int(nodes.max())) + 1
        n_edge = max(int(np.ceil(np.quantile(totals[:, 1], q))), int(edges.max()), 1)
        n_batches = sum(len(_greedy_plan(o, nodes, edges, batch_size, n_node, n_edge)) for o in orders)
        cost = n_batches * (n_node + n_edge)
        if best is None or cost < best[0]:
            best = (cost, BatchBudget(n_node=n_node, n_edge=n_edge, n_graph=batch_size + 1))
    return best[1]


class GraphLoader:
    """Batches of graphs padded to one fixed `BatchBudget`, in an order drawn per epoch from (seed, epoch), so any
    epoch can be replayed exactly (this is what makes `--resume` bit-for-bit).

    Each batch takes the next structures of the epoch's order while they fit the budget (at most batch_size
    structures, jraph's ``dynamically_batch`` idea), then is padded to exactly the budget: every batch has the
    same array shapes and the step compiles once.

    Args:
        graphs: single-structure graphs.
        batch_size: the most structures a batch holds.
        shuffle: a new order every epoch (else the given order).
        seed: seed of the shuffling.
        budget: the padded sizes (default: `fit_budget(graphs, batch_size)`).

    Raises:
        ValueError: no graphs, batch_size < 1, or a budget that cannot hold the largest graph or batch_size
            structures.
    """

    def __init__(self, graphs: List[jraph.GraphsTuple], batch_size: int, shuffle: bool, seed: int = 0,
                 budget: Optional[BatchBudget] = None):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if not graphs:
            raise ValueError("GraphLoader needs at least one graph")
        self.graphs = graphs
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.budget = budget or fit_budget(graphs, batch_size)
        self._nodes = np.array([int(g.n_node.sum()) for g in graphs])
        self._edges = np.array([int(g.n_edge.sum()) for g in graphs])
        big = int(np.argmax(self._nodes + self._edges))
        if (self._nodes.max() + 1 > self.budget.n_node or self._edges.max() > self.budget.n_edge
                or self.budget.n_graph < 2):
            raise ValueError(f"batch budget {self.budget} cannot hold graph {big} ({self._nodes[big]} nodes, "
                             f"{self._edges[big]} edges) plus a padding node and graph")
        self.shapes_seen: Set[Tuple[int, int, int]] = set()
        self._plans: Dict[int, List[np.ndarray]] = {}

    def order(self, epoch: int) -> np.ndarray:
        """(n_graphs,) the graph indices of `epoch` in batch order."""
        if not self.shuffle:
            return np.arange(len(self.graphs))
        return np.random.default_rng([self.seed, epoch]).permutation(len(self.graphs))

    def plan(self, epoch: int = 0) -> List[np.ndarray]:
        """The graph indices of each batch of `epoch`: the epoch's order cut greedily where the next structure
        would overflow the budget or batch_size structures are reached."""
        if epoch not in self._plans:
            max_graphs = min(self.batch_size, self.budget.n_graph - 1)
            # one epoch at a time is all a run replays
            self._plans = {epoch: _greedy_plan(self.order(epoch), self._nodes, self._edges, max_graphs,
                                               self.budget.n_node, self.budget.n_edge)}
        return self._plans[epoch]

    def num_batches(self, epoch: int = 0) -> int:
        """Number of batches of `epoch` (it may differ a little between epochs of mixed-size data)."""
        return len(self.plan(epoch))

    def __len__(self) -> int:
        return self.num_batches(0)

    def padding_fraction(self, epoch: int = 0) -> Dict[str, float]:
        """Fractions of the padded node and edge arrays of `epoch` that hold padding, not data."""
        batches = self.plan(epoch)
        return {"nodes": 1.0 - self._nodes.sum() / (len(batches) * self.budget.n_node),
                "edges": 1.0 - self._edges.sum() / (len(batches) * self.budget.n_edge)}

    def batches(self, epoch: int = 0, start: int = 0) -> Iterator[jraph.GraphsTuple]:
        """Yield the padded batches of `epoch`, beginning with batch number `start`."""
        for idx in self.plan(epoch)[start:]:
            batch = jraph.pad_with_graphs(jraph.batch_np([self.graphs[k] for k in idx]), n_node=self.budget.n_node,
                                          n_edge=self.budget.n_edge, n_graph=self.budget.n_graph)
            self.shapes_seen.add(graph_shape(batch))
            yield batch


def make_loader(structures: Sequence[Structure], r_max: float, species: Sequence[int], batch_size: int,
                shuffle: bool = False, seed: int = 0, budget: Optional[BatchBudget] = None) -> GraphLoader:
    """A `GraphLoader` over the graphs of `structures` (neighbour lists within `r_max` Å, built once here).

    Args:
        structures: the structures, in order (the order of an unshuffled loader's batches).
        r_max: cutoff radius in Å.
        species: the model's atomic numbers in index order.
        batch_size: structures per batch.
        shuffle: reshuffle every epoch from (seed, epoch).
        seed: the shuffling seed.
        budget: the padded batch sizes (default: fitted to these structures, `fit_budget`).

    Raises:
        qallegro.data.structure.DataError: a structure with an atomic number not in `species` (names the file
            and frame).
        ValueError: no structures, batch_size < 1, or a budget too small for a structure.
    """
    graphs = [structure_to_graph(s, r_max, species) for s in structures]
    return GraphLoader(graphs, batch_size, shuffle=shuffle, seed=seed, budget=budget)
