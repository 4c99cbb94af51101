"""Training under faults (issue 18): a checkpoint with flipped bytes is detected and the previous intact one is
used; --resume into a run of another dataset or model is refused with nothing changed on disk, as is a plain
re-run into a finished run; and kill -9 at 20 random (seeded) moments of a short training run, each followed by
--resume, ends with bit-for-bit the parameters of an uninterrupted run every time.

The killed runs are real processes that receive SIGKILL: forked from a zygote that imported the training stack
once (tests/fork_trainer.py), with every compiled program in a persistent compilation cache, so a restart costs
about as much as the run's own work."""

import argparse
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from qallegro.train.checkpoint import MANIFEST, CheckpointError, CheckpointStore

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
EPOCHS = 2


# ---------------------------------------------------------------------------------------------------------------
# helpers


def _flip_bytes(path, n=4):
    """Invert `n` bytes in the middle of the file at `path`."""
    with open(path, "r+b") as f:
        data = bytearray(f.read())
        middle = len(data) // 2
        for i in range(middle, min(middle + n, len(data))):
            data[i] ^= 0xFF
        f.seek(0)
        f.write(data)


def _largest_data_file(step_dir):
    """The largest array-data file of an orbax checkpoint (under a ``d`` folder of its OCDBT store)."""
    files = [os.path.join(r, n) for r, _, names in os.walk(step_dir) for n in names
             if os.path.basename(r) == "d"]
    return max(files, key=os.path.getsize)


def _tree_digest(directory):
    """SHA-256 over every path, content and modification time under `directory`: any write changes it."""
    h = hashlib.sha256()
    for root, dirs, files in os.walk(directory):
        dirs.sort()
        for name in sorted(files) + sorted(dirs):
            path = os.path.join(root, name)
            st = os.stat(path)
            h.update(f"{os.path.relpath(path, directory)} {st.st_mtime_ns} {st.st_size}".encode())
            if os.path.isfile(path):
                with open(path, "rb") as f:
                    h.update(f.read())
    return h.hexdigest()


def _write_tiny(folder, name="tiny.yaml", train="train.npz", extra_training=""):
    """The conftest `tiny_config` (12/6 frames of the embedded aspirin data, a tiny model), saving a proven
    checkpoint after every batch and keeping all of them."""
    data = os.path.join(ROOT, "experiments", "data")
    for split, n, offset in (("train", 12, 0), ("test", 6, 0), ("other", 12, 12)):
        path = os.path.join(folder, f"{split}.npz")
        if not os.path.exists(path):
            f = np.load(os.path.join(data, f"rmd17_aspirin_{'test' if split == 'test' else 'train'}_01.npz"))
            np.savez(path, **{k: f[k][offset:offset + n] if k != "nuclear_charges" else f[k]
                              for k in ("nuclear_charges", "coords", "energies", "forces")})
    path = os.path.join(folder, name)
    with open(path, "w") as f:
        f.write(f"dataset: {{train: {train}, test: test.npz, n_train: 8, n_val: 4}}\n"
                "model: {r_max: 4.0, l_max: 1, num_layers: 1, num_tensor_features: 4, two_body_mlp: [8, 16],\n"
                "        latent_mlp: [16], readout_mlp: [8]}\n"
                "training: {batch_size: 4, eval_batch_size: 6, max_minutes: null, checkpoint_minutes: 0.0, "
                f"keep_checkpoints: 3{extra_training}}}\n")
    return path


#: the line run_training logs just before it writes anything and starts training (the data are read and checked)
READY = "batches padded to"


def _exited(pid):
    with open(f"/proc/{pid}/stat") as f:  # a child that has exited is a zombie until the zygote reaps it
        return f.read().rsplit(")", 1)[1].split()[0] == "Z"


