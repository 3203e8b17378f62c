"""Penalty contact of FEM sensors with kinematic colliders, the MPM material and each other.

DiffTactile's penalty law (Si et al., ICLR 2024) in :func:`penalty_force`; the sensor-MPM contact
goes through the MPM grid (occupancy from the grid mass), sensor pairs through a spatial hash of
the surface triangles (Teschner et al. 2003). :class:`SensorContact` contributes one
``grid_coupling`` stage that fills the FEM solver's contact-force rows.
"""

import numpy as np
import taichi as ti

from engine import arrays
from engine.coupling.colliders import ColliderCoupling
from engine.geometry.pose import quat_rotate
from engine.geometry.sdf import sdf_world
from engine.solvers.base import NoState, Stage, Substep
from engine.solvers.mpm import MPMSolver
from engine.solvers.mpm_kernels import axis_weights, pad4, stencil
from engine.state import Model

ndarray = ti.types.ndarray


@ti.func
def penalty_force(row, mass, dt, depth, n, v_rel):
    """DiffTactile's penalty force on a sensor node at penetration ``depth`` > 0 along the other
    body's outward normal n, relative velocity v_rel; ``row`` holds k_n, k_d, k_t, mu in
    entries 4-7. The viscous parts are limited so that one explicit step of the node (mass
    ``mass``) never reverses its relative velocity: the normal damping coefficient to
    mass / dt, the friction to mass |v_t| / dt (besides the Coulomb cap mu F_n). Without the
    limit a light node's explicit step is unstable once k_d depth or k_t exceeds 2 mass / dt,
    which the adjoint amplifies even when the forward looks stable."""
    vn = v_rel.dot(n)
    damping = ti.min(row[5] * depth, mass / dt)
    fn = row[4] * depth + damping * ti.max(-vn, 0.0)
    vt = v_rel - vn * n
    vt_norm = ti.sqrt(vt.dot(vt) + 1e-20)
    ft = ti.min(ti.min(row[6] * vt_norm, row[7] * fn), mass * vt_norm / dt)
    return fn * n - ft * vt / vt_norm


@ti.kernel
def sensor_contact(
    x: ndarray(),
    v: ndarray(),
    s_in: ti.i32,
    surface_nodes: ndarray(),
    node_sensor: ndarray(),
    sensor_mount: ndarray(),
    params: ndarray(),
    node_volume: ndarray(),
    dt: float,
    c: ti.i32,
    kind: ti.template(),
    collider_shape: ndarray(),
    collider_pos: ndarray(),
    collider_quat: ndarray(),
    collider_lin: ndarray(),
    collider_ang: ndarray(),
    mesh_sdf: ndarray(),
    g: ti.i32,
    f_contact: ndarray(),
):
    """Penalty contact of every sensor surface node with collider c (skipping each sensor's own
    mount): ``f_contact[c, b, i]`` = the force on node i (the model of
    :class:`engine.solvers.fem.PenaltyContact`; parameters k_n, k_d, k_t, mu in columns 4-7)."""
    for b, j in ti.ndrange(x.shape[1], surface_nodes.shape[0]):
        i = surface_nodes[j]
        xi = x[s_in, b, i]
        force = ti.Vector.zero(float, 3)
        k = node_sensor[i]
        if sensor_mount[k] != c:
            pos = collider_pos[g, b, c]
            res = sdf_world(kind, collider_shape[c], pos, collider_quat[g, b, c], xi, mesh_sdf)
            if res[0] < 0.0:
                n = ti.Vector([res[1], res[2], res[3]])
                row = params[b, k]
                v_rel = v[s_in, b, i] - (collider_lin[g, b, c] + collider_ang[g, b, c].cross(xi - pos))
                force = penalty_force(row, row[2] * node_volume[i], dt, -res[0], n, v_rel)
        f_contact[c, b, i] = force


