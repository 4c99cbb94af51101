"""Readers, units, splits, neighbour lists and the errors bad input must raise."""

import os

import ase
import ase.io
import numpy as np
import pytest
from ase.calculators.singlepoint import SinglePointCalculator
from ase.neighborlist import neighbor_list as ase_neighbor_list

from qallegro.data.graphs import padding_budget, structure_to_graph
from qallegro.data.loader import BatchBudget, GraphLoader
from qallegro.data.neighbors import neighbor_list
from qallegro.data.readers import read_extxyz, read_rmd17_npz, read_structures
from qallegro.data.splits import train_val_split
from qallegro.data.statistics import fit_scale_shift
from qallegro.data.structure import DataError, make_structure
from qallegro.data.units import HARTREE_TO_EV, KCAL_MOL_TO_EV

ASPIRIN = os.path.join(os.path.dirname(__file__), "..", "experiments", "data", "rmd17_aspirin_train_01.npz")


def write_rmd17(path, n_frames=3, n_atoms=4, **override):
    rng = np.random.default_rng(0)
    arrays = {"nuclear_charges": np.array([6, 1, 1, 8][:n_atoms], dtype=np.uint8),
              "coords": rng.normal(size=(n_frames, n_atoms, 3)) * 1.5,
              "energies": rng.normal(size=n_frames) - 1000.0,
              "forces": rng.normal(size=(n_frames, n_atoms, 3))}
    arrays.update(override)
    np.savez(path, **{k: v for k, v in arrays.items() if v is not None})
    return arrays


def test_unit_constants():
    assert KCAL_MOL_TO_EV == pytest.approx(4.184 / 96.485332, rel=1e-6)  # kJ/mol per kcal/mol over kJ/mol per eV
    assert HARTREE_TO_EV == pytest.approx(27.211386, rel=1e-8)


def test_rmd17_reader_converts_kcal_mol_to_ev():
    raw = np.load(ASPIRIN)
    structures = read_rmd17_npz(ASPIRIN, max_frames=3)
    assert len(structures) == 3 and structures[0].n_atoms == 21
    assert structures[1].energy == pytest.approx(raw["energies"][1] * 0.0433641043, rel=1e-12)
    np.testing.assert_allclose(structures[2].forces, raw["forces"][2] * 0.0433641043, rtol=1e-12)
    np.testing.assert_allclose(structures[2].positions, raw["coords"][2])
    assert structures[2].where.endswith("frame 2")


def test_extxyz_round_trip(tmp_path):
    atoms = ase.Atoms("Cu2Li", positions=[[0, 0, 0], [1.8, 0, 0], [0, 1.8, 0]], cell=np.eye(3) * 3.6, pbc=True)
    stress_voigt = np.array([0.01, 0.02, 0.03, 0.004, 0.005, 0.006])
    atoms.calc = SinglePointCalculator(atoms, energy=-7.5, forces=np.arange(9.0).reshape(3, 3) / 10,
                                       stress=stress_voigt)
    path = str(tmp_path / "x.extxyz")
    ase.io.write(path, [atoms, atoms], format="extxyz")
    s = read_structures(path)
    assert len(s) == 2 and s[1].energy == pytest.approx(-7.5)
    np.testing.assert_allclose(s[0].forces, np.arange(9.0).reshape(3, 3) / 10)
    np.testing.assert_allclose(s[0].stress, [[0.01, 0.006, 0.005], [0.006, 0.02, 0.004], [0.005, 0.004, 0.03]])
    assert s[0].pbc.all()


def test_split_is_seeded_and_disjoint():
    items = list(range(1000))
    a_train, a_val = train_val_split(items, 950, 50, seed=3)
    b_train, b_val = train_val_split(items, 950, 50, seed=3)
    c_train, _ = train_val_split(items, 950, 50, seed=4)
    assert a_train == b_train and a_val == b_val and a_train != c_train
    assert len(set(a_train) | set(a_val)) == 1000
    with pytest.raises(ValueError, match="cannot split"):
        train_val_split(items, 990, 50, seed=0)


