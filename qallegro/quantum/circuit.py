"""The quantum depth-infused (QDI) circuit: its definition and public entry points.

Definition (``../shared/DESIGN.md``, "The QDI circuit"; hyperparameter surface of Terra Quantum's
QDI layer, used as the hybrid layer of Laskaris et al., arXiv:2602.16908):

``|0...0>  ->  H on every qubit  ->  for c = 0 .. n_chunks-1:
[ R(x[c*n + k]) on qubit k for every k  ->  ``depth`` variational layers with weights w[c] ]
->  readout``

* ``R`` is ``RX``, ``RY`` or ``RZ`` (``rotation``). The input of ``in_features = n_chunks * n_qubits``
  angles is cut into ``n_chunks`` consecutive chunks of ``n_qubits`` that are uploaded one after the
  other (data re-uploading, the "lattice of features"); feature ``c*n + k`` drives qubit ``k`` in
  chunk ``c``. Every chunk has its own variational weights.
* ``entangling="strong"``: per layer ``Rot(w0, w1, w2)`` on every qubit then a CNOT ring
  ``CNOT(k, k+1 mod n)`` for ``k = 0..n-1`` (PennyLane's ``StronglyEntanglingLayers`` with
  ``ranges=1``; for ``n=2`` this is ``CNOT(0,1) CNOT(1,0)``).
  ``entangling="basic"``: per layer ``RX(w)`` on every qubit then the same ring, except that for
  ``n=2`` it is the single ``CNOT(0,1)`` (PennyLane's ``BasicEntanglerLayers``). No CNOTs for ``n=1``.
* Readout: expectation of the Pauli ``measure`` (X, Y or Z) on the wires selected by
  ``measurement_mode``: ``"none"`` every qubit (``n`` outputs); ``"even"`` qubits 0, 2, 4, ...
  (``ceil(n/2)`` outputs); ``"single"`` a CNOT cascade ``CNOT(0,1) ... CNOT(n-2,n-1)`` then qubit
  ``n-1`` only (1 output; for ``measure="Z"`` this is the parity ``<Z_0 ... Z_{n-1}>``).

Note that ``H`` then ``RX`` leaves ``|+>`` invariant up to a global phase, so with
``rotation="X"`` the first chunk's data has no effect on the expectations; it acts from the second
chunk on. With ``entangling="basic"`` as well (RX layers and CNOTs also keep ``|+...+>``) the
circuit ignores its inputs and weights altogether. These are properties of the definition, kept
as they are.

Where the parts live:

* :mod:`qallegro.quantum.config`: the hyperparameters (:class:`~qallegro.quantum.config.QDIConfig`), their
  validation, static shapes and the weight initialiser;
* :mod:`qallegro.quantum.gate_path` and :mod:`qallegro.quantum.fused_path`: the two simulation paths, which
  give the same numbers (tests check both against PennyLane), on the real-pair kernels of
  :mod:`qallegro.quantum.kernels`;
* :mod:`qallegro.quantum.method`: the choice between them (``method="auto"``);
* this module: validation of inputs and weights, the precision rule, and the entry points
  :func:`qdi_state`, :func:`qdi_probabilities`, :func:`z_expectations`, :func:`qdi_expectations`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from . import gate_path, kernels
from . import simulator as sim
from .config import QDIConfig
from .method import PATHS, resolve_method

__all__ = ["qdi_state", "qdi_probabilities", "z_expectations", "qdi_expectations"]


def _prepare(cfg: QDIConfig, inputs, weights):
    """Check shapes and cast both to the real dtype of the computation; returns ``(inputs, weights, rdt)``."""
    inputs = jnp.asarray(inputs)
    weights = jnp.asarray(weights)
    if inputs.ndim < 1 or inputs.shape[-1] != cfg.in_features:
        raise ValueError(
            f"inputs must have shape (..., in_features={cfg.in_features}), got {inputs.shape}"
        )
    if weights.shape != cfg.weight_shape:
        raise ValueError(f"weights must have shape {cfg.weight_shape}, got {weights.shape}")
    rdt = sim.real_dtype(inputs, weights)
    return inputs.astype(rdt), weights.astype(rdt), rdt


def qdi_state(config: QDIConfig, inputs, weights, *, use_perm: bool = False) -> jax.Array:
    """Final state of the QDI circuit before the readout (before the ``"single"`` cascade), gate by gate.

    Args:
        config: circuit hyperparameters.
        inputs: ``(*batch, in_features)`` angles in radians.
        weights: ``config.weight_shape``.
        use_perm: apply each CNOT ring as one basis permutation (gather) instead of CNOT by CNOT.

    Returns:
        ``(*batch, 2, ..., 2)`` complex state (complex128 under x64 with float64 inputs).

    Raises:
        ValueError: if the shapes of ``inputs`` or ``weights`` do not match ``config``.
    """
    inputs, weights, _ = _prepare(config, inputs, weights)
    return gate_path.final_state(config, inputs, weights, use_perm=use_perm)


def qdi_probabilities(config: QDIConfig, inputs, weights, *, method: str = "auto") -> jax.Array:
    """Born probabilities in the measurement basis: after the readout cascade (``"single"``) and the
    basis change that maps the measured Pauli to Z on the measured wires.

    Sampling bitstrings from these is what a device does with finite shots (:mod:`.shots`); the
    expectation of measured wire ``w`` is ``sum_s p_s (-1)^{bit_w(s)}`` (:func:`z_expectations`).

    Args:
        config, inputs, weights, method: as :func:`qdi_expectations`.

    Returns:
        ``(*batch, 2**n_qubits)`` real, non-negative, summing to 1 over the last axis; basis state
        ``s`` has wire 0 as its most significant bit.

    Raises:
        ValueError: as :func:`qdi_expectations`.
    """
    inputs, weights, rdt = _prepare(config, inputs, weights)
    batch = inputs.shape[:-1]
    x = inputs.reshape((-1, config.in_features))
    method = resolve_method(config, method, x.shape[0], rdt)
    probs = PATHS[method](config, x, weights)
    return probs.reshape(batch + (config.dim,))


def z_expectations(config: QDIConfig, probabilities) -> jax.Array:
    """Expectations of the measured Pauli from measurement-basis probabilities.

    ``<P_w> = sum_s p_s (-1)^{bit_w(s)}`` for each of ``config.measured_wires``: the readout of
    :func:`qdi_expectations` applied to :func:`qdi_probabilities` (or to a distribution estimated
    otherwise, e.g. from counts).

    Args:
        config: circuit hyperparameters.
        probabilities: ``(*batch, 2**n_qubits)`` probabilities of the basis states (wire 0 the most
            significant bit).

    Returns:
        ``(*batch, config.n_outputs)`` expectations in ``[-1, 1]``.

    Raises:
        ValueError: if the last axis of ``probabilities`` is not ``2**n_qubits``.
    """
    probabilities = jnp.asarray(probabilities)
    if probabilities.ndim < 1 or probabilities.shape[-1] != config.dim:
        raise ValueError(f"probabilities must have shape (..., 2**n_qubits={config.dim}), got {probabilities.shape}")
    batch = probabilities.shape[:-1]
    flat = probabilities.reshape((-1, config.dim))
    z = kernels.z_expectations(flat, n=config.n_qubits, mode=config.measurement_mode)
    return z.reshape(batch + (config.n_outputs,))


def qdi_expectations(config: QDIConfig, inputs, weights, *, method: str = "auto") -> jax.Array:
    """Exact expectation values of the QDI circuit, ``<psi(x, w)| P_k |psi(x, w)>`` for the measured
    wires ``k`` (after the CNOT cascade in ``"single"`` mode).

    Args:
        config: circuit hyperparameters.
        inputs: ``(*batch, in_features)`` angles in radians (float64 computation under x64 when
            either ``inputs`` or ``weights`` is float64, else float32).
        weights: ``config.weight_shape`` angles in radians.
        method: ``"auto"`` (:func:`~qallegro.quantum.method.select_method`), ``"fused"`` or
            ``"gates"``; all give the same values up to rounding.

    Returns:
        ``(*batch, config.n_outputs)`` real expectations in ``[-1, 1]``, in the order of
        ``config.measured_wires``.

    Raises:
        ValueError: for wrong input/weight shapes or an unknown ``method``; for ``"fused"`` with
            more than :data:`~qallegro.quantum.method.FUSED_MAX_QUBITS` qubits.
    """
    return z_expectations(config, qdi_probabilities(config, inputs, weights, method=method))
