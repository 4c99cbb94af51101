"""QM9 (Ramakrishnan et al., Sci. Data 1, 140022 (2014)): 130,831 small organic molecules (H, C, N, O, F),
B3LYP/6-31G(2df,p) optimised geometries, energies in Hartree.

File layout (`qm9_130831.npz`, as in ../shared/data/qm9/SOURCE.md; the embedded subset
experiments/data/qm9_subset.npz has the same keys): ragged atoms stored flat, molecule i is rows
offsets[i]:offsets[i+1] of Z (N,) and R (N, 3) Å; per-molecule `index` (QM9 gdb number) and total energies
U0, U, H, G (Hartree); free-atom references atomref_Z, atomref_U0/U/H/G (Hartree).

The training target is the atomisation energy E - sum_atoms E_atom(Z) (eV): the same physics, but a number
of tens of eV instead of ~-10,000 eV, so float32 resolves it to well under a meV. No forces (QM9 geometries are
minima); the model still returns forces.
"""

from __future__ import annotations

import os
from typing import List, Optional, Sequence

import numpy as np

from qallegro.data.structure import DataError, Structure, make_structure
from qallegro.data.units import HARTREE_TO_EV

QM9_TARGETS = ("U0", "U", "H", "G")
QM9_KEYS = ("index", "offsets", "Z", "R")


def is_qm9_npz(path: str) -> bool:
    """True if the npz at `path` has the QM9 layout (offsets + flat Z and R)."""
    with np.load(path) as f:
        return all(k in f.files for k in ("offsets", "Z", "R"))


def read_qm9(path: str, target: str = "U0", atomization: bool = True, indices: Optional[Sequence[int]] = None,
             max_molecules: Optional[int] = None) -> List[Structure]:
    """Read QM9 molecules as `Structure` records with energy in eV (no forces, no cell).

    Args:
        path: npz in the layout described in the module docstring.
        target: "U0" (0 K internal energy, default), "U", "H" or "G" (298.15 K).
        atomization: subtract the free-atom references atomref_<target> (default True); False keeps the
            total energy.
        indices: positions (0-based rows, not gdb numbers) of the molecules to read (default: all).
        max_molecules: read at most this many (after `indices`).

    Returns:
        Structures with `frame` = the QM9 gdb index of the molecule (so errors name the molecule).

    Raises:
        FileNotFoundError: no such file (the message says where the data comes from).
        DataError: unknown target, missing keys, inconsistent offsets, an element without reference.
    """
    name = os.path.basename(path)
    if target not in QM9_TARGETS:
        raise DataError(f"{name}: unknown QM9 target {target!r}; choose one of {list(QM9_TARGETS)}")
    if not os.path.exists(path):
        raise FileNotFoundError(f"QM9 file not found: {path} (the full set is ../shared/data/qm9/qm9_130831.npz; "
                                f"experiments/data/qm9_subset.npz is the embedded subset)")
    with np.load(path) as f:
        needed = list(QM9_KEYS) + [target] + ([f"atomref_{target}", "atomref_Z"] if atomization else [])
        missing = [k for k in needed if k not in f.files]
        if missing:
            raise DataError(f"{name}: missing key(s) {missing} for target {target} (found {sorted(f.files)})")
        gdb, offsets = np.asarray(f["index"]), np.asarray(f["offsets"], dtype=np.int64)
        Z, R = np.asarray(f["Z"]), np.asarray(f["R"], dtype=np.float64)
        energy = np.asarray(f[target], dtype=np.float64)
        ref = dict(zip(f["atomref_Z"].tolist(), f[f"atomref_{target}"].tolist())) if atomization else {}
    m = len(gdb)
    if offsets.shape != (m + 1,) or offsets[0] != 0 or offsets[-1] != len(Z) or np.any(np.diff(offsets) < 1):
        raise DataError(f"{name}: offsets must be a non-decreasing prefix sum of length {m + 1} ending at "
                        f"{len(Z)} atoms")
    if R.shape != (len(Z), 3) or energy.shape != (m,):
        raise DataError(f"{name}: R has shape {R.shape} and {target} {energy.shape}; expected ({len(Z)}, 3) "
                        f"and ({m},)")
    rows = np.arange(m) if indices is None else np.asarray(indices, dtype=np.int64)
    if max_molecules is not None:
        rows = rows[:max_molecules]
    out = []
    for i in rows:
        z = Z[offsets[i]:offsets[i + 1]]
        e = energy[i]
        if atomization:
            unknown = [int(x) for x in set(z.tolist()) if x not in ref]
            if unknown:
                raise DataError(f"{name}, molecule {int(gdb[i])}: no atom reference for Z={unknown}")
            e = e - sum(ref[int(x)] for x in z)
        out.append(make_structure(z, R[offsets[i]:offsets[i + 1]], energy=e * HARTREE_TO_EV, source=name,
                                  frame=int(gdb[i])))
    return out
