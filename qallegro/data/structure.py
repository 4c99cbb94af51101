"""The `Structure` record: one atomic configuration with its DFT labels, in eV and Å."""

from __future__ import annotations

import dataclasses
from typing import Optional

import numpy as np

from qallegro.data.neighbors import neighbor_list

#: the largest atomic number (oganesson)
MAX_Z = 118


class DataError(ValueError):
    """Bad input data. The message names the source (file), the frame and, where it applies, the atom."""


@dataclasses.dataclass(frozen=True)
class Structure:
    """One atomic configuration and its labels, in qallegro's internal units.

    Attributes:
        Z: (n_atoms,) int, atomic numbers.
        positions: (n_atoms, 3) float64, Cartesian positions in Å.
        cell: (3, 3) float64, lattice vectors as rows in Å (zeros for a molecule).
        pbc: (3,) bool, periodicity along each lattice vector.
        energy: total energy in eV, or None.
        forces: (n_atoms, 3) in eV/Å, or None.
        stress: (3, 3) in eV/Å^3 (ASE sign: stress = (1/V) dE/dstrain), or None.
        source: where it came from, e.g. "rmd17_aspirin_train_01.npz" (used in error messages).
        frame: index of the frame in its source.
    """

    Z: np.ndarray
    positions: np.ndarray
    cell: np.ndarray
    pbc: np.ndarray
    energy: Optional[float] = None
    forces: Optional[np.ndarray] = None
    stress: Optional[np.ndarray] = None
    source: str = "<memory>"
    frame: int = 0

    @property
    def n_atoms(self) -> int:
        return int(self.Z.shape[0])

    @property
    def where(self) -> str:
        """Human-readable location used in error messages: 'file, frame k'."""
        return f"{self.source}, frame {self.frame}"

    def validate(self, min_distance: float = 1e-3) -> "Structure":
        """Check shapes and values; return self so it can be chained.

        Raises:
            DataError: mismatched shapes, NaN/inf in positions/cell/labels, atomic numbers outside 1..118,
                or two atoms closer than `min_distance` Å (including periodic images). The message names
                the file, the frame and the atom(s).
        """
        n = self.Z.shape[0] if self.Z.ndim == 1 else -1
        if self.Z.ndim != 1 or n == 0:
            raise DataError(f"{self.where}: atomic numbers must be a non-empty 1-d array, got shape {self.Z.shape}")
        if self.positions.shape != (n, 3):
            raise DataError(f"{self.where}: positions have shape {self.positions.shape}, expected ({n}, 3) "
                            f"for {n} atoms")
        if self.cell.shape != (3, 3):
            raise DataError(f"{self.where}: cell has shape {self.cell.shape}, expected (3, 3)")
        if self.pbc.shape != (3,):
            raise DataError(f"{self.where}: pbc has shape {self.pbc.shape}, expected (3,)")
        if np.any((self.Z <= 0) | (self.Z > MAX_Z)):
            atom = int(np.flatnonzero((self.Z <= 0) | (self.Z > MAX_Z))[0])
            raise DataError(f"{self.where}, atom {atom}: atomic number {self.Z[atom]} is not a chemical element")
        bad = ~np.isfinite(self.positions).all(axis=1)
        if bad.any():
            atom = int(np.flatnonzero(bad)[0])
            raise DataError(f"{self.where}, atom {atom}: position {self.positions[atom]} is not finite")
        if not np.isfinite(self.cell).all():
            raise DataError(f"{self.where}: cell contains NaN or inf")
        if self.pbc.any() and abs(np.linalg.det(self.cell)) < 1e-8:
            raise DataError(f"{self.where}: periodic structure with a singular cell {self.cell.tolist()}")
        if self.energy is not None and not np.isfinite(self.energy):
            raise DataError(f"{self.where}: energy {self.energy} is not finite")
        if self.forces is not None:
            if self.forces.shape != (n, 3):
                raise DataError(f"{self.where}: forces have shape {self.forces.shape}, expected ({n}, 3)")
            bad = ~np.isfinite(self.forces).all(axis=1)
            if bad.any():
                atom = int(np.flatnonzero(bad)[0])
                raise DataError(f"{self.where}, atom {atom}: force {self.forces[atom]} is not finite")
        if self.stress is not None:
            if self.stress.shape != (3, 3):
                raise DataError(f"{self.where}: stress has shape {self.stress.shape}, expected (3, 3)")
            if not np.isfinite(self.stress).all():
                raise DataError(f"{self.where}: stress contains NaN or inf")
        self._check_overlaps(min_distance)
        return self

    def _check_overlaps(self, min_distance: float) -> None:
        if self.pbc.any():
            # A search radius well above min_distance keeps matscipy's binning cheap in vacuum-padded cells.
            senders, receivers, _, lengths = neighbor_list(self.positions, self.cell, self.pbc, max(min_distance, 0.5),
                                                           return_lengths=True)
            close = np.flatnonzero(lengths < min_distance)
            pairs = [(int(receivers[k]), int(senders[k]), float(lengths[k])) for k in close]
        else:
            from scipy.spatial import cKDTree

            pairs = [(int(i), int(j), float(np.linalg.norm(self.positions[i] - self.positions[j])))
                     for i, j in sorted(cKDTree(self.positions).query_pairs(min_distance))]
        if pairs:
            i, j, d = pairs[0]
            raise DataError(f"{self.where}: atoms {i} and {j} are {d:.2e} Å apart "
                            f"(closer than {min_distance} Å: duplicated atom?)")


def make_structure(Z, positions, cell=None, pbc=None, energy=None, forces=None, stress=None,
                   source: str = "<memory>", frame: int = 0, validate: bool = True) -> Structure:
    """Build a `Structure` from array-likes, converting dtypes; validated unless `validate=False`.

    Units are qallegro's internal ones (Å, eV, eV/Å, eV/Å^3): convert before calling.
    Raises `DataError` as `Structure.validate`, and for atomic numbers that are not whole numbers (6.5, NaN,
    booleans, text): they are never rounded.
    """
    Z = np.asarray(Z)
    if Z.dtype.kind not in "iu":  # floats only where they are whole element numbers (6.0), never rounded
        if Z.dtype.kind != "f":
            raise DataError(f"{source}, frame {frame}: atomic numbers of dtype {Z.dtype} are not integers")
        whole = np.isfinite(Z) & (Z == np.round(Z)) & (np.abs(Z) <= MAX_Z)
        if not whole.all():
            atom = int(np.flatnonzero(~whole.ravel())[0])
            raise DataError(f"{source}, frame {frame}, atom {atom}: atomic number {Z.ravel()[atom]} is not a "
                            f"whole number in 1..{MAX_Z}")
    Z = Z.astype(np.int64)
    positions = np.asarray(positions, dtype=np.float64)
    cell = np.zeros((3, 3)) if cell is None else np.asarray(cell, dtype=np.float64)
    pbc = np.zeros(3, dtype=bool) if pbc is None else np.broadcast_to(np.asarray(pbc, dtype=bool), (3,)).copy()
    s = Structure(
        Z=Z, positions=positions, cell=cell, pbc=pbc,
        energy=None if energy is None else float(energy),
        forces=None if forces is None else np.asarray(forces, dtype=np.float64),
        stress=None if stress is None else np.asarray(stress, dtype=np.float64),
        source=source, frame=int(frame),
    )
    return s.validate() if validate else s
