"""Potentials: energy / forces / stress of a model, and trained models saved as one deployable artifact.

* `qallegro.potential.graph`: pure functions on padded graphs (used by training, timing and MD):
  `edge_vectors`, `graph_energies`, `energy_forces_stress`, `node_graph_index`.
* `qallegro.potential.artifact`: `save(path, ...)` writes one versioned, checksummed file;
  `load(path)` returns a `Potential` with jit-compiled `energy`, `energy_and_forces` and
  `energy_forces_stress` for (positions, species, cell, pbc).
"""

from qallegro.potential.artifact import ARTIFACT_VERSION, ArtifactError, Potential, load, read_artifact, save
from qallegro.potential.graph import edge_vectors, energy_forces_stress, graph_energies, node_graph_index

__all__ = ["edge_vectors", "energy_forces_stress", "graph_energies", "node_graph_index", "ARTIFACT_VERSION",
           "ArtifactError", "Potential", "load", "read_artifact", "save"]
