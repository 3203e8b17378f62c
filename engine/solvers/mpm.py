"""The MLS-MPM solver: particle state, grids and the stages of an MPM substep, forward and adjoint.

Hu et al. 2018 (MLS-MPM), Jiang et al. 2015 (APIC); the kernels are in
:mod:`engine.solvers.mpm_kernels`. An MPM substep contributes three stages (engine/solvers/base.py):

* ``to_grid``: particle binning into x-slabs, the packing correction of the liquid's J
  (:class:`PackingCorrection`), constitutive update and affine matrices (one launch per
  material), the p2g scatter (slabs on the CPU, atomics otherwise), and the grid update
  (momentum to velocity, gravity, domain walls) into ``grid_v[0]``;
* ``to_particles``: g2p (APIC) from the last grid velocity ``grid_v[K]`` (after K collider
  conditions, engine/coupling/colliders.py); it writes the new positions straight into the output slot,
  or, when later stages move particles (colliders, rigid bodies), into the position chain
  ``x_chain[0]`` (and the velocities into ``v_free`` when rigid bodies follow);
* ``finish`` (only with colliders and no rigid bodies): ``x_chain[K]`` -> the output slot.

With sensors, one more grid velocity set carries their reaction (engine/coupling/sensors.py).

Adjoints: hand-written for the transfers and the fluid stress (they *write* the adjoints of the
substep's input), Taichi's reverse mode (``kernel.grad``, which *accumulates*) for the solid
stresses, the grid update and the copies.

The replay tape keeps one :class:`Grids` set per replayed substep (``Substep.kept["mpm"]``), so
the adjoint of a kept substep does not recompute its stress, scatter and grid update.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import taichi as ti
import torch

from engine import arrays, runtime
from engine.colliders import pack_colliders
from engine.geometry.sdf import SHAPE_DIM
from engine.materials import FLUID, N_PARAMS
from engine.solvers import mpm_kernels as K
from engine.solvers.base import Stage, Substep
from engine.state import Model, ParticleState


class ParticleBuffers:
    """Slotted particle arrays x, v, C, F, J of shape (slots, B, N, ...)."""

    def __init__(self, slots: int, batch: int, n: int, needs_grad: bool):
        real = runtime.real_dtype()
        shape = (slots, batch, n)
        self.slots = slots
        self.x = ti.ndarray(ti.types.vector(3, real), shape, needs_grad=needs_grad)
        self.v = ti.ndarray(ti.types.vector(3, real), shape, needs_grad=needs_grad)
        self.C = ti.ndarray(ti.types.matrix(3, 3, real), shape, needs_grad=needs_grad)
        self.F = ti.ndarray(ti.types.matrix(3, 3, real), shape, needs_grad=needs_grad)
        self.J = ti.ndarray(real, shape, needs_grad=needs_grad)

    def arrays(self):
        return [getattr(self, f) for f in ParticleState.FIELDS]

    def copy_slot_to(self, s: int, other: ParticleBuffers, t: int) -> None:
        K.copy_state_slot(*self.arrays(), s, *other.arrays(), t)

    def zero_grad_slot(self, s: int) -> None:
        K.zero_state_slot(*(arr.grad for arr in self.arrays()), s)

    def copy_grad_slot(self, s: int, t: int) -> None:
        grads = [arr.grad for arr in self.arrays()]
        K.copy_state_slot(*grads, s, *grads, t)


@dataclass
class Grids:
    """What one substep builds before its g2p: grid momentum and mass ``mom_mass`` (B, n, n, n, 4),
    velocities ``v`` (K + 1, B, n, n, n, 4; w = 0) after walls and each collider, the particles'
    affine momentum matrices ``affine`` (B, N, 3, 3), and their slab bins (``slab_start``,
    ``slab_order``). The working set has gradients; a tape set has gradients only on ``v``, and
    only with colliders (whose Taichi adjoint accumulates into ``v.grad``). ``zeroed`` records
    whether mom_mass is zero, as the scatter needs (grid_update clears it when nothing reads it
    later)."""

    mom_mass: object
    v: object
    affine: object
    slab_start: object
    slab_order: object
    zeroed: bool = False

    @classmethod
    def allocate(
        cls, n_conditions: int, B: int, N: int, n: int, needs_grad: bool, v_grad: bool, mass_grad: bool = False
    ) -> Grids:
        real = runtime.real_dtype()
        vec4, mat3 = ti.types.vector(4, real), ti.types.matrix(3, 3, real)
        return cls(
            mom_mass=ti.ndarray(vec4, (B, n, n, n), needs_grad=needs_grad or mass_grad),
            v=ti.ndarray(vec4, (n_conditions + 1, B, n, n, n), needs_grad=needs_grad or v_grad),
            affine=ti.ndarray(mat3, (B, N), needs_grad=needs_grad),
            slab_start=ti.ndarray(ti.i32, (B, n // K.SLAB_WIDTH + 2)),
            slab_order=ti.ndarray(ti.i32, (B, N)),
        )


class PackingCorrection:
    """The packing correction of the liquid's J (engine/solvers/mpm_kernels.py, module docstring):
    per substep, ``J_scale`` (B, N) from the particles' claimed volume on the grid (``packing``,
    (B, n, n, n)) against each node's open fraction (``open_frac``, (K + 1, B, n, n, n): the
    domain walls, then each collider). ``rate`` = 0 turns it off (J_scale stays 1). Its buffers
    are working memory: the adjoint recomputes them from the substep's input."""

    def __init__(self, model: Model, batch_size: int, material_groups):
        real = runtime.real_dtype()
        B, N, n = batch_size, model.n_particles, model.config.grid_res
        self.fluid_groups = [(m_id, ids) for kind, m_id, ids in material_groups if kind == FLUID]
        self.rate, self.slack = model.config.packing_rate, K.PACKING_SLACK
        self.J_scale = ti.ndarray(real, (B, N), needs_grad=True)  # its grad: the adjoint's scratch
        self.J_scale.fill(1.0)
        self.n_colliders = model.n_colliders
        if not self.fluid_groups:
            return
        self.packing = ti.ndarray(real, (B, n, n, n), needs_grad=True)
        self.open_frac = ti.ndarray(real, (self.n_colliders + 1, B, n, n, n), needs_grad=True)
        packed = pack_colliders(model.colliders)
        self.kinds = tuple(int(k) for k in packed.kinds)
        table = np.zeros((max(self.n_colliders, 1), SHAPE_DIM))
        table[: self.n_colliders] = packed.params
        self.shape = arrays.upload(table, real, ti.types.vector(SHAPE_DIM, real))
        self.mesh_sdf = arrays.upload(np.asarray(packed.mesh_sdf, dtype=np.float64), real)

    @property
    def active(self) -> bool:
        return bool(self.fluid_groups) and self.rate > 0.0

    def forward(self, mpm: MPMSolver, sub: Substep, grids: Grids) -> None:
        """J_scale for the substep's input state (the particles' bins in ``grids`` are current)."""
        if not self.active:
            return
        buf, s_in = sub.state[mpm.name], sub.s_in
        K.zero_grid(self.packing)
        if mpm.slabs:
            for colour in (0, 1):
                K.deposit_packing_slabs(
                    buf.x, buf.J, s_in, mpm.volume, self.packing, mpm.inv_dx, grids.slab_start, grids.slab_order,
                    colour,
                )  # fmt: skip
        else:
            K.deposit_packing(buf.x, buf.J, s_in, mpm.volume, self.packing, mpm.inv_dx)
        K.open_fraction_walls(self.open_frac, mpm.boundary_cells, self.packing, self.slack, grids.slab_start)
        ctrl = sub.control
        for c in range(self.n_colliders):
            K.open_fraction(
                self.open_frac, c, self.kinds[c], self.shape, ctrl.pos, ctrl.quat, self.mesh_sdf, sub.g, mpm.dx,
                self.packing, self.slack, grids.slab_start,
            )  # fmt: skip
        for _, ids in self.fluid_groups:
            K.packing_scale(
                buf.x, s_in, ids, self.packing, self.open_frac, self.n_colliders, self.J_scale, mpm.inv_dx,
                self.slack, self.rate,
            )  # fmt: skip

    def adjoint(self, mpm: MPMSolver, sub: Substep, grids: Grids) -> None:
        """Adjoint of :meth:`forward` from ``J_scale.grad`` (written by the fluid stress adjoint):
        adds to the input slot's x and J adjoints and to the collider pose adjoints."""
        if not self.active:
            return
        buf, s_in = sub.state[mpm.name], sub.s_in
        K.zero_grid(self.packing.grad)
        arrays.zero_array(self.open_frac.grad)
        for _, ids in self.fluid_groups:
            K.packing_scale_adjoint(
                buf.x, s_in, ids, self.packing, self.open_frac, self.n_colliders, self.J_scale.grad,
                self.packing.grad, self.open_frac.grad, buf.x.grad, mpm.inv_dx, self.slack, self.rate,
            )  # fmt: skip
        K.deposit_packing_adjoint(buf.x, buf.J, s_in, mpm.volume, self.packing.grad, buf.x.grad, buf.J.grad, mpm.inv_dx)
        ctrl = sub.control
        for c in reversed(range(self.n_colliders)):
            K.open_fraction.grad(
                self.open_frac, c, self.kinds[c], self.shape, ctrl.pos, ctrl.quat, self.mesh_sdf, sub.g, mpm.dx,
                self.packing, self.slack, grids.slab_start,
            )  # fmt: skip


