"""`python -m experiments.run [train] --dataset D --model M ...`: train, validate each epoch, test, write plots
(the workflow is `qallegro.train.run.run_training`)."""

from __future__ import annotations

import argparse
import os

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
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in --out from its newest intact checkpoint (refused when --out "
                             "belongs to another dataset, model or hyperparameters; more --max-epochs or "
                             "--max-minutes are allowed)")
    parser.add_argument("--overwrite", action="store_true",
                        help="--out may hold an earlier run: it is moved aside to OUT.replaced-TIMESTAMP once the "
                             "data are validated (default: such a directory is refused)")


def main(args: argparse.Namespace) -> int:
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
