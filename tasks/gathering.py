"""Gathering: push floating objects across a water tank into a target region with a paddle.

FluidLab's "Gathering (Easy)" and "Gathering (O-shaped)" tasks (Xian et al., ICLR 2023, Sec. 4 and
App. A): a few small floating objects ("ducks") drift in a tank of water; the agent moves a
paddle and must bring all of them into a target region, mostly through the water it displaces.

Scene (both variants): a round tank (an open-top :class:`engine.geometry.Cup` standing on the
floor, slip walls) filled with water (a weakly compressible fluid, bulk modulus 1e5 Pa so that a
1.25 ms substep is stable at dx = 2.5 cm), and ``len(body_starts)`` rigid spheres of density 500
kg/m^3 floating half-submerged. Each duck is a free 6-DoF rigid body
(:class:`engine.solvers.rigid.RigidBody`) two-way coupled to the water through the MPM grid (Hu et
al. 2018), so it floats by the water's pressure and no water enters it. The tool (collider 0) is a
vertical paddle (a thin :class:`engine.geometry.Box`) piercing the surface.

* :class:`GatheringEasy`: a plain round tank; actions (vx, vy) of the paddle [m/s]; target: the
  half of the tank beyond ``x >= target_x``.
* :class:`GatheringO`: an O-shaped (annular) tank, a static :class:`engine.geometry.Cylinder`
  standing in the middle of the round tank; actions (vx, vy, wz) [m/s, rad/s]; the ducks start
  on the -x side and must be brought around the obstacle into the sector ``|theta - target_angle|
  <= target_half_angle`` on the other side (theta = polar angle about the tank axis).

Loss (differentiable, both variants): with c_k the centre of duck k (its rigid-body position) and
d_k >= 0 its distance [m] outside the target region (Easy: ``relu(target_x
- c_x)``; O: the arc length ``r_mid * relu(|wrap(theta_k - target_angle)| - target_half_angle)``
along the channel's mid-radius, so it follows the channel around the obstacle),
``loss = mean_k d_k^2 / mean_k d_k(0)^2`` - exactly 1 at the model's initial state and 0 when
every duck is inside. Success: every duck's centroid inside the target region.

Shared machinery lives in :class:`FloatingBodiesTask` (also used by ``tasks/transporting.py``):
tank, water, floating bodies, the centroid loss and an observation extended by the body centroids
and velocities.

CPU preset: dx = 2.5 cm (20^3 nodes over a 0.5 m domain), 8 substeps of 1.25 ms (10 ms per env
step). Measured env step (f32, 2 CPU threads, B = 1, median of 20 steps including observation,
loss and success; the shared machine's timings varied by up to 1.5x between runs):
GatheringEasy 2185 particles, 2 colliders, 0.078-0.100 s; GatheringO 1815 particles, 3
colliders, 0.096-0.109 s; Transporting 2186 particles, 2 colliders, 0.074-0.094 s. At B = 8:
0.15-0.20 s, 0.19-0.24 s, 0.18-0.22 s. Kernel time is only ~30 ms of a GatheringEasy step (Taichi
kernel profiler); the rest is per-launch overhead of the ~15 kernels per substep. Paper preset:
the same scenes scaled by 2 into a 1 m domain at 96^3 nodes (4.2e5, 3.9e5, 4.2e5 particles),
50 substeps of 0.2 ms, the same simulated episode length.

Known limitation: the engine's weakly compressible water slowly loses volume under gravity
(particles creep downward while J stays hydrostatic; ~30 % of the depth per simulated second at
this dt, independent of these tasks), so the water level visibly drops during an episode; the
horizons are kept at 0.6-1 s so that the bodies stay afloat.
"""

from __future__ import annotations

import abc
import math
from dataclasses import dataclass, replace

import numpy as np
import torch

from engine import sampling
from engine.colliders import BoundaryCondition, Collider
from engine.config import SimConfig
from engine.geometry import Box, Cup, Cylinder, Shape, Sphere
from engine.materials import WATER
from engine.scene import SceneBuilder
from engine.solvers.rigid import RigidBody
from tasks.base import ParticleTask, TaskConfig

