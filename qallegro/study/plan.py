"""The study plan: a typed, validated record of everything the study runs, loaded from YAML.

A plan names the datasets (each a dataset config file, its profile, and overrides such as training-set subsets
and model sizes), which families get a hyperparameter search on which dataset, the search budget, the rule that
picks each family's configuration from its front, the compare stage's epochs and seeds, the transfer of one
family's configuration from one dataset to the others, the convergence criterion, the bootstrap, the finite-shot
evaluation, and measured costs from which `qallegro.study.cost.estimate` computes the compute the plan needs.

Relative paths inside the plan file (dataset configs, search spaces) are relative to the plan file; the output
folders are relative to the working directory (the repository root, where the command runs).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Dict, Mapping, Optional, Tuple

from qallegro.config import read_yaml

FAMILIES = ("allegro", "allegro-mlp", "allegro-qdi")
#: the family every difference is taken against
BASELINE = "allegro"
ERROR_METRICS = ("forces_mae", "energy_mae")


class PlanError(ValueError):
    """A study plan that cannot be used; the message names the file and the entry."""


def _known(section: str, d: Mapping[str, Any], allowed) -> None:
    unknown = sorted(set(d) - set(allowed))
    if unknown:
        raise PlanError(f"unknown {section} option(s) {unknown}; known: {sorted(allowed)}")


def _per_dataset(value: Any, datasets, name: str, cast=int) -> Dict[str, Any]:
    """A number for every dataset (or family): one value for all, or {name: value} naming each."""
    if isinstance(value, Mapping):
        missing = sorted(set(datasets) - set(value))
        extra = sorted(set(value) - set(datasets))
        if missing or extra:
            raise PlanError(f"{name}: {'no value for ' + str(missing) if missing else ''}"
                            f"{'; ' if missing and extra else ''}{'unknown names ' + str(extra) if extra else ''}")
        return {d: None if value[d] is None else cast(value[d]) for d in datasets}
    return {d: None if value is None else cast(value) for d in datasets}


@dataclasses.dataclass(frozen=True)
class DatasetPlan:
    """One dataset of the study.

    Attributes:
        name: the dataset's name in the study (e.g. ``rmd17-aspirin``).
        config: absolute path of its dataset config file (`qallegro.config.load_config_file`).
        profile: the profile of that file (``cpu`` or ``paper``).
        overrides: merged over the profile: ``dataset`` (subset sizes), ``model`` (sizes), ``training``.
        error_metric: what the search minimises and the claims compare: ``forces_mae`` (meV/Å), or
            ``energy_mae`` (meV) for data without forces (QM9).
    """

    name: str
    config: str
    profile: str
    overrides: Dict[str, Any]
    error_metric: str = "forces_mae"

    def run_config(self) -> Dict[str, Any]:
        """The resolved run config {"dataset", "dtype", "model", "training"} with the overrides merged."""
        from qallegro.config import deep_update, load_config_file, resolve_data_paths

        cfg = load_config_file(self.config, self.profile)
        overrides = {k: dict(v) if isinstance(v, Mapping) else v for k, v in self.overrides.items()}
        if "dataset" in overrides:
            resolve_data_paths(overrides["dataset"], os.path.dirname(self.config))
        return deep_update(cfg, overrides)


@dataclasses.dataclass(frozen=True)
class HpoPlan:
    """The hyperparameter searches (SAMO-COBRA of the error metric against inference time).

    Attributes:
        studies: family -> the datasets it is searched on.
        spaces: family -> absolute path of its search-space YAML.
        sampler: an Optuna sampler name of `qallegro.hpo.study.SAMPLERS`.
        n_trials: family -> completed trials per search of that family.
        n_initial: the initial design (None: parameters + 1).
        trial_epochs: dataset -> epochs per trial.
        seed: sampler, split and initialisation seed of every trial.
        timing_structures: structures in the fixed inference-timing batch.
        cheap_budget: new exact timings per SAMO-COBRA proposal.
        inference_ceiling_ms: dataset -> optional ceiling (ms per structure), an exact constraint.
        heartbeat_seconds: trial heartbeat; a dead trial is retried after 2 beats + 10 s.
    """

    studies: Dict[str, Tuple[str, ...]]
    spaces: Dict[str, str]
    sampler: str
    n_trials: Dict[str, int]
    n_initial: Optional[int]
    trial_epochs: Dict[str, int]
    seed: int = 0
    timing_structures: int = 10
    cheap_budget: Optional[int] = 4
    inference_ceiling_ms: Dict[str, Optional[float]] = dataclasses.field(default_factory=dict)
    heartbeat_seconds: int = 30

    def pairs(self):
        """(dataset, family) of every search, datasets in plan order."""
        return [(d, f) for f in self.studies for d in self.studies[f]]


@dataclasses.dataclass(frozen=True)
class SelectionRule:
    """How a family's configuration is picked from its search.

    ``lowest_error``: the completed trial with the lowest validation error (always on the Pareto front), among
    those at most `max_inference_ms` when that is set.
    """

    rule: str = "lowest_error"
    max_inference_ms: Optional[float] = None


@dataclasses.dataclass(frozen=True)
class ComparePlan:
    """The final runs: every selected configuration for `epochs[dataset]` epochs (the same for every family of
    that dataset) and seeds 0 .. seeds-1; the test split is used only here."""

    seeds: int
    epochs: Dict[str, int]


@dataclasses.dataclass(frozen=True)
class TransferPlan:
    """The configuration of `family` selected on `source`, unchanged (model and training parameters), trained on
    every dataset of `targets` with the compare stage's seeds and epochs."""

    family: str
    source: str
    targets: Tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class ConvergenceCriterion:
    """One convergence criterion for every run (`qallegro.study.convergence.check`): the best validation error
    improved by less than `tolerance` (relative) over the last `window_fraction` of the epochs, and, with
    `require_lr_reduced`, the learning rate had been reduced by the plateau schedule before the end."""

    window_fraction: float = 0.2
    tolerance: float = 0.02
    require_lr_reduced: bool = True


