"""Does a qallegro training step do what a nequip-train step does? Same weights, same batches -> same training.

Step-by-step parity of the loss and the optimiser, the part of training that tests/test_reference_architecture.py
(equal weights give equal energies and forces) does not cover. Both sides start from the reference's initial
weights (nequip-allegro 0.8's `AllegroModel` with the peer benchmark's matched model, peer.py's PEER_MODEL, copied
into qallegro's "nequip-allegro-0.8" architecture by `reference_parity.params_from_reference`) and take the same
`--steps` optimiser steps on the same batches of rMD17 aspirin frames, in float64 (or, with --dtype float32, with
float32 networks as in training: nequip's model_dtype float32, qallegro's float32 parameters under x64):

- the peer (optimizer_parity_worker.py in .venv-peer): nequip's `EnergyForceLoss`, `clip_grad_norm_`, torch
  Adam with eps / (λE + λF), nequip's `EMAWeights`, as `nequip-train` with time_to_accuracy.py's config;
- qallegro: `qallegro.train.step.make_steps(...).train_step` with the cpu profile's `TrainConfig`.

It prints and writes (--out, JSON) the largest relative loss difference over the steps, the relative weight
difference after the last step (the raw and the EMA weights) and the losses of both sides. Equal training gives
differences at float64 round-off that grow slowly with the steps (training is chaotic); a different loss,
clipping, Adam or EMA shows at the first steps. Over many steps the trajectories separate, and the means of the
loss over windows of 50 steps (``window_means``) compare how fast each side learns from the same start and data.

    .venv/bin/python -m experiments.benchmarks.optimizer_parity [--steps 200] [--seed 0] [--dtype float64]
                                                               [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from typing import Any, Dict, Optional, Sequence

import numpy as np

from experiments.benchmarks import time_to_accuracy as tta
from experiments.benchmarks.reference_parity import params_from_reference, run_peer_worker

WORKER = "optimizer_parity_worker.py"  # beside this file


def make_batches(train: Sequence[Any], batch_size: int, steps: int, seed: int) -> list:
    """`steps` batches of `batch_size` training frames: seeded permutations of the frames, one after another."""
    rng = np.random.default_rng(seed)
    order: list = []
    while len(order) < steps * batch_size:
        order += rng.permutation(len(train)).tolist()
    return [[train[i] for i in order[k * batch_size:(k + 1) * batch_size]] for k in range(steps)]


def run_peer(spec: Dict[str, Any], workdir: str) -> Dict[str, np.ndarray]:
    """The worker's output arrays (initial weights, path labels, losses, final and EMA weights)."""
    return run_peer_worker(WORKER, spec, workdir)


def renamed(arrays: Dict[str, np.ndarray], prefix: str) -> Dict[str, np.ndarray]:
    """The worker's weights stored under `prefix` (final/, ema/) as the param/ keys params_from_reference reads."""
    out = {k: v for k, v in arrays.items() if k.startswith("paths/")}
    out.update({"param/" + k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)})
    return out


def relative_difference(a: Any, b: Any) -> float:
    """max |a - b| / max |b| over all leaves of two equal pytrees."""
    import jax

    num = max(float(np.max(np.abs(np.asarray(x) - np.asarray(y)))) for x, y in
              zip(jax.tree.leaves(a), jax.tree.leaves(b)))
    den = max(float(np.max(np.abs(np.asarray(y)))) for y in jax.tree.leaves(b))
    return num / den


