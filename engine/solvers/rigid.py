"""6-DoF rigid bodies, two-way coupled to the MPM grid through their signed distance.

Hu et al. 2018 (MLS-MPM, Sec. 4-5: rigid bodies as level sets acting on the grid, momentum
exchanged with the grid nodes they touch). A :class:`RigidBody` is a shape of
:mod:`engine.geometry` with a density; its state per scene is the pose of its shape frame
(position, unit quaternion ``(w, x, y, z)``) and the twist of its centre of mass (linear
velocity, angular velocity in the world frame).

Exchange with the grid (stage ``grid_coupling``, after the colliders' and sensors' conditions).
Every grid node i with mass m_i inside body r (signed distance d < 0; lever r_i = x_i - c from the
centre of mass c) moves with the body after the exchange, ``v_i' = G_i u'`` with ``G_i = [1,
-[r_i]x]`` and ``u = (v, w)``, and the momentum ``m_i (v_i - G_i u')`` that the node loses goes to
the body. With the body's mass matrix M = diag(m 1, I_world) the momentum balance is one 6x6
symmetric positive definite system per body,

    (M + sum_i m_i G_i^T G_i) u' = M (u + g dt) + sum_i m_i G_i^T v_i,

solved exactly (3x3 blocks, Schur complement). This is an implicit, fully inelastic exchange: it
includes the added mass of the material the body pushes, so it is stable for bodies lighter than
the liquid around them (an explicit exchange, the body taking each node's impulse at its old
velocity, is unstable when the touched liquid outweighs the body). v_i is the node's velocity
without this substep's gravity, and the node keeps its own gravity (``v_i' = G_i u' + g dt``): the
mass that the B-spline stencils of particles outside the body put on nodes inside it is the
liquid's, and its weight must load the liquid's pressure, not the body (exchanging it makes a
floating body heavier by about the liquid in a quarter cell of its wetted surface). The exchange
takes all three velocity components (no slip): inside a body the normal of the nearest surface
point jumps at edges (a node under a box's bottom face but nearer a side face has a horizontal
normal), so an exchange of normal components only lets the liquid under a floating body's edges
push into it. Linear and angular momentum of nodes plus body are conserved exactly without gravity
and contacts (``grid_v[c] -> grid_v[c + 1]``; one velocity set for all bodies, a node inside
several belonging to the first). The body then moves with u': ``c' = c + v' dt``, ``q' =
normalize(q + dt/2 [0, w'] (x) q)``.

Contact with kinematic colliders and the domain walls (same stage, same system). Points sampled
on the body's surface that lie inside a collider (or beyond a wall) at the substep's start add
a stiff soft constraint to the system: with the collider's outward normal n, lever r and the
collider's velocity v_c there, ``W (G^T G) u' = W G^T (n . v_c + beta d_pen / dt)`` is added,
``W = CONTACT_WEIGHT`` body masses per penetrating point, so the body's normal velocity there
becomes (nearly) the collider's plus a push-out ``beta d_pen / dt`` (Baumgarte's stabilization,
beta = ``CONTACT_BIAS``): frictionless, unilateral through the penetration test. A tool pushes a
floating body, a tank wall stops it, the floor carries it.

FEM sensors touching a body (engine/coupling/sensors.py, earlier in the same phase) add their
contact force and torque, as an impulse, to the right-hand side.

Impermeability (stage ``particle_coupling``): particles found inside a body at its new pose are
put back on its surface (:func:`project_out_bodies`), so no particle stays inside a body deeper
than the rounding of the projection.

Mass properties come from the shape's signed distance sampled on a fine grid (smoothed
occupancy ``clamp(1/2 - d/h, 0, 1)`` per cell), per unit density; the density is a
differentiable parameter (``body_params``, (B, nb, 1)). Every kernel is differentiated by
Taichi's reverse mode (accumulating adjoints).
"""

from dataclasses import dataclass

import numpy as np
import taichi as ti
import torch

from engine import arrays, geometry, runtime
from engine.colliders import pack_colliders
from engine.geometry.pose import quat_rotate, quat_rotate_inverse
from engine.geometry.sdf import SHAPE_DIM, sdf_local, sdf_world
from engine.geometry.shapes import Shape, check_positive
from engine.solvers.base import Stage, Substep
from engine.solvers.mpm_kernels import pad4

