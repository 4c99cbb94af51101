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

Checkpoints prove themselves (`qallegro.train.checkpoint.CheckpointStore`): every checkpoint carries the SHA-256
of its files, is verified before it is read, and a damaged newest one falls back to the newest intact one (with a
warning naming both); `TrainConfig.keep_checkpoints` of each are kept. The "last" checkpoint also holds the
metrics history up to its epoch and the best EMA weights so far, so a resume never depends on metrics.csv or on
the "best" store being in step with it; metrics.csv is rewritten from the history (temporary file + rename)
after every epoch's checkpoint, so it never holds an epoch that no checkpoint holds.
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
from qallegro.train.checkpoint import CheckpointError, CheckpointStore
from qallegro.train.config import TrainConfig
from qallegro.train.evaluation import evaluate, fit_shift_correction
from qallegro.train.optimizer import make_plateau, plateau_step, set_learning_rate
from qallegro.train.parallel import (
    is_primary,
    make_mesh,
    make_parallel_train_step,
    restore_on_process_zero,
    sharded_batches,
)
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
    the lowest validation loss), each a `CheckpointStore`. With `resume=True` continues from the newest intact
    checkpoint in checkpoints/last exactly; when there is none yet (a run killed before its first checkpoint)
    it starts from the beginning, which is the same thing.

    Returns:
        A `FitResult`.

    Raises:
        CheckpointError: `resume=False` but run_dir already holds checkpoints; or with `resume=True` every
            checkpoint is damaged, one does not fit the model, or a legacy checkpoint's metrics.csv lacks epochs.
        FloatingPointError: the training loss became NaN or inf (names the epoch and step).
    """
    primary = is_primary()  # several processes (qallegro.train.parallel): process 0 alone writes run_dir
    if primary:
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
    last_store = CheckpointStore(last_dir, cfg.keep_checkpoints, log)
    best_store = CheckpointStore(best_dir, cfg.keep_checkpoints, log)
    if not resume and (last_store.steps() or last_store.is_legacy()):
        raise CheckpointError(f"{last_dir} holds checkpoints of an earlier run: resume it, or clear the run "
                              f"directory {run_dir} first")

    history: List[Dict[str, Any]] = []
    best_params = None
    if resume:
        ckpt, history, best_params = _resume_all_processes(
            ckpt, lambda: _resume(ckpt, last_store, best_store, csv_path, log))
    if primary:
        _write_csv(csv_path, history)

    state, plateau_state, progress = ckpt["train"], ckpt["plateau"], TrainProgress.from_arrays(ckpt["progress"])
    started = time.perf_counter() - progress.elapsed_seconds
    last_save = time.perf_counter()
    out_of_time = False

    def elapsed():
        return time.perf_counter() - started

    def save_last():
        last = _checkpoint(state, plateau_state, progress._replace(elapsed_seconds=elapsed()))
        last["best"] = best_params if best_params is not None else state.ema_params
        if primary:
            last_store.save(last, info={"history": history})

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
        if val["loss"] < progress.best_val_loss:
            progress = progress._replace(best_val_loss=val["loss"], best_epoch=epoch + 1)
            best_params = state.ema_params
            if primary:
                best_store.save(best_params, info={"epoch": epoch + 1, "val_loss": float(val["loss"])})
        progress = progress._replace(epoch=epoch + 1, batch=0, loss_sum=0.0)
        save_last()
        last_save = time.perf_counter()
        if primary:
            _write_csv(csv_path, history)  # after the checkpoint that holds these rows
        log(f"epoch {epoch + 1:4d}  lr {lr:.2e}  train loss {row['train_loss']:.4g}  val loss {val['loss']:.4g}  "
            f"val E MAE {val['energy_mae']:.1f} meV  "
            + (f"F MAE {val['forces_mae']:.1f} meV/Å  " if np.isfinite(val["forces_mae"]) else "")
            + f"[{elapsed() / 60:.1f} min]")

    eval_shapes = val_loader.shapes_seen | (refit_loader.shapes_seen if refit_loader is not None else set())
    shapes = len(train_loader.shapes_seen | eval_shapes)
    log(f"padded batch shapes compiled: {shapes} (train {len(train_loader.shapes_seen)}, "
        f"validation {len(eval_shapes)})")
    if best_params is None:  # stopped (time limit) before the first validation: the current EMA weights
        best_params = state.ema_params
        if primary:
            best_store.save(best_params, info={"epoch": -1, "val_loss": float("inf")})
    last_store.close()
    best_store.close()
    return FitResult(best_params=best_params, last_state=state, history=history, best_epoch=progress.best_epoch,
                     compiled_shapes=shapes, eval_step=eval_step, elapsed_minutes=elapsed() / 60.0,
                     energy_step=energy_step)


def _resume(fresh: Dict[str, Any], last_store: CheckpointStore, best_store: CheckpointStore, csv_path: str,
            log: Callable[[str], None]):
    """(checkpoint dict, history rows, best EMA params or None) from the newest intact "last" checkpoint; the
    fresh state when there is none yet. Legacy checkpoints (no history, no best inside) take the history from
    metrics.csv and the best weights from the best store."""
    if last_store.is_legacy():
        found = last_store.restore(fresh)
        ckpt, path = found[0], found[2]
        epoch = int(ckpt["progress"]["epoch"])
        history = []
        if os.path.exists(csv_path):
            with open(csv_path) as f:
                history = [{k: float(v) if k not in ("epoch", "step") else int(v) for k, v in row.items()}
                           for row in csv.DictReader(f) if int(row["epoch"]) <= epoch]
        best_params = None
        if int(ckpt["progress"]["best_epoch"]) >= 0:
            best = best_store.restore(ckpt["train"].ema_params)
            if best is None:
                raise CheckpointError(f"{best_store.directory}: no best checkpoint beside the legacy checkpoint {path}")
            best_params = best[0]
    else:
        found = last_store.restore(dict(fresh, best=fresh["train"].ema_params))
        if found is None:
            log(f"nothing to resume in {last_store.directory} yet: starting from the beginning")
            return fresh, [], None
        ckpt, info, path = found
        ckpt = dict(ckpt)
        best = ckpt.pop("best")
        history = list(info.get("history", []))
        epoch = int(ckpt["progress"]["epoch"])
        best_params = best if int(ckpt["progress"]["best_epoch"]) >= 0 else None
    if len(history) != epoch or [int(r["epoch"]) for r in history] != list(range(1, epoch + 1)):
        raise CheckpointError(f"checkpoint {path} is at epoch {epoch} but its metrics history has "
                              f"{len(history)} epochs ({csv_path}): the run cannot be continued consistently")
    log(f"resumed from {path}: epoch {epoch}, batch {int(ckpt['progress']['batch'])}, "
        f"step {int(ckpt['train'].step)}")
    return ckpt, history, best_params


def _resume_all_processes(fresh: Dict[str, Any], resume: Callable[[], Any]):
    """`resume()` (-> `_resume`'s triple) in process 0; the other processes of a multi-process run receive its
    checkpoint and best weights (`restore_on_process_zero`) and an empty history (they write no metrics)."""
    if jax.process_count() == 1:
        return resume()
    kept = []

    def restore():
        ckpt, history, best = resume()
        kept.append(history)
        return dict(ckpt, best=ckpt["train"].ema_params if best is None else best)

    got = dict(restore_on_process_zero(restore, dict(fresh, best=fresh["train"].ema_params)))
    best = got.pop("best")
    return got, (kept[0] if kept else []), (best if int(got["progress"]["best_epoch"]) >= 0 else None)


def _write_csv(path: str, rows: List[Dict[str, Any]]) -> None:
    """metrics.csv, atomically (temporary file + rename): a kill never leaves it empty or half written."""
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, path)
