"""The quantum depth-infused (QDI) circuit: hyperparameters, validation and two simulation paths.

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

Two simulation paths give the same numbers (tests check both against PennyLane):

* ``"gates"`` applies the gates to the batched state, ``O(batch * depth * n * 2^n)`` work, and
  is the only choice for large ``n`` (memory ``O(batch * 2^n)``). The state is a real array of
  (re, im) pairs; H, the first encoding and the first layer's rotations act on a product state
  and are applied to ``n`` two-component vectors before expanding; each further layer's rotations
  are a few small real GEMMs on blocks of up to 4 wires
  (:func:`~qallegro.quantum.simulator.apply_product_pairs`) and its CNOT ring one gather; for
  large states each layer is recomputed in the backward pass instead of stored.
* ``"fused"`` multiplies each chunk's data-independent part into one ``2^n x 2^n`` matrix, built by
  running the gates on the identity, and applies it to the batch as one real matrix product
  (``O(batch * 4^n)`` work at GEMM speed). Three refinements make it fast:
  (1) the state after ``H`` and the first encoding is a product of ``T (cos x_k/2, sin x_k/2)``
  with a fixed 2x2 ``T`` per rotation type, so ``T`` on every wire is folded into the matrix and the
  batch enters as the *real* Kronecker product ``r = (x) (cos x_k/2, sin x_k/2)``: the product
  ``r @ [Re M | Im M]`` is one real ``(B, N) x (N, 2N)`` GEMM, half the flops of a complex one;
  (2) the readout's CNOT cascade and the measurement basis change (``H`` for X, ``H S^dagger`` for Y)
  are folded into the last matrix so only Z-expectations, i.e. ``|psi|^2 @ (+-1 matrix)``, remain;
  (3) later chunks (re-uploading) use the complex state as a real pair and a
  ``(2N, 2N)`` real block matrix.

:func:`select_method` picks the faster path per shape by timing both once (see its docstring).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import time
from typing import Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from . import simulator as sim

__all__ = [
    "ROTATIONS",
    "ENTANGLINGS",
    "MEASURES",
    "MEASUREMENT_MODES",
    "MAX_QUBITS",
    "MAX_DEPTH",
    "FUSED_MAX_QUBITS",
    "QDIConfig",
    "qdi_output_size",
    "qdi_weight_shape",
    "init_qdi_weights",
    "entangler_pairs",
    "readout_cascade",
    "qdi_state",
    "qdi_expectations",
    "qdi_probabilities",
    "chunk_unitary",
    "select_method",
    "heuristic_method",
    "clear_method_cache",
]

ROTATIONS = ("X", "Y", "Z")
ENTANGLINGS = ("strong", "basic")
MEASURES = ("X", "Y", "Z")
MEASUREMENT_MODES = ("none", "even", "single")
MAX_QUBITS = 25
MAX_DEPTH = 30
#: Largest ``n_qubits`` for which the fused path is considered (its matrix has ``4^n`` entries).
FUSED_MAX_QUBITS = 12
METHODS = ("auto", "fused", "gates")


def _check_int(name: str, value, lo: int, hi: Optional[int]) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an integer, got {value!r} ({type(value).__name__})")
    value = int(value)
    if value < lo or (hi is not None and value > hi):
        rng = f"{lo}..{hi}" if hi is not None else f">= {lo}"
        raise ValueError(f"{name} must be in {rng}, got {value}")
    return value


def _check_choice(name: str, value, choices: Sequence[str], upper: bool) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{name} must be one of {list(choices)}, got {value!r}")
    v = value.upper() if upper else value.lower()
    if v not in choices:
        raise ValueError(f"unknown {name} {value!r}; expected one of {list(choices)}")
    return v


@dataclasses.dataclass(frozen=True)
class QDIConfig:
    """Hyperparameters of one QDI circuit (hashable, usable as a static jit argument).

    Attributes:
        n_qubits: number of qubits, 1..25 (default 4).
        depth: variational layers per chunk, 1..30 (default 4).
        in_features: number of input angles, a positive multiple of ``n_qubits``; ``None`` means
            ``n_qubits`` (one chunk).
        rotation: encoding rotation ``"X" | "Y" | "Z"`` (default ``"Z"``).
        entangling: ``"strong" | "basic"`` (default ``"strong"``).
        measure: measured Pauli ``"X" | "Y" | "Z"`` (default ``"Y"``).
        measurement_mode: ``"none" | "even" | "single"`` (default ``"none"``).

    Raises:
        ValueError: naming the offending option, for ``n_qubits`` outside 1..25, ``depth`` outside
            1..30, ``in_features`` not a positive multiple of ``n_qubits``, or an unknown
            rotation/entangling/measure/measurement_mode (Pauli names are case-insensitive).
    """

    n_qubits: int = 4
    depth: int = 4
    in_features: Optional[int] = None
    rotation: str = "Z"
    entangling: str = "strong"
    measure: str = "Y"
    measurement_mode: str = "none"

    def __post_init__(self):
        n = _check_int("n_qubits", self.n_qubits, 1, MAX_QUBITS)
        d = _check_int("depth", self.depth, 1, MAX_DEPTH)
        f = n if self.in_features is None else _check_int("in_features", self.in_features, 1, None)
        if f % n:
            raise ValueError(
                f"in_features={f} is not a multiple of n_qubits={n}: the input is re-uploaded in "
                f"chunks of n_qubits angles"
            )
        set_ = object.__setattr__
        set_(self, "n_qubits", n)
        set_(self, "depth", d)
        set_(self, "in_features", f)
        set_(self, "rotation", _check_choice("rotation", self.rotation, ROTATIONS, True))
        set_(self, "entangling", _check_choice("entangling", self.entangling, ENTANGLINGS, False))
        set_(self, "measure", _check_choice("measure", self.measure, MEASURES, True))
        set_(
            self,
            "measurement_mode",
            _check_choice("measurement_mode", self.measurement_mode, MEASUREMENT_MODES, False),
        )

    @property
    def n_chunks(self) -> int:
        """``in_features // n_qubits``: how many times data is uploaded."""
        return self.in_features // self.n_qubits

    @property
    def n_outputs(self) -> int:
        """Number of expectation values returned (see :func:`qdi_output_size`)."""
        return qdi_output_size(self.n_qubits, self.measurement_mode)

    @property
    def measured_wires(self) -> tuple[int, ...]:
        """Wires whose Pauli expectation is returned, in output order."""
        return _measured_wires(self.n_qubits, self.measurement_mode)

    @property
    def weight_shape(self) -> tuple[int, ...]:
        """Shape of the trainable weights (see :func:`qdi_weight_shape`)."""
        return qdi_weight_shape(self.n_qubits, self.depth, self.in_features, self.entangling)

    @property
    def dim(self) -> int:
        """Hilbert space dimension ``2**n_qubits``."""
        return 2**self.n_qubits


