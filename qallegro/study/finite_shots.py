"""Beyond the paper: is the hybrid usable on hardware? The final hybrid model evaluated with finite shots.

Every QDI circuit's Pauli expectations are replaced by their estimates from `shots` measurements
(`qallegro.quantum.shots`: bitstrings drawn from the exact Born distribution; unbiased, variance
``(1 - <P>^2) / shots``), and so are their derivatives with respect to the encoding angles, which the forces need:
each is the parameter-shift difference of two further finite-shot circuits, as on a device. The test forces MAE
is measured over several noise draws, with the mean deviation of the forces from the exact model's.

Cost on a device, per MD step of a cell: one circuit per edge within r_max per QDI block (one block at the
``readout`` or ``two_body`` position, one per layer at ``latent``) for the energy, and for the forces the
derivative of every circuit's expectations with respect to its ``in_features`` encoding angles by the
two-term parameter-shift rule (each angle sits in one rotation gate: 2 circuits per angle). So

    ``circuits per step = edges · blocks · (1 + 2 · in_features)``,  ``shots per step = circuits per step · shots``

(Schuld et al., Phys. Rev. A 99, 032331 (2019) for the shift rule; the chain rule through the classical layers
needs no further circuits).
"""

from __future__ import annotations

import json
import os
from typing import Any, Callable, Dict, Sequence

import numpy as np

#: How the forces' circuit derivatives are estimated; a results file without it (from before the shift-rule
#: estimates: noise-free derivatives) is evaluated again.
FORCES_ESTIMATE = "parameter-shift rule; each shifted circuit sampled with its own `shots` measurements"


def circuits_per_md_step(model_config: Dict[str, Any], n_edges: int) -> int:
    """Circuit executions a device needs for one energy+forces evaluation of a structure with `n_edges` directed
    edges (see the module docstring).

    Raises:
        ValueError: a model that is not an allegro-qdi model.
    """
    if model_config.get("family") != "allegro-qdi":
        raise ValueError(f"finite shots need an allegro-qdi model, got family {model_config.get('family')!r}")
    position = model_config.get("block_position", "readout")
    blocks = int(model_config.get("num_layers", 1)) if position == "latent" else 1
    in_features = int(model_config.get("in_features") or model_config.get("n_qubits", 4))
    return int(n_edges) * blocks * (1 + 2 * in_features)


