"""Seeded train/validation splits."""

from __future__ import annotations

from typing import Sequence, Tuple, TypeVar

import numpy as np

T = TypeVar("T")


def train_val_split(items: Sequence[T], n_train: int, n_val: int, seed: int) -> Tuple[list, list]:
    """Shuffle with `seed` and take the first `n_train` for training and the next `n_val` for validation.

    The default for rMD17 is 950/50 from the 1000-frame train file (the Allegro paper's protocol).

    Raises:
        ValueError: if n_train + n_val exceeds len(items) or either is negative.
    """
    if n_train < 1 or n_val < 0 or n_train + n_val > len(items):
        raise ValueError(f"cannot split {len(items)} structures into {n_train} train + {n_val} validation")
    perm = np.random.default_rng(seed).permutation(len(items))
    return [items[k] for k in perm[:n_train]], [items[k] for k in perm[n_train:n_train + n_val]]