@dataclasses.dataclass(frozen=True)
class ShotsPlan:
    """The finite-shot evaluation of one final model (beyond the paper): test forces MAE with `shots`
    measurements per circuit, `repeats` noise draws each, and the circuits and shots per MD step of a cell of
    `cell_atoms` atoms."""

    dataset: str = "culi"
    family: str = "allegro-qdi"
    shots: Tuple[int, ...] = (100, 1000, 10000)
    repeats: int = 3
    cell_atoms: int = 64
    test_frames: Optional[int] = None


@dataclasses.dataclass(frozen=True)
class BootstrapPlan:
    """Bootstrap confidence intervals (`qallegro.study.statistics`): `resamples` draws, `seed`, `confidence`."""

    resamples: int = 2000
    seed: int = 0
    confidence: float = 0.95


@dataclasses.dataclass(frozen=True)
class OutputPlan:
    """Default folders, relative to the working directory: committed results, scratch (checkpoints, trial
    runs; not committed) and the report file."""

    results: str = "experiments/results/study"
    scratch: str = "runs/study"
    report: str = "experiments/results/paper.md"


@dataclasses.dataclass(frozen=True)
class StudyPlan:
    """A whole study (see the module docstring). Build with `load_plan`."""

    path: str
    profile: str
    datasets: Dict[str, DatasetPlan]
    hpo: HpoPlan
    selection: SelectionRule
    compare: ComparePlan
    transfer: Optional[TransferPlan]
    convergence: ConvergenceCriterion
    shots: Optional[ShotsPlan]
    bootstrap: BootstrapPlan
    output: OutputPlan
    cost: Dict[str, Any]

    def compare_families(self, dataset: str) -> Tuple[str, ...]:
        """The families whose searched configuration is compared on `dataset` (in FAMILIES order)."""
        return tuple(f for f in FAMILIES if f in self.hpo.studies and dataset in self.hpo.studies[f])

    def restricted(self, datasets) -> "StudyPlan":
        """The plan on a subset of its datasets (searches, runs and transfers on the others dropped; a transfer
        keeps its source, since its configuration is needed).

        Raises:
            PlanError: a dataset the plan does not have.
        """
        unknown = sorted(set(datasets) - set(self.datasets))
        if unknown:
            raise PlanError(f"{self.path}: no dataset(s) {unknown}; the plan has {list(self.datasets)}")
        keep = [d for d in self.datasets if d in datasets]
        studies = {f: tuple(d for d in ds if d in keep) for f, ds in self.hpo.studies.items()}
        transfer = self.transfer
        if transfer is not None:
            transfer = dataclasses.replace(transfer, targets=tuple(d for d in transfer.targets if d in keep))
        return dataclasses.replace(self, hpo=dataclasses.replace(self.hpo, studies={f: d for f, d in studies.items()
                                                                                     if d}),
                                   transfer=transfer, datasets={d: self.datasets[d] for d in keep})