def _measured_wires(n_qubits: int, mode: str) -> tuple[int, ...]:
    if mode == "none":
        return tuple(range(n_qubits))
    if mode == "even":
        return tuple(range(0, n_qubits, 2))
    return (n_qubits - 1,)


def qdi_output_size(n_qubits: int, measurement_mode: str = "none") -> int:
    """Number of outputs of a QDI circuit: ``n`` (none), ``ceil(n/2)`` (even) or 1 (single).

    Static (plain Python), so model code can size its layers before any tracing.

    Raises:
        ValueError: for ``n_qubits`` outside 1..25 or an unknown ``measurement_mode``.
    """
    n = _check_int("n_qubits", n_qubits, 1, MAX_QUBITS)
    mode = _check_choice("measurement_mode", measurement_mode, MEASUREMENT_MODES, False)
    return len(_measured_wires(n, mode))


def qdi_weight_shape(n_qubits: int, depth: int, in_features: Optional[int] = None,
                     entangling: str = "strong") -> tuple[int, ...]:
    """Shape of the QDI weights: ``(n_chunks, depth, n_qubits, 3)`` for strong entangling (the three
    ``Rot`` angles ``phi, theta, omega``), ``(n_chunks, depth, n_qubits)`` for basic (``RX`` angles).

    Raises:
        ValueError: as :class:`QDIConfig`.
    """
    cfg = QDIConfig(n_qubits=n_qubits, depth=depth, in_features=in_features, entangling=entangling)
    base = (cfg.n_chunks, cfg.depth, cfg.n_qubits)
    return base + (3,) if cfg.entangling == "strong" else base


