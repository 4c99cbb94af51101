"""Seeded generation of diverse periodic Li–Cu structures (unlabelled; ase + numpy only, no torch).

The paper's Cu–Li DFT set is not public, so qallegro generates its own: this module builds the structures,
`experiments/culi.py` adds short MD snapshots and the SevenNet-0 labels. Kinds (`config_type`):

- ``solid_solution``: fcc, bcc or hcp supercells with a random Li fraction x in [0, 1] on random sites.
- ``intermetallic``: ordered candidates: B2 (CsCl), B1 (NaCl), B3 (zinc blende), L1_0, L1_2 (Cu3Li and
  Li3Cu) and C1 (fluorite CuLi2 / LiCu2) supercells.
- ``vacancy`` / ``interstitial``: a solid solution or intermetallic with 1–2 atoms removed, or one Li or Cu atom
  added in the largest hole found among random trial points.
- ``surface``: fcc(100)/(111)/(110), bcc(100)/(110), hcp(0001) slabs with random Li fraction and 5–7 Å of vacuum
  on each side (the cell stays periodic along z: the vacuum is wider than any cutoff used here).
- ``interface``: coherent Cu | Li stacks (fcc or bcc layers, a shared in-plane lattice constant, each region's
  layer spacing set by its own volume per atom), periodic (two interfaces), a few atoms swapped across.
- ``strained``: bulk cells under large random strain (up to ±8 % normal, ±6 % shear).

Every structure is scaled to a volume per atom from Vegard's law between fcc Cu (12.0 Å^3) and bcc Li
(20.3 Å^3), then strained (random symmetric strain: cells become triclinic) and rattled. Structure k of seed s
depends only on (s, k): `generate_structures(n, s)[:m] == generate_structures(m, s)`. No two atoms are closer
than `MIN_DISTANCE` (periodic images included): candidates that violate it are redrawn from the same seeded
stream.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

LI, CU = 3, 29
#: Volume per atom (Å^3) of fcc Cu and bcc Li near the PBE equilibrium.
VOLUME_PER_ATOM = {CU: 12.0, LI: 20.3}
#: No two atoms of a generated structure are closer than this (Å).
MIN_DISTANCE = 1.7
#: Largest cell generated.
MAX_ATOMS = 64
GENERATOR = "qallegro.data.culi v1"

#: Kinds and their share of the static structures.
KINDS: Tuple[Tuple[str, float], ...] = (
    ("solid_solution", 0.30), ("intermetallic", 0.15), ("vacancy", 0.08), ("interstitial", 0.07),
    ("surface", 0.15), ("interface", 0.10), ("strained", 0.15),
)


def vegard_volume(numbers: np.ndarray) -> float:
    """Volume per atom (Å^3) of a Li–Cu composition by Vegard's law on the volume."""
    x_li = float(np.mean(np.asarray(numbers) == LI))
    return (1.0 - x_li) * VOLUME_PER_ATOM[CU] + x_li * VOLUME_PER_ATOM[LI]


def min_distance(atoms) -> float:
    """Shortest interatomic distance (Å) including periodic images (inf for a single isolated atom)."""
    from matscipy.neighbours import neighbour_list

    cutoff = 3.0
    d = neighbour_list("d", atoms, cutoff)
    return float(d.min()) if len(d) else float("inf")


def _scale_to_volume(atoms, volume_per_atom: float) -> None:
    factor = (volume_per_atom * len(atoms) / atoms.get_volume()) ** (1.0 / 3.0)
    atoms.set_cell(atoms.cell[:] * factor, scale_atoms=True)


def _strain(atoms, rng: np.random.Generator, normal: float, shear: float) -> None:
    eps = np.diag(rng.uniform(-normal, normal, 3))
    off = rng.uniform(-shear, shear, 3)
    eps[0, 1] = eps[1, 0] = off[0]
    eps[0, 2] = eps[2, 0] = off[1]
    eps[1, 2] = eps[2, 1] = off[2]
    atoms.set_cell(atoms.cell[:] @ (np.eye(3) + eps), scale_atoms=True)


