"""The QDI circuit's hyperparameters: their one declaration, validation, static shapes and initial weights.

:class:`QDIConfig` declares every hyperparameter of the circuit with its default; the flax layer
(:class:`~qallegro.quantum.layer.QDI`) and the model variant (``qallegro.nn.variants.AllegroQDI``)
expose the same hyperparameters as module attributes (their names are model-config keys) and take
their defaults from here through :func:`qdi_default`, so a default changes in one place.

Everything here is plain Python/numpy and static: model code can size its layers from it before any
tracing. The circuit itself is described in :mod:`qallegro.quantum.circuit`.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Mapping, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from qallegro.errors import ConfigError

__all__ = [
    "ROTATIONS",
    "ENTANGLINGS",
    "MEASURES",
    "MEASUREMENT_MODES",
    "MAX_QUBITS",
    "MAX_DEPTH",
    "QDIConfig",
    "QDI_FIELDS",
    "qdi_default",
    "qdi_config_from",
    "qdi_output_size",
    "qdi_weight_shape",
    "measured_wires",
    "entangler_pairs",
    "readout_cascade",
    "uniform_angle_init",
    "init_qdi_weights",
]

ROTATIONS = ("X", "Y", "Z")
ENTANGLINGS = ("strong", "basic")
MEASURES = ("X", "Y", "Z")
MEASUREMENT_MODES = ("none", "even", "single")
MAX_QUBITS = 25
MAX_DEPTH = 30


def _check_int(name: str, value, lo: int, hi: Optional[int]) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ConfigError(f"{name} must be an integer, got {value!r} ({type(value).__name__})")
    value = int(value)
    if value < lo or (hi is not None and value > hi):
        rng = f"{lo}..{hi}" if hi is not None else f">= {lo}"
        raise ConfigError(f"{name} must be in {rng}, got {value}")
    return value


def _check_choice(name: str, value, choices: Sequence[str], upper: bool) -> str:
    if not isinstance(value, str):
        raise ConfigError(f"{name} must be one of {list(choices)}, got {value!r}")
    v = value.upper() if upper else value.lower()
    if v not in choices:
        raise ConfigError(f"unknown {name} {value!r}; expected one of {list(choices)}")
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
        qallegro.errors.ConfigError: (a ValueError) naming the offending option, for ``n_qubits``
            outside 1..25, ``depth`` outside 1..30, ``in_features`` not a positive multiple of
            ``n_qubits``, or an unknown rotation/entangling/measure/measurement_mode (Pauli names are case-insensitive).
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
            raise ConfigError(
                f"in_features={f} is not a multiple of n_qubits={n}: the input is re-uploaded in "
                f"chunks of n_qubits angles"
            )
        set_ = object.__setattr__  # frozen: normalised values are written once, here
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
        return measured_wires(self.n_qubits, self.measurement_mode)

    @property
    def weight_shape(self) -> tuple[int, ...]:
        """Shape of the trainable weights (see :func:`qdi_weight_shape`)."""
        return qdi_weight_shape(self.n_qubits, self.depth, self.in_features, self.entangling)

    @property
    def dim(self) -> int:
        """Hilbert space dimension ``2**n_qubits``."""
        return 2**self.n_qubits


#: Names of the circuit hyperparameters, in declaration order (the fields of :class:`QDIConfig`).
QDI_FIELDS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(QDIConfig))
_DEFAULTS = {f.name: f.default for f in dataclasses.fields(QDIConfig)}


def qdi_default(name: str) -> Any:
    """The default of hyperparameter ``name`` as declared by :class:`QDIConfig`.

    Modules that expose the hyperparameters as their own attributes use it as the attribute's default.

    Raises:
        KeyError: if ``name`` is not a field of :class:`QDIConfig`.
    """
    if name not in _DEFAULTS:
        raise KeyError(f"{name!r} is not a QDI hyperparameter; they are {list(QDI_FIELDS)}")
    return _DEFAULTS[name]


def qdi_config_from(source: Any, names: Optional[Mapping[str, str]] = None, **overrides) -> QDIConfig:
    """Build a :class:`QDIConfig` from the like-named attributes of ``source`` (e.g. a flax module).

    Args:
        source: object with one attribute per hyperparameter.
        names: attribute name of a hyperparameter where it differs from the field name, e.g.
            ``{"depth": "qdi_depth"}`` for a model that has its own ``depth``.
        **overrides: values that replace the attributes (e.g. a resolved ``in_features``).

    Returns:
        The validated configuration.

    Raises:
        ValueError: as :class:`QDIConfig`.
    """
    names = names or {}
    values = {f: getattr(source, names.get(f, f)) for f in QDI_FIELDS}
    values.update(overrides)
    return QDIConfig(**values)


def measured_wires(n_qubits: int, measurement_mode: str) -> tuple[int, ...]:
    """Wires read out by ``measurement_mode`` (validated names), in output order."""
    if measurement_mode == "none":
        return tuple(range(n_qubits))
    if measurement_mode == "even":
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
    return len(measured_wires(n, mode))


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


def uniform_angle_init(minval: float = 0.0, maxval: float = 2.0 * math.pi) -> Callable:
    """Initializer ``(key, shape, dtype=float32) -> array`` of i.i.d. angles from ``Uniform[minval, maxval)`` (radians).

    The one weight initialiser of the QDI circuit: the layer's default ``weight_init`` and
    :func:`init_qdi_weights`. The default ``[0, 2 pi)`` is PennyLane's ``TorchLayer``/``KerasLayer``
    default for circuit weights; every angle enters through ``exp(-i w P / 2)``, so it covers each
    rotation once up to sign and the circuit starts as a random draw from its own family. A narrow
    range (e.g. ``[0, 0.1)``) starts the variational block near the identity up to its fixed CNOTs,
    which keeps gradients larger for deep circuits (barren-plateau mitigation).
    """

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype=dtype, minval=minval, maxval=maxval)

    return init


def init_qdi_weights(key: jax.Array, config: QDIConfig, dtype=jnp.float32) -> jax.Array:
    """Default weights of a circuit: :func:`uniform_angle_init` ``()`` drawn at ``config.weight_shape``.

    Args:
        key: PRNG key.
        config: circuit hyperparameters.
        dtype: real dtype of the weights.

    Returns:
        ``config.weight_shape`` angles in ``[0, 2 pi)``.
    """
    return uniform_angle_init()(key, config.weight_shape, dtype)
