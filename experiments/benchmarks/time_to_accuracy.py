"""Time to accuracy: qallegro and PyTorch Allegro (nequip-allegro 0.8, trained with its own `nequip-train` in
.venv-peer; `make peer-venv`) trained one after the other on this machine with the same data, model, loss,
optimiser, schedule, batch size, EMA, float32 and wall budget.

    .venv/bin/python -m experiments.benchmarks.time_to_accuracy [--minutes 30] [--seed 0] [--out experiments/results]
    .venv/bin/python -m experiments.benchmarks.time_to_accuracy --quick    # smoke test: ~2 minutes each, outputs in
                                                                          # runs/time_to_accuracy-quick

Both sides from the same initial weights, at the same time, one core each (nothing else running), then one report:

    export XLA_FLAGS="--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
    taskset -c 0 .venv/bin/python -m experiments.benchmarks.time_to_accuracy --sides qallegro --init peer \\
        --workdir runs/tta/work-q --out runs/tta/q &
    taskset -c 1 .venv/bin/python -m experiments.benchmarks.time_to_accuracy --sides peer --init peer \\
        --peer-threads 1 --workdir runs/tta/work-p --out runs/tta/p; wait
    .venv/bin/python -m experiments.benchmarks.time_to_accuracy --merge runs/tta/q/time_to_accuracy.json \\
        runs/tta/p/time_to_accuracy.json --out experiments/results

Data: rMD17 aspirin split 01. The 1000 frames of experiments/data/rmd17_aspirin_train_01.npz are split into the
same 950 train / 50 validation frames for both (`qallegro.data.splits.train_val_test_split` with the run seed, as
`qallegro.train.run.run_training` does); the peer reads exactly those frames from extxyz files written here from
qallegro's Structures (eV, eV/Å). Both final models (the EMA weights of the best validation epoch) are tested on
the 1000 frames of experiments/data/rmd17_aspirin_test_01.npz: qallegro through `qallegro.potential.load` on its
potential.qallegro, the peer through nequip-train's own `test` run on its best checkpoint (predictions written by
nequip's TestTimeXYZFileWriter; both MAEs are computed here by the same function).

Model: QALLEGRO_MODEL and PEER_MODEL of experiments/benchmarks/peer.py, read at run time. Training settings: the
`cpu` profile of experiments/configs/rmd17-aspirin.yaml (learning rate, batch size, loss weights, EMA decay,
plateau factor / patience) and the defaults of `qallegro.train.config.TrainConfig` (gradient clipping, minimum
learning-rate scale, evaluation batch size). The statistics that fix the normalisation (avg_num_neighbors, the
per-species energy shifts and scales) are fitted once by qallegro on the training frames and given to both.
Every setting that cannot be made identical is listed in the report with the reason.

Writes into --out: time_to_accuracy.md (table: wall time and epoch at which the validation forces MAE first
reaches 150 / 100 / 70 / 50 meV/Å, final test energy and forces MAE, epochs done, machine and load average),
time_to_accuracy.png (validation forces MAE vs wall minutes and vs epochs, log y) and time_to_accuracy.json (all
numbers). The files are rewritten as soon as each side finishes. Run directories (checkpoints, the peer's
nequip config, logs and extxyz files) go to --workdir (default runs/time_to_accuracy[-quick]).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import csv
import glob
import json
import math
import os
import platform
import re
import subprocess
import sys
import time
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PEER_BIN = os.path.join(ROOT, ".venv-peer", "bin")
CLOCK_DIR = os.path.join(ROOT, "experiments", "benchmarks", "time_to_accuracy")
ASPIRIN_CONFIG = os.path.join(ROOT, "experiments", "configs", "rmd17-aspirin.yaml")
TRAIN_NPZ = os.path.join(ROOT, "experiments", "data", "rmd17_aspirin_train_01.npz")
TEST_NPZ = os.path.join(ROOT, "experiments", "data", "rmd17_aspirin_test_01.npz")
THRESHOLDS = (150.0, 100.0, 70.0, 50.0)  # meV/Å, validation forces MAE
SIDES = ("qallegro", "peer")
LABELS = {"qallegro": "qallegro (JAX)", "peer": "PyTorch Allegro (nequip-allegro 0.8)"}
#: the TrainConfig fields both sides share (the rest of TrainConfig is qallegro-only bookkeeping)
SHARED_TRAINING = ("learning_rate", "batch_size", "eval_batch_size", "energy_weight", "forces_weight", "ema_decay",
                   "clip_norm", "plateau_factor", "plateau_patience", "min_lr_scale")


def log(message: str) -> None:
    """Print a progress line at once."""
    print(message, flush=True)


# ---- settings and data ---------------------------------------------------------------------------------------

def machine_info() -> Dict[str, Any]:
    """The machine: platform, processor, core count, the cores this process may use and its XLA_FLAGS."""
    return {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(), "cores_allowed": len(os.sched_getaffinity(0)), "python": platform.python_version(),
            "xla_flags": os.environ.get("XLA_FLAGS", "")}


def load_settings(minutes: float, seed: int, max_epochs: Optional[int] = None) -> Dict[str, Any]:
    """The shared settings: the two model dicts of peer.py, the cpu-profile training settings, the data split.

    Args:
        minutes: the wall budget of each side.
        seed: split, initialisation and shuffling seed of both sides.
        max_epochs: also stop each side after this many epochs (None: the wall budget alone), for per-epoch
            comparisons over seeds.

    Returns:
        {"qallegro_model", "peer_model", "training" (the `SHARED_TRAINING` values), "profile_training" (the
        profile's training section as written), "n_train", "n_val", "minutes", "max_epochs", "seed", "dtype"}.
    """
    from experiments.benchmarks import peer
    from qallegro.config import load_config_file
    from qallegro.train.config import TrainConfig

    profile = load_config_file(ASPIRIN_CONFIG, "cpu")
    tcfg = TrainConfig.from_dict(profile.get("training", {}))
    return {"qallegro_model": copy.deepcopy(peer.QALLEGRO_MODEL), "peer_model": copy.deepcopy(peer.PEER_MODEL),
            "training": {k: getattr(tcfg, k) for k in SHARED_TRAINING},
            "profile_training": dict(profile.get("training", {})),
            "n_train": int(profile["dataset"]["n_train"]), "n_val": int(profile["dataset"]["n_val"]),
            "minutes": float(minutes), "max_epochs": max_epochs, "seed": int(seed), "dtype": "float32"}


def load_data(settings: Dict[str, Any]) -> Tuple[list, list, list]:
    """(train, validation, test) Structures (eV, eV/Å), split exactly as `qallegro.train.run.run_training` does."""
    from qallegro.data.readers import read_structures
    from qallegro.data.splits import resolve_split_sizes, train_val_test_split

    structures = read_structures(TRAIN_NPZ)
    n_train, n_val, _ = resolve_split_sizes(len(structures), settings["n_train"], settings["n_val"], 0)
    train, val, _ = train_val_test_split(structures, n_train, n_val, 0, settings["seed"])
    return train, val, read_structures(TEST_NPZ)


def fit_shared_statistics(train: Sequence[Any], settings: Dict[str, Any]) -> Dict[str, Any]:
    """qallegro's normalisation statistics of the training frames (`qallegro.train.setup.prepare`), given to both."""
    from qallegro.train.setup import prepare

    prepared = prepare(train, dict(settings["qallegro_model"]), seed=settings["seed"])
    return prepared.statistics.to_dict()


def write_extxyz(structures: Sequence[Any], path: str) -> None:
    """Write Structures as extxyz (energy eV, forces eV/Å as calculator results, molecule: no cell, no pbc)."""
    from ase import Atoms
    from ase.calculators.singlepoint import SinglePointCalculator
    from ase.io import write

    frames = []
    for s in structures:
        periodic = bool(np.any(s.pbc))
        atoms = Atoms(numbers=s.Z, positions=s.positions, cell=s.cell if periodic else None, pbc=s.pbc)
        atoms.calc = SinglePointCalculator(atoms, energy=float(s.energy), forces=np.asarray(s.forces))
        frames.append(atoms)
    write(path, frames, format="extxyz")


def test_errors(e_true: np.ndarray, e_pred: np.ndarray, f_true: np.ndarray, f_pred: np.ndarray) -> Dict[str, float]:
    """Test errors in meV and meV/Å: energy MAE / RMSE over structures, forces MAE / RMSE over components."""
    de = np.asarray(e_pred, np.float64) - np.asarray(e_true, np.float64)
    df = (np.asarray(f_pred, np.float64) - np.asarray(f_true, np.float64)).ravel()
    return {"n_structures": int(de.size), "energy_mae": 1000.0 * float(np.mean(np.abs(de))),
            "energy_rmse": 1000.0 * float(np.sqrt(np.mean(de ** 2))),
            "forces_mae": 1000.0 * float(np.mean(np.abs(df))), "forces_rmse": 1000.0 * float(np.sqrt(np.mean(df ** 2)))}


# ---- the two sides ---------------------------------------------------------------------------------------------

def run_qallegro(settings: Dict[str, Any], test: Sequence[Any], workdir: str) -> Dict[str, Any]:
    """Train qallegro with `run_training` for the wall budget, then test its potential.qallegro.

    Returns:
        The side's record: history (one row per validation), steps, epochs, n_parameters, test errors, ...
    """
    import dataclasses

    from qallegro.potential import load
    from qallegro.train.config import TrainConfig
    from qallegro.train.run import run_training

    out = os.path.join(workdir, "qallegro")
    training = dict(settings["profile_training"], max_epochs=settings.get("max_epochs") or 10 ** 6,
                    max_minutes=settings["minutes"])
    if "refit_shift" in {f.name for f in dataclasses.fields(TrainConfig)}:
        training["refit_shift"] = False  # nequip has no post-training shift refit
    cfg = {"dataset": {"train": TRAIN_NPZ, "n_train": settings["n_train"], "n_val": settings["n_val"]},
           "model": dict(settings["qallegro_model"]), "training": training, "dtype": settings["dtype"]}
    lines: List[str] = []

    def keep(line: str) -> None:
        lines.append(line)
        log(f"[qallegro] {line}")

    t0 = time.perf_counter()
    if settings.get("init") == "peer":
        with peer_initial_weights(settings):
            results = run_training(cfg, out, seed=settings["seed"], title="time to accuracy (qallegro)", log=keep)
    else:
        results = run_training(cfg, out, seed=settings["seed"], title="time to accuracy (qallegro)", log=keep)
    total_minutes = (time.perf_counter() - t0) / 60.0
    with open(os.path.join(out, "metrics.csv")) as f:
        rows = list(csv.DictReader(f))
    history = [{"epoch": int(r["epoch"]), "step": int(r["step"]), "elapsed_minutes": float(r["elapsed_minutes"]),
                "learning_rate": float(r["learning_rate"]), "val_forces_mae": float(r["val_forces_mae"]),
                "val_energy_mae": float(r["val_energy_mae"]), "val_loss": float(r["val_loss"])} for r in rows]
    # batches per epoch: the loader closes a batch early when the next frame would overflow its edge budget
    steps_per_epoch = history[0]["step"] if history else math.ceil(settings["n_train"] / settings["training"]
                                                                     ["batch_size"])
    steps = history[-1]["step"] if history else 0
    for line in lines:  # a time limit inside an epoch: "... reached in epoch E (batch B/N) ..."
        match = re.search(r"reached in epoch (\d+) \(batch (\d+)/(\d+)\)", line)
        if match:
            steps_per_epoch = history[0]["step"] if history else int(match.group(3))
            steps = (history[-1]["step"] if history else 0) + int(match.group(2))
    t_test = time.perf_counter()
    potential = load(os.path.join(out, "potential.qallegro"))
    e_pred, f_pred = [], []
    for s in test:
        energy, forces = potential.energy_and_forces(s.positions, s.Z)
        e_pred.append(float(energy))
        f_pred.append(np.asarray(forces))
    errors = test_errors(np.array([s.energy for s in test]), np.array(e_pred), np.concatenate([s.forces for s in test]),
                         np.concatenate(f_pred))
    return {"run_dir": os.path.relpath(out, ROOT), "history": history, "steps": int(steps),
            "steps_per_epoch": int(steps_per_epoch), "epochs_validated": len(history),
            "epochs": steps / steps_per_epoch, "train_minutes": float(results["train_minutes"]),
            "best_epoch": results.get("best_epoch"), "n_parameters": int(results["n_parameters"]),
            "compiled_shapes": results.get("compiled_shapes"), "validation_best": results.get("validation"),
            "test": errors, "test_minutes": (time.perf_counter() - t_test) / 60.0,
            "process_minutes": total_minutes, "statistics": results.get("statistics")}


@contextlib.contextmanager
def peer_initial_weights(settings: Dict[str, Any]) -> Iterator[None]:
    """Within the block, `run_training` starts from nequip-allegro's initial weights for the run seed (the peer's
    `AllegroModel(seed=...)`, as its nequip-train run draws them) instead of qallegro's own draw.

    An experiment hook (`--init peer`), not a training feature: with both sides starting from the same weights on
    the same split, only the batch order differs, which separates "the initial draw" from "the training" as the
    cause of a per-epoch difference. The weights come from optimizer_parity_worker.py with no steps and are copied
    by `reference_parity.params_from_reference`.
    """
    import dataclasses
    import tempfile
    from unittest import mock

    import jax
    import jax.numpy as jnp
    from ase.data import chemical_symbols

    from experiments.benchmarks import peer
    from experiments.benchmarks.reference_parity import params_from_reference, run_peer_worker
    from qallegro.train import run as run_module

    original = run_module.prepare

    def prepare(train, model_config, seed, **kwargs):
        prepared = original(train, model_config, seed=seed, **kwargs)
        stats = prepared.statistics
        type_names = [chemical_symbols[z] for z in stats.species]
        hparams = dict(peer.PEER_MODEL, r_max=float(model_config["r_max"]),
                       avg_num_neighbors=float(stats.avg_num_neighbors),
                       per_type_energy_shifts=dict(zip(type_names, map(float, stats.species_shift))),
                       per_type_energy_scales=dict(zip(type_names, map(float, stats.species_scale))))
        spec = {"seed": seed, "type_names": type_names, "hparams": hparams, "training": settings["training"],
                "model_dtype": settings["dtype"], "batches": []}
        with tempfile.TemporaryDirectory() as tmp:
            arrays = run_peer_worker("optimizer_parity_worker.py", spec, tmp)  # no steps: the initial weights
        dtype = jax.tree.leaves(prepared.params)[0].dtype
        params = jax.tree.map(lambda p: jnp.asarray(p, dtype), params_from_reference(arrays, prepared.model))
        log(f"[qallegro] initial weights: nequip-allegro's AllegroModel(seed={seed})")
        return dataclasses.replace(prepared, params=params)

    with mock.patch.object(run_module, "prepare", prepare):
        yield


def peer_config(settings: Dict[str, Any], statistics: Dict[str, Any], peer_dir: str,
                data_paths: Dict[str, str]) -> Dict[str, Any]:
    """The nequip-train (hydra) config of the peer, with every shared setting mapped to its nequip form.

    nequip normalises the loss coefficients to sum to 1, so its loss is qallegro's divided by S = λE + λF. Adam is
    invariant to that scale when its epsilon is divided by S too, and clipping the gradient norm at clip_norm / S
    clips the same steps: with both, the optimiser is the same function of the same data. torch's
    ReduceLROnPlateau reduces after patience + 1 epochs without improvement, optax's after patience, hence
    patience - 1 here.
    """
    from ase.data import chemical_symbols

    tr = settings["training"]
    type_names = [chemical_symbols[z] for z in statistics["species"]]
    scale = float(tr["energy_weight"] + tr["forces_weight"])
    r_max = float(settings["qallegro_model"]["r_max"])

    def metric(name, field, kind, coeff=None):
        entry = {"name": name, "field": field, "metric": {"_target_": f"nequip.train.{kind}"}}
        if coeff is not None:
            entry["coeff"] = float(coeff)
        return entry

    per_atom_energy = {"_target_": "nequip.data.PerAtomModifier", "field": "total_energy"}
    metrics = {"_target_": "nequip.train.MetricsManager", "metrics": [
        metric("per_atom_energy_mse", per_atom_energy, "MeanSquaredError", tr["energy_weight"]),
        metric("forces_mse", "forces", "MeanSquaredError", tr["forces_weight"]),
        metric("total_energy_mae", "total_energy", "MeanAbsoluteError"),
        metric("forces_mae", "forces", "MeanAbsoluteError"),
        metric("forces_rmse", "forces", "RootMeanSquaredError")]}

    def loader(batch_size, shuffle):
        return {"_target_": "torch.utils.data.DataLoader", "batch_size": int(batch_size), "shuffle": shuffle}

    model = {"_target_": "allegro.model.AllegroModel", "seed": settings["seed"], "model_dtype": settings["dtype"],
             "type_names": type_names, **copy.deepcopy(settings["peer_model"]),
             "avg_num_neighbors": float(statistics["avg_num_neighbors"]),
             "per_type_energy_shifts": {t: float(x) for t, x in zip(type_names, statistics["species_shift"])},
             "per_type_energy_scales": {t: float(x) for t, x in zip(type_names, statistics["species_scale"])},
             "per_type_energy_shifts_trainable": False, "per_type_energy_scales_trainable": False}
    model["r_max"] = r_max
    return {
        "run": ["train", "test"],
        "data": {
            "_target_": "nequip.data.datamodule.ASEDataModule", "seed": settings["seed"],
            "train_file_path": data_paths["train"], "val_file_path": data_paths["val"],
            "test_file_path": data_paths["test"], "ase_args": {"format": "extxyz"},
            "transforms": [
                {"_target_": "nequip.data.transforms.ChemicalSpeciesToAtomTypeMapper", "model_type_names": type_names,
                 "chemical_species_to_atom_type_map": {t: t for t in type_names}},
                {"_target_": "nequip.data.transforms.NeighborListTransform", "r_max": r_max}],
            "train_dataloader": loader(tr["batch_size"], True),
            "val_dataloader": loader(tr["eval_batch_size"], False),
            "test_dataloader": loader(tr["eval_batch_size"], False)},
        "trainer": {
            "_target_": "lightning.Trainer", "accelerator": "cpu", "devices": 1,
            "max_epochs": settings.get("max_epochs") or 10 ** 6,
            "max_time": lightning_duration(60.0 * settings["minutes"]), "check_val_every_n_epoch": 1,
            "num_sanity_val_steps": 0, "log_every_n_steps": 50, "enable_progress_bar": False,
            "gradient_clip_val": float(tr["clip_norm"]) / scale, "gradient_clip_algorithm": "norm",
            "logger": {"_target_": "lightning.pytorch.loggers.CSVLogger", "save_dir": peer_dir, "name": "csv_logs",
                       "version": 0},
            "callbacks": [
                {"_target_": "lightning.pytorch.callbacks.ModelCheckpoint", "dirpath": peer_dir, "filename": "best",
                 "monitor": "val0_epoch/weighted_sum", "mode": "min", "save_top_k": 1, "save_last": False},
                {"_target_": "peer_clock.EpochClock", "out_file": os.path.join(peer_dir, "clock.jsonl")},
                {"_target_": "nequip.train.callbacks.TestTimeXYZFileWriter",
                 "out_file": os.path.join(peer_dir, "test_predictions"),
                 "output_fields_from_original_dataset": ["total_energy", "forces"], "chemical_symbols": type_names}]},
        "training_module": {
            "_target_": "nequip.train.EMALightningModule", "ema_decay": float(tr["ema_decay"]),
            "loss": {"_target_": "nequip.train.EnergyForceLoss", "per_atom_energy": True,
                     "coeffs": {"total_energy": float(tr["energy_weight"]), "forces": float(tr["forces_weight"])}},
            "val_metrics": metrics, "test_metrics": copy.deepcopy(metrics),
            "optimizer": {"_target_": "torch.optim.Adam", "lr": float(tr["learning_rate"]), "eps": 1e-8 / scale},
            "lr_scheduler": {
                "scheduler": {"_target_": "torch.optim.lr_scheduler.ReduceLROnPlateau", "mode": "min",
                              "factor": float(tr["plateau_factor"]), "patience": int(tr["plateau_patience"]) - 1,
                              "threshold": 1e-4, "threshold_mode": "rel", "cooldown": 0,
                              "min_lr": float(tr["learning_rate"]) * float(tr["min_lr_scale"])},
                "monitor": "val0_epoch/weighted_sum", "interval": "epoch", "frequency": 1},
            "model": model}}


def lightning_duration(seconds: float) -> str:
    """Seconds as Lightning's "DD:HH:MM:SS" max_time string (whole seconds)."""
    s = int(round(seconds))
    return f"{s // 86400:02d}:{s % 86400 // 3600:02d}:{s % 3600 // 60:02d}:{s % 60:02d}"


def run_peer(settings: Dict[str, Any], statistics: Dict[str, Any], train: Sequence[Any], val: Sequence[Any],
             test: Sequence[Any], workdir: str, threads: Optional[int]) -> Dict[str, Any]:
    """Write the frames and the nequip config, run `nequip-train` (train, then test on the best checkpoint).

    Returns:
        The side's record, as `run_qallegro`'s.

    Raises:
        RuntimeError: nequip-train failed (the tail of its log is in the message).
    """
    import yaml
    from ase.io import read

    peer_dir = os.path.join(workdir, "peer")
    os.makedirs(peer_dir, exist_ok=True)
    for stale in glob.glob(os.path.join(peer_dir, "*.xyz")) + glob.glob(os.path.join(peer_dir, "*.ckpt")):
        os.remove(stale)  # the test writer appends; checkpoints of an earlier run would be picked up
    data_paths = {}
    for name, frames in (("train", train), ("val", val), ("test", test)):
        data_paths[name] = os.path.join(peer_dir, f"{name}.extxyz")
        write_extxyz(frames, data_paths[name])
    config = peer_config(settings, statistics, peer_dir, data_paths)
    with open(os.path.join(peer_dir, "config.yaml"), "w") as f:
        yaml.safe_dump(config, f, sort_keys=False)
    env = dict(os.environ, PYTHONPATH=CLOCK_DIR + os.pathsep + os.environ.get("PYTHONPATH", ""))
    if threads:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    cmd = [os.path.join(PEER_BIN, "nequip-train"), "--config-path", peer_dir, "--config-name", "config",
           f"hydra.run.dir={os.path.join(peer_dir, 'hydra')}"]
    log(f"[peer] {' '.join(cmd)}")
    log_path = os.path.join(peer_dir, "nequip-train.log")
    t0 = time.perf_counter()
    with open(log_path, "w") as out:
        proc = subprocess.run(cmd, cwd=peer_dir, env=env, stdout=out, stderr=subprocess.STDOUT,
                              timeout=60.0 * settings["minutes"] + 3600.0)
    total_minutes = (time.perf_counter() - t0) / 60.0
    with open(log_path) as f:
        tail = f.read()[-3000:]
    if proc.returncode != 0:
        raise RuntimeError(f"nequip-train exited {proc.returncode}; log {log_path}:\n{tail}")
    clock = [json.loads(line) for line in open(os.path.join(peer_dir, "clock.jsonl")) if line.strip()]
    start = next((r for r in clock if r["event"] == "start"), {})
    end = next((r for r in clock if r["event"] == "end"), {})
    csv_rows = {}
    for path in glob.glob(os.path.join(peer_dir, "csv_logs", "*", "metrics.csv")):
        with open(path) as f:
            for row in csv.DictReader(f):
                if row.get("val0_epoch/forces_mae"):
                    csv_rows[int(float(row["epoch"])) + 1] = row  # the CSV logger's epoch is 0-based
    history = []
    for r in (r for r in clock if r["event"] == "validation"):
        row = csv_rows.get(r["epoch"], {})

        def value(key, r=r, row=row):  # the CSV logger's value, else the clock's copy of the same metric
            return float(row.get(key) or r["metrics"].get(key, float("nan")))

        history.append({"epoch": r["epoch"], "step": r["step"], "elapsed_minutes": r["elapsed_minutes"],
                        "learning_rate": r["learning_rate"],
                        "val_forces_mae": 1000.0 * value("val0_epoch/forces_mae"),
                        "val_energy_mae": 1000.0 * value("val0_epoch/total_energy_mae"),
                        "val_loss": scale_back(value("val0_epoch/weighted_sum"), settings)})
    steps_per_epoch = math.ceil(len(train) / settings["training"]["batch_size"])
    steps = int(end.get("step", history[-1]["step"] if history else 0))
    # test: nequip-train's own test run on the best checkpoint wrote its predictions with the reference labels
    predictions = read(os.path.join(peer_dir, "test_predictions_dataset0.xyz"), index=":")
    errors = test_errors(np.array([a.info["original_dataset_energy"] for a in predictions]),
                         np.array([a.get_potential_energy() for a in predictions]),
                         np.concatenate([a.arrays["original_dataset_forces"] for a in predictions]),
                         np.concatenate([a.get_forces() for a in predictions]))
    nequip_test = {}
    for path in glob.glob(os.path.join(peer_dir, "csv_logs", "*", "metrics.csv")):
        with open(path) as f:
            for row in csv.DictReader(f):
                nequip_test.update({k: float(v) for k, v in row.items() if k.startswith("test0_epoch/") and v})
    return {"run_dir": os.path.relpath(peer_dir, ROOT), "history": history, "steps": steps,
            "steps_per_epoch": steps_per_epoch, "epochs_validated": sum(1 for h in history
                                                                        if h["step"] % steps_per_epoch == 0),
            "epochs": steps / steps_per_epoch, "train_minutes": float(end.get("elapsed_minutes", float("nan"))),
            "n_parameters": start.get("n_parameters"), "torch_threads": start.get("torch_threads"),
            "torch": start.get("torch"), "test": errors, "nequip_test_metrics": nequip_test,
            "process_minutes": total_minutes, "config": os.path.relpath(os.path.join(peer_dir, "config.yaml"), ROOT),
            "log_tail": tail[-1200:]}


def scale_back(weighted_sum: float, settings: Dict[str, Any]) -> float:
    """nequip's normalised weighted sum of the validation MSEs, in qallegro's loss units (x (λE + λF))."""
    return weighted_sum * (settings["training"]["energy_weight"] + settings["training"]["forces_weight"])


# ---- analysis and report ---------------------------------------------------------------------------------------

def time_to(side: Dict[str, Any], threshold: float) -> Optional[Dict[str, float]]:
    """The first validation of a side's record with forces MAE <= threshold (meV/Å): {"minutes", "epoch"} (epochs
    as optimizer steps / steps per epoch, fractional for a validation inside an epoch), or None."""
    for h in side["history"]:
        if h["val_forces_mae"] <= threshold:
            return {"minutes": h["elapsed_minutes"], "epoch": h["step"] / side["steps_per_epoch"]}
    return None


def fmt_epoch(epoch: float) -> str:
    """An epoch count: whole numbers as such, fractions with two decimals."""
    return f"{epoch:.0f}" if abs(epoch - round(epoch)) < 1e-9 else f"{epoch:.2f}"


def _threads_line(torch_threads: Optional[int], report: Optional[Dict[str, Any]]) -> str:
    machine = (report or {}).get("machine", {})
    single = "xla_cpu_multi_thread_eigen=false" in machine.get("xla_flags", "")
    xla = (f"XLA one thread (XLA_FLAGS={machine['xla_flags']})" if single else
           f"XLA uses the {machine.get('cores_allowed', 'all')} core(s) the process may use")
    torch = (f"torch {torch_threads} thread(s) (--peer-threads)" if torch_threads
             else "torch its default (one per core)")
    return f"Threads: {xla}; {torch}."


def differences(settings: Dict[str, Any], threads: Optional[int], report: Optional[Dict[str, Any]] = None) -> List[str]:
    """Every setting where the two runs differ, and why (the model part read from peer.py's dicts, the batching
    from the finished sides in `report`)."""
    q, p = settings["qallegro_model"], settings["peer_model"]
    coupled_peer = bool(p.get("tp_path_channel_coupling", True))  # nequip-allegro's default is True
    coupled_q = any(bool(v) for k, v in q.items() if "coupling" in k)
    items = []
    if coupled_peer != coupled_q:
        items.append(f"Model: path-channel coupling is {'on' if coupled_peer else 'off'} in the peer "
                     f"(`tp_path_channel_coupling`) but {'on' if coupled_q else 'off'} in qallegro (peer.py's "
                     "dicts as read at run time), so the parameter counts differ.")
    if q.get("architecture") != "nequip-allegro-0.8":
        items.append(f"Model: qallegro runs its {q.get('architecture', 'qallegro-residual')!r} layout, not the "
                     "reference's (architecture 'nequip-allegro-0.8'), so the networks differ.")
        items.append("Initial weights: qallegro zero-initialises the last readout layer of its residual layout; "
                     "nequip's starts random.")
    if settings.get("init") == "peer":
        items.append("Initial weights: identical. qallegro starts from nequip-allegro's `AllegroModel(seed)` weights "
                     "(`--init peer`; tests/test_reference_architecture.py shows equal weights give equal outputs), "
                     "because the initial draw alone moves the validation forces MAE after 10 epochs by several "
                     "meV/Å (init_swap/init_swap.md): one seed per side then compares the codes, not two draws.")
    else:
        items.append(
            "Initial weights: the same distributions on both sides (nequip's: unit-variance uniform weights scaled "
            "by gain / sqrt(fan_in) in the forward pass, N(0, 1) species embeddings, U(-sqrt 3, sqrt 3) path "
            "weights; tests/test_reference_architecture.py shows equal weights give equal outputs), drawn by "
            "different random generators from the same seed, so the initial numbers differ.")
    items += [
        "Data order: both reshuffle the same training frames every epoch, qallegro from (seed, epoch) with numpy, "
        "the peer with torch's seeded DataLoader generator, so batches differ.",
        "Loss scale: nequip normalises the loss coefficients to sum to 1 (loss / (λE + λF)); compensated exactly by "
        "giving its Adam eps / (λE + λF) and clipping the gradient norm at clip_norm / (λE + λF), so the updates "
        "are the same function of the gradients. Its validation weighted sum is scaled back for the record.",
        "Plateau patience: torch's ReduceLROnPlateau lowers the rate after patience + 1 epochs without improvement, "
        "optax's reduce_on_plateau after patience; the peer gets patience - 1 (same behaviour, rel. threshold 1e-4, "
        "no cooldown, same minimum rate).",
        "EMA warm-up: both use decay' = min(decay, (1 + n) / (10 + n)); nequip copies the weights at its first "
        "update and counts from 1, qallegro averages from the first step (differs for the first few steps only).",
        "Energy precision: nequip (model_dtype float32, default dtype float64) sums atomic energies and shifts in "
        "float64 and computes the loss in float64; so does qallegro (JAX's x64 mode on, as in every command-line run; "
        "runs before 2026-12-03 had it off and summed energies in float32). Networks run in float32 on both sides.",
        "Execution: qallegro is jit-compiled by XLA (compilation counts against its budget); the peer runs eager "
        "PyTorch (nequip's default; torch.compile training not used on CPU). Neighbour lists: qallegro builds "
        "them once before training (not in the budget); nequip's data pipeline rebuilds them each time a frame is "
        "loaded (in the budget, as in a normal nequip-train run).",
        _threads_line(threads, report),
        "Wall budget: both clocks start with the training loop (qallegro: `fit`; the peer: Lightning's max_time "
        "timer, on_train_start) and stop after the first batch past the budget; data loading, statistics and "
        "testing are outside. When stopped mid-epoch, Lightning still validates the partial epoch, qallegro does "
        "not.",
        "Energy shifts: qallegro's post-training refit of the per-species shifts is switched off (nequip has none); "
        "both use the same fitted shifts and scales throughout.",
        "Test evaluation: qallegro through its saved potential.qallegro frame by frame; the peer through "
        "nequip-train's test run on best.ckpt in batches of eval_batch_size; the errors of both are computed "
        "here by one function from the predictions.",
    ]
    sides = {k: (report or {}).get(k) for k in SIDES}
    if all(sides.values()) and sides["qallegro"]["n_parameters"] != sides["peer"]["n_parameters"]:
        items.append(f"Trainable parameters: qallegro {sides['qallegro']['n_parameters']}, the peer "
                     f"{sides['peer']['n_parameters']}, from the same peer.py dicts: the two parametrisations of "
                     "the model are not yet identical.")
    if all(sides.values()) and sides["qallegro"]["steps_per_epoch"] != sides["peer"]["steps_per_epoch"]:
        items.append(f"Batches per epoch: qallegro {sides['qallegro']['steps_per_epoch']}, the peer "
                     f"{sides['peer']['steps_per_epoch']}. qallegro pads every batch to one fixed node/edge budget "
                     "and closes a batch early (fewer than batch_size frames) when the next frame's edges would not "
                     "fit; the peer's batches always hold batch_size frames. Epoch counts are optimizer steps / "
                     "each side's own steps per epoch.")
    return items


def fmt(x: Optional[float], digits: int = 1) -> str:
    """A number for the table, or a dash."""
    if x is None or not np.isfinite(x):
        return "—"
    return f"{x:.{digits}f}"


def markdown(report: Dict[str, Any]) -> str:
    """The report as markdown."""
    s, sides = report["settings"], {k: report.get(k) for k in SIDES}
    tr = s["training"]
    m = report["machine"]
    lines = ["# Time to accuracy: qallegro vs PyTorch Allegro (nequip-allegro 0.8), rMD17 aspirin", "",
             f"Run {report['date']} with `{report['command']}` on {m['cpus']} CPU cores ({m['processor']}; "
             f"{m['platform']}). Load average (1, 5, 15 min) at the start: "
             f"{', '.join(f'{x:.2f}' for x in report['loadavg']['start'])}"
             + (f"; at the end: {', '.join(f'{x:.2f}' for x in report['loadavg']['end'])}"
                if report["loadavg"].get("end") else "") + ". "
             + ("The sides ran at the same time, each pinned to its own core: " if report.get("concurrent")
                else "The sides ran one after the other: ")
             + ", ".join(f"{k} (load {', '.join(f'{x:.2f}' for x in report['loadavg'][k + '_start'])} at its start)"
                         for k in SIDES if report["loadavg"].get(k + "_start")) + ".", "",
             f"Data: rMD17 aspirin split 01, the same {s['n_train']} training / {s['n_val']} validation frames (seed "
             f"{s['seed']}) for both, tested on the 1000 frames of rmd17_aspirin_test_01.npz. Budget "
             f"{s['minutes']:g} min of training each; float32; batch {tr['batch_size']}; Adam, lr "
             f"{tr['learning_rate']:g}, gradient norm clipped at {tr['clip_norm']:g}; loss {tr['energy_weight']:g} "
             f"MSE(E/atom) + {tr['forces_weight']:g} MSE(F); EMA decay {tr['ema_decay']:g} (validated and tested "
             f"with the EMA weights of the best validation epoch); reduce on plateau x{tr['plateau_factor']:g} after "
             f"{tr['plateau_patience']} epochs without improvement of the validation loss (minimum "
             f"{tr['min_lr_scale']:g} x lr).", "",
             "| | " + " | ".join(LABELS[k] for k in SIDES) + " | qallegro / peer |", "|---|---:|---:|---:|"]

    def row(name, getter, digits=1, ratio=True):
        vals = [getter(sides[k]) if sides[k] else None for k in SIDES]
        r = vals[0] / vals[1] if ratio and all(v is not None and np.isfinite(v) and v for v in vals) else None
        lines.append(f"| {name} | " + " | ".join(fmt(v, digits) for v in vals) + f" | {fmt(r, 2)} |")

    for t in THRESHOLDS:
        cells = []
        for k in SIDES:
            hit = time_to(sides[k], t) if sides[k] else None
            cells.append(f"{hit['minutes']:.1f} min (epoch {fmt_epoch(hit['epoch'])})" if hit else
                         ("not reached" if sides[k] else "—"))
        hits = [time_to(sides[k], t) if sides[k] else None for k in SIDES]
        r = hits[0]["minutes"] / hits[1]["minutes"] if all(hits) and hits[1]["minutes"] > 0 else None
        lines.append(f"| time to {t:g} meV/Å (val. forces MAE) | " + " | ".join(cells) + f" | {fmt(r, 2)} |")
    row("final val. forces MAE, meV/Å (last epoch)", lambda d: d["history"][-1]["val_forces_mae"]
        if d["history"] else None)
    row("best val. forces MAE, meV/Å", lambda d: min(h["val_forces_mae"] for h in d["history"])
        if d["history"] else None)
    row("**test forces MAE, meV/Å**", lambda d: d["test"]["forces_mae"])
    row("test forces RMSE, meV/Å", lambda d: d["test"]["forces_rmse"])
    row("**test energy MAE, meV**", lambda d: d["test"]["energy_mae"])
    row("epochs done (optimizer steps / steps per epoch)", lambda d: d["steps"] / d["steps_per_epoch"], 2)
    row("optimizer steps", lambda d: d["steps"], 0)
    row("steps per training minute", lambda d: d["steps"] / d["train_minutes"] if d["train_minutes"] else None, 0)
    row("training minutes", lambda d: d["train_minutes"], 2)
    row("trainable parameters", lambda d: d["n_parameters"], 0)
    lines.append("")
    q, p = sides["qallegro"], sides["peer"]
    if q and p:
        target = p["test"]["forces_mae"]
        hit = time_to(q, target)
        lines.append(f"qallegro's validation forces MAE first reached the peer's final test forces MAE "
                     f"({target:.1f} meV/Å) "
                     + (f"after {hit['minutes']:.1f} min (epoch {fmt_epoch(hit['epoch'])}), "
                        f"{hit['minutes'] / p['train_minutes']:.2f} of the peer's {p['train_minutes']:.1f} min."
                        if hit else "not within its budget.") + " (Goal of issue 15: at most 1/3.)")
        lines.append("")
    if p and p.get("nequip_test_metrics"):
        nq = p["nequip_test_metrics"]
        lines += [f"nequip's own test metrics of the peer (its test run): forces MAE "
                  f"{1000 * nq.get('test0_epoch/forces_mae', float('nan')):.1f} meV/Å, energy MAE "
                  f"{1000 * nq.get('test0_epoch/total_energy_mae', float('nan')):.1f} meV (the table's numbers are "
                  "computed here from its written predictions).", ""]
    lines += ["![learning curves](time_to_accuracy.png)", "", "## Settings that differ, and why", ""]
    lines += [f"- {d}" for d in report["differences"]]
    lines += ["", "Identical on both sides: the frames and their order within each split file, r_max and every "
              "hyperparameter in peer.py's QALLEGRO_MODEL / PEER_MODEL (each code's spelling of the same model), "
              "avg_num_neighbors, per-species energy shifts and scales (qallegro's fit on the training frames, "
              "non-trainable on both sides), the loss, Adam with its clipping, the learning rate and its schedule, "
              "batch size, evaluation batch size, EMA decay, validation every epoch with the EMA weights, model "
              "selection by the lowest validation loss, float32 networks.", "",
              f"Models: qallegro `{json.dumps(s['qallegro_model'])}`; peer `{json.dumps(s['peer_model'])}`.", ""]
    return "\n".join(lines)


def plot(report: Dict[str, Any], path: str) -> None:
    """Validation forces MAE vs wall minutes and vs epochs (log y), both sides, threshold lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    colours = {"qallegro": "tab:blue", "peer": "tab:orange"}
    drawn = False
    for k in SIDES:
        d = report.get(k)
        if not d or not d["history"]:
            continue
        drawn = True
        y = [h["val_forces_mae"] for h in d["history"]]
        axes[0].plot([h["elapsed_minutes"] for h in d["history"]], y, "o-", ms=3, color=colours[k], label=LABELS[k])
        axes[1].plot([h["step"] / d["steps_per_epoch"] for h in d["history"]], y, "o-", ms=3, color=colours[k],
                     label=LABELS[k])
    for ax, xlabel in zip(axes, ("training wall time (min)", "epochs")):
        for t in THRESHOLDS:
            ax.axhline(t, color="grey", lw=0.6, ls="--")
        ax.set_yscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("validation forces MAE (meV/Å)")
        ax.grid(True, which="both", alpha=0.25)
        if drawn:
            ax.legend()
    m = report["machine"]
    cores = m.get("cores_allowed", m["cpus"])  # a run pinned with taskset sees its own cores only
    fig.suptitle(f"rMD17 aspirin, {report['settings']['minutes']:g} min each, {cores} of {m['cpus']} CPU cores, "
                 f"{report['date']}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_outputs(report: Dict[str, Any], out: str) -> None:
    """(Re)write the JSON, the markdown and the PNG from what is done so far."""
    report["differences"] = differences(report["settings"], report.get("peer_threads"), report)
    os.makedirs(out, exist_ok=True)
    tmp = os.path.join(out, "time_to_accuracy.json.tmp")
    with open(tmp, "w") as f:
        json.dump(report, f, indent=1, default=float)
    os.replace(tmp, os.path.join(out, "time_to_accuracy.json"))
    with open(os.path.join(out, "time_to_accuracy.md"), "w") as f:
        f.write(markdown(report))
    plot(report, os.path.join(out, "time_to_accuracy.png"))


def merge(paths: Sequence[str], out: str) -> int:
    """One report from a qallegro-only and a peer-only report of the same settings, run concurrently (each side
    pinned to its own core: `taskset -c K python -m experiments.benchmarks.time_to_accuracy --sides S ...`)."""
    with open(paths[0]) as f:
        report = json.load(f)
    with open(paths[1]) as f:
        other = json.load(f)
    if "qallegro" not in report or "peer" not in other:
        raise SystemExit("--merge takes the qallegro side's report first, then the peer side's")
    keep = ("training", "qallegro_model", "peer_model", "n_train", "n_val", "seed", "minutes", "max_epochs", "dtype")
    mismatch = [k for k in keep if report["settings"].get(k) != other["settings"].get(k)]
    if mismatch:
        raise SystemExit(f"the two reports' settings differ in {mismatch}")
    report["peer"] = other["peer"]
    report["peer_threads"] = other.get("peer_threads")
    report["command"] = f"{report['command']}` and, at the same time, `{other['command']}"
    report["concurrent"] = True
    for key in ("peer_start", "peer_end"):
        report["loadavg"][key] = other["loadavg"].get(key)
    report["loadavg"]["end"] = max(report["loadavg"]["end"], other["loadavg"]["end"])
    write_outputs(report, out)
    print(markdown(report))
    return 0


def summary_line(name: str, d: Dict[str, Any]) -> str:
    """One line per side for the console."""
    last = d["history"][-1]["val_forces_mae"] if d["history"] else float("nan")
    return (f"{name}: {d['epochs']:.2f} epochs ({d['steps']} steps) in {d['train_minutes']:.2f} min; last val "
            f"forces MAE {last:.1f} meV/Å; test forces MAE {d['test']['forces_mae']:.1f} meV/Å, energy MAE "
            f"{d['test']['energy_mae']:.1f} meV; {d['n_parameters']} parameters")


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Command line: see the module docstring."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=30.0, help="training wall budget of each side (min)")
    parser.add_argument("--quick", action="store_true", help="smoke test: 2 minutes each, outputs under runs/")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-epochs", type=int, default=None,
                        help="also stop each side after N epochs (per-epoch comparisons; --minutes stays a ceiling)")
    parser.add_argument("--out", default=None, help="report folder (default experiments/results; with --quick "
                                                    "runs/time_to_accuracy-quick)")
    parser.add_argument("--workdir", default=None, help="run directories (default runs/time_to_accuracy[-quick])")
    parser.add_argument("--sides", default="qallegro,peer", help="which sides to run, in this order")
    parser.add_argument("--init", choices=("own", "peer"), default="own",
                        help="qallegro's initial weights: its own draw, or nequip-allegro's for the same seed "
                             "(an experiment: see peer_initial_weights)")
    parser.add_argument("--merge", nargs=2, metavar=("QALLEGRO_JSON", "PEER_JSON"), default=None,
                        help="write one report from two one-side reports of the same settings (the sides run at "
                             "the same time, each pinned to its own core) into --out, and exit")
    parser.add_argument("--peer-threads", type=int, default=None, help="torch threads of the peer (default: "
                                                                       "torch's)")
    args = parser.parse_args(argv)
    if args.merge:
        return merge(args.merge, args.out or os.path.join(ROOT, "experiments", "results"))
    minutes = 2.0 if args.quick else args.minutes
    suffix = "-quick" if args.quick else ""
    out = args.out or (os.path.join(ROOT, "runs", f"time_to_accuracy{suffix}") if args.quick
                       else os.path.join(ROOT, "experiments", "results"))
    workdir = os.path.abspath(args.workdir or os.path.join(ROOT, "runs", f"time_to_accuracy{suffix}"))
    out = os.path.abspath(out)
    sides = [x.strip() for x in args.sides.split(",") if x.strip()]
    unknown = sorted(set(sides) - set(SIDES))
    if unknown:
        raise SystemExit(f"unknown side(s) {unknown}; known: {list(SIDES)}")
    if "peer" in sides and not os.path.exists(os.path.join(ROOT, ".venv-peer", ".installed")):
        raise SystemExit("the peer venv is missing: run `make peer-venv`")
    report: Dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M"), "machine": machine_info(),
        "command": "python -m experiments.benchmarks.time_to_accuracy " + " ".join(sys.argv[1:] if argv is None
                                                                                  else argv),
        "loadavg": {"start": list(os.getloadavg())}}
    from experiments.config import enable_x64

    enable_x64()  # qallegro trains as every command-line run does: float64 energies, labels and loss, float32 network
    settings = load_settings(minutes, args.seed, args.max_epochs)
    settings["init"] = args.init
    report["settings"] = settings
    report["peer_threads"] = args.peer_threads
    report["differences"] = differences(settings, args.peer_threads)
    train, val, test = load_data(settings)
    statistics = fit_shared_statistics(train, settings)
    report["statistics"] = statistics
    log(f"{len(train)} train / {len(val)} validation / {len(test)} test frames; {minutes:g} min each; "
        f"statistics {statistics}")
    os.makedirs(workdir, exist_ok=True)
    for side in sides:
        report["loadavg"][side + "_start"] = list(os.getloadavg())
        log(f"=== {LABELS[side]}: training for {minutes:g} min ===")
        if side == "qallegro":
            report[side] = run_qallegro(settings, test, workdir)
            if report[side].get("statistics", {}).get("avg_num_neighbors") not in (None,
                                                                                     statistics["avg_num_neighbors"]):
                log("warning: qallegro's run fitted different statistics from those given to the peer")
        else:
            report[side] = run_peer(settings, statistics, train, val, test, workdir, args.peer_threads)
        report["loadavg"][side + "_end"] = list(os.getloadavg())
        report["loadavg"]["end"] = list(os.getloadavg())
        write_outputs(report, out)
        log(summary_line(side, report[side]))
    log(f"wrote {os.path.join(out, 'time_to_accuracy.md')}, .png and .json")
    print(markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
