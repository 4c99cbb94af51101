"""Figures of a run (matplotlib, Agg backend, imported lazily so the library has no plotting cost at import)."""

from __future__ import annotations

import textwrap
from typing import Dict, List, Optional, Sequence

import numpy as np


def new_figure(nrows: int = 1, ncols: int = 1, figsize=None, **kwargs):
    """(figure, axes) of a matplotlib Figure that belongs to no pyplot backend: saving it works headless, and it
    leaves an interactive session (Jupyter's inline backend, a GUI) exactly as it was."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize)
    return fig, fig.subplots(nrows, ncols, **kwargs)


def parity_plot(predictions: Dict[str, np.ndarray], path: str, title: str = "",
                species_names: Optional[Sequence[str]] = None) -> None:
    """Energy (per atom, shifted to mean 0, meV/atom) and force-component (eV/Å) parity plots, MAE in the titles.

    `predictions` as returned by `qallegro.train.evaluation.evaluate`: energy_true/pred (eV, per structure), n_atoms
    (per structure), forces_true/pred (eV/Å), species (index per force row); without force rows the right
    panel says so."""
    fig, axes = new_figure(1, 2, figsize=(10, 4.6))
    et, ep = predictions["energy_true"], predictions["energy_pred"]
    n_atoms = predictions.get("n_atoms")
    if n_atoms is None:  # predictions of equal-size structures (older callers): atoms per structure
        n_atoms = len(predictions["forces_true"]) / max(len(et), 1)
    if len(et):
        x, y = 1000 * et / n_atoms, 1000 * ep / n_atoms  # per atom, each structure by its own atom count
        ref = x.mean()
        x, y = x - ref, y - ref
        ax = axes[0]
        ax.scatter(x, y, s=6, alpha=0.6)
        lim = [min(x.min(), y.min()), max(x.max(), y.max())]
        ax.plot(lim, lim, "k--", lw=1)
        ax.set_xlabel("DFT energy - mean (meV/atom)")
        ax.set_ylabel("predicted (meV/atom)")
        ax.set_title(f"energy  MAE {1000 * np.mean(np.abs(ep - et)):.1f} meV "
                     f"({np.mean(np.abs(y - x)):.2f} meV/atom)")
    ft, fp = predictions["forces_true"].ravel(), predictions["forces_pred"].ravel()
    species = np.repeat(predictions["species"], 3)
    ax = axes[1]
    if len(ft):
        # One scatter in a fixed random order, not one per species: drawn species by species, the last one
        # covered the others (aspirin's H forces vanished under C and O).
        kinds = np.unique(species)
        order = np.random.default_rng(0).permutation(len(ft))
        colours = {k: f"C{i % 10}" for i, k in enumerate(kinds)}
        ax.scatter(ft[order], fp[order], s=3, alpha=0.4, c=[colours[k] for k in species[order]])
        for k in kinds:  # legend entries only
            label = species_names[k] if species_names is not None else f"species {k}"
            ax.scatter([], [], s=3, c=colours[k], label=label)
        lim = [min(ft.min(), fp.min()), max(ft.max(), fp.max())]
        ax.plot(lim, lim, "k--", lw=1)
        ax.set_xlabel("DFT force component (eV/Å)")
        ax.set_ylabel("predicted (eV/Å)")
        ax.set_title(f"forces  MAE {1000 * np.mean(np.abs(fp - ft)):.1f} meV/Å")
        ax.legend(markerscale=4, fontsize=8)
    else:  # energy-only data (QM9)
        ax.text(0.5, 0.5, "no force labels", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def learning_curve(history: List[Dict], path: str, title: str = "", smoothing: float = 0.0) -> None:
    """Training loss and validation force MAE per epoch (log scale); optional EMA smoothing in [0, 1)."""
    epochs = np.array([float(r["epoch"]) for r in history])

    def series(key):
        y = np.array([float(r[key]) for r in history])
        if smoothing > 0 and len(y):
            out, acc = np.empty_like(y), y[0]
            for k, v in enumerate(y):
                acc = smoothing * acc + (1 - smoothing) * v
                out[k] = acc
            return out
        return y

    fig, axes = new_figure(1, 2, figsize=(10, 4))
    axes[0].plot(epochs, series("train_loss"), label="train")
    axes[0].plot(epochs, series("val_loss"), label="validation (EMA weights)")
    axes[0].set_yscale("log")
    axes[0].set_xlabel("epoch")
    axes[0].set_ylabel("loss")
    axes[0].legend()
    for key, label in (("val_forces_mae", "forces MAE (meV/Å)"), ("val_energy_mae", "energy MAE (meV)")):
        y = series(key)
        if np.isfinite(y).any():  # QM9 has no force labels: no empty legend entry
            axes[1].plot(epochs, y, label=label)
    axes[1].set_yscale("log")
    axes[1].set_xlabel("epoch")
    axes[1].set_ylabel("validation error")
    axes[1].legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def pareto_plot(values: np.ndarray, front: np.ndarray, path: str,
                labels: Sequence[str] = ("objective 1", "objective 2"), title: str = "",
                numbers: Optional[Sequence[int]] = None, failed: int = 0, log_axes: bool = True):
    """Two minimised objectives of every completed trial, the Pareto front highlighted and joined by its
    attainment staircase; saved to `path` and returned (matplotlib Figure).

    Args:
        values: (n, 2) objective values of the completed trials.
        front: (n,) bool mask of the Pareto-optimal ones.
        numbers: trial numbers, written next to the Pareto-optimal points.
        failed: number of failed trials (stated in the legend).
    """
    values, front = np.asarray(values, float), np.asarray(front, bool)
    fig, ax = new_figure(figsize=(6, 4.5))
    ax.scatter(values[~front, 0], values[~front, 1], c="0.6", s=22, label=f"trials ({len(values)} completed"
               + (f", {failed} failed)" if failed else ")"))
    order = np.argsort(values[front, 0])
    pf = values[front][order]
    ax.step(pf[:, 0], pf[:, 1], where="post", color="C3", lw=1.2)
    ax.scatter(pf[:, 0], pf[:, 1], c="C3", s=40, zorder=3, label=f"Pareto front ({len(pf)})")
    if numbers is not None:
        for (x, y), k in zip(pf, np.asarray(numbers)[front][order]):
            ax.annotate(str(k), (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8, color="C3")
    if log_axes:
        from matplotlib.ticker import FuncFormatter

        ax.set_xscale("log")
        ax.set_yscale("log")
        def minor_label(axis):
            # Plain numbers. An axis spanning less than a decade may hold no power of ten at all, so then every
            # minor tick is labelled; on wider axes only those at 2 and 5.
            def label(v, _):
                lo, hi = sorted(axis.get_view_interval())
                narrow = lo > 0 and hi / lo < 10
                return f"{v:g}" if narrow or f"{v:.0e}"[0] in "25" else ""
            return FuncFormatter(label)

        for axis in (ax.xaxis, ax.yaxis):
            axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
            axis.set_minor_formatter(minor_label(axis))
    ax.set_xlabel(labels[0])
    ax.set_ylabel(labels[1])
    ax.legend()
    ax.set_title("\n".join(textwrap.wrap(title, 70)), fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return fig


def hypervolume_plot(curves: Dict[str, np.ndarray], path: str, title: str = "", ylabel: str = "hypervolume") -> None:
    """Hypervolume of the Pareto front after each trial, one line per sampler/study ({name: (n,) values})."""
    fig, ax = new_figure(figsize=(6, 4))
    for name, hv in curves.items():
        ax.plot(np.arange(1, len(hv) + 1), hv, label=name)
    ax.set_xlabel("trial")
    ax.set_ylabel(ylabel)
    ax.legend()
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
