"""Particle sampling: fill simple solids and closed meshes with MPM particles.

What is computed
    Particle positions on a regular lattice: the centres of the cubic cells of side ``spacing``
    of a lattice anchored at the lower corner of the shape's bounding box, optionally jittered
    by a uniform offset, keeping the points that lie inside the shape. Each particle stands for
    the volume :func:`particle_volume` ``= spacing**3`` (the lattice cell), so the particle count
    is ``~ volume / spacing**3``.

Conventions
    * Returns float64 numpy arrays ``(N, 3)`` [m], world frame, z-up; N may be 0.
    * ``jitter`` is a fraction in ``[0, 1]`` of the spacing: each coordinate moves by
      ``U(-jitter/2, jitter/2) * spacing``. The inside test is applied after the jitter, so
      every returned point is inside the shape. The lattice extends one cell beyond the bounding
      box on every side so that jittered neighbours can enter.
    * ``rng``: a ``numpy.random.Generator``, an integer seed, or None (seed 0, so that scenes
      are reproducible by default). Random numbers are drawn only when ``jitter > 0``.
    * ``cylinder``: axis z; ``center`` is the centre of the BOTTOM face (as for the ``Cup``
      collider, whose origin is the outside of its bottom); it spans ``z in [cz, cz + height]``.
    * ``mesh_interior``: the inside test of a watertight mesh (generalized winding number, see
      :func:`engine.geometry.mesh_contains`), in the mesh's own frame, then mapped to the world
      by ``pose = (x, y, z, qw, qx, qy, qz)``: ``p = R(q) p_mesh + x``.
"""

import math
import os
from typing import Any

import numpy as np

from engine import geometry

__all__ = ["box", "cylinder", "mesh_interior", "particle_volume", "sphere"]

_MAX_LATTICE = 100_000_000
"""Refuse lattices larger than this (a too-small spacing would exhaust memory)."""


def particle_volume(spacing: float) -> float:
    """Volume [m^3] a particle stands for: ``spacing**3``."""
    return _check_spacing(spacing) ** 3


def _check_spacing(spacing: Any) -> float:
    try:
        h = float(spacing)
    except (TypeError, ValueError):
        raise ValueError(f"spacing must be a real number, got {spacing!r}") from None
    if not (math.isfinite(h) and h > 0.0):
        raise ValueError(f"spacing must be positive and finite, got {spacing!r}")
    return h


def _check_positive(name: str, value: Any) -> float:
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a real number, got {value!r}") from None
    if not (math.isfinite(x) and x > 0.0):
        raise ValueError(f"{name} must be positive and finite, got {value!r}")
    return x


def _check_vec3(name: str, value: Any) -> np.ndarray:
    try:
        v = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be 3 real numbers, got {value!r}") from None
    if v.shape != (3,):
        raise ValueError(f"{name} must be 3 real numbers, got shape {v.shape}")
    if not np.all(np.isfinite(v)):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return v


def _check_jitter(jitter: Any) -> float:
    try:
        j = float(jitter)
    except (TypeError, ValueError):
        raise ValueError(f"jitter must be a real number, got {jitter!r}") from None
    if not (0.0 <= j <= 1.0):
        raise ValueError(f"jitter must be in [0, 1], got {jitter!r}")
    return j


def _make_rng(rng: Any) -> np.random.Generator:
    if rng is None:
        return np.random.default_rng(0)
    if isinstance(rng, np.random.Generator):
        return rng
    if isinstance(rng, (int, np.integer)) and not isinstance(rng, bool):
        return np.random.default_rng(int(rng))
    raise ValueError(f"rng must be a numpy Generator, an int seed or None, got {type(rng)}")


def _lattice(lo: np.ndarray, hi: np.ndarray, h: float) -> tuple[np.ndarray, tuple[int, ...]]:
    """Cell centres ``lo + (i + 1/2) h`` for ``i = -1 .. ceil((hi - lo)/h)``, shape ``(n, 3)``.

    Returns the lower sample (the first centre) and the per-axis counts.
    """
    counts = tuple(int(math.ceil((hi[a] - lo[a]) / h - 1e-9)) + 2 for a in range(3))
    total = counts[0] * counts[1] * counts[2]
    if total > _MAX_LATTICE:
        raise ValueError(f"spacing {h} gives a lattice of {total} points (> {_MAX_LATTICE}); increase spacing")
    return lo - 0.5 * h, counts


def _lattice_points(first: np.ndarray, counts: tuple[int, ...], h: float) -> np.ndarray:
    axes = [first[a] + h * np.arange(counts[a]) for a in range(3)]
    return np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3)


def _jittered(points: np.ndarray, h: float, jitter: float, rng: Any) -> np.ndarray:
    if jitter == 0.0:
        return points
    offsets = _make_rng(rng).uniform(-0.5, 0.5, size=points.shape) * (jitter * h)
    return points + offsets


