"""One final run of the study (compare or transfer stage): train a selected configuration for a fixed number of
epochs with one seed, test it, and commit its results.

A run is done when its committed results.json exists for the plan's number of epochs; it is then never trained again.
A plan that raises a dataset's epochs (runs that did not converge) extends its finished runs: each resumes from its
last checkpoint in the scratch folder, where present, and trains the further epochs only (max_epochs may change on
resume: the schedule and the shuffling depend on the epoch, not on the budget); without a checkpoint it trains anew.
Otherwise a run trains in its scratch folder and resumes from the last checkpoint there
(`qallegro.train.run.run_training` with ``resume=True``: the same arithmetic as an uninterrupted run), so an
interrupted study loses at most the steps since the last checkpoint. The committed results.json holds everything the
report needs: test metrics, the per-frame test errors (for the bootstrap over frames), the validation history (curves,
convergence), the convergence verdict, the parameter count and the exact inference time (the same per-architecture
timing as the search, `qallegro.hpo.objective.InferenceTimer`). Seed 0 also commits its potential.qallegro.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import platform
import shutil
import time
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

import numpy as np

from qallegro.study.convergence import check as check_convergence
from qallegro.study.layout import StudyLayout
from qallegro.study.plan import StudyPlan

#: validation columns kept per epoch in results.json
HISTORY_KEYS = ("epoch", "learning_rate", "train_loss", "val_loss", "val_energy_mae", "val_forces_mae",
                "elapsed_minutes")


def run_config(plan: StudyPlan, dataset: str, family: str, params: Mapping[str, Any],
               epochs: Optional[int] = None) -> Dict[str, Any]:
    """The resolved run config of `family` on `dataset` with the dotted `params` applied and a budget of exactly
    `epochs` epochs (no wall-time limit): the same budget for every family of a dataset."""
    from qallegro.hpo.study import set_by_path

    cfg = plan.datasets[dataset].run_config()
    cfg["model"]["family"] = family
    cfg = set_by_path(cfg, dict(params))
    if epochs is not None:
        cfg["training"]["max_epochs"] = int(epochs)
        cfg["training"]["max_minutes"] = None
    return cfg


def per_frame_errors(potential, structures: Sequence[Any], batch_size: int = 32) -> Dict[str, Any]:
    """Per-structure test errors of a potential, for bootstraps over frames.

    Args:
        potential: a `qallegro.potential.Potential` (its shifts are the trained ones).
        structures: the test structures, in order.
        batch_size: structures per evaluation batch.

    Returns:
        {"energy_abs_error": (n,) ``|E_pred - E|`` in meV, "forces_abs_sum": (n,) sum over atoms and components of
        ``|F_pred - F|`` in meV/Å, or None without force labels, "forces_count": (n,) number of force components
        (3 · atoms), "n_atoms": (n,), "fingerprint": SHA-1 of the reference energies (which frames these are)}.
        The forces MAE of any subset of frames is sum(forces_abs_sum) / sum(forces_count).
    """
    from qallegro.data.loader import make_loader
    from qallegro.train.config import TrainConfig
    from qallegro.train.evaluation import evaluate
    from qallegro.train.step import make_steps

    cfg = TrainConfig(eval_batch_size=batch_size)
    loader = make_loader(structures, potential.r_max, potential.species, batch_size)
    eval_step = make_steps(potential.model, cfg, compute_stress=False).eval_step
    _, pred = evaluate(eval_step, potential.params, loader, cfg, return_predictions=True)
    n_atoms = np.asarray(pred["n_atoms"], int)
    energy_true = np.asarray(pred["energy_true"], float)
    out = {"energy_abs_error": 1000.0 * np.abs(np.asarray(pred["energy_pred"], float) - energy_true),
           "n_atoms": n_atoms, "forces_abs_sum": None, "forces_count": 3 * n_atoms,
           "fingerprint": hashlib.sha1(np.round(energy_true, 5).tobytes()).hexdigest()[:16]}
    diff = 1000.0 * np.abs(np.asarray(pred["forces_pred"], float) - np.asarray(pred["forces_true"], float))
    if len(diff) and len(diff) == int(n_atoms.sum()):
        per_atom = diff.sum(axis=1)
        out["forces_abs_sum"] = np.add.reduceat(per_atom, np.concatenate([[0], np.cumsum(n_atoms)[:-1]]))
    return out


def read_history(path: str) -> List[Dict[str, float]]:
    """The rows of a run's metrics.csv as floats (only `HISTORY_KEYS`)."""
    with open(path) as f:
        return [{k: float(row[k]) for k in HISTORY_KEYS if row.get(k) not in (None, "")} for row in csv.DictReader(f)]


def _rounded(values, digits: int = 4):
    return None if values is None else [round(float(v), digits) for v in np.asarray(values)]


