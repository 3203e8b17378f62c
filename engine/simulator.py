"""Simulator: composes the MLS-MPM kernels into steps and rollouts, forward and backward.

* Fast path (RL): :meth:`Simulator.reset` / :meth:`Simulator.step` advance B scenes in place on a
  two-slot ring buffer; no tape, no gradient buffers.
* Differentiable path: :meth:`Simulator.rollout` runs T control steps and returns recorded
  positions/velocities as torch tensors connected to ``x0, v0, params`` and the collider control
  through one ``torch.autograd.Function`` (engine/autograd.py).
* Checkpointing (Griewank's two-level scheme, as Warp's ``example_fluid_checkpoint``): the forward
  pass stores the full particle state every ``every`` substeps (default ceil(sqrt(n))); backward
  replays one segment at a time onto a tape of ``every + 1`` states with their gradients, keeping
  each replayed substep's grids (up to ``grid_tape_mb``), and runs the adjoint kernels
  (hand-written for the transfers and the fluid stress, Taichi reverse mode ``kernel.grad`` for
  the rest) substep by substep on the tape. The forward runs its last segment on the tape already,
  so that segment is not replayed. Memory is O((n/every + every) * (state + grids)) instead of
  O(n * state); time is one extra forward pass (less its last segment) plus the adjoint kernels.
* Blow-ups are detected after every control step (NaN/Inf or speed above the CFL speed) and raise
  :class:`engine.state.SimulationDiverged` naming the step and batch entries.
"""

from __future__ import annotations

import math
import weakref
from dataclasses import dataclass, replace

import numpy as np
import taichi as ti
import torch

from engine import colliders as colliders_mod
from engine import mpm, runtime
from engine.materials import FLUID, N_PARAMS, PARAM_NAMES
from engine.scene import check_stability
from engine.state import Model, SimulationDiverged, State

_FIELDS = ("x", "v", "C", "F", "J")


class _ParticleBuffers:
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
        return [getattr(self, f) for f in _FIELDS]

    def copy_slot_to(self, s: int, other: _ParticleBuffers, t: int) -> None:
        mpm.copy_state_slot(*self.arrays(), s, *other.arrays(), t)

    def zero_grad_slot(self, s: int) -> None:
        mpm.zero_state_slot(*(arr.grad for arr in self.arrays()), s)

    def copy_grad_slot(self, s: int, t: int) -> None:
        """The gradients of slot s -> those of slot t."""
        grads = [arr.grad for arr in self.arrays()]
        mpm.copy_state_slot(*grads, s, *grads, t)


