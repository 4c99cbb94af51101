"""The study's figures, drawn only from committed results: the Pareto plot of every dataset (all families' trials
and fronts), the QM9 validation curves of every family (EMA-smoothed, as the paper's Fig. 5), and bar charts of
the test errors with their bootstrap intervals."""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

import numpy as np

from qallegro.plots import new_figure
from qallegro.study.claims import LABELS
from qallegro.study.plan import FAMILIES, BootstrapPlan
from qallegro.study.statistics import bootstrap_mean

COLORS = {"allegro": "C0", "allegro-mlp": "C1", "allegro-qdi": "C2"}


def _plain_log_ticks(ax, axes: str = "xy") -> None:
    """Tick labels of log axes as plain numbers (12, 20, 50), not powers of ten."""
    from matplotlib.ticker import FuncFormatter

    def minor(axis):
        def label(v, _):  # every minor tick on an axis narrower than a decade, else those at 2 and 5
            lo, hi = sorted(axis.get_view_interval())
            return f"{v:.3g}" if (lo > 0 and hi / lo < 10) or f"{v:.0e}"[0] in "25" else ""
        return FuncFormatter(label)

    for name in axes:
        axis = ax.xaxis if name == "x" else ax.yaxis
        axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        axis.set_minor_formatter(minor(axis))


def pareto_figure(dataset: str, searches: Mapping[str, Optional[Dict[str, Any]]], metric: str, path: str) -> bool:
    """All completed trials of every family's search on `dataset` (error against ms per structure), each
    family's Pareto front as a staircase and its selected trial circled. Returns False (no file) without trials.

    Args:
        searches: family -> committed search summary (`qallegro.study.results.load_search`) or None.
        metric: the error metric of the dataset (axis label).
        path: the PNG file.
    """
    from qallegro.hpo.report import pareto_mask

    present = {f: s for f, s in searches.items() if s and s.get("trials")}
    if not present:
        return False
    name, unit = LABELS[metric]
    fig, ax = new_figure(figsize=(6.4, 4.6))
    for family, summary in present.items():
        values = np.array([t["values"] for t in summary["trials"]], float)
        color = COLORS.get(family, "C3")
        ax.scatter(values[:, 1], values[:, 0], s=14, color=color, alpha=0.35)
        front = values[pareto_mask(values)]
        front = front[np.argsort(front[:, 1])]
        ax.step(front[:, 1], front[:, 0], where="post", color=color, lw=1.3)
        ax.scatter(front[:, 1], front[:, 0], s=32, color=color, label=f"{family} ({len(values)} trials)", zorder=3)
        selected = summary.get("selected")
        if selected:
            ax.scatter([selected["values"][1]], [selected["values"][0]], s=140, facecolors="none",
                       edgecolors=color, lw=1.5, zorder=4)
    ax.set_xscale("log")
    ax.set_yscale("log")
    _plain_log_ticks(ax)
    ax.set_xlabel("inference time (ms per structure)")
    ax.set_ylabel(f"validation {name} ({unit})")
    ax.set_title(f"{dataset}: trials, Pareto fronts, selected configurations (circled)", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return True


def ema(values: Sequence[float], smoothing: float) -> np.ndarray:
    """Exponential moving average ``s_k = a s_{k-1} + (1 - a) y_k``, ``s_0 = y_0``, a = `smoothing` in [0, 1)."""
    y = np.asarray(values, float)
    out = np.empty_like(y)
    acc = y[0] if len(y) else 0.0
    for k, v in enumerate(y):
        acc = smoothing * acc + (1 - smoothing) * v
        out[k] = acc
    return out


def curves_figure(dataset: str, runs_of: Callable[[str, str], List[Dict[str, Any]]], metric: str, path: str,
                  smoothing: float = 0.6) -> bool:
    """Validation error per epoch of every family on `dataset` (each seed thin, the seed mean thick),
    EMA-smoothed with `smoothing`. Returns False (no file) without runs."""
    name, unit = LABELS[metric]
    key = "val_" + metric
    fig, ax = new_figure(figsize=(6.4, 4.2))
    drawn = False
    for family in FAMILIES:
        runs = runs_of(dataset, family)
        curves = [np.array([row[key] for row in r.get("history", [])], float) for r in runs]
        curves = [c for c in curves if len(c)]
        if not curves:
            continue
        drawn = True
        color = COLORS[family]
        for c in curves:
            ax.plot(np.arange(1, len(c) + 1), ema(c, smoothing), color=color, lw=0.6, alpha=0.5)
        n = min(len(c) for c in curves)
        mean = np.mean([c[:n] for c in curves], axis=0)
        ax.plot(np.arange(1, n + 1), ema(mean, smoothing), color=color, lw=2, label=f"{family} ({len(curves)} seeds)")
    if not drawn:
        return False
    ax.set_yscale("log")
    _plain_log_ticks(ax, "y")
    ax.set_xlabel("epoch")
    ax.set_ylabel(f"validation {name} ({unit}), EMA {smoothing:g}")
    ax.set_title(f"{dataset}: validation curves of the selected configurations", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return True


def bars_figure(datasets: Mapping[str, str], runs_of: Callable[[str, str], List[Dict[str, Any]]], path: str,
                bootstrap: BootstrapPlan = BootstrapPlan()) -> bool:
    """One panel per dataset: each family's test error (mean over seeds) with its bootstrap interval over seeds
    and frames. Returns False (no file) without runs.

    Args:
        datasets: dataset -> its error metric.
    """
    panels = [(d, m) for d, m in datasets.items() if any(runs_of(d, f) for f in FAMILIES)]
    if not panels:
        return False
    fig, axes = new_figure(1, len(panels), figsize=(3.2 * len(panels), 3.8), squeeze=False)
    for ax, (dataset, metric) in zip(axes[0], panels):
        name, unit = LABELS[metric]
        families = [f for f in FAMILIES if runs_of(dataset, f)]
        stats = [bootstrap_mean(runs_of(dataset, f), metric, bootstrap) for f in families]
        est = np.array([s["estimate"] for s in stats])
        err = np.array([[s["estimate"] - s["low"] for s in stats], [s["high"] - s["estimate"] for s in stats]])
        ax.bar(families, est, yerr=err, capsize=5, color=[COLORS[f] for f in families])
        ax.set_ylabel(f"test {name} ({unit})")
        ax.set_title(dataset, fontsize=10)
        ax.tick_params(axis="x", rotation=25)
    fig.suptitle(f"test errors, mean over seeds, {100 * bootstrap.confidence:g} % bootstrap intervals", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return True
