"""Quantum part of qallegro: a jax statevector simulator, the QDI circuit and its flax layer.

PennyLane (the twin, analyses, QASM export) is imported lazily, only by the modules that need it.
"""

from .circuit import (
    ENTANGLINGS,
    MEASUREMENT_MODES,
    MEASURES,
    ROTATIONS,
    QDIConfig,
    chunk_unitary,
    init_qdi_weights,
    qdi_expectations,
    qdi_output_size,
    qdi_probabilities,
    qdi_state,
    qdi_weight_shape,
    select_method,
)
from .layer import QDI, uniform_angle_init
from .shots import sample_expectations

__all__ = [
    "ENTANGLINGS",
    "MEASUREMENT_MODES",
    "MEASURES",
    "ROTATIONS",
    "QDI",
    "QDIConfig",
    "chunk_unitary",
    "init_qdi_weights",
    "qdi_expectations",
    "qdi_output_size",
    "qdi_probabilities",
    "qdi_state",
    "qdi_weight_shape",
    "sample_expectations",
    "select_method",
    "uniform_angle_init",
]
