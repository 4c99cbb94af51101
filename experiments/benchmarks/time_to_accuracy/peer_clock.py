"""A Lightning callback for the peer side of experiments/benchmarks/time_to_accuracy.py (runs in .venv-peer).

`nequip-train` imports it by its hydra `_target_` (``peer_clock.EpochClock``; the benchmark puts this folder on
PYTHONPATH). It records the wall time of every validation, measured from the start of the training loop (the same
origin as Lightning's `max_time` timer), so the validation errors in the CSV logger can be put on a wall-time axis.
Each line of `out_file` is one JSON object: a "start" record (parameter count, torch threads, versions), one
"validation" record per validation (epoch, optimizer step, elapsed minutes, learning rate, the val metrics), and an
"end" record when training stops.
"""

from __future__ import annotations

import json
import time
from typing import Any, Dict

from lightning.pytorch.callbacks import Callback


class EpochClock(Callback):
    """Writes (epoch, step, elapsed minutes, learning rate, validation metrics) after every validation.

    Args:
        out_file: the JSON-lines file (overwritten at the start of training).
    """

    def __init__(self, out_file: str):
        super().__init__()
        self.out_file = out_file
        self.started = None

    def _write(self, record: Dict[str, Any], mode: str = "a") -> None:
        with open(self.out_file, mode) as f:
            f.write(json.dumps(record) + "\n")

    def _elapsed_minutes(self) -> float:
        return (time.perf_counter() - self.started) / 60.0 if self.started is not None else float("nan")

    def on_train_start(self, trainer, pl_module) -> None:
        """Start the clock and write the run's facts."""
        import torch

        self.started = time.perf_counter()
        n_params = sum(int(p.numel()) for p in pl_module.model.parameters() if p.requires_grad)
        self._write({"event": "start", "n_parameters": n_params, "torch_threads": torch.get_num_threads(),
                     "torch": torch.__version__}, mode="w")

    def on_validation_end(self, trainer, pl_module) -> None:
        """One record per validation during training (the sanity check is skipped)."""
        if trainer.sanity_checking or self.started is None or trainer.state.fn != "fit":
            return
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val")}
        lr = float(trainer.optimizers[0].param_groups[0]["lr"]) if trainer.optimizers else float("nan")
        self._write({"event": "validation", "epoch": trainer.current_epoch + 1, "step": int(trainer.global_step),
                     "elapsed_minutes": self._elapsed_minutes(), "learning_rate": lr, "metrics": metrics})

    def on_train_end(self, trainer, pl_module) -> None:
        """The final step count and training time."""
        self._write({"event": "end", "epoch": trainer.current_epoch, "step": int(trainer.global_step),
                     "elapsed_minutes": self._elapsed_minutes()})
