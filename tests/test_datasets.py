"""The paper's datasets: QM9 reader, the seeded Cu–Li generator, extxyz label keys, splits from one file,
configs for every dataset, and `--dataset extxyz:PATH` end to end with stress."""

import json
import os
import subprocess
import sys

import ase
import ase.build
import ase.io
import numpy as np
import pytest
from ase.calculators.lj import LennardJones

from experiments.config import available_datasets, dataset_label, load_config
from qallegro.data.culi import KINDS, LI, MIN_DISTANCE, generate_structure, generate_structures, min_distance
from qallegro.data.qm9 import read_qm9
from qallegro.data.readers import read_extxyz, read_structures
from qallegro.data.splits import resolve_split_sizes, train_val_split, train_val_test_split
from qallegro.data.structure import DataError
from qallegro.data.units import HARTREE_TO_EV

HERE = os.path.dirname(__file__)
QM9_EXCERPT = os.path.join(HERE, "data", "qm9_excerpt.npz")  # 8 molecules of QM9 incl. CH4, NH3, H2O


# ---- QM9 -------------------------------------------------------------------------------------------------

def test_qm9_methane_atomisation_energy():
    mols = read_qm9(QM9_EXCERPT)
    ch4 = mols[0]
    assert ch4.frame == 1 and sorted(ch4.Z.tolist()) == [1, 1, 1, 1, 6]
    # U0(CH4) = -40.47893 Ha; atom references H -0.500273, C -37.846772 Ha (QM9 atomref.txt)
    assert ch4.energy == pytest.approx((-40.47893 - (-37.846772 - 4 * 0.500273)) * 27.211386, abs=1e-4)
    assert ch4.energy == pytest.approx(-17.17, abs=0.01)
    assert ch4.forces is None and ch4.stress is None and not ch4.pbc.any()
    # C-H bond length of methane ~1.09 Å: positions are in Å
    d = np.linalg.norm(ch4.positions[ch4.Z == 1] - ch4.positions[ch4.Z == 6], axis=1)
    np.testing.assert_allclose(d, 1.09, atol=0.01)
    water = next(m for m in mols if m.frame == 3)
    assert sorted(water.Z.tolist()) == [1, 1, 8] and -10.0 < water.energy < -9.0  # H2O atomisation ~ -9.2 eV


def test_qm9_targets_and_total_energies():
    total = read_qm9(QM9_EXCERPT, atomization=False, max_molecules=1)[0]
    assert total.energy == pytest.approx(-40.47893 * HARTREE_TO_EV, rel=1e-12)
    u0, g = read_qm9(QM9_EXCERPT, "U0")[0], read_qm9(QM9_EXCERPT, "G")[0]
    # G(CH4) = -40.498597 Ha, atomref_G: C -37.861317, H -0.510927 Ha
    assert g.energy == pytest.approx((-40.498597 + 37.861317 + 4 * 0.510927) * HARTREE_TO_EV, abs=1e-6)
    assert u0.energy < g.energy
    via_dispatch = read_structures(QM9_EXCERPT, target="H")
    assert len(via_dispatch) == 8 and via_dispatch[-1].frame == 133885
    with pytest.raises(DataError, match="unknown QM9 target 'U1'"):
        read_qm9(QM9_EXCERPT, target="U1")


def test_qm9_config_profiles():
    cpu = load_config("qm9", "cpu")
    assert os.path.exists(cpu["dataset"]["train"]) and cpu["training"]["forces_weight"] == 0.0
    paper = load_config("qm9", "paper")
    assert paper["dataset"]["n_train"] == 110000 and paper["dataset"]["n_val"] == 10000
    assert paper["dataset"]["train"].endswith("qm9_130831.npz") and paper["dataset"]["read"] == {"target": "U0"}