ndarray = ti.types.ndarray

#: Body state fields, each a (slots, B, nb) array: shape-frame position, quaternion, linear
#: velocity of the centre of mass, angular velocity (world frame).
FIELDS = ("pos", "quat", "lin", "ang")


@dataclass(frozen=True)
class RigidBody:
    """A free rigid body: shape, density and initial pose and twist.

    Attributes:
        shape: an :class:`engine.geometry.Shape` (closed: its signed distance is negative inside).
        density: [kg/m^3].
        pose: initial pose of the shape frame ``(x, y, z, qw, qx, qy, qz)``.
        twist: initial linear [m/s] and angular [rad/s, world frame] velocity of the centre of mass.
        name: label for errors and rendering.
        color: RGB in [0, 1] for rendering.
        resolution: samples per axis of the mass-property integration.
    """

    shape: Shape
    density: float
    pose: tuple[float, ...] = (0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0)
    twist: tuple[float, ...] = (0.0, 0.0, 0.0, 0.0, 0.0, 0.0)
    name: str = "body"
    color: tuple[float, float, float] = (0.9, 0.7, 0.1)
    resolution: int = 64

    def __post_init__(self):
        if not isinstance(self.shape, Shape):
            raise ValueError(f"RigidBody.shape must be a Shape, got {type(self.shape).__name__}")
        object.__setattr__(self, "density", check_positive("RigidBody", "density", self.density))
        object.__setattr__(self, "pose", geometry.normalize_pose(self.pose, "RigidBody.pose"))
        twist = np.asarray(self.twist, dtype=np.float64)
        if twist.shape != (6,) or not np.isfinite(twist).all():
            raise ValueError(f"RigidBody.twist must be 6 finite numbers, got {self.twist!r}")
        object.__setattr__(self, "twist", tuple(float(t) for t in twist))
        if not (isinstance(self.resolution, int) and self.resolution >= 8):
            raise ValueError(f"RigidBody.resolution must be an int >= 8, got {self.resolution!r}")

    def mass_properties(self) -> tuple[float, np.ndarray, np.ndarray]:
        """Per unit density: volume [m^3], centre of mass in the shape frame (3,) [m] and the
        inertia tensor about it (3, 3) [m^5], from the signed distance on a grid over the
        shape's bounds (found by growing a cube until its faces lie outside the shape)."""
        half = _half_extent(self.shape)
        n = self.resolution
        h = 2.0 * half / n
        axis = -half + h * (np.arange(n) + 0.5)
        p = np.stack(np.meshgrid(axis, axis, axis, indexing="ij"), -1).reshape(-1, 3)
        d, _ = self.shape.sdf(p)
        w = np.clip(0.5 - d / h, 0.0, 1.0) * h**3
        volume = float(w.sum())
        if volume <= 0.0:
            raise ValueError(f"RigidBody {self.name!r}: the shape encloses no volume")
        com = (w[:, None] * p).sum(0) / volume
        q = p - com
        inertia = np.eye(3) * (w * (q * q).sum(1)).sum() - np.einsum("n,ni,nj->ij", w, q, q)
        return volume, com, inertia


def _half_extent(shape: Shape) -> float:
    """Half the edge of a cube about the shape origin that contains the shape."""
    half = 1e-3
    t = np.linspace(-1.0, 1.0, 17)
    face = np.stack(np.meshgrid(t, t, indexing="ij"), -1).reshape(-1, 2)
    for _ in range(40):
        pts = []
        for ax in range(3):
            for sign in (-1.0, 1.0):
                p = np.insert(face * half, ax, sign * half, axis=1)
                pts.append(p)
        d, _ = shape.sdf(np.concatenate(pts))
        if d.min() > 0.0:
            return half * 1.05
        half *= 1.5
    raise ValueError(f"cannot bound shape {type(shape).__name__}: is it closed?")


#: Penetrating surface points of a body weigh this many body masses in its exchange system.
CONTACT_WEIGHT = 10.0
#: Fraction of a penetration depth removed per substep (Baumgarte's beta).
CONTACT_BIAS = 0.2


