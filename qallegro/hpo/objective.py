"""The objective of a hyperparameter study: train one configuration, then measure it.

Objectives, both minimised (the seed paper's pair): the validation forces MAE in meV/Å (energy MAE in meV for
data without forces, such as QM9) and the inference time, the median ms per structure of the jit-compiled
energy+forces function on a fixed batch (`qallegro.timing.time_inference`).
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any, Callable, Dict, Sequence

import numpy as np
from optuna.distributions import CategoricalDistribution, FloatDistribution

from qallegro.data.structure import Structure
from qallegro.hpo.study import set_by_path, skip_if_duplicate
from qallegro.potential import load as load_potential
from qallegro.timing import time_potential
from qallegro.train.run import run_training


def suggest(trial, name: str, dist) -> Any:
    """Ask `trial` for parameter `name` of an Optuna distribution (records it with that distribution)."""
    if isinstance(dist, CategoricalDistribution):
        return trial.suggest_categorical(name, dist.choices)
    if isinstance(dist, FloatDistribution):
        return trial.suggest_float(name, dist.low, dist.high, log=dist.log, step=dist.step)
    return trial.suggest_int(name, dist.low, dist.high, log=dist.log, step=dist.step)


def params_key(params: Dict[str, Any]) -> str:
    """A short stable hash of a configuration: its training directory's name."""
    return hashlib.sha1(json.dumps(params, sort_keys=True, default=str).encode()).hexdigest()[:12]


def make_objective(base_cfg: Dict[str, Any], space: Dict[str, Any], out: str, seed: int,
                   timing_set: Sequence[Structure], log: Callable[[str], None] = print) -> Callable:
    """The study objective: trial -> (validation forces MAE in meV/Å, or energy MAE in meV without forces;
    inference median ms per structure). Details go to the trial's user attributes.

    Args:
        base_cfg: the run config (see `qallegro.train.run.run_training`) that each trial's parameters override;
            parameter names are dotted paths into it, e.g. "model.num_layers".
        space: parameter name -> Optuna distribution.
        out: the study directory; trial k trains in OUT/trials/<hash of its parameters> (resumed if present).
        seed: seed of every trial's split and initialisation.
        timing_set: the structures of the fixed inference-timing batch.
        log: where progress lines go.
    """

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
        timing = time_potential(load_potential(os.path.join(run_dir, "potential.qallegro")), timing_set)
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


