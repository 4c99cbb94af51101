"""Radial features of an edge: Bessel basis and the polynomial cutoff (Klicpera et al. 2020, DimeNet; used by
NequIP and Allegro)."""

from __future__ import annotations

import jax.numpy as jnp


def bessel_basis(r: jnp.ndarray, num_basis: int, r_max: float) -> jnp.ndarray:
    """sqrt(2/r_max) * sin(n pi r / r_max) / r for n = 1..num_basis.

    Args:
        r: (...,) distances in Å, must be > 0 (padded edges are given a safe length by the caller).
    Returns:
        (..., num_basis).
    """
    n = jnp.arange(1, num_basis + 1, dtype=r.dtype)
    return jnp.sqrt(2.0 / r_max) * jnp.sin(n * jnp.pi * r[..., None] / r_max) / r[..., None]


def polynomial_cutoff(r: jnp.ndarray, r_max: float, p: float = 6.0) -> jnp.ndarray:
    """Smooth cutoff f(u) = 1 - (p+1)(p+2)/2 u^p + p(p+2) u^(p+1) - p(p+1)/2 u^(p+2), u = r/r_max, 0 for u >= 1.

    f(r_max) = f'(r_max) = f''(r_max) = 0, so energies and forces are continuous when
    neighbours cross the cutoff.
    """
    u = r / r_max
    f = (1.0 - 0.5 * (p + 1.0) * (p + 2.0) * u**p + p * (p + 2.0) * u ** (p + 1.0)
         - 0.5 * p * (p + 1.0) * u ** (p + 2.0))
    return jnp.where(u < 1.0, f, 0.0)