def _repeat_to_size(atoms, rng: np.random.Generator, max_atoms: int, min_atoms: int = 8):
    """A random diagonal supercell of `atoms` with min_atoms..max_atoms atoms (or the cell itself)."""
    n = len(atoms)
    options = [(i, j, k) for i in range(1, 5) for j in range(1, 5) for k in range(1, 5)
               if min_atoms <= n * i * j * k <= max_atoms]
    if not options:
        return atoms.copy()
    # Favour small cells (labelling cost grows with size): weight ~ 1 / atoms^2.
    weights = np.array([1.0 / (i * j * k) ** 2 for i, j, k in options])
    return atoms.repeat(options[rng.choice(len(options), p=weights / weights.sum())])


def _lattice(rng: np.random.Generator):
    from ase.build import bulk

    kind = rng.choice(["fcc", "bcc", "hcp"])
    if kind == "hcp":
        return bulk("Cu", "hcp", a=2.6, c=2.6 * 1.633), "hcp"
    return bulk("Cu", kind, a=3.6, cubic=bool(rng.random() < 0.5)), str(kind)


def _assign(atoms, rng: np.random.Generator, x_li: Optional[float] = None) -> float:
    n = len(atoms)
    x_li = rng.random() if x_li is None else x_li
    numbers = np.full(n, CU)
    numbers[rng.permutation(n)[:int(round(x_li * n))]] = LI
    atoms.numbers = numbers
    return x_li


def _finish(atoms, rng: np.random.Generator, normal=0.04, shear=0.03, rattle=(0.02, 0.12)):
    _scale_to_volume(atoms, vegard_volume(atoms.numbers) * rng.uniform(0.93, 1.08))
    _strain(atoms, rng, normal, shear)
    atoms.positions += rng.normal(0.0, rng.uniform(*rattle), atoms.positions.shape)
    atoms.wrap()
    return atoms


def _solid_solution(rng, max_atoms):
    base, lattice = _lattice(rng)
    atoms = _repeat_to_size(base, rng, max_atoms)
    x = _assign(atoms, rng)
    return _finish(atoms, rng), {"lattice": lattice, "x_li": round(x, 4)}


def _intermetallic(rng, max_atoms):
    from ase.build import bulk

    name = rng.choice(["B2", "B1", "B3", "L1_0", "L1_2-Cu3Li", "L1_2-Li3Cu", "C1-CuLi2", "C1-LiCu2"])
    if name in ("B2", "B1", "B3"):
        struct = {"B2": "cesiumchloride", "B1": "rocksalt", "B3": "zincblende"}[name]
        atoms = bulk("CuLi", struct, a=4.0, cubic=bool(rng.random() < 0.5))
    elif name.startswith("C1"):
        atoms = bulk(name[3:], "fluorite", a=5.0)
    else:
        atoms = bulk("Cu", "fcc", a=3.6, cubic=True)  # sites (0,0,0), (0,.5,.5), (.5,0,.5), (.5,.5,0)
        if name == "L1_0":
            atoms.numbers = [CU, LI, LI, CU]  # Cu layers at z = 0, Li layers at z = 1/2
        else:
            minority, majority = (LI, CU) if name == "L1_2-Cu3Li" else (CU, LI)
            atoms.numbers = [minority, majority, majority, majority]
    atoms = _repeat_to_size(atoms, rng, max_atoms)
    return _finish(atoms, rng, rattle=(0.01, 0.08)), {"lattice": str(name)}


def _bulk_for_defect(rng, max_atoms):
    atoms, meta = (_solid_solution if rng.random() < 0.6 else _intermetallic)(rng, max_atoms - 1)
    return atoms, meta


def _vacancy(rng, max_atoms):
    atoms, meta = _bulk_for_defect(rng, max_atoms)
    n_vac = 1 if len(atoms) < 24 or rng.random() < 0.6 else 2
    del atoms[sorted(rng.permutation(len(atoms))[:n_vac].tolist(), reverse=True)]
    return atoms, {**meta, "vacancies": n_vac}