@pytest.mark.parametrize("seed", range(6))
def test_neighbor_list_matches_ase(seed):
    rng = np.random.default_rng(seed)
    cell = np.diag(rng.uniform(2.0, 6.0, 3)) + rng.uniform(-1.0, 1.0, (3, 3)) * (1 - np.eye(3))
    pbc = [True, True, True] if seed < 4 else [True, False, True]
    n = int(rng.integers(2, 6))
    atoms = ase.Atoms(numbers=[29] * n, scaled_positions=rng.uniform(size=(n, 3)), cell=cell, pbc=pbc)
    s = make_structure(atoms.numbers, atoms.positions, cell=cell, pbc=pbc, validate=False)
    r_max = float(rng.uniform(3.0, 5.0))  # often longer than half the cell: many images
    senders, receivers, shifts = neighbor_list(s.positions, s.cell, s.pbc, r_max)
    i, j, S = ase_neighbor_list("ijS", atoms, r_max)
    ours = sorted(zip(receivers.tolist(), senders.tolist(), map(tuple, shifts.astype(int).tolist())))
    theirs = sorted(zip(i.tolist(), j.tolist(), map(tuple, S.tolist())))
    assert ours == theirs and len(ours) > 0
    vec = s.positions[senders] - s.positions[receivers] + shifts @ cell
    assert np.linalg.norm(vec, axis=1).max() < r_max


def test_neighbor_list_molecule():
    s = make_structure([8, 1, 1], [[0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0]])
    senders, receivers, shifts = neighbor_list(s.positions, s.cell, s.pbc, 1.2)
    assert sorted(zip(receivers.tolist(), senders.tolist())) == [(0, 1), (0, 2), (1, 0), (2, 0)]
    assert not shifts.any()


def test_one_size_data_batches_exactly_with_no_node_padding_beyond_one_node():
    structures = read_rmd17_npz(ASPIRIN, max_frames=200)
    graphs = [structure_to_graph(s, 5.0, [1, 6, 8]) for s in structures]
    loader = GraphLoader(graphs, batch_size=5, shuffle=True, seed=0)
    assert loader.budget.n_node == 5 * 21 + 1 and loader.budget.n_graph == 6
    for epoch in range(2):
        plan = loader.plan(epoch)
        assert sorted(np.concatenate(plan).tolist()) == list(range(200))  # every structure once per epoch
        assert sum(len(b) == 5 for b in plan) >= 0.9 * len(plan)  # the edge budget rarely closes a batch early
        for _ in loader.batches(epoch):
            pass
    assert len(loader.shapes_seen) == 1


def test_mixed_cell_sizes_train_and_evaluate_with_one_shape_each():
    """Cells of 1-64 atoms (the Cu–Li range): one compiled training shape and one evaluation shape over several
    epochs, every structure in every epoch once, never more than batch_size structures in a batch."""
    rng = np.random.default_rng(0)
    graphs = []
    for m in rng.integers(1, 5, size=60):  # simple-cubic cells of 1, 8, 27 or 64 atoms
        atoms = ase.Atoms("Cu", cell=np.eye(3) * 2.5, pbc=True).repeat(int(m))
        atoms.rattle(0.05, seed=int(m))
        graphs.append(structure_to_graph(make_structure(atoms.numbers, atoms.positions, atoms.cell[:], True), 3.0,
                                         [29]))
    train = GraphLoader(graphs, batch_size=4, shuffle=True, seed=0)
    evaluation = GraphLoader(graphs, batch_size=8, shuffle=False)
    for epoch in range(4):
        plan = train.plan(epoch)
        assert sorted(np.concatenate(plan).tolist()) == list(range(len(graphs)))
        assert max(len(b) for b in plan) <= 4
        for idx, batch in zip(plan, train.batches(epoch)):
            assert np.asarray(batch.n_node)[len(idx)] >= 1  # the first padding graph owns the padding nodes
        for _ in evaluation.batches(0):
            pass
    assert len(train.shapes_seen) == 1 and len(evaluation.shapes_seen) == 1
    assert 0.0 <= train.padding_fraction(0)["nodes"] < 0.5
    # the same (seed, epoch) gives the same batches in a new loader: what --resume replays
    again = GraphLoader(graphs, batch_size=4, shuffle=True, seed=0)
    assert all(np.array_equal(a, b) for a, b in zip(again.plan(3), train.plan(3)))
    with pytest.raises(ValueError, match="cannot hold graph"):
        GraphLoader(graphs, batch_size=4, shuffle=False, budget=BatchBudget(n_node=10, n_edge=10, n_graph=5))
    big = BatchBudget(n_node=10, n_edge=10, n_graph=5).covering(graphs)
    assert big.n_node == max(int(g.n_node.sum()) for g in graphs) + 1


