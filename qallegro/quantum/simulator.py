"""A small, pure statevector simulator in ``jax.numpy``.

Conventions (identical to PennyLane's, so that the twin in :mod:`qallegro.quantum.pennylane_twin`
produces bit-for-bit comparable states):

* A state of ``n`` qubits is a complex array of shape ``(*batch, 2, ..., 2)`` with ``n`` trailing
  axes; axis ``-n + k`` is qubit (wire) ``k``. Wire 0 is the most significant bit of the
  flattened basis index ``s = sum_k b_k 2^(n-1-k)``.
* The dtype is ``complex64``, or ``complex128`` when jax's x64 mode is on and 64-bit inputs are
  used (:func:`complex_dtype` picks it from the real dtype of the parameters).
* Rotation gates follow ``R_P(theta) = exp(-i theta P / 2) = cos(theta/2) I - i sin(theta/2) P``;
  ``Rot(phi, theta, omega) = RZ(omega) RY(theta) RZ(phi)`` (PennyLane's ``qml.Rot``).
* Angles are in radians.

Every function is pure and works under ``jax.jit``, ``jax.vmap`` and ``jax.grad``; gate
parameters may carry leading batch dimensions that broadcast against the state's batch
dimensions (one gate per sample, as needed for data encoding).
"""

from __future__ import annotations

import math
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "complex_dtype",
    "real_dtype",
    "zero_state",
    "basis_state_index",
    "rx",
    "ry",
    "rz",
    "rot",
    "HADAMARD",
    "PAULI_X",
    "PAULI_Y",
    "PAULI_Z",
    "S_DAG",
    "apply_1q",
    "apply_single_qubit_layer",
    "apply_hadamard",
    "apply_cnot",
    "apply_cz",
    "apply_permutation",
    "cnot_sequence_permutation",
    "probabilities",
    "expval_pauli",
    "expval_z_matrix",
    "state_norm",
]

_SQRT1_2 = 1.0 / math.sqrt(2.0)

#: Hadamard, ``(X + Z) / sqrt(2)``.
HADAMARD = np.array([[1.0, 1.0], [1.0, -1.0]], dtype=np.complex128) * _SQRT1_2
#: Pauli matrices.
PAULI_X = np.array([[0.0, 1.0], [1.0, 0.0]], dtype=np.complex128)
PAULI_Y = np.array([[0.0, -1.0j], [1.0j, 0.0]], dtype=np.complex128)
PAULI_Z = np.array([[1.0, 0.0], [0.0, -1.0]], dtype=np.complex128)
#: ``S^dagger = diag(1, -i)``; ``H S^dagger`` rotates the Y eigenbasis onto the Z eigenbasis.
S_DAG = np.array([[1.0, 0.0], [0.0, -1.0j]], dtype=np.complex128)

_PAULIS = {"X": PAULI_X, "Y": PAULI_Y, "Z": PAULI_Z}


def _dtype_of(a) -> np.dtype:
    # a dtype (np.dtype, jnp.float32, "float64") is taken as it is; anything else as an array's dtype
    if isinstance(a, (np.dtype, type, str)):
        return np.dtype(a)
    return jnp.asarray(a).dtype


def real_dtype(*arrays) -> jnp.dtype:
    """The real floating dtype the simulation runs in: float64 only if x64 is on and an input is 64-bit.

    Args:
        *arrays: parameters (angles, weights) or dtypes; non-floating ones are ignored.

    Returns:
        ``float32`` or ``float64``.
    """
    if not jax.config.jax_enable_x64:  # checked first: promoting a float64 dtype without x64 would warn
        return jnp.dtype(jnp.float32)
    dts = [_dtype_of(a) for a in arrays]
    dts = [d for d in dts if jnp.issubdtype(d, jnp.floating) or jnp.issubdtype(d, jnp.complexfloating)]
    dt = jnp.result_type(*dts) if dts else jnp.float32
    dt = jnp.finfo(dt).dtype  # complex -> matching real
    return jnp.dtype(jnp.float64) if dt == jnp.float64 else jnp.dtype(jnp.float32)


