"""The jax QDI simulator equals PennyLane's default.qubit, values and gradients, for every option.

Reference: the twin QNode (:mod:`qallegro.quantum.pennylane_twin`, built from PennyLane's own
templates) on ``default.qubit`` with the autograd interface and backprop, in float64. Ours is
compared against it at 1e-10 in float64 (both simulation paths) and at 1e-5 in float32
(|ours - ref| <= 1e-5 + 1e-5 |ref|; the fused path, the one used at these sizes), on a batch of inputs
with two re-uploaded chunks; gradients are the
vector-Jacobian product with a random cotangent, w.r.t. inputs and weights together (the weight
gradient, a sum over the batch, is compared per sample).

Options: the full grid (depth x rotation x entangling x measure x measurement mode, 108 circuits) at 2 qubits,
the smallest count with a pair of qubits to entangle (each circuit costs three compilations of ours and one
PennyLane run); at 1 qubit and from 3 qubits on a pairwise covering subset of that grid
(every pair of option values appears in at least one circuit, ~12 circuits), a different subset for each qubit
count, so every option value is still compared with PennyLane at every qubit count.
"""

import itertools
import random

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from qallegro.quantum import (
    ENTANGLINGS,
    MEASUREMENT_MODES,
    MEASURES,
    ROTATIONS,
    QDIConfig,
    qdi_expectations,
)

qml = pytest.importorskip("pennylane")
from pennylane import numpy as pnp  # noqa: E402

from qallegro.quantum.pennylane_twin import make_qnode  # noqa: E402

DEPTHS = (1, 2)
OPTIONS = (DEPTHS, ROTATIONS, ENTANGLINGS, MEASURES, MEASUREMENT_MODES)
GRID = list(itertools.product(*OPTIONS))
#: qubit counts compared on every option combination; the others on a pairwise covering subset
FULL_GRID_QUBITS = (2,)


def _pairs(row):
    return {(i, row[i], j, row[j]) for i in range(len(row)) for j in range(i + 1, len(row))}


def pairwise_cover(options, seed):
    """A subset of the grid `product(*options)` in which every pair of values of two different options occurs
    (greedy: repeatedly the combination that covers the most uncovered pairs; `seed` orders the ties)."""
    grid = list(itertools.product(*options))
    random.Random(seed).shuffle(grid)
    uncovered = set().union(*map(_pairs, grid))
    chosen = []
    while uncovered:
        best = max(grid, key=lambda row: len(_pairs(row) & uncovered))
        chosen.append(best)
        uncovered -= _pairs(best)
    return chosen


def combinations(n_qubits):
    return GRID if n_qubits in FULL_GRID_QUBITS else pairwise_cover(OPTIONS, seed=n_qubits)


TOL = {"float64": 1e-10, "float32": 1e-5}


def _batch(cfg: QDIConfig) -> int:
    # 2^n inputs: then the batch state and the fused path's matrix columns have the same shape
    # and share compiled kernels, which halves the test's compile time
    return max(2, cfg.dim)


# rows compared with PennyLane (its cost grows with the batch); the other rows get a zero cotangent
N_REF = 8


def _problem(cfg: QDIConfig, seed: int):
    rng = np.random.default_rng(seed)
    BATCH = _batch(cfg)
    x = rng.uniform(-np.pi, np.pi, (BATCH, cfg.in_features))
    w = rng.uniform(0.0, 2 * np.pi, cfg.weight_shape)
    ct = rng.normal(size=(BATCH, cfg.n_outputs))
    ct[N_REF:] = 0.0
    return x, w, ct


def _pennylane_reference(cfg, x, w, ct):
    qnode = make_qnode(cfg, interface="autograd", diff_method="backprop")

    def f(xx, ww):
        out = qnode(xx, ww)
        return pnp.stack(list(out), axis=-1)

    def loss(xx, ww):
        return pnp.sum(f(xx, ww) * ct)

    xx = pnp.array(x, requires_grad=True)
    ww = pnp.array(w, requires_grad=True)
    val = np.asarray(f(xx, ww)).reshape(x.shape[0], cfg.n_outputs)
    gx, gw = qml.grad(loss, argnums=[0, 1])(xx, ww)
    return val, np.asarray(gx), np.asarray(gw)


def _ours(cfg, x, w, ct, method, dtype):
    xj, wj = jnp.asarray(x, dtype), jnp.asarray(w, dtype)
    val, vjp = jax.vjp(lambda a, b: qdi_expectations(cfg, a, b, method=method), xj, wj)
    gx, gw = vjp(jnp.asarray(ct, dtype))
    assert val.dtype == dtype and gx.dtype == dtype and gw.dtype == dtype
    return np.asarray(val), np.asarray(gx), np.asarray(gw)


# Both depths in one test item: they share most compiled kernels, which a parallel test run
# (pytest -n) would otherwise compile once per worker.
@pytest.mark.parametrize("n_qubits", [1, 2, 3, 4, 6])
def test_values_and_gradients_match_pennylane(n_qubits):
    failures = []
    for i, (depth, rotation, entangling, measure, mode) in enumerate(combinations(n_qubits)):
        cfg = QDIConfig(n_qubits=n_qubits, depth=depth, in_features=2 * n_qubits, rotation=rotation,
                        entangling=entangling, measure=measure, measurement_mode=mode)
        x, w, ct = _problem(cfg, seed=1000 * n_qubits + i)
        ref = _pennylane_reference(cfg, x[:N_REF], w, ct[:N_REF])
        for dtype_name in ("float64", "float32"):
            tol = TOL[dtype_name]
            with jax.enable_x64(dtype_name == "float64"):
                dtype = jnp.float64 if dtype_name == "float64" else jnp.float32
                # float64: both paths. float32: the fused path, which "auto" picks at these sizes;
                # the gates path in float32 is checked against the fused one in test_quantum_simulator
                # (every float32 compile here costs test time, the float64 check is the stricter one)
                methods = ("fused", "gates") if dtype_name == "float64" else ("fused",)
                for method in methods:
                    val, gx, gw = _ours(cfg, x, w, ct, method, dtype)
                    assert not np.any(gx[N_REF:])  # zero cotangent rows: no leakage between rows
                    ours = (val[:N_REF], gx[:N_REF], gw)
                    # the weight gradient sums per-sample gradients: compare it per sample
                    scale = (1.0, 1.0, 1.0 / N_REF)
                    for what, a, b, k in zip(("value", "grad_inputs", "grad_weights"), ours, ref,
                                             scale):
                        a, b = a * k, b * k
                        err = np.max(np.abs(a - b) - tol * np.abs(b))
                        if not err <= tol:
                            failures.append(f"{cfg} {method} {dtype_name} {what}: excess {err:.2e}")
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("n_qubits", [1, 3, 4, 6])
def test_subsets_cover_every_pair_of_options(n_qubits):
    rows = combinations(n_qubits)
    assert len(set(rows)) == len(rows) < len(GRID) / 6
    for i, j in itertools.combinations(range(len(OPTIONS)), 2):
        assert {(r[i], r[j]) for r in rows} == set(itertools.product(OPTIONS[i], OPTIONS[j])), (i, j)
