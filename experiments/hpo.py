"""`python -m experiments.run hpo --dataset D --model M --sampler samo-cobra --n-trials N [--storage URL]`:
multi-objective hyperparameter search, validation forces MAE (meV/Å; energy MAE in meV for data without
forces) against inference time (median ms per structure of the jit-compiled energy+forces function), both
minimised, on an Optuna study.

Every trial trains one configuration of the family's search space (experiments/configs/hpo/MODEL.yaml) under
the per-trial budget, in OUT/trials/<hash of its parameters>: a trial that is interrupted and retried with the
same parameters resumes its training from the last checkpoint. Re-running the same command resumes the study;
several processes (here or on other machines, with a PostgreSQL URL) can run it at once against one storage.

Writes OUT/pareto.png (all trials, the front highlighted), OUT/hypervolume.png, OUT/pareto.md (the
Pareto-optimal configurations) and OUT/study.json. With --transfer-from, the Pareto-optimal configurations of
another study are trained and measured on this dataset (the paper's transfer of Cu–Li hyperparameters).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import warnings
from typing import Any, Callable, Dict, List, Optional

import numpy as np

from experiments.config import CONFIG_DIR, available_datasets, load_config

OBJECTIVES = ("validation forces MAE (meV/Å)", "inference time (ms/structure)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from qallegro.hpo.study import SAMPLERS

    parser.add_argument("--dataset", default="rmd17-benzene", choices=available_datasets(), help="dataset config")
    parser.add_argument("--model", default="allegro", help="model family: allegro, allegro-mlp or allegro-qdi")
    parser.add_argument("--sampler", default="samo-cobra", choices=SAMPLERS, help="Optuna sampler")
    parser.add_argument("--n-trials", type=int, default=16,
                        help="completed trials the study should hold (counted over all workers)")
    parser.add_argument("--n-initial", type=int, default=None,
                        help="initial design size (SAMO-COBRA; TPE startup trials; default: parameters + 1)")
    parser.add_argument("--trial-minutes", type=float, default=2.0,
                        help="training wall-time budget per trial, minutes")
    parser.add_argument("--trial-epochs", type=int, default=None,
                        help="or an epoch budget per trial (default: the dataset config's max_epochs)")
    parser.add_argument("--space", default=None,
                        help="search-space YAML (default: experiments/configs/hpo/MODEL.yaml)")
    parser.add_argument("--profile", default="cpu", choices=["cpu", "paper"], help="base config profile")
    parser.add_argument("--config", default=None, help="YAML merged over the dataset config before the search (default: none)")
    parser.add_argument("--out", default=None, help="study directory (default runs/hpo-DATASET-MODEL-SAMPLER)")
    parser.add_argument("--storage", default=None,
                        help="Optuna storage URL (default sqlite:///OUT/study.db; e.g. postgresql://user@host/db)")
    parser.add_argument("--study-name", default=None, help="study name (default DATASET-MODEL-SAMPLER)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the sampler, the data split and the models")
    parser.add_argument("--timing-structures", type=int, default=10,
                        help="structures in the fixed inference-timing batch (first ones of the training file)")
    parser.add_argument("--heartbeat", type=int, default=30,
                        help="seconds between trial heartbeats; a trial silent for 2 beats + 10 s is retried")
    parser.add_argument("--transfer-from", default=None, metavar="STORAGE",
                        help="storage URL (or .db file) of a finished study whose Pareto-optimal configurations "
                             "are evaluated on --dataset (default: none, a new search)")
    parser.add_argument("--transfer-study", default=None,
                        help="study name inside --transfer-from (default: its only study)")
    parser.add_argument("--report-only", action="store_true", help="only redraw the plots and tables of OUT")


def _storage_url(value: str) -> str:
    return value if "://" in value else f"sqlite:///{os.path.abspath(value)}"


def suggest(trial, name: str, dist) -> Any:
    """Ask `trial` for parameter `name` of an Optuna distribution (records it with that distribution)."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution

    if isinstance(dist, CategoricalDistribution):
        return trial.suggest_categorical(name, dist.choices)
    if isinstance(dist, FloatDistribution):
        return trial.suggest_float(name, dist.low, dist.high, log=dist.log, step=dist.step)
    return trial.suggest_int(name, dist.low, dist.high, log=dist.log, step=dist.step)


def params_key(params: Dict[str, Any]) -> str:
    """A short stable hash of a configuration: its training directory's name."""
    return hashlib.sha1(json.dumps(params, sort_keys=True, default=str).encode()).hexdigest()[:12]


