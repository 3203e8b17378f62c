"""Cell-flag scenes for the Poisson benchmark, the learned preconditioner's training data and the
tests.

Each function returns an int8 flag grid (nx, ny, nz) with FLUID=0, SOLID=1, AIR=2 (see
:mod:`engine.linsolve.operator`); y is up; the domain boundary counts as SOLID (free-slip walls)
unless a scene puts AIR cells there. Randomized scenes take a ``numpy.random.Generator`` so they
are reproducible from a seed.

- ``open_box``: smoke in a box with solid floor and side walls, open (AIR) top layer.
- ``sphere_box``: closed box (pure Neumann) with a centred spherical obstacle, radius n/5.
- ``half_filled``: liquid in a container (1-cell solid walls and floor) filled to half height,
  AIR above (Dirichlet free surface).
- ``random_obstacles``: closed box with 12 random spheres and boxes (may split the fluid into
  several pure-Neumann components).
- ``random_training``: the training family: random spheres/boxes, optional container walls,
  optional free surface at a random level, optional air bubbles.
- ``pipe``: held out of training: fluid inside a cylinder along x (solid outside), AIR at the
  outlet end.
"""

from __future__ import annotations

import numpy as np

from engine.linsolve.operator import AIR, FLUID, SOLID


def _centres(n: int) -> np.ndarray:
    c = np.arange(n) + 0.5
    return np.stack(np.meshgrid(c, c, c, indexing="ij"))  # (3, n, n, n)


def open_box(n: int) -> np.ndarray:
    f = np.full((n, n, n), FLUID, np.int8)
    f[0], f[-1], f[:, :, 0], f[:, :, -1], f[:, 0] = SOLID, SOLID, SOLID, SOLID, SOLID
    f[1:-1, -1, 1:-1] = AIR
    return f


def sphere_box(n: int) -> np.ndarray:
    g = _centres(n)
    f = np.full((n, n, n), FLUID, np.int8)
    f[((g - n / 2) ** 2).sum(0) < (n / 5) ** 2] = SOLID
    return f


def half_filled(n: int) -> np.ndarray:
    f = np.full((n, n, n), FLUID, np.int8)
    f[:, n // 2 :] = AIR
    f[0], f[-1], f[:, :, 0], f[:, :, -1], f[:, 0] = SOLID, SOLID, SOLID, SOLID, SOLID
    return f


def _add_obstacles(f, rng, count, rmin=0.04, rmax=0.14):
    n = f.shape[0]
    g = _centres(n)
    for _ in range(count):
        c = rng.uniform(0, n, size=(3, 1, 1, 1))
        r = rng.uniform(rmin, rmax) * n
        if rng.random() < 0.5:
            f[((g - c) ** 2).sum(0) < r**2] = SOLID
        else:
            half = r * rng.uniform(0.5, 1.5, size=(3, 1, 1, 1))
            f[(np.abs(g - c) < half).all(0)] = SOLID
    return f


def random_obstacles(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return _add_obstacles(np.full((n, n, n), FLUID, np.int8), rng, 12)


def random_training(n: int, rng: np.random.Generator) -> np.ndarray:
    """One random scene of the training family (see module docstring)."""
    f = np.full((n, n, n), FLUID, np.int8)
    g = _centres(n)
    if rng.random() < 0.5:  # container walls
        t = max(1, n // 32)
        f[:t], f[-t:], f[:, :, :t], f[:, :, -t:], f[:, :t] = SOLID, SOLID, SOLID, SOLID, SOLID
    mode = rng.random()
    if mode < 0.35:  # free surface at a random level, possibly wavy
        level = rng.uniform(0.2, 0.9) * n
        amp = rng.uniform(0, 0.1) * n
        k = rng.uniform(0.5, 3) * 2 * np.pi / n
        surf = level + amp * np.sin(k * g[0] + rng.uniform(0, 6)) * np.cos(k * g[2])
        f[(g[1] > surf) & (f != SOLID)] = AIR
    elif mode < 0.55:  # open top (smoke)
        f[:, -1][f[:, -1] != SOLID] = AIR
    elif mode < 0.65:  # air bubbles
        for _ in range(rng.integers(1, 6)):
            c = rng.uniform(0, n, size=(3, 1, 1, 1))
            f[((g - c) ** 2).sum(0) < (rng.uniform(0.03, 0.12) * n) ** 2] = AIR
    # else closed (pure Neumann)
    _add_obstacles(f, rng, int(rng.integers(0, 16)))
    return f


def pipe(n: int) -> np.ndarray:
    g = _centres(n)
    f = np.full((n, n, n), SOLID, np.int8)
    inside = (g[1] - n / 2) ** 2 + (g[2] - n / 2) ** 2 < (0.4 * n) ** 2
    f[inside] = FLUID
    f[-1][inside[-1]] = AIR
    return f


BENCHMARK_SCENES = {
    "open_box": open_box,
    "sphere_box": sphere_box,
    "half_filled": half_filled,
    "random_obstacles": random_obstacles,
}
