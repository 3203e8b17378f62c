"""Signed distance functions of collider shapes as Taichi ``ti.func``s, with one kind dispatch.

What is computed
    For every shape kind, the signed distance ``d(p)`` from a point ``p`` to the surface of the
    solid (negative inside the solid material, positive in free space) and the outward unit
    normal ``n = grad d``, in the shape's local frame (:func:`sdf_local`) or for a posed shape in
    the world frame (:func:`sdf_world`). ``engine.geometry.shapes`` holds the numpy mirror of
    every function here (same operations in the same order).

Conventions
    * SI units (metres). A shape is an integer ``kind`` and a float vector of
      ``SHAPE_DIM = 8`` parameters (unused entries 0):

      ========  ==  =====================================================================
      kind      id  params (local frame)
      ========  ==  =====================================================================
      PLANE     0   none; solid is the half-space ``z <= 0``, normal ``+z``
      BOX       1   half extents ``hx, hy, hz``; centred at the origin
      SPHERE    2   radius
      CAPSULE   3   radius, half_length of the axis segment along ``z``; centred
      CYLINDER  4   radius, half_height along ``z``; centred at the origin
      CUP       5   outer radius, height, wall thickness; origin at the centre of the outside
                    of the bottom, opening toward ``+z``; solid = side wall + bottom disk of
                    the given thickness, the cavity is free space (positive distance)
      BOWL      6   outer radius, thickness; origin at the sphere centre; solid = spherical
                    shell ``R - t <= |p| <= R`` restricted to ``z <= 0`` (open toward ``+z``)
      MESH      7   ``offset, res, lo_x, lo_y, lo_z, voxel_size``: a voxel SDF of ``res**3``
                    samples stored in ``mesh_sdf[offset : offset + res**3]``, x-major
                    (index ``offset + (i*res + j)*res + k``), sample ``(i, j, k)`` at
                    ``lo + (i, j, k) * voxel_size``
      ========  ==  =====================================================================

    * ``offset`` and ``res`` are stored as floats; they are exact up to 2**24 in f32.
    * One dispatch serves kernels of both kinds: :func:`sdf_local` takes ``kind`` as a
      ``ti.template()``. A Python int (a kernel's ``ti.template()`` argument) selects that
      shape's code at compile time, so only it is generated: kernels that Taichi differentiates
      use this form, as reverse-mode code for the full dispatch is large and slow to compile. A
      runtime integer (a ``ti.i32`` kernel argument) gets one branch per kind.
    * In a kernel, build the shape vector with :func:`gather_shape` (row of a ``(K, 8)``
      ndarray) or with :func:`shape_vec_type` called after ``engine.init``. Do not create
      ``ti.types.vector(8, float)`` at import time: Taichi freezes ``float`` to f32 then.
    * All analytic SDFs are exact Euclidean distances. The axisymmetric shapes (cylinder, cup,
      bowl) are evaluated as 2-D distances in the ``(rho, z)`` half-plane (``rho`` = distance to
      the local z axis), which equals the 3-D distance for a solid of revolution. The cup is the
      exact distance to its L-shaped profile (five axis-aligned segments); the bowl splits into
      the shell distance for ``z <= 0`` and the distance to the rim annulus for ``z > 0``.
    * MESH: trilinear interpolation of the voxel values; the normal is the normalized analytic
      gradient of the interpolant. Outside the sampled box the value is the distance to the box
      plus the interpolant at the clamped point (positive and continuous far away).
    * Functions are branch-free where practical (``ti.select``), have a single ``return``, no
      while loops, and stay finite at degenerate points (squared lengths are floored at ``TINY``
      before ``sqrt``), so Taichi reverse-mode autodiff gives finite gradients everywhere. At
      points where the normal is undefined (sphere centre, on an axis, exactly on a cup face) a
      fixed fallback unit vector is returned.

References
    * Inigo Quilez, "distance functions" (box, capsule and cylinder SDFs),
      https://iquilezles.org/articles/distfunctions/
"""

import numbers

import taichi as ti

from engine.geometry.pose import quat_rotate, quat_rotate_inverse

__all__ = [
    "BOWL",
    "BOX",
    "CAPSULE",
    "CUP",
    "CYLINDER",
    "MESH",
    "PLANE",
    "SHAPE_DIM",
    "SPHERE",
    "TINY",
    "gather_shape",
    "sdf_local",
    "sdf_world",
    "shape_vec_type",
]

PLANE = 0
BOX = 1
SPHERE = 2
CAPSULE = 3
CYLINDER = 4
CUP = 5
BOWL = 6
MESH = 7

SHAPE_DIM = 8
TINY = 1e-30
"""Floor on squared lengths before ``sqrt`` (keeps values and gradients finite at 0)."""


