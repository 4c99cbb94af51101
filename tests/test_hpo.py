"""SAMO-COBRA sampler and the study driver: Pareto front of an analytic problem, parameter types, determinism,
kill-and-resume, several workers on one storage (SQLite, and PostgreSQL where installed)."""

import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import warnings

import numpy as np
import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from qallegro.hpo.optuna_compat import compute_hypervolume
from qallegro.hpo.samo_cobra import SamoCobraSampler
from qallegro.hpo.space import from_unit, space_from_yaml, to_unit
from qallegro.hpo.study import make_storage, run_worker, set_by_path, skip_if_duplicate

optuna.logging.set_verbosity(optuna.logging.WARNING)
WORKER = os.path.join(os.path.dirname(__file__), "hpo_worker.py")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def front_problem(trial):
    # Pareto front: y = 0, x in [0, 1], f2 = (1 - f1)^2.
    x = trial.suggest_float("x", 0.0, 1.0)
    y = trial.suggest_float("y", 0.0, 1.0)
    return x + y, (1.0 - x) ** 2 + 2.0 * y


def hypervolume(study, ref):
    Y = np.array([t.values for t in study.trials if t.state == TrialState.COMPLETE])
    Y = Y[np.all(Y < ref, axis=1)]
    return compute_hypervolume(Y, np.asarray(ref)) if len(Y) else 0.0


def run(sampler, n):
    study = optuna.create_study(directions=["minimize", "minimize"], sampler=sampler)
    study.optimize(front_problem, n_trials=n)
    return study


def test_finds_pareto_front_of_analytic_problem():
    space = {"x": FloatDistribution(0.0, 1.0), "y": FloatDistribution(0.0, 1.0)}
    ref = (1.2, 1.2)
    # The exact front's hypervolume: integral of (1.2 - (1-f1)^2) over f1 in [0, 1] plus the strip f1 in [1, 1.2].
    f1 = np.linspace(0.0, 1.0, 100001)
    hv_opt = np.trapezoid(1.2 - (1.0 - f1) ** 2, f1) + 0.2 * 1.2
    study = run(SamoCobraSampler(space, seed=1), 24)
    hv = hypervolume(study, ref)
    assert hv > 0.97 * hv_opt, (hv, hv_opt)
    best = study.best_trials
    assert len(best) >= 6
    assert np.mean([t.params["y"] < 0.02 for t in best]) > 0.8  # the front lies on y = 0
    assert np.ptp([t.params["x"] for t in best]) > 0.6  # and spreads along it
    hv_random = np.mean([hypervolume(run(optuna.samplers.RandomSampler(seed=s), 24), ref) for s in range(3)])
    assert hv > hv_random


def test_honours_int_categorical_log_and_step():
    space = {"lr": FloatDistribution(1e-5, 1e-1, log=True), "layers": IntDistribution(1, 4),
             "width": IntDistribution(16, 128, step=16), "batch": IntDistribution(1, 64, log=True),
             "act": CategoricalDistribution(["silu", "tanh", "relu"]), "r": FloatDistribution(3.0, 6.0, step=0.5)}

    def objective(trial):
        p = {"lr": trial.suggest_float("lr", 1e-5, 1e-1, log=True), "layers": trial.suggest_int("layers", 1, 4),
             "width": trial.suggest_int("width", 16, 128, step=16),
             "batch": trial.suggest_int("batch", 1, 64, log=True),
             "act": trial.suggest_categorical("act", ["silu", "tanh", "relu"]),
             "r": trial.suggest_float("r", 3.0, 6.0, step=0.5)}
        return (np.log10(p["lr"]) + 3) ** 2 + p["layers"] + (p["act"] != "tanh"), p["width"] / 128 + p["r"] / p["batch"]

    study = optuna.create_study(directions=["minimize", "minimize"], sampler=SamoCobraSampler(space, seed=0))
    study.optimize(objective, n_trials=16)
    configs = []
    for t in study.trials:
        p = t.params
        assert isinstance(p["layers"], int) and 1 <= p["layers"] <= 4
        assert isinstance(p["width"], int) and p["width"] % 16 == 0 and 16 <= p["width"] <= 128
        assert isinstance(p["batch"], int) and 1 <= p["batch"] <= 64
        assert p["act"] in ("silu", "tanh", "relu")
        assert 1e-5 <= p["lr"] <= 1e-1 and abs(p["r"] * 2 - round(p["r"] * 2)) < 1e-9
        assert t.distributions == space  # sampled jointly by SAMO-COBRA, not one by one
        configs.append(tuple(sorted(p.items())))
    assert len(set(configs)) == len(configs)  # no configuration proposed twice
    lrs = [t.params["lr"] for t in study.trials[:7]]  # the Latin hypercube design covers the decades
    assert min(lrs) < 1e-4 and max(lrs) > 1e-2
    assert {t.params["act"] for t in study.trials} == {"silu", "tanh", "relu"}


