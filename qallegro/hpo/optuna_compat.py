"""Every private Optuna name qallegro uses, in one place (pyproject bounds optuna to >=5.0,<6).

Optuna exposes no public API for these; each use says why it is needed. When Optuna changes one of them, this
is the only module to fix, and the tests of qallegro/hpo fail here first.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import numpy as np
import optuna

# Exact hypervolume (WFG / 2-D sweep) of a point set: SAMO-COBRA's infill criterion and the study reports.
# Public only indirectly (optuna.visualization.plot_hypervolume_history); the function itself is private.
from optuna._hypervolume import compute_hypervolume  # noqa: F401

# The bookkeeping a sampler must call after each trial so that Optuna's constrained multi-objective machinery
# (feasibility in best_trials, plots) sees the constraint values of SAMO-COBRA's constraints_func.
from optuna.samplers._base import _process_constraints_after_trial as process_constraints_after_trial  # noqa: F401

# Whether a storage runs heartbeats (stale trials are then failed and retried by run_worker).
from optuna.storages._heartbeat import is_heartbeat_enabled  # noqa: F401

# The ORM models and the session helper of RDBStorage, for HeartbeatStorage below.
from optuna.storages._rdb import models
from optuna.storages._rdb.storage import _create_scoped_session
from optuna.study._multi_objective import _is_pareto_front
from optuna.trial import TrialState


def pareto_front_mask(values: Any) -> np.ndarray:
    """Boolean mask of the non-dominated rows of `values` (n_points, n_objectives), all minimised.

    Optuna's own non-domination test (the one behind ``study.best_trials``), so qallegro's fronts match Optuna's.
    """
    values = np.asarray(values, dtype=float)
    if not len(values):
        return np.zeros(0, bool)
    return _is_pareto_front(values, assume_unique_lexsorted=False)


def study_storage(study: optuna.Study) -> optuna.storages.BaseStorage:
    """The storage object behind a study (``Study._storage``; Optuna has no public accessor)."""
    return study._storage


# RDBStorage overridden at its private `_get_stale_trial_ids` (the list that Optuna's fail_stale_trials fails and
# retries): Optuna has no public hook for which RUNNING trials count as stale.
class HeartbeatStorage(optuna.storages.RDBStorage):
    """RDBStorage whose stale trials also include RUNNING trials that never recorded a heartbeat and started
    more than `grace_period` seconds ago. Optuna skips those; a worker killed between creating its trial and the
    first heartbeat (seconds under SQLite lock contention) would leave a trial that `run_worker` waits for
    forever."""

    def _get_stale_trial_ids(self, study_id: int) -> list:
        stale = super()._get_stale_trial_ids(study_id)
        now = datetime.now()  # datetime_start is written with the worker's datetime.now(), not the database clock
        with _create_scoped_session(self.scoped_session, True) as session:
            running = (session.query(models.TrialModel).filter(models.TrialModel.state == TrialState.RUNNING)
                       .filter(models.TrialModel.study_id == study_id).all())
            for trial in running:
                if (not trial.heartbeats and trial.datetime_start is not None
                        and (now - trial.datetime_start).total_seconds() > self.grace_period):
                    stale.append(trial.trial_id)
        return stale


def reseed_for_trial(sampler: optuna.samplers.BaseSampler, seed: int, number: int) -> None:
    """Seed the random state of Optuna's RandomSampler, TPESampler or NSGAIISampler (its private ``_rng``, and
    the ``_random_sampler`` that TPE and NSGA-II fall back to) from (`seed`, trial `number`).

    Optuna seeds a sampler once per process (``reseed_rng`` only re-seeds from entropy): workers of one study
    started with the same seed, and a worker restarted after a kill, would repeat each other's proposals.
    """
    state = np.random.SeedSequence([seed, number]).generate_state(1)[0]
    for owner in (sampler, getattr(sampler, "_random_sampler", None)):
        rng = getattr(owner, "_rng", None)
        if rng is not None:
            rng.rng.seed(int(state))
