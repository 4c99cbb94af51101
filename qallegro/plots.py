"""Figures of a run (matplotlib, Agg backend, imported lazily so the library has no plotting cost at import)."""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def parity_plot(predictions: Dict[str, np.ndarray], path: str, title: str = "",
                species_names: Optional[Sequence[str]] = None) -> None:
    """Energy (per atom, shifted to mean 0, meV) and force-component (eV/Å) parity plots, MAE in the titles."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.6))
    n_atoms = len(predictions["forces_true"]) / max(len(predictions["energy_true"]), 1)
    et, ep = predictions["energy_true"], predictions["energy_pred"]
    if len(et):
        ref = et.mean()
        x, y = 1000 * (et - ref) / n_atoms, 1000 * (ep - ref) / n_atoms
        ax = axes[0]
        ax.scatter(x, y, s=6, alpha=0.6)
        lim = [min(x.min(), y.min()), max(x.max(), y.max())]
        ax.plot(lim, lim, "k--", lw=1)
        ax.set_xlabel("DFT energy - mean (meV/atom)")
        ax.set_ylabel("predicted (meV/atom)")
        ax.set_title(f"energy  MAE {1000 * np.mean(np.abs(ep - et)):.1f} meV")
    ft, fp = predictions["forces_true"].ravel(), predictions["forces_pred"].ravel()
    species = np.repeat(predictions["species"], 3)
    ax = axes[1]
    for k in np.unique(species):
        label = species_names[k] if species_names is not None else f"species {k}"
        sel = species == k
        ax.scatter(ft[sel], fp[sel], s=3, alpha=0.4, label=label)
    lim = [min(ft.min(), fp.min()), max(ft.max(), fp.max())]
    ax.plot(lim, lim, "k--", lw=1)
    ax.set_xlabel("DFT force component (eV/Å)")
    ax.set_ylabel("predicted (eV/Å)")
    ax.set_title(f"forces  MAE {1000 * np.mean(np.abs(fp - ft)):.1f} meV/Å")
    ax.legend(markerscale=4, fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def learning_curve(history: List[Dict], path: str, title: str = "", smoothing: float = 0.0) -> None:
    """Training loss and validation force MAE per epoch (log scale); optional EMA smoothing in [0, 1)."""
    plt = _pyplot()
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

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    axes[0].plot(epochs, series("train_loss"), label="train")
    axes[0].plot(epochs, series("val_loss"), label="validation (EMA weights)")
    axes[0].set_yscale("log")
    axes[0].set_xlabel("epoch")
    axes[0].set_ylabel("loss")
    axes[0].legend()
    axes[1].plot(epochs, series("val_forces_mae"), label="forces MAE (meV/Å)")
    axes[1].plot(epochs, series("val_energy_mae"), label="energy MAE (meV)")
    axes[1].set_yscale("log")
    axes[1].set_xlabel("epoch")
    axes[1].set_ylabel("validation error")
    axes[1].legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
