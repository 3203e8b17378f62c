"""Headless renderer: particles, colliders and meshes -> an RGB image (no display, no OpenGL).

What is drawn
    * Particles as the surface they sample (:mod:`engine.render_surface`, the screen-space fluid
      technique of van der Laan et al., I3D 2009): depth splats of particle spheres, bilateral
      depth smoothing, normals from the smoothed depth, Beer-Lambert absorption over the
      thickness, refraction of what lies behind, a Fresnel reflection of the sky. Per particle
      ``optics`` (clarity, gloss) tell clear liquids from opaque liquids and matte solids.
    * Colliders (tools, containers) by sphere tracing their signed distance functions
      (Hart, "Sphere tracing", The Visual Computer 12, 1996) with
      :func:`engine.geometry.sdf_world`, one kernel instance per shape kind, inside the
      collider's bounding sphere and only up to the depth already in the z-buffer, so the
      composition by depth is exact. Containers (``Cup``, ``Bowl``) are drawn as tinted glass:
      the march records the first two entering surfaces (front and back wall) and blends them
      over what lies behind, with a Fresnel-like rim that keeps the silhouette readable. Other
      shapes are opaque.
    * Triangle meshes (FEM sensor gels, :func:`sensor_meshes`) by ray-cast rasterization: every
      triangle loops over the pixels of its screen bounding box, intersects each pixel's ray
      exactly (Moeller and Trumbore, "Fast, minimum storage ray-triangle intersection", JGT
      2(1), 1997) and enters a 64-bit ``atomic_min`` z-buffer key ``(quantized depth << 32) |
      triangle index``, unique per triangle, so the result does not depend on thread order; the
      resolve pass composes the winner by depth with what is already drawn, before the colliders
      are traced up to that depth. Normals are Phong-interpolated corner normals: the
      area-weighted mean of the normals of the triangles around each vertex that lie within a 40
      degree crease of the triangle's own, so a dent shades smoothly while a pad's rim stays
      sharp. Both sides are drawn (the normal turned toward the camera). The silicone look:
      wrapped Lambert (light scattered in the gel softens the terminator and its shadows), a
      soft highlight and a pale rim. Triangles are rasterized into the shadow map too (cast and
      receive; slope-scaled bias). Shadows resolve to one shadow-map texel of ``scene_bounds`` /
      256: at millimetre scale, give ``scene_bounds`` around the sensor.
    * A floor plane ``z = floor_z`` with a soft checker (anti-aliased by distance) and a sky
      gradient behind it, fading into haze with distance.
    * Lighting: ambient + Lambert from one directional light, a Blinn-Phong highlight, and shadows
      from an orthographic shadow map along the light (particles splatted into it, except clear
      ones such as water, which let the light through; opaque colliders sphere-traced into it),
      filtered with 3x3 percentage-closer filtering (Reeves et al., SIGGRAPH 1987) for soft
      edges.

Conventions
    * World frame z-up, metres. Pinhole camera at ``camera_pos`` looking at ``look_at`` with
      ``+z`` up, vertical field of view ``fov_deg``. Image rows go top to bottom: pixel
      ``(i, j)`` is row ``i``, column ``j``; output ``(H, W, 3)`` uint8, no gamma curve (colors
      are shaded as given).
    * Kernels take ndarray arguments only (DESIGN.md): they compile once per dtype and are shared
      by every :class:`Renderer`; per-instance state is a few ``ti.ndarray`` buffers. Images and
      particle buffers are f32; arithmetic runs in the runtime's default float.
    * Colors are RGB in ``[0, 1]``; :func:`particle_colors` maps a Model's material colors to
      its particles.
    * Requires :func:`engine.init` (any arch, any precision) before :meth:`Renderer.render`.

Tactile panels beside a frame: :func:`engine.panels.compose_tactile_frame`.
"""

import math
import os
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import taichi as ti

from engine import geometry, render_surface, runtime
from engine.colliders import Collider, pack_colliders
from engine.render_shading import AMBIENT, DIFFUSE, NEAR, T_FAR, lit_fraction, ray_dir, shade, shadow_height, sky

__all__ = [
    "CLEAR_LIQUIDS",
    "SILICONE",
    "Renderer",
    "particle_colors",
    "particle_optics",
    "sensor_meshes",
    "write_video",
]

ndarray = ti.types.ndarray

_EMPTY_KEY = (1 << 63) - 1
_DEPTH_SCALE = float((1 << 31) - 1) / T_FAR
_MARCH_STEPS = 96
_SHADOW_RES = 256
_GLASS_CACHE_SIZE = 16  # traced glass layers kept, per (collider, camera)
_SMOOTH_MAX_PX = 16  # widest depth-smoothing half-window at 256 rows (scaled with the height)
_DEFAULT_OPTICS = (0.0, 0.3)  # opaque, slightly glossy
_CLEAR_SHADOW = 0.5  # particles at least this clear cast no shadow

_FLOOR_LIGHT = (0.80, 0.79, 0.76)
_FLOOR_DARK = (0.62, 0.61, 0.59)

_GLASS = (0.82, 0.90, 0.97, 0.32)
SILICONE = (0.62, 0.70, 0.80)
"""Default mesh color: the grey-blue of a silicone gel."""
_GEL_WRAP = 0.35
_GEL_RIM = (0.90, 0.94, 0.98)
_CREASE_DEG = 40.0  # adjacent triangles bent by more than this keep a sharp edge

_TOOL_PALETTE = (
    (0.78, 0.33, 0.24, 1.0),
    (0.30, 0.62, 0.36, 1.0),
    (0.58, 0.44, 0.76, 1.0),
    (0.85, 0.60, 0.20, 1.0),
    (0.35, 0.55, 0.70, 1.0),
)


# --------------------------------------------------------------------------------------------
# Kernels
# --------------------------------------------------------------------------------------------


@ti.kernel
def _shadow_particles(
    x: ndarray(ndim=2),
    optics: ndarray(ndim=2),
    radius: ti.f32,
    shadow: ndarray(ndim=2),
    light: ti.math.vec3,
    s_origin: ti.math.vec3,
    s_u: ti.math.vec3,
    s_v: ti.math.vec3,
    texel: ti.f32,
    hmin: ti.f32,
    hmax: ti.f32,
):
    """Splat every particle sphere into the light-space height map (max height per texel); clear
    particles (clarity >= :data:`_CLEAR_SHADOW`) let the light through and are left out."""
    R = shadow.shape[0]
    for p in range(x.shape[0]):
        if optics[p, 0] >= _CLEAR_SHADOW:
            continue
        c = ti.math.vec3(x[p, 0], x[p, 1], x[p, 2])
        rel = c - s_origin
        ua = rel.dot(s_u) / texel
        vb = rel.dot(s_v) / texel
        rt = radius / texel
        h0 = c.dot(light)
        a0 = ti.max(ti.cast(ti.floor(ua - rt), ti.i32), 0)
        a1 = ti.min(ti.cast(ti.floor(ua + rt), ti.i32), R - 1)
        b0 = ti.max(ti.cast(ti.floor(vb - rt), ti.i32), 0)
        b1 = ti.min(ti.cast(ti.floor(vb + rt), ti.i32), R - 1)
        for a in range(a0, a1 + 1):
            for b in range(b0, b1 + 1):
                da = (a + 0.5 - ua) * texel
                db = (b + 0.5 - vb) * texel
                q = radius * radius - da * da - db * db
                if q >= 0.0:
                    ti.atomic_max(shadow[a, b], shadow_height(h0 + ti.sqrt(q), hmin, hmax))