def init_qdi_weights(key: jax.Array, config: QDIConfig, dtype=jnp.float32) -> jax.Array:
    """Default initialisation: i.i.d. ``Uniform[0, 2 pi)`` angles (PennyLane's ``TorchLayer`` /
    ``KerasLayer`` default), shape ``config.weight_shape``.

    Every angle enters through ``exp(-i w P / 2)``, so ``[0, 2 pi)`` covers each rotation once up
    to sign: the circuit starts as a random draw from its own family.
    """
    return jax.random.uniform(key, config.weight_shape, dtype=dtype, minval=0.0, maxval=2.0 * math.pi)


def entangler_pairs(n_qubits: int, entangling: str) -> tuple[tuple[int, int], ...]:
    """The CNOTs ``(control, target)`` after each variational layer, in application order."""
    if n_qubits == 1:
        return ()
    if n_qubits == 2 and entangling == "basic":
        return ((0, 1),)
    return tuple((k, (k + 1) % n_qubits) for k in range(n_qubits))


def readout_cascade(n_qubits: int, measurement_mode: str) -> tuple[tuple[int, int], ...]:
    """The CNOT cascade before a ``"single"`` readout (empty for the other modes)."""
    if measurement_mode != "single":
        return ()
    return tuple((k, k + 1) for k in range(n_qubits - 1))


# --------------------------------------------------------------------------------------------
# Gate-level building blocks shared by both paths.
# --------------------------------------------------------------------------------------------

_ROT_FN = {"X": sim.rx, "Y": sim.ry, "Z": sim.rz}
# RX/RY/RZ(x) H|0> = T (cos x/2, sin x/2)^T: the fixed map that lets the fused path take a real input.
_PRODUCT_T = {
    "Z": np.array([[1.0, -1.0j], [1.0, 1.0j]]) / math.sqrt(2.0),
    "Y": np.array([[1.0, -1.0], [1.0, 1.0]]) / math.sqrt(2.0),
    "X": np.array([[1.0, -1.0j], [1.0, -1.0j]]) / math.sqrt(2.0),
}
# V with V^dagger Z V = P: measuring Z after V is measuring P before it.
_BASIS_CHANGE = {"X": sim.HADAMARD, "Y": sim.HADAMARD @ sim.S_DAG, "Z": None}


def _layer_gates(w_layer: jax.Array, entangling: str) -> jax.Array:
    """(n, 2, 2) single-qubit gates of one variational layer."""
    if entangling == "strong":
        return sim.rot(w_layer[..., 0], w_layer[..., 1], w_layer[..., 2])
    return sim.rx(w_layer)


def _apply_cnots(state, pairs, n_qubits, use_perm: bool):
    if not pairs:
        return state
    if use_perm:
        return sim.apply_permutation(state, sim.cnot_sequence_permutation(pairs, n_qubits), n_qubits)
    for c, t in pairs:
        state = sim.apply_cnot(state, c, t, n_qubits)
    return state


def _variational_block(state, w_chunk, cfg: QDIConfig, use_perm: bool):
    """``depth`` layers of rotations + entangling ring; ``w_chunk`` has shape ``weight_shape[1:]``."""
    pairs = entangler_pairs(cfg.n_qubits, cfg.entangling)
    for layer in range(cfg.depth):
        gates = _layer_gates(w_chunk[layer], cfg.entangling)
        state = sim.apply_single_qubit_layer(state, gates, cfg.n_qubits)
        state = _apply_cnots(state, pairs, cfg.n_qubits, use_perm)
    return state


def _encode(state, x_chunk, cfg: QDIConfig):
    """Encoding rotations, ``x_chunk`` shape ``(*batch, n_qubits)``; RZ is applied as a diagonal phase."""
    n = cfg.n_qubits
    if cfg.rotation == "Z":
        return state * _z_phase(x_chunk, n, state.dtype)
    gates = _ROT_FN[cfg.rotation](x_chunk)  # (*batch, n, 2, 2)
    return sim.apply_single_qubit_layer(state, gates, n)


def _z_phase(x_chunk, n_qubits, cdtype):
    """``diag(RZ(x_0) x ... x RZ(x_{n-1}))`` as a ``(*batch, 2, ..., 2)`` array."""
    p = jnp.exp(-0.5j * x_chunk.astype(cdtype))  # (*batch, n)
    vecs = jnp.stack([p, jnp.conj(p)], axis=-1)
    flat = sim.kron_vectors(vecs)
    return flat.reshape(flat.shape[:-1] + (2,) * n_qubits)


