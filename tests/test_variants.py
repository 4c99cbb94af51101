"""The variants keep the physics: energy invariance and force equivariance under rotations, reflections and
permutations, forces = -dE/dr; the QDI variant runs exactly (deterministic) and with shots (stochastic)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from allegro_helpers import predict, random_molecule, small_model
from scipy.spatial.transform import Rotation

from qallegro.data.graphs import batch_and_pad, structure_to_graph
from qallegro.data.structure import make_structure
from qallegro.potential.graph import graph_energies

SPECIES = [1, 6, 8]
REFERENCE = "nequip-allegro-0.8"
VARIANTS = [
    dict(family="allegro-mlp", block_depth=2, block_width=8),
    dict(family="allegro-mlp", block_depth=3, block_width=8, block_position="latent"),
    dict(family="allegro-qdi", n_qubits=2, qdi_depth=2, in_features=4),
    dict(family="allegro-qdi", n_qubits=3, qdi_depth=1, block_position="two_body", entangling="basic",
         measure="Z", measurement_mode="single", rotation="X"),
    # The reference layout (dense scalar track): the readout block sees the concatenated features.
    dict(family="allegro-mlp", block_depth=2, block_width=8, architecture=REFERENCE),
    dict(family="allegro-qdi", n_qubits=2, qdi_depth=1, block_position="latent", architecture=REFERENCE),
]


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: f"{v['family']}-{v.get('block_position', 'readout')}"
                                                          f"{'-reference' if 'architecture' in v else ''}")
def test_variant_symmetries_and_forces(x64, variant):
    rng = np.random.default_rng(0)
    mol = random_molecule(rng, 5, SPECIES)
    model, params = small_model(SPECIES, **variant)
    base, base_params = small_model(SPECIES, architecture=variant.get("architecture", "qallegro-residual"))
    E0, (F0,), _ = predict(model, params, [mol], species=SPECIES, compute_stress=False)
    # the block matters: same shared weights without it give another energy
    assert abs(E0[0] - predict(base, base_params, [mol], species=SPECIES, compute_stress=False)[0][0]) > 1e-6

    R = Rotation.random(random_state=3).as_matrix()
    for matrix in (R, -R):
        perm = rng.permutation(mol.n_atoms)
        moved = make_structure(mol.Z[perm], mol.positions[perm] @ matrix.T + rng.normal(size=3))
        E1, (F1,), _ = predict(model, params, [moved], species=SPECIES, compute_stress=False)
        np.testing.assert_allclose(E1, E0, rtol=1e-9)
        np.testing.assert_allclose(F1, (F0 @ matrix.T)[perm], atol=1e-9)

    h, a, c = 1e-5, 2, 1
    plus, minus = mol.positions.copy(), mol.positions.copy()
    plus[a, c] += h
    minus[a, c] -= h
    e = [predict(model, params, [make_structure(mol.Z, p)], species=SPECIES, compute_stress=False)[0][0]
         for p in (plus, minus)]
    np.testing.assert_allclose(F0[a, c], -(e[0] - e[1]) / (2 * h), atol=1e-6)


def test_qdi_with_shots_is_stochastic_and_exact_is_not():
    mol = random_molecule(np.random.default_rng(1), 5, SPECIES)
    graph = batch_and_pad([structure_to_graph(mol, 3.5, SPECIES)])
    exact_model, params = small_model(SPECIES, dtype=jnp.float32, family="allegro-qdi", n_qubits=2, qdi_depth=2)
    shots_model, _ = small_model(SPECIES, dtype=jnp.float32, family="allegro-qdi", n_qubits=2, qdi_depth=2,
                                 shots=50)
    # energies only: forces with shots (the parameter-shift circuits) are tests/test_study_shots.py's
    run = jax.jit(lambda model, p, g, rng=None: graph_energies(model, p, g.nodes["positions"], g, rng=rng),
                  static_argnums=(0,))
    e_exact = [float(run(exact_model, params, graph)[0]) for _ in range(2)]
    assert e_exact[0] == e_exact[1]
    keys = jax.random.split(jax.random.PRNGKey(0), 3)
    e_shots = [float(run(shots_model, params, graph, k)[0]) for k in keys]
    assert len(set(e_shots)) == 3  # different keys, different samples
    assert max(abs(e - e_exact[0]) for e in e_shots) < 5.0  # estimates scatter around the exact energy
    many = jax.random.split(jax.random.PRNGKey(1), 40)
    mean = np.mean([float(run(shots_model, params, graph, k)[0]) for k in many])
    spread = np.std(e_shots + [mean])
    assert abs(mean - e_exact[0]) < abs(e_shots[0] - e_exact[0]) + 3 * spread
    with pytest.raises(Exception, match="shots"):
        run(shots_model, params, graph)  # no key: a clear error, not a silent exact run
