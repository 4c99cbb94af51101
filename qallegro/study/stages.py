"""The study's working stages: hpo (the searches), compare (each family's selected configuration over seeds)
and transfer (one family's configuration from its source dataset, unchanged, on the others).

Each stage walks its units of work in plan order and skips what is done (complete searches, committed
results.json files), so re-running a stage resumes it. A unit whose prerequisite is missing (a final run whose
search is not finished) is skipped with a message and listed in the returned status; the other units go on.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Dict, List

from qallegro.study.layout import StudyLayout
from qallegro.study.plan import StudyPlan


def study_name(dataset: str, family: str) -> str:
    """The Optuna study name of a search."""
    return f"{dataset}-{family}"


def run_hpo(plan: StudyPlan, layout: StudyLayout, command: str = "",
            log: Callable[[str], None] = print) -> List[Dict[str, Any]]:
    """Every search of the plan, until each holds its family's `plan.hpo.n_trials` completed trials; then each
    family's configuration is selected (frozen in selected.json). A search that fails (too many failed trials,
    bad data) is reported and the others go on.

    Returns:
        One status dict per search: dataset, family, complete (trial count), selected trial; or error.
    """
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    status = []
    for dataset, family in plan.hpo.pairs():
        try:
            status.append(_search(plan, layout, dataset, family, command, log))
        except Exception as err:  # one failed search does not stop the others
            log(f"hpo {dataset} {family}: FAILED: {type(err).__name__}: {err}")
            status.append({"dataset": dataset, "family": family, "error": f"{type(err).__name__}: {err}"})
    return status


def _search(plan: StudyPlan, layout: StudyLayout, dataset: str, family: str, command: str,
            log: Callable[[str], None]) -> Dict[str, Any]:
    """One search of the plan (see `run_hpo`)."""
    from qallegro.hpo.search import SearchSettings, load_space, run_search
    from qallegro.hpo.study import storage_url
    from qallegro.study.select import select_from_storage

    cfg = plan.datasets[dataset].run_config()
    cfg["model"]["family"] = family
    cfg["training"]["max_epochs"] = plan.hpo.trial_epochs[dataset]
    cfg["training"]["max_minutes"] = None
    settings = SearchSettings(sampler=plan.hpo.sampler, n_trials=plan.hpo.n_trials[family],
                              n_initial=plan.hpo.n_initial,
                              seed=plan.hpo.seed, heartbeat_seconds=plan.hpo.heartbeat_seconds,
                              timing_structures=plan.hpo.timing_structures, cheap_budget=plan.hpo.cheap_budget,
                              inference_ceiling_ms=plan.hpo.inference_ceiling_ms.get(dataset))
    out = layout.hpo_dir(dataset, family)
    log(f"== hpo {dataset} {family}: {plan.hpo.n_trials[family]} trials of {plan.hpo.trial_epochs[dataset]} epochs "
        f"({plan.hpo.sampler}) in {out}")
    summary = run_search(cfg, load_space(plan.hpo.spaces[family]), out, settings,
                         storage=layout.hpo_storage(dataset, family), study_name=study_name(dataset, family),
                         trials_dir=layout.trials_dir(dataset, family),
                         timing_cache=layout.timing_cache(dataset), command=command,
                         user_attrs={"dataset": dataset, "model": family, "plan": os.path.basename(plan.path)},
                         log=log)
    selection = select_from_storage(storage_url(layout.hpo_storage(dataset, family)), study_name(dataset, family),
                                    plan.selection, plan.hpo.n_trials[family],
                                    layout.selection(dataset, family))
    return {"dataset": dataset, "family": family, "complete": len(summary["trials"]),
            "selected_trial": selection and selection["trial"]}


def selection_of(plan: StudyPlan, layout: StudyLayout, dataset: str, family: str):
    """The frozen (or now chosen) selection of a search, or None while it is not finished."""
    from qallegro.hpo.study import storage_url
    from qallegro.study.select import select_from_storage

    return select_from_storage(storage_url(layout.hpo_storage(dataset, family)), study_name(dataset, family),
                               plan.selection, plan.hpo.n_trials[family], layout.selection(dataset, family))


def final_units(plan: StudyPlan, stage: str):
    """(dataset, family, source dataset, seed) of every final run of `stage` ("compare" or "transfer")."""
    units = []
    if stage == "compare":
        for dataset in plan.datasets:
            for family in plan.compare_families(dataset):
                units += [(dataset, family, dataset, s) for s in range(plan.compare.seeds)]
    elif stage == "transfer" and plan.transfer is not None:
        t = plan.transfer
        for dataset in t.targets:
            units += [(dataset, t.family, t.source, s) for s in range(plan.compare.seeds)]
    return units


def run_final(plan: StudyPlan, layout: StudyLayout, stage: str, command: str = "",
              log: Callable[[str], None] = print) -> List[Dict[str, Any]]:
    """Every final run of `stage` ("compare" or "transfer"): skipped when committed, resumed when started,
    skipped with a message when its configuration's search is not finished.

    Returns:
        One status dict per run: dataset, family, seed, state ("done" or "waiting for the search").
    """
    from qallegro.study.runs import final_run

    status = []
    for dataset, family, source, seed in final_units(plan, stage):
        selection = selection_of(plan, layout, source, family)
        if selection is None:
            log(f"{stage} {dataset} {family} seed {seed}: skipped, the search of {family} on {source} is not finished "
                f"(run --stage hpo first)")
            status.append({"dataset": dataset, "family": family, "seed": seed, "state": "waiting for the search"})
            continue
        try:
            final_run(plan, layout, stage, dataset, family, seed, selection, source, command=command, log=log)
        except Exception as err:  # e.g. a NaN loss: recorded, the other runs go on
            log(f"{stage} {dataset} {family} seed {seed}: FAILED: {type(err).__name__}: {err}")
            status.append({"dataset": dataset, "family": family, "seed": seed,
                           "state": f"failed: {type(err).__name__}: {err}"})
            continue
        status.append({"dataset": dataset, "family": family, "seed": seed, "state": "done"})
    run_speed(plan, layout, log=log)
    return status


def run_speed(plan: StudyPlan, layout: StudyLayout, log: Callable[[str], None] = print) -> None:
    """For every dataset without speed.json whose families all have their selected configuration: time them
    together (`qallegro.study.speed.measure_speed`), the numbers behind the speed claims."""
    from qallegro.study.speed import families_on, measure_speed, speed_path

    for dataset in plan.datasets:
        if os.path.exists(speed_path(layout, dataset)):
            continue
        selections = {}
        for family in families_on(plan, dataset):
            source = dataset if family in plan.compare_families(dataset) else plan.transfer.source
            selections[family] = selection_of(plan, layout, source, family)
        if selections and all(selections.values()):
            measure_speed(plan, layout, dataset, selections, log=log)