# --------------------------------------------------------------------------------------------
# Gates path.
# --------------------------------------------------------------------------------------------


def _prepare(cfg: QDIConfig, inputs, weights):
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
    inputs, weights, rdt = _prepare(config, inputs, weights)
    n = config.n_qubits
    cdt = jnp.complex128 if rdt == jnp.float64 else jnp.complex64
    batch = inputs.shape[:-1]
    # H^n |0> = uniform superposition, written directly.
    state = jnp.full(batch + (2,) * n, 1.0 / math.sqrt(2**n), dtype=cdt)
    for c in range(config.n_chunks):
        state = _encode(state, inputs[..., c * n:(c + 1) * n], config)
        state = _variational_block(state, weights[c], config, use_perm)
    return state


_MAX_BLOCK = 4
# above this many qubits the (2^n, n_outputs) sign matrix is too large a constant; reduce instead
_ZMAT_MAX_QUBITS = 14

# The fast paths are composed of a few kernels, each jit-compiled with only the static
# hyperparameters it needs. Under an outer jit they are inlined (no cost); called eagerly they are
# compiled once per (kernel, static args, shapes) and shared by every circuit that uses them,
# which keeps compile time low when many different circuits are evaluated (tests, analyses).
def _kernel(*static_argnames):
    return functools.partial(jax.jit, static_argnames=static_argnames)


def _cdt(rdt):
    return jnp.complex128 if rdt == jnp.float64 else jnp.complex64


def _ring_layer_body(pairs, w_layer, n: int, entangling: str):
    """One variational layer on a real-pair state ``(B, 2^n, 2)``: rotations, then the CNOT ring."""
    gates = _layer_gates(w_layer, entangling).astype(_cdt(pairs.dtype))
    pairs = sim.apply_product_pairs(pairs, gates, n, _MAX_BLOCK)
    ring = entangler_pairs(n, entangling)
    if ring:
        pairs = sim.permute_pairs(pairs, sim.permutation_index(ring, n))
    return pairs


@_kernel("n", "entangling", "remat")
def _layer_kernel(pairs, w_layer, *, n: int, entangling: str, remat: bool):
    """One variational layer (``_ring_layer_body``) as a kernel shared by every depth.

    With ``remat`` only the layer's input is stored for the backward pass and the rest is
    recomputed: memory O(B 2^n) per layer instead of per block of gates (large states)."""
    body = functools.partial(_ring_layer_body, n=n, entangling=entangling)
    if remat:
        body = jax.checkpoint(body)
    return body(pairs, w_layer)


def _split_layers(weights):
    """``weights[c, l]`` for every chunk and layer as a nested list, in one primitive (cheap eagerly)."""
    n_chunks, depth = weights.shape[:2]
    flat = jnp.unstack(weights.reshape((n_chunks * depth,) + weights.shape[2:]))
    return [flat[c * depth:(c + 1) * depth] for c in range(n_chunks)]


def _readout_gates(cfg: QDIConfig, cdt):
    """``(n, 2, 2)`` measurement basis change (identity on unmeasured wires), or None for Z."""
    v = _BASIS_CHANGE[cfg.measure]
    if v is None:
        return None
    eye = np.eye(2, dtype=np.complex128)
    return jnp.asarray(np.stack([v if w in cfg.measured_wires else eye
                                 for w in range(cfg.n_qubits)]), dtype=cdt)


@_kernel("n", "cascade")
def _readout_kernel(pairs, basis_gates, *, n: int, cascade: bool):
    """Readout on a real-pair state: CNOT cascade (if ``cascade``), then the basis change
    ``basis_gates`` ((n, 2, 2) or None) that maps the measured Pauli to Z."""
    if cascade:
        pairs = sim.permute_pairs(pairs, sim.permutation_index(readout_cascade(n, "single"), n))
    if basis_gates is not None:
        pairs = sim.apply_product_pairs(pairs, basis_gates.astype(_cdt(pairs.dtype)), n, _MAX_BLOCK)
    return pairs


