"""SAMO-COBRA against Optuna's NSGA-II, TPE and random sampling on analytic problems, same budget.

    python -m experiments.benchmarks.samo_cobra [--budget 60] [--seeds 5] [--zdt-dim 6] [--out DIR]

Problems (experiments/benchmarks/mo_problems.py): ZDT1, ZDT2, ZDT3 in --zdt-dim dimensions, and the
constrained BNH and SRN. Every sampler gets the same number of evaluations per run; the hypervolume of the
feasible points (Optuna's hypervolume, fixed reference point per problem) is reported as mean ± std over seeds,
with wall time per run. Writes DIR/samo_cobra_benchmark.md, .json and .png (hypervolume vs evaluations).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import numpy as np
import optuna
from optuna.distributions import FloatDistribution

from experiments.benchmarks.mo_problems import problems
from qallegro.hpo.report import hypervolume_history
from qallegro.hpo.samo_cobra import SamoCobraSampler

RESULTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "results")


def samplers(space, seed, nsga_population):
    return {
        "samo-cobra": SamoCobraSampler(space, seed=seed),
        f"nsga2 (population {nsga_population})": optuna.samplers.NSGAIISampler(population_size=nsga_population,
                                                                              seed=seed),
        "tpe (multivariate)": optuna.samplers.TPESampler(multivariate=True, seed=seed),
        "random": optuna.samplers.RandomSampler(seed=seed),
    }


def run_one(problem, sampler, budget):
    names = [f"x{i}" for i in range(len(problem.bounds))]

    def objective(trial):
        x = np.array([trial.suggest_float(n, lo, hi) for n, (lo, hi) in zip(names, problem.bounds)])
        if problem.constraints is not None:
            for k, c in enumerate(problem.constraints(x)):
                trial.set_constraint(f"g{k}", float(c))
        return tuple(float(v) for v in problem.objectives(x))

    study = optuna.create_study(directions=["minimize"] * 2, sampler=sampler)
    start = time.perf_counter()
    study.optimize(objective, n_trials=budget)
    seconds = time.perf_counter() - start
    values = np.array([t.values for t in study.trials])
    feasible = np.array([all(c <= 0 for c in t.constraints.values()) for t in study.trials])
    return hypervolume_history(values, problem.reference_point, feasible), seconds


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget", type=int, default=60, help="evaluations per run")
    parser.add_argument("--seeds", type=int, default=5, help="runs per (problem, sampler), seeds 0..N-1")
    parser.add_argument("--zdt-dim", type=int, default=6, help="number of variables of ZDT1-3")
    parser.add_argument("--nsga-population", type=int, default=20, help="NSGA-II population size")
    parser.add_argument("--problems", default="ZDT1,ZDT2,ZDT3,BNH,SRN", help="comma-separated subset")
    parser.add_argument("--out", default=RESULTS, help="output directory")
    args = parser.parse_args(argv)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    import warnings

    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    chosen = [p for p in problems(args.zdt_dim) if p.name in args.problems.split(",")]
    results = {}
    for problem in chosen:
        space = {f"x{i}": FloatDistribution(lo, hi) for i, (lo, hi) in enumerate(problem.bounds)}
        results[problem.name] = {}
        for seed in range(args.seeds):
            for name, sampler in samplers(space, seed, args.nsga_population).items():
                hv, seconds = run_one(problem, sampler, args.budget)
                entry = results[problem.name].setdefault(name, {"hypervolume": [], "history": [], "seconds": []})
                entry["hypervolume"].append(float(hv[-1]))
                entry["history"].append(hv.tolist())
                entry["seconds"].append(seconds)
                print(f"{problem.name} seed {seed} {name:24s} HV {hv[-1]:.4f}  {seconds:.1f} s", flush=True)
    os.makedirs(args.out, exist_ok=True)
    summary = {"budget": args.budget, "seeds": args.seeds, "zdt_dim": args.zdt_dim,
               "reference_points": {p.name: p.reference_point for p in chosen}, "results": results,
               "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "optuna": optuna.__version__}}
    with open(os.path.join(args.out, "samo_cobra_benchmark.json"), "w") as f:
        json.dump(summary, f)
    text = markdown(summary, chosen)
    with open(os.path.join(args.out, "samo_cobra_benchmark.md"), "w") as f:
        f.write(text)
    plot(summary, os.path.join(args.out, "samo_cobra_benchmark.png"))
    print(text)
    return 0


def markdown(summary, chosen) -> str:
    names = list(next(iter(summary["results"].values())))
    lines = [f"### SAMO-COBRA vs Optuna samplers: hypervolume after {summary['budget']} evaluations "
             f"(mean ± std over {summary['seeds']} seeds; higher is better)", "",
             f"ZDT1-3 with {summary['zdt_dim']} variables; BNH and SRN are constrained (hypervolume of the feasible "
             "points). Reference points: " + ", ".join(f"{p.name} {p.reference_point}" for p in chosen) + ". "
             "Best mean in bold. Seconds: sampler + objective wall time per run "
             f"({summary['machine']['cpus']} CPUs, Optuna {summary['machine']['optuna']}).", "",
             "Command: `python -m experiments.benchmarks.samo_cobra --budget "
             f"{summary['budget']} --seeds {summary['seeds']} --zdt-dim {summary['zdt_dim']}`", "",
             "| problem | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for problem, per in summary["results"].items():
        means = {n: np.mean(per[n]["hypervolume"]) for n in names}
        best = max(means, key=means.get)
        cells = []
        for n in names:
            hv = np.asarray(per[n]["hypervolume"])
            cell = f"{hv.mean():.4g} ± {hv.std(ddof=1) if len(hv) > 1 else 0:.2g} ({np.mean(per[n]['seconds']):.1f} s)"
            cells.append(f"**{cell}**" if n == best else cell)
        lines.append(f"| {problem} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot(summary, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    res = summary["results"]
    fig, axes = plt.subplots(1, len(res), figsize=(3.6 * len(res), 3.4), squeeze=False)
    for ax, (problem, per) in zip(axes[0], res.items()):
        for name, entry in per.items():
            hv = np.asarray(entry["history"])
            x = np.arange(1, hv.shape[1] + 1)
            ax.plot(x, hv.mean(axis=0), label=name)
            ax.fill_between(x, hv.min(axis=0), hv.max(axis=0), alpha=0.15)
        ax.set_title(problem)
        ax.set_xlabel("evaluations")
        ax.set_ylabel("hypervolume")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    raise SystemExit(main())
