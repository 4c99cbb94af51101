"""Flax (linen) module for the QDI quantum layer.

The layer exposes the circuit's hyperparameters as its own attributes (the flax way: a module is
configured by its fields) with the defaults declared by :class:`~qallegro.quantum.config.QDIConfig`,
and turns them into a validated ``QDIConfig`` when it is called.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from .circuit import qdi_expectations
from .config import QDIConfig, qdi_config_from, qdi_default, qdi_output_size, uniform_angle_init
from .shots import sample_expectations

__all__ = ["QDI"]


class QDI(nn.Module):
    """Quantum depth-infused layer: angles in, Pauli expectation values out.

    The circuit is defined in :mod:`qallegro.quantum.circuit`, its hyperparameters in
    :class:`~qallegro.quantum.config.QDIConfig`. The module holds one parameter, ``"weights"``,
    of shape ``(n_chunks, depth, n_qubits, 3)`` (strong entangling) or ``(n_chunks, depth,
    n_qubits)`` (basic), initialised by ``weight_init`` (default i.i.d. ``Uniform[0, 2 pi)``).

    Inputs are used as rotation angles as they are (radians): bound them upstream (e.g.
    ``pi * tanh``) if needed. Input ``(..., in_features)`` -> output ``(..., n_outputs)`` with
    ``n_outputs = qdi_output_size(n_qubits, measurement_mode)``, every value in ``[-1, 1]``.

    Attributes:
        n_qubits, depth, rotation, entangling, measure, measurement_mode: see ``QDIConfig`` (same
            defaults).
        in_features: number of input angles (multiple of ``n_qubits``); ``None`` takes it from the
            input's last axis.
        shots: ``None`` for exact expectations; an integer for finite-shot estimates sampled from
            the exact Born distribution (gradients are those of the exact values). Needs a PRNG
            key: the ``rng`` argument or the ``"shots"`` rng collection.
        method: simulation path, ``"auto" | "fused" | "gates"`` (see ``select_method``).
        weight_init: initializer ``(key, shape, dtype) -> array``.
        param_dtype: dtype of the weights. Computation runs in float64 when x64 is enabled and
            the inputs or weights are float64, else float32.

    Raises:
        ValueError: at first call, for invalid hyperparameters or an input whose last axis is not
            ``in_features``; for ``shots`` without a PRNG key.
    """

    n_qubits: int = qdi_default("n_qubits")
    depth: int = qdi_default("depth")
    in_features: Optional[int] = qdi_default("in_features")
    rotation: str = qdi_default("rotation")
    entangling: str = qdi_default("entangling")
    measure: str = qdi_default("measure")
    measurement_mode: str = qdi_default("measurement_mode")
    shots: Optional[int] = None
    method: str = "auto"
    weight_init: Callable[..., Any] = uniform_angle_init()
    param_dtype: Any = jnp.float32

    @classmethod
    def from_config(cls, config: QDIConfig, **kwargs) -> "QDI":
        """The layer for ``config``; ``kwargs`` set the other attributes (``shots``, ``method``, ``name``, ...)."""
        return cls(**dataclasses.asdict(config), **kwargs)

    def config(self, in_features: Optional[int] = None) -> QDIConfig:
        """The validated circuit hyperparameters (``in_features`` falls back to the attribute)."""
        return qdi_config_from(self, in_features=self.in_features if self.in_features is not None else in_features)

    @property
    def n_outputs(self) -> int:
        """Output size, ``qdi_output_size(n_qubits, measurement_mode)``."""
        return qdi_output_size(self.n_qubits, self.measurement_mode)

    @nn.compact
    def __call__(self, inputs: jax.Array, *, rng: Optional[jax.Array] = None) -> jax.Array:
        """Evaluate the circuit on every input row.

        Args:
            inputs: ``(..., in_features)`` angles in radians.
            rng: PRNG key for ``shots``; defaults to ``self.make_rng("shots")``.

        Returns:
            ``(..., n_outputs)`` expectations (or their finite-shot estimates).
        """
        cfg = self.config(inputs.shape[-1])
        if inputs.shape[-1] != cfg.in_features:
            raise ValueError(
                f"QDI expects inputs with last axis in_features={cfg.in_features}, got {inputs.shape}"
            )
        weights = self.param("weights", self.weight_init, cfg.weight_shape, self.param_dtype)
        if self.shots is None:
            return qdi_expectations(cfg, inputs, weights, method=self.method)
        key = rng if rng is not None else self.make_rng("shots")
        return sample_expectations(cfg, inputs, weights, self.shots, key, method=self.method)