def test_unit_box_round_trip():
    space = {"n": IntDistribution(2, 9), "c": CategoricalDistribution([8, 16, 32]),
             "lr": FloatDistribution(1e-4, 1e-2, log=True)}
    for params in ({"n": 2, "c": 8, "lr": 1e-4}, {"n": 9, "c": 32, "lr": 1e-2}, {"n": 5, "c": 16, "lr": 1e-3}):
        x = to_unit(space, params)
        assert np.all((0 <= x) & (x <= 1))
        back = from_unit(space, x)
        assert back["n"] == params["n"] and back["c"] == params["c"] and back["lr"] == pytest.approx(params["lr"])


def test_same_seed_same_trials():
    space = {"x": FloatDistribution(0.0, 1.0), "y": FloatDistribution(0.0, 1.0)}
    a, b, c = (run(SamoCobraSampler(space, seed=s), 10) for s in (3, 3, 4))
    assert [t.params for t in a.trials] == [t.params for t in b.trials]
    assert [t.params for t in a.trials] != [t.params for t in c.trials]


def test_failed_trial_is_recorded_and_study_goes_on():
    space = {"x": FloatDistribution(0.0, 1.0), "y": FloatDistribution(0.0, 1.0)}
    study = optuna.create_study(directions=["minimize", "minimize"], sampler=SamoCobraSampler(space, seed=0))

    def objective(trial):
        if trial.number == 2:
            raise FloatingPointError("NaN loss at epoch 3")
        return front_problem(trial)

    run_worker(study, objective, n_trials=6, log=lambda s: None)
    states = [t.state for t in study.trials]
    assert states.count(TrialState.COMPLETE) == 6 and states.count(TrialState.FAIL) == 1
    assert study.trials[2].user_attrs["failure"] == "FloatingPointError: NaN loss at epoch 3"


def test_constrained_problem_prefers_feasible_points():
    space = {"x": FloatDistribution(0.0, 1.0), "y": FloatDistribution(0.0, 1.0)}

    def objective(trial):
        x, y = trial.suggest_float("x", 0, 1), trial.suggest_float("y", 0, 1)
        trial.set_constraint("disk", (x - 0.5) ** 2 + (y - 0.5) ** 2 - 0.1)  # feasible inside a disk
        return x, y

    study = optuna.create_study(directions=["minimize", "minimize"], sampler=SamoCobraSampler(space, seed=0))
    study.optimize(objective, n_trials=20)
    feasible = [t for t in study.trials[3:] if t.constraints["disk"] <= 0]
    assert len(feasible) >= 0.6 * 17
    # The feasible front is the disk's lower-left arc; its point nearest the origin has x + y = 1 - sqrt(0.2).
    assert min(t.params["x"] + t.params["y"] for t in feasible) < (1 - np.sqrt(0.2)) + 0.06
    assert all(t.constraints["disk"] <= 0 for t in study.best_trials)


