"""Molecular dynamics with jax-md integrators, K steps at a time in a jit-compiled `lax.scan`.

Units: the potential's eV and Å with masses in amu, so jax-md's time unit is Å·sqrt(amu/eV) = 10.18 fs;
`run_md` takes dt in fs and converts with ASE's constants (ase.units.fs, ase.units.kB).

Ensembles:
    "nve"              velocity Verlet (jax-md simulate.nve)
    "nvt" | "langevin" Langevin thermostat (simulate.nvt_langevin), friction in 1/fs
    "nose-hoover"      Nose-Hoover chain (simulate.nvt_nose_hoover), time constant tau in fs

Initial momenta are Maxwell-Boltzmann at the target temperature with the centre-of-mass velocity removed
(`maxwell_boltzmann_momenta`). Each chunk of `log_every` steps updates the neighbour list
inside the scan; after a chunk the overflow bit is checked on the host and, if set, the list is re-allocated
with more capacity and the chunk is re-run from its start, so no step ever uses a list with missing pairs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import warnings
from typing import Any, Callable, Dict, List, Optional

import jax
import jax.numpy as jnp
import numpy as np
from ase import units
from jax_md import quantity, simulate

from qallegro.md.system import MDSystem

ENSEMBLES = ("nve", "nvt", "langevin", "nose-hoover")
THERMO_FIELDS = ["step", "time_fs", "potential_energy", "kinetic_energy", "total_energy", "conserved",
                 "temperature", "reallocations"]


@dataclasses.dataclass
class MDResult:
    """Output of `run_md`.

    Attributes:
        thermo: one dict per logged step (THERMO_FIELDS; energies in eV, temperature in K, time in fs).
        frames: list of (positions (N, 3) Å Cartesian, velocities (N, 3) Å/fs) at the logged steps (empty when
            `keep_frames` is False).
        state: the final jax-md state; neighbors: the final neighbour list.
        reallocations: how many times the neighbour list was re-allocated after an overflow.
        capacity: final neighbour buffer size (pairs).
    """

    thermo: List[Dict[str, float]]
    frames: List[Any]
    state: Any
    neighbors: Any
    reallocations: int
    capacity: int


@contextlib.contextmanager
def _quiet_float64_request():
    """jax-md sums kinetic energies with an explicit float64 request, which float32 JAX truncates with a
    warning at trace time; the truncation is intended here."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Explicitly requested dtype float64")
        yield


def make_integrator(system: MDSystem, ensemble: str, dt_fs: float, temperature_K: float,
                    friction_per_fs: float = 0.01, tau_fs: Optional[float] = None):
    """(init_fn, apply_fn) of the jax-md integrator for `ensemble` (see the module docstring).

    Raises:
        ValueError: unknown ensemble, non-positive dt, negative temperature, non-positive friction / tau.
    """
    if ensemble not in ENSEMBLES:
        raise ValueError(f"unknown ensemble {ensemble!r}; choose one of {list(ENSEMBLES)}")
    if not dt_fs > 0:
        raise ValueError(f"time step must be > 0 fs, got {dt_fs}")
    if temperature_K < 0:
        raise ValueError(f"temperature must be >= 0 K, got {temperature_K}")
    dt = dt_fs * units.fs
    kT = units.kB * temperature_K
    if ensemble == "nve":
        return simulate.nve(system.energy_fn, system.shift, dt)
    if ensemble in ("nvt", "langevin"):
        if not friction_per_fs > 0:
            raise ValueError(f"Langevin friction must be > 0 1/fs, got {friction_per_fs}")
        return simulate.nvt_langevin(system.energy_fn, system.shift, dt, kT, gamma=friction_per_fs / units.fs)
    tau_fs = 100.0 * dt_fs if tau_fs is None else tau_fs
    if not tau_fs > 0:
        raise ValueError(f"Nose-Hoover tau must be > 0 fs, got {tau_fs}")
    return simulate.nvt_nose_hoover(system.energy_fn, system.shift, dt, kT, tau=tau_fs * units.fs)


