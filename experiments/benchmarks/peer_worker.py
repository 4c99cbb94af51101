"""The PyTorch side of experiments/benchmarks/peer.py: runs in the peer venv (.venv-peer: torch 2.13.0 CPU,
nequip 0.19, nequip-allegro 0.8; `make peer-venv`), never imported by qallegro.

    .venv-peer/bin/python experiments/benchmarks/peer_worker.py SPEC.json OUT.json

SPEC: {"hparams": {...AllegroModel kwargs...}, "threads": 2, "mode": "eager" | "aotinductor",
       "task": "inference" | "train", "structure": extxyz path, "type_names": [...], "repeats": R, "warmup": W,
       "batch": extxyz path of the training batch (task "train"), "workdir": dir for the compiled package}
OUT: {"median_ms", "p10_ms", "p90_ms", "times_ms", "peak_rss_mb", "baseline_rss_mb", "compile_s", "energy",
      "n_atoms", "n_edges", "torch", "nequip", "allegro"}
One (structure, mode, task) per process, so peak RSS belongs to that measurement alone.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return float(line.split()[1]) / 1024.0
    return float("nan")


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def main(spec_path: str, out_path: str) -> int:
    spec = json.load(open(spec_path))
    # nequip compares the compiled and eager outputs after export; for a molecule the ASE target's stress is NaN
    # on both sides and the check fails, so it is skipped (read at import time, hence set first).
    os.environ.setdefault("NEQUIP_SKIP_AOTI_MODEL_CHECK", "1")
    import torch

    torch.set_num_threads(int(spec.get("threads", 2)))
    import allegro
    import nequip
    from allegro.model import AllegroModel
    from ase.io import read
    from nequip.data import AtomicDataDict, from_ase
    from nequip.data.transforms import ChemicalSpeciesToAtomTypeMapper, NeighborListTransform
    from nequip.utils.global_state import set_global_state

    set_global_state()  # as nequip-train / nequip-compile do (float64 defaults for data, TF32 off)
    hp = dict(spec["hparams"])
    type_names = spec["type_names"]
    model = AllegroModel(seed=0, model_dtype=spec.get("dtype", "float32"), type_names=type_names, **hp)
    model.eval()
    transforms = [ChemicalSpeciesToAtomTypeMapper(model_type_names=type_names,
                                                  chemical_species_to_atom_type_map={t: t for t in type_names}),
                  NeighborListTransform(r_max=hp["r_max"])]

    def to_data(atoms):
        data = from_ase(atoms)
        for t in transforms:
            data = t(data)
        return data

    result = {"torch": torch.__version__, "nequip": nequip.__version__, "allegro": allegro.__version__,
              "mode": spec["mode"], "task": spec["task"], "threads": torch.get_num_threads()}
    repeats, warmup = int(spec.get("repeats", 10)), int(spec.get("warmup", 3))

    if spec["task"] == "inference":
        atoms = read(spec["structure"])
        data = to_data(atoms)
        result["n_atoms"] = len(atoms)
        result["n_edges"] = int(data[AtomicDataDict.EDGE_INDEX_KEY].shape[1])
        baseline = rss_mb()
        start = time.perf_counter()
        if spec["mode"] == "aotinductor":
            # nequip-compile --mode aotinductor --target ase, called as a function on the in-memory model
            from nequip.nn.compile import DictInputOutputWrapper
            from nequip.scripts._compile_utils import ASE_TARGET
            from nequip.utils.aot import aot_export_model

            fields_in, fields_out = ASE_TARGET["input"], ASE_TARGET["output"]
            batch_map = ASE_TARGET["batch_map_settings"]({
                "graph": torch.export.Dim.STATIC,
                "node": torch.export.Dim("num_nodes", min=2, max=1_000_000),
                "edge": torch.export.Dim("num_edges", min=2, max=100_000_000)})
            export_data = ASE_TARGET["data_settings"](dict(data))
            os.makedirs(spec["workdir"], exist_ok=True)
            path = spec.get("package") or os.path.join(spec["workdir"], f"allegro-{os.getpid()}.nequip.pt2")
            if not os.path.exists(path):  # compiled once (dynamic atom / edge counts), reused by later sizes
                t_export = time.perf_counter()
                aot_export_model(model=model, device="cpu", input_fields=fields_in, output_fields=fields_out,
                                 data=export_data, batch_map=batch_map, output_path=path,
                                 inductor_configs={}, seed=1)
                result["aot_export_s"] = time.perf_counter() - t_export
            compiled = DictInputOutputWrapper(torch._inductor.aoti_load_package(path), fields_in, fields_out)
            inputs = {k: export_data[k] for k in fields_in}

            def call():
                return compiled(inputs)
        else:
            def call():
                return model(dict(data))

        out = call()
        result["compile_s"] = time.perf_counter() - start  # export + AOT compile, or the first eager call
        for _ in range(warmup - 1):
            call()
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            out = call()
            _ = out[AtomicDataDict.FORCE_KEY].sum().item()  # synchronous on CPU; keep the result alive
            times.append(1000.0 * (time.perf_counter() - t0))
        result["energy"] = float(out[AtomicDataDict.TOTAL_ENERGY_KEY].detach().sum())
    else:
        # one training step on a batch: energy + forces (autograd, create_graph), MSE loss, backward, Adam
        frames = read(spec["batch"], index=":")
        batch = AtomicDataDict.batched_from_list([to_data(a) for a in frames])
        e_ref = torch.tensor([a.get_potential_energy() for a in frames], dtype=torch.float32)
        f_ref = torch.cat([torch.tensor(a.get_forces(), dtype=torch.float32) for a in frames])
        result["n_atoms"] = int(sum(len(a) for a in frames))
        model.train()
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        n_atoms = batch[AtomicDataDict.NUM_NODES_KEY].to(torch.float32)
        baseline = rss_mb()

        def call():
            optimizer.zero_grad()
            out = model(dict(batch))
            e = out[AtomicDataDict.TOTAL_ENERGY_KEY].reshape(-1)
            forces_mse = torch.mean((out[AtomicDataDict.FORCE_KEY] - f_ref) ** 2)
            loss = torch.mean(((e - e_ref) / n_atoms) ** 2) + 1000.0 * forces_mse
            loss.backward()
            optimizer.step()
            return loss

        start = time.perf_counter()
        call()
        result["compile_s"] = time.perf_counter() - start
        for _ in range(warmup - 1):
            call()
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            call().item()
            times.append(1000.0 * (time.perf_counter() - t0))
    import numpy as np

    result.update(median_ms=float(np.median(times)), p10_ms=float(np.percentile(times, 10)),
                  p90_ms=float(np.percentile(times, 90)), times_ms=times, baseline_rss_mb=baseline,
                  peak_rss_mb=peak_rss_mb())
    with open(out_path, "w") as f:
        json.dump(result, f)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
