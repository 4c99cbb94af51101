"""The choice between the two simulation paths of the QDI circuit, ``"fused"`` and ``"gates"``.

Both give the same numbers; which is faster depends on the shape (``n_qubits``, depth, batch) and
the machine. :func:`select_method` times both once per shape and caches the winner;
:func:`heuristic_method` is the deterministic cost model used when timing is switched off
(``QALLEGRO_QDI_AUTOTUNE=0``).
"""

from __future__ import annotations

import math
import os
import time
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from . import fused_path, gate_path
from .config import QDIConfig
from .kernels import z_expectations

__all__ = [
    "METHODS",
    "FUSED_MAX_QUBITS",
    "PATHS",
    "heuristic_method",
    "select_method",
    "resolve_method",
    "clear_method_cache",
]

#: Values of the ``method`` argument of the entry points.
METHODS = ("auto", "fused", "gates")
#: Largest ``n_qubits`` for which the fused path is considered (its matrix has ``4^n`` entries).
FUSED_MAX_QUBITS = 12
#: ``(config, x (B, in_features), weights) -> (B, 2^n)`` measurement-basis probabilities, per path.
PATHS: dict[str, Callable] = {"fused": fused_path.probabilities, "gates": gate_path.probabilities}

_METHOD_CACHE: dict = {}
_TUNE_MAX_BATCH = 2048


def clear_method_cache() -> None:
    """Forget the timings behind :func:`select_method` (e.g. after changing thread settings)."""
    _METHOD_CACHE.clear()


def heuristic_method(config: QDIConfig) -> str:
    """Deterministic choice without timing, from a cost model fitted to CPU measurements.

    Per amplitude and chunk the fused path does ``~2^n`` multiply-adds at GEMM speed, the gates
    path ``~depth * n`` block-gate operations at memory speed, about 16 times slower each; so
    ``"fused"`` iff ``2^n <= 16 * depth * n``: up to 9 qubits at depth 4. On the 2-core CPU of
    ``experiments/results/quantum_benchmark.md`` (depth 4) fused is 2-4x faster at 8 qubits
    and 3.5x slower at 12. Above :data:`FUSED_MAX_QUBITS` always ``"gates"``.
    """
    if config.n_qubits > FUSED_MAX_QUBITS:
        return "gates"
    fused_cost = 2.0**config.n_qubits
    gates_cost = 16.0 * config.depth * config.n_qubits
    return "fused" if fused_cost <= gates_cost else "gates"


def _bucket(batch: int) -> int:
    return 1 << max(0, int(math.ceil(math.log2(max(1, batch)))))


def select_method(config: QDIConfig, batch: int, dtype=jnp.float32) -> str:
    """Choose ``"fused"`` or ``"gates"`` for this circuit shape and batch size.

    Rule: never fused above :data:`FUSED_MAX_QUBITS` qubits (its ``4^n`` matrix would not be
    worth building). Otherwise, unless the environment variable ``QALLEGRO_QDI_AUTOTUNE=0``
    is set, both paths are compiled and timed once on this process's default backend, for
    forward + backward (gradient w.r.t. inputs and weights) on the batch rounded up to a power of
    two and capped at 2048 samples (median of 3 runs after a warm-up); the faster one is cached in
    process, keyed by the structural hyperparameters, the batch bucket, dtype and backend. With
    autotuning off, :func:`heuristic_method` decides. Safe to call while tracing under ``jit``:
    the timing runs eagerly on concrete dummy data.

    Args:
        config: circuit hyperparameters.
        batch: number of circuits evaluated together (product of the leading input dims).
        dtype: real dtype of the computation.

    Returns:
        ``"fused"`` or ``"gates"``.
    """
    if config.n_qubits > FUSED_MAX_QUBITS:
        return "gates"
    if os.environ.get("QALLEGRO_QDI_AUTOTUNE", "1") == "0":
        return heuristic_method(config)
    bucket = min(_bucket(batch), _TUNE_MAX_BATCH)
    key = (config, bucket, jnp.dtype(dtype).name, jax.default_backend())
    if key not in _METHOD_CACHE:
        _METHOD_CACHE[key] = _time_methods(config, bucket, dtype)
    return _METHOD_CACHE[key]


def _time_methods(config: QDIConfig, batch: int, dtype) -> str:
    with jax.ensure_compile_time_eval():
        rng = np.random.default_rng(0)
        x = rng.uniform(-np.pi, np.pi, (batch, config.in_features)).astype(dtype)
        w = rng.uniform(0, 2 * np.pi, config.weight_shape).astype(dtype)
        times = {}
        for method, probabilities in PATHS.items():
            def loss(xx, ww, probabilities=probabilities):
                probs = probabilities(config, xx, ww)
                return jnp.sum(z_expectations(probs, n=config.n_qubits, mode=config.measurement_mode))

            f = jax.jit(jax.value_and_grad(loss, argnums=(0, 1))).lower(x, w).compile()
            jax.block_until_ready(f(x, w))
            ts = []
            for _ in range(3):
                t0 = time.perf_counter()
                jax.block_until_ready(f(x, w))
                ts.append(time.perf_counter() - t0)
            times[method] = float(np.median(ts))
    return min(times, key=times.get)


def resolve_method(config: QDIConfig, method: str, batch: int, dtype) -> str:
    """The path an entry point's ``method`` argument stands for.

    Args:
        config: circuit hyperparameters.
        method: ``"auto"`` (:func:`select_method`), ``"fused"`` or ``"gates"``.
        batch: number of circuits evaluated together.
        dtype: real dtype of the computation.

    Returns:
        ``"fused"`` or ``"gates"``.

    Raises:
        ValueError: for an unknown ``method``, or ``"fused"`` above :data:`FUSED_MAX_QUBITS` qubits.
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; expected one of {list(METHODS)}")
    if method == "auto":
        return select_method(config, batch, dtype)
    if method == "fused" and config.n_qubits > FUSED_MAX_QUBITS:
        raise ValueError(f"method='fused' supports n_qubits <= {FUSED_MAX_QUBITS}, got {config.n_qubits}")
    return method
