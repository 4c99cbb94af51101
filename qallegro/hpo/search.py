"""One multi-objective search, end to end: storage, sampler, the exact inference-time objective, the worker loop
and the report. The workflow behind both ``python -m experiments.run hpo`` and the study's HPO stage
(`qallegro.study`).

Objectives, both minimised: validation forces MAE (meV/Å; energy MAE in meV for data without forces) and
inference time (median ms per structure), measured before training and cached per architecture
(`qallegro.hpo.objective.InferenceTimer`). With SAMO-COBRA the same timer is given to the sampler as an
inexpensive objective (IOC-SAMO-COBRA; de Winter, van Stein, Bäck, Memetic Computing 14, 2022) and an optional
inference-time ceiling as an exact constraint ``t(params) - ceiling <= 0``; other samplers get the same
objective values, and configurations over the ceiling are pruned before they train.

Resume: re-running `run_search` with the same storage continues the study until `SearchSettings.n_trials`
trials are complete (see `qallegro.hpo.study.run_worker`).
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from typing import Any, Callable, Dict, Mapping, Optional, Sequence

import optuna
from optuna.distributions import BaseDistribution

from qallegro.hpo.study import SAMPLERS


@dataclasses.dataclass(frozen=True)
class SearchSettings:
    """How one search runs.

    Attributes:
        sampler: "samo-cobra", "nsga2", "tpe" or "random".
        n_trials: completed trials the study should hold (all workers together).
        n_initial: initial design size (SAMO-COBRA; TPE startup trials); None: parameters + 1.
        seed: seed of the sampler, the data split and the models.
        heartbeat_seconds: seconds between trial heartbeats; a trial silent for 2 beats + 10 s is retried.
        timing_structures: structures in the fixed inference-timing batch (the first of the training file).
        cheap_inference: give SAMO-COBRA the inference time as an exact inexpensive objective (other samplers
            ignore it).
        cheap_budget: new exact timings SAMO-COBRA may make per proposal (each compiles a model: seconds), see
            `qallegro.hpo.samo_cobra.SamoCobraSampler`; None: unlimited.
        inference_ceiling_ms: optional ceiling on the inference time in ms per structure, an exact constraint.

    Raises:
        ValueError: an unknown sampler, n_trials < 1, n_initial < 1, timing_structures < 1, or a ceiling <= 0.
    """

    sampler: str = "samo-cobra"
    n_trials: int = 16
    n_initial: Optional[int] = None
    seed: int = 0
    heartbeat_seconds: int = 30
    timing_structures: int = 10
    cheap_inference: bool = True
    cheap_budget: Optional[int] = 4
    inference_ceiling_ms: Optional[float] = None

    def __post_init__(self):
        if self.sampler not in SAMPLERS:
            raise ValueError(f"unknown sampler {self.sampler!r}; known: {list(SAMPLERS)}")
        if self.n_trials < 1 or (self.n_initial is not None and self.n_initial < 1):
            raise ValueError(f"n_trials and n_initial must be >= 1, got {self.n_trials} and {self.n_initial}")
        if self.timing_structures < 1:
            raise ValueError(f"timing_structures must be >= 1, got {self.timing_structures}")
        if self.inference_ceiling_ms is not None and not self.inference_ceiling_ms > 0:
            raise ValueError(f"inference_ceiling_ms must be > 0 ms, got {self.inference_ceiling_ms}")


def load_space(path: str) -> Dict[str, BaseDistribution]:
    """The search space of a YAML file (`qallegro.hpo.space.space_from_yaml`).

    Raises:
        FileNotFoundError: no such file.
        ValueError: a malformed space (names the parameter and the file).
    """
    import yaml

    from qallegro.hpo.space import space_from_yaml

    if not os.path.exists(path):
        raise FileNotFoundError(f"search space file not found: {path}")
    with open(path) as f:
        spec = yaml.safe_load(f)
    try:
        return space_from_yaml(spec or {})
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from err


def build_sampler(space: Mapping[str, BaseDistribution], settings: SearchSettings,
                  timer: Optional[Callable[[Dict[str, Any]], float]] = None) -> optuna.samplers.BaseSampler:
    """The sampler of `settings`; SAMO-COBRA with the timer as the exact objective 1 and the ceiling as an exact
    constraint ``timer(params) - ceiling <= 0`` (IOC-SAMO-COBRA) when `timer` is given."""
    from qallegro.hpo.samo_cobra import SamoCobraSampler
    from qallegro.hpo.study import make_sampler

    if settings.sampler != "samo-cobra" or timer is None or not settings.cheap_inference:
        return make_sampler(settings.sampler, dict(space), seed=settings.seed, n_initial=settings.n_initial)
    ceiling = settings.inference_ceiling_ms
    constraints = {"inference_ceiling": lambda p: timer(p) - ceiling} if ceiling is not None else None
    return SamoCobraSampler(dict(space), n_initial=settings.n_initial, seed=settings.seed,
                            cheap_objectives={1: timer}, cheap_constraints=constraints,
                            cheap_budget=settings.cheap_budget)


def open_study(url: str, name: str, sampler: optuna.samplers.BaseSampler, heartbeat_seconds: int = 30,
               user_attrs: Optional[Mapping[str, Any]] = None) -> optuna.Study:
    """Create or load the two-objective study `name` in the storage `url` (heartbeats on; both minimised)."""
    from qallegro.hpo.study import make_storage

    storage = make_storage(url, heartbeat_interval=heartbeat_seconds)
    study = optuna.create_study(storage=storage, study_name=name, directions=["minimize", "minimize"],
                                sampler=sampler, load_if_exists=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names(["error", "inference_ms"])
    for key, value in (user_attrs or {}).items():
        if study.user_attrs.get(key) != value:
            study.set_user_attr(key, value)
    return study


def run_search(base_cfg: Dict[str, Any], space: Mapping[str, BaseDistribution], out: str,
               settings: SearchSettings = SearchSettings(), storage: Optional[str] = None,
               study_name: str = "study", trials_dir: Optional[str] = None, timing_cache: Optional[str] = None,
               timing_set: Optional[Sequence[Any]] = None, command: str = "",
               transfer_from: Optional[str] = None, transfer_study: Optional[str] = None,
               report_only: bool = False, user_attrs: Optional[Mapping[str, Any]] = None,
               log: Callable[[str], None] = print) -> Dict[str, Any]:
    """Run (or resume) a search until `settings.n_trials` trials are complete, then write its report.

    Args:
        base_cfg: the resolved run config whose ``<section>.<key>`` entries the trials' parameters override; its
            model family is the family searched, its training budget the per-trial budget.
        space: parameter name -> Optuna distribution.
        out: the study directory: pareto.png, hypervolume.png, pareto.md, study.json, trials.log (and study.db
            unless `storage` is given).
        settings: sampler, budget and timing settings.
        storage: Optuna storage URL or sqlite file (default OUT/study.db).
        study_name: the study's name in the storage.
        trials_dir: where trials train (default OUT/trials); checkpoints there let a retried trial resume.
        timing_cache: JSON file of the inference timings per architecture (default: in memory only).
        timing_set: the timing structures (default: the first `settings.timing_structures` of the training file).
        command: the command line, recorded in the report.
        transfer_from, transfer_study: train the Pareto-optimal configurations of that finished study instead of
            searching (`qallegro.hpo.study.enqueue_transfer`).
        report_only: only redraw the report.
        user_attrs: study attributes to record (dataset, model, ...).
        log: where progress lines go.

    Returns:
        The report summary (`qallegro.hpo.report.write_report`).

    Raises:
        RuntimeError: too many failed trials, or no completed trial to report.
        FileNotFoundError, ValueError: bad data or config (named).
    """
    from qallegro.data.readers import read_structures
    from qallegro.hpo.objective import InferenceTimer, make_objective
    from qallegro.hpo.report import write_report
    from qallegro.hpo.study import enqueue_transfer, storage_url

    os.makedirs(out, exist_ok=True)
    url = storage_url(storage or os.path.join(out, "study.db"))
    timer = None
    if not report_only:
        data, n = base_cfg["dataset"], settings.timing_structures
        if timing_set is None:  # read when the first uncached architecture is timed (a resumed study may need none)
            timer = InferenceTimer(base_cfg, lambda: read_structures(data["train"], **(data.get("read") or {}))[:n],
                                   cache_path=timing_cache, seed=settings.seed, log=log, n_structures=n)
        else:
            timer = InferenceTimer(base_cfg, timing_set, cache_path=timing_cache, seed=settings.seed, log=log)
    sampler = build_sampler(space, settings, timer)
    study = open_study(url, study_name, sampler, settings.heartbeat_seconds, user_attrs)
    n_trials = settings.n_trials
    if transfer_from:
        n_trials = enqueue_transfer(study, transfer_from, transfer_study, dict(space))
    if not report_only:
        from qallegro.hpo.study import run_worker

        objective = make_objective(base_cfg, dict(space), out, settings.seed, (), log=log, timer=timer,
                                   trials_dir=trials_dir, inference_ceiling_ms=settings.inference_ceiling_ms)
        log(f"study {study_name!r} in {url}: {len(study.trials)} trials so far; target {n_trials} completed; "
            f"{len(space)} parameters; sampler {settings.sampler}")
        run_worker(study, objective, n_trials, log=log)
    return write_report(study, out, command, source=transfer_from)
