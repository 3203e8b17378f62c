"""Hydrostatic start of a resting liquid body: the initial volume ratio J0 of each particle and its
compressed position, so that a still liquid starts in equilibrium under gravity.

The weakly compressible liquid's pressure is p = K (1 - J) (engine/materials.py: tau = K J (J - 1) I
is the Kirchhoff stress, sigma = tau / J). At rest, the pressure at a particle carries the weight
of the liquid above it: with d its depth below the free surface in the uncompressed (rest)
configuration, the column above holds rho0 d of mass per unit area whatever its compression, so

    p(d) = rho0 g d,    J0(d) = 1 - rho0 g d / K,

(hydrostatic equilibrium dp/dz = -rho g with rho = rho0 / J, written in the rest coordinate
d, where rho dz = rho0 dd). A layer of rest thickness dd is compressed to J0 dd, so the compressed
depth is D(d) = d - rho0 g d^2 / (2 K): keeping the body's bottom in place, every particle moves
down by the compression of the liquid below it (at most rho0 g H^2 / (2 K) for a column of rest
height H, a fraction of a particle spacing for the liquids here). Moving the particles matters as
much as J0: the packing correction of the liquid's J (engine/solvers/mpm_kernels.py) compares J
with how densely the particles are packed, and both then agree from the start.

Conventions: heights are measured against gravity (z up for the default gravity); the free
surface of a body is the top of its particles plus half a particle spacing, its bottom the lowest
particle less half a spacing.
"""

from __future__ import annotations

import numpy as np


def hydrostatic_start(
    points: np.ndarray, density: float, bulk_modulus: float, spacing: float, gravity
) -> tuple[np.ndarray, np.ndarray]:
    """Compressed positions and initial volume ratios of a liquid body at rest.

    Args:
        points: (n, 3) rest positions [m] of the body's particles (e.g. a lattice filling its
            container up to the free surface).
        density: rest density rho0 [kg/m^3].
        bulk_modulus: K [Pa] (the fluid material's ``E``).
        spacing: particle spacing [m].
        gravity: (3,) gravitational acceleration [m/s^2].

    Returns:
        (points (n, 3) moved along gravity to their compressed depth [m], J0 (n,)).

    Raises:
        ValueError: the column is too deep for the bulk modulus (J0 would not stay positive).
    """
    points = np.asarray(points, dtype=np.float64)
    g = np.asarray(gravity, dtype=np.float64)
    g_norm = float(np.linalg.norm(g))
    if g_norm == 0.0:
        return points.copy(), np.ones(len(points))
    up = -g / g_norm
    height = points @ up
    top = height.max() + 0.5 * spacing
    bottom = height.min() - 0.5 * spacing
    k = density * g_norm / bulk_modulus  # J0 = 1 - k d
    depth = top - height
    if k * (top - bottom) >= 0.5:
        raise ValueError(
            f"hydrostatic start: a liquid column of {top - bottom:.3g} m compresses by {k * (top - bottom):.2g} "
            f"at its bottom (rho g h / K); raise the bulk modulus E or lower the column"
        )
    J0 = 1.0 - k * depth

    def compressed(d):
        return d - 0.5 * k * d * d

    new_height = bottom + compressed(top - bottom) - compressed(depth)
    return points + (new_height - height)[:, None] * up[None, :], J0
