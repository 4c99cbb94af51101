"""Molecular dynamics with a trained potential.

* `qallegro.md.system`: jax-md space, in-jit neighbour lists (overflow-checked) and the energy function;
* `qallegro.md.dynamics`: NVE / Langevin / Nose-Hoover in jit-compiled lax.scan chunks, thermo log, drift, and
  the watchdog that stops an exploding run (`Watchdog`, `MDWatchdogError`);
* `qallegro.md.io`: trajectory (extxyz) and thermo CSV writers (the only module here that writes files);
* `qallegro.md.ase`: `QAllegroCalculator`, an ASE calculator (energy, forces, stress).
"""

from qallegro.md.dynamics import ENSEMBLES, MDResult, MDWatchdogError, Watchdog, energy_drift, make_integrator, run_md
from qallegro.md.system import MDSystem, build_system, make_energy_fn, make_space

__all__ = ["ENSEMBLES", "MDResult", "MDSystem", "MDWatchdogError", "Watchdog", "build_system", "energy_drift",
           "make_energy_fn", "make_integrator", "make_space", "run_md"]
