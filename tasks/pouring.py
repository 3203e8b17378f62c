"""Pouring: tilt a cup of viscous liquid to pour it into a second cup without spilling.

FluidLab's "Pouring" task (Xian et al., ICLR 2023, Sec. 4): the agent holds a cup (the tool) full
of a viscous liquid (milk preset, 0.2 Pa s) and must move and tilt it so the liquid ends in the
target cup standing on the floor to its +x side.

Actions (3): the tool cup's velocity along x and z [m/s] and its angular velocity about y
[rad/s] (positive tilts the rim toward +x, i.e. toward the target). The cup's pivot is the
centre of its outer bottom.

Loss (differentiable): mean over liquid particles of the squared distance [in units of the
target's inner radius] from the target cup's cavity, ``relu(rho - r_in)^2 + relu(z - z_rim)^2``,
so it is 0 when all liquid is inside the target and grows with the distance of spilled or
unpoured liquid. Success: at least 60 % of the liquid inside the target's cavity.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from engine import sampling
from engine.colliders import BoundaryCondition, Collider
from engine.config import SimConfig
from engine.geometry import Cup
from engine.materials import MILK
from engine.scene import SceneBuilder
from tasks.base import ParticleTask, TaskConfig


@dataclass(frozen=True)
class PouringConfig(TaskConfig):
    """Pouring settings (see :class:`tasks.base.TaskConfig` for the shared fields).

    Attributes:
        source_pos: (x, y, z) of the source cup's bottom centre at the start [m].
        target_x: x of the target cup's bottom centre (it stands on the floor at y = 0.5) [m].
        cup_radius, cup_height: outer size of both cups [m].
        fill_height: height of the liquid column in the source cup [m].
        success_fraction: fraction of liquid that must end inside the target.
    """

    source_pos: tuple[float, float, float] = (0.36, 0.5, 0.32)
    target_x: float = 0.68
    cup_radius: float = 0.14
    cup_height: float = 0.17
    fill_height: float = 0.1
    success_fraction: float = 0.6


class Pouring(ParticleTask):
    """Pour milk from the held cup into the cup on the floor."""

    name = "Pouring"
    render_fps = 20

    @classmethod
    def default_config(cls, preset: str = "cpu") -> PouringConfig:
        if preset == "cpu":
            # 672 particles, dx = 1/32 m, 10 substeps of 0.8 ms (milk's explicit viscous limit is
            # 0.84 ms at this dx): about 0.07 s per env step on 2 CPU cores. 150 steps = 1.2 s:
            # carrying the cup over the target takes ~0.4 s, tilting it ~0.5 s, the pour ~0.3 s.
            sim = SimConfig(grid_res=32, dt=8e-4, substeps=10)
            horizon = 150
        elif preset == "paper":
            sim = SimConfig(grid_res=96, dt=1e-4, substeps=80)
            horizon = 150
        else:
            raise ValueError(f"preset must be 'cpu' or 'paper', got {preset!r}")
        return PouringConfig(
            preset=preset,
            horizon=horizon,
            sim=sim,
            tool=0,
            action_dofs=(0, 2, 4),
            action_scale=(0.5, 0.5, 4.0),
            workspace=((0.2, 0.3, 0.15), (0.8, 0.7, 0.7)),
            reset_noise=0.01,
            progress_scale=1.0,
            camera_pos=(0.55, -0.4, 0.62),
            look_at=(0.55, 0.5, 0.22),
        )

    def _wall(self) -> float:
        return max(0.035, 1.1 * self.config.sim.dx)

    def _floor(self) -> float:
        return self.config.sim.boundary_cells * self.config.sim.dx

    def build_scene(self):
        cfg: PouringConfig = self.config
        spacing = 0.5 * cfg.sim.dx
        wall = self._wall()
        cup = Cup(cfg.cup_radius, cfg.cup_height, wall)
        source = Collider(
            cup, pose=(*cfg.source_pos, 1.0, 0.0, 0.0, 0.0), boundary=BoundaryCondition(friction=0.2, mode="slip")
        )
        target_pose = (cfg.target_x, 0.5, self._floor(), 1.0, 0.0, 0.0, 0.0)
        target = Collider(cup, pose=target_pose, boundary=BoundaryCondition(mode="slip"))
        inner = cfg.cup_radius - wall
        bottom = (cfg.source_pos[0], cfg.source_pos[1], cfg.source_pos[2] + wall + 0.5 * spacing)
        liquid = sampling.cylinder(bottom, inner - 0.75 * spacing, cfg.fill_height, spacing)
        builder = SceneBuilder(cfg.sim)
        builder.add_particles(liquid, MILK, spacing, hydrostatic=True)
        builder.add_collider(source)
        builder.add_collider(target)
        return builder.build()

    def _cavity(self):
        cfg: PouringConfig = self.config
        r_in = cfg.cup_radius - self._wall()
        return cfg.target_x, 0.5, r_in, self._floor() + cfg.cup_height

    def state_loss(self, x: torch.Tensor, v: torch.Tensor, pose: torch.Tensor) -> torch.Tensor:
        cx, cy, r_in, rim = self._cavity()
        rho = torch.sqrt((x[..., 0] - cx) ** 2 + (x[..., 1] - cy) ** 2 + 1e-12)
        outside = torch.relu(rho - r_in) ** 2 + torch.relu(x[..., 2] - rim) ** 2
        return outside.mean(dim=-1) / r_in**2

    def state_success(self, x, v, pose):
        cx, cy, r_in, rim = self._cavity()
        rho = torch.sqrt((x[..., 0] - cx) ** 2 + (x[..., 1] - cy) ** 2)
        inside = (rho < r_in) & (x[..., 2] < rim)
        return inside.double().mean(dim=-1) >= self.config.success_fraction

    def scripted_action(self, t: int, index: int = 0) -> np.ndarray:
        """Carry the cup over the target's near half, its bottom 0.16 m above the target's rim (so
        the tilted cup clears that rim), then tilt it to 120 degrees."""
        cfg: PouringConfig = self.config
        pose = self.tool_pose(index)
        goal_x, goal_z = cfg.target_x - 0.5 * cfg.cup_radius - 0.12, self._floor() + cfg.cup_height + 0.16
        w, qy = pose[3], pose[5]
        angle = 2.0 * np.arctan2(qy, w)  # rotation about +y
        vx = np.clip((goal_x - pose[0]) / (cfg.step_time * cfg.action_scale[0] * 4), -1, 1)
        vz = np.clip((goal_z - pose[2]) / (cfg.step_time * cfg.action_scale[1] * 4), -1, 1)
        placed = abs(goal_x - pose[0]) < 0.02 and abs(goal_z - pose[2]) < 0.02
        tilt = np.clip((np.radians(120) - angle) / 0.4, -1, 1) * 0.8 if placed else 0.0
        return np.array([vx, vz, tilt])
