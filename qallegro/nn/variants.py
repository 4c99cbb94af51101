"""The seed paper's two variants of Allegro (Laskaris et al., arXiv:2602.16908): an extra classical MLP block
and a quantum depth-infused (QDI) hybrid block, each acting on the invariant edge latent x_ij.

The block is residual and multiplied by the cutoff: x <- x + f_cut(r_ij) * block(x). Only invariant scalars
enter it, so E(3) equivariance is untouched, and its output layer starts at zero, so an untrained variant equals
the Allegro it extends (the comparison starts from the same function).

Position (`block_position`): the paper does not publish where its layers sit. The default here is "readout":
the block runs once per edge (not once per layer) on the final latent, right before the edge-energy MLP, which
is the cheapest place and the most direct reading of "extra layers" on top of Allegro. "two_body" and "latent"
(one block after every layer) are available for the search.
"""

from __future__ import annotations

import math
from typing import Optional

import flax.linen as nn
import jax.numpy as jnp

from qallegro.nn.allegro import Allegro
from qallegro.nn.mlp import MLP
from qallegro.quantum.config import QDIConfig, qdi_config_from, qdi_default
from qallegro.quantum.layer import QDI


class AllegroMLP(Allegro):
    """Allegro + a classical MLP block on the edge latent.

    Attributes (besides Allegro's):
        block_depth: number of dense layers in the block (>= 1).
        block_width: width of its hidden layers.
        block_activation: their nonlinearity.

    Per-edge cost: about 2·(d·w + (depth-2)·w² + w·d) FLOPs for latent size d and width w.
    """

    block_position: Optional[str] = "readout"
    block_depth: int = 2
    block_width: int = 64
    block_activation: str = "silu"

    def edge_block(self, x, name):
        if self.block_depth < 1:
            raise ValueError(f"block_depth must be >= 1, got {self.block_depth}")
        widths = (self.block_width,) * (self.block_depth - 1) + (x.shape[-1],)
        return MLP(widths, self.block_activation, zero_init_final=True, name=name)(x)


class AllegroQDI(Allegro):
    """Allegro + a QDI hybrid block: linear map of the latent to `in_features` angles bounded by pi·tanh ->
    QDI circuit (qallegro.quantum) -> Pauli expectations -> linear map back to the latent size.

    Attributes (besides Allegro's): the circuit's hyperparameters n_qubits, qdi_depth (variational layers),
    rotation, entangling, measure, measurement_mode, in_features (default n_qubits) and shots (None: exact
    expectations; N: finite-shot estimates, which need a "shots" PRNG key in `apply`). They are model-config
    keys; their defaults are those of qallegro.quantum.QDIConfig and of the QDI layer.
    Per-edge cost: one statevector simulation of 2^n_qubits amplitudes through
    (in_features / n_qubits) · qdi_depth variational layers.
    """

    block_position: Optional[str] = "readout"
    n_qubits: int = qdi_default("n_qubits")
    qdi_depth: int = qdi_default("depth")
    rotation: str = qdi_default("rotation")
    entangling: str = qdi_default("entangling")
    measure: str = qdi_default("measure")
    measurement_mode: str = qdi_default("measurement_mode")
    in_features: Optional[int] = qdi_default("in_features")
    shots: Optional[int] = QDI.shots

    def qdi_config(self) -> QDIConfig:
        """The block's circuit (validated); `qdi_depth` is the circuit's `depth` (Allegro has depths of its own)."""
        return qdi_config_from(self, {"depth": "qdi_depth"}, in_features=self.in_features or self.n_qubits)

    def edge_block(self, x, name):
        config = self.qdi_config()
        angles = math.pi * jnp.tanh(nn.Dense(config.in_features, name=f"{name}_encode")(x))
        expectations = QDI.from_config(config, shots=self.shots, name=f"{name}_circuit")(angles)
        return nn.Dense(x.shape[-1], kernel_init=nn.initializers.zeros, name=f"{name}_decode")(
            expectations.astype(x.dtype))
