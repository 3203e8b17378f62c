"""Triangle meshes: loading, signed distance, inside test and voxel SDFs for the MESH kind.

What is computed
    For a closed (watertight) triangle mesh: the signed distance to its surface at arbitrary
    points (negative inside), the inside test, and the signed distance sampled on a regular grid
    (:func:`mesh_grid_sdf`), which :class:`Mesh` stores as the voxel SDF that the kernels
    interpolate trilinearly (MESH kind, see :mod:`engine.geometry.sdf`). :func:`pack_mesh_sdfs`
    concatenates the voxels of a scene's meshes into the one array the kernels read.

Method
    libigl (Python bindings, ``igl.signed_distance``): an AABB tree gives the closest point on
    the mesh (exact point-triangle distance in float64); the sign is the fast generalized
    winding number (inside where ``|w| > 1/2``). libigl scales its returned value by
    ``1 - 2|w|``, which is ``+-1`` only up to the winding-number approximation error, so the
    distance here is recomputed as ``|p - closest point|`` and only the sign is taken from it.

Conventions
    * Mesh coordinates are the shape's local frame [m]; no recentring.
    * Voxel grids are x-major: ``values[i, j, k]`` is the sample at ``lo + (i, j, k) * spacing``.
    * Points on the surface (distance 0, up to rounding) may take either sign.

References
    * Jacobson, Kavan, Sorkine-Hornung, "Robust Inside-Outside Segmentation using Generalized
      Winding Numbers", SIGGRAPH 2013.
    * Barill, Dickson, Schmidt, Levin, Jacobson, "Fast Winding Numbers for Soups and Clouds",
      SIGGRAPH 2018.
    * libigl, https://libigl.github.io/ (MPL-2.0).
"""

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from engine.geometry.sdf import MESH, SHAPE_DIM, TINY
from engine.geometry.shapes import Shape, as_points, check_positive, check_real

if TYPE_CHECKING:
    import trimesh

__all__ = [
    "Mesh",
    "load_mesh",
    "mesh_contains",
    "mesh_grid_sdf",
    "mesh_signed_distance",
    "pack_mesh_sdfs",
]


def load_mesh(path: str | os.PathLike) -> "trimesh.Trimesh":
    """Load a triangle mesh file with trimesh (scenes are concatenated into one mesh).

    Raises:
        ValueError: the file is missing, unreadable or holds no triangles (names the path).
    """
    import trimesh

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ValueError(f"mesh file not found: {path!r}")
    try:
        tm = trimesh.load(path, force="mesh", process=True)
    except Exception as exc:  # trimesh raises many exception types on bad input
        raise ValueError(f"could not read mesh file {path!r}: {exc}") from exc
    if not isinstance(tm, trimesh.Trimesh) or len(tm.faces) == 0:
        raise ValueError(f"could not read a triangle mesh from {path!r} (no faces)")
    return tm


def check_watertight(tm: "trimesh.Trimesh", what: str = "mesh") -> None:
    """Raise ValueError (naming ``what``) unless ``tm`` is a closed manifold surface."""
    if not tm.is_watertight:
        raise ValueError(
            f"{what} is not watertight (open boundary or non-manifold edges); a closed surface "
            "is needed for inside/outside tests and signed distances"
        )


def _vertices_faces(tm: "trimesh.Trimesh") -> tuple[np.ndarray, np.ndarray]:
    """``(V (nv, 3) float64, F (nf, 3) int64)``, C-contiguous, as libigl takes them."""
    V = np.ascontiguousarray(tm.vertices, dtype=np.float64)
    F = np.ascontiguousarray(tm.faces, dtype=np.int64)
    return V, F


def mesh_signed_distance(tm: "trimesh.Trimesh", points: Any) -> np.ndarray:
    """Signed distance ``(N,)`` [m] to a watertight mesh at ``points (N, 3)``, negative inside.

    Raises:
        ValueError: the mesh is not watertight, or ``points`` is not ``(N, 3)``.
    """
    import igl

    check_watertight(tm)
    p = np.ascontiguousarray(as_points(points))
    V, F = _vertices_faces(tm)
    signed, _, closest, _ = igl.signed_distance(p, V, F, sign_type=igl.SIGNED_DISTANCE_TYPE_FAST_WINDING_NUMBER)
    d = np.sqrt(((p - closest) ** 2).sum(axis=1))
    return np.where(signed < 0.0, -d, d)


