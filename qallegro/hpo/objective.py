"""The objective of a hyperparameter study: time one configuration exactly, train it, then measure it.

Objectives, both minimised (the seed paper's pair): the validation forces MAE in meV/Å (energy MAE in meV for
data without forces, such as QM9) and the inference time, the median ms per structure of the jit-compiled
energy+forces function on a fixed batch (`qallegro.timing.time_inference`).

Inference time depends only on the architecture (the ``model`` section and the dtype), not on the weights or
the training hyperparameters, so `InferenceTimer` measures it *before* training, on the model with random
parameters, once per architecture (cached in memory and optionally in a JSON file). The objective returns that
exact value, and SAMO-COBRA can take the same function as an inexpensive objective (IOC-SAMO-COBRA; de Winter,
van Stein, Bäck, Memetic Computing 14, 2022) or an inference-time ceiling as an exact constraint.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import socket
from typing import Any, Callable, Dict, Mapping, Optional, Sequence, Union

import numpy as np
import optuna
from optuna.distributions import CategoricalDistribution, FloatDistribution

from qallegro.data.structure import Structure
from qallegro.hpo.study import set_by_path, skip_if_duplicate
from qallegro.train.run import run_training, write_json

#: the objective: the fastest of the timed calls, ms per structure (`qallegro.timing.time_inference`); on a
#: machine shared with other jobs the median grows with the load, the fastest call much less
OBJECTIVE_KEY = "min_ms_per_structure"
#: the keys of a timing record (`InferenceTimer.record`) kept in a trial's user attributes
TIMING_KEYS = ("min_ms_per_structure", "median_ms_per_structure", "p10_ms_per_batch", "p90_ms_per_batch",
               "n_structures", "compile_s", "n_parameters", "load_average", "cpu", "device")


def suggest(trial, name: str, dist) -> Any:
    """Ask `trial` for parameter `name` of an Optuna distribution (records it with that distribution)."""
    if isinstance(dist, CategoricalDistribution):
        return trial.suggest_categorical(name, dist.choices)
    if isinstance(dist, FloatDistribution):
        return trial.suggest_float(name, dist.low, dist.high, log=dist.log, step=dist.step)
    return trial.suggest_int(name, dist.low, dist.high, log=dist.log, step=dist.step)


def params_key(params: Dict[str, Any]) -> str:
    """A short stable hash of a configuration: its training directory's name."""
    return hashlib.sha1(json.dumps(params, sort_keys=True, default=str).encode()).hexdigest()[:12]


def architecture_of(cfg: Mapping[str, Any]) -> Dict[str, Any]:
    """What inference time depends on: the model section (family and hyperparameters) and the network dtype."""
    return {"model": dict(cfg["model"]), "dtype": cfg.get("dtype", "float32")}


