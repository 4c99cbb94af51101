"""Orbax checkpoints of the whole training state (parameters, EMA, optimiser and schedule state, position in the
epoch). Writes are atomic (orbax writes to a temporary directory and renames), so an interrupt never leaves a
half-written checkpoint behind."""

from __future__ import annotations

import os
from typing import Any

import orbax.checkpoint as ocp


class CheckpointError(RuntimeError):
    """A damaged, missing or mismatched checkpoint (or training run directory); the message names the path."""


def save_checkpoint(path: str, state: Any) -> None:
    """Write the pytree `state` to directory `path`, replacing an older checkpoint there."""
    path = os.path.abspath(path)
    with ocp.StandardCheckpointer() as checkpointer:
        checkpointer.save(path, state, force=True)
        checkpointer.wait_until_finished()


def restore_checkpoint(path: str, template: Any) -> Any:
    """Read the checkpoint at `path` into the structure (and dtypes) of `template`.

    Raises:
        FileNotFoundError: no checkpoint at `path`.
    """
    path = os.path.abspath(path)
    if not os.path.isdir(path):
        raise FileNotFoundError(f"no checkpoint at {path}")
    with ocp.StandardCheckpointer() as checkpointer:
        return checkpointer.restore(path, template)
