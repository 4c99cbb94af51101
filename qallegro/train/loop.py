"""The training loop: jit-compiled steps over padded batches, validation each epoch with the EMA weights,
reduce-on-plateau learning rate, CSV log, orbax checkpoints ("last" and "best"), exact resume.

Before every validation the per-species energy shifts are refitted in closed form on the energy-only predictions
of a fixed subset of the training structures (`TrainConfig.shift_refit_structures`,
`qallegro.train.evaluation.fit_shift_correction`) and the validation uses that correction, as the final test does
with the refit on all training structures: the logged validation energy MAE is meaningful from the first epoch
and of the same kind as the test's. The correction is an argument of the compiled evaluation step (no
recompilation) and never sees validation or test data.

Exact resume: the data order of every epoch is a function of (seed, epoch) (see GraphLoader), and the "last"
checkpoint holds everything else that evolves (parameters, EMA, Adam moments, plateau state, step, the position
inside the epoch and the epoch's running loss). Restarting from it replays the same arithmetic as an
uninterrupted run.
"""

from __future__ import annotations

import csv
import os
import time
from typing import Any, Callable, Dict, List, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from qallegro.data.loader import GraphLoader
from qallegro.train.checkpoint import restore_checkpoint, save_checkpoint
from qallegro.train.config import TrainConfig
from qallegro.train.evaluation import evaluate, fit_shift_correction
from qallegro.train.optimizer import make_plateau, plateau_step, set_learning_rate
from qallegro.train.parallel import make_mesh, make_parallel_train_step, sharded_batches
from qallegro.train.step import TrainState, init_train_state, make_energy_step, make_steps

CSV_FIELDS = ["epoch", "step", "learning_rate", "train_loss", "val_loss", "val_energy_mae", "val_forces_mae",
              "val_forces_rmse", "val_stress_mae", "elapsed_minutes"]


class TrainProgress(NamedTuple):
    """Where a run stands, beside the `TrainState` (checkpointed with it, so `--resume` is exact).

    Attributes:
        epoch: completed epochs.
        batch: batches done in the current epoch.
        loss_sum: sum of the training losses of those batches.
        best_val_loss: lowest validation loss so far (inf before the first validation).
        best_epoch: the epoch (1-based) that reached it, -1 before the first validation.
        elapsed_seconds: training wall time used so far, over all sessions of the run.
    """

    epoch: int = 0
    batch: int = 0
    loss_sum: float = 0.0
    best_val_loss: float = float("inf")
    best_epoch: int = -1
    elapsed_seconds: float = 0.0

    def to_arrays(self) -> Dict[str, np.ndarray]:
        """The checkpointed form: 0-d numpy arrays (int64 / float64)."""
        return {k: np.asarray(v, dtype=np.int64 if isinstance(v, int) else np.float64)
                for k, v in self._asdict().items()}

    @classmethod
    def from_arrays(cls, arrays: Dict[str, Any]) -> "TrainProgress":
        """Inverse of `to_arrays`."""
        return cls(**{k: type(getattr(cls(), k))(np.asarray(v).item()) for k, v in arrays.items()})


class FitResult(NamedTuple):
    """What `fit` returns.

    Attributes:
        best_params: EMA weights of the epoch with the lowest validation loss.
        last_state: the final `TrainState`.
        history: the metrics.csv rows, one dict per epoch.
        best_epoch: 1-based epoch of `best_params` (-1: stopped before the first validation).
        compiled_shapes: number of distinct padded (nodes, edges, graphs) shapes seen (one compilation each).
        eval_step: the jit-compiled evaluation step of the run, (params, graph, shift_correction=None).
        elapsed_minutes: training wall time, all sessions of the run together.
        energy_step: the jit-compiled energy-only step of the shift refit (`make_energy_step`), to reuse its
            compilation.
    """

    best_params: Any
    last_state: TrainState
    history: List[Dict[str, Any]]
    best_epoch: int
    compiled_shapes: int
    eval_step: Callable
    elapsed_minutes: float
    energy_step: Callable = None


