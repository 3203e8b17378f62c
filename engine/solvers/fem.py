"""Tetrahedral FEM elastomers (tactile sensor gels): linear tets, Stable Neo-Hookean, lumped mass,
explicit symplectic Euler, a kinematic mount.

Model (per sensor; Smith, de Goes, Kim, "Stable Neo-Hookean Flesh Simulation", ACM TOG 2018,
the energy of their Eq. 14 without the log term):

    Psi(F) = mu/2 (tr(F^T F) - 3) + lam/2 (J - alpha)^2,   alpha = 1 + mu/lam,   J = det F,
    P(F)   = mu F + lam (J - alpha) cof(F),                  cof(F) = J F^-T (column i = f_j x f_k).

At F = I, P = 0 (rest-stable), and the linearization is linear elasticity with shear modulus mu
and first Lame parameter lam - mu, so ``mu = E / (2 (1 + nu))`` and ``lam = lam_lin + mu`` with
``lam_lin = E nu / ((1 + nu)(1 - 2 nu))`` reproduce an elastomer of Young's modulus E and
Poisson ratio nu. Linear tetrahedra (Sifakis & Barbic, "FEM Simulation of 3D Deformable Solids",
SIGGRAPH 2012 course): ``F = D_s D_m^-1``, node forces ``H = -V0 P D_m^-T`` (columns to nodes
1..3, minus their sum to node 0). Lumped mass: a quarter of each adjacent tet's ``rho V0``.
Mass-proportional (Rayleigh alpha) damping ``f = -c m v`` with c [1/s].

Time stepping, one step per simulator substep (symplectic Euler, as DiffTactile, Si et al. 2024):
``v' = v + dt (f_elastic + f_contact) / m + dt g - dt c v``, ``x' = x + dt v'``. Mount nodes
(the kinematic / Dirichlet set, e.g. the gel's back face or the dome's inner layer) follow the
pose of the collider the sensor is mounted on: ``x' = p(t + dt) + R(q(t + dt)) X_mount``,
``v' = v_lin + w x (x' - p)``. The explicit step is stable for ``dt <= h_min / c_p`` (the
P-wave speed ``c_p = sqrt((lam_lin + 2 mu) / rho)`` and the shortest tet height h_min); the
scene builder refuses a larger dt with an error naming the numbers instead of sub-cycling, so
every stage of a substep stays one step and the checkpointed adjoint stays uniform.

Contact forces come from engine/coupling/sensors.py (penalty contact with colliders, one row per
collider: ``f_contact[c, b, i]``); the integrator adds them and records their sum in the state,
so losses and tactile signals can use it. Adjoint: Taichi's reverse mode (accumulating).

Conventions: state arrays ``x, v, f`` are ``(slots, B, n)`` vec3 over all sensors' nodes in
world coordinates [m, m/s, N]; parameters ``(B, n_sensors, 8)`` are
:data:`SENSOR_PARAM_NAMES`.
"""

import functools
import math
from dataclasses import dataclass

import numpy as np
import taichi as ti
import torch

from engine import arrays, runtime
from engine.geometry.pose import quat_rotate
from engine.solvers.base import NoState, Stage, Substep

ndarray = ti.types.ndarray

SENSOR_PARAM_NAMES = ("E", "nu", "density", "damping", "k_n", "k_d", "k_t", "mu")
P_E, P_NU, P_RHO, P_DAMP, P_KN, P_KD, P_KT, P_MU = range(8)
N_SENSOR_PARAMS = len(SENSOR_PARAM_NAMES)


