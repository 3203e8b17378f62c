"""IceCream (static and dynamic): catch falling ice cream on a moving holder to form a shape.

FluidLab's "Ice Cream" tasks (Xian et al., ICLR 2023, Sec. 4): soft ice cream leaves an
injector above the agent's cone; the agent moves the cone so the ice cream piles up into a goal
3-D shape. In the static task the injector is fixed; in the dynamic task it moves along a
trajectory, so the cone has to follow it.

Emulation of the injector: FluidLab activates particles at the nozzle over time; FluxLab's
engine has a fixed particle set. Here the ice cream (``ICE_CREAM`` viscoplastic preset) starts
as a tall thin column ("rope") above the holder with a downward initial velocity ``drop_speed``,
so its lower end lands first and the rest arrives over time, as from a nozzle. A particle at
height h above the landing plane arrives after ``T(h) = (sqrt(v0^2 + 2 g h) - v0) / g``.

* Static: the rope is vertical, so everything lands at one fixed point.
* Dynamic: each particle also gets a lateral initial velocity ``(p(T(h)) - p(0)) / T(h)``, so
  the material arriving at time T lands at ``p(T)``, a point moving along a straight line at
  ``injector_speed`` (a moving injector; 0.8 m/s moves it ~11 cm while the rope lands). Shear
  between rope layers (viscosity, yield stress) perturbs this: measured landing points stay
  within ~1 cm of ``p(T)``, ~2 cm for the rope's two ends. The scripted policy follows ``p(T)``.

The holder (the tool) is an open ``Cup`` collider; actions (3) are its x, y, z velocities [m/s].

Loss (differentiable): :func:`tasks.targets.chamfer` (3-D) between all ice-cream particles and
the target shape placed on the holder's rim centre (it moves with the holder), divided by
``loss_scale`` = 0.2 m. Ice cream that misses the holder lies far from the target and keeps the
loss high. Success: loss <= ``success_loss`` = 0.25.

cpu preset: 570 particles, 32^3 grid (dx = 1/32 m), 5 substeps of 1.6 ms, horizon 50 (0.4 s;
all material has landed by step ~33). Measured env step (f32, B = 1, shared 2-core machine at
load ~4): median 0.032 s in the quietest of 4 rounds (0.032-0.06 s); B = 8: 0.10-0.15 s.
Scripted (f64): static 1.81 -> 0.18, dynamic 2.27 -> 0.13; 6 seeded random policies never get
below 0.65 (static) / 0.80 (dynamic) over the whole horizon.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from engine import sampling
from engine.colliders import BoundaryCondition, Collider
from engine.config import SimConfig
from engine.geometry import Cup
from engine.materials import ICE_CREAM
from engine.scene import SceneBuilder
from tasks.base import ParticleTask, TaskConfig
from tasks.targets import HOLDER_HEIGHT, HOLDER_RADIUS, HOLDER_WALL, chamfer, load_metadata, load_target


@dataclass(frozen=True)
class IceCreamConfig(TaskConfig):
    """Ice-cream settings (see :class:`tasks.base.TaskConfig` for the shared fields).

    Attributes:
        holder_start: (x, y, z) of the holder's outer bottom centre at the start [m].
        holder_radius, holder_height, holder_wall: holder cup size [m] (the targets' geometry).
        nozzle: (x, y) of the rope's axis [m].
        rope_radius: radius of the ice-cream rope [m].
        rope_bottom, rope_top: heights of the rope's ends at the start [m].
        drop_speed: initial downward speed of the rope [m/s].
        injector_speed: (vx, vy) of the landing point [m/s]; zero for the static task.
        target: name of the 3-D target in :mod:`tasks.targets`.
        loss_scale: length [m] the Chamfer distance is divided by.
    """

    holder_start: tuple[float, float, float] = (0.35, 0.5, 0.2)
    holder_radius: float = HOLDER_RADIUS
    holder_height: float = HOLDER_HEIGHT
    holder_wall: float = HOLDER_WALL
    nozzle: tuple[float, float] = (0.5, 0.5)
    rope_radius: float = 0.045
    rope_bottom: float = 0.42
    rope_top: float = 0.75
    drop_speed: float = 0.2
    injector_speed: tuple[float, float] = (0.0, 0.0)
    target: str = "ice_cream_swirl"
    loss_scale: float = 0.2


class IceCreamTask(ParticleTask):
    """Shared scene, loss and script of the ice-cream tasks; subclasses set the injector."""

    @classmethod
    def _sim(cls, preset: str) -> SimConfig:
        if preset == "cpu":
            # dx = 1/32 m, 5 substeps of 1.6 ms: the ice cream's P-wave CFL number c dt / dx is 0.34.
            return SimConfig(grid_res=32, domain_size=1.0, dt=1.6e-3, substeps=5)
        if preset == "paper":
            return SimConfig(grid_res=96, domain_size=1.0, dt=2e-4, substeps=40)
        raise ValueError(f"preset must be 'cpu' or 'paper', got {preset!r}")

    @classmethod
    def _config(cls, preset: str, **fields) -> IceCreamConfig:
        fields = {"camera_pos": (0.5, -0.05, 0.62), "look_at": (0.48, 0.5, 0.33), **fields}
        return IceCreamConfig(
            preset=preset,
            horizon=50,
            sim=cls._sim(preset),
            tool=0,
            action_dofs=(0, 1, 2),
            action_scale=(1.0, 1.0, 0.5),
            workspace=((0.2, 0.2, 0.1), (0.8, 0.8, 0.3)),
            reset_noise=0.01,
            progress_scale=1.0,
            success_loss=0.25,
            **fields,
        )

    def _landing_height(self) -> float:
        cfg: IceCreamConfig = self.config
        return cfg.holder_start[2] + cfg.holder_height

    def arrival_time(self, z: np.ndarray) -> np.ndarray:
        """Time [s] at which rope material starting at height ``z`` reaches the holder's rim."""
        cfg: IceCreamConfig = self.config
        g = -cfg.sim.gravity[2]
        h = np.maximum(np.asarray(z, dtype=np.float64) - self._landing_height(), 0.0)
        v0 = cfg.drop_speed
        return (np.sqrt(v0 * v0 + 2.0 * g * h) - v0) / g

    def landing_point(self, time: float) -> np.ndarray:
        """(2,) x-y point [m] where the material arriving at ``time`` lands: the nozzle until the
        rope's lower end arrives, then moving at ``injector_speed`` until its upper end has."""
        cfg: IceCreamConfig = self.config
        t0, t1 = (float(self.arrival_time(z)) for z in (cfg.rope_bottom, cfg.rope_top))
        return np.asarray(cfg.nozzle) + np.asarray(cfg.injector_speed) * (np.clip(time, t0, t1) - t0)

    def rope_velocity(self, points: np.ndarray) -> np.ndarray:
        """(n, 3) initial velocity [m/s] of rope particles at ``points``: down at ``drop_speed``
        plus the lateral velocity that makes each land at :meth:`landing_point` of its arrival."""
        cfg: IceCreamConfig = self.config
        T = self.arrival_time(points[:, 2])
        lateral = np.stack([self.landing_point(t) for t in T]) - np.asarray(cfg.nozzle)
        vel = np.zeros_like(points)
        vel[:, :2] = lateral / np.maximum(T, 1e-6)[:, None]
        vel[:, 2] = -cfg.drop_speed
        return vel

    def build_scene(self):
        cfg: IceCreamConfig = self.config
        meta = load_metadata(cfg.target)
        mine = {"holder_radius": cfg.holder_radius, "holder_height": cfg.holder_height, "holder_wall": cfg.holder_wall}
        if any(abs(meta[k] - v) > 1e-9 for k, v in mine.items()):
            raise ValueError(f"{self.name}: target {cfg.target!r} is made for holder {meta}, the scene's is {mine}")
        if cfg.holder_wall < 1.1 * cfg.sim.dx:
            raise ValueError(f"{self.name}: holder wall {cfg.holder_wall} m is thinner than 1.1 dx; it would leak")
        self._target = torch.as_tensor(load_target(cfg.target))
        spacing = 0.5 * cfg.sim.dx
        builder = SceneBuilder(cfg.sim)
        holder = Cup(cfg.holder_radius, cfg.holder_height, cfg.holder_wall)
        builder.add_collider(
            Collider(holder, pose=(*cfg.holder_start, 1.0, 0.0, 0.0, 0.0), boundary=BoundaryCondition(mode="sticky"))
        )
        bottom = (*cfg.nozzle, cfg.rope_bottom)
        rope = sampling.cylinder(bottom, cfg.rope_radius, cfg.rope_top - cfg.rope_bottom, spacing, jitter=0.5, rng=0)
        builder.add_particles(rope, ICE_CREAM, spacing, velocity=self.rope_velocity(rope))
        return builder.build()

    def state_loss(self, x: torch.Tensor, v: torch.Tensor, pose: torch.Tensor) -> torch.Tensor:
        cfg: IceCreamConfig = self.config
        rim = pose[:, cfg.tool, :3] + torch.tensor([0.0, 0.0, cfg.holder_height], dtype=pose.dtype)
        rel = x - rim[:, None, :]
        return chamfer(rel, self._target) / cfg.loss_scale

    def scripted_action(self, t: int, index: int = 0) -> np.ndarray:
        """Keep the holder's axis under the landing point of the material arriving next."""
        cfg: IceCreamConfig = self.config
        pose = self.tool_pose(index)
        goal = self.landing_point((t + 1) * cfg.step_time)
        vel = np.zeros(3)
        vel[:2] = (goal - pose[:2]) / (2.0 * cfg.step_time)
        vel[2] = (cfg.holder_start[2] - pose[2]) / (2.0 * cfg.step_time)
        return np.clip(vel / np.asarray(cfg.action_scale), -1.0, 1.0)


class IceCreamStatic(IceCreamTask):
    """Ice cream falls from a fixed injector; move the holder under it to form the target."""

    name = "IceCreamStatic"
    render_fps = 20

    @classmethod
    def default_config(cls, preset: str = "cpu") -> IceCreamConfig:
        return cls._config(preset)


class IceCreamDynamic(IceCreamTask):
    """The injector's landing point moves along a line; follow it to form the target."""

    name = "IceCreamDynamic"
    render_fps = 20

    @classmethod
    def default_config(cls, preset: str = "cpu") -> IceCreamConfig:
        return cls._config(
            preset,
            nozzle=(0.44, 0.5),
            holder_start=(0.5, 0.35, 0.2),
            injector_speed=(0.8, 0.0),
            target="ice_cream_mound",
            camera_pos=(0.52, -0.05, 0.62),
            look_at=(0.52, 0.5, 0.33),
        )
