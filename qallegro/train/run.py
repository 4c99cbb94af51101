"""One training run from a config dict: read and split the data, fit the statistics, train, refit the energy
shifts, evaluate (validation, test, external sets), and write the run directory.

    from qallegro.train.run import run_training
    results = run_training({"dataset": {...}, "model": {...}, "training": {...}, "dtype": "float32"}, "runs/x")

Precision: "dtype" is the network's dtype (float32 in every profile). Energies, their labels and the loss's energy
term are float64 whenever JAX's x64 mode is on, which the command line (``python -m experiments.run``) turns on for
every run; the network stays float32 (see `qallegro.potential.graph`). A library caller who never enabled x64
gets float32 throughout (an aspirin total of -17,600 eV then resolves to ~2 meV): call
``jax.config.update("jax_enable_x64", True)`` at program start for float64 energies.

The run directory holds results.json, metrics.csv, parity.png, learning_curve.png, config.json, orbax
checkpoints (checkpoints/last, checkpoints/best) and the deployable potential.qallegro
(`qallegro.potential.load`). This is the workflow behind ``python -m experiments.run train``, compare and hpo.

Nothing is destroyed before everything is validated: the config sections, the run directory and the data are
checked before the first output is written, and every output is written to a temporary file and renamed. A run
directory that already holds a run (checkpoints, metrics rows, results.json or potential.qallegro) is continued
only with ``resume=True``, and only when its recorded config.json matches the requested config except for
`RESUMABLE_KEYS` (`CheckpointError` names the differing keys); it is replaced only with ``overwrite=True``, which
moves the old run aside to OUT.replaced-TIMESTAMP.
"""

from __future__ import annotations

import json
import os
import platform
import time
from typing import Any, Callable, Dict, List, Mapping, Sequence, Tuple

import jax
import jax.numpy as jnp

from qallegro import plots
from qallegro.data.graphs import structure_to_graph
from qallegro.data.loader import BatchBudget, GraphLoader, fit_budget
from qallegro.data.readers import read_structures
from qallegro.data.splits import resolve_split_sizes, train_val_test_split
from qallegro.data.structure import Structure
from qallegro.potential import save as save_potential
from qallegro.train.checkpoint import CheckpointError
from qallegro.train.config import DatasetConfig, TrainConfig
from qallegro.train.evaluation import evaluate, evaluate_external, fit_shift_correction
from qallegro.train.loop import fit
from qallegro.train.setup import count_parameters, prepare

DTYPES = {"float32": jnp.float32, "float64": jnp.float64}
UNITS = {"energy_mae": "meV", "forces_mae": "meV/Å", "forces_rmse": "meV/Å", "stress_mae": "meV/Å^3"}
#: the results.json keys that the potential artifact keeps as its training metadata
ARTIFACT_METADATA_KEYS = ("dataset", "training", "seed", "n_parameters", "n_train", "n_val", "n_test", "epochs",
                          "best_epoch", "train_minutes", "validation", "test", "units", "machine")
#: config keys that may differ between a run and its resume: the budget (more epochs, more minutes), how often
#: and how many checkpoints are kept, the number of devices of data-parallel training (same result), and the
#: external sets evaluated after training. Everything else (dataset, model, other training keys, dtype, seed)
#: must be equal: the checkpoint belongs to it.
RESUMABLE_KEYS = ("training.max_epochs", "training.max_minutes", "training.checkpoint_minutes",
                  "training.keep_checkpoints", "training.devices", "dataset.external")


def _flatten(d: Any, prefix: str = "") -> Dict[str, Any]:
    if isinstance(d, Mapping) and (d or not prefix):
        out: Dict[str, Any] = {}
        for k, v in d.items():
            out.update(_flatten(v, f"{prefix}{k}" if not prefix else f"{prefix}.{k}"))
        return out
    return {prefix: d}


def config_differences(recorded: Mapping[str, Any], requested: Mapping[str, Any]) -> List[str]:
    """The dotted keys (e.g. "model.family", "dataset.train", "seed") whose values differ between two run
    records ({"config": run config, "seed": int}), leaving out `RESUMABLE_KEYS`; "key: old -> new" each."""
    a, b = _flatten(json.loads(json.dumps(recorded, default=float))), \
        _flatten(json.loads(json.dumps(requested, default=float)))
    diffs = []
    for key in sorted(set(a) | set(b)):
        short = key[len("config."):] if key.startswith("config.") else key
        if any(short == k or short.startswith(k + ".") for k in RESUMABLE_KEYS):
            continue
        if a.get(key, "<absent>") != b.get(key, "<absent>"):
            diffs.append(f"{short}: {a.get(key, '<absent>')!r} -> {b.get(key, '<absent>')!r}")
    return diffs