def shape_vec_type():
    """Taichi type of a shape parameter vector, ``ti.types.vector(SHAPE_DIM, <default float>)``.

    Call it after :func:`engine.init`: a vector type built with ``float`` before ``ti.init``
    is frozen to f32 (Taichi resolves ``float`` when the type is created; only ``ti.math.vec*``
    are rebuilt by ``ti.init``), which would silently round f64 parameters.
    """
    from engine.runtime import real_dtype

    return ti.types.vector(SHAPE_DIM, real_dtype())


@ti.func
def gather_shape(params: ti.template(), k):
    """Row ``k`` of a ``(K, SHAPE_DIM)`` scalar ndarray as a shape vector (its dtype)."""
    return ti.Vector([params[k, i] for i in ti.static(range(SHAPE_DIM))])


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


@ti.func
def _sgn(x):
    """+1 for x >= 0, -1 otherwise (the sign convention of the numpy mirror)."""
    return ti.select(x >= 0.0, 1.0, -1.0)


@ti.func
def _radial(p):
    """``(rho, e_x, e_y)``: distance to the z axis and the radial unit direction (fallback +x)."""
    r2 = p[0] * p[0] + p[1] * p[1]
    rho = ti.sqrt(ti.max(r2, TINY))
    ok = r2 > TINY
    ex = ti.select(ok, p[0] / rho, 1.0)
    ey = ti.select(ok, p[1] / rho, 0.0)
    return ti.math.vec3(rho, ex, ey)


@ti.func
def _lift(d, g_rho, g_z, rad):
    """Pack a 2-D (rho, z) distance and gradient into ``(d, n)`` in 3-D."""
    return ti.math.vec4(d, g_rho * rad[1], g_rho * rad[2], g_z)


@ti.func
def _closer(best, s, z, cs, cz, ns, nz):
    """Keep the nearer of ``best`` and the point ``(cs, cz)``; rows ``(d2, ds, dz, ns, nz)``."""
    ds = s - cs
    dz = z - cz
    d2 = ds * ds + dz * dz
    cand = ti.Vector([d2, ds, dz, ns, nz])
    return ti.select(d2 < best[0], cand, best)


# --------------------------------------------------------------------------------------------
# One function per kind: (shape, p, mesh_sdf) -> vec4(d, nx, ny, nz), local frame
# --------------------------------------------------------------------------------------------


@ti.func
def _sdf_plane(shape, p, mesh_sdf: ti.template()):
    return ti.math.vec4(p[2], 0.0, 0.0, 1.0)


@ti.func
def _sdf_box(shape, p, mesh_sdf: ti.template()):
    h = ti.math.vec3(shape[0], shape[1], shape[2])
    s = ti.math.vec3(_sgn(p[0]), _sgn(p[1]), _sgn(p[2]))
    q = ti.abs(p) - h
    qp = ti.max(q, 0.0)
    qmax = ti.max(q[0], ti.max(q[1], q[2]))
    out_len = ti.sqrt(ti.max(qp.dot(qp), TINY))
    outside = qmax > 0.0
    d = ti.select(outside, out_len, qmax)
    n_out = s * qp / out_len
    ax0 = (q[0] >= q[1]) & (q[0] >= q[2])
    ax1 = (q[1] > q[0]) & (q[1] >= q[2])
    ax2 = (q[2] > q[0]) & (q[2] > q[1])
    n_in = ti.math.vec3(ti.select(ax0, s[0], 0.0), ti.select(ax1, s[1], 0.0), ti.select(ax2, s[2], 0.0))
    n = ti.select(outside, n_out, n_in)
    return ti.math.vec4(d, n[0], n[1], n[2])


@ti.func
def _sdf_sphere(shape, p, mesh_sdf: ti.template()):
    r2 = p.dot(p)
    length = ti.sqrt(ti.max(r2, TINY))
    ok = r2 > TINY
    n = ti.select(ok, p / length, ti.math.vec3(0.0, 0.0, 1.0))
    return ti.math.vec4(length - shape[0], n[0], n[1], n[2])


@ti.func
def _sdf_capsule(shape, p, mesh_sdf: ti.template()):
    hl = shape[1]
    v = ti.math.vec3(p[0], p[1], p[2] - ti.math.clamp(p[2], -hl, hl))
    r2 = v.dot(v)
    length = ti.sqrt(ti.max(r2, TINY))
    n = ti.select(r2 > TINY, v / length, ti.math.vec3(1.0, 0.0, 0.0))
    return ti.math.vec4(length - shape[0], n[0], n[1], n[2])