def _interstitial(rng, max_atoms):
    from ase import Atom
    from ase.geometry import get_distances

    atoms, meta = _bulk_for_defect(rng, max_atoms)
    trial = rng.random((256, 3)) @ atoms.cell[:]
    _, d = get_distances(trial, atoms.positions, cell=atoms.cell, pbc=True)
    best = trial[int(np.argmax(d.min(axis=1)))]
    z = int(rng.choice([LI, CU]))
    atoms.append(Atom(z, best))
    return atoms, {**meta, "interstitial": "Li" if z == LI else "Cu"}


def _surface(rng, max_atoms):
    from ase.build import bcc100, bcc110, fcc100, fcc110, fcc111, hcp0001

    facet = str(rng.choice(["fcc100", "fcc111", "fcc110", "bcc100", "bcc110", "hcp0001"]))
    build = {"fcc100": fcc100, "fcc111": fcc111, "fcc110": fcc110, "bcc100": bcc100, "bcc110": bcc110,
             "hcp0001": hcp0001}[facet]
    x = rng.random()
    v = (1 - x) * VOLUME_PER_ATOM[CU] + x * VOLUME_PER_ATOM[LI]
    lattice = facet[:3]
    a = {"fcc": (4 * v) ** (1 / 3), "bcc": (2 * v) ** (1 / 3),
         "hcp": (4 * v / (np.sqrt(3) * 1.633)) ** (1 / 3)}[lattice]
    while True:
        size = (int(rng.integers(1, 4)), int(rng.integers(1, 4)), int(rng.integers(4, 7)))
        if np.prod(size) * (2 if facet == "fcc110" else 1) <= max_atoms:
            break
    kwargs = {"c": 1.633 * a} if lattice == "hcp" else {}
    atoms = build("Cu", size=size, a=a, vacuum=float(rng.uniform(5.0, 7.0)), **kwargs)
    _assign(atoms, rng, x)
    atoms.pbc = True
    _strain(atoms, rng, 0.02, 0.0)
    atoms.positions += rng.normal(0.0, rng.uniform(0.02, 0.10), atoms.positions.shape)
    atoms.wrap()
    return atoms, {"facet": facet, "x_li": round(x, 4)}


