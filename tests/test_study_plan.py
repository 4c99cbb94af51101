"""The study plan (typed, validated), its compute estimate, the convergence criterion, the selection rule, the
bootstrap and the exact inference-time cache: fast unit tests, no training."""

import json
import os

import numpy as np
import pytest
import yaml
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial

from qallegro.hpo.objective import InferenceTimer
from qallegro.study import load_plan
from qallegro.study.claims import INCONCLUSIVE, NOT_SUPPORTED, SUPPORTED, verdict
from qallegro.study.convergence import check, gap_along_curve
from qallegro.study.cost import estimate
from qallegro.study.plan import ConvergenceCriterion, PlanError, SelectionRule
from qallegro.study.select import SelectionError, select_trial
from qallegro.study.speed import speed_ratio
from qallegro.study.statistics import bootstrap_difference, bootstrap_mean
from qallegro.study.workflow import expand_stages

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STUDY = os.path.join(ROOT, "experiments", "configs", "study")


@pytest.mark.parametrize("profile", ["cpu", "paper"])
def test_plans_load_with_the_issues_design(profile):
    plan = load_plan(os.path.join(STUDY, f"{profile}.yaml"))
    assert list(plan.datasets) == ["qm9", "rmd17-aspirin", "rmd17-benzene", "culi"]
    assert plan.hpo.studies["allegro"] == plan.hpo.studies["allegro-mlp"] == tuple(plan.datasets)
    assert plan.hpo.studies["allegro-qdi"] == ("culi",)
    assert plan.transfer.family == "allegro-qdi" and plan.transfer.source == "culi"
    assert set(plan.transfer.targets) == {"qm9", "rmd17-aspirin", "rmd17-benzene"}
    assert plan.compare.seeds >= 3 and plan.datasets["qm9"].error_metric == "energy_mae"
    assert plan.compare_families("culi") == ("allegro", "allegro-mlp", "allegro-qdi")
    for dataset in plan.datasets.values():
        cfg = dataset.run_config()
        assert os.path.isabs(cfg["dataset"]["train"]) and cfg["model"]["r_max"] > 0


def test_cpu_plan_fits_twelve_hours():
    result = estimate(load_plan(os.path.join(STUDY, "cpu.yaml")))
    assert result["total_hours"] <= 12.0, result["lines"]
    assert result["lines"][-1].startswith("total:")


def write_plan(tmp_path, **changes):
    raw = yaml.safe_load(open(os.path.join(STUDY, "cpu.yaml")))
    for dotted, value in changes.items():
        section, key = dotted.split("__")
        raw[section][key] = value
    raw["datasets"] = {k: dict(v, config=os.path.join(STUDY, v["config"])) for k, v in raw["datasets"].items()}
    raw["hpo"]["spaces"] = {k: os.path.join(STUDY, v) for k, v in raw["hpo"]["spaces"].items()}
    path = tmp_path / "plan.yaml"
    path.write_text(yaml.safe_dump(raw))
    return str(path)


@pytest.mark.parametrize("changes, message", [
    ({"compare__seeds": 2}, "seeds must be >= 3"),
    ({"hpo__studies": {"allegro": ["qm9"], "allegro-big": ["qm9"]}}, "unknown family 'allegro-big'"),
    ({"hpo__studies": {"allegro-mlp": ["qm9"]}}, "must search 'allegro'"),
    ({"hpo__studies": {"allegro": ["qm10"]}}, "unknown dataset"),
    ({"transfer__source": "qm9"}, "no search on source dataset 'qm9'"),
    ({"compare__epochs": {"qm9": 5}}, "compare.epochs: no value for"),
    ({"hpo__n_trials": 0}, "n_trials must be >= 1"),
    ({"hpo__n_trial": 5}, "unknown hpo option"),
])
def test_bad_plans_are_refused_by_name(tmp_path, changes, message):
    with pytest.raises(PlanError, match=message):
        load_plan(write_plan(tmp_path, **changes))