def holds_run(out: str) -> List[str]:
    """What in directory `out` belongs to an earlier training run (empty: nothing to lose): checkpoints,
    metrics rows, results.json, potential.qallegro."""
    found = []
    for sub in ("last", "best"):
        d = os.path.join(out, "checkpoints", sub)
        if os.path.isdir(d) and os.listdir(d):
            found.append(f"checkpoints/{sub}")
    csv_path = os.path.join(out, "metrics.csv")
    if os.path.exists(csv_path):
        with open(csv_path) as f:
            if sum(1 for line in f if line.strip()) > 1:
                found.append("metrics.csv")
    found += [name for name in ("results.json", "potential.qallegro") if os.path.exists(os.path.join(out, name))]
    return found


def check_run_directory(out: str, cfg: Mapping[str, Any], seed: int, resume: bool, overwrite: bool) -> None:
    """Refuse, before anything is written, a run that would destroy or mix with the run already in `out`.

    Raises:
        ValueError: both `resume` and `overwrite`.
        CheckpointError: `out` holds a run and neither `resume` nor `overwrite` is set (suggests both); or
            `resume` into a run whose config.json differs from `cfg`/`seed` outside `RESUMABLE_KEYS` (names the
            keys), or whose config.json is missing or unreadable beside its checkpoints.
    """
    if resume and overwrite:
        raise ValueError("resume and overwrite exclude each other: --resume continues the run, --overwrite "
                         "replaces it")
    existing = holds_run(out)
    config_path = os.path.join(out, "config.json")
    if resume:
        if not existing and not os.path.exists(config_path):
            return  # nothing yet (killed before its first checkpoint): starts from the beginning
        try:
            with open(config_path) as f:
                recorded = json.load(f)
            recorded = {"config": recorded["config"], "seed": recorded["seed"]}
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise CheckpointError(f"cannot resume {out}: its config.json is missing or unreadable ({e}), so its "
                                  f"checkpoints cannot be matched to this config") from None
        diffs = config_differences(recorded, {"config": cfg, "seed": seed})
        if diffs:
            raise CheckpointError(f"cannot resume {out}: it belongs to another config; differing keys: "
                                  + "; ".join(diffs) + ". Use another --out for a new run (nothing was written)")
    elif existing and not overwrite:
        raise CheckpointError(f"{out} already holds a training run ({', '.join(existing)}): use --resume to "
                              f"continue it, --overwrite to replace it (the old run is moved aside), or another "
                              f"--out")


def _move_aside(out: str, log: Callable[[str], None]) -> None:
    aside = f"{out.rstrip(os.sep)}.replaced-{time.strftime('%Y%m%d-%H%M%S')}"
    n = 1
    while os.path.exists(aside):
        aside, n = f"{out.rstrip(os.sep)}.replaced-{time.strftime('%Y%m%d-%H%M%S')}-{n}", n + 1
    os.replace(out, aside)
    log(f"the earlier run in {out} was moved to {aside}")


def load_splits(data: DatasetConfig, seed: int) -> Tuple[List[Structure], List[Structure], List[Structure]]:
    """The (train, validation, test) structures of a dataset config.

    With a separate test file, the train file is split into train + validation (seeded) and the test file is
    read whole; otherwise all three come from the one file (QM9, Cu–Li, extxyz:PATH; n_test 0: no test set).

    Raises:
        FileNotFoundError, qallegro.data.structure.DataError: unreadable or malformed data (names file, frame).
        ValueError: split sizes that do not fit the data.
    """
    structures = read_structures(data.train, **data.read)
    if data.test:
        n_train, n_val, _ = resolve_split_sizes(len(structures), data.n_train, data.n_val, 0)
        train, val, _ = train_val_test_split(structures, n_train, n_val, 0, seed)
        return train, val, read_structures(data.test, **data.read)
    sizes = resolve_split_sizes(len(structures), data.n_train, data.n_val, data.n_test)
    return train_val_test_split(structures, *sizes, seed)


