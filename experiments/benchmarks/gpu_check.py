"""`make gpu-check`: the GPU-relevant tests and three GPU benchmarks, tables in experiments/results/gpu/.

    python experiments/benchmarks/gpu_check.py --preflight     # stdlib only: is there an NVIDIA GPU at all?
    python -m experiments.benchmarks.gpu_check [--skip-tests] [--out experiments/results/gpu]

Without a GPU both stop at once with one line on stderr and exit status 1 (the preflight before anything is
installed, the run when JAX's default backend is not ``gpu``, e.g. without the ``cuda`` extra).

On a GPU, in this order (each benchmark runs the existing scripts' code, at GPU sizes):

1. the GPU-relevant tests (statevector simulator, forces, equivariance, float64 energies, MD), ``pytest -x``;
2. the QDI simulator (`experiments.benchmarks.quantum.bench_ours`: expectations and their gradient w.r.t. inputs
   and weights, float32) at 8, 10, 12, 14 and 16 qubits, depth 4, with the achieved memory bandwidth
   ``B = bytes / t`` against the card's peak. ``bytes`` is a traffic model, a lower bound: every gate
   application reads and writes the whole ``(batch, 2**n)`` complex64 state once, forward and twice backward
   (``3 * 2 * 8 * batch * 2**n * n_gates`` bytes, ``n_gates = n * (2 + 2 * depth) + n_outputs``);
3. energy + forces per call and MD throughput (jax-md NVE, atom-steps/s) for the 4,000- and 16,384-atom Cu–Li
   cells, and one training step on 5 aspirin frames (`experiments.benchmarks.peer.qallegro_worker`, each in its
   own process, float32, random weights, the peer benchmark's model).

Writes gpu_check.md and gpu_check.json into --out.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

#: Tests whose code paths run on the accelerator (kernels, float64 sums, neighbour lists, MD).
GPU_TESTS = ["tests/test_quantum_simulator.py", "tests/test_forces.py", "tests/test_equivariance.py",
             "tests/test_energy_precision.py", "tests/test_potential_md.py"]
QUBITS = [8, 10, 12, 14, 16]
#: Peak memory bandwidth, GB/s (vendor data sheets), by a substring of the device name, most specific first.
PEAK_BANDWIDTH_GBS = [("H200", 4800.0), ("H100 PCIe", 2000.0), ("H100", 3350.0), ("GH200", 4000.0),
                      ("B200", 8000.0), ("A100-SXM4-80GB", 2039.0), ("A100 80GB PCIe", 1935.0), ("A100", 1555.0),
                      ("L40S", 864.0), ("L4", 300.0), ("A10", 600.0), ("V100", 900.0), ("T4", 320.0),
                      ("RTX 4090", 1008.0), ("RTX 3090", 936.0)]


class NoGPUError(RuntimeError):
    """No usable NVIDIA GPU: none on the machine, or JAX does not see one."""


def find_nvidia_gpus(nvidia_smi: str | None = None) -> list[str]:
    """Names of the NVIDIA GPUs that ``nvidia-smi -L`` lists ([] when it is missing, fails or lists none)."""
    exe = nvidia_smi or shutil.which("nvidia-smi")
    if not exe or not os.path.exists(exe):
        return []
    try:
        proc = subprocess.run([exe, "-L"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return []
    if proc.returncode != 0:
        return []
    return [line.strip() for line in proc.stdout.splitlines() if line.startswith("GPU ")]


def preflight(nvidia_smi: str | None = None) -> str:
    """The first GPU's ``nvidia-smi -L`` line. Raises NoGPUError with a one-line reason when there is none."""
    gpus = find_nvidia_gpus(nvidia_smi)
    if not gpus:
        raise NoGPUError("gpu-check: no NVIDIA GPU on this machine (`nvidia-smi -L` lists none); "
                         "run `make gpu-check` on a machine with one")
    return gpus[0]


