"""Energy conservation of NVE with a trained potential: drift of the total energy in meV/atom/ps.

    python -m experiments.benchmarks.nve_drift [--model tests/data/aspirin-allegro-cpu-6min.qallegro]
        [--ps 5] [--dt 0.5] [--temperature 300] [--float64] [--out experiments/results]

Runs jax-md velocity Verlet from an rMD17 aspirin frame (tests/data/aspirin.xyz) with Maxwell-Boltzmann
velocities, logs every 100 steps and fits a line to the total energy against time. Writes nve_drift.json,
nve_drift.csv (the thermo log) and nve_drift.png into --out (file names carry the dtype).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=os.path.join(ROOT, "tests", "data", "aspirin-allegro-cpu-6min.qallegro"))
    parser.add_argument("--structure", default=os.path.join(ROOT, "tests", "data", "aspirin.xyz"))
    parser.add_argument("--ps", type=float, default=5.0, help="simulated time in ps")
    parser.add_argument("--dt", type=float, default=0.5, help="time step in fs")
    parser.add_argument("--temperature", type=float, default=300.0)
    parser.add_argument("--log-every", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--float64", action="store_true", help="integrate in float64 (jax x64)")
    parser.add_argument("--out", default=os.path.join(ROOT, "experiments", "results"))
    args = parser.parse_args(argv)

    import jax

    if args.float64:
        jax.config.update("jax_enable_x64", True)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    from ase.io import read

    from qallegro.md import build_system, energy_drift, run_md
    from qallegro.md.io import ThermoCSV
    from qallegro.potential import load

    dtype = "float64" if args.float64 else "float32"
    potential = load(args.model, dtype=dtype)
    atoms = read(args.structure)
    system = build_system(potential, atoms.positions, atoms.numbers)
    steps = int(round(args.ps * 1000.0 / args.dt))
    os.makedirs(args.out, exist_ok=True)
    csv = ThermoCSV(os.path.join(args.out, f"nve_drift_{dtype}.csv"))
    start = time.perf_counter()
    result = run_md(system, "nve", steps, args.dt, args.temperature, log_every=args.log_every, seed=args.seed,
                    keep_frames=False, callback=lambda row, *_: csv.write(row))
    wall = time.perf_counter() - start
    csv.close()
    n = len(atoms)
    drift = energy_drift(result.thermo, n)
    t = np.array([r["time_fs"] for r in result.thermo]) / 1000.0
    e_tot = np.array([r["total_energy"] for r in result.thermo])
    e_pot = np.array([r["potential_energy"] for r in result.thermo])
    temps = np.array([r["temperature"] for r in result.thermo])
    summary = {
        "model": os.path.relpath(args.model, ROOT), "structure": os.path.relpath(args.structure, ROOT),
        "n_atoms": n, "dtype": dtype, "dt_fs": args.dt, "steps": steps, "temperature_K": args.temperature,
        "seed": args.seed, **drift,
        "total_energy_std_meV_per_atom": 1000.0 * float(np.std(e_tot)) / n,
        "potential_energy_std_meV_per_atom": 1000.0 * float(np.std(e_pot)) / n,
        "mean_temperature_K": float(np.mean(temps[1:])), "neighbor_reallocations": result.reallocations,
        "wall_s": wall, "atom_steps_per_s_including_compile": n * steps / wall,
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "backend": jax.default_backend(),
                    "loadavg_end": os.getloadavg()},
        "model_test_metrics": potential.metadata.get("test", {}),
    }
    with open(os.path.join(args.out, f"nve_drift_{dtype}.json"), "w") as f:
        json.dump(summary, f, indent=2)
    fig, ax = plt.subplots(2, 1, figsize=(7, 5), sharex=True)
    ax[0].plot(t, 1000.0 * (e_tot - e_tot[0]) / n, label="total")
    ax[0].plot(t, 1000.0 * (e_pot - e_pot.mean()) / n, alpha=0.4, label="potential (mean removed)")
    ax[0].set_ylabel("meV / atom")
    ax[0].legend(loc="upper right")
    ax[0].set_title(f"NVE aspirin, dt {args.dt} fs, {dtype}: drift {drift['drift_meV_per_atom_per_ps']:.3f} "
                    f"meV/atom/ps")
    ax[1].plot(t, temps)
    ax[1].set_ylabel("T (K)")
    ax[1].set_xlabel("time (ps)")
    fig.tight_layout()
    fig.savefig(os.path.join(args.out, f"nve_drift_{dtype}.png"), dpi=120)
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
