"""The shared inference-timing function and the comparison table (no wall-clock limits asserted)."""

import jax.numpy as jnp
import numpy as np
import pytest
from allegro_helpers import random_molecule, small_model

from experiments.compare import markdown_table
from qallegro.data.graphs import batch_and_pad, structure_to_graph
from qallegro.timing import time_inference

SPECIES = [1, 6, 8]


def test_time_inference_reports_per_structure_medians():
    rng = np.random.default_rng(0)
    mols = [random_molecule(rng, 5, SPECIES) for _ in range(3)]
    model, params = small_model(SPECIES, dtype=jnp.float32)
    batch = batch_and_pad([structure_to_graph(m, model.r_max, SPECIES) for m in mols])
    t = time_inference(model, params, batch, repeats=5, warmup=2)
    assert t["n_structures"] == 3 and t["n_atoms"] == 15 and t["repeats"] == 5
    assert t["median_ms_per_structure"] == pytest.approx(t["median_ms_per_batch"] / 3)
    assert 0 < t["p10_ms_per_batch"] <= t["median_ms_per_batch"] <= t["p90_ms_per_batch"]
    assert 0 < 3 * t["min_ms_per_structure"] <= t["p10_ms_per_batch"]  # the fastest call: the HPO objective
    with pytest.raises(ValueError, match="repeats"):
        time_inference(model, params, batch, repeats=0)


def test_markdown_table_states_ratios_and_spread():
    def entry(forces, ms, n):
        return {"test": {"energy_mae": [10.0, 12.0], "forces_mae": forces, "forces_rmse": [1.0, 1.0]},
                "n_parameters": n, "minutes_per_epoch": [0.5, 0.5],
                "inference": {"median_ms_per_structure": ms, "n_structures": 10, "repeats": 20, "device": "cpu"}}
    summary = {"dataset": "d", "profile": "cpu", "seeds": 2, "budget": {"max_epochs": 8, "max_minutes": None},
               "models": {"allegro": entry([50.0, 54.0], 2.0, 100), "allegro-mlp": entry([40.0, 40.0], 3.0, 150)}}
    table = markdown_table(summary)
    assert "| allegro | 11.0 ± 1.4 | 52.0 ± 2.8 |" in table
    assert "150 (+50) | 3.00 | 1.50 |" in table
