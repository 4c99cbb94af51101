"""`make gpu-check` without a GPU stops at once with one line; its pieces compute what they claim."""

import os
import subprocess
import sys

import pytest

from experiments.benchmarks import gpu_check

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HAS_GPU = bool(gpu_check.find_nvidia_gpus())


@pytest.mark.skipif(HAS_GPU, reason="this machine has an NVIDIA GPU")
def test_make_gpu_check_fails_with_one_line_before_installing_anything():
    proc = subprocess.run(["make", "--no-print-directory", "gpu-check"], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, stdin=subprocess.DEVNULL)
    assert proc.returncode != 0
    ours = [line for line in proc.stderr.splitlines() if line.startswith("gpu-check:")]
    assert ours == ["gpu-check: no NVIDIA GPU on this machine (`nvidia-smi -L` lists none); "
                    "run `make gpu-check` on a machine with one"]
    assert proc.stdout == ""  # nothing else ran: no install, no sync of the cuda extra, no benchmark


def test_preflight_with_a_fake_nvidia_smi(tmp_path):
    fake = tmp_path / "nvidia-smi"
    fake.write_text("#!/bin/sh\necho 'GPU 0: NVIDIA H200 (UUID: GPU-0)'\n")
    fake.chmod(0o755)
    assert gpu_check.preflight(str(fake)) == "GPU 0: NVIDIA H200 (UUID: GPU-0)"
    broken = tmp_path / "broken-smi"
    broken.write_text("#!/bin/sh\necho 'NVIDIA-SMI has failed because it could not communicate with the driver'\n"
                      "exit 9\n")
    broken.chmod(0o755)
    with pytest.raises(gpu_check.NoGPUError, match="no NVIDIA GPU"):
        gpu_check.preflight(str(broken))
    with pytest.raises(gpu_check.NoGPUError, match="no NVIDIA GPU"):
        gpu_check.preflight(str(tmp_path / "missing"))


@pytest.mark.skipif(HAS_GPU, reason="this machine has an NVIDIA GPU")
def test_run_without_a_jax_gpu_exits_1_with_one_line(tmp_path):
    fake = tmp_path / "bin" / "nvidia-smi"  # a GPU that nvidia-smi lists but JAX (CPU build) does not see
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\necho 'GPU 0: NVIDIA H200 (UUID: GPU-0)'\n")
    fake.chmod(0o755)
    env = dict(os.environ, PATH=f"{fake.parent}{os.pathsep}{os.environ['PATH']}", JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, "-m", "experiments.benchmarks.gpu_check", "--out", str(tmp_path / "o")],
                          cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1].startswith("gpu-check: JAX runs on 'cpu', not on a GPU")
    assert not (tmp_path / "o").exists()


def test_peak_bandwidth_and_traffic_model():
    assert gpu_check.peak_bandwidth_gbs("NVIDIA H200") == 4800.0
    assert gpu_check.peak_bandwidth_gbs("NVIDIA H100 80GB HBM3") == 3350.0
    assert gpu_check.peak_bandwidth_gbs("NVIDIA A100-SXM4-80GB") == 2039.0
    assert gpu_check.peak_bandwidth_gbs("Some future card") is None
    # 8 qubits, depth 4: 8 * (2 + 8) + 8 = 88 gates; 3 passes x (read + write) x 8 bytes x 65536 x 256 amplitudes
    assert gpu_check.qdi_traffic_bytes(8, 4, 65536, 8) == 3 * 2 * 8 * 65536 * 256 * 88
    assert gpu_check.qdi_batch(8) * 2**8 == 2**24 and gpu_check.qdi_batch(16) * 2**16 == 2**24
    assert gpu_check.qdi_batch(22) == 16


def test_simulator_rows_and_table_on_cpu(monkeypatch):
    monkeypatch.setattr(gpu_check, "QUBITS", [3])
    monkeypatch.setattr(gpu_check, "qdi_batch", lambda n: 4)
    rows = gpu_check.bench_simulator("NVIDIA H200", depth=1, repeats=1)
    (row,) = rows
    assert row["n_qubits"] == 3 and row["batch"] == 4 and row["peak_gbs"] == 4800.0
    from qallegro.quantum import QDIConfig

    n_outputs = QDIConfig(n_qubits=3, depth=1).n_outputs
    expected = gpu_check.qdi_traffic_bytes(3, 1, 4, n_outputs) / row["seconds"] / 1e9
    assert row["achieved_gbs"] == pytest.approx(expected)
    assert row["fraction_of_peak"] == pytest.approx(expected / 4800.0)
    report = {"device": "NVIDIA H200", "date": "d", "jax": "j", "tests": {"summary": "5 passed"}, "simulator": rows,
              "potential": {"inference": {"4000": {"median_ms": 12.5, "compile_s": 3.0}},
                            "md": {"4000": {"atom_steps_per_s": 1.5e6, "ms_per_step": 2.7},
                                   "16384": {"error": "exit 1: out of memory"}},
                            "train": {"median_ms": 8.25, "compile_s": 20.0}}}
    md = gpu_check.markdown(report)
    assert "| 4000 | 12.50 | 3.0 | 1.5e+06 | 2.70 |" in md
    assert "| 16384 | — | — | — | — |" in md and "16384 atoms, MD failed: exit 1: out of memory" in md
    assert "8.25 ms" in md
