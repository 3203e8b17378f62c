"""Simulation configuration: frozen dataclasses validated on construction.

Units are SI throughout (metres, seconds, kilograms, pascals). The domain is the cube
``[0, domain_size]^3`` with z up; the background grid has ``grid_res`` cells per axis.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from engine.linsolve import METHODS


def _finite(name: str, value: float) -> None:
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value!r}")


#: The values of :attr:`SimConfig.liquid_model`.
LIQUID_MODELS = ("weakly_compressible", "projected")


@dataclass(frozen=True)
class SimConfig:
    """MLS-MPM solver settings.

    Attributes:
        grid_res: background grid cells per axis (dx = domain_size / grid_res).
        domain_size: edge length of the cubic domain [m].
        dt: substep length [s].
        substeps: substeps per control step (one env step / one action).
        gravity: gravitational acceleration [m/s^2], z up.
        boundary_cells: thickness of the domain walls in grid cells; particles must start inside
            ``[boundary_cells*dx, domain_size - boundary_cells*dx]``.
        max_speed: a particle faster than this [m/s] counts as a blow-up; None means the CFL
            speed dx/dt (a particle crossing a whole cell per substep).
        packing_rate: fraction of a liquid's over-packing removed from its J per substep (the
            packing correction of engine/solvers/mpm_kernels.py), in [0, 1); 0 (the default)
            turns it off. 0.05 bounds the volume a liquid loses against colliders, but shifts a
            resting column's pressure by 3-4 % and depends on where a wall lies between grid
            nodes (benchmarks/validation.py, case ``hydrostatic``).
        liquid_model: how liquid (``fluid``-model) materials resist compression.
            ``"weakly_compressible"`` (the default): an equation-of-state pressure K (1 - J), an
            explicit step limited by the sound speed sqrt(K / rho). ``"projected"``: a pressure
            projection on the grid nodes each substep (engine/solvers/pressure.py); the liquid's
            bulk modulus is unused, the step is limited by advection (and explicit viscosity).
            Not combined with free rigid bodies (engine/solvers/rigid.py).
        pressure_solver: Poisson method of the projected liquid's pressure solve, one of
            ``engine.linsolve.METHODS``; MIC(0)-PCG by default, the fastest with its setup on the
            liquid tasks' systems, whose flags change every substep
            (benchmarks/results/liquid_projection.json, ``solvers``).
        pressure_rtol: relative residual ||b - A p|| / ||b|| of that solve, in (0, 1).
    """

    grid_res: int = 64
    domain_size: float = 1.0
    dt: float = 2e-4
    substeps: int = 10
    gravity: tuple[float, float, float] = (0.0, 0.0, -9.81)
    boundary_cells: int = 3
    max_speed: float | None = None
    packing_rate: float = 0.0
    liquid_model: str = "weakly_compressible"
    pressure_solver: str = "mic0"
    pressure_rtol: float = 1e-5

    def __post_init__(self):
        if not isinstance(self.grid_res, int) or self.grid_res < 8:
            raise ValueError(f"grid_res must be an int >= 8, got {self.grid_res!r}")
        for name in ("domain_size", "dt"):
            value = getattr(self, name)
            _finite(name, value)
            if value <= 0:
                raise ValueError(f"{name} must be > 0, got {value!r}")
        if not isinstance(self.substeps, int) or self.substeps < 1:
            raise ValueError(f"substeps must be an int >= 1, got {self.substeps!r}")
        if len(self.gravity) != 3:
            raise ValueError(f"gravity must have 3 components, got {self.gravity!r}")
        for g in self.gravity:
            _finite("gravity", g)
        if not isinstance(self.boundary_cells, int) or not 1 <= self.boundary_cells < self.grid_res // 4:
            raise ValueError(f"boundary_cells must be an int in [1, grid_res/4), got {self.boundary_cells!r}")
        _finite("packing_rate", self.packing_rate)
        if not 0.0 <= self.packing_rate < 1.0:
            raise ValueError(f"packing_rate must be in [0, 1), got {self.packing_rate!r}")
        if self.liquid_model not in LIQUID_MODELS:
            raise ValueError(f"liquid_model must be one of {LIQUID_MODELS}, got {self.liquid_model!r}")
        if self.liquid_model == "projected" and self.packing_rate > 0.0:
            raise ValueError(
                "packing_rate corrects the weakly compressible liquid's J; it must be 0 with "
                f"liquid_model='projected', got {self.packing_rate!r}"
            )
        if self.pressure_solver not in METHODS:
            raise ValueError(f"pressure_solver must be one of {METHODS}, got {self.pressure_solver!r}")
        _finite("pressure_rtol", self.pressure_rtol)
        if not 0.0 < self.pressure_rtol < 1.0:
            raise ValueError(f"pressure_rtol must be in (0, 1), got {self.pressure_rtol!r}")
        if self.max_speed is not None:
            _finite("max_speed", self.max_speed)
            if self.max_speed <= 0:
                raise ValueError(f"max_speed must be > 0, got {self.max_speed!r}")

    @property
    def dx(self) -> float:
        """Grid spacing [m]."""
        return self.domain_size / self.grid_res

    @property
    def speed_limit(self) -> float:
        """Blow-up threshold on particle speed [m/s]."""
        return self.max_speed if self.max_speed is not None else self.dx / self.dt
