"""Helpers for the Allegro tests: small models with perturbed weights, random structures, batched prediction."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from qallegro.data.graphs import batch_and_pad, structure_to_graph
from qallegro.data.structure import make_structure
from qallegro.models import build_model
from qallegro.potential import energy_forces_stress
from qallegro.train.setup import init_params

SMALL_MODEL = dict(family="allegro", r_max=3.5, l_max=2, num_layers=2, num_tensor_features=4,
                   two_body_mlp=[8, 16], latent_mlp=[16], readout_mlp=[8], parity=False, avg_num_neighbors=6.0)


def random_molecule(rng: np.random.Generator, n_atoms: int = 6, species=(1, 6, 8), box: float = 3.0,
                    min_distance: float = 0.9):
    """Random non-periodic structure with atoms at least `min_distance` Å apart."""
    positions = []
    while len(positions) < n_atoms:
        p = rng.uniform(0, box, 3)
        if all(np.linalg.norm(p - q) > min_distance for q in positions):
            positions.append(p)
    Z = rng.choice(species, size=n_atoms)
    return make_structure(Z, np.array(positions))


def random_crystal(rng: np.random.Generator, n_atoms: int = 3, species=(3, 29), min_distance: float = 1.2):
    """Random small triclinic periodic cell (edges ~2.6-3.2 Å, shorter than 2 r_max of the small model)."""
    cell = np.diag(rng.uniform(2.6, 3.2, 3)) + rng.uniform(-0.5, 0.5, (3, 3)) * (1 - np.eye(3))
    while True:
        frac = rng.uniform(0, 1, (n_atoms, 3))
        s = make_structure(rng.choice(species, n_atoms), frac @ cell, cell=cell, pbc=True, validate=False)
        try:
            return s.validate(min_distance=min_distance)
        except ValueError:
            continue


def small_model(species, seed: int = 0, dtype=jnp.float64, noise: float = 0.3, **overrides):
    """A small Allegro with every weight perturbed (the readout starts at zero, which would make every
    physics test pass trivially). Returns (model, params)."""
    config = dict(SMALL_MODEL, num_species=len(species), species_scale=[1.3] * len(species),
                  species_shift=[-1.0 - 0.5 * k for k in range(len(species))], **overrides)
    model = build_model(config)
    probe = make_structure([species[0], species[-1]], [[0, 0, 0], [1.2, 0.3, 0.1]])
    params = init_params(model, structure_to_graph(probe, config["r_max"], species), seed, dtype)
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.PRNGKey(seed + 1), len(leaves))
    leaves = [p + noise * jax.random.normal(k, p.shape, p.dtype) for p, k in zip(leaves, keys)]
    return model, jax.tree.unflatten(tree, leaves)


# One compiled function per (model, compute_stress, padded shape): tests reuse compilations.
_jitted_efs = jax.jit(energy_forces_stress, static_argnums=(0, 3))


def predict(model, params, structures, r_max=None, species=None, n_graph=None, compute_stress=True):
    """Energies (G,), forces (list of (n_i, 3)), stresses (G, 3, 3) of `structures` in one padded batch."""
    r_max = r_max or model.r_max
    graphs = [structure_to_graph(s, r_max, species) for s in structures]
    batch = batch_and_pad(graphs, n_graph=n_graph)
    out = _jitted_efs(model, params, batch, compute_stress)
    n = [s.n_atoms for s in structures]
    forces = np.split(np.asarray(out["forces"])[:sum(n)], np.cumsum(n)[:-1])
    stress = np.asarray(out["stress"])[:len(structures)] if compute_stress else None
    return np.asarray(out["energy"])[:len(structures)], forces, stress
