"""Forces are -dE/dr (with and without path-channel coupling) and stress is the strain derivative (finite
differences); padding and batch composition do not change results; a periodic cell equals its supercell per atom;
isolated atoms are allowed; a potential saved before the coupling option gives the numbers it gave then."""

import os

import jax
import numpy as np
import pytest
from allegro_helpers import predict, random_crystal, random_molecule, small_model

from qallegro.data.structure import make_structure

SPECIES = [1, 6, 8]


def energy(model, params, s, species):
    return predict(model, params, [s], species=species, compute_stress=False)[0][0]


@pytest.mark.parametrize("coupling, architecture", [(False, "qallegro-residual"), (True, "qallegro-residual"),
                                                    (True, "nequip-allegro-0.8")])
def test_forces_equal_central_finite_differences(x64, coupling, architecture):
    mol = random_molecule(np.random.default_rng(0), 5, SPECIES)
    model, params = small_model(SPECIES, tp_path_channel_coupling=coupling, architecture=architecture)
    _, (F,), _ = predict(model, params, [mol], species=SPECIES, compute_stress=False)
    h = 1e-5
    fd = np.zeros_like(F)
    for a in range(mol.n_atoms):
        for c in range(3):
            plus, minus = mol.positions.copy(), mol.positions.copy()
            plus[a, c] += h
            minus[a, c] -= h
            fd[a, c] = -(energy(model, params, make_structure(mol.Z, plus), SPECIES)
                         - energy(model, params, make_structure(mol.Z, minus), SPECIES)) / (2 * h)
    np.testing.assert_allclose(F, fd, atol=1e-6)  # central differences: error O(h^2) ~ 1e-10, round-off ~ 1e-9
    assert np.abs(F).max() > 1e-2


@pytest.mark.parametrize("architecture", ["qallegro-residual", "nequip-allegro-0.8"])
def test_stress_equals_strain_derivative(x64, architecture):
    species = [3, 29]
    crystal = random_crystal(np.random.default_rng(1), 3, species)
    model, params = small_model(species, architecture=architecture)
    _, _, (S,) = predict(model, params, [crystal], species=species)
    volume = abs(np.linalg.det(crystal.cell))
    h = 1e-5
    fd = np.zeros((3, 3))
    for a in range(3):
        for b in range(3):
            eps = np.zeros((3, 3))
            eps[a, b] = eps[b, a] = h / 2 if a != b else h  # symmetric strain, d/d(eps_ab) of the symmetric tensor
            def strained(e):
                m = np.eye(3) + e
                return make_structure(crystal.Z, crystal.positions @ m, cell=crystal.cell @ m, pbc=True)
            fd[a, b] = (energy(model, params, strained(eps), species)
                        - energy(model, params, strained(-eps), species)) / (2 * h) / volume
    np.testing.assert_allclose(S, fd, atol=1e-7)
    assert np.abs(S).max() > 1e-3


@pytest.mark.parametrize("architecture", ["qallegro-residual", "nequip-allegro-0.8"])
def test_padding_and_batch_composition_do_not_change_results(x64, architecture):
    rng = np.random.default_rng(2)
    mols = [random_molecule(rng, n, SPECIES) for n in (4, 6, 9)]
    model, params = small_model(SPECIES, architecture=architecture)
    E_alone, F_alone = [], []
    for m in mols:
        e, (f,), _ = predict(model, params, [m], species=SPECIES, compute_stress=False)
        E_alone.append(e[0])
        F_alone.append(f)
    # other companions, another order, and a larger graph budget (more padding)
    E_batch, F_batch, _ = predict(model, params, [mols[2], mols[0], mols[1]], species=SPECIES, n_graph=9,
                                  compute_stress=False)
    np.testing.assert_allclose(E_batch, [E_alone[2], E_alone[0], E_alone[1]], rtol=1e-12)
    for got, want in zip(F_batch, [F_alone[2], F_alone[0], F_alone[1]]):
        np.testing.assert_allclose(got, want, atol=1e-12)


