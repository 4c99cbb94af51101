"""Writers for MD output (the edge of the md package that touches files).

* `ThermoCSV`: one row per logged step with `qallegro.md.dynamics.THERMO_FIELDS` (eV, K, fs).
* `TrajectoryWriter`: frames appended to an extxyz file (positions Å, velocities in ASE units, energies in
  info) or an ASE `.traj` file, chosen by the suffix.

Both are usable as (or inside) the `callback` of `run_md`. `partial_path` / `commit_partial` and
`atomic_write_text` write outputs under a temporary name and rename them at the end, so a failed run never
truncates an earlier run's files.
"""

from __future__ import annotations

import csv
import os
from typing import Dict, Optional

import numpy as np
from ase import Atoms, units

from qallegro.md.dynamics import THERMO_FIELDS

FORMATS = ("extxyz", "xyz", "traj")


def partial_path(path: str) -> str:
    """The temporary name `DIR/.NAME.partial` under which `path` is written until `commit_partial`."""
    directory, name = os.path.split(os.path.abspath(path))
    return os.path.join(directory, f".{name}.partial")


def commit_partial(path: str) -> None:
    """Atomically replace `path` by its `partial_path` file (os.replace)."""
    os.replace(partial_path(path), os.path.abspath(path))


def atomic_write_text(path: str, text: str) -> None:
    """Write `text` to `path` through a temporary file and a rename: `path` is either the old or the new file."""
    tmp = partial_path(path)
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, os.path.abspath(path))


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
        path: output file; the suffix picks the format unless `format` ("extxyz", "xyz" or "traj") is given.
        numbers: (N,) atomic numbers; cell: (3, 3) Å or None; pbc: bool or (3,).
    Raises:
        ValueError: an unsupported suffix or format.
    """

    def __init__(self, path: str, numbers, cell=None, pbc=False, format: Optional[str] = None):
        from ase.io.trajectory import Trajectory

        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        self.path = path
        self._atoms = Atoms(numbers=numbers, cell=cell, pbc=pbc)
        format = format or os.path.splitext(path)[1][1:]
        if format not in FORMATS:
            raise ValueError(f"trajectory file {path}: use a .extxyz, .xyz or .traj suffix")
        if format == "traj":
            self._traj: Optional[Trajectory] = Trajectory(path, "w")
        else:
            self._traj = None
            open(path, "w").close()

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