def surface_samples(shape: Shape, per_axis: int = 14) -> np.ndarray:
    """(n, 3) points on a shape's surface (its frame): the nodes of a ``per_axis``^3 grid over
    its bounds that lie within one spacing of the surface, moved onto it along the normal."""
    half = _half_extent(shape)
    axis = np.linspace(-half, half, per_axis)
    p = np.stack(np.meshgrid(axis, axis, axis, indexing="ij"), -1).reshape(-1, 3)
    d, n = shape.sdf(p)
    near = np.abs(d) < axis[1] - axis[0]
    points = p[near] - d[near, None] * n[near]
    return points[np.abs(shape.sdf(points)[0]) < 1e-6 * half]


class RigidBuffers:
    """Slotted body state (slots, B, nb): pos (vec3), quat (vec4), lin (vec3), ang (vec3)."""

    def __init__(self, slots: int, batch: int, nb: int, needs_grad: bool):
        real = runtime.real_dtype()
        self.slots = slots
        for name, dim in zip(FIELDS, (3, 4, 3, 3), strict=True):
            setattr(self, name, ti.ndarray(ti.types.vector(dim, real), (slots, batch, nb), needs_grad=needs_grad))

    def arrays(self):
        return [getattr(self, f) for f in FIELDS]

    def copy_slot_to(self, s: int, other: "RigidBuffers", t: int) -> None:
        for a, b in zip(self.arrays(), other.arrays(), strict=True):
            arrays.copy_slot(a, s, b, t)

    def zero_grad_slot(self, s: int) -> None:
        for a in self.arrays():
            zero_slot(a.grad, s)

    def copy_grad_slot(self, s: int, t: int) -> None:
        for a in self.arrays():
            arrays.copy_slot(a.grad, s, a.grad, t)


@ti.kernel
def zero_slot(arr: ndarray(), s: ti.i32):
    for b, r in ti.ndrange(arr.shape[1], arr.shape[2]):
        arr[s, b, r] = ti.zero(arr[s, b, r])


@ti.kernel
def zero_work(A_vv: ndarray(), A_vw: ndarray(), A_ww: ndarray(), rhs_v: ndarray(), rhs_w: ndarray()):
    """The exchange systems = 0 (one launch for the five arrays)."""
    for b, r in ti.ndrange(A_vv.shape[0], A_vv.shape[1]):
        A_vv[b, r] = ti.zero(A_vv[b, r])
        A_vw[b, r] = ti.zero(A_vw[b, r])
        A_ww[b, r] = ti.zero(A_ww[b, r])
        rhs_v[b, r] = ti.zero(rhs_v[b, r])
        rhs_w[b, r] = ti.zero(rhs_w[b, r])


@ti.func
def _centre(pos, quat, com):
    return pos + quat_rotate(quat, com)


@ti.func
def _cross_matrix(r):
    """[r]x: the matrix with [r]x w = r x w."""
    return ti.Matrix([[0.0, -r[2], r[1]], [r[2], 0.0, -r[0]], [-r[1], r[0], 0.0]])


@ti.func
def _owner(
    kinds: ti.template(),
    shape: ti.template(),
    mesh_sdf: ti.template(),
    pos: ti.template(),
    quat: ti.template(),
    radius: ti.template(),
    s_in,
    b,
    p,
):
    """The first body (index, or -1) whose shape contains the world point p at its slot-s_in pose
    (the shape's SDF is evaluated only inside its bounding sphere)."""
    owner = -1
    for r in ti.static(range(len(kinds))):
        if owner < 0:
            # Nested tests: Taichi's reverse mode gave NaN adjoints for ``owner < 0 and d2 < r2``.
            centre_offset = p - pos[s_in, b, r]
            if centre_offset.dot(centre_offset) < radius[r] * radius[r]:
                if sdf_world(ti.static(kinds[r]), shape[r], pos[s_in, b, r], quat[s_in, b, r], p, mesh_sdf)[0] < 0.0:
                    owner = r
    return owner


