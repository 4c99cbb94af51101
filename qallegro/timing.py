"""Inference timing of a potential: the one function that the model comparison and the HPO objective share."""

from __future__ import annotations

import platform
import time
from typing import Any, Dict, Sequence

import flax.linen as nn
import jax
import jraph
import numpy as np

from qallegro.data.graphs import batch_and_pad, structure_to_graph
from qallegro.data.structure import Structure
from qallegro.potential import Potential, energy_forces_stress


def time_inference(model: nn.Module, params: Any, graph: jraph.GraphsTuple, repeats: int = 20,
                   warmup: int = 3, seed: int = 0) -> Dict[str, Any]:
    """Wall time of the jit-compiled energy+forces function on one fixed padded batch.

    The function is compiled and run `warmup` times first (compilation is reported separately), then timed
    `repeats` times with `jax.block_until_ready`, so asynchronous dispatch is not mistaken for speed. The fastest
    call (``min_ms_per_structure``) is the estimate least inflated by other jobs on a shared machine (load only
    ever adds time); the median and percentiles show the spread.

    Args:
        model, params: the potential.
        graph: a padded batch (qallegro.data.graphs.batch_and_pad); its real graphs count as structures.
        repeats, warmup: number of timed and untimed calls (>= 1 and >= 1).
        seed: PRNG seed for stochastic models (finite-shot QDI).
    Returns:
        {"min_ms_per_structure", "median_ms_per_structure", "median_ms_per_batch", "p10_ms_per_batch",
         "p90_ms_per_batch", "compile_s", "n_structures", "n_atoms", "n_edges", "repeats", "device", "cpu"}.
    Raises:
        ValueError: repeats or warmup < 1, or a batch without real structures.
    """
    if repeats < 1 or warmup < 1:
        raise ValueError(f"repeats and warmup must be >= 1, got {repeats} and {warmup}")
    n_structures = len(graph.n_node) - 1  # the last graph is padding
    if n_structures < 1:
        raise ValueError("the timing batch holds no structure")
    rng = jax.random.PRNGKey(seed) if getattr(model, "shots", None) is not None else None
    fn = jax.jit(lambda p, g: energy_forces_stress(model, p, g, compute_stress=False, rng=rng))
    graph = jax.device_put(graph)
    start = time.perf_counter()
    jax.block_until_ready(fn(params, graph))
    compile_s = time.perf_counter() - start
    for _ in range(warmup - 1):
        jax.block_until_ready(fn(params, graph))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(params, graph))
        times.append(time.perf_counter() - start)
    ms = 1000.0 * np.asarray(times)
    return {
        "min_ms_per_structure": float(np.min(ms) / n_structures),
        "median_ms_per_structure": float(np.median(ms) / n_structures),
        "median_ms_per_batch": float(np.median(ms)),
        "p10_ms_per_batch": float(np.percentile(ms, 10)),
        "p90_ms_per_batch": float(np.percentile(ms, 90)),
        "compile_s": compile_s,
        "n_structures": n_structures,
        "n_atoms": int(np.sum(np.asarray(graph.n_node)[:-1])),
        "n_edges": int(np.sum(np.asarray(graph.n_edge)[:-1])),
        "repeats": repeats,
        "device": str(jax.devices()[0]),
        "cpu": platform.processor() or platform.machine(),
    }


def time_potential(potential: Potential, structures: Sequence[Structure], repeats: int = 20,
                   warmup: int = 3) -> Dict[str, Any]:
    """`time_inference` of a loaded potential on one padded batch of `structures` (its own r_max and species).

    Raises:
        qallegro.data.structure.DataError: a structure with a species the potential does not know.
        ValueError: no structures, or repeats/warmup < 1.
    """
    if not structures:
        raise ValueError("time_potential needs at least one structure")
    batch = batch_and_pad([structure_to_graph(s, potential.r_max, potential.species) for s in structures])
    return time_inference(potential.model, potential.params, batch, repeats=repeats, warmup=warmup)
