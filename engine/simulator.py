"""Simulator: the driver that orders the solvers and the coupling in a substep, forward and
backward, and checkpoints rollouts. It contains no physics of its own.

* Parts: the MLS-MPM solver (engine/solvers/mpm.py), the collider coupling (engine/coupling/colliders.py)
  and, when the scene has them, the FEM sensors and their contact (engine/solvers/fem.py,
  engine/coupling/sensors.py), free rigid bodies (engine/solvers/rigid.py), shape-matched
  particle bodies (engine/solvers/shape_matching.py) and, with ``SimConfig.liquid_model =
  "projected"``, the liquid's pressure projection (engine/solvers/pressure.py). Each
  contributes stages to the phases of a substep (engine/solvers/base.py); a substep runs the
  stages in phase order, its adjoint in the reverse order.
* Fast path (RL): :meth:`Simulator.reset` / :meth:`Simulator.step` advance B scenes in place on a
  two-slot ring buffer; no tape, no gradient buffers.
* Differentiable path: :meth:`Simulator.rollout` runs T control steps and returns recorded
  positions/velocities as torch tensors connected to ``x0, v0, params`` and the collider control
  through one ``torch.autograd.Function`` (engine/autograd.py).
* Checkpointing (Griewank's two-level scheme, as Warp's ``example_fluid_checkpoint``): the forward
  pass saves every part's state every ``every`` substeps (default ceil(sqrt(n))); backward
  loads one segment at a time onto a tape of ``every + 1`` states with their gradients, keeping
  each replayed substep's intermediates (the MPM grids; up to ``grid_tape_mb``), and runs the
  stages' adjoints substep by substep on the tape. The forward runs its last segment on the tape
  already, so that segment is not replayed. Memory is O((n/every + every) * (state + grids))
  instead of O(n * state); time is one extra forward pass (less its last segment) plus the
  adjoints.
* Validation: inputs are checked before anything runs (``ValueError`` naming the field); blow-ups
  are detected after every control step (NaN/Inf or speed above the CFL speed) and raise
  :class:`engine.state.SimulationDiverged` naming the step and batch entries.
"""

from __future__ import annotations

import math
import weakref
from dataclasses import dataclass, replace

import numpy as np
import torch

