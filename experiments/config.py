"""Experiment configs: one YAML per dataset under experiments/configs, with profiles (cpu, paper); the file
format and its loading are `qallegro.config`."""

from __future__ import annotations

import os
from typing import Any, Dict, Optional

from qallegro.config import load_config_file, read_yaml

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
    profiles = read_yaml(path).get("profiles", {})
    if profile not in profiles:
        raise ValueError(f"dataset {dataset!r} has no profile {profile!r}; known: {sorted(profiles)}")
    cfg = load_config_file(path, profile, config_file)
    if user_path is not None:
        cfg["dataset"]["train"] = os.path.abspath(user_path)
    return cfg


#: Environment variable naming the persistent compilation cache's folder; "off" (or empty) disables it.
COMPILATION_CACHE_ENV = "QALLEGRO_COMPILATION_CACHE"


def enable_compilation_cache() -> Optional[str]:
    """Switch on JAX's persistent compilation cache for this process, as every command-line run does.

    A program that was compiled before (the next seed or trial of the same architecture, a resumed run, a
    second `make run`) is then read from disk instead of compiled again: the same executable, so no result
    changes. The folder is ``$QALLEGRO_COMPILATION_CACHE``, by default ``~/.cache/qallegro/jax``; set the variable
    to ``off`` to disable it. Programs that compile in under 0.5 s are not stored.

    Returns:
        The cache folder, or None when disabled.
    """
    import jax

    folder = os.environ.get(COMPILATION_CACHE_ENV, os.path.join("~", ".cache", "qallegro", "jax"))
    if folder.strip().lower() in ("", "off", "none", "0"):
        return None
    folder = os.path.abspath(os.path.expanduser(folder))
    jax.config.update("jax_compilation_cache_dir", folder)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
    return folder


def enable_x64() -> None:
    """Switch on JAX's 64-bit mode, process-wide, as every command-line run does: energies, their labels and the
    loss's energy term are then float64 while the network keeps the config's dtype (float32 in every profile;
    see qallegro.potential.graph), so an aspirin total of -17,600 eV is not rounded to ~2 meV. The switch belongs
    to the program's entry point; library calls only read it."""
    import jax

    jax.config.update("jax_enable_x64", True)


def enable_x64_if_needed(cfg: Dict[str, Any]) -> None:
    """`enable_x64` for a run config: every run needs it now (float64 energy assembly), whatever its dtype, which
    is the network's."""
    enable_x64()
