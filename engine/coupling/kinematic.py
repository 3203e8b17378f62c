"""Contact between kinematic colliders: commanded collider motions stopped at contact.

What is computed
    Kinematic colliders (:mod:`engine.colliders`) follow poses integrated from commanded twists
    (:func:`engine.geometry.pose.integrate_poses`). :class:`KinematicContact` turns the commanded
    trajectory into an admissible one: a collider whose motion during a substep would make it
    interpenetrate another solid collider (a container, an obstacle, a tool) or leave the domain
    interior is moved back to contact, and its velocity during that substep becomes the velocity
    of the projected motion (the MPM grid boundary condition reads it). Everything is torch and
    differentiable through autograd.

Geometry (numpy, once per shape and spacing, cached)
    * surface samples in the shape's local frame: the points of a regular grid of spacing ``s``
      with ``|sdf| <= s / 2``, projected onto the surface along the normal (``p - sdf(p) n(p)``),
      so every ``s x s`` patch of a face holds a sample, plus the projections of the outside
      grid points within ``sqrt(3) s`` that land on edges and corners (every convex corner of a
      box is a sample, edges are sampled about every ``s``);
    * a local-frame voxel SDF of spacing ``h = s / 3`` over the shape's bounding box plus two
      voxels, sampled from the shape's numpy SDF (a :class:`engine.geometry.Mesh` uses its own
      voxels). It is interpolated trilinearly in torch; outside the box the value is the distance
      to the box plus the interpolant at the nearest box point (positive: "far"). A
      :class:`engine.geometry.Plane` is the exact half-space ``z <= 0`` and has no samples.
    ``s = min(dx / 2, thinnest feature / 2, sqrt(r dx / 8))`` (dx the MPM cell; the thinnest
    feature is a wall or shell thickness, a box's smallest side, a radius; r the smallest radius
    of a convex curved surface, so that it bulges at most ``dx / 32`` between samples),
    coarsened so that one shape holds at most :data:`MAX_SAMPLES` samples and
    :data:`MAX_VOXELS` voxels.

How contact between kinematic bodies is resolved
    Per substep g, with the pose ``P_g`` at its start and the commanded twist ``V_g``:

    1. predicted pose ``step_pose(P_g, V_g, dt)`` (the integrator used without contact);
    2. each collider A that moves in this substep (``V_g != 0`` in that scene) is projected, in
       collider order, Gauss-Seidel over its constraints (the position-based dynamics scheme of
       Mueller et al. 2007) until a sweep moves it by less than :data:`CONVERGED` ``s``, at most
       :data:`ITERATIONS` sweeps. Against a partner B (at its pose at the end of the substep:
       projected if B moved and came earlier, predicted otherwise) the penetration is the
       deepest of two point/level-set tests (Guendelman et al. 2003): B's SDF at A's samples and
       A's SDF at B's samples (the second catches a thin rim or edge of B that falls between
       A's samples). If it is below ``-slop``, A is translated by the penetration depth along
       the contact normal of the deepest sample (B's outward normal there, or minus A's; B's on
       a tie). Against the domain walls (``boundary_cells * dx`` inside each face) A is
       translated back by the deepest sample's excursion past each wall (exact for a plane);
    3. if the sweeps did not converge and A still penetrates deeper than ``s / 20`` (the
       scene's smallest ``s``; wedged: no translation frees it, e.g. a tool rotated across a
       cavity), A keeps its pose ``P_g`` in that scene: the substep's motion is stopped;
    4. the velocity during the substep becomes ``lin = V_lin + (x_projected - x_predicted) / dt``
       (the linear velocity of the projected motion, since ``x_{g+1} = x_g + dt lin``) with the
       commanded angular velocity, or zero for a stopped substep.

    Rotations are not projected. Projecting a pose onto the admissible set needs a metric that
    mixes metres and radians, and a rotational correction would override the orientation a
    policy commands (Pouring's tilt); a translation along the contact normal is the shortest
    motion that ends a single contact (exact for a flat contact). A rotation that would bring
    the tool into an obstacle is therefore stopped by translation: the tool rolls on the
    obstacle, pushed away from it, and where no translation frees it (step 3) the substep is
    stopped as a whole.

Which pairs are resolved
    Every pair of solid colliders (``Collider.solid``, default True) and every solid collider
    against the domain walls, except

    * pairs that share a non-zero ``Collider.contact_group`` (a gripper's fingers);
    * pairs that already overlap at the poses the colliders were built with (``Collider.pose``;
      by the shapes' exact numpy SDFs at the samples, deeper than :data:`OVERLAP` dx, so that
      touching counts as apart), and walls that a collider already crosses there: a tool that
      starts intersecting a wall is left free of that wall rather than teleported out of it.
      :attr:`KinematicContact.excluded` lists them, and the logger of this module names each
      (INFO) the first time one of its colliders moves: a task may overlap by design (a paddle
      that sweeps a tank's floor), so it is not a warning.
      (A tool inside a cup's hollow does not overlap the cup: the cup's solid is its wall.)
    * two planes (nothing to test) and a collider against itself.

    Only moving colliders are corrected; a collider with zero twist in a substep is an obstacle
    there, so containers that a scene never moves are never pushed. When two moving colliders
    meet, the one earlier in collider order yields.

What is differentiable
    The projected poses and the velocities are torch expressions of the start poses and the
    controls: the penetration depth and the contact normal are differentiable functions of both
    poses (trilinear interpolation and its analytic gradient), so a loss on the final pose or on
    the MPM state feels that a tool is stopped (zero derivative along the blocked normal, a
    tangential slide along it). The derivative is piecewise smooth: it jumps where the contact
    starts or ends, where the deepest sample changes and across voxel faces.

Cost and exactness without contact
    The commanded trajectory is first checked for contact in one batched pass over all substeps
    without autograd (bounding spheres first, then the samples of the pairs whose spheres meet);
    without contact it is returned unchanged (bit for bit). Otherwise the substeps from the
    first contact on are recomputed one at a time with the projection. The result depends only
    on the start pose and the controls of each substep, so stepping one control step at a time
    (``Simulator.step``) and rolling out all steps at once give the same poses. In contact, a
    full test of a pair also records the samples within ``2 s`` of the other body; until the
    pair has moved ``s / 6`` from there only those are tested (an exact shortcut: the
    interpolated SDF is at most 3-Lipschitz, so no other sample can reach contact); the batched
    check likewise tests, per chunk of substeps, only the samples near the other body at the
    chunk's first pose. The
    resolver's tensors hold thousands of numbers, so it runs on one torch thread.

Accuracy and limits
    * After a projection the samples are out of the partner's interpolated SDF to
      :data:`CONVERGED` ``s`` (to ``slop``, 16 eps times the domain size, for a flat contact or a
      wall); the interpolated SDF differs from the exact one by at
      most about ``h / 4`` near sharp edges and medial surfaces (it is exact near flat faces),
      and a convex surface bulges at most ``dx / 32`` between samples.
    * The displacement of a collider in one substep must stay below half the thinnest wall it
      can hit, otherwise the deepest sample can be nearer the wall's far face and the projection
      pushes it through (at ``0.5 m/s`` and ``dt = 8e-4 s`` a substep moves 0.4 mm).

References
    * Guendelman, Bridson, Fedkiw, "Nonconvex Rigid Bodies with Stacking", SIGGRAPH 2003
      (point samples of one body tested against the signed distance of the other, both ways).
    * Mueller, Heidelberger, Hennix, Ratcliff, "Position Based Dynamics", J. Vis. Commun. Image
      Represent. 2007 (projection of positions onto constraints one at a time, Gauss-Seidel).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from engine.colliders import Collider
from engine.config import SimConfig
from engine.geometry.mesh import Mesh
from engine.geometry.pose import quat_rotate_numpy, quat_rotate_torch, step_pose
from engine.geometry.sdf import TINY
from engine.geometry.shapes import Bowl, Box, Capsule, Cup, Cylinder, Plane, Shape, Sphere

__all__ = [
    "CONVERGED",
    "ITERATIONS",
    "MAX_SAMPLES",
    "MAX_VOXELS",
    "OVERLAP",
    "KinematicContact",
    "ShapeGeometry",
    "pair_contact",
    "shape_geometry",
    "surface_samples",
    "wall_depths",
]

ITERATIONS = 4
"""Most Gauss-Seidel sweeps over a moving collider's constraints per substep."""

