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

Watchdog (`Watchdog`, on by default): after every step, inside the scan, the state is checked for non-finite
positions, momenta or forces, the largest force ``max_i |F_i|`` (eV/Å), the kinetic temperature T = 2 E_kin /
(n_dof k_B) (K), and atoms that had a neighbour within r_max - 0.5 Å at step 0 but have none within r_max now (a
molecule dissociating). The first failing step freezes the chunk at the last good state. At every logged step the
host also checks the drift of the conserved energy, ``|E_c(t) - E_c(0)| / N`` (meV/atom; NVE and Nose-Hoover,
which conserve one; Langevin does not). A breach stops the run with `MDWatchdogError` naming the step, the
quantity, its value and limit, and the atom; the last good frame is passed to the callback first. Without a
watchdog (``watchdog=None``) only non-finite values stop a run.
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

from qallegro.md.ensembles import CONSERVING, ENSEMBLES
from qallegro.md.system import MDSystem

#: Å: the isolation check watches the atoms whose nearest neighbour at step 0 is closer than r_max - this, so an
#: atom that merely hovers at the cutoff does not trip it
ISOLATION_MARGIN = 0.5
#: breach codes of the in-scan check (0: none)
BREACHES = {1: ("non-finite state", ""), 2: ("max_force", "eV/Å"), 3: ("temperature", "K"),
            4: ("isolated_atom", "Å to its nearest listed neighbour")}
THERMO_FIELDS = ["step", "time_fs", "potential_energy", "kinetic_energy", "total_energy", "conserved",
                 "temperature", "reallocations"]


@dataclasses.dataclass(frozen=True)
class Watchdog:
    """Limits that stop an MD run that has gone wrong (see the module docstring).

    Attributes:
        max_drift_meV_per_atom: largest ``|E_c(t) - E_c(0)| / N`` of the conserved energy (NVE, Nose-Hoover).
            50 meV/atom is the kinetic energy of ~390 K of heating; a healthy run stays far below 1.
        max_force: largest atomic force norm in eV/Å (training data rarely exceed ~10 eV/Å).
        max_temperature_K: kinetic-temperature ceiling in K; None: ``max(5000, 3 T_target)``.
        check_isolation: stop when an atom that had a neighbour within r_max - `ISOLATION_MARGIN` at step 0 has
            none within r_max (dissociation).
    Raises:
        ValueError: a limit that is not > 0.
    """

    max_drift_meV_per_atom: float = 50.0
    max_force: float = 50.0
    max_temperature_K: Optional[float] = None
    check_isolation: bool = True

    def __post_init__(self):
        for name in ("max_drift_meV_per_atom", "max_force", "max_temperature_K"):
            value = getattr(self, name)
            if value is not None and not float(value) > 0:
                raise ValueError(f"watchdog {name} must be > 0, got {value!r}")

    def temperature_ceiling(self, temperature_K: float) -> float:
        """The temperature ceiling in K for a run at `temperature_K`."""
        if self.max_temperature_K is not None:
            return float(self.max_temperature_K)
        return max(5000.0, 3.0 * float(temperature_K))


class MDWatchdogError(RuntimeError):
    """An MD run stopped because a watched quantity left its limit (or became non-finite).

    Attributes:
        step: the first failing step; quantity: "max_force", "temperature", "energy_drift", "isolated_atom",
        "non-finite state" or "non-finite energy"; value, limit: in the quantity's unit (eV/Å, K, meV/atom, Å);
        atom: the atom index (None for global quantities); last_good_step: the step of the last frame passed to
        the callback; thermo: the thermo rows up to it.
    """

    def __init__(self, step: int, quantity: str, value: float, limit: Optional[float], unit: str = "",
                 atom: Optional[int] = None, last_good_step: Optional[int] = None, dt_fs: Optional[float] = None,
                 thermo: Optional[List[Dict[str, float]]] = None):
        self.step, self.quantity, self.value, self.limit, self.atom = step, quantity, value, limit, atom
        self.last_good_step, self.thermo = last_good_step, list(thermo or [])
        where = f" at atom {atom}" if atom is not None else ""
        time = f" (t = {step * dt_fs:g} fs)" if dt_fs is not None else ""
        if quantity == "isolated_atom":
            what = (f"atom {atom} has no neighbour within r_max = {limit:g} Å any more (it had one at step 0; "
                    f"nearest listed neighbour {value:.4g} Å): the structure dissociated")
        elif limit is None:
            what = f"{quantity}{where}"
        else:
            what = f"{quantity} = {value:.6g} {unit} exceeds the limit {limit:g} {unit}{where}"
        advice = ("the time step may be too large, the temperature too high, or the structure left the "
                  "potential's training domain")
        last = f"; the last good frame is step {last_good_step}" if last_good_step is not None else ""
        super().__init__(f"MD watchdog stopped the run at step {step}{time}: {what}; {advice}{last}")


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


