"""A trained potential as one deployable file, and the `Potential` object that `load` returns.

File format (version 2), one msgpack document (flax.serialization):

    {"format": "qallegro-potential", "version": 2, "sha256": HEX, "payload": BYTES}

`payload` is itself msgpack: {"header": JSON text, "params": the flax variables as nested dicts of numpy
arrays}. The header holds everything needed to rebuild the model without the training code:
`model_config` (the family and its hyperparameters, for `qallegro.models.build_model`), `statistics` (the
training set's `qallegro.data.statistics.DatasetStatistics`: species, per-species shift and scale,
avg_num_neighbors; node species index k means Z = statistics.species[k]), `dtype`, `units` and free-form
training `metadata`. `sha256` is the SHA-256 of the payload bytes; `load` refuses a file whose checksum or
version does not match. Version 1 kept the statistics inside `model_config` and the atomic numbers as
`species`; it still loads.

Units: positions and cell in Å, energy eV, forces eV/Å, stress eV/Å^3 with ASE's sign
(sigma = (1/V) dE/d(strain); pressure = -trace(sigma)/3).
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import warnings
from typing import Any, Dict, Optional, Sequence, Tuple, Union

import jax
import jax.numpy as jnp
import numpy as np
from flax import serialization

from qallegro.data.statistics import DatasetStatistics, split_model_config
from qallegro.potential.graph import atomic_energies, energy_dtype, jit_energy_forces_stress, jit_graph_energies

ARTIFACT_FORMAT = "qallegro-potential"
ARTIFACT_VERSION = 2
SUPPORTED_VERSIONS = (1, 2)
UNITS = {"length": "Å", "energy": "eV", "forces": "eV/Å", "stress": "eV/Å^3 (ASE sign)", "mass": "amu"}


class ArtifactError(ValueError):
    """A potential file that cannot be loaded: not an artifact, unknown version, bad checksum, bad content.
    The message names the file."""


def _to_numpy_tree(tree: Any) -> Any:
    return jax.tree.map(lambda x: np.asarray(x), serialization.to_state_dict(tree))


def _hyperparameters_and_statistics(model_config: Dict[str, Any],
                                    statistics: Union[DatasetStatistics, Sequence[int]]):
    """(hyperparameters, DatasetStatistics) from a config and either the statistics or the atomic numbers (then
    the config holds the data-derived fields, as version-1 artifacts did)."""
    if isinstance(statistics, DatasetStatistics):
        if "num_species" in model_config and int(model_config["num_species"]) != len(statistics.species):
            raise ValueError(f"model_config has num_species={model_config['num_species']} but the statistics "
                             f"have {len(statistics.species)} species {list(statistics.species)}")
        return split_model_config(dict(model_config, **statistics.model_fields()), statistics.species)
    species = [int(z) for z in statistics]
    if "num_species" in model_config and int(model_config["num_species"]) != len(species):
        raise ValueError(f"model_config has num_species={model_config['num_species']} but {len(species)} species "
                         f"{species} were given")
    return split_model_config(model_config, species)


def save(path: str, model_config: Dict[str, Any], params: Any,
         statistics: Union[DatasetStatistics, Sequence[int]], dtype: str = "float32",
         metadata: Optional[Dict[str, Any]] = None) -> str:
    """Write a trained model as one versioned artifact.

    Args:
        path: output file (conventionally `*.qallegro`); parent directories are created; written atomically
            (temporary file + rename).
        model_config: the family and hyperparameters for `qallegro.models.build_model` (JSON-serialisable).
        params: the flax variables ({"params": ...}), any array type.
        statistics: the training set's `DatasetStatistics`; or the model's atomic numbers in index order, when
            `model_config` already holds the data-derived fields (num_species, avg_num_neighbors, species_scale,
            species_shift).
        dtype: "float32" or "float64": the dtype the network was trained in and runs in (energies are summed
            in float64 whenever JAX's x64 mode is on, see `qallegro.potential.graph`).
        metadata: JSON-serialisable training metadata (dataset, metrics, epochs, ...).

    Returns:
        The SHA-256 hex digest stored in the file.

    Raises:
        ValueError: species count does not match model_config["num_species"], missing data-derived fields,
            unknown dtype.
    """
    if dtype not in ("float32", "float64"):
        raise ValueError(f"dtype must be float32 or float64, got {dtype!r}")
    hyperparameters, stats = _hyperparameters_and_statistics(model_config, statistics)
    header = {
        "model_config": hyperparameters, "statistics": stats.to_dict(), "dtype": dtype, "units": UNITS,
        "metadata": dict(metadata or {}),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "versions": {"jax": jax.__version__},
    }
    payload = serialization.msgpack_serialize(
        {"header": json.dumps(header, default=float), "params": _to_numpy_tree(params)})
    digest = hashlib.sha256(payload).hexdigest()
    blob = serialization.msgpack_serialize(
        {"format": ARTIFACT_FORMAT, "version": ARTIFACT_VERSION, "sha256": digest, "payload": payload})
    path = os.path.abspath(path)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(blob)
    os.replace(tmp, path)
    return digest


def read_artifact(path: str) -> Dict[str, Any]:
    """Read and verify an artifact without building the model.

    Returns:
        {"model_config" (hyperparameters), "statistics" (`DatasetStatistics`), "species" (its atomic numbers),
        "dtype", "units", "metadata", "created", "versions", "params", "version", "sha256", "path"}; a version-1
        file is returned in the same form.

    Raises:
        FileNotFoundError: no file at `path`.
        ArtifactError: not a qallegro potential, an unknown format version, a checksum mismatch (a corrupted or
            edited file) or a malformed payload; the message names the file.
    """
    path = os.path.abspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no potential file at {path}")
    with open(path, "rb") as f:
        blob = f.read()
    try:
        outer = serialization.msgpack_restore(blob)
    except Exception as err:  # msgpack raises several exception types
        raise ArtifactError(f"{path}: not a qallegro potential file (cannot decode: {err})") from None
    if not isinstance(outer, dict) or outer.get("format") != ARTIFACT_FORMAT:
        raise ArtifactError(f"{path}: not a qallegro potential file (format tag missing)")
    version = outer.get("version")
    if version not in SUPPORTED_VERSIONS:
        raise ArtifactError(f"{path}: artifact version {version!r} is not supported by this qallegro "
                            f"(supported: {list(SUPPORTED_VERSIONS)}); upgrade qallegro or re-export the model")
    payload = outer.get("payload")
    if not isinstance(payload, (bytes, bytearray)):
        raise ArtifactError(f"{path}: artifact has no payload")
    digest = hashlib.sha256(payload).hexdigest()
    if digest != outer.get("sha256"):
        raise ArtifactError(f"{path}: checksum mismatch (stored {outer.get('sha256')}, computed {digest}); "
                            f"the file is corrupted or was modified")
    try:
        inner = serialization.msgpack_restore(payload)
        header = json.loads(inner["header"])
        params = inner["params"]
        if version == 1:  # statistics inside model_config, atomic numbers beside it
            header["model_config"], statistics = split_model_config(header["model_config"], header.pop("species"))
        else:
            statistics = DatasetStatistics.from_dict(header["statistics"])
        header["dtype"]
    except Exception as err:
        raise ArtifactError(f"{path}: malformed payload ({err})") from None
    return dict(header, statistics=statistics, species=list(statistics.species), params=params, version=version,
                sha256=digest, path=path)


def load(path: str, dtype: Optional[str] = None) -> "Potential":
    """Load an artifact written by `save` as a ready-to-use `Potential`.

    Args:
        path: the `.qallegro` file.
        dtype: override the stored dtype ("float32" / "float64"). float64 needs `jax_enable_x64`; without it
            the model runs in float32 (with a warning).
    Raises:
        FileNotFoundError, ArtifactError: see `read_artifact`.
    """
    art = read_artifact(path)
    return Potential(art["model_config"], art["params"], art["statistics"], dtype=dtype or art["dtype"],
                     metadata=art["metadata"], path=art["path"], sha256=art["sha256"])


class Potential:
    """A trained model with jit-compiled energy / forces / stress for (positions, species, cell, pbc).

    The three methods take

    - positions: (N, 3) Å;
    - species: (N,) atomic numbers Z (each must be one of `self.species`);
    - cell: (3, 3) lattice vectors as rows in Å, or None for a molecule;
    - pbc: bool or (3,) bools (default: periodic along every axis when a cell is given, else not periodic).

    The neighbour list is built on the host (matscipy; any cell, also smaller than 2 r_max) and padded to a
    coarse ladder of sizes, so repeated calls with similar sizes reuse a handful of compiled functions.
    Energies and forces are computed by one jit-compiled function of the padded graph. For loops that stay
    inside JAX (MD), use `qallegro.md` (jax-md neighbour lists) with `self.atomic_energies`.

    Attributes:
        model: the flax module.
        params: its variables.
        model_config: the family and hyperparameters that `qallegro.models.build_model` built the module from.
        statistics: the training set's `qallegro.data.statistics.DatasetStatistics` (normalisation).
        species: tuple of atomic numbers, in the model's species-index order.
        r_max: cutoff (Å).
        dtype: "float32" or "float64": the network's dtype (energies: see `energy`).
        metadata: training metadata.
        path: the file it was loaded from (None when built in memory).
        sha256: the payload checksum stored in the file (None when built in memory).
    """

    def __init__(self, model_config: Dict[str, Any], params: Any,
                 statistics: Union[DatasetStatistics, Sequence[int]], dtype: str = "float32",
                 metadata: Optional[Dict[str, Any]] = None, path: Optional[str] = None,
                 sha256: Optional[str] = None):
        from qallegro.models import build_model

        if dtype == "float64" and not jax.config.jax_enable_x64:
            warnings.warn("float64 potential loaded without jax_enable_x64: running in float32", stacklevel=2)
            dtype = "float32"
        # statistics: a DatasetStatistics, or the atomic numbers with the data-derived fields inside model_config
        self.model_config, self.statistics = _hyperparameters_and_statistics(dict(model_config), statistics)
        self.model = build_model(self.model_config, self.statistics)
        self.dtype = dtype
        self._jdtype = jnp.float64 if dtype == "float64" else jnp.float32
        self.params = jax.tree.map(lambda p: jnp.asarray(p, self._jdtype), params)
        self.species = self.statistics.species
        self.r_max = float(self.model_config["r_max"])
        self.metadata = dict(metadata or {})
        self.path = path
        self.sha256 = sha256
        self._rng = jax.random.PRNGKey(0) if getattr(self.model, "shots", None) is not None else None
        model, rng = self.model, self._rng
        # Module-level jit caches: potentials with the same hyperparameters share compilations.
        self._energy_graph = lambda p, g: jit_graph_energies(model, p, g, rng)
        self._forces_graph = lambda p, g: jit_energy_forces_stress(model, p, g, False, rng)
        self._stress_graph = lambda p, g: jit_energy_forces_stress(model, p, g, True, rng)

    def __repr__(self) -> str:
        family = self.model_config.get("family", "allegro")
        return (f"Potential({family}, species={list(self.species)}, r_max={self.r_max}, dtype={self.dtype}, "
                f"path={self.path!r})")

    # ---- the jit-compiled functions -------------------------------------------------------------------------
    def graph(self, positions, species, cell=None, pbc=None):
        """The padded single-structure GraphsTuple (host neighbour list) the methods below evaluate.

        Raises:
            qallegro.data.structure.DataError: bad shapes, non-finite positions, overlapping atoms, or a species
                the model does not know.
        """
        from qallegro.data.graphs import batch_and_pad, structure_to_graph
        from qallegro.data.structure import make_structure

        positions = np.asarray(positions, dtype=np.float64)
        if pbc is None:
            pbc = cell is not None and np.abs(np.linalg.det(np.asarray(cell, dtype=np.float64))) > 1e-8
        structure = make_structure(species, positions, cell, pbc, source="Potential input")
        graph = batch_and_pad([structure_to_graph(structure, self.r_max, self.species)])
        # Positions in the energy-assembly dtype (float64 under x64): edge vectors are exact differences, cast to
        # the network's dtype (self.dtype) only afterwards (qallegro.potential.graph).
        dtype = jnp.promote_types(self._jdtype, energy_dtype())
        nodes = dict(graph.nodes, positions=jnp.asarray(graph.nodes["positions"], dtype))
        return graph._replace(nodes=nodes)

    def energy(self, positions, species, cell=None, pbc=None) -> jnp.ndarray:
        """Total energy in eV (a 0-d array): summed with the species shifts in float64 when JAX's x64 mode is on
        (even for a float32 network), else in float32."""
        return self._energy_graph(self.params, self.graph(positions, species, cell, pbc))[0]

    def energy_and_forces(self, positions, species, cell=None, pbc=None) -> Tuple[jnp.ndarray, jnp.ndarray]:
        """(energy eV, forces (N, 3) eV/Å), forces = -dE/dr."""
        n = len(positions)
        out = self._forces_graph(self.params, self.graph(positions, species, cell, pbc))
        return out["energy"][0], out["forces"][:n]

    def energy_forces_stress(self, positions, species, cell=None, pbc=None):
        """(energy eV, forces (N, 3) eV/Å, stress (3, 3) eV/Å^3, ASE sign; zeros for a structure without a
        cell)."""
        n = len(positions)
        out = self._stress_graph(self.params, self.graph(positions, species, cell, pbc))
        return out["energy"][0], out["forces"][:n], out["stress"][0]

    # ---- building blocks for JAX loops (MD) -----------------------------------------------------------------
    def species_index(self, Z) -> np.ndarray:
        """(N,) int32 model species indices of atomic numbers `Z`. Raises DataError for unknown species."""
        from qallegro.data.graphs import species_index

        return species_index(np.asarray(Z), self.species, "Potential input")

    def atomic_energies(self, edge_vectors, species_index, senders, receivers, edge_mask, params=None):
        """(N,) atomic energies (eV) of pure edge data, per-species shift included: a pure, jittable function
        (see qallegro.nn.allegro for the argument shapes; r_ij = x_j - x_i with senders = j, receivers = i).

        The network runs in `dtype`; the energies come back in float64 when JAX's x64 mode is on
        (`qallegro.potential.graph.atomic_energies`)."""
        return atomic_energies(self.model, self.params if params is None else params, edge_vectors, species_index,
                               senders, receivers, edge_mask, self._rng)