def _fill(lo, hi, h, jitter, rng, inside) -> np.ndarray:
    first, counts = _lattice(lo, hi, h)
    p = _jittered(_lattice_points(first, counts, h), h, jitter, rng)
    return np.ascontiguousarray(p[inside(p)], dtype=np.float64)


def box(lo: Any, hi: Any, spacing: float, jitter: float = 0.0, rng: Any = None) -> np.ndarray:
    """Particles filling the axis-aligned box ``[lo, hi]``.

    Args:
        lo, hi: ``(3,)`` corners [m], ``lo < hi`` on every axis.
        spacing: lattice spacing [m] > 0.
        jitter: fraction of the spacing in ``[0, 1]``.
        rng: Generator, int seed or None (seed 0).

    Returns:
        ``(N, 3)`` float64; ``N = prod(round((hi - lo) / spacing))`` without jitter.
    """
    lo = _check_vec3("lo", lo)
    hi = _check_vec3("hi", hi)
    if not np.all(lo < hi):
        raise ValueError(f"box needs lo < hi on every axis, got lo={lo}, hi={hi}")
    h = _check_spacing(spacing)
    jitter = _check_jitter(jitter)
    return _fill(lo, hi, h, jitter, rng, lambda p: np.all((p >= lo) & (p <= hi), axis=1))


def sphere(center: Any, radius: float, spacing: float, jitter: float = 0.0, rng: Any = None) -> np.ndarray:
    """Particles filling the ball ``|p - center| <= radius``.

    Args:
        center: ``(3,)`` [m].
        radius: [m] > 0.
        spacing, jitter, rng: as in :func:`box`.
    """
    c = _check_vec3("center", center)
    r = _check_positive("radius", radius)
    h = _check_spacing(spacing)
    jitter = _check_jitter(jitter)

    def inside(p):
        return ((p - c) ** 2).sum(axis=1) <= r * r

    return _fill(c - r, c + r, h, jitter, rng, inside)


def cylinder(
    center: Any,
    radius: float,
    height: float,
    spacing: float,
    jitter: float = 0.0,
    rng: Any = None,
) -> np.ndarray:
    """Particles filling a z-axis cylinder standing on its bottom face.

    Args:
        center: ``(3,)`` centre of the BOTTOM face [m]; the cylinder spans
            ``z in [center_z, center_z + height]``.
        radius: [m] > 0.
        height: [m] > 0.
        spacing, jitter, rng: as in :func:`box`.
    """
    c = _check_vec3("center", center)
    r = _check_positive("radius", radius)
    H = _check_positive("height", height)
    h = _check_spacing(spacing)
    jitter = _check_jitter(jitter)
    lo = c - np.array([r, r, 0.0])
    hi = c + np.array([r, r, H])

    def inside(p):
        rho2 = (p[:, 0] - c[0]) ** 2 + (p[:, 1] - c[1]) ** 2
        return (rho2 <= r * r) & (p[:, 2] >= c[2]) & (p[:, 2] <= c[2] + H)

    return _fill(lo, hi, h, jitter, rng, inside)


def mesh_interior(
    mesh_or_path: Any,
    spacing: float,
    pose: Any = None,
    jitter: float = 0.0,
    rng: Any = None,
) -> np.ndarray:
    """Particles filling the interior of a closed triangle mesh.

    Args:
        mesh_or_path: a ``trimesh.Trimesh`` or a mesh file path (obj, stl, ply, ...) [m].
        spacing: lattice spacing [m] > 0 (in the mesh frame).
        pose: optional ``(x, y, z, qw, qx, qy, qz)`` placing the mesh in the world.
        jitter, rng: as in :func:`box`.

    Raises:
        ValueError: unreadable file (names the path), a mesh that is not watertight, or bad
            arguments.
    """
    import trimesh

    if isinstance(mesh_or_path, (str, os.PathLike)):
        tm = geometry.load_mesh(mesh_or_path)
        what = f"mesh {os.fspath(mesh_or_path)!r}"
    elif isinstance(mesh_or_path, trimesh.Trimesh):
        tm = mesh_or_path
        what = "mesh"
    else:
        raise ValueError(f"mesh_or_path must be a trimesh.Trimesh or a path, got {type(mesh_or_path)}")
    if not tm.is_watertight:
        raise ValueError(f"{what} is not watertight; cannot fill its interior")
    h = _check_spacing(spacing)
    jitter = _check_jitter(jitter)
    if pose is None:
        pose = (0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0)
    pose = geometry.normalize_pose(pose, "mesh_interior pose")
    bounds = np.asarray(tm.bounds, dtype=np.float64)
    local = _fill(bounds[0], bounds[1], h, jitter, rng, lambda p: geometry.mesh_contains(tm, p))
    world = geometry.quat_rotate_numpy(pose[3:], local) + np.asarray(pose[:3])
    return np.ascontiguousarray(world, dtype=np.float64)