def neighbour_summary(system: MDSystem, R, neighbors):
    """(counts, nearest) per atom, both (N,): the number of listed neighbours closer than r_max, and the distance
    (Å) to the nearest listed neighbour (inf when none is listed). Jittable."""
    n = R.shape[0]
    centre, other = neighbors.idx[0], neighbors.idx[1]
    mask = (centre < n) & (other < n)
    centre = jnp.where(mask, centre, 0)
    other = jnp.where(mask, other, 0)
    d = jnp.linalg.norm(jax.vmap(system.displacement)(R[other], R[centre]), axis=-1)
    d = jnp.where(mask, d, jnp.inf)
    counts = jax.ops.segment_sum((d < system.r_max).astype(jnp.int32), centre, num_segments=n)
    nearest = jax.ops.segment_min(d, centre, num_segments=n)
    return counts, nearest


def make_check(system: MDSystem, dof: int) -> Callable:
    """Jittable check(state, neighbors, limits, had_neighbour) -> (code, value, atom) of the in-scan watchdog.

    limits: (2,) [max force eV/Å, temperature ceiling K] (inf: off); had_neighbour: (N,) bool, the atoms whose
    isolation is a breach. code: int32, 0 for no breach, else a key of `BREACHES` (the first in that order);
    value: float32 in the quantity's unit; atom: int32 (-1 for a global quantity).
    """

    def check(state, neighbors, limits, had_neighbour):
        finite = (jnp.all(jnp.isfinite(state.position), axis=-1) & jnp.all(jnp.isfinite(state.momentum), axis=-1)
                  & jnp.all(jnp.isfinite(state.force), axis=-1))
        force_norm = jnp.linalg.norm(state.force, axis=-1)
        temperature = 2.0 * quantity.kinetic_energy(momentum=state.momentum, mass=state.mass) / (dof * units.kB)
        counts, nearest = neighbour_summary(system, state.position, neighbors)
        isolated = had_neighbour & (counts == 0)
        conditions = [~jnp.all(finite), jnp.max(force_norm) > limits[0], temperature > limits[1], jnp.any(isolated)]
        values = [jnp.nan, jnp.max(force_norm), temperature, nearest[jnp.argmax(isolated)]]
        atoms = [jnp.argmin(finite), jnp.argmax(force_norm), -1, jnp.argmax(isolated)]
        code, value, atom = jnp.int32(0), jnp.float32(0.0), jnp.int32(-1)
        for k in reversed(range(4)):  # the first condition in BREACHES order wins
            code = jnp.where(conditions[k], jnp.int32(k + 1), code)
            value = jnp.where(conditions[k], jnp.asarray(values[k], jnp.float32), value)
            atom = jnp.where(conditions[k], jnp.asarray(atoms[k], jnp.int32), atom)
        return code, value, atom

    return check