@dataclass
class _Grids:
    """What one substep builds before its g2p: grid momentum and mass ``mom_mass`` (B, n, n, n, 4),
    velocities ``v`` (K + 1, B, n, n, n, 4; w = 0, see engine/mpm.py) after walls and each
    collider, the particles' affine momentum matrices ``affine`` (B, N, 3, 3), and their slab bins
    (``slab_start``, ``slab_order``). The simulator's working set has gradients; the backward tape
    keeps one set per replayed substep, so the adjoint of a substep does not recompute its stress,
    scatter and grid update; its sets have gradients only on ``v``, and only with colliders (whose
    Taichi adjoint accumulates into ``v.grad``). ``zeroed`` records whether mom_mass is zero, as
    the scatter needs (grid_update clears it when nothing reads it later)."""

    mom_mass: object
    v: object
    affine: object
    slab_start: object
    slab_order: object
    zeroed: bool = False

    @classmethod
    def allocate(cls, K: int, B: int, N: int, n: int, needs_grad: bool, v_grad: bool) -> _Grids:
        real = runtime.real_dtype()
        vec4, mat3 = ti.types.vector(4, real), ti.types.matrix(3, 3, real)
        return cls(
            mom_mass=ti.ndarray(vec4, (B, n, n, n), needs_grad=needs_grad),
            v=ti.ndarray(vec4, (K + 1, B, n, n, n), needs_grad=needs_grad or v_grad),
            affine=ti.ndarray(mat3, (B, N), needs_grad=needs_grad),
            slab_start=ti.ndarray(ti.i32, (B, n // mpm.SLAB_WIDTH + 2)),
            slab_order=ti.ndarray(ti.i32, (B, N)),
        )


class _Control:
    """Collider poses and velocities per substep, (n_sub + 1, B, K, ...) ndarrays."""

    def __init__(self, shape: tuple[int, int, int], needs_grad: bool):
        real = runtime.real_dtype()
        self.arrays = [ti.ndarray(ti.types.vector(dim, real), shape, needs_grad=needs_grad) for dim in (3, 4, 3, 3)]
        self.pos, self.quat, self.lin, self.ang = self.arrays

    def load(self, pos, quat, lin, ang) -> _Control:
        for arr, value in zip(self.arrays, (pos, quat, lin, ang), strict=True):
            arr.from_numpy(value.detach().cpu().numpy().astype(_np_real()))
        return self

    def zero_grad(self) -> None:
        for arr in self.arrays:
            mpm.zero_array(arr.grad)


def _np_real():
    return np.float64 if runtime.require().precision == "f64" else np.float32


@dataclass(frozen=True)
class _Plan:
    """The shape of one rollout: substeps, recorded step boundaries, checkpoint spacing."""

    n_steps: int
    substeps: int
    record_steps: tuple[int, ...]  # control steps (1-based) whose end state is returned
    every: int

    @property
    def n_sub(self) -> int:
        return self.n_steps * self.substeps

    def record_index(self) -> dict[int, int]:
        """substep index s (state after s substeps) -> output row."""
        return {t * self.substeps: r for r, t in enumerate(self.record_steps)}


@dataclass
class Rollout:
    """Result of :meth:`Simulator.rollout`.

    Attributes:
        steps: the recorded control steps (1-based: step t is the state after t actions).
        x: (R, B, N, 3) positions at those steps [m] (differentiable).
        v: (R, B, N, 3) velocities at those steps [m/s] (differentiable).
        final: the full final state (x, v, collider poses differentiable; C, F, J detached), or
            None when the last control step is not among the recorded ones.
    """

    steps: tuple[int, ...]
    x: torch.Tensor
    v: torch.Tensor
    final: State | None


class Simulator:
    """B independent copies of one Model stepped in single kernel launches.

    After every substep each particle found inside a collider is projected onto its surface, one
    collider after the other, so with a single collider no particle ends inside it (to rounding;
    mesh SDFs to their trilinear interpolant). Where two colliders squeeze material between
    them the later projection can push a particle back into the earlier collider; that depth
    stays below ``PENETRATION_TOLERANCE * dx``.
    """

    PENETRATION_TOLERANCE = 0.05

    def __init__(self, model: Model, batch_size: int = 1, scatter: str = "auto", grid_tape_mb: float = 1024.0):
        """B copies of ``model``.

        Args:
            scatter: the particle-to-grid scatter kernels: "atomic" (atomic adds), "slabs"
                (particles binned into slabs, plain adds; see engine/mpm.py) or "auto" (slabs on
                the CPU for at least ``mpm.SLAB_MIN_PARTICLES`` particles in all).
            grid_tape_mb: memory the backward pass may spend keeping the grids of the replayed
                substeps of a checkpoint segment (see :class:`_Grids`); substeps beyond it have
                their scatter and grid update recomputed. 0 recomputes all.
        """
        runtime.require()
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
        if scatter not in ("auto", "atomic", "slabs"):
            raise ValueError(f"scatter must be 'auto', 'atomic' or 'slabs', got {scatter!r}")
        if not grid_tape_mb >= 0:
            raise ValueError(f"grid_tape_mb must be >= 0, got {grid_tape_mb!r}")
        self.grid_tape_mb = float(grid_tape_mb)
        self.model = model
        self.config = model.config
        self.batch_size = B = batch_size
        self.n_particles = N = model.n_particles
        self.n_colliders = model.n_colliders
        real = runtime.real_dtype()
        npr = _np_real()
        cfg = self.config
        self._dt, self._dx, self._inv_dx = cfg.dt, cfg.dx, 1.0 / cfg.dx
        self._lo = cfg.boundary_cells * cfg.dx
        self._hi = cfg.domain_size - cfg.boundary_cells * cfg.dx
        self._gravity = ti.math.vec3(*cfg.gravity)

        def upload(value, dtype, element=None, needs_grad=False):
            value = np.ascontiguousarray(value)
            shape = value.shape if element is None else value.shape[: value.ndim - len(element.get_shape())]
            arr = ti.ndarray(dtype if element is None else element, shape, needs_grad=needs_grad)
            arr.from_numpy(value.astype(npr if dtype is real else np.int32))
            return arr

        self.material_id = upload(model.material_id, ti.i32)
        self._material_groups = [
            (m.kind, m_id, upload(np.nonzero(model.material_id == m_id)[0], ti.i32))
            for m_id, m in enumerate(model.materials)
            if np.any(model.material_id == m_id)
        ]
        # Taichi's reverse mode of the solid stresses accumulates into the C, F, J adjoints of a
        # substep's input, which must then be zeroed first; the hand-written adjoint kernels write.
        self._accumulating_stress_adjoint = any(kind != FLUID for kind, _, _ in self._material_groups)
        self.volume = upload(model.volume, real)
        self.params = ti.ndarray(real, (B, len(model.materials), N_PARAMS), needs_grad=True)
        self.body_id = upload(model.body_id, ti.i32)
        self.rest_offset = upload(model.rest_offset, real, ti.types.vector(3, real))
        self.n_bodies = nb = model.n_bodies
        if nb:
            self.body_volume = upload(model.body_volume, real)
            self.body_Aqq_inv = upload(model.body_Aqq_inv, real, ti.types.matrix(3, 3, real))
            vec3, mat3 = ti.types.vector(3, real), ti.types.matrix(3, 3, real)
            self.body_sum_x = ti.ndarray(vec3, (B, nb), needs_grad=True)
            self.body_Apq = ti.ndarray(mat3, (B, nb), needs_grad=True)
            self.body_c = ti.ndarray(vec3, (B, nb), needs_grad=True)
            self.body_R = ti.ndarray(mat3, (B, nb), needs_grad=True)
            self.v_free = ti.ndarray(vec3, (1, B, N), needs_grad=True)

        # Colliders: static description (one padding row when there is none, never read).
        shapes = [c.shape for c in model.colliders]
        mesh_sdf, shape_params = colliders_mod.pack_mesh_sdfs(shapes)
        K = self.n_colliders
        self.collider_kinds = tuple(int(c.shape.kind) for c in model.colliders)
        shape_table = np.zeros((max(K, 1), colliders_mod.SHAPE_DIM))
        contact = np.zeros((max(K, 1), 2))
        for c, collider in enumerate(model.colliders):
            shape_table[c] = shape_params[c]
            contact[c] = (collider.contact.friction, collider.contact.mode_id)
        self.collider_shape = upload(shape_table, real, ti.types.vector(colliders_mod.SHAPE_DIM, real))
        self.collider_contact = upload(contact, real, ti.types.vector(2, real))
        self.mesh_sdf = upload(np.asarray(mesh_sdf, dtype=np.float64), real)

        n = cfg.grid_res
        self._mass_grad = ti.ndarray(real, (B, N))  # particle-mass adjoint (backward scratch)
        if scatter == "auto":
            scatter = "slabs" if runtime.on_cpu() and B * N >= mpm.SLAB_MIN_PARTICLES else "atomic"
        self._slabs = scatter == "slabs"
        # Particles are binned into x-slabs every substep with either scatter: the grid kernels
        # use the bins to skip the grid planes no particle reaches.
        self._slab_rank = ti.ndarray(ti.i32, (B, N))  # binning scratch
        # The working grids; grid_v[c] is the grid velocity after gravity, walls and the first c
        # colliders.
        self._grids = _Grids.allocate(K, B, N, n, needs_grad=True, v_grad=True)
        self.grid_mom_mass, self.grid_v = self._grids.mom_mass, self._grids.v
        self.affine = self._grids.affine
        # x_chain[c]: advected positions after projection out of the first c colliders. Without
        # colliders or bodies g2p writes the new positions straight into the particle state.
        self._direct_x = not (K or nb)
        self.x_chain = ti.ndarray(ti.types.vector(3, real), (K + 1, B, N), needs_grad=True)
        self._status = ti.ndarray(ti.i32, (B,))

        self._ring = _ParticleBuffers(2, B, N, needs_grad=False)
        self._tape: _ParticleBuffers | None = None
        # The checkpoints of the rollout whose last segment is on the tape (a weak reference: the
        # tape must not keep a discarded rollout's checkpoints alive).
        self._tape_owner: weakref.ref | None = None
        self._grid_tape: list[_Grids] = []
        self._controls: dict[tuple, _Control] = {}
        self._slot = 0
        self._pose: torch.Tensor | None = None
        self._loaded_params: torch.Tensor | None = None

    # ------------------------------------------------------------------ helpers
    @property
    def dtype(self) -> torch.dtype:
        return runtime.torch_dtype()

    def initial_state(self) -> State:
        """The Model's initial state replicated over the batch (C = 0, F = I, J = 1)."""
        B, N, dt = self.batch_size, self.n_particles, self.dtype
        x = torch.as_tensor(self.model.x0, dtype=dt).expand(B, N, 3).clone()
        v = torch.as_tensor(self.model.v0, dtype=dt).expand(B, N, 3).clone()
        K = self.n_colliders
        pose = torch.zeros(B, K, 7, dtype=dt)
        for c, collider in enumerate(self.model.colliders):
            pose[:, c] = torch.as_tensor(np.asarray(collider.pose, dtype=np.float64), dtype=dt)
        return State(
            x=x,
            v=v,
            C=torch.zeros(B, N, 3, 3, dtype=dt),
            F=torch.eye(3, dtype=dt).expand(B, N, 3, 3).clone(),
            J=torch.ones(B, N, dtype=dt),
            collider_pose=pose,
        )

    def default_params(self) -> torch.Tensor:
        """(B, M, 5) material parameter table of the Model's materials."""
        table = torch.as_tensor(self.model.default_params(), dtype=self.dtype)
        return table.expand(self.batch_size, *table.shape).clone()

    def _check_params(self, params: torch.Tensor) -> torch.Tensor:
        expected = (self.batch_size, len(self.model.materials), N_PARAMS)
        if tuple(params.shape) != expected:
            raise ValueError(f"params must have shape {expected} (B, materials, 5), got {tuple(params.shape)}")
        values = params.detach().cpu().double().numpy()
        for b in range(values.shape[0]):
            for m, material in enumerate(self.model.materials):
                trial = replace(material, **dict(zip(PARAM_NAMES, map(float, values[b, m]), strict=True)))
                check_stability(trial, self.config)
        return params

    def _check_control(self, control: torch.Tensor, steps: int | None = None) -> None:
        K = self.n_colliders
        if control.ndim != 4 or tuple(control.shape[1:]) != (self.batch_size, K, 6):
            raise ValueError(
                f"control must have shape (T, {self.batch_size}, {K}, 6) "
                f"(steps, batch, colliders, linear+angular velocity), got {tuple(control.shape)}"
            )
        if steps is not None and control.shape[0] != steps:
            raise ValueError(f"control must have {steps} steps, got {control.shape[0]}")
        if not torch.isfinite(control).all():
            bad = torch.nonzero(~torch.isfinite(control))[0].tolist()
            raise ValueError(f"control contains NaN/Inf (first at index {bad})")

    def _check_state(self, state: State, rows: list[int] | None = None) -> None:
        """Shapes of every field; finiteness and domain bounds of the batch entries ``rows`` (all)."""
        B, N, K = self.batch_size, self.n_particles, self.n_colliders
        expected = {
            "x": (B, N, 3),
            "v": (B, N, 3),
            "C": (B, N, 3, 3),
            "F": (B, N, 3, 3),
            "J": (B, N),
            "collider_pose": (B, K, 7),
        }
        for name, shape in expected.items():
            value = getattr(state, name)
            if tuple(value.shape) != shape:
                raise ValueError(f"state.{name} must have shape {shape}, got {tuple(value.shape)}")
            if not torch.isfinite(value if rows is None else value[rows]).all():
                raise ValueError(f"state.{name} contains NaN/Inf")
        x = state.x.detach() if rows is None else state.x.detach()[rows]
        if ((x < self._lo) | (x > self._hi)).any():
            raise ValueError(f"state.x: particles outside the domain interior [{self._lo:.4g}, {self._hi:.4g}]^3")

    def _load_params(self, params: torch.Tensor) -> None:
        self.params.from_numpy(params.detach().cpu().numpy().astype(_np_real()))

    def _collider_trajectory(self, pose0: torch.Tensor, control: torch.Tensor):
        """Collider pose at every substep boundary and velocity during every substep (torch)."""
        B, K, dt = self.batch_size, self.n_colliders, self.dtype
        n_sub = control.shape[0] * self.config.substeps
        if K == 0:
            pose = torch.zeros(n_sub + 1, B, 1, 7, dtype=dt)
            pose[..., 3] = 1.0
            vel = torch.zeros(n_sub + 1, B, 1, 6, dtype=dt)
            return pose, vel
        padded = torch.cat([control, control[-1:]], dim=0)
        poses, vels = colliders_mod.integrate_poses(pose0, padded, self.config.dt, self.config.substeps)
        return poses[: n_sub + 1], vels[: n_sub + 1]

    def _make_control(self, pose: torch.Tensor, vel: torch.Tensor, needs_grad: bool) -> _Control:
        """The control arrays for ``pose``, ``vel``: kept per shape and reused (allocating Taichi
        ndarrays took about half of a small scene's step)."""
        key = (tuple(pose.shape[:3]), needs_grad)
        if key not in self._controls:
            self._controls[key] = _Control(key[0], needs_grad)
        return self._controls[key].load(pose[..., :3], pose[..., 3:], vel[..., :3], vel[..., 3:])

    def _load_state(self, state: State, buffers: _ParticleBuffers, slot: int) -> None:
        dt = self.dtype
        for name, arr in zip(_FIELDS, buffers.arrays(), strict=True):
            value = getattr(state, name).detach().to(dt).contiguous()
            mpm.transfers(tuple(value.shape[2:]))[1](value, arr, slot)

    def _read(self, arr, slot: int, trailing: tuple[int, ...]) -> torch.Tensor:
        out = torch.empty(self.batch_size, self.n_particles, *trailing, dtype=self.dtype)
        mpm.transfers(trailing)[0](arr, slot, out)
        return out

    def _read_state(self, buffers: _ParticleBuffers, slot: int, pose: torch.Tensor) -> State:
        return State(
            x=self._read(buffers.x, slot, (3,)),
            v=self._read(buffers.v, slot, (3,)),
            C=self._read(buffers.C, slot, (3, 3)),
            F=self._read(buffers.F, slot, (3, 3)),
            J=self._read(buffers.J, slot, ()),
            collider_pose=pose,
        )

    def _grids_bytes(self) -> int:
        """Bytes of one set of grid arrays (:class:`_Grids`)."""
        nodes = self.batch_size * self.config.grid_res**3
        real_bytes = 8 if runtime.require().precision == "f64" else 4
        particles = self.batch_size * self.n_particles
        slabs = 4 * particles
        v_copies = 2 if self.n_colliders else 1  # with colliders a stored v has its adjoint too
        return (nodes * (4 + 4 * (self.n_colliders + 1) * v_copies) + 9 * particles) * real_bytes + slabs

    # ------------------------------------------------------------------ kernels
    def _substep(
        self,
        buf: _ParticleBuffers,
        s_in: int,
        s_out: int,
        g: int,
        ctrl: _Control,
        grids: _Grids | None = None,
        keep: bool = False,
    ) -> None:
        """Forward substep g: particle slot s_in of ``buf`` -> slot s_out, on ``grids`` (default:
        the working grids); ``keep`` leaves grid momentum and mass for the adjoint (else, without
        colliders, grid_update clears them)."""
        grids = grids or self._grids
        if not grids.zeroed:
            mpm.zero_grid(grids.mom_mass)
        self._stress(buf, s_in, s_out, grids.affine)
        self._p2g(buf, s_in, grids)
        clear = not keep and not self.n_colliders  # grid_collide reads the grid mass
        mpm.grid_update(
            grids.mom_mass, grids.v, self._gravity, self._dt, self.config.boundary_cells, clear,
            grids.slab_start,
        )  # fmt: skip
        grids.zeroed = clear
        for c in range(self.n_colliders):
            self._grid_collide(c, g, ctrl, grids)
        self._to_particles(buf, s_in, s_out, g, ctrl, grids)

    def _to_particles(self, buf, s_in, s_out, g, ctrl, grids):
        """The particle half of a substep: g2p, projection out of colliders, rigid bodies."""
        self._g2p(buf, s_in, s_out, grids)
        if self._direct_x:
            return
        for c in range(self.n_colliders):
            self._project_out(c, g, ctrl)
        if self.n_bodies:
            mpm.zero_array(self.body_sum_x)
            mpm.zero_array(self.body_Apq)
            self._body_moments()
            self._body_fit()
            self._body_apply(buf, s_out)
        else:
            mpm.copy_slot(self.x_chain, self.n_colliders, buf.x, s_out)

    def _substep_backward(
        self, adj: _ParticleBuffers, a: int, b: int, g: int, ctrl: _Control, stored: _Grids | None, need_params: bool
    ) -> None:
        """Adjoint of substep g (input slot a, output slot b of ``adj``, a buffer with gradients);
        primal slot a must hold the substep's input, slot b the output adjoint, and the grid
        velocity adjoints must be zero (grid_update_adjoint leaves them so). Writes the adjoints
        of slot a (g2p_adjoint and p2g_adjoint write x and v, stress_adjoint_fluid C and J;
        Taichi's solid stress adjoints accumulate, so with ``_accumulating_stress_adjoint`` slot a's
        adjoints must be zero on entry); accumulates into params and control gradients.

        ``stored``: the grids of this substep kept by the replay, or None to recompute them. With
        them only g2p is rerun, and only when colliders or bodies need its positions; the
        adjoint of g2p then reads the primal output state from slot b, which the caller must
        have filled."""
        if not self._direct_x:
            mpm.zero_array(self.x_chain.grad)
        if self.n_bodies:
            for arr in (self.v_free, self.body_sum_x, self.body_Apq, self.body_c, self.body_R):
                mpm.zero_array(arr.grad)
        if stored is None:
            grids = self._grids
            self._substep(adj, a, b, g, ctrl, keep=True)  # recompute the intermediates of this substep
        else:
            grids = stored
            if not self._direct_x:
                self._to_particles(adj, a, b, g, ctrl, stored)
        if self.n_bodies:
            self._body_apply(adj, b, grad=True)
            self._body_fit(grad=True)
            self._body_moments(grad=True)
        elif not self._direct_x:
            mpm.copy_slot.grad(self.x_chain, self.n_colliders, adj.x, b)
        for c in reversed(range(self.n_colliders)):
            self._project_out(c, g, ctrl, grad=True)
        self._g2p(adj, a, b, grids, grad=True)
        for c in reversed(range(self.n_colliders)):
            self._grid_collide(c, g, ctrl, grids, grad=True)
        mpm.grid_update_adjoint(
            grids.mom_mass,
            self._v_grad(grids),
            self.grid_mom_mass.grad,
            self._gravity,
            self._dt,
            self.config.boundary_cells,
            grids.slab_start,
        )
        grids.zeroed = True
        mpm.p2g_adjoint(
            adj.x, adj.v, a, self.material_id, self.volume, self.params, grids.affine,
            self.grid_mom_mass.grad, adj.x.grad, adj.v.grad, self.affine.grad, self._mass_grad, self._inv_dx,
        )  # fmt: skip
        if need_params:
            mpm.density_grad(self.material_id, self.volume, self._mass_grad, self.params.grad)
        self._stress(adj, a, b, self.affine, grad=True, need_params=need_params)

    def _v_grad(self, grids):
        """The grid velocity adjoints for ``grids``: its own with colliders, else the working ones."""
        return grids.v.grad if grids.v.grad is not None else self.grid_v.grad

    def _stress(self, buf, s_in, s_out, affine, grad=False, need_params=True):
        """Constitutive update and affine matrices, one launch per material (or its adjoint:
        hand-written for fluids, Taichi's reverse mode for the other models)."""
        stress = mpm.stress.grad if grad else mpm.stress
        for kind, m_id, particles in self._material_groups:
            if grad and kind == FLUID:
                mpm.stress_adjoint_fluid(
                    buf.C, buf.J, s_in, s_out, m_id, particles, self.volume, self.params, affine.grad,
                    self.params.grad, self._dt, self._inv_dx, need_params,
                )  # fmt: skip
                continue
            stress(
                buf.C, buf.F, buf.J, s_in, s_out, kind, m_id, particles, self.volume, self.params,
                affine, self._dt, self._inv_dx,
            )  # fmt: skip

    def _p2g(self, buf, s_in, grids):
        particles_in = (buf.x, buf.v, s_in, self.material_id, self.volume, self.params, grids.affine)
        # The bins of x[s_in] also serve the grid kernels and the g2p adjoint of this substep.
        mpm.bin_particles(buf.x, s_in, self._inv_dx, grids.slab_start, self._slab_rank, grids.slab_order)
        if not self._slabs:
            mpm.p2g(*particles_in, grids.mom_mass, self._inv_dx)
            return
        for colour in (0, 1):
            mpm.p2g_slabs(*particles_in, grids.mom_mass, self._inv_dx, grids.slab_start, grids.slab_order, colour)

    def _grid_collide(self, c, g, ctrl, grids, grad=False):
        kernel = mpm.grid_collide.grad if grad else mpm.grid_collide
        kernel(
            grids.mom_mass, grids.v, c, self.collider_kinds[c], self.collider_shape, self.collider_contact,
            ctrl.pos, ctrl.quat, ctrl.lin, ctrl.ang, self.mesh_sdf, g, self._dx,
        )  # fmt: skip

    def _g2p(self, buf, s_in, s_out, grids, grad=False):
        v_out, s_v = (self.v_free, 0) if self.n_bodies else (buf.v, s_out)
        x_out, s_x = (buf.x, s_out) if self._direct_x else (self.x_chain, 0)
        if grad:
            args = (
                buf.x, s_in, v_out, v_out.grad, s_v, buf.C.grad, s_out, x_out.grad, s_x, grids.v, self._v_grad(grids),
                self.n_colliders, buf.x.grad, self._dt, self._inv_dx, self._lo, self._hi,
            )  # fmt: skip
            if not self._slabs:
                mpm.g2p_adjoint(*args)
                return
            for colour in (0, 1):  # bins of x[s_in] from the forward substep
                mpm.g2p_adjoint_slabs(*args, grids.slab_start, grids.slab_order, colour)
            return
        mpm.g2p(
            buf.x, s_in, x_out, s_x, v_out, s_v, buf.C, s_out, grids.v, self.n_colliders,
            self._dt, self._inv_dx, self._lo, self._hi,
        )  # fmt: skip

    def _project_out(self, c, g, ctrl, grad=False):
        kernel = mpm.project_out.grad if grad else mpm.project_out
        kernel(
            self.x_chain, c, self.collider_kinds[c], self.collider_shape, ctrl.pos, ctrl.quat,
            self.mesh_sdf, g + 1,
        )  # fmt: skip

    def _body_moments(self, grad=False):
        kernel = mpm.body_moments.grad if grad else mpm.body_moments
        kernel(
            self.x_chain, self.n_colliders, self.body_id, self.volume, self.rest_offset,
            self.body_sum_x, self.body_Apq,
        )  # fmt: skip

    def _body_fit(self, grad=False):
        kernel = mpm.body_fit.grad if grad else mpm.body_fit
        kernel(
            self.body_sum_x,
            self.body_Apq,
            self.body_volume,
            self.body_Aqq_inv,
            self.body_c,
            self.body_R,
        )

    def _body_apply(self, buf, s_out, grad=False):
        kernel = mpm.body_apply.grad if grad else mpm.body_apply
        kernel(
            self.x_chain, self.n_colliders, self.v_free, self.body_id, self.rest_offset,
            self.body_c, self.body_R, buf.x, buf.v, s_out, self._dt,
        )  # fmt: skip

    def _status_after(self, buf: _ParticleBuffers, slot: int) -> np.ndarray:
        self._status.fill(0)
        mpm.check_state(buf.x, buf.v, slot, self.config.speed_limit, self._status)
        return self._status.to_numpy()

    def _raise_if_diverged(self, status: np.ndarray, step: int) -> None:
        if status.any():
            bad = np.nonzero(status)[0].tolist()
            reason = "non-finite" if (status == 1).any() else "runaway velocity"
            raise SimulationDiverged(step, bad, reason)

    # ------------------------------------------------------------------ fast path
    def reset(
        self, state: State | None = None, params: torch.Tensor | None = None, entries: list[int] | None = None
    ) -> None:
        """Load a state (default: the initial state) for stepping with :meth:`step`.

        Args:
            state: (B, ...) state to start from.
            params: (B, M, 5) material parameters (default: the Model's; with ``entries``, the
                current ones are kept unless given).
            entries: restart only these batch entries from ``state``; the others keep their
                current state, which may be a diverged one awaiting its own reset.
        """
        state = self.initial_state() if state is None else state
        if entries is None:
            self._check_state(state)
            self._load_state(state, self._ring, 0)
            self._slot = 0
            self._pose = state.collider_pose.detach().to(self.dtype).clone()
            self.set_params(self.default_params() if params is None else params)
            return
        if self._pose is None:
            raise RuntimeError("call reset() for all entries before restarting some of them")
        rows = sorted({int(e) for e in entries})
        if rows and not 0 <= rows[0] <= rows[-1] < self.batch_size:
            raise ValueError(f"entries must lie in [0, {self.batch_size}), got {entries!r}")
        self._check_state(state, rows)
        merged = self.get_state()
        for name in _FIELDS + ("collider_pose",):
            getattr(merged, name)[rows] = getattr(state, name).detach().to(self.dtype)[rows]
        self._load_state(merged, self._ring, self._slot)
        self._pose = merged.collider_pose
        if params is not None:
            self.set_params(params)

    def set_params(self, params: torch.Tensor) -> None:
        """Set the (B, M, 5) material parameter table used by :meth:`step`."""
        self._loaded_params = self._check_params(params.detach().to(self.dtype))
        self._load_params(self._loaded_params)

    def step(self, control: torch.Tensor, raise_on_divergence: bool = True) -> np.ndarray:
        """Advance one control step (``substeps`` substeps) in place, without gradients.

        Args:
            control: (B, K, 6) collider linear and angular velocities for this step.
            raise_on_divergence: raise SimulationDiverged, else return the status.

        Returns:
            (B,) int status per scene: 0 ok, 1 non-finite, 2 runaway velocity.
        """
        if self._pose is None:
            raise RuntimeError("call reset() before step()")
        control = torch.as_tensor(control, dtype=self.dtype)
        self._check_control(control[None], steps=1)
        self._load_params(self._loaded_params)
        pose, vel = self._collider_trajectory(self._pose, control[None])
        ctrl = self._make_control(pose, vel, needs_grad=False)
        for s in range(self.config.substeps):
            self._substep(self._ring, self._slot, 1 - self._slot, s, ctrl)
            self._slot = 1 - self._slot
        if self.n_colliders:
            self._pose = pose[-1].clone()
        status = self._status_after(self._ring, self._slot)
        if raise_on_divergence:
            self._raise_if_diverged(status, 1)
        return status

    def get_state(self) -> State:
        """The current state of the fast path (copies)."""
        if self._pose is None:
            raise RuntimeError("call reset() before get_state()")
        return self._read_state(self._ring, self._slot, self._pose.clone())

    def collider_poses(self) -> torch.Tensor:
        """(B, K, 7) current collider poses of the fast path (a copy)."""
        if self._pose is None:
            raise RuntimeError("call reset() before collider_poses()")
        return self._pose.clone()

    def positions(self) -> torch.Tensor:
        """(B, N, 3) current positions of the fast path."""
        return self._read(self._ring.x, self._slot, (3,))

    # ------------------------------------------------------------------ differentiable path
    def rollout(
        self,
        state: State,
        control: torch.Tensor,
        params: torch.Tensor | None = None,
        record: str | tuple[int, ...] | list[int] = "final",
        checkpoint_every: int | None = None,
    ) -> Rollout:
        """Run T control steps from ``state``; differentiable when any input requires grad.

        Args:
            state: initial State (x and v may require grad).
            control: (T, B, K, 6) collider velocities per step.
            params: (B, M, 5) material parameters (default: the Model's).
            record: "final", "all", or control steps (1-based) whose state is returned.
            checkpoint_every: substeps between stored states in the forward pass (default
                ceil(sqrt(T * substeps))).

        Returns:
            A :class:`Rollout`.
        """
        from engine.autograd import RolloutFunction

        self._check_state(state)
        control = torch.as_tensor(control)
        self._check_control(control)
        T = int(control.shape[0])
        if T < 1:
            raise ValueError("control must have at least one step")
        params = self.default_params() if params is None else params
        self._check_params(params)
        if record == "final":
            steps = (T,)
        elif record == "all":
            steps = tuple(range(1, T + 1))
        else:
            steps = tuple(sorted({int(t) for t in record}))
            if not steps or steps[0] < 1 or steps[-1] > T:
                raise ValueError(f"record steps must lie in [1, {T}], got {record!r}")
        n_sub = T * self.config.substeps
        every = checkpoint_every or math.ceil(math.sqrt(n_sub))
        if every < 1:
            raise ValueError(f"checkpoint_every must be >= 1, got {checkpoint_every!r}")
        plan = _Plan(T, self.config.substeps, steps, min(every, n_sub))
        pose, vel = self._collider_trajectory(state.collider_pose.to(self.dtype), control.to(self.dtype))
        inputs = (state.x, state.v, params, pose, vel)
        inputs = tuple(t.to(self.dtype) for t in inputs)
        extra = (state.C.detach(), state.F.detach(), state.J.detach())
        if torch.is_grad_enabled() and any(t.requires_grad for t in inputs):
            x_rec, v_rec, C, F, J = RolloutFunction.apply(self, plan, extra, *inputs)
        else:
            with torch.no_grad():
                x_rec, v_rec, C, F, J = self.forward(plan, extra, *inputs, keep_checkpoints=False)[:5]
        final = State(x=x_rec[-1], v=v_rec[-1], C=C, F=F, J=J, collider_pose=pose[-1, :, : self.n_colliders])
        if steps[-1] != T:
            final = None
        return Rollout(steps=steps, x=x_rec, v=v_rec, final=final)

    def _replay_buffers(self, plan: _Plan) -> tuple[_ParticleBuffers, list[_Grids]]:
        """The tape of a checkpoint segment's every + 1 states, with gradients (the adjoint works
        on it in place: copying each state into a separate adjoint buffer took ~10% of the
        backward), and the grid sets kept for its first substeps (as many as grid_tape_mb holds)."""
        B, N = self.batch_size, self.n_particles
        if self._tape is None or self._tape.slots < plan.every + 1:
            self._tape = None  # free the old tape before allocating a bigger one
            self._tape_owner = None
            self._tape = _ParticleBuffers(plan.every + 1, B, N, needs_grad=True)
        n_stored = min(plan.every, int(self.grid_tape_mb * 2**20 // self._grids_bytes()))
        while len(self._grid_tape) < n_stored:
            n, K = self.config.grid_res, self.n_colliders
            self._grid_tape.append(_Grids.allocate(K, B, N, n, needs_grad=False, v_grad=K > 0))
        return self._tape, self._grid_tape[:n_stored]

    def _replay_substep(self, tape: _ParticleBuffers, grid_tape: list[_Grids], i: int, g: int, ctrl: _Control) -> None:
        """Substep g of a segment on the tape (slot i -> i + 1), keeping its grids if the grid
        tape has room for them."""
        if i < len(grid_tape):
            self._substep(tape, i, i + 1, g, ctrl, grid_tape[i], keep=True)
        else:
            self._substep(tape, i, i + 1, g, ctrl)

    def forward(self, plan: _Plan, extra, x0, v0, params, pose, vel, keep_checkpoints: bool):
        """Forward pass of a rollout (used by RolloutFunction); returns recorded x, v, the final
        C, F, J and, if asked, the checkpoint buffers."""
        self._load_params(params)
        ctrl = self._make_control(pose, vel, needs_grad=False)
        state0 = State(x=x0, v=v0, C=extra[0], F=extra[1], J=extra[2], collider_pose=pose[0])
        ring = self._ring
        self._load_state(state0, ring, 0)
        n_ckpt = math.ceil(plan.n_sub / plan.every)
        ckpt = _ParticleBuffers(n_ckpt, self.batch_size, self.n_particles, False) if keep_checkpoints else None
        record = plan.record_index()
        R = len(plan.record_steps)
        B, N = self.batch_size, self.n_particles
        x_rec = torch.empty(R, B, N, 3, dtype=self.dtype)
        v_rec = torch.empty(R, B, N, 3, dtype=self.dtype)
        # With checkpoints, the last segment runs as the backward would replay it (on the tape,
        # keeping its grids), so the backward starts with that segment's adjoint.
        last_s0 = (n_ckpt - 1) * plan.every
        if ckpt is not None:
            tape, grid_tape = self._replay_buffers(plan)
            self._tape_owner = weakref.ref(ckpt)
        for s in range(plan.n_sub):
            a, b = s % 2, (s + 1) % 2
            if ckpt is not None and s % plan.every == 0:
                ring.copy_slot_to(a, ckpt, s // plan.every)
            buf = ring
            if ckpt is not None and s >= last_s0:
                if s == last_s0:
                    ring.copy_slot_to(a, tape, 0)
                buf, a, b = tape, s - last_s0, s - last_s0 + 1
                self._replay_substep(tape, grid_tape, a, s, ctrl)
            else:
                self._substep(ring, a, b, s, ctrl)
            if (s + 1) % plan.substeps == 0:
                self._raise_if_diverged(self._status_after(buf, b), (s + 1) // plan.substeps)
            if s + 1 in record:
                r = record[s + 1]
                x_rec[r] = self._read(buf.x, b, (3,))
                v_rec[r] = self._read(buf.v, b, (3,))
        last = plan.n_sub % 2
        if ckpt is not None:
            tape.copy_slot_to(plan.n_sub - last_s0, ring, last)
        C = self._read(ring.C, last, (3, 3))
        F = self._read(ring.F, last, (3, 3))
        J = self._read(ring.J, last, ())
        self._slot, self._pose = last, pose[-1, :, : self.n_colliders].detach().clone()
        self._loaded_params = params.detach().clone()
        return x_rec, v_rec, C, F, J, ckpt

    def backward(self, plan: _Plan, ckpt: _ParticleBuffers, params, pose, vel, grad_x, grad_v, need_params=True):
        """Adjoint of :meth:`forward`: returns gradients w.r.t. x0, v0, params (None unless
        ``need_params``: the density part is a separate reduction), pose, vel."""
        self._load_params(params)
        self.params.grad.fill(0)
        ctrl = self._make_control(pose, vel, needs_grad=True)
        ctrl.zero_grad()
        B, N = self.batch_size, self.n_particles
        # The forward left the last segment on the tape unless another rollout or backward has
        # used the tape since.
        last_segment_kept = self._tape_owner is not None and self._tape_owner() is ckpt
        self._tape_owner = None
        tape, grid_tape = self._replay_buffers(plan)
        n_stored = len(grid_tape)
        for grids in [self._grids, *grid_tape]:  # then kept zero by grid_update_adjoint
            mpm.zero_array(self._v_grad(grids))
        record = plan.record_index()
        dt = self.dtype
        grad_x = torch.zeros(len(plan.record_steps), B, N, 3, dtype=dt) if grad_x is None else grad_x.to(dt)
        grad_v = torch.zeros(len(plan.record_steps), B, N, 3, dtype=dt) if grad_v is None else grad_v.to(dt)
        n_seg = math.ceil(plan.n_sub / plan.every)
        for k in reversed(range(n_seg)):
            s0, s1 = k * plan.every, min((k + 1) * plan.every, plan.n_sub)
            # The adjoint of the segment's final state: zero at the rollout's end, else what the
            # later segment accumulated into its first slot.
            if k == n_seg - 1:
                tape.zero_grad_slot(s1 - s0)
            else:
                tape.copy_grad_slot(0, s1 - s0)
            if not (k == n_seg - 1 and last_segment_kept):
                ckpt.copy_slot_to(k, tape, 0)
                for s in range(s0, s1 - 1):
                    self._replay_substep(tape, grid_tape, s - s0, s, ctrl)
                if s1 - s0 <= n_stored:
                    self._replay_substep(tape, grid_tape, s1 - 1 - s0, s1 - 1, ctrl)
            for s in reversed(range(s0, s1)):
                i = s - s0
                if s + 1 in record:
                    r = record[s + 1]
                    add_vec3 = mpm.transfers((3,))[2]
                    add_vec3(grad_x[r].contiguous(), tape.x.grad, i + 1)
                    add_vec3(grad_v[r].contiguous(), tape.v.grad, i + 1)
                if self._accumulating_stress_adjoint:
                    tape.zero_grad_slot(i)
                # Without stored grids the recomputation writes slot i + 1 again, to the same bits.
                self._substep_backward(tape, i, i + 1, s, ctrl, grid_tape[i] if i < n_stored else None, need_params)
        g_x0 = self._read(tape.x.grad, 0, (3,))
        g_v0 = self._read(tape.v.grad, 0, (3,))
        g_params = torch.as_tensor(self.params.grad.to_numpy(), dtype=dt) if need_params else None
        g_pos = torch.as_tensor(ctrl.pos.grad.to_numpy(), dtype=dt)
        g_quat = torch.as_tensor(ctrl.quat.grad.to_numpy(), dtype=dt)
        g_lin = torch.as_tensor(ctrl.lin.grad.to_numpy(), dtype=dt)
        g_ang = torch.as_tensor(ctrl.ang.grad.to_numpy(), dtype=dt)
        K = self.n_colliders
        g_pose = torch.cat([g_pos, g_quat], dim=-1)[:, :, :K] if K else None
        g_vel = torch.cat([g_lin, g_ang], dim=-1)[:, :, :K] if K else None
        return g_x0, g_v0, g_params, g_pose, g_vel
