"""The study's report (experiments/results/paper.md by default): the claims table first, then the numbers behind
it, the scale, the machine, the compute, the exact commands and the figures.

Every number comes from the committed results files (`qallegro.study.results`): `render` is a pure function of
the plan and those files, so a test can rebuild the claims table and compare it with the written report. With
no results yet the report still renders, and says "not run" wherever a number is missing.
"""

from __future__ import annotations

import os
from typing import Dict, List, Sequence

import numpy as np

from qallegro.study.claims import LABELS, NOT_RUN, claim_rows, claims_markdown
from qallegro.study.convergence import gap_along_curve
from qallegro.study.layout import StudyLayout
from qallegro.study.plan import BASELINE, FAMILIES, StudyPlan
from qallegro.study.results import family_runs, load_runs, load_search, load_shots
from qallegro.study.speed import load_speed
from qallegro.study.statistics import bootstrap_difference, mean_std

CLAIMS_BEGIN, CLAIMS_END = "<!-- claims table: begin -->", "<!-- claims table: end -->"


def claims_table(plan: StudyPlan, layout: StudyLayout) -> str:
    """The claims table (markdown) rebuilt from the committed results."""
    runs = load_runs(layout)
    rows = claim_rows({d: p.error_metric for d, p in plan.datasets.items()},
                      lambda d, f: family_runs(runs, d, f), plan.bootstrap, lambda d: load_speed(layout, d))
    return claims_markdown(rows, plan.bootstrap.confidence)


def extract_claims_table(text: str) -> str:
    """The claims table of a written report (between its markers).

    Raises:
        ValueError: the report has no claims table.
    """
    if CLAIMS_BEGIN not in text or CLAIMS_END not in text:
        raise ValueError("the report has no claims table markers")
    return text.split(CLAIMS_BEGIN, 1)[1].split(CLAIMS_END, 1)[0].strip("\n") + "\n"


def _ms(values: Sequence[float], digits: int = 1) -> str:
    s = mean_std(values)
    return NOT_RUN if s is None else f"{s['mean']:.{digits}f} ± {s['std']:.{digits}f}"