class InferenceTimer:
    """Exact inference time of a configuration before it trains, measured once per architecture.

    ``timer(params)`` applies the dotted parameters to `base_cfg` (`set_by_path`), builds that model on the
    timing structures (statistics fitted on them) with random parameters (`qallegro.train.setup.prepare`), and
    times the jit-compiled energy+forces function on one fixed padded batch of them
    (`qallegro.timing.time_inference`: median of `repeats` calls after warm-up, with block_until_ready). The cost
    of a compiled model does not depend on its weights, so this is the trained model's inference time, known
    before any training. Configurations that differ only in training hyperparameters share one measurement.

    Args:
        base_cfg: the run config the parameters override (only ``model`` and ``dtype`` matter here).
        timing_set: the structures of the fixed timing batch (e.g. the first 10 training structures), or a
            function returning them, called at the first measurement (reading a large file only when needed).
        cache_path: optional JSON file of earlier measurements {architecture hash: record}; read at start and
            rewritten (atomically, merged with what another worker wrote meanwhile) after every new measurement,
            so a resumed study never times an architecture twice. Records name the machine and the load average
            at measurement: timings from different machines must not be mixed in one study.
        repeats, warmup: timed and untimed calls.
        seed: seed of the random parameters.
        log: where a line per new measurement goes.

    Raises:
        ValueError: an empty timing set; `n_structures` missing with a lazy timing set.
    """

    def __init__(self, base_cfg: Mapping[str, Any], timing_set: Union[Sequence[Structure], Callable[[], Sequence]],
                 cache_path: Optional[str] = None, repeats: int = 20, warmup: int = 3, seed: int = 0,
                 log: Callable[[str], None] = print, n_structures: Optional[int] = None):
        self._load = timing_set if callable(timing_set) else None
        self._timing_set = None if callable(timing_set) else list(timing_set)
        self.n_structures = n_structures if self._load else len(self._timing_set)
        if not self.n_structures:
            raise ValueError("InferenceTimer needs at least one timing structure (and n_structures with a lazy set)")
        self.base_cfg = base_cfg
        self.cache_path = cache_path
        self.repeats, self.warmup, self.seed, self.log = repeats, warmup, seed, log
        self.cache: Dict[str, Dict[str, Any]] = {}
        self.measured = 0  # new measurements made by this timer (not read from the cache)
        if cache_path and os.path.exists(cache_path):
            with open(cache_path) as f:
                self.cache = json.load(f)

    def key(self, params: Mapping[str, Any]) -> str:
        """The architecture hash of a configuration (its cache key)."""
        arch = architecture_of(set_by_path(dict(self.base_cfg), dict(params)))
        arch["timing_structures"] = self.n_structures
        return params_key(arch)

    @property
    def timing_set(self):
        """The timing structures (read now if they were given as a function).

        Raises:
            ValueError: the function returned another number of structures than `n_structures`.
        """
        if self._timing_set is None:
            self._timing_set = list(self._load())
            if len(self._timing_set) != self.n_structures:
                raise ValueError(f"the timing set has {len(self._timing_set)} structures, {self.n_structures} expected")
        return self._timing_set

    def record(self, params: Mapping[str, Any]) -> Dict[str, Any]:
        """The timing record of a configuration (measured now unless cached): `TIMING_KEYS` and the
        architecture."""
        key = self.key(params)
        if OBJECTIVE_KEY not in self.cache.get(key, {}):  # a record from before the objective key: measure again
            self.cache[key] = self._measure(set_by_path(dict(self.base_cfg), dict(params)))
            self.measured += 1
            self._save()
        return self.cache[key]

    def __call__(self, params: Mapping[str, Any]) -> float:
        """Inference time in ms per structure (the fastest timed call) of the configuration `params` (dotted
        names)."""
        return float(self.record(params)[OBJECTIVE_KEY])

    def _measure(self, cfg: Dict[str, Any]) -> Dict[str, Any]:
        import jax.numpy as jnp

        from qallegro.data.graphs import batch_and_pad
        from qallegro.timing import time_inference
        from qallegro.train.setup import count_parameters, prepare

        dtype = jnp.float64 if cfg.get("dtype") == "float64" else jnp.float32
        prepared = prepare(self.timing_set, cfg["model"], seed=self.seed, dtype=dtype)
        batch = batch_and_pad(prepared.train_graphs)
        timing = time_inference(prepared.model, prepared.params, batch, repeats=self.repeats, warmup=self.warmup)
        record = {k: timing[k] for k in TIMING_KEYS if k in timing}
        record.update(n_parameters=count_parameters(prepared.params), load_average=os.getloadavg()[0],
                      machine=platform.node(), architecture=architecture_of(cfg))
        self.log(f"inference time {record[OBJECTIVE_KEY]:.3f} ms/structure (median "
                 f"{record['median_ms_per_structure']:.3f}) "
                 f"({record['n_parameters']} parameters, compiled in {record['compile_s']:.1f} s, "
                 f"load {record['load_average']:.1f})")
        return record

    def _save(self) -> None:
        if not self.cache_path:
            return
        merged = {}
        if os.path.exists(self.cache_path):
            with open(self.cache_path) as f:
                merged = json.load(f)
        merged.update(self.cache)
        self.cache = merged
        os.makedirs(os.path.dirname(os.path.abspath(self.cache_path)), exist_ok=True)
        write_json(self.cache_path, merged)


