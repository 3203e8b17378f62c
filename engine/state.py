"""Simulation data, split the way Warp splits it (DESIGN.md):

* :class:`Model` - static data of a scene: particle rest volumes, material ids, rigid-body
  membership, colliders and their shapes. Built once by :class:`engine.scene.SceneBuilder`.
* :class:`State` - what changes every step, with a leading batch axis B: one part per solver
  with state (:class:`ParticleState` for MLS-MPM: positions, velocities, APIC matrices,
  deformation measures) and the collider poses.
* Control - what the user drives: collider velocities, a tensor ``(T, B, K, 6)`` (linear m/s then
  angular rad/s, world frame) held constant over each step's substeps.

Material parameters live in a differentiable table ``params (B, M, 5)`` (materials.PARAM_NAMES).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from engine.config import SimConfig
from engine.materials import Material


@dataclass(frozen=True)
class Model:
    """Static scene data (numpy, float64 / int32).

    Attributes:
        config: solver settings.
        materials: the material table; ``material_id`` indexes it.
        x0: (N, 3) initial particle positions [m].
        v0: (N, 3) initial particle velocities [m/s].
        material_id: (N,) int32 index into ``materials``.
        volume: (N,) particle rest volumes V0 [m^3]; mass = V0 * density.
        body_id: (N,) int32 rigid body of each particle, -1 for none.
        rest_offset: (N, 3) rest position relative to the body's centroid (zero if not rigid) [m].
        body_volume: (nb,) total rest volume per body [m^3].
        body_Aqq_inv: (nb, 3, 3) inverse of the rest moment matrix sum V q q^T per body.
        colliders: kinematic colliders (engine.colliders.Collider).
        sensors: FEM elastomer sensors (engine.solvers.fem.Sensor), each mounted on a collider.
        bodies: free 6-DoF rigid bodies (engine.solvers.rigid.RigidBody), two-way coupled.
        J0: (N,) initial volume ratio J of every particle (None: all 1), e.g. a liquid's
            hydrostatic start (engine.hydrostatic).
    """

    config: SimConfig
    materials: tuple[Material, ...]
    x0: np.ndarray
    v0: np.ndarray
    material_id: np.ndarray
    volume: np.ndarray
    body_id: np.ndarray
    rest_offset: np.ndarray
    body_volume: np.ndarray
    body_Aqq_inv: np.ndarray
    colliders: tuple = ()
    sensors: tuple = ()
    bodies: tuple = ()
    J0: np.ndarray | None = None

    @property
    def n_particles(self) -> int:
        return int(self.x0.shape[0])

    @property
    def n_bodies(self) -> int:
        return int(self.body_volume.shape[0])

    @property
    def n_rigid(self) -> int:
        """Free 6-DoF rigid bodies (:attr:`bodies`; shape-matched particle bodies are
        :attr:`n_bodies`)."""
        return len(self.bodies)

    @property
    def n_colliders(self) -> int:
        return len(self.colliders)

    @property
    def n_sensor_nodes(self) -> int:
        return int(sum(len(s.mesh.nodes) for s in self.sensors))

    def default_params(self) -> np.ndarray:
        """(M, 5) parameter table of the model's materials."""
        return np.stack([m.as_row() for m in self.materials])

    def particle_mass(self, params: np.ndarray | None = None) -> np.ndarray:
        """(N,) particle masses [kg] for a (M, 5) parameter table (default: the materials')."""
        table = self.default_params() if params is None else np.asarray(params)
        return self.volume * table[self.material_id, 2]


@dataclass
class ParticleState:
    """State of the MLS-MPM particles of B scenes (torch tensors, simulation precision).

    Attributes:
        x: (B, N, 3) positions [m].
        v: (B, N, 3) velocities [m/s].
        C: (B, N, 3, 3) APIC affine velocity matrices [1/s].
        F: (B, N, 3, 3) deformation measure (F for elastic, b_bar_e for plastic, I otherwise).
        J: (B, N) volume ratio.
    """

    x: torch.Tensor
    v: torch.Tensor
    C: torch.Tensor
    F: torch.Tensor
    J: torch.Tensor

    FIELDS = ("x", "v", "C", "F", "J")


