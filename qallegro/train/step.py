"""The training state and the jit-compiled steps, shared by the single-device loop and the data-parallel path.

`TrainState` holds everything a step changes (parameters, their EMA, the optimiser state, the step count);
`apply_gradients` is the one optimiser + EMA update both paths use, so they give the same parameters.
"""

from __future__ import annotations

import collections
from typing import Any, Callable, NamedTuple

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import optax

from qallegro.potential.graph import energy_dtype, energy_forces_stress, graph_energies
from qallegro.train.config import TrainConfig
from qallegro.train.loss import error_sums, loss_predictions, weighted_loss
from qallegro.train.optimizer import ema_update, make_optimizer


@flax.struct.dataclass
class TrainState:
    """What one training step updates (a pytree; checkpointed as is).

    Attributes:
        params: the flax variables being trained.
        ema_params: their exponential moving average (the weights that are validated and saved).
        opt_state: the optax state (Adam moments, the injected learning rate).
        step: () int32, optimiser steps taken.
    """

    params: Any
    ema_params: Any
    opt_state: Any
    step: jax.Array


def init_train_state(params: Any, optimizer: optax.GradientTransformation) -> TrainState:
    """The state before the first step: EMA equal to the parameters, a fresh optimiser state, step 0."""
    # optimizer.init jit-compiled: one program instead of one eager operation per distinct leaf shape
    return TrainState(params=params, ema_params=params, opt_state=jax.jit(optimizer.init)(params),
                      step=jnp.zeros((), jnp.int32))


def apply_gradients(state: TrainState, grads: Any, optimizer: optax.GradientTransformation,
                    cfg: TrainConfig) -> TrainState:
    """One optimiser step and the EMA update (shared by the single-device and data-parallel steps)."""
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = jax.tree.map(lambda p, u: p + u, state.params, updates)
    ema = ema_update(state.ema_params, params, cfg.ema_decay, state.step.astype(jnp.float32))
    return TrainState(params=params, ema_params=ema, opt_state=opt_state, step=state.step + 1)


class Steps(NamedTuple):
    """The optimiser and the jit-compiled step functions of one model and training config.

    Attributes:
        optimizer: the optax transformation (Adam with clipping and an injectable learning rate).
        train_step: (TrainState, padded graph) -> (TrainState, loss): one step plus the EMA update.
        eval_step: (params, padded graph, shift_correction=None) -> (error sums, predictions), see
            `qallegro.train.loss.error_sums`; shift_correction: (S,) eV/atom added to the model's per-species
            energy shifts (a closed-form refit, `qallegro.train.evaluation.fit_shift_correction`). It is an
            argument of the compiled function: any correction, zero included, reuses one compilation.
    """

    optimizer: optax.GradientTransformation
    train_step: Callable
    eval_step: Callable


#: The steps of the last few (model, training settings) pairs: a run with the same model and loss settings as an
#: earlier run of the process (another seed's split with the same statistics, a resumed or extended run, the next
#: test) gets the same jitted functions, so JAX neither traces nor lowers them again. Bounded: each entry holds a
#: model and its compiled programs.
_STEPS: "collections.OrderedDict[tuple, Any]" = collections.OrderedDict()
_STEPS_SIZE = 8


def _memoized(kind: str, model: nn.Module, cfg: TrainConfig, extra: tuple, build: Callable[[], Any]) -> Any:
    """`build()`, or what it returned for the same (kind, model, trace-relevant settings of `cfg`, extra)."""
    stochastic = getattr(model, "shots", None) is not None
    # every field of `cfg` that the steps read (the seed only when it draws shot noise); the learning rate only
    # initialises the optimiser state, but the optimiser is part of what is returned
    key = (kind, model, extra, cfg.learning_rate, cfg.clip_norm, cfg.energy_weight, cfg.forces_weight,
           cfg.stress_weight, cfg.ema_decay, cfg.seed if stochastic else None)
    try:
        hit = _STEPS.get(key)
    except TypeError:  # an unhashable model attribute: no sharing
        return build()
    if hit is None:
        hit = _STEPS[key] = build()
        while len(_STEPS) > _STEPS_SIZE:
            _STEPS.popitem(last=False)
    _STEPS.move_to_end(key)
    return hit


def make_steps(model: nn.Module, cfg: TrainConfig, compute_stress: bool) -> Steps:
    """jit-compiled training and evaluation steps of `model` under the loss weights of `cfg`.

    A finite-shot QDI model (``model.shots`` set) draws a fresh shot-noise key per step from (cfg.seed, step);
    evaluation uses one fixed key. The same (model, settings) give the same functions within a process (so the
    jit caches of an earlier run are reused).
    """
    return _memoized("steps", model, cfg, (bool(compute_stress),), lambda: _build_steps(model, cfg, compute_stress))


def _build_steps(model: nn.Module, cfg: TrainConfig, compute_stress: bool) -> Steps:
    optimizer = make_optimizer(cfg.learning_rate, cfg.clip_norm)
    stochastic = getattr(model, "shots", None) is not None
    base_key = jax.random.PRNGKey(cfg.seed)

    def loss_fn(params, graph, rng):
        pred = loss_predictions(model, params, graph, cfg.forces_weight, cfg.stress_weight, compute_stress, rng)
        sums = error_sums(pred, graph)
        return weighted_loss(sums, cfg.energy_weight, cfg.forces_weight, cfg.stress_weight), sums

    @jax.jit
    def train_step(state: TrainState, graph):
        rng = jax.random.fold_in(base_key, state.step) if stochastic else None
        (loss, _), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params, graph, rng)
        return apply_gradients(state, grads, optimizer, cfg), loss

    @jax.jit
    def compiled_eval_step(params, graph, shift_correction):
        rng = jax.random.fold_in(base_key, 2**31 - 1) if stochastic else None
        pred = energy_forces_stress(model, params, graph, compute_stress=compute_stress, rng=rng,
                                    shift_correction=shift_correction)
        return error_sums(pred, graph), pred

    def eval_step(params, graph, shift_correction=None):
        if shift_correction is None:  # a zero array, not None: the same compiled function either way
            shift_correction = no_shift_correction(model)
        return compiled_eval_step(params, graph, jnp.asarray(shift_correction, energy_dtype()))

    eval_step.compiled = compiled_eval_step  # the jit-compiled function (its cache counts compilations)
    return Steps(optimizer, train_step, eval_step)


def no_shift_correction(model: nn.Module) -> jnp.ndarray:
    """(S,) zeros in `energy_dtype()`: the shift correction of a model evaluated as it is."""
    return jnp.zeros((model.num_species,), energy_dtype())


def make_energy_step(model: nn.Module, cfg: TrainConfig) -> Callable:
    """jit-compiled (params, padded graph) -> (G,) energies in eV (`energy_dtype()`), without forces and without
    any shift correction: what the closed-form shift refit needs (`qallegro.train.evaluation.fit_shift_correction`).
    A finite-shot QDI model uses the evaluation step's fixed shot-noise key. Memoized as `make_steps`."""
    return _memoized("energy", model, cfg, (), lambda: _build_energy_step(model, cfg))


def _build_energy_step(model: nn.Module, cfg: TrainConfig) -> Callable:
    stochastic = getattr(model, "shots", None) is not None
    base_key = jax.random.PRNGKey(cfg.seed)

    @jax.jit
    def energy_step(params, graph):
        rng = jax.random.fold_in(base_key, 2**31 - 1) if stochastic else None
        return graph_energies(model, params, graph.nodes["positions"], graph, rng=rng)

    return energy_step
