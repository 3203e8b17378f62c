"""LatteArt: pour milk from a held pitcher onto coffee so the milk draws a target pattern.

FluidLab's "Latte Art" task (Xian et al., ICLR 2023, Sec. 4): milk poured onto the surface of a
cup of coffee must form a goal pattern seen from above. The scene here: a wide cup on the floor
holds a layer of coffee (``COFFEE`` preset, dark brown); above it the agent holds a small pitcher
(the tool, a ``Cup`` collider) filled with steamed milk (near white): the ``MILK`` preset's
viscosity and color at the density of microfoam (:data:`STEAMED_MILK`), because with the preset's
1030 kg/m^3 the milk sinks under the 1000 kg/m^3 coffee and no pattern is visible from above.

Departure from FluidLab: FluidLab emits milk from a nozzle (particles are activated over time).
FluxLab's engine has a fixed particle set, so the milk is all there from the start, in the
pitcher, and reaches the coffee by being poured: the agent moves the pitcher in x-y and tilts it
about the world y axis (positive tilt lowers the rim toward +x). Where and how fast milk lands
is thus set by the pitcher's pose and tilt rate, as in a barista's pour.

Actions (3): pitcher velocity along x and y [m/s] and angular velocity about y [rad/s], about
the pitcher's outer bottom centre.

Loss (differentiable): :func:`tasks.targets.chamfer` between the milk particles and the target
pattern (``latte_heart``, 2-D, in the coffee cup's x-y frame) laid on the coffee surface. A
milk particle is compared by its x-y position plus, as an extra orthogonal offset, how far it is
above the surface layer (``relu(z - z_top)``), so milk still in the pitcher is far from the
pattern and milk in the coffee layer is scored by where it lies in x-y, whatever its depth (the
layer is only ~2 cells deep at the cpu preset, so the top view shows it). Divided by
``loss_scale`` = 0.4 m (the loss starts at ~1.4). Success: loss <= ``success_loss``.

The shared pieces (coffee cup, coffee, loss) live in :class:`LatteTask`, which
:mod:`tasks.latte_art_stir` reuses.

cpu preset: 1723 particles (268 milk, 1455 coffee), 24^3 grid (dx = 1/32 m), 10 substeps of
0.8 ms, horizon 150 (1.2 s). Measured env step (step + observe + loss, f32, B = 1) on the shared
2-core machine at load average ~4: median 0.065 s in the quietest of 4 rounds (0.065-0.11 s;
Pouring measured 0.071 s alongside); B = 8: 0.30 s. The scripted pour reaches loss 0.08 (f32
and f64) from 1.44; seeded random policies end at 1.24-1.37.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch

from engine import sampling
from engine.colliders import BoundaryCondition, Collider
from engine.config import SimConfig
from engine.geometry import Cup
from engine.materials import COFFEE, MILK
from engine.scene import SceneBuilder
from tasks.base import ParticleTask, TaskConfig
from tasks.targets import chamfer, load_metadata, load_target

#: Steamed milk: the MILK preset with the density of microfoam (milk with ~40 % fine air bubbles),
#: which is what floats on espresso and carries the pattern in real latte art.
#: Foam is also more compressible; the halved bulk modulus keeps its sound speed (18 m/s) near
#: the MILK preset's (20 m/s), so the explicit step's CFL number c dt / dx is 0.47 at dx = 1/32 m,
#: dt = 0.8 ms (with E = 4e5 Pa it is 0.66, and isolated falling drops blew up).
STEAMED_MILK = replace(MILK, name="steamed_milk", density=600.0, E=2e5)

# Scripted pour (times in simulated seconds): tilt fast to POUR_TILT0, then from POUR_START to
# POUR_END tilt on to ``max_tilt`` while the lip sweeps from SWEEP[0] to SWEEP[1] (x offsets from
# the cup axis [m], lobes to tip) and wiggles in y by WIGGLE [m] with period WIGGLE_PERIOD [s].
POUR_TILT0 = 1.4
POUR_START, POUR_END = 0.42, 1.14
SWEEP = (-0.14, 0.02)
WIGGLE, WIGGLE_PERIOD = 0.04, 0.24


@dataclass(frozen=True)
class LatteConfig(TaskConfig):
    """Settings shared by the latte tasks (see :class:`tasks.base.TaskConfig` for the rest).

    Attributes:
        cup_center: (x, y) of the coffee cup's axis [m]; it stands on the floor.
        cup_radius, cup_height: outer size of the coffee cup [m].
        coffee_height: depth of the coffee layer [m].
        surface_band: milk up to this far above the coffee surface counts as on it [m].
        target: name of the 2-D target in :mod:`tasks.targets`.
        loss_scale: length [m] the Chamfer distance is divided by (so the start is O(1)).
    """

    cup_center: tuple[float, float] = (0.375, 0.375)
    cup_radius: float = 0.24
    cup_height: float = 0.13
    coffee_height: float = 0.06
    surface_band: float = 0.03
    target: str = "latte_heart"
    loss_scale: float = 0.4


@dataclass(frozen=True)
class LatteArtConfig(LatteConfig):
    """LatteArt settings.

    Attributes:
        pitcher_pos: (x, y, z) of the pitcher's outer bottom centre at the start [m].
        pitcher_radius, pitcher_height: outer size of the pitcher [m].
        milk_height: height of the milk column in the pitcher [m].
        max_tilt: the scripted policy's pouring angle [rad].
    """

    pitcher_pos: tuple[float, float, float] = (0.17, 0.375, 0.42)
    pitcher_radius: float = 0.12
    pitcher_height: float = 0.11
    milk_height: float = 0.07
    max_tilt: float = 2.5


class LatteTask(ParticleTask):
    """Coffee in a wide cup plus milk somewhere; the loss matches the milk to a 2-D pattern.

    Subclasses add the milk and the tool in :meth:`add_milk_and_tool`, which must add the tool
    as collider ``config.tool`` (0) before the coffee cup is added.
    """

    @staticmethod
    def sim_config(preset: str) -> SimConfig:
        """Solver settings of the latte tasks at ``preset``.

        cpu: dx = 1/32 m on a 0.75 m domain (24^3 nodes), 10 substeps of 0.8 ms (8 ms per env
        step); the fastest wave is the steamed milk's sound speed, c dt / dx = 0.47.
        paper: dx = 1/96 m (FluidLab's resolution class), 80 substeps of 0.1 ms, same 8 ms step.
        """
        if preset == "cpu":
            return SimConfig(grid_res=24, domain_size=0.75, dt=8e-4, substeps=10)
        if preset == "paper":
            return SimConfig(grid_res=72, domain_size=0.75, dt=1e-4, substeps=80)
        raise ValueError(f"preset must be 'cpu' or 'paper', got {preset!r}")

    def _wall(self) -> float:
        return max(0.035, 1.1 * self.config.sim.dx)

    def _floor(self) -> float:
        return self.config.sim.boundary_cells * self.config.sim.dx

    def cup_inner_radius(self) -> float:
        return self.config.cup_radius - self._wall()

    def coffee_surface(self) -> float:
        """Height of the coffee surface at rest [m]."""
        return self._floor() + self._wall() + self.config.coffee_height

    def add_milk_and_tool(self, builder: SceneBuilder, spacing: float) -> None:
        """Add the tool (as collider 0) and the milk particles (``STEAMED_MILK``)."""
        raise NotImplementedError

    def keep_coffee(self, points: np.ndarray) -> np.ndarray:
        """(n,) bool: which lattice points of the coffee layer get a coffee particle (default all)."""
        return np.ones(len(points), dtype=bool)

    def build_scene(self):
        cfg: LatteConfig = self.config
        spacing = 0.5 * cfg.sim.dx
        wall = self._wall()
        target = load_target(cfg.target)
        meta = load_metadata(cfg.target)
        r_in = self.cup_inner_radius()
        if abs(meta["cup_inner_radius"] - r_in) > 1e-9 or np.max(np.hypot(*target.T)) > r_in:
            raise ValueError(
                f"{self.name}: target {cfg.target!r} is drawn for a cup of inner radius "
                f"{meta['cup_inner_radius']} m, this cup's is {r_in:.4g} m"
            )
        self._target = torch.as_tensor(target + np.asarray(cfg.cup_center))
        builder = SceneBuilder(cfg.sim)
        self.add_milk_and_tool(builder, spacing)
        cx, cy = cfg.cup_center
        cup = Collider(Cup(cfg.cup_radius, cfg.cup_height, wall), pose=(cx, cy, self._floor(), 1.0, 0.0, 0.0, 0.0))
        builder.add_collider(cup)
        bottom = (cx, cy, self._floor() + wall + 0.5 * spacing)
        coffee = sampling.cylinder(bottom, r_in - 0.75 * spacing, cfg.coffee_height - 0.5 * spacing, spacing)
        builder.add_particles(coffee[self.keep_coffee(coffee)], COFFEE, spacing, hydrostatic=True)
        model = builder.build()
        self._milk = torch.as_tensor(np.flatnonzero(model.material_id == model.materials.index(STEAMED_MILK)))
        return model

    def state_loss(self, x: torch.Tensor, v: torch.Tensor, pose: torch.Tensor) -> torch.Tensor:
        cfg: LatteConfig = self.config
        milk = x[:, self._milk]
        above = torch.relu(milk[..., 2] - (self.coffee_surface() + cfg.surface_band))
        return chamfer(milk[..., :2], self._target, extra=above) / cfg.loss_scale


class LatteArt(LatteTask):
    """Tilt and move the milk pitcher to pour the target pattern onto the coffee."""

    name = "LatteArt"
    render_fps = 20

    @classmethod
    def default_config(cls, preset: str = "cpu") -> LatteArtConfig:
        return LatteArtConfig(
            preset=preset,
            horizon=150,
            sim=cls.sim_config(preset),
            tool=0,
            action_dofs=(0, 1, 4),
            action_scale=(0.5, 0.5, 4.0),
            workspace=((0.12, 0.2, 0.3), (0.63, 0.55, 0.5)),
            reset_noise=0.01,
            progress_scale=1.0,
            success_loss=0.1,
            camera_pos=(0.34, -0.16, 0.9),
            look_at=(0.33, 0.36, 0.27),
        )

    def add_milk_and_tool(self, builder: SceneBuilder, spacing: float) -> None:
        cfg: LatteArtConfig = self.config
        wall = self._wall()
        pitcher = Cup(cfg.pitcher_radius, cfg.pitcher_height, wall)
        builder.add_collider(
            Collider(
                pitcher,
                pose=(*cfg.pitcher_pos, 1.0, 0.0, 0.0, 0.0),
                boundary=BoundaryCondition(friction=0.2, mode="slip"),
            )
        )
        px, py, pz = cfg.pitcher_pos
        bottom = (px, py, pz + wall + 0.5 * spacing)
        milk = sampling.cylinder(bottom, cfg.pitcher_radius - wall - 0.75 * spacing, cfg.milk_height, spacing)
        builder.add_particles(milk, STEAMED_MILK, spacing, hydrostatic=True)

    def _lip(self, pose: np.ndarray) -> tuple[float, float]:
        """Pitcher tilt angle about y [rad] and world x of its pouring lip [m]."""
        cfg: LatteArtConfig = self.config
        angle = 2.0 * np.arctan2(pose[5], pose[3])
        return angle, pose[0] + cfg.pitcher_radius * np.cos(angle) + cfg.pitcher_height * np.sin(angle)

    def scripted_action(self, t: int, index: int = 0) -> np.ndarray:
        """Tilt up to ``max_tilt`` while the lip sweeps across the pattern from the lobes to the
        tip (+x) with a side-to-side wiggle in y, like a barista's heart pour."""
        cfg: LatteArtConfig = self.config
        pose = self.tool_pose(index)
        angle, lip_x = self._lip(pose)
        cx, cy = cfg.cup_center
        time = t * cfg.step_time
        s = np.clip((time - POUR_START) / (POUR_END - POUR_START), 0.0, 1.0)
        goal_angle = POUR_TILT0 + (cfg.max_tilt - POUR_TILT0) * s
        goal_x = cx + SWEEP[0] + (SWEEP[1] - SWEEP[0]) * s
        goal_y = cy + WIGGLE * np.sin(2.0 * np.pi * time / WIGGLE_PERIOD) * (s > 0)
        gain = cfg.step_time * 4
        vx = np.clip((goal_x - lip_x) / (gain * cfg.action_scale[0]), -1.0, 1.0)
        vy = np.clip((goal_y - pose[1]) / (gain * cfg.action_scale[1]), -1.0, 1.0)
        tilt = np.clip((goal_angle - angle) / (gain * cfg.action_scale[2]), -1.0, 1.0)
        return np.array([vx, vy, tilt])
