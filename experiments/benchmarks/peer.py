"""qallegro vs PyTorch Allegro (PyPI nequip-allegro 0.8, torch 2.13.0 CPU, in .venv-peer; `make peer-venv`).

    python -m experiments.benchmarks.peer [--quick] [--sizes 3,6x6x7,10,16] [--out experiments/results]

In one script run, with the same hyperparameters, structures and dtype (float32):
  1. energy + forces time per call (median after warm-up) for aspirin (21 atoms, an rMD17 test frame) and
     Cu–Li-like fcc supercells (a = 3.6 Å, 25 % of the sites Li, random): 108, 1008, 4000, 16384 atoms;
     periodic cells also give the stress on both sides (nequip's model always computes it when a cell is given);
     peak resident memory of the process (and above its baseline after imports);
  2. the fitted scaling exponent b of t ~ N^b over the Cu–Li cells;
  3. one training step (energy + forces, loss, backward, Adam) on a batch of 5 aspirin frames;
  4. qallegro MD throughput (jax-md NVE, atom-steps/s, compile excluded) for aspirin and the 4000-atom cell.
Every measurement runs in a fresh process (peak memory is that measurement's own); the peer runs through
experiments/benchmarks/peer_worker.py in its venv, eager and AOTInductor-compiled (nequip-compile --mode
aotinductor --target ase, called as a function; compiled once with dynamic atom/edge counts and reused for all
sizes). At the largest sizes only the peer mode that was faster at 1008 atoms is run, with fewer repeats.
Writes peer_benchmark.md and peer_benchmark.json into --out.

Both models: r_max 5 Å, l_max 2, no odd-parity extras (parity False), 2 Allegro layers, 16 tensor channels,
128 scalar latent features, 8 Bessel functions with a p = 6 polynomial cutoff, two-body MLP 32 -> 64 -> 128
(nequip: radial-chemical embedding of width 32, then scalar-embed MLP with one hidden layer of 64 -> 128),
latent MLP one hidden layer of 128, readout MLP one hidden layer of 32, SiLU, trainable tensor-product
path-channel weights (`tp_path_channel_coupling=True`, nequip's default, set explicitly on both sides). Weights
are random (timings do not depend on their values).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from typing import Any, Dict, List

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PEER_PYTHON = os.path.join(ROOT, ".venv-peer", "bin", "python")
PEER_WORKER = os.path.join(ROOT, "experiments", "benchmarks", "peer_worker.py")
ASPIRIN_NPZ = os.path.join(ROOT, "experiments", "data", "rmd17_aspirin_test_01.npz")

QALLEGRO_MODEL = dict(family="allegro", r_max=5.0, l_max=2, num_layers=2, num_tensor_features=16,
                      two_body_mlp=[32, 64, 128], latent_mlp=[128], readout_mlp=[32], parity=False, num_bessel=8,
                      cutoff_p=6.0, activation="silu", tp_path_channel_coupling=True,
                      architecture="nequip-allegro-0.8")
PEER_MODEL = dict(r_max=5.0, l_max=2, parity=False,
                  radial_chemical_embed={"_target_": "allegro.nn.TwoBodyBesselScalarEmbed", "num_bessels": 8,
                                         "bessel_trainable": False, "polynomial_cutoff_p": 6},
                  radial_chemical_embed_dim=32, scalar_embed_mlp_hidden_layers_depth=1,
                  scalar_embed_mlp_hidden_layers_width=64, num_layers=2, num_scalar_features=128,
                  num_tensor_features=16, allegro_mlp_hidden_layers_depth=1, allegro_mlp_hidden_layers_width=128,
                  readout_mlp_hidden_layers_depth=1, readout_mlp_hidden_layers_width=32, tp_path_channel_coupling=True)
#: (mode, torch threads) tried at every size up to ~1000 atoms; the fastest at 1008 atoms runs the larger cells.
#: One thread is included because on a loaded 2-core machine torch's two threads can be several times slower.
PEER_CONFIGS = [("eager", 1), ("aotinductor", 1), ("aotinductor", 2)]
CULI_SIZES = {"108": (3, 3, 3), "1008": (6, 6, 7), "4000": (10, 10, 10), "16384": (16, 16, 16)}


# ---- structures --------------------------------------------------------------------------------------------

def aspirin_atoms(frames=(0,)):
    from ase import Atoms
    from ase.calculators.singlepoint import SinglePointCalculator

    from qallegro.data.readers import read_structures

    structures = read_structures(ASPIRIN_NPZ)
    out = []
    for k in frames:
        s = structures[k]
        atoms = Atoms(numbers=s.Z, positions=s.positions)
        atoms.calc = SinglePointCalculator(atoms, energy=s.energy, forces=s.forces)
        out.append(atoms)
    return out


def culi_atoms(repeat, seed=0):
    import ase.build

    atoms = ase.build.bulk("Cu", "fcc", a=3.6, cubic=True).repeat(repeat)
    rng = np.random.default_rng(seed)
    atoms.numbers[rng.permutation(len(atoms))[: len(atoms) // 4]] = 3
    atoms.rattle(0.02, seed=seed)
    return atoms


# ---- qallegro worker (runs in a fresh process) ----------------------------------------------------------------

def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return float(line.split()[1]) / 1024.0
    return float("nan")


def qallegro_worker(spec: Dict[str, Any]) -> Dict[str, Any]:
    import jax
    import jax.numpy as jnp
    import jraph
    from ase.io import read

    from qallegro.data.graphs import batch_and_pad, structure_to_graph
    from qallegro.data.structure import make_structure
    from qallegro.models import build_model
    from qallegro.potential.graph import jit_energy_forces_stress
    from qallegro.train.setup import init_params

    species = spec["species"]
    config = dict(QALLEGRO_MODEL, num_species=len(species), avg_num_neighbors=spec["avg_num_neighbors"],
                  species_scale=[1.0] * len(species), species_shift=[0.0] * len(species))  # a Potential needs them
    model = build_model(config)
    repeats, warmup = int(spec.get("repeats", 1)), int(spec.get("warmup", 1))
    result: Dict[str, Any] = {"jax": jax.__version__, "backend": jax.default_backend()}

    def as_graph(atoms_list):
        graphs = []
        for a in atoms_list:
            periodic = bool(a.pbc.any())
            forces = a.get_forces() if a.calc is not None else None
            energy = a.get_potential_energy() if a.calc is not None else None
            s = make_structure(a.numbers, a.positions, a.cell.array if periodic else None, periodic,
                               energy=energy, forces=forces)
            graphs.append(structure_to_graph(s, config["r_max"], species))
        if spec.get("padding") == "ladder":
            g = batch_and_pad(graphs)
        else:  # tight: the peer runs on exact (dynamic) shapes, so pad edges only to a multiple of 64
            batch = jraph.batch_np(graphs)
            n_edge = int(batch.n_edge.sum())
            g = jraph.pad_with_graphs(batch, n_node=int(batch.n_node.sum()) + 1, n_edge=-(-n_edge // 64) * 64,
                                      n_graph=len(graphs) + 1)
        return g._replace(nodes=dict(g.nodes, positions=g.nodes["positions"].astype(np.float32)))

    def timed(call):
        start = time.perf_counter()
        jax.block_until_ready(call())
        compile_s = time.perf_counter() - start
        for _ in range(warmup - 1):
            jax.block_until_ready(call())
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            jax.block_until_ready(call())
            times.append(1000.0 * (time.perf_counter() - t0))
        return compile_s, times

    if spec["task"] == "inference":
        atoms = read(spec["structure"])
        graph = as_graph([atoms])
        params = init_params(model, graph, 0, jnp.float32)
        graph = jax.device_put(graph)
        stress = bool(atoms.pbc.any())
        result.update(n_atoms=len(atoms), n_edges=int(np.sum(np.asarray(graph.n_edge)[:-1])),
                      padded_edges=int(graph.senders.shape[0]))
        baseline = _rss_mb()
        compile_s, times = timed(lambda: jit_energy_forces_stress(model, params, graph, stress))
    elif spec["task"] == "train":
        from qallegro.train.config import TrainConfig
        from qallegro.train.step import init_train_state, make_steps

        frames = read(spec["batch"], index=":")
        graph = as_graph(frames)
        params = init_params(model, graph, 0, jnp.float32)
        optimizer, train_step, _ = make_steps(model, TrainConfig(batch_size=len(frames)), compute_stress=False)
        state = {"s": init_train_state(params, optimizer)}
        graph = jax.device_put(graph)
        result["n_atoms"] = int(sum(len(a) for a in frames))
        baseline = _rss_mb()

        def step():
            state["s"], loss = train_step(state["s"], graph)
            return loss

        compile_s, times = timed(step)
    else:  # md throughput
        from qallegro.md import build_system, run_md
        from qallegro.potential import Potential

        atoms = read(spec["structure"])
        periodic = bool(atoms.pbc.any())
        graph = as_graph([atoms])
        params = init_params(model, graph, 0, jnp.float32)
        if spec.get("model_path"):
            from qallegro.potential import load

            potential = load(spec["model_path"])
        else:
            potential = Potential(config, params, species)
        system = build_system(potential, atoms.positions, atoms.numbers, atoms.cell.array if periodic else None,
                              periodic)
        steps, log_every = int(spec["steps"]), int(spec["log_every"])
        baseline = _rss_mb()
        t0 = time.perf_counter()
        run_md(system, "nve", log_every, 0.5, 300.0, log_every=log_every, keep_frames=False)  # compile + warm-up
        compile_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        md = run_md(system, "nve", steps, 0.5, 300.0, log_every=log_every, keep_frames=False)
        wall = time.perf_counter() - t0
        times = [1000.0 * wall / steps]
        result.update(n_atoms=len(atoms), steps=steps, atom_steps_per_s=len(atoms) * steps / wall,
                      ms_per_step=1000.0 * wall / steps, reallocations=md.reallocations,
                      model=spec.get("model_path") or "random weights")
    result.update(compile_s=compile_s, median_ms=float(np.median(times)), p10_ms=float(np.percentile(times, 10)),
                  p90_ms=float(np.percentile(times, 90)), times_ms=times, baseline_rss_mb=baseline,
                  peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0)
    return result


# ---- driver ----------------------------------------------------------------------------------------------------

def run_process(cmd: List[str], spec: Dict[str, Any], workdir: str, timeout: float) -> Dict[str, Any]:
    fd, spec_path = tempfile.mkstemp(suffix=".json", dir=workdir)
    os.close(fd)
    out_path = spec_path.replace(".json", ".out.json")
    with open(spec_path, "w") as f:
        json.dump(spec, f)
    try:
        proc = subprocess.run(cmd + [spec_path, out_path], cwd=ROOT, capture_output=True, text=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"did not finish within {timeout:.0f} s"}
    if proc.returncode != 0 or not os.path.exists(out_path):
        tail = (proc.stderr or proc.stdout)[-1500:]
        return {"error": f"exit {proc.returncode}: {tail}"}
    with open(out_path) as f:
        return json.load(f)


def fit_exponent(n: List[float], t: List[float]) -> float:
    """b of the least-squares line log t = a + b log N."""
    if len(n) < 2:
        return float("nan")
    return float(np.polyfit(np.log(n), np.log(t), 1)[0])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=os.path.join(ROOT, "experiments", "results"))
    parser.add_argument("--sizes", default="108,1008,4000,16384", help="Cu–Li cell sizes (of 108,1008,4000,16384)")
    parser.add_argument("--quick", action="store_true", help="fewer repeats (a smoke run)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (XLA uses all cores given)")
    parser.add_argument("--timeout", type=float, default=1800.0, help="per measurement process, seconds")
    parser.add_argument("--skip-md", action="store_true")
    parser.add_argument("--worker", nargs=2, metavar=("SPEC", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        spec = json.load(open(args.worker[0]))
        with open(args.worker[1], "w") as f:
            json.dump(qallegro_worker(spec), f)
        return 0
    if not os.path.exists(PEER_PYTHON):
        raise SystemExit(f"peer venv missing: {PEER_PYTHON}; run `make peer-venv`")

    from ase.io import write

    workdir = tempfile.mkdtemp(prefix="qallegro-peer-")
    qallegro_cmd = [sys.executable, "-m", "experiments.benchmarks.peer", "--worker"]
    peer_cmd = [PEER_PYTHON, PEER_WORKER]
    structures = {"aspirin (21)": (aspirin_atoms()[0], [1, 6, 8], ["H", "C", "O"], 14.4)}
    for size in args.sizes.split(","):
        structures[f"Cu–Li {size}"] = (culi_atoms(CULI_SIZES[size]), [3, 29], ["Li", "Cu"], 42.0)
    paths = {}
    for name, (atoms, *_rest) in structures.items():
        paths[name] = os.path.join(workdir, f"{len(atoms)}.extxyz")
        write(paths[name], atoms)
    batch_path = os.path.join(workdir, "aspirin-batch5.extxyz")
    write(batch_path, aspirin_atoms(frames=(0, 100, 200, 300, 400)))

    def repeats_for(n, peer=False):
        if args.quick:
            return 2
        if n <= 1100:
            return 5 if peer else 10
        if n <= 5000:
            return 3 if peer else 5
        return 1 if peer else 3

    records: Dict[str, Dict[str, Any]] = {}
    log = lambda msg: print(msg, flush=True)  # noqa: E731
    peer_fast_mode = None
    package = os.path.join(workdir, "allegro-aoti.nequip.pt2")
    for name, (atoms, species, type_names, ann) in structures.items():
        n = len(atoms)
        rec = records[name] = {"n_atoms": n}
        spec = {"task": "inference", "structure": paths[name], "species": species, "avg_num_neighbors": ann,
                "repeats": repeats_for(n), "warmup": 2 if n < 5000 else 1}
        rec["qallegro"] = run_process(qallegro_cmd, spec, workdir, args.timeout)
        log(f"{name}: qallegro {rec['qallegro'].get('median_ms', rec['qallegro'].get('error'))} ms")
        configs = PEER_CONFIGS if (n <= 1100 or peer_fast_mode is None) else [peer_fast_mode]
        for mode, threads in configs:
            key = f"peer_{mode}_t{threads}"
            pspec = {"task": "inference", "mode": mode, "structure": paths[name], "type_names": type_names,
                     "hparams": dict(PEER_MODEL, avg_num_neighbors=ann), "threads": threads,
                     "repeats": repeats_for(n, peer=True), "warmup": 2 if n < 5000 else 1, "workdir": workdir,
                     "package": package if type_names == ["Li", "Cu"] else os.path.join(workdir, "asp.nequip.pt2")}
            rec[key] = run_process(peer_cmd, pspec, workdir, args.timeout)
            log(f"{name}: {key} {rec[key].get('median_ms', rec[key].get('error'))} ms")
        if 500 < n <= 1100:
            times = {c: rec[f"peer_{c[0]}_t{c[1]}"].get("median_ms", np.inf) for c in PEER_CONFIGS}
            peer_fast_mode = min(times, key=times.get)
    # training step
    train = {"qallegro": run_process(qallegro_cmd, {"task": "train", "batch": batch_path, "species": [1, 6, 8],
                                                    "avg_num_neighbors": 14.4, "repeats": 2 if args.quick else 10,
                                                    "warmup": 2}, workdir, args.timeout)}
    for threads in (1, 2):
        train[f"peer_eager_t{threads}"] = run_process(
            peer_cmd, {"task": "train", "mode": "eager", "batch": batch_path, "type_names": ["H", "C", "O"],
                       "threads": threads, "hparams": dict(PEER_MODEL, avg_num_neighbors=14.4),
                       "repeats": 2 if args.quick else 10, "warmup": 2, "workdir": workdir}, workdir, args.timeout)
    log("train step: " + ", ".join(f"{k} {v.get('median_ms', v.get('error'))} ms" for k, v in train.items()))
    md = {}
    if not args.skip_md:
        aspirin_model = os.path.join(ROOT, "tests", "data", "aspirin-allegro-cpu-6min.qallegro")
        md["aspirin (21)"] = run_process(qallegro_cmd, {"task": "md", "structure": paths["aspirin (21)"],
                                                        "species": [1, 6, 8], "avg_num_neighbors": 14.4,
                                                        "model_path": aspirin_model,
                                                        "steps": 400 if args.quick else 2000, "log_every": 100},
                                         workdir, args.timeout)
        if "Cu–Li 4000" in structures:
            md["Cu–Li 4000"] = run_process(qallegro_cmd, {"task": "md", "structure": paths["Cu–Li 4000"],
                                                          "species": [3, 29], "avg_num_neighbors": 42.0,
                                                          "steps": 10, "log_every": 5},
                                           workdir, args.timeout)
        for k, v in md.items():
            log(f"MD {k}: {v.get('atom_steps_per_s', v.get('error'))} atom-steps/s")
    report = {"records": records, "train": train, "md": md, "peer_fast_mode_large": peer_fast_mode,
              "qallegro_model": QALLEGRO_MODEL, "peer_model": PEER_MODEL, "threads": args.threads,
              "machine": {"platform": platform.platform(), "processor": platform.processor(),
                          "cpus": os.cpu_count(), "loadavg_end": os.getloadavg()},
              "date": time.strftime("%Y-%m-%d %H:%M")}
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "peer_benchmark.json"), "w") as f:
        json.dump(report, f, indent=1, default=float)
    with open(os.path.join(args.out, "peer_benchmark.md"), "w") as f:
        f.write(markdown(report))
    print(markdown(report))
    return 0


def _best(rec: Dict[str, Any], mode: str) -> Dict[str, Any]:
    """The fastest successful peer measurement of `mode` in a record (over thread counts), or {}."""
    runs = [v for k, v in rec.items() if k.startswith(f"peer_{mode}_t") and isinstance(v, dict)]
    ok = [r for r in runs if "median_ms" in r]
    if ok:
        return min(ok, key=lambda r: r["median_ms"])
    return runs[0] if runs else {}


def _ms(rec: Dict[str, Any]) -> float:
    return float(rec.get("median_ms", np.nan)) if isinstance(rec, dict) else np.nan


def markdown(report: Dict[str, Any]) -> str:
    lines = ["# qallegro vs PyTorch Allegro (nequip-allegro 0.8) on CPU", "",
             f"Run {report['date']} on {report['machine']['cpus']} CPU cores "
             f"({report['machine']['processor'] or 'x86_64'}), "
             f"torch threads {report['threads']}, float32, no GPU. Load average at the end: "
             f"{', '.join(f'{x:.1f}' for x in report['machine']['loadavg_end'])} (the machine is shared).", "",
             "Times are medians per call after warm-up of energy + forces (+ stress for the periodic cells, which "
             "nequip's model always computes when a cell is given; qallegro computes it too there), on a prebuilt "
             "neighbour list (qallegro: jit-compiled function of the graph padded to a multiple of 64 edges; "
             "the peer: its model on exact shapes). Memory is the peak resident set of the measuring process "
             "(above its baseline after imports in brackets). Ratio = qallegro / fastest peer mode (goal: <= 0.5).", "",
             "| structure | atoms | qallegro ms | peer eager ms | peer AOTInductor ms | ratio | qallegro peak MB "
             "| peer peak MB |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    q_n, q_t, p_n, p_t = [], [], [], []
    for name, rec in report["records"].items():
        q = rec["qallegro"]
        peers = {m: _best(rec, m) for m in ("eager", "aotinductor")}
        best_mode = min(peers, key=lambda m: _ms(peers[m]) if np.isfinite(_ms(peers[m])) else np.inf)
        best = peers[best_mode]
        ratio = _ms(q) / _ms(best) if np.isfinite(_ms(best)) else np.nan

        def cell(r, q=q):
            if not r:
                return "—"
            if "error" in r:
                return "failed" if "did not finish" not in r["error"] else "timeout"
            threads = f" ({r['threads']}t)" if "threads" in r and r is not q else ""
            return f"{r['median_ms']:.1f}{threads}"

        def mem(r):
            if not r or "error" in r:
                return "—"
            return f"{r['peak_rss_mb']:.0f} (+{r['peak_rss_mb'] - r['baseline_rss_mb']:.0f})"

        lines.append(f"| {name} | {rec['n_atoms']} | {cell(q)} | {cell(peers['eager'])} | "
                     f"{cell(peers['aotinductor'])} | {ratio:.3f} | {mem(q)} | {mem(best)} |")
        if name.startswith("Cu"):
            if np.isfinite(_ms(q)):
                q_n.append(rec["n_atoms"]), q_t.append(_ms(q))
            if np.isfinite(_ms(best)):
                p_n.append(rec["n_atoms"]), p_t.append(_ms(best))
    lines += ["", f"Scaling exponent b of t ~ N^b over the Cu–Li cells: qallegro **{fit_exponent(q_n, q_t):.2f}** "
                  f"({len(q_n)} sizes), peer **{fit_exponent(p_n, p_t):.2f}** ({len(p_n)} sizes, fastest mode).", ""]
    tr = report["train"]
    q, p = tr["qallegro"], _best(tr, "eager")
    lines += ["One training step (energy + forces, λE·MSE(E/atom) + λF·MSE(F), backward, Adam) on 5 aspirin "
              "frames (105 atoms):", "",
              "| | qallegro (jit) | peer (eager, faster of 1 and 2 threads) | ratio |", "|---|---:|---:|---:|",
              f"| ms per step | {_ms(q):.1f} | {_ms(p):.1f} ({p.get('threads', '?')}t) | {_ms(q) / _ms(p):.3f} |", ""]
    if report["md"]:
        lines += ["qallegro MD throughput (jax-md NVE, dt 0.5 fs, neighbour list in the scan, compile excluded):", "",
                  "| system | atoms | ms / step | atom-steps / s | model |", "|---|---:|---:|---:|---|"]
        for name, r in report["md"].items():
            if "error" in r:
                lines.append(f"| {name} | — | failed | — | — |")
            else:
                lines.append(f"| {name} | {r['n_atoms']} | {r['ms_per_step']:.2f} | {r['atom_steps_per_s']:.0f} | "
                             f"{os.path.basename(r['model'])} |")
        lines.append("")
    lines += ["Matched hyperparameters: r_max 5 Å, l_max 2, parity off, 2 layers, 16 tensor channels, 128 scalar "
              "(latent) features, 8 Bessel functions, polynomial cutoff p = 6, two-body MLP 32 → 64 → 128 (nequip: "
              "radial-chemical embedding to 32, scalar-embed MLP 64 → 128), latent MLP hidden 128, readout hidden "
              "32, SiLU, avg_num_neighbors 14.4 (aspirin) / 42 (Cu–Li), trainable path-channel weights in the "
              "tensor product (`tp_path_channel_coupling=True` on both sides).",
              f"Peer configurations tried up to 1008 atoms: eager with 1 torch thread (2 threads were 2-10x slower "
              f"on this loaded machine in a first run), AOTInductor with 1 and 2 threads; the "
              f"larger cells run only the fastest at 1008 atoms, `{report['peer_fast_mode_large']}` (mode, threads). "
              "AOTInductor: compiled once per species set with dynamic atom and edge counts (compile time excluded).",
              ""]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