@ti.kernel
def sensor_body_contact(
    x: ndarray(), v: ndarray(), s_in: ti.i32, surface_nodes: ndarray(), node_sensor: ndarray(), params: ndarray(),
    node_volume: ndarray(), dt: float, kinds: ti.template(), shape: ndarray(), mesh_sdf: ndarray(), pos: ndarray(),
    quat: ndarray(), lin: ndarray(), ang: ndarray(), com: ndarray(), row: ti.i32, f_contact: ndarray(),
    body_force: ndarray(), body_torque: ndarray(),
):  # fmt: skip
    """Penalty contact of every sensor surface node with the free rigid bodies (their state of
    slot s_in): the node's force goes to ``f_contact[row]``, its reaction (force and torque
    about the body's centre of mass) to ``body_force``/``body_torque``, which the rigid bodies'
    exchange adds as an impulse (engine/solvers/rigid.py); both must be zero on entry."""
    for b, j in ti.ndrange(x.shape[1], surface_nodes.shape[0]):
        i = surface_nodes[j]
        xi = x[s_in, b, i]
        force = ti.Vector.zero(float, 3)
        for r in ti.static(range(len(kinds))):
            q = quat[s_in, b, r]
            res = sdf_world(ti.static(kinds[r]), shape[r], pos[s_in, b, r], q, xi, mesh_sdf)
            if res[0] < 0.0:
                n = ti.Vector([res[1], res[2], res[3]])
                row_p = params[b, node_sensor[i]]
                centre = pos[s_in, b, r] + quat_rotate(q, com[r])
                v_rel = v[s_in, b, i] - (lin[s_in, b, r] + ang[s_in, b, r].cross(xi - centre))
                f = penalty_force(row_p, row_p[2] * node_volume[i], dt, -res[0], n, v_rel)
                force += f
                body_force[b, r] += -f
                body_torque[b, r] += (xi - centre).cross(-f)
        f_contact[row, b, i] = force


@ti.kernel
def copy_grid_velocity(grid_v: ndarray(), c: ti.i32):
    """grid_v[c + 1] = grid_v[c] (the sensors' reaction is then added to the copy)."""
    for b, i, j in ti.ndrange(grid_v.shape[1], grid_v.shape[2], grid_v.shape[3]):
        for k in range(grid_v.shape[4]):
            grid_v[c + 1, b, i, j, k] = grid_v[c, b, i, j, k]


@ti.kernel
def sensor_mpm_contact(
    grid_mom_mass: ndarray(),
    grid_v: ndarray(),
    c: ti.i32,
    x: ndarray(),
    v: ndarray(),
    s_in: ti.i32,
    surface_nodes: ndarray(),
    node_sensor: ndarray(),
    params: ndarray(),
    node_volume: ndarray(),
    inv_dx: float,
    m_ref: float,
    dt: float,
    row: ti.i32,
    f_contact: ndarray(),
):
    """Penalty contact of the sensor surface nodes with MPM material, through the MPM grid.

    At a surface node, the grid mass interpolated with the quadratic B-spline weights gives the
    material's occupancy phi = m(x) / m_ref (m_ref: the mass of a full cell) and its gradient;
    the node is inside the material where phi > 1/2, at depth (phi - 1/2) / |grad phi| along
    n = -grad phi / |grad phi|; the relative velocity is against the mass-weighted grid velocity.
    The force follows the penalty law of :class:`engine.solvers.fem.PenaltyContact`; its
    reaction -F dt is spread over the stencil's nodes as velocity changes -F dt w_g / m(x), so
    the momentum the grid loses is exactly F dt: ``grid_v[c] -> grid_v[c + 1]`` (which must hold
    a copy of grid_v[c]); the node force goes to ``f_contact[row]``."""
    for b, j in ti.ndrange(x.shape[1], surface_nodes.shape[0]):
        i = surface_nodes[j]
        xi = x[s_in, b, i]
        raw, fx = stencil(xi, inv_dx)
        base = ti.max(ti.min(raw, grid_v.shape[2] - 3), 0)  # a node off the grid reads in bounds ...
        N, dN = axis_weights(fx)
        N *= ti.select((base == raw).all(), 1.0, 0.0)  # ... with zero weights: no material, no contact
        m = 0.0
        p = ti.Vector.zero(float, 3)
        grad_m = ti.Vector.zero(float, 3)
        for a, e, f in ti.static(ti.ndrange(3, 3, 3)):
            node = base + ti.Vector([a, e, f])
            w = N[0, a] * N[1, e] * N[2, f]
            gw = ti.Vector([dN[0, a] * N[1, e] * N[2, f], N[0, a] * dN[1, e] * N[2, f], N[0, a] * N[1, e] * dN[2, f]])
            mg = grid_mom_mass[b, node[0], node[1], node[2]][3]
            m += w * mg
            p += w * mg * grid_v[c, b, node[0], node[1], node[2]].xyz
            grad_m += (inv_dx * mg) * gw
        force = ti.Vector.zero(float, 3)
        phi = m / m_ref
        if phi > 0.5:
            grad_phi = grad_m / m_ref
            g_norm = ti.sqrt(grad_phi.dot(grad_phi) + 1e-30)
            n = -grad_phi / g_norm
            depth = (phi - 0.5) / ti.max(g_norm, 0.5 * inv_dx)
            row_p = params[b, node_sensor[i]]
            v_rel = v[s_in, b, i] - p / m
            force = penalty_force(row_p, row_p[2] * node_volume[i], dt, depth, n, v_rel)
            for a, e, f in ti.static(ti.ndrange(3, 3, 3)):
                node = base + ti.Vector([a, e, f])
                w = N[0, a] * N[1, e] * N[2, f]
                grid_v[c + 1, b, node[0], node[1], node[2]] += pad4(-(w * dt / m) * force)
        f_contact[row, b, i] = force