def _interface(rng, max_atoms):
    from ase.build import bulk

    lattice = str(rng.choice(["fcc", "bcc"]))
    cell = bulk("Cu", lattice, a=1.0, cubic=True)  # unit cube: fcc 4 sites, bcc 2
    nxy = (int(rng.integers(1, 3)), int(rng.integers(1, 3)))
    per_cube = len(cell) * nxy[0] * nxy[1]
    n_z = int(rng.integers(2, max(3, min(6, max_atoms // per_cube)) + 1))
    atoms = cell.repeat((nxy[0], nxy[1], n_z))
    # layers along z (two per cubic cell for fcc(100) and bcc(100)), lower half Cu, upper half Li
    layer = np.round(atoms.positions[:, 2] * 2).astype(int)
    n_layers = 2 * n_z
    n_cu = int(rng.integers(2, n_layers - 1))
    atoms.numbers = np.where(layer < n_cu, CU, LI)
    # shared in-plane lattice constant between the two elements' own
    a_own = {z: (len(cell) * VOLUME_PER_ATOM[z]) ** (1 / 3) for z in (CU, LI)}
    a_xy = a_own[CU] + rng.uniform(0.2, 0.8) * (a_own[LI] - a_own[CU])
    area_per_atom = a_xy ** 2 / (len(cell) / 2)  # atoms per layer of one cube face: fcc 2, bcc 1
    spacing = {z: VOLUME_PER_ATOM[z] / area_per_atom for z in (CU, LI)}
    gaps = np.array([spacing[CU] if k < n_cu else spacing[LI] for k in range(n_layers)])
    gaps[n_cu - 1] = gaps[-1] = 0.5 * (spacing[CU] + spacing[LI])  # the two interfaces
    z_layer = np.concatenate([[0.0], np.cumsum(gaps)[:-1]])
    positions = atoms.positions.copy()
    positions[:, :2] *= a_xy
    positions[:, 2] = z_layer[layer]
    atoms.set_cell([nxy[0] * a_xy, nxy[1] * a_xy, float(gaps.sum())])
    atoms.positions = positions
    n_swap = int(rng.integers(0, 3))
    for _ in range(n_swap):  # interdiffusion: swap a Cu and a Li atom
        cu, li = np.flatnonzero(atoms.numbers == CU), np.flatnonzero(atoms.numbers == LI)
        i, j = int(rng.choice(cu)), int(rng.choice(li))
        atoms.numbers[[i, j]] = atoms.numbers[[j, i]]
    _strain(atoms, rng, 0.02, 0.02)
    atoms.positions += rng.normal(0.0, rng.uniform(0.02, 0.10), atoms.positions.shape)
    atoms.wrap()
    return atoms, {"lattice": lattice, "cu_layers": n_cu, "li_layers": n_layers - n_cu, "swaps": n_swap}


def _strained(rng, max_atoms):
    base, lattice = _lattice(rng)
    atoms = _repeat_to_size(base, rng, max_atoms)
    x = _assign(atoms, rng, x_li=float(rng.choice([0.0, 1.0, rng.random()])))
    return _finish(atoms, rng, normal=0.08, shear=0.06, rattle=(0.01, 0.05)), {"lattice": lattice,
                                                                                "x_li": round(x, 4)}


_BUILDERS = {"solid_solution": _solid_solution, "intermetallic": _intermetallic, "vacancy": _vacancy,
             "interstitial": _interstitial, "surface": _surface, "interface": _interface, "strained": _strained}


def generate_structure(seed: int, index: int, kind: Optional[str] = None, max_atoms: int = MAX_ATOMS):
    """Structure `index` of the set with `seed`: an ase.Atoms (pbc True on all axes), unlabelled.

    Args:
        seed, index: the structure depends on these only (numpy Generator seeded with [seed, index]).
        kind: one of `KINDS` (default: drawn with the KINDS shares).
        max_atoms: largest number of atoms (surfaces and interfaces may use fewer).

    Returns:
        ase.Atoms with info: config_type, generator, seed, index and kind-specific metadata.

    Raises:
        ValueError: unknown kind.
        RuntimeError: no candidate met MIN_DISTANCE in 100 draws (does not happen with the defaults).
    """
    rng = np.random.default_rng([seed, index])
    names, shares = zip(*KINDS)
    if kind is None:
        kind = str(rng.choice(names, p=np.array(shares) / sum(shares)))
    if kind not in _BUILDERS:
        raise ValueError(f"unknown structure kind {kind!r}; known: {list(_BUILDERS)}")
    for attempt in range(100):
        atoms, meta = _BUILDERS[kind](rng, max_atoms)
        if len(atoms) <= max_atoms and min_distance(atoms) >= MIN_DISTANCE:
            atoms.pbc = True
            atoms.info.pop("adsorbate_info", None)  # set by ase.build's slab builders; not a scalar
            atoms.info.update({"config_type": kind, "generator": GENERATOR, "seed": int(seed), "index": int(index),
                               "attempt": attempt, **meta})
            return atoms
    raise RuntimeError(f"seed {seed}, structure {index} ({kind}): no candidate with all distances >= "
                       f"{MIN_DISTANCE} Å in 100 draws")


def generate_structures(n: int, seed: int = 0, kinds: Optional[Sequence[str]] = None,
                        max_atoms: int = MAX_ATOMS) -> List:
    """`n` structures (see `generate_structure`); `kinds`, if given, cycles through those kinds instead."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    return [generate_structure(seed, k, None if kinds is None else kinds[k % len(kinds)], max_atoms)
            for k in range(n)]


def composition_summary(structures) -> Dict[str, int]:
    """Counts per config_type (for logs and the data README)."""
    out: Dict[str, int] = {}
    for a in structures:
        out[a.info.get("config_type", "?")] = out.get(a.info.get("config_type", "?"), 0) + 1
    return out