def make_objective(base_cfg: Dict[str, Any], space: Dict[str, Any], out: str, seed: int,
                   timing_set: Sequence[Structure], log: Callable[[str], None] = print,
                   timer: Optional[InferenceTimer] = None, trials_dir: Optional[str] = None,
                   inference_ceiling_ms: Optional[float] = None) -> Callable:
    """The study objective: trial -> (validation forces MAE in meV/Å, or energy MAE in meV without forces;
    inference median ms per structure). Details go to the trial's user attributes.

    The inference time is measured before training (`InferenceTimer`, exact and cached per architecture); a
    configuration over `inference_ceiling_ms` is pruned without training (a sampler with the ceiling as a cheap
    constraint never proposes one).

    Args:
        base_cfg: the run config (see `qallegro.train.run.run_training`) that each trial's parameters override;
            parameter names are dotted paths into it, e.g. "model.num_layers".
        space: parameter name -> Optuna distribution.
        out: the study directory (trials.log; trial directories are relative to it in the user attributes).
            Each trial records where its files are: user attributes "host" (the machine's name), "pid" (the
            worker process), "out" (this absolute path on that machine) and "run_dir" (relative to "out"), so
            the trials of a study shared by several machines can be found from any of them.
        seed: seed of every trial's split and initialisation.
        timing_set: the structures of the fixed inference-timing batch (used only when `timer` is None).
        log: where progress lines go.
        timer: the inference timer (default: a new `InferenceTimer(base_cfg, timing_set)`).
        trials_dir: where trials train, one directory per configuration, TRIALS_DIR/<hash of its parameters>,
            resumed from its last checkpoint when present (default OUT/trials).
        inference_ceiling_ms: optional ceiling on the inference time (ms per structure).
    """
    timer = timer or InferenceTimer(base_cfg, timing_set, log=log)
    trials_dir = trials_dir or os.path.join(out, "trials")

    def objective(trial):
        params = {name: suggest(trial, name, dist) for name, dist in space.items()}
        skip_if_duplicate(trial)
        timing = timer.record(params)
        ms = float(timing[OBJECTIVE_KEY])
        trial.set_user_attr("timing", {k: timing[k] for k in TIMING_KEYS if k in timing})
        if inference_ceiling_ms is not None and not ms <= inference_ceiling_ms:
            trial.set_user_attr("pruned", f"inference {ms:.3f} ms/structure over the ceiling {inference_ceiling_ms}")
            raise optuna.TrialPruned(f"inference time {ms:.3f} ms over the ceiling {inference_ceiling_ms} ms")
        cfg = set_by_path(base_cfg, params)
        cfg["dataset"] = dict(cfg["dataset"], test=None)  # the search sees validation data only
        run_dir = os.path.join(trials_dir, params_key(params))
        # where the trial's files are, found from any machine: run_dir is relative to OUT on the machine HOST
        trial.set_user_attr("run_dir", os.path.relpath(run_dir, out))
        trial.set_user_attr("out", os.path.abspath(out))
        trial.set_user_attr("host", socket.gethostname())
        trial.set_user_attr("pid", os.getpid())
        resume = os.path.isdir(os.path.join(run_dir, "checkpoints", "last"))
        line = f"trial {trial.number}: {params} -> {run_dir}{' (resuming)' if resume else ''}"
        log(line)
        with open(os.path.join(out, "trials.log"), "a") as logfile:
            print(line, file=logfile, flush=True)  # the training lines below belong to this trial
            results = run_training(cfg, run_dir, seed=seed, resume=resume, title=f"trial {trial.number}",
                                   log=lambda s: print(s, file=logfile, flush=True))
        val = results["validation"]
        has_forces = val.get("forces_mae") is not None and np.isfinite(val["forces_mae"])
        error = float(val["forces_mae"] if has_forces else val["energy_mae"])
        trial.set_user_attr("validation", val)
        trial.set_user_attr("error_metric", "forces_mae (meV/Å)" if has_forces else "energy_mae (meV)")
        trial.set_user_attr("n_parameters", results["n_parameters"])
        trial.set_user_attr("epochs", results["epochs"])
        trial.set_user_attr("train_minutes", results["train_minutes"])
        trial.set_user_attr("resumed", resume)
        log(f"trial {trial.number}: {'forces' if has_forces else 'energy'} MAE {error:.1f}, "
            f"{ms:.2f} ms/structure, {results['epochs']} epochs")
        return error, ms

    return objective