# ------------------------------------------------------------------ sensor-sensor contact
#: Buckets of the spatial hash of sensor surface triangles (a power of two).
HASH_SIZE = 1 << 16


@ti.func
def _cell_hash(c):
    """Bucket of the integer cell c (Teschner et al. 2003, "Optimized spatial hashing")."""
    return ((c[0] * 73856093) ^ (c[1] * 19349663) ^ (c[2] * 83492791)) & (HASH_SIZE - 1)


@ti.func
def _tri_cells(x: ti.template(), s_in, b, tri, inv_h, band):
    """The integer cell range covering a triangle's bounding box grown by ``band``."""
    a, p1, p2 = x[s_in, b, tri[0]], x[s_in, b, tri[1]], x[s_in, b, tri[2]]
    lo = ti.floor((ti.min(a, ti.min(p1, p2)) - band) * inv_h, ti.i32)
    hi = ti.floor((ti.max(a, ti.max(p1, p2)) + band) * inv_h, ti.i32)
    return lo, hi


@ti.kernel
def hash_count(x: ndarray(), s_in: ti.i32, tris: ndarray(), inv_h: float, band: float, counts: ndarray()):
    """counts[b, bucket] = how many (triangle, cell) pairs fall in each bucket."""
    for b, t in ti.ndrange(x.shape[1], tris.shape[0]):
        lo, hi = _tri_cells(x, s_in, b, tris[t], inv_h, band)
        for i, j, k in ti.ndrange((lo[0], hi[0] + 1), (lo[1], hi[1] + 1), (lo[2], hi[2] + 1)):
            ti.atomic_add(counts[b, _cell_hash(ti.Vector([i, j, k]))], 1)


@ti.kernel
def hash_offsets(counts: ndarray(), start: ndarray()):
    """start[b, h] = sum of counts[b, :h] (exclusive prefix sum); counts is zeroed for the fill."""
    for b in range(counts.shape[0]):
        total = 0
        for h in range(HASH_SIZE):
            start[b, h] = total
            total += counts[b, h]
            counts[b, h] = 0
        start[b, HASH_SIZE] = total


@ti.kernel
def hash_fill(
    x: ndarray(), s_in: ti.i32, tris: ndarray(), inv_h: float, band: float, start: ndarray(), cursor: ndarray(),
    items: ndarray(), overflow: ndarray(),
):  # fmt: skip
    """items[b, start[b, h] : start[b, h + 1]] = the triangles registered in bucket h."""
    for b, t in ti.ndrange(x.shape[1], tris.shape[0]):
        lo, hi = _tri_cells(x, s_in, b, tris[t], inv_h, band)
        for i, j, k in ti.ndrange((lo[0], hi[0] + 1), (lo[1], hi[1] + 1), (lo[2], hi[2] + 1)):
            h = _cell_hash(ti.Vector([i, j, k]))
            q = start[b, h] + ti.atomic_add(cursor[b, h], 1)
            if q < items.shape[1]:
                items[b, q] = t
            else:
                overflow[b] = 1