@ti.kernel
def _shadow_collider(
    kind: ti.template(),
    shapes: ndarray(ndim=2),
    k: ti.i32,
    mesh_sdf: ndarray(ndim=1),
    pos: ti.math.vec3,
    quat: ti.math.vec4,
    b_center: ti.math.vec3,
    b_radius: ti.f32,
    shadow: ndarray(ndim=2),
    light: ti.math.vec3,
    s_origin: ti.math.vec3,
    s_u: ti.math.vec3,
    s_v: ti.math.vec3,
    texel: ti.f32,
    hmin: ti.f32,
    hmax: ti.f32,
):
    """Sphere-trace one collider along -light from every texel; keep the highest surface."""
    shape = geometry.gather_shape(shapes, k)
    for a, b in ti.ndrange(shadow.shape[0], shadow.shape[1]):
        o = s_origin + (a + 0.5) * texel * s_u + (b + 0.5) * texel * s_v + (hmax + 1.0) * light
        d = -light
        oc = o - b_center
        bb = oc.dot(d)
        disc = bb * bb - (oc.dot(oc) - b_radius * b_radius)
        if disc > 0.0:
            sq = ti.sqrt(disc)
            t = ti.max(-bb - sq, 0.0)
            t1 = -bb + sq
            for _ in range(_MARCH_STEPS):
                if t > t1:
                    break
                p = o + t * d
                r = geometry.sdf_world(kind, shape, pos, quat, p, mesh_sdf)
                if r[0] < 1e-3:
                    ti.atomic_max(shadow[a, b], shadow_height(p.dot(light), hmin, hmax))
                    break
                t += r[0]


@ti.kernel
def _background(
    image: ndarray(ndim=3),
    depth: ndarray(ndim=2),
    cam: ti.math.vec3,
    basis: ti.math.mat3,
    focal: ti.f32,
    floor_z: ti.f32,
    checker: ti.f32,
    shadow: ndarray(ndim=2),
    light: ti.math.vec3,
    s_origin: ti.math.vec3,
    s_u: ti.math.vec3,
    s_v: ti.math.vec3,
    texel: ti.f32,
    hmin: ti.f32,
    hmax: ti.f32,
):
    """Floor (soft checker, shadowed, hazy with distance) and sky; resets the depth buffer."""
    H, W = image.shape[0], image.shape[1]
    for i, j in ti.ndrange(H, W):
        d = ray_dir(i, j, H, W, basis, focal)
        color = sky(d)
        t_hit = T_FAR
        if d[2] < -1e-6:
            t = (floor_z - cam[2]) / d[2]
            if t > 0.0 and t < T_FAR:
                p = cam + t * d
                # Soft checker: smoothstep of sin*sin, widened with distance against aliasing.
                s = ti.sin(math.pi * p[0] / checker) * ti.sin(math.pi * p[1] / checker)
                w = ti.min(0.15 + 0.5 * t / (focal * checker), 1.0)
                m = ti.math.smoothstep(-w, w, s)
                base = ti.math.mix(ti.math.vec3(*_FLOOR_DARK), ti.math.vec3(*_FLOOR_LIGHT), m)
                lit = lit_fraction(p, 2e-3, shadow, light, s_origin, s_u, s_v, texel, hmin, hmax)
                shaded = shade(base, ti.math.vec3(0.0, 0.0, 1.0), d, lit, light, 0.0)
                haze = 1.0 - ti.exp(-0.12 * t * t)
                color = ti.math.mix(shaded, sky(d), ti.math.clamp(haze, 0.0, 1.0))
                t_hit = t
        for c in ti.static(range(3)):
            image[i, j, c] = ti.cast(color[c], ti.f32)
        depth[i, j] = ti.cast(t_hit, ti.f32)


@ti.func
def _enter_ray(cam, d, b_center, b_radius, t_max):
    """Parameter interval ``(t0, t1)`` of the ray inside the bounding sphere, up to t_max (empty
    when t0 > t1)."""
    oc = cam - b_center
    bb = oc.dot(d)
    disc = bb * bb - (oc.dot(oc) - b_radius * b_radius)
    t0, t1 = 1.0, 0.0
    if disc > 0.0:
        sq = ti.sqrt(disc)
        t0 = ti.max(-bb - sq, NEAR)
        t1 = ti.min(-bb + sq, t_max)
    return t0, t1


@ti.kernel
def _march_collider(
    kind: ti.template(),
    shapes: ndarray(ndim=2),
    k: ti.i32,
    mesh_sdf: ndarray(ndim=1),
    pos: ti.math.vec3,
    quat: ti.math.vec4,
    b_center: ti.math.vec3,
    b_radius: ti.f32,
    rgb: ti.math.vec3,
    image: ndarray(ndim=3),
    depth: ndarray(ndim=2),
    cam: ti.math.vec3,
    basis: ti.math.mat3,
    focal: ti.f32,
    shadow: ndarray(ndim=2),
    light: ti.math.vec3,
    s_origin: ti.math.vec3,
    s_u: ti.math.vec3,
    s_v: ti.math.vec3,
    texel: ti.f32,
    hmin: ti.f32,
    hmax: ti.f32,
):
    """Sphere-trace one opaque collider per pixel up to the current depth; shade the hit and
    write its depth."""
    H, W = image.shape[0], image.shape[1]
    shape = geometry.gather_shape(shapes, k)
    for i, j in ti.ndrange(H, W):
        d = ray_dir(i, j, H, W, basis, focal)
        t, t1 = _enter_ray(cam, d, b_center, b_radius, depth[i, j])
        for _ in range(_MARCH_STEPS):
            if t > t1:
                break
            p = cam + t * d
            r = geometry.sdf_world(kind, shape, pos, quat, p, mesh_sdf)
            if r[0] < 5e-4 + 5e-4 * t:
                n = ti.math.vec3(r[1], r[2], r[3])
                if n.dot(d) > 0.0:
                    n = -n
                lit = lit_fraction(p, 4e-3, shadow, light, s_origin, s_u, s_v, texel, hmin, hmax)
                out = shade(rgb, n, d, lit, light, 0.35)
                for ch in ti.static(range(3)):
                    image[i, j, ch] = ti.cast(out[ch], ti.f32)
                depth[i, j] = ti.cast(t, ti.f32)
                break
            t += r[0]


@ti.kernel
def _trace_glass(
    kind: ti.template(),
    shapes: ndarray(ndim=2),
    k: ti.i32,
    mesh_sdf: ndarray(ndim=1),
    pos: ti.math.vec3,
    quat: ti.math.vec4,
    b_center: ti.math.vec3,
    b_radius: ti.f32,
    rgba: ti.math.vec4,
    hit_t: ndarray(ndim=3),
    hit_rgba: ndarray(ndim=4),
    cam: ti.math.vec3,
    basis: ti.math.mat3,
    focal: ti.f32,
    light: ti.math.vec3,
):
    """Sphere-trace one glass collider per pixel: distance (-1: none) and shaded, Fresnel-rimmed
    RGBA of the first two surfaces the ray enters (the near and the far wall). Unshadowed, so
    the layers can be kept while the collider and the camera stay put."""
    H, W = hit_t.shape[0], hit_t.shape[1]
    shape = geometry.gather_shape(shapes, k)
    base = ti.math.vec3(rgba[0], rgba[1], rgba[2])
    for i, j in ti.ndrange(H, W):
        d = ray_dir(i, j, H, W, basis, focal)
        t, t1 = _enter_ray(cam, d, b_center, b_radius, T_FAR)
        hit_t[i, j, 0] = -1.0
        hit_t[i, j, 1] = -1.0
        n_hits = 0
        inside = False
        for _ in range(_MARCH_STEPS):
            if t > t1:
                break
            p = cam + t * d
            r = geometry.sdf_world(kind, shape, pos, quat, p, mesh_sdf)
            dist = r[0]
            if inside:
                if dist > 0.0:
                    inside = False
                t += ti.max(ti.abs(dist), 2e-3)
            elif dist < 5e-4 + 5e-4 * t:
                n = ti.math.vec3(r[1], r[2], r[3])
                if n.dot(d) > 0.0:
                    n = -n
                s = shade(base, n, d, 1.0, light, 0.35)
                rim = ti.pow(1.0 - ti.abs(n.dot(d)), 3.0)
                hit_t[i, j, n_hits] = ti.cast(t, ti.f32)
                for ch in ti.static(range(3)):
                    hit_rgba[i, j, n_hits, ch] = ti.cast(s[ch], ti.f32)
                hit_rgba[i, j, n_hits, 3] = ti.cast(rgba[3] + (1.0 - rgba[3]) * 0.7 * rim, ti.f32)
                n_hits += 1
                if n_hits >= 2:
                    break
                inside = True
                t += 2e-3
            else:
                t += dist