def test_padding_ladder_of_single_structures():
    sizes = range(1, 20000, 7)
    for per_doubling in (1, 2, 4, 8):
        budgets = [padding_budget(n, sizes_per_doubling=per_doubling) for n in sizes]
        assert all(n <= b <= (1 + 1 / per_doubling) * n + 8 for n, b in zip(sizes, budgets))
        assert all(a <= b for a, b in zip(budgets, budgets[1:]))  # monotone: a larger batch never pads less
        # `per_doubling` distinct sizes per doubling of n (8 .. 20000: 12 doublings, 13 powers of two)
        assert len(set(budgets)) <= per_doubling * 13
    with pytest.raises(ValueError, match="sizes_per_doubling must be"):
        padding_budget(10, sizes_per_doubling=3)


def test_scale_shift_reproduces_mean_energy():
    structures = read_rmd17_npz(ASPIRIN, max_frames=50)
    stats = fit_scale_shift(structures, [1, 6, 8])
    counts = np.array([8, 9, 4])  # aspirin C9H8O4
    assert counts @ np.array(stats["shift"]) == pytest.approx(np.mean([s.energy for s in structures]), rel=1e-10)
    assert 0.5 < stats["scale"][0] < 3.0  # force RMS in eV/Å


# ---- bad input: each error names the file, frame and atom where it applies ---------------------------------

def test_missing_key(tmp_path):
    path = str(tmp_path / "bad.npz")
    write_rmd17(path, forces=None)
    with pytest.raises(DataError, match=r"bad.npz: missing key\(s\) \['forces'\]"):
        read_rmd17_npz(path)


def test_nan_coordinates(tmp_path):
    path = str(tmp_path / "nan.npz")
    coords = np.random.default_rng(1).normal(size=(3, 4, 3)) * 2
    coords[2, 1, 0] = np.nan
    write_rmd17(path, coords=coords)
    with pytest.raises(DataError, match=r"nan.npz, frame 2, atom 1: position .* not finite"):
        read_rmd17_npz(path)


def test_inf_forces(tmp_path):
    path = str(tmp_path / "inf.npz")
    forces = np.zeros((3, 4, 3))
    forces[1, 3, 2] = np.inf
    write_rmd17(path, forces=forces)
    with pytest.raises(DataError, match=r"inf.npz, frame 1, atom 3: force .* not finite"):
        read_rmd17_npz(path)


def test_mismatched_shapes(tmp_path):
    path = str(tmp_path / "shape.npz")
    write_rmd17(path, forces=np.zeros((3, 5, 3)))
    with pytest.raises(DataError, match=r"shape.npz: forces has shape \(3, 5, 3\), expected \(3, 4, 3\)"):
        read_rmd17_npz(path)
    with pytest.raises(DataError, match="positions have shape"):
        make_structure([1, 1], [[0, 0, 0]])


def test_unknown_species():
    s = make_structure([6, 1, 79], [[0, 0, 0], [1, 0, 0], [0, 2, 0]], source="mol.xyz", frame=4)
    with pytest.raises(DataError, match=r"mol.xyz, frame 4, atom 2: species Z=79 is not among"):
        structure_to_graph(s, 3.0, [1, 6, 8])


def test_two_atoms_at_the_same_position():
    with pytest.raises(DataError, match=r"frame 7: atoms 1 and 3 are .* apart"):
        make_structure([6, 1, 1, 1], [[0, 0, 0], [1, 0, 0], [0, 1, 0], [1, 0, 0]], source="m", frame=7)
    # also through a periodic image: atom 1 sits on atom 0's image one cell over
    with pytest.raises(DataError, match="atoms 0 and 1"):
        make_structure([29, 29], [[0, 0, 0], [3.0, 0, 0]], cell=np.eye(3) * 3.0, pbc=True)


def test_bad_extxyz_file(tmp_path):
    path = tmp_path / "broken.extxyz"
    path.write_text("3\nnot a header\nCu 0 0\n")
    with pytest.raises(DataError, match="broken.extxyz"):
        read_extxyz(str(path))