def _dataset_table(plan: StudyPlan, dataset: str, runs_of) -> List[str]:
    metric = plan.datasets[dataset].error_metric
    name, unit = LABELS[metric]
    base = runs_of(dataset, BASELINE)
    pct = f"{100 * plan.bootstrap.confidence:g} %"
    # energy per atom too: the per-structure MAE of mixed cell sizes (Cu–Li: 4-64 atoms) is hard to read alone
    lines = [f"| family | stage | seeds | test energy MAE (meV) | (meV/atom) | test forces MAE (meV/Å) | Δ {name} vs "
             f"allegro ({unit}, {pct} CI) | parameters | inference (ms/structure) | converged |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for family in FAMILIES:
        runs = runs_of(dataset, family)
        if not runs:
            if family in plan.compare_families(dataset) or (plan.transfer and family == plan.transfer.family
                                                            and dataset in plan.transfer.targets):
                lines.append(f"| {family} | | 0 | {NOT_RUN} | | {NOT_RUN} | {NOT_RUN} | | | |")
            continue
        delta = ""
        if family != BASELINE and base:
            d = bootstrap_difference(runs, base, metric, plan.bootstrap)
            delta = f"{d['estimate']:+.2f} [{d['low']:+.2f}, {d['high']:+.2f}]"
        forces = [r["test"].get("forces_mae") for r in runs]
        met = sum(bool(r["convergence"]["met"]) for r in runs)
        per_atom = [r["test"].get("energy_per_atom_mae") for r in runs]
        lines.append(f"| {family} | {runs[0]['stage']} | {len(runs)} | {_ms([r['test']['energy_mae'] for r in runs])} "
                     f"| {_ms(per_atom, 2) if None not in per_atom else ''} "
                     f"| {_ms(forces) if any(f is not None and np.isfinite(f) for f in forces) else 'no labels'} "
                     f"| {delta} | {runs[0]['n_parameters']:,} | {runs[0]['inference']['median_ms_per_structure']:.3f} "
                     f"| {met}/{len(runs)} |")
    return lines


def render(plan: StudyPlan, layout: StudyLayout, commands: Sequence[str], figures: Dict[str, str]) -> str:
    """The report's markdown.

    Args:
        plan, layout: the study.
        commands: the exact command lines of the study, in order.
        figures: caption -> image path (relative to the report) of the figures that exist.
    """
    runs = load_runs(layout)

    def runs_of(d, f):
        return family_runs(runs, d, f)

    metrics = {d: p.error_metric for d, p in plan.datasets.items()}
    rows = claim_rows(metrics, runs_of, plan.bootstrap, lambda d: load_speed(layout, d))
    all_runs = [r for v in runs.values() for r in v]
    out = ["# The seed paper's claims, tested", "",
           "Laskaris et al., *Multi-objective optimization and quantum hybridization of equivariant deep learning "
           "interatomic potentials* (arXiv:2602.16908), reproduced at the scale of the plan "
           f"`{os.path.relpath(plan.path)}` (profile `{plan.profile}`). Every number below is read from the committed "
           f"results files under `{os.path.relpath(layout.results)}` (`qallegro.study.report`; "
           "tests/test_study_report.py rebuilds the claims table from them). The claims are hypotheses, not targets.",
           "", "## Claims", "", CLAIMS_BEGIN, claims_markdown(rows, plan.bootstrap.confidence).rstrip("\n"), CLAIMS_END,
           "",
           f"Ours: the difference A − B of the test error (force MAE; energy MAE on QM9, which has no forces) between "
           f"the claim's two families, mean over seeds, with its {100 * plan.bootstrap.confidence:g} % bootstrap "
           f"interval over seeds and test frames ({plan.bootstrap.resamples} resamples, paired frames; "
           "`qallegro.study.statistics`); relative for claim 3; for speed claims the ratio of median inference "
           "times with the 2.5-97.5 % range of the per-round ratios of the families timed together "
           "(`qallegro.study.speed`). Verdict: *supported* when the interval lies wholly on "
           "the claimed side of 0 (of 1 for ratios), *not supported* when wholly on the other side, else "
           "*inconclusive at this scale*. Claim 2 reads the paper's \"more accurate but slower\" as the MLP variant "
           "against the hybrid. Claim 4 compares the Cu–Li hybrid configuration, unchanged, with the dataset's "
           "own searched Allegro.", ""]
    out += ["## Results per dataset", ""]
    for dataset in plan.datasets:
        out += [f"### {dataset}", ""] + _dataset_table(plan, dataset, runs_of) + [""]
        speed = load_speed(layout, dataset)
        if speed:
            out += [f"Inference timed together ({speed['rounds']} interleaved rounds of {speed['calls']} calls, "
                    f"load average {speed['load_average']:.1f}): " + ", ".join(
                        f"{f} {m:.3f} ms/structure" for f, m in speed["median_ms_per_structure"].items()) + ".", ""]
    out += _convergence_section(plan, all_runs)
    out += _curve_section(plan, rows, runs_of)
    out += _search_section(plan, layout)
    out += _scale_section(plan, layout, all_runs, commands)
    out += _shots_section(plan, layout)
    out += ["## Figures", ""]
    if figures:
        out += [f"![{caption}]({path})\n\n*{caption}*\n" for caption, path in figures.items()]
    else:
        out += [f"No figures yet: {NOT_RUN}.", ""]
    return "\n".join(out).rstrip("\n") + "\n"


def _convergence_section(plan: StudyPlan, all_runs) -> List[str]:
    c = plan.convergence
    out = ["## Convergence", "",
           f"One criterion for every final run (`qallegro.study.convergence`): the best validation error improved by "
           f"less than {100 * c.tolerance:g} % over the last {100 * c.window_fraction:g} % of the epochs"
           + (", with the learning rate already reduced by the plateau schedule" if c.require_lr_reduced else "")
           + ".", ""]
    if not all_runs:
        return out + [f"Final runs: {NOT_RUN}.", ""]
    bad = [r for r in all_runs if not r["convergence"]["met"]]
    out.append(f"{len(all_runs) - len(bad)} of {len(all_runs)} final runs met it.")
    if bad:
        out += ["", "Runs that did not meet it:", ""]
        out += [f"- {r['stage']} {r['dataset']} {r['family']} seed {r['seed']}: {r['convergence']['reason']}"
                for r in bad]
    return out + [""]


def _curve_section(plan: StudyPlan, rows, runs_of) -> List[str]:
    """For every accuracy claim with runs: the validation gap between its families at 50, 75 and 100 % of the
    epochs, so that a verdict on unconverged runs can be read with its trend."""
    lines = []
    for row in rows:
        claim = row["claim"]
        if claim.kind == "speed" or row["verdict"] == NOT_RUN:
            continue
        metric = plan.datasets[claim.dataset].error_metric
        g = gap_along_curve(runs_of(claim.dataset, claim.a), runs_of(claim.dataset, claim.b), f"val_{metric}")
        if not g["gap"]:
            continue
        name, unit = LABELS[metric]
        steps = " → ".join(f"{v:+.2f} ({100 * r:+.0f} %, epoch {e})"
                           for v, r, e in zip(g["gap"], g["relative"], g["epochs"]))
        a, b = abs(g["gap"][-2]), abs(g["gap"][-1])
        trend = ("changed sign in the last quarter" if g["gap"][-2] * g["gap"][-1] < 0 else
                 "narrowing" if b < 0.9 * a else "widening" if b > 1.1 * a else "steady (within 10 %)")
        lines.append(f"| {claim.number} | {claim.a} − {claim.b} | {claim.dataset} | {steps} | {trend} | "
                     f"{row['verdict']} |")
    if not lines:
        return []
    return ["## The gaps along the training curves", "",
            "Most final runs stopped before the convergence criterion was met, so each accuracy claim's verdict is "
            "read with the trend of its gap: the best validation error so far, mean over seeds, of family A minus "
            "family B at 50, 75 and 100 % of the epochs (`qallegro.study.convergence.gap_along_curve`; validation "
            "split, so the test split stays with the final numbers). A gap that narrows in the last quarter may "
            "close with more epochs; one that is steady or widening is less likely to.", "",
            "| # | A − B | dataset | validation gap at 50 → 75 → 100 % of the epochs (relative to B) | last quarter "
            "| verdict (test) |", "|---|---|---|---|---|---|"] + lines + [""]


def _per_family(values: Dict[str, int]) -> str:
    return ", ".join(f"{family} {n}" for family, n in values.items())


#: a FAIL trial without a recorded exception: its process stopped mid-trial and Optuna's heartbeat failed it
STALE_TRIAL = "no exception recorded (the trial's process stopped, e.g. killed, and the heartbeat check failed it)"


def _search_section(plan: StudyPlan, layout: StudyLayout) -> List[str]:
    out = ["## Searches", "",
           f"SAMO-COBRA ({plan.hpo.sampler}) of the validation error against the inference time, which is measured "
           "exactly before each trial trains and given to the sampler as an inexpensive objective "
           f"(IOC-SAMO-COBRA). Trials per search: {_per_family(plan.hpo.n_trials)}; "
           f"{plan.hpo.n_initial or 'd + 1 (parameters + 1)'} in the initial "
           f"design. Selection rule: `{plan.selection.rule}`"
           + (f" within {plan.selection.max_inference_ms} ms/structure" if plan.selection.max_inference_ms else "")
           + " (the most accurate trial, always on the front; `qallegro.study.select`).", "",
           "| dataset | family | trials complete | failed | Pareto-optimal | selected trial | its validation error | "
           "its ms/structure |", "|---|---|---|---|---|---|---|---|"]
    reasons: Dict[str, Dict[str, List[str]]] = {}  # failure -> search -> trial numbers
    for dataset, family in plan.hpo.pairs():
        s = load_search(layout, dataset, family)
        if s is None:
            out.append(f"| {dataset} | {family} | 0 of {plan.hpo.n_trials[family]} | | | {NOT_RUN} | | |")
            continue
        sel = s.get("selected")
        chosen = f"{sel['trial']} | {sel['values'][0]:.2f} | {sel['values'][1]:.3f}" if sel else "not yet | |"
        out.append(f"| {dataset} | {family} | {len(s['trials'])} of {plan.hpo.n_trials[family]} | "
                   f"{len(s.get('failed', []))} | {sum(t['pareto'] for t in s['trials'])} | {chosen} |")
        for failure in s.get("failed", []):
            reason = failure.get("failure") or STALE_TRIAL
            reasons.setdefault(reason, {}).setdefault(f"{dataset} {family}", []).append(str(failure["number"]))
    if reasons:  # a failed trial is retried by a new one: say why they failed, so a count is not a mystery
        out += ["", "Failed trials (each was replaced by a new trial), by reason:", ""]
        for reason, searches in reasons.items():
            where = "; ".join(f"{search} trials {', '.join(numbers)}" for search, numbers in searches.items())
            out.append(f"- {reason if reason == STALE_TRIAL else f'`{reason}`'}: "
                       f"{sum(map(len, searches.values()))} ({where})")
    return out + [""]


def _scale_section(plan: StudyPlan, layout: StudyLayout, all_runs, commands) -> List[str]:
    out = ["## Scale, machine, compute, commands", "", "| dataset | profile | train / val / test | base model | "
           "trial epochs | final epochs | seeds |", "|---|---|---|---|---|---|---|"]
    for name, d in plan.datasets.items():
        cfg = d.run_config()
        data, model = cfg["dataset"], cfg["model"]
        test = "test file" if data.get("test") else data.get("n_test")
        out.append(f"| {name} | {d.profile} | {data.get('n_train')} / {data.get('n_val')} / {test} | l_max "
                   f"{model.get('l_max')}, {model.get('num_layers')} layers, {model.get('num_tensor_features')} tensor "
                   f"features, latent {model.get('latent_mlp')} | {plan.hpo.trial_epochs[name]} | "
                   f"{plan.compare.epochs[name]} | {plan.compare.seeds} |")
    trial_minutes, trial_wall, n_trials, n_wall = 0.0, 0.0, 0, 0
    for dataset, family in plan.hpo.pairs():
        s = load_search(layout, dataset, family)
        for t in (s or {}).get("trials", []):
            trial_minutes += float(t.get("train_minutes") or 0.0)
            n_trials += 1
            if t.get("wall_minutes") is not None:
                trial_wall, n_wall = trial_wall + float(t["wall_minutes"]), n_wall + 1
    wall_note = ""
    if n_wall:
        of = "" if n_wall == n_trials else f" of {n_wall} of them"
        wall_note = (f" ({trial_wall / 60:.2f} h of wall time{of} from start to completion: timing, compilation, "
                     "training and evaluation, on a machine shared with other jobs)")
    final_minutes = sum(float(r.get("train_minutes") or 0.0) for r in all_runs)
    wall = sum(float(r.get("session_wall_minutes") or 0.0) for r in all_runs)
    machines = sorted({f"{r['machine'].get('node')} ({r['machine'].get('cpus')} CPUs, {r['machine'].get('platform')})"
                       for r in all_runs})
    loads = [r["machine"].get("load_average") for r in all_runs if r["machine"].get("load_average") is not None]
    out += ["", f"Machine: {', '.join(machines) if machines else NOT_RUN}"
            + (f"; load average at the end of the runs {min(loads):.1f}–{max(loads):.1f}" if loads else "") + ".",
            "",
            f"Compute: {trial_minutes / 60:.2f} h of training in {n_trials} search trials{wall_note} and "
            f"{final_minutes / 60:.2f} h in {len(all_runs)} final runs (training time over all sessions; the final "
            f"runs' last sessions took {wall / 60:.2f} h of wall time including data preparation, compilation and "
            "evaluation).", "",
            "Commands (run from the repository root; each resumes where the last one stopped):", "", "```bash"]
    out += list(commands) + ["```", ""]
    return out


def _shots_section(plan: StudyPlan, layout: StudyLayout) -> List[str]:
    out = ["## Beyond the paper: the hybrid with finite shots", ""]
    if plan.shots is None:
        return out + ["Not in the plan.", ""]
    res = load_shots(layout, plan.shots.dataset, plan.shots.family)
    if res is None:
        return out + [f"{plan.shots.family} on {plan.shots.dataset} with {list(plan.shots.shots)} shots per circuit: "
                      f"{NOT_RUN}.", ""]
    out += [f"Test forces MAE of the seed-0 {plan.shots.family} model on {plan.shots.dataset} "
            f"({res['n_frames']} test frames) when every circuit, and every derivative of a circuit that the "
            "forces need (parameter-shift rule: two further circuits per encoding angle), is estimated from a "
            f"finite number of shots (mean ± std over {res['repeats']} noise draws); exact: "
            f"{res['exact_forces_mae']:.2f} meV/Å. Deviation: mean |F_shots − F_exact| from the same model's exact "
            "forces.", "",
            "| shots per circuit | forces MAE (meV/Å) | deviation from exact forces (meV/Å) | shots per MD step of a "
            f"{res['cell_atoms']}-atom cell |", "|---|---|---|---|"]
    for row in res["rows"]:
        deviation = row.get("forces_deviation_mean")
        deviation = "" if deviation is None else f"{deviation:.2f}"
        out.append(f"| {row['shots']:,} | {row['forces_mae_mean']:.2f} ± {row['forces_mae_std']:.2f} | "
                   f"{deviation} | {row['shots_per_md_step']:.3g} |")
    out += ["", res["cost_note"], ""]
    return out
