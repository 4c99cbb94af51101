"""SAMO-COBRA with inexpensive objectives and constraints (IOC-SAMO-COBRA): exact values instead of surrogates."""

import numpy as np
import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from qallegro.hpo.samo_cobra import SamoCobraSampler

optuna.logging.set_verbosity(optuna.logging.WARNING)

NOTCH, RADIUS = np.array([0.7, 0.7]), 0.08


def in_notch(params):
    return np.hypot(params["x"] - NOTCH[0], params["y"] - NOTCH[1]) < RADIUS


def cheap_f1(params):
    """1 - x + y, except in a small disk where it drops to -5: a notch no surrogate can know of unseen."""
    return -5.0 if in_notch(params) else 1.0 - params["x"] + params["y"]


def notch_objective(trial):
    p = {"x": trial.suggest_float("x", 0.0, 1.0), "y": trial.suggest_float("y", 0.0, 1.0)}
    return p["x"], cheap_f1(p)


@pytest.mark.parametrize("cheap", [True, False])
def test_cheap_objective_value_drives_the_infill(cheap):
    space = {"x": FloatDistribution(0.0, 1.0), "y": FloatDistribution(0.0, 1.0)}
    sampler = SamoCobraSampler(space, n_initial=5, distance_requirements=(0.0,), seed=0,
                               cheap_objectives={1: cheap_f1} if cheap else None)
    study = optuna.create_study(directions=["minimize", "minimize"], sampler=sampler)
    study.optimize(notch_objective, n_trials=6)
    assert not any(in_notch(t.params) for t in study.trials[:5])  # the design never saw the notch
    # The notch point dominates everything with x >= 0.62: the best hypervolume gain there is. Only the exact
    # cheap objective reveals it; the surrogate of f1, fitted on the design, predicts 1 - x + y there.
    assert in_notch(study.trials[5].params) == cheap


def inference_ms(params):
    """A stand-in for measured inference time: grows with depth and width, not with the learning rate."""
    return 0.25 * params["layers"] * params["width"] / 16.0


CEILING_MS = 1.0


def architecture_objective(trial):
    p = {"lr": trial.suggest_float("lr", 1e-4, 1e-1, log=True), "layers": trial.suggest_int("layers", 1, 4),
         "width": trial.suggest_categorical("width", [8, 16, 32, 64])}
    trial.set_constraint("ceiling", inference_ms(p) - CEILING_MS)  # so that study.best_trials respects it too
    error = (np.log10(p["lr"]) + 2.5) ** 2 + 4.0 / (p["layers"] * p["width"])  # bigger models are more accurate
    return error, inference_ms(p)


def architecture_study(cheap, n_trials=14):
    space = {"lr": FloatDistribution(1e-4, 1e-1, log=True), "layers": IntDistribution(1, 4),
             "width": CategoricalDistribution([8, 16, 32, 64])}
    calls = []

    def counted(params):
        calls.append(dict(params))
        return inference_ms(params)

    kwargs = {"cheap_objectives": {1: counted},
              "cheap_constraints": {"ceiling": lambda p: counted(p) - CEILING_MS}} if cheap else {}
    study = optuna.create_study(directions=["minimize", "minimize"], sampler=SamoCobraSampler(space, seed=3, **kwargs))
    study.optimize(architecture_objective, n_trials=n_trials)
    return study, calls


def test_cheap_constraint_is_never_violated_and_modelled_one_is():
    study, calls = architecture_study(cheap=True)
    assert calls and all(set(c) == {"lr", "layers", "width"} for c in calls)
    assert all(isinstance(c["layers"], int) and c["width"] in (8, 16, 32, 64) for c in calls)
    # Every trial, the initial design included, is within the ceiling.
    assert all(inference_ms(t.params) <= CEILING_MS for t in study.trials)
    assert {t.params["width"] for t in study.trials} >= {16, 32}  # and the search still spreads over it
    # The surrogate-only sampler sees the ceiling only as a modelled trial constraint: it proposes violations.
    control, _ = architecture_study(cheap=False)
    assert any(inference_ms(t.params) > CEILING_MS for t in control.trials)


def test_cheap_constraint_keeps_the_front_search_going():
    space = {"x": FloatDistribution(0.0, 1.0), "y": FloatDistribution(0.0, 1.0)}

    def objective(trial):
        x, y = trial.suggest_float("x", 0, 1), trial.suggest_float("y", 0, 1)
        return x + y, (1.0 - x) ** 2 + 2.0 * y  # unconstrained front on y = 0

    floor = {"floor": lambda p: 0.3 - p["y"]}  # feasible for y >= 0.3: the front moves to y = 0.3
    study = optuna.create_study(directions=["minimize", "minimize"],
                                sampler=SamoCobraSampler(space, seed=1, cheap_constraints=floor))
    study.optimize(objective, n_trials=16)
    ys = np.array([t.params["y"] for t in study.trials])
    assert np.all(ys >= 0.3)
    assert np.sum(ys < 0.33) >= 4  # the infill hugs the constraint, where the feasible front is
    xs = [t.params["x"] for t in study.trials if t.params["y"] < 0.33]
    assert np.ptp(xs) > 0.4


def test_same_seed_same_trials_with_cheap_objectives():
    a, _ = architecture_study(cheap=True, n_trials=8)
    b, _ = architecture_study(cheap=True, n_trials=8)
    assert [t.params for t in a.trials] == [t.params for t in b.trials]


