"""The compute a plan needs, from measured costs written in the plan (its ``cost`` section).

For a dataset d and family f, with ``t_d`` the measured seconds per training epoch of the plan's base model on
d's subset, ``k_f`` the family's cost factor, ``o_d`` the fixed seconds per run (data preparation, compilation,
evaluation), ``s`` the average cost of a searched configuration relative to the base model and ``c`` that of a
selected (most accurate, so usually larger) configuration::

    search(d, f)  = n_trials · (trial_epochs_d · t_d · k_f · s + o_d) + timings · timing_seconds
    timings       = n_initial + cheap_budget · (n_trials - n_initial)   (an upper bound: cached repeats are free;
                                                                        n_initial = parameters + 1 by default)
    final(d, f)   = seeds · (epochs_d · t_d · k_f · c + o_d + o_eval_d)    (o_eval_d: the per-frame test evaluation)

The total is the sum over the plan's searches, compare runs and transfer runs.
"""

from __future__ import annotations

from typing import Any, Dict, List

from qallegro.hpo.search import load_space
from qallegro.study.plan import PlanError, StudyPlan
from qallegro.study.stages import final_units


def _cost(plan: StudyPlan, key: str, dataset: str = None, default=None):
    section = plan.cost.get(key, default)
    if dataset is None:
        return section
    if isinstance(section, dict):
        if dataset not in section:
            raise PlanError(f"{plan.path}: cost.{key} has no value for {dataset!r}")
        return float(section[dataset])
    if section is None:
        raise PlanError(f"{plan.path}: cost.{key} is missing")
    return float(section)


def estimate(plan: StudyPlan) -> Dict[str, Any]:
    """Hours of each stage and in total (see the module docstring), with one line of arithmetic per item.

    Returns:
        {"hpo_hours", "compare_hours", "transfer_hours", "total_hours", "lines": [str, ...]}.

    Raises:
        PlanError: the plan's cost section lacks a value it needs (named).
    """
    factor = _cost(plan, "family_factor", default={}) or {}
    s = float(_cost(plan, "search_factor", default=1.0))
    c = float(_cost(plan, "final_factor", default=1.0))
    timing = float(_cost(plan, "timing_seconds", default=20.0))
    h = plan.hpo
    lines: List[str] = []
    hours = {"hpo": 0.0, "compare": 0.0, "transfer": 0.0}
    for dataset, family in h.pairs():
        t, o = _cost(plan, "seconds_per_epoch", dataset), _cost(plan, "run_overhead_seconds", dataset)
        k = float(factor.get(family, 1.0))
        n_init = h.n_initial or len(load_space(h.spaces[family])) + 1
        n = h.n_trials[family]
        timings = n_init + (h.cheap_budget or 1) * max(n - n_init, 0)
        seconds = n * (h.trial_epochs[dataset] * t * k * s + o) + timings * timing
        hours["hpo"] += seconds / 3600
        lines.append(f"hpo {dataset} {family}: {n} × ({h.trial_epochs[dataset]} × {t:g} s × {k:g} × {s:g} "
                     f"+ {o:g} s) + {timings} × {timing:g} s = {seconds / 3600:.2f} h")
    for stage in ("compare", "transfer"):
        order = list(plan.datasets)
        pairs = sorted({(d, f) for d, f, _, _ in final_units(plan, stage)}, key=lambda p: (order.index(p[0]), p[1]))
        for dataset, family in pairs:
            t, o = _cost(plan, "seconds_per_epoch", dataset), _cost(plan, "run_overhead_seconds", dataset)
            e = _cost(plan, "evaluation_seconds", dataset) if plan.cost.get("evaluation_seconds") else 0.0
            k = float(factor.get(family, 1.0))
            epochs = plan.compare.epochs[dataset]
            seconds = plan.compare.seeds * (epochs * t * k * c + o + e)
            hours[stage] += seconds / 3600
            lines.append(f"{stage} {dataset} {family}: {plan.compare.seeds} × ({epochs} × {t:g} s × {k:g} × {c:g} "
                         f"+ {o:g} s + {e:g} s) = {seconds / 3600:.2f} h")
    total = sum(hours.values())
    lines.append(f"total: hpo {hours['hpo']:.1f} h + compare {hours['compare']:.1f} h + transfer "
                 f"{hours['transfer']:.1f} h = {total:.1f} h")
    return {"hpo_hours": hours["hpo"], "compare_hours": hours["compare"], "transfer_hours": hours["transfer"],
            "total_hours": total, "lines": lines}


def measure_epoch_cost(cfg: Dict[str, Any], seed: int = 0, steps: int = 10) -> Dict[str, Any]:
    """Measured cost of one training epoch of a run config: wall and CPU seconds (all threads of the process, so
    the CPU time does not depend on what else loads the machine) of data preparation, the first training step
    (compilation), a training step, and a validation pass.

    Args:
        cfg: a resolved run config (`qallegro.study.plan.DatasetPlan.run_config`, family set).
        seed: split and initialisation seed.
        steps: training steps timed after the first.

    Returns:
        {"prepare", "compile", "step", "validation", "epoch": {"wall_s", "cpu_s"}, "batches_per_epoch",
        "n_train", "n_val", "load_average" (1-minute, at the end)}; epoch = batches · step + validation.

    Raises:
        ValueError, FileNotFoundError: as `qallegro.train.run.run_training`.
    """
    import os
    import time

    import jax
    import jax.numpy as jnp

    from qallegro.data.loader import GraphLoader, make_loader
    from qallegro.train.config import DatasetConfig, TrainConfig
    from qallegro.train.evaluation import evaluate
    from qallegro.train.run import load_splits
    from qallegro.train.setup import prepare
    from qallegro.train.step import init_train_state, make_steps

    def clock():
        return time.perf_counter(), time.process_time()

    def since(start):
        now = clock()
        return {"wall_s": now[0] - start[0], "cpu_s": now[1] - start[1]}

    start = clock()
    tcfg = TrainConfig.from_dict({**cfg.get("training", {}), "seed": seed})
    train, val, _ = load_splits(DatasetConfig.from_dict(cfg["dataset"]), seed)
    prepared = prepare(train, cfg["model"], seed=seed, dtype=jnp.float32)
    loader = GraphLoader(prepared.train_graphs, tcfg.batch_size, shuffle=True, seed=seed)
    val_loader = make_loader(val, prepared.model_config["r_max"], prepared.species, tcfg.eval_batch_size)
    compute_stress = any(s.stress is not None for s in train)
    optimizer, train_step, eval_step = make_steps(prepared.model, tcfg, compute_stress)
    state = init_train_state(prepared.params, optimizer)
    prepare_cost = since(start)
    batches = list(loader.batches(0))
    start = clock()
    state, loss = train_step(state, batches[0])
    jax.block_until_ready(loss)
    compile_cost = since(start)
    start = clock()
    for k in range(steps):
        state, loss = train_step(state, batches[(k + 1) % len(batches)])
    jax.block_until_ready(loss)
    step = {k: v / steps for k, v in since(start).items()}
    evaluate(eval_step, state.ema_params, val_loader, tcfg)  # compiles
    start = clock()
    evaluate(eval_step, state.ema_params, val_loader, tcfg)
    validation = since(start)
    n = loader.num_batches(0)
    epoch = {k: n * step[k] + validation[k] for k in ("wall_s", "cpu_s")}
    return {"prepare": prepare_cost, "compile": compile_cost, "step": step, "validation": validation, "epoch": epoch,
            "batches_per_epoch": n, "n_train": len(train), "n_val": len(val), "load_average": os.getloadavg()[0]}
