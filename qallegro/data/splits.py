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


def resolve_split_sizes(n_items: int, n_train, n_val, n_test=None) -> Tuple[int, int, int]:
    """Split sizes from counts or fractions: a value in (0, 1) is a fraction of `n_items` (rounded down);
    `n_test` None means all structures left after train and validation.

    Raises:
        ValueError: the sizes do not fit into `n_items`.
    """
    def size(x):
        if x is None:
            return None
        return int(x * n_items) if isinstance(x, float) and 0.0 < x < 1.0 else int(x)

    tr, va, te = size(n_train), size(n_val), size(n_test)
    te = n_items - tr - va if te is None else te
    if tr < 1 or va < 0 or te < 0 or tr + va + te > n_items:
        raise ValueError(f"cannot split {n_items} structures into {n_train} train + {n_val} validation + "
                         f"{n_test} test")
    return tr, va, te


def train_val_test_split(items: Sequence[T], n_train: int, n_val: int, n_test: int,
                         seed: int) -> Tuple[list, list, list]:
    """As `train_val_split` (same permutation, so the same train and validation sets), plus the next `n_test`
    structures as a disjoint test set (QM9 and the Cu–Li set have no separate test file)."""
    if n_test < 0 or n_train + n_val + n_test > len(items):
        raise ValueError(f"cannot split {len(items)} structures into {n_train} train + {n_val} validation + "
                         f"{n_test} test")
    train, val = train_val_split(items, n_train, n_val, seed)
    perm = np.random.default_rng(seed).permutation(len(items))
    rest = perm[n_train + n_val:n_train + n_val + n_test]
    return train, val, [items[k] for k in rest]