CONVERGED = 1e-3
"""The sweeps stop once one moves the collider by less than this many sample spacings s."""

MAX_SAMPLES = 20000
"""Most surface samples per shape (the sample spacing grows to stay below it)."""

MAX_VOXELS = 500_000
"""Most voxels of one shape's SDF grid (the voxel spacing grows to stay below it)."""

OVERLAP = 1e-4
"""Overlap, in MPM cells dx, beyond which colliders count as overlapping at their initial poses."""

CHUNK_POINTS = 400_000
"""Points evaluated at once by the batched contact check (bounds its memory)."""

_LOG = logging.getLogger(__name__)

_CORNERS = np.array([[a, b, c] for a in (0, 1) for b in (0, 1) for c in (0, 1)], dtype=np.int64)


# --------------------------------------------------------------------------------------------
# Geometry of one shape (numpy)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class ShapeGeometry:
    """Surface samples and voxel SDF of a shape in its local frame.

    Attributes:
        points: ``(S, 3)`` surface samples [m] (``(0, 3)`` for a plane).
        values: ``(nx, ny, nz)`` signed distances [m], x-major, sample ``(i, j, k)`` at
            ``lo + (i, j, k) * voxel`` (``(2, 2, 2)`` zeros for a plane, unused).
        lo: ``(3,)`` position of voxel ``(0, 0, 0)`` [m].
        voxel: voxel spacing [m].
        spacing: sample spacing [m].
        plane: the shape is the half-space ``z <= 0`` (exact SDF ``z``).
        centre, radius: bounding sphere of the surface [m] (``inf`` radius for a plane).
    """

    points: np.ndarray
    values: np.ndarray
    lo: np.ndarray
    voxel: float
    spacing: float
    plane: bool
    centre: np.ndarray
    radius: float


def _bounds(shape: Shape) -> tuple[np.ndarray, np.ndarray]:
    """Local bounding box ``(lo, hi)`` of a bounded shape."""
    if isinstance(shape, Box):
        h = np.asarray(shape.half_extents)
        return -h, h
    if isinstance(shape, Sphere):
        return np.full(3, -shape.radius), np.full(3, shape.radius)
    if isinstance(shape, Capsule):
        h = np.array([shape.radius, shape.radius, shape.radius + shape.half_length])
        return -h, h
    if isinstance(shape, Cylinder):
        h = np.array([shape.radius, shape.radius, shape.half_height])
        return -h, h
    if isinstance(shape, Cup):
        r = shape.radius
        return np.array([-r, -r, 0.0]), np.array([r, r, shape.height])
    if isinstance(shape, Bowl):
        r = shape.radius
        return np.array([-r, -r, -r]), np.array([r, r, 0.0])
    if isinstance(shape, Mesh):
        lo = np.asarray(shape.lo)
        return lo, lo + (shape.resolution - 1) * shape.voxel_size
    raise ValueError(f"kinematic contact does not know the extent of {type(shape).__name__}")