def mesh_contains(tm: "trimesh.Trimesh", points: Any) -> np.ndarray:
    """Inside test ``(N,) bool`` for a watertight mesh: fast winding number ``|w| > 1/2``.

    Raises:
        ValueError: the mesh is not watertight, or ``points`` is not ``(N, 3)``.
    """
    import igl

    check_watertight(tm)
    p = np.ascontiguousarray(as_points(points))
    V, F = _vertices_faces(tm)
    return np.abs(igl.fast_winding_number(V, F, p)) > 0.5


def mesh_grid_sdf(tm: "trimesh.Trimesh", lo: Any, spacing: float, shape: tuple[int, int, int]) -> np.ndarray:
    """Signed distance of a watertight mesh on a regular grid (negative inside).

    Args:
        tm: closed triangle mesh [m].
        lo: ``(3,)`` position of sample ``(0, 0, 0)`` [m].
        spacing: sample spacing [m].
        shape: samples per axis ``(nx, ny, nz)``.

    Returns:
        ``shape`` float64 array [m]; sample ``(i, j, k)`` is at ``lo + (i, j, k) * spacing``.

    Raises:
        ValueError: the mesh is not watertight.
    """
    shape = tuple(int(n) for n in shape)
    axes = [lo_i + np.arange(n) * spacing for lo_i, n in zip(lo, shape, strict=True)]
    points = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3)
    return mesh_signed_distance(tm, points).reshape(shape)


