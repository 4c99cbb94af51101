"""Unit conversions into qallegro's internal units (eV, Å, eV/Å, eV/Å^3).

Every reader converts at the boundary, so nothing downstream ever sees another unit.
"""

#: 1 kcal/mol in eV (CODATA; rMD17 ships kcal/mol and kcal/mol/Å).
KCAL_MOL_TO_EV = 0.0433641043
#: 1 Hartree in eV (QM9 ships Hartree).
HARTREE_TO_EV = 27.211386245988
