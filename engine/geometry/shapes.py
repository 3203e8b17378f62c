"""Collider shapes on the host: parameters for the kernels and numpy mirrors of their SDFs.

What is computed
    One frozen dataclass per analytic shape kind (:class:`Plane`, :class:`Box`, :class:`Sphere`,
    :class:`Capsule`, :class:`Cylinder`, :class:`Cup`, :class:`Bowl`; the voxel-SDF
    :class:`engine.geometry.mesh.Mesh` derives from the same base) with validated fields, the
    kernel parameter vector (``params()``, see the table in :mod:`engine.geometry.sdf`) and
    ``sdf(points_local) -> (d (N,), n (N, 3))``: the signed distance [m] (negative inside the
    solid) and outward unit normal, in the shape's local frame.

Conventions
    * Each ``sdf`` mirrors its Taichi function in :mod:`engine.geometry.sdf` with the same
      floating-point operations in the same order (float64), for tests, the grid-fluid solid
      flags and the renderer. Degenerate points get the same fallback normals.
    * Field validation raises ``ValueError`` naming ``Class.field``.
"""

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from engine.geometry.sdf import BOWL, BOX, CAPSULE, CUP, CYLINDER, PLANE, SHAPE_DIM, SPHERE, TINY

__all__ = ["Bowl", "Box", "Capsule", "Cup", "Cylinder", "Plane", "Shape", "Sphere"]


def as_points(points: Any) -> np.ndarray:
    """``points`` as a float64 ``(N, 3)`` array; ValueError for any other shape."""
    p = np.asarray(points, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] != 3:
        raise ValueError(f"points must have shape (N, 3), got {p.shape}")
    return p


def check_real(owner: str, name: str, value: Any) -> float:
    """``value`` as a finite float; ValueError naming ``owner.name`` otherwise."""
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{owner}.{name} must be a real number, got {value!r}") from None
    if not math.isfinite(x):
        raise ValueError(f"{owner}.{name} must be finite, got {value!r}")
    return x


def check_positive(owner: str, name: str, value: Any) -> float:
    """``value`` as a finite float > 0; ValueError naming ``owner.name`` otherwise."""
    x = check_real(owner, name, value)
    if x <= 0.0:
        raise ValueError(f"{owner}.{name} must be > 0, got {value!r}")
    return x


def _sgn_np(x: np.ndarray) -> np.ndarray:
    return np.where(x >= 0.0, 1.0, -1.0)


