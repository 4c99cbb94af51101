"""Running a study: storage with heartbeats, samplers by name, and a worker loop that several processes (on one
machine or many, against one RDB storage) can run at once to finish a budget of N completed trials together.

Resume: a worker that is killed leaves its trial RUNNING. With heartbeats on, once the trial's heartbeat is older
than the grace period any worker marks it FAIL and re-enqueues the same parameters (Optuna's
RetryHeartbeatStaleTrialCallback), so re-running the same command finishes the study with no configuration lost,
and the budget counts completed trials only, so none is counted twice.
"""

from __future__ import annotations

import contextlib
import os
import time
import warnings
from typing import Any, Callable, Dict, Iterator, Optional, Sequence

import optuna
from optuna.distributions import BaseDistribution
from optuna.exceptions import ExperimentalWarning
from optuna.trial import Trial, TrialState

from qallegro.errors import StorageError
from qallegro.hpo.optuna_compat import HeartbeatStorage, is_heartbeat_enabled, reseed_for_trial, study_storage
from qallegro.hpo.samo_cobra import SamoCobraSampler

SAMPLERS = ("samo-cobra", "nsga2", "tpe", "random")


class _SeededPerTrial:
    """Optuna sampler mixin: the random state is seeded from (seed, trial number) before every trial, so the
    proposals are reproducible yet differ between the workers of one study (which all get the same seed) and
    across a restart (a new process would otherwise replay the proposals of the first trials)."""

    def __init__(self, *args: Any, seed: int, **kwargs: Any):
        super().__init__(*args, seed=seed, **kwargs)
        self._trial_seed_base = seed

    def before_trial(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        super().before_trial(study, trial)
        reseed_for_trial(self, self._trial_seed_base, trial.number)


class RandomSampler(_SeededPerTrial, optuna.samplers.RandomSampler):
    """Optuna's RandomSampler, seeded per trial (`_SeededPerTrial`)."""


class TPESampler(_SeededPerTrial, optuna.samplers.TPESampler):
    """Optuna's TPESampler, seeded per trial (`_SeededPerTrial`)."""


class NSGAIISampler(_SeededPerTrial, optuna.samplers.NSGAIISampler):
    """Optuna's NSGAIISampler, seeded per trial (`_SeededPerTrial`)."""


def make_sampler(name: str, search_space: Dict[str, BaseDistribution], seed: int,
                 n_initial: Optional[int] = None) -> optuna.samplers.BaseSampler:
    """A sampler by CLI name: "samo-cobra", "nsga2", "tpe" or "random" (all seeded; the Optuna ones per trial,
    from (seed, trial number), so several workers of one study do not propose the same parameters).

    `n_initial` sets SAMO-COBRA's design size and TPE's number of startup trials; NSGA-II uses a population of
    max(n_initial, 10) (its default of 50 would be a single generation at the budgets of an expensive study).

    Raises:
        ValueError: unknown name.
    """
    if name == "samo-cobra":
        return SamoCobraSampler(search_space, n_initial=n_initial, seed=seed)
    if name == "nsga2":
        return NSGAIISampler(population_size=max(n_initial or len(search_space) + 1, 10), seed=seed)
    if name == "tpe":
        return TPESampler(n_startup_trials=n_initial or 10, multivariate=True, seed=seed)
    if name == "random":
        return RandomSampler(seed=seed)
    raise ValueError(f"unknown sampler {name!r}; known: {list(SAMPLERS)}")


def _user_attr(study: optuna.Study, number: int, key: str) -> Any:
    """The current value of user attribute `key` of trial `number` (read afresh from the storage)."""
    return study.get_trials(deepcopy=False)[number].user_attrs.get(key)


def storage_url(value: str) -> str:
    """A storage URL as given, or ``sqlite:///ABSOLUTE_PATH`` for a plain file path (e.g. ``study.db``)."""
    return value if "://" in value else f"sqlite:///{os.path.abspath(value)}"


def _shown(url: str) -> str:
    """`url` for a message: a SQLite URL as its file path, any other with its password hidden."""
    if url.startswith("sqlite:///"):
        return url[len("sqlite:///"):]
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # unparseable: shown as given
        return url


@contextlib.contextmanager
def storage_errors(url: str) -> Iterator[None]:
    """Turn SQLAlchemy's and Optuna's storage exceptions raised inside the block into a `StorageError` that
    names the URL (or the SQLite file) and says what is wrong with it.

    Raises:
        StorageError: an unknown scheme (no SQLAlchemy dialect), a malformed URL, a database that cannot be
            opened or reached, or a file that is not an intact study database.
    """
    import sqlalchemy.exc

    try:
        yield
    except sqlalchemy.exc.NoSuchModuleError as err:
        scheme = url.split("://", 1)[0]
        raise StorageError(f"unknown storage URL {_shown(url)!r}: no database driver for {scheme!r} (use "
                           f"sqlite:///FILE.db, a plain FILE.db path or postgresql://user@host/db)") from err
    except sqlalchemy.exc.ArgumentError as err:
        raise StorageError(f"malformed storage URL {_shown(url)!r}: {err}") from err
    except (sqlalchemy.exc.SQLAlchemyError, optuna.exceptions.StorageInternalError) as err:
        reason = (str(getattr(err, "orig", None) or err).strip().splitlines() or [type(err).__name__])[0]
        what = "study database" if url.startswith("sqlite") else "study storage"
        raise StorageError(f"{what} {_shown(url)} cannot be used: {reason}") from err


def make_storage(url: str, heartbeat_interval: int = 60,
                 grace_period: Optional[int] = None) -> optuna.storages.RDBStorage:
    """An Optuna RDB storage (sqlite:///file.db, postgresql://user@host/db, ...) with heartbeats, and stale
    trials retried with their parameters.

    Args:
        url: SQLAlchemy URL.
        heartbeat_interval: seconds between a running trial's heartbeats.
        grace_period: seconds without a heartbeat after which a trial counts as dead (default 2 intervals + 10).

    Several workers may open a new, empty database at the same moment: the one that loses the race to create
    its tables opens it again (`_schema_race`; up to 6 attempts within a few seconds).

    Raises:
        StorageError: the URL or the database cannot be used (see `storage_errors`).
    """
    import random

    attempt = 0
    while True:
        try:
            with warnings.catch_warnings(), storage_errors(url):
                warnings.simplefilter("ignore", ExperimentalWarning)
                return HeartbeatStorage(
                    url, heartbeat_interval=heartbeat_interval,
                    grace_period=grace_period if grace_period is not None else 2 * heartbeat_interval + 10,
                    heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=3),
                    # SQLite: wait up to a minute for another worker's write lock instead of failing after 5 s.
                    engine_kwargs=({"connect_args": {"timeout": 60}} if url.startswith("sqlite")
                                   else {"pool_pre_ping": True}))
        except StorageError as err:
            attempt += 1
            if attempt >= _SCHEMA_ATTEMPTS or not _schema_race(err.__cause__):
                raise
            time.sleep(0.2 * attempt + 0.3 * random.random())