def run(steps: int, seed: int, dtype: str = "float64") -> Dict[str, Any]:
    """Both sides' training on the same batches; the differences (see the module docstring)."""
    import jax
    import jraph
    from ase.data import chemical_symbols

    from experiments.benchmarks import peer
    from qallegro.data.graphs import structure_to_graph
    from qallegro.models import build_model
    from qallegro.train.config import TrainConfig
    from qallegro.train.step import init_train_state, make_steps

    settings = tta.load_settings(30.0, seed)
    train, _, _ = tta.load_data(settings)
    stats = tta.fit_shared_statistics(train, settings)
    species = list(stats["species"])
    type_names = [chemical_symbols[z] for z in species]
    tr = settings["training"]
    batches = make_batches(train, int(tr["batch_size"]), steps, seed)
    hparams = dict(peer.PEER_MODEL, r_max=float(settings["qallegro_model"]["r_max"]),
                   avg_num_neighbors=float(stats["avg_num_neighbors"]),
                   per_type_energy_shifts={t: float(x) for t, x in zip(type_names, stats["species_shift"])},
                   per_type_energy_scales={t: float(x) for t, x in zip(type_names, stats["species_scale"])})
    spec = {"seed": seed, "type_names": type_names, "hparams": hparams, "training": tr, "model_dtype": dtype,
            "batches": [[{"types": [species.index(int(z)) for z in s.Z], "positions": np.asarray(s.positions).tolist(),
                          "energy": float(s.energy), "forces": np.asarray(s.forces).tolist()} for s in b]
                        for b in batches]}
    with tempfile.TemporaryDirectory() as tmp:
        arrays = run_peer(spec, tmp)

    with jax.enable_x64(True):
        config = dict(settings["qallegro_model"], num_species=len(species),
                      avg_num_neighbors=float(stats["avg_num_neighbors"]),
                      species_scale=list(stats["species_scale"]), species_shift=list(stats["species_shift"]))
        model = build_model(config)
        cfg = TrainConfig.from_dict(dict(settings["profile_training"], max_minutes=None))
        train_step = make_steps(model, cfg, compute_stress=False)
        params = jax.tree.map(lambda p: p.astype(dtype), params_from_reference(arrays, model))
        state = init_train_state(params, train_step.optimizer)
        graphs = [[structure_to_graph(s, model.r_max, species) for s in b] for b in batches]
        n_node = max(sum(int(g.n_node.sum()) for g in b) for b in graphs) + 1
        n_edge = max(sum(int(g.n_edge.sum()) for g in b) for b in graphs)
        losses = []
        for b in graphs:  # one padded shape: one compilation
            graph = jraph.pad_with_graphs(jraph.batch_np(b), n_node, n_edge, len(b) + 1)
            state, loss = train_step.train_step(state, graph)
            losses.append(float(loss))
        final = relative_difference(state.params, params_from_reference(renamed(arrays, "final/"), model))
        ema = relative_difference(state.ema_params, params_from_reference(renamed(arrays, "ema/"), model))
    ours, theirs = np.array(losses), arrays["loss"]
    rel = np.abs(ours - theirs) / np.abs(theirs)
    windows = [(a, min(a + 50, steps)) for a in range(0, steps, 50)]
    checkpoints = [k for k in (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000) if k <= steps]
    return {"steps": steps, "seed": seed, "batch_size": int(tr["batch_size"]), "training": tr,
            "loss_relative_difference_max": float(rel.max()),
            "loss_relative_difference_at": {str(k): float(rel[:k].max()) for k in checkpoints},
            "weights_relative_difference": final, "ema_weights_relative_difference": ema,
            "dtype": dtype, "window_means": [{"steps": [a, b], "qallegro": float(ours[a:b].mean()),
                                              "peer": float(theirs[a:b].mean())} for a, b in windows],
            "loss_qallegro": ours.tolist(), "loss_peer": theirs.tolist(),
            "grad_norm_peer": arrays["grad_norm"].tolist(), "clip_norm": float(tr["clip_norm"])}


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=200, help="optimiser steps on each side")
    parser.add_argument("--seed", type=int, default=0, help="split, initial weights and batch order")
    parser.add_argument("--dtype", choices=("float64", "float32"), default="float64",
                        help="the networks' dtype on both sides")
    parser.add_argument("--out", default=None, help="JSON file for the result (default: print only)")
    args = parser.parse_args(argv)
    result = run(args.steps, args.seed, args.dtype)
    clipped = sum(g > result["clip_norm"] for g in result["grad_norm_peer"])
    print(f"loss: largest relative difference over the first k steps "
          f"{json.dumps(result['loss_relative_difference_at'])}")
    print(f"weights after {args.steps} steps: relative difference {result['weights_relative_difference']:.3g} "
          f"(EMA {result['ema_weights_relative_difference']:.3g}); peer steps clipped: {clipped}/{args.steps}")
    for w in result["window_means"]:
        print(f"steps {w['steps'][0]}-{w['steps'][1]}: mean loss qallegro {w['qallegro']:.4g}, peer {w['peer']:.4g}")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
