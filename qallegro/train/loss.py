"""Loss and error metrics on padded batches. Padding graphs/nodes and missing labels carry zero weight."""

from __future__ import annotations

from typing import Dict

import jax.numpy as jnp
import jraph

from qallegro.potential import node_graph_index
from qallegro.potential.graph import energy_forces_stress, graph_energies


def _masks(graph: jraph.GraphsTuple):
    graph_mask = jraph.get_graph_padding_mask(graph).astype(graph.globals["energy"].dtype)
    node_mask = jraph.get_node_padding_mask(graph).astype(graph_mask.dtype)
    w_energy = graph.globals["has_energy"] * graph_mask
    w_forces = graph.globals["has_forces"][node_graph_index(graph)] * node_mask
    w_stress = graph.globals["has_stress"] * graph_mask
    return w_energy, w_forces, w_stress


def error_sums(pred: Dict[str, jnp.ndarray], graph: jraph.GraphsTuple) -> Dict[str, jnp.ndarray]:
    """Sums of errors and their counts over a batch, so metrics over a whole data set are exact sums of
    batch sums (not means of batch means). Energies eV, forces eV/Å, stress eV/Å^3."""
    w_e, w_f, w_s = _masks(graph)
    n_atoms = jnp.maximum(graph.n_node, 1).astype(w_e.dtype)
    de = pred["energy"] - graph.globals["energy"]
    df = pred["forces"] - graph.nodes["forces"]
    sums = {
        "energy_abs": jnp.sum(w_e * jnp.abs(de)),
        "energy_sq": jnp.sum(w_e * de**2),
        "energy_per_atom_abs": jnp.sum(w_e * jnp.abs(de) / n_atoms),
        "energy_per_atom_sq": jnp.sum(w_e * (de / n_atoms) ** 2),
        "n_energy": jnp.sum(w_e),
        "forces_abs": jnp.sum(w_f[:, None] * jnp.abs(df)),
        "forces_sq": jnp.sum(w_f[:, None] * df**2),
        "n_forces": 3.0 * jnp.sum(w_f),
    }
    if "stress" in pred:
        ds = pred["stress"] - graph.globals["stress"]
        sums.update(stress_abs=jnp.sum(w_s[:, None, None] * jnp.abs(ds)),
                    stress_sq=jnp.sum(w_s[:, None, None] * ds**2), n_stress=9.0 * jnp.sum(w_s))
    return sums


def loss_predictions(model, params, graph: jraph.GraphsTuple, forces_weight: float, stress_weight: float,
                     compute_stress: bool, rng: jnp.ndarray = None) -> Dict[str, jnp.ndarray]:
    """The predictions `weighted_loss` needs, and no more: energies (G,) eV always; forces (N, 3) eV/Å by
    -dE/dr only when `forces_weight` is non-zero, stress (G, 3, 3) only when `compute_stress` and
    `stress_weight` is non-zero. Otherwise forces are zeros, which the loss then ignores.

    Energy-only training (QM9) thereby needs no derivative with respect to positions inside the parameter
    gradient: a cpu-profile QM9 step is about 4x cheaper than with the unused forces."""
    with_stress = compute_stress and bool(stress_weight)
    if forces_weight or with_stress:
        return energy_forces_stress(model, params, graph, compute_stress=with_stress, rng=rng)
    positions = graph.nodes["positions"]
    return {"energy": graph_energies(model, params, positions, graph, rng=rng), "forces": jnp.zeros_like(positions)}


def weighted_loss(sums: Dict[str, jnp.ndarray], energy_weight: float, forces_weight: float,
                  stress_weight: float = 0.0) -> jnp.ndarray:
    """loss = lambda_E * MSE(E/atom) + lambda_F * MSE(F) [+ lambda_S * MSE(stress)], in eV^2 units.

    Per-atom energies make the energy term independent of system size; terms without labels vanish. A zero
    weight leaves its term out of the graph (energy-only training, e.g. QM9, then needs no second derivative)."""
    loss = energy_weight * sums["energy_per_atom_sq"] / jnp.maximum(sums["n_energy"], 1.0)
    if forces_weight:
        loss = loss + forces_weight * sums["forces_sq"] / jnp.maximum(sums["n_forces"], 1.0)
    if stress_weight and "stress_sq" in sums:
        loss = loss + stress_weight * sums["stress_sq"] / jnp.maximum(sums["n_stress"], 1.0)
    return loss


def metrics_from_sums(sums: Dict[str, float]) -> Dict[str, float]:
    """MAE/RMSE in meV, meV/atom, meV/Å and meV/Å^3 from accumulated `error_sums` (NaN where no labels)."""

    def mean(key, count):
        n = float(sums.get(count, 0.0))
        return float(sums[key]) / n if n > 0 else float("nan")

    out = {
        "energy_mae": 1000.0 * mean("energy_abs", "n_energy"),
        "energy_rmse": 1000.0 * mean("energy_sq", "n_energy") ** 0.5,
        "energy_per_atom_mae": 1000.0 * mean("energy_per_atom_abs", "n_energy"),
        "forces_mae": 1000.0 * mean("forces_abs", "n_forces"),
        "forces_rmse": 1000.0 * mean("forces_sq", "n_forces") ** 0.5,
    }
    if "stress_abs" in sums:
        out["stress_mae"] = 1000.0 * mean("stress_abs", "n_stress")
    return out