def complex_dtype(*arrays) -> jnp.dtype:
    """``complex64`` or ``complex128``, matching :func:`real_dtype` of the given arrays or dtypes.

    The one place that maps the simulation's precision to its complex dtype: every gate matrix and
    state of :mod:`qallegro.quantum` takes its complex dtype from here, e.g.
    ``complex_dtype(pairs.dtype)`` for a real-pair state.
    """
    return jnp.dtype(jnp.complex128) if real_dtype(*arrays) == jnp.float64 else jnp.dtype(jnp.complex64)


def zero_state(n_qubits: int, batch_shape: Sequence[int] = (), dtype=jnp.complex64) -> jax.Array:
    """The computational basis state ``|0...0>``.

    Args:
        n_qubits: number of qubits ``n >= 1``.
        batch_shape: leading batch shape.
        dtype: complex dtype.

    Returns:
        Array of shape ``(*batch_shape, 2, ..., 2)`` (``n`` twos).
    """
    psi = jnp.zeros((*batch_shape, 2**n_qubits), dtype=dtype).at[..., 0].set(1.0)
    return psi.reshape((*batch_shape,) + (2,) * n_qubits)


def basis_state_index(bits: Sequence[int]) -> int:
    """Flattened index of a computational basis state; ``bits[0]`` is wire 0 (most significant)."""
    s = 0
    for b in bits:
        s = 2 * s + int(b)
    return s


# --------------------------------------------------------------------------------------------
# Gate matrices. Each returns shape (*theta.shape, 2, 2) so that per-sample angles broadcast.
# --------------------------------------------------------------------------------------------


def rx(theta) -> jax.Array:
    """``RX(theta) = [[cos t/2, -i sin t/2], [-i sin t/2, cos t/2]]``; shape ``(*theta.shape, 2, 2)``."""
    theta = jnp.asarray(theta)
    c, s = jnp.cos(theta / 2), jnp.sin(theta / 2)
    cd = complex_dtype(theta)
    c, s = c.astype(cd), s.astype(cd)
    return jnp.stack([jnp.stack([c, -1j * s], -1), jnp.stack([-1j * s, c], -1)], -2)


def ry(theta) -> jax.Array:
    """``RY(theta) = [[cos t/2, -sin t/2], [sin t/2, cos t/2]]``; shape ``(*theta.shape, 2, 2)``."""
    theta = jnp.asarray(theta)
    c, s = jnp.cos(theta / 2), jnp.sin(theta / 2)
    cd = complex_dtype(theta)
    c, s = c.astype(cd), s.astype(cd)
    return jnp.stack([jnp.stack([c, -s], -1), jnp.stack([s, c], -1)], -2)


def rz(theta) -> jax.Array:
    """``RZ(theta) = diag(exp(-i t/2), exp(i t/2))``; shape ``(*theta.shape, 2, 2)``."""
    theta = jnp.asarray(theta)
    cd = complex_dtype(theta)
    p = jnp.exp(-0.5j * theta.astype(cd))
    z = jnp.zeros_like(p)
    return jnp.stack([jnp.stack([p, z], -1), jnp.stack([z, jnp.conj(p)], -1)], -2)


def rot(phi, theta, omega) -> jax.Array:
    """PennyLane's ``Rot(phi, theta, omega) = RZ(omega) RY(theta) RZ(phi)``, in closed form.

    Returns:
        ``[[e^{-i(phi+omega)/2} cos(theta/2), -e^{i(phi-omega)/2} sin(theta/2)],
        [e^{-i(phi-omega)/2} sin(theta/2), e^{i(phi+omega)/2} cos(theta/2)]]``, shape
        ``(*broadcast(phi, theta, omega).shape, 2, 2)``.
    """
    phi, theta, omega = jnp.broadcast_arrays(jnp.asarray(phi), jnp.asarray(theta), jnp.asarray(omega))
    cd = complex_dtype(phi, theta, omega)
    c = jnp.cos(theta / 2).astype(cd)
    s = jnp.sin(theta / 2).astype(cd)
    phi, omega = phi.astype(cd), omega.astype(cd)
    a = jnp.exp(-0.5j * (phi + omega))
    b = jnp.exp(0.5j * (phi - omega))
    return jnp.stack(
        [jnp.stack([a * c, -b * s], -1), jnp.stack([jnp.conj(b) * s, jnp.conj(a) * c], -1)], -2
    )


