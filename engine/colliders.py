"""Kinematic rigid colliders (tools, containers): shape, pose and grid boundary condition.

What is computed
    A :class:`Collider` is a shape from :mod:`engine.geometry` placed by a 7-number pose, with
    the :class:`BoundaryCondition` that the MPM grid velocity obeys inside it. Its numpy
    :meth:`Collider.sdf` gives the world-frame signed distance and normal (the mirror of
    :func:`engine.geometry.sdf_world`). :func:`pack_colliders` turns a scene's colliders into the
    arrays every consumer (simulator, renderer) hands to the kernels.

Conventions
    * Poses: position [m] then unit quaternion ``(w, x, y, z)``, see :mod:`engine.geometry.pose`.
    * Boundary-condition modes and their kernel ids: ``"sticky"`` = :data:`STICKY` (0),
      ``"slip"`` = :data:`SLIP` (1), ``"separate"`` = :data:`SEPARATE` (2);
      ``BOUNDARY_MODES[id]`` is the name of id ``id``.

References
    * Hu et al., "A Moving Least Squares Material Point Method with Displacement
      Discontinuity and Two-Way Rigid Body Coupling", SIGGRAPH 2018 (grid boundary conditions
      against level-set colliders: sticky, slip, separate with Coulomb friction).
"""

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from engine import geometry
from engine.geometry.shapes import Shape, as_points, check_real

__all__ = [
    "BOUNDARY_MODES",
    "SEPARATE",
    "SLIP",
    "STICKY",
    "BoundaryCondition",
    "Collider",
    "PackedColliders",
    "pack_colliders",
]

STICKY, SLIP, SEPARATE = 0, 1, 2
"""Kernel ids of the boundary-condition modes."""

BOUNDARY_MODES = ("sticky", "slip", "separate")
"""Mode names, indexed by their kernel id."""


@dataclass(frozen=True)
class BoundaryCondition:
    """Grid-velocity boundary condition inside a kinematic collider.

    Attributes:
        friction: Coulomb friction coefficient (>= 0), used by ``"separate"``.
        mode: ``"sticky"`` (relative velocity set to zero), ``"slip"`` (relative normal velocity
            removed whether approaching or not; tangential kept) or ``"separate"`` (only the
            approaching normal velocity removed; Coulomb friction on the tangential part).
    """

    friction: float = 0.5
    mode: str = "slip"

    def __post_init__(self):
        f = check_real("BoundaryCondition", "friction", self.friction)
        if f < 0.0:
            raise ValueError(f"BoundaryCondition.friction must be >= 0, got {self.friction!r}")
        object.__setattr__(self, "friction", f)
        if self.mode not in BOUNDARY_MODES:
            raise ValueError(f"BoundaryCondition.mode must be one of {BOUNDARY_MODES}, got {self.mode!r}")

    @property
    def mode_id(self) -> int:
        """Kernel id of the mode: :data:`STICKY`, :data:`SLIP` or :data:`SEPARATE`."""
        return BOUNDARY_MODES.index(self.mode)


@dataclass(frozen=True)
class Collider:
    """A kinematic rigid collider: shape, initial pose and grid boundary condition.

    Attributes:
        shape: a :class:`engine.geometry.Shape`.
        pose: initial pose ``(x, y, z, qw, qx, qy, qz)``; the quaternion is normalized.
        boundary: the :class:`BoundaryCondition` of the grid velocity inside the collider.
        solid: whether the collider takes part in contact between kinematic colliders
            (:mod:`engine.coupling.kinematic`): its commanded motion stops at contact with the
            other solid colliders and at the domain walls, and it stops theirs. A collider with
            ``solid=False`` passes through everything (its grid boundary condition still acts).
        contact_group: colliders that share a non-zero group never stop each other (the fingers
            of one gripper, a tool and its mount); 0 (the default) is no group.
    """

    shape: Shape
    pose: tuple[float, ...] = (0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0)
    boundary: BoundaryCondition = field(default_factory=BoundaryCondition)
    solid: bool = True
    contact_group: int = 0

    def __post_init__(self):
        if not isinstance(self.shape, Shape):
            raise ValueError(f"Collider.shape must be a Shape, got {type(self.shape).__name__}")
        if not isinstance(self.boundary, BoundaryCondition):
            raise ValueError(f"Collider.boundary must be a BoundaryCondition, got {type(self.boundary).__name__}")
        if not isinstance(self.solid, bool | np.bool_):
            raise ValueError(f"Collider.solid must be a bool, got {self.solid!r}")
        if isinstance(self.contact_group, bool) or not isinstance(self.contact_group, int | np.integer):
            raise ValueError(f"Collider.contact_group must be an int, got {self.contact_group!r}")
        object.__setattr__(self, "solid", bool(self.solid))
        object.__setattr__(self, "contact_group", int(self.contact_group))
        object.__setattr__(self, "pose", geometry.normalize_pose(self.pose, "Collider.pose"))

    @property
    def kind(self) -> int:
        return self.shape.kind

    def sdf(self, points_world: Any, pose: Any = None) -> tuple[np.ndarray, np.ndarray]:
        """numpy mirror of :func:`engine.geometry.sdf_world`: ``(d (N,), normal_world (N, 3))``.

        Args:
            points_world: ``(N, 3)`` [m].
            pose: optional 7-vector overriding the initial pose.
        """
        pose = self.pose if pose is None else geometry.normalize_pose(pose, "Collider.sdf pose")
        p = as_points(points_world)
        local = geometry.quat_rotate_inverse_numpy(pose[3:], p - np.asarray(pose[:3]))
        d, n = self.shape.sdf(local)
        return d, geometry.quat_rotate_numpy(pose[3:], n)


@dataclass(frozen=True, eq=False)
class PackedColliders:
    """Arrays describing all colliders of a scene to the kernels.

    Attributes:
        kinds: ``(K,)`` int32 shape kinds.
        params: ``(K, SHAPE_DIM)`` float64 shape parameters (mesh offsets filled in).
        poses: ``(K, 7)`` float64 initial poses.
        friction: ``(K,)`` float64 friction coefficients.
        modes: ``(K,)`` int32 boundary-condition mode ids.
        mesh_sdf: ``(M,)`` float64 packed mesh voxels (length ``SHAPE_DIM`` dummy if none).
    """

    kinds: np.ndarray
    params: np.ndarray
    poses: np.ndarray
    friction: np.ndarray
    modes: np.ndarray
    mesh_sdf: np.ndarray


def pack_colliders(colliders: Sequence[Collider]) -> PackedColliders:
    """Pack a scene's colliders into kernel-ready numpy arrays (see :class:`PackedColliders`).

    Raises:
        ValueError: an item is not a :class:`Collider`.
    """
    colliders = list(colliders)
    for c in colliders:
        if not isinstance(c, Collider):
            raise ValueError(f"expected Collider, got {type(c).__name__}")
    mesh_sdf, params = geometry.pack_mesh_sdfs([c.shape for c in colliders])
    k = len(colliders)
    return PackedColliders(
        kinds=np.array([c.kind for c in colliders], dtype=np.int32),
        params=np.array(params, dtype=np.float64).reshape(k, geometry.SHAPE_DIM),
        poses=np.array([c.pose for c in colliders], dtype=np.float64).reshape(k, 7),
        friction=np.array([c.boundary.friction for c in colliders], dtype=np.float64),
        modes=np.array([c.boundary.mode_id for c in colliders], dtype=np.int32),
        mesh_sdf=mesh_sdf,
    )
