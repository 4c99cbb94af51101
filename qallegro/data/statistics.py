"""Training-set statistics that fix the model's normalisation (never fitted on validation or test data).

`DatasetStatistics` is the typed record of them: it travels apart from the hyperparameters (as instadeepai/mlip's
``DatasetInfo``), is saved beside the model config in every potential artifact, and completes the config when a
model is built (`qallegro.models.build_model`).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, List, Mapping, Sequence, Tuple

import jraph
import numpy as np

from qallegro.data.structure import Structure

#: The model-config keys that `DatasetStatistics` fills in (the data-derived part of a model config).
STATISTICS_KEYS = ("num_species", "avg_num_neighbors", "species_scale", "species_shift")


@dataclasses.dataclass(frozen=True)
class DatasetStatistics:
    """The data-derived normalisation of a model, fitted on the training structures only.

    Attributes:
        species: atomic numbers Z in model index order (sorted); node species index k means Z = species[k].
        species_shift: per-species energy shift mu_Z in eV/atom (same order as `species`).
        species_scale: per-species energy scale in eV (same order).
        avg_num_neighbors: mean neighbours per atom within r_max, the normaliser of Allegro's environment sums.
    """

    species: Tuple[int, ...]
    species_shift: Tuple[float, ...]
    species_scale: Tuple[float, ...]
    avg_num_neighbors: float

    def __post_init__(self):
        object.__setattr__(self, "species", tuple(int(z) for z in self.species))
        object.__setattr__(self, "species_shift", tuple(float(x) for x in self.species_shift))
        object.__setattr__(self, "species_scale", tuple(float(x) for x in self.species_scale))
        object.__setattr__(self, "avg_num_neighbors", float(self.avg_num_neighbors))
        n = len(self.species)
        if len(self.species_shift) != n or len(self.species_scale) != n:
            raise ValueError(f"DatasetStatistics: {n} species {list(self.species)} but {len(self.species_shift)} "
                             f"shifts and {len(self.species_scale)} scales")

    def model_fields(self) -> Dict[str, Any]:
        """The keys of a model config this record fills in (`STATISTICS_KEYS`), as plain lists and floats."""
        return {"num_species": len(self.species), "avg_num_neighbors": self.avg_num_neighbors,
                "species_scale": list(self.species_scale), "species_shift": list(self.species_shift)}

    def to_dict(self) -> Dict[str, Any]:
        """JSON-serialisable form (what the artifact stores)."""
        return {"species": list(self.species), "species_shift": list(self.species_shift),
                "species_scale": list(self.species_scale), "avg_num_neighbors": self.avg_num_neighbors}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "DatasetStatistics":
        """Inverse of `to_dict`.

        Raises:
            ValueError: a missing or unknown key (named).
        """
        fields = [f.name for f in dataclasses.fields(cls)]
        missing, unknown = sorted(set(fields) - set(d)), sorted(set(d) - set(fields))
        if missing or unknown:
            raise ValueError(f"dataset statistics: missing {missing}, unknown {unknown}; expected {fields}")
        return cls(**{k: d[k] for k in fields})

    def replace(self, **changes) -> "DatasetStatistics":
        """A copy with some fields changed (e.g. refitted shifts)."""
        return dataclasses.replace(self, **changes)


def split_model_config(config: Mapping[str, Any],
                       species: Sequence[int]) -> Tuple[Dict[str, Any], DatasetStatistics]:
    """Split a complete model config (hyperparameters + data-derived fields, as version-1 artifacts and older
    run directories store it) into (hyperparameters, `DatasetStatistics`).

    Raises:
        ValueError: a data-derived key is missing.
    """
    missing = [k for k in STATISTICS_KEYS[1:] if k not in config]
    if missing:
        raise ValueError(f"model config lacks the data-derived field(s) {missing}")
    hyper = {k: v for k, v in config.items() if k not in STATISTICS_KEYS}
    return hyper, DatasetStatistics(species=tuple(species), species_shift=config["species_shift"],
                                    species_scale=config["species_scale"],
                                    avg_num_neighbors=config["avg_num_neighbors"])


def fit_statistics(structures: Sequence[Structure], graphs: Sequence[jraph.GraphsTuple],
                   species: Sequence[int]) -> DatasetStatistics:
    """`DatasetStatistics` of the training `structures` and their `graphs` (built with the model's r_max).

    Raises:
        ValueError: no structure has an energy (see `fit_scale_shift`).
    """
    stats = fit_scale_shift(structures, species)
    return DatasetStatistics(species=tuple(species), species_shift=stats["shift"], species_scale=stats["scale"],
                             avg_num_neighbors=avg_num_neighbors(graphs))


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
    """Per-species values mu minimising ``|counts @ mu - targets|^2`` (minimum-norm when rank-deficient)."""
    mu, *_ = np.linalg.lstsq(counts, targets, rcond=None)
    return mu