# --------------------------------------------------------------------------------------------
# Applying gates.
# --------------------------------------------------------------------------------------------


def _expand_gate(gate: jax.Array, n_qubits: int) -> tuple[jax.Array, ...]:
    """Entries g_ij of a (possibly batched) 2x2 gate, shaped to broadcast against a state slice."""
    gate = jnp.asarray(gate)
    pad = (None,) * (n_qubits - 1)
    return tuple(gate[(..., i, j) + pad] for i in range(2) for j in range(2))


def apply_1q(state: jax.Array, gate, wire: int, n_qubits: int) -> jax.Array:
    """Apply a single-qubit gate to one wire.

    Args:
        state: ``(*batch, 2, ..., 2)`` complex state of ``n_qubits`` qubits.
        gate: ``(2, 2)`` matrix, or ``(*batch', 2, 2)`` with ``batch'`` broadcastable to ``batch``
            (one gate per sample).
        wire: target qubit ``0 <= wire < n_qubits``.
        n_qubits: number of qubits (the number of trailing axes of ``state``).

    Returns:
        The new state, same shape and dtype as ``state``.
    """
    axis = state.ndim - n_qubits + wire
    g00, g01, g10, g11 = (g.astype(state.dtype) for g in _expand_gate(gate, n_qubits))
    s0 = jnp.take(state, 0, axis=axis)
    s1 = jnp.take(state, 1, axis=axis)
    # Written as two elementwise combinations + stack so that XLA fuses it into one pass over the
    # state; tensordot + moveaxis would cost an extra transpose.
    return jnp.stack([g00 * s0 + g01 * s1, g10 * s0 + g11 * s1], axis=axis)


def apply_single_qubit_layer(state: jax.Array, gates, n_qubits: int) -> jax.Array:
    """Apply one single-qubit gate per wire, ``gates[..., k, :, :]`` on wire ``k``.

    Args:
        state: ``(*batch, 2, ..., 2)`` state.
        gates: ``(*batch', n_qubits, 2, 2)``.
        n_qubits: number of qubits.
    """
    for k in range(n_qubits):
        state = apply_1q(state, gates[..., k, :, :], k, n_qubits)
    return state


def apply_hadamard(state: jax.Array, wire: int, n_qubits: int) -> jax.Array:
    """Hadamard on one wire (see :func:`apply_1q`)."""
    return apply_1q(state, HADAMARD, wire, n_qubits)


def apply_cnot(state: jax.Array, control: int, target: int, n_qubits: int) -> jax.Array:
    """CNOT: flip ``target`` where ``control`` is 1. Shapes as in :func:`apply_1q`.

    Raises:
        ValueError: if ``control == target``.
    """
    if control == target:
        raise ValueError(f"CNOT needs distinct wires, got control=target={control}")
    off = state.ndim - n_qubits
    c_ax, t_ax = off + control, off + target
    s0 = jnp.take(state, 0, axis=c_ax)
    s1 = jnp.take(state, 1, axis=c_ax)
    # after removing the control axis, the target axis shifts down by one if it came after it
    t_ax_red = t_ax - 1 if t_ax > c_ax else t_ax
    return jnp.stack([s0, jnp.flip(s1, axis=t_ax_red)], axis=c_ax)


def apply_cz(state: jax.Array, wire_a: int, wire_b: int, n_qubits: int) -> jax.Array:
    """Controlled-Z: phase -1 on the ``|11>`` component of the two wires. Shapes as in :func:`apply_1q`.

    Raises:
        ValueError: if ``wire_a == wire_b``.
    """
    if wire_a == wire_b:
        raise ValueError(f"CZ needs distinct wires, got {wire_a} twice")
    # a constant +-1 mask over the n trailing axes; broadcasting handles the batch axes
    sign = np.ones((2,) * n_qubits)
    idx = [slice(None)] * n_qubits
    idx[wire_a] = 1
    idx[wire_b] = 1
    sign[tuple(idx)] = -1.0
    return state * jnp.asarray(sign, dtype=jnp.finfo(state.dtype).dtype)