def require_jax_gpu():
    """JAX's first GPU device. Raises NoGPUError when JAX's default backend is not ``gpu``."""
    import jax

    backend = jax.default_backend()
    if backend != "gpu":
        raise NoGPUError(f"gpu-check: JAX runs on '{backend}', not on a GPU (is the cuda extra installed? "
                         "`make gpu-check` installs it)")
    return jax.devices()[0]


def peak_bandwidth_gbs(device_name: str) -> float | None:
    """Data-sheet peak memory bandwidth (GB/s) of a device by its name, or None for a card not in the table."""
    for key, gbs in PEAK_BANDWIDTH_GBS:
        if key.lower() in device_name.lower():
            return gbs
    return None


def qdi_traffic_bytes(n_qubits: int, depth: int, batch: int, n_outputs: int) -> int:
    """Lower-bound bytes moved by one forward + backward QDI call (see the module docstring for the model)."""
    n_gates = n_qubits * (2 + 2 * depth) + n_outputs
    return 3 * 2 * 8 * batch * 2**n_qubits * n_gates


def qdi_batch(n_qubits: int) -> int:
    """Batch per qubit count: ``2**24`` amplitudes per call (128 MiB of complex64 state), at least 16 circuits."""
    return max(16, 2 ** (24 - n_qubits))


def run_tests(timeout: float) -> dict:
    cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *GPU_TESTS]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    tail = (proc.stdout + proc.stderr).strip().splitlines()
    return {"returncode": proc.returncode, "seconds": time.perf_counter() - t0, "summary": tail[-1] if tail else "",
            "files": GPU_TESTS}


def bench_simulator(device_name: str, depth: int, repeats: int) -> list[dict]:
    from experiments.benchmarks.quantum import _problem, bench_ours

    peak = peak_bandwidth_gbs(device_name)
    rows = []
    for n in QUBITS:
        batch = qdi_batch(n)
        cfg, x, w, ct = _problem(n, depth, batch)
        r = bench_ours(cfg, x, w, ct, repeats)
        gbs = qdi_traffic_bytes(n, depth, batch, cfg.n_outputs) / r["seconds"] / 1e9
        rows.append({"n_qubits": n, "depth": depth, "batch": batch, "method": r["method"], "seconds": r["seconds"],
                     "compile_s": r["compile_s"], "achieved_gbs": gbs, "peak_gbs": peak,
                     "fraction_of_peak": gbs / peak if peak else None})
        print(f"QDI n={n} batch={batch}: {1e3 * r['seconds']:.2f} ms, {gbs:.0f} GB/s", flush=True)
    return rows