def test_qm9_cpu_profile_learns_beyond_the_composition_baseline():
    """Energy-only training with the cpu profile's optimiser settings must fit more than the per-species shifts.

    At learning rates of 2e-3 and 4e-3 the energy MAE once stayed at the composition baseline for thousands of
    steps (the network learned nothing; experiments/results/datasets.md); at 1e-3 it falls within a few hundred.
    On these 100 molecules the MAE over the baseline after 100/200/300/600 steps: 0.81/0.59/0.47/0.25 at 1e-3
    (and 0.48/0.29/0.20/0.08 at 4e-3 with today's code: the test no longer separates the two rates; it fails
    when the network learns nothing, e.g. a zero gradient, which leaves the ratio at 1). 200 steps keep a margin
    of 0.16 below the 0.75 bound (300 steps cost 50 % more for a margin the test does not need)."""
    from qallegro.data.loader import GraphLoader
    from qallegro.train.config import TrainConfig
    from qallegro.train.evaluation import evaluate
    from qallegro.train.setup import prepare
    from qallegro.train.step import init_train_state, make_steps

    cfg = load_config("qm9", "cpu")
    molecules = read_qm9(cfg["dataset"]["train"], max_molecules=100)
    prepared = prepare(molecules, cfg["model"], seed=0)
    training = TrainConfig.from_dict(dict(cfg["training"], eval_batch_size=len(molecules)))
    optimizer, train_step, eval_step = make_steps(prepared.model, training, compute_stress=False)
    state = init_train_state(prepared.params, optimizer)
    everything = GraphLoader(prepared.train_graphs, len(molecules), shuffle=False)
    baseline = evaluate(eval_step, state.params, everything, training)["energy_mae"]  # = composition fit
    loader = GraphLoader(prepared.train_graphs, training.batch_size, shuffle=True, seed=0)
    for epoch in range(20):  # 200 steps
        for graph in loader.batches(epoch):
            state, _ = train_step(state, graph)
    fitted = evaluate(eval_step, state.params, everything, training)["energy_mae"]
    assert fitted < 0.75 * baseline, (baseline, fitted)


# ---- the Cu–Li generator (no torch needed) -----------------------------------------------------------------

def _same(a, b):
    return (np.array_equal(a.numbers, b.numbers) and np.array_equal(a.positions, b.positions)
            and np.array_equal(a.cell[:], b.cell[:]))


def test_culi_generator_is_deterministic_for_a_seed():
    first = generate_structures(12, seed=3)
    again = generate_structures(12, seed=3)
    assert all(_same(a, b) for a, b in zip(first, again))
    assert all(_same(a, b) for a, b in zip(generate_structures(5, seed=3), first))  # prefix-stable
    other = generate_structures(12, seed=4)
    assert not any(_same(a, b) for a, b in zip(first, other))


def test_culi_structures_respect_the_minimum_distance_and_cover_every_kind():
    kinds = [k for k, _ in KINDS]
    structures = generate_structures(6 * len(kinds), seed=0, kinds=kinds)
    for a in structures:
        assert a.pbc.all() and 1 <= len(a) <= 64 and set(a.numbers) <= {3, 29}
        assert min_distance(a) >= MIN_DISTANCE, a.info
        assert a.get_volume() / len(a) > 8.0  # no collapsed cells
    assert {a.info["config_type"] for a in structures} == set(kinds)
    x_li = [np.mean(a.numbers == LI) for a in structures]
    assert min(x_li) < 0.15 and max(x_li) > 0.85  # the whole Li fraction range
    assert any(abs(a.cell[0, 1]) > 1e-6 for a in structures)  # strained cells are triclinic
    # our neighbour-list check agrees with ASE's own minimum-image distances
    a = structures[0]
    d = a.get_all_distances(mic=True)[np.triu_indices(len(a), 1)]
    assert min_distance(a) <= d.min() + 1e-9
    with pytest.raises(ValueError, match="unknown structure kind"):
        generate_structure(0, 0, kind="glass")