def test_search_space_yaml_and_config_paths():
    space = space_from_yaml({"model.r_max": {"type": "float", "low": 3.5, "high": 6.0},
                             "training.learning_rate": {"type": "float", "low": 1e-3, "high": 1e-2, "log": True},
                             "model.latent_mlp_width": {"type": "categorical", "choices": [32, 64]},
                             "model.latent_mlp_depth": {"type": "int", "low": 1, "high": 3}})
    assert space["training.learning_rate"].log
    cfg = set_by_path({"model": {"r_max": 5.0, "latent_mlp": [128]}, "training": {}},
                      {"model.r_max": 4.0, "model.latent_mlp_width": 64, "model.latent_mlp_depth": 2,
                       "training.learning_rate": 0.003})
    assert cfg == {"model": {"r_max": 4.0, "latent_mlp": [64, 64]}, "training": {"learning_rate": 0.003}}
    with pytest.raises(ValueError, match="searched together"):
        set_by_path({"model": {}}, {"model.latent_mlp_width": 64})
    with pytest.raises(ValueError, match="'model.l_max'.*type"):
        space_from_yaml({"model.l_max": {"type": "integer", "low": 1, "high": 2}})


def _env():
    return dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))


def _worker(url, name, n, sleep_s, worker):
    return subprocess.Popen([sys.executable, WORKER, url, name, str(n), str(sleep_s), worker], env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _load(url, name):
    return optuna.load_study(study_name=name, storage=make_storage(url))


def _check_complete(study, n):
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert len(complete) == n
    params = [tuple(sorted(t.params.items())) for t in complete]
    assert len(set(params)) == n  # nothing evaluated twice
    return complete


def test_killed_study_resumes_with_no_trial_lost(tmp_path):
    url, name, n = f"sqlite:///{tmp_path / 'study.db'}", "resume", 8
    proc = _worker(url, name, n, 1.0, "first")
    deadline = time.time() + 120
    while time.time() < deadline:  # kill -9 in the middle of the 4th trial
        time.sleep(0.2)
        try:
            states = [t.state for t in _load(url, name).trials]
        except Exception:  # the study is not created yet, or the worker holds SQLite's write lock
            continue
        if states.count(TrialState.COMPLETE) >= 3 and states[-1] == TrialState.RUNNING:
            break
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed = _load(url, name).trials[-1]
    assert killed.state == TrialState.RUNNING
    out, _ = _worker(url, name, n, 0.2, "second").communicate(timeout=300)
    study = _load(url, name)
    complete = _check_complete(study, n)
    stale = study.trials[killed.number]
    assert stale.state == TrialState.FAIL
    assert any(t.params == killed.params for t in complete), out  # the killed configuration was run again


def _two_workers(url, name, n):
    procs = [_worker(url, name, n, 0.5, w) for w in ("A", "B")]
    outs = [p.communicate(timeout=300)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    complete = _check_complete(_load(url, name), n)
    assert {t.user_attrs["worker"] for t in complete} == {"A", "B"}


def test_two_workers_share_one_sqlite_study(tmp_path):
    url = f"sqlite:///{tmp_path / 'study.db'}"
    optuna.create_study(storage=url, study_name="shared", directions=["minimize", "minimize"])
    _two_workers(url, "shared", 10)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def postgres():
    """A throwaway local PostgreSQL server (Debian package); yields its SQLAlchemy URL."""
    bindir = "/usr/lib/postgresql"
    versions = sorted(os.listdir(bindir)) if os.path.isdir(bindir) else []
    initdb = shutil.which("initdb") or (os.path.join(bindir, versions[-1], "bin", "initdb") if versions else None)
    if not initdb or not os.path.exists(initdb):
        pytest.skip("PostgreSQL is not installed (Debian: apt-get install postgresql)")
    pytest.importorskip("psycopg", reason="psycopg is not installed (pip install -e '.[postgres]')")
    bin_dir = os.path.dirname(os.path.realpath(initdb))
    # Not pytest's tmp_path: its parents are private to the test user, and as root the server runs as postgres.
    tmp_path = pathlib.Path(tempfile.mkdtemp(prefix="qallegro-pg-"))
    data, port = tmp_path / "pgdata", _free_port()
    prefix = []
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root
        prefix = ["runuser", "-u", "postgres", "--"]
        os.chmod(tmp_path, 0o777)
    subprocess.run(prefix + [os.path.join(bin_dir, "initdb"), "-D", str(data), "-A", "trust", "-U", "qallegro"],
                   check=True, capture_output=True)
    subprocess.run(prefix + [os.path.join(bin_dir, "pg_ctl"), "-D", str(data), "-w", "-l", str(tmp_path / "pg.log"),
                             "-o", f"-p {port} -k {tmp_path} -c listen_addresses=127.0.0.1", "start"],
                   check=True, capture_output=True)
    try:
        subprocess.run(prefix + [os.path.join(bin_dir, "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U",
                                 "qallegro", "optuna"], check=True, capture_output=True)
        yield f"postgresql://qallegro@127.0.0.1:{port}/optuna"
    finally:
        subprocess.run(prefix + [os.path.join(bin_dir, "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
                       capture_output=True)
        shutil.rmtree(tmp_path, ignore_errors=True)


def test_two_workers_share_one_postgresql_study(postgres):
    optuna.create_study(storage=postgres, study_name="shared", directions=["minimize", "minimize"])
    _two_workers(postgres, "shared", 8)


def test_twin_trials_claim_a_configuration_once():
    study = optuna.create_study()
    for x in (0.5, 0.5, 0.25, 0.25):
        study.enqueue_trial({"x": x})
    first, second = study.ask(), study.ask()
    for t in (first, second):
        t.suggest_float("x", 0.0, 1.0)
    skip_if_duplicate(second)  # the higher number checks first, before its twin states anything: it goes on
    with pytest.raises(optuna.TrialPruned, match=f"trial {second.number}"):
        skip_if_duplicate(first)
    assert first.user_attrs["dedupe"] == "yield" and second.user_attrs["dedupe"] == "pass"
    third, fourth = study.ask(), study.ask()
    for t in (third, fourth):
        t.suggest_float("x", 0.0, 1.0)
    third.set_user_attr("dedupe", "intent")  # a lower-numbered twin in the middle of its check
    with pytest.raises(optuna.TrialPruned, match=f"trial {third.number}"):
        skip_if_duplicate(fourth)


def test_trial_killed_before_its_first_heartbeat_is_retried(tmp_path):
    """A worker killed between creating its trial and the first heartbeat leaves a RUNNING trial without any
    heartbeat, which Optuna never calls stale; run_worker would wait for it forever (seen once in CI)."""
    storage = make_storage(f"sqlite:///{tmp_path / 'study.db'}", heartbeat_interval=1, grace_period=1)
    study = optuna.create_study(study_name="orphan", storage=storage)
    orphan = study.ask({"x": optuna.distributions.FloatDistribution(0.0, 1.0)})  # RUNNING, no heartbeat thread
    time.sleep(1.5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)  # what run_worker does each round; without the fix it is a no-op
    assert study.trials[orphan.number].state == TrialState.FAIL  # (and run_worker would wait forever)
    ran = run_worker(study, lambda trial: trial.suggest_float("x", 0.0, 1.0) ** 2, n_trials=1, max_failures=3,
                     log=lambda _: None)
    trials = study.get_trials(deepcopy=False)
    assert ran == 1 and trials[orphan.number].state == TrialState.FAIL
    retried = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(retried) == 1 and retried[0].params == trials[orphan.number].params  # same configuration, re-run


@pytest.mark.parametrize("name", ["random", "tpe", "nsga2"])
def test_optuna_samplers_of_one_seed_differ_between_workers_and_repeat_per_trial(name):
    """Two workers with the same seed on one study (and a worker restarted in a new process) must not repeat each
    other's proposals; the proposals stay a function of (seed, trial number, history)."""
    from qallegro.hpo.study import make_sampler

    space = {"x": FloatDistribution(0.0, 1.0), "y": FloatDistribution(-1.0, 1.0)}

    def proposals():
        storage = optuna.storages.InMemoryStorage()
        workers = [optuna.create_study(storage=storage, study_name="s", load_if_exists=True,
                                       directions=["minimize"] * 2,
                                       sampler=make_sampler(name, space, seed=0, n_initial=4)) for _ in range(2)]
        out = []
        for k in range(6):  # the two workers take turns, as two processes polling one storage would
            trial = workers[k % 2].ask(space)
            workers[k % 2].tell(trial, [trial.params["x"], trial.params["y"] ** 2])
            out.append((trial.params["x"], trial.params["y"]))
        return out

    first = proposals()
    assert len(set(first)) == len(first), first  # before: the second worker repeated the first one's proposals
    assert proposals() == first  # reproducible
