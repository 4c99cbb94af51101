"""Writers for MD output (the edge of the md package that touches files).

* `ThermoCSV`: one row per logged step with `qallegro.md.dynamics.THERMO_FIELDS` (eV, K, fs).
* `TrajectoryWriter`: frames appended to an extxyz file (positions Å, velocities in ASE units, energies in
  info) or an ASE `.traj` file, chosen by the suffix.

Both are usable as (or inside) the `callback` of `run_md`.
"""

from __future__ import annotations

import csv
import os
from typing import Dict, Optional

import numpy as np
from ase import Atoms, units

from qallegro.md.dynamics import THERMO_FIELDS


class ThermoCSV:
    """Append thermo rows to `path` (header written on open)."""

    def __init__(self, path: str):
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        self._file = open(path, "w", newline="")
        self._writer = csv.DictWriter(self._file, fieldnames=THERMO_FIELDS, extrasaction="ignore")
        self._writer.writeheader()

    def write(self, row: Dict[str, float]) -> None:
        self._writer.writerow(row)
        self._file.flush()

    def close(self) -> None:
        self._file.close()


class TrajectoryWriter:
    """Append frames to an `.extxyz`/`.xyz` or `.traj` file.

    Args:
        path: output file; the suffix picks the format.
        numbers: (N,) atomic numbers; cell: (3, 3) Å or None; pbc: bool or (3,).
    Raises:
        ValueError: an unsupported suffix.
    """

    def __init__(self, path: str, numbers, cell=None, pbc=False):
        from ase.io.trajectory import Trajectory

        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        self.path = path
        self._atoms = Atoms(numbers=numbers, cell=cell, pbc=pbc)
        if path.endswith(".traj"):
            self._traj: Optional[Trajectory] = Trajectory(path, "w")
        elif path.endswith((".extxyz", ".xyz")):
            self._traj = None
            open(path, "w").close()
        else:
            raise ValueError(f"trajectory file {path}: use a .extxyz, .xyz or .traj suffix")

    def write(self, row: Dict[str, float], positions: np.ndarray, velocities_A_per_fs: np.ndarray) -> None:
        from ase.io import write

        atoms = self._atoms.copy()
        atoms.positions = positions
        atoms.set_velocities(np.asarray(velocities_A_per_fs) / units.fs)
        atoms.info.update({k: row[k] for k in ("step", "time_fs", "potential_energy", "total_energy",
                                               "temperature")})
        if self._traj is not None:
            self._traj.write(atoms)
        else:
            write(self.path, atoms, format="extxyz", append=True)

    def close(self) -> None:
        if self._traj is not None:
            self._traj.close()