def _readout_pairs(pairs, cfg: QDIConfig):
    return _readout_kernel(pairs, _readout_gates(cfg, _cdt(pairs.dtype)), n=cfg.n_qubits,
                           cascade=cfg.measurement_mode == "single")


@_kernel("n", "mode")
def _z_expectations(probs, *, n: int, mode: str):
    """``<Z_w>`` on the measured wires from ``(B, 2^n)`` probabilities -> ``(B, n_outputs)``."""
    wires = _measured_wires(n, mode)
    if n <= _ZMAT_MAX_QUBITS:
        return probs @ jnp.asarray(sim.expval_z_matrix(wires, n), dtype=probs.dtype)
    p = probs.reshape((probs.shape[0],) + (2,) * n)
    outs = []
    for w in wires:
        m = jnp.sum(p, axis=tuple(1 + k for k in range(n) if k != w))  # (B, 2) marginal
        outs.append(m[:, 0] - m[:, 1])
    return jnp.stack(outs, axis=-1)


@_kernel("diagonal")
def _encode_kernel(pairs, x_chunk, pauli, *, diagonal: bool):
    """Encoding ``exp(-i x_k P / 2)`` on every wire of a real-pair state; ``x_chunk`` is ``(B, n)``.

    ``diagonal`` (P = Z): one elementwise phase, no gate application. Otherwise ``pauli`` is the
    (2, 2) matrix P and the per-sample gates ``cos(x/2) I - i sin(x/2) P`` are applied blockwise.
    """
    n = x_chunk.shape[-1]
    cdt = _cdt(pairs.dtype)
    if diagonal:
        p = jnp.exp(-0.5j * x_chunk.astype(cdt))
        phase = sim.kron_vectors(jnp.stack([p, jnp.conj(p)], axis=-1))  # (B, 2^n)
        pr, pi = jnp.real(phase), jnp.imag(phase)
        re, im = pairs[..., 0], pairs[..., 1]
        return jnp.stack([re * pr - im * pi, re * pi + im * pr], axis=-1)
    c = jnp.cos(x_chunk / 2).astype(cdt)[..., None, None]
    s_ = jnp.sin(x_chunk / 2).astype(cdt)[..., None, None]
    gates = c * jnp.eye(2, dtype=cdt) - 1j * s_ * pauli.astype(cdt)  # (B, n, 2, 2)
    return sim.apply_product_pairs(pairs, gates, n, _MAX_BLOCK)


def _encode_pairs(pairs, x_chunk, cfg: QDIConfig):
    pauli = jnp.asarray(sim._PAULIS[cfg.rotation], dtype=_cdt(pairs.dtype))
    return _encode_kernel(pairs, x_chunk, pauli, diagonal=cfg.rotation == "Z")


@_kernel("entangling")
def _product_start(x0, w_layer0, t, *, entangling: str):
    """State after H, the chunk-0 encoding and the first variational layer, as real pairs.

    Up to the first CNOT ring everything acts on a product state, so it is applied to ``n``
    two-component vectors ``T (cos x_k/2, sin x_k/2)`` (``t`` is the 2x2 ``T``) and only then
    expanded to ``2^n`` amplitudes.
    """
    n = x0.shape[-1]
    cdt = _cdt(x0.dtype)
    r = jnp.stack([jnp.cos(x0 / 2), jnp.sin(x0 / 2)], axis=-1).astype(cdt)  # (B, n, 2)
    g0 = _layer_gates(w_layer0, entangling).astype(cdt)
    mat = jnp.einsum("kij,jl->kil", g0, t.astype(cdt))
    flat = sim.kron_vectors(jnp.einsum("kij,bkj->bki", mat, r))
    pairs = jnp.stack([jnp.real(flat), jnp.imag(flat)], axis=-1)  # (B, 2^n, 2)
    ring = entangler_pairs(n, entangling)
    if ring:
        pairs = sim.permute_pairs(pairs, sim.permutation_index(ring, n))
    return pairs


@_kernel("n")
def _encoded_identity(w_dummy, t, *, n: int):
    """Columns of ``T^{(x) n}`` (the identity if ``t`` is None) as real pairs ``(2^n, 2^n, 2)``."""
    dim = 2**n
    rdt = w_dummy.dtype
    cols = jnp.stack([jnp.eye(dim, dtype=rdt), jnp.zeros((dim, dim), dtype=rdt)], axis=-1)
    if t is not None:
        cols = sim.apply_product_pairs(cols, jnp.broadcast_to(t.astype(_cdt(rdt)), (n, 2, 2)), n,
                                       _MAX_BLOCK)
    return cols