def make_objective(base_cfg: Dict[str, Any], space, out: str, seed: int, timing_structures: int,
                   log: Callable[[str], None] = print):
    """The study objective: trial -> (validation forces MAE in meV/Å, or energy MAE in meV without forces;
    inference median ms per structure). Details go to the trial's user attributes."""
    from qallegro.data.graphs import batch_and_pad, structure_to_graph
    from qallegro.data.readers import read_structures
    from qallegro.hpo.study import set_by_path, skip_if_duplicate
    from qallegro.timing import time_inference

    from experiments.train import load_run, run_training

    data = base_cfg["dataset"]
    timing_set = read_structures(data["train"], **(data.get("read") or {}))[:timing_structures]

    def objective(trial):
        params = {name: suggest(trial, name, dist) for name, dist in space.items()}
        skip_if_duplicate(trial)
        cfg = set_by_path(base_cfg, params)
        cfg["dataset"] = dict(cfg["dataset"], test=None)  # the search sees validation data only
        run_dir = os.path.join(out, "trials", params_key(params))
        trial.set_user_attr("run_dir", os.path.relpath(run_dir, out))
        resume = os.path.isdir(os.path.join(run_dir, "checkpoints", "last"))
        log(f"trial {trial.number}: {params} -> {run_dir}{' (resuming)' if resume else ''}")
        with open(os.path.join(out, "trials.log"), "a") as logfile:
            results = run_training(cfg, run_dir, seed=seed, resume=resume, title=f"trial {trial.number}",
                                   log=lambda s: print(s, file=logfile, flush=True))
        val = results["validation"]
        has_forces = val.get("forces_mae") is not None and np.isfinite(val["forces_mae"])
        error = float(val["forces_mae"] if has_forces else val["energy_mae"])
        model, model_params, model_config, species = load_run(run_dir)
        batch = batch_and_pad([structure_to_graph(s, model_config["r_max"], species) for s in timing_set])
        timing = time_inference(model, model_params, batch)
        trial.set_user_attr("validation", val)
        trial.set_user_attr("error_metric", "forces_mae (meV/Å)" if has_forces else "energy_mae (meV)")
        trial.set_user_attr("n_parameters", results["n_parameters"])
        trial.set_user_attr("epochs", results["epochs"])
        trial.set_user_attr("train_minutes", results["train_minutes"])
        trial.set_user_attr("timing", {k: timing[k] for k in ("median_ms_per_structure", "p10_ms_per_batch",
                                                               "p90_ms_per_batch", "n_structures", "compile_s")})
        log(f"trial {trial.number}: {'forces' if has_forces else 'energy'} MAE {error:.1f}, "
            f"{timing['median_ms_per_structure']:.2f} ms/structure, {results['epochs']} epochs")
        return error, float(timing["median_ms_per_structure"])

    return objective


def load_space(model: str, path: Optional[str] = None):
    import yaml

    from qallegro.hpo.space import space_from_yaml

    path = path or os.path.join(CONFIG_DIR, "hpo", f"{model}.yaml")
    if not os.path.exists(path):
        known = sorted(f[:-5] for f in os.listdir(os.path.join(CONFIG_DIR, "hpo")) if f.endswith(".yaml"))
        raise ValueError(f"no search space {path} for model {model!r}; known: {known} (or pass --space)")
    with open(path) as f:
        return space_from_yaml(yaml.safe_load(f)), path


