"""`python -m experiments.run [train] --dataset D --model M ...`: train, validate each epoch, test, write plots."""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from typing import Any, Dict, Optional

from experiments.config import available_datasets, dataset_label, load_config


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", default="rmd17-aspirin", metavar="{" + ",".join(available_datasets()) + "} | extxyz:PATH",
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
    parser.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")


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
    results = run_training(cfg, out, seed=args.seed, resume=args.resume, title=f"{args.dataset} / {args.model}")
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


def run_training(cfg: Dict[str, Any], out: str, seed: int = 0, resume: bool = False, title: str = "",
                 log=print) -> Dict[str, Any]:
    """Train and test one model from a resolved config; writes results.json, metrics.csv, parity.png,
    learning_curve.png and checkpoints into `out`. Returns the results dict."""
    import jax

    if cfg.get("dtype", "float32") == "float64":
        jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp

    from qallegro.data.graphs import GraphLoader, structure_to_graph
    from qallegro.data.readers import read_structures
    from qallegro.data.splits import resolve_split_sizes, train_val_test_split
    from qallegro.plots import learning_curve, parity_plot
    from qallegro.data.statistics import refit_shift
    from qallegro.models import build_model
    from qallegro.train.loop import TrainConfig, evaluate, fit, make_steps, write_json
    from qallegro.train.setup import count_parameters, prepare

    t0 = time.perf_counter()
    if not resume and os.path.exists(os.path.join(out, "checkpoints", "last")):
        log(f"note: {out} holds an earlier run; this new run replaces its checkpoints and results "
            f"(--resume continues it instead, --out DIR keeps both)")
    data = cfg["dataset"]
    read_options = data.get("read") or {}
    structures = read_structures(data["train"], **read_options)
    if data.get("test"):  # a separate test file; the train file is split into train + validation
        n_train, n_val, _ = resolve_split_sizes(len(structures), data["n_train"], data["n_val"], 0)
        train, val, _ = train_val_test_split(structures, n_train, n_val, 0, seed)
        test = read_structures(data["test"], **read_options)
    else:  # train / validation / test from one file (QM9, Cu–Li, extxyz:PATH); n_test 0: no test set
        sizes = resolve_split_sizes(len(structures), data["n_train"], data["n_val"], data.get("n_test", 0))
        train, val, test = train_val_test_split(structures, *sizes, seed)
    dtype = jnp.float64 if cfg.get("dtype") == "float64" else jnp.float32
    prepared = prepare(train, cfg["model"], seed=seed, dtype=dtype)
    r_max = prepared.model_config["r_max"]
    tcfg = TrainConfig.from_dict({**{k: v for k, v in cfg["training"].items() if k != "refit_shift"}, "seed": seed})
    val_graphs = [structure_to_graph(s, r_max, prepared.species) for s in val]
    pad = tcfg.pad_sizes_per_doubling
    train_loader = GraphLoader(prepared.train_graphs, tcfg.batch_size, shuffle=True, seed=seed,
                               sizes_per_doubling=pad)
    val_loader = GraphLoader(val_graphs, tcfg.eval_batch_size, shuffle=False, sizes_per_doubling=pad)
    compute_stress = any(s.stress is not None for s in train)
    n_params = count_parameters(prepared.params)
    log(f"{len(train)} train / {len(val)} validation / {len(test)} test structures; species {prepared.species}; "
        f"avg_num_neighbors {prepared.model_config['avg_num_neighbors']:.2f}; {n_params} parameters; "
        f"devices {jax.devices()}; data prepared in {time.perf_counter() - t0:.1f} s")
    os.makedirs(out, exist_ok=True)

    def save_config():  # everything load_run needs to rebuild the model
        with open(os.path.join(out, "config.json"), "w") as f:
            json.dump({"config": cfg, "model_config": prepared.model_config, "species": prepared.species,
                       "seed": seed}, f, indent=2)

    save_config()

    result = fit(prepared.model, prepared.params, train_loader, val_loader, tcfg, out, resume=resume,
                 compute_stress=compute_stress, log=log)
    params = result["best_params"]
    eval_step = result["eval_step"]
    if cfg["training"].get("refit_shift", True):
        # Closed-form refit of the per-species energy shifts on the training residuals (see refit_shift).
        train_eval = GraphLoader(prepared.train_graphs, tcfg.eval_batch_size, shuffle=False, sizes_per_doubling=pad)
        _, train_pred = evaluate(eval_step, params, train_eval, tcfg, return_predictions=True)
        new_shift = refit_shift(train, prepared.species, train_pred["energy_pred"],
                                prepared.model_config["species_shift"])
        prepared.model_config["species_shift"] = new_shift
        eval_step = make_steps(build_model(prepared.model_config), tcfg, compute_stress)[2]
        log(f"per-species energy shifts refitted on the training residuals: {[round(x, 4) for x in new_shift]} eV")
        save_config()
    val_metrics = evaluate(eval_step, params, val_loader, tcfg)
    test_metrics, predictions = {}, None
    if test:
        test_loader = GraphLoader([structure_to_graph(s, r_max, prepared.species) for s in test],
                                  tcfg.eval_batch_size, shuffle=False, sizes_per_doubling=pad)
        test_metrics, predictions = evaluate(eval_step, params, test_loader, tcfg, return_predictions=True)
    else:
        val_metrics, predictions = evaluate(eval_step, params, val_loader, tcfg, return_predictions=True)

    from ase.data import chemical_symbols

    names = [chemical_symbols[z] for z in prepared.species]
    parity_plot(predictions, os.path.join(out, "parity.png"), title=f"{title} ({'test' if test else 'validation'})",
                species_names=names)
    if result["history"]:
        learning_curve(result["history"], os.path.join(out, "learning_curve.png"), title=title)
    results = {
        "dataset": data, "model_config": prepared.model_config, "training": cfg["training"], "seed": seed,
        "n_parameters": n_params, "n_train": len(train), "n_val": len(val), "n_test": len(test),
        "epochs": len(result["history"]), "best_epoch": result["best_epoch"],
        "train_minutes": result["elapsed_minutes"], "compiled_shapes": result["compiled_shapes"],
        "validation": val_metrics, "test": test_metrics or val_metrics,
        "units": {"energy_mae": "meV", "forces_mae": "meV/Å", "forces_rmse": "meV/Å", "stress_mae": "meV/Å^3"},
        "machine": {"platform": platform.platform(), "processor": platform.processor(), "cpus": os.cpu_count(),
                    "jax_backend": jax.default_backend(), "jax": jax.__version__},
    }
    if data.get("external"):  # e.g. real DFT frames for the generated Cu–Li set
        from experiments.external import evaluate_external

        results["external"] = evaluate_external(data["external"], eval_step, params, r_max, prepared.species, tcfg,
                                                log=log)
    write_json(os.path.join(out, "results.json"), results)
    from qallegro.potential import save as save_potential

    # The deployable artifact (qallegro.potential.load): best EMA weights with the refitted shifts.
    save_potential(os.path.join(out, "potential.qallegro"), prepared.model_config, params, prepared.species,
                   dtype=cfg.get("dtype", "float32"), metadata=artifact_metadata(results))
    log(f"potential: {os.path.join(out, 'potential.qallegro')}")
    return results


