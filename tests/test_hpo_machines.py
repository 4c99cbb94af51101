"""HPO across machines (issue 17): two workers, each a separate process with its own working directory, its own
--out and its own compilation cache (two "machines"), run the real command `python -m experiments.run hpo`
against one shared Optuna storage. Together they finish the study; each trial's files are in the out folder of
the worker that trained it and nowhere else, its user attributes say which machine, process and folder that was,
and nothing the two workers write collides (trial directories, timing cache, logs, plots, study summaries).

SQLite stands in for the database here (tests/test_hpo.py runs workers against a local PostgreSQL server)."""

import json
import os
import re
import subprocess
import sys

import numpy as np
import optuna
import pytest
from optuna.trial import TrialState

from qallegro.hpo.objective import params_key

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
N_TRIALS = 4
LR = "training.learning_rate"
#: what a worker's --out holds at the end (no study.db: the study is in the shared storage)
OUT_FILES = {"trials", "trials.log", "timing.json", "pareto.png", "hypervolume.png", "pareto.md", "study.json"}


def _write_inputs(folder):
    """A tiny config (8 training / 4 validation frames of the embedded aspirin data, a tiny model, as conftest's
    `tiny_config`) and a search space of the learning rate only: every trial has one architecture, so each
    worker compiles once and reads its later trials' programs from its own persistent compilation cache."""
    data = os.path.join(ROOT, "experiments", "data")
    os.makedirs(folder)
    for split, n in (("train", 12), ("test", 6)):
        f = np.load(os.path.join(data, f"rmd17_aspirin_{split}_01.npz"))
        np.savez(os.path.join(folder, f"{split}.npz"),
                 **{k: f[k][:n] if k != "nuclear_charges" else f[k]
                    for k in ("nuclear_charges", "coords", "energies", "forces")})
    config = os.path.join(folder, "tiny.yaml")
    with open(config, "w") as f:
        f.write("dataset: {train: train.npz, test: test.npz, n_train: 8, n_val: 4}\n"
                "model: {r_max: 4.0, l_max: 1, num_layers: 1, num_tensor_features: 4, two_body_mlp: [8, 16],\n"
                "        latent_mlp: [16], readout_mlp: [8]}\n"
                "training: {batch_size: 4, eval_batch_size: 6, max_minutes: null}\n")
    space = os.path.join(folder, "space.yaml")
    with open(space, "w") as f:
        f.write(f"{LR}: {{type: float, low: 1.0e-3, high: 1.0e-2, log: true}}\n")
    return config, space


def _start(machine, config, space, url):
    """One worker: `python -m experiments.run hpo` in the folder `machine` with --out out (relative to it)."""
    os.makedirs(machine)
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""), JAX_PLATFORMS="cpu",
               QALLEGRO_COMPILATION_CACHE=os.path.join(machine, "jax-cache"), PYTHONUNBUFFERED="1")
    argv = [sys.executable, "-m", "experiments.run", "hpo", "--dataset", "rmd17-aspirin", "--config", config,
            "--space", space, "--sampler", "random", "--n-trials", str(N_TRIALS), "--trial-epochs", "1",
            "--timing-structures", "2", "--storage", url, "--study-name", "shared", "--out", "out"]
    return subprocess.Popen(argv, cwd=machine, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)