def _product_t(cfg: QDIConfig, rdt):
    return jnp.asarray(_PRODUCT_T[cfg.rotation], dtype=_cdt(rdt))


#: Recompute layers in the backward pass (jax.checkpoint) once a state has this many amplitudes
#: (2^22 complex pairs = 32 MiB in float32); below it storing the intermediates is cheaper.
_REMAT_MIN_AMPLITUDES = 2**22


def _probs_gates(cfg: QDIConfig, x, weights, remat: Optional[bool] = None):
    """``(B, 2^n)`` measurement-basis probabilities, gates path; ``x`` is ``(B, in_features)``."""
    n = cfg.n_qubits
    if remat is None:
        remat = x.shape[0] * cfg.dim >= _REMAT_MIN_AMPLITUDES
    layers = _split_layers(weights)
    pairs = _product_start(x[:, :n], layers[0][0], _product_t(cfg, x.dtype),
                           entangling=cfg.entangling)
    for c in range(cfg.n_chunks):
        if c > 0:
            pairs = _encode_pairs(pairs, x[:, c * n:(c + 1) * n], cfg)
        for w_layer in layers[c][1 if c == 0 else 0:]:
            pairs = _layer_kernel(pairs, w_layer, n=n, entangling=cfg.entangling, remat=remat)
    return _probs_kernel(_readout_pairs(pairs, cfg))


@_kernel()
def _probs_kernel(pairs):
    return jnp.sum(pairs * pairs, axis=-1)


# --------------------------------------------------------------------------------------------
# Fused path.
# --------------------------------------------------------------------------------------------


def _chunk_columns(cfg: QDIConfig, w_layers, fold_encoding: bool, fold_readout: bool):
    """``U e_j`` for every basis vector ``e_j`` as a real-pair array ``(2^n [j], 2^n [s], 2)``;
    ``w_layers`` are the chunk's per-layer weights."""
    n = cfg.n_qubits
    t = _product_t(cfg, w_layers[0].dtype) if fold_encoding else None
    cols = _encoded_identity(w_layers[0], t, n=n)
    for w_layer in w_layers:
        cols = _layer_kernel(cols, w_layer, n=n, entangling=cfg.entangling, remat=False)
    if fold_readout:
        cols = _readout_pairs(cols, cfg)
    return cols


def chunk_unitary(config: QDIConfig, weights, chunk: int, *, fold_encoding: bool = False,
                  fold_readout: bool = False) -> jax.Array:
    """The data-independent part of chunk ``chunk`` as a ``(2^n, 2^n)`` matrix ``U`` (``psi -> U psi``).

    ``U = [V C] L_depth ... L_1 [T^{(x) n}]`` where ``L`` are the variational layers of that chunk,
    ``T`` (if ``fold_encoding``) the fixed map from the real product input to the encoded state
    (only meaningful for chunk 0, see the module docstring) and ``V C`` (if ``fold_readout``) the
    readout CNOT cascade followed by the measurement basis change on the measured wires.

    Built by applying the gates to the ``2^n`` basis vectors as a batch: ``O(depth n 4^n)``.

    Args:
        config: circuit hyperparameters.
        weights: ``config.weight_shape``.
        chunk: which chunk's weights.
        fold_encoding: include ``T`` on every wire.
        fold_readout: include the readout cascade and basis change.

    Returns:
        Complex ``(2^n, 2^n)`` matrix (not unitary when ``fold_encoding`` with ``rotation="X"``).
    """
    weights = jnp.asarray(weights)
    weights = weights.astype(sim.real_dtype(weights))
    cols = _chunk_columns(config, _split_layers(weights)[chunk], fold_encoding, fold_readout)
    return jax.lax.complex(cols[..., 0], cols[..., 1]).T  # cols[j, s] = U[s, j]


