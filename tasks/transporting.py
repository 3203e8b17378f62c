"""Transporting: move a floating cube to a target position with water flow only.

FluidLab's "Transporting" task (Xian et al., ICLR 2023, Sec. 4): the agent controls a water jet
and must push a floating object to a goal location through the water it moves.

Jet emulation. FluidLab injects new liquid particles from the jet's nozzle; FluxLab's engine has
a fixed particle set, so the jet is emulated physically by a *pump plate*: a vertical paddle (a
thin :class:`engine.geometry.Box`, collider 0, 11 cm wide, narrower than the tank) confined by
its workspace to a pump zone on the -x side of the tank. Advancing the plate displaces water
toward +x; the displaced water spills around the plate's ends and over the cube's side of the
tank as a current (and a surge that sloshes back and forth), and that flow carries the cube. The
workspace ends more than 1.25 dx (the reach of the MPM B-spline stencil, 1.5 dx, less half a
particle spacing) before the cube's start, so plate and cube share no grid node at the start and
never touch as long as the cube is not pushed back toward the pump: the transport happens
through the water. One stroke across the zone moves the cube by about the displaced water
volume over the tank's cross-section, ~3 cm at the cpu preset (a limitation of the emulation:
a real jet adds momentum without the slosh-back of a closed tank).

Scene: the round water tank of :mod:`tasks.gathering` (:class:`tasks.gathering.FloatingBodiesTask`)
with one free rigid 6 cm cube (:class:`engine.solvers.rigid.RigidBody`) of density 500 kg/m^3
floating half-submerged. Actions (2): the plate's
velocity along x and y [m/s] (y steers the current).

Loss (differentiable): squared distance of the cube's centre (its rigid-body position) outside a
disc of radius ``target_radius`` around ``target_xy`` in the horizontal plane, divided by its value
at the start (1 at the start, 0 inside the target). Success: the centroid within the target disc.

CPU preset: 2186 particles, 20^3 grid, 8 substeps of 1.25 ms, horizon 100 (1 s); measured step
time 0.074-0.094 s at B = 1 (see :mod:`tasks.gathering`). Scripted policy (one stroke at 0.24
m/s, then hold): the cube reaches the target disc at step ~30, slides back out with the slosh
(loss ~0.07 at step 60) and ends inside (final loss 0, success). Seeded uniform random policies
(4 seeds): final loss 0.32-3.4, never successful.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from engine.geometry import Box, Shape
from tasks.gathering import AXIS, FloatingBodiesTask, FloatingConfig, cpu_sim, scale_preset


@dataclass(frozen=True)
class TransportingConfig(FloatingConfig):
    """Transporting settings (see :class:`tasks.gathering.FloatingConfig` for the scene).

    Attributes:
        target_xy: (x, y) of the target position [m].
        target_radius: radius of the target disc [m].
        push_speed: plate speed of the scripted pump stroke [fraction of full].
    """

    target_xy: tuple[float, float] = (0.34, 0.25)
    target_radius: float = 0.03
    push_speed: float = 0.6


class Transporting(FloatingBodiesTask):
    """Pump water with a plate in the -x zone of the tank to float a cube onto the target."""

    name = "Transporting"
    render_fps = 25

    @classmethod
    def default_config(cls, preset: str = "cpu") -> TransportingConfig:
        config = TransportingConfig(
            preset="cpu",
            horizon=100,
            sim=cpu_sim(),
            tool=0,
            action_dofs=(0, 1),
            action_scale=(0.4, 0.4),
            workspace=((AXIS - 0.13, AXIS - 0.09, 0.0), (AXIS - 0.04, AXIS + 0.09, 0.5)),
            reset_noise=0.005,
            progress_scale=1.0,
            body_starts=((AXIS + 0.04, AXIS),),
            body_size=0.03,
            tool_size=(0.0175, 0.055, 0.07),
            tool_start=(AXIS - 0.12, AXIS, 0.0),
            target_xy=(AXIS + 0.09, AXIS),
            target_radius=0.03,
            camera_pos=(AXIS, AXIS - 0.31, 0.62),
            look_at=(AXIS, AXIS, 0.05),
        )
        return scale_preset(config, preset, lengths=("target_xy", "target_radius"))

    def body_shape(self) -> Shape:
        """A cube of edge ``2 body_size``."""
        h = self.config.body_size
        return Box((h, h, h))

    def body_color(self) -> tuple[float, float, float]:
        return (1.0, 0.5, 0.1)

    def region_distance(self, c: torch.Tensor) -> torch.Tensor:
        cfg: TransportingConfig = self.config
        tx, ty = cfg.target_xy
        dist = torch.sqrt((c[..., 0] - tx) ** 2 + (c[..., 1] - ty) ** 2 + 1e-12)
        return torch.relu(dist - cfg.target_radius)

    def scripted_action(self, t: int, index: int = 0) -> np.ndarray:
        """One pump stroke: advance the plate across the pump zone at ``push_speed`` and hold it
        at the zone's end; its y follows the cube, offset away from the target line so that the
        current pushes the cube back onto the line."""
        cfg: TransportingConfig = self.config
        c = self.body_centroids(index)[0]
        aim = c[1] - 0.5 * (cfg.target_xy[1] - c[1])
        vy = self.velocity_toward(np.array([self.tool_pose(index)[0], aim]), index)[1]
        return np.array([cfg.push_speed, vy])
