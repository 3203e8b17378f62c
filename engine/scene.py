"""Scene construction: particles (with materials and rigid bodies) and colliders -> Model.

Validation happens here, once, with errors that name the offending field: particles outside the
domain interior, non-finite values, non-physical materials, and explicit-step stability (the
elastic wave speed must satisfy c*dt <= dx, the explicit viscous step eta*dt/(rho*dx^2) <= 1/6).
"""

from __future__ import annotations

import numpy as np

from engine.config import SimConfig
from engine.hydrostatic import hydrostatic_start
from engine.materials import FLUID, RIGID, Material
from engine.state import Model


def check_stability(material: Material, config: SimConfig) -> None:
    """Raise ValueError if an explicit substep of ``config.dt`` is unstable for ``material``
    (a projected liquid has no sound speed: its pressure is solved for, engine/solvers/pressure.py)."""
    projected = material.kind == FLUID and config.liquid_model == "projected"
    c = 0.0 if projected else material.wave_speed()
    if c * config.dt > config.dx:
        raise ValueError(
            f"material {material.name!r}: wave speed {c:.3g} m/s with dt={config.dt:g} s crosses more "
            f"than one cell (dx={config.dx:.3g} m) per substep; lower E or dt"
        )
    if material.kind == FLUID:
        diffusion = material.viscosity * config.dt / (material.density * config.dx**2)
        if diffusion > 1.0 / 6.0:
            raise ValueError(
                f"material {material.name!r}: viscosity {material.viscosity:g} Pa s is unstable with "
                f"dt={config.dt:g} s (eta*dt/(rho*dx^2) = {diffusion:.3g} > 1/6); lower viscosity or dt"
            )