@ti.kernel
def _compose_glass(
    front: ti.template(),
    hit_t: ndarray(ndim=3),
    hit_rgba: ndarray(ndim=4),
    split: ndarray(ndim=2),
    image: ndarray(ndim=3),
    depth: ndarray(ndim=2),
):
    """Blend a glass collider's layers nearer than ``depth`` over the image, far layer first.

    Glass is composed in two passes around a particle surface at distance ``split`` (0 where
    there is none): the layers beyond it (``front=False``) before the surface refracts them,
    those in front of it (``front=True``) after.
    """
    for i, j in split:
        out = ti.math.vec3(image[i, j, 0], image[i, j, 1], image[i, j, 2])
        for h in ti.static((1, 0)):
            t = hit_t[i, j, h]
            keep = t > 0.0 and t < depth[i, j]
            if ti.static(front):
                keep = keep and t < split[i, j]
            else:
                keep = keep and (split[i, j] <= 0.0 or t >= split[i, j])
            if keep:
                s = ti.math.vec3(hit_rgba[i, j, h, 0], hit_rgba[i, j, h, 1], hit_rgba[i, j, h, 2])
                out = ti.math.mix(out, s, hit_rgba[i, j, h, 3])
        for ch in ti.static(range(3)):
            image[i, j, ch] = ti.cast(out[ch], ti.f32)


# --------------------------------------------------------------------------------------------
# Triangle meshes (FEM sensor gels): ray-cast rasterization, crease-aware vertex normals
# --------------------------------------------------------------------------------------------


@ti.func
def _vertex(v: ti.template(), tris: ti.template(), f, c):
    p = tris[f, c]
    return ti.math.vec3(v[p, 0], v[p, 1], v[p, 2])


@ti.func
def _face_normal(v: ti.template(), tris: ti.template(), f):
    """Area-weighted normal ``(b - a) x (c - a)`` of triangle f (length = twice its area)."""
    a = _vertex(v, tris, f, 0)
    return (_vertex(v, tris, f, 1) - a).cross(_vertex(v, tris, f, 2) - a)


@ti.func
def _unit(n):
    return n / ti.max(n.norm(), 1e-30)


@ti.func
def _ray_triangle(o, d, a, b, c):
    """Moeller-Trumbore: ``(t, u, w)`` of ray ``o + t d`` and triangle abc, hit = (1-u-w) a + u b + w c.

    ``t`` is -1 when the ray is parallel to the triangle's plane; the caller tests u, w.
    """
    e1 = b - a
    e2 = c - a
    pv = d.cross(e2)
    det = e1.dot(pv)
    t, u, w = -1.0, -1.0, -1.0
    if ti.abs(det) > 1e-30:
        inv = 1.0 / det
        s = o - a
        u = s.dot(pv) * inv
        q = s.cross(e1)
        w = d.dot(q) * inv
        t = e2.dot(q) * inv
    return ti.math.vec3(t, u, w)


@ti.kernel
def _clear_key(key: ndarray(ndim=2)):
    for i, j in key:
        key[i, j] = ti.i64(_EMPTY_KEY)


@ti.kernel
def _corner_normals(
    v: ndarray(ndim=2),
    tris: ndarray(ndim=2),
    ptr: ndarray(ndim=1),
    adj: ndarray(ndim=1),
    cos_crease: ti.f32,
    normals: ndarray(ndim=3),
):
    """Smooth normal of every triangle corner: the area-weighted sum of the normals of the
    triangles around that vertex whose normal is within the crease angle of this triangle's
    (a pad's rim stays sharp, its dented face shades smoothly). ``ptr``/``adj``: vertex ->
    incident triangles (CSR)."""
    for f in range(tris.shape[0]):
        nf = _face_normal(v, tris, f)
        uf = _unit(nf)
        for c in ti.static(range(3)):
            p = tris[f, c]
            acc = ti.math.vec3(0.0)
            for k in range(ptr[p], ptr[p + 1]):
                ng = _face_normal(v, tris, adj[k])
                if _unit(ng).dot(uf) >= cos_crease:
                    acc += ng
            if acc.norm() <= 0.0:
                acc = nf
            n = _unit(acc)
            for ch in ti.static(range(3)):
                normals[f, c, ch] = ti.cast(n[ch], ti.f32)


@ti.kernel
def _shadow_triangles(
    v: ndarray(ndim=2),
    tris: ndarray(ndim=2),
    shadow: ndarray(ndim=2),
    light: ti.math.vec3,
    s_origin: ti.math.vec3,
    s_u: ti.math.vec3,
    s_v: ti.math.vec3,
    texel: ti.f32,
    hmin: ti.f32,
    hmax: ti.f32,
):
    """Rasterize every triangle into the light-space height map (orthographic, so the height
    along the light is linear in the texel coordinates); keep the highest surface."""
    R = shadow.shape[0]
    for f in range(tris.shape[0]):
        P = ti.Matrix.zero(float, 3, 3)  # rows: (u, v) in texels, height along the light
        for c in ti.static(range(3)):
            p = _vertex(v, tris, f, c)
            rel = p - s_origin
            P[c, 0] = rel.dot(s_u) / texel
            P[c, 1] = rel.dot(s_v) / texel
            P[c, 2] = p.dot(light)
        area = (P[1, 0] - P[0, 0]) * (P[2, 1] - P[0, 1]) - (P[2, 0] - P[0, 0]) * (P[1, 1] - P[0, 1])
        if ti.abs(area) > 1e-12:
            umin = ti.math.clamp(ti.min(P[0, 0], P[1, 0], P[2, 0]), -1.0, R + 1.0)
            umax = ti.math.clamp(ti.max(P[0, 0], P[1, 0], P[2, 0]), -1.0, R + 1.0)
            vmin = ti.math.clamp(ti.min(P[0, 1], P[1, 1], P[2, 1]), -1.0, R + 1.0)
            vmax = ti.math.clamp(ti.max(P[0, 1], P[1, 1], P[2, 1]), -1.0, R + 1.0)
            a0 = ti.max(ti.cast(ti.floor(umin - 0.5), ti.i32), 0)
            a1 = ti.min(ti.cast(ti.floor(umax - 0.5), ti.i32) + 1, R - 1)
            b0 = ti.max(ti.cast(ti.floor(vmin - 0.5), ti.i32), 0)
            b1 = ti.min(ti.cast(ti.floor(vmax - 0.5), ti.i32) + 1, R - 1)
            for a in range(a0, a1 + 1):
                for b in range(b0, b1 + 1):
                    px = a + 0.5 - P[0, 0]
                    py = b + 0.5 - P[0, 1]
                    w1 = (px * (P[2, 1] - P[0, 1]) - (P[2, 0] - P[0, 0]) * py) / area
                    w2 = ((P[1, 0] - P[0, 0]) * py - px * (P[1, 1] - P[0, 1])) / area
                    if w1 >= -1e-6 and w2 >= -1e-6 and w1 + w2 <= 1.0 + 1e-6:
                        h = (1.0 - w1 - w2) * P[0, 2] + w1 * P[1, 2] + w2 * P[2, 2]
                        ti.atomic_max(shadow[a, b], shadow_height(h, hmin, hmax))


