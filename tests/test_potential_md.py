"""Deployable potentials and MD: artifact round trip and its errors, the ASE calculator, jax-md energies and
forces against the graph functions, neighbour-list re-allocation, velocity initialisation, energy conservation
of the trained aspirin artifact, the md command."""

import json
import os

import ase.build
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from allegro_helpers import SMALL_MODEL, random_crystal, small_model
from ase.calculators.calculator import PropertyNotImplementedError
from ase.io import read
from flax import serialization

from qallegro.data.graphs import batch_and_pad, structure_to_graph
from qallegro.data.structure import make_structure
from qallegro.md import build_system, energy_drift, run_md
from qallegro.md.ase import QAllegroCalculator
from qallegro.md.dynamics import maxwell_boltzmann_momenta
from qallegro.potential import ArtifactError, Potential, load, read_artifact, save
from qallegro.potential.graph import jit_energy_forces_stress

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")
ASPIRIN_MODEL = os.path.join(DATA, "aspirin-allegro-cpu-6min.qallegro")
SPECIES = [3, 29]


# Smaller than SMALL_MODEL (quick to compile): these tests are about plumbing, physics is tested elsewhere.
TINY = dict(l_max=1, num_layers=1, num_tensor_features=4, two_body_mlp=[8, 16], latent_mlp=[16], readout_mlp=[8])


def small_potential(dtype="float32", noise=0.05):
    jdtype = jnp.float64 if dtype == "float64" else jnp.float32
    _, params = small_model(SPECIES, dtype=jdtype, noise=noise, **TINY)
    config = dict(SMALL_MODEL, num_species=2, species_scale=[1.3, 1.3], species_shift=[-1.0, -1.5], **TINY)
    return config, params, Potential(config, params, SPECIES, dtype=dtype)