@dataclass(frozen=True, eq=False)
class Mesh(Shape):
    """A shape given by a voxel SDF (usually built from a watertight triangle mesh).

    The local frame is the mesh file's own frame (no recentring).

    Attributes:
        values: ``(res, res, res)`` signed distances [m] (negative inside), x-major, sample
            ``(i, j, k)`` at ``lo + (i, j, k) * voxel_size``.
        lo: ``(3,)`` position of sample ``(0, 0, 0)`` [m].
        voxel_size: sample spacing [m] > 0.
        source: where the SDF came from (file path or description), informational.
    """

    values: np.ndarray
    lo: tuple[float, float, float]
    voxel_size: float
    source: str = field(default="", compare=False)
    kind = MESH

    def __post_init__(self):
        v = np.array(self.values, dtype=np.float64)
        if v.ndim != 3 or len(set(v.shape)) != 1 or v.shape[0] < 2:
            raise ValueError(f"Mesh.values must be a cubic (res, res, res) array, got {v.shape}")
        if not np.all(np.isfinite(v)):
            raise ValueError("Mesh.values must be finite")
        v.setflags(write=False)
        object.__setattr__(self, "values", v)
        lo = tuple(self.lo) if np.ndim(self.lo) == 1 else ()
        if len(lo) != 3:
            raise ValueError(f"Mesh.lo must have 3 entries, got {self.lo!r}")
        lo = tuple(check_real("Mesh", f"lo[{i}]", x) for i, x in enumerate(lo))
        object.__setattr__(self, "lo", lo)
        object.__setattr__(self, "voxel_size", check_positive("Mesh", "voxel_size", self.voxel_size))

    @property
    def resolution(self) -> int:
        """Samples per axis."""
        return int(self.values.shape[0])

    @classmethod
    def from_trimesh(cls, tm: "trimesh.Trimesh", resolution: int = 32, padding: int = 3, source: str = "") -> "Mesh":
        """Voxelize a watertight trimesh into a cubic SDF grid.

        Args:
            tm: closed triangle mesh (local frame = its coordinates) [m].
            resolution: samples per axis, >= 2 * padding + 2.
            padding: empty voxels added around the mesh bounds on every side, >= 1.
            source: description stored on the result.

        Raises:
            ValueError: bad resolution/padding, or the mesh is not watertight.
        """
        if int(resolution) != resolution or int(padding) != padding:
            raise ValueError("Mesh resolution and padding must be integers")
        resolution, padding = int(resolution), int(padding)
        if padding < 1:
            raise ValueError(f"Mesh padding must be >= 1, got {padding}")
        if resolution < 2 * padding + 2:
            raise ValueError(f"Mesh resolution must be >= 2 * padding + 2 = {2 * padding + 2}, got {resolution}")
        check_watertight(tm, f"mesh {source!r}" if source else "mesh")
        bounds = np.asarray(tm.bounds, dtype=np.float64)
        extent = float((bounds[1] - bounds[0]).max())
        if not extent > 0.0:
            raise ValueError("Mesh has zero extent")
        voxel = extent / (resolution - 1 - 2 * padding)
        lo = 0.5 * (bounds[0] + bounds[1]) - 0.5 * (resolution - 1) * voxel
        values = mesh_grid_sdf(tm, lo, voxel, (resolution,) * 3)
        return cls(values=values, lo=tuple(lo), voxel_size=voxel, source=source)

    @classmethod
    def from_file(cls, path: str | os.PathLike, resolution: int = 32, padding: int = 3) -> "Mesh":
        """Load a mesh file (obj, stl, ply, ...) with trimesh and voxelize it.

        Raises:
            ValueError: unreadable file (names the path) or a mesh that is not watertight.
        """
        tm = load_mesh(path)
        return cls.from_trimesh(tm, resolution=resolution, padding=padding, source=os.fspath(path))

    def params(self, offset: int = 0) -> np.ndarray:
        """Kernel parameters; ``offset`` is where the voxels start in the packed array."""
        return self._pack(float(offset), float(self.resolution), *self.lo, self.voxel_size)

    def sdf(self, points_local):
        p = as_points(points_local)
        res = self.resolution
        h = self.voxel_size
        lo = np.asarray(self.lo)
        hi = lo + (res - 1) * h
        q = np.clip(p, lo, hi)
        e = p - q
        e2 = (e * e).sum(axis=1)
        e_len = np.sqrt(np.maximum(e2, TINY))
        d_box = np.where(e2 > 0.0, e_len, 0.0)
        g_box = e / e_len[:, None]
        u = (q - lo) / h
        cell = np.clip(np.floor(u), 0.0, res - 2)
        f = u - cell
        ijk = cell.astype(np.int64)
        val = np.zeros(len(p))
        grad_u = np.zeros_like(p)
        for a in (0, 1):
            for b in (0, 1):
                for c in (0, 1):
                    v = self.values[ijk[:, 0] + a, ijk[:, 1] + b, ijk[:, 2] + c]
                    wx = f[:, 0] if a else 1.0 - f[:, 0]
                    wy = f[:, 1] if b else 1.0 - f[:, 1]
                    wz = f[:, 2] if c else 1.0 - f[:, 2]
                    sx, sy, sz = (1.0 if a else -1.0), (1.0 if b else -1.0), (1.0 if c else -1.0)
                    val += v * wx * wy * wz
                    grad_u += v[:, None] * np.stack([sx * wy * wz, wx * sy * wz, wx * wy * sz], 1)
        inside_axis = ((p >= lo) & (p <= hi)).astype(np.float64)
        g = g_box + inside_axis * grad_u / h
        g2 = (g * g).sum(axis=1)
        g_len = np.sqrt(np.maximum(g2, TINY))
        n = np.where((g2 > TINY)[:, None], g / g_len[:, None], [0.0, 0.0, 1.0])
        return d_box + val, n


def pack_mesh_sdfs(shapes: Sequence[Shape]) -> tuple[np.ndarray, list[np.ndarray]]:
    """Concatenate the voxel SDFs of all :class:`Mesh` shapes of a scene.

    Args:
        shapes: shapes in scene order.

    Returns:
        ``(mesh_sdf, params)``: float64 ``(M,)`` voxels of every mesh, x-major, back to back
        (a zero array of length ``SHAPE_DIM`` when there is no mesh), and one ``(SHAPE_DIM,)``
        parameter vector per shape with mesh offsets filled in.

    Raises:
        ValueError: an item is not a :class:`Shape`, or the voxels exceed the f32-exact offset
            range (2**24).
    """
    chunks: list[np.ndarray] = []
    params: list[np.ndarray] = []
    offset = 0
    for shape in shapes:
        if not isinstance(shape, Shape):
            raise ValueError(f"expected a Shape, got {type(shape).__name__}")
        if isinstance(shape, Mesh):
            params.append(shape.params(offset))
            chunks.append(shape.values.reshape(-1))
            offset += shape.values.size
        else:
            params.append(shape.params())
    if offset >= 2**24:
        raise ValueError(f"packed mesh SDFs too large for f32 offsets ({offset} >= 2**24)")
    mesh_sdf = np.concatenate(chunks) if chunks else np.zeros(SHAPE_DIM)
    return mesh_sdf.astype(np.float64), params
