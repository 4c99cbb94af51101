"""Run configs from YAML: one file per dataset with named profiles, plus optional override files.

A dataset config file looks like::

    dataset: {train: ../data/x.npz, test: ..., n_train: 950, n_val: 50}
    profiles:
      cpu: {dtype: float32, model: {...}, training: {...}}
      paper: {...}

`load_config_file` resolves one profile into the run config that `qallegro.train.run.run_training` takes:
{"dataset": ..., "dtype": ..., "model": ..., "training": ...}. Data paths (train, test, external) are made
absolute relative to the file that names them.
"""

from __future__ import annotations

import copy
import os
from typing import Any, Dict, Optional

import yaml


def deep_update(base: Dict[str, Any], override: Dict[str, Any]) -> Dict[str, Any]:
    """Recursively merge `override` into a copy of `base` (mappings merge, everything else replaces)."""
    out = copy.deepcopy(base)
    for k, v in override.items():
        out[k] = deep_update(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def read_yaml(path: str) -> Dict[str, Any]:
    """A YAML mapping from `path`.

    Raises:
        FileNotFoundError: no file at `path`.
        ValueError: the file is not a YAML mapping (names the file).
    """
    if not os.path.exists(path):
        raise FileNotFoundError(f"config file not found: {path}")
    with open(path) as f:
        data = yaml.safe_load(f) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a config must be a YAML mapping")
    return data


def resolve_data_paths(data: Dict[str, Any], base_dir: str) -> None:
    """Make the dataset section's relative paths (train, test, external entries) absolute, relative to
    `base_dir`, in place."""
    def resolve(path: str) -> str:
        return path if os.path.isabs(path) else os.path.normpath(os.path.join(base_dir, path))

    for key in ("train", "test"):
        if data.get(key):
            data[key] = resolve(data[key])
    for name, entry in (data.get("external") or {}).items():
        if isinstance(entry, dict):
            entry["path"] = resolve(entry["path"])
        else:
            data["external"][name] = resolve(entry)


def load_config_file(path: str, profile: str = "cpu", config_file: Optional[str] = None) -> Dict[str, Any]:
    """The run config of `profile` in the dataset config file `path`, with `config_file` merged on top.

    A profile may carry its own `dataset:` block, merged over the top-level one (e.g. QM9's paper profile reads
    the full set). `config_file` has the same layout as a profile (dataset/model/training/dtype keys), or
    holds `profiles:` of its own, of which the same profile is taken.

    Raises:
        FileNotFoundError: a missing file.
        ValueError: a file that is not a mapping, or an unknown profile (lists the known ones).
    """
    raw = read_yaml(path)
    profiles = raw.get("profiles", {})
    if profile not in profiles:
        raise ValueError(f"{path} has no profile {profile!r}; known: {sorted(profiles)}")
    chosen = copy.deepcopy(profiles[profile])
    cfg = {**chosen, "dataset": deep_update(raw.get("dataset", {}), chosen.get("dataset", {}))}
    resolve_data_paths(cfg["dataset"], os.path.dirname(os.path.abspath(path)))
    if config_file:
        extra = read_yaml(config_file)
        if "profiles" in extra:
            extra = deep_update({k: v for k, v in extra.items() if k != "profiles"},
                                extra["profiles"].get(profile, {}))
        resolve_data_paths(extra.get("dataset", {}), os.path.dirname(os.path.abspath(config_file)))
        cfg = deep_update(cfg, extra)
    cfg.setdefault("dtype", "float32")
    return cfg
