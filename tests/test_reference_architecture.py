"""qallegro's "nequip-allegro-0.8" architecture is nequip-allegro 0.8's Allegro: the same weights give the same
energies and forces, and matched settings give the same number of parameters.

The reference numbers come from torch/nequip-allegro 0.8 itself (tests/data/nequip_allegro_0.8_reference.npz,
written by `python -m experiments.benchmarks.reference_parity` in .venv-peer), so this test needs no torch.
"""

import jax
import numpy as np

from experiments.benchmarks.peer import QALLEGRO_MODEL
from experiments.benchmarks.reference_parity import compare
from qallegro.models import build_model
from qallegro.nn.allegro_reference import layer_irreps


def test_same_weights_give_the_reference_energies_and_forces():
    worst = compare()
    # torch's float64 Wigner 3j symbols carry ~3e-8 relative error (measured against e3nn-jax's), hence not 1e-12.
    assert worst["energy"] < 1e-6 and worst["forces"] < 1e-6, worst


def test_parameter_count_equals_the_reference_for_the_peer_benchmark_settings():
    # 143,968: sum(p.numel() for p in AllegroModel(**PEER_MODEL, type_names=["H", "C", "O"]).parameters()) with
    # nequip-allegro 0.8 (experiments/benchmarks/peer.py's matched aspirin model, avg_num_neighbors 14.4).
    config = dict(QALLEGRO_MODEL, num_species=3, avg_num_neighbors=14.4, species_scale=[1.0] * 3,
                  species_shift=[0.0] * 3)
    assert config["architecture"] == "nequip-allegro-0.8"
    model = build_model(config)
    vectors = np.array([[1.0, 0.2, 0.1], [-1.0, -0.2, -0.1]], np.float32)
    shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), vectors, np.array([0, 1]), np.array([1, 0]),
                            np.array([0, 1]), np.ones(2, bool))  # shapes only: nothing is computed
    assert sum(int(np.prod(p.shape)) for p in jax.tree.leaves(shapes)) == 143_968


def test_pruned_irreps_match_the_reference():
    # nequip-allegro's Allegro_Module: with parity, layer 1 outputs every reachable irrep (0o is not reachable from
    # spherical harmonics), the second-to-last layer keeps only irreps with a path to 0e, the last outputs 0e.
    irreps = [str(x) for x in layer_irreps(l_max=2, parity=True, num_layers=3)]
    assert irreps == ["1x0e+1x1o+1x2e", "1x0e+1x1o+1x1e+1x2e+1x2o", "1x0e+1x1o+1x2e", "1x0e"]
