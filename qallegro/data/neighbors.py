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

from qallegro.data.structure import Structure


def neighbor_list(structure: Structure, r_max: float, return_lengths: bool = False):
    """All pairs (i, j, image) with |r_ij| < r_max, including periodic images and self-images.

    Works for any cell, including cells shorter than 2·r_max (matscipy enumerates every image), triclinic
    cells, mixed periodicity, and molecules (no cell: a bounding box is used, which changes nothing since
    nothing is periodic).

    Args:
        structure: the configuration (positions in Å).
        r_max: cutoff radius in Å.
        return_lengths: also return the (n_edges,) edge lengths in Å.

    Returns:
        senders (n_edges,) int32 (neighbour j), receivers (n_edges,) int32 (centre i),
        shifts (n_edges, 3) float64 integer lattice translations, [lengths (n_edges,)].
    """
    positions = structure.positions
    cell = structure.cell
    pbc = structure.pbc
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
