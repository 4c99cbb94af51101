"""The training loop: jit-compiled steps over padded batches, validation each epoch with the EMA weights,
reduce-on-plateau learning rate, CSV log, orbax checkpoints ("last" and "best"), exact resume.

Exact resume: the data order of every epoch is a function of (seed, epoch) (see GraphLoader), and the "last"
checkpoint holds everything else that evolves (parameters, EMA, Adam moments, plateau state, step, the position
inside the epoch and the epoch's running loss). Restarting from it replays the same arithmetic as an
uninterrupted run.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import time
from typing import Any, Callable, Dict, List, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from qallegro.data.graphs import GraphLoader
from qallegro.potential import energy_forces_stress
from qallegro.train.checkpoint import restore_checkpoint, save_checkpoint
from qallegro.train.loss import error_sums, loss_predictions, metrics_from_sums, weighted_loss
from qallegro.train.optimizer import (ema_update, make_optimizer, make_plateau, plateau_step, set_learning_rate)


@dataclasses.dataclass
class TrainConfig:
    """Training hyperparameters (units: energies eV, forces eV/Å; loss weights multiply MSEs in those units)."""

    learning_rate: float = 2e-3
    batch_size: int = 5
    eval_batch_size: int = 20
    max_epochs: int = 100
    max_minutes: Optional[float] = None
    energy_weight: float = 1.0
    forces_weight: float = 1000.0
    stress_weight: float = 0.0
    ema_decay: float = 0.99
    clip_norm: float = 10.0
    plateau_factor: float = 0.5
    plateau_patience: int = 10
    min_lr_scale: float = 1e-3
    checkpoint_minutes: float = 5.0
    seed: int = 0
    #: data-parallel training over this many devices of jax.devices() (None: all of them; 1: off), see
    #: qallegro.train.parallel. The batch is split over the devices; the result equals one device's.
    devices: Optional[int] = None
    #: padded batch sizes per doubling of the node/edge count (qallegro.data.graphs.padding_budget): every
    #: padded shape compiles once, so data whose batches vary a lot in size (Cu–Li cells of 4-64 atoms) train
    #: sooner with 2 or 1 (fewer compilations, more padding) than with 4.
    pad_sizes_per_doubling: int = 4

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "TrainConfig":
        """Build from a dict; raises ValueError naming unknown keys."""
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - fields)
        if unknown:
            raise ValueError(f"unknown training option(s) {unknown}; known: {sorted(fields)}")
        return cls(**d)


CSV_FIELDS = ["epoch", "step", "learning_rate", "train_loss", "val_loss", "val_energy_mae", "val_forces_mae",
              "val_forces_rmse", "val_stress_mae", "elapsed_minutes"]


def make_steps(model: nn.Module, cfg: TrainConfig, compute_stress: bool):
    """jit-compiled (train_step, eval_step).

    train_step(state, graph) -> (state, loss): one Adam step on a padded batch plus the EMA update.
    eval_step(params, graph) -> (error sums, predictions).
    """
    optimizer = make_optimizer(cfg.learning_rate, cfg.clip_norm)
    stochastic = getattr(model, "shots", None) is not None  # finite-shot QDI: a fresh key per step
    base_key = jax.random.PRNGKey(cfg.seed)

    def loss_fn(params, graph, rng):
        pred = loss_predictions(model, params, graph, cfg.forces_weight, cfg.stress_weight, compute_stress, rng)
        sums = error_sums(pred, graph)
        return weighted_loss(sums, cfg.energy_weight, cfg.forces_weight, cfg.stress_weight), sums

    @jax.jit
    def train_step(state, graph):
        rng = jax.random.fold_in(base_key, state["step"]) if stochastic else None
        (loss, _), grads = jax.value_and_grad(loss_fn, has_aux=True)(state["params"], graph, rng)
        return apply_gradients(state, grads, optimizer, cfg), loss

    @jax.jit
    def eval_step(params, graph):
        rng = jax.random.fold_in(base_key, 2**31 - 1) if stochastic else None
        pred = energy_forces_stress(model, params, graph, compute_stress=compute_stress, rng=rng)
        return error_sums(pred, graph), pred

    return optimizer, train_step, eval_step


def apply_gradients(state: Dict[str, Any], grads: Any, optimizer, cfg: TrainConfig) -> Dict[str, Any]:
    """One optimiser step and the EMA update (shared by the single-device and data-parallel steps)."""
    updates, opt_state = optimizer.update(grads, state["opt_state"], state["params"])
    params = jax.tree.map(lambda p, u: p + u, state["params"], updates)
    ema = ema_update(state["ema_params"], params, cfg.ema_decay, state["step"].astype(jnp.float32))
    return {"params": params, "ema_params": ema, "opt_state": opt_state, "step": state["step"] + 1}


def init_train_state(params: Any, optimizer) -> Dict[str, Any]:
    return {"params": params, "ema_params": params, "opt_state": optimizer.init(params),
            "step": jnp.zeros((), jnp.int32)}


def evaluate(eval_step: Callable, params: Any, loader: GraphLoader, cfg: TrainConfig,
             return_predictions: bool = False):
    """Metrics of `params` over every structure of `loader` (meV units), and optionally the labels and
    predictions of real (unpadded) atoms/graphs for parity plots: dict of energy_true/pred (eV),
    forces_true/pred (eV/Å) and species index of the atoms of structures with force labels, n_atoms per energy."""
    totals: Dict[str, float] = {}
    collected = {"energy_true": [], "energy_pred": [], "n_atoms": [], "forces_true": [], "forces_pred": [],
                 "species": []}
    for graph in loader.batches(0):
        sums, pred = eval_step(params, graph)
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


def _progress_template(state, plateau_state) -> Dict[str, Any]:
    return {"train": state, "plateau": plateau_state,
            "progress": {"epoch": np.zeros((), np.int64), "batch": np.zeros((), np.int64),
                         "loss_sum": np.zeros((), np.float64), "best_val_loss": np.full((), np.inf),
                         "best_epoch": np.full((), -1, np.int64), "elapsed_seconds": np.zeros((), np.float64)}}


def fit(model: nn.Module, params: Any, train_loader: GraphLoader, val_loader: GraphLoader, cfg: TrainConfig,
        run_dir: str, resume: bool = False, compute_stress: bool = False,
        log: Callable[[str], None] = print) -> Dict[str, Any]:
    """Train until `cfg.max_epochs` epochs are complete or `cfg.max_minutes` of training time is used.

    Writes into `run_dir`: metrics.csv (one row per epoch), checkpoints/last, checkpoints/best (EMA weights with
    the lowest validation loss). With `resume=True` continues from checkpoints/last exactly.

    Returns:
        {"best_params": EMA params of the best epoch, "last_state": the final training state,
         "history": list of CSV rows, "best_epoch": int, "compiled_shapes": number of distinct padded shapes}.
    Raises:
        FileNotFoundError: `resume=True` but there is no checkpoint in run_dir.
        FloatingPointError: the training loss became NaN or inf (names the epoch and step).
    """
    os.makedirs(run_dir, exist_ok=True)
    last_dir = os.path.join(run_dir, "checkpoints", "last")
    best_dir = os.path.join(run_dir, "checkpoints", "best")
    csv_path = os.path.join(run_dir, "metrics.csv")

    optimizer, train_step, eval_step = make_steps(model, cfg, compute_stress)
    batches = train_loader.batches
    n_devices = cfg.devices or jax.device_count()
    if n_devices > 1:
        from qallegro.train.parallel import make_mesh, make_parallel_train_step, sharded_batches

        mesh = make_mesh(n_devices)
        train_step = make_parallel_train_step(model, cfg, compute_stress, mesh, optimizer)

        def batches(epoch, start=0):
            return sharded_batches(train_loader, mesh, epoch, start)

        log(f"data-parallel training over {n_devices} devices: {list(mesh.devices.flat)}")
    plateau = make_plateau(cfg.plateau_factor, cfg.plateau_patience, min_scale=cfg.min_lr_scale)
    ckpt = _progress_template(init_train_state(params, optimizer), plateau.init(jnp.zeros(())))

    history: List[Dict[str, Any]] = []
    if resume:
        ckpt = restore_checkpoint(last_dir, ckpt)
        if os.path.exists(csv_path):
            with open(csv_path) as f:
                history = [row for row in csv.DictReader(f) if int(row["epoch"]) <= int(ckpt["progress"]["epoch"])]
        log(f"resumed from {last_dir}: epoch {int(ckpt['progress']['epoch'])}, batch {int(ckpt['progress']['batch'])}, "
            f"step {int(ckpt['train']['step'])}")
    _write_csv(csv_path, history)

    state, plateau_state, progress = ckpt["train"], ckpt["plateau"], {k: v.item() for k, v in ckpt["progress"].items()}
    best_params = restore_checkpoint(best_dir, state["ema_params"]) if progress["best_epoch"] >= 0 else None
    started = time.perf_counter() - progress["elapsed_seconds"]
    last_save = time.perf_counter()
    out_of_time = False

    def elapsed():
        return time.perf_counter() - started

    def save_last():
        progress["elapsed_seconds"] = elapsed()
        save_checkpoint(last_dir, {"train": state, "plateau": plateau_state,
                                   "progress": {k: np.asarray(v) for k, v in progress.items()}})

    while progress["epoch"] < cfg.max_epochs and not out_of_time:
        epoch = progress["epoch"]
        lr = cfg.learning_rate * float(plateau_state.scale)
        state = dict(state, opt_state=set_learning_rate(state["opt_state"], lr))
        bar = tqdm(batches(epoch, start=progress["batch"]), total=len(train_loader),
                   initial=progress["batch"], desc=f"epoch {epoch + 1}", leave=False, disable=None)
        for graph in bar:
            state, loss = train_step(state, graph)
            loss = float(loss)
            if not np.isfinite(loss):
                raise FloatingPointError(f"training loss is {loss} at epoch {epoch + 1}, step {int(state['step'])}; "
                                         f"lower the learning rate or check the data")
            progress["loss_sum"] += loss
            progress["batch"] += 1
            bar.set_postfix(loss=f"{loss:.4g}")
            if cfg.max_minutes is not None and elapsed() > 60.0 * cfg.max_minutes:
                out_of_time = True
                break
            if time.perf_counter() - last_save > 60.0 * cfg.checkpoint_minutes:
                save_last()
                last_save = time.perf_counter()
        if out_of_time and progress["batch"] < len(train_loader):
            save_last()  # mid-epoch: `--resume` picks up at this batch
            log(f"time limit of {cfg.max_minutes} min reached in epoch {epoch + 1} "
                f"(batch {progress['batch']}/{len(train_loader)}); state saved for --resume")
            break

        val = evaluate(eval_step, state["ema_params"], val_loader, cfg)
        plateau_state = plateau_step(plateau, plateau_state, val["loss"])
        row = {"epoch": epoch + 1, "step": int(state["step"]), "learning_rate": lr,
               "train_loss": progress["loss_sum"] / max(progress["batch"], 1), "val_loss": val["loss"],
               "val_energy_mae": val["energy_mae"], "val_forces_mae": val["forces_mae"],
               "val_forces_rmse": val["forces_rmse"], "val_stress_mae": val.get("stress_mae", float("nan")),
               "elapsed_minutes": elapsed() / 60.0}
        history.append(row)
        _append_csv(csv_path, row)
        if val["loss"] < progress["best_val_loss"]:
            progress.update(best_val_loss=val["loss"], best_epoch=epoch + 1)
            best_params = state["ema_params"]
            save_checkpoint(best_dir, best_params)
        log(f"epoch {epoch + 1:4d}  lr {lr:.2e}  train loss {row['train_loss']:.4g}  val loss {val['loss']:.4g}  "
            f"val E MAE {val['energy_mae']:.1f} meV  "
            + (f"F MAE {val['forces_mae']:.1f} meV/Å  " if np.isfinite(val["forces_mae"]) else "")
            + f"[{elapsed() / 60:.1f} min]")
        progress.update(epoch=epoch + 1, batch=0, loss_sum=0.0)
        save_last()
        last_save = time.perf_counter()

    shapes = len(train_loader.shapes_seen | val_loader.shapes_seen)
    log(f"padded batch shapes compiled: {shapes} (train {len(train_loader.shapes_seen)}, "
        f"validation {len(val_loader.shapes_seen)})")
    if best_params is None:  # stopped (time limit) before the first validation: the current EMA weights
        best_params = state["ema_params"]
        save_checkpoint(best_dir, best_params)
    return {"best_params": best_params, "last_state": state, "history": history,
            "best_epoch": progress["best_epoch"], "compiled_shapes": shapes, "eval_step": eval_step,
            "elapsed_minutes": elapsed() / 60.0}


def _write_csv(path: str, rows: List[Dict[str, Any]]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_FIELDS)
        writer.writeheader()
        writer.writerows(rows)


def _append_csv(path: str, row: Dict[str, Any]) -> None:
    with open(path, "a", newline="") as f:
        csv.DictWriter(f, fieldnames=CSV_FIELDS).writerow(row)


def write_json(path: str, payload: Dict[str, Any]) -> None:
    with open(path, "w") as f:
        json.dump(payload, f, indent=2, default=float)
