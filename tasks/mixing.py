"""Mixing: stir two liquids in a cup until they are mixed.

FluidLab's "Mixing" task (Xian et al., ICLR 2023, Sec. 4): two liquids start unmixed in a
container and the agent moves a stirring rod to mix them. Here a water-like liquid (blue,
eta = 1e-3 Pa s) and a coffee-like liquid (brown, eta = 0.05 Pa s), both 1000 kg/m^3, start side
by side (interface the plane x = cup axis) in a cup (:class:`engine.geometry.Cup`, slip walls);
the tool (collider 0) is a vertical :class:`engine.geometry.Capsule` rod reaching from just
above the bottom to above the surface. Actions (2): the rod's velocity along x and y [m/s].

Loss (differentiable): a soft-binned non-mixedness. Coarse cells j with centres c_j on an
``cells[0] x cells[1] x cells[2]`` lattice over the liquid column collect particle masses with a
Gaussian kernel of width ``sigma`` = half the cell spacing, w_pj = exp(-|x_p - c_j|^2 / (2 sigma^2)):
M_j = sum_p m_p w_pj, A_j = sum_{p in water} m_p w_pj, concentration q_j = A_j / M_j. The
mass-weighted variance V = sum_j M_j (q_j - qbar)^2 / sum_j M_j around the overall fraction
qbar = sum_j A_j / sum_j M_j is the intensity of segregation (Danckwerts 1952, "The definition and
measurement of some characteristics of mixtures"); ``loss = V / V_0`` with V_0 its value at the
model's initial state, so the loss is 1 unmixed and 0 when every cell holds the overall fraction.
Success: ``loss <= success_loss`` (0.3).

CPU preset: 2478 particles (1223 water, 1255 coffee), dx = 2 cm (20^3 nodes over a 0.4 m
domain), 8 substeps of 1 ms, horizon 150 (1.2 s). Measured env step (f32, 2 CPU threads, B = 1,
median of 20 steps): 0.064-0.076 s; B = 8: 0.14 s. Scripted figure-eight: loss 0.68 at step 50,
0.43 at 100, 0.26 at the end (success); seeded uniform random policies (4 seeds): 0.68-0.84, never
successful. Paper preset: the cup scaled by 2 in a 1 m domain at 96^3 nodes (2.5e5 particles), 50
substeps of 0.2 ms, 120 steps (the same 1.2 s).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import torch

from engine import sampling
from engine.colliders import BoundaryCondition, Collider
from engine.config import SimConfig
from engine.geometry import Capsule, Cup
from engine.materials import COFFEE, WATER
from engine.scene import SceneBuilder
from tasks.base import ParticleTask, TaskConfig

#: The two liquids: weakly compressible (bulk modulus 1e5 Pa, sound speed 10 m/s, so c dt/dx =
#: 0.5 at the cpu preset), same density, distinct names, colors and viscosities.
MIX_WATER = replace(WATER, name="mix_water", E=1e5, color=(0.25, 0.5, 0.95))
MIX_COFFEE = replace(COFFEE, name="mix_coffee", E=1e5, color=(0.4, 0.22, 0.08))


@dataclass(frozen=True)
class MixingConfig(TaskConfig):
    """Mixing settings (see :class:`tasks.base.TaskConfig` for the shared fields).

    Attributes:
        cup_radius, cup_height: outer size of the cup, centred on the domain's vertical axis [m].
        fill_height: height of the liquid column at the start [m].
        rod_radius: radius of the stirring rod [m].
        rod_clearance: gap between the cup bottom and the rod's lower end [m].
        cells: (nx, ny, nz) coarse cells of the mixing measure over the liquid column.
        stir_radius: (scripted policy) radius of the rod's figure-eight path [m].
        stir_period: (scripted policy) period of the figure-eight [s].
    """

    cup_radius: float = 0.13
    cup_height: float = 0.2
    fill_height: float = 0.1
    rod_radius: float = 0.02
    rod_clearance: float = 0.015
    cells: tuple[int, int, int] = (4, 4, 2)
    stir_radius: float = 0.07
    stir_period: float = 1.0

    def __post_init__(self):
        super().__post_init__()
        if len(self.cells) != 3 or any(int(n) < 1 for n in self.cells):
            raise ValueError(f"cells must be three ints >= 1, got {self.cells!r}")
        for name in ("cup_radius", "cup_height", "fill_height", "rod_radius", "stir_radius", "stir_period"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)!r}")


class Mixing(ParticleTask):
    """Stir water and coffee, initially side by side, into a uniform mixture."""

    name = "Mixing"
    render_fps = 25

    @classmethod
    def default_config(cls, preset: str = "cpu") -> MixingConfig:
        if preset == "cpu":
            # dx = 2 cm over a 0.4 m domain (20^3 nodes), 8 substeps of 1 ms per env step.
            sim = SimConfig(grid_res=20, domain_size=0.4, dt=1e-3, substeps=8)
            k, horizon = 1.0, 150
        elif preset == "paper":
            # FluidLab's scale: the cup scaled by 2 in a 1 m domain at 96^3 nodes (~2.7e5
            # particles), 50 substeps of 0.2 ms; the same 1.2 s of stirring.
            sim = SimConfig(grid_res=96, domain_size=1.0, dt=2e-4, substeps=50)
            k, horizon = 2.0, 120
        else:
            raise ValueError(f"preset must be 'cpu' or 'paper', got {preset!r}")
        c = 0.5 * sim.domain_size
        return MixingConfig(
            preset=preset,
            horizon=horizon,
            sim=sim,
            tool=0,
            action_dofs=(0, 1),
            action_scale=(0.5 * k, 0.5 * k),
            workspace=((c - 0.09 * k, c - 0.09 * k, 0.0), (c + 0.09 * k, c + 0.09 * k, sim.domain_size)),
            reset_noise=0.005 * k,
            progress_scale=1.0,
            success_loss=0.3,
            cup_radius=0.13 * k,
            cup_height=0.2 * k,
            fill_height=0.1 * k,
            rod_radius=0.02 * k,
            rod_clearance=0.015 * k,
            stir_radius=0.07 * k,
            camera_pos=(c, c - 0.35 * k, c + 0.35 * k),
            look_at=(c, c, 0.08 * k),
        )

    # ------------------------------------------------------------------ geometry
    def _wall(self) -> float:
        return 1.5 * self.config.sim.dx

    def _floor(self) -> float:
        return self.config.sim.boundary_cells * self.config.sim.dx

    def _axis(self) -> float:
        return 0.5 * self.config.sim.domain_size

    def build_scene(self):
        cfg: MixingConfig = self.config
        spacing = 0.5 * cfg.sim.dx
        c, wall = self._axis(), self._wall()
        bottom = self._floor() + wall
        liquid = sampling.cylinder(
            (c, c, bottom + 0.5 * spacing), cfg.cup_radius - wall - 0.75 * spacing, cfg.fill_height, spacing
        )
        rod_pose = self._rod_start(bottom)
        rod_shape = Capsule(cfg.rod_radius, 0.5 * cfg.cup_height)
        rod = Collider(rod_shape, pose=rod_pose, boundary=BoundaryCondition(friction=0.0, mode="separate"))
        free = rod.sdf(liquid)[0] > 0.5 * spacing
        left = liquid[:, 0] < c
        builder = SceneBuilder(cfg.sim)
        builder.add_particles(liquid[left & free], MIX_WATER, spacing, hydrostatic=True)
        builder.add_particles(liquid[~left & free], MIX_COFFEE, spacing, hydrostatic=True)
        builder.add_collider(rod)
        builder.add_collider(
            Collider(
                Cup(cfg.cup_radius, cfg.cup_height, wall),
                pose=(c, c, self._floor(), 1.0, 0.0, 0.0, 0.0),
                boundary=BoundaryCondition(friction=0.0, mode="slip"),
            )
        )
        model = builder.build()
        self._water = torch.as_tensor(model.material_id == 0, dtype=torch.float64)
        density = np.array([m.density for m in model.materials])[model.material_id]
        self._mass = torch.as_tensor(model.volume * density)
        self._centres, self._sigma = self._cell_lattice(bottom)
        self._v0 = float(self.segregation(torch.as_tensor(model.x0)[None])[0])
        return model

    def _rod_start(self, bottom: float) -> tuple[float, ...]:
        """Rod pose at the start: on the first point of the scripted path, lower end
        ``rod_clearance`` above the cup bottom."""
        cfg: MixingConfig = self.config
        c = self._axis()
        z = bottom + cfg.rod_clearance + cfg.rod_radius + 0.5 * cfg.cup_height
        x, y = self._path(0.0)
        return (c + x, c + y, z, 1.0, 0.0, 0.0, 0.0)

    def _path(self, time: float) -> tuple[float, float]:
        """(x, y) offset from the cup axis of the scripted figure-eight at ``time`` [s]: a sweep
        across the interface (x) with a double-frequency sideways swing (y)."""
        cfg: MixingConfig = self.config
        phase = 2.0 * math.pi * time / cfg.stir_period
        return cfg.stir_radius * math.sin(phase), 0.6 * cfg.stir_radius * math.sin(2.0 * phase)

    def _cell_lattice(self, bottom: float) -> tuple[torch.Tensor, float]:
        """(n_cells, 3) centres of the coarse cells over the liquid column and the kernel width [m]."""
        cfg: MixingConfig = self.config
        c = self._axis()
        r = cfg.cup_radius - self._wall()
        nx, ny, nz = cfg.cells
        xs = c - r + (np.arange(nx) + 0.5) * 2 * r / nx
        ys = c - r + (np.arange(ny) + 0.5) * 2 * r / ny
        zs = bottom + (np.arange(nz) + 0.5) * cfg.fill_height / nz
        grid = np.stack(np.meshgrid(xs, ys, zs, indexing="ij"), axis=-1).reshape(-1, 3)
        sigma = 0.5 * min(2 * r / nx, 2 * r / ny, cfg.fill_height / nz)
        return torch.as_tensor(grid), sigma

    # ------------------------------------------------------------------ loss
    def segregation(self, x: torch.Tensor) -> torch.Tensor:
        """(B,) intensity of segregation V (see the module docstring) of positions x (B, N, 3)."""
        dtype = x.dtype
        centres = self._centres.to(dtype)
        d2 = ((x[:, :, None, :] - centres[None, None]) ** 2).sum(-1)  # (B, N, cells)
        w = torch.exp(-0.5 * d2 / self._sigma**2) * self._mass.to(dtype)[None, :, None]
        M = w.sum(dim=1)  # (B, cells)
        A = (w * self._water.to(dtype)[None, :, None]).sum(dim=1)
        total = M.sum(dim=-1, keepdim=True)
        mean = A.sum(dim=-1, keepdim=True) / total
        q = A / (M + 1e-12 * total)
        return (M * (q - mean) ** 2).sum(dim=-1) / total[:, 0]

    def state_loss(self, x: torch.Tensor, v: torch.Tensor, pose: torch.Tensor) -> torch.Tensor:
        return self.segregation(x) / self._v0

    def scripted_action(self, t: int, index: int = 0) -> np.ndarray:
        """Follow a figure-eight across the interface (period ``stir_period``)."""
        cfg: MixingConfig = self.config
        c = self._axis()
        x, y = self._path((t + 1) * cfg.step_time)
        pose = self.tool_pose(index)
        scale = np.asarray(cfg.action_scale)
        return np.clip((np.array([c + x, c + y]) - pose[:2]) / (cfg.step_time * scale), -1.0, 1.0)