@ti.kernel
def _raster_triangles(
    v: ndarray(ndim=2),
    tris: ndarray(ndim=2),
    key: ndarray(ndim=2),
    cam: ti.math.vec3,
    basis: ti.math.mat3,
    focal: ti.f32,
):
    """Z-buffer pass: per pixel of a triangle's screen bounding box, the exact ray-triangle
    depth, and atomic_min of (quantized depth << 32 | triangle index)."""
    H, W = key.shape[0], key.shape[1]
    right = ti.math.vec3(basis[0, 0], basis[0, 1], basis[0, 2])
    up = ti.math.vec3(basis[1, 0], basis[1, 1], basis[1, 2])
    fwd = ti.math.vec3(basis[2, 0], basis[2, 1], basis[2, 2])
    for f in range(tris.shape[0]):
        a = _vertex(v, tris, f, 0)
        b = _vertex(v, tris, f, 1)
        c = _vertex(v, tris, f, 2)
        umin, umax, vmin, vmax = 1e9, -1e9, 1e9, -1e9
        n_behind = 0
        for q in ti.static(range(3)):
            rel = ti.static([a, b, c])[q] - cam
            zc = rel.dot(fwd)
            if zc < NEAR:
                n_behind += 1
            else:
                u = 0.5 * W + focal * rel.dot(right) / zc
                w = 0.5 * H - focal * rel.dot(up) / zc
                umin, umax = ti.min(umin, u), ti.max(umax, u)
                vmin, vmax = ti.min(vmin, w), ti.max(vmax, w)
        if n_behind < 3:
            if n_behind > 0:  # crosses the camera plane: its projection is unbounded
                umin, umax, vmin, vmax = 0.0, W * 1.0, 0.0, H * 1.0
            j0 = ti.max(ti.cast(ti.floor(ti.max(umin, -1.0)), ti.i32) - 1, 0)
            j1 = ti.min(ti.cast(ti.floor(ti.min(umax, W + 1.0)), ti.i32) + 1, W - 1)
            i0 = ti.max(ti.cast(ti.floor(ti.max(vmin, -1.0)), ti.i32) - 1, 0)
            i1 = ti.min(ti.cast(ti.floor(ti.min(vmax, H + 1.0)), ti.i32) + 1, H - 1)
            for i in range(i0, i1 + 1):
                for j in range(j0, j1 + 1):
                    d = ray_dir(i, j, H, W, basis, focal)
                    r = _ray_triangle(cam, d, a, b, c)
                    e = 1e-5
                    if r[1] >= -e and r[2] >= -e and r[1] + r[2] <= 1.0 + e and r[0] > NEAR and r[0] < T_FAR:
                        qd = ti.cast(r[0] * _DEPTH_SCALE, ti.i64)
                        ti.atomic_min(key[i, j], (qd << 32) | ti.cast(f, ti.i64))


@ti.func
def _shade_gel(base, n, view, lit, light):
    """Silicone look: wrapped Lambert (light scattered inside the gel reaches just past the
    terminator and softens its shadows), a soft highlight, and a pale Fresnel-like rim."""
    ndl = (n.dot(light) + _GEL_WRAP) / (1.0 + _GEL_WRAP)
    diffuse = ti.max(ndl, 0.0) * (0.3 + 0.7 * lit)
    h = (light - view).normalized()
    highlight = 0.22 * ti.pow(ti.max(n.dot(h), 0.0), 40.0) * lit
    out = base * (AMBIENT + DIFFUSE * diffuse) + highlight
    rim = ti.pow(1.0 - ti.abs(n.dot(view)), 3.0)
    return ti.math.mix(out, ti.math.vec3(*_GEL_RIM), 0.35 * rim)


@ti.kernel
def _resolve_triangles(
    v: ndarray(ndim=2),
    tris: ndarray(ndim=2),
    normals: ndarray(ndim=3),
    colors: ndarray(ndim=2),
    key: ndarray(ndim=2),
    image: ndarray(ndim=3),
    depth: ndarray(ndim=2),
    cam: ti.math.vec3,
    basis: ti.math.mat3,
    focal: ti.f32,
    shadow: ndarray(ndim=2),
    light: ti.math.vec3,
    s_origin: ti.math.vec3,
    s_u: ti.math.vec3,
    s_v: ti.math.vec3,
    texel: ti.f32,
    hmin: ti.f32,
    hmax: ti.f32,
):
    """Shade the winning triangle of every pixel nearer than what is drawn: Phong-interpolated
    corner normals (facing the viewer: both sides are drawn), shadows with a slope-scaled bias."""
    H, W = image.shape[0], image.shape[1]
    for i, j in ti.ndrange(H, W):
        k = key[i, j]
        if k != ti.i64(_EMPTY_KEY):
            f = ti.cast(k & ti.i64(0xFFFFFFFF), ti.i32)
            a = _vertex(v, tris, f, 0)
            b = _vertex(v, tris, f, 1)
            c = _vertex(v, tris, f, 2)
            d = ray_dir(i, j, H, W, basis, focal)
            r = _ray_triangle(cam, d, a, b, c)
            t = r[0]
            if t < depth[i, j]:
                u = ti.math.clamp(r[1], 0.0, 1.0)
                w = ti.math.clamp(r[2], 0.0, 1.0 - u)
                n = ti.math.vec3(0.0)
                for ch in ti.static(range(3)):
                    n[ch] = (1.0 - u - w) * normals[f, 0, ch] + u * normals[f, 1, ch] + w * normals[f, 2, ch]
                n = _unit(n)
                if (b - a).cross(c - a).dot(d) > 0.0:  # the back side faces the camera
                    n = -n
                cos_l = ti.max(ti.abs(n.dot(light)), 0.2)
                bias = texel * (1.5 + ti.min(1.5 * ti.sqrt(1.0 - cos_l * cos_l) / cos_l, 4.0))
                hit = cam + t * d
                lit = lit_fraction(hit, bias, shadow, light, s_origin, s_u, s_v, texel, hmin, hmax)
                base = ti.math.vec3(colors[f, 0], colors[f, 1], colors[f, 2])
                out = _shade_gel(base, n, d, lit, light)
                for ch in ti.static(range(3)):
                    image[i, j, ch] = ti.cast(out[ch], ti.f32)
                depth[i, j] = ti.cast(t, ti.f32)


@ti.kernel
def _to_u8(image: ndarray(ndim=3), out: ndarray(ndim=3)):
    for i, j, c in ti.ndrange(image.shape[0], image.shape[1], 3):
        out[i, j, c] = ti.cast(ti.math.clamp(image[i, j, c], 0.0, 1.0) * 255.0 + 0.5, ti.u8)


# --------------------------------------------------------------------------------------------
# Host side
# --------------------------------------------------------------------------------------------


def _bounding_sphere(shape: geometry.Shape) -> tuple[np.ndarray, float]:
    """Local centre and radius of a sphere containing the solid (inf for a plane)."""
    p = shape.params()
    kind = shape.kind
    if kind == geometry.BOX:
        return np.zeros(3), float(np.linalg.norm(p[:3]))
    if kind == geometry.SPHERE:
        return np.zeros(3), float(p[0])
    if kind == geometry.CAPSULE:
        return np.zeros(3), float(p[0] + p[1])
    if kind == geometry.CYLINDER:
        return np.zeros(3), float(math.hypot(p[0], p[1]))
    if kind == geometry.CUP:
        return np.array([0.0, 0.0, 0.5 * p[1]]), float(math.hypot(p[0], 0.5 * p[1]))
    if kind == geometry.BOWL:
        return np.zeros(3), float(p[0])
    if kind == geometry.MESH:
        lo = np.asarray(shape.lo)
        half = 0.5 * (shape.resolution - 1) * shape.voxel_size
        return lo + half, float(math.sqrt(3.0) * half)
    return np.zeros(3), math.inf