def test_restricted_plan_keeps_the_transfer_source():
    plan = load_plan(os.path.join(STUDY, "cpu.yaml")).restricted(["rmd17-benzene"])
    assert list(plan.datasets) == ["rmd17-benzene"]
    assert plan.hpo.pairs() == [("rmd17-benzene", "allegro"), ("rmd17-benzene", "allegro-mlp")]
    assert plan.transfer.source == "culi" and plan.transfer.targets == ("rmd17-benzene",)
    with pytest.raises(PlanError, match="no dataset"):
        plan.restricted(["qm10"])


def test_stages_expand_in_study_order():
    assert expand_stages(["all"]) == ["hpo", "compare", "transfer", "shots", "report"]
    assert expand_stages(["report", "hpo"]) == ["hpo", "report"]
    with pytest.raises(ValueError, match="unknown stage"):
        expand_stages(["train"])


def history(values, rates):
    return [{"epoch": k + 1, "learning_rate": r, "val_forces_mae": v} for k, (v, r) in enumerate(zip(values, rates))]


def test_convergence_criterion():
    crit = ConvergenceCriterion(window_fraction=0.2, tolerance=0.02, require_lr_reduced=True)
    flat = [100.0 / (k + 1) for k in range(8)] + [12.6, 12.55]  # the last 2 epochs do not beat 12.5
    done = check(history(flat, [1e-3] * 5 + [5e-4] * 5), "val_forces_mae", crit)
    assert done["met"] and done["window_epochs"] == 2 and done["relative_improvement"] == 0.0
    steep = [100.0 / (k + 1) for k in range(10)]
    out = check(history(steep, [1e-3] * 5 + [5e-4] * 5), "val_forces_mae", crit)
    assert not out["met"] and "improved by" in out["reason"] and out["relative_improvement"] > 0.1
    out = check(history(flat, [1e-3] * 10), "val_forces_mae", crit)
    assert not out["met"] and out["reason"] == "the learning rate was never reduced"
    assert check(history(flat, [1e-3] * 10), "val_forces_mae",
                 ConvergenceCriterion(require_lr_reduced=False))["met"]
    assert not check(history([1.0], [1e-3]), "val_forces_mae", crit)["met"]


def trial(number, error, ms):
    return create_trial(state=TrialState.COMPLETE, values=[error, ms], params={"x": float(number)},
                        distributions={"x": FloatDistribution(0.0, 100.0)}, user_attrs={}, system_attrs={})


def test_gap_along_curve_uses_the_best_so_far_mean_over_seeds():
    def run(values):
        return {"history": [{"val_forces_mae": v} for v in values]}

    a = [run([10, 8, 9, 6]), run([12, 10, 8, 8])]  # best so far: [10, 8, 8, 6] and [12, 10, 8, 8]
    b = [run([10, 9, 7, 7])]
    g = gap_along_curve(a, b, "val_forces_mae")
    assert g["epochs"] == [2, 3, 4]
    np.testing.assert_allclose(g["gap"], [9.0 - 9.0, 8.0 - 7.0, 7.0 - 7.0])
    np.testing.assert_allclose(g["relative"], [0.0, 1 / 7, 0.0])
    assert gap_along_curve(a, [run([1, 2])], "val_forces_mae")["gap"] == []  # different lengths: no gap
    assert gap_along_curve([], b, "val_forces_mae")["gap"] == []


def test_selection_rule_lowest_error_on_the_front():
    trials = [trial(0, 10.0, 1.0), trial(1, 8.0, 3.0), trial(2, 8.0, 2.0), trial(3, 12.0, 0.5)]
    for i, t in enumerate(trials):
        t.number = i
    assert select_trial(trials, SelectionRule()).number == 2  # tie on error: the faster one
    assert select_trial(trials, SelectionRule(max_inference_ms=1.5)).number == 0
    with pytest.raises(SelectionError, match="within 0.1 ms"):
        select_trial(trials, SelectionRule(max_inference_ms=0.1))
    with pytest.raises(SelectionError, match="no completed trial"):
        select_trial([], SelectionRule())