def _radial_np(p: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    r2 = p[:, 0] ** 2 + p[:, 1] ** 2
    rho = np.sqrt(np.maximum(r2, TINY))
    ok = r2 > TINY
    return rho, np.where(ok, p[:, 0] / rho, 1.0), np.where(ok, p[:, 1] / rho, 0.0)


def _lift_np(g_rho, g_z, ex, ey) -> np.ndarray:
    return np.stack([g_rho * ex, g_rho * ey, g_z], axis=1)


class Shape:
    """Base class of collider shapes: ``kind``, ``params()`` and a numpy ``sdf`` mirror."""

    kind: int = -1

    def params(self) -> np.ndarray:
        """The kernel parameter vector, float64 ``(SHAPE_DIM,)``."""
        raise NotImplementedError

    def sdf(self, points_local: Any) -> tuple[np.ndarray, np.ndarray]:
        """Signed distance ``(N,)`` [m] and outward unit normal ``(N, 3)`` at local points."""
        raise NotImplementedError

    @staticmethod
    def _pack(*values: float) -> np.ndarray:
        out = np.zeros(SHAPE_DIM, dtype=np.float64)
        out[: len(values)] = values
        return out


@dataclass(frozen=True)
class Plane(Shape):
    """Half-space ``z_local <= 0`` (solid below), outward normal ``+z``."""

    kind = PLANE

    def params(self) -> np.ndarray:
        return self._pack()

    def sdf(self, points_local):
        p = as_points(points_local)
        n = np.zeros_like(p)
        n[:, 2] = 1.0
        return p[:, 2].copy(), n


@dataclass(frozen=True)
class Box(Shape):
    """Axis-aligned box centred at the local origin.

    Attributes:
        half_extents: ``(hx, hy, hz)`` [m], each > 0.
    """

    half_extents: tuple[float, float, float]
    kind = BOX

    def __post_init__(self):
        h = tuple(self.half_extents) if np.ndim(self.half_extents) == 1 else ()
        if len(h) != 3:
            raise ValueError(f"Box.half_extents must have 3 entries, got {self.half_extents!r}")
        h = tuple(check_positive("Box", f"half_extents[{i}]", v) for i, v in enumerate(h))
        object.__setattr__(self, "half_extents", h)

    def params(self) -> np.ndarray:
        return self._pack(*self.half_extents)

    def sdf(self, points_local):
        p = as_points(points_local)
        h = np.asarray(self.half_extents)
        s = _sgn_np(p)
        q = np.abs(p) - h
        qp = np.maximum(q, 0.0)
        qmax = q.max(axis=1)
        out_len = np.sqrt(np.maximum((qp * qp).sum(axis=1), TINY))
        outside = qmax > 0.0
        d = np.where(outside, out_len, qmax)
        n_out = s * qp / out_len[:, None]
        axis = np.argmax(q, axis=1)
        n_in = np.zeros_like(p)
        rows = np.arange(len(p))
        n_in[rows, axis] = s[rows, axis]
        return d, np.where(outside[:, None], n_out, n_in)


@dataclass(frozen=True)
class Sphere(Shape):
    """Ball centred at the local origin.

    Attributes:
        radius: [m] > 0.
    """

    radius: float
    kind = SPHERE

    def __post_init__(self):
        object.__setattr__(self, "radius", check_positive("Sphere", "radius", self.radius))

    def params(self) -> np.ndarray:
        return self._pack(self.radius)

    def sdf(self, points_local):
        p = as_points(points_local)
        r2 = (p * p).sum(axis=1)
        length = np.sqrt(np.maximum(r2, TINY))
        n = np.where((r2 > TINY)[:, None], p / length[:, None], [0.0, 0.0, 1.0])
        return length - self.radius, n


@dataclass(frozen=True)
class Capsule(Shape):
    """Points within ``radius`` of the segment ``z in [-half_length, half_length]`` on the z axis.

    Attributes:
        radius: [m] > 0.
        half_length: [m] >= 0, half the length of the axis segment (total length
            ``2 (half_length + radius)``).
    """

    radius: float
    half_length: float
    kind = CAPSULE

    def __post_init__(self):
        object.__setattr__(self, "radius", check_positive("Capsule", "radius", self.radius))
        hl = check_real("Capsule", "half_length", self.half_length)
        if hl < 0.0:
            raise ValueError(f"Capsule.half_length must be >= 0, got {self.half_length!r}")
        object.__setattr__(self, "half_length", hl)

    def params(self) -> np.ndarray:
        return self._pack(self.radius, self.half_length)

    def sdf(self, points_local):
        p = as_points(points_local)
        v = p.copy()
        v[:, 2] = p[:, 2] - np.clip(p[:, 2], -self.half_length, self.half_length)
        r2 = (v * v).sum(axis=1)
        length = np.sqrt(np.maximum(r2, TINY))
        n = np.where((r2 > TINY)[:, None], v / length[:, None], [1.0, 0.0, 0.0])
        return length - self.radius, n


@dataclass(frozen=True)
class Cylinder(Shape):
    """Solid cylinder with axis z, centred at the local origin.

    Attributes:
        radius: [m] > 0.
        half_height: [m] > 0; the cylinder spans ``z in [-half_height, half_height]``.
    """

    radius: float
    half_height: float
    kind = CYLINDER

    def __post_init__(self):
        object.__setattr__(self, "radius", check_positive("Cylinder", "radius", self.radius))
        object.__setattr__(self, "half_height", check_positive("Cylinder", "half_height", self.half_height))

    def params(self) -> np.ndarray:
        return self._pack(self.radius, self.half_height)

    def sdf(self, points_local):
        p = as_points(points_local)
        rho, ex, ey = _radial_np(p)
        sz = _sgn_np(p[:, 2])
        q0 = rho - self.radius
        q1 = np.abs(p[:, 2]) - self.half_height
        qp0 = np.maximum(q0, 0.0)
        qp1 = np.maximum(q1, 0.0)
        qmax = np.maximum(q0, q1)
        out_len = np.sqrt(np.maximum(qp0 * qp0 + qp1 * qp1, TINY))
        outside = qmax > 0.0
        d = np.where(outside, out_len, qmax)
        radial_in = q0 >= q1
        g_rho = np.where(outside, qp0 / out_len, np.where(radial_in, 1.0, 0.0))
        g_z = np.where(outside, sz * qp1 / out_len, np.where(radial_in, 0.0, sz))
        return d, _lift_np(g_rho, g_z, ex, ey)


@dataclass(frozen=True)
class Cup(Shape):
    """Hollow open-top cylinder (a cup / beaker), opening toward ``+z``.

    The local origin is the centre of the outside of the bottom. The solid is the side wall
    (``radius - thickness <= rho <= radius``, ``0 <= z <= height``) plus the bottom disk
    (``rho <= radius``, ``0 <= z <= thickness``); the cavity is free space.

    Attributes:
        radius: outer radius [m] > 0.
        height: outer height [m] > thickness.
        thickness: wall and bottom thickness [m], ``0 < thickness < radius``.
    """

    radius: float
    height: float
    thickness: float
    kind = CUP

    def __post_init__(self):
        r = check_positive("Cup", "radius", self.radius)
        h = check_positive("Cup", "height", self.height)
        t = check_positive("Cup", "thickness", self.thickness)
        if t >= r:
            raise ValueError(f"Cup.thickness ({t}) must be < Cup.radius ({r})")
        if t >= h:
            raise ValueError(f"Cup.thickness ({t}) must be < Cup.height ({h})")
        object.__setattr__(self, "radius", r)
        object.__setattr__(self, "height", h)
        object.__setattr__(self, "thickness", t)

    def params(self) -> np.ndarray:
        return self._pack(self.radius, self.height, self.thickness)

    def sdf(self, points_local):
        p = as_points(points_local)
        R, H, t = self.radius, self.height, self.thickness
        ri = R - t
        s, ex, ey = _radial_np(p)
        z = p[:, 2]
        ds = s - np.clip(s, 0.0, R)
        best = np.stack([ds * ds + z * z, ds, z, np.zeros_like(z), -np.ones_like(z)])
        segments = (
            (np.full_like(s, R), np.clip(z, 0.0, H), 1.0, 0.0),  # outer wall
            (np.clip(s, ri, R), np.full_like(z, H), 0.0, 1.0),  # rim
            (np.full_like(s, ri), np.clip(z, t, H), -1.0, 0.0),  # inner wall
            (np.clip(s, 0.0, ri), np.full_like(z, t), 0.0, 1.0),  # inner bottom
        )
        for cs, cz, ns, nz in segments:
            dss = s - cs
            dzz = z - cz
            d2 = dss * dss + dzz * dzz
            cand = np.stack([d2, dss, dzz, np.full_like(z, ns), np.full_like(z, nz)])
            best = np.where(d2 < best[0], cand, best)
        inside_bottom = (s <= R) & (z >= 0.0) & (z <= t)
        inside_wall = (s >= ri) & (s <= R) & (z >= 0.0) & (z <= H)
        sgn = np.where(inside_bottom | inside_wall, -1.0, 1.0)
        dist = np.sqrt(np.maximum(best[0], TINY))
        ok = best[0] > TINY
        g_rho = np.where(ok, sgn * best[1] / dist, best[3])
        g_z = np.where(ok, sgn * best[2] / dist, best[4])
        return sgn * dist, _lift_np(g_rho, g_z, ex, ey)


@dataclass(frozen=True)
class Bowl(Shape):
    """Hemispherical shell open toward ``+z``; the local origin is the sphere centre.

    Solid: ``radius - thickness <= |p| <= radius`` and ``z <= 0``.

    Attributes:
        radius: outer radius [m] > 0.
        thickness: shell thickness [m], ``0 < thickness < radius``.
    """

    radius: float
    thickness: float
    kind = BOWL

    def __post_init__(self):
        r = check_positive("Bowl", "radius", self.radius)
        t = check_positive("Bowl", "thickness", self.thickness)
        if t >= r:
            raise ValueError(f"Bowl.thickness ({t}) must be < Bowl.radius ({r})")
        object.__setattr__(self, "radius", r)
        object.__setattr__(self, "thickness", t)

    def params(self) -> np.ndarray:
        return self._pack(self.radius, self.thickness)

    def sdf(self, points_local):
        p = as_points(points_local)
        R, t = self.radius, self.thickness
        rm = R - 0.5 * t
        r2 = (p * p).sum(axis=1)
        r = np.sqrt(np.maximum(r2, TINY))
        u = np.where((r2 > TINY)[:, None], p / r[:, None], [0.0, 0.0, 1.0])
        shell = np.abs(r - rm) - 0.5 * t
        g_shell = _sgn_np(r - rm)[:, None] * u
        use_shell = shell >= p[:, 2]
        d_lo = np.where(use_shell, shell, p[:, 2])
        n_lo = np.where(use_shell[:, None], g_shell, [0.0, 0.0, 1.0])
        rho, ex, ey = _radial_np(p)
        dr = rho - np.clip(rho, R - t, R)
        length = np.sqrt(np.maximum(dr * dr + p[:, 2] ** 2, TINY))
        n_hi = np.stack([dr / length * ex, dr / length * ey, p[:, 2] / length], axis=1)
        upper = p[:, 2] > 0.0
        return np.where(upper, length, d_lo), np.where(upper[:, None], n_hi, n_lo)