def maxwell_boltzmann_momenta(key: jnp.ndarray, masses: jnp.ndarray, kT: float) -> jnp.ndarray:
    """(N, 3) momenta (amu·Å per jax-md time unit) drawn from the Maxwell-Boltzmann distribution at `kT` (eV)
    with the centre-of-mass velocity removed (p_i -= m_i P / M), so the total momentum is zero and every atom
    keeps its equipartition share. (jax-md's own initialisation subtracts the mean momentum, which heats light
    atoms when masses differ: +13 % temperature for aspirin.)"""
    masses = jnp.asarray(masses)[:, None]
    p = jnp.sqrt(masses * kT) * jax.random.normal(key, (masses.shape[0], 3), masses.dtype)
    return p - masses * jnp.sum(p, axis=0) / jnp.sum(masses)


def degrees_of_freedom(n_atoms: int, ensemble: str) -> int:
    """3N - 3 when total momentum is conserved (NVE, Nose-Hoover), 3N under Langevin."""
    return 3 * n_atoms if ensemble in ("nvt", "langevin") else max(3 * n_atoms - 3, 1)


def make_chunk(system: MDSystem, apply_fn: Callable, ensemble: str, kT: float, n_steps: int) -> Callable:
    """jit-compiled chunk(state, neighbors) -> (state, neighbors, observables) that runs `n_steps` steps in a
    lax.scan (neighbour update, then integrator step) and returns potential, kinetic and conserved energy (eV)
    at the last step. The neighbour list's overflow bit accumulates over the chunk."""
    energy_fn = system.energy_fn

    def body(carry, _):
        state, neighbors = carry
        neighbors = neighbors.update(state.position)
        # Under x64 jax-md's thermostats draw noise in the default float64, which would promote a float32 state
        # (a float32 potential's MD): keep every state field in its own dtype.
        state = jax.tree.map(lambda new, old: new.astype(old.dtype), apply_fn(state, neighbor=neighbors), state)
        return (state, neighbors), None

    @jax.jit
    def chunk(state, neighbors):
        (state, neighbors), _ = jax.lax.scan(body, (state, neighbors), None, length=n_steps)
        return state, neighbors, observables(state, neighbors)

    def observables(state, neighbors):
        pe = energy_fn(state.position, neighbor=neighbors)
        ke = quantity.kinetic_energy(momentum=state.momentum, mass=state.mass)
        if ensemble == "nose-hoover":
            conserved = simulate.nvt_nose_hoover_invariant(energy_fn, state, kT, neighbor=neighbors)
        else:
            conserved = pe + ke
        return {"potential_energy": pe, "kinetic_energy": ke, "conserved": conserved}

    chunk.observables = jax.jit(observables)
    return chunk


