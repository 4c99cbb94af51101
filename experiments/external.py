"""Evaluate a trained model on external labelled frames (e.g. real DFT data it was not trained on).

Used by `run_training` for the `dataset.external` entries of a config (the Cu–Li set lists the real VASP PBE
frames of ../shared/data), and usable on any finished run:

    python -m experiments.external --run runs/culi-allegro-cpu-seed0 --data NAME=PATH [NAME=PATH ...]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, Callable, Dict, Optional, Sequence

import numpy as np


def external_metrics(structures, predictions: Dict[str, np.ndarray], metrics: Dict[str, float],
                     species: Sequence[int]) -> Dict[str, Any]:
    """Errors on external frames, with energies also compared after refitting one reference per element.

    Energies of another DFT set (another code, pseudopotentials or zero of energy) differ from the training
    labels by a per-element constant; it is refitted here by least squares of (E_ref - E_pred) on composition
    over the external frames themselves (for a one-element set: the mean per-atom offset), and both the raw and
    the refitted energy errors are reported. Forces and stress do not depend on it.

    Args:
        structures: the external structures, in evaluation order (those with energies give the energy rows).
        predictions: from `qallegro.train.loop.evaluate(..., return_predictions=True)`.
        metrics: the matching metrics dict (meV units).
        species: the model's atomic numbers.
    """
    from experiments.culi import energy_errors
    from qallegro.data.statistics import composition_matrix

    labelled = [s for s in structures if s.energy is not None]
    out = {"n": len(structures), "atoms": int(sum(s.n_atoms for s in structures)),
           "forces_mae": metrics["forces_mae"], "forces_rmse": metrics["forces_rmse"]}
    if "stress_mae" in metrics and any(s.stress is not None for s in structures):
        out["stress_mae"] = metrics["stress_mae"]
    if labelled:
        present = [k for k, z in enumerate(species) if any(int(z) in s.Z for s in labelled)]
        counts = composition_matrix(labelled, species)[:, present]
        n_atoms = np.array([s.n_atoms for s in labelled], dtype=float)
        out.update(energy_errors(n_atoms, counts, np.array([s.energy for s in labelled]),
                                 np.asarray(predictions["energy_pred"], dtype=float)))
        out["refit_elements"] = [int(species[k]) for k in present]
    return out


def evaluate_external(sets: Dict[str, Any], eval_step: Callable, params: Any, r_max: float, species: Sequence[int],
                      tcfg, log=print) -> Dict[str, Dict[str, Any]]:
    """`external_metrics` for every entry of `sets`: name -> extxyz path, or name -> {path, min_volume_per_atom,
    max_volume_per_atom, read} (volumes in Å^3: keeps the frames in [min, max), e.g. to report compressed cells
    apart; read: reader options such as energy_key, see `qallegro.data.readers.read_extxyz`).
    Missing files are skipped with a message; frames with elements the model does not know are dropped (and
    counted)."""
    from qallegro.data.graphs import GraphLoader, structure_to_graph
    from qallegro.data.readers import read_structures
    from qallegro.train.loop import evaluate

    results = {}
    for name, entry in sets.items():
        spec = entry if isinstance(entry, dict) else {"path": entry}
        path = spec["path"]
        if not os.path.exists(path):
            log(f"external {name}: {path} not found, skipped")
            continue
        structures = read_structures(path, **(spec.get("read") or {}))
        lo, hi = spec.get("min_volume_per_atom"), spec.get("max_volume_per_atom")
        if lo is not None or hi is not None:
            def v_atom(s):
                return abs(np.linalg.det(s.cell)) / s.n_atoms
            structures = [s for s in structures if (lo is None or v_atom(s) >= lo) and (hi is None or v_atom(s) < hi)]
        known = [s for s in structures if set(int(z) for z in s.Z) <= set(int(z) for z in species)]
        if not known:
            log(f"external {name}: no frame of {path} with the model's species and the volume bounds, skipped")
            continue
        loader = GraphLoader([structure_to_graph(s, r_max, species) for s in known], tcfg.eval_batch_size,
                             shuffle=False, sizes_per_doubling=tcfg.pad_sizes_per_doubling)
        metrics, predictions = evaluate(eval_step, params, loader, tcfg, return_predictions=True)
        out = external_metrics(known, predictions, metrics, species)
        out.update(path=os.path.relpath(path), dropped_unknown_species=len(structures) - len(known),
                   volume_per_atom_bounds=[lo, hi])
        results[name] = out
        log(f"external {name} ({out['n']} frames): forces MAE {out['forces_mae']:.1f} meV/Å, energy "
            f"{out.get('energy_per_atom_mae', float('nan')):.1f} meV/atom "
            f"({out.get('energy_per_atom_mae_refit', float('nan')):.1f} after the reference refit), "
            f"stress {out.get('stress_mae', float('nan')):.2f} meV/Å^3")
    return results


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.external", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", required=True, help="a finished run directory (config.json, checkpoints/best)")
    parser.add_argument("--data", nargs="+", required=True, metavar="NAME=PATH", help="external extxyz files")
    parser.add_argument("--out", default=None, help="JSON file of the results (default: RUN/external.json)")
    args = parser.parse_args(argv)
    from experiments.train import load_run
    from qallegro.models import build_model
    from qallegro.train.loop import TrainConfig, make_steps

    _, params, model_config, species = load_run(args.run)
    with open(os.path.join(args.run, "config.json")) as f:
        training = json.load(f)["config"]["training"]
    tcfg = TrainConfig.from_dict({k: v for k, v in training.items() if k != "refit_shift"})
    eval_step = make_steps(build_model(model_config), tcfg, True)[2]
    sets = dict(item.split("=", 1) for item in args.data)
    results = evaluate_external(sets, eval_step, params, model_config["r_max"], species, tcfg)
    with open(args.out or os.path.join(args.run, "external.json"), "w") as f:
        json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
