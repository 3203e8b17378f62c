"""Poses and quaternion rotations: Taichi, numpy and torch versions in one place.

What is computed
    Rotation of vectors by a unit quaternion and its inverse (Taichi ``ti.func`` for kernels,
    numpy on the host), validation of 7-number poses, and the differentiable torch integration
    of 6-DoF poses from commanded velocities (:func:`step_pose`, :func:`integrate_poses`).

Conventions
    * World frame z-up, SI units (metres, seconds, radians).
    * A pose is 7 numbers: position ``(x, y, z)`` then a unit quaternion ``(w, x, y, z)``; it maps
      local to world coordinates: ``p_world = R(q) p_local + position``, so
      ``p_local = R(q)^T (p_world - position)``; normals are rotated back with ``R(q)``.
    * The rotation formula is the unit-quaternion one, ``R(q) v = v + 2w (u x v) + 2u x (u x v)``
      with ``u = (x, y, z)`` (written as ``t = 2 u x v``, ``v + w t + u x t``); quaternions are
      not renormalized inside kernels.
    * Pose integration holds the commanded twist (linear, angular; world frame) constant over
      the substeps of one control step: position ``x <- x + dt v``; orientation
      ``q <- normalize(q + dt/2 [0, w] (x) q)`` (first-order quaternion integration, Hamilton
      product, world-frame angular velocity ``w``).
"""

import math
from typing import TYPE_CHECKING, Any

import numpy as np
import taichi as ti

if TYPE_CHECKING:
    import torch

__all__ = [
    "integrate_poses",
    "normalize_pose",
    "quat_rotate",
    "quat_rotate_inverse",
    "quat_rotate_inverse_numpy",
    "quat_rotate_numpy",
    "step_pose",
]


@ti.func
def quat_rotate(q, v):
    """Rotate ``v`` by the unit quaternion ``q = (w, x, y, z)``: ``R(q) v``."""
    u = ti.math.vec3(q[1], q[2], q[3])
    t = 2.0 * u.cross(v)
    return v + q[0] * t + u.cross(t)


@ti.func
def quat_rotate_inverse(q, v):
    """Rotate ``v`` by the inverse of the unit quaternion ``q``: ``R(q)^T v``."""
    u = ti.math.vec3(-q[1], -q[2], -q[3])
    t = 2.0 * u.cross(v)
    return v + q[0] * t + u.cross(t)


def quat_rotate_numpy(q: Any, v: Any) -> np.ndarray:
    """``R(q) v`` for a unit quaternion ``q (4,)`` (w, x, y, z) and vectors ``v (N, 3)``."""
    q = np.asarray(q, dtype=np.float64)
    v = np.asarray(v, dtype=np.float64)
    u = np.broadcast_to(q[1:4], v.shape)
    t = 2.0 * np.cross(u, v)
    return v + q[0] * t + np.cross(u, t)


def quat_rotate_inverse_numpy(q: Any, v: Any) -> np.ndarray:
    """``R(q)^T v`` for a unit quaternion ``q (4,)`` (w, x, y, z) and vectors ``v (N, 3)``."""
    q = np.asarray(q, dtype=np.float64)
    return quat_rotate_numpy(np.array([q[0], -q[1], -q[2], -q[3]]), v)


def normalize_pose(pose: Any, owner: str = "pose") -> tuple[float, ...]:
    """Validate a 7-number pose and normalize its quaternion (if off by more than 1e-6).

    Args:
        pose: ``(x, y, z, qw, qx, qy, qz)``, position [m] and quaternion.
        owner: name used in error messages.

    Returns:
        The pose as 7 Python floats.

    Raises:
        ValueError: wrong length, non-finite entries or a zero quaternion (names ``owner``).
    """
    try:
        arr = np.array(pose, dtype=np.float64)
    except (TypeError, ValueError):
        arr = None
    if arr is None or arr.shape != (7,):
        raise ValueError(f"{owner} must be 7 numbers (x, y, z, qw, qx, qy, qz), got {pose!r}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{owner} must be finite, got {pose!r}")
    norm = float(np.linalg.norm(arr[3:]))
    if norm < 1e-12:
        raise ValueError(f"{owner} quaternion must be non-zero, got {pose!r}")
    if abs(norm - 1.0) > 1e-6:
        arr[3:] /= norm
    return tuple(float(x) for x in arr)