@dataclass(frozen=True)
class Elastomer:
    """Material of a sensor gel (SI units).

    Attributes:
        E: Young's modulus [Pa] (silicone gels: about 0.05-1 MPa).
        nu: Poisson ratio, in (-1, 0.5).
        density: [kg/m^3] (about 1,100 for silicone).
        damping: mass-proportional damping coefficient c [1/s] (0: none).
    """

    E: float = 1.0e5
    nu: float = 0.45
    density: float = 1100.0
    damping: float = 0.0

    def __post_init__(self):
        check_elastomer(self.E, self.nu, self.density, self.damping, "Elastomer")

    def lame(self) -> tuple[float, float]:
        """(mu, lam) of the Stable Neo-Hookean energy above."""
        return lame(self.E, self.nu)

    def wave_speed(self) -> float:
        """P-wave speed sqrt((lam_lin + 2 mu) / rho) [m/s]."""
        mu, lam = self.lame()
        return math.sqrt((lam - mu + 2.0 * mu) / self.density)


@dataclass(frozen=True)
class PenaltyContact:
    """Penalty contact of a sensor's surface nodes (DiffTactile's model, per node).

    With penetration depth ``delta = -sdf > 0`` along the other body's outward normal n and the
    relative velocity ``v_rel = v_node - v_other`` (``v_n = v_rel . n``, ``v_t`` its tangential
    part): ``F_n = (k_n + k_d max(-v_n, 0)) delta n`` and
    ``F_t = -t min(k_t |v_t|, mu |F_n|)`` with ``t = v_t / |v_t|``. For the explicit step the
    viscous parts are limited per node (mass m): ``k_d delta <= m / dt`` and
    ``|F_t| <= m |v_t| / dt``, so a step never reverses a node's relative velocity
    (see :func:`engine.coupling.sensors.penalty_force`). So k_t acts only below m / dt (about
    0.1 N s/m for 2 mm cells at dt = 5e-5 s); above it, sticking is limited by the step, and a
    loss cannot tell larger k_t apart.

    Penetration tolerance: a node carrying a contact force F sits ``F / k_n`` inside the other
    body at rest (0.1 mm for 0.03 N at the default k_n), plus at most ``|v| dt`` while it moves.

    Attributes:
        k_n: normal stiffness [N/m]. k_d: normal damping [N s/m^2]. k_t: tangential viscous
        coefficient [N s/m]. mu: Coulomb friction coefficient.
    """

    k_n: float = 300.0
    k_d: float = 5.0e3
    k_t: float = 1.0
    mu: float = 0.5

    def __post_init__(self):
        for name in ("k_n", "k_d", "k_t", "mu"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ValueError(f"PenaltyContact.{name} must be a finite number >= 0, got {value!r}")


def check_elastomer(E, nu, density, damping, owner: str) -> None:
    """Raise ValueError naming the field if the elastomer parameters are not physical."""
    for name, value in (("E", E), ("nu", nu), ("density", density), ("damping", damping)):
        if not (isinstance(value, (int, float, np.floating)) and math.isfinite(value)):
            raise ValueError(f"{owner}.{name} must be a finite number, got {value!r}")
    if E <= 0:
        raise ValueError(f"{owner}.E must be > 0 Pa, got {E!r}")
    if not -1.0 < nu < 0.5:
        raise ValueError(f"{owner}.nu must lie in (-1, 0.5), got {nu!r}")
    if density <= 0:
        raise ValueError(f"{owner}.density must be > 0 kg/m^3, got {density!r}")
    if damping < 0:
        raise ValueError(f"{owner}.damping must be >= 0 1/s, got {damping!r}")


def lame(E: float, nu: float) -> tuple[float, float]:
    """(mu, lam) of the Stable Neo-Hookean energy for Young's modulus E and Poisson ratio nu."""
    mu = E / (2.0 * (1.0 + nu))
    lam_lin = E * nu / ((1.0 + nu) * (1.0 - 2.0 * nu))
    return mu, lam_lin + mu


@dataclass(frozen=True, eq=False)
class Sensor:
    """An elastomer sensor in a scene: its tet mesh, material, contact model and mount.

    Attributes:
        mesh: :class:`engine.geometry.tetmesh.TetMesh` in the sensor frame [m].
        mount: index of the collider the sensor is mounted on; its mount nodes move rigidly with
            that collider.
        offset: pose ``(x, y, z, qw, qx, qy, qz)`` of the sensor frame in the mount collider's
            local frame (e.g. the gel on a finger's pad face).
        material: :class:`Elastomer`.
        contact: :class:`PenaltyContact` of the surface nodes with colliders.
        name: label for errors and rendering.
    """

    mesh: object
    mount: int
    offset: tuple = (0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0)
    material: Elastomer = Elastomer()
    contact: PenaltyContact = PenaltyContact()
    name: str = "sensor"

    def __post_init__(self):
        from engine.geometry.pose import normalize_pose

        object.__setattr__(self, "offset", normalize_pose(self.offset, "Sensor.offset"))
        if not isinstance(self.material, Elastomer):
            raise ValueError(f"Sensor.material must be an Elastomer, got {type(self.material).__name__}")
        if not isinstance(self.contact, PenaltyContact):
            raise ValueError(f"Sensor.contact must be a PenaltyContact, got {type(self.contact).__name__}")

    def mount_frame_nodes(self) -> np.ndarray:
        """(n, 3) rest nodes in the mount collider's local frame [m]."""
        from engine.geometry.pose import quat_rotate_numpy

        return np.asarray(self.offset[:3]) + quat_rotate_numpy(self.offset[3:], np.asarray(self.mesh.nodes, float))

    def params_row(self) -> np.ndarray:
        m, c = self.material, self.contact
        return np.array([m.E, m.nu, m.density, m.damping, c.k_n, c.k_d, c.k_t, c.mu], dtype=np.float64)

    def min_height(self) -> float:
        """Shortest tet height 3 V / (largest face area) [m]."""
        return self._min_height

    @functools.cached_property
    def _min_height(self) -> float:
        X = self.mesh.nodes[self.mesh.tets]
        a, b, c, d = X[:, 0], X[:, 1], X[:, 2], X[:, 3]
        vol = np.abs(np.einsum("ij,ij->i", np.cross(b - a, c - a), d - a)) / 6.0
        faces = [(a, b, c), (a, b, d), (a, c, d), (b, c, d)]
        areas = np.stack([0.5 * np.linalg.norm(np.cross(q - p, r - p), axis=1) for p, q, r in faces], axis=1)
        return float(np.min(3.0 * vol / areas.max(axis=1)))

    @functools.cached_property
    def min_node_volume(self) -> float:
        """Smallest lumped volume of a contact-surface node [m^3] (only they feel contact)."""
        return float(np.min(_node_volumes(self.mesh)[np.asarray(self.mesh.surface_nodes)]))

    def stable_dt(self, row=None) -> float:
        """Largest stable explicit step [s] for the parameter row ``row`` (default the sensor's
        own, :data:`SENSOR_PARAM_NAMES` order): the smallest of the P-wave crossing time of the
        shortest tet height, sqrt(m / k_n) for the lightest contact-surface node on the contact
        spring (half its period limit 2 sqrt(m / k_n)), and 1 / c for the mass-proportional
        damping c."""
        E, nu, rho, damping, k_n = (float(v) for v in (self.params_row() if row is None else row)[:5])
        mu, lam = lame(E, nu)
        wave = self.min_height() / math.sqrt((lam + mu) / rho)
        contact = math.sqrt(rho * self.min_node_volume / k_n) if k_n > 0 else math.inf
        return min(wave, contact, 1.0 / damping if damping > 0 else math.inf)


def _node_volumes(mesh) -> np.ndarray:
    """(n,) lumped volume per node: a quarter of each adjacent tet's rest volume [m^3]."""
    X = mesh.nodes[mesh.tets]
    vol = np.abs(np.einsum("ij,ij->i", np.cross(X[:, 1] - X[:, 0], X[:, 2] - X[:, 0]), X[:, 3] - X[:, 0])) / 6.0
    out = np.zeros(len(mesh.nodes))
    np.add.at(out, mesh.tets.reshape(-1), np.repeat(vol / 4.0, 4))
    return out


def check_sensor_dt(sensor: Sensor, dt: float, row=None, owner: str | None = None) -> None:
    """Raise ValueError if the explicit step ``dt`` is unstable for ``sensor`` with the parameter
    row ``row`` (default its own); ``owner`` names where the row came from."""
    row = sensor.params_row() if row is None else np.asarray(row, dtype=np.float64)
    limit = sensor.stable_dt(row)
    if dt > limit:
        E, nu, rho, damping, k_n = row[:5]
        mu, lam = lame(E, nu)
        raise ValueError(
            f"{owner or 'sensor ' + repr(sensor.name)}: dt={dt:g} s exceeds the elastomer's stable explicit step "
            f"{limit:.3g} s (shortest tet height {sensor.min_height():.3g} m, P-wave speed "
            f"{math.sqrt((lam + mu) / rho):.3g} m/s, k_n={k_n:g} N/m, damping={damping:g} 1/s); lower dt, E, k_n or "
            "damping, or coarsen the mesh"
        )


# ------------------------------------------------------------------------------------ kernels
@ti.func
def _lame(row):
    E, nu = row[P_E], row[P_NU]
    mu = E / (2.0 * (1.0 + nu))
    lam = E * nu / ((1.0 + nu) * (1.0 - 2.0 * nu)) + mu
    return mu, lam


@ti.func
def _cofactor(F):
    """cof(F) = det(F) F^-T: column i is the cross product of the other two columns of F."""
    c0 = ti.Vector([F[0, 1], F[1, 1], F[2, 1]]).cross(ti.Vector([F[0, 2], F[1, 2], F[2, 2]]))
    c1 = ti.Vector([F[0, 2], F[1, 2], F[2, 2]]).cross(ti.Vector([F[0, 0], F[1, 0], F[2, 0]]))
    c2 = ti.Vector([F[0, 0], F[1, 0], F[2, 0]]).cross(ti.Vector([F[0, 1], F[1, 1], F[2, 1]]))
    return ti.Matrix.cols([c0, c1, c2])


@ti.kernel
def elastic_forces(
    x: ndarray(),
    s: ti.i32,
    tets: ndarray(),
    Dm_inv: ndarray(),
    rest_volume: ndarray(),
    tet_params: ndarray(),
    f: ndarray(),
):
    """f[b, i] += the Stable Neo-Hookean forces of every tet on its nodes (f must be zeroed)."""
    for b, e in ti.ndrange(x.shape[1], tets.shape[0]):
        i0, i1, i2, i3 = tets[e][0], tets[e][1], tets[e][2], tets[e][3]
        x0 = x[s, b, i0]
        Ds = ti.Matrix.cols([x[s, b, i1] - x0, x[s, b, i2] - x0, x[s, b, i3] - x0])
        F = Ds @ Dm_inv[e]
        mu, lam = _lame(tet_params[b, e])
        J = F.determinant()
        P = mu * F + lam * (J - 1.0 - mu / lam) * _cofactor(F)
        H = -rest_volume[e] * P @ Dm_inv[e].transpose()
        h1 = ti.Vector([H[0, 0], H[1, 0], H[2, 0]])
        h2 = ti.Vector([H[0, 1], H[1, 1], H[2, 1]])
        h3 = ti.Vector([H[0, 2], H[1, 2], H[2, 2]])
        f[b, i1] += h1
        f[b, i2] += h2
        f[b, i3] += h3
        f[b, i0] += -(h1 + h2 + h3)


@ti.kernel
def integrate(
    x: ndarray(),
    v: ndarray(),
    f_rec: ndarray(),
    s_in: ti.i32,
    s_out: ti.i32,
    f_elastic: ndarray(),
    f_contact: ndarray(),
    n_rows: ti.template(),
    node_sensor: ndarray(),
    node_volume: ndarray(),
    mount_local: ndarray(),
    mount_collider: ndarray(),
    node_params: ndarray(),
    pos: ndarray(),
    quat: ndarray(),
    lin: ndarray(),
    ang: ndarray(),
    g: ti.i32,
    dt: float,
    gravity: ti.types.vector(3, float),
):
    """Symplectic Euler for free nodes, the mount pose for kinematic ones (mount_collider >= 0);
    records the summed contact force in f_rec[s_out]."""
    for b, i in ti.ndrange(x.shape[1], x.shape[2]):
        fc = ti.Vector.zero(float, 3)
        for c in ti.static(range(n_rows)):
            fc += f_contact[c, b, i]
        f_rec[s_out, b, i] = fc
        k = mount_collider[i]
        if k >= 0:
            p = pos[g + 1, b, k]
            xn = p + quat_rotate(quat[g + 1, b, k], mount_local[i])
            x[s_out, b, i] = xn
            v[s_out, b, i] = lin[g, b, k] + ang[g, b, k].cross(xn - p)
        else:
            row = node_params[b, i]
            m = row[P_RHO] * node_volume[i]
            vi = v[s_in, b, i]
            vn = vi + dt * ((f_elastic[b, i] + fc) / m + gravity - row[P_DAMP] * vi)
            v[s_out, b, i] = vn
            x[s_out, b, i] = x[s_in, b, i] + dt * vn


@ti.kernel
def check_nodes(x: ndarray(), v: ndarray(), s: ti.i32, speed_limit: float, status: ndarray()):
    """status[b] = max(status[b], 1 for NaN/Inf, 2 for a node faster than speed_limit)."""
    for b, i in ti.ndrange(x.shape[1], x.shape[2]):
        xi, vi = x[s, b, i], v[s, b, i]
        flag = 0
        for a in ti.static(range(3)):
            if ti.math.isnan(xi[a]) or ti.math.isinf(xi[a]) or ti.math.isnan(vi[a]) or ti.math.isinf(vi[a]):
                flag = 1
        if flag == 0 and vi.dot(vi) > speed_limit * speed_limit:
            flag = 2
        if flag > 0:
            ti.atomic_max(status[b], flag)


@ti.kernel
def expand_params(params: ndarray(), owner: ndarray(), out: ndarray()):
    """out[b, i] = params[b, owner[i]]: each tet's or node's copy of its sensor's parameter row,
    so the force kernels' adjoints add into their own entries instead of all into one."""
    for b, i in ti.ndrange(out.shape[0], out.shape[1]):
        out[b, i] = params[b, owner[i]]


@ti.kernel
def copy_nodes_slot(
    x: ndarray(), v: ndarray(), f: ndarray(), s: ti.i32, xd: ndarray(), vd: ndarray(), fd: ndarray(), t: ti.i32
):
    for b, i in ti.ndrange(x.shape[1], x.shape[2]):
        xd[t, b, i] = x[s, b, i]
        vd[t, b, i] = v[s, b, i]
        fd[t, b, i] = f[s, b, i]


@ti.kernel
def zero_nodes_slot(x: ndarray(), v: ndarray(), f: ndarray(), s: ti.i32):
    for b, i in ti.ndrange(x.shape[1], x.shape[2]):
        x[s, b, i] = ti.zero(x[s, b, i])
        v[s, b, i] = ti.zero(v[s, b, i])
        f[s, b, i] = ti.zero(f[s, b, i])


# ------------------------------------------------------------------------------------ solver
@dataclass
class Forces:
    """The forces one FEM step adds: elastic ``f_elastic (B, n)`` and contact ``f_contact
    (rows, B, n)`` (one row per collider, one for MPM material, one for sensor pairs), vec3 [N].
    The working set serves the fast path and recomputed substeps; the replay tape keeps one set
    per kept substep, so the adjoint (whose parameter gradients read the forces) does not rerun
    the step."""

    f_elastic: object
    f_contact: object

    @classmethod
    def allocate(cls, rows: int, B: int, n: int) -> "Forces":
        vec3 = ti.types.vector(3, runtime.real_dtype())
        return cls(ti.ndarray(vec3, (B, n), needs_grad=True), ti.ndarray(vec3, (max(rows, 1), B, n), needs_grad=True))


class NodeBuffers:
    """Slotted FEM node arrays x, v (state) and f (the contact force of the step that produced
    the slot), each (slots, B, n) vec3."""

    FIELDS = ("x", "v", "f")

    def __init__(self, slots: int, batch: int, n: int, needs_grad: bool):
        vec3 = ti.types.vector(3, runtime.real_dtype())
        self.slots = slots
        self.x, self.v, self.f = (ti.ndarray(vec3, (slots, batch, n), needs_grad=needs_grad) for _ in range(3))

    def copy_slot_to(self, s: int, other: "NodeBuffers", t: int) -> None:
        copy_nodes_slot(self.x, self.v, self.f, s, other.x, other.v, other.f, t)

    def zero_grad_slot(self, s: int) -> None:
        zero_nodes_slot(self.x.grad, self.v.grad, self.f.grad, s)

    def copy_grad_slot(self, s: int, t: int) -> None:
        copy_nodes_slot(self.x.grad, self.v.grad, self.f.grad, s, self.x.grad, self.v.grad, self.f.grad, t)


class FEMSolver(NoState):
    """Every sensor of a Model, for B scenes: one node array over all sensors' meshes.

    Stage ``to_particles``: elastic forces and the symplectic Euler step (reading the contact
    forces the coupling computed in ``grid_coupling``). Its adjoints accumulate, so the driver
    zeroes a slot's adjoints before the substep's adjoint.
    """

    name = "fem"
    accumulates_adjoint = True

    def __init__(self, model, batch_size: int, n_contact_rows: int):
        real = runtime.real_dtype()
        vec3, mat3 = ti.types.vector(3, real), ti.types.matrix(3, 3, real)
        self.model = model
        self.sensors = model.sensors
        self.batch_size = B = batch_size
        self.dt = model.config.dt
        self.gravity = ti.math.vec3(*model.config.gravity)
        self.speed_limit = model.config.speed_limit
        offsets = np.cumsum([0] + [len(s.mesh.nodes) for s in self.sensors])
        self.node_offset = offsets
        self.n_nodes = n = int(offsets[-1])
        nodes = np.concatenate([s.mount_frame_nodes() for s in self.sensors])
        tets = np.concatenate([s.mesh.tets + offsets[k] for k, s in enumerate(self.sensors)])
        X = nodes[tets]
        Dm = np.stack([X[:, 1] - X[:, 0], X[:, 2] - X[:, 0], X[:, 3] - X[:, 0]], axis=-1)
        node_sensor = np.concatenate([np.full(len(s.mesh.nodes), k) for k, s in enumerate(self.sensors)])
        tet_sensor = np.concatenate([np.full(len(s.mesh.tets), k) for k, s in enumerate(self.sensors)])
        mount_collider = np.full(n, -1)
        for k, s in enumerate(self.sensors):
            mount_collider[offsets[k] + np.asarray(s.mesh.mount_nodes)] = s.mount
        self.surface = np.concatenate(
            [offsets[k] + np.asarray(s.mesh.surface_nodes) for k, s in enumerate(self.sensors)]
        )
        self.tets = arrays.upload(tets, ti.i32, ti.types.vector(4, ti.i32))
        self.Dm_inv = arrays.upload(np.linalg.inv(Dm), real, mat3)
        self.rest_volume = arrays.upload(np.abs(np.linalg.det(Dm)) / 6.0, real)
        self.tet_sensor = arrays.upload(tet_sensor, ti.i32)
        self.node_sensor = arrays.upload(node_sensor, ti.i32)
        self.node_volume = arrays.upload(np.concatenate([_node_volumes(s.mesh) for s in self.sensors]), real)
        self.mount_local = arrays.upload(nodes, real, vec3)
        self.mount_collider = arrays.upload(mount_collider, ti.i32)
        self.surface_nodes = arrays.upload(self.surface, ti.i32)
        row = ti.types.vector(N_SENSOR_PARAMS, real)
        self.params = ti.ndarray(row, (B, len(self.sensors)), needs_grad=True)
        self.tet_params = ti.ndarray(row, (B, len(tets)), needs_grad=True)
        self.node_params = ti.ndarray(row, (B, n), needs_grad=True)
        self.tet_offset = np.cumsum([0] + [len(s.mesh.tets) for s in self.sensors])
        self.n_rows = n_contact_rows
        self.forces = Forces.allocate(n_contact_rows, B, n)
        self.status_flags = ti.ndarray(ti.i32, (B,))

    # ------------------------------------------------------------------ driver contract
    def stages(self) -> list[Stage]:
        # Kept: its outputs are the tape's state slot and its kept forces.
        return [Stage("to_particles", self.step, self.step_adjoint, self.zero_grads, kept=True)]

    def allocate_kept(self) -> Forces:
        return Forces.allocate(self.n_rows, self.batch_size, self.n_nodes)

    def kept_bytes(self) -> int:
        real_bytes = 8 if runtime.require().precision == "f64" else 4
        return 2 * 3 * real_bytes * self.batch_size * self.n_nodes * (1 + max(self.n_rows, 1))  # values and adjoints

    def forces_of(self, sub: Substep) -> Forces:
        """The force set substep ``sub`` works on: its tape set, or the working set."""
        return self.forces if sub.kept is None else sub.kept[self.name]

    def allocate(self, slots: int, needs_grad: bool) -> NodeBuffers:
        return NodeBuffers(slots, self.batch_size, self.n_nodes, needs_grad)

    # ------------------------------------------------------------------ stages
    def step(self, sub: Substep) -> None:
        buf, ctrl, forces = sub.state[self.name], sub.control, self.forces_of(sub)
        arrays.zero_array(forces.f_elastic)
        elastic_forces(buf.x, sub.s_in, self.tets, self.Dm_inv, self.rest_volume, self.tet_params, forces.f_elastic)
        integrate(
            buf.x, buf.v, buf.f, sub.s_in, sub.s_out, forces.f_elastic, forces.f_contact, self.n_rows, self.node_sensor,
            self.node_volume, self.mount_local, self.mount_collider, self.node_params, ctrl.pos, ctrl.quat, ctrl.lin,
            ctrl.ang, sub.g, self.dt, self.gravity,
        )  # fmt: skip

    def zero_grads(self, sub: Substep) -> None:
        forces = self.forces_of(sub)
        arrays.zero_array(forces.f_elastic.grad)
        arrays.zero_array(forces.f_contact.grad)

    def step_adjoint(self, sub: Substep) -> None:
        buf, ctrl, forces = sub.state[self.name], sub.control, self.forces_of(sub)
        integrate.grad(
            buf.x, buf.v, buf.f, sub.s_in, sub.s_out, forces.f_elastic, forces.f_contact, self.n_rows, self.node_sensor,
            self.node_volume, self.mount_local, self.mount_collider, self.node_params, ctrl.pos, ctrl.quat, ctrl.lin,
            ctrl.ang, sub.g, self.dt, self.gravity,
        )  # fmt: skip
        elastic_forces.grad(
            buf.x, sub.s_in, self.tets, self.Dm_inv, self.rest_volume, self.tet_params, forces.f_elastic
        )  # fmt: skip

    # ------------------------------------------------------------------ host side
    def initial_nodes(self, pose: torch.Tensor) -> torch.Tensor:
        """(B, n, 3) rest nodes placed by the mount colliders' poses ``(B, K, 7)``."""
        from engine.geometry.pose import quat_rotate_numpy

        out = []
        for s in self.sensors:
            p = pose[:, s.mount].detach().cpu().numpy()
            local = s.mount_frame_nodes()
            out.append(np.stack([p[b, :3] + quat_rotate_numpy(p[b, 3:], local) for b in range(len(p))]))
        return torch.as_tensor(np.concatenate(out, axis=1), dtype=runtime.torch_dtype())

    def nodes_of(self, k: int) -> slice:
        """The slice of sensor k's nodes in the concatenated node arrays."""
        return slice(int(self.node_offset[k]), int(self.node_offset[k + 1]))

    def to_sensor_frame(
        self, k: int, sensor_x: torch.Tensor, sensor_f: torch.Tensor, collider_pose: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Sensor k's contact-surface node positions and forces in its own (mesh) frame.

        Args:
            sensor_x, sensor_f: ``(..., B, n, 3)`` world node positions and contact forces (a
                :class:`engine.simulator.Rollout`'s ``sensor_x``, ``sensor_f``).
            collider_pose: ``(..., B, K, 7)`` collider poses at the same steps.

        Returns:
            ``(surface_x, surface_f)``, each ``(..., B, S_k, 3)`` in the order of the mesh's
            ``surface_nodes``: what :class:`engine.tactile.TactileSensorView` takes
            (differentiable).
        """
        from engine.geometry.pose import quat_rotate_torch

        sensor = self.sensors[k]
        idx = torch.as_tensor(self.node_offset[k] + np.asarray(sensor.mesh.surface_nodes))
        mount = collider_pose[..., sensor.mount, :][..., None, :]
        offset = torch.as_tensor(sensor.offset, dtype=sensor_x.dtype)
        # world -> mount frame -> sensor frame
        x = quat_rotate_torch(mount[..., 3:], sensor_x[..., idx, :] - mount[..., :3], inverse=True)
        x = quat_rotate_torch(offset[3:], x - offset[:3], inverse=True)
        f = quat_rotate_torch(mount[..., 3:], sensor_f[..., idx, :], inverse=True)
        f = quat_rotate_torch(offset[3:], f, inverse=True)
        return x, f

    def default_params(self) -> torch.Tensor:
        table = torch.as_tensor(np.stack([s.params_row() for s in self.sensors]), dtype=runtime.torch_dtype())
        return table.expand(self.batch_size, *table.shape).clone()

    def load_params(self, params: torch.Tensor) -> None:
        """Upload a (B, S, 8) parameter table and its per-tet and per-node copies."""
        self.params.from_numpy(params.detach().cpu().numpy().astype(arrays.np_real()))
        expand_params(self.params, self.tet_sensor, self.tet_params)
        expand_params(self.params, self.node_sensor, self.node_params)

    def zero_params_grad(self) -> None:
        for arr in (self.params, self.tet_params, self.node_params):
            arrays.zero_array(arr.grad)

    def params_grad(self) -> torch.Tensor:
        """(B, S, 8) parameter adjoint: the contact kernels' plus the per-tet and per-node copies'
        summed over each sensor's tets and nodes."""
        total = self.params.grad.to_numpy().astype(np.float64)
        for copies, offsets in ((self.tet_params, self.tet_offset), (self.node_params, self.node_offset)):
            total += np.add.reduceat(copies.grad.to_numpy().astype(np.float64), offsets[:-1], axis=1)
        return torch.as_tensor(total, dtype=runtime.torch_dtype())

    def write(self, nodes, buf: NodeBuffers, slot: int) -> None:
        for name in NodeBuffers.FIELDS:
            value = getattr(nodes, name).detach().to(runtime.torch_dtype()).contiguous()
            arrays.transfers((3,))[1](value, getattr(buf, name), slot)

    def read_array(self, arr, slot: int) -> torch.Tensor:
        out = torch.empty(self.batch_size, self.n_nodes, 3, dtype=runtime.torch_dtype())
        arrays.transfers((3,))[0](arr, slot, out)
        return out

    def status(self, buf: NodeBuffers, slot: int) -> np.ndarray:
        self.status_flags.fill(0)
        check_nodes(buf.x, buf.v, slot, self.speed_limit, self.status_flags)
        return self.status_flags.to_numpy()