class SceneBuilder:
    """Collects particles and colliders, then :meth:`build` returns an immutable Model."""

    def __init__(self, config: SimConfig | None = None):
        self.config = config or SimConfig()
        self._materials: list[Material] = []
        self._points: list[np.ndarray] = []
        self._velocities: list[np.ndarray] = []
        self._material_ids: list[np.ndarray] = []
        self._volumes: list[np.ndarray] = []
        self._J0: list[np.ndarray] = []
        self._body_ids: list[np.ndarray] = []
        self._n_bodies = 0
        self._colliders: list = []
        self._sensors: list = []
        self._rigid: list = []

    @property
    def n_particles(self) -> int:
        return int(sum(len(p) for p in self._points))

    def _material_index(self, material: Material) -> int:
        if material not in self._materials:
            check_stability(material, self.config)
            self._materials.append(material)
        return self._materials.index(material)

    def add_particles(
        self,
        points: np.ndarray,
        material: Material,
        spacing: float,
        velocity=(0.0, 0.0, 0.0),
        hydrostatic: bool = False,
    ) -> range:
        """Add particles of one material; a ``rigid`` material makes them one rigid body.

        Args:
            points: (n, 3) positions [m], e.g. from :mod:`engine.sampling`.
            material: the material of all these particles.
            spacing: sampling spacing [m]; each particle's rest volume is spacing^3.
            velocity: initial velocity [m/s], (3,) or (n, 3).
            hydrostatic: (liquids) start the particles as a body at rest in hydrostatic equilibrium
                under the config's gravity (:func:`engine.hydrostatic.hydrostatic_start`): the free
                surface is the top of these particles plus half a spacing, each particle gets
                J0 = 1 - rho g d / K at its depth d below it and moves down by the compression of
                the liquid beneath it. Otherwise J0 = 1. A ``projected`` liquid
                (``SimConfig.liquid_model``) rests uncompressed, so there it changes nothing.

        Returns:
            The index range of the new particles.
        """
        points = np.asarray(points, dtype=np.float64)
        if points.ndim != 2 or points.shape[1] != 3 or len(points) == 0:
            raise ValueError(f"points must have shape (n, 3) with n > 0, got {points.shape}")
        if not np.all(np.isfinite(points)):
            raise ValueError("points contain NaN/Inf")
        if not (np.isfinite(spacing) and spacing > 0):
            raise ValueError(f"spacing must be > 0, got {spacing!r}")
        cfg = self.config
        J0 = np.ones(len(points))
        if hydrostatic:
            if material.kind != FLUID:
                raise ValueError(f"hydrostatic: material {material.name!r} is {material.model!r}, not a fluid")
            if cfg.liquid_model != "projected":
                points, J0 = hydrostatic_start(points, material.density, material.E, float(spacing), cfg.gravity)
        lo = cfg.boundary_cells * cfg.dx
        hi = cfg.domain_size - cfg.boundary_cells * cfg.dx
        outside = np.any((points < lo) | (points > hi), axis=1)
        if outside.any():
            first = points[np.argmax(outside)]
            raise ValueError(
                f"points: {int(outside.sum())} particles lie outside the domain interior "
                f"[{lo:.4g}, {hi:.4g}]^3 (e.g. {first.tolist()})"
            )
        velocity = np.broadcast_to(np.asarray(velocity, dtype=np.float64), points.shape).copy()
        if not np.all(np.isfinite(velocity)):
            raise ValueError("velocity contains NaN/Inf")
        start = self.n_particles
        m_id = self._material_index(material)
        self._points.append(points)
        self._velocities.append(velocity)
        self._material_ids.append(np.full(len(points), m_id, dtype=np.int32))
        self._volumes.append(np.full(len(points), float(spacing) ** 3))
        self._J0.append(J0)
        if material.kind == RIGID:
            self._body_ids.append(np.full(len(points), self._n_bodies, dtype=np.int32))
            self._n_bodies += 1
        else:
            self._body_ids.append(np.full(len(points), -1, dtype=np.int32))
        return range(start, start + len(points))

    def add_collider(self, collider) -> int:
        """Add a kinematic collider (engine.colliders.Collider); returns its index."""
        self._colliders.append(collider)
        return len(self._colliders) - 1

    def add_rigid_body(self, body) -> int:
        """Add a free 6-DoF rigid body (engine.solvers.rigid.RigidBody), two-way coupled to the
        MPM material through the grid; returns its index. Raises ValueError if it is not a
        RigidBody or its initial position lies outside the domain interior."""
        from engine.solvers.rigid import RigidBody

        if not isinstance(body, RigidBody):
            raise ValueError(f"add_rigid_body expects an engine.solvers.rigid.RigidBody, got {type(body).__name__}")
        cfg = self.config
        lo, hi = cfg.boundary_cells * cfg.dx, cfg.domain_size - cfg.boundary_cells * cfg.dx
        if not all(lo <= p <= hi for p in body.pose[:3]):
            raise ValueError(
                f"RigidBody {body.name!r}: pose position {body.pose[:3]} lies outside the domain interior "
                f"[{lo:.4g}, {hi:.4g}]^3"
            )
        self._rigid.append(body)
        return len(self._rigid) - 1

    def add_sensor(self, sensor) -> int:
        """Add an FEM elastomer sensor (engine.solvers.fem.Sensor) mounted on an added collider;
        returns its index. Raises ValueError if the mount is not a collider index or the substep
        is above the elastomer's stable explicit step."""
        from engine.solvers.fem import Sensor, check_sensor_dt

        if not isinstance(sensor, Sensor):
            raise ValueError(f"add_sensor expects an engine.solvers.fem.Sensor, got {type(sensor).__name__}")
        if not (isinstance(sensor.mount, int) and 0 <= sensor.mount < len(self._colliders)):
            raise ValueError(
                f"Sensor.mount must be the index of an added collider (0..{len(self._colliders) - 1}), "
                f"got {sensor.mount!r}"
            )
        check_sensor_dt(sensor, self.config.dt)
        self._sensors.append(sensor)
        return len(self._sensors) - 1

    def build(self) -> Model:
        if not self._points:
            raise ValueError("scene has no particles")
        x0 = np.concatenate(self._points)
        volume = np.concatenate(self._volumes)
        body_id = np.concatenate(self._body_ids)
        rest_offset = np.zeros_like(x0)
        body_volume = np.zeros(self._n_bodies)
        body_Aqq_inv = np.zeros((self._n_bodies, 3, 3))
        for k in range(self._n_bodies):
            members = body_id == k
            V = volume[members]
            centroid = (V[:, None] * x0[members]).sum(0) / V.sum()
            q = x0[members] - centroid
            Aqq = np.einsum("n,ni,nj->ij", V, q, q)
            if np.linalg.cond(Aqq) > 1e8:
                raise ValueError(f"rigid body {k}: particles are degenerate (collinear or coplanar)")
            rest_offset[members] = q
            body_volume[k] = V.sum()
            body_Aqq_inv[k] = np.linalg.inv(Aqq)
        return Model(
            config=self.config,
            materials=tuple(self._materials),
            x0=x0,
            v0=np.concatenate(self._velocities),
            material_id=np.concatenate(self._material_ids),
            volume=volume,
            body_id=body_id,
            rest_offset=rest_offset,
            body_volume=body_volume,
            body_Aqq_inv=body_Aqq_inv,
            colliders=tuple(self._colliders),
            sensors=tuple(self._sensors),
            bodies=tuple(self._rigid),
            J0=np.concatenate(self._J0),
        )