def cnot_sequence_permutation(pairs: Sequence[tuple[int, int]], n_qubits: int) -> np.ndarray:
    """The basis permutation realised by a sequence of CNOTs, as a gather index.

    A product of CNOTs maps basis states to basis states (a linear map of the bit string over
    GF(2)), so it can be applied in one gather instead of ``len(pairs)`` passes over the state.

    Args:
        pairs: ``(control, target)`` in the order the gates are applied.
        n_qubits: number of qubits.

    Returns:
        Integer array ``perm`` of length ``2**n_qubits`` with ``(C psi)[s] = psi[perm[s]]`` for the
        flattened state.
    """
    n = n_qubits
    idx = np.arange(2**n, dtype=np.int64)
    bits = (idx[:, None] >> (n - 1 - np.arange(n))[None, :]) & 1  # (N, n), wire 0 = MSB
    # psi_out = C_m ... C_1 psi  =>  psi_out[s] = psi[C_1^-1 ... C_m^-1 s]; CNOT is an involution.
    for c, t in reversed(list(pairs)):
        bits[:, t] ^= bits[:, c]
    return (bits * (1 << (n - 1 - np.arange(n)))[None, :]).sum(axis=1)


def apply_permutation(state: jax.Array, perm, n_qubits: int) -> jax.Array:
    """Gather the flattened state: ``out[..., s] = state[..., perm[s]]``.

    Args:
        state: ``(*batch, 2, ..., 2)``.
        perm: integer array of length ``2**n_qubits`` (see :func:`cnot_sequence_permutation`).
        n_qubits: number of qubits.
    """
    batch = state.shape[: state.ndim - n_qubits]
    flat = state.reshape(batch + (2**n_qubits,))
    return jnp.take(flat, jnp.asarray(perm), axis=-1).reshape(state.shape)


# --------------------------------------------------------------------------------------------
# Measurement.
# --------------------------------------------------------------------------------------------


def probabilities(state: jax.Array, n_qubits: int) -> jax.Array:
    """Born probabilities ``|psi_s|^2`` of the flattened state; shape ``(*batch, 2**n_qubits)``, real."""
    batch = state.shape[: state.ndim - n_qubits]
    flat = state.reshape(batch + (2**n_qubits,))
    return jnp.real(flat) ** 2 + jnp.imag(flat) ** 2


def state_norm(state: jax.Array, n_qubits: int) -> jax.Array:
    """``<psi|psi>``; shape ``batch``."""
    return jnp.sum(probabilities(state, n_qubits), axis=-1)


def expval_z_matrix(wires: Sequence[int], n_qubits: int, dtype=np.float64) -> np.ndarray:
    """Eigenvalues of ``Z_w`` on every basis state, stacked: ``M[s, j] = (-1)^{bit_{wires[j]}(s)}``.

    ``probabilities(state) @ M`` gives the Pauli-Z expectations of the chosen wires in one small
    matrix product. Shape ``(2**n_qubits, len(wires))``.
    """
    idx = np.arange(2**n_qubits)
    cols = [1.0 - 2.0 * ((idx >> (n_qubits - 1 - w)) & 1) for w in wires]
    return np.stack(cols, axis=-1).astype(dtype)