def _checkpoint(state: TrainState, plateau_state: Any, progress: TrainProgress) -> Dict[str, Any]:
    return {"train": state, "plateau": plateau_state, "progress": progress.to_arrays()}


def fit(model: nn.Module, params: Any, train_loader: GraphLoader, val_loader: GraphLoader, cfg: TrainConfig,
        run_dir: str, resume: bool = False, compute_stress: bool = False,
        log: Callable[[str], None] = print) -> FitResult:
    """Train until `cfg.max_epochs` epochs are complete or `cfg.max_minutes` of training time is used.

    Writes into `run_dir`: metrics.csv (one row per epoch), checkpoints/last, checkpoints/best (EMA weights with
    the lowest validation loss). With `resume=True` continues from checkpoints/last exactly.

    Returns:
        A `FitResult`.

    Raises:
        FileNotFoundError: `resume=True` but there is no checkpoint in run_dir.
        FloatingPointError: the training loss became NaN or inf (names the epoch and step).
    """
    os.makedirs(run_dir, exist_ok=True)
    last_dir = os.path.join(run_dir, "checkpoints", "last")
    best_dir = os.path.join(run_dir, "checkpoints", "best")
    csv_path = os.path.join(run_dir, "metrics.csv")

    optimizer, train_step, eval_step = make_steps(model, cfg, compute_stress)
    energy_step = make_energy_step(model, cfg)
    # A fixed subset of the training structures (the first ones; the split is already random), padded like the
    # validation batches: one evaluation shape for both.
    refit_graphs = train_loader.graphs[:cfg.shift_refit_structures]
    refit_loader = (GraphLoader(refit_graphs, cfg.eval_batch_size, shuffle=False,
                                budget=val_loader.budget.covering(refit_graphs)) if cfg.refit_shift else None)
    batches = train_loader.batches
    n_devices = cfg.devices or jax.device_count()
    if n_devices > 1:
        mesh = make_mesh(n_devices)
        train_step = make_parallel_train_step(model, cfg, compute_stress, mesh, optimizer)

        def batches(epoch, start=0):
            return sharded_batches(train_loader, mesh, epoch, start)

        log(f"data-parallel training over {n_devices} devices: {list(mesh.devices.flat)}")
    plateau = make_plateau(cfg.plateau_factor, cfg.plateau_patience, min_scale=cfg.min_lr_scale)
    ckpt = _checkpoint(init_train_state(params, optimizer), plateau.init(jnp.zeros(())), TrainProgress())

    history: List[Dict[str, Any]] = []
    if resume:
        ckpt = restore_checkpoint(last_dir, ckpt)
        if os.path.exists(csv_path):
            with open(csv_path) as f:
                history = [row for row in csv.DictReader(f) if int(row["epoch"]) <= int(ckpt["progress"]["epoch"])]
        log(f"resumed from {last_dir}: epoch {int(ckpt['progress']['epoch'])}, batch {int(ckpt['progress']['batch'])}, "
            f"step {int(ckpt['train'].step)}")
    _write_csv(csv_path, history)

    state, plateau_state, progress = ckpt["train"], ckpt["plateau"], TrainProgress.from_arrays(ckpt["progress"])
    best_params = restore_checkpoint(best_dir, state.ema_params) if progress.best_epoch >= 0 else None
    started = time.perf_counter() - progress.elapsed_seconds
    last_save = time.perf_counter()
    out_of_time = False

    def elapsed():
        return time.perf_counter() - started

    def save_last():
        save_checkpoint(last_dir, _checkpoint(state, plateau_state, progress._replace(elapsed_seconds=elapsed())))

    while progress.epoch < cfg.max_epochs and not out_of_time:
        epoch = progress.epoch
        lr = cfg.learning_rate * float(plateau_state.scale)
        state = state.replace(opt_state=set_learning_rate(state.opt_state, lr))
        n_batches = train_loader.num_batches(epoch)
        bar = tqdm(batches(epoch, start=progress.batch), total=n_batches,
                   initial=progress.batch, desc=f"epoch {epoch + 1}", leave=False, disable=None)
        for graph in bar:
            state, loss = train_step(state, graph)
            loss = float(loss)
            if not np.isfinite(loss):
                raise FloatingPointError(f"training loss is {loss} at epoch {epoch + 1}, step {int(state.step)}; "
                                         f"lower the learning rate or check the data")
            progress = progress._replace(loss_sum=progress.loss_sum + loss, batch=progress.batch + 1)
            bar.set_postfix(loss=f"{loss:.4g}")
            if cfg.max_minutes is not None and elapsed() > 60.0 * cfg.max_minutes:
                out_of_time = True
                break
            if time.perf_counter() - last_save > 60.0 * cfg.checkpoint_minutes:
                save_last()
                last_save = time.perf_counter()
        if out_of_time and progress.batch < n_batches:
            save_last()  # mid-epoch: `--resume` picks up at this batch
            log(f"time limit of {cfg.max_minutes} min reached in epoch {epoch + 1} "
                f"(batch {progress.batch}/{n_batches}); state saved for --resume")
            break

        correction = (fit_shift_correction(energy_step, state.ema_params, refit_loader, model.num_species)
                      if refit_loader is not None else None)
        val = evaluate(eval_step, state.ema_params, val_loader, cfg, shift_correction=correction)
        plateau_state = plateau_step(plateau, plateau_state, val["loss"])
        row = {"epoch": epoch + 1, "step": int(state.step), "learning_rate": lr,
               "train_loss": progress.loss_sum / max(progress.batch, 1), "val_loss": val["loss"],
               "val_energy_mae": val["energy_mae"], "val_forces_mae": val["forces_mae"],
               "val_forces_rmse": val["forces_rmse"], "val_stress_mae": val.get("stress_mae", float("nan")),
               "elapsed_minutes": elapsed() / 60.0}
        history.append(row)
        _append_csv(csv_path, row)
        if val["loss"] < progress.best_val_loss:
            progress = progress._replace(best_val_loss=val["loss"], best_epoch=epoch + 1)
            best_params = state.ema_params
            save_checkpoint(best_dir, best_params)
        log(f"epoch {epoch + 1:4d}  lr {lr:.2e}  train loss {row['train_loss']:.4g}  val loss {val['loss']:.4g}  "
            f"val E MAE {val['energy_mae']:.1f} meV  "
            + (f"F MAE {val['forces_mae']:.1f} meV/Å  " if np.isfinite(val["forces_mae"]) else "")
            + f"[{elapsed() / 60:.1f} min]")
        progress = progress._replace(epoch=epoch + 1, batch=0, loss_sum=0.0)
        save_last()
        last_save = time.perf_counter()

    eval_shapes = val_loader.shapes_seen | (refit_loader.shapes_seen if refit_loader is not None else set())
    shapes = len(train_loader.shapes_seen | eval_shapes)
    log(f"padded batch shapes compiled: {shapes} (train {len(train_loader.shapes_seen)}, "
        f"validation {len(eval_shapes)})")
    if best_params is None:  # stopped (time limit) before the first validation: the current EMA weights
        best_params = state.ema_params
        save_checkpoint(best_dir, best_params)
    return FitResult(best_params=best_params, last_state=state, history=history, best_epoch=progress.best_epoch,
                     compiled_shapes=shapes, eval_step=eval_step, elapsed_minutes=elapsed() / 60.0,
                     energy_step=energy_step)


def _write_csv(path: str, rows: List[Dict[str, Any]]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_FIELDS)
        writer.writeheader()
        writer.writerows(rows)


def _append_csv(path: str, row: Dict[str, Any]) -> None:
    with open(path, "a", newline="") as f:
        csv.DictWriter(f, fieldnames=CSV_FIELDS).writerow(row)
