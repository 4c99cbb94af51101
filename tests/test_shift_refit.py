"""Species shifts that make the logged validation energy meaningful from the first epoch (issue 15).

The shifts fitted before training reproduce the mean training energy; before every validation the shifts are
refitted in closed form on a fixed subset of the training structures, so the validation energy MAE logged after
one short epoch is close to what the same weights give with the refit on all training structures (the final
refit), and far below the number without refit. The refit is an argument of the compiled evaluation step: one
compilation for every correction.
"""

import csv
import os

import jax
import numpy as np
import pytest

from qallegro.data.graphs import structure_to_graph
from qallegro.data.loader import GraphLoader
from qallegro.data.readers import read_rmd17_npz
from qallegro.data.statistics import composition_matrix
from qallegro.train.config import TrainConfig
from qallegro.train.evaluation import evaluate, fit_shift_correction
from qallegro.train.loop import fit
from qallegro.train.setup import prepare
from qallegro.train.step import make_energy_step

ASPIRIN = os.path.join(os.path.dirname(__file__), "..", "experiments", "data", "rmd17_aspirin_train_01.npz")
MODEL = dict(family="allegro", r_max=4.0, l_max=1, num_layers=1, num_tensor_features=4, two_body_mlp=[8, 16],
             latent_mlp=[16], readout_mlp=[8])


@pytest.fixture(scope="module")
def aspirin():
    structures = read_rmd17_npz(ASPIRIN, max_frames=60)
    return structures[:48], structures[48:]


def test_shifts_before_training_reproduce_the_mean_training_energy(aspirin):
    train, _ = aspirin
    with jax.enable_x64(True):
        prepared = prepare(train, MODEL, seed=0)
        counts = composition_matrix(train, prepared.species)
        energies = np.array([s.energy for s in train])
        # the closed form itself: sum_Z n_Z mu_Z is the mean energy (aspirin: one composition)
        assert np.mean(counts @ np.array(prepared.statistics.species_shift)) == pytest.approx(energies.mean(),
                                                                                         abs=1e-8)
        # and the untrained model (zero readout) predicts it, summed in float64
        loader = GraphLoader(prepared.train_graphs, 16, shuffle=False)
        pred = np.concatenate([np.asarray(make_energy_step(prepared.model, TrainConfig())(prepared.params, g))[:-1]
                               for g in loader.batches(0)])
    assert pred.dtype == np.float64
    assert pred.mean() == pytest.approx(energies.mean(), abs=1e-6)


def test_logged_validation_energy_is_the_refitted_one_from_the_first_epoch(aspirin, tmp_path):
    train, val = aspirin
    with jax.enable_x64(True):
        prepared = prepare(train, MODEL, seed=0)
        graphs_val = [structure_to_graph(s, MODEL["r_max"], prepared.species) for s in val]
        train_loader = GraphLoader(prepared.train_graphs, 4, shuffle=True, seed=0)
        val_loader = GraphLoader(graphs_val, 12, shuffle=False)
        # force-dominated, as the profiles: the energy offset is what drifts during an epoch
        cfg = TrainConfig(learning_rate=1e-2, batch_size=4, eval_batch_size=12, max_epochs=1, energy_weight=1.0,
                          forces_weight=1000.0, shift_refit_structures=16, seed=0)
        lines = []
        result = fit(prepared.model, prepared.params, train_loader, val_loader, cfg, str(tmp_path),
                     log=lines.append)
        with open(tmp_path / "metrics.csv") as f:
            logged = float(next(csv.DictReader(f))["val_energy_mae"])
        params, S = result.best_params, prepared.model.num_species

        no_refit = evaluate(result.eval_step, params, val_loader, cfg)["energy_mae"]
        subset = GraphLoader(prepared.train_graphs[:16], 12, shuffle=False, budget=val_loader.budget)
        delta_subset = fit_shift_correction(result.energy_step, params, subset, S)
        every = GraphLoader(prepared.train_graphs, 12, shuffle=False, budget=val_loader.budget)
        delta_all = fit_shift_correction(result.energy_step, params, every, S)
        full_refit = evaluate(result.eval_step, params, val_loader, cfg, shift_correction=delta_all)["energy_mae"]
        again = evaluate(result.eval_step, params, val_loader, cfg, shift_correction=delta_subset)["energy_mae"]

    numbers = dict(logged=logged, subset=again, full_refit=full_refit, no_refit=no_refit)  # meV
    print(numbers)
    assert logged == pytest.approx(again, rel=1e-9), numbers  # the log is the subset refit of training structures
    assert logged < 3.0 * full_refit + 5.0, numbers  # meV: the same kind of number as the final refit
    assert no_refit > 3.0 * logged, numbers  # and not the drifting offset (814 vs 161 meV when written)
    # one training shape, one evaluation shape, and the refits never recompiled the evaluation step
    assert result.compiled_shapes == 2
    assert any("padded batch shapes compiled: 2 (train 1, validation 1)" in line for line in lines)
    assert result.eval_step.compiled._cache_size() == 1
    assert result.energy_step._cache_size() == 1
