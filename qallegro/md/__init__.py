"""Molecular dynamics with a trained potential.

* `qallegro.md.system`: jax-md space, in-jit neighbour lists (overflow-checked) and the energy function;
* `qallegro.md.dynamics`: NVE / Langevin / Nose-Hoover in jit-compiled lax.scan chunks, thermo log, drift, and
  the watchdog that stops an exploding run (`Watchdog`, `MDWatchdogError`);
* `qallegro.md.io`: trajectory (extxyz) and thermo CSV writers (the only module here that writes files);
* `qallegro.md.ase`: `QAllegroCalculator`, an ASE calculator (energy, forces, stress).
"""

import importlib

from qallegro.md.ensembles import ENSEMBLES

# The integrators and the energy function import jax-md (seconds): loaded at first use, so that the command line
# (which only needs ENSEMBLES) starts fast.
_LAZY = {name: "qallegro.md.dynamics" for name in
         ("MDResult", "MDWatchdogError", "Watchdog", "energy_drift", "make_integrator", "run_md")}
_LAZY.update({name: "qallegro.md.system" for name in ("MDSystem", "build_system", "make_energy_fn", "make_space")})

__all__ = ["ENSEMBLES", "MDResult", "MDSystem", "MDWatchdogError", "Watchdog", "build_system", "energy_drift",
           "make_energy_fn", "make_integrator", "make_space", "run_md"]


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'qallegro.md' has no attribute {name!r}")