@ti.func
def _sdf_cylinder(shape, p, mesh_sdf: ti.template()):
    rad = _radial(p)
    sz = _sgn(p[2])
    q0 = rad[0] - shape[0]
    q1 = ti.abs(p[2]) - shape[1]
    qp0 = ti.max(q0, 0.0)
    qp1 = ti.max(q1, 0.0)
    qmax = ti.max(q0, q1)
    out_len = ti.sqrt(ti.max(qp0 * qp0 + qp1 * qp1, TINY))
    outside = qmax > 0.0
    d = ti.select(outside, out_len, qmax)
    radial_in = q0 >= q1
    g_rho = ti.select(outside, qp0 / out_len, ti.select(radial_in, 1.0, 0.0))
    g_z = ti.select(outside, sz * qp1 / out_len, ti.select(radial_in, 0.0, sz))
    return _lift(d, g_rho, g_z, rad)


@ti.func
def _sdf_cup(shape, p, mesh_sdf: ti.template()):
    R = shape[0]
    H = shape[1]
    t = shape[2]
    ri = R - t
    rad = _radial(p)
    s = rad[0]
    z = p[2]
    # Five boundary segments of the L-shaped half-profile (the z axis is interior).
    ds = s - ti.math.clamp(s, 0.0, R)
    best = ti.Vector([ds * ds + z * z, ds, z, 0.0, -1.0])  # bottom face z = 0
    best = _closer(best, s, z, R, ti.math.clamp(z, 0.0, H), 1.0, 0.0)  # outer wall
    best = _closer(best, s, z, ti.math.clamp(s, ri, R), H, 0.0, 1.0)  # rim
    best = _closer(best, s, z, ri, ti.math.clamp(z, t, H), -1.0, 0.0)  # inner wall
    best = _closer(best, s, z, ti.math.clamp(s, 0.0, ri), t, 0.0, 1.0)  # inner bottom
    inside_bottom = (s <= R) & (z >= 0.0) & (z <= t)
    inside_wall = (s >= ri) & (s <= R) & (z >= 0.0) & (z <= H)
    sgn = ti.select(inside_bottom | inside_wall, -1.0, 1.0)
    dist = ti.sqrt(ti.max(best[0], TINY))
    ok = best[0] > TINY
    g_rho = ti.select(ok, sgn * best[1] / dist, best[3])
    g_z = ti.select(ok, sgn * best[2] / dist, best[4])
    return _lift(sgn * dist, g_rho, g_z, rad)


@ti.func
def _sdf_bowl(shape, p, mesh_sdf: ti.template()):
    R = shape[0]
    t = shape[1]
    rm = R - 0.5 * t
    r2 = p.dot(p)
    r = ti.sqrt(ti.max(r2, TINY))
    u = ti.select(r2 > TINY, p / r, ti.math.vec3(0.0, 0.0, 1.0))
    # z <= 0: shell distance, cut by the rim plane.
    shell = ti.abs(r - rm) - 0.5 * t
    g_shell = _sgn(r - rm) * u
    use_shell = shell >= p[2]
    d_lo = ti.select(use_shell, shell, p[2])
    n_lo = ti.select(use_shell, g_shell, ti.math.vec3(0.0, 0.0, 1.0))
    # z > 0: distance to the rim annulus z = 0, R - t <= rho <= R.
    rad = _radial(p)
    dr = rad[0] - ti.math.clamp(rad[0], R - t, R)
    l2 = dr * dr + p[2] * p[2]
    length = ti.sqrt(ti.max(l2, TINY))
    n_hi = ti.math.vec3(dr / length * rad[1], dr / length * rad[2], p[2] / length)
    upper = p[2] > 0.0
    d = ti.select(upper, length, d_lo)
    n = ti.select(upper, n_hi, n_lo)
    return ti.math.vec4(d, n[0], n[1], n[2])


