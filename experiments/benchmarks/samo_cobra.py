"""SAMO-COBRA against Optuna's GPSampler, NSGA-II, TPE and random sampling on analytic problems, same budget.

    OMP_NUM_THREADS=1 python -m experiments.benchmarks.samo_cobra [--budget 60] [--seeds 5] [--zdt-dim 6]
        [--problems ZDT1,ZDT2,ZDT3,BNH,SRN] [--samplers NAME,...] [--out DIR]

Problems (experiments/benchmarks/mo_problems.py): ZDT1, ZDT2, ZDT3 in --zdt-dim dimensions, and the
constrained BNH and SRN. Every sampler gets the same number of evaluations per run; the hypervolume of the
feasible points (Optuna's hypervolume, fixed reference point per problem) is reported as mean ± std over seeds,
with wall time per run. Writes DIR/samo_cobra_benchmark.md, .json and .png (hypervolume vs evaluations), after
every seed, so an interrupted run leaves the seeds it finished.

Samplers:

- ``samo-cobra``: qallegro.hpo.samo_cobra.SamoCobraSampler, every objective through an RBF surrogate;
- ``samo-cobra (cheap f1)``: the same with the problem's inexpensive objectives (ZDT's f1 = x1) given exactly
  (IOC-SAMO-COBRA, de Winter et al., Memetic Computing 2022); only on problems that declare one;
- ``gp (logEHVI)``: optuna.samplers.GPSampler (Optuna's multi-objective Bayesian optimiser since 4.4; 10 random
  start-up trials, ``deterministic_objective=True`` since these problems are noise-free). It needs torch; without
  torch it is left out and the report says so. Run with OMP_NUM_THREADS=1 (Optuna's advice for GPSampler);
- ``nsga2 (population N)``, ``tpe (multivariate)``, ``random``: Optuna's.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import time
import warnings

import numpy as np
import optuna
import scipy
from optuna.distributions import FloatDistribution

from experiments.benchmarks.mo_problems import problems
from qallegro.hpo.report import hypervolume_history
from qallegro.hpo.samo_cobra import SamoCobraSampler

RESULTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "results")
GP = "gp (logEHVI)"
CHEAP = "samo-cobra (cheap f1)"
SMS = "samo-cobra (sms)"


def torch_info():
    """(version, location) of torch, or None when it cannot be imported (GPSampler then cannot run)."""
    try:
        import torch
    except ImportError:
        return None
    return torch.__version__, os.path.dirname(os.path.dirname(torch.__file__))


def samplers(problem, space, seed, nsga_population, with_gp, sms=False):
    names = list(space)

    def exact(j):
        return lambda params: float(problem.objectives(np.array([params[n] for n in names]))[j])

    out = {"samo-cobra": SamoCobraSampler(space, seed=seed)}
    if sms:
        out[SMS] = SamoCobraSampler(space, seed=seed, infill="sms")
    if problem.cheap:
        out[CHEAP] = SamoCobraSampler(space, seed=seed, cheap_objectives={j: exact(j) for j in problem.cheap})
    if with_gp:
        out[GP] = optuna.samplers.GPSampler(seed=seed, deterministic_objective=True)
    out[f"nsga2 (population {nsga_population})"] = optuna.samplers.NSGAIISampler(population_size=nsga_population,
                                                                                seed=seed)
    out["tpe (multivariate)"] = optuna.samplers.TPESampler(multivariate=True, seed=seed)
    out["random"] = optuna.samplers.RandomSampler(seed=seed)
    return out


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
    parser.add_argument("--samplers", default=None,
                        help="comma-separated subset of sampler names (default: all that can run)")
    parser.add_argument("--sms", action="store_true", help="also run SAMO-COBRA with infill='sms'")
    parser.add_argument("--resume", default=None,
                        help="a previous samo_cobra_benchmark.json (same budget and zdt-dim): its runs are kept and "
                             "only the missing (seed, problem, sampler) runs are made; problems outside --problems "
                             "stay in the report with the seeds they have")
    parser.add_argument("--out", default=RESULTS, help="output directory")
    args = parser.parse_args(argv)
    command = "python -m experiments.benchmarks.samo_cobra " + " ".join(
        shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))
    if os.environ.get("OMP_NUM_THREADS"):
        command = f"OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']} " + command
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    torch = torch_info()
    wanted = None if args.samplers is None else set(args.samplers.split(","))
    chosen = [p for p in problems(args.zdt_dim) if p.name in args.problems.split(",")]
    os.makedirs(args.out, exist_ok=True)
    machine = {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version(),
               "optuna": optuna.__version__, "scipy": scipy.__version__, "numpy": np.__version__,
               "torch": None if torch is None else torch[0], "torch_location": None if torch is None else torch[1],
               "load_average_start": os.getloadavg()}
    results = {p.name: {} for p in chosen}
    runs = []
    if args.resume:
        with open(args.resume) as f:
            previous = json.load(f)
        if previous["budget"] != args.budget or previous["zdt_dim"] != args.zdt_dim:
            raise SystemExit(f"{args.resume}: budget {previous['budget']} and zdt-dim {previous['zdt_dim']} differ")
        results = {**previous["results"], **{k: v for k, v in results.items() if k not in previous["results"]}}
        runs = previous.get("runs") or [{"command": previous.get("command"), "machine": previous["machine"],
                                         "wall_minutes": previous.get("wall_minutes")}]
    this_run = {"command": command, "machine": machine}
    started = time.time()
    for seed in range(args.seeds):  # seed-major: an interrupted run has balanced results
        for problem in chosen:
            space = {f"x{i}": FloatDistribution(lo, hi) for i, (lo, hi) in enumerate(problem.bounds)}
            for name, sampler in samplers(problem, space, seed, args.nsga_population, torch is not None,
                                           args.sms).items():
                if wanted is not None and name not in wanted:
                    continue
                if len(results[problem.name].get(name, {}).get("hypervolume", [])) > seed:
                    continue  # done in the run resumed
                hv, seconds = run_one(problem, sampler, args.budget)
                entry = results[problem.name].setdefault(name, {"hypervolume": [], "history": [], "seconds": []})
                entry["hypervolume"].append(float(hv[-1]))
                entry["history"].append(hv.tolist())
                entry["seconds"].append(seconds)
                print(f"{problem.name} seed {seed} {name:24s} HV {hv[-1]:.4f}  {seconds:.1f} s", flush=True)
        machine["load_average_end"] = os.getloadavg()
        this_run["wall_minutes"] = (time.time() - started) / 60.0
        summary = {"budget": args.budget, "zdt_dim": args.zdt_dim,
                   "reference_points": {p.name: p.reference_point for p in problems(args.zdt_dim)
                                        if p.name in results},
                   "results": results, "runs": runs + [this_run]}
        write(summary, args.out)
    print(markdown(summary))
    return 0


def write(summary, out) -> None:
    with open(os.path.join(out, "samo_cobra_benchmark.json"), "w") as f:
        json.dump(summary, f)
    with open(os.path.join(out, "samo_cobra_benchmark.md"), "w") as f:
        f.write(markdown(summary))
    plot(summary, os.path.join(out, "samo_cobra_benchmark.png"))


def _stats(per, name):
    hv = np.asarray(per[name]["hypervolume"])
    return hv.mean(), (hv.std(ddof=1) if len(hv) > 1 else 0.0)


def _machine_line(m, wall_minutes=None) -> str:
    load = ", ".join(f"{v:.2f}" for v in m["load_average_start"])
    load_end = ", ".join(f"{v:.2f}" for v in m.get("load_average_end", m["load_average_start"]))
    gp = (f"GPSampler with torch {m['torch']} (imported from {m['torch_location']})" if m.get("torch")
          else "no torch, so no GPSampler")
    wall = "" if wall_minutes is None else f"; {wall_minutes:.0f} minutes in all"
    return (f"{m['platform']}, {m['cpus']} CPUs shared with other jobs, run under `nice -n 10`; load average "
            f"(1, 5, 15 min) {load} at the start, {load_end} at the end; Python {m['python']}, Optuna "
            f"{m['optuna']}, scipy {m['scipy']}, numpy {m['numpy']}; {gp}{wall}")


def _names(summary):
    """Sampler names in report order: the SAMO-COBRA variants, GPSampler, then the rest as run."""
    names = []
    for per in summary["results"].values():
        names += [n for n in per if n not in names]
    first = [n for n in ("samo-cobra", SMS, CHEAP, GP) if n in names]
    return first + [n for n in names if n not in first]


def markdown(summary) -> str:
    names = _names(summary)
    lines = [f"### SAMO-COBRA vs Optuna samplers: hypervolume after {summary['budget']} evaluations "
             "(mean ± std over seeds 0..n-1; higher is better)", "",
             f"ZDT1-3 with {summary['zdt_dim']} variables; BNH and SRN are constrained (hypervolume of the feasible "
             "points). Reference points: " + ", ".join(f"{k} {tuple(v)}" for k, v in
                                                       summary["reference_points"].items()) + ". "
             f"`{CHEAP}` is SAMO-COBRA given the exact f1 = x1 of ZDT (IOC-SAMO-COBRA; only ZDT declares a cheap "
             f"objective); `{SMS}` is SAMO-COBRA with the SMS infill. `{GP}` is Optuna's GPSampler "
             "(deterministic_objective=True, 10 start-up trials). Best mean in bold; n is the number of seeds. "
             "Seconds: sampler + objective wall time per run, on a shared machine (compare within a row only).", ""]
    for k, run in enumerate(summary["runs"]):
        prefix = "Command" if len(summary["runs"]) == 1 else f"Run {k + 1}" + (" (resuming the runs before)"
                                                                                  if k else "")
        lines += [f"{prefix}: `{run.get('command')}`; machine: "
                  f"{_machine_line(run['machine'], run.get('wall_minutes'))}.", ""]
    lines += ["| problem | n | " + " | ".join(names) + " | best mean |", "|---|---|" + "---|" * (len(names) + 1)]
    for problem, per in summary["results"].items():
        means = {n: _stats(per, n)[0] for n in names if n in per}
        best = max(means, key=means.get)
        n_seeds = max(len(e["hypervolume"]) for e in per.values())
        cells = []
        for n in names:
            if n not in per:
                cells.append("—")
                continue
            mean, std = _stats(per, n)
            count = len(per[n]["hypervolume"])
            cell = f"{mean:.6g} ± {std:.2g} ({np.mean(per[n]['seconds']):.1f} s)"
            cell = f"**{cell}**" if n == best else cell
            cells.append(cell if count == n_seeds else f"{cell} (n={count})")
        lines.append(f"| {problem} | {n_seeds} | " + " | ".join(cells) + f" | {best} |")
    if any(GP in per for per in summary["results"].values()):
        lines += ["", f"Per seed against `{GP}` (same seed; runs in which SAMO-COBRA's final hypervolume is higher):",
                  ""]
        for problem, per in summary["results"].items():
            if GP not in per:
                continue
            gp = np.asarray(per[GP]["hypervolume"])
            parts = []
            for n in ("samo-cobra", CHEAP, SMS):
                if n in per:
                    mine = np.asarray(per[n]["hypervolume"])[: len(gp)]
                    parts.append(f"{n} {int(np.sum(mine > gp[: len(mine)]))}/{len(mine)}")
            lines.append(f"- {problem}: " + ", ".join(parts))
    pairs = {p: per for p, per in summary["results"].items() if CHEAP in per and "samo-cobra" in per}
    if pairs:
        lines += ["", f"`{CHEAP}` against `samo-cobra` (same seed): mean difference of the final hypervolume, and "
                  "runs in which the cheap variant is higher:", ""]
        for problem, per in pairs.items():
            cheap = np.asarray(per[CHEAP]["hypervolume"])
            plain = np.asarray(per["samo-cobra"]["hypervolume"])[: len(cheap)]
            cheap = cheap[: len(plain)]
            lines.append(f"- {problem}: {np.mean(cheap - plain):+.3g}, {int(np.sum(cheap > plain))}/{len(plain)}")
    return "\n".join(lines) + "\n"


def plot(summary, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    res = summary["results"]
    fig, axes = plt.subplots(1, len(res), figsize=(3.8 * len(res), 3.6), squeeze=False)
    for ax, (problem, per) in zip(axes[0], res.items()):
        for k, name in enumerate(_names(summary)):  # one colour per sampler in every panel
            if name not in per:
                continue
            hv = np.asarray(per[name]["history"])
            x = np.arange(1, hv.shape[1] + 1)
            ax.plot(x, hv.mean(axis=0), label=name, color=f"C{k}")
            ax.fill_between(x, hv.min(axis=0), hv.max(axis=0), alpha=0.15, color=f"C{k}")
        ax.set_title(problem)
        ax.set_xlabel("evaluations")
        ax.set_ylabel("hypervolume")
        top = max(np.asarray(e["history"]).max() for e in per.values())
        low = np.median([np.asarray(e["history"])[:, len(e["history"][0]) // 3].mean() for e in per.values()])
        ax.set_ylim(low - 0.02 * abs(top), top + 0.02 * abs(top))  # the last two thirds, where samplers differ
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    raise SystemExit(main())