def final_run(plan: StudyPlan, layout: StudyLayout, stage: str, dataset: str, family: str, seed: int,
              selection: Mapping[str, Any], source: str, command: str = "",
              log: Callable[[str], None] = print) -> Dict[str, Any]:
    """Train (or resume, or skip) one final run and return its committed results.

    Args:
        plan, layout: the study.
        stage: "compare" or "transfer".
        dataset, family: where and what.
        seed: the run's seed (split, initialisation, shuffling).
        selection: the selected configuration (`qallegro.study.select`), its ``params`` applied unchanged.
        source: the dataset the configuration was searched on (the transfer's source, or `dataset`).
        command: the study command, recorded.
        log: where progress lines go.

    Returns:
        The results dict written to RESULTS/STAGE/DATASET/FAMILY/seedS/results.json.

    Raises:
        FileNotFoundError, ValueError, FloatingPointError: as `qallegro.train.run.run_training`.
    """
    from qallegro.data.readers import read_structures
    from qallegro.hpo.objective import InferenceTimer
    from qallegro.potential import load as load_potential
    from qallegro.train.config import DatasetConfig
    from qallegro.train.run import load_splits, run_training, write_json

    final = layout.run_dir(stage, dataset, family, seed)
    results_path = os.path.join(final, "results.json")
    epochs = plan.compare.epochs[dataset]
    extend_from = None
    if os.path.exists(results_path):
        with open(results_path) as f:
            committed = json.load(f)
        if committed.get("planned_epochs", epochs) >= epochs:
            return committed
        extend_from = committed["planned_epochs"]
    params = dict(selection["params"])
    cfg = run_config(plan, dataset, family, params, epochs)
    work = layout.work_dir(stage, dataset, family, seed)
    os.makedirs(work, exist_ok=True)
    started = time.perf_counter()
    done = all(os.path.exists(os.path.join(work, f)) for f in ("results.json", "potential.qallegro"))
    if done:
        with open(os.path.join(work, "results.json")) as f:
            done = json.load(f)["training"].get("max_epochs") == epochs  # else: trained for fewer epochs
    resume = not done and os.path.isdir(os.path.join(work, "checkpoints", "last"))
    log(f"{stage} {dataset} {family} seed {seed}: {epochs} epochs in {work}"
        + (f" (extending the committed {extend_from} epochs)" if extend_from else "")
        + (" (resuming from its checkpoint)" if resume else " (training finished, evaluating)" if done else ""))
    if done:
        with open(os.path.join(work, "results.json")) as f:
            trained = json.load(f)
    else:
        with open(os.path.join(work, "train.log"), "a") as logfile:
            trained = run_training(cfg, work, seed=seed, resume=resume, title=f"{dataset} / {family} / seed {seed}",
                                   log=lambda s: print(s, file=logfile, flush=True))
    potential = load_potential(os.path.join(work, "potential.qallegro"))
    _, _, test = load_splits(DatasetConfig.from_dict(cfg["dataset"]), seed)
    frames = per_frame_errors(potential, test, int(cfg["training"].get("eval_batch_size", 32)))
    base = plan.datasets[dataset].run_config()
    base["model"]["family"] = family
    data = base["dataset"]
    n_timing = plan.hpo.timing_structures

    def timing_set():  # read only when this architecture was never timed (the search timed the searched ones)
        return read_structures(data["train"], **(data.get("read") or {}))[:n_timing]

    timer = InferenceTimer(base, timing_set, cache_path=layout.timing_cache(dataset), seed=plan.hpo.seed, log=log,
                           n_structures=n_timing)
    timing = timer.record(params)
    history = read_history(os.path.join(work, "metrics.csv"))
    metric = "val_" + plan.datasets[dataset].error_metric
    convergence = check_convergence(history, metric, plan.convergence)
    os.makedirs(final, exist_ok=True)
    potential_file = None
    if seed == 0:
        shutil.copyfile(os.path.join(work, "potential.qallegro"), os.path.join(final, "potential.qallegro"))
        potential_file = "potential.qallegro"
    results = {
        "stage": stage, "dataset": dataset, "family": family, "seed": seed, "source": source,
        "selection": {k: selection.get(k) for k in ("rule", "study", "trial", "params", "values", "error_metric")},
        "error_metric": plan.datasets[dataset].error_metric, "epochs": trained["epochs"],
        "planned_epochs": epochs, "extended_from_epochs": extend_from, "best_epoch": trained["best_epoch"],
        "train_minutes": trained["train_minutes"],
        "session_wall_minutes": (time.perf_counter() - started) / 60.0, "resumed": resume,
        "n_parameters": trained["n_parameters"], "n_train": trained["n_train"], "n_val": trained["n_val"],
        "n_test": trained["n_test"], "validation": trained["validation"], "test": trained["test"],
        "test_frames": {"energy_abs_error": _rounded(frames["energy_abs_error"]),
                        "forces_abs_sum": _rounded(frames["forces_abs_sum"]),
                        "forces_count": [int(c) for c in frames["forces_count"]],
                        "fingerprint": frames["fingerprint"]},
        "inference": {k: timing.get(k) for k in ("median_ms_per_structure", "p10_ms_per_batch", "p90_ms_per_batch",
                                                 "n_structures", "load_average", "cpu", "device")},
        "convergence": convergence, "history": history, "model_config": trained.get("model_config"),
        "config": cfg, "potential": potential_file, "command": command,
        "machine": {"platform": platform.platform(), "node": platform.node(), "cpus": os.cpu_count(),
                    "load_average": os.getloadavg()[0]},
    }
    write_json(results_path, results)  # last: its presence marks the run as done
    log(f"{stage} {dataset} {family} seed {seed}: test {plan.datasets[dataset].error_metric} "
        f"{results['test'][plan.datasets[dataset].error_metric]:.2f}, converged: {convergence['met']}"
        + (f" ({convergence['reason']})" if not convergence["met"] else ""))
    return results