def _curvature_radius(shape: Shape) -> float:
    """Smallest radius of curvature of a shape's convex surface [m] (inf if flat)."""
    if isinstance(shape, Sphere | Capsule | Cylinder | Cup | Bowl):
        return shape.radius
    return math.inf


def _thinnest(shape: Shape) -> float:
    """Thickness of the thinnest feature of a shape [m] (what the samples must resolve)."""
    if isinstance(shape, Box):
        return 2.0 * min(shape.half_extents)
    if isinstance(shape, Sphere | Capsule):
        return 2.0 * shape.radius
    if isinstance(shape, Cylinder):
        return 2.0 * min(shape.radius, shape.half_height)
    if isinstance(shape, Cup | Bowl):
        return shape.thickness
    if isinstance(shape, Mesh):
        return 4.0 * shape.voxel_size
    return math.inf


def _lattice(lo: np.ndarray, hi: np.ndarray, step: float) -> tuple[np.ndarray, tuple[int, int, int]]:
    """Points ``lo + (i, j, k) * step`` covering ``[lo, hi]``, x-major, and the grid shape."""
    counts = tuple(int(math.ceil((hi[k] - lo[k]) / step - 1e-9)) + 1 for k in range(3))
    axes = [lo[k] + step * np.arange(counts[k]) for k in range(3)]
    grid = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3)
    return grid, counts


def _dedupe(points: np.ndarray, cell: float) -> np.ndarray:
    """The first point in each cube of side ``cell`` (order kept)."""
    key = np.floor(points / cell).astype(np.int64)
    _, first = np.unique(key, axis=0, return_index=True)
    return points[np.sort(first)]


def surface_samples(shape: Shape, spacing: float) -> np.ndarray:
    """Surface samples ``(S, 3)`` of a bounded shape in its local frame [m]: lattice points of
    spacing ``spacing`` with ``|sdf| <= spacing / 2`` projected onto the surface, plus the
    projections of outside lattice points up to ``sqrt(3) spacing`` away that land on an edge or
    a corner (farther than ``spacing / 4`` from every face sample)."""
    from scipy.spatial import cKDTree

    lo, hi = _bounds(shape)
    grid, _ = _lattice(lo - 2.0 * spacing, hi + 2.0 * spacing, spacing)
    d, n = shape.sdf(grid)
    projected = grid - d[:, None] * n
    faces = _dedupe(projected[np.abs(d) <= 0.5 * spacing], 1e-6 * spacing)
    ring = (d > 0.5 * spacing) & (d <= math.sqrt(3.0) * spacing)
    extra = _dedupe(projected[ring], 0.25 * spacing)
    if len(faces) and len(extra):
        extra = extra[cKDTree(faces).query(extra)[0] > 0.25 * spacing]
    return np.concatenate([faces, extra])


def _voxel_sdf(shape: Shape, lo: np.ndarray, hi: np.ndarray, voxel: float) -> tuple[np.ndarray, np.ndarray, float]:
    """``(values, lo, voxel)``: the shape's SDF on a grid over its box plus two voxels."""
    if isinstance(shape, Mesh):
        return np.asarray(shape.values, dtype=np.float64), np.asarray(shape.lo, dtype=np.float64), shape.voxel_size
    extent = (hi - lo) + 4.0 * voxel
    voxel = max(voxel, float(np.prod(extent) / MAX_VOXELS) ** (1.0 / 3.0))
    start = lo - 2.0 * voxel
    grid, counts = _lattice(start, hi + 2.0 * voxel, voxel)
    return shape.sdf(grid)[0].reshape(counts), start, voxel


@functools.lru_cache(maxsize=16)
def shape_geometry(shape: Shape, spacing: float) -> ShapeGeometry:
    """Surface samples and voxel SDF of ``shape`` for a target sample spacing [m] (cached).

    The spacing is reduced to half the shape's thinnest feature and to ``sqrt(r spacing / 4)``
    on a convex surface of radius ``r`` (so that the surface bulges at most ``spacing / 16``
    between samples), then grown until the shape has at most :data:`MAX_SAMPLES` samples; the
    voxels are a third of it.

    Raises:
        ValueError: a shape whose extent is not known (a custom :class:`Shape` subclass).
    """
    if isinstance(shape, Plane):
        zero = np.zeros(3)
        return ShapeGeometry(np.zeros((0, 3)), np.zeros((2, 2, 2)), zero, 1.0, spacing, True, zero, math.inf)
    lo, hi = _bounds(shape)
    spacing = min(spacing, 0.5 * _thinnest(shape), math.sqrt(0.25 * _curvature_radius(shape) * spacing))
    points = surface_samples(shape, spacing)
    while len(points) > MAX_SAMPLES:
        spacing *= 1.05 * math.sqrt(len(points) / MAX_SAMPLES)
        points = surface_samples(shape, spacing)
    values, vlo, voxel = _voxel_sdf(shape, lo, hi, spacing / 3.0)
    centre = 0.5 * (lo + hi)
    radius = float(np.sqrt(((points - centre) ** 2).sum(axis=1)).max()) + 2.0 * voxel
    return ShapeGeometry(points, values, vlo, voxel, spacing, False, centre, radius)


# --------------------------------------------------------------------------------------------
# Torch evaluation
# --------------------------------------------------------------------------------------------


