"""`python -m experiments.run md --model PATH --structure FILE --ensemble nve|nvt --steps N --dt FS --temperature K`

Molecular dynamics with a trained potential artifact (qallegro.potential.load) on jax-md: the structure is read
with ase.io (any format ASE reads; the first frame, or --index), optionally replicated (--repeat), and
integrated in jit-compiled chunks of --log-every steps. Writes into --out:
    trajectory.extxyz (or --trajectory NAME.traj)   frames every --log-every steps
    thermo.csv                                      step, time, energies (eV), temperature (K), re-allocations
    summary.json                                    settings, energy drift (meV/atom/ps), throughput
"""

from __future__ import annotations

import argparse
import json
import os
import time

from experiments.config import enable_x64
from qallegro.md.dynamics import ENSEMBLES


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


def main(args: argparse.Namespace) -> int:
    import jax

    enable_x64()  # float64 energy sums; the network and the state keep the potential's dtype unless --float64
    from ase.io import read

    from qallegro.md.dynamics import energy_drift, run_md
    from qallegro.md.io import ThermoCSV, TrajectoryWriter
    from qallegro.md.system import build_system
    from qallegro.potential import load

    potential = load(args.model, dtype="float64" if args.float64 else None)
    atoms = read(args.structure, index=args.index)
    if args.repeat:
        atoms = atoms.repeat(args.repeat)
    pbc = bool(atoms.pbc.any())
    cell = atoms.cell.array if pbc else None
    system = build_system(potential, atoms.positions, atoms.numbers, cell, atoms.pbc if pbc else False,
                          masses=atoms.get_masses(), skin=args.skin)
    os.makedirs(args.out, exist_ok=True)
    thermo_csv = ThermoCSV(os.path.join(args.out, "thermo.csv"))
    trajectory = TrajectoryWriter(os.path.join(args.out, args.trajectory), atoms.numbers, cell, atoms.pbc)

    def callback(row, positions, velocities):
        thermo_csv.write(row)
        trajectory.write(row, positions, velocities)
        print(f"step {row['step']:8d}  t {row['time_fs'] / 1000:8.3f} ps  E_pot {row['potential_energy']:.4f}  "
              f"E_tot {row['total_energy']:.4f} eV  T {row['temperature']:7.1f} K", flush=True)

    print(f"{potential!r}: {len(atoms)} atoms, {args.ensemble}, {args.steps} steps of {args.dt} fs at "
          f"{args.temperature} K, backend {jax.default_backend()}")
    start = time.perf_counter()
    try:
        result = run_md(system, args.ensemble, args.steps, args.dt, args.temperature, log_every=args.log_every,
                        seed=args.seed, friction_per_fs=args.friction, tau_fs=args.tau, keep_frames=False,
                        callback=callback)
    finally:
        thermo_csv.close()
        trajectory.close()
    wall = time.perf_counter() - start
    drift = energy_drift(result.thermo, len(atoms))
    summary = {"model": os.path.abspath(args.model), "structure": os.path.abspath(args.structure),
               "n_atoms": len(atoms), "ensemble": args.ensemble, "steps": args.steps, "dt_fs": args.dt,
               "temperature_K": args.temperature, "log_every": args.log_every, "seed": args.seed,
               "neighbor_reallocations": result.reallocations, "neighbor_capacity": result.capacity,
               "wall_s_including_compile": wall, "atom_steps_per_s_including_compile": len(atoms) * args.steps / wall,
               "drift": drift, "backend": jax.default_backend()}
    with open(os.path.join(args.out, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    print(f"done in {wall:.1f} s ({summary['atom_steps_per_s_including_compile']:.0f} atom-steps/s incl. "
          f"compilation); conserved-energy drift {drift['drift_meV_per_atom_per_ps']:.3f} meV/atom/ps; "
          f"neighbour re-allocations {result.reallocations}; output in {args.out}")
    return 0