def bench_potential(timeout: float, md_steps: int) -> dict:
    from ase.io import write

    from experiments.benchmarks.peer import CULI_SIZES, aspirin_atoms, culi_atoms, run_process

    workdir = tempfile.mkdtemp(prefix="qallegro-gpu-")
    cmd = [sys.executable, "-m", "experiments.benchmarks.peer", "--worker"]
    out: dict = {"inference": {}, "md": {}}
    for size in ("4000", "16384"):
        path = os.path.join(workdir, f"culi-{size}.extxyz")
        write(path, culi_atoms(CULI_SIZES[size]))
        base = {"structure": path, "species": [3, 29], "avg_num_neighbors": 42.0}
        out["inference"][size] = run_process(cmd, dict(base, task="inference", repeats=10, warmup=2), workdir,
                                             timeout)
        out["md"][size] = run_process(cmd, dict(base, task="md", steps=md_steps, log_every=md_steps // 4),
                                      workdir, timeout)
        print(f"Cu–Li {size}: energy+forces {out['inference'][size].get('median_ms')} ms, "
              f"MD {out['md'][size].get('atom_steps_per_s')} atom-steps/s", flush=True)
    batch = os.path.join(workdir, "aspirin-batch5.extxyz")
    write(batch, aspirin_atoms(frames=(0, 100, 200, 300, 400)))
    out["train"] = run_process(cmd, {"task": "train", "batch": batch, "species": [1, 6, 8],
                                     "avg_num_neighbors": 14.4, "repeats": 10, "warmup": 2}, workdir, timeout)
    print(f"training step: {out['train'].get('median_ms')} ms", flush=True)
    return out


def _f(x, fmt: str) -> str:
    return "—" if x is None else format(x, fmt)


def markdown(report: dict) -> str:
    lines = [f"# gpu-check on {report['device']} ({report['date']})", "",
             f"jax {report['jax']}; tests: {report['tests'].get('summary', 'skipped')}", "",
             "## QDI simulator (forward + gradient, float32, depth 4)", "",
             "| qubits | batch | path | ms per call | compile s | achieved GB/s (model) | peak GB/s | of peak |",
             "|---:|---:|---|---:|---:|---:|---:|---:|"]
    for r in report["simulator"]:
        lines.append(f"| {r['n_qubits']} | {r['batch']} | {r['method']} | {1e3 * r['seconds']:.2f} | "
                     f"{r['compile_s']:.1f} | {r['achieved_gbs']:.0f} | {_f(r['peak_gbs'], '.0f')} | "
                     f"{_f(r['fraction_of_peak'], '.0%')} |")
    pot = report["potential"]
    lines += ["", "## Allegro on Cu–Li cells (float32, random weights)", "",
              "| atoms | energy+forces ms | compile s | MD atom-steps/s | MD ms/step |", "|---:|---:|---:|---:|---:|"]
    for size in ("4000", "16384"):
        inf, md = pot["inference"].get(size, {}), pot["md"].get(size, {})
        lines.append(f"| {size} | {_f(inf.get('median_ms'), '.2f')} | {_f(inf.get('compile_s'), '.1f')} | "
                     f"{_f(md.get('atom_steps_per_s'), '.3g')} | {_f(md.get('ms_per_step'), '.2f')} |")
        for name, rec in (("energy+forces", inf), ("MD", md)):
            if "error" in rec:
                lines.append(f"\n{size} atoms, {name} failed: {rec['error'][:300]}\n")
    tr = pot.get("train", {})
    lines += ["", f"One training step (5 aspirin frames, energy + forces loss, Adam): "
                  f"{_f(tr.get('median_ms'), '.2f')} ms (compile {_f(tr.get('compile_s'), '.1f')} s)", ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preflight", action="store_true", help="only check for an NVIDIA GPU (stdlib, no JAX)")
    p.add_argument("--out", default=os.path.join(ROOT, "experiments", "results", "gpu"))
    p.add_argument("--skip-tests", action="store_true")
    p.add_argument("--depth", type=int, default=4)
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--md-steps", type=int, default=200)
    p.add_argument("--timeout", type=float, default=240.0, help="per test run / benchmark process, seconds")
    args = p.parse_args(argv)
    try:
        gpu = preflight()
        if args.preflight:
            print(f"gpu-check: {gpu}")
            return 0
        device = require_jax_gpu()
    except NoGPUError as e:
        print(e, file=sys.stderr)
        return 1
    import jax

    t0 = time.perf_counter()
    tests = {} if args.skip_tests else run_tests(args.timeout)
    if tests and tests["returncode"] != 0:
        print(f"gpu-check: GPU tests failed: {tests['summary']}", file=sys.stderr)
    report = {"device": device.device_kind, "nvidia_smi": gpu, "jax": jax.__version__,
              "date": time.strftime("%Y-%m-%d %H:%M"), "platform": platform.platform(), "tests": tests,
              "simulator": bench_simulator(device.device_kind, args.depth, args.repeats),
              "potential": bench_potential(args.timeout, args.md_steps)}
    report["total_s"] = time.perf_counter() - t0
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "gpu_check.json"), "w") as f:
        json.dump(report, f, indent=1, default=float)
    with open(os.path.join(args.out, "gpu_check.md"), "w") as f:
        f.write(markdown(report))
    print(markdown(report))
    return 0 if not tests or tests["returncode"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
