"""Orbax checkpoints of the whole training state that prove themselves.

A `CheckpointStore` is a directory of numbered checkpoints (``DIR/1``, ``DIR/2``, ...) written with orbax's
`CheckpointManager` (atomic: orbax writes into a temporary directory and renames it when complete). After orbax
has finished a checkpoint, a manifest (``qallegro_sha256.json``: the SHA-256 of every file of the step
directory) is written into it atomically (temporary file + rename). Only then is the checkpoint *proven*:

* `CheckpointStore.restore` verifies the manifest before it reads anything. A checkpoint whose files differ from
  their recorded digests (flipped bytes, truncation), whose files are missing, or which has no manifest (killed
  between orbax's rename and the manifest) is skipped with a warning that names it and the checkpoint used
  instead: the newest intact one.
* The store keeps the newest `keep` proven checkpoints (`TrainConfig.keep_checkpoints`, default 3) and deletes
  older ones after each proven save. Retention is done here rather than with orbax's ``max_to_keep``, which
  counts an unproven newest checkpoint and could delete the last proven one.

The manifest also records the layout of the state (every leaf's tree path and shape): a checkpoint that verifies
but does not fit the restore template (another model) raises `CheckpointError` naming the differing leaves
instead of falling back (an older checkpoint of the same run would not fit either); orbax alone would read it
into the template's shapes without a word.

Checkpoints written by earlier versions (one orbax checkpoint directly in DIR, no manifest) are still read, with
a warning that they cannot be verified.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any, Callable, Dict, List, Optional, Tuple

import jax
import numpy as np
import orbax.checkpoint as ocp

MANIFEST = "qallegro_sha256.json"
DEFAULT_KEEP = 3
_LEGACY_MARKER = "_CHECKPOINT_METADATA"


class CheckpointError(RuntimeError):
    """A damaged, missing or mismatched checkpoint (or training run directory); the message names the path."""


def file_digests(directory: str) -> Dict[str, str]:
    """SHA-256 (hex) of every file under `directory` except the manifest, keyed by the path relative to it."""
    digests = {}
    for root, dirs, files in os.walk(directory):
        dirs.sort()
        for name in sorted(files):
            path = os.path.join(root, name)
            rel = os.path.relpath(path, directory)
            if rel == MANIFEST:
                continue
            h = hashlib.sha256()
            with open(path, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    h.update(block)
            digests[rel] = h.hexdigest()
    return digests


def state_layout(state: Any) -> Dict[str, List[int]]:
    """{tree path: shape} of every leaf of the pytree `state` (what a checkpoint must match to be restored)."""
    return {jax.tree_util.keystr(path): list(np.shape(leaf))
            for path, leaf in jax.tree_util.tree_leaves_with_path(state)}


def write_manifest(directory: str, layout: Optional[Dict[str, List[int]]] = None) -> None:
    """Record the digests of `directory`'s files (and the state's `layout`) in DIRECTORY/qallegro_sha256.json
    (atomic, fsynced)."""
    payload = json.dumps({"sha256": file_digests(directory), "layout": layout}, indent=1, sort_keys=True)
    tmp = os.path.join(directory, f"{MANIFEST}.tmp{os.getpid()}")
    with open(tmp, "w") as f:
        f.write(payload)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, os.path.join(directory, MANIFEST))


def verify_checkpoint(directory: str) -> None:
    """Check every file of the checkpoint `directory` against its manifest.

    Raises:
        CheckpointError: no manifest, an unreadable manifest, or a missing, extra or changed file (named).
    """
    path = os.path.join(directory, MANIFEST)
    if not os.path.exists(path):
        raise CheckpointError(f"checkpoint {directory} has no {MANIFEST} (unfinished save): not proven")
    try:
        with open(path) as f:
            recorded = json.load(f)["sha256"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"checkpoint {directory}: unreadable {MANIFEST} ({e})") from None
    try:
        actual = file_digests(directory)
    except OSError as e:
        raise CheckpointError(f"checkpoint {directory}: unreadable file ({e})") from None
    missing = sorted(set(recorded) - set(actual))
    changed = sorted(k for k in recorded if k in actual and actual[k] != recorded[k])
    extra = sorted(set(actual) - set(recorded))
    if missing or changed or extra:
        parts = [f"{label} {names[:3]}{' ...' if len(names) > 3 else ''}"
                 for label, names in (("changed", changed), ("missing", missing), ("unexpected", extra)) if names]
        raise CheckpointError(f"checkpoint {directory} is damaged: files " + "; ".join(parts)
                              + " (SHA-256 differs from its manifest)")


class CheckpointStore:
    """The numbered, checksummed checkpoints in one directory (e.g. RUN/checkpoints/last).

    Each checkpoint holds a pytree of arrays (`state`, restored into the structure and dtypes of a template) and
    a JSON-serialisable dict (`info`, e.g. the metrics history).

    Args:
        directory: the store's directory (created on the first save).
        keep: the number of proven checkpoints kept (>= 1).
        log: where warnings go (a damaged checkpoint skipped, an unverifiable legacy checkpoint read).

    Raises:
        ValueError: keep < 1.
    """

    def __init__(self, directory: str, keep: int = DEFAULT_KEEP, log: Callable[[str], None] = print):
        if int(keep) < 1:
            raise ValueError(f"keep_checkpoints must be >= 1, got {keep}")
        self.directory = os.path.abspath(directory)
        self.keep = int(keep)
        self.log = log
        self._manager: Optional[ocp.CheckpointManager] = None

    def _open(self) -> ocp.CheckpointManager:
        if self._manager is None:
            multi = _this_process_only()
            if multi:  # orbax cannot create the root directory itself then
                os.makedirs(self.directory, exist_ok=True)
            options = ocp.CheckpointManagerOptions(max_to_keep=None, create=not multi,
                                                   enable_async_checkpointing=False, **multi)
            self._manager = ocp.CheckpointManager(self.directory, options=options)
        return self._manager

    def close(self) -> None:
        """Release orbax's resources (a later save reopens them)."""
        if self._manager is not None:
            self._manager.close()
            self._manager = None

    def steps(self) -> List[int]:
        """The checkpoint numbers present (proven or not), ascending."""
        if not os.path.isdir(self.directory):
            return []
        return sorted(int(n) for n in os.listdir(self.directory)
                      if n.isdigit() and os.path.isdir(os.path.join(self.directory, n)))

    def step_dir(self, step: int) -> str:
        """The directory of checkpoint `step`."""
        return os.path.join(self.directory, str(step))

    def is_legacy(self) -> bool:
        """True when the directory holds a checkpoint of an earlier version (no numbered steps, no manifest)."""
        return not self.steps() and os.path.exists(os.path.join(self.directory, _LEGACY_MARKER))

    def save(self, state: Any, info: Optional[Dict[str, Any]] = None) -> int:
        """Write a new checkpoint of `state` (and `info`), prove it, then drop the older ones beyond `keep`.

        Returns:
            The new checkpoint's number (one more than the highest present).
        """
        step = max(self.steps(), default=0) + 1
        manager = self._open()
        if jax.process_count() > 1:  # orbax refuses process-local jax arrays in a multi-process run
            state = jax.tree.map(np.asarray, state)
        manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                   info=ocp.args.JsonSave(info or {})), force=True)
        manager.wait_until_finished()
        write_manifest(self.step_dir(step), state_layout(state))
        proven = 1
        for old in reversed([s for s in self.steps() if s < step]):
            if proven < self.keep and os.path.exists(os.path.join(self.step_dir(old), MANIFEST)):
                proven += 1
            else:
                manager.delete(old)
        return step

    def restore(self, template: Any) -> Optional[Tuple[Any, Dict[str, Any], str]]:
        """The newest intact checkpoint: (state in the structure of `template`, info, its directory).

        Checkpoints that fail verification are skipped with a warning naming the damaged one and the one used.

        Returns:
            None when the store holds no checkpoint at all (nor a legacy one).

        Raises:
            CheckpointError: every checkpoint is damaged (names them), or an intact one does not fit `template`
                (a different model or state layout).
        """
        damaged: List[str] = []
        for step in reversed(self.steps()):
            path = self.step_dir(step)
            try:
                verify_checkpoint(path)
            except CheckpointError as e:
                damaged.append(str(e))
                continue
            if jax.process_count() > 1:  # restored as numpy arrays (see save)
                template = jax.tree.map(np.asarray, template)
            _check_layout(path, template)
            args = ocp.args.Composite(state=ocp.args.StandardRestore(template), info=ocp.args.JsonRestore())
            try:
                restored = self._open().restore(step, args=args)
            except Exception as e:  # noqa: BLE001 - orbax raises many types for a structure mismatch
                raise CheckpointError(f"checkpoint {path} is intact but does not fit this run's model/state "
                                      f"({type(e).__name__}: {str(e).splitlines()[0][:300]})") from None
            info = dict(restored["info"] or {})
            for why in damaged:
                self.log(f"warning: {why}; using the previous intact checkpoint {path} instead")
            return restored["state"], info, path
        if damaged:
            raise CheckpointError(f"no intact checkpoint in {self.directory}: "
                                  + "; ".join(damaged))
        if os.path.exists(os.path.join(self.directory, _LEGACY_MARKER)):
            self.log(f"warning: {self.directory} was written by an earlier version without checksums; "
                     f"reading it unverified")
            try:
                with ocp.StandardCheckpointer() as checkpointer:
                    return checkpointer.restore(self.directory, template), {}, self.directory
            except Exception as e:  # noqa: BLE001 - orbax raises many types for damaged or mismatched data
                raise CheckpointError(f"checkpoint {self.directory} is unreadable or does not fit this run "
                                      f"({type(e).__name__}: {str(e).splitlines()[0][:300]})") from None
        return None


