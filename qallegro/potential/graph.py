"""Energy, forces and stress of a model on padded graphs.

Energy is the model; forces are -dE/dr by jax.grad; stress is the strain derivative::

    sigma = (1/V) dE/d(epsilon) at epsilon = 0,   positions -> positions (1 + epsilon), cell -> cell (1 + epsilon),

with a symmetric strain epsilon per graph (ASE's sign convention, eV/Å^3). The strain acts on every edge vector
r_ij = x_j - x_i + S_ij·cell through (1 + epsilon), so small cells (images of an atom within r_max of itself)
are handled exactly.

Precision (as nequip's model_dtype float32 with default_dtype float64): the network runs in the dtype of its
parameters (float32 in every profile), while the energy is *assembled* in `energy_dtype()`, float64 whenever JAX's
x64 mode is on::

    E_G = sum_{i in G} ( float64(e_i) + mu_{Z_i} + delta_{Z_i} )      (float64 segment_sum)

with e_i the network's scaled atomic energy, mu the per-species shifts (eV/atom) and delta an optional shift
correction (the closed-form refit of training). An aspirin total of -17,600 eV resolves only to ~2 meV in
float32; a 4000-atom cell summed in float32 is off by several meV. Edge vectors are float64 differences of
float64 positions, cast to the network dtype afterwards, so no float64 reaches a matrix product. Without x64 (a
library user who never enabled it) everything is float32; far-from-origin coordinates stay exact all the same,
because graphs carry positions wrapped into the cell or centred (`qallegro.data.graphs.positions_near_origin`).
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
    # (3-term products written out, not einsum: under x64 these float64 geometry ops stay elementwise, and the
    # only matrix products of a step are the network's, in its own dtype.)
    shift_vectors = _row_times_matrix(graph.edges["shifts"].astype(positions.dtype), cell[edge_graph])
    vectors = positions[graph.senders] - positions[graph.receivers] + shift_vectors
    if strain is not None:
        sym = 0.5 * (strain + jnp.swapaxes(strain, -1, -2))
        vectors = vectors + _row_times_matrix(vectors, sym[edge_graph].astype(vectors.dtype))
    return vectors


def _row_times_matrix(rows: jnp.ndarray, matrices: jnp.ndarray) -> jnp.ndarray:
    """(E, 3) rows[e] @ matrices[e] for (E, 3) rows and (E, 3, 3) matrices."""
    return jnp.sum(rows[:, :, None] * matrices, axis=1)


def energy_dtype() -> jnp.dtype:
    """The dtype energies are assembled in: float64 when JAX's x64 mode is on (also inside ``jax.enable_x64``),
    else float32. Evaluated at trace time."""
    return jnp.dtype(jax.dtypes.canonicalize_dtype(jnp.float64))


def network_dtype(params: Any) -> jnp.dtype:
    """The dtype the network runs in: that of its floating parameters (float32 unless a run asked for float64).

    Raises:
        ValueError: `params` holds no floating array.
    """
    dtypes = [jnp.asarray(x).dtype for x in jax.tree.leaves(params)]
    floats = [d for d in dtypes if jnp.issubdtype(d, jnp.floating)]
    if not floats:
        raise ValueError("model parameters hold no floating-point array: cannot tell the network dtype")
    return jnp.dtype(jnp.result_type(*floats))


def species_shift(model: nn.Module, dtype=None) -> jnp.ndarray:
    """(S,) the model's per-species energy shifts mu_Z (eV/atom) in `dtype` (default `energy_dtype()`); zeros
    when the model has none."""
    dtype = energy_dtype() if dtype is None else dtype
    shift = getattr(model, "species_shift", None)
    return jnp.asarray(shift if shift is not None else [0.0] * model.num_species, dtype)


def atomic_energies(model: nn.Module, params: Any, vectors: jnp.ndarray, species: jnp.ndarray,
                    senders: jnp.ndarray, receivers: jnp.ndarray, edge_mask: jnp.ndarray, rng: jnp.ndarray = None,
                    shift_correction: jnp.ndarray = None) -> jnp.ndarray:
    """(N,) atomic energies in eV, in `energy_dtype()`: e_i + mu_{Z_i} (+ delta_{Z_i}).

    The network (`model.apply`, which returns the scaled atomic energies e_i without the shift) runs in
    `network_dtype(params)`: the edge vectors are cast to it, whatever their dtype. Its output is then cast to
    `energy_dtype()`, in which the shift is added, so a float32 network does not round mu (~1000 eV/atom for
    aspirin's carbon) to float32.

    Args:
        vectors: (E, 3) edge vectors r_ij in Å (any float dtype). species: (N,) species indices.
        senders, receivers: (E,) neighbour j and centre i. edge_mask: (E,) bool, False for padding edges.
        rng: PRNG key of stochastic models (finite-shot QDI), the "shots" rng collection.
        shift_correction: (S,) delta added to the shifts (eV/atom), e.g. a closed-form refit; None: 0.
    """
    rngs = None if rng is None else {"shots": rng}
    e = model.apply(params, vectors.astype(network_dtype(params)), species, senders, receivers, edge_mask,
                    rngs=rngs)
    dtype = jnp.promote_types(energy_dtype(), e.dtype)
    shift = species_shift(model, dtype)
    if shift_correction is not None:
        shift = shift + jnp.asarray(shift_correction, dtype)
    return e.astype(dtype) + shift[species]


def graph_energies(model: nn.Module, params: Any, positions: jnp.ndarray, graph: jraph.GraphsTuple,
                   strain: jnp.ndarray = None, rng: jnp.ndarray = None,
                   shift_correction: jnp.ndarray = None) -> jnp.ndarray:
    """(G,) total energy per graph in eV, in `energy_dtype()` (padding graphs get 0).

    E_G = sum over the real atoms of G of `atomic_energies` (segment_sum in `energy_dtype()`).

    Args:
        positions: (N, 3) Å; float64 under x64 keeps the edge vectors exact before their cast to the network dtype.
        strain: (G, 3, 3) strain of each graph (see the module docstring), or None.
        rng: PRNG key for stochastic models (allegro-qdi with finite shots), passed as the "shots" rng collection.
        shift_correction: (S,) per-species correction of the shifts (eV/atom): the energy of every graph moves
            by counts_G @ shift_correction. An argument, not a constant, so a refit never recompiles.
    """
    vectors = edge_vectors(positions, graph, strain)
    edge_mask = jraph.get_edge_padding_mask(graph)
    node_mask = jraph.get_node_padding_mask(graph)
    atom_energy = atomic_energies(model, params, vectors, graph.nodes["species"], graph.senders, graph.receivers,
                                  edge_mask, rng, shift_correction)
    atom_energy = jnp.where(node_mask, atom_energy, 0.0)
    return jax.ops.segment_sum(atom_energy, node_graph_index(graph), num_segments=graph.n_node.shape[0])


def energy_forces_stress(model: nn.Module, params: Any, graph: jraph.GraphsTuple,
                         compute_stress: bool = True, rng: jnp.ndarray = None,
                         shift_correction: jnp.ndarray = None) -> Dict[str, jnp.ndarray]:
    """Energies, forces and (for periodic graphs) stresses of a padded batch.

    Args:
        model: a module from `qallegro.models.build_model`.
        params: its variables.
        graph: padded GraphsTuple (see qallegro.data.graphs).
        compute_stress: also differentiate with respect to strain.
        rng: PRNG key, needed only by stochastic models (finite-shot QDI).
        shift_correction: (S,) per-species correction of the energy shifts (eV/atom), see `graph_energies`;
            it moves energies only.
    Returns:
        {"energy": (G,) eV in `energy_dtype()`, "forces": (N, 3) eV/Å, "stress": (G, 3, 3) eV/Å^3 (zero for
        graphs without a periodic cell)}; forces and stress in the dtype of the graph's positions, computed by
        the network in its own dtype.
    """
    positions = graph.nodes["positions"]
    n_graph = graph.n_node.shape[0]
    strain = jnp.zeros((n_graph, 3, 3), positions.dtype)

    def total_energy(positions, strain):
        energies = graph_energies(model, params, positions, graph, strain if compute_stress else None, rng,
                                  shift_correction)
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
