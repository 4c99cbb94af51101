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
        DataError: not an npz archive, a key is missing, no frames, array shapes disagree, text where numbers
            belong, or a frame is invalid (NaN, overlapping atoms, non-integer Z...).
    """
    name = os.path.basename(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"rMD17 file not found: {path}")
    with _open_npz(path) as f:
        missing = [k for k in RMD17_KEYS if k not in f.files]
        if missing:
            raise DataError(f"{name}: missing key(s) {missing}; an rMD17 npz needs {list(RMD17_KEYS)} "
                            f"(found {sorted(f.files)})")
        try:
            Z = np.asarray(f["nuclear_charges"])
            coords = np.asarray(f["coords"], dtype=np.float64)
            energies = np.asarray(f["energies"], dtype=np.float64)
            forces = np.asarray(f["forces"], dtype=np.float64)
        except (ValueError, TypeError, OSError) as err:  # text or objects where numbers belong, a damaged member
            raise DataError(f"{name}: unreadable array ({err})") from None
    if Z.ndim != 1:
        raise DataError(f"{name}: nuclear_charges has shape {Z.shape}, expected (n_atoms,)")
    if energies.ndim != 1 or energies.shape[0] == 0:
        raise DataError(f"{name}: energies has shape {energies.shape}, expected (n_frames,) with n_frames >= 1")
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


def _open_npz(path: str):
    """`np.load(path)` of an npz archive (no pickles).

    Raises:
        DataError: not an npz archive (damaged, truncated, another format); names the file.
    """
    import zipfile

    try:
        f = np.load(path)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as err:
        raise DataError(f"{os.path.basename(path)}: not a readable npz file ({err})") from None
    if not isinstance(f, np.lib.npyio.NpzFile):  # a single .npy array saved under an .npz name
        raise DataError(f"{os.path.basename(path)}: not an npz archive (a single array of shape {f.shape})")
    return f


#: The labels ASE's extxyz reader moves into a SinglePointCalculator instead of info/arrays.
_ASE_CALC_KEYS = {"energy": "energy", "free_energy": "free_energy", "forces": "forces", "stress": "stress"}


def read_extxyz(path: str, energy_key: Optional[str] = None, forces_key: Optional[str] = None,
                stress_key: Optional[str] = None, index: str = ":") -> List[Structure]:
    """Read an (ext)xyz file (plain or compressed, e.g. ``.extxyz.gz``) with ase.io.

    Label keys: ``None`` (default) takes ASE's standard labels ``energy``, ``forces`` and ``stress`` where a frame
    has them and leaves the label missing (None: the loss skips it) where it does not. A key given explicitly
    (e.g. ``energy_key="REF_energy"``, ``forces_key="dft_forces"``) is looked up in the frame's info (energy,
    stress) or per-atom arrays (forces), or among the calculator results ASE made from it, and must be there:
    a frame without it raises. Exception: an explicit stress key is not required on non-periodic frames
    (molecules, dimers), which have no stress. The string ``"none"`` ignores that label altogether.

    Units must already be eV, Å, eV/Å, eV/Å^3 with ASE's stress sign (the extxyz convention). A 6-component
    Voigt stress (xx, yy, zz, yz, xz, xy) or a 9-component one is expanded to 3x3.

    Returns:
        One `Structure` per frame (frame = position in the file).

    Raises:
        FileNotFoundError: no such file.
        DataError: the file cannot be parsed or holds no frames, an explicitly named key is missing in a frame
            (names the file, the frame, the key and the keys the frame does have), or a frame is invalid.
    """
    import ase.io

    name = os.path.basename(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"extxyz file not found: {path}")
    try:
        frames = ase.io.read(path, index=index, format="extxyz")
    except Exception as err:  # ase raises many types; name the file
        raise DataError(f"{name}: cannot be parsed as extxyz: {err}") from err
    if not isinstance(frames, list):
        frames = [frames]
    if not frames:
        raise DataError(f"{name}: no frames (an empty file)")
    out = []
    for k, atoms in enumerate(frames):
        calc = atoms.calc
        calc_results = dict(getattr(calc, "results", {}) or {}) if calc is not None else {}

        def label(key, default, per_atom, required=True, atoms=atoms, calc_results=calc_results, k=k):
            if key is not None and key.lower() == "none":
                return None
            explicit = key is not None
            key = default if key is None else key
            store = atoms.arrays if per_atom else atoms.info
            if key in store:
                return store[key]
            if key in _ASE_CALC_KEYS and _ASE_CALC_KEYS[key] in calc_results:
                return calc_results[_ASE_CALC_KEYS[key]]
            if explicit and required:
                have = sorted(set(atoms.arrays) - {"numbers", "positions"}) if per_atom else sorted(atoms.info)
                calculator = f" and calculator labels {sorted(calc_results)}" if calc_results else ""
                raise DataError(f"{name}, frame {k}: no {'per-atom array' if per_atom else 'info'} key {key!r} "
                                f"(this frame has {have}{calculator})")
            return None

        energy = label(energy_key, "energy", False)
        forces = label(forces_key, "forces", True)
        stress = label(stress_key, "stress", False, required=bool(np.any(atoms.pbc)))
        if stress is not None:
            stress = np.asarray(stress, dtype=np.float64)
            if stress.shape == (6,):
                from ase.stress import voigt_6_to_full_3x3_stress
                stress = voigt_6_to_full_3x3_stress(stress)
            elif stress.shape == (9,):
                stress = stress.reshape(3, 3)
        if energy is not None:
            try:
                energy = float(energy)
            except (TypeError, ValueError) as err:
                raise DataError(f"{name}, frame {k}: energy {energy!r} is not a number") from err
        out.append(make_structure(atoms.numbers, atoms.positions, cell=np.asarray(atoms.cell[:]), pbc=atoms.pbc,
                                  energy=energy, forces=forces, stress=stress, source=name, frame=k))
    return out


EXTXYZ_SUFFIXES = (".xyz", ".extxyz", ".xyz.gz", ".extxyz.gz", ".xyz.bz2", ".extxyz.bz2", ".xyz.xz", ".extxyz.xz")


def read_structures(path: str, **kwargs) -> List[Structure]:
    """Read any supported file by its extension and content.

    - ``.npz``: QM9 layout (keys offsets, Z, R: `qallegro.data.qm9.read_qm9`, kwargs target, atomization,
      max_molecules, ...) or rMD17 layout (`read_rmd17_npz`, kwarg max_frames);
    - ``.xyz``/``.extxyz``, optionally compressed (``.gz``, ``.bz2``, ``.xz``): `read_extxyz` (kwargs energy_key,
      forces_key, stress_key, index).

    Raises:
        FileNotFoundError: no such file.
        DataError: unknown file type, or as the reader.
        TypeError: an option the reader does not take.
    """
    if path.endswith(".npz"):
        if not os.path.exists(path):
            raise FileNotFoundError(f"data file not found: {path}")
        from qallegro.data.qm9 import is_qm9_npz, read_qm9

        _open_npz(path).close()  # a DataError naming the file for anything that is not an npz archive
        return read_qm9(path, **kwargs) if is_qm9_npz(path) else read_rmd17_npz(path, **kwargs)
    if path.endswith(EXTXYZ_SUFFIXES):
        return read_extxyz(path, **kwargs)
    raise DataError(f"{path}: unknown file type (expected .npz in the rMD17 or QM9 layout, or .xyz/.extxyz, "
                    f"optionally .gz/.bz2/.xz)")
