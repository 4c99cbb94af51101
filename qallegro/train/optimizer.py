"""Optimiser pieces, all optax: gradient clipping + Adam with an injectable learning rate, a reduce-on-plateau
schedule driven by the validation loss once per epoch, and an exponential moving average of the weights."""

from __future__ import annotations

import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax
import optax.contrib


def make_optimizer(learning_rate: float, clip_norm: float = 10.0) -> optax.GradientTransformation:
    """clip_by_global_norm(clip_norm) -> Adam. The learning rate sits in the state
    (optax.inject_hyperparams), so the plateau schedule can change it between epochs."""

    def chain(learning_rate):
        return optax.chain(optax.clip_by_global_norm(clip_norm), optax.adam(learning_rate))

    return optax.inject_hyperparams(chain)(learning_rate=learning_rate)


def set_learning_rate(opt_state: Any, learning_rate: float) -> Any:
    """Return `opt_state` with a new learning rate (the state of `make_optimizer`)."""
    hyper = dict(opt_state.hyperparams)
    hyper["learning_rate"] = jnp.asarray(learning_rate, dtype=jnp.asarray(hyper["learning_rate"]).dtype)
    return opt_state._replace(hyperparams=hyper)


@functools.lru_cache(maxsize=8)  # one schedule object per setting: its compiled update is shared by runs
def make_plateau(factor: float = 0.5, patience: int = 10, cooldown: int = 0, min_scale: float = 1e-3):
    """optax.contrib.reduce_on_plateau, stepped once per epoch with the validation loss: after `patience` epochs
    without improvement the learning-rate scale is multiplied by `factor` (not below `min_scale`)."""
    return optax.contrib.reduce_on_plateau(factor=factor, patience=patience, cooldown=cooldown,
                                           min_scale=min_scale, rtol=1e-4)


def plateau_step(plateau: optax.GradientTransformationExtraArgs, state: Any, val_loss: float) -> Any:
    """Feed one validation loss to the plateau schedule; the new scale is `state.scale`."""
    return _plateau_update(plateau)(state, jnp.asarray(val_loss, jnp.float32))


@functools.lru_cache(maxsize=8)  # one per schedule object (a run makes one)
def _plateau_update(plateau: optax.GradientTransformationExtraArgs) -> Callable:
    """The schedule's update as one compiled program (eagerly it is about a dozen, compiled at every run's start)."""
    return jax.jit(lambda state, value: plateau.update(jnp.zeros(()), state, value=value)[1])


def ema_update(ema_params: Any, params: Any, decay: float, num_updates: jnp.ndarray) -> Any:
    """EMA of the weights, ema <- decay' * ema + (1 - decay') * params, with decay' = min(decay,
    (1 + n)/(10 + n)) so the average does not remember the random initialisation for long (as nequip)."""
    d = jnp.minimum(decay, (1.0 + num_updates) / (10.0 + num_updates))
    return optax.incremental_update(params, ema_params, step_size=1.0 - d)