@dataclass
class SensorState:
    """State of the FEM sensor nodes of B scenes (all sensors' nodes concatenated, world frame).

    Attributes:
        x: (B, n, 3) node positions [m].
        v: (B, n, 3) node velocities [m/s].
        f: (B, n, 3) contact force on each node during the last substep [N].
    """

    x: torch.Tensor
    v: torch.Tensor
    f: torch.Tensor

    FIELDS = ("x", "v", "f")


class State:
    """Dynamic state of B scenes: one part per solver that has state, plus the collider poses.

    Parts: ``particles`` (:class:`ParticleState`, the MLS-MPM solver's), ``sensors``
    (:class:`SensorState`, the FEM solver's; None in a scene without sensors) and ``bodies``
    (the rigid bodies', (B, nb, 13): shape-frame position, unit quaternion (w, x, y, z), linear
    and angular (world frame) velocity of the centre of mass; None without rigid bodies). ``x, v, C, F, J``
    read and write the particle part's fields (``state.x`` is ``state.particles.x``), the
    common case.

    Attributes:
        particles: the MPM particles' state.
        collider_pose: (B, K, 7) collider position [m] and unit quaternion (w, x, y, z).
        sensors: the FEM sensor nodes' state, or None.
        bodies: (B, nb, 13) rigid-body state, or None.
    """

    FIELDS = (*ParticleState.FIELDS, "collider_pose")

    def __init__(
        self, x, v, C, F, J, collider_pose, sensors: SensorState | None = None, bodies: torch.Tensor | None = None
    ):
        self.particles = ParticleState(x, v, C, F, J)
        self.collider_pose = collider_pose
        self.sensors = sensors
        self.bodies = bodies

    @classmethod
    def from_parts(
        cls,
        particles: ParticleState,
        collider_pose: torch.Tensor,
        sensors: SensorState | None = None,
        bodies: torch.Tensor | None = None,
    ) -> State:
        return cls(*(getattr(particles, f) for f in ParticleState.FIELDS), collider_pose, sensors, bodies)

    @property
    def batch_size(self) -> int:
        return int(self.collider_pose.shape[0])

    def map(self, fn) -> State:
        """A new State with ``fn`` applied to every tensor."""
        sensors = (
            None if self.sensors is None else SensorState(*(fn(getattr(self.sensors, f)) for f in SensorState.FIELDS))
        )
        bodies = None if self.bodies is None else fn(self.bodies)
        return State(*(fn(getattr(self, f)) for f in self.FIELDS), sensors=sensors, bodies=bodies)

    def detach(self) -> State:
        return self.map(torch.Tensor.detach)

    def clone(self) -> State:
        return self.map(torch.Tensor.clone)

    def __repr__(self) -> str:
        shapes = ", ".join(f"{f}={tuple(getattr(self, f).shape)}" for f in self.FIELDS)
        return f"State({shapes})"


def _particle_field(name: str) -> property:
    def get(self):
        return getattr(self.particles, name)

    def set(self, value):
        setattr(self.particles, name, value)

    return property(get, set, doc=f"``particles.{name}``")


for _name in ParticleState.FIELDS:
    setattr(State, _name, _particle_field(_name))


class SimulationDiverged(RuntimeError):
    """A simulation produced NaN/Inf or runaway velocities.

    Attributes:
        step: the control step (1-based) after which the blow-up was detected.
        batch: indices of the diverged scenes in the batch.
        reason: "non-finite" or "runaway velocity".
    """

    def __init__(self, step: int, batch: list[int], reason: str):
        self.step, self.batch, self.reason = step, batch, reason
        super().__init__(f"simulation diverged ({reason}) at step {step} in batch entries {batch}")
