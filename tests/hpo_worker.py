"""A study worker for the multi-process HPO tests: python tests/hpo_worker.py URL STUDY N_TRIALS SLEEP_S WORKER_ID.

Objective: a cheap analytic two-objective function of (x, n, c) that sleeps SLEEP_S seconds, so that workers
overlap and a kill lands inside a trial.
"""

import sys
import time

import optuna
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from qallegro.hpo.study import make_sampler, make_storage, run_worker, skip_if_duplicate

SPACE = {"x": FloatDistribution(0.0, 1.0), "n": IntDistribution(1, 8), "c": CategoricalDistribution(["a", "b"])}


def objective(trial, sleep_s, worker):
    x = trial.suggest_float("x", 0.0, 1.0)
    n = trial.suggest_int("n", 1, 8)
    c = trial.suggest_categorical("c", ["a", "b"])
    skip_if_duplicate(trial)
    trial.set_user_attr("worker", worker)
    time.sleep(sleep_s)
    return x + 0.01 * n, (1.0 - x) ** 2 + (0.1 if c == "b" else 0.0)


def main():
    url, name, n_trials, sleep_s, worker = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), sys.argv[5]
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # grace 10 s: a worker starved of CPU for a few seconds on a loaded 2-core machine must not have its live
    # trial failed by the other worker (seen once: Optuna's "Should not reach" in the PostgreSQL test)
    storage = make_storage(url, heartbeat_interval=1, grace_period=10)
    study = optuna.create_study(storage=storage, study_name=name, directions=["minimize", "minimize"],
                                sampler=make_sampler("samo-cobra", SPACE, seed=0), load_if_exists=True)
    run_worker(study, lambda t: objective(t, sleep_s, worker), n_trials, poll_seconds=0.2)


if __name__ == "__main__":
    main()