@_kernel()
def _fused_first(x0, cols):
    """``psi = U r`` with ``r = (x)_k (cos x_k/2, sin x_k/2)`` real: one real GEMM against
    ``[Re U^T | Im U^T]``; returns real pairs ``(B, 2^n, 2)``."""
    dim = cols.shape[0]
    r = sim.kron_vectors(jnp.stack([jnp.cos(x0 / 2), jnp.sin(x0 / 2)], axis=-1))  # (B, N)
    y = r @ jnp.concatenate([cols[..., 0], cols[..., 1]], axis=1)  # (B, 2N)
    return jnp.stack([y[:, :dim], y[:, dim:]], axis=-1)


@_kernel()
def _fused_apply(pairs, cols):
    """``psi -> U psi`` for a complex state as real pairs, ``U^T`` given as real-pair ``cols``:
    in the interleaved layout this is one real GEMM with ``pair_matrix(U)``."""
    dim = cols.shape[0]
    u = jax.lax.complex(cols[..., 0], cols[..., 1]).T
    a = sim.pair_matrix(u)
    return (pairs.reshape(-1, 2 * dim) @ a.T).reshape(-1, dim, 2)


def _probs_fused(cfg: QDIConfig, x, weights):
    """``(B, 2^n)`` measurement-basis probabilities, fused path; ``x`` is ``(B, in_features)``."""
    n = cfg.n_qubits
    last = cfg.n_chunks - 1
    layers = _split_layers(weights)
    pairs = _fused_first(x[:, :n], _chunk_columns(cfg, layers[0], True, last == 0))
    for c in range(1, cfg.n_chunks):
        pairs = _encode_pairs(pairs, x[:, c * n:(c + 1) * n], cfg)
        pairs = _fused_apply(pairs, _chunk_columns(cfg, layers[c], False, c == last))
    return _probs_kernel(pairs)


# --------------------------------------------------------------------------------------------
# Method selection.
# --------------------------------------------------------------------------------------------

_METHOD_CACHE: dict = {}
_TUNE_MAX_BATCH = 2048


def clear_method_cache() -> None:
    """Forget the timings behind :func:`select_method` (e.g. after changing thread settings)."""
    _METHOD_CACHE.clear()


def heuristic_method(config: QDIConfig) -> str:
    """Deterministic choice without timing, from a cost model fitted to CPU measurements.

    Per amplitude and chunk the fused path does ``~2^n`` multiply-adds at GEMM speed, the gates
    path ``~depth * n`` block-gate operations at memory speed, about 16 times slower each; so
    ``"fused"`` iff ``2^n <= 16 * depth * n``: up to 9 qubits at depth 4. On the 2-core CPU of
    ``experiments/results/quantum_benchmark.md`` (depth 4) fused is 2-4x faster at 8 qubits
    and 3.5x slower at 12. Above :data:`FUSED_MAX_QUBITS` always ``"gates"``.
    """
    if config.n_qubits > FUSED_MAX_QUBITS:
        return "gates"
    fused_cost = 2.0**config.n_qubits
    gates_cost = 16.0 * config.depth * config.n_qubits
    return "fused" if fused_cost <= gates_cost else "gates"


def _bucket(batch: int) -> int:
    return 1 << max(0, int(math.ceil(math.log2(max(1, batch)))))


def select_method(config: QDIConfig, batch: int, dtype=jnp.float32) -> str:
    """Choose ``"fused"`` or ``"gates"`` for this circuit shape and batch size.

    Rule: never fused above :data:`FUSED_MAX_QUBITS` qubits (its ``4^n`` matrix would not be
    worth building). Otherwise, unless the environment variable ``QALLEGRO_QDI_AUTOTUNE=0``
    is set, both paths are compiled and timed once on this process's default backend, for
    forward + backward (gradient w.r.t. inputs and weights) on the batch rounded up to a power of
    two and capped at 2048 samples (median of 3 runs after a warm-up); the faster one is cached in
    process, keyed by the structural hyperparameters, the batch bucket, dtype and backend. With
    autotuning off, :func:`heuristic_method` decides. Safe to call while tracing under ``jit``:
    the timing runs eagerly on concrete dummy data.

    Args:
        config: circuit hyperparameters.
        batch: number of circuits evaluated together (product of the leading input dims).
        dtype: real dtype of the computation.

    Returns:
        ``"fused"`` or ``"gates"``.
    """
    if config.n_qubits > FUSED_MAX_QUBITS:
        return "gates"
    if os.environ.get("QALLEGRO_QDI_AUTOTUNE", "1") == "0":
        return heuristic_method(config)
    bucket = min(_bucket(batch), _TUNE_MAX_BATCH)
    key = (config, bucket, jnp.dtype(dtype).name, jax.default_backend())
    if key not in _METHOD_CACHE:
        _METHOD_CACHE[key] = _time_methods(config, bucket, dtype)
    return _METHOD_CACHE[key]


