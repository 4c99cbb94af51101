"""Plain multilayer perceptron on invariant scalars."""

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
