"""`python -m experiments.run [train] --dataset D --model M ...`: train, validate each epoch, test, write plots
(the workflow is `qallegro.train.run.run_training`)."""

from __future__ import annotations

import argparse
import os
from typing import List

from experiments.config import available_datasets, dataset_label, enable_x64, load_config


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", default="rmd17-aspirin",
                        metavar="{" + ",".join(available_datasets()) + "} | extxyz:PATH",
                        help="dataset config under experiments/configs (default: rmd17-aspirin, embedded), or "
                             "extxyz:PATH for any extxyz file (split 80/10/10 by the seed)")
    parser.add_argument("--energy-key", default=None,
                        help="extxyz info key of the energy (eV); default: ASE's 'energy' where present")
    parser.add_argument("--forces-key", default=None,
                        help="extxyz per-atom key of the forces (eV/Å); default: ASE's 'forces' where present")
    parser.add_argument("--stress-key", default=None,
                        help="extxyz info key of the stress (eV/Å^3, ASE sign; 'none': do not use stress); default: "
                             "ASE's 'stress' where present")
    parser.add_argument("--model", default="allegro",
                        help="model family: allegro, allegro-mlp or allegro-qdi (default: allegro)")
    parser.add_argument("--config", default=None,
                        help="YAML merged over the dataset config (dataset/model/training keys; default: none)")
    parser.add_argument("--profile", default="cpu", choices=["cpu", "paper"],
                        help="cpu: small, ~12 min of training on 2 cores; paper: the published recipe (default: cpu)")
    parser.add_argument("--max-epochs", type=int, default=None, help="stop after N epochs (default: from config)")
    parser.add_argument("--max-minutes", type=float, default=None,
                        help="training wall-time budget in minutes (default: from config)")
    parser.add_argument("--out", default=None, help="run directory (default: runs/DATASET-MODEL-PROFILE-seedS)")
    parser.add_argument("--seed", type=int, default=0, help="seed of split, initialisation and shuffling (default 0)")
    exclusive = parser.add_mutually_exclusive_group()
    exclusive.add_argument("--resume", action="store_true",
                           help="continue the run in --out from its newest intact checkpoint (refused when --out "
                                "belongs to another dataset, model or hyperparameters; more --max-epochs or "
                                "--max-minutes are allowed)")
    exclusive.add_argument("--overwrite", action="store_true",
                           help="--out may hold an earlier run: it is moved aside to OUT.replaced-TIMESTAMP once the "
                                "data are validated (default: such a directory is refused)")
    multi = parser.add_argument_group(
        "multi-process data-parallel training (one process per machine; see docs/usage/training.rst)",
        "Start the same command, with the same options and data, once per process, each with its own "
        "--process-id. Every batch is split over the devices of all processes and the gradients are summed: the "
        "result equals one process's. Process 0 alone writes --out (the others' --out is unused), and "
        "--resume needs only process 0's --out. Under SLURM (srun, several tasks) or Open MPI (mpirun, several "
        "ranks) these options may be left out: they are read from the environment those launchers set.")
    multi.add_argument("--num-processes", type=int, default=None,
                       help="number of processes N (default: one, or as SLURM / Open MPI set it)")
    multi.add_argument("--process-id", type=int, default=None,
                       help="this process's id, 0 .. N-1 (default: 0, or as SLURM / Open MPI set it)")
    multi.add_argument("--coordinator", default=None, metavar="HOST:PORT",
                       help="address of process 0's machine and a free TCP port there, reachable from the others "
                            "(default: none, or as SLURM / Open MPI set it)")


def start_processes_from_argv(argv: List[str]) -> None:
    """`start_processes` from the train command's arguments, before the command parser is built: building it
    imports every command's module, and some (jax-md) start JAX's backend at import, after which
    jax.distributed can no longer be joined."""
    parser = argparse.ArgumentParser(add_help=False)
    for flag, kind in (("--num-processes", int), ("--process-id", int), ("--coordinator", str)):
        parser.add_argument(flag, type=kind, default=None)
    start_processes(parser.parse_known_args(argv)[0])