#: attempts to open a storage whose tables another worker is creating at the same moment
_SCHEMA_ATTEMPTS = 6


def _schema_race(err: Optional[BaseException]) -> bool:
    """Whether a storage error is two workers creating a new database's tables at once: Optuna's RDBStorage
    creates the tables and stamps the schema version (alembic) unguarded, so the second of two workers started
    together on an empty database fails (SQLite: "UNIQUE constraint failed: alembic_version.version_num" or
    "table ... already exists"; PostgreSQL: a duplicate key or relation). Opening it again then finds the
    tables."""
    import sqlalchemy.exc

    if isinstance(err, optuna.exceptions.StorageInternalError):
        err = err.__cause__
    if isinstance(err, sqlalchemy.exc.IntegrityError):
        return True
    text = str(getattr(err, "orig", None) or err).lower()
    return isinstance(err, sqlalchemy.exc.DBAPIError) and ("already exists" in text or "duplicate" in text)


def _counts(study: optuna.Study, below: Optional[int] = None) -> Dict[TrialState, int]:
    counts = {state: 0 for state in TrialState}
    for t in study.get_trials(deepcopy=False):
        if below is None or t.number < below:
            counts[t.state] += 1
    return counts


def skip_if_duplicate(trial: Trial, timeout: float = 120.0, poll_seconds: float = 0.05) -> None:
    """Call in an objective right after its `suggest_*` calls: raise TrialPruned when another trial with the
    same parameters is complete, queued, or running and wins the claim below. A configuration is never
    trained twice, even when the samplers of two workers propose it at the same moment.

    The claim (user attribute "dedupe"): write "intent", read the other trials, then write "pass" or "yield".
    A trial yields to a complete, waiting or passed twin and to a twin with a lower number that has stated its
    intent; a trial that sees a twin with a higher number stating its intent waits for that twin's decision and
    yields if it passed. Since each trial writes before it reads, at least one of two twins sees the other, and
    exactly one goes on.
    """
    live = (TrialState.COMPLETE, TrialState.RUNNING, TrialState.WAITING)

    def give_way(other):
        trial.set_user_attr("dedupe", "yield")
        raise optuna.TrialPruned(f"same parameters as trial {other.number}")

    trial.set_user_attr("dedupe", "intent")
    for other in trial.study.get_trials(deepcopy=False, states=live):
        if other.number == trial.number or other.params != trial.params:
            continue
        state = other.user_attrs.get("dedupe")
        if other.state != TrialState.RUNNING or state == "pass":
            give_way(other)
        if state == "intent":
            if other.number < trial.number:
                give_way(other)
            deadline = time.monotonic() + timeout
            while state == "intent" and time.monotonic() < deadline:
                time.sleep(poll_seconds)
                state = _user_attr(trial.study, other.number, "dedupe")
            if state in ("pass", "intent"):  # "intent" after the timeout: a dead twin; its retry will yield
                give_way(other)
    trial.set_user_attr("dedupe", "pass")


