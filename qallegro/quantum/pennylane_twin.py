"""The QDI circuit as a PennyLane QNode: the reference for tests, the route to devices, the analyses' input.

The twin is built from the same :class:`~qallegro.quantum.config.QDIConfig` and the same weight
array as the jax simulator and uses PennyLane's own templates (``StronglyEntanglingLayers`` with
``ranges=1``, ``BasicEntanglerLayers`` with ``RX``), so any agreement is with PennyLane's
definition of those gates, not with a re-typed copy of ours.
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np

from .config import QDIConfig, readout_cascade

__all__ = ["qdi_ops", "make_qnode", "qdi_tape", "to_openqasm"]

_PAULI_NAMES = {"X": "PauliX", "Y": "PauliY", "Z": "PauliZ"}
_ROT_NAMES = {"X": "RX", "Y": "RY", "Z": "RZ"}


def qdi_ops(config: QDIConfig, inputs: Any, weights: Any, *, decompose_templates: bool = False):
    """Queue the QDI gates (inside a QNode or a queuing context) and return the observables.

    Args:
        config: circuit hyperparameters.
        inputs: ``(in_features,)`` or ``(batch, in_features)`` angles (PennyLane parameter
            broadcasting handles the batch); any interface (numpy, jax, autograd).
        weights: ``config.weight_shape``.
        decompose_templates: queue the templates' gates (Rot/RX + CNOT) individually instead of the
            template operations (needed by transforms that do not decompose, e.g. ZX conversion).

    Returns:
        List of ``qml.PauliX/Y/Z(w)`` observables on ``config.measured_wires``.
    """
    import pennylane as qml

    n = config.n_qubits
    wires = qml.wires.Wires(range(n))
    rot = getattr(qml, _ROT_NAMES[config.rotation])
    for w in wires:
        qml.Hadamard(wires=w)
    for c in range(config.n_chunks):
        for k in wires:
            rot(inputs[..., c * n + k], wires=k)
        w_c = weights[c]
        if config.entangling == "strong":
            kwargs = {"ranges": [1] * config.depth} if n > 1 else {}
            tmpl = qml.StronglyEntanglingLayers
            if decompose_templates:
                # creating the operations inside the active queue queues them
                tmpl.compute_decomposition(w_c, wires=wires, ranges=[1] * config.depth,
                                           imprimitive=qml.CNOT)
            else:
                tmpl(w_c, wires=wires, **kwargs)
        else:
            if decompose_templates:
                qml.BasicEntanglerLayers.compute_decomposition(w_c, wires=wires, rotation=qml.RX)
            else:
                qml.BasicEntanglerLayers(w_c, wires=wires, rotation=qml.RX)
    for c_, t_ in readout_cascade(n, config.measurement_mode):
        qml.CNOT(wires=[c_, t_])
    pauli = getattr(qml, _PAULI_NAMES[config.measure])
    return [pauli(w) for w in config.measured_wires]


def make_qnode(config: QDIConfig, device: Optional[Any] = None, *, interface: str = "jax",
               diff_method: str = "backprop", **qnode_kwargs):
    """A QNode ``f(inputs, weights) -> expectations`` equal to :func:`qdi_expectations`.

    Args:
        config: circuit hyperparameters.
        device: a PennyLane device, or a device name; default ``default.qubit`` on ``n_qubits`` wires.
        interface: PennyLane interface (``"jax"``, ``"autograd"``, ``"numpy"``, ...).
        diff_method: ``"backprop"`` (default.qubit), ``"adjoint"`` (lightning), ``"parameter-shift"``...
        **qnode_kwargs: passed to ``qml.QNode``.

    Returns:
        QNode returning a tuple of ``config.n_outputs`` expectation values (each of shape
        ``(batch,)`` when the inputs are broadcast). Stack them with ``jnp.stack(out, -1)``.
    """
    import pennylane as qml

    if device is None or isinstance(device, str):
        device = qml.device(device or "default.qubit", wires=config.n_qubits)

    def circuit(inputs, weights):
        obs = qdi_ops(config, inputs, weights)
        return tuple(qml.expval(o) for o in obs)

    return qml.QNode(circuit, device, interface=interface, diff_method=diff_method, **qnode_kwargs)


def qdi_tape(config: QDIConfig, inputs, weights, *, decompose_templates: bool = True):
    """The QDI circuit as a ``qml.tape.QuantumScript`` with bound (numeric) parameters."""
    import pennylane as qml

    with qml.queuing.AnnotatedQueue() as q:
        obs = qdi_ops(config, np.asarray(inputs), np.asarray(weights),
                      decompose_templates=decompose_templates)
        for o in obs:
            qml.expval(o)
    return qml.tape.QuantumScript.from_queue(q)


def to_openqasm(config: QDIConfig, inputs, weights, *, precision: Optional[int] = 12,
                measure_all: bool = True) -> str:
    """OpenQASM 2.0 text of the circuit with bound input and weight angles.

    The measurement basis change (``H`` for X, ``S^dagger H`` for Y) is appended as gates before the
    final computational-basis measurement, as PennyLane's exporter does.

    Args:
        config: circuit hyperparameters.
        inputs: ``(in_features,)`` angles for one sample.
        weights: ``config.weight_shape``.
        precision: decimal digits of the angles.
        measure_all: end with ``measure q -> c`` on every qubit.

    Raises:
        ValueError: if ``inputs`` is batched.
    """
    if np.ndim(inputs) != 1:
        raise ValueError(f"to_openqasm exports one circuit: inputs must be 1-D, got {np.shape(inputs)}")
    import pennylane as qml

    tape = qdi_tape(config, inputs, weights, decompose_templates=True)
    return qml.to_openqasm(tape, wires=list(range(config.n_qubits)), rotations=True,
                           measure_all=measure_all, precision=precision)