def test_cheap_arguments_are_checked():
    space = {"x": FloatDistribution(0.0, 1.0), "y": FloatDistribution(0.0, 1.0)}
    with pytest.raises(ValueError, match="index must be >= 0"):
        SamoCobraSampler(space, cheap_objectives={-1: cheap_f1})
    with pytest.raises(TypeError, match="cheap constraint 'ceiling' is not callable"):
        SamoCobraSampler(space, cheap_constraints={"ceiling": 1.0})
    study = optuna.create_study(directions=["minimize", "minimize"],
                                sampler=SamoCobraSampler(space, cheap_objectives={2: cheap_f1}))
    with pytest.raises(ValueError, match="index 2 is out of range for a study with 2 objectives"):
        study.optimize(notch_objective, n_trials=1)


def test_unsatisfiable_cheap_constraint_warns():
    space = {"x": FloatDistribution(0.0, 1.0), "y": FloatDistribution(0.0, 1.0)}
    sampler = SamoCobraSampler(space, seed=0, cheap_constraints={"never": lambda p: 1.0 + p["x"]})
    study = optuna.create_study(directions=["minimize", "minimize"], sampler=sampler)
    with pytest.warns(UserWarning, match="least violating"):
        study.optimize(notch_objective, n_trials=1)
    assert study.trials[0].params["x"] < 0.05  # the least violating point of the design's pool


def test_cheap_budget_bounds_the_calls_per_proposal():
    """With cheap_budget=k (functions that cost seconds, e.g. timing a compiled model) each proposal values at most
    k new configurations, every proposal is one of them or known before, and the ceiling still holds exactly."""
    space = {"lr": FloatDistribution(1e-4, 1e-1, log=True), "layers": IntDistribution(1, 4),
             "width": CategoricalDistribution([8, 16, 32, 64])}
    seen = set()

    def timed(params):
        seen.add(tuple(sorted(params.items())))
        return inference_ms(params)

    sampler = SamoCobraSampler(space, seed=3, cheap_budget=6, cheap_objectives={1: timed},
                               cheap_constraints={"ceiling": lambda p: timed(p) - CEILING_MS})
    study = optuna.create_study(directions=["minimize", "minimize"], sampler=sampler)
    new_per_trial = []
    for _ in range(12):
        before = len(seen)
        study.optimize(architecture_objective, n_trials=1)
        new_per_trial.append(len(seen) - before)
        assert tuple(sorted(study.trials[-1].params.items())) in seen  # valued exactly before it was proposed
    assert all(inference_ms(t.params) <= CEILING_MS for t in study.trials)
    assert max(new_per_trial[5:]) <= 6  # model-based proposals (after the design and one random point)
    assert sum(new_per_trial[5:]) >= 6  # and the budget is used
    with pytest.raises(ValueError, match="cheap_budget"):
        SamoCobraSampler(space, cheap_budget=0)


def test_resumed_study_with_a_fresh_cheap_cache_goes_on():
    """A study resumed in a new process gets a new sampler whose cache of exact values is empty: its first
    model-based proposal must still work (it failed with a reshape error, every infill trial of a resumed search)."""
    space = {"lr": FloatDistribution(1e-4, 1e-1, log=True), "layers": IntDistribution(1, 4),
             "width": CategoricalDistribution([8, 16, 32, 64])}

    def sampler():
        return SamoCobraSampler(space, seed=3, cheap_budget=2, cheap_objectives={1: inference_ms})

    study = optuna.create_study(directions=["minimize", "minimize"], sampler=sampler())
    study.optimize(architecture_objective, n_trials=4)  # the initial design (d + 1 points)
    study.sampler = sampler()  # the resumed process
    study.optimize(architecture_objective, n_trials=2)
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * 6


def test_span_rbf_fits_nodes_that_do_not_span_the_box_and_equals_scipy_when_they_do():
    """The aspirin search of the study failed at its 12th trial: the exactly timed configurations varied in only
    3 of the 5 parameters, and scipy's linear-tailed RBF refused them (LinAlgError, monomial matrix of rank 4/6)."""
    from scipy.interpolate import RBFInterpolator

    from qallegro.hpo.samo_cobra import SpanRBF

    rng = np.random.default_rng(0)
    X = rng.uniform(size=(9, 5))
    X[:, 3] = 0.25  # a parameter no node varies
    X[:, 4] = 0.5 * X[:, 0] + 0.1  # one that varies in step with another
    z = np.sin(3 * X[:, 0]) + X[:, 1] * X[:, 2]
    with pytest.raises(np.linalg.LinAlgError):
        RBFInterpolator(X, z, kernel="cubic", degree=1)
    model = SpanRBF(X, z, "cubic")
    np.testing.assert_allclose(model(X), z, atol=1e-9)  # interpolates its nodes
    Q = rng.uniform(size=(4, 5))
    moved = Q.copy()
    moved[:, 3] = rng.uniform(size=4)  # along an unexplored direction: no change
    np.testing.assert_allclose(model(moved), model(Q), atol=1e-12)
    assert np.all(np.isfinite(model(Q)))

    full = rng.uniform(size=(12, 3))
    y = np.cos(2 * full).sum(axis=1)
    np.testing.assert_allclose(SpanRBF(full, y, "cubic")(Q[:, :3]),
                               RBFInterpolator(full, y, kernel="cubic", degree=1)(Q[:, :3]), atol=1e-8)
    np.testing.assert_allclose(SpanRBF(full[:1], y[:1], "cubic")(Q[:, :3]), np.full(4, y[0]))  # one node
