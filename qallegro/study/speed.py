"""Inference speed of the selected configurations of one dataset, measured together for the speed claims.

The searches time each architecture when it is proposed, hours apart, under whatever else loads the machine then;
a ratio of two such timings mixes the models' cost with the load's drift. Here every family's selected
architecture (random parameters: the cost of a compiled model does not depend on its weights) is compiled once
and timed in interleaved rounds, A B C A B C ..., each round `calls` calls of each model on the same fixed padded
batch of the dataset's first training structures (with ``block_until_ready``). For families A and B the ratio is
the ratio of their median ms per structure over all calls, and its interval the 2.5-97.5 % range of the per-round
ratios of medians: load changes hit both models of a round alike.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any, Callable, Dict, List, Optional

import numpy as np

from qallegro.study.layout import StudyLayout
from qallegro.study.plan import FAMILIES, StudyPlan


def families_on(plan: StudyPlan, dataset: str) -> List[str]:
    """The families with final runs on `dataset`: its searched ones and a transferred one."""
    families = list(plan.compare_families(dataset))
    if plan.transfer and dataset in plan.transfer.targets and plan.transfer.family not in families:
        families.append(plan.transfer.family)
    return [f for f in FAMILIES if f in families]


def speed_path(layout: StudyLayout, dataset: str) -> str:
    """RESULTS/compare/DATASET/speed.json."""
    return os.path.join(layout.results, "compare", dataset, "speed.json")


def time_interleaved(models: Dict[str, Any], rounds: int = 10, calls: int = 5, warmup: int = 3) -> Dict[str, Any]:
    """Interleaved timing of several compiled potentials.

    Args:
        models: name -> (flax module, params, padded batch).
        rounds, calls, warmup: rounds of `calls` timed calls per model, after `warmup` untimed calls each.

    Returns:
        {"ms_per_structure": name -> (rounds, calls) list, "n_structures": name -> int}.
    """
    import jax

    from qallegro.potential import energy_forces_stress

    fns, counts = {}, {}
    for name, (model, params, batch) in models.items():
        fn = jax.jit(lambda p, g, m=model: energy_forces_stress(m, p, g, compute_stress=False))
        batch = jax.device_put(batch)
        for _ in range(warmup):
            jax.block_until_ready(fn(params, batch))
        fns[name] = (fn, params, batch)
        counts[name] = len(batch.n_node) - 1
    samples = {name: [] for name in models}
    for _ in range(rounds):
        for name, (fn, params, batch) in fns.items():
            row = []
            for _ in range(calls):
                start = time.perf_counter()
                jax.block_until_ready(fn(params, batch))
                row.append(1000.0 * (time.perf_counter() - start) / counts[name])
            samples[name].append(row)
    return {"ms_per_structure": samples, "n_structures": counts}


def speed_ratio(speed: Dict[str, Any], a: str, b: str) -> Dict[str, float]:
    """A's inference time over B's: ratio of medians over all calls, interval from the per-round ratios."""
    sa, sb = np.asarray(speed["ms_per_structure"][a]), np.asarray(speed["ms_per_structure"][b])
    rounds = np.median(sa, axis=1) / np.median(sb, axis=1)
    return {"estimate": float(np.median(sa) / np.median(sb)), "low": float(np.quantile(rounds, 0.025)),
            "high": float(np.quantile(rounds, 0.975))}


def load_speed(layout: StudyLayout, dataset: str) -> Optional[Dict[str, Any]]:
    """The committed speed measurement of `dataset`, or None."""
    path = speed_path(layout, dataset)
    return json.load(open(path)) if os.path.exists(path) else None


def measure_speed(plan: StudyPlan, layout: StudyLayout, dataset: str, selections: Dict[str, Dict[str, Any]],
                  rounds: int = 10, calls: int = 5, log: Callable[[str], None] = print) -> Dict[str, Any]:
    """Time the selected configurations of every family on `dataset` together and write speed.json.

    Args:
        selections: family -> its selection (`qallegro.study.select`); its ``params`` are applied.
    """
    import jax.numpy as jnp

    from qallegro.data.graphs import batch_and_pad
    from qallegro.data.readers import read_structures
    from qallegro.study.runs import run_config
    from qallegro.train.run import write_json
    from qallegro.train.setup import prepare

    base = plan.datasets[dataset].run_config()
    data = base["dataset"]
    structures = read_structures(data["train"], **(data.get("read") or {}))[:plan.hpo.timing_structures]
    models = {}
    for family, selection in selections.items():
        cfg = run_config(plan, dataset, family, selection["params"])
        prepared = prepare(structures, cfg["model"], seed=0, dtype=jnp.float32)
        models[family] = (prepared.model, prepared.params, batch_and_pad(prepared.train_graphs))
    speed = time_interleaved(models, rounds=rounds, calls=calls)
    speed.update(dataset=dataset, rounds=rounds, calls=calls, load_average=os.getloadavg()[0],
                 median_ms_per_structure={f: float(np.median(v)) for f, v in speed["ms_per_structure"].items()},
                 selections={f: s.get("trial") for f, s in selections.items()})
    os.makedirs(os.path.dirname(speed_path(layout, dataset)), exist_ok=True)
    write_json(speed_path(layout, dataset), speed)
    log(f"speed {dataset}: " + ", ".join(f"{f} {m:.3f} ms/structure"
                                         for f, m in speed["median_ms_per_structure"].items()))
    return speed
