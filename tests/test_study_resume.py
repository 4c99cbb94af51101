"""The study command end to end on a tiny plan, killed with SIGKILL inside a search trial and inside a final run,
then resumed: every planned trial and run completes once, the killed ones resume from their checkpoints, and
nothing finished is trained again; a plan with more epochs then extends the finished runs from their checkpoints.

Cost: two study processes are started and killed (the first inside a search trial, the second, which finishes the
search and seed 0, inside seed 1); the resume to the end and the last call (nothing left to do) run in this
process, which has imported JAX already. All of them share one persistent compilation cache with no minimum
compile time, so a program compiled by a killed process is read, not compiled again."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import optuna
import pytest
from optuna.trial import TrialState

from qallegro.hpo.objective import OBJECTIVE_KEY

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.join(ROOT, "experiments", "data")
EPOCHS = 3  # of each final run
N_TEST = 4  # test frames


def tiny_study(tmp_path):
    """A plan over a 20/4-frame slice of aspirin: allegro searched (3 trials of 2 epochs, the learning rate only),
    then 3 seeds of 3 epochs."""
    for split, n in (("train", 20), ("test", N_TEST)):
        f = np.load(os.path.join(DATA, f"rmd17_aspirin_{split}_01.npz"))
        np.savez(tmp_path / f"{split}.npz", **{k: f[k][:n] if k != "nuclear_charges" else f[k]
                                                for k in ("nuclear_charges", "coords", "energies", "forces")})
    (tmp_path / "tiny.yaml").write_text(
        "dataset: {train: train.npz, test: test.npz, n_train: 16, n_val: 4}\n"
        "profiles:\n"
        "  cpu:\n"
        "    model: {family: allegro, r_max: 4.0, l_max: 1, num_layers: 1, num_tensor_features: 4,\n"
        "            two_body_mlp: [8, 16], latent_mlp: [16], readout_mlp: [8]}\n"
        "    training: {batch_size: 4, eval_batch_size: 4, max_minutes: null, plateau_patience: 1,\n"
        "               shift_refit_structures: 8}\n")
    (tmp_path / "space.yaml").write_text(
        "training.learning_rate: {type: float, low: 1.0e-3, high: 1.0e-2, log: true}\n")
    (tmp_path / "plan.yaml").write_text(
        "profile: cpu\n"
        "datasets:\n"
        "  rmd17-aspirin: {config: tiny.yaml}\n"
        "hpo:\n"
        "  studies: {allegro: [rmd17-aspirin]}\n"
        "  spaces: {allegro: space.yaml}\n"
        "  n_trials: 3\n"
        "  n_initial: 2\n"
        "  trial_epochs: 2\n"
        "  timing_structures: 2\n"
        "  heartbeat_seconds: 1\n"
        f"compare: {{seeds: 3, epochs: {EPOCHS}}}\n"
        "bootstrap: {resamples: 200}\n")
    return str(tmp_path / "plan.yaml")


def command(tmp_path, plan):
    return [sys.executable, "-m", "experiments.run", "study", "--plan", plan, "--stage", "all",
            "--out", str(tmp_path / "results"), "--scratch", str(tmp_path / "scratch"),
            "--report", str(tmp_path / "paper.md"), "--compilation-cache", str(tmp_path / "jax-cache")]


def kill_when(proc, condition, timeout=900.0):
    """SIGKILL the process group of `proc` as soon as condition() holds; returns what condition() returned."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        hit = condition()
        if hit:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            return hit
        if proc.poll() is not None:
            out = proc.stdout.read().decode(errors="replace")[-3000:]
            pytest.fail(f"the study ended (rc {proc.returncode}) before the kill point:\n{out}")
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGKILL)
    pytest.fail("kill point not reached in time")