def _check_dtype(dtype: str) -> Any:
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    if dtype == "float64" and not jax.config.jax_enable_x64:
        raise ValueError("dtype float64 (a float64 network) needs JAX's 64-bit mode: call "
                         "jax.config.update('jax_enable_x64', True) at the start of the program (the command line "
                         "does this for every run)")
    return DTYPES[dtype]


def run_training(cfg: Mapping[str, Any], out: str, seed: int = 0, resume: bool = False, title: str = "",
                 log: Callable[[str], None] = print, overwrite: bool = False) -> Dict[str, Any]:
    """Train and test one model from a resolved config.

    Args:
        cfg: {"dataset": `DatasetConfig` fields, "model": hyperparameters for `qallegro.models.build_model`
            (with "family"), "training": `TrainConfig` fields, "dtype": "float32" | "float64", the network's
            dtype; energies are float64 whenever x64 is on, see the module docstring}.
        out: the run directory (created).
        seed: seed of the split, the initialisation and the shuffling.
        resume: continue the run in `out` from its newest intact checkpoint (exactly, see
            `qallegro.train.loop.fit`); refused when `out` belongs to another config (`check_run_directory`).
            With nothing in `out` yet, starts from the beginning.
        title: shown on the plots.
        log: where progress lines go.
        overwrite: `out` may hold an earlier run: it is moved aside (OUT.replaced-TIMESTAMP) once the data are
            read and validated. Without it (and without `resume`) such a directory is refused.

    Returns:
        The results dict written to OUT/results.json: validation and test metrics (meV units), split sizes,
        model_config and statistics, epochs, best_epoch, train_minutes, compiled_shapes, machine, external.
        In a multi-process run (`qallegro.train.parallel`) only process 0 writes `out` and returns that dict;
        the others return {"process_index", "epochs", "train_minutes"} once training ends.

    Raises:
        ValueError: unknown keys in the dataset or training sections (named), a bad dtype, or float64 without
            JAX's 64-bit mode (enable it at program start; this function never flips the process-wide switch).
        FileNotFoundError: missing data.
        CheckpointError: `out` holds a run and neither resume nor overwrite; resume into another config's run
            (names the keys; nothing is written); every checkpoint damaged (names them).
        FloatingPointError: the training loss became NaN or inf.
    """
    data = DatasetConfig.from_dict(cfg["dataset"])
    tcfg = TrainConfig.from_dict({**cfg.get("training", {}), "seed": seed})
    dtype_name = cfg.get("dtype", "float32")
    dtype = _check_dtype(dtype_name)
    t0 = time.perf_counter()
    check_run_directory(out, cfg, seed, resume, overwrite)
    train, val, test = load_splits(data, seed)
    prepared = prepare(train, cfg["model"], seed=seed, dtype=dtype)
    r_max, species = prepared.model_config["r_max"], prepared.species
    # One padded shape for training and one for every evaluation, both derived from the training graphs.
    train_loader = GraphLoader(prepared.train_graphs, tcfg.batch_size, shuffle=True, seed=seed)
    eval_budget = fit_budget(prepared.train_graphs, tcfg.eval_batch_size)
    val_loader = _eval_loader(val, r_max, species, tcfg.eval_batch_size, eval_budget)
    compute_stress = any(s.stress is not None for s in train)
    n_params = count_parameters(prepared.params)
    log(f"{len(train)} train / {len(val)} validation / {len(test)} test structures; species {species}; "
        f"avg_num_neighbors {prepared.statistics.avg_num_neighbors:.2f}; {n_params} parameters; "
        f"devices {jax.devices()}; data prepared in {time.perf_counter() - t0:.1f} s")
    log(f"batches padded to {train_loader.budget} (training; padding {_percent(train_loader)}) and "
        f"{val_loader.budget} (evaluation; padding {_percent(val_loader)})")
    primary = jax.process_index() == 0  # several processes (qallegro.train.parallel): process 0 writes `out`
    if overwrite and holds_run(out) and primary:  # only now, with the config and the data validated
        _move_aside(out, log)
    if primary:
        os.makedirs(out, exist_ok=True)
    statistics = prepared.statistics

    def save_config():  # the resolved config of the run, for the record (the model itself is potential.qallegro)
        write_json(os.path.join(out, "config.json"),
                   {"config": cfg, "model_config": prepared.model_config, "statistics": statistics.to_dict(),
                    "seed": seed})

    if primary:
        save_config()
    result = fit(prepared.model, prepared.params, train_loader, val_loader, tcfg, out, resume=resume,
                 compute_stress=compute_stress, log=log)
    if not primary:  # the other processes of a multi-process run are done: process 0 evaluates and writes
        return {"process_index": jax.process_index(), "epochs": len(result.history),
                "train_minutes": result.elapsed_minutes}
    params, eval_step = result.best_params, result.eval_step
    correction = None
    if tcfg.refit_shift:
        # Closed-form refit of the per-species energy shifts on all training residuals, the per-epoch refit's
        # fit on every training structure. The compiled energy and evaluation steps are reused: the correction
        # is their argument.
        train_eval = GraphLoader(prepared.train_graphs, tcfg.eval_batch_size, shuffle=False,
                                 budget=val_loader.budget)
        correction = fit_shift_correction(result.energy_step, params, train_eval, len(species))
        statistics = statistics.replace(species_shift=[float(a + b) for a, b in
                                                       zip(statistics.species_shift, correction)])
        log(f"per-species energy shifts refitted on the training residuals: "
            f"{[round(x, 4) for x in statistics.species_shift]} eV")
        save_config()
    val_metrics = evaluate(eval_step, params, val_loader, tcfg, shift_correction=correction)
    test_metrics = {}
    if test:
        test_loader = _eval_loader(test, r_max, species, tcfg.eval_batch_size, val_loader.budget)
        test_metrics, predictions = evaluate(eval_step, params, test_loader, tcfg, return_predictions=True,
                                             shift_correction=correction)
    else:
        val_metrics, predictions = evaluate(eval_step, params, val_loader, tcfg, return_predictions=True,
                                            shift_correction=correction)

    from ase.data import chemical_symbols

    plots.parity_plot(predictions, os.path.join(out, "parity.png"),
                      title=f"{title} ({'test' if test else 'validation'})",
                      species_names=[chemical_symbols[z] for z in species])
    if result.history:
        plots.learning_curve(result.history, os.path.join(out, "learning_curve.png"), title=title)
    results = {
        "dataset": cfg["dataset"], "model_config": dict(prepared.model_config, **statistics.model_fields()),
        "statistics": statistics.to_dict(), "training": cfg.get("training", {}), "seed": seed,
        "n_parameters": n_params, "n_train": len(train), "n_val": len(val), "n_test": len(test),
        "epochs": len(result.history), "best_epoch": result.best_epoch,
        "train_minutes": result.elapsed_minutes, "compiled_shapes": result.compiled_shapes,
        "validation": val_metrics, "test": test_metrics or val_metrics, "units": UNITS,
        "machine": {"platform": platform.platform(), "processor": platform.processor(), "cpus": os.cpu_count(),
                    "jax_backend": jax.default_backend(), "jax": jax.__version__},
    }
    if data.external:  # e.g. real DFT frames for the generated Cu–Li set
        results["external"] = evaluate_external(data.external, eval_step, params, r_max, species, tcfg, log=log,
                                                shift_correction=correction,
                                                budget=(test_loader if test else val_loader).budget)
    write_json(os.path.join(out, "results.json"), results)
    # The deployable artifact (qallegro.potential.load): best EMA weights with the refitted shifts.
    save_potential(os.path.join(out, "potential.qallegro"), prepared.model_config, params, statistics,
                   dtype=dtype_name, metadata={k: results[k] for k in ARTIFACT_METADATA_KEYS if k in results})
    log(f"potential: {os.path.join(out, 'potential.qallegro')}")
    return results


def _eval_loader(structures: Sequence[Structure], r_max: float, species: Sequence[int], batch_size: int,
                 budget: BatchBudget) -> GraphLoader:
    graphs = [structure_to_graph(s, r_max, species) for s in structures]
    return GraphLoader(graphs, batch_size, shuffle=False, budget=budget.covering(graphs))


def _percent(loader: GraphLoader) -> str:
    fractions = loader.padding_fraction(0)
    return f"{100 * fractions['nodes']:.0f} % of nodes, {100 * fractions['edges']:.0f} % of edges"


def write_json(path: str, payload: Mapping[str, Any]) -> None:
    """Write `payload` as indented JSON (numpy scalars as floats), atomically (temporary file + rename)."""
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(payload, f, indent=2, default=float)
    os.replace(tmp, path)
