"""Screen-space particle surfaces: liquids, pastes and soft solids drawn as smooth surfaces.

The particles of a continuum (MLS-MPM liquids, ice cream, dough, jelly) are drawn as the surface
they sample, not as beads, with the screen-space fluid technique of van der Laan, Green and Sainz
("Screen space fluid rendering with curvature flow", I3D 2009), using a bilateral filter for the
smoothing step as in Green's "Screen space fluid rendering for games" (GDC 2010):

1. Depth splats (:func:`splat_depth`): every particle is a sphere of radius ``r``; per covered
   pixel the exact ray-sphere entry distance enters a per-pixel ``atomic_min`` of the quantized
   distance (the front surface), and the chord inside the sphere, clipped at the opaque scene
   behind it, is added to a thickness buffer. Both are integers, so the result does not depend on
   thread order (deterministic on CPU and CUDA).
2. Surface material (:func:`splat_material`): the particles whose entry lies within ``2 r`` of
   the front surface add their RGB, clarity and gloss, weighted by the sphere's coverage of the
   pixel (1 at its centre, 0 at its rim), in fixed point. Only the front layer tints a pixel, so
   milk drawn on coffee shows its pattern.
3. Depth smoothing (:func:`smooth`): a separable bilateral filter (Tomasi and Manduchi,
   ICCV 1998) of the front distance, spatial sigma = ``r`` projected to pixels and range sigma =
   ``2 r``; pixels without particles are neither changed nor used, so silhouettes and depth
   jumps (liquid in front of liquid) stay sharp. The thickness is smoothed with the same
   spatial weights.
4. Shading (:func:`shade_surface`): positions from the smoothed distance, normals from the
   cross product of their screen-space differences (the smaller of the forward and backward
   difference, so edges do not bend normals); a refracted copy of the scene behind, offset along
   the normal and attenuated per channel by Beer-Lambert absorption ``exp(-k (1 - rgb) T)`` over
   the thickness T (a liquid's colour is what it lets through); in-scattering makes the body
   opaque with ``1 - clarity * exp(-T / L)`` (milk and coffee at clarity 0 are opaque, water at
   0.9 is clear until it is deep); a Schlick Fresnel reflection of the sky and a Blinn-Phong
   highlight weighted by gloss (1 for liquids, low for solids); shadowed Lambert for the body.

Conventions: buffers are ``(H, W)`` images of the renderer (row i, column j); distances are
along each pixel's unit ray [m]; a surface distance of 0 marks a pixel without particles.
Kernels take ndarray arguments (they compile once per dtype and are shared by all renderers).
"""

import taichi as ti

from engine.render_shading import NEAR, T_FAR, lit_fraction, ray_dir, shade, sky

ndarray = ti.types.ndarray

DEPTH_SCALE = float((1 << 31) - 1) / T_FAR  # quantized distance units per metre
EMPTY = (1 << 31) - 1
THICK_SCALE = 1e5  # thickness units per metre (10 um)
WEIGHT_SCALE = 256.0  # fixed-point units of a coverage weight and of a colour channel
ACC_CHANNELS = 6  # r, g, b, clarity, gloss, weight
ABSORPTION = 4.0  # Beer-Lambert coefficient of a fully absorbed channel [1/m]
SCATTER_LENGTH = 1.0  # depth over which a clear liquid's in-scattering turns it opaque [m]
REFRACTION_PX = 0.05  # image-space refraction offset per unit normal, as a fraction of the height
SMOOTH_SIGMA = 1.5  # spatial sigma of the depth smoothing, in particle radii
F0 = 0.02  # Schlick reflectance at normal incidence (water)


