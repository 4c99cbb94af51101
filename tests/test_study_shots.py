"""The finite-shot hook of the study: a hybrid potential evaluated with finite shots approaches its exact forces
as the shots grow, and the device cost per MD step follows the stated formula."""

import os

import jax
import numpy as np
import pytest

from qallegro.data.readers import read_structures
from qallegro.potential import save
from qallegro.study.finite_shots import circuits_per_md_step, evaluate_shots
from qallegro.train.setup import prepare

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_circuits_per_md_step():
    cfg = {"family": "allegro-qdi", "n_qubits": 3, "in_features": 6, "num_layers": 2}
    assert circuits_per_md_step(dict(cfg, block_position="readout"), 100) == 100 * 13
    assert circuits_per_md_step(dict(cfg, block_position="latent"), 100) == 100 * 2 * 13
    assert circuits_per_md_step({"family": "allegro-qdi", "n_qubits": 4}, 10) == 10 * 9
    with pytest.raises(ValueError, match="allegro-qdi"):
        circuits_per_md_step({"family": "allegro"}, 10)


def test_finite_shots_approach_the_exact_forces(tmp_path):
    structures = read_structures(os.path.join(ROOT, "experiments", "data", "rmd17_aspirin_test_01.npz"))[:3]
    config = {"family": "allegro-qdi", "r_max": 4.0, "l_max": 1, "num_layers": 1, "num_tensor_features": 4,
              "two_body_mlp": [8, 16], "latent_mlp": [16], "readout_mlp": [8], "n_qubits": 2, "qdi_depth": 1}
    prepared = prepare(structures, config, seed=0)
    # the block's output layer starts at zero (an untrained variant is its Allegro): give it weights
    leaves, tree = jax.tree.flatten(prepared.params)
    keys = jax.random.split(jax.random.PRNGKey(1), len(leaves))
    params = jax.tree.unflatten(tree, [p + 0.3 * jax.random.normal(k, p.shape, p.dtype) for p, k in zip(leaves, keys)])
    path = str(tmp_path / "qdi.qallegro")
    save(path, prepared.model_config, params, prepared.statistics)
    out = evaluate_shots(path, structures, shots=[4, 4000], repeats=3, cell=structures[0], log=lambda s: None)
    few, many = out["rows"]
    assert few["forces_mae_std"] > many["forces_mae_std"]
    exact = out["exact_forces_mae"]
    assert abs(many["forces_mae_mean"] - exact) < abs(few["forces_mae_mean"] - exact)
    # the shot noise reaches the forces through the shift-rule derivatives: ~1/sqrt(shots) from the exact model
    assert few["forces_deviation_mean"] > 10 * many["forces_deviation_mean"] > 0
    assert out["circuits_per_md_step"] == out["cell_edges"] * (1 + 2 * 2)
    assert many["shots_per_md_step"] == out["circuits_per_md_step"] * 4000
    assert np.isfinite(out["exact_forces_mae"]) and out["n_frames"] == 3