def run_md(system: MDSystem, ensemble: str = "nve", steps: int = 1000, dt_fs: float = 0.5,
           temperature_K: float = 300.0, log_every: int = 100, seed: int = 0, friction_per_fs: float = 0.01,
           tau_fs: Optional[float] = None, keep_frames: bool = True,
           callback: Optional[Callable[[Dict[str, float], np.ndarray, np.ndarray], None]] = None,
           max_reallocations: int = 20, growth: float = 1.5, neighbors=None) -> MDResult:
    """Run MD and log every `log_every` steps.

    Args:
        system: from `qallegro.md.system.build_system`.
        ensemble, dt_fs, temperature_K, friction_per_fs, tau_fs: see `make_integrator`; temperature_K is also
            the temperature of the initial Maxwell-Boltzmann velocities (zero total momentum).
        steps: number of steps (>= 1); log_every: K (>= 1), the scan length between host checks and logs.
        seed: PRNG seed of the velocities and the Langevin noise.
        keep_frames: keep positions and velocities of logged steps in the result.
        callback: called as callback(thermo_row, positions Å (N, 3), velocities Å/fs (N, 3)) at step 0 and
            every logged step (for streaming trajectory / CSV writers).
        max_reallocations: give up (RuntimeError) after this many neighbour-list re-allocations in one chunk.
        growth: capacity factor of each re-allocation.
        neighbors: a neighbour list to start from (default: allocated from the initial positions).
    Returns:
        MDResult.
    Raises:
        ValueError: bad steps / log_every (and see make_integrator); RuntimeError: the neighbour list keeps
        overflowing, or the energy became non-finite (names the step).
    """
    if steps < 1 or log_every < 1:
        raise ValueError(f"steps and log_every must be >= 1, got {steps} and {log_every}")
    init_fn, apply_fn = make_integrator(system, ensemble, dt_fs, temperature_K, friction_per_fs, tau_fs)
    kT = units.kB * temperature_K
    n_atoms = int(system.R.shape[0])
    dof = degrees_of_freedom(n_atoms, ensemble)
    neighbors = system.allocate() if neighbors is None else neighbors
    velocity_key, noise_key = jax.random.split(jax.random.PRNGKey(seed))
    momenta = maxwell_boltzmann_momenta(velocity_key, system.masses, kT)
    state = init_fn(noise_key, system.R, kT=kT, mass=system.masses, momenta=momenta, neighbor=neighbors)
    settings = (ensemble, float(dt_fs), float(temperature_K), float(friction_per_fs), tau_fs)

    def get_chunk(n):  # compiled chunks are kept on the system: a second run with the same settings reuses them
        if (settings, n) not in system.chunks:
            system.chunks[(settings, n)] = make_chunk(system, apply_fn, ensemble, kT, n)
        return system.chunks[(settings, n)]

    thermo: List[Dict[str, float]] = []
    frames: List[Any] = []
    reallocations = 0

    def record(step, state, obs):
        obs = {k: float(v) for k, v in obs.items()}
        row = {"step": step, "time_fs": step * dt_fs, "potential_energy": obs["potential_energy"],
               "kinetic_energy": obs["kinetic_energy"],
               "total_energy": obs["potential_energy"] + obs["kinetic_energy"], "conserved": obs["conserved"],
               "temperature": 2.0 * obs["kinetic_energy"] / (dof * units.kB), "reallocations": reallocations}
        if not math.isfinite(row["total_energy"]):
            raise RuntimeError(f"MD energy became non-finite at step {step} (time step {dt_fs} fs too large, or "
                               f"atoms left the potential's training domain)")
        thermo.append(row)
        if keep_frames or callback is not None:
            positions = system.to_cartesian(state.position)
            velocities = np.asarray(state.momentum / state.mass) * units.fs  # Å per (internal time) -> Å/fs
            if keep_frames:
                frames.append((positions, velocities))
            if callback is not None:
                callback(row, positions, velocities)

    with _quiet_float64_request():
        record(0, state, get_chunk(log_every).observables(state, neighbors))
    step = 0
    while step < steps:
        n = min(log_every, steps - step)
        tries = 0
        while True:
            with _quiet_float64_request():
                new_state, new_neighbors, obs = get_chunk(n)(state, neighbors)
            if system.neighbors_ok(new_neighbors):
                break
            tries += 1
            reallocations += 1
            if tries > max_reallocations:
                raise RuntimeError(f"neighbour list still overflows after {max_reallocations} re-allocations "
                                   f"at step {step}")
            capacity = int(neighbors.idx.shape[-1])
            neighbors = system.allocate(state.position,
                                        extra_capacity=int(math.ceil((growth ** tries - 1.0) * capacity)))
        state, neighbors = new_state, new_neighbors
        step += n
        record(step, state, obs)
    return MDResult(thermo=thermo, frames=frames, state=state, neighbors=neighbors, reallocations=reallocations,
                    capacity=int(neighbors.idx.shape[-1]))


def energy_drift(thermo: List[Dict[str, float]], n_atoms: int, key: str = "conserved") -> Dict[str, float]:
    """Drift of the conserved energy: slope of a least-squares line through (time, E) in meV/atom/ps, and the
    largest deviation from the initial value in meV/atom."""
    t = np.array([row["time_fs"] for row in thermo]) / 1000.0
    e = np.array([row[key] for row in thermo])
    slope = np.polyfit(t, e, 1)[0] if len(t) > 1 else 0.0
    return {"drift_meV_per_atom_per_ps": 1000.0 * slope / n_atoms,
            "max_deviation_meV_per_atom": 1000.0 * float(np.max(np.abs(e - e[0]))) / n_atoms,
            "duration_ps": float(t[-1] - t[0]) if len(t) else 0.0}
