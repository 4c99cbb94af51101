"""Coordinates that stay exact: translating a structure far from the origin changes neither its energy nor its
forces, through the Potential API (in float32, without x64) and through the MD path (jax-md energy function in a
float32 state), and an atom 1e10 Å outside its periodic cell is wrapped back (no NaN).

Without the wrapping / centring, float32 positions at 1e6 Å are rounded to 0.06 Å: forces are off by eV/Å."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from allegro_helpers import SMALL_MODEL, random_crystal, small_model
from ase.io import read

from qallegro.data.graphs import positions_near_origin
from qallegro.md import build_system
from qallegro.potential import Potential

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")
SPECIES = [1, 6, 8]
TINY = dict(l_max=1, num_layers=1, num_tensor_features=4, two_body_mlp=[8, 16], latent_mlp=[16], readout_mlp=[8])
OFFSET = np.array([1.0e6, -1.0e6, 0.7e6])  # Å


@pytest.fixture(scope="module")
def potential():
    _, params = small_model(SPECIES, dtype=jnp.float32, noise=0.3, **TINY)
    config = dict(SMALL_MODEL, num_species=3, species_scale=[1.3] * 3, species_shift=[-1.0, -1.5, -2.0], **TINY)
    return Potential(config, params, SPECIES, dtype="float32")


@pytest.fixture(scope="module")
def aspirin():
    return read(os.path.join(DATA, "aspirin.xyz"))


def assert_same(e0, f0, e1, f1):
    """Equal within float32 rounding of the untranslated evaluation: a few ulp of the total energy, and forces to
    1e-4 of their scale (a 0.06 Å rounding of the positions moves them by ~10 %)."""
    f0, f1 = np.asarray(f0, np.float64), np.asarray(f1, np.float64)
    assert np.all(np.isfinite(f1)) and np.isfinite(float(e1))
    assert abs(float(e1) - float(e0)) <= 4 * np.spacing(np.float32(abs(float(e0)))) + 1e-5
    np.testing.assert_allclose(f1, f0, atol=1e-4 * np.abs(f0).max() + 1e-6)


def test_potential_api_is_translation_invariant_at_1e6_angstrom_in_float32(potential, aspirin):
    assert np.abs(potential.energy_and_forces(aspirin.positions, aspirin.numbers)[1]).max() > 0.1  # not trivial
    with jax.enable_x64(False):  # the library without x64: positions reach the graph as float32
        e0, f0 = potential.energy_and_forces(aspirin.positions, aspirin.numbers)
        e1, f1 = potential.energy_and_forces(aspirin.positions + OFFSET, aspirin.numbers)
    assert_same(e0, f0, e1, f1)


@pytest.mark.parametrize("x64", [False, True])
def test_md_energy_function_is_translation_invariant_at_1e6_angstrom(potential, aspirin, x64):
    """The jax-md state is float32 (the potential's dtype) in both modes: the molecule is centred before the
    cast, and `to_cartesian` gives the translated positions back."""
    with jax.enable_x64(x64):
        out = []
        for shift in (np.zeros(3), OFFSET):
            system = build_system(potential, aspirin.positions + shift, aspirin.numbers)
            assert system.R.dtype == jnp.float32
            energy, grad = jax.jit(jax.value_and_grad(system.energy_fn))(system.R, system.allocate())
            out += [energy, -grad]
            np.testing.assert_allclose(system.to_cartesian(system.R), aspirin.positions + shift, rtol=0, atol=1e-5)
    assert_same(*out)


@pytest.mark.parametrize("x64", [False, True])
def test_atom_1e10_angstrom_outside_its_cell_is_wrapped(potential, x64):
    """Moving one atom by a whole number of lattice vectors (~1e10 Å) is the same crystal: same energy and forces,
    finite, and the graph's positions lie inside the cell."""
    structure = random_crystal(np.random.default_rng(3), n_atoms=4, species=SPECIES)
    cell = structure.cell
    far = structure.positions.copy()
    far[1] += np.round(1e10 / np.linalg.norm(cell[0])) * cell[0]
    assert np.linalg.norm(far[1]) > 9e9
    frac = np.linalg.solve(cell.T, positions_near_origin(far, cell, True).T).T
    assert np.all((frac >= 0) & (frac < 1))
    with jax.enable_x64(x64):
        e0, f0, s0 = potential.energy_forces_stress(structure.positions, structure.Z, cell, True)
        e1, f1, s1 = potential.energy_forces_stress(far, structure.Z, cell, True)
    assert_same(e0, f0, e1, f1)
    np.testing.assert_allclose(np.asarray(s1), np.asarray(s0), atol=1e-4 * np.abs(np.asarray(s0)).max() + 1e-7)


def test_centring_and_wrapping_are_symmetries_of_the_labels(aspirin):
    """positions_near_origin moves a molecule rigidly and periodic atoms by lattice vectors only."""
    moved = positions_near_origin(aspirin.positions + OFFSET, None, False)
    np.testing.assert_allclose(moved.mean(axis=0), 0.0, atol=1e-9)
    np.testing.assert_allclose(moved - moved[0], aspirin.positions - aspirin.positions[0], atol=1e-9)
    cell = np.array([[4.0, 0.0, 0.0], [1.0, 5.0, 0.0], [0.5, 0.3, 6.0]])
    positions = np.random.default_rng(0).uniform(-50, 50, (7, 3))
    wrapped = positions_near_origin(positions, cell, True)
    n = np.linalg.solve(cell.T, (positions - wrapped).T).T
    np.testing.assert_allclose(n, np.round(n), atol=1e-9)
