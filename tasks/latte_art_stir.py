"""LatteArtStir: stir a blob of milk floating on coffee into a target swirl.

FluidLab's "Latte Art (Stir)" task (Xian et al., ICLR 2023, Sec. 4): a blob of milk floats on a
cup of coffee and the agent drags a thin stirrer through the liquids so the milk, seen from
above, forms a goal pattern. The scene reuses :class:`tasks.latte_art.LatteTask`: the same
wide cup and coffee layer (``COFFEE``), the same steamed milk (the ``MILK`` preset at microfoam
density, so it floats) as a disk in the top of the coffee layer, and a vertical capsule (the
tool) that reaches near the cup's bottom.

Actions (2): the stirrer's velocity along x and y [m/s].

Loss (differentiable): the 2-D Chamfer distance of :class:`tasks.latte_art.LatteTask` between
the milk particles and the ``latte_swirl`` target (a two-turn spiral band on the coffee
surface), divided by ``loss_scale`` = 0.06 m (the loss starts at ~1.1). Success: loss <=
``success_loss``.

cpu preset: 1428 particles (112 milk, 1316 coffee), 24^3 grid (dx = 1/32 m), 10 substeps of
0.8 ms, horizon 120 (0.96 s). Measured env step (f32, B = 1, shared 2-core machine at load ~4):
median 0.051 s in the quietest of 4 rounds (0.051-0.11 s); B = 8: 0.17 s. The scripted spiral
draws a visible swirl and lowers the loss from 1.11 to 0.81 (f64); seeded random policies end at
0.99-1.12. Neither reaches ``success_loss`` = 0.6.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engine import sampling
from engine.colliders import BoundaryCondition, Collider
from engine.geometry import Capsule
from engine.scene import SceneBuilder
from tasks.latte_art import STEAMED_MILK, LatteConfig, LatteTask
from tasks.targets import SWIRL_RADII, SWIRL_TURNS

#: The scripted stirrer traces the target's spiral from the centre outward in this many
#: simulated seconds.
SPIRAL_TIME = 0.9


@dataclass(frozen=True)
class LatteArtStirConfig(LatteConfig):
    """LatteArtStir settings.

    Attributes:
        blob_radius: radius of the milk disk (centred on the cup axis) [m].
        blob_thickness: thickness of the milk disk, the top of the coffee layer [m].
        stirrer_radius: radius of the capsule [m] (>= 0.55 dx so the grid resolves it).
        stirrer_start: (x, y) of the stirrer at the start [m].
    """

    target: str = "latte_swirl"
    loss_scale: float = 0.06
    blob_radius: float = 0.07
    blob_thickness: float = 0.04
    stirrer_radius: float = 0.02
    stirrer_start: tuple[float, float] = (0.375, 0.375)


class LatteArtStir(LatteTask):
    """Move the stirrer through the milk blob to draw the target swirl."""

    name = "LatteArtStir"
    render_fps = 20

    @classmethod
    def default_config(cls, preset: str = "cpu") -> LatteArtStirConfig:
        return LatteArtStirConfig(
            preset=preset,
            horizon=120,
            sim=cls.sim_config(preset),
            tool=0,
            action_dofs=(0, 1),
            action_scale=(1.0, 1.0),
            workspace=((0.2, 0.2, 0.0), (0.55, 0.55, 0.75)),
            reset_noise=0.005,
            progress_scale=1.0,
            success_loss=0.6,
            camera_pos=(0.375, -0.05, 0.8),
            look_at=(0.375, 0.33, 0.17),
        )

    def _blob(self) -> tuple[float, float, float]:
        """(x, y, z_bottom) of the milk disk [m]."""
        cfg: LatteArtStirConfig = self.config
        surface = self._floor() + self._wall() + cfg.coffee_height
        return cfg.cup_center[0], cfg.cup_center[1], surface - cfg.blob_thickness

    def add_milk_and_tool(self, builder: SceneBuilder, spacing: float) -> None:
        cfg: LatteArtStirConfig = self.config
        bottom = self._floor() + self._wall()
        top = bottom + cfg.coffee_height + 0.06
        z_lo = bottom + 0.5 * self._wall()
        half = 0.5 * (top - z_lo)
        pose = (*cfg.stirrer_start, z_lo + half, 1.0, 0.0, 0.0, 0.0)
        builder.add_collider(
            Collider(Capsule(cfg.stirrer_radius, half), pose=pose, boundary=BoundaryCondition(mode="slip"))
        )
        bx, by, bz = self._blob()
        disk = sampling.cylinder((bx, by, bz + 0.5 * spacing), cfg.blob_radius, cfg.blob_thickness - spacing, spacing)
        builder.add_particles(disk[self._outside_stirrer(disk)], STEAMED_MILK, spacing, hydrostatic=True)

    def _outside_stirrer(self, points: np.ndarray) -> np.ndarray:
        cfg: LatteArtStirConfig = self.config
        r = np.hypot(points[:, 0] - cfg.stirrer_start[0], points[:, 1] - cfg.stirrer_start[1])
        return r > cfg.stirrer_radius + 0.25 * cfg.sim.dx

    def keep_coffee(self, points: np.ndarray) -> np.ndarray:
        cfg: LatteArtStirConfig = self.config
        bx, by, bz = self._blob()
        in_blob = (np.hypot(points[:, 0] - bx, points[:, 1] - by) <= cfg.blob_radius) & (points[:, 2] >= bz)
        return ~in_blob & self._outside_stirrer(points)

    def scripted_action(self, t: int, index: int = 0) -> np.ndarray:
        """Follow the target spiral ``r = r0 + (r1 - r0) theta / (2 pi turns)`` outward: milk
        caught by the stirrer trails behind it along the path."""
        cfg: LatteArtStirConfig = self.config
        r0, r1 = SWIRL_RADII
        frac = min(1.0, (t + 1) * cfg.step_time / SPIRAL_TIME)
        theta = 2.0 * np.pi * SWIRL_TURNS * frac
        r = r0 + (r1 - r0) * frac
        goal = np.array(cfg.cup_center) + r * np.array([np.cos(theta), np.sin(theta)])
        pose = self.tool_pose(index)
        vel = (goal - pose[:2]) / cfg.step_time
        return np.clip(vel / np.array(cfg.action_scale), -1.0, 1.0)