def run_worker(study: optuna.Study, objective: Callable[[Trial], Sequence[float]], n_trials: int,
               max_failures: Optional[int] = None, poll_seconds: float = 1.0,
               log: Callable[[str], None] = print) -> int:
    """Run trials until the study holds `n_trials` COMPLETE trials (counting every worker's), then return.

    A trial that raises is recorded FAIL with the reason in its user attribute "failure" and the study goes on.
    When the remaining budget is taken by other workers' running trials, this worker waits for them (and takes
    over their trials if they die: see the module docstring) instead of starting surplus trials.

    Args:
        study: an Optuna study (its storage shared by all workers).
        objective: trial -> objective values.
        n_trials: number of completed trials the study should end with.
        max_failures: stop once this many trials have failed since this worker started (default n_trials), so
            a configuration error does not loop forever, while a search resumed after a fix is not stopped by
            the failures from before it.
    Returns:
        The number of trials this worker ran.
    Raises:
        RuntimeError: too many failed trials (names the last failure).
    """
    max_failures = n_trials if max_failures is None else max_failures
    first_trial = len(study.get_trials(deepcopy=False))  # failures before this worker started do not count

    def guarded(trial: Trial):
        # Surplus check: another worker may have started the last trials of the budget a moment ago.
        before = _counts(study, below=trial.number)
        if before[TrialState.COMPLETE] + before[TrialState.RUNNING] + before[TrialState.WAITING] >= n_trials:
            raise optuna.TrialPruned("budget of the study already allotted to other trials")
        try:
            return objective(trial)
        except optuna.TrialPruned:
            raise
        except Exception as err:  # recorded, then Optuna marks the trial FAIL and the study goes on
            trial.set_user_attr("failure", f"{type(err).__name__}: {err}"[:2000])
            raise

    ran = 0
    while True:
        if is_heartbeat_enabled(study_storage(study)):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ExperimentalWarning)
                optuna.storages.fail_stale_trials(study)
        counts = _counts(study)
        complete, running, waiting = counts[TrialState.COMPLETE], counts[TrialState.RUNNING], counts[TrialState.WAITING]
        if complete >= n_trials:
            return ran
        failed = [t for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,)) if t.number >= first_trial]
        if len(failed) >= max_failures:
            reason = failed[-1].user_attrs.get("failure", "stale or unknown")
            raise RuntimeError(f"study {study.study_name!r}: {len(failed)} failed trials (limit {max_failures}); "
                               f"last failure (trial {failed[-1].number}): {reason}")
        if complete + running + waiting >= n_trials and not waiting:
            time.sleep(poll_seconds)  # the rest of the budget is running elsewhere
            continue
        study.optimize(guarded, n_trials=1, catch=(Exception,))
        ran += 1
        last = study.trials[-1]
        if last.state == TrialState.FAIL:
            log(f"trial {last.number} failed: {last.user_attrs.get('failure', '?')}")