@ti.kernel
def assemble(
    grid_mom_mass: ndarray(), grid_v: ndarray(), c: ti.i32, kinds: ti.template(), shape: ndarray(),
    mesh_sdf: ndarray(), radius: ndarray(), pos: ndarray(), quat: ndarray(), s_in: ti.i32, com: ndarray(),
    gravity: ti.math.vec3, dt: float, dx: float, A_vv: ndarray(), A_vw: ndarray(), A_ww: ndarray(),
    rhs_v: ndarray(), rhs_w: ndarray(),
):  # fmt: skip
    """Sum over the grid nodes inside each body (a node inside several goes to the first) of
    m G^T G (3x3 blocks) and m G^T v (v without this substep's gravity), G = [1, -[x - c]x]."""
    for b, i, j in ti.ndrange(grid_v.shape[1], grid_v.shape[2], grid_v.shape[3]):
        for k in range(grid_v.shape[4]):
            m = grid_mom_mass[b, i, j, k][3]
            if m > 0.0:
                p = ti.Vector([i, j, k]) * dx
                r = _owner(kinds, shape, mesh_sdf, pos, quat, radius, s_in, b, p)
                if r >= 0:
                    lever = p - _centre(pos[s_in, b, r], quat[s_in, b, r], com[r])
                    v = grid_v[c, b, i, j, k].xyz - gravity * dt
                    A_vv[b, r] += m * ti.Matrix.identity(float, 3)
                    A_vw[b, r] += -m * _cross_matrix(lever)
                    A_ww[b, r] += m * (lever.dot(lever) * ti.Matrix.identity(float, 3) - lever.outer_product(lever))
                    rhs_v[b, r] += m * v
                    rhs_w[b, r] += m * lever.cross(v)


@ti.func
def _add_contact(b, r, x, centre, n, target, W, A_vv: ti.template(), A_vw: ti.template(), A_ww: ti.template(),
                 rhs_v: ti.template(), rhs_w: ti.template()):  # fmt: skip
    lever = (x - centre).cross(n)
    A_vv[b, r] += W * n.outer_product(n)
    A_vw[b, r] += W * n.outer_product(lever)
    A_ww[b, r] += W * lever.outer_product(lever)
    rhs_v[b, r] += (W * target) * n
    rhs_w[b, r] += (W * target) * lever


@ti.kernel
def contacts(
    samples: ndarray(), n_samples: ndarray(), pos: ndarray(), quat: ndarray(), s_in: ti.i32, com: ndarray(),
    unit_volume: ndarray(), params: ndarray(), col_kinds: ti.template(), col_shape: ndarray(), col_pos: ndarray(),
    col_quat: ndarray(), col_lin: ndarray(), col_ang: ndarray(), col_mesh_sdf: ndarray(), g: ti.i32, lo: float,
    hi: float, dt: float, A_vv: ndarray(), A_vw: ndarray(), A_ww: ndarray(), rhs_v: ndarray(), rhs_w: ndarray(),
):  # fmt: skip
    """Contact rows of every body's surface samples inside a collider (pose of substep g) or
    beyond a domain wall (planes at lo and hi)."""
    for b, r, k in ti.ndrange(pos.shape[1], pos.shape[2], samples.shape[1]):
        if k < n_samples[r]:
            q = quat[s_in, b, r]
            x = pos[s_in, b, r] + quat_rotate(q, samples[r, k])
            centre = _centre(pos[s_in, b, r], q, com[r])
            W = CONTACT_WEIGHT * params[b, r][0] * unit_volume[r]
            for c in ti.static(range(len(col_kinds))):
                cp = col_pos[g, b, c]
                res = sdf_world(ti.static(col_kinds[c]), col_shape[c], cp, col_quat[g, b, c], x, col_mesh_sdf)
                if res[0] < 0.0:
                    n = ti.Vector([res[1], res[2], res[3]])
                    v_c = col_lin[g, b, c] + col_ang[g, b, c].cross(x - cp)
                    target = n.dot(v_c) - CONTACT_BIAS * res[0] / dt
                    _add_contact(b, r, x, centre, n, target, W, A_vv, A_vw, A_ww, rhs_v, rhs_w)
            for a in ti.static(range(3)):
                for side in ti.static((1.0, -1.0)):
                    depth = ti.select(side > 0.0, lo - x[a], x[a] - hi)
                    if depth > 0.0:
                        n = ti.Vector.zero(float, 3)
                        n[a] = side
                        _add_contact(b, r, x, centre, n, CONTACT_BIAS * depth / dt, W, A_vv, A_vw, A_ww, rhs_v, rhs_w)