def culi_cell(repeat=3, rattle=0.05, seed=0):
    atoms = ase.build.bulk("Cu", "fcc", a=3.6, cubic=True).repeat(repeat)
    atoms.numbers[np.random.default_rng(seed).permutation(len(atoms))[: len(atoms) // 4]] = 3
    atoms.rattle(rattle, seed=seed)
    return atoms


def direct(config, params, structure, compute_stress=True):
    """Reference: the graph functions of qallegro.potential on a host (matscipy) neighbour list."""
    from qallegro.models import build_model

    graph = batch_and_pad([structure_to_graph(structure, config["r_max"], SPECIES)])
    dtype = jax.tree.leaves(params)[0].dtype
    graph = graph._replace(nodes=dict(graph.nodes, positions=graph.nodes["positions"].astype(dtype)))
    out = jit_energy_forces_stress(build_model(config), params, graph, compute_stress)
    stress = np.asarray(out["stress"][0]) if compute_stress else None
    return float(out["energy"][0]), np.asarray(out["forces"][: structure.n_atoms]), stress


# ---- artifact ----------------------------------------------------------------------------------------------

def test_artifact_round_trip_gives_identical_outputs(tmp_path):
    config, params, pot = small_potential()
    path = str(tmp_path / "m.qallegro")
    digest = save(path, config, params, SPECIES, metadata={"note": "test", "epochs": 3})
    loaded = load(path)
    assert loaded.sha256 == digest and loaded.metadata["epochs"] == 3 and loaded.species == tuple(SPECIES)
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(loaded.params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    s = random_crystal(np.random.default_rng(3), n_atoms=4)
    args = (s.positions, s.Z, s.cell, s.pbc)
    for before, after in zip(pot.energy_forces_stress(*args), loaded.energy_forces_stress(*args)):
        np.testing.assert_array_equal(np.asarray(before), np.asarray(after))
    e, f, sigma = loaded.energy_forces_stress(*args)
    e_ref, f_ref, s_ref = direct(config, params, s)
    assert abs(float(e) - e_ref) < 1e-4 and float(jnp.abs(f).max()) > 1e-3
    np.testing.assert_allclose(f, f_ref, atol=1e-5)
    np.testing.assert_allclose(sigma, s_ref, atol=1e-6)
    e2, f2 = loaded.energy_and_forces(*args)
    assert float(e2) == float(e) and float(loaded.energy(*args)) == pytest.approx(float(e), abs=1e-4)
    np.testing.assert_array_equal(np.asarray(f2), np.asarray(f))


def _rewrite(path, **changes):
    outer = serialization.msgpack_restore(open(path, "rb").read())
    outer.update(changes)
    with open(path, "wb") as f:
        f.write(serialization.msgpack_serialize(outer))


def test_artifact_refuses_unknown_version_bad_checksum_and_other_files(tmp_path):
    config, params, _ = small_potential()
    path = str(tmp_path / "m.qallegro")
    save(path, config, params, SPECIES)
    _rewrite(path, version=99)
    with pytest.raises(ArtifactError, match=r"m\.qallegro.*version 99 is not supported"):
        load(path)
    save(path, config, params, SPECIES)
    outer = serialization.msgpack_restore(open(path, "rb").read())
    payload = bytearray(outer["payload"])
    payload[-5] ^= 0xFF  # flip bits inside a parameter array
    _rewrite(path, payload=bytes(payload))
    with pytest.raises(ArtifactError, match=r"m\.qallegro: checksum mismatch"):
        read_artifact(path)
    other = tmp_path / "notes.txt"
    other.write_text("not a model")
    with pytest.raises(ArtifactError, match=r"notes\.txt: not a qallegro potential"):
        load(str(other))
    with pytest.raises(FileNotFoundError, match="missing.qallegro"):
        load(str(tmp_path / "missing.qallegro"))
    with pytest.raises(ValueError, match="num_species=2 but 3 species"):
        save(path, config, params, [1, 3, 29])


# ---- ASE calculator ------------------------------------------------------------------------------------------

def test_ase_calculator_equals_direct_functions():
    config, params, pot = small_potential()
    atoms = culi_cell(repeat=2, rattle=0.1)
    atoms.set_cell(atoms.cell.array @ np.array([[1.0, 0.05, 0], [0, 1.0, 0.03], [0, 0, 1.0]]), scale_atoms=True)
    atoms.calc = QAllegroCalculator(pot)
    s = make_structure(atoms.numbers, atoms.positions, atoms.cell.array, True)
    e_ref, f_ref, s_ref = direct(config, params, s)
    assert atoms.get_potential_energy() == pytest.approx(e_ref, abs=2e-4)
    np.testing.assert_allclose(atoms.get_forces(), f_ref, atol=1e-5)
    stress = atoms.get_stress(voigt=False)
    np.testing.assert_allclose(stress, s_ref, atol=1e-6)
    assert np.abs(stress).max() > 1e-4 and np.abs(atoms.get_forces()).max() > 1e-3
    # the calculator reacts to moved atoms, and a molecule has no stress
    atoms.positions[0] += 0.1
    assert atoms.get_potential_energy() != pytest.approx(e_ref, abs=1e-6)
    molecule = atoms[:6].copy()
    molecule.pbc = False
    molecule.cell = None
    molecule.calc = QAllegroCalculator(pot)
    m = make_structure(molecule.numbers, molecule.positions)
    assert molecule.get_potential_energy() == pytest.approx(direct(config, params, m, False)[0], abs=2e-4)
    with pytest.raises(PropertyNotImplementedError):
        molecule.get_stress()


# ---- jax-md --------------------------------------------------------------------------------------------------

def test_jaxmd_energy_and_forces_equal_graph_functions(x64):
    config, params, pot = small_potential("float64", noise=0.2)
    # 256 atoms (14.4 Å: wide enough for jax-md's cell list) and a 20-atom cluster (free space, all pairs)
    for atoms in (culi_cell(repeat=4, rattle=0.15, seed=1), culi_cell(repeat=3, rattle=0.1)[:20]):
        periodic = bool(atoms.pbc.any()) and len(atoms) > 20
        if not periodic:
            atoms.pbc = False
        cell = atoms.cell.array if periodic else None
        system = build_system(pot, atoms.positions, atoms.numbers, cell, periodic)
        neighbors = system.allocate()
        energy, grad = jax.jit(jax.value_and_grad(system.energy_fn))(system.R, neighbors)
        s = make_structure(atoms.numbers, atoms.positions, cell, periodic)
        e_ref, f_ref, _ = direct(config, params, s, compute_stress=False)
        assert float(energy) == pytest.approx(e_ref, rel=1e-12)
        np.testing.assert_allclose(-np.asarray(grad), f_ref, rtol=1e-9, atol=1e-10)
        assert np.abs(f_ref).max() > 1e-2


def test_narrow_cell_and_mixed_pbc_are_refused():
    _, _, pot = small_potential()
    atoms = culi_cell(repeat=2)  # 7.2 Å < 2 (3.5 + 0.5)
    with pytest.raises(ValueError, match="must exceed 2 \\(r_max \\+ skin\\)"):
        build_system(pot, atoms.positions, atoms.numbers, atoms.cell.array, True)
    with pytest.raises(ValueError, match="pbc"):
        build_system(pot, atoms.positions, atoms.numbers, atoms.cell.array, [True, True, False])


def test_neighbor_overflow_triggers_reallocation_and_changes_nothing():
    _, _, pot = small_potential()
    atoms = culi_cell(repeat=3, rattle=0.05)[:40]  # a 40-atom cluster (free space)
    system = build_system(pot, atoms.positions, atoms.numbers)
    # A list allocated for the cluster expanded by 25 % has room for far fewer pairs than the real one needs.
    small = system.allocate(system.R * 1.25)
    assert small.idx.shape[1] < 0.7 * system.allocate().idx.shape[1]
    assert not system.neighbors_ok(jax.jit(lambda n, r: n.update(r))(small, system.R))  # overflow is flagged
    kwargs = dict(ensemble="nve", steps=20, dt_fs=1.0, temperature_K=300.0, log_every=10, keep_frames=False)
    reference = run_md(system, **kwargs)
    result = run_md(system, neighbors=small, **kwargs)
    assert reference.reallocations == 0 and result.reallocations >= 1
    assert result.capacity >= 0.9 * reference.capacity
    for a, b in zip(reference.thermo, result.thermo):
        assert a["potential_energy"] == pytest.approx(b["potential_energy"], abs=1e-4)
    np.testing.assert_allclose(np.asarray(reference.state.position), np.asarray(result.state.position), atol=1e-5)


def test_second_run_with_the_same_settings_compiles_nothing():
    """The integrator (jax-md jit-compiles its init) and the chunks are kept on the system: another seed of the
    same settings compiles no program, and still draws its own velocities."""
    _, _, pot = small_potential()
    atoms = culi_cell(repeat=2, rattle=0.05)[:12]
    system = build_system(pot, atoms.positions, atoms.numbers)
    kwargs = dict(ensemble="langevin", steps=6, dt_fs=1.0, temperature_K=300.0, log_every=3, keep_frames=False)
    compiles = {0: 0, 1: 0}
    seed = 0

    def listener(event, duration, **_):
        if event == "/jax/core/compile/backend_compile_duration":  # one XLA compilation
            compiles[seed] += 1

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        first = run_md(system, seed=0, **kwargs)
        seed = 1
        second = run_md(system, seed=1, **kwargs)
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)
    assert compiles[0] > 0 and compiles[1] == 0, compiles  # (the first run shows that the listener hears them)
    assert second.thermo[0]["kinetic_energy"] != first.thermo[0]["kinetic_energy"]


def test_maxwell_boltzmann_velocities():
    masses = np.array([1.008] * 8 + [12.011] * 9 + [15.999] * 4)
    kT = 8.617333e-5 * 300.0
    keys = jax.random.split(jax.random.PRNGKey(0), 400)
    p = np.asarray(jax.vmap(lambda k: maxwell_boltzmann_momenta(k, masses, kT))(keys))
    np.testing.assert_allclose(p.sum(axis=1), 0.0, atol=1e-4)  # zero total momentum, every draw
    ke = 0.5 * (p**2 / masses[None, :, None]).sum(axis=(1, 2))
    temperature = 2 * ke.mean() / ((3 * len(masses) - 3) * 8.617333e-5)
    assert temperature == pytest.approx(300.0, rel=0.03)
    # equipartition per species (jax-md's mean-momentum removal heats the hydrogens by ~2x here)
    ke_h = 0.5 * (p[:, :8] ** 2 / masses[None, :8, None]).sum(axis=(1, 2)).mean() / (3 * 8)
    assert ke_h / (0.5 * kT) == pytest.approx(1.0, abs=0.08)


def test_nve_of_trained_aspirin_conserves_energy():
    """0.25 ps of NVE at dt = 0.5 fs from a test-set frame at 300 K (float32). The potential energy swings by
    tens of meV/atom; the total energy must stay within 0.5 meV/atom of its start and fluctuate less than 5 % as
    much as the potential energy. Broken forces (wrong sign or scale, missing pairs) or a broken integrator
    break either bound. The long run (>= 5 ps) is measured by experiments/benchmarks/nve_drift.py."""
    pot = load(ASPIRIN_MODEL)
    atoms = read(os.path.join(DATA, "aspirin.xyz"))
    system = build_system(pot, atoms.positions, atoms.numbers)
    result = run_md(system, "nve", steps=500, dt_fs=0.5, temperature_K=300.0, log_every=25, keep_frames=False)
    n = len(atoms)
    total = np.array([row["total_energy"] for row in result.thermo])
    potential = np.array([row["potential_energy"] for row in result.thermo])
    assert 1000 * np.ptp(potential) / n > 5.0  # the molecule does move
    assert 1000 * np.max(np.abs(total - total[0])) / n < 0.5
    assert np.std(total) < 0.05 * np.std(potential)
    drift = energy_drift(result.thermo, n)
    assert abs(drift["drift_meV_per_atom_per_ps"]) < 2.0
    assert 100.0 < np.mean([row["temperature"] for row in result.thermo]) < 600.0


def test_md_command_writes_trajectory_and_thermo(tmp_path):
    from experiments.run import main

    config, params, _ = small_potential()
    model = str(tmp_path / "m.qallegro")
    save(model, config, params, SPECIES)
    structure = str(tmp_path / "culi.extxyz")
    culi_cell(repeat=3).write(structure)
    out = str(tmp_path / "md")
    for ensemble in ("nvt",):  # the command is the same for every ensemble; nve runs above, via run_md
        assert main(["md", "--model", model, "--structure", structure, "--ensemble", ensemble, "--steps", "20",
                     "--dt", "1.0", "--temperature", "500", "--log-every", "10", "--out", out]) == 0
        rows = open(os.path.join(out, "thermo.csv")).read().splitlines()
        assert len(rows) == 1 + 3 and rows[0].startswith("step,time_fs,potential_energy")
        frames = read(os.path.join(out, "trajectory.extxyz"), index=":")
        assert len(frames) == 3 and len(frames[-1]) == 108 and frames[-1].info["step"] == 20
        summary = json.load(open(os.path.join(out, "summary.json")))
        assert summary["ensemble"] == ensemble and summary["neighbor_reallocations"] == 0