#: Tank water: the water preset with a bulk modulus of 1e5 Pa (sound speed 10 m/s), so that a
#: 1.25 ms substep is stable at dx = 2.5 cm (c dt / dx = 0.5); hydrostatic compression under 8 cm
#: of water stays below 1 %.
TANK_WATER = replace(WATER, name="tank_water", E=1e5)
#: Colour of the floating ducks (yellow).
DUCK_COLOR = (1.0, 0.8, 0.1)


@dataclass(frozen=True)
class FloatingConfig(TaskConfig):
    """Settings of a round water tank with floating rigid bodies and a paddle-like tool.

    Attributes:
        tank_radius: outer radius of the tank (a Cup centred on the domain's vertical axis) [m].
        tank_height: outer height of the tank [m].
        water_depth: depth of the water at the start [m].
        body_starts: (x, y) start of each floating body's centre [m]; one rigid body each.
        body_size: radius of a spherical body (half the edge of a cubic one) [m].
        body_density: density of the bodies [kg/m^3] (below water's 1000, so they float).
        tool_size: half extents (hx, hy, hz) of the box tool [m] (thin along local x).
        tool_start: (x, y, yaw) of the tool's centre at the start [m, m, rad]; its bottom sits
            ``tool_clearance`` above the tank floor.
        tool_clearance: gap between the tank floor and the tool's bottom [m].
    """

    tank_radius: float = 0.18
    tank_height: float = 0.17
    water_depth: float = 0.08
    body_starts: tuple[tuple[float, float], ...] = ((0.2, 0.25),)
    body_size: float = 0.025
    body_density: float = 500.0
    tool_size: tuple[float, float, float] = (0.0175, 0.09, 0.07)
    tool_start: tuple[float, float, float] = (0.15, 0.25, 0.0)
    tool_clearance: float = 0.02

    def __post_init__(self):
        super().__post_init__()
        if not self.body_starts:
            raise ValueError("body_starts must list at least one body")
        if not 0.0 < self.body_density < TANK_WATER.density:
            raise ValueError(f"body_density must be in (0, {TANK_WATER.density}) to float, got {self.body_density!r}")
        for name in ("tank_radius", "tank_height", "water_depth", "body_size", "tool_clearance"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)!r}")