@ti.kernel
def solve_and_move(
    pos: ndarray(), quat: ndarray(), lin: ndarray(), ang: ndarray(), s_in: ti.i32, s_out: ti.i32, com: ndarray(),
    unit_volume: ndarray(), unit_inertia: ndarray(), params: ndarray(), gravity: ti.math.vec3, dt: float,
    ext_force: ndarray(), ext_torque: ndarray(), A_vv: ndarray(), A_vw: ndarray(), A_ww: ndarray(),
    rhs_v: ndarray(), rhs_w: ndarray(),
):  # fmt: skip
    """Every body's new twist from its 6x6 exchange system, then its new pose (see the module
    docstring): state slot s_in -> s_out."""
    for b, r in ti.ndrange(lin.shape[1], lin.shape[2]):
        q = quat[s_in, b, r]
        density = params[b, r][0]
        m = density * unit_volume[r]
        R = ti.Matrix.zero(float, 3, 3)
        for a in ti.static(range(3)):
            e = ti.Vector.zero(float, 3)
            e[a] = 1.0
            col = quat_rotate(q, e)
            for row in ti.static(range(3)):
                R[row, a] = col[row]
        I_world = density * (R @ unit_inertia[r] @ R.transpose())
        v0 = lin[s_in, b, r] + gravity * dt
        w0 = ang[s_in, b, r]
        P = m * ti.Matrix.identity(float, 3) + A_vv[b, r]
        Q = A_vw[b, r]
        S = I_world + A_ww[b, r]
        r_v = m * v0 + rhs_v[b, r] + ext_force[b, r] * dt
        r_w = I_world @ w0 + rhs_w[b, r] + ext_torque[b, r] * dt
        P_inv = P.inverse()
        w1 = (S - Q.transpose() @ P_inv @ Q).inverse() @ (r_w - Q.transpose() @ (P_inv @ r_v))
        v1 = P_inv @ (r_v - Q @ w1)
        c1 = _centre(pos[s_in, b, r], q, com[r]) + v1 * dt
        dq = 0.5 * dt * ti.Vector([
            -w1[0] * q[1] - w1[1] * q[2] - w1[2] * q[3],
            w1[0] * q[0] + w1[1] * q[3] - w1[2] * q[2],
            -w1[0] * q[3] + w1[1] * q[0] + w1[2] * q[1],
            w1[0] * q[2] - w1[1] * q[1] + w1[2] * q[0],
        ])  # fmt: skip
        q1 = q + dq
        q1 = q1 / ti.sqrt(q1.dot(q1))
        lin[s_out, b, r] = v1
        ang[s_out, b, r] = w1
        quat[s_out, b, r] = q1
        pos[s_out, b, r] = c1 - quat_rotate(q1, com[r])


@ti.kernel
def exchange(
    grid_mom_mass: ndarray(), grid_v: ndarray(), c: ti.i32, kinds: ti.template(), shape: ndarray(),
    mesh_sdf: ndarray(), radius: ndarray(), pos: ndarray(), quat: ndarray(), lin: ndarray(), ang: ndarray(),
    s_in: ti.i32,
    s_out: ti.i32, com: ndarray(), gravity: ti.math.vec3, dt: float, dx: float,
):  # fmt: skip
    """grid_v[c] -> grid_v[c + 1]: a node inside a body (at its pose of slot s_in; the first, if
    several) takes the body's velocity u' (slot s_out) there plus its own gravity; the others
    are copied."""
    for b, i, j in ti.ndrange(grid_v.shape[1], grid_v.shape[2], grid_v.shape[3]):
        for k in range(grid_v.shape[4]):
            out = grid_v[c, b, i, j, k].xyz
            if grid_mom_mass[b, i, j, k][3] > 0.0:
                p = ti.Vector([i, j, k]) * dx
                r = _owner(kinds, shape, mesh_sdf, pos, quat, radius, s_in, b, p)
                if r >= 0:
                    centre = _centre(pos[s_in, b, r], quat[s_in, b, r], com[r])
                    out = lin[s_out, b, r] + ang[s_out, b, r].cross(p - centre) + gravity * dt
            grid_v[c + 1, b, i, j, k] = pad4(out)