def _is_container(shape: geometry.Shape) -> bool:
    return shape.kind in (geometry.CUP, geometry.BOWL)


def particle_colors(model: Any) -> np.ndarray:
    """(N, 3) float64 RGB in [0, 1]: each particle's material color (``Material.color``)."""
    table = np.array([m.color for m in model.materials], dtype=np.float64).reshape(-1, 3)
    return np.clip(table[np.asarray(model.material_id)], 0.0, 1.0)


CLEAR_LIQUIDS = {"water": 0.9}
"""Clarity of clear liquids: a fluid material whose name contains a key (``water``,
``tank_water``, ``mix_water``) gets its value; every other material is opaque."""
_LIQUID_GLOSS, _SOLID_GLOSS = 1.0, 0.25


def particle_optics(model: Any) -> np.ndarray:
    """(N, 2) float64 ``(clarity, gloss)`` of each particle for :meth:`Renderer.render`.

    Liquids (``fluid`` materials) are glossy, and clear when their name contains a key of
    :data:`CLEAR_LIQUIDS` (water); milk, coffee and every solid (elastic, elastoplastic, viscoplastic, rigid) are
    opaque, the solids with a soft sheen.
    """
    from engine.materials import FLUID

    def clarity(name: str) -> float:
        return max((v for k, v in CLEAR_LIQUIDS.items() if k in name), default=0.0)

    table = np.array(
        [(clarity(m.name), _LIQUID_GLOSS) if m.kind == FLUID else (0.0, _SOLID_GLOSS) for m in model.materials],
        dtype=np.float64,
    ).reshape(-1, 2)
    return table[np.asarray(model.material_id)]