def start_processes(args: argparse.Namespace) -> None:
    """Join the multi-process runtime when --num-processes/--process-id/--coordinator are given (all three), or
    when SLURM or Open MPI started this process as one of several; otherwise (or when already joined) nothing.

    Raises:
        SystemExit: only some of the three options given, or an id outside 0 .. N-1 (argparse-style message).
    """
    import jax

    from qallegro.train.parallel import cluster_from_environment, initialize_distributed

    if jax.distributed.is_initialized():
        return
    given = [getattr(args, k, None) is not None for k in ("num_processes", "process_id", "coordinator")]
    if any(given) and not all(given):
        raise SystemExit("error: --num-processes, --process-id and --coordinator go together (all three, or none "
                         "under SLURM / Open MPI)")
    if all(given):
        if not 0 <= args.process_id < args.num_processes:
            raise SystemExit(f"error: --process-id {args.process_id} is outside 0 .. {args.num_processes - 1}")
        initialize_distributed(args.coordinator, args.num_processes, args.process_id)
    elif cluster_from_environment() is not None:
        initialize_distributed()  # jax.distributed reads SLURM's / Open MPI's variables
    else:
        return
    print(f"process {jax.process_index()} of {jax.process_count()}: devices {jax.local_devices()} of "
          f"{jax.device_count()}", flush=True)


def main(args: argparse.Namespace) -> int:
    start_processes(args)
    cfg = load_config(args.dataset, args.profile, args.config)
    cfg["model"]["family"] = args.model
    for key in ("energy_key", "forces_key", "stress_key"):
        if getattr(args, key, None) is not None:
            cfg["dataset"].setdefault("read", {})[key] = getattr(args, key)
    if args.max_epochs is not None:
        cfg["training"]["max_epochs"] = args.max_epochs
    if args.max_minutes is not None:
        cfg["training"]["max_minutes"] = args.max_minutes
    out = args.out or os.path.join("runs", f"{dataset_label(args.dataset)}-{args.model}-{args.profile}-seed{args.seed}")
    enable_x64()  # float64 energies, float32 network (qallegro.potential.graph)
    from qallegro.train.run import run_training

    results = run_training(cfg, out, seed=args.seed, resume=args.resume, title=f"{args.dataset} / {args.model}",
                           overwrite=getattr(args, "overwrite", False))
    if "process_index" in results:  # not process 0 of a multi-process run
        print(f"process {results['process_index']}: training done; "
              f"process 0 writes the results")
        return 0
    test = results["test"]
    forces = (f"forces MAE {test['forces_mae']:.1f} meV/Å, forces RMSE {test['forces_rmse']:.1f} meV/Å"
              if test["forces_mae"] == test["forces_mae"] else "no force labels")
    print(f"\ntest ({results['n_test']} structures): energy MAE {test['energy_mae']:.1f} meV "
          f"({test['energy_per_atom_mae']:.1f} meV/atom), {forces}"
          + (f", stress MAE {test['stress_mae']:.2f} meV/Å^3" if test.get("stress_mae") == test.get("stress_mae")
             and "stress_mae" in test else "")
          + f" after {results['epochs']} epochs, {results['train_minutes']:.1f} min of training")
    for name, ext in results.get("external", {}).items():
        print(f"external {name} ({ext['n']} frames): forces MAE {ext['forces_mae']:.1f} meV/Å, energy MAE "
              f"{ext.get('energy_per_atom_mae', float('nan')):.1f} meV/atom "
              f"({ext.get('energy_per_atom_mae_refit', float('nan')):.1f} after the per-element reference refit), "
              f"stress MAE {ext.get('stress_mae', float('nan')):.2f} meV/Å^3")
    print(f"results: {os.path.join(out, 'results.json')}")
    return 0