def artifact_metadata(results: Dict[str, Any]) -> Dict[str, Any]:
    """The training facts stored in a potential artifact: data set, split sizes, epochs, metrics, machine."""
    keys = ("dataset", "training", "seed", "n_parameters", "n_train", "n_val", "n_test", "epochs", "best_epoch",
            "train_minutes", "validation", "test", "units", "machine")
    return {k: results[k] for k in keys if k in results}


def export_run(out: str, path: Optional[str] = None) -> str:
    """Write the artifact of a finished run directory (for runs made before `train` wrote one).
    Returns the artifact path (default OUT/potential.qallegro). Raises FileNotFoundError as `load_run`."""
    from qallegro.potential import save as save_potential

    model, params, model_config, species = load_run(out)
    with open(os.path.join(out, "config.json")) as f:
        dtype = json.load(f)["config"].get("dtype", "float32")
    results_path = os.path.join(out, "results.json")
    metadata = {}
    if os.path.exists(results_path):
        with open(results_path) as f:
            metadata = artifact_metadata(json.load(f))
    path = path or os.path.join(out, "potential.qallegro")
    save_potential(path, model_config, params, species, dtype=dtype, metadata=metadata)
    return path


def load_run(out: str):
    """A finished run's (model, best EMA params, model_config, species) from its config.json and
    checkpoints/best.

    Raises:
        FileNotFoundError: `out` holds no finished run.
    """
    import jax.numpy as jnp

    from qallegro.data.graphs import structure_to_graph
    from qallegro.data.structure import make_structure
    from qallegro.models import build_model
    from qallegro.train.checkpoint import restore_checkpoint
    from qallegro.train.setup import init_params

    path = os.path.join(out, "config.json")
    if not os.path.exists(path):
        raise FileNotFoundError(f"no run in {out} (missing config.json)")
    with open(path) as f:
        saved = json.load(f)
    model_config, species = saved["model_config"], saved["species"]
    model = build_model(model_config)
    dtype = jnp.float64 if saved["config"].get("dtype") == "float64" else jnp.float32
    probe = make_structure([species[0], species[-1]], [[0, 0, 0], [1.0, 0, 0]])
    template = init_params(model, structure_to_graph(probe, model_config["r_max"], species), 0, dtype)
    params = restore_checkpoint(os.path.join(out, "checkpoints", "best"), template)
    return model, params, model_config, species