def make_chunk(system: MDSystem, apply_fn: Callable, ensemble: str, kT: float, n_steps: int,
               dof: Optional[int] = None) -> Callable:
    """jit-compiled chunk(state, neighbors, limits, had_neighbour) -> (state, neighbors, observables, breach,
    overflow) that runs up to `n_steps` steps in a lax.scan (neighbour update, integrator step, `make_check`) and
    returns potential, kinetic and conserved energy (eV) of the returned state. The neighbour list's overflow bit
    accumulates over the chunk; `overflow` is True when any step's list overflowed (also one discarded by a
    breach): the chunk must then be re-run with a larger list.

    breach: (code, step, value, atom), code 0 when every step passed; otherwise `step` (1..n_steps, counted from
    the chunk's start) is the first failing step, and the returned state and list are those of the step before
    it (the last good state): later steps are computed but discarded.
    """
    energy_fn = system.energy_fn
    dof = degrees_of_freedom(int(system.R.shape[0]), ensemble) if dof is None else dof
    check = make_check(system, dof)

    def body(carry, k):
        state, neighbors, breach, overflow, limits, had_neighbour = carry
        new_neighbors = neighbors.update(state.position)
        # An overflowing list misses pairs (atoms look isolated): the host re-runs such a chunk, so flag it even
        # when the freeze below discards this list.
        overflow = overflow | (new_neighbors.did_buffer_overflow != 0)
        # Under x64 jax-md's thermostats draw noise in the default float64, which would promote a float32 state
        # (a float32 potential's MD): keep every state field in its own dtype.
        new_state = jax.tree.map(lambda new, old: new.astype(old.dtype), apply_fn(state, neighbor=new_neighbors),
                                 state)
        code, value, atom = check(new_state, new_neighbors, limits, had_neighbour)
        clean = breach[0] == 0
        keep = clean & (code == 0)
        first = clean & (code != 0)
        breach = (jnp.where(first, code, breach[0]), jnp.where(first, k + 1, breach[1]),
                  jnp.where(first, value, breach[2]), jnp.where(first, atom, breach[3]))
        state = jax.tree.map(lambda new, old: jnp.where(keep, new, old), new_state, state)
        neighbors = jax.tree.map(lambda new, old: jnp.where(keep, new, old), new_neighbors, neighbors)
        return (state, neighbors, breach, overflow, limits, had_neighbour), None

    @jax.jit
    def chunk(state, neighbors, limits, had_neighbour):
        breach = (jnp.int32(0), jnp.int32(0), jnp.float32(0.0), jnp.int32(-1))
        (state, neighbors, breach, overflow, _, _), _ = jax.lax.scan(
            body, (state, neighbors, breach, jnp.asarray(False), limits, had_neighbour),
            jnp.arange(n_steps, dtype=jnp.int32))
        return state, neighbors, observables(state, neighbors), breach, overflow

    def observables(state, neighbors):
        pe = energy_fn(state.position, neighbor=neighbors)
        ke = quantity.kinetic_energy(momentum=state.momentum, mass=state.mass)
        if ensemble == "nose-hoover":
            conserved = simulate.nvt_nose_hoover_invariant(energy_fn, state, kT, neighbor=neighbors)
        else:
            conserved = pe + ke
        return {"potential_energy": pe, "kinetic_energy": ke, "conserved": conserved}

    chunk.observables = jax.jit(observables)
    chunk.neighbour_summary = jax.jit(lambda R, neighbors: neighbour_summary(system, R, neighbors))
    return chunk