@ti.func
def _project(c, rel, H, W, basis, focal, radius):
    """Screen bounding box (i0, i1, j0, j1) of a sphere of ``radius`` at ``rel`` from the camera."""
    right = ti.math.vec3(basis[0, 0], basis[0, 1], basis[0, 2])
    up = ti.math.vec3(basis[1, 0], basis[1, 1], basis[1, 2])
    fwd = ti.math.vec3(basis[2, 0], basis[2, 1], basis[2, 2])
    zc = rel.dot(fwd)
    box = ti.math.ivec4(0, -1, 0, -1)
    if zc > radius + NEAR:
        u = 0.5 * W + focal * rel.dot(right) / zc
        v = 0.5 * H - focal * rel.dot(up) / zc
        r_px = ti.min(focal * radius / (zc - radius) * (1.0 + rel.norm() / zc) * 0.5 + 1.0, 4.0 * (H + W))
        box = ti.math.ivec4(
            ti.max(ti.cast(ti.floor(ti.max(v - r_px, -1.0)), ti.i32), 0),
            ti.min(ti.cast(ti.floor(ti.min(v + r_px, H + 1.0)), ti.i32), H - 1),
            ti.max(ti.cast(ti.floor(ti.max(u - r_px, -1.0)), ti.i32), 0),
            ti.min(ti.cast(ti.floor(ti.min(u + r_px, W + 1.0)), ti.i32), W - 1),
        )
    return box


@ti.kernel
def clear(zkey: ndarray(ndim=2), thick: ndarray(ndim=2), acc: ndarray(ndim=3)):
    for i, j in zkey:
        zkey[i, j] = EMPTY
        thick[i, j] = 0
        for c in ti.static(range(ACC_CHANNELS)):
            acc[i, j, c] = 0


@ti.kernel
def splat_depth(
    x: ndarray(ndim=2),
    radius: ti.f32,
    depth: ndarray(ndim=2),
    zkey: ndarray(ndim=2),
    thick: ndarray(ndim=2),
    cam: ti.math.vec3,
    basis: ti.math.mat3,
    focal: ti.f32,
):
    """Front distance (atomic_min) and thickness (atomic_add) of the particle spheres in front
    of the opaque scene (``depth``)."""
    H, W = zkey.shape[0], zkey.shape[1]
    for p in range(x.shape[0]):
        c = ti.math.vec3(x[p, 0], x[p, 1], x[p, 2])
        rel = c - cam
        box = _project(c, rel, H, W, basis, focal, radius)
        oc = -rel
        cc = oc.dot(oc) - radius * radius
        for i in range(box[0], box[1] + 1):
            for j in range(box[2], box[3] + 1):
                d = ray_dir(i, j, H, W, basis, focal)
                b = oc.dot(d)
                disc = b * b - cc
                if disc > 0.0:
                    sq = ti.sqrt(disc)
                    t0 = ti.max(-b - sq, NEAR)
                    t1 = ti.min(-b + sq, depth[i, j])
                    if t1 > t0:
                        ti.atomic_min(zkey[i, j], ti.cast(t0 * DEPTH_SCALE, ti.i32))
                        ti.atomic_add(thick[i, j], ti.cast((t1 - t0) * THICK_SCALE, ti.i32))