class _Field:
    """A :class:`ShapeGeometry` as torch tensors: trilinear SDF and its gradient.

    The distance at many points is one ``torch.nn.functional.grid_sample`` (trilinear, with its
    derivative with respect to the points); the normal, needed at one point per contact, is the
    analytic gradient of the same interpolant.
    """

    def __init__(self, geometry: ShapeGeometry, dtype: torch.dtype):
        self.plane = geometry.plane
        self.points = torch.as_tensor(geometry.points, dtype=dtype)
        self.centre = torch.as_tensor(geometry.centre, dtype=dtype)
        self.radius = geometry.radius
        self.spacing = geometry.spacing
        self.voxel = geometry.voxel
        shape = np.array(geometry.values.shape)
        self.values = torch.as_tensor(geometry.values.reshape(-1), dtype=dtype)
        # grid_sample reads the first point coordinate along the volume's last axis: (z, y, x)
        self.volume = torch.as_tensor(geometry.values.transpose(2, 1, 0).copy(), dtype=dtype)[None, None]
        self.lo = torch.as_tensor(geometry.lo, dtype=dtype)
        self.hi = torch.as_tensor(geometry.lo + (shape - 1) * geometry.voxel, dtype=dtype)
        self.cell_max = torch.as_tensor(shape - 2, dtype=dtype)
        strides = np.array([shape[1] * shape[2], shape[2], 1])
        self.strides = torch.as_tensor(strides)
        self.corner_offsets = torch.as_tensor(_CORNERS @ strides)
        self.corners = torch.as_tensor(_CORNERS, dtype=dtype)

    def _clamp(self, p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(q, e)``: p clamped to the voxel box and the excursion ``p - q``."""
        q = torch.maximum(torch.minimum(p, self.hi), self.lo)
        return q, p - q

    def distance(self, p: torch.Tensor) -> torch.Tensor:
        """Signed distance ``(...)`` [m] at local points ``p (..., 3)``."""
        if self.plane:
            return p[..., 2]
        q, e = self._clamp(p)
        coords = (q - self.lo) / (self.hi - self.lo) * 2.0 - 1.0
        sampled = F.grid_sample(
            self.volume, coords.reshape(1, 1, 1, -1, 3), mode="bilinear", padding_mode="border", align_corners=True
        )
        e2 = e[..., 0] * e[..., 0] + e[..., 1] * e[..., 1] + e[..., 2] * e[..., 2]
        far = torch.where(e2 > 0.0, torch.sqrt(torch.where(e2 > 0.0, e2, 1.0)), torch.zeros_like(e2))
        return far + sampled.reshape(p.shape[:-1])

    def normal(self, p: torch.Tensor) -> torch.Tensor:
        """Outward unit normal ``(..., 3)`` (normalized gradient of the interpolant) at ``p``."""
        if self.plane:
            return torch.zeros_like(p) + torch.tensor([0.0, 0.0, 1.0], dtype=p.dtype)
        q, e = self._clamp(p)
        u = (q - self.lo) / self.voxel
        cell = torch.minimum(torch.clamp(torch.floor(u.detach()), min=0.0), self.cell_max)
        f = u - cell
        vals = self.values[(cell.long() * self.strides).sum(dim=-1)[..., None] + self.corner_offsets]
        factors = torch.where(self.corners.bool(), f[..., None, :], 1.0 - f[..., None, :])
        sign = 2.0 * self.corners - 1.0  # d w / d f_axis = sign * product of the other two factors
        grads = []
        for axis in range(3):
            others = [k for k in range(3) if k != axis]
            dw = sign[:, axis] * factors[..., others[0]] * factors[..., others[1]]
            grads.append((vals * dw).sum(dim=-1))
        inside = (e == 0.0).to(p.dtype)
        e2 = (e * e).sum(dim=-1, keepdim=True)
        g = e / torch.sqrt(torch.clamp(e2, min=TINY)) + inside * torch.stack(grads, dim=-1) / self.voxel
        length = torch.sqrt(torch.clamp((g * g).sum(dim=-1, keepdim=True), min=TINY))
        return g / length


def _quat_mul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Hamilton product ``a (x) b`` of quaternions ``(..., 4)`` (w, x, y, z)."""
    aw, av = a[..., :1], a[..., 1:]
    bw, bv = b[..., :1], b[..., 1:]
    w = aw * bw - (av * bv).sum(dim=-1, keepdim=True)
    return torch.cat([w, aw * bv + bw * av + torch.cross(av, bv, dim=-1)], dim=-1)


def _conj(q: torch.Tensor) -> torch.Tensor:
    return torch.cat([q[..., :1], -q[..., 1:]], dim=-1)


def _rotate_points(points: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Points ``(S, 3)`` rotated by each of the unit quaternions ``(M, 4)``: ``(M, S, 3)``.

    ``sum_i p_i R(q) e_i`` written out elementwise, so that a point's result does not depend on
    which other points are rotated with it (a matrix product may round differently by size).
    """
    eye = torch.eye(3, dtype=q.dtype).expand(q.shape[0], 3, 3)
    rows = quat_rotate_torch(q[:, None, :], eye)[:, None]  # (M, 1, 3, 3): rows R e_i
    p = points[None, :, :, None]
    return p[..., 0, :] * rows[..., 0, :] + p[..., 1, :] * rows[..., 1, :] + p[..., 2, :] * rows[..., 2, :]


def _in_frame(points: torch.Tensor, pose_from: torch.Tensor, pose_to: torch.Tensor) -> torch.Tensor:
    """Local points ``(S, 3)`` of a body at ``pose_from (M, 7)`` in the frame of ``pose_to``:
    ``(M, S, 3)``."""
    q_to = pose_to[..., 3:]
    q_rel = _quat_mul(_conj(q_to), pose_from[..., 3:])
    x_rel = quat_rotate_torch(q_to, pose_from[..., :3] - pose_to[..., :3], inverse=True)
    return _rotate_points(points, q_rel) + x_rel[:, None, :]


def _to_world(points: torch.Tensor, pose: torch.Tensor) -> torch.Tensor:
    """Local points ``(S, 3)`` at poses ``(M, 7)`` in world coordinates ``(M, S, 3)``."""
    return _rotate_points(points, pose[:, 3:]) + pose[:, None, :3]


def _deepest(field: _Field, local: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Deepest sample ``(depth (M,), point (M, 3), distances (M, S))`` of local points
    ``(M, S, 3)`` in ``field``."""
    if local.shape[1] == 0:
        inf = torch.full(local.shape[:1], math.inf, dtype=local.dtype)
        return inf, local.new_zeros(local.shape[0], 3), local.new_zeros(local.shape[:2])
    distances = field.distance(local)
    depth, index = distances.min(dim=1)
    point = torch.gather(local, 1, index[:, None, None].expand(-1, 1, 3))[:, 0]
    return depth, point, distances


def _slop(dtype: torch.dtype, size: float = 1.0) -> float:
    """Penetration [m] below which bodies count as touching: rounding of positions of ``size``."""
    return 16.0 * torch.finfo(dtype).eps * size


@dataclass(frozen=True)
class _Contact:
    """Deepest samples of a pair: of A in B (``d_ab`` at ``p_ab``, B's frame) and of B in A
    (``d_ba`` at ``p_ba``, A's frame); ``depth`` is the smaller; ``all_ab``, ``all_ba`` the
    distances of every sample tested."""

    depth: torch.Tensor
    d_ab: torch.Tensor
    p_ab: torch.Tensor
    d_ba: torch.Tensor
    p_ba: torch.Tensor
    all_ab: torch.Tensor
    all_ba: torch.Tensor


def _pair_depth(
    fa: _Field,
    fb: _Field,
    pose_a: torch.Tensor,
    pose_b: torch.Tensor,
    subset: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> _Contact:
    """The deepest samples of A in B and of B in A; ``subset``: only these samples of A and B."""
    points_a, points_b = (fa.points, fb.points) if subset is None else (fa.points[subset[0]], fb.points[subset[1]])
    d_ab, p_ab, all_ab = _deepest(fb, _in_frame(points_a, pose_a, pose_b))
    d_ba, p_ba, all_ba = _deepest(fa, _in_frame(points_b, pose_b, pose_a))
    return _Contact(torch.minimum(d_ab, d_ba), d_ab, p_ab, d_ba, p_ba, all_ab, all_ba)


def _push_direction(
    c: _Contact, fa: _Field, fb: _Field, pose_a: torch.Tensor, pose_b: torch.Tensor, tie: float = 0.0
) -> torch.Tensor:
    """``(M, 3)`` unit world direction that separates A: B's outward normal at A's deepest
    sample, or minus A's outward normal at B's deepest sample if that one is deeper by more
    than ``tie`` [m] (a flat contact has both at the same depth to rounding)."""
    use_b = c.d_ab <= c.d_ba + tie
    n_b = quat_rotate_torch(pose_b[:, 3:], fb.normal(c.p_ab)) if bool(use_b.any()) else None
    n_a = -quat_rotate_torch(pose_a[:, 3:], fa.normal(c.p_ba)) if not bool(use_b.all()) else None
    if n_a is None or n_b is None:
        return n_b if n_a is None else n_a
    return torch.where(use_b[:, None], n_b, n_a)


def pair_contact(
    fa: _Field, fb: _Field, pose_a: torch.Tensor, pose_b: torch.Tensor, direction: bool
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Penetration of bodies A and B and the direction that separates A.

    Args:
        fa, fb: the bodies' fields.
        pose_a, pose_b: ``(M, 7)`` poses.
        direction: also compute the unit world direction along which to translate A.

    Returns:
        ``(depth (M,), direction (M, 3) or None)``: the most negative of B's SDF at A's samples
        and A's SDF at B's samples [m] (``inf`` when neither has samples), and B's outward normal
        at A's deepest sample or minus A's outward normal at B's deepest sample.
    """
    c = _pair_depth(fa, fb, pose_a, pose_b)
    return c.depth, _push_direction(c, fa, fb, pose_a, pose_b, _slop(pose_a.dtype)) if direction else None


def wall_depths(field: _Field, pose: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
    """``(M, 6)`` excursions of the deepest samples past the domain walls (negative outside):
    ``min x - lo`` per axis, then ``hi - max x`` per axis [m]."""
    world = _to_world(field.points, pose)
    return torch.cat([world.amin(dim=1) - lo, hi - world.amax(dim=1)], dim=-1)


# --------------------------------------------------------------------------------------------
# The resolver
# --------------------------------------------------------------------------------------------


def _world_samples(collider: Collider, field: _Field) -> np.ndarray:
    """``(S, 3)`` surface samples of a collider at its initial pose (numpy, float64)."""
    points = field.points.detach().cpu().numpy().astype(np.float64)
    return quat_rotate_numpy(collider.pose[3:], points) + np.asarray(collider.pose[:3])


def _exact_depth(a: Collider, fa: _Field, b: Collider) -> float:
    """Most negative exact (numpy) SDF of collider b at a's samples, both at initial poses [m]."""
    if not len(fa.points):
        return math.inf
    return float(b.sdf(_world_samples(a, fa))[0].min())


def _field(collider: Collider, spacing: float, dtype: torch.dtype) -> _Field | None:
    """The collider's field, or None if it takes no part in contact (not solid, or a shape
    whose extent is unknown: warned)."""
    if not collider.solid:
        return None
    try:
        return _Field(shape_geometry(collider.shape, spacing), dtype)
    except ValueError as err:
        warnings.warn(f"{err}; the collider takes no part in kinematic contact", stacklevel=5)
        return None


@contextlib.contextmanager
def _one_thread():
    """Run the body with one torch intra-op thread, then restore the count. The resolver's
    tensors hold thousands of numbers: splitting them over threads costs more than it saves,
    and on a loaded machine each parallel op can wait a scheduler time slice for its threads."""
    before = torch.get_num_threads()
    if before == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@dataclass(frozen=True)
class _Active:
    """The samples of a pair (of A, of B) within ``margin`` of the other body at the poses of a
    full test: the only ones that can touch while the pair has moved less than ``margin / 12``
    from those poses (the interpolated SDF is at most 3-Lipschitz; a factor 2 to spare)."""

    pose_a: torch.Tensor
    pose_b: torch.Tensor
    subset: tuple[torch.Tensor, torch.Tensor]
    margin: float


class KinematicContact:
    """Contact between a scene's kinematic colliders and with the domain walls (see the module
    docstring): ``resolve(poses, velocities)`` projects a commanded trajectory.

    Args:
        colliders: the scene's colliders, in scene order.
        config: the solver settings (dx, dt, domain walls).
        dtype: torch dtype of the trajectories.
    """

    def __init__(self, colliders: Sequence[Collider], config: SimConfig, dtype: torch.dtype):
        self.dtype = dtype
        self.K = len(colliders)
        self.dt = config.dt
        self.wall_lo = config.boundary_cells * config.dx
        self.wall_hi = config.domain_size - self.wall_lo
        self.fields = [_field(c, 0.5 * config.dx, dtype) for c in colliders]
        self.slop = _slop(dtype, config.domain_size)
        self.reach = [
            float(f.points.norm(dim=-1).max()) if f is not None and len(f.points) else 0.0 for f in self.fields
        ]
        finite = [f.spacing for f in self.fields if f is not None and not f.plane]
        self.tolerance = 0.05 * min(finite) if finite else 0.0
        self.converged = CONVERGED * min(finite) if finite else 0.0
        #: Pairs ``(a, b)`` and walls ``(c, None)`` left unresolved because they overlap at the
        #: initial poses, with the overlap depth [m]; logged (INFO) once, when one of them moves.
        self.excluded: dict[tuple[int, int | None], float] = {}
        self._logged: set[tuple[int, int | None]] = set()
        self.overlap = OVERLAP * config.dx
        self.partners = self._pairs(colliders)
        self.walls = self._wall_masks(colliders)
        self.active = any(self.partners) or any(w is not None for w in self.walls)

    # ------------------------------------------------------------------ set-up
    def _pairs(self, colliders: Sequence[Collider]) -> list[list[int]]:
        """Partners of every collider: solid, not in a shared group, not overlapping at build."""
        partners: list[list[int]] = [[] for _ in range(self.K)]
        for a in range(self.K):
            for b in range(a + 1, self.K):
                fa, fb = self.fields[a], self.fields[b]
                if fa is None or fb is None or (fa.plane and fb.plane):
                    continue
                group = colliders[a].contact_group
                if group and group == colliders[b].contact_group:
                    continue
                depth = min(_exact_depth(colliders[a], fa, colliders[b]), _exact_depth(colliders[b], fb, colliders[a]))
                if depth < -self.overlap:
                    self.excluded[(a, b)] = -depth
                    continue
                partners[a].append(b)
                partners[b].append(a)
        return partners

    def _wall_masks(self, colliders: Sequence[Collider]) -> list[torch.Tensor | None]:
        """Per collider, which of the six domain walls bound it (None: no wall applies)."""
        masks: list[torch.Tensor | None] = []
        for c, field in enumerate(self.fields):
            if field is None or field.plane:
                masks.append(None)
                continue
            world = _world_samples(colliders[c], field)
            depth = np.concatenate([world.min(axis=0) - self.wall_lo, self.wall_hi - world.max(axis=0)])
            keep = depth >= -self.overlap
            if not keep.all():
                self.excluded[(c, None)] = -float(depth.min())
            masks.append(torch.as_tensor(keep) if keep.any() else None)
        return masks

    def _log_excluded(self, moving: torch.Tensor) -> None:
        """Log, once each, the excluded pairs and walls of colliders that move ``(n, B, K)``."""
        for key, depth in self.excluded.items():
            if key in self._logged or not any(bool(moving[..., c].any()) for c in key if c is not None):
                continue
            self._logged.add(key)
            a, b = key
            what = f"colliders {a} and {b} overlap" if b is not None else f"collider {a} crosses a domain wall"
            _LOG.info("%s by %.3g m at the initial poses (Collider.pose): that contact is not resolved", what, depth)

    # ------------------------------------------------------------------ tests
    def _near(self, a: int, b: int, pose_a: torch.Tensor, pose_b: torch.Tensor) -> torch.Tensor:
        """``(M,)`` whether the bounding spheres of a and b meet (always for a plane)."""
        fa, fb = self.fields[a], self.fields[b]
        if fa.plane or fb.plane:
            return torch.ones(pose_a.shape[0], dtype=torch.bool)
        ca = quat_rotate_torch(pose_a[:, 3:], fa.centre.expand(pose_a.shape[0], 3)) + pose_a[:, :3]
        cb = quat_rotate_torch(pose_b[:, 3:], fb.centre.expand(pose_b.shape[0], 3)) + pose_b[:, :3]
        return ((ca - cb) ** 2).sum(dim=-1) <= (fa.radius + fb.radius) ** 2

    def _near_wall(self, c: int, pose: torch.Tensor) -> torch.Tensor:
        """``(M,)`` whether the bounding sphere of c reaches past a domain wall."""
        f = self.fields[c]
        centre = quat_rotate_torch(pose[:, 3:], f.centre.expand(pose.shape[0], 3)) + pose[:, :3]
        return ((centre - f.radius < self.wall_lo) | (centre + f.radius > self.wall_hi)).any(dim=-1)

    def _wall_hits(self, c: int, pose: torch.Tensor) -> torch.Tensor:
        """``(M, 6)`` walls of collider c penetrated deeper than the slop."""
        depth = wall_depths(self.fields[c], pose, self.wall_lo, self.wall_hi)
        return (depth < -self.slop) & self.walls[c]

    def _near_samples(
        self, a: int, b: int, ref_a: torch.Tensor, ref_b: torch.Tensor, pose_a: torch.Tensor, pose_b: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The samples of a and of b that can touch the other body at any of the poses
        ``pose_a``, ``pose_b`` ``(R, B, 7)``, found by one test at the reference poses ``ref_a``,
        ``ref_b`` ``(B, 7)``: those closer than ``margin = 12 x`` (how far the pair moved from
        there), a bound for the 3-Lipschitz interpolated SDF with a factor 2 to spare. None
        when the pair turned too far for the bound (every sample must be tested)."""
        fa, fb = self.fields[a], self.fields[b]
        if fa.plane or fb.plane:
            return None
        shift = [(p[..., :3] - r[..., :3]).norm(dim=-1).max() for p, r in ((pose_a, ref_a), (pose_b, ref_b))]
        turn = [
            2.0 * torch.acos((p[..., 3:] * r[..., 3:]).sum(dim=-1).abs().clamp(max=1.0)).max()
            for p, r in ((pose_a, ref_a), (pose_b, ref_b))
        ]
        reach = self.reach[a] * turn[0] + self.reach[b] * turn[1]
        margin = max(2.0 * min(fa.spacing, fb.spacing), 24.0 * float(shift[0] + shift[1] + reach))
        if 12.0 * float(shift[0] + shift[1] + reach + margin * (turn[0] + turn[1])) >= margin:
            return None
        contact = _pair_depth(fa, fb, ref_a, ref_b)
        return tuple(torch.nonzero((d < margin).any(dim=0))[:, 0] for d in (contact.all_ab, contact.all_ba))

    def _contacts(self, poses: torch.Tensor, moving: torch.Tensor) -> torch.Tensor:
        """``(R, B)`` whether any moving collider penetrates a partner or a wall at the end of
        each of R substeps, from the poses at their start and end ``(R + 1, B, K, 7)`` and the
        moving flags ``(R, B, K)`` (no autograd)."""
        end = poses[1:]
        R, B, K = moving.shape
        hit = torch.zeros(R * B, dtype=torch.bool)
        for a in range(self.K):
            for b in self.partners[a]:
                if b < a:
                    continue
                pa, pb = end[:, :, a].reshape(-1, 7), end[:, :, b].reshape(-1, 7)
                rows = torch.nonzero((moving[..., a] | moving[..., b]).reshape(-1) & self._near(a, b, pa, pb))[:, 0]
                if not len(rows):
                    continue
                subset = self._near_samples(a, b, poses[0, :, a], poses[0, :, b], end[:, :, a], end[:, :, b])
                if subset is not None and not (len(subset[0]) or len(subset[1])):
                    continue
                depth = _pair_depth(self.fields[a], self.fields[b], pa[rows], pb[rows], subset).depth
                hit[rows] |= depth < -self.slop
            if self.walls[a] is not None:
                pa = end[:, :, a].reshape(-1, 7)
                rows = torch.nonzero(moving[..., a].reshape(-1) & self._near_wall(a, pa))[:, 0]
                if len(rows):
                    hit[rows] |= self._wall_hits(a, pa[rows]).any(dim=-1)
        return hit.reshape(R, B)

    def first_contact(self, poses: torch.Tensor, moving: torch.Tensor) -> int | None:
        """The first substep whose commanded motion ends in contact, or None.

        Args:
            poses: ``(n + 1, B, K, 7)`` commanded poses at the substep boundaries.
            moving: ``(n, B, K)`` whether each collider's commanded twist is non-zero.
        """
        n, B, K = moving.shape
        samples = sum(len(f.points) for f in self.fields if f is not None) or 1
        rows = max(1, CHUNK_POINTS // (B * samples))
        with torch.no_grad():
            for start in range(0, n, rows):
                stop = min(n, start + rows)
                hit = self._contacts(poses[start : stop + 1], moving[start:stop])
                found = torch.nonzero(hit.any(dim=1))
                if len(found):
                    return start + int(found[0, 0])
        return None

    # ------------------------------------------------------------------ projection
    def _moved(self, c: int, pose: torch.Tensor, ref: torch.Tensor, margin: float) -> float:
        """Bound on the displacement [m] between poses ``ref`` and ``pose`` ``(B, 7)`` of collider
        c of any point within ``margin`` of its surface."""
        shift = (pose[:, :3] - ref[:, :3]).norm(dim=-1)
        angle = 2.0 * torch.acos((pose[:, 3:] * ref[:, 3:]).sum(dim=-1).abs().clamp(max=1.0))
        return float((shift + angle * (self.reach[c] + margin)).max())

    def _contact(self, a: int, b: int, pose_a: torch.Tensor, pose_b: torch.Tensor, active: dict) -> _Contact:
        """The deepest samples of the pair (a, b), testing only the samples of ``active[(a, b)]``
        while they are the only ones that can touch (same result as testing all of them)."""
        fa, fb = self.fields[a], self.fields[b]
        if fa.plane or fb.plane:
            return _pair_depth(fa, fb, pose_a, pose_b)
        entry = active.get((a, b))
        if entry is not None:
            moved = self._moved(a, pose_a.detach(), entry.pose_a, entry.margin)
            moved += self._moved(b, pose_b.detach(), entry.pose_b, entry.margin)
            if 12.0 * moved < entry.margin:
                return _pair_depth(fa, fb, pose_a, pose_b, entry.subset)
        contact = _pair_depth(fa, fb, pose_a, pose_b)
        margin = 2.0 * min(fa.spacing, fb.spacing)
        subset = tuple(torch.nonzero((d.detach() < margin).any(dim=0))[:, 0] for d in (contact.all_ab, contact.all_ba))
        active[(a, b)] = _Active(pose_a.detach(), pose_b.detach(), subset, margin)
        return contact

    def _sweep(self, a: int, pos: list, quat: list, moving: torch.Tensor, active: dict) -> float:
        """One Gauss-Seidel sweep of collider a over its partners and walls; updates ``pos[a]``.
        Returns the largest translation it applied [m]."""
        corrected = 0.0
        for b in self.partners[a]:
            pose_a, pose_b = torch.cat([pos[a], quat[a]], -1), torch.cat([pos[b], quat[b]], -1)
            if not bool((self._near(a, b, pose_a.detach(), pose_b.detach()) & moving).any()):
                continue
            fa, fb = self.fields[a], self.fields[b]
            contact = self._contact(a, b, pose_a, pose_b, active)
            hit = (contact.depth < -self.slop) & moving
            if bool(hit.any()):
                push = -contact.depth[:, None] * _push_direction(contact, fa, fb, pose_a, pose_b, self.slop)
                pos[a] = pos[a] + torch.where(hit[:, None], push, torch.zeros_like(push))
                corrected = max(corrected, float(-contact.depth.detach()[hit].min()))
        if self.walls[a] is not None:
            pose_a = torch.cat([pos[a], quat[a]], -1)
            if bool((self._near_wall(a, pose_a.detach()) & moving).any()):
                depth = wall_depths(self.fields[a], pose_a, self.wall_lo, self.wall_hi)
                hit = (depth < -self.slop) & self.walls[a] & moving[:, None]
                if bool(hit.any()):
                    push = torch.where(hit, -depth, torch.zeros_like(depth))
                    pos[a] = pos[a] + push[:, :3] - push[:, 3:]
                    corrected = max(corrected, float(push.detach().max()))
        return corrected

    def _residual(self, a: int, pos: list, quat: list, active: dict) -> torch.Tensor:
        """``(B,)`` deepest remaining penetration of collider a (no autograd)."""
        with torch.no_grad():
            pose_a = torch.cat([pos[a], quat[a]], -1)
            depth = torch.full(pose_a.shape[:1], math.inf, dtype=pose_a.dtype)
            for b in self.partners[a]:
                pose_b = torch.cat([pos[b], quat[b]], -1)
                depth = torch.minimum(depth, self._contact(a, b, pose_a, pose_b, active).depth)
            if self.walls[a] is not None:
                walls = wall_depths(self.fields[a], pose_a, self.wall_lo, self.wall_hi)
                depth = torch.minimum(depth, torch.where(self.walls[a], walls, math.inf).amin(dim=-1))
        return depth

    def project(
        self, start: torch.Tensor, velocity: torch.Tensor, moving: torch.Tensor, active: dict | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One substep with contact: ``(pose at its end (B, K, 7), velocity during it (B, K, 6))``
        from the pose at its start ``(B, K, 7)``, the commanded twist ``(B, K, 6)`` and the
        moving flags ``(B, K)``; ``active`` carries the samples near contact from substep to
        substep (:class:`_Active`)."""
        active = {} if active is None else active
        predicted = step_pose(start, velocity, self.dt)
        pos = list(predicted[..., :3].unbind(1))
        quat = list(predicted[..., 3:].unbind(1))
        stopped = {}
        for a in range(self.K):
            if self.fields[a] is None or not bool(moving[:, a].any()):
                continue
            converged = False
            for _ in range(ITERATIONS):
                if self._sweep(a, pos, quat, moving[:, a], active) <= self.converged:
                    converged = True
                    break
            if not converged:
                stuck = (self._residual(a, pos, quat, active) < -self.tolerance) & moving[:, a]
                if bool(stuck.any()):
                    pos[a] = torch.where(stuck[:, None], start[:, a, :3], pos[a])
                    quat[a] = torch.where(stuck[:, None], start[:, a, 3:], quat[a])
                    stopped[a] = stuck
        pose = torch.cat([torch.stack(pos, 1), torch.stack(quat, 1)], dim=-1)
        lin = velocity[..., :3] + (pose[..., :3] - predicted[..., :3]) / self.dt
        vel = torch.cat([lin, velocity[..., 3:]], dim=-1)
        for a, stuck in stopped.items():
            row = torch.where(stuck[:, None], torch.zeros_like(vel[:, a]), vel[:, a])
            vel = torch.cat([vel[:, :a], row[:, None], vel[:, a + 1 :]], dim=1)
        return pose, vel

    def resolve(self, poses: torch.Tensor, velocities: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Project a commanded trajectory onto the contact-free set.

        Args:
            poses: ``(n + 1, B, K, 7)`` commanded poses at the substep boundaries.
            velocities: ``(n + 1, B, K, 6)`` commanded twists; row g is the twist during substep
                g (row n is not used by the substeps and is returned unchanged).

        Returns:
            ``(poses, velocities)`` of the same shapes: the inputs themselves when no contact
            occurs, otherwise the projected trajectory (differentiable torch).
        """
        n = poses.shape[0] - 1
        if not self.active or n < 1:
            return poses, velocities
        moving = (velocities[:n] != 0.0).any(dim=-1)
        if not bool(moving.any()):
            return poses, velocities
        if self.excluded:
            self._log_excluded(moving)
        with _one_thread():
            first = self.first_contact(poses.detach(), moving)
            if first is None:
                return poses, velocities
            out_pose = list(poses[: first + 1].unbind(0))
            out_vel = list(velocities[:first].unbind(0))
            active: dict = {}
            for g in range(first, n):
                pose, vel = self.project(out_pose[-1], velocities[g], moving[g], active)
                out_pose.append(pose)
                out_vel.append(vel)
            out_vel.append(velocities[n])
            return torch.stack(out_pose), torch.stack(out_vel)