def _check_meshes(meshes: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """Validate ``meshes`` and merge them: (vertices (V, 3), triangles (F, 3) into the merged
    vertices, per-triangle colors (F, 3)); None when there is no triangle to draw."""
    if isinstance(meshes, (str, bytes)) or not isinstance(meshes, Sequence):
        raise ValueError(f"meshes must be a sequence of (vertices, triangles[, color]), got {type(meshes).__name__}")
    verts, faces, colors, offset = [], [], [], 0
    for k, item in enumerate(meshes):
        name = f"meshes[{k}]"
        if not isinstance(item, (tuple, list)) or len(item) not in (2, 3):
            raise ValueError(f"{name} must be (vertices, triangles) or (vertices, triangles, color)")
        v = as_numpy(item[0], f"{name} vertices")
        if v.ndim != 2 or v.shape[1] != 3:
            raise ValueError(f"{name} vertices must have shape (V, 3), got {v.shape}")
        if not np.all(np.isfinite(v)):
            raise ValueError(f"{name} vertices contain NaN/Inf ({int((~np.isfinite(v)).any(axis=1).sum())} vertices)")
        t = item[1]
        if hasattr(t, "detach"):
            t = t.detach().cpu().numpy()
        t = np.asarray(t)
        if t.dtype.kind not in "iu":
            raise ValueError(f"{name} triangles must be an integer array, got dtype {t.dtype}")
        if t.ndim != 2 or t.shape[1] != 3:
            raise ValueError(f"{name} triangles must have shape (F, 3), got {t.shape}")
        if t.size and (t.min() < 0 or t.max() >= len(v)):
            raise ValueError(
                f"{name} triangles index vertices out of range [0, {len(v)}): min {t.min()}, max {t.max()}"
            )
        color = SILICONE if len(item) == 2 else item[2]
        c = np.asarray(as_numpy(color, f"{name} color"))
        if c.shape != (3,) or not np.all(np.isfinite(c)) or c.min() < 0.0 or c.max() > 1.0:
            raise ValueError(f"{name} color must be RGB in [0, 1], got {color!r}")
        verts.append(v)
        faces.append(t.astype(np.int64) + offset)
        colors.append(np.broadcast_to(c, (len(t), 3)))
        offset += len(v)
    if offset + 1 >= 2**31 or sum(len(f) for f in faces) >= 2**31:
        raise ValueError("meshes: too many vertices or triangles (2^31 at most)")
    if not faces or not sum(len(f) for f in faces):
        return None
    return np.concatenate(verts), np.concatenate(faces), np.concatenate(colors)


def sensor_meshes(sim: Any, x: Any = None, batch_index: int = 0, color: Any = SILICONE) -> list[tuple]:
    """The FEM sensor gels of a simulator as :meth:`Renderer.render` ``meshes``.

    Each sensor k gives ``(x[b, sim.fem.nodes_of(k)], mesh.boundary_faces, color)``: its world
    node positions (interior nodes included, unused) and its whole outer surface, outward.

    Args:
        sim: an :class:`engine.simulator.Simulator` (a scene without sensors gives ``[]``).
        x: the sensor nodes: None for the fast path's current state (``sim.get_state()``), a
            :class:`engine.state.State`, or world node positions ``(B, n, 3)`` / ``(n, 3)`` [m]
            of all sensors concatenated (e.g. a rollout's ``out.sensor_x[t]``).
        batch_index: which scene of the batch.
        color: one RGB for every sensor, or one RGB per sensor.

    Raises:
        ValueError: ``x`` of the wrong shape, a bad ``batch_index`` or ``color``.
    """
    sensors = tuple(getattr(sim.model, "sensors", ()))
    if not sensors:
        return []
    if x is None:
        x = sim.get_state()
    if hasattr(x, "sensors"):
        if x.sensors is None:
            raise ValueError("x is a State without sensors")
        x = x.sensors.x
    x = as_numpy(x, "x")
    n = int(sim.fem.n_nodes)
    if x.ndim == 3:
        if isinstance(batch_index, bool) or not isinstance(batch_index, (int, np.integer)):
            raise ValueError(f"batch_index must be an int, got {batch_index!r}")
        if not -len(x) <= batch_index < len(x):
            raise ValueError(f"batch_index {batch_index} out of range for a batch of {len(x)}")
        x = x[batch_index]
    if x.shape != (n, 3):
        raise ValueError(f"x must have shape (B, {n}, 3) or ({n}, 3) (all sensor nodes), got {x.shape}")
    colors = np.asarray(color, dtype=np.float64)
    if colors.ndim == 1:
        colors = np.broadcast_to(colors, (len(sensors), *colors.shape))
    if colors.shape != (len(sensors), 3):
        raise ValueError(f"color must be one RGB or one RGB per sensor ({len(sensors)}), got {np.shape(color)}")
    return [
        (x[sim.fem.nodes_of(k)], np.asarray(s.mesh.boundary_faces), tuple(float(c) for c in colors[k]))
        for k, s in enumerate(sensors)
    ]


def as_numpy(a: Any, name: str) -> np.ndarray:
    """``a`` (array-like or torch tensor) as a float64 numpy array; ValueError naming ``name``."""
    if hasattr(a, "detach"):  # torch.Tensor
        a = a.detach().cpu().numpy()
    try:
        return np.asarray(a, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a numeric array, got {type(a).__name__}") from None


class Renderer:
    """Headless particle + collider renderer producing ``(H, W, 3)`` uint8 frames.

    Args:
        width, height: image size [pixels].
        camera_pos: camera position [m].
        look_at: point the camera looks at [m]; the camera's up direction is ``+z``.
        fov_deg: vertical field of view [degrees], in (0, 180).
        particle_radius: sphere radius of a particle [m]; None estimates it on the first
            :meth:`render` as 0.7 x the median nearest-neighbour distance of the particles (a
            particle sampled at spacing h then gets radius 0.7 h) and keeps it.
        floor_z: height of the floor plane [m].
        light_dir: direction toward the light (normalized here).
        scene_bounds: ``(lo, hi)`` corners [m] of the region that casts and receives shadows.
        checker: size of a floor checker square [m].
    """

    def __init__(
        self,
        width: int = 256,
        height: int = 256,
        camera_pos: Sequence[float] = (0.5, -0.9, 0.9),
        look_at: Sequence[float] = (0.5, 0.5, 0.25),
        fov_deg: float = 45.0,
        particle_radius: float | None = None,
        floor_z: float = 0.0,
        light_dir: Sequence[float] = (-0.35, -0.5, 1.0),
        scene_bounds: tuple[Sequence[float], Sequence[float]] = ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0)),
        checker: float = 0.1,
    ):
        for name, v in (("width", width), ("height", height)):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or not 1 <= v <= 8192:
                raise ValueError(f"{name} must be an int in [1, 8192], got {v!r}")
        self.width, self.height = int(width), int(height)
        self.set_camera(camera_pos, look_at, fov_deg)
        if particle_radius is not None:
            if not (isinstance(particle_radius, (int, float)) and math.isfinite(particle_radius)):
                raise ValueError(f"particle_radius must be a positive number or None, got {particle_radius!r}")
            if particle_radius <= 0.0:
                raise ValueError(f"particle_radius must be > 0, got {particle_radius!r}")
            particle_radius = float(particle_radius)
        self.particle_radius = particle_radius
        if not (isinstance(floor_z, (int, float)) and math.isfinite(floor_z)):
            raise ValueError(f"floor_z must be a finite number, got {floor_z!r}")
        self.floor_z = float(floor_z)
        light = self._vec3("light_dir", light_dir)
        if np.linalg.norm(light) < 1e-9:
            raise ValueError("light_dir must be non-zero")
        self._light = light / np.linalg.norm(light)
        lo, hi = (self._vec3("scene_bounds", b) for b in scene_bounds)
        if not np.all(lo < hi):
            raise ValueError(f"scene_bounds must have lo < hi, got {scene_bounds!r}")
        if not (isinstance(checker, (int, float)) and checker > 0.0):
            raise ValueError(f"checker must be > 0, got {checker!r}")
        self.checker = float(checker)
        self._setup_shadow_frame(lo, hi)
        self._buffers: dict[str, Any] = {}
        self._packed_key: tuple | None = None
        self._packed: tuple | None = None
        self._mesh_topology: tuple | None = None
        self._glass_cache: dict[int, tuple] = {}
        self._body_colliders: dict[int, tuple] = {}

    def set_camera(self, camera_pos: Sequence[float], look_at: Sequence[float], fov_deg: float | None = None) -> None:
        """Move the camera (e.g. to a view of :func:`engine.render_camera.orbit`); the buffers stay.

        Args:
            camera_pos: camera position [m].
            look_at: point the camera looks at [m]; the up direction is ``+z``.
            fov_deg: vertical field of view [degrees] in (0, 180); None keeps the current one.

        Raises:
            ValueError: non-finite or coincident points, or a bad field of view.
        """
        camera_pos = self._vec3("camera_pos", camera_pos)
        look_at = self._vec3("look_at", look_at)
        fwd = look_at - camera_pos
        if np.linalg.norm(fwd) < 1e-9:
            raise ValueError("camera_pos and look_at must differ")
        fwd /= np.linalg.norm(fwd)
        right = np.cross(fwd, [0.0, 0.0, 1.0])
        if np.linalg.norm(right) < 1e-6:  # looking straight up or down: pick +x as right
            right = np.array([1.0, 0.0, 0.0])
        right /= np.linalg.norm(right)
        up = np.cross(right, fwd)
        if fov_deg is None:
            fov_deg = self.fov_deg
        if not (isinstance(fov_deg, (int, float)) and 0.0 < float(fov_deg) < 180.0):
            raise ValueError(f"fov_deg must be in (0, 180), got {fov_deg!r}")
        self.camera_pos, self.look_at, self._basis = camera_pos, look_at, np.stack([right, up, fwd])
        self.fov_deg = float(fov_deg)
        self._focal = 0.5 * self.height / math.tan(math.radians(self.fov_deg) / 2.0)

    @staticmethod
    def _vec3(name: str, v: Any) -> np.ndarray:
        try:
            a = np.array(v, dtype=np.float64)
        except (TypeError, ValueError):
            raise ValueError(f"{name} must be 3 numbers, got {v!r}") from None
        if a.shape != (3,) or not np.all(np.isfinite(a)):
            raise ValueError(f"{name} must be 3 finite numbers, got {v!r}")
        return a

    def _setup_shadow_frame(self, lo: np.ndarray, hi: np.ndarray) -> None:
        """Orthographic light frame covering the scene box (and the floor under it)."""
        L = self._light
        helper = np.array([1.0, 0.0, 0.0]) if abs(L[0]) < 0.9 else np.array([0.0, 1.0, 0.0])
        s_u = np.cross(L, helper)
        s_u /= np.linalg.norm(s_u)
        s_v = np.cross(L, s_u)
        lo = lo.copy()
        lo[2] = min(lo[2], self.floor_z)
        corners = np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])])
        margin = 0.05 * float(np.linalg.norm(hi - lo))
        cu, cv, ch = corners @ s_u, corners @ s_v, corners @ L
        extent = max(cu.max() - cu.min(), cv.max() - cv.min()) + 2 * margin
        self._texel = extent / _SHADOW_RES
        self._s_origin = (cu.min() - margin) * s_u + (cv.min() - margin) * s_v
        self._s_u, self._s_v = s_u, s_v
        self._hmin, self._hmax = float(ch.min() - margin), float(ch.max() + margin)

    # ------------------------------------------------------------------ buffers
    def _buffer(self, name: str, dtype, shape: tuple[int, ...]):
        arr = self._buffers.get(name)
        if arr is None or tuple(arr.shape) != shape:
            arr = ti.ndarray(dtype, shape)
            self._buffers[name] = arr
        return arr

    def _pack_colliders(self, items: list[tuple[Collider, np.ndarray]]):
        cols = tuple(c for c, _ in items)
        key = tuple(id(c) for c in cols)
        if self._packed_key != key:
            packed = pack_colliders(cols)
            real = runtime.real_dtype()
            npr = np.float64 if real == ti.f64 else np.float32
            shapes = ti.ndarray(real, packed.params.shape)
            shapes.from_numpy(packed.params.astype(npr))
            mesh = ti.ndarray(real, packed.mesh_sdf.shape)
            mesh.from_numpy(packed.mesh_sdf.astype(npr))
            bounds = [_bounding_sphere(c.shape) for c in cols]
            self._packed = (cols, shapes, mesh, bounds)
            self._packed_key = key
        return self._packed

    # ------------------------------------------------------------------ validation
    def _check_colliders(self, colliders: Any) -> list[tuple[Collider, np.ndarray]]:
        items = []
        for n, item in enumerate(colliders):
            if isinstance(item, Collider):
                c, pose = item, item.pose
            else:
                try:
                    c, pose = item
                except (TypeError, ValueError):
                    raise ValueError(f"colliders[{n}] must be a Collider or a (Collider, pose) pair") from None
                if not isinstance(c, Collider):
                    raise ValueError(f"colliders[{n}][0] must be a Collider, got {type(c).__name__}")
            pose = np.asarray(geometry.normalize_pose(as_numpy(pose, f"colliders[{n}] pose"), f"colliders[{n}] pose"))
            items.append((c, pose))
        return items

    def _estimate_radius(self, x: np.ndarray) -> float:
        if len(x) < 2:
            return 0.01
        from scipy.spatial import cKDTree

        dist, _ = cKDTree(x).query(x, k=2)
        nn = dist[:, 1]
        nn = nn[nn > 0]
        return float(0.7 * np.median(nn)) if len(nn) else 0.01

    # ------------------------------------------------------------------ rendering
    def render(
        self,
        x: Any,
        colors: Any = None,
        colliders: Sequence[Any] = (),
        collider_colors: Sequence[Sequence[float]] | None = None,
        meshes: Sequence[Any] = (),
        bodies: Sequence[Any] = (),
        optics: Any = None,
    ) -> np.ndarray:
        """Render one frame.

        Args:
            x: (N, 3) particle positions [m], numpy or torch (N may be 0).
            colors: (N, 3) RGB in [0, 1] (e.g. :func:`particle_colors`); None means grey.
            colliders: sequence of ``(Collider, pose (7,))`` (or bare Colliders at their own pose).
            collider_colors: optional RGB or RGBA per collider (alpha < 1 draws it as glass);
                default: containers (Cup, Bowl) glass, tools from a fixed palette.
            meshes: sequence of triangle meshes ``(vertices (V, 3) [m], triangles (F, 3) int)`` or
                ``(vertices, triangles, color RGB)``, world frame (e.g. :func:`sensor_meshes`);
                drawn opaque with the silicone look (default color :data:`SILICONE`), smooth
                normals within creases of 40 degrees, both sides, casting and receiving shadows.
            bodies: sequence of ``(RigidBody, pose (7,))`` (engine/solvers/rigid.py), drawn
                opaque in the body's colour.
            optics: (N, 2) per-particle ``(clarity, gloss)`` in [0, 1] (e.g.
                :func:`particle_optics`): clarity 0 is an opaque body (milk, dough), near 1 a
                clear liquid that shows what lies behind it, tinted by its colour; gloss weights
                the Fresnel reflection and the highlight (1 for liquids). None: opaque, gloss 0.3.

        Returns:
            ``(height, width, 3)`` uint8 image.

        Raises:
            ValueError: wrong shapes, NaN/Inf positions or colors, colors or optics outside [0, 1],
                malformed colliders/poses, or malformed meshes (the message names
                ``meshes[k]`` and the part: vertices, triangles or color).
        """
        runtime.require()
        x = as_numpy(x, "x")
        if x.ndim != 2 or x.shape[1] != 3:
            raise ValueError(f"x must have shape (N, 3), got {x.shape}")
        if not np.all(np.isfinite(x)):
            raise ValueError(f"x contains NaN/Inf ({int((~np.isfinite(x)).any(axis=1).sum())} particles)")
        N = len(x)
        if colors is None:
            colors = np.full((N, 3), 0.6)
        colors = as_numpy(colors, "colors")
        if colors.shape != (N, 3):
            raise ValueError(f"colors must have shape ({N}, 3) to match x, got {colors.shape}")
        if not np.all(np.isfinite(colors)):
            raise ValueError("colors contain NaN/Inf")
        if N and (colors.min() < 0.0 or colors.max() > 1.0):
            raise ValueError(f"colors must lie in [0, 1], got range [{colors.min():g}, {colors.max():g}]")
        if optics is None:
            optics = np.tile(_DEFAULT_OPTICS, (N, 1))
        optics = as_numpy(optics, "optics")
        if optics.shape != (N, 2):
            raise ValueError(f"optics must have shape ({N}, 2) to match x, got {optics.shape}")
        if N and not (np.all(np.isfinite(optics)) and optics.min() >= 0.0 and optics.max() <= 1.0):
            raise ValueError("optics (clarity, gloss) must lie in [0, 1]")
        items = self._check_colliders(colliders)
        styles = self._collider_styles(items, collider_colors)

        for n, (body, pose) in enumerate(bodies):
            cached = self._body_colliders.get(id(body))
            if cached is None or cached[0] is not body:  # one Collider per body keeps the packing
                cached = self._body_colliders[id(body)] = (body, Collider(body.shape))
            items += self._check_colliders([(cached[1], pose)])
            color = np.asarray(body.color, dtype=np.float64)
            if color.shape != (3,) or color.min() < 0 or color.max() > 1:
                raise ValueError(f"bodies[{n}].color must be RGB in [0, 1], got {body.color!r}")
            styles.append((*(float(c) for c in color), 1.0))
        mesh = _check_meshes(meshes)
        if self.particle_radius is None and N:
            self.particle_radius = self._estimate_radius(x)
        radius = self.particle_radius or 0.01

        H, W = self.height, self.width
        image = self._buffer("image", ti.f32, (H, W, 3))
        depth = self._buffer("depth", ti.f32, (H, W))
        shadow = self._buffer("shadow", ti.i32, (_SHADOW_RES, _SHADOW_RES))
        out = self._buffer("out", ti.u8, (H, W, 3))
        cam = ti.math.vec3(*self.camera_pos)
        basis = ti.math.mat3(self._basis.tolist())
        focal = self._focal
        light = ti.math.vec3(*self._light)
        sh = (
            shadow,
            light,
            ti.math.vec3(*self._s_origin),
            ti.math.vec3(*self._s_u),
            ti.math.vec3(*self._s_v),
            self._texel,
            self._hmin,
            self._hmax,
        )

        shadow.fill(0)
        if N:
            xs = self._buffer("x", ti.f32, (N, 3))
            cs = self._buffer("colors", ti.f32, (N, 3))
            os_ = self._buffer("optics", ti.f32, (N, 2))
            xs.from_numpy(x.astype(np.float32))
            cs.from_numpy(colors.astype(np.float32))
            os_.from_numpy(optics.astype(np.float32))
            _shadow_particles(xs, os_, radius, *sh)
        packed = self._pack_colliders(items) if items else None
        traced = []
        for k, (c, pose) in enumerate(items):
            center_local, b_radius = packed[3][k]
            if math.isinf(b_radius):
                center, b_radius = self.camera_pos, 2.0 * T_FAR
            else:
                center = geometry.quat_rotate_numpy(pose[3:], center_local[None])[0] + pose[:3]
                b_radius = 1.01 * b_radius + 1e-3
            g = (c.shape.kind, packed[1], k, packed[2], ti.math.vec3(*pose[:3]), ti.math.vec4(*pose[3:]))
            traced.append((g, ti.math.vec3(*center), b_radius, center))
            if styles[k][3] >= 1.0:  # clear glass casts no shadow, so liquid inside stays lit
                _shadow_collider(*g, ti.math.vec3(*center), b_radius, *sh)
        if mesh is not None:
            mv, mt, mn, mc = self._upload_mesh(*mesh)
            _shadow_triangles(mv, mt, *sh)

        # Opaque parts first (they write depth): floor, meshes, opaque colliders and bodies.
        _background(image, depth, cam, basis, focal, self.floor_z, self.checker, *sh)
        if mesh is not None:
            key = self._buffer("key", ti.i64, (H, W))
            _clear_key(key)
            _raster_triangles(mv, mt, key, cam, basis, focal)
            _resolve_triangles(mv, mt, mn, mc, key, image, depth, cam, basis, focal, *sh)
        opaque = [k for k in range(len(items)) if styles[k][3] >= 1.0]
        glass = sorted(
            (k for k in range(len(items)) if styles[k][3] < 1.0),
            key=lambda k: -float(np.linalg.norm(traced[k][3] - self.camera_pos)),
        )
        for k in opaque:
            g, center, b_radius, _ = traced[k]
            rgb = ti.math.vec3(*styles[k][:3])
            _march_collider(*g, center, b_radius, rgb, image, depth, cam, basis, focal, *sh)
        layers = [self._glass_layers(k, items[k][1], traced[k], styles[k]) for k in glass]
        # The particle surface in front of the opaque parts; glass beyond it, the surface
        # refracting what lies behind it, then glass in front of it.
        split = self._buffer("surface_t", ti.f32, (H, W))
        if N:
            surface = self._surface_buffers(H, W)
            render_surface.clear(surface["zkey"], surface["thick"], surface["acc"])
            render_surface.splat_depth(xs, radius, depth, surface["zkey"], surface["thick"], cam, basis, focal)
            render_surface.splat_material(xs, cs, os_, radius, surface["zkey"], surface["acc"], cam, basis, focal)
            render_surface.unpack(surface["zkey"], surface["thick"], surface["t0"], surface["T0"])
            max_px = max(2, round(_SMOOTH_MAX_PX * H / 256))
            render_surface.smooth(0, surface["t0"], surface["T0"], surface["t1"], surface["T1"], radius, focal, max_px)
            render_surface.smooth(1, surface["t1"], surface["T1"], split, surface["T0"], radius, focal, max_px)
        else:
            split.fill(0.0)
        for hit_t, hit_rgba in layers:
            _compose_glass(False, hit_t, hit_rgba, split, image, depth)
        if N:
            behind = self._buffer("behind", ti.f32, (H, W, 3))
            render_surface.copy_image(image, behind)
            render_surface.shade_surface(
                split, surface["T0"], surface["acc"], behind, image, depth, radius, cam, basis, focal, *sh
            )
            for hit_t, hit_rgba in layers:
                _compose_glass(True, hit_t, hit_rgba, split, image, depth)
        _to_u8(image, out)
        return out.to_numpy()

    def _glass_layers(self, k: int, pose: np.ndarray, traced: tuple, style: tuple) -> tuple[Any, Any]:
        """The traced layers of glass collider k seen from the current camera, traced again only
        when its shape, pose or colour changed (a few cameras are remembered, for multi-view)."""
        g, center, b_radius, _ = traced
        H, W = self.height, self.width
        camera = (self.camera_pos.tobytes(), self._basis.tobytes(), self._focal, H, W)
        stamp = (self._packed_key, pose.tobytes(), style)
        cached = self._glass_cache.get((k, camera))
        if cached is not None and cached[0] == stamp:
            return cached[1]
        if cached is None and len(self._glass_cache) >= _GLASS_CACHE_SIZE:
            self._glass_cache.clear()
        layers = cached[1] if cached is not None else (ti.ndarray(ti.f32, (H, W, 2)), ti.ndarray(ti.f32, (H, W, 2, 4)))
        basis = ti.math.mat3(self._basis.tolist())
        cam, light = ti.math.vec3(*self.camera_pos), ti.math.vec3(*self._light)
        _trace_glass(*g, center, b_radius, ti.math.vec4(*style), *layers, cam, basis, self._focal, light)
        self._glass_cache[(k, camera)] = (stamp, layers)
        return layers

    def _surface_buffers(self, H: int, W: int) -> dict[str, Any]:
        """The particle-surface work buffers (render_surface's integer splats and float images)."""
        return {
            "zkey": self._buffer("zkey", ti.i32, (H, W)),
            "thick": self._buffer("thick", ti.i32, (H, W)),
            "acc": self._buffer("acc", ti.i32, (H, W, render_surface.ACC_CHANNELS)),
            "t0": self._buffer("t0", ti.f32, (H, W)),
            "T0": self._buffer("T0", ti.f32, (H, W)),
            "t1": self._buffer("t1", ti.f32, (H, W)),
            "T1": self._buffer("T1", ti.f32, (H, W)),
        }

    def _upload_mesh(self, vertices: np.ndarray, triangles: np.ndarray, colors: np.ndarray):
        """Copy the merged mesh to the device; rebuild the vertex -> triangle table only when the
        triangles change; compute the corner normals of these vertices."""
        V, F = len(vertices), len(triangles)
        mv = self._buffer("mesh_v", ti.f32, (V, 3))
        mv.from_numpy(vertices.astype(np.float32))
        mt = self._buffer("mesh_tris", ti.i32, (F, 3))
        mc = self._buffer("mesh_colors", ti.f32, (F, 3))
        mc.from_numpy(colors.astype(np.float32))
        topo = self._mesh_topology
        if topo is None or topo[0] != V or not np.array_equal(topo[1], triangles):
            flat = triangles.reshape(-1)
            ptr = np.zeros(V + 1, dtype=np.int32)
            np.cumsum(np.bincount(flat, minlength=V), out=ptr[1:])
            adj = (np.argsort(flat, kind="stable") // 3).astype(np.int32)
            mt.from_numpy(triangles.astype(np.int32))
            mp = self._buffer("mesh_ptr", ti.i32, (V + 1,))
            mp.from_numpy(ptr)
            ma = self._buffer("mesh_adj", ti.i32, (3 * F,))
            ma.from_numpy(adj)
            self._mesh_topology = (V, triangles.copy())
        mn = self._buffer("mesh_normals", ti.f32, (F, 3, 3))
        cos_crease = math.cos(math.radians(_CREASE_DEG))
        _corner_normals(mv, mt, self._buffers["mesh_ptr"], self._buffers["mesh_adj"], cos_crease, mn)
        return mv, mt, mn, mc

    def _collider_styles(self, items, collider_colors) -> list[tuple[float, float, float, float]]:
        if collider_colors is not None:
            if len(collider_colors) != len(items):
                raise ValueError(f"collider_colors must have {len(items)} entries, got {len(collider_colors)}")
            styles = []
            for n, c in enumerate(collider_colors):
                a = np.asarray(c, dtype=np.float64)
                if a.shape not in ((3,), (4,)) or not np.all(np.isfinite(a)) or a.min() < 0 or a.max() > 1:
                    raise ValueError(f"collider_colors[{n}] must be RGB or RGBA in [0, 1], got {c!r}")
                styles.append(tuple(float(v) for v in (*a[:3], a[3] if len(a) == 4 else 1.0)))
            return styles
        styles, tool = [], 0
        for c, _ in items:
            if _is_container(c.shape):
                styles.append(_GLASS)
            else:
                styles.append(_TOOL_PALETTE[tool % len(_TOOL_PALETTE)])
                tool += 1
        return styles


_VIDEO_EXTENSIONS = (".mp4", ".gif")


def write_video(frames: Iterable[np.ndarray], path: str | os.PathLike, fps: float = 30) -> str:
    """Write frames to an ``.mp4`` (H.264 via imageio-ffmpeg) or ``.gif`` file.

    Args:
        frames: iterable of ``(H, W, 3)`` uint8 images, all the same size, at least one.
        path: output file; its extension picks the format.
        fps: frames per second, > 0.

    Returns:
        The path written, as a string.

    Raises:
        ValueError: unsupported extension, no frames, frames of mixed size or wrong dtype/shape,
            or a bad ``fps``.
    """
    path = os.fspath(path)
    ext = os.path.splitext(path)[1].lower()
    if ext not in _VIDEO_EXTENSIONS:
        raise ValueError(f"unsupported video extension {ext!r} for {path!r}; use one of {_VIDEO_EXTENSIONS}")
    if not (isinstance(fps, (int, float)) and math.isfinite(fps) and fps > 0):
        raise ValueError(f"fps must be a positive number, got {fps!r}")
    stack = []
    for n, f in enumerate(frames):
        a = np.asarray(f)
        if a.ndim != 3 or a.shape[2] != 3 or a.dtype != np.uint8:
            raise ValueError(f"frame {n} must be an (H, W, 3) uint8 array, got {a.shape} {a.dtype}")
        if stack and a.shape != stack[0].shape:
            raise ValueError(f"frame {n} has shape {a.shape}, expected {stack[0].shape} like frame 0")
        stack.append(a)
    if not stack:
        raise ValueError("write_video needs at least one frame")
    import imageio.v2 as imageio

    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    if ext == ".gif":
        imageio.mimsave(path, stack, format="GIF", duration=1000.0 / fps, loop=0)
    else:
        H, W = stack[0].shape[:2]
        pad = ((0, H % 2), (0, W % 2), (0, 0))  # yuv420p needs even sizes
        with imageio.get_writer(path, format="FFMPEG", fps=fps, codec="libx264", macro_block_size=1) as writer:
            for a in stack:
                writer.append_data(np.pad(a, pad, mode="edge") if any(p[1] for p in pad) else a)
    return path
