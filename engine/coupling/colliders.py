"""The coupling of the MPM solver with kinematic colliders: the colliders' grid boundary
conditions and the projection of particles out of colliders.

Hu et al. 2018 (MLS-MPM, Sec. 4: grid boundary conditions against level-set colliders, sticky /
slip / separate with Coulomb friction). A collider is a shape of :mod:`engine.geometry` moved by
a 6-DoF pose that the user's control drives (:mod:`engine.colliders`). Per substep:

* ``grid_coupling``: ``grid_collide`` for each collider c, ``grid_v[c] -> grid_v[c + 1]`` on the
  MPM grid: inside the collider the velocity relative to the collider loses its normal part (all
  of it for sticky; only if approaching for separate; always for slip) and the tangential part
  is reduced by Coulomb friction mu |v_n|; within ``CONTACT_BAND`` dx outside it an approaching
  normal part is removed the same way;
* ``particle_coupling``: ``project_out`` for each collider c, ``x_chain[c] -> x_chain[c + 1]``:
  particles found inside the collider (pose at the end of the substep) move to the nearest
  surface point ``x - d n``. With one collider no particle ends inside it (to rounding; mesh
  SDFs to their trilinear interpolant); where two colliders squeeze material between them the
  later projection can push a particle back into the earlier one, by less than
  ``ColliderCoupling.PENETRATION_TOLERANCE`` dx.

Collider control arrays (:class:`ColliderControl`) are indexed ``[g, b, c]`` by the global
substep g: ``pos`` (vec3), ``quat`` (vec4, w x y z) hold the pose at the *start* of substep g,
``lin`` (vec3, m/s) and ``ang`` (vec3, rad/s, world frame) the velocity during it. Both kernels
are differentiated by Taichi's reverse mode (``kernel.grad``, accumulating).
"""

import numpy as np
import taichi as ti
import torch

from engine import arrays, runtime
from engine.colliders import SLIP, STICKY, pack_colliders
from engine.coupling.kinematic import KinematicContact
from engine.geometry.pose import integrate_poses
from engine.geometry.sdf import SHAPE_DIM, sdf_world
from engine.solvers.base import NoState, Stage, Substep
from engine.solvers.mpm import MPMSolver
from engine.solvers.mpm_kernels import pad4
from engine.state import Model

ndarray = ti.types.ndarray


#: Width [dx] of the band outside a collider where approaching grid velocity loses its normal
#: part: the nodes whose B-spline support reaches into the collider. The condition inside the
#: collider alone lets the liquid's pressure accelerate the first free nodes into a wall lying
#: between nodes, and the liquid packs against it over time (benchmarks/liquid_rest.py: a layer
#: resting in a cup loses ~24 % of its volume in 1.5 s without the band, 0.4 % with it; a band
#: weight falling linearly to 0 at one cell still loses 6 %). The domain walls, whose planes lie
#: on nodes, have the same condition on those nodes (``bound``, engine/solvers/mpm_kernels.py).
CONTACT_BAND = 1.0


@ti.func
def _slide(v_rel, n, vn, friction):
    """The tangential part of v_rel, reduced by Coulomb friction mu |v_n| when approaching."""
    v_t = v_rel - vn * n
    if vn < 0.0:
        v_t_norm = ti.sqrt(v_t.dot(v_t) + 1e-20)
        v_t = v_t * ti.max(0.0, 1.0 + friction * vn / v_t_norm)
    return v_t


