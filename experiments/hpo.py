"""`python -m experiments.run hpo --dataset D --model M --sampler samo-cobra --n-trials N [--storage URL]`:
multi-objective hyperparameter search, validation forces MAE (meV/Å; energy MAE in meV for data without
forces) against inference time (median ms per structure of the jit-compiled energy+forces function), both
minimised, on an Optuna study.

Inference time depends only on the architecture: it is measured before a trial trains, on the model with random
parameters, once per architecture (OUT/timing.json), and SAMO-COBRA takes it as an exact inexpensive objective
(IOC-SAMO-COBRA); --inference-ceiling MS adds an exact constraint. The workflow is `qallegro.hpo.search.run_search`.

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
    parser.add_argument("--inference-ceiling", type=float, default=None, metavar="MS",
                        help="only configurations with an inference time <= MS ms/structure (an exact constraint, "
                             "measured before training; default: none)")
    parser.add_argument("--cheap-budget", type=int, default=4,
                        help="new exact inference timings SAMO-COBRA may make per proposal (each compiles a model)")
    parser.add_argument("--no-cheap-timing", action="store_true",
                        help="SAMO-COBRA models the inference time with a surrogate instead of using it exactly")
    parser.add_argument("--heartbeat", type=int, default=30,
                        help="seconds between trial heartbeats; a trial silent for 2 beats + 10 s is retried")
    parser.add_argument("--transfer-from", default=None, metavar="STORAGE",
                        help="storage URL (or .db file) of a finished study whose Pareto-optimal configurations "
                             "are evaluated on --dataset (default: none, a new search)")
    parser.add_argument("--transfer-study", default=None,
                        help="study name inside --transfer-from (default: its only study)")
    parser.add_argument("--report-only", action="store_true", help="only redraw the plots and tables of OUT")


def space_path(model: str, path: Optional[str] = None) -> str:
    """The search-space file of a family: `path`, or experiments/configs/hpo/MODEL.yaml.

    Raises:
        ValueError: no file for the family (lists the known ones).
    """
    path = path or os.path.join(CONFIG_DIR, "hpo", f"{model}.yaml")
    if not os.path.exists(path):
        known = sorted(f[:-5] for f in os.listdir(os.path.join(CONFIG_DIR, "hpo")) if f.endswith(".yaml"))
        raise ValueError(f"no search space {path} for model {model!r}; known: {known} (or pass --space)")
    return path


def main(args: argparse.Namespace) -> int:
    import optuna

    from qallegro.hpo.search import SearchSettings, load_space, run_search

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    out = os.path.abspath(args.out or os.path.join("runs", f"hpo-{args.dataset}-{args.model}-{args.sampler}"))
    path = space_path(args.model, args.space)
    space = load_space(path)
    name = args.study_name or f"{args.dataset}-{args.model}-{args.sampler}"
    if args.transfer_from:
        name = args.study_name or f"{name}-transfer"
    settings = SearchSettings(sampler=args.sampler, n_trials=args.n_trials, n_initial=args.n_initial,
                              seed=args.seed, heartbeat_seconds=args.heartbeat,
                              timing_structures=args.timing_structures, cheap_inference=not args.no_cheap_timing,
                              cheap_budget=args.cheap_budget, inference_ceiling_ms=args.inference_ceiling)
    cfg = load_config(args.dataset, args.profile, args.config)
    cfg["model"]["family"] = args.model
    cfg["training"]["max_minutes"] = args.trial_minutes
    if args.trial_epochs is not None:
        cfg["training"]["max_epochs"] = args.trial_epochs
    enable_x64_if_needed(cfg)
    print(f"search space {path} ({len(space)} parameters)")
    run_search(cfg, space, out, settings, storage=args.storage, study_name=name,
               timing_cache=os.path.join(out, "timing.json"),
               command="python -m experiments.run hpo " + " ".join(_argv_of(args)),
               transfer_from=args.transfer_from, transfer_study=args.transfer_study, report_only=args.report_only,
               user_attrs={"dataset": args.dataset, "model": args.model})
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
