"""`python -m experiments.run study --stage hpo|compare|transfer|shots|report|all|status|estimate|measure
[--profile cpu|paper] [--datasets D,...] [--out DIR]`: the seed paper's whole study as one resumable command
(the workflow is `qallegro.study.run_study`; the plans are experiments/configs/study/PROFILE.yaml).
"""

from __future__ import annotations

import argparse
import os

from experiments.config import CONFIG_DIR, enable_x64

STUDY_CONFIGS = os.path.join(CONFIG_DIR, "study")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from qallegro.study.workflow import STAGES

    parser.add_argument("--stage", default=None, action="append", choices=STAGES,
                        help="stage(s) to run, repeatable: hpo, compare, transfer, shots, report; all (every one of "
                             "them, in order; the default); status (what is done); estimate (the plan's compute "
                             "estimate); measure (one epoch's cost per dataset and family, for the plan's cost "
                             "section)")
    parser.add_argument("--profile", default="cpu", choices=["cpu", "paper"],
                        help="the plan experiments/configs/study/PROFILE.yaml")
    parser.add_argument("--plan", default=None, help="a plan YAML instead of the profile's (default: none)")
    parser.add_argument("--datasets", default=None,
                        help="comma-separated subset of the plan's datasets (default: all of them)")
    parser.add_argument("--out", default=None,
                        help="committed results folder (default: the plan's output.results)")
    parser.add_argument("--scratch", default=None,
                        help="scratch folder for trial runs and checkpoints (default: the plan's output.scratch)")
    parser.add_argument("--report", default=None, help="report file (default: the plan's output.report)")
    parser.add_argument("--compilation-cache", default=None,
                        help="JAX persistent compilation cache folder (default: SCRATCH/jax-cache; 'none': off)")


def main(args: argparse.Namespace) -> int:
    from qallegro.study import load_plan, run_study
    from qallegro.study.layout import StudyLayout

    stages = args.stage or ["all"]
    plan_path = args.plan or os.path.join(STUDY_CONFIGS, f"{args.profile}.yaml")
    plan = load_plan(plan_path)
    if args.datasets:
        plan = plan.restricted([d.strip() for d in args.datasets.split(",") if d.strip()])
    layout = StudyLayout.create(args.out or plan.output.results, args.scratch or plan.output.scratch,
                                args.report or plan.output.report)
    enable_x64()  # float64 energy sums, float32 network, as every command
    cache = args.compilation_cache or os.path.join(layout.scratch, "jax-cache")
    if cache != "none":
        import jax

        jax.config.update("jax_compilation_cache_dir", os.path.abspath(cache))
    prefix = "python -m experiments.run study " + " ".join(_plan_options(args))
    return run_study(plan, stages, layout, command_prefix=prefix.rstrip())


def _plan_options(args: argparse.Namespace):
    options = []
    if args.plan:
        options += ["--plan", os.path.relpath(args.plan)]
    elif args.profile != "cpu":
        options += ["--profile", args.profile]
    for flag in ("datasets", "out", "scratch", "report"):
        value = getattr(args, flag)
        if value:
            options += [f"--{flag}", value]
    return options