def test_periodic_cell_equals_supercell_per_atom(x64):
    import ase

    species = [3, 29]
    crystal = random_crystal(np.random.default_rng(3), 2, species)  # edges shorter than 2 r_max = 7 Å
    assert np.linalg.norm(crystal.cell, axis=1).min() < 2 * 3.5
    model, params = small_model(species)
    E1, (F1,), S1 = predict(model, params, [crystal], species=species)
    atoms = ase.Atoms(numbers=crystal.Z, positions=crystal.positions, cell=crystal.cell, pbc=True).repeat((2, 1, 3))
    sc = make_structure(atoms.numbers, atoms.positions, cell=atoms.cell[:], pbc=True)
    E6, (F6,), S6 = predict(model, params, [sc], species=species)
    np.testing.assert_allclose(E6[0] / 6, E1[0], rtol=1e-10)
    np.testing.assert_allclose(F6, np.tile(F1, (6, 1)), atol=1e-9)
    np.testing.assert_allclose(S6[0], S1[0], atol=1e-10)


def test_isolated_atom_gets_its_shift_and_finite_forces(x64):
    model, params = small_model(SPECIES)
    # H far from a C-O pair: no neighbour of H within r_max = 3.5 Å
    far = make_structure([6, 8, 1], [[0, 0, 0], [1.2, 0, 0], [10.0, 0, 0]])
    pair = make_structure([6, 8], [[0, 0, 0], [1.2, 0, 0]])
    (E_far, E_pair), (F_far, F_pair), _ = predict(model, params, [far, pair], species=SPECIES, compute_stress=False)
    shift_H = model.species_shift[0]
    assert np.isfinite(F_far).all()
    np.testing.assert_allclose(E_far, E_pair + shift_H, rtol=1e-12)
    np.testing.assert_allclose(F_far[2], 0.0, atol=1e-14)
    np.testing.assert_allclose(F_far[:2], F_pair, atol=1e-12)


def test_energy_is_smooth_at_the_cutoff(x64):
    model, params = small_model(SPECIES)
    r_max = model.r_max
    e = [energy(model, params, make_structure([6, 8], [[0, 0, 0], [d, 0, 0]]), SPECIES)
         for d in (r_max - 1e-3, r_max - 1e-6, r_max + 1e-3)]
    far = energy(model, params, make_structure([6, 8], [[0, 0, 0], [r_max + 1.0, 0, 0]]), SPECIES)
    assert abs(e[1] - far) < 1e-12 and abs(e[2] - far) < 1e-14
    assert abs(e[0] - far) < 1e-8


def test_potential_saved_before_path_channel_coupling_loads_unchanged():
    """The committed aspirin potential predates `tp_path_channel_coupling`: its config lacks the key, so the model
    builds without coupling weights, the saved parameters fit, and the energy is the one computed before the option
    existed (float32, on this 21-atom frame)."""
    from ase.io import read

    from qallegro.potential import load, read_artifact

    data = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")
    artifact = read_artifact(os.path.join(data, "aspirin-allegro-cpu-6min.qallegro"))
    assert "tp_path_channel_coupling" not in artifact["model_config"]
    assert not [k for k in artifact["params"]["params"] if k.startswith("tp_path_channel_weights")]
    potential = load(os.path.join(data, "aspirin-allegro-cpu-6min.qallegro"))
    atoms = read(os.path.join(data, "aspirin.xyz"))
    energy, forces = potential.energy_and_forces(atoms.positions, atoms.numbers)
    assert potential.model.tp_path_channel_coupling is False
    assert jax.tree.structure(potential.params) == jax.tree.structure(artifact["params"])
    np.testing.assert_allclose(float(energy), -17618.103515625, rtol=1e-6)  # eV, computed before the change
    np.testing.assert_allclose(np.asarray(forces)[0], [0.7311578, 0.27660644, -0.62522805], atol=1e-4)  # eV/Å
