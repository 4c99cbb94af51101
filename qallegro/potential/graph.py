"""Energy, forces and stress of a model on padded graphs.

Energy is the model; forces are -dE/dr by jax.grad; stress is the strain derivative::

    sigma = (1/V) dE/d(epsilon) at epsilon = 0,   positions -> positions (1 + epsilon), cell -> cell (1 + epsilon),

with a symmetric strain epsilon per graph (ASE's sign convention, eV/Å^3). The strain acts on every edge vector
r_ij = x_j - x_i + S_ij·cell through (1 + epsilon), so small cells (images of an atom within r_max of itself)
are handled exactly.
"""

from __future__ import annotations

from typing import Any, Dict

import flax.linen as nn
import jax
import jax.numpy as jnp
import jraph


def node_graph_index(graph: jraph.GraphsTuple) -> jnp.ndarray:
    """(N,) index of the graph each node belongs to."""
    n = graph.nodes["species"].shape[0]
    return jnp.repeat(jnp.arange(graph.n_node.shape[0]), graph.n_node, total_repeat_length=n)


def edge_vectors(positions: jnp.ndarray, graph: jraph.GraphsTuple, strain: jnp.ndarray = None) -> jnp.ndarray:
    """(E, 3) edge vectors r_ij = x_j - x_i + shifts @ cell (Å), optionally strained by (G, 3, 3) `strain`."""
    n_edge_total = graph.senders.shape[0]
    edge_graph = jnp.repeat(jnp.arange(graph.n_edge.shape[0]), graph.n_edge, total_repeat_length=n_edge_total)
    cell = graph.globals["cell"].astype(positions.dtype)
    shift_vectors = jnp.einsum("ei,eij->ej", graph.edges["shifts"].astype(positions.dtype), cell[edge_graph])
    vectors = positions[graph.senders] - positions[graph.receivers] + shift_vectors
    if strain is not None:
        sym = 0.5 * (strain + jnp.swapaxes(strain, -1, -2))
        vectors = vectors + jnp.einsum("ei,eij->ej", vectors, sym[edge_graph])
    return vectors


def graph_energies(model: nn.Module, params: Any, positions: jnp.ndarray, graph: jraph.GraphsTuple,
                   strain: jnp.ndarray = None, rng: jnp.ndarray = None) -> jnp.ndarray:
    """(G,) total energy per graph in eV (padding graphs get 0). `rng`: PRNG key for stochastic models
    (allegro-qdi with finite shots), passed as the "shots" rng collection."""
    vectors = edge_vectors(positions, graph, strain)
    edge_mask = jraph.get_edge_padding_mask(graph)
    node_mask = jraph.get_node_padding_mask(graph)
    rngs = None if rng is None else {"shots": rng}
    atom_energy = model.apply(params, vectors, graph.nodes["species"], graph.senders, graph.receivers, edge_mask,
                              rngs=rngs)
    atom_energy = jnp.where(node_mask, atom_energy, 0.0)
    return jax.ops.segment_sum(atom_energy, node_graph_index(graph), num_segments=graph.n_node.shape[0])


def energy_forces_stress(model: nn.Module, params: Any, graph: jraph.GraphsTuple,
                         compute_stress: bool = True, rng: jnp.ndarray = None) -> Dict[str, jnp.ndarray]:
    """Energies, forces and (for periodic graphs) stresses of a padded batch.

    Args:
        model: a module from `qallegro.models.build_model`.
        params: its variables.
        graph: padded GraphsTuple (see qallegro.data.graphs).
        compute_stress: also differentiate with respect to strain.
        rng: PRNG key, needed only by stochastic models (finite-shot QDI).
    Returns:
        {"energy": (G,) eV, "forces": (N, 3) eV/Å, "stress": (G, 3, 3) eV/Å^3 (zero for graphs without a
        periodic cell)}.
    """
    positions = graph.nodes["positions"]
    n_graph = graph.n_node.shape[0]
    strain = jnp.zeros((n_graph, 3, 3), positions.dtype)

    def total_energy(positions, strain):
        energies = graph_energies(model, params, positions, graph, strain if compute_stress else None, rng)
        return energies.sum(), energies

    (_, energies), (dE_dr, dE_deps) = jax.value_and_grad(total_energy, argnums=(0, 1), has_aux=True)(
        positions, strain)
    out = {"energy": energies, "forces": -dE_dr}
    if compute_stress:
        volume = jnp.abs(jnp.linalg.det(graph.globals["cell"].astype(positions.dtype)))
        safe_volume = jnp.where(volume > 1e-8, volume, 1.0)
        out["stress"] = jnp.where((volume > 1e-8)[:, None, None], dE_deps / safe_volume[:, None, None], 0.0)
    return out


#: jit-compiled `energy_forces_stress` with (model, compute_stress) static: one cache shared by every caller
#: (Potential objects, tests), keyed by the model's hyperparameters and the padded shape.
jit_energy_forces_stress = jax.jit(energy_forces_stress, static_argnums=(0, 3))


def _energies_of_graph(model, params, graph, rng=None):
    return graph_energies(model, params, graph.nodes["positions"], graph, None, rng)


#: jit-compiled energies only, (model, params, graph, rng) -> (G,) eV, model static.
jit_graph_energies = jax.jit(_energies_of_graph, static_argnums=0)
