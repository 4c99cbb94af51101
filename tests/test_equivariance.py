"""E(3) invariance of the energy and equivariance of forces (and stress), and permutation symmetry; with and
without path-channel coupling (an invariant weight per path and channel keeps every path equivariant).

Tolerances: float64 throughout, relative 1e-9 on energies and absolute 1e-9 eV/Å on forces (round-off only);
a float32 check with 1e-4 relative shows the default precision is also sound.
"""

import numpy as np
import pytest
from allegro_helpers import predict, random_crystal, random_molecule, small_model
from scipy.spatial.transform import Rotation

from qallegro.data.structure import make_structure

SPECIES = [1, 6, 8]


def transformed(s, matrix, translation=np.zeros(3), perm=None):
    perm = np.arange(s.n_atoms) if perm is None else perm
    cell = s.cell @ matrix.T if s.pbc.any() else None
    return make_structure(s.Z[perm], s.positions[perm] @ matrix.T + translation, cell=cell, pbc=s.pbc)


@pytest.mark.parametrize("parity, coupling, architecture", [
    (False, False, "qallegro-residual"), (True, False, "qallegro-residual"), (True, True, "qallegro-residual"),
    (False, True, "nequip-allegro-0.8"), (True, True, "nequip-allegro-0.8"), (True, False, "nequip-allegro-0.8")])
def test_rotation_reflection_translation_molecule(x64, parity, coupling, architecture):
    rng = np.random.default_rng(1)
    mol = random_molecule(rng, 7, SPECIES)
    model, params = small_model(SPECIES, parity=parity, tp_path_channel_coupling=coupling, architecture=architecture)
    E0, (F0,), _ = predict(model, params, [mol], species=SPECIES, compute_stress=False)
    assert np.abs(F0).max() > 1e-3  # the test is meaningful only if forces are non-trivial
    for k in range(3):
        R = Rotation.random(random_state=k).as_matrix()
        for matrix in (R, -R):  # -R: rotation combined with inversion (a reflection)
            t = rng.normal(size=3)
            E1, (F1,), _ = predict(model, params, [transformed(mol, matrix, t)], species=SPECIES,
                                   compute_stress=False)
            np.testing.assert_allclose(E1, E0, rtol=1e-9)
            np.testing.assert_allclose(F1, F0 @ matrix.T, atol=1e-9)


def test_mirror_plane_is_a_symmetry(x64):
    mol = random_molecule(np.random.default_rng(2), 6, SPECIES)
    model, params = small_model(SPECIES, parity=True)
    mirror = np.diag([1.0, 1.0, -1.0])
    E0, (F0,), _ = predict(model, params, [mol], species=SPECIES, compute_stress=False)
    E1, (F1,), _ = predict(model, params, [transformed(mol, mirror)], species=SPECIES, compute_stress=False)
    np.testing.assert_allclose(E1, E0, rtol=1e-9)
    np.testing.assert_allclose(F1, F0 @ mirror.T, atol=1e-9)


def test_permutation(x64):
    rng = np.random.default_rng(3)
    mol = random_molecule(rng, 8, SPECIES)
    model, params = small_model(SPECIES)
    perm = rng.permutation(mol.n_atoms)
    E0, (F0,), _ = predict(model, params, [mol], species=SPECIES, compute_stress=False)
    E1, (F1,), _ = predict(model, params, [transformed(mol, np.eye(3), perm=perm)], species=SPECIES,
                           compute_stress=False)
    np.testing.assert_allclose(E1, E0, rtol=1e-9)
    np.testing.assert_allclose(F1, F0[perm], atol=1e-9)


def test_periodic_rotation_stress_equivariance(x64):
    species = [3, 29]
    crystal = random_crystal(np.random.default_rng(4), 3, species)
    model, params = small_model(species)
    E0, (F0,), S0 = predict(model, params, [crystal], species=species)
    assert np.abs(S0).max() > 1e-4
    R = Rotation.random(random_state=7).as_matrix()
    E1, (F1,), S1 = predict(model, params, [transformed(crystal, R, np.array([0.3, -0.2, 1.0]))], species=species)
    np.testing.assert_allclose(E1, E0, rtol=1e-9)
    np.testing.assert_allclose(F1, F0 @ R.T, atol=1e-9)
    np.testing.assert_allclose(S1[0], R @ S0[0] @ R.T, atol=1e-9)


def test_float32_invariance():
    rng = np.random.default_rng(5)
    mol = random_molecule(rng, 7, SPECIES)
    import jax.numpy as jnp
    model, params = small_model(SPECIES, dtype=jnp.float32)
    E0, (F0,), _ = predict(model, params, [mol], species=SPECIES, compute_stress=False)
    R = Rotation.random(random_state=11).as_matrix()
    E1, (F1,), _ = predict(model, params, [transformed(mol, R)], species=SPECIES, compute_stress=False)
    np.testing.assert_allclose(E1, E0, rtol=1e-5)
    np.testing.assert_allclose(F1, F0 @ R.T, atol=1e-4 * np.abs(F0).max())
