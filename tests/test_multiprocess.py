"""Multi-process data-parallel training on one machine: `python -m experiments.run train --num-processes 2
--process-id K --coordinator HOST:PORT`, two processes with one CPU device each joined by jax.distributed (gloo),
killed with SIGKILL after their first checkpoint and restarted with --resume, end with the parameters of one
process with two devices and of one process with one device (float64 network, 1e-10); process 0 alone writes the
run directory. (That a resume is bit-exact against an uninterrupted run of the same layout is
tests/test_faults_training.py's concern; here the killed run is also the two-process run, which saves two
processes on a 2-core machine.)

Every process is a subprocess started and stopped here (a timeout per phase; all are killed on any failure). The
runs of a module share one JAX compilation cache, so the later runs load the programs the first ones compiled.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PHASE_TIMEOUT_S = 1800  # per group of processes; a hung collective must not hang the suite
EPOCHS = 2  # 8 training structures, batch 4: 2 steps per epoch


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(devices, cache):
    """One process's environment: CPU only, `devices` local devices, the shared compilation cache, and none of
    the SLURM / Open MPI variables (which would make a single process join a cluster)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "OMPI_", "PMI_"))}
    env.update(JAX_PLATFORMS="cpu",  # (conftest's XLA flags kept)
               XLA_FLAGS=f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={devices}",
               QALLEGRO_COMPILATION_CACHE=str(cache), PYTHONUNBUFFERED="1")
    return env


class Group:
    """The processes of one run (1, or N of a multi-process run), each logging to its own file."""

    def __init__(self, tmp, name, config, out_dirs, devices, extra=()):
        self.logs, self.procs = [], []
        n = len(out_dirs)
        port = _free_port()
        for k, out in enumerate(out_dirs):
            cmd = [sys.executable, "-m", "experiments.run", "train", "--config", config, "--max-epochs",
                   str(EPOCHS), "--out", str(out), *extra]
            if n > 1:
                cmd += ["--num-processes", str(n), "--process-id", str(k), "--coordinator", f"127.0.0.1:{port}"]
            log = tmp / f"{name}-{k}.log"
            self.logs.append(log)
            with open(log, "w") as f:
                self.procs.append(subprocess.Popen(cmd, cwd=ROOT, env=_env(devices, tmp / "jax-cache"),
                                                   stdout=f, stderr=subprocess.STDOUT))

    def log(self, k=0):
        return self.logs[k].read_text(errors="replace")

    def kill(self):
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGKILL)
        for p in self.procs:
            p.wait()

    def wait(self, deadline):
        """Wait for every process; on a failure or at the deadline kill them all and fail with their logs."""
        while any(p.poll() is None for p in self.procs):
            failed = [p for p in self.procs if p.poll() not in (None, 0)]
            if failed or time.time() > deadline:
                break
            time.sleep(0.2)
        codes = [p.poll() for p in self.procs]
        if codes != [0] * len(codes):
            self.kill()
            tails = "\n".join(f"--- {log.name} (exit {c}) ---\n{self.log(k)[-3000:]}"
                              for k, (log, c) in enumerate(zip(self.logs, codes)))
            pytest.fail(f"processes failed or timed out:\n{tails}")


def _last_state(run_dir):
    """The newest checkpoint's training state in RUN/checkpoints/last, as a flat {path: numpy array}."""
    import orbax.checkpoint as ocp

    last = os.path.join(run_dir, "checkpoints", "last")
    step = max(int(n) for n in os.listdir(last) if n.isdigit())
    path = os.path.join(last, str(step), "state")
    with jax.enable_x64(True), ocp.PyTreeCheckpointer() as checkpointer:  # float64 stays float64
        meta = checkpointer.metadata(path)  # numpy arrays: also a 2-device run's, in this 1-device process
        args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), meta.item_metadata.tree)
        tree = checkpointer.restore(path, args=ocp.args.PyTreeRestore(restore_args=args))
    flat = {}

    def walk(node, prefix):
        if isinstance(node, dict):
            for key, value in node.items():
                walk(value, f"{prefix}/{key}")
        elif isinstance(node, (list, tuple)):
            for key, value in enumerate(node):
                walk(value, f"{prefix}/{key}")
        elif node is not None:  # (optax's empty states are stored as None)
            flat[prefix] = np.asarray(node)

    walk(tree["train"], "train")
    return flat


