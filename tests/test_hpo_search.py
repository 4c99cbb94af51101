"""qallegro.hpo.search: the sampler gets the inference timer as an exact inexpensive objective and the ceiling as
an exact constraint (IOC-SAMO-COBRA), so no proposal is over the ceiling; settings are validated."""

import numpy as np
import optuna
import pytest
from optuna.distributions import FloatDistribution, IntDistribution

from qallegro.hpo.samo_cobra import SamoCobraSampler
from qallegro.hpo.search import SearchSettings, build_sampler

optuna.logging.set_verbosity(optuna.logging.WARNING)
SPACE = {"model.width": IntDistribution(1, 16), "training.learning_rate": FloatDistribution(1e-3, 1e-1, log=True)}


def fake_timer(calls):
    """ms per structure of an 'architecture': depends on the width only, as inference time on the model section."""
    def timer(params):
        calls.append(params["model.width"])
        return 0.1 * params["model.width"]
    return timer


def test_sampler_uses_the_timer_exactly_and_respects_the_ceiling():
    calls = []
    timer = fake_timer(calls)
    settings = SearchSettings(n_trials=14, n_initial=4, cheap_budget=3, inference_ceiling_ms=0.8)
    sampler = build_sampler(SPACE, settings, timer)
    assert isinstance(sampler, SamoCobraSampler)

    def objective(trial):
        width = trial.suggest_int("model.width", 1, 16)
        lr = trial.suggest_float("training.learning_rate", 1e-3, 1e-1, log=True)
        return (np.log10(lr) + 2) ** 2 + 1.0 / width, timer({"model.width": width})

    study = optuna.create_study(directions=["minimize", "minimize"], sampler=sampler)
    study.optimize(objective, n_trials=settings.n_trials)
    widths = [t.params["model.width"] for t in study.trials]
    assert max(widths) <= 8, widths  # 0.1 ms per unit of width: the ceiling of 0.8 ms allows widths <= 8
    assert any(w >= 6 for w in widths)  # and the front reaches towards it (lower error at larger width)


def test_plain_samplers_without_a_timer():
    assert isinstance(build_sampler(SPACE, SearchSettings(sampler="tpe")), optuna.samplers.TPESampler)
    assert isinstance(build_sampler(SPACE, SearchSettings(cheap_inference=False), fake_timer([])), SamoCobraSampler)


@pytest.mark.parametrize("kwargs, message", [
    ({"sampler": "cma"}, "unknown sampler"),
    ({"n_trials": 0}, "n_trials and n_initial must be >= 1"),
    ({"timing_structures": 0}, "timing_structures"),
    ({"inference_ceiling_ms": 0.0}, "inference_ceiling_ms must be > 0"),
])
def test_settings_are_validated(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SearchSettings(**kwargs)


def test_resumed_worker_is_not_stopped_by_earlier_failures():
    """max_failures counts the failures of this worker's run: a search resumed after a fix goes on, a still
    broken one stops after max_failures new failures (it stopped at once, on the failures from before the fix)."""
    from qallegro.hpo.study import run_worker

    study = optuna.create_study()

    def broken(trial):
        trial.suggest_float("x", 0.0, 1.0)
        raise ValueError("a bug")

    with pytest.raises(RuntimeError, match="2 failed trials"):
        run_worker(study, broken, n_trials=3, max_failures=2, log=lambda _: None)
    assert run_worker(study, lambda t: t.suggest_float("x", 0.0, 1.0), n_trials=3, max_failures=2,
                      log=lambda _: None) == 3
    with pytest.raises(RuntimeError, match="2 failed trials"):
        run_worker(study, broken, n_trials=5, max_failures=2, log=lambda _: None)
    assert len(study.trials) == 7
