"""`python -m experiments.run md --model PATH --structure FILE --ensemble nve|nvt --steps N --dt FS --temperature K`

Molecular dynamics with a trained potential artifact (qallegro.potential.load) on jax-md: the structure is read
with ase.io (any format ASE reads; the first frame, or --index), optionally replicated (--repeat), and
integrated in jit-compiled chunks of --log-every steps. Writes into --out:
    trajectory.extxyz (or --trajectory NAME.traj)   frames every --log-every steps
    thermo.csv                                      step, time, energies (eV), temperature (K), re-allocations
    summary.json                                    settings, status, energy drift (meV/atom/ps), throughput

Nothing is written before every option, the potential and the structure have been checked (finite positions,
no overlapping atoms, species known to the potential, a usable cell). An --out that already holds these files is
refused unless --overwrite is given; the files are written under temporary names and renamed at the end (also
after a watchdog stop), so a failed or interrupted run never truncates earlier output (an interrupted run
leaves its partial files as .NAME.partial).

The MD watchdog (qallegro.md.dynamics.Watchdog; --no-watchdog turns it off) stops a run whose forces,
temperature or conserved-energy drift leave their limits, or whose atoms lose all their neighbours; the
thermo log and the trajectory then end at the last good frame, summary.json says why, and the command exits
with status 1.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

from experiments.config import enable_x64
from qallegro.md.ensembles import ENSEMBLES

OUTPUTS = ("thermo.csv", "summary.json")
#: exit status of a run stopped by the MD watchdog
WATCHDOG_STATUS = 1


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="potential artifact (.qallegro, written by train)")
    parser.add_argument("--structure", required=True, help="initial structure, any file ase.io.read reads")
    parser.add_argument("--index", default="0", help="frame of --structure to start from (ase.io index)")
    parser.add_argument("--repeat", type=int, nargs=3, default=None, metavar=("NA", "NB", "NC"),
                        help="replicate a periodic cell NA x NB x NC times before the run (default: no replication)")
    parser.add_argument("--ensemble", default="nve", choices=list(ENSEMBLES),
                        help="nve (velocity Verlet), nvt / langevin (Langevin), nose-hoover")
    parser.add_argument("--steps", type=int, default=1000, help="number of MD steps")
    parser.add_argument("--dt", type=float, default=0.5, help="time step in fs")
    parser.add_argument("--temperature", type=float, default=300.0,
                        help="temperature in kelvin of the initial Maxwell-Boltzmann velocities and of the thermostat")
    parser.add_argument("--friction", type=float, default=0.01, help="Langevin friction in 1/fs")
    parser.add_argument("--tau", type=float, default=None, help="Nose-Hoover time constant in fs (default 100 dt)")
    parser.add_argument("--log-every", type=int, default=100,
                        help="write thermo and a trajectory frame every this many steps")
    parser.add_argument("--skin", type=float, default=0.5, help="neighbour-list skin in Å")
    parser.add_argument("--seed", type=int, default=0, help="seed of velocities and Langevin noise")
    parser.add_argument("--float64", action="store_true",
                        help="run the network and the integrator in float64 (energies are summed in float64 "
                             "either way)")
    parser.add_argument("--out", default="runs/md", help="output directory")
    parser.add_argument("--trajectory", default="trajectory.extxyz",
                        help="trajectory file name in --out (.extxyz, .xyz or .traj)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the output files of an earlier run in --out (they are kept until the new run "
                             "ends)")
    watch = parser.add_argument_group("watchdog (stops a run that explodes or dissociates)")
    watch.add_argument("--no-watchdog", action="store_true", help="turn every watchdog check off (non-finite "
                                                                  "energies still stop the run)")
    watch.add_argument("--max-drift", type=float, default=50.0,
                       help="largest drift of the conserved energy from step 0, in meV/atom (nve, nose-hoover)")
    watch.add_argument("--max-force", type=float, default=50.0, help="largest atomic force in eV/Å")
    watch.add_argument("--max-temperature", type=float, default=None,
                       help="temperature ceiling in K (default: max(5000, 3 --temperature))")
    watch.add_argument("--allow-isolated", action="store_true",
                       help="do not stop when an atom that had a neighbour within r_max has none (e.g. a gas)")


def validate_arguments(args: argparse.Namespace) -> None:
    """Check every option before anything is read or written.

    Raises:
        ValueError: names the option and its value.
    """
    def need(ok, message):
        if not ok:
            raise ValueError(f"md: {message}")

    need(args.steps >= 1, f"--steps must be >= 1, got {args.steps}")
    need(args.log_every >= 1, f"--log-every must be >= 1, got {args.log_every}")
    need(math.isfinite(args.dt) and args.dt > 0, f"--dt must be a finite time step > 0 fs, got {args.dt}")
    need(math.isfinite(args.temperature) and args.temperature >= 0,
         f"--temperature must be finite and >= 0 K, got {args.temperature}")
    need(math.isfinite(args.friction) and args.friction > 0, f"--friction must be > 0 1/fs, got {args.friction}")
    need(args.tau is None or (math.isfinite(args.tau) and args.tau > 0), f"--tau must be > 0 fs, got {args.tau}")
    need(math.isfinite(args.skin) and args.skin >= 0, f"--skin must be >= 0 Å, got {args.skin}")
    need(args.repeat is None or min(args.repeat) >= 1, f"--repeat needs three integers >= 1, got {args.repeat}")
    need(os.path.basename(args.trajectory) == args.trajectory and args.trajectory.endswith((".extxyz", ".xyz",
                                                                                             ".traj")),
         f"--trajectory must be a file name (no directory) ending in .extxyz, .xyz or .traj, got "
         f"{args.trajectory!r}")
    for flag, value in (("--max-drift", args.max_drift), ("--max-force", args.max_force),
                        ("--max-temperature", args.max_temperature)):
        need(value is None or value > 0, f"{flag} must be > 0, got {value}")
    need(not os.path.exists(args.out) or os.path.isdir(args.out), f"--out {args.out} exists and is not a directory")
    existing = [name for name in OUTPUTS + (args.trajectory,) if os.path.exists(os.path.join(args.out, name))]
    need(not existing or args.overwrite,
         f"--out {args.out} already holds {', '.join(existing)} of an earlier run: pass --overwrite to replace them, "
         f"or choose another --out")


def read_structure(path: str, index: str, repeat):
    """The ase.Atoms to start from, checked as the Potential API checks its input (finite positions and cell, no
    overlapping atoms).

    Raises:
        FileNotFoundError: no file; DataError: unreadable, or bad content (names the file and frame).
    """
    from ase.io import read

    from qallegro.data.structure import DataError, make_structure

    if not os.path.isfile(path):
        raise FileNotFoundError(2, "no structure file", path)
    try:
        atoms = read(path, index=index)
    except Exception as err:  # ASE raises many types for unreadable files
        raise DataError(f"{path}: cannot read frame {index!r} of the structure ({type(err).__name__}: {err})") \
            from None
    if not hasattr(atoms, "positions"):
        raise DataError(f"{path}: --index {index!r} selects several frames; give one frame")
    if len(atoms) == 0:
        raise DataError(f"{path}, frame {index}: the structure has no atoms")
    if repeat:
        atoms = atoms.repeat(repeat)
    pbc = bool(atoms.pbc.any())
    make_structure(atoms.numbers, atoms.positions, atoms.cell.array if pbc else None, atoms.pbc if pbc else None,
                   source=path, frame=int(index) if str(index).lstrip("-").isdigit() else 0)
    return atoms


def main(args: argparse.Namespace) -> int:
    """Run the command; 0 on success, `WATCHDOG_STATUS` when the watchdog stopped the run.

    Raises:
        ValueError: a bad option; FileNotFoundError, DataError, ArtifactError: a bad input (all before any
        output is opened).
    """
    import jax

    validate_arguments(args)
    enable_x64()  # float64 energy sums; the network and the state keep the potential's dtype unless --float64
    from qallegro.md.dynamics import MDWatchdogError, Watchdog, energy_drift, run_md
    from qallegro.md.io import ThermoCSV, TrajectoryWriter, atomic_write_text, commit_partial, partial_path
    from qallegro.md.system import build_system
    from qallegro.potential import load

    potential = load(args.model, dtype="float64" if args.float64 else None)
    atoms = read_structure(args.structure, args.index, args.repeat)
    pbc = bool(atoms.pbc.any())
    cell = atoms.cell.array if pbc else None
    system = build_system(potential, atoms.positions, atoms.numbers, cell, atoms.pbc if pbc else False,
                          masses=atoms.get_masses(), skin=args.skin)
    watchdog = None if args.no_watchdog else Watchdog(args.max_drift, args.max_force, args.max_temperature,
                                                      not args.allow_isolated)
    # Everything is checked: now the outputs, under temporary names.
    os.makedirs(args.out, exist_ok=True)
    thermo_path = os.path.join(args.out, "thermo.csv")
    trajectory_path = os.path.join(args.out, args.trajectory)
    thermo_csv = ThermoCSV(partial_path(thermo_path))
    trajectory = TrajectoryWriter(partial_path(trajectory_path), atoms.numbers, cell, atoms.pbc,
                                  format=os.path.splitext(args.trajectory)[1][1:])

    def callback(row, positions, velocities):
        thermo_csv.write(row)
        trajectory.write(row, positions, velocities)
        print(f"step {row['step']:8d}  t {row['time_fs'] / 1000:8.3f} ps  E_pot {row['potential_energy']:.4f}  "
              f"E_tot {row['total_energy']:.4f} eV  T {row['temperature']:7.1f} K", flush=True)

    print(f"{potential!r}: {len(atoms)} atoms, {args.ensemble}, {args.steps} steps of {args.dt} fs at "
          f"{args.temperature} K, backend {jax.default_backend()}")
    start = time.perf_counter()
    stopped = None
    try:
        result = run_md(system, args.ensemble, args.steps, args.dt, args.temperature, log_every=args.log_every,
                        seed=args.seed, friction_per_fs=args.friction, tau_fs=args.tau, keep_frames=False,
                        callback=callback, watchdog=watchdog)
        thermo_rows, reallocations, capacity = result.thermo, result.reallocations, result.capacity
    except MDWatchdogError as err:
        stopped = err
        thermo_rows, reallocations, capacity = err.thermo, None, None
    finally:  # on any other error the partial files stay beside the earlier outputs, which are untouched
        thermo_csv.close()
        trajectory.close()
    commit_partial(thermo_path)
    commit_partial(trajectory_path)
    wall = time.perf_counter() - start
    done_steps = thermo_rows[-1]["step"] if thermo_rows else 0
    drift = energy_drift(thermo_rows, len(atoms)) if thermo_rows else None
    summary = {"model": os.path.abspath(args.model), "structure": os.path.abspath(args.structure),
               "n_atoms": len(atoms), "ensemble": args.ensemble, "steps": args.steps, "dt_fs": args.dt,
               "temperature_K": args.temperature, "log_every": args.log_every, "seed": args.seed,
               "status": "done" if stopped is None else "stopped by watchdog",
               "last_good_step": done_steps,
               "watchdog": None if watchdog is None else {
                   "max_drift_meV_per_atom": watchdog.max_drift_meV_per_atom, "max_force_eV_per_A": watchdog.max_force,
                   "max_temperature_K": watchdog.temperature_ceiling(args.temperature),
                   "check_isolation": watchdog.check_isolation},
               "neighbor_reallocations": reallocations, "neighbor_capacity": capacity,
               "wall_s_including_compile": wall, "atom_steps_per_s_including_compile": len(atoms) * done_steps / wall,
               "drift": drift, "backend": jax.default_backend()}
    if stopped is not None:
        summary["error"] = {"message": str(stopped), "step": stopped.step, "quantity": stopped.quantity,
                            "value": stopped.value if math.isfinite(stopped.value) else None,
                            "limit": stopped.limit, "atom": stopped.atom}
    atomic_write_text(os.path.join(args.out, "summary.json"), json.dumps(summary, indent=2, default=float))
    if stopped is not None:
        print(f"error: {stopped}; thermo.csv and {args.trajectory} in {args.out} end at step {done_steps}",
              file=sys.stderr)
        return WATCHDOG_STATUS
    print(f"done in {wall:.1f} s ({summary['atom_steps_per_s_including_compile']:.0f} atom-steps/s incl. "
          f"compilation); conserved-energy drift {drift['drift_meV_per_atom_per_ps']:.3f} meV/atom/ps; "
          f"neighbour re-allocations {reallocations}; output in {args.out}")
    return 0