@ti.func
def _projection(x: ti.template(), s_in, b, tri, p, band):
    """(inside, d, n, u, v, w): signed distance d of p to the plane of triangle ``tri`` along its
    outward unit normal n, and the barycentric coordinates (u, v, w) of p's projection; inside
    when -band < d < 0 and the projection lies in the closed triangle."""
    a, p1, p2 = x[s_in, b, tri[0]], x[s_in, b, tri[1]], x[s_in, b, tri[2]]
    e1, e2 = p1 - a, p2 - a
    nrm = e1.cross(e2)
    n = nrm / ti.sqrt(nrm.dot(nrm) + 1e-30)
    d = (p - a).dot(n)
    r = p - a
    d11, d12, d22 = e1.dot(e1), e1.dot(e2), e2.dot(e2)
    r1, r2 = r.dot(e1), r.dot(e2)
    det = d11 * d22 - d12 * d12
    v = (d22 * r1 - d12 * r2) / det
    w = (d11 * r2 - d12 * r1) / det
    u = 1.0 - v - w
    inside = (d < 0.0) and (d > -band) and (u >= 0.0) and (v >= 0.0) and (w >= 0.0)
    return inside, d, n, u, v, w


#: Most other-sensor triangles one surface node can be in contact with at once (a node that
#: projects onto a shared vertex touches each of the vertex's triangles).
MAX_PAIRS = 8


@ti.kernel
def pair_candidates(
    x: ndarray(), s_in: ti.i32, surface_nodes: ndarray(), node_sensor: ndarray(), tris: ndarray(),
    tri_sensor: ndarray(), inv_h: float, band: float, start: ndarray(), items: ndarray(), pairs: ndarray(),
):  # fmt: skip
    """pairs[b, j, :] = the other-sensor triangles surface node j lies just behind (at most
    MAX_PAIRS, then -1): found through the hash, so the differentiable kernel below loops over
    a fixed number of slots."""
    for b, j in ti.ndrange(x.shape[1], surface_nodes.shape[0]):
        i = surface_nodes[j]
        p = x[s_in, b, i]
        h = _cell_hash(ti.floor(p * inv_h, ti.i32))
        for k in ti.static(range(MAX_PAIRS)):
            pairs[b, j, k] = -1
        count = 0
        for q in range(start[b, h], ti.min(start[b, h + 1], items.shape[1])):
            t = items[b, q]
            if tri_sensor[t] != node_sensor[i] and count < MAX_PAIRS:
                inside, _d, _n, _u, _v, _w = _projection(x, s_in, b, tris[t], p, band)
                if inside:
                    pairs[b, j, count] = t
                    count += 1


@ti.kernel
def sensor_pair_contact(
    x: ndarray(), v: ndarray(), s_in: ti.i32, surface_nodes: ndarray(), node_sensor: ndarray(), params: ndarray(),
    node_volume: ndarray(), tris: ndarray(), band: float, dt: float, pairs: ndarray(), row: ti.i32,
    f_contact: ndarray(),
):  # fmt: skip
    """Penalty contact of every surface node with the other sensors' surface triangles it lies
    just behind (within ``band``; ``pairs`` from :func:`pair_candidates`): the node gets the
    force of :func:`penalty_force` along the triangle's outward normal (relative to the velocity
    interpolated at the projection), shared equally between its triangles, and each triangle's
    nodes the reaction split by barycentric weights, so momentum is exchanged exactly.
    ``f_contact[row]`` must be zero on entry (it accumulates)."""
    for b, j in ti.ndrange(x.shape[1], surface_nodes.shape[0]):
        i = surface_nodes[j]
        p = x[s_in, b, i]
        count = 0
        for k in ti.static(range(MAX_PAIRS)):
            count += ti.select(pairs[b, j, k] >= 0, 1, 0)
        for k in ti.static(range(MAX_PAIRS)):
            t = pairs[b, j, k]
            if t >= 0:
                tri = tris[t]
                _inside, d, n, u, w1, w2 = _projection(x, s_in, b, tri, p, band)
                v_other = u * v[s_in, b, tri[0]] + w1 * v[s_in, b, tri[1]] + w2 * v[s_in, b, tri[2]]
                row_p = params[b, node_sensor[i]]
                force = penalty_force(row_p, row_p[2] * node_volume[i], dt, -d, n, v[s_in, b, i] - v_other) / count
                f_contact[row, b, i] += force
                f_contact[row, b, tri[0]] += -u * force
                f_contact[row, b, tri[1]] += -w1 * force
                f_contact[row, b, tri[2]] += -w2 * force