class MPMSolver:
    """MLS-MPM for B copies of a Model's particles.

    Args:
        model: the scene.
        batch_size: B.
        scatter: "slabs" (particles binned into slabs, plain adds) or "atomic".
        n_conditions: grid velocity conditions applied between the two transfer halves (one
            per collider, one for sensors): ``grid_v`` has ``n_conditions + 1`` velocity sets.
        n_projections: particle projections after g2p (one per collider): ``x_chain`` has
            ``n_projections + 1`` position sets.
        staged_x: later stages move the particles, so g2p writes ``x_chain[0]``.
        staged_v: a later stage writes the velocities, so g2p writes ``v_free``.
        grid_mass_read_later: a later stage reads the grid mass (the grid update must not
            clear it).
        mass_adjoint_from_later: a later stage's adjoint adds to the grid momentum and mass
            adjoint (``grids.mom_mass.grad``, which it zeroes first); tape grids then carry it.
    """

    name = "mpm"

    def __init__(
        self,
        model: Model,
        batch_size: int,
        scatter: str,
        n_conditions: int,
        n_projections: int,
        staged_x: bool,
        staged_v: bool,
        grid_mass_read_later: bool,
        mass_adjoint_from_later: bool = False,
    ):
        real = runtime.real_dtype()
        cfg = model.config
        self.model = model
        self.batch_size = B = batch_size
        self.n_particles = N = model.n_particles
        self.n_conditions = n_conditions
        self.n_projections = n_projections
        self.staged_x, self.staged_v = staged_x, staged_v
        self.grid_mass_read_later = grid_mass_read_later
        self.mass_adjoint_from_later = mass_adjoint_from_later
        self.slabs = scatter == "slabs"
        self.dt, self.dx, self.inv_dx = cfg.dt, cfg.dx, 1.0 / cfg.dx
        self.lo = cfg.boundary_cells * cfg.dx
        self.hi = cfg.domain_size - cfg.boundary_cells * cfg.dx
        self.gravity = ti.math.vec3(*cfg.gravity)
        self.boundary_cells = cfg.boundary_cells
        self.speed_limit = cfg.speed_limit

        self.material_id = arrays.upload(model.material_id, ti.i32)
        self.material_groups = [
            (m.kind, m_id, arrays.upload(np.nonzero(model.material_id == m_id)[0], ti.i32))
            for m_id, m in enumerate(model.materials)
            if np.any(model.material_id == m_id)
        ]
        # Taichi's reverse mode of the solid stresses accumulates into the C, F, J adjoints of a
        # substep's input, which must then be zeroed first; the hand-written adjoint kernels write.
        self.accumulates_adjoint = any(kind != FLUID for kind, _, _ in self.material_groups)
        self.volume = arrays.upload(model.volume, real)
        self.params = ti.ndarray(real, (B, len(model.materials), N_PARAMS), needs_grad=True)
        self.mass_grad = ti.ndarray(real, (B, N))  # particle-mass adjoint (backward scratch)
        self.slab_rank = ti.ndarray(ti.i32, (B, N))  # binning scratch
        self.grids = Grids.allocate(n_conditions, B, N, cfg.grid_res, needs_grad=True, v_grad=True)
        self.x_chain = ti.ndarray(ti.types.vector(3, real), (n_projections + 1, B, N), needs_grad=True)
        self.v_free = ti.ndarray(ti.types.vector(3, real), (1, B, N), needs_grad=True) if staged_v else None
        self.status_flags = ti.ndarray(ti.i32, (B,))
        self.packing = PackingCorrection(model, B, self.material_groups)

    # ------------------------------------------------------------------ driver contract
    def stages(self) -> list[Stage]:
        stages = [
            Stage("to_grid", self.to_grid, self.to_grid_adjoint, kept=True),
            Stage("to_particles", self.to_particles, self.to_particles_adjoint),
        ]
        if self.staged_x and not self.staged_v:  # nothing after the coupling writes the output
            stages.append(Stage("finish", self.commit, self.commit_adjoint, self.zero_chain_grad))
        return stages

    def allocate(self, slots: int, needs_grad: bool) -> ParticleBuffers:
        return ParticleBuffers(slots, self.batch_size, self.n_particles, needs_grad)

    def allocate_kept(self) -> Grids:
        n, c = self.model.config.grid_res, self.n_conditions
        return Grids.allocate(
            c,
            self.batch_size,
            self.n_particles,
            n,
            needs_grad=False,
            v_grad=c > 0,
            mass_grad=self.mass_adjoint_from_later,
        )

    def kept_bytes(self) -> int:
        """Bytes of one :class:`Grids` tape set."""
        nodes = self.batch_size * self.model.config.grid_res**3
        real_bytes = 8 if runtime.require().precision == "f64" else 4
        particles = self.batch_size * self.n_particles
        slabs = 4 * particles
        v_copies = 2 if self.n_conditions else 1  # with colliders a stored v has its adjoint too
        mass_copies = 2 if self.mass_adjoint_from_later else 1
        return (nodes * (4 * mass_copies + 4 * (self.n_conditions + 1) * v_copies) + 9 * particles) * real_bytes + slabs

    def grids_of(self, sub: Substep) -> Grids:
        """The grids substep ``sub`` works on: its tape set, or the working set."""
        return self.grids if sub.kept is None else sub.kept[self.name]

    # ------------------------------------------------------------------ forward stages
    def to_grid(self, sub: Substep) -> None:
        buf, s_in, s_out = sub.state[self.name], sub.s_in, sub.s_out
        grids = self.grids_of(sub)
        if not grids.zeroed:
            K.zero_grid(grids.mom_mass)
        # Bin the particles into x-slabs (the bins also serve the packing correction, the grid
        # kernels and the g2p adjoint of this substep); correct the liquid's J for its packing,
        # update the stresses, then scatter momentum and mass.
        K.bin_particles(buf.x, s_in, self.inv_dx, grids.slab_start, self.slab_rank, grids.slab_order)
        self.packing.forward(self, sub, grids)
        for kind, m_id, particles in self.material_groups:
            K.stress(
                buf.C, buf.F, buf.J, self.packing.J_scale, s_in, s_out, kind, m_id, particles, self.volume,
                self.params, grids.affine, self.dt, self.inv_dx,
            )  # fmt: skip
        particles_in = (buf.x, buf.v, s_in, self.material_id, self.volume, self.params, grids.affine)
        if self.slabs:
            for colour in (0, 1):
                K.p2g_slabs(*particles_in, grids.mom_mass, self.inv_dx, grids.slab_start, grids.slab_order, colour)
        else:
            K.p2g(*particles_in, grids.mom_mass, self.inv_dx)
        clear = not sub.keep and not self.grid_mass_read_later
        K.grid_update(
            grids.mom_mass, grids.v, self.gravity, self.dt, self.boundary_cells, clear, grids.slab_start
        )  # fmt: skip
        grids.zeroed = clear

    def to_particles(self, sub: Substep) -> None:
        buf, s_in, s_out = sub.state[self.name], sub.s_in, sub.s_out
        v_out, s_v = (self.v_free, 0) if self.staged_v else (buf.v, s_out)
        x_out, s_x = (self.x_chain, 0) if self.staged_x else (buf.x, s_out)
        K.g2p(
            buf.x, s_in, x_out, s_x, v_out, s_v, buf.C, s_out, self.grids_of(sub).v, self.n_conditions,
            self.dt, self.inv_dx, self.lo, self.hi,
        )  # fmt: skip

    def commit(self, sub: Substep) -> None:
        arrays.copy_slot(self.x_chain, self.n_projections, sub.state[self.name].x, sub.s_out)

    # ------------------------------------------------------------------ adjoint stages
    def zero_chain_grad(self, sub: Substep) -> None:
        arrays.zero_array(self.x_chain.grad)

    def commit_adjoint(self, sub: Substep) -> None:
        arrays.copy_slot.grad(self.x_chain, self.n_projections, sub.state[self.name].x, sub.s_out)

    def v_grad(self, grids: Grids):
        """The grid velocity adjoints for ``grids``: its own with colliders, else the working ones."""
        return grids.v.grad if grids.v.grad is not None else self.grids.v.grad

    def to_particles_adjoint(self, sub: Substep) -> None:
        buf, s_in, s_out = sub.state[self.name], sub.s_in, sub.s_out
        grids = self.grids_of(sub)
        v_out, s_v = (self.v_free, 0) if self.staged_v else (buf.v, s_out)
        x_out, s_x = (self.x_chain, 0) if self.staged_x else (buf.x, s_out)
        args = (
            buf.x, s_in, v_out, v_out.grad, s_v, buf.C.grad, s_out, x_out.grad, s_x, grids.v, self.v_grad(grids),
            self.n_conditions, buf.x.grad, self.dt, self.inv_dx, self.lo, self.hi,
        )  # fmt: skip
        if not self.slabs:
            K.g2p_adjoint(*args)
            return
        for colour in (0, 1):  # bins of x[s_in] from the forward substep
            K.g2p_adjoint_slabs(*args, grids.slab_start, grids.slab_order, colour)

    def to_grid_adjoint(self, sub: Substep) -> None:
        buf, s_in, s_out = sub.state[self.name], sub.s_in, sub.s_out
        grids, work = self.grids_of(sub), self.grids
        other = grids.mom_mass.grad if self.mass_adjoint_from_later else work.mom_mass.grad
        K.grid_update_adjoint(
            grids.mom_mass, self.v_grad(grids), work.mom_mass.grad, self.gravity, self.dt, self.boundary_cells,
            grids.slab_start, other, self.mass_adjoint_from_later,
        )  # fmt: skip
        grids.zeroed = True
        K.p2g_adjoint(
            buf.x, buf.v, s_in, self.material_id, self.volume, self.params, grids.affine,
            work.mom_mass.grad, buf.x.grad, buf.v.grad, work.affine.grad, self.mass_grad, self.inv_dx,
        )  # fmt: skip
        if sub.need_params:
            K.density_grad(self.material_id, self.volume, self.mass_grad, self.params.grad)
        packing = self.packing
        packing.forward(self, sub, grids)  # J_scale of this substep (working memory)
        for kind, m_id, particles in self.material_groups:
            if kind == FLUID:
                K.stress_adjoint_fluid(
                    buf.C, buf.J, packing.J_scale, s_in, s_out, m_id, particles, self.volume, self.params,
                    work.affine.grad, packing.J_scale.grad, self.params.grad, self.dt, self.inv_dx, sub.need_params,
                )  # fmt: skip
            else:
                K.stress.grad(
                    buf.C, buf.F, buf.J, packing.J_scale, s_in, s_out, kind, m_id, particles, self.volume,
                    self.params, work.affine, self.dt, self.inv_dx,
                )  # fmt: skip
        packing.adjoint(self, sub, grids)

    def begin_backward(self, tape_grids: list[Grids]) -> None:
        """Zero the parameter adjoints and the grid velocity adjoints (then kept zero by
        grid_update_adjoint) of the working grids and the tape's."""
        self.params.grad.fill(0)
        for grids in [self.grids, *tape_grids]:
            arrays.zero_array(self.v_grad(grids))

    # ------------------------------------------------------------------ host side
    def load_params(self, params: torch.Tensor) -> None:
        """Upload a (B, M, 5) material parameter table."""
        self.params.from_numpy(params.detach().cpu().numpy().astype(arrays.np_real()))

    def params_grad(self) -> torch.Tensor:
        return torch.as_tensor(self.params.grad.to_numpy(), dtype=runtime.torch_dtype())

    def write(self, particles: ParticleState, buf: ParticleBuffers, slot: int) -> None:
        """Torch particle state -> slot ``slot`` of ``buf``."""
        dt = runtime.torch_dtype()
        for name, arr in zip(ParticleState.FIELDS, buf.arrays(), strict=True):
            value = getattr(particles, name).detach().to(dt).contiguous()
            arrays.transfers(tuple(value.shape[2:]))[1](value, arr, slot)

    def read_array(self, arr, slot: int, trailing: tuple[int, ...]) -> torch.Tensor:
        """Slot ``slot`` of a slotted particle array as a (B, N, *trailing) tensor."""
        out = torch.empty(self.batch_size, self.n_particles, *trailing, dtype=runtime.torch_dtype())
        arrays.transfers(trailing)[0](arr, slot, out)
        return out

    def read(self, buf: ParticleBuffers, slot: int) -> ParticleState:
        """Slot ``slot`` of ``buf`` as torch tensors (copies)."""
        shapes = {"x": (3,), "v": (3,), "C": (3, 3), "F": (3, 3), "J": ()}
        return ParticleState(*(self.read_array(getattr(buf, f), slot, shapes[f]) for f in ParticleState.FIELDS))

    def add_output_grad(self, buf: ParticleBuffers, slot: int, grad_x: torch.Tensor, grad_v: torch.Tensor) -> None:
        """Add a loss's gradients with respect to the positions and velocities of slot ``slot``."""
        add_vec3 = arrays.transfers((3,))[2]
        add_vec3(grad_x.contiguous(), buf.x.grad, slot)
        add_vec3(grad_v.contiguous(), buf.v.grad, slot)

    def status(self, buf: ParticleBuffers, slot: int) -> np.ndarray:
        """(B,) 0 ok, 1 non-finite, 2 a speed above the CFL speed limit, for slot ``slot``."""
        self.status_flags.fill(0)
        K.check_state(buf.x, buf.v, slot, self.speed_limit, self.status_flags)
        return self.status_flags.to_numpy()