def test_validate_labeller_names_the_missing_dft_frames(tmp_path, capsys):
    from experiments.culi import main

    assert main(["validate-labeller", "--shared", str(tmp_path), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "mlearn_Li_test.extxyz" in err and "--shared" in err


def test_culi_generation_does_not_import_torch():
    code = ("import sys; from qallegro.data.culi import generate_structures; generate_structures(3, 0); "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=os.path.join(HERE, ".."))


# ---- extxyz label keys ---------------------------------------------------------------------------------------

def _frames_with_custom_keys(path):
    frames = []
    for k in range(3):
        a = ase.Atoms("Cu2Li", positions=[[0, 0, 0], [1.8, 0.1, 0], [0, 1.9, 0.2]], cell=np.eye(3) * 3.7, pbc=True)
        a.info["REF_energy"] = -3.0 - k
        a.info["REF_stress"] = np.array([0.01, 0.02, 0.03, 0.0, 0.0, 0.001 * k])
        a.arrays["REF_forces"] = np.full((3, 3), 0.1 * k)
        frames.append(a)
    ase.io.write(path, frames, format="extxyz")


def test_extxyz_custom_keys(tmp_path):
    path = str(tmp_path / "dft.extxyz")
    _frames_with_custom_keys(path)
    s = read_extxyz(path, energy_key="REF_energy", forces_key="REF_forces", stress_key="REF_stress")
    assert [x.energy for x in s] == [-3.0, -4.0, -5.0]
    np.testing.assert_allclose(s[2].forces, 0.2)
    np.testing.assert_allclose(s[2].stress[0, 1], 0.002) and np.testing.assert_allclose(s[1].stress[2, 2], 0.03)
    # default keys: these frames carry no standard labels, so every label is missing (None), no error
    plain = read_extxyz(path)
    assert plain[0].energy is None and plain[0].forces is None and plain[0].stress is None
    # "none" drops a label that exists
    assert read_extxyz(path, energy_key="REF_energy", stress_key="none")[0].stress is None


def test_extxyz_missing_keys_are_clear_errors(tmp_path):
    path = str(tmp_path / "dft.extxyz")
    _frames_with_custom_keys(path)
    with pytest.raises(DataError, match=r"dft.extxyz, frame 0: no info key 'DFT_energy' \(this frame has "
                                        r"\['REF_energy', 'REF_stress'\]"):
        read_extxyz(path, energy_key="DFT_energy")
    with pytest.raises(DataError, match=r"frame 0: no per-atom array key 'dft_forces' .*REF_forces"):
        read_extxyz(path, energy_key="REF_energy", forces_key="dft_forces")
    with pytest.raises(DataError, match=r"no info key 'virial'"):
        read_structures(path, stress_key="virial")
    # a molecule has no stress: an explicit stress key is not required there
    mol = ase.Atoms("H2", positions=[[0, 0, 0], [0.74, 0, 0]])
    mol.info["REF_energy"] = -1.0
    ase.io.write(str(tmp_path / "mol.xyz"), mol, format="extxyz")
    assert read_extxyz(str(tmp_path / "mol.xyz"), energy_key="REF_energy", stress_key="REF_stress")[0].stress is None


def test_compressed_extxyz_is_read(tmp_path):
    import gzip

    path = str(tmp_path / "x.extxyz")
    _frames_with_custom_keys(path)
    with open(path, "rb") as src, gzip.open(path + ".gz", "wb") as dst:
        dst.write(src.read())
    assert len(read_structures(path + ".gz", energy_key="REF_energy")) == 3


# ---- splits and configs ----------------------------------------------------------------------------------

def test_train_val_test_split_from_one_file():
    items = list(range(100))
    assert resolve_split_sizes(100, 0.8, 0.1, None) == (80, 10, 10)
    assert resolve_split_sizes(100, 50, 10, 5) == (50, 10, 5)
    with pytest.raises(ValueError, match="cannot split 100"):
        resolve_split_sizes(100, 90, 20, None)
    train, val, test = train_val_test_split(items, 80, 10, 10, seed=1)
    assert (train, val) == train_val_split(items, 80, 10, seed=1)
    assert sorted(train + val + test) == items


def test_every_dataset_and_model_pair_has_a_config():
    from qallegro.models import build_model  # noqa: F401 (the registry must know the families)

    assert {"qm9", "rmd17-aspirin", "rmd17-benzene", "culi"} <= set(available_datasets())
    for dataset in ("qm9", "rmd17-aspirin", "rmd17-benzene", "culi"):
        for profile in ("cpu", "paper"):
            cfg = load_config(dataset, profile)
            assert cfg["model"]["r_max"] > 0 and cfg["training"]["max_epochs"] >= 1
        cpu = load_config(dataset, "cpu")["training"]  # the cpu profile is a bounded run: minutes or few epochs
        assert cpu.get("max_minutes") is not None or cpu["max_epochs"] <= 100
    culi = load_config("culi", "cpu")
    assert culi["training"]["stress_weight"] > 0 and os.path.isabs(culi["dataset"]["external"]["mlearn_Cu_test"])
    generic = load_config("extxyz:some/dir/my.extxyz.gz", "cpu")
    assert generic["dataset"]["train"] == os.path.abspath("some/dir/my.extxyz.gz")
    assert dataset_label("extxyz:some/dir/my.extxyz.gz") == "extxyz-my"
    with pytest.raises(ValueError, match="unknown dataset 'qm10'"):
        load_config("qm10")


def test_external_energy_reference_refit():
    from qallegro.train.evaluation import energy_errors

    counts = np.array([[4.0, 0.0], [2.0, 2.0], [0.0, 8.0]])  # Li, Cu atoms per frame
    e_ref = np.array([-7.6, -11.9, -32.8])
    e_pred = e_ref + counts @ np.array([0.05, -0.2]) + np.array([0.004, -0.004, 0.008])
    err = energy_errors(counts.sum(axis=1), counts, e_ref, e_pred)
    assert err["energy_per_atom_mae"] > 40.0  # meV/atom before the refit
    assert err["energy_per_atom_mae_refit"] < 1.0
    np.testing.assert_allclose(err["reference_offsets_eV_per_atom"], [-0.05, 0.2], atol=2e-3)


def test_external_sets_share_one_padded_shape(tmp_path, monkeypatch):
    """All external sets are padded to one budget: the evaluation budget, grown once to the largest external
    structure, so evaluating them compiles at most one new shape (a loader per set compiled one each)."""
    from qallegro.data.graphs import structure_to_graph
    from qallegro.data.loader import BatchBudget
    from qallegro.data.readers import read_structures
    from qallegro.train import evaluation
    from qallegro.train.config import TrainConfig

    small, large = tmp_path / "small.extxyz", tmp_path / "large.extxyz"
    cell = ase.build.bulk("Cu", "fcc", a=3.6, cubic=True)
    ase.io.write(small, [cell] * 3)
    ase.io.write(large, [cell.repeat(2)] * 2)  # 32 atoms: larger than the evaluation budget below
    budgets = []

    def fake_evaluate(eval_step, params, loader, cfg, return_predictions=False, shift_correction=None):
        budgets.append(loader.budget)
        assert all(batch.senders.shape[0] == loader.budget.n_edge for batch in loader.batches(0))
        n = len(loader.graphs)
        return {"forces_mae": 1.0, "forces_rmse": 1.0}, {"energy_pred": np.zeros(n)}

    monkeypatch.setattr(evaluation, "evaluate", fake_evaluate)
    given = BatchBudget(n_node=20, n_edge=400, n_graph=4)
    evaluation.evaluate_external({"small": str(small), "large": str(large)}, None, None, 3.0, [29],
                                 TrainConfig(eval_batch_size=3), log=lambda _: None, budget=given)
    graphs = [structure_to_graph(s, 3.0, [29]) for p in (small, large) for s in read_structures(str(p))]
    assert budgets == [given.covering(graphs)] * 2 and budgets[0] != given


# ---- --dataset extxyz:PATH end to end, with stress -------------------------------------------------------------

def test_train_on_extxyz_path_with_stress(tmp_path, capsys):
    from experiments.run import main

    frames = []
    calc = LennardJones(sigma=2.3, epsilon=0.05, rc=4.0, smooth=True)
    rng = np.random.default_rng(0)
    for k in range(8):  # equal sizes, so training and evaluation batches share one padded shape
        a = ase.build.bulk("Cu", "fcc", a=3.7, cubic=True)
        a.numbers[rng.permutation(4)[:k % 3]] = 3
        a.set_cell(a.cell[:] @ (np.eye(3) + rng.uniform(-0.03, 0.03, (3, 3))), scale_atoms=True)
        a.rattle(0.05, seed=k)
        a.calc = calc
        e, f, s = a.get_potential_energy(), a.get_forces(), a.get_stress()
        a.calc = None
        a.info["dft_energy"] = e
        a.info["dft_stress"] = s
        a.arrays["dft_forces"] = f
        frames.append(a)
    path = str(tmp_path / "lj.extxyz")
    ase.io.write(path, frames, format="extxyz")
    keys = "{energy_key: dft_energy, forces_key: dft_forces, stress_key: dft_stress}"
    (tmp_path / "tiny.yaml").write_text(
        f"dataset: {{n_train: 4, n_val: 2, external: {{plain: {path}, again: {{path: {path}, read: {keys}}},\n"
        f"          dense: {{path: {path}, max_volume_per_atom: 12.6, read: {keys}}}}}}}\n"
        "model: {r_max: 3.5, l_max: 1, num_layers: 1, num_tensor_features: 4, two_body_mlp: [8], latent_mlp: [8],\n"
        "        readout_mlp: [8]}\n"
        "training: {batch_size: 4, eval_batch_size: 4, max_minutes: null, refit_shift: false}\n")
    out = str(tmp_path / "run")
    args = ["--dataset", f"extxyz:{path}", "--config", str(tmp_path / "tiny.yaml"), "--max-epochs", "1",
            "--out", out]
    assert main(args + ["--energy-key", "energy"]) == 2  # a DataError: one line naming file and frame, exit 2
    assert "lj.extxyz, frame 0: no info key 'energy'" in capsys.readouterr().err
    assert main(args + ["--energy-key", "dft_energy", "--forces-key", "dft_forces", "--stress-key", "dft_stress"]) == 0
    results = json.load(open(os.path.join(out, "results.json")))
    assert (results["n_train"], results["n_val"], results["n_test"]) == (4, 2, 2)
    assert results["training"]["stress_weight"] > 0
    assert np.isfinite(results["test"]["stress_mae"]) and results["test"]["stress_mae"] > 0
    assert "stress MAE" in capsys.readouterr().out
    # the external evaluation (as for the real DFT frames of the Cu–Li set): all 8 frames, or the denser ones
    again, dense = results["external"]["again"], results["external"]["dense"]
    assert "energy_per_atom_mae" not in results["external"]["plain"]  # standard keys: no labels in this file
    assert again["n"] == 8 and dense["n"] == 3  # volumes per atom 12.05, 12.12, 12.55 < 12.6 Å^3
    assert again["energy_per_atom_mae_refit"] <= again["energy_per_atom_mae"] + 1e-9
    assert np.isfinite(again["forces_mae"]) and np.isfinite(again["stress_mae"])
