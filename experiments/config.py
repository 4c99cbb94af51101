"""Experiment configs: one YAML per dataset under experiments/configs, with profiles (cpu, paper)."""

from __future__ import annotations

import copy
import os
from typing import Any, Dict, Optional

import yaml

CONFIG_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs")


def available_datasets():
    return sorted(f[:-5] for f in os.listdir(CONFIG_DIR) if f.endswith(".yaml"))


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
    Data paths are made absolute relative to the file that names them.

    Raises:
        ValueError: unknown dataset or profile (lists the known ones).
    """
    path = os.path.join(CONFIG_DIR, f"{dataset}.yaml")
    if not os.path.exists(path):
        raise ValueError(f"unknown dataset {dataset!r}; known: {available_datasets()}")
    raw = _load_yaml(path)
    profiles = raw.get("profiles", {})
    if profile not in profiles:
        raise ValueError(f"dataset {dataset!r} has no profile {profile!r}; known: {sorted(profiles)}")
    cfg = {"dataset": dict(raw["dataset"]), **copy.deepcopy(profiles[profile])}
    for key in ("train", "test"):
        if cfg["dataset"].get(key):
            cfg["dataset"][key] = _resolve(cfg["dataset"][key], os.path.dirname(path))
    if config_file:
        extra = _load_yaml(config_file)
        if "profiles" in extra:
            extra = {**{k: v for k, v in extra.items() if k != "profiles"}, **extra["profiles"].get(profile, {})}
        for key in ("train", "test"):
            if extra.get("dataset", {}).get(key):
                extra["dataset"][key] = _resolve(extra["dataset"][key], os.path.dirname(os.path.abspath(config_file)))
        cfg = deep_update(cfg, extra)
    cfg.setdefault("dtype", "float32")
    return cfg