def _resolve(base: str, path: str) -> str:
    return path if os.path.isabs(path) else os.path.normpath(os.path.join(base, path))


def load_plan(path: str) -> StudyPlan:
    """Read and validate a study plan YAML (see experiments/configs/study/cpu.yaml for the layout).

    Raises:
        FileNotFoundError: the plan file or a file it names (dataset config, search space) is missing.
        PlanError: unknown keys, unknown families or datasets, fewer than 3 seeds, non-positive budgets, a
            transfer whose source has no search of its family, and the like (names the entry and the file).
    """
    raw = read_yaml(path)
    base = os.path.dirname(os.path.abspath(path))
    try:
        return _build(raw, base, os.path.abspath(path))
    except PlanError as err:
        raise PlanError(f"{path}: {err}") from None


def _build(raw: Dict[str, Any], base: str, path: str) -> StudyPlan:
    _known("plan", raw, ("profile", "datasets", "hpo", "selection", "compare", "transfer", "convergence", "shots",
                         "bootstrap", "output", "cost"))
    for key in ("profile", "datasets", "hpo", "compare"):
        if key not in raw:
            raise PlanError(f"missing section {key!r}")
    profile = str(raw["profile"])
    datasets = {}
    for name, entry in (raw["datasets"] or {}).items():
        if not isinstance(entry, Mapping) or "config" not in entry:
            raise PlanError(f"datasets.{name} needs `config` (a dataset config file)")
        _known(f"datasets.{name}", entry, ("config", "profile", "overrides", "error_metric"))
        config = _resolve(base, entry["config"])
        if not os.path.exists(config):
            raise FileNotFoundError(f"{path}: datasets.{name}.config: no file {config}")
        metric = entry.get("error_metric", "forces_mae")
        if metric not in ERROR_METRICS:
            raise PlanError(f"datasets.{name}.error_metric must be one of {ERROR_METRICS}, got {metric!r}")
        overrides = dict(entry.get("overrides") or {})
        _known(f"datasets.{name}.overrides", overrides, ("dataset", "model", "training", "dtype"))
        datasets[name] = DatasetPlan(name, config, str(entry.get("profile", profile)), overrides, metric)
    if not datasets:
        raise PlanError("no datasets")
    names = list(datasets)

    h = dict(raw["hpo"])
    _known("hpo", h, ("studies", "spaces", "sampler", "n_trials", "n_initial", "trial_epochs", "seed",
                      "timing_structures", "cheap_budget", "inference_ceiling_ms", "heartbeat_seconds"))
    studies = {}
    for family, ds in (h.get("studies") or {}).items():
        if family not in FAMILIES:
            raise PlanError(f"hpo.studies: unknown family {family!r}; known: {list(FAMILIES)}")
        ds = [ds] if isinstance(ds, str) else list(ds or [])
        unknown = sorted(set(ds) - set(names))
        if unknown:
            raise PlanError(f"hpo.studies.{family}: unknown dataset(s) {unknown}; the plan has {names}")
        studies[family] = tuple(d for d in names if d in ds)
    if BASELINE not in studies:
        raise PlanError(f"hpo.studies must search {BASELINE!r} (the baseline of every comparison)")
    spaces = {}
    for family in studies:
        space = (h.get("spaces") or {}).get(family)
        if space is None:
            raise PlanError(f"hpo.spaces has no search space for {family!r}")
        spaces[family] = _resolve(base, space)
        if not os.path.exists(spaces[family]):
            raise FileNotFoundError(f"{path}: hpo.spaces.{family}: no file {spaces[family]}")
    from qallegro.hpo.study import SAMPLERS

    sampler = h.get("sampler", "samo-cobra")
    if sampler not in SAMPLERS:
        raise PlanError(f"hpo.sampler: unknown {sampler!r}; known: {list(SAMPLERS)}")
    n_trials = _per_dataset(h.get("n_trials", 0), list(studies), "hpo.n_trials")  # one value, or per family
    n_initial = h.get("n_initial")
    if any(n is None or n < 1 for n in n_trials.values()) or (
            n_initial is not None and not 1 <= int(n_initial) <= min(n_trials.values())):
        raise PlanError(f"hpo.n_trials must be >= 1 and 1 <= n_initial <= n_trials, got {n_trials}, {n_initial}")
    trial_epochs = _per_dataset(h.get("trial_epochs"), names, "hpo.trial_epochs")
    if any(e is None or e < 1 for e in trial_epochs.values()):
        raise PlanError(f"hpo.trial_epochs must be >= 1 for every dataset, got {trial_epochs}")
    ceiling = _per_dataset(h.get("inference_ceiling_ms"), names, "hpo.inference_ceiling_ms", float)
    hpo = HpoPlan(studies=studies, spaces=spaces, sampler=sampler, n_trials=n_trials,
                  n_initial=None if n_initial is None else int(n_initial), trial_epochs=trial_epochs,
                  seed=int(h.get("seed", 0)), timing_structures=int(h.get("timing_structures", 10)),
                  cheap_budget=None if h.get("cheap_budget", 4) is None else int(h.get("cheap_budget", 4)),
                  inference_ceiling_ms=ceiling, heartbeat_seconds=int(h.get("heartbeat_seconds", 30)))

    s = dict(raw.get("selection") or {})
    _known("selection", s, ("rule", "max_inference_ms"))
    selection = SelectionRule(**s)
    if selection.rule != "lowest_error":
        raise PlanError(f"selection.rule must be 'lowest_error', got {selection.rule!r}")

    c = dict(raw["compare"])
    _known("compare", c, ("seeds", "epochs"))
    seeds = int(c.get("seeds", 0))
    if seeds < 3:
        raise PlanError(f"compare.seeds must be >= 3 (a spread and a confidence interval over seeds), got {seeds}")
    epochs = _per_dataset(c.get("epochs"), names, "compare.epochs")
    if any(e is None or e < 1 for e in epochs.values()):
        raise PlanError(f"compare.epochs must be >= 1 for every dataset, got {epochs}")
    compare = ComparePlan(seeds=seeds, epochs=epochs)

    transfer = None
    if raw.get("transfer"):
        t = dict(raw["transfer"])
        _known("transfer", t, ("family", "source", "targets"))
        family, source = t.get("family"), t.get("source")
        if source not in studies.get(family, ()):
            raise PlanError(f"transfer: family {family!r} has no search on source dataset {source!r}")
        targets = tuple(t.get("targets") or ())
        unknown = sorted(set(targets) - set(names))
        if unknown or source in targets:
            raise PlanError(f"transfer.targets: unknown dataset(s) {unknown} or the source itself in {targets}")
        transfer = TransferPlan(family=family, source=source, targets=targets)

    conv = dict(raw.get("convergence") or {})
    _known("convergence", conv, ("window_fraction", "tolerance", "require_lr_reduced"))
    convergence = ConvergenceCriterion(**conv)
    if not 0 < convergence.window_fraction < 1 or convergence.tolerance < 0:
        raise PlanError(f"convergence: window_fraction in (0, 1) and tolerance >= 0, got {convergence}")

    shots = None
    if raw.get("shots"):
        sh = dict(raw["shots"])
        _known("shots", sh, ("dataset", "family", "shots", "repeats", "cell_atoms", "test_frames"))
        shots = ShotsPlan(**{**sh, "shots": tuple(int(n) for n in sh.get("shots", (100, 1000, 10000)))})
        if shots.dataset not in names or min(shots.shots) < 1 or shots.repeats < 1:
            raise PlanError(f"shots: dataset must be one of {names}, shots and repeats >= 1, got {shots}")

    b = dict(raw.get("bootstrap") or {})
    _known("bootstrap", b, ("resamples", "seed", "confidence"))
    bootstrap = BootstrapPlan(**b)
    if bootstrap.resamples < 100 or not 0 < bootstrap.confidence < 1:
        raise PlanError(f"bootstrap: resamples >= 100 and confidence in (0, 1), got {bootstrap}")
    o = dict(raw.get("output") or {})
    _known("output", o, ("results", "scratch", "report"))
    return StudyPlan(path=path, profile=profile, datasets=datasets, hpo=hpo, selection=selection, compare=compare,
                     transfer=transfer, convergence=convergence, shots=shots, bootstrap=bootstrap,
                     output=OutputPlan(**o), cost=dict(raw.get("cost") or {}))