class Zygote:
    """tests/fork_trainer.py: `run(argv, log, kill_after=seconds)` forks a train process and SIGKILLs it that many
    seconds after it logged `READY` (None: lets it finish); returns (exit code, seconds from `READY` to the end,
    or None if never ready)."""

    def __init__(self, cache_dir):
        env = dict(os.environ, QALLEGRO_COMPILATION_CACHE=cache_dir,
                   PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]))
        self.proc = subprocess.Popen([sys.executable, os.path.join(HERE, "fork_trainer.py")], cwd=ROOT, env=env,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert json.loads(self.proc.stdout.readline()) == {"ready": True}
        self.cpu_seconds = 0.0

    def _ask(self, request):
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())

    def run(self, argv, log, kill_after=None):
        offset = os.path.getsize(log) if os.path.exists(log) else 0
        pid = self._ask({"argv": argv, "log": log})["pid"]
        ready = None
        while ready is None and not _exited(pid):
            time.sleep(0.02)
            if not os.path.exists(log):  # the child has not opened its log yet (seen under load)
                continue
            with open(log) as f:
                f.seek(offset)
                if READY in f.read():
                    ready = time.perf_counter()
        if kill_after is not None:
            deadline = time.perf_counter() + kill_after
            while time.perf_counter() < deadline and not _exited(pid):  # a run that ends first is not waited for
                time.sleep(0.02)
            os.kill(pid, signal.SIGKILL)  # a no-op on a child that has already exited (not yet reaped)
        done = self._ask({"wait": pid})
        self.cpu_seconds += done["cpu_s"]
        return done["exitcode"], None if ready is None else time.perf_counter() - ready

    def close(self):
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


def _final(run_dir):
    """What a finished run ends with: every array of its newest "last" checkpoint (parameters, EMA, Adam
    moments, plateau state, progress except the wall time), the deployed potential's parameters, and the
    metrics rows (except the wall time)."""
    import orbax.checkpoint as ocp

    from qallegro.potential import load

    store = CheckpointStore(os.path.join(run_dir, "checkpoints", "last"))
    with ocp.StandardCheckpointer() as checkpointer:
        state = checkpointer.restore(os.path.join(store.step_dir(store.steps()[-1]), "state"))
    state["progress"].pop("elapsed_seconds")
    arrays = {jax.tree_util.keystr(k): np.asarray(v) for k, v in jax.tree_util.tree_leaves_with_path(state)}
    potential = load(os.path.join(run_dir, "potential.qallegro"))
    arrays.update({"potential" + jax.tree_util.keystr(k): np.asarray(v)
                   for k, v in jax.tree_util.tree_leaves_with_path(potential.params)})
    with open(os.path.join(run_dir, "results.json")) as f:
        results = json.load(f)
    with open(os.path.join(run_dir, "metrics.csv")) as f:
        rows = [line.rsplit(",", 1)[0] for line in f.read().splitlines()]  # elapsed_minutes is the last column
    return arrays, rows, (results["epochs"], results["best_epoch"])