class FloatingBodiesTask(ParticleTask):
    """Water in a round tank, rigid bodies floating on it, a box tool; loss on body centroids.

    Collider order: 0 the tool, 1 the tank, then :meth:`extra_colliders`. Subclass hooks:
    ``default_config``, :meth:`region_distance` (how far each body is outside the target),
    ``scripted_action``; optional :meth:`extra_colliders`, :meth:`body_shape`, :meth:`body_color`,
    :meth:`excluded_from_water`.
    """

    def __init__(self, config: FloatingConfig):
        super().__init__(config)
        with torch.no_grad():
            c0 = torch.tensor([body.pose[:3] for body in self.model.bodies], dtype=torch.float64)[None]
            d0 = self.region_distance(c0)
        self._d0_sq = float((d0**2).mean())
        if not self._d0_sq > 0:
            raise ValueError(f"{self.name}: every body starts inside the target region; the loss would be 0/0")

    # ------------------------------------------------------------------ geometry
    @property
    def centre(self) -> tuple[float, float]:
        """(x, y) of the tank axis [m] (the domain's vertical centre line)."""
        half = 0.5 * self.config.sim.domain_size
        return half, half

    def floor(self) -> float:
        """Height of the domain floor, where the tank stands [m]."""
        return self.config.sim.boundary_cells * self.config.sim.dx

    def wall(self) -> float:
        """Tank wall and bottom thickness [m]: 1.5 cells, so particles cannot leak through."""
        return 1.5 * self.config.sim.dx

    def inner_radius(self) -> float:
        return self.config.tank_radius - self.wall()

    def bottom(self) -> float:
        """Height of the tank's inner bottom [m]."""
        return self.floor() + self.wall()

    def surface(self) -> float:
        """Height of the water surface at the start [m]."""
        return self.bottom() + self.config.water_depth

    def tool_pose0(self) -> tuple[float, ...]:
        """Start pose (x, y, z, qw, qx, qy, qz) of the tool."""
        cfg: FloatingConfig = self.config
        x, y, yaw = cfg.tool_start
        z = self.bottom() + cfg.tool_clearance + cfg.tool_size[2]
        return (x, y, z, math.cos(0.5 * yaw), 0.0, 0.0, math.sin(0.5 * yaw))

    # ------------------------------------------------------------------ hooks
    def extra_colliders(self) -> list[Collider]:
        """Static colliders after the tank (e.g. an obstacle); default none."""
        return []

    def excluded_from_water(self, points: np.ndarray) -> np.ndarray:
        """(n,) bool: water sample points to drop because a static collider occupies them."""
        return np.zeros(len(points), dtype=bool)

    def body_shape(self) -> Shape:
        """Shape of every floating body, centred on its origin: a sphere of radius ``body_size``."""
        return Sphere(self.config.body_size)

    def body_color(self) -> tuple[float, float, float]:
        return DUCK_COLOR

    @abc.abstractmethod
    def region_distance(self, c: torch.Tensor) -> torch.Tensor:
        """(B, nb) distance [m] of body centroids c (B, nb, 3) outside the target region (0 inside)."""

    # ------------------------------------------------------------------ scene
    def build_scene(self):
        cfg: FloatingConfig = self.config
        dx = cfg.sim.dx
        spacing = 0.5 * dx
        cx, cy = self.centre
        builder = SceneBuilder(cfg.sim)
        shape = self.body_shape()
        bodies = [
            RigidBody(shape, cfg.body_density, pose=(bx, by, self.surface(), 1.0, 0.0, 0.0, 0.0), name=f"body{k}",
                      color=self.body_color())
            for k, (bx, by) in enumerate(cfg.body_starts)
        ]  # fmt: skip
        water = sampling.cylinder(
            (cx, cy, self.bottom() + 0.5 * spacing), self.inner_radius() - 0.75 * spacing, cfg.water_depth, spacing
        )
        # water displaced by the bodies: samples inside a body or within half a spacing of it
        drop = self.excluded_from_water(water)
        for body in bodies:
            drop |= shape.sdf(water - np.asarray(body.pose[:3]))[0] < 0.5 * spacing
        builder.add_particles(water[~drop], TANK_WATER, spacing, hydrostatic=True)
        for body in bodies:
            builder.add_rigid_body(body)
        paddle = Collider(
            Box(cfg.tool_size), pose=self.tool_pose0(), boundary=BoundaryCondition(friction=0.0, mode="separate")
        )
        tank = Collider(
            Cup(cfg.tank_radius, cfg.tank_height, self.wall()),
            pose=(cx, cy, self.floor(), 1.0, 0.0, 0.0, 0.0),
            boundary=BoundaryCondition(friction=0.0, mode="slip"),
        )
        builder.add_collider(paddle)
        builder.add_collider(tank)
        for c in self.extra_colliders():
            builder.add_collider(c)
        return builder.build()

    # ------------------------------------------------------------------ loss and observation
    def state_loss(self, x: torch.Tensor, v: torch.Tensor, pose: torch.Tensor, bodies: torch.Tensor) -> torch.Tensor:
        d = self.region_distance(bodies[..., :3])
        return (d**2).mean(dim=-1) / self._d0_sq

    def state_success(self, x, v, pose, bodies):
        return (self.region_distance(bodies[..., :3]) <= 0.0).all(dim=-1)

    @property
    def observation_dim(self) -> int:
        return super().observation_dim + 6 * self.model.n_rigid

    def observation_limits(self) -> tuple[np.ndarray, np.ndarray]:
        """The default limits plus body centroids within half a domain of the centre and body
        velocities within the blow-up speed."""
        low, high = super().observation_limits()
        nb, cfg = self.model.n_rigid, self.config
        extra = np.concatenate([np.full(3 * nb, 0.5 * cfg.sim.domain_size), np.full(3 * nb, cfg.sim.speed_limit)])
        return np.concatenate([low, -extra]).astype(np.float32), np.concatenate([high, extra]).astype(np.float32)

    def observe_state(self, x, v, pose, tool_vel, bodies):
        """The default particle/tool observation plus each body's centre (centred on the domain)
        and velocity."""
        B = x.shape[0]
        c = bodies[..., :3] - 0.5 * self.config.sim.domain_size
        u = bodies[..., 7:10]
        return torch.cat([super().observe_state(x, v, pose, tool_vel), c.reshape(B, -1), u.reshape(B, -1)], dim=-1)

    # ------------------------------------------------------------------ scripted-policy helpers
    def body_centroids(self, index: int = 0) -> np.ndarray:
        """(nb, 3) current body centres of scene ``index`` [m] (for scripted policies)."""
        bodies = self._require_sim().body_state()
        return bodies[index, :, :3].cpu().numpy().astype(np.float64)

    def velocity_toward(self, goal_xy: np.ndarray, index: int = 0, gain: float = 4.0) -> np.ndarray:
        """(2,) (vx, vy) action in [-1, 1] (the first two action DOFs of every floating task) moving
        the tool's (x, y) toward ``goal_xy`` [m] in about ``gain`` steps, saturating at full speed."""
        cfg = self.config
        pose = self.tool_pose(index)
        scale = np.asarray(cfg.action_scale[:2])
        return np.clip((np.asarray(goal_xy) - pose[:2]) / (gain * cfg.step_time * scale), -1.0, 1.0)


