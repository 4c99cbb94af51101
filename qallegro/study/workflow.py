"""The study as one resumable command: `run_study(plan, stages, layout)`.

Stages, in order: ``hpo`` (the searches), ``compare`` (each family's selected configuration over seeds),
``transfer`` (the source's configuration on the other datasets), ``shots`` (the finite-shot evaluation, beyond
the paper), ``report`` (paper.md and its figures). ``all`` runs them in that order; ``status`` prints what is
done; ``estimate`` prints the plan's compute estimate; ``measure`` times one training epoch of every
dataset's base model per family (`qallegro.study.cost.measure_epoch_cost`) into RESULTS/cost-measurement.json, the
numbers behind the plan's ``cost`` section. Every stage skips finished work and resumes interrupted
work, so the same command continues a study across sessions and machines (commit the results folder).
"""

from __future__ import annotations

import os
from typing import Callable, Dict, List, Sequence

from qallegro.study.layout import StudyLayout
from qallegro.study.plan import StudyPlan

WORK_STAGES = ("hpo", "compare", "transfer", "shots", "report")
STAGES = WORK_STAGES + ("all", "status", "estimate", "measure")


def expand_stages(stages: Sequence[str]) -> List[str]:
    """Stage names -> the stages to run, in study order ("all" is every working stage).

    Raises:
        ValueError: an unknown stage (lists the known ones).
    """
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        raise ValueError(f"unknown stage(s) {unknown}; known: {list(STAGES)}")
    wanted = set(WORK_STAGES) if "all" in stages else set(stages)
    return [s for s in STAGES if s in wanted and s != "all"]


def study_commands(prefix: str) -> List[str]:
    """The study's command lines, one per working stage, from the command prefix (program and plan options)."""
    return [f"{prefix} --stage {stage}" for stage in WORK_STAGES]


def write_report(plan: StudyPlan, layout: StudyLayout, commands: Sequence[str]) -> str:
    """Draw the figures and write the report file; returns the report's text."""
    from qallegro.study.figures import bars_figure, curves_figure, pareto_figure
    from qallegro.study.report import render
    from qallegro.study.results import family_runs, load_runs, load_search

    os.makedirs(layout.figures, exist_ok=True)
    runs = load_runs(layout)

    def runs_of(d, f):
        return family_runs(runs, d, f)

    figures: Dict[str, str] = {}
    for dataset, d in plan.datasets.items():
        searches = {f: load_search(layout, dataset, f) for f in plan.compare_families(dataset)}
        path = os.path.join(layout.figures, f"pareto-{dataset}.png")
        if pareto_figure(dataset, searches, d.error_metric, path):
            figures[f"{dataset}: every family's search trials and Pareto front (validation error against ms per "
                    f"structure), the selected configurations circled"] = layout.relative(path)
    if "qm9" in plan.datasets:
        path = os.path.join(layout.figures, "curves-qm9.png")
        if curves_figure("qm9", runs_of, plan.datasets["qm9"].error_metric, path):
            figures["QM9: validation energy MAE per epoch of every family (EMA-smoothed; thin: seeds, thick: mean), "
                    "as the paper's Fig. 5"] = layout.relative(path)
    path = os.path.join(layout.figures, "test-errors.png")
    if bars_figure({d: p.error_metric for d, p in plan.datasets.items()}, runs_of, path, plan.bootstrap):
        figures["Test errors per dataset and family, mean over seeds with bootstrap intervals over seeds and "
                "frames"] = layout.relative(path)
    text = render(plan, layout, commands, figures)
    os.makedirs(os.path.dirname(layout.report), exist_ok=True)
    with open(layout.report, "w") as f:
        f.write(text)
    return text


def status_lines(plan: StudyPlan, layout: StudyLayout) -> List[str]:
    """What is done and what is pending, one line per search and per (stage, dataset, family)."""
    from qallegro.study.results import load_runs, load_search
    from qallegro.study.stages import final_units

    lines = []
    for dataset, family in plan.hpo.pairs():
        s = load_search(layout, dataset, family)
        n = len(s["trials"]) if s else _completed_trials(layout.hpo_storage(dataset, family), dataset, family)
        sel = s and s.get("selected")
        lines.append(f"hpo {dataset} {family}: {n}/{plan.hpo.n_trials[family]} trials"
                     + (f", selected trial {sel['trial']}" if sel else "")
                     + ("" if s or not n else " (search not finished)"))
    runs = load_runs(layout)
    for stage in ("compare", "transfer"):
        pairs: Dict[tuple, int] = {}
        for dataset, family, _, _ in final_units(plan, stage):
            pairs[(dataset, family)] = pairs.get((dataset, family), 0) + 1
        for (dataset, family), n in pairs.items():
            lines.append(f"{stage} {dataset} {family}: {len(runs.get((stage, dataset, family), []))}/{n} runs")
    return lines