def evaluate_shots(potential_path: str, structures: Sequence[Any], shots: Sequence[int], repeats: int,
                   cell: Any, batch_size: int = 16, log: Callable[[str], None] = print) -> Dict[str, Any]:
    """Test forces MAE of a trained allegro-qdi potential with finite shots, and the device cost per MD step.

    Args:
        potential_path: the trained model (potential.qallegro).
        structures: the test structures.
        shots: measurements per circuit to try (each >= 1).
        repeats: noise draws per shot count (PRNG seeds 0 .. repeats-1).
        cell: the structure whose MD step is costed (e.g. a 64-atom cell of the data).
        batch_size: structures per evaluation batch.
        log: where progress lines go.

    Returns:
        {"exact_forces_mae", "n_frames", "repeats", "cell_atoms", "cell_edges", "circuits_per_md_step",
        "forces_estimate", "rows": [{"shots", "forces_mae_mean", "forces_mae_std", "forces_mae",
        "forces_deviation_mean" (meV/Å: ``mean |F_shots - F_exact|`` over components and draws, from the same model),
        "shots_per_md_step"}], "cost_note"}.

    Raises:
        ValueError: not an allegro-qdi potential, or a shot count < 1.
    """
    import jax

    from qallegro.data.graphs import structure_to_graph
    from qallegro.data.loader import make_loader
    from qallegro.models import build_model
    from qallegro.potential import energy_forces_stress, load

    if min(shots) < 1:
        raise ValueError(f"shots must be >= 1, got {list(shots)}")
    potential = load(potential_path)
    config = dict(potential.model_config)
    n_edges = int(np.sum(np.asarray(structure_to_graph(cell, potential.r_max, potential.species).n_edge)[:1]))
    circuits = circuits_per_md_step(config, n_edges)
    loader = make_loader(structures, potential.r_max, potential.species, batch_size)

    batches = list(loader.batches(0))

    def predict(model, seed):
        # one compilation per model: the noise key is an argument
        fn = jax.jit(lambda p, g, key: energy_forces_stress(model, p, g, compute_stress=False, rng=key))
        out = []
        for k, graph in enumerate(batches):
            key = None if seed is None else jax.random.fold_in(jax.random.PRNGKey(seed), k)
            n = int(np.sum(np.asarray(graph.n_node)[:-1]))
            out.append(np.asarray(fn(potential.params, graph, key)["forces"], float)[:n])
        return out

    def mae(forces, reference):
        diff = np.concatenate([np.abs(f - r).ravel() for f, r in zip(forces, reference)])
        return 1000.0 * float(diff.mean())

    labels = [np.asarray(g.nodes["forces"], float)[:int(np.sum(np.asarray(g.n_node)[:-1]))] for g in batches]
    exact_forces = predict(potential.model, None)
    exact = mae(exact_forces, labels)
    rows = []
    for n in shots:
        model = build_model(dict(config, shots=int(n)), potential.statistics)
        draws = [predict(model, seed) for seed in range(repeats)]
        values = [mae(f, labels) for f in draws]
        deviation = float(np.mean([mae(f, exact_forces) for f in draws]))
        rows.append({"shots": int(n), "forces_mae": values, "forces_mae_mean": float(np.mean(values)),
                     "forces_mae_std": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0,
                     "forces_deviation_mean": deviation, "shots_per_md_step": float(circuits) * n})
        log(f"shots {n}: forces MAE {rows[-1]['forces_mae_mean']:.2f} ± {rows[-1]['forces_mae_std']:.2f} meV/Å "
            f"(exact {exact:.2f}; |F_shots - F_exact| {deviation:.2f} meV/Å)")
    note = (f"Cost: a {cell.n_atoms}-atom cell has {n_edges} directed edges within r_max = {potential.r_max:g} Å; "
            f"circuits per MD step = edges · blocks · (1 + 2 · in_features) = {circuits:,} (energy, and forces by "
            f"the parameter-shift rule), each run `shots` times.")
    return {"exact_forces_mae": exact, "n_frames": len(structures), "repeats": repeats, "cell_atoms": cell.n_atoms,
            "cell_edges": n_edges, "circuits_per_md_step": circuits, "forces_estimate": FORCES_ESTIMATE,
            "rows": rows, "cost_note": note,
            "potential": os.path.basename(potential_path)}


def run_shots(plan, layout, log: Callable[[str], None] = print):
    """The plan's finite-shot evaluation of the seed-0 final model (skipped when done for that model's epochs, or
    when that model does not exist yet). Returns the results, or None when skipped."""
    from qallegro.data.readers import read_structures
    from qallegro.study.runs import run_config
    from qallegro.train.config import DatasetConfig
    from qallegro.train.run import load_splits, write_json

    spec = plan.shots
    if spec is None:
        return None
    out = os.path.join(layout.shots_dir(spec.dataset, spec.family), "results.json")
    stage = "compare" if spec.family in plan.compare_families(spec.dataset) else "transfer"
    run = layout.run_dir(stage, spec.dataset, spec.family, 0)
    potential = os.path.join(run, "potential.qallegro")
    if not os.path.exists(potential):
        log(f"shots: skipped, no final {spec.family} model on {spec.dataset} yet ({potential})")
        return None
    with open(os.path.join(run, "results.json")) as f:
        source_epochs = json.load(f)["planned_epochs"]
    if os.path.exists(out):
        with open(out) as f:
            done = json.load(f)
        if done.get("source_epochs") == source_epochs and done.get("forces_estimate") == FORCES_ESTIMATE:
            return None
        why = (f"the final model was extended to {source_epochs} epochs since"
               if done.get("source_epochs") != source_epochs else "another estimate of the forces' circuit derivatives")
        log(f"shots: evaluated again ({why})")
    cfg = run_config(plan, spec.dataset, spec.family, {})
    _, _, test = load_splits(DatasetConfig.from_dict(cfg["dataset"]), 0)
    test = test[:spec.test_frames] if spec.test_frames else test
    pool = read_structures(cfg["dataset"]["train"], **(cfg["dataset"].get("read") or {}))
    cell = min(pool, key=lambda s: (abs(s.n_atoms - spec.cell_atoms), -s.n_atoms))
    results = evaluate_shots(potential, test, spec.shots, spec.repeats, cell, log=log)
    results["source_epochs"] = source_epochs  # the model's epochs: an extended final run is evaluated again
    os.makedirs(os.path.dirname(out), exist_ok=True)
    write_json(out, results)
    return results