@dataclass(frozen=True)
class GatheringConfig(FloatingConfig):
    """Gathering settings (see :class:`FloatingConfig` for the scene).

    Attributes:
        target_x: (Easy) ducks must end with centroid x >= target_x [m].
        obstacle_radius: (O) radius of the central cylinder [m]; 0 for none.
        target_angle, target_half_angle: (O) the target sector of polar angles about the tank
            axis, centre and half width [rad].
        sweep_speed: (O, scripted policy) paddle speed along the channel [fraction of full].
    """

    target_x: float = 0.285
    obstacle_radius: float = 0.0
    target_angle: float = 0.0
    target_half_angle: float = 0.5
    sweep_speed: float = 1.0


#: Gathering config fields holding lengths [m], scaled by the paper preset.
_GATHERING_LENGTHS = ("target_x", "obstacle_radius")


#: x and y of the tank axis in the cpu preset (the centre of its 0.5 m domain) [m].
AXIS = 0.25


def cpu_sim() -> SimConfig:
    # dx = 2.5 cm over a 0.5 m domain (20^3 nodes; the grid passes dominate the step cost),
    # 8 substeps of 1.25 ms per env step (c dt / dx = 0.5 for the tank water).
    return SimConfig(grid_res=20, domain_size=0.5, dt=1.25e-3, substeps=8)


def _around(*offsets: tuple[float, ...]) -> tuple[tuple[float, ...], ...]:
    """Points given as (dx, dy[, ...]) offsets from the cpu tank axis -> absolute (x, y[, ...]) [m]."""
    return tuple((AXIS + p[0], AXIS + p[1], *p[2:]) for p in offsets)


def _paper_sim() -> SimConfig:
    # FluidLab's scale: a 1 m domain at 96^3 nodes (dx ~ 1 cm, ~3e5 particles); 50 substeps of
    # 0.2 ms keep the cpu preset's 10 ms per env step (c dt / dx = 0.19).
    return SimConfig(grid_res=96, domain_size=1.0, dt=2e-4, substeps=50)


def _scaled(values, factor: float):
    """Nested tuples of lengths scaled by ``factor`` (paper preset: the cpu scene in a 1 m domain)."""
    if isinstance(values, tuple):
        return tuple(_scaled(v, factor) for v in values)
    return values * factor