@ti.kernel
def grid_collide(
    grid_mom_mass: ndarray(),
    grid_v: ndarray(),
    c: ti.i32,
    kind: ti.template(),
    collider_shape: ndarray(),
    collider_contact: ndarray(),
    collider_pos: ndarray(),
    collider_quat: ndarray(),
    collider_lin: ndarray(),
    collider_ang: ndarray(),
    mesh_sdf: ndarray(),
    g: ti.i32,
    dx: float,
):
    """Contact of the grid with kinematic collider c (of shape ``kind``): ``grid_v[c] ->
    grid_v[c + 1]``. Inside the collider the velocity relative to the collider loses its normal
    part (all of it for sticky; only if approaching for separate; always for slip) and the
    tangential part is reduced by Coulomb friction mu |v_n|. Within ``CONTACT_BAND`` dx outside
    it, an approaching normal part is removed the same way (a separate condition, any mode)."""
    for b, i, j in ti.ndrange(grid_v.shape[1], grid_v.shape[2], grid_v.shape[3]):
        for k in range(grid_v.shape[4]):
            v = grid_v[c, b, i, j, k].xyz
            out = v
            if grid_mom_mass[b, i, j, k][3] > 0.0:
                p = ti.Vector([i, j, k]) * dx
                pos = collider_pos[g, b, c]
                res = sdf_world(kind, collider_shape[c], pos, collider_quat[g, b, c], p, mesh_sdf)
                if res[0] < CONTACT_BAND * dx:
                    n = ti.Vector([res[1], res[2], res[3]])
                    v_collider = collider_lin[g, b, c] + collider_ang[g, b, c].cross(p - pos)
                    v_rel = v - v_collider
                    friction = collider_contact[c][0]
                    mode = ti.cast(collider_contact[c][1], ti.i32)
                    vn = v_rel.dot(n)
                    if res[0] >= 0.0:
                        if vn < 0.0:
                            out = v_collider + _slide(v_rel, n, vn, friction)
                    elif mode == STICKY:
                        out = v_collider
                    elif mode == SLIP or vn < 0.0:
                        out = v_collider + _slide(v_rel, n, vn, friction)
            grid_v[c + 1, b, i, j, k] = pad4(out)


@ti.kernel
def project_out(
    x_chain: ndarray(),
    c: ti.i32,
    kind: ti.template(),
    collider_shape: ndarray(),
    collider_pos: ndarray(),
    collider_quat: ndarray(),
    mesh_sdf: ndarray(),
    g_end: ti.i32,
):
    """Move particles found inside collider c (pose at the end of the substep, index g_end) to
    the nearest surface point x - d n: ``x_chain[c] -> x_chain[c + 1]``."""
    for b, p in ti.ndrange(x_chain.shape[1], x_chain.shape[2]):
        xp = x_chain[c, b, p]
        res = sdf_world(
            kind,
            collider_shape[c],
            collider_pos[g_end, b, c],
            collider_quat[g_end, b, c],
            xp,
            mesh_sdf,
        )
        if res[0] < 0.0:
            xp = xp - res[0] * ti.Vector([res[1], res[2], res[3]])
        x_chain[c + 1, b, p] = xp


