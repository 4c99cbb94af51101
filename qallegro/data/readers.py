"""Readers: files -> lists of `Structure` in eV and Å. Units are converted here and nowhere else."""

from __future__ import annotations

import os
from typing import List, Optional

import numpy as np

from qallegro.data.structure import DataError, Structure, make_structure
from qallegro.data.units import KCAL_MOL_TO_EV

RMD17_KEYS = ("nuclear_charges", "coords", "energies", "forces")


def read_rmd17_npz(path: str, max_frames: Optional[int] = None) -> List[Structure]:
    """Read a revised-MD17 npz file (Christensen & von Lilienfeld, arXiv:2007.09593).

    Keys: nuclear_charges (n_atoms,), coords (n_frames, n_atoms, 3) Å, energies (n_frames,) kcal/mol,
    forces (n_frames, n_atoms, 3) kcal/mol/Å. Energies and forces are converted to eV and eV/Å. The noisy
    ``old_*`` MD17 labels are ignored.

    Raises:
        FileNotFoundError: no such file.
        DataError: a key is missing, array shapes disagree, or a frame is invalid (NaN, overlapping atoms...).
    """
    name = os.path.basename(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"rMD17 file not found: {path}")
    with np.load(path) as f:
        missing = [k for k in RMD17_KEYS if k not in f.files]
        if missing:
            raise DataError(f"{name}: missing key(s) {missing}; an rMD17 npz needs {list(RMD17_KEYS)} "
                            f"(found {sorted(f.files)})")
        Z = np.asarray(f["nuclear_charges"])
        coords = np.asarray(f["coords"], dtype=np.float64)
        energies = np.asarray(f["energies"], dtype=np.float64)
        forces = np.asarray(f["forces"], dtype=np.float64)
    if Z.ndim != 1:
        raise DataError(f"{name}: nuclear_charges has shape {Z.shape}, expected (n_atoms,)")
    n_frames, n_atoms = energies.shape[0], Z.shape[0]
    for key, arr, shape in (("coords", coords, (n_frames, n_atoms, 3)), ("forces", forces, (n_frames, n_atoms, 3)),
                            ("energies", energies, (n_frames,))):
        if arr.shape != shape:
            raise DataError(f"{name}: {key} has shape {arr.shape}, expected {shape} "
                            f"({n_frames} frames of {n_atoms} atoms)")
    n = n_frames if max_frames is None else min(n_frames, max_frames)
    return [
        make_structure(Z, coords[k], energy=energies[k] * KCAL_MOL_TO_EV, forces=forces[k] * KCAL_MOL_TO_EV,
                       source=name, frame=k)
        for k in range(n)
    ]


def read_extxyz(path: str, energy_key: str = "energy", forces_key: str = "forces", stress_key: str = "stress",
                index: str = ":") -> List[Structure]:
    """Read an (ext)xyz file with ase.io; labels are taken from the info/arrays keys given, or the
    calculator ASE attached (its keys are ASE's: energy, forces, stress).

    Units must already be eV, Å, eV/Å, eV/Å^3 (the extxyz convention). A 6-component Voigt stress is expanded to
    3x3. Missing labels are None (the loss then skips them).

    Raises:
        FileNotFoundError, DataError (names the file and frame).
    """
    import ase.io

    name = os.path.basename(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"extxyz file not found: {path}")
    try:
        frames = ase.io.read(path, index=index, format="extxyz")
    except Exception as err:  # ase raises many types; name the file
        raise DataError(f"{name}: cannot be parsed as extxyz: {err}") from err
    out = []
    for k, atoms in enumerate(frames):
        calc = atoms.calc
        calc_results = getattr(calc, "results", {}) if calc is not None else {}

        def label(key, per_atom):
            if per_atom and key in atoms.arrays:
                return atoms.arrays[key]
            if not per_atom and key in atoms.info:
                return atoms.info[key]
            ase_key = {energy_key: "energy", forces_key: "forces", stress_key: "stress"}[key]
            return calc_results.get(ase_key)

        energy = label(energy_key, False)
        forces = label(forces_key, True)
        stress = label(stress_key, False)
        if stress is not None:
            stress = np.asarray(stress, dtype=np.float64)
            if stress.shape == (6,):
                from ase.stress import voigt_6_to_full_3x3_stress
                stress = voigt_6_to_full_3x3_stress(stress)
            elif stress.shape == (9,):
                stress = stress.reshape(3, 3)
        out.append(make_structure(atoms.numbers, atoms.positions, cell=np.asarray(atoms.cell[:]), pbc=atoms.pbc,
                                  energy=energy, forces=forces, stress=stress, source=name, frame=k))
    return out


def read_structures(path: str, **kwargs) -> List[Structure]:
    """Read any supported file by its extension: ``.npz`` (rMD17 layout) or ``.xyz``/``.extxyz``."""
    if path.endswith(".npz"):
        return read_rmd17_npz(path, **kwargs)
    if path.endswith((".xyz", ".extxyz")):
        return read_extxyz(path, **kwargs)
    raise DataError(f"{path}: unknown file type (expected .npz in rMD17 layout, .xyz or .extxyz)")