def _this_process_only() -> Dict[str, Any]:
    """Orbax options for a multi-process run (jax.distributed): a store is written and read by one process alone
    (process 0, see qallegro.train.parallel), so orbax must not wait for the other processes."""
    if jax.process_count() == 1:
        return {}
    me = jax.process_index()
    return {"multiprocessing_options": ocp.options.MultiprocessingOptions(primary_host=me, active_processes={me})}


def _check_layout(path: str, template: Any) -> None:
    with open(os.path.join(path, MANIFEST)) as f:
        recorded = json.load(f).get("layout")
    if recorded is None:
        return
    wanted = state_layout(template)
    if recorded != wanted:
        missing = sorted(set(wanted) - set(recorded))
        extra = sorted(set(recorded) - set(wanted))
        shapes = sorted(k for k in wanted if k in recorded and recorded[k] != wanted[k])
        parts = [f"{label} {names[:3]}{' ...' if len(names) > 3 else ''}"
                 for label, names in (("not in the checkpoint", missing), ("only in the checkpoint", extra),
                                      ("other shapes", shapes)) if names]
        raise CheckpointError(f"checkpoint {path} is intact but does not fit this run's model/state: "
                              + "; ".join(parts))


def save_checkpoint(path: str, state: Any) -> None:
    """Write the pytree `state` as a new proven checkpoint of the store at directory `path` (default keep)."""
    store = CheckpointStore(path)
    try:
        store.save(state)
    finally:
        store.close()


def restore_checkpoint(path: str, template: Any) -> Any:
    """Read the newest intact checkpoint of the store at `path` into the structure (and dtypes) of `template`.

    Raises:
        CheckpointError: no checkpoint at `path`, every one damaged, or none fitting `template`.
    """
    store = CheckpointStore(path)
    try:
        found = store.restore(template)
    finally:
        store.close()
    if found is None:
        raise CheckpointError(f"no checkpoint at {os.path.abspath(path)}")
    return found[0]