from engine import arrays, runtime
from engine.coupling import ColliderCoupling, SensorContact
from engine.materials import N_PARAMS, PARAM_NAMES
from engine.scene import check_stability
from engine.solvers.base import PHASES, SlotState, Stage, Substep
from engine.solvers.fem import N_SENSOR_PARAMS, FEMSolver, check_elastomer, check_sensor_dt
from engine.solvers.mpm import MPMSolver
from engine.solvers.pressure import PressureProjection, equation_of_state_mask
from engine.solvers.rigid import RigidSolver
from engine.solvers.shape_matching import ShapeMatchingSolver
from engine.state import Model, ParticleState, SensorState, SimulationDiverged, State


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
        final: the full final state (x, v, collider poses and sensor node positions
            differentiable; C, F, J and sensor velocities detached), or None when the last control
            step is not among the recorded ones.
        sensor_x: (R, B, n, 3) FEM sensor node positions at those steps [m] (differentiable;
            n = 0 without sensors).
        sensor_f: (R, B, n, 3) contact force on each sensor node in the last substep of those
            steps [N] (differentiable).
        collider_pose: (R, B, K, 7) collider poses at those steps (differentiable).
        bodies: (R, B, nb, 13) rigid-body state at those steps (differentiable; nb = 0 without
            rigid bodies): shape-frame position, quaternion, linear and angular velocity.
    """

    steps: tuple[int, ...]
    x: torch.Tensor
    v: torch.Tensor
    final: State | None
    sensor_x: torch.Tensor
    sensor_f: torch.Tensor
    collider_pose: torch.Tensor
    bodies: torch.Tensor


class Simulator:
    """B independent copies of one Model stepped in single kernel launches.

    Attributes:
        mpm: the MLS-MPM solver (:class:`engine.solvers.mpm.MPMSolver`).
        colliders: the collider coupling (:class:`engine.coupling.ColliderCoupling`).
        parts: every solver and coupling, in the order their stages run within a phase.
        stages: one substep's stages in forward order.
        ring: the fast path's two-slot state (:class:`engine.solvers.base.SlotState`).
    """

    def __init__(self, model: Model, batch_size: int = 1, scatter: str = "auto", grid_tape_mb: float = 1024.0):
        """B copies of ``model``.

        Args:
            scatter: the particle-to-grid scatter kernels: "atomic" (atomic adds), "slabs"
                (particles binned into slabs, plain adds; see engine/solvers/mpm_kernels.py) or
                "auto" (slabs on the CPU for at least ``SLAB_MIN_PARTICLES`` particles in all).
            grid_tape_mb: memory the backward pass may spend keeping the intermediates (grids)
                of the replayed substeps of a checkpoint segment; substeps beyond it have their
                scatter and grid update recomputed. 0 recomputes all.
        """
        from engine.solvers.mpm_kernels import SLAB_MIN_PARTICLES

        runtime.require()
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
        if scatter not in ("auto", "atomic", "slabs"):
            raise ValueError(f"scatter must be 'auto', 'atomic' or 'slabs', got {scatter!r}")
        if not grid_tape_mb >= 0:
            raise ValueError(f"grid_tape_mb must be >= 0, got {grid_tape_mb!r}")
        self.grid_tape_mb = float(grid_tape_mb)
        self.model = model
        self.config = cfg = model.config
        self.batch_size = B = batch_size
        self.n_particles = model.n_particles
        self.n_colliders = K = model.n_colliders
        self.n_bodies = nb = model.n_bodies
        self.n_rigid = nr = model.n_rigid
        self._lo = cfg.boundary_cells * cfg.dx
        self._hi = cfg.domain_size - cfg.boundary_cells * cfg.dx
        if scatter == "auto":
            scatter = "slabs" if runtime.on_cpu() and B * model.n_particles >= SLAB_MIN_PARTICLES else "atomic"

        # Grid velocity conditions between the transfers: one per collider, one for the sensors,
        # one for the rigid bodies; particle projections: one per collider, one for the bodies.
        n_sensor_sets = 1 if model.sensors else 0
        n_body_sets = 1 if nr else 0
        # The projected liquid mode: one more grid velocity set, the last condition.
        projected = cfg.liquid_model == "projected"
        if projected and nr:
            raise ValueError(
                "SimConfig.liquid_model='projected' does not couple free rigid bodies (engine/solvers/rigid.py); "
                "use liquid_model='weakly_compressible' for scenes with rigid bodies"
            )
        n_conditions = K + n_sensor_sets + n_body_sets + int(projected)
        self.mpm = MPMSolver(
            model, B, scatter, n_conditions, K + n_body_sets, staged_x=bool(K or nb or nr), staged_v=bool(nb),
            grid_mass_read_later=n_conditions > 0, mass_adjoint_from_later=bool(model.sensors or nr),
        )  # fmt: skip
        self.colliders = ColliderCoupling(model, B, self.mpm)
        self.parts = [self.mpm, self.colliders]
        self.rigid: RigidSolver | None = None
        if nr:
            self.rigid = RigidSolver(model, B, self.mpm, self.colliders, condition=K + n_sensor_sets, projection=K)
        self.fem: FEMSolver | None = None
        if model.sensors:
            # Contact force rows: one per collider, one for MPM material, one for sensor pairs,
            # one for rigid bodies.
            rows = K + 1 + (len(model.sensors) > 1) + bool(nr)
            self.fem = FEMSolver(model, B, n_contact_rows=rows)
            self.parts += [self.fem, SensorContact(model, self.colliders, self.fem, self.mpm, self.rigid)]
        if self.rigid is not None:  # after the sensors: its exchange adds their reaction
            self.parts.append(self.rigid)
        self.pressure: PressureProjection | None = None
        self._param_mask = None  # the material table the MPM stress sees: without liquids' E when projected
        if projected:
            self.pressure = PressureProjection(model, B, self.mpm, condition=K + n_sensor_sets)
            self.parts.append(self.pressure)
            self._param_mask = equation_of_state_mask(model)
        if nb:
            self.parts.append(ShapeMatchingSolver(model, B, self.mpm))
        self._accumulating = [part.name for part in self.parts if getattr(part, "accumulates_adjoint", False)]
        stages = [st for part in self.parts for st in part.stages()]
        self.stages: list[Stage] = [st for phase in PHASES for st in stages if st.phase == phase]
        self._unkept = [st for st in self.stages if not st.kept]
        self._replay_unkept = any(st.replay for st in self.stages)

        self.ring = self._allocate(2, needs_grad=False)
        self._tape: SlotState | None = None
        # The checkpoints of the rollout whose last segment is on the tape (a weak reference: the
        # tape must not keep a discarded rollout's checkpoints alive).
        self._tape_owner: weakref.ref | None = None
        self._kept_tape: list[dict] = []
        self._slot = 0
        self._pose: torch.Tensor | None = None
        self._loaded_params: torch.Tensor | None = None
        self._loaded_sensor_params: torch.Tensor | None = None

    # ------------------------------------------------------------------ helpers
    @property
    def dtype(self) -> torch.dtype:
        return runtime.torch_dtype()

    def _allocate(self, slots: int, needs_grad: bool) -> SlotState:
        parts = {part.name: part.allocate(slots, needs_grad) for part in self.parts}
        return SlotState({name: buf for name, buf in parts.items() if buf is not None})

    @property
    def ring_slot(self) -> int:
        """The slot of :attr:`ring` that holds the fast path's current state."""
        return self._slot

    def _mpm_params(self, params: torch.Tensor) -> torch.Tensor:
        """The (B, M, 5) material table the MPM stress reads (liquids without E when projected)."""
        return params if self._param_mask is None else params * self._param_mask

    def kept_bytes(self) -> int:
        """Bytes the backward's tape keeps per replayed substep (the MPM grids)."""
        return sum(part.kept_bytes() for part in self.parts)

    def initial_state(self) -> State:
        """The Model's initial state replicated over the batch (C = 0, F = I, J = 1)."""
        B, N, dt = self.batch_size, self.n_particles, self.dtype
        x = torch.as_tensor(self.model.x0, dtype=dt).expand(B, N, 3).clone()
        v = torch.as_tensor(self.model.v0, dtype=dt).expand(B, N, 3).clone()
        pose = torch.zeros(B, self.n_colliders, 7, dtype=dt)
        for c, collider in enumerate(self.model.colliders):
            pose[:, c] = torch.as_tensor(np.asarray(collider.pose, dtype=np.float64), dtype=dt)
        sensors = None
        if self.fem is not None:
            nodes = self.fem.initial_nodes(pose)
            sensors = SensorState(nodes, torch.zeros_like(nodes), torch.zeros_like(nodes))
        bodies = None if self.rigid is None else self.rigid.initial()
        return State(
            x=x,
            v=v,
            C=torch.zeros(B, N, 3, 3, dtype=dt),
            F=torch.eye(3, dtype=dt).expand(B, N, 3, 3).clone(),
            J=torch.as_tensor(np.ones(N) if self.model.J0 is None else self.model.J0, dtype=dt).expand(B, N).clone(),
            collider_pose=pose,
            sensors=sensors,
            bodies=bodies,
        )

    def default_params(self) -> torch.Tensor:
        """(B, M, 5) material parameter table of the Model's materials."""
        table = torch.as_tensor(self.model.default_params(), dtype=self.dtype)
        return table.expand(self.batch_size, *table.shape).clone()

    def default_body_params(self) -> torch.Tensor:
        """(B, nb, 1) rigid-body densities [kg/m^3]; nb may be 0."""
        if self.rigid is None:
            return torch.zeros(self.batch_size, 0, 1, dtype=self.dtype)
        return self.rigid.default_params()

    def default_sensor_params(self) -> torch.Tensor:
        """(B, S, 8) sensor parameter table (engine.solvers.fem.SENSOR_PARAM_NAMES); S may be 0."""
        if self.fem is None:
            return torch.zeros(self.batch_size, 0, N_SENSOR_PARAMS, dtype=self.dtype)
        return self.fem.default_params()

    # ------------------------------------------------------------------ validation
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

    def _check_sensor_params(self, params: torch.Tensor) -> torch.Tensor:
        expected = (self.batch_size, len(self.model.sensors), N_SENSOR_PARAMS)
        if tuple(params.shape) != expected:
            raise ValueError(f"sensor_params must have shape {expected} (B, sensors, 8), got {tuple(params.shape)}")
        values = params.detach().cpu().double().numpy()
        if not np.isfinite(values).all():
            raise ValueError("sensor_params contains NaN/Inf")
        for b in range(values.shape[0]):
            for k, sensor in enumerate(self.model.sensors):
                E, nu, rho, damping = (float(v) for v in values[b, k, :4])
                check_elastomer(E, nu, rho, damping, f"sensor_params[{b}, {k}] ({sensor.name})")
                if (values[b, k, 4:] < 0).any():
                    raise ValueError(f"sensor_params[{b}, {k}]: contact parameters k_n, k_d, k_t, mu must be >= 0")
                check_sensor_dt(sensor, self.config.dt, values[b, k], f"sensor_params[{b}, {k}] ({sensor.name})")
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
        if self.fem is not None:
            if state.sensors is None:
                raise ValueError("state.sensors is None but the scene has sensors")
            for name in SensorState.FIELDS:
                value = getattr(state.sensors, name)
                if tuple(value.shape) != (B, self.fem.n_nodes, 3):
                    raise ValueError(
                        f"state.sensors.{name} must have shape {(B, self.fem.n_nodes, 3)}, got {tuple(value.shape)}"
                    )
                if not torch.isfinite(value if rows is None else value[rows]).all():
                    raise ValueError(f"state.sensors.{name} contains NaN/Inf")
        if self.rigid is not None:
            if state.bodies is None or tuple(state.bodies.shape) != (B, self.n_rigid, 13):
                got = None if state.bodies is None else tuple(state.bodies.shape)
                raise ValueError(f"state.bodies must have shape {(B, self.n_rigid, 13)}, got {got}")
            if not torch.isfinite(state.bodies if rows is None else state.bodies[rows]).all():
                raise ValueError("state.bodies contains NaN/Inf")
        x = state.x.detach() if rows is None else state.x.detach()[rows]
        if ((x < self._lo) | (x > self._hi)).any():
            raise ValueError(f"state.x: particles outside the domain interior [{self._lo:.4g}, {self._hi:.4g}]^3")

    @staticmethod
    def _raise_if_diverged(status: np.ndarray, step: int) -> None:
        if status.any():
            bad = np.nonzero(status)[0].tolist()
            reason = "non-finite" if (status == 1).any() else "runaway velocity"
            raise SimulationDiverged(step, bad, reason)

    def _read_state(self, state: SlotState, slot: int, pose: torch.Tensor) -> State:
        sensors = None
        if self.fem is not None:
            nodes = state[self.fem.name]
            sensors = SensorState(*(self.fem.read_array(getattr(nodes, f), slot) for f in SensorState.FIELDS))
        bodies = None if self.rigid is None else self.rigid.read(state[self.rigid.name], slot)
        return State.from_parts(self.mpm.read(state[self.mpm.name], slot), pose, sensors, bodies)

    def _write_state(self, state: State, buffers: SlotState, slot: int) -> None:
        self.mpm.write(state.particles, buffers[self.mpm.name], slot)
        if self.fem is not None:
            self.fem.write(state.sensors, buffers[self.fem.name], slot)
        if self.rigid is not None:
            self.rigid.write(state.bodies, buffers[self.rigid.name], slot)

    def _status(self, buffers: SlotState, slot: int) -> np.ndarray:
        """(B,) worst status over the solvers with a blow-up check (0 ok, 1 non-finite, 2 runaway)."""
        status = self.mpm.status(buffers[self.mpm.name], slot)
        if self.fem is not None:
            status = np.maximum(status, self.fem.status(buffers[self.fem.name], slot))
        if self.rigid is not None:
            status = np.maximum(status, self.rigid.status(buffers[self.rigid.name], slot))
        return status

    # ------------------------------------------------------------------ fast path
    def reset(
        self,
        state: State | None = None,
        params: torch.Tensor | None = None,
        entries: list[int] | None = None,
        sensor_params: torch.Tensor | None = None,
    ) -> None:
        """Load a state (default: the initial state) for stepping with :meth:`step`.

        Args:
            state: (B, ...) state to start from.
            params: (B, M, 5) material parameters (default: the Model's; with ``entries``, the
                current ones are kept unless given).
            entries: restart only these batch entries from ``state``; the others keep their
                current state, which may be a diverged one awaiting its own reset.
            sensor_params: (B, S, 8) sensor parameters (default: the sensors').
        """
        state = self.initial_state() if state is None else state
        if entries is None:
            self._check_state(state)
            self._write_state(state, self.ring, 0)
            self._slot = 0
            self._pose = state.collider_pose.detach().to(self.dtype).clone()
            self.set_params(self.default_params() if params is None else params, sensor_params)
            return
        if self._pose is None:
            raise RuntimeError("call reset() for all entries before restarting some of them")
        rows = sorted({int(e) for e in entries})
        if rows and not 0 <= rows[0] <= rows[-1] < self.batch_size:
            raise ValueError(f"entries must lie in [0, {self.batch_size}), got {entries!r}")
        self._check_state(state, rows)
        merged = self.get_state()
        for name in State.FIELDS:
            getattr(merged, name)[rows] = getattr(state, name).detach().to(self.dtype)[rows]
        if self.fem is not None:
            for name in SensorState.FIELDS:
                getattr(merged.sensors, name)[rows] = getattr(state.sensors, name).detach().to(self.dtype)[rows]
        if self.rigid is not None:
            merged.bodies[rows] = state.bodies.detach().to(self.dtype)[rows]
        self._write_state(merged, self.ring, self._slot)
        self._pose = merged.collider_pose
        if params is not None or sensor_params is not None:
            self.set_params(self._loaded_params if params is None else params, sensor_params)

    def set_params(self, params: torch.Tensor, sensor_params: torch.Tensor | None = None) -> None:
        """Set the (B, M, 5) material parameter table (and the (B, S, 8) sensor parameters,
        default: the current ones, else the sensors') used by :meth:`step`."""
        self._loaded_params = self._check_params(params.detach().to(self.dtype))
        self.mpm.load_params(self._mpm_params(self._loaded_params))
        if sensor_params is not None or self._loaded_sensor_params is None:
            table = self.default_sensor_params() if sensor_params is None else sensor_params
            self._loaded_sensor_params = self._check_sensor_params(table.detach().to(self.dtype))
        if self.fem is not None:
            self.fem.load_params(self._loaded_sensor_params)
        if self.rigid is not None:
            self.rigid.load_params(self.rigid.default_params())

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
        self.mpm.load_params(self._mpm_params(self._loaded_params))
        if self.fem is not None:
            self.fem.load_params(self._loaded_sensor_params)
        if self.rigid is not None:
            self.rigid.load_params(self.rigid.default_params())
        pose, vel = self.colliders.trajectory(self._pose, control[None])
        ctrl = self.colliders.control_arrays(pose, vel, needs_grad=False)
        for g in range(self.config.substeps):
            sub = Substep(self.ring, self._slot, 1 - self._slot, g, ctrl)
            for stage in self.stages:
                stage.forward(sub)
            self._slot = 1 - self._slot
        if self.n_colliders:
            self._pose = pose[-1].clone()
        status = self._status(self.ring, self._slot)
        if raise_on_divergence:
            self._raise_if_diverged(status, 1)
        return status

    def get_state(self) -> State:
        """The current state of the fast path (copies)."""
        if self._pose is None:
            raise RuntimeError("call reset() before get_state()")
        return self._read_state(self.ring, self._slot, self._pose.clone())

    def collider_poses(self) -> torch.Tensor:
        """(B, K, 7) current collider poses of the fast path (a copy)."""
        if self._pose is None:
            raise RuntimeError("call reset() before collider_poses()")
        return self._pose.clone()

    def body_state(self) -> torch.Tensor:
        """(B, nb, 13) current rigid-body state of the fast path (pose then twist; nb may be 0)."""
        if self.rigid is None:
            return torch.zeros(self.batch_size, 0, 13, dtype=self.dtype)
        return self.rigid.read(self.ring[self.rigid.name], self._slot)

    def positions(self) -> torch.Tensor:
        """(B, N, 3) current positions of the fast path."""
        return self.mpm.read_array(self.ring[self.mpm.name].x, self._slot, (3,))

    # ------------------------------------------------------------------ differentiable path
    def rollout(
        self,
        state: State,
        control: torch.Tensor,
        params: torch.Tensor | None = None,
        record: str | tuple[int, ...] | list[int] = "final",
        checkpoint_every: int | None = None,
        sensor_params: torch.Tensor | None = None,
        body_params: torch.Tensor | None = None,
    ) -> Rollout:
        """Run T control steps from ``state``; differentiable when any input requires grad.

        Args:
            state: initial State (x and v may require grad; C, F, J and the sensors' part are
                taken as given, without gradient).
            control: (T, B, K, 6) collider velocities per step.
            params: (B, M, 5) material parameters (default: the Model's).
            record: "final", "all", or control steps (1-based) whose state is returned.
            checkpoint_every: substeps between stored states in the forward pass (default
                ceil(sqrt(T * substeps))).
            sensor_params: (B, S, 8) sensor parameters (default: the sensors'; differentiable).
            body_params: (B, nb, 1) rigid-body densities (default: the bodies'; differentiable).

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
        sensor_params = self.default_sensor_params() if sensor_params is None else sensor_params
        self._check_sensor_params(sensor_params)
        body_params = self.default_body_params() if body_params is None else body_params
        if tuple(body_params.shape) != (self.batch_size, self.n_rigid, 1):
            raise ValueError(
                f"body_params must have shape {(self.batch_size, self.n_rigid, 1)} (B, bodies, density), "
                f"got {tuple(body_params.shape)}"
            )
        if not (torch.isfinite(body_params).all() and (body_params > 0).all()):
            raise ValueError("body_params: densities must be finite and > 0")
        bodies0 = state.bodies if state.bodies is not None else torch.zeros(self.batch_size, 0, 13)
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
        pose, vel = self.colliders.trajectory(state.collider_pose.to(self.dtype), control.to(self.dtype))
        inputs = (state.x, state.v, params, pose, vel, sensor_params, bodies0, body_params)
        inputs = tuple(t.to(self.dtype) for t in inputs)
        extra = (state.C.detach(), state.F.detach(), state.J.detach(), state.sensors)
        if torch.is_grad_enabled() and any(t.requires_grad for t in inputs):
            out = RolloutFunction.apply(self, plan, extra, *inputs)
        else:
            with torch.no_grad():
                out = self.forward(plan, extra, *inputs, keep_checkpoints=False)[:9]
        x_rec, v_rec, C, F, J, sx_rec, sf_rec, sv, b_rec = out
        K = self.n_colliders
        rows = [t * self.config.substeps for t in steps]
        final = None
        if steps[-1] == T:
            sensors = None if self.fem is None else SensorState(sx_rec[-1], sv, sf_rec[-1])
            bodies = None if self.rigid is None else b_rec[-1]
            final = State(
                x=x_rec[-1], v=v_rec[-1], C=C, F=F, J=J, collider_pose=pose[-1, :, :K], sensors=sensors, bodies=bodies
            )
        return Rollout(
            steps=steps,
            x=x_rec,
            v=v_rec,
            final=final,
            sensor_x=sx_rec,
            sensor_f=sf_rec,
            collider_pose=pose[rows][:, :, :K],
            bodies=b_rec,
        )

    def _replay_buffers(self, plan: _Plan) -> tuple[SlotState, list[dict]]:
        """The tape of a checkpoint segment's every + 1 states, with gradients (the adjoint works
        on it in place), and the intermediates kept for its first substeps (as many as
        grid_tape_mb holds)."""
        if self._tape is None or self._tape.slots < plan.every + 1:
            self._tape = None  # free the old tape before allocating a bigger one
            self._tape_owner = None
            self._tape = self._allocate(plan.every + 1, needs_grad=True)
        n_kept = min(plan.every, int(self.grid_tape_mb * 2**20 // self.kept_bytes()))
        while len(self._kept_tape) < n_kept:
            self._kept_tape.append({part.name: part.allocate_kept() for part in self.parts})
        return self._tape, self._kept_tape[:n_kept]

    def _substep(self, sub: Substep) -> None:
        for stage in self.stages:
            stage.forward(sub)

    def forward(
        self, plan: _Plan, extra, x0, v0, params, pose, vel, sensor_params, bodies0, body_params, keep_checkpoints: bool
    ):
        """Forward pass of a rollout (used by RolloutFunction); returns recorded x, v, the final
        C, F, J, recorded sensor node positions and contact forces, the final sensor node
        velocities, the recorded rigid-body states and, if asked, the checkpoints."""
        mpm, fem, rigid = self.mpm, self.fem, self.rigid
        mpm.load_params(self._mpm_params(params))
        ctrl = self.colliders.control_arrays(pose, vel, needs_grad=False)
        ring = self.ring
        mpm.write(ParticleState(x0, v0, *extra[:3]), ring[mpm.name], 0)
        if fem is not None:
            fem.load_params(sensor_params)
            fem.write(extra[3], ring[fem.name], 0)
        if rigid is not None:
            rigid.load_params(body_params)
            rigid.write(bodies0, ring[rigid.name], 0)
        n_ckpt = math.ceil(plan.n_sub / plan.every)
        ckpt = self._allocate(n_ckpt, needs_grad=False) if keep_checkpoints else None
        record = plan.record_index()
        R = len(plan.record_steps)
        B, N = self.batch_size, self.n_particles
        x_rec = torch.empty(R, B, N, 3, dtype=self.dtype)
        v_rec = torch.empty(R, B, N, 3, dtype=self.dtype)
        n_nodes = 0 if fem is None else fem.n_nodes
        sx_rec = torch.zeros(R, B, n_nodes, 3, dtype=self.dtype)
        sf_rec = torch.zeros(R, B, n_nodes, 3, dtype=self.dtype)
        b_rec = torch.zeros(R, B, self.n_rigid, 13, dtype=self.dtype)
        # With checkpoints, the last segment runs as the backward would replay it (on the tape,
        # keeping its intermediates), so the backward starts with that segment's adjoint.
        last_s0 = (n_ckpt - 1) * plan.every
        if ckpt is not None:
            tape, kept = self._replay_buffers(plan)
            self._tape_owner = weakref.ref(ckpt)
        for s in range(plan.n_sub):
            a, b = s % 2, (s + 1) % 2
            if ckpt is not None and s % plan.every == 0:
                ring.copy_slot_to(a, ckpt, s // plan.every)  # save
            if ckpt is not None and s >= last_s0:
                if s == last_s0:
                    ring.copy_slot_to(a, tape, 0)
                buf, i = tape, s - last_s0
                sub = Substep(tape, i, i + 1, s, ctrl, kept[i] if i < len(kept) else None, keep=i < len(kept))
                b = i + 1
            else:
                buf, sub = ring, Substep(ring, a, b, s, ctrl)
            self._substep(sub)
            if (s + 1) % plan.substeps == 0:
                self._raise_if_diverged(self._status(buf, b), (s + 1) // plan.substeps)
            if s + 1 in record:
                r = record[s + 1]
                x_rec[r] = mpm.read_array(buf[mpm.name].x, b, (3,))
                v_rec[r] = mpm.read_array(buf[mpm.name].v, b, (3,))
                if fem is not None:
                    sx_rec[r] = fem.read_array(buf[fem.name].x, b)
                    sf_rec[r] = fem.read_array(buf[fem.name].f, b)
                if rigid is not None:
                    b_rec[r] = rigid.read(buf[rigid.name], b)
        last = plan.n_sub % 2
        if ckpt is not None:
            tape.copy_slot_to(plan.n_sub - last_s0, ring, last)
        particles = ring[mpm.name]
        C = mpm.read_array(particles.C, last, (3, 3))
        F = mpm.read_array(particles.F, last, (3, 3))
        J = mpm.read_array(particles.J, last, ())
        sv = torch.zeros(B, n_nodes, 3, dtype=self.dtype) if fem is None else fem.read_array(ring[fem.name].v, last)
        self._slot, self._pose = last, pose[-1, :, : self.n_colliders].detach().clone()
        self._loaded_params = params.detach().clone()
        self._loaded_sensor_params = sensor_params.detach().clone()
        return x_rec, v_rec, C, F, J, sx_rec, sf_rec, sv, b_rec, ckpt

    def _substep_adjoint(self, sub: Substep) -> None:
        """Adjoint of one substep on the tape (input slot ``sub.s_in``, output ``sub.s_out``):
        restores the forward values the adjoints read (all of them without kept intermediates,
        else the stages that are not kept, if any adjoint needs them), then runs every stage's
        adjoint in reverse order. Slot s_in's primal must hold the substep's input, slot s_out
        the output adjoint (and, with kept intermediates, the output state)."""
        for stage in self.stages:
            stage.prepare_adjoint(sub)
        if sub.kept is None:
            recompute = replace(sub, keep=True)
            for stage in self.stages:
                stage.forward(recompute)
        elif self._replay_unkept:
            for stage in self._unkept:
                stage.forward(sub)
        for stage in reversed(self.stages):
            stage.adjoint(sub)

    def backward(
        self, plan: _Plan, ckpt: SlotState, params, pose, vel, sensor_params, body_params, grads, need_params=True
    ):
        """Adjoint of :meth:`forward`: ``grads`` are the loss's gradients with respect to the
        recorded x, v, sensor node positions, sensor contact forces and rigid-body states (each
        may be None). Returns gradients w.r.t. x0, v0, params (None unless ``need_params``: the
        density part is a separate reduction), pose, vel, sensor_params, the initial rigid-body
        state and body_params."""
        mpm, fem, rigid = self.mpm, self.fem, self.rigid
        mpm.load_params(self._mpm_params(params))
        if fem is not None:
            fem.load_params(sensor_params)
            fem.zero_params_grad()
        if rigid is not None:
            rigid.load_params(body_params)
            rigid.zero_params_grad()
        ctrl = self.colliders.control_arrays(pose, vel, needs_grad=True)
        ctrl.zero_grad()
        B, N = self.batch_size, self.n_particles
        # The forward left the last segment on the tape unless another rollout or backward has
        # used the tape since.
        last_segment_kept = self._tape_owner is not None and self._tape_owner() is ckpt
        self._tape_owner = None
        tape, kept = self._replay_buffers(plan)
        n_kept = len(kept)
        mpm.begin_backward([k[mpm.name] for k in kept])
        record = plan.record_index()
        dt = self.dtype
        R = len(plan.record_steps)
        grad_x, grad_v, grad_sx, grad_sf, grad_b = (None if g is None else g.to(dt).contiguous() for g in grads)
        grad_x = torch.zeros(R, B, N, 3, dtype=dt) if grad_x is None else grad_x
        grad_v = torch.zeros(R, B, N, 3, dtype=dt) if grad_v is None else grad_v
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
                ckpt.copy_slot_to(k, tape, 0)  # load
                for s in range(s0, s1 - 1 if s1 - s0 > n_kept else s1):
                    i = s - s0
                    self._substep(Substep(tape, i, i + 1, s, ctrl, kept[i] if i < n_kept else None, keep=i < n_kept))
            for s in reversed(range(s0, s1)):
                i = s - s0
                if s + 1 in record:
                    r = record[s + 1]
                    mpm.add_output_grad(tape[mpm.name], i + 1, grad_x[r], grad_v[r])
                    if fem is not None:
                        add_vec3 = arrays.transfers((3,))[2]
                        if grad_sx is not None:
                            add_vec3(grad_sx[r].contiguous(), tape[fem.name].x.grad, i + 1)
                        if grad_sf is not None:
                            add_vec3(grad_sf[r].contiguous(), tape[fem.name].f.grad, i + 1)
                    if rigid is not None and grad_b is not None:
                        rigid.write(grad_b[r], tape[rigid.name], i + 1, grad=True)
                for name in self._accumulating:  # their adjoints add into slot i's
                    tape[name].zero_grad_slot(i)
                # Without kept intermediates the recomputation writes slot i + 1 again, to the same bits.
                sub = Substep(tape, i, i + 1, s, ctrl, kept[i] if i < n_kept else None, need_params=need_params)
                self._substep_adjoint(sub)
        g_x0 = mpm.read_array(tape[mpm.name].x.grad, 0, (3,))
        g_v0 = mpm.read_array(tape[mpm.name].v.grad, 0, (3,))
        g_params = mpm.params_grad() if need_params else None
        if g_params is not None and self._param_mask is not None:
            g_params = g_params * self._param_mask
        K = self.n_colliders
        g_pose, g_vel = ctrl.grads()
        g_sensor = fem.params_grad() if fem is not None else None
        g_body0 = g_body_params = None
        if rigid is not None:
            g_body0, g_body_params = rigid.read(tape[rigid.name], 0, grad=True), rigid.params_grad()
        g_pose, g_vel = (g_pose[:, :, :K], g_vel[:, :, :K]) if K else (None, None)
        return g_x0, g_v0, g_params, g_pose, g_vel, g_sensor, g_body0, g_body_params
