"""Quantum part of qallegro: a jax statevector simulator, the QDI circuit and its flax layer.

Modules: :mod:`.simulator` (statevector primitives), :mod:`.config` (the circuit's hyperparameters),
:mod:`.circuit` (definition and entry points), :mod:`.gate_path` / :mod:`.fused_path` / :mod:`.kernels`
(the two simulation paths), :mod:`.method` (the choice between them), :mod:`.shots` (finite-shot
estimates), :mod:`.layer` (flax), :mod:`.pennylane_twin`, :mod:`.analysis` (circuit analyses, pure
computation) and :mod:`.report` (their figures and JSON files).

PennyLane (the twin, analyses, QASM export) and matplotlib (reports) are imported lazily, only by the
functions that need them.
"""

from .circuit import qdi_expectations, qdi_probabilities, qdi_state, z_expectations
from .config import (
    ENTANGLINGS,
    MEASUREMENT_MODES,
    MEASURES,
    ROTATIONS,
    QDIConfig,
    init_qdi_weights,
    qdi_output_size,
    qdi_weight_shape,
    uniform_angle_init,
)
from .fused_path import chunk_unitary
from .layer import QDI
from .method import select_method
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
    "z_expectations",
]
