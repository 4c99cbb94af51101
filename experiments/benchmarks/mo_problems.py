"""Analytic multi-objective test problems (all objectives minimised; constraints feasible when <= 0).

ZDT1-3: Zitzler, Deb, Thiele, Evol. Comput. 8, 173 (2000), x in [0, 1]^d.
BNH: Binh & Korn (1997), x1 in [0, 5], x2 in [0, 3], two constraints.
SRN: Srinivas & Deb (1994), x in [-20, 20]^2, two constraints.

`cheap` lists the objectives that are inexpensive exact functions of x (ZDT's f1 = x1), which IOC-SAMO-COBRA
(de Winter et al., Memetic Computing 2022) gets exactly instead of through a surrogate.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Optional, Sequence, Tuple

import numpy as np


@dataclasses.dataclass(frozen=True)
class Problem:
    name: str
    bounds: Sequence[Tuple[float, float]]
    objectives: Callable[[np.ndarray], Tuple[float, ...]]
    reference_point: Tuple[float, ...]
    constraints: Optional[Callable[[np.ndarray], Tuple[float, ...]]] = None
    cheap: Tuple[int, ...] = ()


def _zdt_g(x):
    return 1.0 + 9.0 * np.sum(x[1:]) / (len(x) - 1)


def zdt1(x):
    g = _zdt_g(x)
    return x[0], g * (1.0 - np.sqrt(x[0] / g))


def zdt2(x):
    g = _zdt_g(x)
    return x[0], g * (1.0 - (x[0] / g) ** 2)


def zdt3(x):
    g = _zdt_g(x)
    return x[0], g * (1.0 - np.sqrt(x[0] / g) - (x[0] / g) * np.sin(10.0 * np.pi * x[0]))


def bnh(x):
    return 4.0 * x[0] ** 2 + 4.0 * x[1] ** 2, (x[0] - 5.0) ** 2 + (x[1] - 5.0) ** 2


def bnh_constraints(x):
    return (x[0] - 5.0) ** 2 + x[1] ** 2 - 25.0, 7.7 - (x[0] - 8.0) ** 2 - (x[1] + 3.0) ** 2


def srn(x):
    return 2.0 + (x[0] - 2.0) ** 2 + (x[1] - 1.0) ** 2, 9.0 * x[0] - (x[1] - 1.0) ** 2


def srn_constraints(x):
    return x[0] ** 2 + x[1] ** 2 - 225.0, x[0] - 3.0 * x[1] + 10.0


def problems(zdt_dim: int = 6):
    """The benchmark set; ZDT in `zdt_dim` dimensions. Reference points as commonly used for these problems."""
    unit = [(0.0, 1.0)] * zdt_dim
    return [
        Problem("ZDT1", unit, zdt1, (11.0, 11.0), cheap=(0,)),
        Problem("ZDT2", unit, zdt2, (11.0, 11.0), cheap=(0,)),
        Problem("ZDT3", unit, zdt3, (11.0, 11.0), cheap=(0,)),
        Problem("BNH", [(0.0, 5.0), (0.0, 3.0)], bnh, (140.0, 50.0), bnh_constraints),
        Problem("SRN", [(-20.0, 20.0), (-20.0, 20.0)], srn, (301.0, 72.0), srn_constraints),
    ]