def set_by_path(cfg: Dict[str, Any], params: Dict[str, Any]) -> Dict[str, Any]:
    """Apply dotted parameters ("model.r_max", "training.learning_rate") to a copy of a nested config.

    "<section>.<name>_mlp_width" together with "<section>.<name>_mlp_depth" set the list "<section>.<name>_mlp"
    to [width] * depth (hidden layers: e.g. model.latent_mlp_width + model.latent_mlp_depth -> latent_mlp).

    Raises:
        ValueError: a name without a section, a width without its depth (or the reverse), or an unknown section.
    """
    import copy

    out = copy.deepcopy(cfg)
    widths: Dict[str, Any] = {}
    for name, value in params.items():
        if "." not in name:
            raise ValueError(f"parameter {name!r} must be '<section>.<key>', e.g. model.r_max")
        section, key = name.split(".", 1)
        if section not in out or not isinstance(out[section], dict):
            raise ValueError(f"parameter {name!r}: the config has no section {section!r}")
        if key.endswith("_mlp_width") or key.endswith("_mlp_depth"):
            widths.setdefault((section, key.rsplit("_", 1)[0]), {})[key.rsplit("_", 1)[1]] = value
        else:
            out[section][key] = value
    for (section, key), wd in widths.items():
        if set(wd) != {"width", "depth"}:
            raise ValueError(f"{section}.{key}_width and {section}.{key}_depth must be searched together")
        out[section][key] = [int(wd["width"])] * int(wd["depth"])
    return out


def enqueue_transfer(study: optuna.Study, source_url: str, source_name: Optional[str],
                     space: Dict[str, BaseDistribution]) -> int:
    """Enqueue the Pareto-optimal configurations of a finished study (once) into `study`: the seed paper's
    transfer of Cu–Li hyperparameters to the other data sets.

    Args:
        study: the study on the new data set.
        source_url: Optuna storage URL of the finished study.
        source_name: its study name (None: the storage's only study).
        space: this study's search space; the source must have a value for each of its parameters.

    Returns:
        The number of trials to complete (one per transferred configuration).

    Raises:
        ValueError: several studies in the storage and no name, no completed source trial, or parameters of
            `space` that the source lacks (named).
        StorageError: no such study database, or one that cannot be used.
    """
    source_url = storage_url(source_url)
    if source_url.startswith("sqlite:///") and not os.path.isfile(source_url[len("sqlite:///"):]):
        raise StorageError(f"no study database {source_url[len('sqlite:///'):]} to transfer from")
    with storage_errors(source_url):
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