@ti.kernel
def zero_row(f: ndarray(), row: ti.i32):
    for b, i in ti.ndrange(f.shape[1], f.shape[2]):
        f[row, b, i] = ti.zero(f[row, b, i])


class SensorContact(NoState):
    """Penalty contact of the sensors' surface nodes with the colliders, the MPM material and
    each other and with free rigid bodies (stage ``grid_coupling``, after the colliders' grid
    conditions, before the rigid bodies' exchange, which adds the bodies' reaction) into the FEM
    contact-force rows (one per collider, one for the MPM material, one for sensor pairs, one for
    rigid bodies: the last), which
    the FEM step sums; the MPM material's reaction goes to the last grid velocity set
    (``grid_v[K] -> grid_v[K + 1]``). Sensor pairs find their candidates through a spatial hash
    of the surface triangles rebuilt every substep (cost linear in nodes and triangles)."""

    #: (triangle, cell) registrations the hash holds per triangle (a triangle spans at most 3
    #: cells per axis while its edges stay below 2 cells).
    CELLS_PER_TRIANGLE = 27

    name = "sensor_contact"

    def __init__(self, model: Model, colliders: ColliderCoupling, fem, mpm: MPMSolver, rigid=None):
        self.colliders, self.fem, self.mpm, self.rigid = colliders, fem, mpm, rigid
        self.sensor_mount = arrays.upload(np.array([s.mount for s in model.sensors]), ti.i32)
        self.m_ref = max(m.density for m in model.materials) * model.config.dx**3
        self.dt = model.config.dt
        self.pairs = len(model.sensors) > 1
        if self.pairs:
            tris, tri_sensor, edges = [], [], []
            for k, sensor in enumerate(model.sensors):
                mesh = sensor.mesh
                local = np.asarray(mesh.surface_nodes)[np.asarray(mesh.surface_tris)]
                tris.append(fem.node_offset[k] + local)
                tri_sensor.append(np.full(len(local), k))
                X = np.asarray(mesh.nodes)[local]
                edges.append(np.linalg.norm(X - np.roll(X, 1, axis=1), axis=-1).max())
            tris = np.concatenate(tris)
            self.cell = float(max(edges))  # hash cell = the longest surface edge [m]
            self.band = self.cell  # contact is sought within one element behind a surface
            self.tris = arrays.upload(tris, ti.i32, ti.types.vector(3, ti.i32))
            self.tri_sensor = arrays.upload(np.concatenate(tri_sensor), ti.i32)
            B = fem.batch_size
            self.counts = ti.ndarray(ti.i32, (B, HASH_SIZE))
            self.start = ti.ndarray(ti.i32, (B, HASH_SIZE + 1))
            self.items = ti.ndarray(ti.i32, (B, self.CELLS_PER_TRIANGLE * len(tris)))
            self.overflow = ti.ndarray(ti.i32, (B,))
            self.pairs_of = ti.ndarray(ti.i32, (B, len(fem.surface), MAX_PAIRS))

    def stages(self) -> list[Stage]:
        # Kept (its forces and grid_v[K + 1] are in the kept sets) unless sensor pairs need the
        # candidate lists of the substep being differentiated, which only a rerun rebuilds, or
        # rigid bodies the reaction of that substep (their exchange reads it).
        kept = not self.pairs and self.rigid is None
        return [Stage("grid_coupling", self.forces, self.forces_adjoint, self.zero_mass_grad, kept=kept)]

    def zero_mass_grad(self, sub: Substep) -> None:
        """The grid momentum and mass adjoint this stage's adjoint adds to (the MPM grid update's
        adjoint then adds its own), and the bodies' reaction adjoints."""
        arrays.zero_array(self.mpm.grids_of(sub).mom_mass.grad)
        if self.rigid is not None:
            arrays.zero_array(self.rigid.ext_force.grad)
            arrays.zero_array(self.rigid.ext_torque.grad)

    def _body_args(self, sub: Substep) -> tuple:
        fem, buf, rigid = self.fem, sub.state[self.fem.name], self.rigid
        bodies = sub.state[rigid.name]
        return (
            buf.x, buf.v, sub.s_in, fem.surface_nodes, fem.node_sensor, fem.params, fem.node_volume, self.dt,
            rigid.kinds, rigid.shape, rigid.mesh_sdf, bodies.pos, bodies.quat, bodies.lin, bodies.ang, rigid.com,
            fem.n_rows - 1, fem.forces_of(sub).f_contact, rigid.ext_force, rigid.ext_torque,
        )  # fmt: skip

    def _args(self, sub: Substep, c: int) -> tuple:
        col, fem, buf, ctrl = self.colliders, self.fem, sub.state[self.fem.name], sub.control
        return (
            buf.x, buf.v, sub.s_in, fem.surface_nodes, fem.node_sensor, self.sensor_mount, fem.params,
            fem.node_volume, self.dt, c,
            col.kinds[c], col.shape, ctrl.pos, ctrl.quat, ctrl.lin, ctrl.ang, col.mesh_sdf, sub.g,
            fem.forces_of(sub).f_contact,
        )  # fmt: skip

    def _mpm_args(self, sub: Substep) -> tuple:
        fem, buf, grids, K = self.fem, sub.state[self.fem.name], self.mpm.grids_of(sub), self.colliders.n_colliders
        return (
            grids.mom_mass, grids.v, K, buf.x, buf.v, sub.s_in, fem.surface_nodes, fem.node_sensor, fem.params,
            fem.node_volume, self.mpm.inv_dx, self.m_ref, self.dt, K, fem.forces_of(sub).f_contact,
        )  # fmt: skip

    def _pair_args(self, sub: Substep) -> tuple:
        fem, buf = self.fem, sub.state[self.fem.name]
        return (
            buf.x, buf.v, sub.s_in, fem.surface_nodes, fem.node_sensor, fem.params, fem.node_volume, self.tris,
            self.band, self.dt, self.pairs_of, self.colliders.n_colliders + 1, fem.forces_of(sub).f_contact,
        )  # fmt: skip

    def _build_hash(self, sub: Substep) -> None:
        """Register the surface triangles (positions of slot s_in) in the spatial hash and list
        the triangles each surface node lies just behind."""
        x, s_in, inv_h = sub.state[self.fem.name].x, sub.s_in, 1.0 / self.cell
        arrays.zero_array(self.counts)
        hash_count(x, s_in, self.tris, inv_h, self.band, self.counts)
        hash_offsets(self.counts, self.start)
        hash_fill(x, s_in, self.tris, inv_h, self.band, self.start, self.counts, self.items, self.overflow)
        pair_candidates(
            x, s_in, self.fem.surface_nodes, self.fem.node_sensor, self.tris, self.tri_sensor, inv_h, self.band,
            self.start, self.items, self.pairs_of,
        )  # fmt: skip

    def forces(self, sub: Substep) -> None:
        for c in range(self.colliders.n_colliders):
            sensor_contact(*self._args(sub, c))
        copy_grid_velocity(self.mpm.grids_of(sub).v, self.colliders.n_colliders)
        sensor_mpm_contact(*self._mpm_args(sub))
        if self.pairs:
            self._build_hash(sub)
            zero_row(self.fem.forces_of(sub).f_contact, self.colliders.n_colliders + 1)
            sensor_pair_contact(*self._pair_args(sub))
        if self.rigid is not None:
            arrays.zero_array(self.rigid.ext_force)
            arrays.zero_array(self.rigid.ext_torque)
            sensor_body_contact(*self._body_args(sub))

    def forces_adjoint(self, sub: Substep) -> None:
        if self.rigid is not None:
            sensor_body_contact.grad(*self._body_args(sub))
        if self.pairs:  # the forward rerun before this adjoint built the hash of this substep
            sensor_pair_contact.grad(*self._pair_args(sub))
        sensor_mpm_contact.grad(*self._mpm_args(sub))
        copy_grid_velocity.grad(self.mpm.grids_of(sub).v, self.colliders.n_colliders)
        for c in reversed(range(self.colliders.n_colliders)):
            sensor_contact.grad(*self._args(sub, c))