def main(args: argparse.Namespace) -> int:
    import optuna

    from qallegro.hpo.study import make_sampler, make_storage, run_worker

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    out = os.path.abspath(args.out or os.path.join("runs", f"hpo-{args.dataset}-{args.model}-{args.sampler}"))
    os.makedirs(out, exist_ok=True)
    space, space_path = load_space(args.model, args.space)
    url = _storage_url(args.storage or os.path.join(out, "study.db"))
    name = args.study_name or f"{args.dataset}-{args.model}-{args.sampler}"
    storage = make_storage(url, heartbeat_interval=args.heartbeat)
    sampler = make_sampler(args.sampler, space, seed=args.seed, n_initial=args.n_initial)
    if args.transfer_from:
        name = args.study_name or f"{name}-transfer"
    study = optuna.create_study(storage=storage, study_name=name, directions=["minimize", "minimize"],
                                sampler=sampler, load_if_exists=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names(["error", "inference_ms"])
    command = "python -m experiments.run hpo " + " ".join(_argv_of(args))
    study.set_user_attr("dataset", args.dataset)
    study.set_user_attr("model", args.model)
    n_trials = args.n_trials
    if args.transfer_from:
        n_trials = _enqueue_transfer(study, args.transfer_from, args.transfer_study, space)

    if not args.report_only:
        cfg = load_config(args.dataset, args.profile, args.config)
        cfg["model"]["family"] = args.model
        cfg["training"]["max_minutes"] = args.trial_minutes
        if args.trial_epochs is not None:
            cfg["training"]["max_epochs"] = args.trial_epochs
        objective = make_objective(cfg, space, out, args.seed, args.timing_structures)
        print(f"study {name!r} in {url}: {len(study.trials)} trials so far; target {n_trials} completed; "
              f"search space {space_path} ({len(space)} parameters)")
        run_worker(study, objective, n_trials)
    write_report(study, out, command, source=args.transfer_from)
    print(open(os.path.join(out, "pareto.md")).read())
    print(f"written: {out}/pareto.png, hypervolume.png, pareto.md, study.json")
    return 0


def _argv_of(args: argparse.Namespace) -> List[str]:
    skip = {"command", "_main", "report_only"}
    argv = []
    for key, value in vars(args).items():
        if key in skip or value is None or value is False:
            continue
        argv += [f"--{key.replace('_', '-')}"] + ([] if value is True else [str(value)])
    return argv


def _enqueue_transfer(study, source_url: str, source_name: Optional[str], space) -> int:
    """Enqueue the source study's Pareto-optimal configurations (once); returns the number of trials to finish."""
    import optuna

    source_url = _storage_url(source_url)
    names = optuna.get_all_study_names(storage=source_url)
    if source_name is None:
        if len(names) != 1:
            raise ValueError(f"{source_url} holds studies {names}: choose one with --transfer-study")
        source_name = names[0]
    source = optuna.load_study(study_name=source_name, storage=source_url)
    best = source.best_trials
    if not best:
        raise ValueError(f"study {source_name!r} in {source_url} has no completed trial to transfer")
    missing = sorted(set(space) - set(best[0].params))
    if missing:
        raise ValueError(f"study {source_name!r} has no values for {missing} of this search space")
    if not study.user_attrs.get("transfer_source"):
        for t in best:
            study.enqueue_trial({k: t.params[k] for k in space}, user_attrs={
                "source_trial": t.number, "source_values": list(t.values)})
        study.set_user_attr("transfer_source", {"storage": source_url, "study": source_name,
                                                "dataset": source.user_attrs.get("dataset")})
    return len(best)


def write_report(study, out: str, command: str, source: Optional[str] = None) -> Dict[str, Any]:
    """Pareto plot, hypervolume history, Pareto table and JSON summary of `study` into `out`."""
    from optuna.trial import TrialState

    from qallegro.hpo.report import default_reference, hypervolume_history, pareto_mask
    from qallegro.plots import hypervolume_plot, pareto_plot

    done = [t for t in study.trials if t.state == TrialState.COMPLETE]
    failed = [t for t in study.trials if t.state == TrialState.FAIL]
    if not done:
        raise RuntimeError(f"study {study.study_name!r} has no completed trial yet")
    values = np.array([t.values for t in done])
    front = pareto_mask(values)
    reference = default_reference(values)
    hv = hypervolume_history(values, reference)
    metric = done[0].user_attrs.get("error_metric", "forces_mae (meV/Å)")
    labels = (f"validation {metric}", "inference time (ms/structure)")
    title = f"{study.user_attrs.get('dataset', '')} / {study.user_attrs.get('model', '')}: {study.study_name}"
    pareto_plot(values, front, os.path.join(out, "pareto.png"), labels=labels, title=title,
                numbers=[t.number for t in done], failed=len(failed))
    hypervolume_plot({study.study_name: hv}, os.path.join(out, "hypervolume.png"), title=title,
                     ylabel=f"hypervolume (reference {reference[0]:.3g}, {reference[1]:.3g})")
    best = [t for t, on in zip(done, front) if on]
    best.sort(key=lambda t: t.values[0])
    keys = sorted(best[0].params)
    lines = [f"### Pareto-optimal configurations: {title}", "",
             f"Command: `{command}`", "",
             f"{len(done)} completed trials, {len(failed)} failed; final hypervolume {hv[-1]:.4g} "
             f"(reference point {reference[0]:.4g}, {reference[1]:.4g}).", ""]
    if source:
        lines += [f"Transferred from `{source}`: `source` shows the configuration's objectives on the source "
                  "dataset.", ""]
    header = ["trial", labels[0], "ms/structure", "parameters", "epochs"] + (["source"] if source else []) + keys
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for t in best:
        row = [str(t.number), f"{t.values[0]:.1f}", f"{t.values[1]:.3f}", str(t.user_attrs.get("n_parameters", "")),
               str(t.user_attrs.get("epochs", ""))]
        if source:
            sv = t.user_attrs.get("source_values")
            row.append(f"{sv[0]:.1f} / {sv[1]:.3f}" if sv else "")
        row += [f"{t.params[k]:.3g}" if isinstance(t.params[k], float) else str(t.params[k]) for k in keys]
        lines.append("| " + " | ".join(row) + " |")
    if failed:
        lines += ["", "Failed trials:"] + [f"- trial {t.number}: {t.user_attrs.get('failure', 'stale (worker died)')}"
                                           for t in failed]
    with open(os.path.join(out, "pareto.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    summary = {"study": study.study_name, "command": command, "objectives": list(OBJECTIVES),
               "reference_point": reference.tolist(), "hypervolume": hv.tolist(),
               "trials": [{"number": t.number, "values": list(t.values), "params": t.params,
                           "pareto": bool(on), **{k: v for k, v in t.user_attrs.items() if k != "dedupe"}}
                          for t, on in zip(done, front)],
               "failed": [{"number": t.number, "params": t.params, "failure": t.user_attrs.get("failure")}
                          for t in failed],
               "machine": {"platform": platform.platform(), "cpus": os.cpu_count()}}
    with open(os.path.join(out, "study.json"), "w") as f:
        json.dump(summary, f, indent=2, default=str)
    return summary