@ti.func
def _put_back(kind: ti.template(), shape, mesh_sdf: ti.template(), radius, xp, x0, pos0, quat0, pos1, quat1):
    """xp (end of the substep) put back out of one body (see :func:`project_out_bodies`); points
    outside its bounding sphere are not tested."""
    out = xp
    local1 = quat_rotate_inverse(quat1, xp - pos1)
    if local1.norm_sqr() < radius * radius:
        d1 = sdf_local(kind, shape, local1, mesh_sdf)
        if d1[0] < 0.0:
            local0 = quat_rotate_inverse(quat0, x0 - pos0)
            d0 = sdf_local(kind, shape, local0, mesh_sdf)
            target = local1 - d1[0] * ti.Vector([d1[1], d1[2], d1[3]])
            if d0[0] >= 0.0:
                n0 = ti.Vector([d0[1], d0[2], d0[3]])
                plane = local0 - d0[0] * n0  # the surface point nearest the start
                slid = local1 - ti.min((local1 - plane).dot(n0), 0.0) * n0
                ds = sdf_local(kind, shape, slid, mesh_sdf)
                target = ti.select(ds[0] >= 0.0, slid, slid - ds[0] * ti.Vector([ds[1], ds[2], ds[3]]))
            out = pos1 + quat_rotate(quat1, target)
    return out


@ti.kernel
def project_out_bodies(
    x: ndarray(), s_in: ti.i32, x_chain: ndarray(), c: ti.i32, kinds: ti.template(), shape: ndarray(),
    mesh_sdf: ndarray(), radius: ndarray(), pos: ndarray(), quat: ndarray(), s_out: ti.i32,
):  # fmt: skip
    """x_chain[c] -> x_chain[c + 1]: a particle that ends inside a body (pose of slot s_out) but
    started the substep outside it (pose of slot s_in) is put back, in the body's frame, onto
    the tangent plane of the surface point nearest its start (it keeps its tangential motion);
    one that started inside, or is still inside after that (curved surfaces), moves to the
    nearest surface point. Projecting to the nearest surface point alone would move liquid that
    enters under a body's face near an edge out through the side face: liquid would leak from
    under a floating body and it would sink. Bodies are visited in order."""
    for b, p in ti.ndrange(x_chain.shape[1], x_chain.shape[2]):
        xp = x_chain[c, b, p]
        for r in ti.static(range(len(kinds))):
            xp = _put_back(
                ti.static(kinds[r]), shape[r], mesh_sdf, radius[r], xp, x[s_in, b, p], pos[s_in, b, r],
                quat[s_in, b, r], pos[s_out, b, r], quat[s_out, b, r],
            )  # fmt: skip
        x_chain[c + 1, b, p] = xp


