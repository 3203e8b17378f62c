"""What a tactile sensor reports: markers, contact force field, net wrench, depth map and image.

This is the signal layer of a vision-based elastomer tactile sensor (a GelSight-style flat pad or
a dome), computed in pure torch from the sensor's deformed contact surface, so that every output
is differentiable with respect to the surface positions and contact forces the FEM solver gives.
It follows DiffTactile (Si et al., "DiffTactile: A Physics-based Differentiable Tactile Simulator
for Contact-rich Robotic Manipulation", ICLR 2024) for what is reported: marker motion seen
through the sensor camera (a pinhole for flat pads, an equidistant fisheye ``r = f theta`` for the
dome, as DiffTactile's ``fisheye_model.py``), the contact force field split into normal and shear
parts, and an optical image.

What is computed
    * Cameras (:class:`PinholeCamera`, :class:`FisheyeCamera`): ``project`` points to pixels,
      ``unproject`` pixels to unit ray directions, ``rays`` for every pixel centre.
    * Markers (:class:`MarkerLayout`): points attached to the surface triangles by barycentric
      coordinates computed once from the rest geometry (a regular grid lifted onto the surface
      along z, or given points attached to their closest triangle, Ericson, "Real-Time Collision
      Detection", 2005, sec. 5.1.5). Their deformed positions, pixels and pixel displacements
      relative to rest.
    * Forces: per-node normal force (the pressing component along the rest outward normal, as a
      positive number), shear force (the tangential 3-vector), and the net wrench: total force
      and total torque ``sum_i x_i x f_i`` about the sensor origin (:func:`normal_shear_forces`,
      :func:`net_wrench`).
    * Depth map and normal map by ray casting the deformed surface triangles from the camera
      (:class:`TactileSensorView` ``.rasterize``): each pixel's ray is intersected with one
      triangle, found by a visibility walk (Devillers, Pion and Teillaud, "Walking in a
      triangulation", 2002) across the triangle adjacency, started from the triangle the ray
      hits at rest. The walk is discrete (no gradient, like a rasterizer's coverage test); the
      hit is then computed differentiably: barycentric coordinates of the ray-plane intersection
      from scalar triple products (Moeller and Trumbore, 1997, in edge-function form), hit point
      and range from them, and the normal by interpolating area-weighted vertex normals of the
      deformed mesh (Phong normal interpolation). Depth and normals are continuous in the node
      positions (neighbouring triangles share vertices), so their gradients exist almost
      everywhere, including for lateral (shear) motion of the surface under the pixels. Why not
      Gaussian splatting of nodes: it blurs the imprint by about one node spacing and costs
      O(pixels x nodes) per image; the walk costs O(pixels x steps) and is exact for a
      piecewise-linear surface. Why no soft silhouette: the camera sees the gel from behind, so
      the only silhouette is the rim of the pad, and which pixels see the surface is fixed from
      the rest geometry.
    * Tactile image: Phong's reflection model with several coloured lights (Phong, "Illumination
      for computer generated pictures", CACM 1975), as used for simulated GelSight images by
      Gomes, Paoletti and Luo, "Generation of GelSight Tactile Images for Sim2Real Learning",
      IEEE RA-L 6(2), 2021; the GelSight idea of red, green and blue lights from three azimuths
      at a grazing elevation (Yuan, Dong and Adelson, "GelSight: High-Resolution Robot Tactile
      Sensors for Estimating Geometry and Force", Sensors 2017). The shaded change relative to
      the rest surface is added to a background frame, as Taxim adds its simulated change to a
      real sensor's background image (Si and Yuan, "Taxim: An Example-based Simulation Model
      for GelSight Tactile Sensors", IEEE RA-L 2022): ``I = clip(I_bg + s(x, n) - s(x0, n0), 0, 1)``.
      The undeformed surface therefore gives the background frame, exactly up to floating-point
      rounding (the rest shading is evaluated by the same operations; the tests see 0 difference).

Conventions
    * Sensor frame, SI units: metres, newtons, newton-metres. A flat pad's outer surface is the
      plane ``z = 0``, the gel fills ``z in [-thickness, 0]``, and its camera sits behind it at
      ``z = -camera_distance`` looking along ``+z``. A dome is part of a sphere centred at the
      origin, opening toward ``+z``, seen by a camera at the origin looking along ``+z``.
    * Contact surface: ``surface_rest (S, 3)`` rest node positions, ``surface_tris (F, 3)`` int64
      node indices oriented so that ``(x1 - x0) x (x2 - x0)`` points out of the gel (toward the
      world). Per step: ``surface_x (B, S, 3)`` [m] current node positions and ``surface_f
      (B, S, 3)`` [N] contact force acting on each node, both in the sensor frame, leading batch
      axis ``B``.
    * Cameras look along ``+z`` of the sensor frame from ``position``; image column ``u`` grows
      with ``+x``, row ``v`` with ``+y`` (OpenCV's camera axes, which here coincide with the
      sensor axes; the gel is seen from behind, as a real sensor's camera sees it). Pixel
      centres sit at integer coordinates: pixel ``(i, j)`` (row, column) is ``(u, v) = (j, i)``.
    * ``depth (B, H, W)`` is the **indentation along the viewing ray**: the rest range minus the
      current range from the camera centre to the surface seen at that pixel [m], positive
      where the gel is pushed toward the camera, 0 at rest and at pixels that do not see the
      surface. ``normal_map (B, H, W, 3)`` is the unit outward surface normal (sensor frame),
      0 off the surface. ``image (B, H, W, 3)`` is RGB in ``[0, 1]``.
    * Any float dtype (f32, f64) and any device: outputs take the dtype and device of
      ``surface_x``; the rest-geometry precomputation (which triangle each pixel sees at rest,
      marker attachment) is done once in f64 on the CPU.
    * Limits: the walk follows the surface under each pixel for up to ``walk_steps`` triangles
      of lateral motion; the surface seen by the camera must not fold over itself along a ray.
      Shading clips to ``[0, 1]`` and uses ``max(0, .)`` terms, whose gradients are 0 past the
      clip or the terminator.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "ALL_SIGNALS",
    "Camera",
    "FisheyeCamera",
    "Light",
    "MarkerLayout",
    "PhongShading",
    "PinholeCamera",
    "TactileSensorView",
    "gelsight_lights",
    "net_wrench",
    "normal_shear_forces",
    "vertex_normals",
]

ALL_SIGNALS = (
    "marker_pos",
    "markers_px",
    "marker_disp_px",
    "normal_force",
    "shear_force",
    "net_wrench",
    "depth",
    "normal_map",
    "image",
)
"""Keys :meth:`TactileSensorView.signals` can return."""

_MARKER_KEYS = ("marker_pos", "markers_px", "marker_disp_px")
_IMAGE_KEYS = ("depth", "normal_map", "image")


# --------------------------------------------------------------------------------------------
# validation helpers


def _finite_number(name: str, value: Any) -> float:
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(out):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return out


def _positive(name: str, value: Any) -> float:
    out = _finite_number(name, value)
    if out <= 0.0:
        raise ValueError(f"{name} must be > 0, got {value!r}")
    return out


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _vec3(name: str, value: Any) -> tuple[float, float, float]:
    try:
        items = tuple(value)
    except TypeError:
        raise ValueError(f"{name} must be 3 numbers, got {value!r}") from None
    if len(items) != 3:
        raise ValueError(f"{name} must be 3 numbers, got {value!r}")
    return tuple(_finite_number(f"{name}[{i}]", v) for i, v in enumerate(items))  # type: ignore[return-value]


def _check_tensor(name: str, x: Any, shape: tuple[int | None, ...], *, finite: bool = True) -> Tensor:
    """Raise ``ValueError`` naming ``name`` unless ``x`` is a float tensor of ``shape`` (None: any)."""
    if not isinstance(x, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
    if x.dim() != len(shape) or any(s is not None and s != n for s, n in zip(shape, x.shape, strict=True)):
        want = "(" + ", ".join("*" if s is None else str(s) for s in shape) + ")"
        raise ValueError(f"{name} must have shape {want}, got {tuple(x.shape)}")
    if finite and not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} must be finite (it holds NaN or inf)")
    return x


def _check_mesh(surface_rest: Any, surface_tris: Any) -> tuple[Tensor, Tensor]:
    _check_tensor("surface_rest", surface_rest, (None, 3))
    if surface_rest.shape[0] < 3:
        raise ValueError(f"surface_rest must have at least 3 nodes, got {surface_rest.shape[0]}")
    if not isinstance(surface_tris, Tensor) or surface_tris.dtype != torch.int64:
        raise ValueError("surface_tris must be an int64 torch.Tensor of shape (F, 3)")
    if surface_tris.dim() != 2 or surface_tris.shape[1] != 3 or surface_tris.shape[0] == 0:
        raise ValueError(f"surface_tris must have shape (F, 3) with F >= 1, got {tuple(surface_tris.shape)}")
    lo, hi = int(surface_tris.min()), int(surface_tris.max())
    if lo < 0 or hi >= surface_rest.shape[0]:
        raise ValueError(f"surface_tris indices must lie in [0, {surface_rest.shape[0]}), got [{lo}, {hi}]")
    return surface_rest, surface_tris


# --------------------------------------------------------------------------------------------
# cameras


class _Camera:
    """Shared camera methods; subclasses define ``width``, ``height``, ``position``, ``unproject``."""

    width: int
    height: int
    position: tuple[float, float, float]

    def unproject(self, pixels: Tensor) -> Tensor:  # pragma: no cover - overridden
        raise NotImplementedError

    def pixel_grid(self, dtype: torch.dtype = torch.float64, device: Any = None) -> Tensor:
        """Pixel-centre coordinates ``(H, W, 2)`` as ``(u, v) = (column, row)``."""
        v, u = torch.meshgrid(
            torch.arange(self.height, dtype=dtype, device=device),
            torch.arange(self.width, dtype=dtype, device=device),
            indexing="ij",
        )
        return torch.stack([u, v], dim=-1)

    def rays(self, dtype: torch.dtype = torch.float64, device: Any = None) -> tuple[Tensor, Tensor]:
        """Unit ray directions through every pixel centre and which pixels are valid.

        Returns:
            ``(directions (H, W, 3), valid (H, W) bool)``; directions are in the sensor frame,
            rays start at ``position``.
        """
        d = self.unproject(self.pixel_grid(dtype, device))
        return d, self.valid_pixels(d)

    def valid_pixels(self, directions: Tensor) -> Tensor:
        """Bool mask of the rays the camera can see (all, for a pinhole)."""
        return torch.ones(directions.shape[:-1], dtype=torch.bool, device=directions.device)

    def _relative(self, points: Tensor) -> Tensor:
        if not isinstance(points, Tensor) or points.shape[-1:] != (3,):
            raise ValueError("points must be a tensor of shape (..., 3)")
        return points - points.new_tensor(self.position)


@dataclass(frozen=True)
class PinholeCamera(_Camera):
    """Pinhole camera looking along ``+z`` of the sensor frame (OpenCV intrinsics, no distortion).

    ``u = cx + fx X / Z``, ``v = cy + fy Y / Z`` with ``(X, Y, Z) = p - position``.

    Attributes:
        width: image width [px] (> 0).
        height: image height [px] (> 0).
        fx: horizontal focal length [px] (> 0).
        fy: vertical focal length [px] (> 0); None means ``fx`` (square pixels).
        cx: principal point column [px]; None means the image centre ``(width - 1) / 2``.
        cy: principal point row [px]; None means ``(height - 1) / 2``.
        position: camera centre in the sensor frame [m].
    """

    width: int
    height: int
    fx: float
    fy: float | None = None
    cx: float | None = None
    cy: float | None = None
    position: tuple[float, float, float] = (0.0, 0.0, 0.0)

    def __post_init__(self):
        set_ = object.__setattr__
        set_(self, "width", _positive_int("width", self.width))
        set_(self, "height", _positive_int("height", self.height))
        set_(self, "fx", _positive("fx", self.fx))
        set_(self, "fy", self.fx if self.fy is None else _positive("fy", self.fy))
        set_(self, "cx", (self.width - 1) / 2 if self.cx is None else _finite_number("cx", self.cx))
        set_(self, "cy", (self.height - 1) / 2 if self.cy is None else _finite_number("cy", self.cy))
        set_(self, "position", _vec3("position", self.position))

    @classmethod
    def from_fov(
        cls, width: int, height: int, fov_deg: float, position: Sequence[float] = (0.0, 0.0, 0.0)
    ) -> PinholeCamera:
        """A centred pinhole with horizontal field of view ``fov_deg`` in ``(0, 180)`` degrees."""
        fov = _finite_number("fov_deg", fov_deg)
        if not 0.0 < fov < 180.0:
            raise ValueError(f"fov_deg must lie in (0, 180), got {fov_deg!r}")
        width = _positive_int("width", width)
        return cls(width, height, fx=0.5 * width / math.tan(math.radians(fov) / 2), position=tuple(position))

    def project(self, points: Tensor) -> Tensor:
        """Pixels of points.

        Args:
            points: ``(..., 3)`` [m] in the sensor frame, in front of the camera (``Z > 0``).

        Returns:
            ``(..., 2)`` pixel coordinates ``(u, v)`` [px].
        """
        X = self._relative(points)
        z = X[..., 2]
        return torch.stack([self.cx + self.fx * X[..., 0] / z, self.cy + self.fy * X[..., 1] / z], dim=-1)

    def unproject(self, pixels: Tensor) -> Tensor:
        """Unit ray directions ``(..., 3)`` (sensor frame) through pixels ``(..., 2)`` [px]."""
        d = torch.stack(
            [
                (pixels[..., 0] - self.cx) / self.fx,
                (pixels[..., 1] - self.cy) / self.fy,
                torch.ones_like(pixels[..., 0]),
            ],
            dim=-1,
        )
        return d / torch.linalg.vector_norm(d, dim=-1, keepdim=True)


@dataclass(frozen=True)
class FisheyeCamera(_Camera):
    """Equidistant fisheye camera looking along ``+z``: image radius ``r = f theta``.

    ``theta`` is the angle between the ray and the optical axis; the pixel is
    ``(cx, cy) + f theta (X, Y) / sqrt(X^2 + Y^2)`` with ``(X, Y, Z) = p - position``. This is the
    model of DiffTactile's dome sensor camera (there written ``r = m f theta``).

    Attributes:
        width: image width [px] (> 0).
        height: image height [px] (> 0).
        f: focal length [px per radian] (> 0).
        cx: principal point column [px]; None means ``(width - 1) / 2``.
        cy: principal point row [px]; None means ``(height - 1) / 2``.
        position: camera centre in the sensor frame [m].
        max_angle_deg: half field of view [deg] in ``(0, 180]``; pixels whose ray is farther
            from the axis do not see anything.
    """

    width: int
    height: int
    f: float
    cx: float | None = None
    cy: float | None = None
    position: tuple[float, float, float] = (0.0, 0.0, 0.0)
    max_angle_deg: float = 90.0

    def __post_init__(self):
        set_ = object.__setattr__
        set_(self, "width", _positive_int("width", self.width))
        set_(self, "height", _positive_int("height", self.height))
        set_(self, "f", _positive("f", self.f))
        set_(self, "cx", (self.width - 1) / 2 if self.cx is None else _finite_number("cx", self.cx))
        set_(self, "cy", (self.height - 1) / 2 if self.cy is None else _finite_number("cy", self.cy))
        set_(self, "position", _vec3("position", self.position))
        angle = _finite_number("max_angle_deg", self.max_angle_deg)
        if not 0.0 < angle <= 180.0:
            raise ValueError(f"max_angle_deg must lie in (0, 180], got {self.max_angle_deg!r}")
        set_(self, "max_angle_deg", angle)

    @classmethod
    def from_fov(
        cls, width: int, height: int, fov_deg: float, position: Sequence[float] = (0.0, 0.0, 0.0)
    ) -> FisheyeCamera:
        """A centred fisheye whose full field of view ``fov_deg`` in ``(0, 360]`` spans the width."""
        fov = _finite_number("fov_deg", fov_deg)
        if not 0.0 < fov <= 360.0:
            raise ValueError(f"fov_deg must lie in (0, 360], got {fov_deg!r}")
        width = _positive_int("width", width)
        return cls(
            width, height, f=0.5 * width / math.radians(fov / 2), position=tuple(position), max_angle_deg=fov / 2
        )

    def project(self, points: Tensor) -> Tensor:
        """Pixels of points.

        Args:
            points: ``(..., 3)`` [m] in the sensor frame, not at the camera centre.

        Returns:
            ``(..., 2)`` pixel coordinates ``(u, v)`` [px]. Smooth on the optical axis.
        """
        X = self._relative(points)
        x, y, z = X[..., 0], X[..., 1], X[..., 2]
        rho2 = x * x + y * y
        # theta / rho = atan2(rho, z) / rho; within 1e-4 rad of the axis use its series
        # (atan(s) / s = 1 - s^2/3 + s^4/5, s = rho / z), so the value and gradient stay finite there.
        small = (rho2 <= 1e-8 * (rho2 + z * z)) & (z > 0)
        rho = torch.sqrt(torch.where(small, torch.ones_like(rho2), rho2))
        ratio_far = torch.atan2(rho, z) / rho
        z_safe = torch.where(small, z, torch.ones_like(z))
        q = torch.where(small, rho2, torch.zeros_like(rho2)) / (z_safe * z_safe)
        ratio_near = (1.0 - q / 3.0 + q * q / 5.0) / z_safe
        k = self.f * torch.where(small, ratio_near, ratio_far)
        return torch.stack([self.cx + k * x, self.cy + k * y], dim=-1)

    def unproject(self, pixels: Tensor) -> Tensor:
        """Unit ray directions ``(..., 3)`` (sensor frame) through pixels ``(..., 2)`` [px]."""
        du = pixels[..., 0] - self.cx
        dv = pixels[..., 1] - self.cy
        theta = torch.sqrt(du * du + dv * dv) / self.f
        s = torch.sinc(theta / math.pi) / self.f  # sin(theta) / r
        return torch.stack([du * s, dv * s, torch.cos(theta)], dim=-1)

    def valid_pixels(self, directions: Tensor) -> Tensor:
        """Bool mask of the rays within ``max_angle_deg`` of the axis."""
        return directions[..., 2] >= math.cos(math.radians(self.max_angle_deg)) - 1e-12


Camera = PinholeCamera | FisheyeCamera
"""Either sensor camera."""


# --------------------------------------------------------------------------------------------
# mesh helpers


def _dot3(a: Tensor, b: Tensor) -> Tensor:
    """``sum(a * b, -1)`` for 3-vectors, written out (a size-3 reduction is slow on CPU)."""
    return a[..., 0] * b[..., 0] + a[..., 1] * b[..., 1] + a[..., 2] * b[..., 2]


def _mv3(M: Tensor, v: Tensor) -> Tensor:
    """``M @ v`` for ``M (..., 3, 3)`` and ``v (..., 3)``, written out."""
    return M[..., 0] * v[..., None, 0] + M[..., 1] * v[..., None, 1] + M[..., 2] * v[..., None, 2]


def _combine3(lam: Tensor, V: Tensor) -> Tensor:
    """``sum_k lam_k V_k`` for ``lam (..., 3)`` and rows ``V (..., 3, 3)``."""
    return lam[..., 0:1] * V[..., 0, :] + lam[..., 1:2] * V[..., 1, :] + lam[..., 2:3] * V[..., 2, :]


def _incidence(surface_tris: np.ndarray, num_nodes: int) -> np.ndarray:
    """``(S, D)`` faces incident to each node, padded with ``F`` (an extra all-zero face)."""
    faces = surface_tris.shape[0]
    node = surface_tris.reshape(-1)
    face = np.repeat(np.arange(faces), 3)
    order = np.argsort(node, kind="stable")
    node, face = node[order], face[order]
    counts = np.bincount(node, minlength=num_nodes)
    out = np.full((num_nodes, max(int(counts.max()), 1)), faces, dtype=np.int64)
    start = np.concatenate([[0], np.cumsum(counts)[:-1]])
    slot = np.arange(node.size) - start[node]
    out[node, slot] = face
    return out


def _adjacency(surface_tris: np.ndarray) -> np.ndarray:
    """``(F, 3)``: the face across the edge opposite vertex ``k`` of each face, or -1 (boundary)."""
    faces = surface_tris.shape[0]
    out = np.full((faces, 3), -1, dtype=np.int64)
    edges: dict[tuple[int, int], list[tuple[int, int]]] = {}
    for f, tri in enumerate(surface_tris.tolist()):
        for k in range(3):
            a, b = tri[(k + 1) % 3], tri[(k + 2) % 3]
            edges.setdefault((min(a, b), max(a, b)), []).append((f, k))
    for owners in edges.values():
        if len(owners) == 2:
            (f0, k0), (f1, k1) = owners
            out[f0, k0], out[f1, k1] = f1, f0
    return out


def _vertex_normals(x: Tensor, tris: Tensor, incidence: Tensor) -> Tensor:
    cross = _face_cross(x, tris)
    cross = torch.cat([cross, cross.new_zeros(cross.shape[:-2] + (1, 3))], dim=-2)
    n = cross[..., incidence, :].sum(dim=-2)
    return torch.nn.functional.normalize(n, dim=-1, eps=1e-30)


def _face_cross(x: Tensor, tris: Tensor) -> Tensor:
    a, b, c = x[..., tris[:, 0], :], x[..., tris[:, 1], :], x[..., tris[:, 2], :]
    return torch.linalg.cross(b - a, c - a, dim=-1)


def vertex_normals(x: Tensor, surface_tris: Tensor) -> Tensor:
    """Unit area-weighted vertex normals of a triangle mesh.

    Args:
        x: ``(..., S, 3)`` [m] node positions.
        surface_tris: ``(F, 3)`` int64, outward-oriented.

    Returns:
        ``(..., S, 3)`` unit outward normals (the normalized sum of the incident faces' area
        vectors); differentiable in ``x``.
    """
    tris = surface_tris.to(x.device)
    inc = torch.as_tensor(_incidence(surface_tris.cpu().numpy(), x.shape[-2]), device=x.device)
    return _vertex_normals(x, tris, inc)


# --------------------------------------------------------------------------------------------
# forces


def normal_shear_forces(surface_f: Tensor, normals: Tensor) -> tuple[Tensor, Tensor]:
    """Split node forces into a pressing normal component and a tangential (shear) part.

    Args:
        surface_f: ``(B, S, 3)`` [N] contact force on each surface node (sensor frame).
        normals: ``(S, 3)`` or ``(B, S, 3)`` unit outward normals (e.g. the rest normals).

    Returns:
        ``(normal (B, S) [N], shear (B, S, 3) [N])``: ``normal = -f . n``, positive when the force
        pushes into the gel; ``shear = f - (f . n) n``, perpendicular to ``n``.
    """
    fn = (surface_f * normals).sum(dim=-1)
    return -fn, surface_f - fn.unsqueeze(-1) * normals


def net_wrench(surface_x: Tensor, surface_f: Tensor) -> Tensor:
    """Net force and torque about the sensor origin of the node forces.

    Args:
        surface_x: ``(B, S, 3)`` [m] node positions where the forces act (sensor frame).
        surface_f: ``(B, S, 3)`` [N] node forces (sensor frame).

    Returns:
        ``(B, 6)``: ``(F_x, F_y, F_z)`` [N] ``= sum_i f_i`` and ``(tau_x, tau_y, tau_z)`` [N m]
        ``= sum_i x_i x f_i``.
    """
    force = surface_f.sum(dim=-2)
    torque = torch.linalg.cross(surface_x, surface_f, dim=-1).sum(dim=-2)
    return torch.cat([force, torque], dim=-1)


# --------------------------------------------------------------------------------------------
# markers


def _closest_points_on_triangles(p: np.ndarray, a: np.ndarray, b: np.ndarray, c: np.ndarray):
    """Squared distances ``(M, F)`` and barycentrics ``(M, F, 3)`` of the closest triangle points.

    Ericson, "Real-Time Collision Detection" (2005), sec. 5.1.5, vectorized: the Voronoi region
    tests run in the book's order, so the first region that holds decides.
    """
    p = p[:, None, :]
    ab, ac, ap = b - a, c - a, p - a
    bp, cp = p - b, p - c
    d1, d2 = (ab * ap).sum(-1), (ac * ap).sum(-1)
    d3, d4 = (ab * bp).sum(-1), (ac * bp).sum(-1)
    d5, d6 = (ab * cp).sum(-1), (ac * cp).sum(-1)
    va, vb, vc = d3 * d6 - d5 * d4, d5 * d2 - d1 * d6, d1 * d4 - d3 * d2
    with np.errstate(divide="ignore", invalid="ignore"):
        denom = va + vb + vc
        v_in, w_in = vb / denom, vc / denom
        regions = [  # (condition, barycentrics), in the book's order
            ((d1 <= 0) & (d2 <= 0), (1.0, 0.0, 0.0)),
            ((d3 >= 0) & (d4 <= d3), (0.0, 1.0, 0.0)),
            ((vc <= 0) & (d1 >= 0) & (d3 <= 0), "ab"),
            ((d6 >= 0) & (d5 <= d6), (0.0, 0.0, 1.0)),
            ((vb <= 0) & (d2 >= 0) & (d6 <= 0), "ac"),
            ((va <= 0) & (d4 - d3 >= 0) & (d5 - d6 >= 0), "bc"),
        ]
        edge = {
            "ab": d1 / (d1 - d3),
            "ac": d2 / (d2 - d6),
            "bc": (d4 - d3) / ((d4 - d3) + (d5 - d6)),
        }
    bary = np.stack([1.0 - v_in - w_in, v_in, w_in], axis=-1)
    decided = np.zeros(d1.shape, dtype=bool)
    out = np.empty_like(bary)
    for cond, value in regions:
        take = cond & ~decided
        if isinstance(value, str):
            t = np.nan_to_num(edge[value])
            one = np.zeros_like(t)
            cols = {"ab": (1.0 - t, t, one), "ac": (1.0 - t, one, t), "bc": (one, 1.0 - t, t)}[value]
            out[take] = np.stack(cols, axis=-1)[take]
        else:
            out[take] = np.asarray(value)
        decided |= take
    out[~decided] = bary[~decided]
    q = out[..., 0:1] * a + out[..., 1:2] * b + out[..., 2:3] * c
    return ((q - p) ** 2).sum(-1), out


@dataclass(frozen=True, eq=False)
class MarkerLayout:
    """Markers attached to the contact surface by barycentric coordinates.

    Attributes:
        nodes: ``(M, 3)`` int64 surface-node indices of each marker's triangle.
        bary: ``(M, 3)`` f64 barycentric coordinates (sum to 1) on that triangle.
        tri: ``(M,)`` int64 index of each marker's triangle in ``surface_tris``.
    """

    nodes: Tensor
    bary: Tensor
    tri: Tensor

    def __post_init__(self):
        if not isinstance(self.nodes, Tensor) or self.nodes.dtype != torch.int64 or self.nodes.dim() != 2:
            raise ValueError("nodes must be an int64 tensor of shape (M, 3)")
        if self.nodes.shape[1] != 3 or self.nodes.shape[0] == 0:
            raise ValueError(f"nodes must have shape (M, 3) with M >= 1, got {tuple(self.nodes.shape)}")
        _check_tensor("bary", self.bary, (self.nodes.shape[0], 3))
        if not isinstance(self.tri, Tensor) or self.tri.shape != (self.nodes.shape[0],):
            raise ValueError(f"tri must be a tensor of shape ({self.nodes.shape[0]},)")

    def __len__(self) -> int:
        return self.nodes.shape[0]

    @classmethod
    def from_points(cls, points: Any, surface_rest: Tensor, surface_tris: Tensor) -> MarkerLayout:
        """Attach each point to the closest point of the closest rest triangle.

        Args:
            points: ``(M, 3)`` [m] marker rest positions (sensor frame), on or near the surface.
            surface_rest: ``(S, 3)`` [m] rest node positions.
            surface_tris: ``(F, 3)`` int64 triangles.
        """
        _check_mesh(surface_rest, surface_tris)
        pts = np.asarray(points.detach().cpu() if isinstance(points, Tensor) else points, dtype=np.float64)
        if pts.ndim != 2 or pts.shape[1] != 3 or pts.shape[0] == 0:
            raise ValueError(f"points must have shape (M, 3) with M >= 1, got {pts.shape}")
        if not np.isfinite(pts).all():
            raise ValueError("points must be finite")
        x = surface_rest.detach().cpu().double().numpy()
        tris = surface_tris.cpu().numpy()
        a, b, c = x[tris[:, 0]], x[tris[:, 1]], x[tris[:, 2]]
        best_d = np.full(len(pts), np.inf)
        best_f = np.zeros(len(pts), dtype=np.int64)
        best_b = np.zeros((len(pts), 3))
        for lo in range(0, len(pts), 256):  # keeps (chunk, F) arrays small
            d2, bary = _closest_points_on_triangles(pts[lo : lo + 256], a, b, c)
            f = d2.argmin(axis=1)
            rows = np.arange(len(f))
            best_d[lo : lo + 256], best_f[lo : lo + 256] = d2[rows, f], f
            best_b[lo : lo + 256] = bary[rows, f]
        return cls(nodes=torch.as_tensor(tris[best_f]), bary=torch.as_tensor(best_b), tri=torch.as_tensor(best_f))

    @classmethod
    def grid(
        cls,
        surface_rest: Tensor,
        surface_tris: Tensor,
        rows: int,
        cols: int,
        spacing: float | tuple[float, float],
        center: tuple[float, float] = (0.0, 0.0),
    ) -> MarkerLayout:
        """A regular ``rows x cols`` grid in the ``xy`` plane, lifted along ``z`` onto the surface.

        Each grid point ``(x, y)`` is placed on the outermost (largest ``z``) rest triangle whose
        ``xy`` projection contains it; its barycentric coordinates are those of that projection.
        For a flat pad the markers lie at ``z = 0``; on a dome they are evenly spaced in ``xy``.

        Args:
            surface_rest: ``(S, 3)`` [m] rest node positions.
            surface_tris: ``(F, 3)`` int64 triangles.
            rows: markers along ``y`` (> 0).
            cols: markers along ``x`` (> 0).
            spacing: distance between neighbouring markers [m], one number or ``(dx, dy)``.
            center: ``(x, y)`` [m] of the grid centre.

        Raises:
            ValueError: a bad argument, or a grid point outside the surface's ``xy`` footprint.
        """
        _check_mesh(surface_rest, surface_tris)
        rows, cols = _positive_int("rows", rows), _positive_int("cols", cols)
        sx, sy = (spacing, spacing) if np.isscalar(spacing) else tuple(spacing)
        sx, sy = _positive("spacing", sx), _positive("spacing", sy)
        cx, cy = (_finite_number("center", v) for v in center)
        gx = cx + sx * (np.arange(cols) - (cols - 1) / 2)
        gy = cy + sy * (np.arange(rows) - (rows - 1) / 2)
        px, py = (g.reshape(-1) for g in np.meshgrid(gx, gy, indexing="xy"))  # row-major: y outer
        x = surface_rest.detach().cpu().double().numpy()
        tris = surface_tris.cpu().numpy()
        a, b, c = (x[tris[:, k]] for k in range(3))
        e1, e2 = b - a, c - a
        det = e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]  # (F,)
        ok = np.abs(det) > 1e-12 * (np.abs(e1[:, :2]).sum(1) * np.abs(e2[:, :2]).sum(1) + 1e-300)
        det_safe = np.where(ok, det, 1.0)
        rx, ry = px[:, None] - a[None, :, 0], py[:, None] - a[None, :, 1]  # (M, F)
        l1 = (rx * e2[None, :, 1] - ry * e2[None, :, 0]) / det_safe
        l2 = (e1[None, :, 0] * ry - e1[None, :, 1] * rx) / det_safe
        l0 = 1.0 - l1 - l2
        inside = ok[None] & (l0 >= -1e-9) & (l1 >= -1e-9) & (l2 >= -1e-9)
        z = l0 * a[None, :, 2] + l1 * b[None, :, 2] + l2 * c[None, :, 2]
        z = np.where(inside, z, -np.inf)
        f = z.argmax(axis=1)
        rows_idx = np.arange(len(f))
        missing = ~inside[rows_idx, f]
        if missing.any():
            k = int(np.flatnonzero(missing)[0])
            raise ValueError(f"marker grid point ({px[k]:.6g}, {py[k]:.6g}) lies outside the surface footprint")
        bary = np.stack([l0[rows_idx, f], l1[rows_idx, f], l2[rows_idx, f]], axis=-1)
        bary = np.clip(bary, 0.0, None)
        bary /= bary.sum(axis=1, keepdims=True)
        return cls(nodes=torch.as_tensor(tris[f]), bary=torch.as_tensor(bary), tri=torch.as_tensor(f))

    def positions(self, surface_x: Tensor) -> Tensor:
        """Marker positions ``(..., M, 3)`` [m] on a surface ``(..., S, 3)`` [m]."""
        nodes = self.nodes.to(surface_x.device)
        bary = self.bary.to(dtype=surface_x.dtype, device=surface_x.device)
        return (surface_x[..., nodes, :] * bary.unsqueeze(-1)).sum(dim=-2)


# --------------------------------------------------------------------------------------------
# lights and shading


@dataclass(frozen=True)
class Light:
    """A coloured directional or point light (exactly one of ``direction`` and ``position``).

    Attributes:
        color: RGB intensity (each >= 0; 1 is full scale).
        direction: directional light: the vector from the surface toward the light (sensor
            frame), normalized on construction. Lights inside a sensor behind the gel have
            ``z < 0`` (the camera side).
        position: point light position [m] (sensor frame).
        falloff: point light attenuation distance [m] (> 0): the intensity is scaled by
            ``1 / (1 + (d / falloff)^2)`` at distance ``d``; None means no attenuation.
    """

    color: tuple[float, float, float]
    direction: tuple[float, float, float] | None = None
    position: tuple[float, float, float] | None = None
    falloff: float | None = None

    def __post_init__(self):
        set_ = object.__setattr__
        color = _vec3("color", self.color)
        if min(color) < 0.0:
            raise ValueError(f"color must be >= 0, got {self.color!r}")
        set_(self, "color", color)
        if (self.direction is None) == (self.position is None):
            raise ValueError("exactly one of direction and position must be given")
        if self.direction is not None:
            d = np.asarray(_vec3("direction", self.direction))
            norm = float(np.linalg.norm(d))
            if norm == 0.0:
                raise ValueError("direction must be non-zero")
            set_(self, "direction", tuple(float(v) for v in d / norm))
            if self.falloff is not None:
                raise ValueError("falloff applies to point lights only (direction was given)")
        else:
            set_(self, "position", _vec3("position", self.position))
            if self.falloff is not None:
                set_(self, "falloff", _positive("falloff", self.falloff))


def gelsight_lights(
    elevation_deg: float = 25.0,
    azimuths_deg: Sequence[float] = (90.0, 210.0, 330.0),
    colors: Sequence[Sequence[float]] = ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0)),
) -> tuple[Light, ...]:
    """GelSight-style lights: one coloured directional light per azimuth, at a grazing elevation.

    The lights sit inside the sensor (camera side, ``z < 0``) and graze the gel: the direction
    toward light ``k`` is ``(cos e cos a_k, cos e sin a_k, -sin e)`` (Yuan et al. 2017 use red,
    green and blue LEDs from three sides).

    Args:
        elevation_deg: angle of the lights above the gel plane (seen from inside) in ``(0, 90]``.
        azimuths_deg: azimuth of each light around ``z`` [deg].
        colors: RGB colour of each light, as many as ``azimuths_deg``.
    """
    e = _finite_number("elevation_deg", elevation_deg)
    if not 0.0 < e <= 90.0:
        raise ValueError(f"elevation_deg must lie in (0, 90], got {elevation_deg!r}")
    if len(azimuths_deg) != len(colors) or len(colors) == 0:
        raise ValueError("azimuths_deg and colors must be non-empty and of equal length")
    e = math.radians(e)
    out = []
    for k, (az, col) in enumerate(zip(azimuths_deg, colors, strict=True)):
        a = math.radians(_finite_number(f"azimuths_deg[{k}]", az))
        out.append(
            Light(color=tuple(col), direction=(math.cos(e) * math.cos(a), math.cos(e) * math.sin(a), -math.sin(e)))
        )
    return tuple(out)


@dataclass(frozen=True)
class PhongShading:
    """Phong reflection model of the gel's reflective coating, seen by the sensor camera.

    Shading of a surface point ``x`` with camera-side unit normal ``n`` (minus the outward
    normal) and unit direction ``V`` toward the camera:
    ``s = sum_k c_k a_k (k_d max(0, n . L_k) + k_s [n . L_k > 0] max(0, R_k . V)^alpha)``,
    ``R_k = 2 (n . L_k) n - L_k``, with light colour ``c_k``, direction ``L_k`` toward the light
    and attenuation ``a_k`` (1 for directional lights). Gomes et al. (RA-L 2021) shade GelSight
    height maps this way. ``ambient`` only enters the default background frame
    (``ambient + s(rest)``); the image adds ``s(x, n) - s(x0, n0)`` to the background.

    Attributes:
        lights: the lights (at least one).
        ambient: RGB ambient term of the default background, each in ``[0, 1]``.
        diffuse: ``k_d`` >= 0.
        specular: ``k_s`` >= 0 (0 turns the highlight off).
        shininess: ``alpha`` >= 1.
    """

    lights: tuple[Light, ...] = field(default_factory=gelsight_lights)
    ambient: tuple[float, float, float] = (0.25, 0.25, 0.25)
    diffuse: float = 0.7
    specular: float = 0.0
    shininess: float = 20.0

    def __post_init__(self):
        set_ = object.__setattr__
        lights = tuple(self.lights)
        if not lights or not all(isinstance(light, Light) for light in lights):
            raise ValueError("lights must be a non-empty sequence of Light")
        set_(self, "lights", lights)
        ambient = _vec3("ambient", self.ambient)
        if min(ambient) < 0.0 or max(ambient) > 1.0:
            raise ValueError(f"ambient must lie in [0, 1], got {self.ambient!r}")
        set_(self, "ambient", ambient)
        for name in ("diffuse", "specular"):
            value = _finite_number(name, getattr(self, name))
            if value < 0.0:
                raise ValueError(f"{name} must be >= 0, got {value!r}")
            set_(self, name, value)
        shininess = _finite_number("shininess", self.shininess)
        if shininess < 1.0:
            raise ValueError(f"shininess must be >= 1, got {shininess!r}")
        set_(self, "shininess", shininess)

    def shade(self, x: Tensor, n: Tensor, view: Tensor) -> Tensor:
        """Shaded RGB (before the background), ``(..., 3)``.

        Args:
            x: ``(..., 3)`` [m] surface points (sensor frame).
            n: ``(..., 3)`` unit normals facing the camera.
            view: ``(..., 3)`` unit directions from the points toward the camera.
        """
        out = x.new_zeros(x.shape)
        for light in self.lights:
            color = x.new_tensor(light.color)
            if light.direction is not None:
                L = x.new_tensor(light.direction).expand_as(x)
                atten = None
            else:
                to_light = x.new_tensor(light.position) - x
                dist2 = _dot3(to_light, to_light).unsqueeze(-1)
                L = to_light / torch.sqrt(dist2)
                atten = None if light.falloff is None else 1.0 / (1.0 + dist2 / light.falloff**2)
            nl = _dot3(n, L).unsqueeze(-1)
            term = self.diffuse * torch.clamp(nl, min=0.0)
            if self.specular > 0.0:
                R = 2.0 * nl * n - L
                rv = torch.clamp(_dot3(R, view).unsqueeze(-1), min=0.0)
                term = term + self.specular * (nl > 0).to(x.dtype) * rv**self.shininess
            if atten is not None:
                term = term * atten
            out = out + term * color
        return out


# --------------------------------------------------------------------------------------------
# ray casting


def _edge_functions(x: Tensor, tris: Tensor, o: Tensor) -> tuple[Tensor, Tensor]:
    """Per-triangle ray-casting terms for rays from ``o``: ``E (..., F, 3, 3)`` and ``an (..., F)``.

    With ``A, B, C`` the triangle's vertices relative to ``o``, the rows of ``E`` are
    ``B x C``, ``C x A``, ``A x B``. For a ray ``o + t d`` the barycentric coordinates of its
    meeting point with the triangle's plane are ``lambda = E d / sum(E d)`` (the scalar triple
    products of Moeller-Trumbore, as edge functions), ``sum(E d) = d . n`` with
    ``n = (b - a) x (c - a)``, and the ray parameter is ``t = an / (d . n)`` with
    ``an = A . n = A . (B x C)``. Everything per pixel is then a gather and a few dot products.
    """
    A = x[..., tris[:, 0], :] - o
    B = x[..., tris[:, 1], :] - o
    C = x[..., tris[:, 2], :] - o
    bc = torch.linalg.cross(B, C, dim=-1)
    E = torch.stack([bc, torch.linalg.cross(C, A, dim=-1), torch.linalg.cross(A, B, dim=-1)], dim=-2)
    return E, (A * bc).sum(-1)


def _rest_hits(camera: Camera, x: np.ndarray, tris: np.ndarray, chunk: int = 1024) -> np.ndarray:
    """``(H*W,)`` index of the triangle each pixel's ray hits first at rest, -1 for none.

    Brute force over all triangles, but each pixel's three edge functions against every
    triangle are three ``(P, 3) @ (3, F)`` products (the ray origin is shared).
    """
    d, valid = camera.rays(torch.float64)
    d, valid = d.reshape(-1, 3).numpy(), valid.reshape(-1).numpy()
    o = np.asarray(camera.position)
    A, B, C = x[tris[:, 0]] - o, x[tris[:, 1]] - o, x[tris[:, 2]] - o
    bc, ca, ab = np.cross(B, C), np.cross(C, A), np.cross(A, B)
    n = np.cross(B - A, C - A)
    an = (A * n).sum(-1)
    tol = 1e-9 * np.linalg.norm(n, axis=1)
    out = np.full(d.shape[0], -1, dtype=np.int64)
    for lo in range(0, d.shape[0], chunk):
        dc = d[lo : lo + chunk]
        den = dc @ n.T
        ok = np.abs(den) > tol
        den = np.where(ok, den, 1.0)
        inside = ok & (an / den > 0)
        for e in (bc, ca, ab):
            inside &= (dc @ e.T) / den >= -1e-9
        t = np.where(inside, an / den, np.inf)
        f = t.argmin(axis=1)
        hit = np.isfinite(t[np.arange(len(f)), f]) & valid[lo : lo + chunk]
        out[lo : lo + chunk] = np.where(hit, f, -1)
    return out


# --------------------------------------------------------------------------------------------
# the view


@dataclass(frozen=True, eq=False)
class TactileSensorView:
    """Rest geometry, camera, markers and shading of one tactile sensor: ``signals()`` per step.

    Attributes:
        surface_rest: ``(S, 3)`` [m] rest positions of the contact-surface nodes (sensor frame).
            If it requires grad, signals relative to rest (marker displacements, depth, image,
            normal/shear split) are differentiable with respect to it too; the discrete
            precomputation (marker triangles, which triangle each pixel sees at rest) is not.
        surface_tris: ``(F, 3)`` int64 outward-oriented surface triangles.
        camera: the sensor camera (:class:`PinholeCamera` or :class:`FisheyeCamera`); its
            width and height are the image size.
        markers: marker layout, or None for a sensor without markers.
        shading: the photometric model.
        background: ``(H, W, 3)`` background frame in ``[0, 1]`` (e.g. a real sensor's frame at
            rest), or None for ``ambient + shading(rest)`` on the surface and ``ambient`` off it.
        walk_steps: most triangles the per-pixel walk may cross from the rest triangle (> 0).
    """

    surface_rest: Tensor
    surface_tris: Tensor
    camera: Camera
    markers: MarkerLayout | None = None
    shading: PhongShading = field(default_factory=PhongShading)
    background: Tensor | None = None
    walk_steps: int = 16

    def __post_init__(self):
        _check_mesh(self.surface_rest, self.surface_tris)
        if not isinstance(self.camera, (PinholeCamera, FisheyeCamera)):
            raise ValueError(f"camera must be a PinholeCamera or FisheyeCamera, got {type(self.camera).__name__}")
        if self.markers is not None:
            if not isinstance(self.markers, MarkerLayout):
                raise ValueError(f"markers must be a MarkerLayout or None, got {type(self.markers).__name__}")
            if int(self.markers.nodes.max()) >= self.surface_rest.shape[0]:
                raise ValueError("markers refer to nodes beyond surface_rest")
        if not isinstance(self.shading, PhongShading):
            raise ValueError(f"shading must be a PhongShading, got {type(self.shading).__name__}")
        if self.background is not None:
            _check_tensor("background", self.background, (self.camera.height, self.camera.width, 3))
            if float(self.background.min()) < 0.0 or float(self.background.max()) > 1.0:
                raise ValueError("background must lie in [0, 1]")
        object.__setattr__(self, "walk_steps", _positive_int("walk_steps", self.walk_steps))
        x = self.surface_rest.detach().cpu().double().numpy()
        tris = self.surface_tris.cpu().numpy()
        rest_tri = _rest_hits(self.camera, x, tris)
        covered = np.flatnonzero(rest_tri >= 0)
        # Host-side constants; moved to each (dtype, device) on first use.
        host = {
            "tris": self.surface_tris.cpu(),
            "incidence": torch.as_tensor(_incidence(tris, x.shape[0])),
            "adjacency": torch.as_tensor(_adjacency(tris)),
            "covered": torch.as_tensor(covered),
            "rest_tri": torch.as_tensor(rest_tri[covered]),
            "rays": self.camera.rays(torch.float64)[0].reshape(-1, 3)[covered],
        }
        object.__setattr__(self, "_host", host)
        object.__setattr__(self, "_cache", {})

    # ---- constants per dtype/device

    def _const(self, dtype: torch.dtype, device: torch.device) -> dict[str, Tensor]:
        key = (dtype, device)
        cache = self._cache  # type: ignore[attr-defined]
        if key not in cache:
            host = self._host  # type: ignore[attr-defined]
            c = {k: v.to(device) for k, v in host.items()}
            c["rays"] = host["rays"].to(dtype=dtype, device=device)
            c["origin"] = torch.tensor(self.camera.position, dtype=dtype, device=device)
            if self.markers is not None:
                c["marker_nodes"] = self.markers.nodes.to(device)
                c["marker_bary"] = self.markers.bary.to(dtype=dtype, device=device)
            cache[key] = c
        return cache[key]

    def _rest(self, dtype: torch.dtype, device: torch.device) -> dict[str, Tensor]:
        """Rest-derived tensors (normals, marker pixels, rest hits, background); cached unless
        ``surface_rest`` requires grad (then recomputed on every call, so gradients reach it)."""
        differentiable = self.surface_rest.requires_grad and torch.is_grad_enabled()
        key = (dtype, device, "rest")
        if not differentiable and key in self._cache:  # type: ignore[attr-defined]
            return self._cache[key]  # type: ignore[attr-defined]
        c = self._const(dtype, device)
        with torch.set_grad_enabled(differentiable):
            x0 = self.surface_rest.to(dtype=dtype, device=device)
            r = {"x": x0, "normals": _vertex_normals(x0, c["tris"], c["incidence"])}
            if self.markers is not None:
                r["markers_px"] = self.camera.project(self._marker_positions(x0, c))
            hit = self._hit(x0.unsqueeze(0), c["rest_tri"].unsqueeze(0), c)
            r["range"] = hit["range"][0]
            r["shade"] = self.shading.shade(hit["point"][0], -hit["normal"][0], -c["rays"])
            r["background"] = self._background(r["shade"], c, dtype, device)
        if not differentiable:
            self._cache[key] = r  # type: ignore[attr-defined]
        return r

    def _background(self, rest_shade: Tensor, c: dict[str, Tensor], dtype, device) -> Tensor:
        H, W = self.camera.height, self.camera.width
        if self.background is not None:
            return self.background.to(dtype=dtype, device=device).reshape(H * W, 3)
        ambient = torch.tensor(self.shading.ambient, dtype=dtype, device=device)
        bg = ambient.expand(H * W, 3)
        on = torch.clamp(ambient + rest_shade, 0.0, 1.0)
        return bg.index_copy(0, c["covered"], on)

    # ---- pieces

    @staticmethod
    def _marker_positions(x: Tensor, c: dict[str, Tensor]) -> Tensor:
        return (x[..., c["marker_nodes"], :] * c["marker_bary"].unsqueeze(-1)).sum(dim=-2)

    @torch.no_grad()
    def _walk(self, E: Tensor, c: dict[str, Tensor]) -> Tensor:
        """Visibility walk: the triangle ``(B, P)`` whose plane each covered pixel's ray meets
        inside (or the best one found: the largest smallest barycentric coordinate).

        Args:
            E: ``(B, F, 3, 3)`` edge functions of the deformed surface (:func:`_edge_functions`).
        """
        B, F = E.shape[:2]
        P = c["rest_tri"].shape[0]
        E9 = E.reshape(B * F, 9)
        # A ray this close to an edge counts as inside (extrapolating the plane by so little is
        # harmless), so a pixel on an edge of the rest mesh stays on its rest triangle at rest.
        tol = 64 * torch.finfo(E.dtype).eps
        offset = torch.arange(B, device=E.device).repeat_interleave(P) * F
        pixel = torch.arange(P, device=E.device).repeat(B)
        g = offset + c["rest_tri"].repeat(B)  # global triangle index b * F + f, (B * P,)
        best = g.clone()
        best_score = torch.full(g.shape, -math.inf, dtype=E.dtype, device=E.device)
        active = torch.arange(B * P, device=E.device)  # pixels still walking
        for step in range(self.walk_steps + 1):
            ga = g[active]
            w = _mv3(E9[ga].view(-1, 3, 3), c["rays"][pixel[active]])
            den = w[:, 0] + w[:, 1] + w[:, 2]
            score, k = (w / torch.where(den == 0, torch.ones_like(den), den).unsqueeze(-1)).min(dim=-1)
            score = torch.where(den != 0, score, torch.full_like(score, -math.inf))
            better = score > best_score[active]
            best[active] = torch.where(better, ga, best[active])
            best_score[active] = torch.where(better, score, best_score[active])
            nb = c["adjacency"][ga - offset[active], k]
            move = (score < -tol) & (nb >= 0)
            if step == self.walk_steps or not bool(move.any()):
                break
            active = active[move]
            g[active] = offset[active] + nb[move]
        return (best - offset).view(B, P)

    def _hit(self, x: Tensor, tri: Tensor, c: dict[str, Tensor]) -> dict[str, Tensor]:
        """Differentiable ray hit on triangles ``tri (B, P)`` of surfaces ``x (B, S, 3)``: point
        ``(B, P, 3)``, range ``(B, P)`` along the unit ray, unit outward normal ``(B, P, 3)``."""
        E, an = _edge_functions(x, c["tris"], c["origin"])
        return self._hit_from(x, E, an, tri, c)

    def _hit_from(self, x: Tensor, E: Tensor, an: Tensor, tri: Tensor, c: dict[str, Tensor]) -> dict[str, Tensor]:
        B, F = E.shape[:2]
        P = tri.shape[1]
        g = (tri + F * torch.arange(B, device=tri.device).unsqueeze(1)).reshape(-1)
        d = c["rays"]
        w = _mv3(E.reshape(B * F, 3, 3)[g].view(B, P, 3, 3), d)
        den = w[..., 0] + w[..., 1] + w[..., 2]
        den = torch.where(den == 0, torch.ones_like(den), den)
        lam = w / den.unsqueeze(-1)
        rng = an.reshape(-1)[g].view(B, P) / den
        point = c["origin"] + rng.unsqueeze(-1) * d
        vn = _vertex_normals(x, c["tris"], c["incidence"])  # (B, S, 3)
        vn_face = vn[:, c["tris"], :].reshape(B * F, 3, 3)
        normal = _combine3(lam, vn_face[g].view(B, P, 3, 3))
        normal = torch.nn.functional.normalize(normal, dim=-1, eps=1e-30)
        return {"point": point, "range": rng, "normal": normal}

    # ---- public API

    @property
    def num_nodes(self) -> int:
        """``S``, the number of surface nodes."""
        return self.surface_rest.shape[0]

    @property
    def image_size(self) -> tuple[int, int]:
        """``(H, W)`` [px]."""
        return self.camera.height, self.camera.width

    @property
    def coverage(self) -> Tensor:
        """``(H, W)`` bool: pixels whose ray sees the surface at rest."""
        H, W = self.image_size
        mask = torch.zeros(H * W, dtype=torch.bool)
        mask[self._host["covered"]] = True  # type: ignore[attr-defined]
        return mask.reshape(H, W)

    def check_inputs(self, surface_x: Tensor, surface_f: Tensor | None = None) -> None:
        """Raise ``ValueError`` naming the argument unless shapes, dtypes and values are valid."""
        _check_tensor("surface_x", surface_x, (None, self.num_nodes, 3))
        if surface_f is not None:
            _check_tensor("surface_f", surface_f, tuple(surface_x.shape))
            if surface_f.dtype != surface_x.dtype or surface_f.device != surface_x.device:
                raise ValueError(
                    f"surface_f must have the dtype and device of surface_x ({surface_x.dtype}, {surface_x.device}), "
                    f"got ({surface_f.dtype}, {surface_f.device})"
                )

    def marker_positions(self, surface_x: Tensor) -> Tensor:
        """Marker positions ``(B, M, 3)`` [m] on ``surface_x (B, S, 3)`` [m]."""
        if self.markers is None:
            raise ValueError("this view has no markers")
        self.check_inputs(surface_x)
        return self._marker_positions(surface_x, self._const(surface_x.dtype, surface_x.device))

    def marker_pixels(self, surface_x: Tensor) -> Tensor:
        """Marker pixels ``(B, M, 2)`` [px] through the camera."""
        return self.camera.project(self.marker_positions(surface_x))

    def marker_displacements(self, surface_x: Tensor) -> Tensor:
        """Marker pixel displacements ``(B, M, 2)`` [px] relative to the rest surface."""
        px = self.marker_pixels(surface_x)
        return px - self._rest(surface_x.dtype, surface_x.device)["markers_px"]

    def forces(self, surface_f: Tensor) -> tuple[Tensor, Tensor]:
        """``(normal (B, S) [N], shear (B, S, 3) [N])`` along the rest outward normals."""
        _check_tensor("surface_f", surface_f, (None, self.num_nodes, 3))
        return normal_shear_forces(surface_f, self._rest(surface_f.dtype, surface_f.device)["normals"])

    def rasterize(self, surface_x: Tensor) -> dict[str, Tensor]:
        """Cast every pixel's ray onto the deformed surface.

        Args:
            surface_x: ``(B, S, 3)`` [m].

        Returns:
            ``range (B, H, W)`` [m] distance from the camera centre to the surface along the
            ray (0 off the surface), ``depth (B, H, W)`` [m] indentation along the ray (rest
            range minus range), ``normal_map (B, H, W, 3)`` unit outward normals (0 off the
            surface), ``point (B, H, W, 3)`` [m] hit points (0 off the surface); plus, on the
            covered pixels only (index ``covered (P,)`` into ``H * W``), ``hit_point``,
            ``hit_normal (B, P, 3)``.
        """
        self.check_inputs(surface_x)
        return self._rasterize(surface_x)

    def _rasterize(self, surface_x: Tensor) -> dict[str, Tensor]:
        dtype, device = surface_x.dtype, surface_x.device
        c = self._const(dtype, device)
        rest = self._rest(dtype, device)
        B = surface_x.shape[0]
        H, W = self.image_size
        E, an = _edge_functions(surface_x, c["tris"], c["origin"])
        hit = self._hit_from(surface_x, E, an, self._walk(E.detach(), c), c)

        def image(values: Tensor) -> Tensor:
            full = values.new_zeros((B, H * W) + values.shape[2:])
            return full.index_copy(1, c["covered"], values).reshape((B, H, W) + values.shape[2:])

        return {
            "range": image(hit["range"]),
            "depth": image(rest["range"] - hit["range"]),
            "normal_map": image(hit["normal"]),
            "point": image(hit["point"]),
            "covered": c["covered"],
            "hit_point": hit["point"],
            "hit_normal": hit["normal"],
        }

    def render(self, surface_x: Tensor) -> tuple[Tensor, Tensor]:
        """Tactile image and depth map.

        Args:
            surface_x: ``(B, S, 3)`` [m].

        Returns:
            ``(image (B, H, W, 3) in [0, 1], depth (B, H, W) [m])``; see :meth:`rasterize`.
        """
        self.check_inputs(surface_x)
        r = self._rasterize(surface_x)
        return self._shade(r, surface_x.dtype, surface_x.device), r["depth"]

    def _shade(self, r: dict[str, Tensor], dtype, device) -> Tensor:
        c = self._const(dtype, device)
        rest = self._rest(dtype, device)
        H, W = self.image_size
        shade = self.shading.shade(r["hit_point"], -r["hit_normal"], -c["rays"])
        bg = rest["background"]
        on = torch.clamp(bg[c["covered"]] + (shade - rest["shade"]), 0.0, 1.0)
        B = shade.shape[0]
        return bg.expand(B, H * W, 3).index_copy(1, c["covered"], on).reshape(B, H, W, 3)

    def signals(self, surface_x: Tensor, surface_f: Tensor, keys: Collection[str] | None = None) -> dict[str, Tensor]:
        """Everything the sensor reports for one state.

        Args:
            surface_x: ``(B, S, 3)`` [m] surface node positions (sensor frame).
            surface_f: ``(B, S, 3)`` [N] contact force on each surface node (sensor frame).
            keys: which signals to compute (a subset of :data:`ALL_SIGNALS`); None means all
                (the marker keys only when the view has markers).

        Returns:
            A dict with the requested keys:

            * ``marker_pos (B, M, 3)`` [m] marker positions,
            * ``markers_px (B, M, 2)`` [px] marker pixels,
            * ``marker_disp_px (B, M, 2)`` [px] marker pixels minus their rest pixels,
            * ``normal_force (B, S)`` [N] pressing force along each node's rest outward normal,
            * ``shear_force (B, S, 3)`` [N] tangential node force,
            * ``net_wrench (B, 6)`` net force [N] and torque about the sensor origin [N m],
            * ``depth (B, H, W)`` [m] indentation along each pixel's ray,
            * ``normal_map (B, H, W, 3)`` unit outward normals of the surface seen at each pixel,
            * ``image (B, H, W, 3)`` tactile RGB image in ``[0, 1]``.

            All are differentiable with respect to ``surface_x`` and ``surface_f`` (where they
            depend on them).

        Raises:
            ValueError: bad shapes, dtypes, non-finite values, or unknown keys.
        """
        self.check_inputs(surface_x, surface_f)
        if keys is None:
            wanted = set(ALL_SIGNALS if self.markers is not None else set(ALL_SIGNALS) - set(_MARKER_KEYS))
        else:
            wanted = set(keys)
            unknown = wanted - set(ALL_SIGNALS)
            if unknown:
                raise ValueError(f"keys has unknown signals {sorted(unknown)}; known: {list(ALL_SIGNALS)}")
            if self.markers is None and wanted & set(_MARKER_KEYS):
                raise ValueError("keys asks for marker signals but this view has no markers")
        dtype, device = surface_x.dtype, surface_x.device
        c = self._const(dtype, device)
        rest = self._rest(dtype, device)
        out: dict[str, Tensor] = {}
        if wanted & set(_MARKER_KEYS):
            pos = self._marker_positions(surface_x, c)
            px = self.camera.project(pos)
            out.update(marker_pos=pos, markers_px=px, marker_disp_px=px - rest["markers_px"])
        if wanted & {"normal_force", "shear_force"}:
            out["normal_force"], out["shear_force"] = normal_shear_forces(surface_f, rest["normals"])
        if "net_wrench" in wanted:
            out["net_wrench"] = net_wrench(surface_x, surface_f)
        if wanted & set(_IMAGE_KEYS):
            r = self._rasterize(surface_x)
            out["depth"], out["normal_map"] = r["depth"], r["normal_map"]
            if "image" in wanted:
                out["image"] = self._shade(r, dtype, device)
        return {k: out[k] for k in ALL_SIGNALS if k in wanted}