@ti.func
def _sdf_mesh(shape, p, mesh_sdf: ti.template()):
    offset = ti.cast(ti.floor(shape[0] + 0.5), ti.i32)
    res = ti.cast(ti.floor(shape[1] + 0.5), ti.i32)
    lo = ti.math.vec3(shape[2], shape[3], shape[4])
    h = shape[5]
    hi = lo + (res - 1) * h
    q = ti.math.clamp(p, lo, hi)
    e = p - q
    e2 = e.dot(e)
    e_len = ti.sqrt(ti.max(e2, TINY))
    d_box = ti.select(e2 > 0.0, e_len, 0.0)
    g_box = e / e_len  # zero inside the box
    u = (q - lo) / h
    cell = ti.math.clamp(ti.floor(u), 0.0, ti.cast(res - 2, float))
    f = u - cell
    i0 = ti.cast(cell[0], ti.i32)
    j0 = ti.cast(cell[1], ti.i32)
    k0 = ti.cast(cell[2], ti.i32)
    val = 0.0
    grad_u = ti.math.vec3(0.0)
    for a, b, c in ti.static(ti.ndrange(2, 2, 2)):
        idx = offset + ((i0 + a) * res + (j0 + b)) * res + (k0 + c)
        v = mesh_sdf[idx]
        wx = f[0] if ti.static(a == 1) else 1.0 - f[0]
        wy = f[1] if ti.static(b == 1) else 1.0 - f[1]
        wz = f[2] if ti.static(c == 1) else 1.0 - f[2]
        sx = 1.0 if ti.static(a == 1) else -1.0
        sy = 1.0 if ti.static(b == 1) else -1.0
        sz = 1.0 if ti.static(c == 1) else -1.0
        val += v * wx * wy * wz
        grad_u += v * ti.math.vec3(sx * wy * wz, wx * sy * wz, wx * wy * sz)
    # Gradient of the interpolant only along axes where p is inside the box (q follows p).
    inside_axis = ti.math.vec3(
        ti.select((p[0] >= lo[0]) & (p[0] <= hi[0]), 1.0, 0.0),
        ti.select((p[1] >= lo[1]) & (p[1] <= hi[1]), 1.0, 0.0),
        ti.select((p[2] >= lo[2]) & (p[2] <= hi[2]), 1.0, 0.0),
    )
    g = g_box + inside_axis * grad_u / h
    g2 = g.dot(g)
    g_len = ti.sqrt(ti.max(g2, TINY))
    n = ti.select(g2 > TINY, g / g_len, ti.math.vec3(0.0, 0.0, 1.0))
    return ti.math.vec4(d_box + val, n[0], n[1], n[2])


_SDF_BY_KIND = (_sdf_plane, _sdf_box, _sdf_sphere, _sdf_capsule, _sdf_cylinder, _sdf_cup, _sdf_bowl, _sdf_mesh)
"""The kind table: entry ``kind`` computes that kind's SDF (ids PLANE = 0 ... MESH = 7)."""


def _is_compile_time(kind) -> bool:
    """True when ``kind`` is a Python integer (fixed when the kernel is compiled)."""
    return isinstance(kind, numbers.Integral)


# --------------------------------------------------------------------------------------------
# Dispatch
# --------------------------------------------------------------------------------------------


@ti.func
def sdf_local(kind: ti.template(), shape, p, mesh_sdf: ti.template()):
    """Signed distance and outward unit normal in the shape's local frame.

    Args:
        kind: shape kind (``PLANE`` ... ``MESH``): a Python int (only that kind's code is
            compiled) or a runtime integer (one branch per kind).
        shape: ``SHAPE_DIM``-vector of the kind's parameters in the default float type (from
            :func:`gather_shape`, or a :func:`shape_vec_type` value).
        p: ``ti.math.vec3`` local point [m].
        mesh_sdf: 1-D scalar ndarray of concatenated mesh voxel SDFs (dummy if no mesh).

    Returns:
        ``ti.math.vec4(d, nx, ny, nz)``; ``d`` [m] negative inside the solid.
    """
    out = ti.math.vec4(0.0, 0.0, 0.0, 1.0)
    if ti.static(_is_compile_time(kind)):
        out = ti.static(_SDF_BY_KIND[kind])(shape, p, mesh_sdf)
    else:
        out = _sdf_from(0, kind, shape, p, mesh_sdf)
    return out


@ti.func
def _sdf_from(k: ti.template(), kind, shape, p, mesh_sdf: ti.template()):
    """Runtime ``kind``: the chain ``if kind == k: ... else: (same from k + 1)`` over the table."""
    out = ti.math.vec4(0.0, 0.0, 0.0, 1.0)
    if kind == k:
        out = ti.static(_SDF_BY_KIND[k])(shape, p, mesh_sdf)
    elif ti.static(k + 1 < len(_SDF_BY_KIND)):
        out = _sdf_from(k + 1, kind, shape, p, mesh_sdf)
    return out


@ti.func
def sdf_world(kind: ti.template(), shape, pose_pos, pose_quat, p, mesh_sdf: ti.template()):
    """Signed distance and outward unit normal (world frame) of a posed shape.

    Args:
        kind, shape, mesh_sdf: as in :func:`sdf_local`.
        pose_pos: ``ti.math.vec3`` position of the local origin [m].
        pose_quat: ``ti.math.vec4`` unit quaternion ``(w, x, y, z)``.
        p: ``ti.math.vec3`` world point [m].

    Returns:
        ``ti.math.vec4(d, nx, ny, nz)`` with the normal in the world frame.
    """
    p_local = quat_rotate_inverse(pose_quat, p - pose_pos)
    r = sdf_local(kind, shape, p_local, mesh_sdf)
    n = quat_rotate(pose_quat, ti.math.vec3(r[1], r[2], r[3]))
    return ti.math.vec4(r[0], n[0], n[1], n[2])