def _completed_trials(storage_path: str, dataset: str, family: str) -> int:
    """COMPLETE trials of a search still in progress (its summary study.json is written when it ends)."""
    if not os.path.exists(storage_path):
        return 0
    import optuna

    from qallegro.hpo.study import storage_url
    from qallegro.study.stages import study_name

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name=study_name(dataset, family), storage=storage_url(storage_path))
    return len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)))


def measure_costs(plan: StudyPlan, layout: StudyLayout, log: Callable[[str], None] = print) -> Dict[str, Dict]:
    """`measure_epoch_cost` of every dataset's base config for each family run on it (variants at their default
    block settings), written to RESULTS/cost-measurement.json (merged with earlier measurements)."""
    import json

    from qallegro.study.cost import measure_epoch_cost
    from qallegro.train.run import write_json

    path = os.path.join(layout.results, "cost-measurement.json")
    done = json.load(open(path)) if os.path.exists(path) else {}
    for dataset in plan.datasets:
        families = list(plan.compare_families(dataset))
        if plan.transfer and dataset in plan.transfer.targets:
            families.append(plan.transfer.family)
        for family in families:
            key = f"{dataset}/{family}"
            cfg = plan.datasets[dataset].run_config()
            cfg["model"]["family"] = family
            done[key] = measure_epoch_cost(cfg)
            e = done[key]["epoch"]
            log(f"{key}: epoch {e['wall_s']:.1f} s wall, {e['cpu_s']:.1f} s CPU ({done[key]['batches_per_epoch']} "
                f"batches); compile {done[key]['compile']['wall_s']:.0f} s; load {done[key]['load_average']:.1f}")
            os.makedirs(layout.results, exist_ok=True)
            write_json(path, done)
    return done


def run_study(plan: StudyPlan, stages: Sequence[str], layout: StudyLayout, command_prefix: str = "",
              log: Callable[[str], None] = print) -> int:
    """Run the given stages of the study (see the module docstring).

    A search or a final run that fails is reported and the others go on; re-running retries it.

    Returns:
        0, or 1 when some search or final run failed (listed in the log).

    Raises:
        ValueError: an unknown stage.
    """
    from qallegro.study.finite_shots import run_shots
    from qallegro.study.stages import run_final, run_hpo

    commands = study_commands(command_prefix)
    failures: List[str] = []
    for stage in expand_stages(stages):
        log(f"=== stage {stage}")
        if stage == "estimate":
            from qallegro.study.cost import estimate

            for line in estimate(plan)["lines"]:
                log(line)
        elif stage == "measure":
            measure_costs(plan, layout, log=log)
        elif stage == "status":
            for line in status_lines(plan, layout):
                log(line)
        elif stage == "hpo":
            failures += [f"hpo {s['dataset']} {s['family']}: {s['error']}"
                         for s in run_hpo(plan, layout, command=f"{command_prefix} --stage hpo", log=log)
                         if "error" in s]
        elif stage in ("compare", "transfer"):
            failures += [f"{stage} {s['dataset']} {s['family']} seed {s['seed']}: {s['state']}"
                         for s in run_final(plan, layout, stage, command=f"{command_prefix} --stage {stage}", log=log)
                         if s["state"].startswith("failed")]
        elif stage == "shots":
            try:
                run_shots(plan, layout, log=log)
            except Exception as err:  # the report still runs
                failures.append(f"shots: {type(err).__name__}: {err}")
        elif stage == "report":
            write_report(plan, layout, commands)
            log(f"report: {layout.report}")
    if failures:
        log(f"{len(failures)} unit(s) failed (the others finished):\n" + "\n".join(f"  {f}" for f in failures))
        return 1
    return 0
