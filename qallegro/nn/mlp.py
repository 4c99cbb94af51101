"""Multilayer perceptrons on invariant scalars: `MLP` (biases, LeCun-normal weights) and `ScaledMLP`, nequip's
bias-free MLP with forward-normalised weights (the one nequip-allegro 0.8 uses throughout)."""

from __future__ import annotations

from typing import Callable, Sequence

import flax.linen as nn
import jax

ACTIVATIONS = {"silu": jax.nn.silu, "tanh": jax.nn.tanh, "gelu": jax.nn.gelu, "relu": jax.nn.relu}


def get_activation(name: str) -> Callable:
    """Activation function by name; raises ValueError for an unknown name."""
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; choose one of {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]


class MLP(nn.Module):
    """Dense layers of widths `features`, activation between them (not after the last unless
    `activate_final`). Input (..., d_in) -> (..., features[-1])."""

    features: Sequence[int]
    activation: str = "silu"
    activate_final: bool = False
    use_bias: bool = True
    zero_init_final: bool = False  # start the output at exactly 0 (e.g. an energy readout on top of a baseline)

    @nn.compact
    def __call__(self, x):
        act = get_activation(self.activation)
        for k, width in enumerate(self.features):
            final = k == len(self.features) - 1
            init = nn.initializers.zeros if final and self.zero_init_final else nn.initializers.lecun_normal()
            x = nn.Dense(width, use_bias=self.use_bias, kernel_init=init, name=f"dense_{k}")(x)
            if k < len(self.features) - 1 or self.activate_final:
                x = act(x)
        return x


class ScaledDense(nn.Module):
    """Bias-free linear layer with forward-normalised weights, as nequip's ``ScalarLinearLayer``:
    y = x @ (alpha * W), W ~ U(-sqrt 3, sqrt 3) (unit variance), alpha = gain / sqrt(fan_in).

    The scale lives in the forward pass, not in the initial weights, so an optimiser's step on W moves the layer's
    output by alpha times the step: with Adam, the effective learning rate of a wide layer is lr / sqrt(fan_in),
    as in nequip-allegro's training. Input (..., fan_in) -> (..., features).
    """

    features: int
    gain: float = 1.0

    @nn.compact
    def __call__(self, x):
        fan_in = x.shape[-1]
        w = self.param("weight", _unit_uniform, (fan_in, self.features), x.dtype)
        return x @ (w * (self.gain / fan_in ** 0.5)).astype(x.dtype)


def _unit_uniform(key, shape, dtype):
    return jax.random.uniform(key, shape, dtype, -3.0 ** 0.5, 3.0 ** 0.5)


class ScaledMLP(nn.Module):
    """nequip's ``ScalarMLPFunction`` with ``bias=False, forward_weight_init=True``: `ScaledDense` layers of widths
    `features` with the activation between them (not after the last). The first layer has gain 1, the later ones
    gain sqrt 2 (He's gain for the activation before them). Bias-free with a zero-preserving activation, the MLP
    maps 0 to 0: Allegro relies on this to make every edge quantity vanish at r_max. Input (..., d_in) ->
    (..., features[-1])."""

    features: Sequence[int]
    activation: str = "silu"

    @nn.compact
    def __call__(self, x):
        act = get_activation(self.activation)
        for k, width in enumerate(self.features):
            x = ScaledDense(width, gain=1.0 if k == 0 else 2.0 ** 0.5, name=f"dense_{k}")(x)
            if k < len(self.features) - 1:
                x = act(x)
        return x
