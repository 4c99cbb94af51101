"""The typed records of a run: validated config sections, the dataset statistics, the artifact that stores them."""

from __future__ import annotations

import os

import jax
import numpy as np
import pytest

from qallegro.data.statistics import DatasetStatistics, split_model_config
from qallegro.potential import load, read_artifact, save
from qallegro.train.config import DatasetConfig, TrainConfig
from qallegro.train.run import run_training

HERE = os.path.dirname(os.path.abspath(__file__))
COMMITTED = os.path.join(HERE, "data", "aspirin-allegro-cpu-6min.qallegro")  # a version-1 artifact


def test_config_sections_refuse_unknown_keys_by_name():
    with pytest.raises(ValueError, match=r"unknown dataset option\(s\) \['n_tarin'\]"):
        DatasetConfig.from_dict({"train": "x.npz", "n_tarin": 10, "n_val": 5})
    with pytest.raises(ValueError, match="needs `train`"):
        DatasetConfig.from_dict({"n_train": 10, "n_val": 5})
    with pytest.raises(ValueError, match=r"unknown training option\(s\) \['learning_rat'\]"):
        TrainConfig.from_dict({"learning_rat": 1e-3})
    assert TrainConfig.from_dict({"refit_shift": False}).refit_shift is False
    data = DatasetConfig.from_dict({"train": "x.npz", "n_train": 10, "n_val": 5, "read": None})
    assert data.read == {} and data.external == {} and data.test is None


def test_run_training_refuses_bad_sections_and_float64_without_x64(tmp_path):
    base = {"dataset": {"train": "x.npz", "n_train": 1, "n_val": 1}, "model": {"r_max": 4.0}, "training": {}}
    with pytest.raises(ValueError, match="unknown training option"):
        run_training(dict(base, training={"epochs": 3}), str(tmp_path / "a"))
    if not jax.config.jax_enable_x64:
        with pytest.raises(ValueError, match="jax_enable_x64"):
            run_training(dict(base, dtype="float64"), str(tmp_path / "b"))
    assert not os.path.exists(tmp_path / "a") and not os.path.exists(tmp_path / "b")  # refused before writing


def test_statistics_round_trip_and_split():
    stats = DatasetStatistics(species=(1, 6), species_shift=[-13.6, -1029.0], species_scale=[0.9, 0.9],
                              avg_num_neighbors=12.5)
    assert DatasetStatistics.from_dict(stats.to_dict()) == stats
    hyper, again = split_model_config({"family": "allegro", "r_max": 5.0, **stats.model_fields()}, (1, 6))
    assert hyper == {"family": "allegro", "r_max": 5.0} and again == stats
    with pytest.raises(ValueError, match="2 species"):
        DatasetStatistics(species=(1, 6), species_shift=[0.0], species_scale=[1.0, 1.0], avg_num_neighbors=1.0)
    with pytest.raises(ValueError, match=r"unknown \['shift'\]"):
        DatasetStatistics.from_dict(dict(stats.to_dict(), shift=1.0))


def test_version_1_artifact_loads_and_resaves_as_version_2_with_the_same_numbers(tmp_path):
    old = read_artifact(COMMITTED)
    assert old["version"] == 1 and "species_shift" not in old["model_config"]
    assert isinstance(old["statistics"], DatasetStatistics) and old["species"] == [1, 6, 8]
    path = str(tmp_path / "v2.qallegro")
    save(path, old["model_config"], old["params"], old["statistics"], metadata=old["metadata"])
    new = read_artifact(path)
    assert new["version"] == 2 and new["statistics"] == old["statistics"]
    assert new["model_config"] == old["model_config"]
    positions = np.array([[0.0, 0.0, 0.0], [1.09, 0.0, 0.0], [-0.36, 1.03, 0.0]])
    e_old, f_old = load(COMMITTED).energy_and_forces(positions, [6, 1, 1])
    e_new, f_new = load(path).energy_and_forces(positions, [6, 1, 1])
    assert float(e_old) == float(e_new) and np.array_equal(np.asarray(f_old), np.asarray(f_new))


def test_the_library_workflow_does_not_import_the_command_line():
    """Training, evaluation, HPO and timing live in qallegro: importing them pulls in nothing of experiments/."""
    import subprocess
    import sys

    code = ("import sys, qallegro.train.run, qallegro.train.evaluation, qallegro.hpo.objective, qallegro.timing; "
            "bad = sorted(m for m in sys.modules if m == 'experiments' or m.startswith('experiments.')); "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=os.path.dirname(HERE))


def test_command_line_compilation_cache_folder_and_switch_off(tmp_path, monkeypatch):
    from jax.experimental.compilation_cache import compilation_cache

    from experiments.config import COMPILATION_CACHE_ENV, enable_compilation_cache

    names = ("jax_compilation_cache_dir", "jax_persistent_cache_min_compile_time_secs")
    before = {name: getattr(jax.config, name) for name in names}
    try:
        monkeypatch.setenv(COMPILATION_CACHE_ENV, str(tmp_path / "cache"))
        assert enable_compilation_cache() == str(tmp_path / "cache")
        compilation_cache.reset_cache()  # the cache opens its folder once per process
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
        jax.jit(lambda x: x * 3.0 + 1.0)(np.arange(7.0)).block_until_ready()
        assert os.listdir(tmp_path / "cache")  # the compiled program was stored there
        monkeypatch.setenv(COMPILATION_CACHE_ENV, "off")
        assert enable_compilation_cache() is None
    finally:
        for name, value in before.items():
            jax.config.update(name, value)
        compilation_cache.reset_cache()