def expval_pauli(state: jax.Array, pauli: str, wires: Sequence[int], n_qubits: int) -> jax.Array:
    """Expectation values ``<psi| P_w |psi>`` of one Pauli ``P`` on each of the given wires.

    Computed directly from amplitude pairs (no basis change):
    ``<Z_w> = sum |a_0|^2 - |a_1|^2``, ``<X_w> = 2 Re sum conj(a_0) a_1``,
    ``<Y_w> = 2 Im sum conj(a_0) a_1``, where ``a_b`` is the state sliced at wire ``w`` = b.

    Args:
        state: ``(*batch, 2, ..., 2)``, assumed normalised.
        pauli: ``"X"``, ``"Y"`` or ``"Z"``.
        wires: wires to measure.
        n_qubits: number of qubits.

    Returns:
        Real array ``(*batch, len(wires))``.

    Raises:
        ValueError: for an unknown Pauli name.
    """
    if pauli not in _PAULIS:
        raise ValueError(f"pauli must be one of 'X', 'Y', 'Z', got {pauli!r}")
    off = state.ndim - n_qubits
    red = tuple(range(off, state.ndim - 1))
    outs = []
    for w in wires:
        a0 = jnp.take(state, 0, axis=off + w)
        a1 = jnp.take(state, 1, axis=off + w)
        if pauli == "Z":
            v = jnp.sum(jnp.abs(a0) ** 2 - jnp.abs(a1) ** 2, axis=red)
        else:
            c = jnp.sum(jnp.conj(a0) * a1, axis=red)
            v = 2.0 * (jnp.real(c) if pauli == "X" else jnp.imag(c))
        outs.append(v)
    return jnp.stack(outs, axis=-1)


# --------------------------------------------------------------------------------------------
# Fast kernels on a real-pair layout.
#
# XLA:CPU multiplies complex matrices several times slower than real ones and a gate-by-gate
# sweep costs one pass over memory per gate, so the hot paths use a real array ``P`` of shape
# ``(B, 2**n, 2)`` (last axis: real, imaginary part; flattened index with wire 0 most
# significant) and apply a whole layer of single-qubit gates as a few small real GEMMs, one per
# block of up to ``max_block`` neighbouring wires.
# --------------------------------------------------------------------------------------------


