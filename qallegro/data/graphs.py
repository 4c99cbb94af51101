"""Structures -> jraph.GraphsTuple, and batching with padding to a few fixed budgets.

Graph layout (all numpy until it enters jit)::

    nodes:   positions (N, 3) Å, species (N,) int32 index into the model's species list, forces (N, 3) eV/Å
    edges:   shifts (E, 3) integer lattice translations (see qallegro.data.neighbors for the edge convention)
    globals: cell (G, 3, 3) Å, energy (G,) eV, stress (G, 3, 3) eV/Å^3,
             has_energy / has_forces / has_stress (G,) float 0/1 label masks
    senders / receivers: neighbour / centre atom of each edge.

jit compiles once per array shape, so batches are padded (jraph.pad_with_graphs) to budgets taken from a
coarse ladder: by default four sizes per doubling, at most 25 % padding (`padding_budget`; fewer sizes for data
whose batches vary a lot in size). A training run therefore compiles only a handful of times;
`qallegro.data.loader.GraphLoader.shapes_seen` counts them.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence, Tuple

import jraph
import numpy as np

from qallegro.data.neighbors import neighbor_list
from qallegro.data.structure import DataError, Structure


def species_index(Z: np.ndarray, species: Sequence[int], where: str = "") -> np.ndarray:
    """Map atomic numbers to indices into `species` (the model's sorted list of atomic numbers).

    Raises:
        DataError: an atomic number the model does not know; names the atom.
    """
    lookup = {int(z): k for k, z in enumerate(species)}
    out = np.empty(len(Z), dtype=np.int32)
    for a, z in enumerate(Z):
        if int(z) not in lookup:
            raise DataError(f"{where}, atom {a}: species Z={int(z)} is not among the model's species "
                            f"{list(map(int, species))}")
        out[a] = lookup[int(z)]
    return out


def positions_near_origin(positions: np.ndarray, cell: np.ndarray, pbc) -> np.ndarray:
    """(N, 3) float64 positions (Å) moved by symmetries of the energy so that they lie near the origin.

    Periodic axes are wrapped into the cell, s_a -> s_a - floor(s_a) for the fractional coordinates s = r cell^-1
    (a lattice translation of single atoms); without full periodicity the centroid is subtracted first (a rigid
    translation). Energies, forces and stresses are unchanged, but the positions no longer carry a large offset
    into the network's float32 arithmetic: an aspirin translated by 1e4 Å otherwise loses 0.04 eV/Å in its
    forces, and an atom 1e10 Å outside its cell gives NaN. All arithmetic is float64.
    """
    positions = np.asarray(positions, dtype=np.float64)
    cell = np.zeros((3, 3)) if cell is None else np.asarray(cell, dtype=np.float64)
    pbc = np.broadcast_to(np.asarray(pbc, dtype=bool), (3,))
    if len(positions) and not pbc.all():
        positions = positions - positions.mean(axis=0)
    if pbc.any() and abs(np.linalg.det(cell)) > 1e-8:
        frac = np.linalg.solve(cell.T, positions.T).T
        frac[:, pbc] -= np.floor(frac[:, pbc])
        positions = frac @ cell
    return positions


def structure_to_graph(structure: Structure, r_max: float, species: Sequence[int]) -> jraph.GraphsTuple:
    """One structure as a single-graph GraphsTuple with its neighbour list within `r_max` (Å).

    Missing labels are stored as zeros with their `has_*` mask set to 0, so the loss ignores them.
    Atoms with no neighbour within r_max are allowed: their energy is their species' shift. The graph's
    positions are `positions_near_origin(...)` of the structure's (wrapped into the cell, or centred), which
    changes no label.

    Raises:
        DataError: unknown species (names file, frame and atom).
    """
    s = structure
    positions = positions_near_origin(s.positions, s.cell, s.pbc)
    senders, receivers, shifts = neighbor_list(positions, s.cell, s.pbc, r_max)
    n = s.n_atoms
    nodes = {
        "positions": positions,
        "species": species_index(s.Z, species, s.where),
        "forces": np.zeros((n, 3)) if s.forces is None else s.forces.astype(np.float64),
    }
    globals_ = {
        "cell": s.cell[None].astype(np.float64),
        "energy": np.array([0.0 if s.energy is None else s.energy]),
        "stress": (np.zeros((1, 3, 3)) if s.stress is None else s.stress[None]).astype(np.float64),
        "has_energy": np.array([float(s.energy is not None)]),
        "has_forces": np.array([float(s.forces is not None)]),
        "has_stress": np.array([float(s.stress is not None)]),
    }
    return jraph.GraphsTuple(
        nodes=nodes, edges={"shifts": shifts}, globals=globals_, senders=senders, receivers=receivers,
        n_node=np.array([n], dtype=np.int32), n_edge=np.array([len(senders)], dtype=np.int32))


def padding_budget(n: int, minimum: int = 8, sizes_per_doubling: int = 4) -> int:
    """Smallest value of the budget ladder that is >= n: multiples of 2^floor(log2 n) / `sizes_per_doubling`.

    With four sizes per doubling (the default) padding wastes at most 25 % and a dataset of similar structures
    hits only a few distinct sizes; two or one size per doubling (at most 50 % / 100 % waste) compile fewer
    shapes for data whose batches vary a lot in size (cells of 4-64 atoms).

    Raises:
        ValueError: `sizes_per_doubling` is not 1, 2, 4, 8 or 16.
    """
    if sizes_per_doubling not in (1, 2, 4, 8, 16):
        raise ValueError(f"sizes_per_doubling must be 1, 2, 4, 8 or 16, got {sizes_per_doubling}")
    n = max(int(n), minimum)
    quantum = max(minimum, 2 ** int(math.floor(math.log2(n))) // sizes_per_doubling)
    return int(math.ceil(n / quantum) * quantum)


def batch_and_pad(graphs: Sequence[jraph.GraphsTuple], n_graph: Optional[int] = None,
                  sizes_per_doubling: int = 4) -> jraph.GraphsTuple:
    """Concatenate graphs and pad to ladder budgets (one padding graph at the end, >= 1 padding node).

    Args:
        graphs: single- or multi-graph GraphsTuples.
        n_graph: graph budget including the padding graph (default len(graphs) + 1). Keep it fixed in a
            training run (batch_size + 1) so the last, smaller batch does not add a compilation.
        sizes_per_doubling: granularity of the node and edge ladders (`padding_budget`).
    """
    batch = jraph.batch_np(list(graphs))
    n_node = int(batch.n_node.sum())
    n_edge = int(batch.n_edge.sum())
    n_graph = len(batch.n_node) + 1 if n_graph is None else n_graph
    return jraph.pad_with_graphs(batch, n_node=padding_budget(n_node + 1, sizes_per_doubling=sizes_per_doubling),
                                 n_edge=padding_budget(n_edge, sizes_per_doubling=sizes_per_doubling),
                                 n_graph=n_graph)


def graph_shape(graph: jraph.GraphsTuple) -> Tuple[int, int, int]:
    """(n_node, n_edge, n_graph) array sizes of a (padded) batch: what jit specialises on."""
    return int(graph.nodes["positions"].shape[0]), int(graph.senders.shape[0]), int(graph.n_node.shape[0])