def fake_run(seed, per_frame, fingerprint="same"):
    per_frame = np.asarray(per_frame, float)
    return {"seed": seed, "test_frames": {"energy_abs_error": per_frame.tolist(),
                                          "forces_abs_sum": (3 * per_frame).tolist(),
                                          "forces_count": [3] * len(per_frame), "fingerprint": fingerprint}}


def test_bootstrap_difference_and_verdict():
    rng = np.random.default_rng(0)
    base = [fake_run(s, 10 + rng.random(50)) for s in range(3)]
    better = [fake_run(s, np.asarray(r["test_frames"]["energy_abs_error"]) - 1.0) for s, r in enumerate(base)]
    same = bootstrap_difference(base, base, "forces_mae")
    assert same["estimate"] == 0.0 and same["low"] == same["high"] == 0.0 and same["paired"]
    d = bootstrap_difference(better, base, "forces_mae")
    assert d["estimate"] == pytest.approx(-1.0) and d["high"] < 0 and d["seeds"] == [0, 1, 2]
    assert verdict(d["low"], d["high"], lower=True) == SUPPORTED
    assert verdict(d["low"], d["high"], lower=False) == NOT_SUPPORTED
    assert verdict(-1.0, 1.0, lower=True) == INCONCLUSIVE
    rel = bootstrap_difference(better, base, "energy_mae", relative=True)
    assert -0.11 < rel["estimate"] < -0.08
    unpaired = bootstrap_difference([fake_run(0, [1.0, 2.0], "a")], [fake_run(0, [1.0, 2.0], "b")], "forces_mae")
    assert not unpaired["paired"] and unpaired["low"] < 0 < unpaired["high"]
    m = bootstrap_mean(base, "forces_mae")
    assert m["low"] < m["estimate"] < m["high"]
    with pytest.raises(ValueError, match="no common seeds"):
        bootstrap_difference(base[:1], base[1:], "forces_mae")


def test_speed_ratio_from_interleaved_rounds():
    rounds = np.linspace(1.0, 2.0, 10)[:, None] * np.ones((10, 5))  # the load drifts over the rounds
    speed = {"ms_per_structure": {"a": (1.5 * rounds).tolist(), "b": rounds.tolist()}}
    r = speed_ratio(speed, "a", "b")
    assert r["estimate"] == pytest.approx(1.5) and r["low"] == pytest.approx(1.5) and r["high"] == pytest.approx(1.5)


def test_inference_timer_caches_per_architecture(tmp_path):
    base = {"dataset": {"train": "x"}, "dtype": "float32",
            "model": {"family": "allegro", "r_max": 4.0, "l_max": 1}, "training": {"learning_rate": 1e-3}}
    cache = tmp_path / "timing.json"
    timer = InferenceTimer(base, ["structure"] * 3, cache_path=str(cache))
    a = {"model.r_max": 4.5, "training.learning_rate": 2e-3}
    assert timer.key(a) == timer.key({"model.r_max": 4.5, "training.learning_rate": 5e-3})  # training: no effect
    assert timer.key(a) != timer.key({"model.r_max": 5.0, "training.learning_rate": 2e-3})
    cache.write_text(json.dumps({timer.key(a): {"min_ms_per_structure": 1.25, "median_ms_per_structure": 1.5}}))
    timer = InferenceTimer(base, ["structure"] * 3, cache_path=str(cache))
    assert timer({"model.r_max": 4.5, "training.learning_rate": 9e-3}) == 1.25 and timer.measured == 0
    with pytest.raises(ValueError, match="at least one timing structure"):
        InferenceTimer(base, [])
