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
import os
import warnings
from typing import List, Optional

from experiments.config import CONFIG_DIR, available_datasets, enable_x64_if_needed, load_config


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
    parser.add_argument("--config", default=None,
                        help="YAML merged over the dataset config before the search (default: none)")
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

    from qallegro.data.readers import read_structures
    from qallegro.hpo.objective import make_objective
    from qallegro.hpo.report import write_report
    from qallegro.hpo.study import enqueue_transfer, make_sampler, make_storage, run_worker, storage_url

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    out = os.path.abspath(args.out or os.path.join("runs", f"hpo-{args.dataset}-{args.model}-{args.sampler}"))
    os.makedirs(out, exist_ok=True)
    space, space_path = load_space(args.model, args.space)
    url = storage_url(args.storage or os.path.join(out, "study.db"))
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
        n_trials = enqueue_transfer(study, args.transfer_from, args.transfer_study, space)

    if not args.report_only:
        cfg = load_config(args.dataset, args.profile, args.config)
        cfg["model"]["family"] = args.model
        cfg["training"]["max_minutes"] = args.trial_minutes
        if args.trial_epochs is not None:
            cfg["training"]["max_epochs"] = args.trial_epochs
        enable_x64_if_needed(cfg)
        data = cfg["dataset"]
        timing_set = read_structures(data["train"], **(data.get("read") or {}))[:args.timing_structures]
        objective = make_objective(cfg, space, out, args.seed, timing_set)
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
