"""Shading functions shared by the renderer's passes: camera rays, shadow-map lookups, lighting
and the sky.

* Camera rays: a pinhole camera with an orthonormal basis ``(right, up, forward)`` (rows of a
  3x3 matrix) and a focal length in pixels; pixel ``(i, j)`` is row ``i``, column ``j`` and its
  ray passes through the pixel centre.
* Shadows: an orthographic height map along the light direction, stored as integer levels in
  ``[0, 2^30]`` between ``hmin`` and ``hmax``, looked up with 3x3 percentage-closer filtering
  (Reeves, Salesin and Cook, "Rendering antialiased shadows with depth maps", SIGGRAPH 1987).
* Lighting: ambient + Lambert from one directional light and a Blinn-Phong highlight (Blinn,
  "Models of light reflection for computer synthesized pictures", SIGGRAPH 1977).
* Sky: a vertical gradient from the horizon colour to the zenith colour.

Colours are linear RGB in ``[0, 1]``; lengths in metres.
"""

import taichi as ti

T_FAR = 100.0  # far end of every ray and of the depth quantization [m]
NEAR = 1e-3  # nearest hit distance [m]
SHADOW_LEVELS = float(1 << 30)
AMBIENT = 0.38
DIFFUSE = 0.62
SKY_ZENITH = (0.50, 0.66, 0.86)
SKY_HORIZON = (0.86, 0.89, 0.93)


@ti.func
def ray_dir(i, j, H, W, basis, focal):
    """Unit direction of the ray through the centre of pixel (row i, column j)."""
    right = ti.math.vec3(basis[0, 0], basis[0, 1], basis[0, 2])
    up = ti.math.vec3(basis[1, 0], basis[1, 1], basis[1, 2])
    fwd = ti.math.vec3(basis[2, 0], basis[2, 1], basis[2, 2])
    dx = (j + 0.5) - 0.5 * W
    dy = (i + 0.5) - 0.5 * H
    return (fwd * focal + right * dx - up * dy).normalized()


@ti.func
def shadow_height(h, hmin, hmax):
    """Height along the light (m) -> integer level in [0, 2^30]."""
    u = ti.math.clamp((h - hmin) / (hmax - hmin), 0.0, 1.0)
    return ti.cast(u * SHADOW_LEVELS, ti.i32)


@ti.func
def lit_fraction(p, bias, shadow: ti.template(), light, s_origin, s_u, s_v, texel, hmin, hmax):
    """Fraction of the 3x3 shadow-map neighbourhood of point p that the light reaches."""
    R = shadow.shape[0]
    rel = p - s_origin
    a = ti.cast(ti.floor(rel.dot(s_u) / texel), ti.i32)
    b = ti.cast(ti.floor(rel.dot(s_v) / texel), ti.i32)
    level = shadow_height(p.dot(light) + bias, hmin, hmax)
    lit = 0.0
    for da, db in ti.static(ti.ndrange((-1, 2), (-1, 2))):
        aa = ti.math.clamp(a + da, 0, R - 1)
        bb = ti.math.clamp(b + db, 0, R - 1)
        lit += ti.select(shadow[aa, bb] > level, 0.0, 1.0)
    return lit / 9.0


@ti.func
def shade(base, n, view, lit, light, spec):
    """Ambient + shadowed Lambert + Blinn-Phong highlight of a surface of color ``base``."""
    diffuse = ti.max(n.dot(light), 0.0) * lit
    h = (light - view).normalized()
    highlight = spec * ti.pow(ti.max(n.dot(h), 0.0), 48.0) * lit
    return base * (AMBIENT + DIFFUSE * diffuse) + highlight


@ti.func
def sky(d):
    """Sky colour seen along unit direction d."""
    t = ti.math.clamp(d[2] * 1.6 + 0.25, 0.0, 1.0)
    return ti.math.mix(ti.math.vec3(*SKY_HORIZON), ti.math.vec3(*SKY_ZENITH), t)
