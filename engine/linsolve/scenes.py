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
- ``random_liquid``: the liquid family (flags and ghost-fluid weights): a container of random
  shape and wall thickness holding a layer with waves, blobs and flying drops described by a
  signed distance phi (negative in the liquid), solid obstacles of random pose cutting the liquid
  (spheres, boxes, capsules; the same generator with a new seed moves them), and the ghost-fluid
  term of :func:`ghost_from_levelset`.
- ``dam_break``, ``tilted_pool``: held out of training (liquid family, with ghost weights): a
  liquid column in a corner of an open box; a pool whose surface is a tilted plane, with a solid
  torus lying across it.
- ``ghost_from_levelset``: per FLUID cell the sum over its AIR faces of 1/theta - 1, with
  theta = phi_i / (phi_i - phi_j) clamped to [theta_min, 1] (Gibou et al. 2002).
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


def ghost_from_levelset(flags: np.ndarray, phi: np.ndarray, theta_min: float = 0.01) -> np.ndarray:
    """Ghost-fluid diagonal term of a liquid whose surface is the zero set of phi.

    Args:
        flags: (nx, ny, nz) int8 cell flags.
        phi: (nx, ny, nz) signed distance at cell centres [cells], < 0 inside the liquid.
        theta_min: lower clamp of the surface fraction theta (keeps the diagonal bounded).

    Returns:
        (nx, ny, nz) float64, zero at non-FLUID cells.
    """
    if not 0 < theta_min <= 1:
        raise ValueError(f"theta_min must be in (0, 1], got {theta_min}")
    fluid = flags == FLUID
    g = np.zeros(flags.shape)
    for d in range(3):
        for shift in (1, -1):
            nb_air = np.zeros_like(fluid)
            nb_phi = np.zeros(flags.shape)
            src = [slice(None)] * 3
            dst = [slice(None)] * 3
            src[d], dst[d] = (slice(1, None), slice(None, -1)) if shift == 1 else (slice(None, -1), slice(1, None))
            nb_air[tuple(dst)] = flags[tuple(src)] == AIR
            nb_phi[tuple(dst)] = phi[tuple(src)]
            face = fluid & nb_air
            pi, pj = np.minimum(phi[face], 0.0), np.maximum(nb_phi[face], 0.0)
            theta = np.clip(-pi / np.maximum(pj - pi, 1e-12), theta_min, 1.0)
            g[face] += 1.0 / theta - 1.0
    return g


def random_liquid(n: int, rng: np.random.Generator, theta_min: float = 0.01) -> tuple[np.ndarray, np.ndarray]:
    """One random liquid scene: (flags (n, n, n) int8, ghost (n, n, n) float64)."""
    g = _centres(n)
    x, y, z = g
    solid = np.zeros((n, n, n), bool)
    t = int(rng.integers(1, max(2, n // 16) + 1))
    kind = rng.random()
    if kind < 0.6:  # box container with floor
        solid[:t] = solid[-t:] = solid[:, :, :t] = solid[:, :, -t:] = solid[:, :t] = True
    elif kind < 0.85:  # cylindrical cup
        rad = rng.uniform(0.3, 0.5) * n
        solid |= ((x - n / 2) ** 2 + (z - n / 2) ** 2 > (rad - t) ** 2) | (y < t)
    # else the domain walls only
    level = rng.uniform(0.1, 0.8) * n
    amp = rng.uniform(0, 0.12) * n
    k = rng.uniform(0.5, 3) * 2 * np.pi / n
    phi = y - level - amp * np.sin(k * x + rng.uniform(0, 6)) * np.cos(k * z + rng.uniform(0, 6))
    for _ in range(int(rng.integers(0, 5))):  # blobs and flying drops
        c = rng.uniform(0, n, size=(3, 1, 1, 1))
        r = rng.uniform(0.02, 0.2) * n
        phi = np.minimum(phi, np.sqrt(((g - c) ** 2).sum(0)) - r)
    if rng.random() < 0.1:  # container filled to the top: pure Neumann
        phi = np.minimum(phi, -1.0)
    for _ in range(int(rng.integers(0, 5))):  # obstacles at random poses
        c = rng.uniform(0, n, size=(3, 1, 1, 1))
        r = rng.uniform(0.04, 0.18) * n
        shape = rng.random()
        if shape < 0.4:
            solid |= ((g - c) ** 2).sum(0) < r**2
        elif shape < 0.7:
            solid |= (np.abs(g - c) < r * rng.uniform(0.4, 1.5, size=(3, 1, 1, 1))).all(0)
        else:  # capsule along a random direction
            a = rng.normal(size=(3, 1, 1, 1))
            a /= np.linalg.norm(a)
            s = np.clip(((g - c) * a).sum(0), -r * 1.5, r * 1.5)
            solid |= ((g - c - s * a) ** 2).sum(0) < (0.5 * r) ** 2
    flags = np.where(phi < 0, FLUID, AIR).astype(np.int8)
    flags[solid] = SOLID
    return flags, ghost_from_levelset(flags, phi, theta_min)


def dam_break(n: int, theta_min: float = 0.01) -> tuple[np.ndarray, np.ndarray]:
    """Liquid column (0.4 n x 0.7 n x 0.5 n, offset by a fraction of a cell) in a box corner."""
    x, y, z = _centres(n)
    f = np.full((n, n, n), AIR, np.int8)
    t = max(1, n // 32)
    half = np.array([0.2, 0.35, 0.25]) * n + 0.3
    c = np.array([t, t, t]) + half
    q = np.abs(np.stack([x - c[0], y - c[1], z - c[2]])) - half[:, None, None, None]
    phi = np.linalg.norm(np.maximum(q, 0), axis=0) + np.minimum(q.max(0), 0)
    f[phi < 0] = FLUID
    f[:t], f[-t:], f[:, :, :t], f[:, :, -t:], f[:, :t] = SOLID, SOLID, SOLID, SOLID, SOLID
    return f, ghost_from_levelset(f, phi, theta_min)


def tilted_pool(n: int, theta_min: float = 0.01) -> tuple[np.ndarray, np.ndarray]:
    """Open box filled to a plane tilted in x and z, with a solid torus across the surface."""
    x, y, z = _centres(n)
    f = np.full((n, n, n), AIR, np.int8)
    phi = (y - 0.55 * n - 0.2 * (x - n / 2) - 0.1 * (z - n / 2)) / np.sqrt(1.05)
    f[phi < 0] = FLUID
    R, r = 0.28 * n, 0.08 * n
    u, v, w = x - n / 2, y - 0.55 * n, z - n / 2  # torus axis along x, centred on the surface
    torus = (np.sqrt(v**2 + w**2) - R) ** 2 + u**2 < r**2
    t = max(1, n // 32)
    f[torus] = SOLID
    f[:t], f[-t:], f[:, :, :t], f[:, :, -t:], f[:, :t] = SOLID, SOLID, SOLID, SOLID, SOLID
    return f, ghost_from_levelset(f, phi, theta_min)


def pipe(n: int) -> np.ndarray:
    g = _centres(n)
    f = np.full((n, n, n), SOLID, np.int8)
    inside = (g[1] - n / 2) ** 2 + (g[2] - n / 2) ** 2 < (0.4 * n) ** 2
    f[inside] = FLUID
    f[-1][inside[-1]] = AIR
    return f


LIQUID_SCENES = {
    "dam_break": dam_break,
    "tilted_pool": tilted_pool,
}

BENCHMARK_SCENES = {
    "open_box": open_box,
    "sphere_box": sphere_box,
    "half_filled": half_filled,
    "random_obstacles": random_obstacles,
}
