"""A potential inside JAX: jax-md space, in-jit neighbour lists, and the energy function of positions.

Everything here is traced once and then runs inside `jit` / `lax.scan` with no host round trip:

* `make_space(cell, pbc)`: jax-md's `space.free()` for a molecule or `space.periodic_general(box)` (fractional
  coordinates; jax-md's box is the transpose of ASE's row-vector cell) for a 3D-periodic cell.
* `MDSystem`: the positions in the space's coordinates, species indices, masses, the jax-md neighbour list
  functions (Sparse format, cell list for periodic cells, skin `skin` Å) and `energy_fn(R, neighbor)`.
* `allocate_neighbors`: allocate with a capacity, re-allocating (with more room) whenever the buffer
  overflowed; `MDSystem.neighbors_ok` checks the overflow bit on the host.

Edge convention as in qallegro.data.neighbors: for a jax-md pair (i, j) = (idx[0], idx[1]) the edge goes from
the neighbour j (sender) to the centre i (receiver) with r_ij = displacement(R_j, R_i) = x_j - x_i (minimum
image). Pairs in the skin (r_max < r < r_max + skin) contribute exactly zero through the cutoff.

Limits: periodic cells must be periodic along all three axes and at least 2 (r_max + skin) wide in every
direction (minimum image); `build_system` checks this and also checks the first neighbour list against
matscipy's, so a cell the minimum-image convention would mishandle is refused rather than silently wrong.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np
from jax_md import partition, space

from qallegro.data.neighbors import neighbor_list
from qallegro.potential.artifact import Potential


def perpendicular_widths(cell: np.ndarray) -> np.ndarray:
    """(3,) distances (Å) between opposite faces of the cell with row lattice vectors `cell`."""
    cell = np.asarray(cell, dtype=np.float64)
    volume = abs(np.linalg.det(cell))
    return np.array([volume / np.linalg.norm(np.cross(cell[(k + 1) % 3], cell[(k + 2) % 3])) for k in range(3)])


def make_space(cell: Optional[np.ndarray], pbc) -> tuple:
    """(displacement_fn, shift_fn, box, periodic) for jax-md.

    Args:
        cell: (3, 3) row lattice vectors in Å (ignored for a molecule).
        pbc: bool or (3,) bools: all False (molecule, free space) or all True (periodic).
    Raises:
        ValueError: mixed periodicity (e.g. a slab), or a periodic cell that is singular.
    """
    pbc = np.broadcast_to(np.asarray(pbc, dtype=bool), (3,))
    if not pbc.any():
        displacement, shift = space.free()
        return displacement, shift, None, False
    if not pbc.all():
        raise ValueError(f"jax-md MD supports molecules (pbc all False) or 3D-periodic cells, got pbc={pbc.tolist()}")
    cell = np.asarray(cell, dtype=np.float64)
    if abs(np.linalg.det(cell)) < 1e-8:
        raise ValueError(f"periodic cell is singular: {cell.tolist()}")
    box = jnp.asarray(cell.T)  # jax-md: real = box @ fractional, lattice vectors as columns
    displacement, shift = space.periodic_general(box, fractional_coordinates=True)
    return displacement, shift, box, True


def make_energy_fn(potential: Potential, displacement: Callable, species_index: jnp.ndarray,
                   params: Any = None) -> Callable:
    """``energy_fn(R, neighbor, **kwargs)`` -> total energy (eV) for jax-md.

    R: (N, 3) positions in the space's coordinates (fractional for periodic cells); neighbor: a jax-md Sparse
    neighbour list. Extra kwargs (e.g. `perturbation`, `box`) are passed to the displacement function; kT and
    other integrator kwargs are ignored. Pure and jittable; jax.grad gives Cartesian forces (jax-md's
    periodic_general defines the derivative so).
    """
    species_index = jnp.asarray(species_index, jnp.int32)

    def energy_fn(R, neighbor, **kwargs):
        disp_kwargs = {k: v for k, v in kwargs.items() if k in ("perturbation", "box", "new_box")}
        n = R.shape[0]
        centre, other = neighbor.idx[0], neighbor.idx[1]
        mask = (centre < n) & (other < n)
        centre = jnp.where(mask, centre, 0)
        other = jnp.where(mask, other, 0)
        vectors = jax.vmap(lambda a, b: displacement(a, b, **disp_kwargs))(R[other], R[centre])
        atom_energy = potential.atomic_energies(vectors, species_index, other, centre, mask, params=params)
        return jnp.sum(atom_energy)

    return energy_fn


@dataclasses.dataclass
class MDSystem:
    """A structure prepared for jax-md.

    Attributes:
        R: (N, 3) positions in the space's coordinates: fractional in [0, 1) for periodic cells; for a molecule
            Å relative to `origin` (the input's centroid), so a far-from-origin molecule loses no precision in
            the float32 state.
        Z: (N,) atomic numbers; species_index: (N,) model species indices; masses: (N,) amu.
        cell: (3, 3) Å rows or None; periodic: bool.
        displacement, shift: jax-md space functions; neighbor_fn: jax-md NeighborListFns (Sparse).
        energy_fn: energy_fn(R, neighbor) in eV.
        skin: Å; capacity_multiplier: headroom of a (re-)allocation.
        origin: (3,) float64 Å added back by `to_cartesian` (zeros for periodic cells, which are wrapped).
    """

    R: jnp.ndarray
    Z: np.ndarray
    species_index: jnp.ndarray
    masses: jnp.ndarray
    cell: Optional[np.ndarray]
    periodic: bool
    displacement: Callable
    shift: Callable
    neighbor_fn: Any
    energy_fn: Callable
    r_max: float
    skin: float
    capacity_multiplier: float
    origin: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(3))
    #: the MD integrators and compiled chunks of this system, reused by later runs (qallegro.md.dynamics.run_md)
    chunks: dict = dataclasses.field(default_factory=dict, repr=False)

    def to_cartesian(self, R) -> np.ndarray:
        """(N, 3) float64 Cartesian positions in Å of space coordinates `R` (wrapped into the cell if periodic;
        `origin` added for a molecule)."""
        R = np.asarray(R, dtype=np.float64)
        return R @ self.cell if self.periodic else R + self.origin

    def allocate(self, R=None, extra_capacity: int = 0):
        """A new neighbour list for `R` (default: the initial positions) with `capacity_multiplier` headroom
        plus `extra_capacity` pairs. Not jittable (it sizes the buffers)."""
        neighbors = self.neighbor_fn.allocate(self.R if R is None else R, extra_capacity=extra_capacity)
        return _static_cell_size(neighbors)

    @staticmethod
    def neighbors_ok(neighbors) -> bool:
        """False when the list's buffer (or its cell list) overflowed since allocation: pairs may be missing."""
        return not bool(neighbors.did_buffer_overflow)


def _static_cell_size(neighbors):
    """jax-md (0.2.29) stores the cell-list cell size of fractional coordinates as a 0-d jax array in a static
    (metadata) field, which newer JAX refuses to compare under jit; a Python float is equivalent."""
    if neighbors.cell_size is not None and not isinstance(neighbors.cell_size, float):
        neighbors = neighbors.set(cell_size=float(np.asarray(neighbors.cell_size)))
    return neighbors


def build_system(potential: Potential, positions, Z, cell=None, pbc=False, masses=None, skin: float = 0.5,
                 capacity_multiplier: float = 1.25, check: bool = True) -> MDSystem:
    """Prepare a structure for jax-md MD with `potential`.

    Args:
        positions: (N, 3) Å; Z: (N,) atomic numbers; cell: (3, 3) rows Å; pbc: bool or (3,).
        masses: (N,) amu (default: ASE's standard atomic masses).
        skin: neighbour-list skin in Å (the list is rebuilt inside jit when an atom moved more than skin/2).
        capacity_multiplier: neighbour buffer headroom at allocation (jax-md).
        check: compare the first neighbour list with matscipy's (catches minimum-image problems).
    Raises:
        DataError: the checks of the Potential API (bad shapes, non-finite positions or cell, atoms closer than
            1e-3 Å, species unknown to the potential; names the atom).
        ValueError: mixed pbc; a periodic cell narrower than 2 (r_max + skin) (replicate it); the neighbour check
            failing.
    """
    from ase.data import atomic_masses

    from qallegro.data.structure import make_structure

    periodic_input = bool(np.any(pbc))
    make_structure(Z, positions, cell if periodic_input else None, pbc, source="MD input")
    Z = np.asarray(Z, dtype=np.int64)
    positions = np.asarray(positions, dtype=np.float64)
    species_index = potential.species_index(Z)
    masses = atomic_masses[Z] if masses is None else np.asarray(masses, dtype=np.float64)
    displacement, shift, box, periodic = make_space(cell, pbc)
    cutoff = potential.r_max + skin
    dtype = potential._jdtype
    if periodic:
        cell = np.asarray(cell, dtype=np.float64)
        widths = perpendicular_widths(cell)
        if np.any(widths <= 2.0 * cutoff):
            raise ValueError(f"periodic cell widths {np.round(widths, 3).tolist()} Å must exceed 2 (r_max + skin) = "
                             f"{2 * cutoff:.2f} Å for jax-md's minimum image: replicate the cell "
                             f"(e.g. atoms.repeat) or lower the skin")
        frac = np.linalg.solve(cell.T, positions.T).T % 1.0
        R = jnp.asarray(frac, dtype)
        # A cell list needs >= 3 cells per side; fall back to all pairs otherwise (small cells).
        use_cells = bool(np.all(widths >= 3.0 * cutoff))
        neighbor_fn = partition.neighbor_list(displacement, box, cutoff, dr_threshold=skin,
                                              capacity_multiplier=capacity_multiplier, fractional_coordinates=True,
                                              disable_cell_list=not use_cells, format=partition.Sparse)
    else:
        cell = None
        # Centred in float64 before the cast: translation changes nothing (the centre of mass does not drift, the
        # initial momenta have none).
        origin = positions.mean(axis=0) if len(positions) else np.zeros(3)
        R = jnp.asarray(positions - origin, dtype)
        neighbor_fn = partition.neighbor_list(displacement, 1.0, cutoff, dr_threshold=skin,
                                              capacity_multiplier=capacity_multiplier, disable_cell_list=True,
                                              format=partition.Sparse)
    energy_fn = make_energy_fn(potential, displacement, species_index)
    system = MDSystem(R=R, Z=Z, species_index=jnp.asarray(species_index), masses=jnp.asarray(masses, dtype),
                      cell=cell, periodic=periodic, displacement=displacement, shift=shift,
                      neighbor_fn=neighbor_fn, energy_fn=energy_fn, r_max=potential.r_max, skin=skin,
                      capacity_multiplier=capacity_multiplier, origin=np.zeros(3) if periodic else origin)
    if check:
        _check_against_matscipy(system, positions, pbc)
    return system


def edges_within(system: MDSystem, neighbors, R=None) -> int:
    """Number of directed pairs in `neighbors` closer than r_max (Å) at positions `R`."""
    R = system.R if R is None else R
    n = R.shape[0]
    centre, other = np.asarray(neighbors.idx[0]), np.asarray(neighbors.idx[1])
    mask = (centre < n) & (other < n)
    d = jax.vmap(system.displacement)(R[other[mask]], R[centre[mask]])
    return int(np.sum(np.linalg.norm(np.asarray(d), axis=-1) < system.r_max))


def _check_against_matscipy(system: MDSystem, positions: np.ndarray, pbc) -> None:
    _, _, _, lengths = neighbor_list(positions, system.cell, pbc, system.r_max, return_lengths=True)
    # Pairs right at r_max may be counted differently in float32: compare away from the boundary.
    expected = int(np.sum(lengths < system.r_max))
    got = edges_within(system, system.allocate())
    if abs(got - expected) > max(2, int(np.sum(np.abs(lengths - system.r_max) < 1e-4))):
        raise ValueError(f"jax-md neighbour list finds {got} pairs within r_max, matscipy {expected}: the "
                         f"minimum-image convention does not hold for this cell; replicate it")