def test_two_machines_share_one_study_and_keep_their_own_files(tmp_path):
    config, space = _write_inputs(str(tmp_path / "inputs"))
    shared = tmp_path / "shared"
    shared.mkdir()
    url = f"sqlite:///{shared / 'study.db'}"
    machines = {m: str(tmp_path / f"machine-{m}") for m in ("a", "b")}
    procs = {m: _start(folder, config, space, url) for m, folder in machines.items()}
    logs = {}
    try:
        for m, proc in procs.items():
            logs[m] = proc.communicate(timeout=600)[0]
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    for m, proc in procs.items():
        assert proc.returncode == 0, f"worker {m}:\n{logs[m][-4000:]}"

    study = optuna.load_study(study_name="shared", storage=url)
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert len(complete) == N_TRIALS, [(t.number, t.state) for t in study.trials]
    assert len({t.params[LR] for t in complete}) == N_TRIALS  # no configuration trained twice
    # The rest were pruned before training: a proposal another worker had taken (both samplers have seed 0, so
    # the random sampler proposes the same sequence in both), or one over the budget. None failed.
    assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in study.trials)
    outs = {m: os.path.realpath(os.path.join(folder, "out")) for m, folder in machines.items()}
    by_out = {m: [t for t in complete if os.path.realpath(t.user_attrs["out"]) == out] for m, out in outs.items()}
    assert sum(len(ts) for ts in by_out.values()) == N_TRIALS  # every trial names one of the two outs
    assert all(by_out.values()), {m: len(ts) for m, ts in by_out.items()}  # both workers trained trials
    pids = {m: {t.user_attrs["pid"] for t in ts} for m, ts in by_out.items()}
    assert all(len(p) == 1 for p in pids.values()) and pids["a"] != pids["b"]
    assert all(t.user_attrs["host"] for t in complete)

    for m, out in outs.items():
        other = outs["b" if m == "a" else "a"]
        mine = by_out[m]
        # Each trial's files are here, under its run_dir, and nowhere else; no other trial directory is here.
        assert set(os.listdir(os.path.join(out, "trials"))) == {params_key(t.params) for t in mine}
        for t in mine:
            assert t.user_attrs["run_dir"] == os.path.join("trials", params_key(t.params))
            run_dir = os.path.join(out, t.user_attrs["run_dir"])
            assert not os.path.exists(os.path.join(other, t.user_attrs["run_dir"]))
            with open(os.path.join(run_dir, "config.json")) as f:
                assert json.load(f)["config"]["training"]["learning_rate"] == t.params[LR]
            with open(os.path.join(run_dir, "results.json")) as f:
                results = json.load(f)
            assert results["validation"]["forces_mae"] == t.values[0] and results["epochs"] == 1
        # trials.log: the trials of this worker only, each named once
        with open(os.path.join(out, "trials.log")) as f:
            named = [int(n) for n in re.findall(r"^trial (\d+): ", f.read(), re.M)]
        assert sorted(named) == sorted(t.number for t in mine), (m, named)
        # The worker wrote only into its own folder: its out (no study.db there), and its compilation cache.
        assert set(os.listdir(machines[m])) == {"out", "jax-cache"}
        assert os.listdir(os.path.join(machines[m], "jax-cache"))
        assert set(os.listdir(out)) == OUT_FILES, sorted(os.listdir(out))
        with open(os.path.join(out, "timing.json")) as f:
            assert len(json.load(f)) == 1  # one architecture, timed on this machine
        with open(os.path.join(out, "study.json")) as f:
            summary = json.load(f)
        # Every worker's report covers the whole study and says where each trial's files are.
        assert sorted(s["number"] for s in summary["trials"]) == sorted(t.number for t in complete)
        assert {os.path.realpath(s["out"]) for s in summary["trials"]} == set(outs.values())
        assert "--out out" in summary["command"]
    assert set(os.listdir(shared)) <= {"study.db", "study.db-journal", "study.db-wal", "study.db-shm"}


def test_a_worker_that_loses_the_race_to_create_the_tables_opens_the_storage_again(tmp_path, monkeypatch):
    """Two workers started together on an empty database both create its tables; Optuna does not guard the
    schema stamp, and the second failed with "UNIQUE constraint failed: alembic_version.version_num" (seen in
    the test above). make_storage opens it again; other storage errors are raised at once."""
    import sqlalchemy.exc

    from qallegro.errors import StorageError
    from qallegro.hpo import study as study_module

    real, calls = study_module.HeartbeatStorage, []

    def racing(url, **kwargs):
        calls.append(url)
        if len(calls) == 1:
            raise sqlalchemy.exc.IntegrityError("INSERT INTO alembic_version", {},
                                                Exception("UNIQUE constraint failed: alembic_version.version_num"))
        return real(url, **kwargs)

    monkeypatch.setattr(study_module, "HeartbeatStorage", racing)
    storage = study_module.make_storage(f"sqlite:///{tmp_path / 'study.db'}")
    assert len(calls) == 2 and isinstance(storage, real)

    def unreachable(url, **kwargs):
        calls.append(url)
        raise sqlalchemy.exc.OperationalError("connect", {}, Exception("connection refused"))

    calls.clear()
    monkeypatch.setattr(study_module, "HeartbeatStorage", unreachable)
    with pytest.raises(StorageError, match="connection refused"):
        study_module.make_storage("postgresql://nobody@127.0.0.1:1/none")
    assert len(calls) == 1