def start(tmp_path, plan):
    # every compiled program goes into the cache (the default skips those compiled in under 1 s), so a later
    # process reads it; QALLEGRO_COMPILATION_CACHE stays "off" (conftest), which keeps that minimum at 0
    env = dict(os.environ, PYTHONUNBUFFERED="1", JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")
    return subprocess.Popen(command(tmp_path, plan), cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True)


@pytest.mark.slow
def test_study_killed_in_search_and_in_final_run_resumes_without_loss_or_repeat(tmp_path, jax_compilation_cache,
                                                                              capsys):
    # jax_compilation_cache: the in-process runs below read tmp_path/jax-cache, the killed processes' cache
    plan = tiny_study(tmp_path)
    trials = tmp_path / "scratch" / "hpo" / "rmd17-aspirin" / "allegro" / "trials"
    results = tmp_path / "results"

    def trial_mid_run():  # a trial with a checkpoint and no potential yet: training or evaluating
        if not trials.exists():
            return None
        for d in trials.iterdir():
            if (d / "checkpoints" / "last").exists() and not (d / "potential.qallegro").exists():
                return d.name
        return None

    killed_trial = kill_when(start(tmp_path, plan), trial_mid_run)

    def seed_mid_run():  # seed 1 of the comparison, checkpointed after some of its epochs but not all
        work = tmp_path / "scratch" / "compare" / "rmd17-aspirin" / "allegro" / "seed1"
        metrics = work / "metrics.csv"
        if (work / "checkpoints" / "last").exists() and metrics.exists():
            if 1 <= len(metrics.read_text().strip().splitlines()) - 1 < EPOCHS:
                return "training"
        return None

    kill_when(start(tmp_path, plan), seed_mid_run)
    seed0 = results / "compare" / "rmd17-aspirin" / "allegro" / "seed0" / "results.json"
    assert seed0.exists()
    seed0_written = seed0.stat().st_mtime_ns
    assert not (results / "compare" / "rmd17-aspirin" / "allegro" / "seed1" / "results.json").exists()

    from experiments.run import main

    # the resume after the second kill: a fresh study run, in this process
    assert main(command(tmp_path, plan)[3:]) == 0, capsys.readouterr().out[-3000:]

    storage = f"sqlite:///{results / 'hpo' / 'rmd17-aspirin' / 'allegro' / 'study.db'}"
    study = optuna.load_study(study_name="rmd17-aspirin-allegro", storage=storage)
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    failed = [t for t in study.trials if t.state == TrialState.FAIL]
    assert len(complete) == 3  # the budget, nothing lost
    assert len({json.dumps(t.params, sort_keys=True) for t in complete}) == 3  # nothing trained twice
    assert len(failed) <= 1 and all(t.params in [c.params for c in complete] for t in failed)  # the killed one, retried
    retried = [t for t in complete if t.user_attrs["run_dir"].endswith(killed_trial)]
    assert len(retried) == 1 and (not failed or retried[0].user_attrs["resumed"])
    assert all(t.user_attrs["timing"][OBJECTIVE_KEY] == complete[0].values[1] for t in complete)  # timed once

    runs = [json.loads((results / "compare" / "rmd17-aspirin" / "allegro" / f"seed{s}" / "results.json").read_text())
            for s in range(3)]
    assert seed0.stat().st_mtime_ns == seed0_written  # finished before the kill: not redone
    assert runs[1]["resumed"] and not runs[0]["resumed"] and not runs[2]["resumed"]
    for s, run in enumerate(runs):
        epochs = [row["epoch"] for row in run["history"]]
        assert epochs == [float(e) for e in range(1, EPOCHS + 1)], (s, epochs)  # every epoch once, none repeated
        assert run["epochs"] == EPOCHS and len(run["test_frames"]["energy_abs_error"]) == N_TEST
        assert abs(run["test"]["forces_mae"] - sum(run["test_frames"]["forces_abs_sum"]) /
                   sum(run["test_frames"]["forces_count"])) < 1e-2 * run["test"]["forces_mae"]
        assert "met" in run["convergence"]
    assert (results / "compare" / "rmd17-aspirin" / "allegro" / "seed0" / "potential.qallegro").exists()
    speed = json.loads((results / "compare" / "rmd17-aspirin" / "speed.json").read_text())
    assert np.shape(speed["ms_per_structure"]["allegro"]) == (10, 5)
    assert not (results / "compare" / "rmd17-aspirin" / "allegro" / "seed1" / "potential.qallegro").exists()
    report = (tmp_path / "paper.md").read_text()
    assert "<!-- claims table: begin -->" in report and "not run" in report
    assert "![rmd17-aspirin: every family's search trials" in report

    written = {p: p.stat().st_mtime_ns for p in results.rglob("results.json")}
    assert main(command(tmp_path, plan)[3:]) == 0, capsys.readouterr().out[-3000:]  # once more: nothing left to do
    assert {p: p.stat().st_mtime_ns for p in results.rglob("results.json")} == written
    assert len([t for t in optuna.load_study(study_name="rmd17-aspirin-allegro", storage=storage).trials
                if t.state == TrialState.COMPLETE]) == 3

    # A plan with one more epoch (runs that did not converge) extends the finished runs from their checkpoints:
    # the committed epochs stay as they were, one epoch is added, the search is not touched.
    with open(plan) as f:
        text = f.read()
    with open(plan, "w") as f:
        f.write(text.replace(f"epochs: {EPOCHS}}}", f"epochs: {EPOCHS + 1}}}"))
    assert main(command(tmp_path, plan)[3:]) == 0, capsys.readouterr().out[-3000:]
    for s, before in enumerate(runs):
        after = json.loads((results / "compare" / "rmd17-aspirin" / "allegro" / f"seed{s}" / "results.json")
                           .read_text())
        assert after["planned_epochs"] == after["epochs"] == EPOCHS + 1 and after["extended_from_epochs"] == EPOCHS
        assert after["resumed"] and after["history"][:EPOCHS] == before["history"], s  # continued, not retrained
        assert [row["epoch"] for row in after["history"]] == [float(e) for e in range(1, EPOCHS + 2)]
    assert len([t for t in optuna.load_study(study_name="rmd17-aspirin-allegro", storage=storage).trials
                if t.state == TrialState.COMPLETE]) == 3
