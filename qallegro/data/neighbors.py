"""Neighbour lists on the host with matscipy, in the edge convention of the whole package.

Edge convention (jraph): edge e goes from the neighbour ``senders[e]`` (j) to the centre ``receivers[e]`` (i);
its vector points from the centre to the neighbour,

    r_ij = positions[senders] - positions[receivers] + shifts @ cell,

with ``shifts`` the integer lattice translation of the neighbour's image. Per-edge quantities are summed onto
``receivers`` (the centre atom), as Allegro sums edge energies onto their centre.
"""

from __future__ import annotations

import numpy as np
from matscipy.neighbours import neighbour_list as _matscipy_neighbour_list


def neighbor_list(positions, cell, pbc, r_max: float, return_lengths: bool = False):
    """All pairs (i, j, image) with ``|r_ij| < r_max``, including periodic images and self-images.

    Works for any cell, including cells shorter than 2·r_max (matscipy enumerates every image), triclinic
    cells, mixed periodicity, and molecules (no periodic axis: a bounding box is used, which changes nothing
    since nothing is periodic, so the cell may then be zeros or None).

    Edges are sorted by (receiver, sender, shift), so the order does not depend on matscipy's binning.

    Args:
        positions: (n_atoms, 3) Cartesian positions in Å.
        cell: (3, 3) lattice vectors as rows in Å; zeros (or None) for a molecule.
        pbc: (3,) bool periodicity along each lattice vector (a scalar is broadcast).
        r_max: cutoff radius in Å.
        return_lengths: also return the edge lengths.

    Returns:
        ``(senders, receivers, shifts)``, or ``(senders, receivers, shifts, lengths)`` if ``return_lengths``:
        senders (n_edges,) int32 (neighbour j), receivers (n_edges,) int32 (centre i), shifts (n_edges, 3)
        float64 integer lattice translations of the neighbour's image, lengths (n_edges,) float64 in Å.

    Raises:
        ValueError: positions not of shape (n_atoms, 3), or cell not of shape (3, 3).
    """
    positions = np.asarray(positions, dtype=np.float64)
    cell = np.zeros((3, 3)) if cell is None else np.asarray(cell, dtype=np.float64)
    pbc = np.broadcast_to(np.asarray(pbc, dtype=bool), (3,)).copy()
    if positions.ndim != 2 or positions.shape[1] != 3:
        raise ValueError(f"positions must have shape (n_atoms, 3), got {positions.shape}")
    if cell.shape != (3, 3):
        raise ValueError(f"cell must have shape (3, 3), got {cell.shape}")
    if not pbc.any():
        # matscipy needs an invertible cell even without periodicity: a box around the atoms, bigger than
        # r_max on every side, gives the same pairs.
        lo = positions.min(axis=0)
        positions = positions - lo
        cell = np.diag(np.maximum(positions.max(axis=0), 0.0) + 2.0 * r_max + 1.0)
    i, j, S, d = _matscipy_neighbour_list("ijSd", positions=positions, cell=cell, pbc=pbc, cutoff=float(r_max))
    order = np.lexsort((S[:, 2], S[:, 1], S[:, 0], j, i))  # deterministic order, independent of matscipy's bins
    i, j, S, d = i[order], j[order], S[order], d[order]
    out = (j.astype(np.int32), i.astype(np.int32), S.astype(np.float64))
    return out + (d,) if return_lengths else out