def wire_blocks(n_qubits: int, max_block: int = 4) -> tuple[tuple[int, ...], ...]:
    """Split wires ``0..n-1`` into ``ceil(n / max_block)`` consecutive, near-equal blocks."""
    m = -(-n_qubits // max_block)
    sizes = [n_qubits // m + (1 if i < n_qubits % m else 0) for i in range(m)]
    out, start = [], 0
    for s in sizes:
        out.append(tuple(range(start, start + s)))
        start += s
    return tuple(out)


def kron_gates(gates) -> jax.Array:
    """Kronecker product of ``gates[..., 0, :, :] (x) gates[..., 1, :, :] (x) ...`` (first gate = most
    significant wire). Shape ``(..., 2**k, 2**k)`` for ``gates`` of shape ``(..., k, 2, 2)``."""
    out = gates[..., 0, :, :]
    for k in range(1, gates.shape[-3]):
        g = gates[..., k, :, :]
        out = (out[..., :, None, :, None] * g[..., None, :, None, :])
        out = out.reshape(out.shape[:-4] + (out.shape[-4] * 2, out.shape[-2] * 2))
    return out


def kron_vectors(vecs) -> jax.Array:
    """Kronecker product of the vectors ``vecs[..., k, :]`` over ``k`` (wire 0 most significant).

    Built as a balanced tree of batched outer products written as ``einsum`` so that the reverse
    pass is a pair of batched contractions (a left-to-right chain of elementwise products is
    several times slower to differentiate on CPU).

    Args:
        vecs: ``(..., n, d)``.

    Returns:
        ``(..., d**n)``.
    """
    n = vecs.shape[-2]
    if n == 1:
        return vecs[..., 0, :]
    h = n // 2
    a = kron_vectors(vecs[..., :h, :])
    b = kron_vectors(vecs[..., h:, :])
    out = jnp.einsum("...i,...j->...ij", a, b)
    return out.reshape(out.shape[:-2] + (-1,))


def pair_matrix(u) -> jax.Array:
    """Real ``(..., 2D, 2D)`` matrix acting on interleaved ``(re, im)`` pairs like complex ``u``.

    With ``v[2i + c]`` the real (c=0) / imaginary (c=1) part of component ``i``, ``pair_matrix(u) @ v``
    is ``u @ z`` in the same layout: block ``(i, j)`` is ``[[Re u_ij, -Im u_ij], [Im u_ij, Re u_ij]]``.
    """
    ur, ui = jnp.real(u), jnp.imag(u)
    blk = jnp.stack([jnp.stack([ur, -ui], -1), jnp.stack([ui, ur], -1)], -3)  # (..., D, 2, D, 2)
    d = u.shape[-1]
    return blk.reshape(u.shape[:-2] + (2 * d, 2 * d))


def to_pairs(state, n_qubits: int) -> jax.Array:
    """Complex ``(*batch, 2, ..., 2)`` state -> real ``(*batch, 2**n, 2)``."""
    batch = state.shape[: state.ndim - n_qubits]
    flat = state.reshape(batch + (2**n_qubits,))
    return jnp.stack([jnp.real(flat), jnp.imag(flat)], axis=-1)


def from_pairs(pairs, n_qubits: int) -> jax.Array:
    """Inverse of :func:`to_pairs`."""
    z = jax.lax.complex(pairs[..., 0], pairs[..., 1])
    return z.reshape(z.shape[:-1] + (2,) * n_qubits)


def apply_product_pairs(pairs, gates, n_qubits: int, max_block: int = 4) -> jax.Array:
    """Apply the tensor product of ``gates`` (one single-qubit gate per wire) to a real-pair state.

    The product is ``gates[0] (x) ... (x) gates[n-1]``.

    Each block of up to ``max_block`` wires becomes one ``(2D, 2D)`` real matrix (:func:`pair_matrix`
    of the Kronecker product of its gates) applied to the state's minor axis as a GEMM; the block
    axis is then rotated to the front so the next block becomes minor. After all blocks the axis
    order is the original one. Cost per layer: ``m`` GEMMs with ``K = 2 D`` and ``m`` transposes,
    ``m = ceil(n / max_block)``, instead of ``n`` passes.

    Args:
        pairs: ``(B, 2**n, 2)`` real state.
        gates: ``(n, 2, 2)`` complex (same gates for every sample) or ``(B, n, 2, 2)`` (per sample).
        n_qubits: number of qubits.
        max_block: most wires per block.

    Returns:
        ``(B, 2**n, 2)``.
    """
    bsz = pairs.shape[0]
    blocks = wire_blocks(n_qubits, max_block)
    dims = [2 ** len(b) for b in blocks]
    per_sample = gates.ndim == 4
    x = pairs.reshape((bsz,) + tuple(dims) + (2,))
    for i in reversed(range(len(blocks))):
        blk = blocks[i]
        a = pair_matrix(kron_gates(gates[..., blk[0]:blk[-1] + 1, :, :]).astype(
            complex_dtype(pairs.dtype))).astype(pairs.dtype)
        lead = x.shape[:-2]
        flat = x.reshape(bsz, -1, 2 * dims[i])
        if per_sample:
            flat = jnp.einsum("bok,bjk->boj", flat, a)
        else:
            flat = flat @ a.T
        x = flat.reshape(lead + (dims[i], 2))
        # rotate the block just processed to the front (after the batch axis)
        nd = x.ndim
        x = jnp.transpose(x, (0, nd - 2) + tuple(range(1, nd - 2)) + (nd - 1,))
    return x.reshape(pairs.shape)


def permutation_index(pairs_of_cnots: Sequence[tuple[int, int]], n_qubits: int):
    """Gather index of a CNOT sequence; numpy for small ``n``, computed on device (from an iota)
    for ``n > 16`` where a ``2**n`` constant would bloat the compiled program."""
    if n_qubits <= 16:
        return cnot_sequence_permutation(pairs_of_cnots, n_qubits)
    n = n_qubits
    idx = jnp.arange(2**n, dtype=jnp.int32)
    bits = [(idx >> (n - 1 - k)) & 1 for k in range(n)]
    for c, t in reversed(list(pairs_of_cnots)):
        bits[t] = bits[t] ^ bits[c]
    out = jnp.zeros_like(idx)
    for k in range(n):
        out = out | (bits[k] << (n - 1 - k))
    return out


def permute_pairs(pairs, perm) -> jax.Array:
    """``out[:, s] = pairs[:, perm[s]]`` on a real-pair state ``(B, 2**n, 2)``."""
    return jnp.take(pairs, jnp.asarray(perm), axis=1)
