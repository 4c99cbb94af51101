"""Evaluating a trained model: metrics over a loader, the closed-form refit of the energy shifts, and errors on
external labelled sets.

Metrics are exact sums over every real structure and atom (padding and missing labels carry no weight), then
divided once: MAE/RMSE in meV, meV/Å, meV/Å^3, energy also per atom (meV/atom).

Shift refit: the constant part of the energy is linear in composition, and a force-dominated loss leaves it
noisy from epoch to epoch. `fit_shift_correction` fits it in closed form on training structures,
``delta = argmin sum_s |E_s - E_pred,s - n_s @ delta|^2``, and `evaluate(..., shift_correction=delta)` evaluates with
it; the per-epoch validation (on a fixed training subset) and the final test (on all training structures) use
the same fit, so they report the same kind of number.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Dict, Mapping, Optional, Sequence

import jax.numpy as jnp
import numpy as np

from qallegro.data.graphs import structure_to_graph
from qallegro.data.loader import BatchBudget, GraphLoader, fit_budget
from qallegro.data.readers import read_structures
from qallegro.data.statistics import composition_least_squares, composition_matrix
from qallegro.data.structure import Structure
from qallegro.train.config import TrainConfig
from qallegro.train.loss import metrics_from_sums, weighted_loss


def evaluate(eval_step: Callable, params: Any, loader: GraphLoader, cfg: TrainConfig,
             return_predictions: bool = False, shift_correction: Optional[np.ndarray] = None):
    """Metrics of `params` over every structure of `loader`.

    Args:
        eval_step: from `qallegro.train.step.make_steps`.
        params: the flax variables to evaluate.
        loader: the structures, unshuffled (epoch 0 order).
        cfg: the loss weights of the reported loss.
        return_predictions: also return the labels and predictions of real (unpadded) atoms and structures.
        shift_correction: (S,) eV/atom added to the model's per-species shifts (`fit_shift_correction`);
            None: the model as it is.

    Returns:
        metrics: energy_mae, energy_rmse (meV), energy_per_atom_mae (meV/atom), forces_mae, forces_rmse (meV/Å),
        stress_mae (meV/Å^3, with stress), loss; and with `return_predictions` a dict of energy_true/pred (eV,
        structures with an energy label), n_atoms of those, forces_true/pred (eV/Å, atoms of structures with
        force labels) and their species index.
    """
    totals: Dict[str, float] = {}
    collected = {"energy_true": [], "energy_pred": [], "n_atoms": [], "forces_true": [], "forces_pred": [],
                 "species": []}
    for graph in loader.batches(0):
        sums, pred = eval_step(params, graph, shift_correction)
        for k, v in sums.items():
            totals[k] = totals.get(k, 0.0) + float(v)
        if return_predictions:
            n_real = len(graph.n_node) - 1
            n_atoms = int(np.sum(graph.n_node[:-1]))
            has_e = graph.globals["has_energy"][:n_real] > 0
            collected["energy_true"].append(graph.globals["energy"][:n_real][has_e])
            collected["energy_pred"].append(np.asarray(pred["energy"])[:n_real][has_e])
            collected["n_atoms"].append(np.asarray(graph.n_node)[:n_real][has_e])
            # Only atoms of structures with force labels (QM9 has none: its zeros are not labels).
            has_f = np.repeat(graph.globals["has_forces"][:n_real] > 0, graph.n_node[:n_real])
            collected["forces_true"].append(graph.nodes["forces"][:n_atoms][has_f])
            collected["forces_pred"].append(np.asarray(pred["forces"])[:n_atoms][has_f])
            collected["species"].append(graph.nodes["species"][:n_atoms][has_f])
    loss = float(weighted_loss({k: jnp.asarray(v) for k, v in totals.items()}, cfg.energy_weight,
                               cfg.forces_weight, cfg.stress_weight))
    metrics = dict(metrics_from_sums(totals), loss=loss)
    if return_predictions:
        return metrics, {k: np.concatenate(v) for k, v in collected.items()}
    return metrics


def fit_shift_correction(energy_step: Callable, params: Any, loader: GraphLoader, num_species: int) -> np.ndarray:
    """The closed-form correction of the per-species energy shifts on the structures of `loader`.

    ``delta = argmin_delta sum_s |E_s - E_pred,s - n_s @ delta|^2`` over the structures s with an energy label, with
    n_s their atom counts per species (`composition_least_squares`: minimum-norm when the compositions do not
    fix every species, e.g. rMD17's one molecule, where it still removes the mean residual exactly). Forces do not
    depend on it. Fit it on training structures only.

    Args:
        energy_step: (params, padded graph) -> (G,) energies in eV without correction
            (`qallegro.train.step.make_energy_step`).
        params: the flax variables.
        loader: the structures (unshuffled); batches padded to the loader's one budget.
        num_species: S, the model's number of species.

    Returns:
        (S,) float64 delta in eV/atom; zeros when no structure has an energy.
    """
    counts, residuals = [], []
    for graph in loader.batches(0):
        pred = np.asarray(energy_step(params, graph), dtype=np.float64)
        n_graph = len(graph.n_node)
        node_graph = np.repeat(np.arange(n_graph), np.asarray(graph.n_node))
        batch_counts = np.zeros((n_graph, num_species))
        np.add.at(batch_counts, (node_graph, np.asarray(graph.nodes["species"])), 1.0)
        labelled = np.asarray(graph.globals["has_energy"]) > 0  # padding graphs carry no label
        counts.append(batch_counts[labelled])
        residuals.append(np.asarray(graph.globals["energy"], dtype=np.float64)[labelled] - pred[labelled])
    counts, residuals = np.concatenate(counts), np.concatenate(residuals)
    if not len(residuals):
        return np.zeros(num_species)
    return composition_least_squares(counts, residuals)


def energy_errors(n_atoms: np.ndarray, counts: np.ndarray, e_ref: np.ndarray, e_pred: np.ndarray) -> Dict:
    """Energy-per-atom errors (meV/atom) as they are and after refitting one energy reference per element.

    The refit is the least-squares fit of E_ref - E_pred on composition: one constant per element, which is all
    that differs between DFT codes/pseudopotentials or between a model's shifts and another data set's zero of
    energy. For a one-element set it is the mean per-atom offset.

    Args:
        n_atoms: (n_frames,) atoms per frame.
        counts: (n_frames, n_elements) atoms of each element per frame.
        e_ref: (n_frames,) reference total energies in eV.
        e_pred: (n_frames,) predicted total energies in eV.

    Returns:
        energy_per_atom_mae, energy_per_atom_mean_error, energy_per_atom_mae_refit, energy_per_atom_rmse_refit
        (meV/atom) and reference_offsets_eV_per_atom (the refitted constants, eV/atom).
    """
    per_atom = (e_pred - e_ref) / n_atoms
    delta = composition_least_squares(counts, e_ref - e_pred)
    refit = (e_pred + counts @ delta - e_ref) / n_atoms
    return {"energy_per_atom_mae": 1000 * float(np.mean(np.abs(per_atom))),
            "energy_per_atom_mean_error": 1000 * float(np.mean(per_atom)),
            "energy_per_atom_mae_refit": 1000 * float(np.mean(np.abs(refit))),
            "energy_per_atom_rmse_refit": 1000 * float(np.sqrt(np.mean(refit ** 2))),
            "reference_offsets_eV_per_atom": [float(x) for x in delta]}


def external_metrics(structures: Sequence[Structure], predictions: Dict[str, np.ndarray], metrics: Dict[str, float],
                     species: Sequence[int]) -> Dict[str, Any]:
    """Errors on external frames, with energies also compared after refitting one reference per element.

    Energies of another DFT set (another code, pseudopotentials or zero of energy) differ from the training
    labels by a per-element constant; `energy_errors` refits it over the external frames themselves and both
    the raw and the refitted energy errors are reported. Forces and stress do not depend on it.

    Args:
        structures: the external structures, in evaluation order (those with energies give the energy rows).
        predictions: from `evaluate(..., return_predictions=True)`.
        metrics: the matching metrics dict (meV units).
        species: the model's atomic numbers.
    """
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


def evaluate_external(sets: Mapping[str, Any], eval_step: Callable, params: Any, r_max: float,
                      species: Sequence[int], cfg: TrainConfig, log: Callable[[str], None] = print,
                      shift_correction: Optional[np.ndarray] = None,
                      budget: Optional[BatchBudget] = None) -> Dict[str, Dict[str, Any]]:
    """`external_metrics` for every entry of `sets`.

    Every set is padded to one budget: `budget` (the evaluation budget the step is already compiled for)
    enlarged once to cover the largest external structure, so all sets together compile at most one new shape
    (none when they fit). Without `budget`, the budget is derived from the external structures.

    Args:
        sets: name -> extxyz path, or name -> {path, min_volume_per_atom, max_volume_per_atom, read} (volumes in
            Å^3: keeps the frames in [min, max), e.g. to report compressed cells apart; read: reader options such
            as energy_key, see `qallegro.data.readers.read_extxyz`).
        eval_step, params, shift_correction: the model (see `evaluate`).
        r_max: cutoff in Å; species: the model's atomic numbers.
        cfg: eval_batch_size.
        log: where the per-set summary line goes.

    Returns:
        name -> metrics. Missing files are skipped with a message; frames with elements the model does not know
        are dropped and counted (dropped_unknown_species).
    """
    selected = {}  # name -> (spec, structures read, structures with the model's species)
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
        selected[name] = (spec, structures, known)
    graphs = {name: [structure_to_graph(s, r_max, species) for s in known] for name, (_, _, known) in
              selected.items()}
    every_graph = [g for gs in graphs.values() for g in gs]
    if every_graph:
        budget = (budget.covering(every_graph) if budget is not None
                  else fit_budget(every_graph, cfg.eval_batch_size))
    results = {}
    for name, (spec, structures, known) in selected.items():
        loader = GraphLoader(graphs[name], cfg.eval_batch_size, shuffle=False, budget=budget)
        metrics, predictions = evaluate(eval_step, params, loader, cfg, return_predictions=True,
                                        shift_correction=shift_correction)
        out = external_metrics(known, predictions, metrics, species)
        out.update(path=os.path.relpath(spec["path"]), dropped_unknown_species=len(structures) - len(known),
                   volume_per_atom_bounds=[spec.get("min_volume_per_atom"), spec.get("max_volume_per_atom")])
        results[name] = out
        log(f"external {name} ({out['n']} frames): forces MAE {out['forces_mae']:.1f} meV/Å, energy "
            f"{out.get('energy_per_atom_mae', float('nan')):.1f} meV/atom "
            f"({out.get('energy_per_atom_mae_refit', float('nan')):.1f} after the reference refit), "
            f"stress {out.get('stress_mae', float('nan')):.2f} meV/Å^3")
    return results