@ti.kernel
def splat_material(
    x: ndarray(ndim=2),
    colors: ndarray(ndim=2),
    optics: ndarray(ndim=2),
    radius: ti.f32,
    zkey: ndarray(ndim=2),
    acc: ndarray(ndim=3),
    cam: ti.math.vec3,
    basis: ti.math.mat3,
    focal: ti.f32,
):
    """Coverage-weighted RGB, clarity and gloss of the particles within 2 r of the front."""
    H, W = zkey.shape[0], zkey.shape[1]
    band = 2.0 * radius
    for p in range(x.shape[0]):
        c = ti.math.vec3(x[p, 0], x[p, 1], x[p, 2])
        rel = c - cam
        box = _project(c, rel, H, W, basis, focal, radius)
        oc = -rel
        cc = oc.dot(oc) - radius * radius
        for i in range(box[0], box[1] + 1):
            for j in range(box[2], box[3] + 1):
                d = ray_dir(i, j, H, W, basis, focal)
                b = oc.dot(d)
                disc = b * b - cc
                k = zkey[i, j]
                if disc > 0.0 and k != EMPTY:
                    t0 = ti.max(-b - ti.sqrt(disc), NEAR)
                    if t0 <= k / DEPTH_SCALE + band:
                        w = ti.cast(ti.min(disc / (radius * radius), 1.0) * WEIGHT_SCALE, ti.i32) + 1
                        for ch in ti.static(range(3)):
                            ti.atomic_add(acc[i, j, ch], w * ti.cast(colors[p, ch] * WEIGHT_SCALE, ti.i32))
                        ti.atomic_add(acc[i, j, 3], w * ti.cast(optics[p, 0] * WEIGHT_SCALE, ti.i32))
                        ti.atomic_add(acc[i, j, 4], w * ti.cast(optics[p, 1] * WEIGHT_SCALE, ti.i32))
                        ti.atomic_add(acc[i, j, 5], w)


@ti.kernel
def unpack(zkey: ndarray(ndim=2), thick: ndarray(ndim=2), t: ndarray(ndim=2), T: ndarray(ndim=2)):
    """Integer buffers -> front distance ``t`` (0 where empty) and thickness ``T`` [m]."""
    for i, j in zkey:
        k = zkey[i, j]
        t[i, j] = ti.select(k == EMPTY, 0.0, k / DEPTH_SCALE)
        T[i, j] = thick[i, j] / THICK_SCALE


@ti.kernel
def smooth(
    axis: ti.template(),
    t_in: ndarray(ndim=2),
    T_in: ndarray(ndim=2),
    t_out: ndarray(ndim=2),
    T_out: ndarray(ndim=2),
    radius: ti.f32,
    focal: ti.f32,
    max_px: ti.i32,
):
    """One separable bilateral pass along image ``axis`` (0: down a column, 1: along a row)."""
    H, W = t_in.shape[0], t_in.shape[1]
    inv_range = 1.0 / (2.0 * (2.0 * radius) ** 2)
    for i, j in t_in:
        t0 = t_in[i, j]
        t_out[i, j] = t0
        T_out[i, j] = T_in[i, j]
        if t0 > 0.0:
            sigma = ti.math.clamp(SMOOTH_SIGMA * focal * radius / t0, 0.5, 0.5 * max_px)
            R = ti.min(ti.cast(2.0 * sigma, ti.i32), max_px)
            inv_space = 1.0 / (2.0 * sigma * sigma)
            wsum, tsum, Tsum, gsum = 0.0, 0.0, 0.0, 0.0
            for k in range(-R, R + 1):
                ii, jj = i, j
                if ti.static(axis == 0):
                    ii = i + k
                else:
                    jj = j + k
                if 0 <= ii < H and 0 <= jj < W:
                    tk = t_in[ii, jj]
                    if tk > 0.0:
                        g = ti.exp(-k * k * inv_space)
                        w = g * ti.exp(-(tk - t0) * (tk - t0) * inv_range)
                        wsum += w
                        tsum += w * tk
                        gsum += g
                        Tsum += g * T_in[ii, jj]
            t_out[i, j] = tsum / wsum
            T_out[i, j] = Tsum / gsum


@ti.func
def _position(t: ti.template(), i, j, H, W, cam, basis, focal):
    return cam + t[i, j] * ray_dir(i, j, H, W, basis, focal)


@ti.func
def _difference(t: ti.template(), i, j, di, dj, H, W, cam, basis, focal, jump):
    """Screen-space derivative of the surface position along (di, dj): the smaller of the forward
    and backward differences among neighbours on the same surface (zero if there is none)."""
    p = _position(t, i, j, H, W, cam, basis, focal)
    best = ti.math.vec3(0.0)
    best_dt = jump
    for s in ti.static((1, -1)):
        ii, jj = i + s * di, j + s * dj
        if 0 <= ii < H and 0 <= jj < W:
            tk = t[ii, jj]
            if tk > 0.0 and ti.abs(tk - t[i, j]) < best_dt:
                best_dt = ti.abs(tk - t[i, j])
                best = s * (_position(t, ii, jj, H, W, cam, basis, focal) - p)
    return best