class RigidSolver:
    """The rigid bodies of a Model for B scenes, coupled to the MPM solver ``mpm``.

    Args:
        colliders: the kinematic colliders' coupling (engine/coupling/colliders.py), whose
            shapes and control arrays the contacts read.
        condition: index of the grid velocity set the exchange reads (``grid_v[condition] ->
            grid_v[condition + 1]``; one set for all bodies).
        projection: index of the position set the projection reads (``x_chain[projection] ->
            x_chain[projection + 1]``).
    """

    name = "rigid"
    #: Taichi's reverse mode accumulates into the body-state adjoints of a substep's input.
    accumulates_adjoint = True

    def __init__(self, model, batch_size: int, mpm, colliders, condition: int, projection: int):
        real = runtime.real_dtype()
        vec3, mat3 = ti.types.vector(3, real), ti.types.matrix(3, 3, real)
        self.model, self.mpm, self.colliders = model, mpm, colliders
        cfg = model.config
        self.lo, self.hi = cfg.boundary_cells * cfg.dx, cfg.domain_size - cfg.boundary_cells * cfg.dx
        self.batch_size = B = batch_size
        self.bodies = tuple(model.bodies)
        self.n_bodies = nb = len(self.bodies)
        self.condition, self.projection = condition, projection
        self.dt, self.dx = model.config.dt, model.config.dx
        self.gravity = ti.math.vec3(*model.config.gravity)
        props = [body.mass_properties() for body in self.bodies]
        self.unit_volume_np = np.array([p[0] for p in props])
        self.com_np = np.array([p[1] for p in props]).reshape(nb, 3)
        self.unit_inertia_np = np.array([p[2] for p in props]).reshape(nb, 3, 3)
        self.unit_volume = arrays.upload(self.unit_volume_np, real)
        self.com = arrays.upload(self.com_np, real, vec3)
        self.unit_inertia = arrays.upload(self.unit_inertia_np, real, mat3)
        packed = pack_colliders([_as_collider(body) for body in self.bodies])
        self.kinds = tuple(int(k) for k in packed.kinds)
        self.shape = arrays.upload(packed.params, real, ti.types.vector(SHAPE_DIM, real))
        self.mesh_sdf = arrays.upload(np.asarray(packed.mesh_sdf, dtype=np.float64), real)
        #: Radius of a sphere about each shape's origin that contains it [m].
        self.radius = arrays.upload(np.array([np.sqrt(3.0) * _half_extent(b.shape) for b in self.bodies]), real)
        self.params = ti.ndarray(ti.types.vector(1, real), (B, nb), needs_grad=True)
        samples = [surface_samples(body.shape) for body in self.bodies]
        padded = np.zeros((nb, max(len(p) for p in samples), 3))
        for r, p in enumerate(samples):
            padded[r, : len(p)] = p
        self.samples = arrays.upload(padded, real, vec3)
        self.n_samples = arrays.upload(np.array([len(p) for p in samples]), ti.i32)
        self.blocks = [ti.ndarray(mat3, (B, nb), needs_grad=True) for _ in range(3)]
        #: Force and torque on each body from FEM sensors during the substep (written by the
        #: sensor contact, engine/coupling/sensors.py; zero without sensors).
        self.ext_force = ti.ndarray(vec3, (B, nb), needs_grad=True)
        self.ext_torque = ti.ndarray(vec3, (B, nb), needs_grad=True)
        self.rhs = [ti.ndarray(vec3, (B, nb), needs_grad=True) for _ in range(2)]

    # ------------------------------------------------------------------ driver contract
    def stages(self) -> list[Stage]:
        return [
            Stage("grid_coupling", self.grid_exchange, self.grid_exchange_adjoint, self.zero_work_grads, replay=True),
            Stage("particle_coupling", self.project_out, self.project_out_adjoint),
        ]

    def allocate(self, slots: int, needs_grad: bool) -> RigidBuffers:
        return RigidBuffers(slots, self.batch_size, self.n_bodies, needs_grad)

    def allocate_kept(self) -> None:
        return None

    def kept_bytes(self) -> int:
        return 0

    # ------------------------------------------------------------------ stages
    def _work(self):
        return (*self.blocks, *self.rhs)

    def _assemble_args(self, sub: Substep) -> tuple:
        grids, buf = self.mpm.grids_of(sub), sub.state[self.name]
        return (
            grids.mom_mass, grids.v, self.condition, self.kinds, self.shape, self.mesh_sdf, self.radius, buf.pos,
            buf.quat, sub.s_in, self.com, self.gravity, self.dt, self.dx, *self._work(),
        )  # fmt: skip

    def _contact_args(self, sub: Substep) -> tuple:
        buf, col, ctrl = sub.state[self.name], self.colliders, sub.control
        return (
            self.samples, self.n_samples, buf.pos, buf.quat, sub.s_in, self.com, self.unit_volume, self.params,
            col.kinds, col.shape, ctrl.pos, ctrl.quat, ctrl.lin, ctrl.ang, col.mesh_sdf, sub.g, self.lo, self.hi,
            self.dt, *self._work(),
        )  # fmt: skip

    def _solve_args(self, sub: Substep) -> tuple:
        buf = sub.state[self.name]
        return (
            buf.pos, buf.quat, buf.lin, buf.ang, sub.s_in, sub.s_out, self.com, self.unit_volume,
            self.unit_inertia, self.params, self.gravity, self.dt, self.ext_force, self.ext_torque, *self._work(),
        )  # fmt: skip

    def _exchange_args(self, sub: Substep) -> tuple:
        grids, buf = self.mpm.grids_of(sub), sub.state[self.name]
        return (
            grids.mom_mass, grids.v, self.condition, self.kinds, self.shape, self.mesh_sdf, self.radius, buf.pos,
            buf.quat, buf.lin, buf.ang, sub.s_in, sub.s_out, self.com, self.gravity, self.dt, self.dx,
        )  # fmt: skip

    def _project_args(self, sub: Substep) -> tuple:
        buf, particles = sub.state[self.name], sub.state[self.mpm.name]
        return (
            particles.x, sub.s_in, self.mpm.x_chain, self.projection, self.kinds, self.shape, self.mesh_sdf,
            self.radius, buf.pos, buf.quat, sub.s_out,
        )  # fmt: skip

    def _build_systems(self, sub: Substep) -> None:
        """Every body's exchange system: grid nodes, collider and wall contacts."""
        zero_work(*self._work())
        assemble(*self._assemble_args(sub))
        contacts(*self._contact_args(sub))

    def grid_exchange(self, sub: Substep) -> None:
        self._build_systems(sub)
        solve_and_move(*self._solve_args(sub))
        exchange(*self._exchange_args(sub))

    def zero_work_grads(self, sub: Substep) -> None:
        """The work arrays' adjoints, and the grid momentum and mass adjoint this stage's
        adjoint adds to (the MPM grid update's adjoint then adds its own)."""
        zero_work(*(arr.grad for arr in self._work()))
        arrays.zero_array(self.mpm.grids_of(sub).mom_mass.grad)

    def grid_exchange_adjoint(self, sub: Substep) -> None:
        self._build_systems(sub)  # the systems the forward solved
        exchange.grad(*self._exchange_args(sub))
        solve_and_move.grad(*self._solve_args(sub))
        contacts.grad(*self._contact_args(sub))
        assemble.grad(*self._assemble_args(sub))

    def project_out(self, sub: Substep) -> None:
        project_out_bodies(*self._project_args(sub))

    def project_out_adjoint(self, sub: Substep) -> None:
        project_out_bodies.grad(*self._project_args(sub))

    # ------------------------------------------------------------------ host side
    def default_params(self) -> torch.Tensor:
        """(B, nb, 1) body densities [kg/m^3]."""
        dens = torch.tensor([[b.density] for b in self.bodies], dtype=runtime.torch_dtype())
        return dens.expand(self.batch_size, self.n_bodies, 1).clone()

    def load_params(self, params: torch.Tensor) -> None:
        self.params.from_numpy(params.detach().cpu().numpy().astype(arrays.np_real()))

    def zero_params_grad(self) -> None:
        arrays.zero_array(self.params.grad)

    def params_grad(self) -> torch.Tensor:
        return torch.as_tensor(self.params.grad.to_numpy(), dtype=runtime.torch_dtype())

    def initial(self) -> torch.Tensor:
        """(B, nb, 13) initial body state: pose (7) then twist (6)."""
        rows = [list(b.pose) + list(b.twist) for b in self.bodies]
        return torch.tensor(rows, dtype=runtime.torch_dtype()).expand(self.batch_size, self.n_bodies, 13).clone()

    def write(self, state: torch.Tensor, buf: RigidBuffers, slot: int, grad: bool = False) -> None:
        """A (B, nb, 13) body state (or, with ``grad``, its adjoint, added) -> slot ``slot``."""
        value = state.detach().cpu().numpy().astype(arrays.np_real())
        for arr, lo, hi in zip(buf.arrays(), (0, 3, 7, 10), (3, 7, 10, 13), strict=True):
            target = arr.grad if grad else arr
            full = target.to_numpy()
            full[slot] = value[..., lo:hi] + (full[slot] if grad else 0.0)
            target.from_numpy(full)

    def read(self, buf: RigidBuffers, slot: int, grad: bool = False) -> torch.Tensor:
        """Slot ``slot`` of the body state (or its adjoint) as a (B, nb, 13) tensor."""
        parts = [(arr.grad if grad else arr).to_numpy()[slot] for arr in buf.arrays()]
        return torch.as_tensor(np.concatenate(parts, axis=-1), dtype=runtime.torch_dtype())

    def status(self, buf: RigidBuffers, slot: int) -> np.ndarray:
        """(B,) 0 ok, 1 non-finite body state."""
        state = self.read(buf, slot).numpy()
        return np.where(np.isfinite(state).all(axis=(1, 2)), 0, 1).astype(np.int32)


def _as_collider(body: RigidBody):
    """The body's shape packed as a collider (one packing for every SDF consumer)."""
    from engine.colliders import Collider

    return Collider(body.shape, pose=body.pose)


def body_points_inside(body: RigidBody, pose: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Signed distance (N,) of world points to the body at ``pose`` (7,) (numpy)."""
    local = geometry.quat_rotate_inverse_numpy(pose[3:], np.asarray(points) - pose[:3])
    return body.shape.sdf(local)[0]


__all__ = ["FIELDS", "RigidBody", "RigidSolver", "body_points_inside"]