class GatheringEasy(FloatingBodiesTask):
    """Push three floating ducks into the +x part of a round tank with a paddle (actions vx, vy).

    CPU preset: horizon 60 (0.6 s). Scripted policy: success from step ~28 on, final loss 0;
    seeded uniform random policies (4 seeds): final loss 0.30-0.48, never successful.
    """

    name = "GatheringEasy"
    render_fps = 25

    @classmethod
    def default_config(cls, preset: str = "cpu") -> GatheringConfig:
        config = GatheringConfig(
            preset="cpu",
            horizon=60,
            sim=cpu_sim(),
            tool=0,
            action_dofs=(0, 1),
            action_scale=(0.4, 0.4),
            workspace=((AXIS - 0.13, AXIS - 0.13, 0.0), (AXIS + 0.13, AXIS + 0.13, 0.5)),
            reset_noise=0.01,
            progress_scale=1.0,
            body_starts=_around((-0.035, -0.044), (-0.009, 0.026), (-0.053, 0.062)),
            tool_size=(0.0175, 0.11, 0.07),
            tool_start=_around((-0.105, 0.0, 0.0))[0],
            target_x=AXIS + 0.035,
            camera_pos=(AXIS, AXIS - 0.31, 0.62),
            look_at=(AXIS, AXIS, 0.05),
        )
        return scale_preset(config, preset, lengths=_GATHERING_LENGTHS)

    def region_distance(self, c: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.config.target_x - c[..., 0])

    def scripted_action(self, t: int, index: int = 0) -> np.ndarray:
        """Sweep the paddle (spanning the ducks' y range) toward +x until it is 2 cm short of the
        target line, following the ducks' mean y (within 10 % of the tank radius of the axis)."""
        cfg: GatheringConfig = self.config
        cy, band = self.centre[1], 0.1 * cfg.tank_radius
        follow = np.clip(self.body_centroids(index)[:, 1].mean(), cy - band, cy + band)
        return self.velocity_toward(np.array([cfg.target_x - 0.02, follow]), index, gain=1.0)


def scale_preset(config: FloatingConfig, preset: str, lengths: tuple[str, ...] = ()) -> FloatingConfig:
    """``config`` (a cpu preset) at ``preset``: unchanged for "cpu"; for "paper" the same scene
    scaled to FluidLab's 1 m domain at 96^3 nodes, with the same simulated episode duration.

    Args:
        config: the task's cpu config.
        preset: "cpu" or "paper".
        lengths: task-specific config fields holding lengths [m] (scaled with the scene).
    """
    if preset == "cpu":
        return config
    if preset != "paper":
        raise ValueError(f"preset must be 'cpu' or 'paper', got {preset!r}")
    sim = _paper_sim()
    k = sim.domain_size / config.sim.domain_size
    shared = (
        "tank_radius",
        "tank_height",
        "water_depth",
        "body_starts",
        "body_size",
        "tool_size",
        "tool_clearance",
        "workspace",
        "camera_pos",
        "look_at",
    )
    scaled = {name: _scaled(getattr(config, name), k) for name in shared + tuple(lengths)}
    # linear action DOFs scale with the scene, angular ones (wz) do not
    scaled["action_scale"] = tuple(
        s * (k if d < 3 else 1.0) for s, d in zip(config.action_scale, config.action_dofs, strict=True)
    )
    x, y, yaw = config.tool_start
    horizon = round(config.horizon * config.step_time / (sim.dt * sim.substeps))
    return replace(config, preset="paper", sim=sim, horizon=horizon, tool_start=(x * k, y * k, yaw), **scaled)