@ti.kernel
def shade_surface(
    t: ndarray(ndim=2),
    T: ndarray(ndim=2),
    acc: ndarray(ndim=3),
    behind: ndarray(ndim=3),
    image: ndarray(ndim=3),
    depth: ndarray(ndim=2),
    radius: ti.f32,
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
    """Compose the smoothed surface over ``behind`` (a copy of the scene drawn so far) into
    ``image``; write its distance into ``depth``."""
    H, W = image.shape[0], image.shape[1]
    right = ti.math.vec3(basis[0, 0], basis[0, 1], basis[0, 2])
    up = ti.math.vec3(basis[1, 0], basis[1, 1], basis[1, 2])
    for i, j in t:
        if t[i, j] > 0.0:
            d = ray_dir(i, j, H, W, basis, focal)
            p = cam + t[i, j] * d
            jump = 4.0 * radius
            ddx = _difference(t, i, j, 0, 1, H, W, cam, basis, focal, jump)
            ddy = _difference(t, i, j, 1, 0, H, W, cam, basis, focal, jump)
            n = ddx.cross(ddy)
            if n.norm() < 1e-20:
                n = -d
            n = n.normalized()
            if n.dot(d) > 0.0:
                n = -n
            wsum = ti.cast(acc[i, j, 5], ti.f32) * WEIGHT_SCALE
            base = ti.math.vec3(acc[i, j, 0], acc[i, j, 1], acc[i, j, 2]) / wsum
            clarity = acc[i, j, 3] / wsum
            gloss = acc[i, j, 4] / wsum
            thickness = T[i, j]
            lit = lit_fraction(p, 2.5 * radius, shadow, light, s_origin, s_u, s_v, texel, hmin, hmax)
            body = shade(base, n, d, lit, light, 0.0)
            # Refraction: the scene behind, shifted along the normal's screen projection.
            shift = REFRACTION_PX * H * ti.min(thickness / (4.0 * radius), 1.0)
            si = ti.math.clamp(ti.cast(ti.round(i + n.dot(up) * shift), ti.i32), 0, H - 1)
            sj = ti.math.clamp(ti.cast(ti.round(j - n.dot(right) * shift), ti.i32), 0, W - 1)
            seen = ti.math.vec3(behind[si, sj, 0], behind[si, sj, 1], behind[si, sj, 2])
            through = seen * ti.exp(-ABSORPTION * (1.0 - base) * thickness)
            opacity = 1.0 - clarity * ti.exp(-thickness / SCATTER_LENGTH)
            out = ti.math.mix(through, body, opacity)
            coverage = ti.math.smoothstep(0.0, radius, thickness)  # thin rims blend into the scene
            cos_v = ti.math.clamp(-n.dot(d), 0.0, 1.0)
            fresnel = gloss * (F0 + (1.0 - F0) * ti.pow(1.0 - cos_v, 5.0))
            out = ti.math.mix(out, sky(ti.math.reflect(d, n)), fresnel)
            h = (light - d).normalized()
            out += gloss * 0.55 * ti.pow(ti.max(n.dot(h), 0.0), 90.0) * lit
            out = ti.math.mix(seen, out, coverage)
            for ch in ti.static(range(3)):
                image[i, j, ch] = ti.cast(out[ch], ti.f32)
            depth[i, j] = ti.cast(t[i, j], ti.f32)


@ti.kernel
def copy_image(src: ndarray(ndim=3), dst: ndarray(ndim=3)):
    for i, j, c in src:
        dst[i, j, c] = src[i, j, c]