def quat_rotate_torch(q: "torch.Tensor", v: "torch.Tensor", inverse: bool = False) -> "torch.Tensor":
    """``R(q) v`` (or ``R(q)^T v``) for unit quaternions ``q (..., 4)`` (w, x, y, z) and vectors
    ``v (..., 3)`` (broadcast), differentiable torch."""
    import torch

    u = q[..., 1:] if not inverse else -q[..., 1:]
    t = 2.0 * torch.cross(u.expand_as(v), v, dim=-1)
    return v + q[..., :1] * t + torch.cross(u.expand_as(v), t, dim=-1)


def step_pose(pose: "torch.Tensor", velocity: "torch.Tensor", dt: float) -> "torch.Tensor":
    """Advance poses by one substep of a constant world-frame twist (differentiable).

    Args:
        pose: ``(..., 7)`` position [m] and unit quaternion (w, x, y, z).
        velocity: ``(..., 6)`` linear [m/s] then angular [rad/s] velocity, world frame.
        dt: substep duration [s].

    Returns:
        ``(..., 7)`` pose after ``dt``: ``x + dt v`` and ``normalize(q + dt/2 [0, w] (x) q)``.
    """
    import torch

    x = pose[..., :3] + dt * velocity[..., :3]
    q = pose[..., 3:]
    qw = q[..., :1]
    qv = q[..., 1:]
    w = velocity[..., 3:]
    # [0, w] (x) q = (-w . qv, qw w + w x qv)
    dq = torch.cat([-(w * qv).sum(dim=-1, keepdim=True), qw * w + torch.cross(w, qv, dim=-1)], dim=-1)
    q_new = q + 0.5 * dt * dq
    q_new = q_new / torch.linalg.vector_norm(q_new, dim=-1, keepdim=True)
    return torch.cat([x, q_new], dim=-1)


def integrate_poses(
    pose0: "torch.Tensor", velocity: "torch.Tensor", dt: float, substeps: int
) -> "tuple[torch.Tensor, torch.Tensor]":
    """Poses at every substep from per-control-step twists (differentiable).

    Args:
        pose0: ``(B, K, 7)`` poses at the start of the rollout.
        velocity: ``(T, B, K, 6)`` twist per control step (linear [m/s], angular [rad/s], world
            frame), held constant over the step's ``substeps`` substeps.
        dt: substep duration [s] (a control step lasts ``dt * substeps``).
        substeps: substeps per control step, >= 1.

    Returns:
        ``(poses, velocities)``: ``(T*substeps, B, K, 7)`` pose at the START of each substep
        (``poses[0] == pose0``) and ``(T*substeps, B, K, 6)`` the twist during it. The pose after
        the last substep is ``step_pose(poses[-1], velocities[-1], dt)``.

    Raises:
        ValueError: inconsistent shapes, ``dt`` not positive/finite, or ``substeps < 1``.
    """
    import torch

    if pose0.ndim != 3 or pose0.shape[-1] != 7:
        raise ValueError(f"pose0 must have shape (B, K, 7), got {tuple(pose0.shape)}")
    if velocity.ndim != 4 or velocity.shape[1:] != (*pose0.shape[:2], 6):
        raise ValueError(
            f"velocity must have shape (T, {pose0.shape[0]}, {pose0.shape[1]}, 6), got {tuple(velocity.shape)}"
        )
    if not (math.isfinite(dt) and dt > 0.0):
        raise ValueError(f"dt must be positive and finite, got {dt!r}")
    if int(substeps) != substeps or substeps < 1:
        raise ValueError(f"substeps must be an integer >= 1, got {substeps!r}")
    velocities = velocity.repeat_interleave(int(substeps), dim=0)
    poses = [pose0]
    for s in range(velocities.shape[0] - 1):
        poses.append(step_pose(poses[-1], velocities[s], dt))
    return torch.stack(poses, dim=0), velocities
