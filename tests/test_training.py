"""Training lowers the loss, and a run stopped half way and resumed ends bit-for-bit where an uninterrupted
run ends (epoch boundary and mid-epoch)."""

import os

import jax
import numpy as np

from qallegro.data.graphs import structure_to_graph
from qallegro.data.loader import GraphLoader
from qallegro.data.readers import read_rmd17_npz
from qallegro.potential.graph import energy_forces_stress
from qallegro.train.config import TrainConfig
from qallegro.train.loop import fit
from qallegro.train.loss import error_sums, loss_predictions, weighted_loss
from qallegro.train.setup import prepare
from qallegro.train.step import init_train_state, make_steps

ASPIRIN = os.path.join(os.path.dirname(__file__), "..", "experiments", "data", "rmd17_aspirin_train_01.npz")
MODEL = dict(family="allegro", r_max=4.0, l_max=1, num_layers=1, num_tensor_features=4, two_body_mlp=[8, 16],
             latent_mlp=[16], readout_mlp=[8])


def setup(n_train=10, n_val=4):
    structures = read_rmd17_npz(ASPIRIN, max_frames=n_train + n_val)
    prepared = prepare(structures[:n_train], MODEL, seed=0)
    val = [structure_to_graph(s, MODEL["r_max"], prepared.species) for s in structures[n_train:]]
    return prepared, GraphLoader(prepared.train_graphs, 5, shuffle=True, seed=1), GraphLoader(val, 4, shuffle=False)


def test_few_steps_lower_the_loss():
    prepared, train_loader, _ = setup()
    cfg = TrainConfig(learning_rate=2e-2, batch_size=5)
    optimizer, train_step, _ = make_steps(prepared.model, cfg, compute_stress=False)
    state = init_train_state(prepared.params, optimizer)
    batch = next(train_loader.batches(0))
    losses = []
    for _ in range(20):
        state, loss = train_step(state, batch)
        losses.append(float(loss))
    assert losses[-1] < 0.8 * losses[0], losses


def test_energy_only_loss_leaves_out_the_forces_but_not_their_gradient():
    """With forces weight 0 (QM9) the loss uses energies alone, so the parameter gradient needs no second
    derivative; it must equal the gradient through the full energy+forces prediction."""
    prepared, train_loader, _ = setup()
    batch = next(train_loader.batches(0))
    model = prepared.model
    # The readout starts at zero (zero forces): perturb every parameter so that every path is non-trivial.
    leaves, tree = jax.tree.flatten(prepared.params)
    keys = jax.random.split(jax.random.PRNGKey(0), len(leaves))
    params = jax.tree.unflatten(tree, [x + 0.1 * jax.random.normal(k, x.shape, x.dtype) for x, k in zip(leaves, keys)])

    def grad_through(predict):
        return jax.jit(jax.grad(lambda p, g: weighted_loss(error_sums(predict(p, g), g), 1.0, 0.0)))(params, batch)

    full = grad_through(lambda p, g: energy_forces_stress(model, p, g, compute_stress=False))
    lean = grad_through(lambda p, g: loss_predictions(model, p, g, 0.0, 0.0, compute_stress=False))
    for a, b in zip(jax.tree.leaves(full), jax.tree.leaves(lean)):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-4, atol=1e-7)
    lean_pred = jax.jit(lambda p, g: loss_predictions(model, p, g, 0.0, 0.0, compute_stress=False))(params, batch)
    assert not np.any(np.asarray(lean_pred["forces"]))  # not computed
    with_forces = jax.jit(lambda p, g: loss_predictions(model, p, g, 1.0, 0.0, compute_stress=False))(params, batch)
    reference = jax.jit(lambda p, g: energy_forces_stress(model, p, g, compute_stress=False))(params, batch)
    np.testing.assert_allclose(np.asarray(with_forces["forces"]), np.asarray(reference["forces"]), rtol=1e-6)
    assert np.any(np.asarray(with_forces["forces"]))


