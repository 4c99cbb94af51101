"""Training-set statistics that fix the model's normalisation (never fitted on validation or test data)."""

from __future__ import annotations

from typing import Dict, List, Sequence

import jraph
import numpy as np

from qallegro.data.structure import Structure


def species_of(structures: Sequence[Structure]) -> List[int]:
    """Sorted atomic numbers present in `structures`."""
    return sorted({int(z) for s in structures for z in s.Z})


def avg_num_neighbors(graphs: Sequence[jraph.GraphsTuple]) -> float:
    """Mean number of neighbours per atom within r_max: the normaliser of Allegro's environment sums."""
    n_edge = sum(int(g.n_edge.sum()) for g in graphs)
    n_node = sum(int(g.n_node.sum()) for g in graphs)
    return max(n_edge / max(n_node, 1), 1.0)


def fit_scale_shift(structures: Sequence[Structure], species: Sequence[int]) -> Dict[str, List[float]]:
    """Per-species energy shift and a global scale, as in nequip/Allegro.

    shift: least-squares per-species energies mu_Z solving E_s ~ sum_Z n_{s,Z} mu_Z (eV/atom); when all
        structures share one composition (rMD17) the system is rank-deficient and the minimum-norm solution is
        taken, which still reproduces the mean energy exactly.
    scale: root mean square of the force components (eV/Å), or, without forces, the RMS of the per-atom
        energy residual after the shift (QM9). Same value for every species.

    Returns:
        {"shift": [...], "scale": [...]}, one value per entry of `species`.

    Raises:
        ValueError: no structure has an energy.
    """
    labelled = [s for s in structures if s.energy is not None]
    if not labelled:
        raise ValueError("cannot fit per-species energy shifts: no training structure has an energy")
    energies = np.array([s.energy for s in labelled])
    counts = composition_matrix(labelled, species)
    shift = composition_least_squares(counts, energies)
    forces = [s.forces for s in structures if s.forces is not None]
    if forces:
        scale = float(np.sqrt(np.mean(np.concatenate([f.ravel() for f in forces]) ** 2)))
    else:
        residual = (energies - counts @ shift) / counts.sum(axis=1)
        scale = float(np.sqrt(np.mean(residual ** 2)))
    scale = scale if scale > 1e-8 else 1.0
    return {"shift": [float(x) for x in shift], "scale": [scale] * len(species)}


def composition_matrix(structures: Sequence[Structure], species: Sequence[int]) -> np.ndarray:
    """(n_structures, n_species) atom counts per species."""
    index = {z: k for k, z in enumerate(species)}
    counts = np.zeros((len(structures), len(species)))
    for row, s in enumerate(structures):
        for z in s.Z:
            counts[row, index[int(z)]] += 1
    return counts


def composition_least_squares(counts: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Per-species values mu minimising |counts @ mu - targets|^2 (minimum-norm when rank-deficient)."""
    mu, *_ = np.linalg.lstsq(counts, targets, rcond=None)
    return mu


def refit_shift(structures: Sequence[Structure], species: Sequence[int], predicted: np.ndarray,
                shift: Sequence[float]) -> List[float]:
    """Per-species shifts corrected by the least-squares fit of the residual E_true - E_pred (eV) on composition.

    Used once after training: the constant part of the energy is a linear function of composition, so refitting
    it in closed form removes the offset that a force-dominated loss leaves noisy, without touching forces.

    Args:
        structures: the training structures; those with an energy are used, in order.
        predicted: (n_labelled,) predicted total energies (eV) of the structures that have an energy.
        shift: the model's current per-species shifts (eV/atom).
    """
    labelled = [s for s in structures if s.energy is not None]
    if len(labelled) != len(predicted):
        raise ValueError(f"refit_shift: {len(predicted)} predictions for {len(labelled)} structures with energies")
    if not labelled:
        return list(shift)
    residual = np.array([s.energy for s in labelled]) - np.asarray(predicted)
    delta = composition_least_squares(composition_matrix(labelled, species), residual)
    return [float(a + b) for a, b in zip(shift, delta)]