def run_md(system: MDSystem, ensemble: str = "nve", steps: int = 1000, dt_fs: float = 0.5,
           temperature_K: float = 300.0, log_every: int = 100, seed: int = 0, friction_per_fs: float = 0.01,
           tau_fs: Optional[float] = None, keep_frames: bool = True,
           callback: Optional[Callable[[Dict[str, float], np.ndarray, np.ndarray], None]] = None,
           max_reallocations: int = 20, growth: float = 1.5, neighbors=None,
           watchdog: Optional[Watchdog] = Watchdog()) -> MDResult:
    """Run MD and log every `log_every` steps.

    Args:
        system: from `qallegro.md.system.build_system`.
        ensemble, dt_fs, temperature_K, friction_per_fs, tau_fs: see `make_integrator`; temperature_K is also
            the temperature of the initial Maxwell-Boltzmann velocities (zero total momentum).
        steps: number of steps (>= 1); log_every: K (>= 1), the scan length between host checks and logs.
        seed: PRNG seed of the velocities and the Langevin noise.
        keep_frames: keep positions and velocities of logged steps in the result.
        callback: called as callback(thermo_row, positions Å (N, 3), velocities Å/fs (N, 3)) at step 0 and
            every logged step (for streaming trajectory / CSV writers); after a watchdog breach, once more with
            the last good state when it lies between two logged steps.
        max_reallocations: give up (RuntimeError) after this many neighbour-list re-allocations in one chunk.
        growth: capacity factor of each re-allocation.
        neighbors: a neighbour list to start from (default: allocated from the initial positions).
        watchdog: the limits checked at every step (see the module docstring); None: only non-finite values
            stop the run.
    Returns:
        MDResult.
    Raises:
        ValueError: bad steps / log_every (and see make_integrator); RuntimeError: the neighbour list keeps
        overflowing; MDWatchdogError (a RuntimeError): a watchdog limit was exceeded or the state became
        non-finite (names the step, the quantity and the atom).
    """
    if not (isinstance(steps, (int, np.integer)) and isinstance(log_every, (int, np.integer))) \
            or steps < 1 or log_every < 1:
        raise ValueError(f"steps and log_every must be integers >= 1, got {steps!r} and {log_every!r}")
    if not math.isfinite(dt_fs) or not math.isfinite(temperature_K):
        raise ValueError(f"time step and temperature must be finite, got {dt_fs} fs and {temperature_K} K")
    settings = (ensemble, float(dt_fs), float(temperature_K), float(friction_per_fs), tau_fs)
    # The integrator and its compiled chunks are kept on the system: a later run with the same settings (another
    # seed, a continuation) compiles nothing, its initialisation included (jax-md jit-compiles init_fn).
    if (settings, "integrator") not in system.chunks:
        system.chunks[(settings, "integrator")] = make_integrator(system, ensemble, dt_fs, temperature_K,
                                                                  friction_per_fs, tau_fs)
    init_fn, apply_fn = system.chunks[(settings, "integrator")]
    kT = units.kB * temperature_K
    n_atoms = int(system.R.shape[0])
    dof = degrees_of_freedom(n_atoms, ensemble)
    neighbors = system.allocate() if neighbors is None else neighbors
    velocity_key, noise_key = jax.random.split(jax.random.PRNGKey(seed))
    momenta = maxwell_boltzmann_momenta(velocity_key, system.masses, kT)
    state = init_fn(noise_key, system.R, kT=kT, mass=system.masses, momenta=momenta, neighbor=neighbors)

    def get_chunk(n):
        if (settings, n) not in system.chunks:
            system.chunks[(settings, n)] = make_chunk(system, apply_fn, ensemble, kT, n, dof)
        return system.chunks[(settings, n)]

    if watchdog is None:
        limits = jnp.array([jnp.inf, jnp.inf], jnp.float32)
        had_neighbour = jnp.zeros(n_atoms, bool)
    else:
        limits = jnp.array([watchdog.max_force, watchdog.temperature_ceiling(temperature_K)], jnp.float32)
        if watchdog.check_isolation:  # atoms with a neighbour well inside r_max at step 0
            _, nearest = get_chunk(log_every).neighbour_summary(state.position, neighbors)
            had_neighbour = nearest < system.r_max - ISOLATION_MARGIN
        else:
            had_neighbour = jnp.zeros(n_atoms, bool)
    check_drift = watchdog is not None and ensemble in CONSERVING

    thermo: List[Dict[str, float]] = []
    frames: List[Any] = []
    reallocations = 0

    def stop(step, quantity, value, limit, unit="", atom=None):
        last = thermo[-1]["step"] if thermo else None
        return MDWatchdogError(step, quantity, value, limit, unit, atom, last, dt_fs, thermo)

    def record(step, state, obs):
        obs = {k: float(v) for k, v in obs.items()}
        row = {"step": step, "time_fs": step * dt_fs, "potential_energy": obs["potential_energy"],
               "kinetic_energy": obs["kinetic_energy"],
               "total_energy": obs["potential_energy"] + obs["kinetic_energy"], "conserved": obs["conserved"],
               "temperature": 2.0 * obs["kinetic_energy"] / (dof * units.kB), "reallocations": reallocations}
        if not (math.isfinite(row["total_energy"]) and math.isfinite(row["conserved"])):
            raise stop(step, "non-finite energy", math.nan, None)
        if check_drift and thermo:
            drift = 1000.0 * abs(row["conserved"] - thermo[0]["conserved"]) / n_atoms
            if drift > watchdog.max_drift_meV_per_atom:
                raise stop(step, "energy_drift", drift, watchdog.max_drift_meV_per_atom, "meV/atom")
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
                new_state, new_neighbors, obs, breach, overflow = get_chunk(n)(state, neighbors, limits,
                                                                               had_neighbour)
            if system.neighbors_ok(new_neighbors) and not bool(overflow):
                break
            tries += 1
            reallocations += 1
            if tries > max_reallocations:
                raise RuntimeError(f"neighbour list still overflows after {max_reallocations} re-allocations "
                                   f"at step {step}")
            capacity = int(neighbors.idx.shape[-1])
            neighbors = system.allocate(state.position,
                                        extra_capacity=int(math.ceil((growth ** tries - 1.0) * capacity)))
        code, at, value, atom = (int(breach[0]), int(breach[1]), float(breach[2]), int(breach[3]))
        state, neighbors = new_state, new_neighbors
        if code:
            if at > 1:  # the last good state lies inside the chunk: log it and pass it on as a frame
                record(step + at - 1, state, obs)
            quantity, unit = BREACHES[code]
            limit = {2: float(limits[0]), 3: float(limits[1]), 4: system.r_max}.get(code)
            raise stop(step + at, quantity, value, limit, unit, None if atom < 0 else atom)
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