def _params_equal(a, b):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_resume_is_exact(tmp_path, jax_compilation_cache):
    # jax_compilation_cache: every fit builds new jitted steps; the later fits load the first one's programs
    prepared, train_loader, val_loader = setup()
    cfg = TrainConfig(learning_rate=5e-3, batch_size=5, max_epochs=3, plateau_patience=1, seed=1)

    def quiet(msg):
        return None

    full = fit(prepared.model, prepared.params, train_loader, val_loader, cfg, str(tmp_path / "full"), log=quiet)

    # stopped at an epoch boundary, then resumed
    half = TrainConfig(**dict(cfg.__dict__, max_epochs=1))
    fit(prepared.model, prepared.params, train_loader, val_loader, half, str(tmp_path / "a"), log=quiet)
    a = fit(prepared.model, prepared.params, train_loader, val_loader, cfg, str(tmp_path / "a"), resume=True,
            log=quiet)
    _params_equal(a.last_state, full.last_state)
    _params_equal(a.best_params, full.best_params)
    np.testing.assert_array_equal([float(r["val_loss"]) for r in a.history],
                                  [float(r["val_loss"]) for r in full.history])

    # stopped in the middle of an epoch by the time budget (0 minutes: after the first batch), then resumed
    cut = TrainConfig(**dict(cfg.__dict__, max_minutes=0.0))
    stopped = fit(prepared.model, prepared.params, train_loader, val_loader, cut, str(tmp_path / "b"), log=quiet)
    assert int(stopped.last_state.step) == 1
    b = fit(prepared.model, prepared.params, train_loader, val_loader, cfg, str(tmp_path / "b"), resume=True,
            log=quiet)
    _params_equal(b.last_state, full.last_state)
    assert len(b.history) == 3


def test_batch_loss_is_the_structure_by_structure_weighted_mean(x64):
    """The loss of a padded batch of structures of different sizes (some without force labels) equals the
    weighted mean accumulated structure by structure: batch composition and padding change nothing."""
    from allegro_helpers import random_molecule, small_model

    from qallegro.data.structure import make_structure

    rng = np.random.default_rng(3)
    structures = []
    for k, n in enumerate((3, 7, 5, 9, 4)):
        m = random_molecule(rng, n)
        forces = None if k == 2 else rng.normal(size=(n, 3))
        structures.append(make_structure(m.Z, m.positions, energy=float(rng.normal() - 3 * n), forces=forces))
    species = [1, 6, 8]
    model, params = small_model(species)
    graphs = [structure_to_graph(s, model.r_max, species) for s in structures]
    step = jax.jit(lambda p, g: energy_forces_stress(model, p, g, compute_stress=False))

    def sums_and_energies(loader):
        total, energies = {}, []
        for idx, batch in zip(loader.plan(0), loader.batches(0)):
            pred = step(params, batch)
            energies += np.asarray(pred["energy"])[:len(idx)].tolist()
            for key, value in error_sums(pred, batch).items():
                total[key] = total.get(key, 0.0) + float(value)
        return total, energies

    together = GraphLoader(graphs, batch_size=5, shuffle=False)
    one_batch, _ = sums_and_energies(together)
    # one structure per batch, padded to the same shape (one compilation): mostly padding
    one_by_one, energies = sums_and_energies(GraphLoader(graphs, batch_size=1, shuffle=False, budget=together.budget))
    assert one_batch.keys() == one_by_one.keys()
    for key in one_batch:
        np.testing.assert_allclose(one_batch[key], one_by_one[key], rtol=1e-12, atol=1e-12, err_msg=key)
    assert one_batch["n_energy"] == 5 and one_batch["n_forces"] == 3 * (3 + 7 + 9 + 4)
    e_terms = [((e - s.energy) / s.n_atoms) ** 2 for e, s in zip(energies, structures)]
    np.testing.assert_allclose(one_batch["energy_per_atom_sq"], sum(e_terms), rtol=1e-10)
    assert np.isfinite(float(weighted_loss(one_batch, 1.0, 1000.0)))