def _assert_same_state(a, b, atol=1e-10):
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_allclose(a[key], b[key], rtol=0, atol=atol, err_msg=key)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Config and run directories of: one process with one device, one with two devices (both uninterrupted), and
    two processes with one device each, killed after their first checkpoint and then resumed."""
    tmp = tmp_path_factory.mktemp("multiprocess")
    data = os.path.join(ROOT, "experiments", "data")
    for split, n in (("train", 12), ("test", 6)):
        f = np.load(os.path.join(data, f"rmd17_aspirin_{split}_01.npz"))
        np.savez(tmp / f"{split}.npz", **{k: f[k][:n] if k != "nuclear_charges" else f[k]
                                          for k in ("nuclear_charges", "coords", "energies", "forces")})
    config = tmp / "tiny64.yaml"
    config.write_text(  # conftest's tiny_config with a float64 network: equal parameters to 1e-10
        "dataset: {train: train.npz, test: test.npz, n_train: 8, n_val: 4}\n"
        "model: {r_max: 4.0, l_max: 1, num_layers: 1, num_tensor_features: 4, two_body_mlp: [8, 16],\n"
        "        latent_mlp: [16], readout_mlp: [8]}\n"
        "training: {batch_size: 4, eval_batch_size: 6, max_minutes: null}\n"
        "dtype: float64\n")
    config = str(config)
    dirs = {name: tmp / name for name in ("one-device", "two-devices", "two-processes", "two-processes-p1")}
    two_processes = [dirs["two-processes"], dirs["two-processes-p1"]]
    groups = {
        "one-device": Group(tmp, "one-device", config, [dirs["one-device"]], 1),
        "two-devices": Group(tmp, "two-devices", config, [dirs["two-devices"]], 2),
        "killed": Group(tmp, "killed", config, two_processes, 1),
    }
    try:
        deadline = time.time() + PHASE_TIMEOUT_S
        # SIGKILL both processes of "killed" as soon as process 0's first checkpoint is complete (its manifest
        # is written last): at the end of epoch 1 of 2, or earlier on a slow machine (every 5 minutes).
        last = dirs["two-processes"] / "checkpoints" / "last"
        while not list(last.glob("*/qallegro_sha256.json")):
            if time.time() > deadline or any(p.poll() is not None for p in groups["killed"].procs):
                groups["killed"].wait(deadline)  # fails with the logs
                pytest.fail("the run to be killed ended before its first checkpoint:\n" + groups["killed"].log())
            time.sleep(0.05)
        groups["killed"].kill()
        groups["resumed"] = Group(tmp, "resumed", config, two_processes, 1, extra=["--resume"])
        for name in ("one-device", "two-devices", "resumed"):
            groups[name].wait(deadline)
    finally:
        for group in groups.values():
            group.kill()
    return {"dirs": dirs, "groups": groups}


def test_two_processes_train_as_two_devices_and_as_one_device(runs):
    dirs, groups = runs["dirs"], runs["groups"]
    for name in ("killed", "resumed"):
        log0 = groups[name].log(0)
        assert "process 0 of 2" in log0 and "data-parallel training over 2 devices" in log0, log0[-3000:]
        assert "process 1 of 2" in groups[name].log(1)
    assert "data-parallel training over 2 devices" in groups["two-devices"].log()
    one, two, multi = (_last_state(dirs[k]) for k in ("one-device", "two-devices", "two-processes"))
    assert int(one["train/step"]) == int(multi["train/step"]) == EPOCHS * 2
    params = [k for k in multi if k.startswith("train/params/")]
    assert params and all(multi[k].dtype == np.float64 for k in params)  # a float64 network: 1e-10 is meaningful
    moved = max(float(np.max(np.abs(multi[k] - multi[k.replace("train/params/", "train/ema_params/")])))
                for k in params)
    assert moved > 1e-6  # the steps changed the parameters (EMA lags behind them)
    _assert_same_state(multi, two)
    _assert_same_state(multi, one)
    results = [json.loads((dirs[k] / "results.json").read_text()) for k in ("one-device", "two-processes")]
    assert results[0]["epochs"] == results[1]["epochs"] == EPOCHS
    assert results[0]["validation"].keys() == results[1]["validation"].keys()
    assert results[0]["validation"]["forces_mae"] == pytest.approx(results[1]["validation"]["forces_mae"],
                                                                   rel=1e-9)
    # Process 0 alone writes the run directory; process 1's --out is never created.
    assert (dirs["two-processes"] / "potential.qallegro").exists()
    assert not dirs["two-processes-p1"].exists()


def test_killed_two_process_run_resumes_from_its_checkpoint(runs):
    groups = runs["groups"]
    assert [p.returncode for p in groups["killed"].procs] == [-signal.SIGKILL] * 2
    log = groups["resumed"].log(0)
    assert "resumed from" in log, log[-3000:]  # (the first checkpoint: end of epoch 1, or a timed one before)
    # (its final state equals the uninterrupted one- and two-device runs': the test above)
