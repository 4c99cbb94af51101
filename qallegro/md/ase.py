"""An ASE calculator backed by a qallegro potential: drop-in for existing ASE scripts.

    from qallegro.md.ase import QAllegroCalculator
    atoms.calc = QAllegroCalculator("model.qallegro")
    atoms.get_potential_energy(); atoms.get_forces(); atoms.get_stress()

Energies eV, forces eV/Å, stress eV/Å^3 in ASE's Voigt order (xx, yy, zz, yz, xz, xy) and sign. Stress is
available for cells with a non-zero volume (ASE raises PropertyNotImplementedError for molecules, as
for other calculators).
"""

from __future__ import annotations

from typing import Optional, Union

import numpy as np
from ase.calculators.calculator import Calculator, PropertyNotImplementedError, all_changes
from ase.stress import full_3x3_to_voigt_6_stress

from qallegro.potential.artifact import Potential, load


class QAllegroCalculator(Calculator):
    """ASE calculator for a qallegro `Potential` (or the path of a `.qallegro` artifact).

    Args:
        potential: a `Potential`, or a path passed to `qallegro.potential.load`.
        dtype: with a path, override the artifact's dtype ("float32" / "float64").
    Raises:
        FileNotFoundError, ArtifactError: bad path or file (see `qallegro.potential.read_artifact`);
        DataError (at calculation): a species the potential does not know.
    """

    implemented_properties = ["energy", "free_energy", "forces", "stress"]

    def __init__(self, potential: Union[Potential, str], dtype: Optional[str] = None, **kwargs):
        super().__init__(**kwargs)
        self.potential = potential if isinstance(potential, Potential) else load(potential, dtype=dtype)

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        atoms = self.atoms
        has_cell = atoms.cell.rank == 3 and bool(np.any(atoms.pbc))
        cell = atoms.cell.array if atoms.cell.rank == 3 else None
        args = (atoms.positions, atoms.numbers, cell, atoms.pbc)
        if "stress" in properties:
            if not has_cell:
                raise PropertyNotImplementedError("stress needs a periodic cell with non-zero volume")
            energy, forces, stress = self.potential.energy_forces_stress(*args)
            self.results["stress"] = full_3x3_to_voigt_6_stress(np.asarray(stress, dtype=np.float64))
        else:
            energy, forces = self.potential.energy_and_forces(*args)
        self.results["energy"] = float(energy)
        self.results["free_energy"] = float(energy)
        self.results["forces"] = np.asarray(forces, dtype=np.float64)