class GatheringO(FloatingBodiesTask):
    """Bring three ducks around the central obstacle of an O-shaped tank (actions vx, vy, wz).

    CPU preset: horizon 80 (0.8 s). Scripted policy: success from step ~55-60 on, final loss 0;
    seeded uniform random policies (4 seeds): final loss 0.57-1.12, never successful.
    """

    name = "GatheringO"
    render_fps = 25

    @classmethod
    def default_config(cls, preset: str = "cpu") -> GatheringConfig:
        config = GatheringConfig(
            preset="cpu",
            horizon=80,
            sim=cpu_sim(),
            tool=0,
            action_dofs=(0, 1, 5),
            action_scale=(0.4, 0.4, 4.0),
            workspace=((AXIS - 0.18, AXIS - 0.18, 0.0), (AXIS + 0.18, AXIS + 0.18, 0.5)),
            reset_noise=0.005,
            progress_scale=1.0,
            obstacle_radius=0.045,
            body_starts=_ring(0.094, (1.85, 2.35, 2.85)),
            tool_size=(0.0175, 0.035, 0.07),
            tool_start=(*_ring(0.094, (3.3,))[0], 3.3 - 0.5 * math.pi),
            target_angle=0.0,
            target_half_angle=0.8,
            camera_pos=(AXIS, AXIS - 0.31, 0.62),
            look_at=(AXIS, AXIS, 0.05),
        )
        return scale_preset(config, preset, lengths=_GATHERING_LENGTHS)

    def mid_radius(self) -> float:
        """Radius of the channel's centre line [m]."""
        return 0.5 * (self.config.obstacle_radius + self.inner_radius())

    def extra_colliders(self) -> list[Collider]:
        cfg: GatheringConfig = self.config
        cx, cy = self.centre
        half = 0.5 * cfg.tank_height
        pose = (cx, cy, self.floor() + half, 1.0, 0.0, 0.0, 0.0)
        return [
            Collider(
                Cylinder(cfg.obstacle_radius, half), pose=pose, boundary=BoundaryCondition(friction=0.0, mode="slip")
            )
        ]

    def excluded_from_water(self, points: np.ndarray) -> np.ndarray:
        cx, cy = self.centre
        rho = np.hypot(points[:, 0] - cx, points[:, 1] - cy)
        return rho < self.config.obstacle_radius + 0.75 * 0.5 * self.config.sim.dx

    def polar_angle(self, c: torch.Tensor) -> torch.Tensor:
        cx, cy = self.centre
        return torch.atan2(c[..., 1] - cy, c[..., 0] - cx)

    def region_distance(self, c: torch.Tensor) -> torch.Tensor:
        cfg: GatheringConfig = self.config
        delta = self.polar_angle(c) - cfg.target_angle
        off = torch.atan2(torch.sin(delta), torch.cos(delta)).abs()  # wrapped to [0, pi]
        return self.mid_radius() * torch.relu(off - cfg.target_half_angle)

    def scripted_action(self, t: int, index: int = 0) -> np.ndarray:
        """Sweep the paddle clockwise along the channel's mid-radius, held radial, from behind
        the ducks until it reaches the target sector's near edge (the ducks pile up ahead of it)."""
        cfg: GatheringConfig = self.config
        cx, cy = self.centre
        pose = self.tool_pose(index)
        theta = math.atan2(pose[1] - cy, pose[0] - cx)
        theta = theta + 2 * math.pi if theta < cfg.target_angle - 0.5 * math.pi else theta  # unwrap past -pi
        r = self.mid_radius()
        step = cfg.sweep_speed * cfg.action_scale[0] * cfg.step_time / r  # angle per env step
        stop = cfg.target_angle + cfg.target_half_angle
        goal_angle = max(theta - step, stop)
        goal = np.array([cx + r * math.cos(goal_angle), cy + r * math.sin(goal_angle)])
        lin = self.velocity_toward(goal, index, gain=1.0)
        yaw = 2.0 * math.atan2(pose[6], pose[3])
        turn = math.remainder(goal_angle - 0.5 * math.pi - yaw, 2 * math.pi)
        wz = np.clip(turn / (cfg.step_time * cfg.action_scale[2]), -1.0, 1.0)
        return np.array([lin[0], lin[1], wz])


def _ring(radius: float, angles: tuple[float, ...]) -> tuple[tuple[float, float], ...]:
    """(x, y) points at ``radius`` about the cpu tank axis at polar ``angles`` [rad]."""
    return _around(*((radius * math.cos(a), radius * math.sin(a)) for a in angles))