def _assert_same_final(a, b, what):
    arrays_a, rows_a, epochs_a = a
    arrays_b, rows_b, epochs_b = b
    assert sorted(arrays_a) == sorted(arrays_b), what
    for key in arrays_a:
        np.testing.assert_array_equal(arrays_a[key], arrays_b[key], err_msg=f"{what}: {key}")
    assert rows_a == rows_b, what
    assert epochs_a == epochs_b == (EPOCHS, epochs_a[1]), what


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A zygote, the tiny config and an uninterrupted reference run (which fills the compilation cache), and
    the wall time of a second, warm uninterrupted run (equal to the first, bit for bit)."""
    work = str(tmp_path_factory.mktemp("faults"))
    config = _write_tiny(work)
    zygote = Zygote(os.path.join(work, "jax-cache"))

    def argv(out, *extra):
        return ["--config", config, "--max-epochs", str(EPOCHS), "--out", out, *extra]

    reference = os.path.join(work, "reference")
    code, _ = zygote.run(argv(reference), reference + ".log")
    assert code == 0, open(reference + ".log").read()[-3000:]
    warm = os.path.join(work, "warm")
    code, seconds = zygote.run(argv(warm), warm + ".log")
    assert code == 0, open(warm + ".log").read()[-3000:]
    final = _final(reference)
    _assert_same_final(_final(warm), final, "two uninterrupted runs")
    yield {"work": work, "config": config, "zygote": zygote, "argv": argv, "reference": reference,
           "final": final, "run_seconds": seconds}
    zygote.close()


# ---------------------------------------------------------------------------------------------------------------
# checkpoints that prove themselves


def test_flipped_bytes_are_detected_and_the_previous_checkpoint_is_used(tmp_path):
    warnings = []
    store = CheckpointStore(str(tmp_path / "last"), keep=3, log=warnings.append)
    template = {"w": np.zeros((256,), np.float32), "step": np.asarray(0, np.int64)}
    for i in (1, 2, 3):
        store.save({"w": np.full((256,), 0.5 * i, np.float32), "step": np.asarray(i, np.int64)},
                   info={"epoch": i})
    assert store.steps() == [1, 2, 3]
    state, info, used = store.restore(template)
    assert info == {"epoch": 3} and not warnings

    _flip_bytes(_largest_data_file(store.step_dir(3)))
    state, info, used = store.restore(template)
    assert info == {"epoch": 2} and int(state["step"]) == 2
    np.testing.assert_array_equal(np.asarray(state["w"]), np.full((256,), 1.0, np.float32))
    assert used == store.step_dir(2)
    assert len(warnings) == 1 and store.step_dir(3) in warnings[0] and store.step_dir(2) in warnings[0]
    assert "damaged" in warnings[0]

    # a truncated file and a deleted manifest (killed between orbax's rename and the manifest): the first one
    os.truncate(_largest_data_file(store.step_dir(2)), 10)
    os.remove(os.path.join(store.step_dir(1), MANIFEST))
    with pytest.raises(CheckpointError, match="no intact checkpoint") as err:
        store.restore(template)
    for step in (1, 2, 3):
        assert store.step_dir(step) in str(err.value)

    # a checkpoint that verifies but belongs to another model: refused, not silently reshaped
    other = CheckpointStore(str(tmp_path / "other"), keep=3)
    other.save({"w": np.zeros((7,), np.float32), "step": np.asarray(0, np.int64)})
    with pytest.raises(CheckpointError, match="does not fit"):
        other.restore(template)
    store.close()
    other.close()


def test_only_the_newest_proven_checkpoints_are_kept(tmp_path):
    store = CheckpointStore(str(tmp_path / "best"), keep=2, log=lambda s: None)
    for i in range(1, 5):
        store.save({"w": np.full((3,), float(i), np.float32)}, info={"epoch": i})
    assert store.steps() == [3, 4]
    # an unproven newest one (no manifest) does not count: the two proven ones before it stay
    os.remove(os.path.join(store.step_dir(4), MANIFEST))
    store.save({"w": np.full((3,), 5.0, np.float32)}, info={"epoch": 5})
    assert store.steps() == [3, 5]
    with pytest.raises(ValueError, match="keep_checkpoints"):
        CheckpointStore(str(tmp_path / "x"), keep=0)
    store.close()


def test_checkpoint_of_an_earlier_version_is_read_with_a_warning(tmp_path):
    import orbax.checkpoint as ocp

    legacy = str(tmp_path / "last")
    with ocp.StandardCheckpointer() as checkpointer:  # the layout before checksums: one checkpoint in the folder
        checkpointer.save(legacy, {"w": np.arange(4, dtype=np.float32)})
    warnings = []
    store = CheckpointStore(legacy, log=warnings.append)
    assert store.is_legacy() and store.steps() == []
    state, info, used = store.restore({"w": np.zeros(4, np.float32)})
    np.testing.assert_array_equal(np.asarray(state["w"]), np.arange(4, dtype=np.float32))
    assert used == legacy and info == {} and "without checksums" in warnings[0]
    assert CheckpointStore(str(tmp_path / "empty")).restore({"w": np.zeros(4, np.float32)}) is None


def test_damaged_newest_checkpoint_of_a_run_resumes_from_the_previous_one_exactly(trained):
    run = os.path.join(trained["work"], "damaged")
    shutil.copytree(trained["reference"], run)
    last = CheckpointStore(os.path.join(run, "checkpoints", "last"))
    newest = last.step_dir(last.steps()[-1])
    _flip_bytes(_largest_data_file(newest))
    code, _ = trained["zygote"].run(trained["argv"](run, "--resume"), run + ".log")
    log = open(run + ".log").read()
    assert code == 0, log[-3000:]
    warning = next(line for line in log.splitlines() if line.startswith("warning:"))
    assert newest in warning and last.step_dir(last.steps()[-2]) in warning
    _assert_same_final(_final(run), trained["final"], "resumed from the checkpoint before a damaged one")


# ---------------------------------------------------------------------------------------------------------------
# never destroy before validating


def _train_main(argv):
    from experiments import train

    parser = argparse.ArgumentParser()
    train.add_arguments(parser)
    return train.main(parser.parse_args(argv))


def test_resume_into_another_config_or_rerun_is_refused_and_nothing_changes(trained):
    run = os.path.join(trained["work"], "finished")
    shutil.copytree(trained["reference"], run, copy_function=shutil.copy2)
    before = _tree_digest(run)
    other_data = _write_tiny(trained["work"], name="other.yaml", train="other.npz")
    other_lr = _write_tiny(trained["work"], name="lr.yaml", extra_training=", learning_rate: 0.01")
    no_data = _write_tiny(trained["work"], name="nodata.yaml", train="nothere.npz")
    base = ["--max-epochs", str(EPOCHS), "--out", run]
    cases = [
        (["--config", other_data, "--resume"], "dataset.train"),
        (["--config", trained["config"], "--model", "allegro-mlp", "--resume"], "model.family"),
        (["--config", other_lr, "--resume"], "training.learning_rate"),
        (["--config", trained["config"], "--seed", "1", "--resume"], "seed"),
        (["--config", trained["config"]], "--resume"),  # a plain re-run: refused, suggests --resume/--overwrite
        (["--config", no_data, "--overwrite"], "nothere.npz"),  # bad data: the old run stays where it is
    ]
    for extra, named in cases:
        with pytest.raises((CheckpointError, FileNotFoundError, ValueError), match=named.replace(".", r"\.")):
            _train_main(extra + base)
        assert _tree_digest(run) == before, extra
    with pytest.raises(CheckpointError, match="--overwrite"):
        _train_main(["--config", trained["config"]] + base)

    # --overwrite moves the finished run aside, untouched, and trains anew
    code, _ = trained["zygote"].run(trained["argv"](run, "--overwrite"), run + ".log")
    assert code == 0, open(run + ".log").read()[-3000:]
    aside = [d for d in os.listdir(trained["work"]) if d.startswith("finished.replaced-")]
    assert len(aside) == 1 and _tree_digest(os.path.join(trained["work"], aside[0])) == before
    _assert_same_final(_final(run), trained["final"], "--overwrite")


# ---------------------------------------------------------------------------------------------------------------
# kill -9


def test_kill_9_at_20_random_moments_then_resume_gives_the_uninterrupted_parameters(trained):
    """Kill moments: uniform over the part of a warm run from `READY` (data read, nothing written yet) to its end
    (training with a checkpoint after every batch, validation, the final evaluation, plots, results, potential),
    so that they fall on the writes at any load of the machine. A chain of runs in one directory is killed up to
    4 times, then let finish and compared bit for bit with the uninterrupted run.

    The span is the warm run's duration, lowered to that of any later fresh run that finishes sooner: measured
    once under a passing load peak it would be too long, most moments would fall after the end of the run, and
    the 20 kills would take hundreds of runs (seen: 74 chains in a loaded CI run instead of ~9)."""
    rng = np.random.default_rng(18)
    zygote, argv = trained["zygote"], trained["argv"]
    span = trained["run_seconds"]
    kills, chains, outcomes = 0, 0, []
    cpu_before, t0 = zygote.cpu_seconds, time.perf_counter()
    while kills < 20:
        run = os.path.join(trained["work"], f"kill{chains}")
        extra: tuple = ()
        in_chain = 0
        while True:
            moment = float(rng.uniform(0.0, span)) if kills < 20 and in_chain < 4 else None
            code, seconds = zygote.run(argv(run, *extra), run + ".log", kill_after=moment)
            outcomes.append((chains, moment, code))
            if code == 0 and not extra and seconds is not None:  # a whole run from the start, not killed
                span = min(span, seconds)
            extra = ("--resume",)
            if code == -signal.SIGKILL:
                kills, in_chain = kills + 1, in_chain + 1
                continue
            assert code == 0, open(run + ".log").read()[-3000:]
            break
        _assert_same_final(_final(run), trained["final"], f"chain {chains}: {outcomes}")
        chains += 1
    assert kills == 20
    print(f"20 kills in {chains} chains, {len(outcomes)} processes, {time.perf_counter() - t0:.0f} s wall, "
          f"{zygote.cpu_seconds - cpu_before:.0f} s CPU; run span {span:.1f} s; {outcomes}")
