"""Experiment configs: one YAML per dataset under experiments/configs, with profiles (cpu, paper)."""

from __future__ import annotations

import copy
import os
from typing import Any, Dict, Optional

import yaml

CONFIG_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs")


#: The config used for `--dataset extxyz:PATH` (any user's DFT data in extxyz).
EXTXYZ_TEMPLATE = os.path.join(CONFIG_DIR, "generic", "extxyz.yaml")
EXTXYZ_PREFIX = "extxyz:"


def available_datasets():
    """Names of the dataset configs in experiments/configs (plus the generic ``extxyz:PATH``, not listed)."""
    return sorted(f[:-5] for f in os.listdir(CONFIG_DIR) if f.endswith(".yaml"))


def dataset_label(dataset: str) -> str:
    """A file-name-safe label of a dataset argument (``extxyz:/data/my.xyz`` -> ``extxyz-my``)."""
    if dataset.startswith(EXTXYZ_PREFIX):
        base = os.path.basename(dataset[len(EXTXYZ_PREFIX):])
        for suffix in (".gz", ".bz2", ".xz", ".extxyz", ".xyz"):
            base = base[:-len(suffix)] if base.endswith(suffix) else base
        return f"extxyz-{base}"
    return dataset


def deep_update(base: Dict[str, Any], override: Dict[str, Any]) -> Dict[str, Any]:
    """Recursively merge `override` into a copy of `base`."""
    out = copy.deepcopy(base)
    for k, v in override.items():
        out[k] = deep_update(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _load_yaml(path: str) -> Dict[str, Any]:
    if not os.path.exists(path):
        raise FileNotFoundError(f"config file not found: {path}")
    with open(path) as f:
        data = yaml.safe_load(f) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a config must be a YAML mapping")
    return data


def _resolve(path: str, base_dir: str) -> str:
    return path if os.path.isabs(path) else os.path.normpath(os.path.join(base_dir, path))


def load_config(dataset: str, profile: str = "cpu", config_file: Optional[str] = None) -> Dict[str, Any]:
    """The resolved config {"dataset": {...}, "dtype": ..., "model": {...}, "training": {...}} for a dataset and
    profile, with `config_file` (same layout, or a flat {"dataset", "model", "training"} mapping) merged on top.
    Data paths (train, test, external) are made absolute relative to the file that names them. A profile may
    carry its own `dataset:` block, merged over the top-level one (e.g. QM9's paper profile reads the full set).

    `dataset` may be ``extxyz:PATH``: the generic config experiments/configs/generic/extxyz.yaml with
    ``train: PATH`` (relative to the current directory), split by fractions; label keys under
    ``dataset.read`` (energy_key, forces_key, stress_key).

    Raises:
        ValueError: unknown dataset or profile (lists the known ones), or an empty extxyz path.
    """
    user_path = None
    if dataset.startswith(EXTXYZ_PREFIX):
        user_path = dataset[len(EXTXYZ_PREFIX):]
        if not user_path:
            raise ValueError("--dataset extxyz:PATH needs a path, e.g. extxyz:data/my_dft.extxyz")
        path = EXTXYZ_TEMPLATE
    else:
        path = os.path.join(CONFIG_DIR, f"{dataset}.yaml")
    if not os.path.exists(path):
        raise ValueError(f"unknown dataset {dataset!r}; known: {available_datasets()} or extxyz:PATH")
    raw = _load_yaml(path)
    profiles = raw.get("profiles", {})
    if profile not in profiles:
        raise ValueError(f"dataset {dataset!r} has no profile {profile!r}; known: {sorted(profiles)}")
    chosen = copy.deepcopy(profiles[profile])
    cfg = {**chosen, "dataset": deep_update(raw.get("dataset", {}), chosen.get("dataset", {}))}
    _resolve_data_paths(cfg["dataset"], os.path.dirname(path))
    if user_path is not None:
        cfg["dataset"]["train"] = os.path.abspath(user_path)
    if config_file:
        extra = _load_yaml(config_file)
        if "profiles" in extra:
            extra = deep_update({k: v for k, v in extra.items() if k != "profiles"}, extra["profiles"].get(profile, {}))
        _resolve_data_paths(extra.get("dataset", {}), os.path.dirname(os.path.abspath(config_file)))
        cfg = deep_update(cfg, extra)
    cfg.setdefault("dtype", "float32")
    return cfg


def _resolve_data_paths(data: Dict[str, Any], base_dir: str) -> None:
    for key in ("train", "test"):
        if data.get(key):
            data[key] = _resolve(data[key], base_dir)
    for name, entry in (data.get("external") or {}).items():
        if isinstance(entry, dict):
            entry["path"] = _resolve(entry["path"], base_dir)
        else:
            data["external"][name] = _resolve(entry, base_dir)