def _time_methods(config: QDIConfig, batch: int, dtype) -> str:
    with jax.ensure_compile_time_eval():
        rng = np.random.default_rng(0)
        x = rng.uniform(-np.pi, np.pi, (batch, config.in_features)).astype(dtype)
        w = rng.uniform(0, 2 * np.pi, config.weight_shape).astype(dtype)
        times = {}
        for method in ("fused", "gates"):
            def loss(xx, ww, method=method):
                return jnp.sum(qdi_expectations(config, xx, ww, method=method))

            f = jax.jit(jax.value_and_grad(loss, argnums=(0, 1))).lower(x, w).compile()
            jax.block_until_ready(f(x, w))
            ts = []
            for _ in range(3):
                t0 = time.perf_counter()
                jax.block_until_ready(f(x, w))
                ts.append(time.perf_counter() - t0)
            times[method] = float(np.median(ts))
    return min(times, key=times.get)


# --------------------------------------------------------------------------------------------
# Public entry points.
# --------------------------------------------------------------------------------------------


def _resolve_method(config: QDIConfig, method: str, batch: int, rdt) -> str:
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; expected one of {list(METHODS)}")
    if method == "auto":
        return select_method(config, batch, rdt)
    if method == "fused" and config.n_qubits > FUSED_MAX_QUBITS:
        raise ValueError(f"method='fused' supports n_qubits <= {FUSED_MAX_QUBITS}, got {config.n_qubits}")
    return method


def qdi_probabilities(config: QDIConfig, inputs, weights, *, method: str = "auto") -> jax.Array:
    """Born probabilities in the measurement basis: after the readout cascade (``"single"``) and the
    basis change that maps the measured Pauli to Z on the measured wires.

    Sampling bitstrings from these is what a device does with finite shots (:mod:`.shots`); the
    expectation of measured wire ``w`` is ``sum_s p_s (-1)^{bit_w(s)}``.

    Args:
        config, inputs, weights, method: as :func:`qdi_expectations`.

    Returns:
        ``(*batch, 2**n_qubits)`` real, non-negative, summing to 1 over the last axis.
    """
    inputs, weights, rdt = _prepare(config, inputs, weights)
    batch = inputs.shape[:-1]
    x = inputs.reshape((-1, config.in_features))
    method = _resolve_method(config, method, x.shape[0], rdt)
    probs = _probs_fused(config, x, weights) if method == "fused" else _probs_gates(config, x, weights)
    return probs.reshape(batch + (config.dim,))


def qdi_expectations(config: QDIConfig, inputs, weights, *, method: str = "auto") -> jax.Array:
    """Exact expectation values of the QDI circuit, ``<psi(x, w)| P_k |psi(x, w)>`` for the measured
    wires ``k`` (after the CNOT cascade in ``"single"`` mode).

    Args:
        config: circuit hyperparameters.
        inputs: ``(*batch, in_features)`` angles in radians (float64 computation under x64 when
            either ``inputs`` or ``weights`` is float64, else float32).
        weights: ``config.weight_shape`` angles in radians.
        method: ``"auto"`` (:func:`select_method`), ``"fused"`` or ``"gates"``; all give the same
            values up to rounding.

    Returns:
        ``(*batch, config.n_outputs)`` real expectations in ``[-1, 1]``, in the order of
        ``config.measured_wires``.

    Raises:
        ValueError: for wrong input/weight shapes or an unknown ``method``; for ``"fused"`` with
            more than :data:`FUSED_MAX_QUBITS` qubits.
    """
    inputs, weights, rdt = _prepare(config, inputs, weights)
    batch = inputs.shape[:-1]
    x = inputs.reshape((-1, config.in_features))
    method = _resolve_method(config, method, x.shape[0], rdt)
    probs = _probs_fused(config, x, weights) if method == "fused" else _probs_gates(config, x, weights)
    return _z_expectations(probs, n=config.n_qubits, mode=config.measurement_mode).reshape(
        batch + (config.n_outputs,))