class ColliderControl:
    """Collider poses and velocities per substep as ``(n_sub + 1, B, K, ...)`` ndarrays (the
    layout above; at least one collider row, never read when there is no collider)."""

    def __init__(self, shape: tuple[int, int, int], needs_grad: bool):
        real = runtime.real_dtype()
        self.arrays = [ti.ndarray(ti.types.vector(dim, real), shape, needs_grad=needs_grad) for dim in (3, 4, 3, 3)]
        self.pos, self.quat, self.lin, self.ang = self.arrays

    def load(self, pose: torch.Tensor, vel: torch.Tensor) -> "ColliderControl":
        """Upload poses ``(n_sub + 1, B, K, 7)`` and velocities ``(n_sub + 1, B, K, 6)``."""
        for arr, value in zip(self.arrays, (pose[..., :3], pose[..., 3:], vel[..., :3], vel[..., 3:]), strict=True):
            arr.from_numpy(value.detach().cpu().numpy().astype(arrays.np_real()))
        return self

    def zero_grad(self) -> None:
        for arr in self.arrays:
            arrays.zero_array(arr.grad)

    def grads(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The adjoints of the poses and velocities, ``(n_sub + 1, B, K, 7)`` and ``(..., 6)``."""
        dt = runtime.torch_dtype()
        pos, quat, lin, ang = (torch.as_tensor(arr.grad.to_numpy(), dtype=dt) for arr in self.arrays)
        return torch.cat([pos, quat], dim=-1), torch.cat([lin, ang], dim=-1)


class ColliderCoupling(NoState):
    """Kinematic colliders acting on the MPM solver: their trajectories from the control, their
    grid boundary conditions and the particle projection (stages ``grid_coupling`` and
    ``particle_coupling``, none without colliders)."""

    name = "colliders"
    #: Bound on the depth, in grid cells dx, at which a particle squeezed between two colliders
    #: can end inside the earlier one (see the module docstring).
    PENETRATION_TOLERANCE = 0.05

    def __init__(self, model: Model, batch_size: int, mpm: MPMSolver):
        real = runtime.real_dtype()
        self.mpm = mpm
        self.batch_size = batch_size
        self.n_colliders = K = model.n_colliders
        self.dt, self.substeps, self.dx = model.config.dt, model.config.substeps, model.config.dx
        packed = pack_colliders(model.colliders)
        self.kinds = tuple(int(k) for k in packed.kinds)
        shape_table = np.zeros((max(K, 1), SHAPE_DIM))
        shape_table[:K] = packed.params
        contact = np.zeros((max(K, 1), 2))
        contact[:K, 0], contact[:K, 1] = packed.friction, packed.modes
        self.shape = arrays.upload(shape_table, real, ti.types.vector(SHAPE_DIM, real))
        self.contact = arrays.upload(contact, real, ti.types.vector(2, real))
        self.mesh_sdf = arrays.upload(np.asarray(packed.mesh_sdf, dtype=np.float64), real)
        self._controls: dict[tuple, ColliderControl] = {}
        #: Contact between the colliders and with the domain walls (engine.coupling.kinematic).
        self.kinematic = KinematicContact(model.colliders, model.config, runtime.torch_dtype()) if K else None

    # ------------------------------------------------------------------ driver contract
    def stages(self) -> list[Stage]:
        if not self.n_colliders:
            return []
        return [
            Stage("grid_coupling", self.grid_conditions, self.grid_conditions_adjoint, kept=True),
            Stage("particle_coupling", self.project_out, self.project_out_adjoint, replay=True),
        ]

    # ------------------------------------------------------------------ control
    def trajectory(self, pose0: torch.Tensor, control: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Collider pose at every substep boundary ``(n_sub + 1, B, K', 7)`` and velocity during
        every substep ``(n_sub + 1, B, K', 6)`` from the start poses ``(B, K, 7)`` and the
        control ``(T, B, K, 6)`` (differentiable torch; K' = max(K, 1), an identity row
        without colliders). The commanded motion is stopped at contact between solid colliders
        and at the domain walls (:class:`engine.coupling.kinematic.KinematicContact`); without
        contact the trajectory is the commanded one, bit for bit."""
        B, K, dt = self.batch_size, self.n_colliders, runtime.torch_dtype()
        n_sub = control.shape[0] * self.substeps
        if K == 0:
            pose = torch.zeros(n_sub + 1, B, 1, 7, dtype=dt)
            pose[..., 3] = 1.0
            return pose, torch.zeros(n_sub + 1, B, 1, 6, dtype=dt)
        padded = torch.cat([control, control[-1:]], dim=0)
        poses, vels = integrate_poses(pose0, padded, self.dt, self.substeps)
        return self.kinematic.resolve(poses[: n_sub + 1], vels[: n_sub + 1])

    def control_arrays(self, pose: torch.Tensor, vel: torch.Tensor, needs_grad: bool) -> "ColliderControl":
        """The control arrays holding ``pose``, ``vel``: kept per shape and reused (allocating
        Taichi ndarrays took about half of a small scene's step)."""
        key = (tuple(pose.shape[:3]), needs_grad)
        if key not in self._controls:
            self._controls[key] = ColliderControl(key[0], needs_grad)
        return self._controls[key].load(pose, vel)

    # ------------------------------------------------------------------ stages
    def grid_conditions(self, sub: Substep) -> None:
        grids, ctrl = self.mpm.grids_of(sub), sub.control
        for c in range(self.n_colliders):
            grid_collide(
                grids.mom_mass, grids.v, c, self.kinds[c], self.shape, self.contact, ctrl.pos, ctrl.quat,
                ctrl.lin, ctrl.ang, self.mesh_sdf, sub.g, self.dx,
            )  # fmt: skip

    def grid_conditions_adjoint(self, sub: Substep) -> None:
        grids, ctrl = self.mpm.grids_of(sub), sub.control
        for c in reversed(range(self.n_colliders)):
            grid_collide.grad(
                grids.mom_mass, grids.v, c, self.kinds[c], self.shape, self.contact, ctrl.pos, ctrl.quat,
                ctrl.lin, ctrl.ang, self.mesh_sdf, sub.g, self.dx,
            )  # fmt: skip

    def project_out(self, sub: Substep) -> None:
        ctrl = sub.control
        for c in range(self.n_colliders):
            project_out(self.mpm.x_chain, c, self.kinds[c], self.shape, ctrl.pos, ctrl.quat, self.mesh_sdf, sub.g + 1)

    def project_out_adjoint(self, sub: Substep) -> None:
        ctrl = sub.control
        for c in reversed(range(self.n_colliders)):
            project_out.grad(
                self.mpm.x_chain, c, self.kinds[c], self.shape, ctrl.pos, ctrl.quat, self.mesh_sdf, sub.g + 1
            )  # fmt: skip
