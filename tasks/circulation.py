"""Circulation: steer an air conditioner so the temperatures at probe points reach their targets.

FluidLab's "Air Circulation" task (Xian et al., "FluidLab", ICLR 2023): a house of several
rooms is filled with warm air; an air conditioner (AC) mounted on a wall blows cool air, and the
agent must cool two rooms while the third keeps its original temperature. FluidLab scores the
task with temperature detectors at mid-height in each room; so do we.

Physics: the Eulerian gas of :class:`engine.grid_fluid.GridFluid` (MAC grid, semi-Lagrangian
advection, converged pressure projection with an implicit-adjoint Poisson solve), y up. The
temperature field T [K] is the offset from the house's initial (warm) temperature; buoyancy is
``beta * T`` (Fedkiw et al. 2001, Eq. 8; beta = g / T_abs ~ 0.033 m/s^2/K), so cool air sinks.
Per solver step, before :meth:`GridFluid.step`, two heat terms are applied (explicit Euler):

    dT/dt = power * cooling_rate * g(x) * (T_outlet - T)  -  T / heat_load_time,

the AC relaxing the air at its outlet towards the outlet temperature (g is the AC's Gaussian
footprint, 1 at its centre) and the heat load through the walls pulling the house back to its
warm start (Newton's law of cooling). The AC's fan is a GridFluid source at the same place:
acceleration ``power * action_scale[2]`` [m/s^2] along the outflow direction.

Actions (3, all in [-1, 1], set-points applied for the whole env step):
    0. yaw of the outflow [rad / action_scale[0]]: 0 blows straight into the room from its
       wall (-x), positive turns it toward +z;
    1. pitch [rad / action_scale[1]] about ``pitch_center``: positive tilts it up;
    2. power: ``power = (a + 1) / 2`` in [0, 1] scales both fan and cooling (-1: off).

Observation (4 P + 3 for P probes): probe temperatures / ``temperature_scale``, the actuator
state (yaw and pitch actions, power in [0, 1]) and the air velocity at the probes [m/s].

Loss (differentiable): ``mean_p (T_p - T*_p)^2 / mean_p (T*_p)^2`` with T_p the trilinear sample
of T at probe p, so it is about 1 at the start and 0 at the targets. Success: every probe within
``tolerance`` of its target.

Geometry (default): a 6 m x 3 m x 6 m house (x, height y, z), closed (free-slip walls), split
by a partition at x = 3 m with two full-height doors (z in [1, 2] m into the front-left room,
z in [4.5, 5.5] m into the back-left room) and a full partition at z = 3 m between the left
rooms; walls are SOLID cells from box colliders (:func:`engine.grid_fluid.flags_from_colliders`).
The AC hangs on the right room's outer wall at (5.75, 2.5, 1.75) m, in line with the front door.
Two probes per room at 1.2 m height; targets -3 K in the right (AC) and front-left rooms, 0 K
(keep warm) in the back-left room, tolerance 1 K. The start is the warm house at rest with a
smooth random perturbation (std 0.2 K, correlation length 0.5 m) drawn from the reset's seed.

Presets: "cpu" is a 24 x 12 x 24 grid (dx = 0.25 m), one solver step of 0.25 s per env step,
horizon 120 (30 s). Measured env step (torch_threads = 1, 60-step medians on the shared
2-core machine): B = 1 0.040 s in f32 and 0.042 s in f64 at load average ~3, 0.07-0.10 s in
f32 at load ~5; B = 8 0.17 s (load ~3) to 0.6-1.0 s (load 5-6). From a loss of ~1 the
scripted policy reaches success first at steps 95-99 (seeds 0-3, minimum loss 0.014-0.035; it
drifts afterwards, final 0.03-0.34); random actions reach minima of 0.15-0.42 without
success. "paper" is FluidLab's Circulation resolution and step (128 cells across, dt = 0.03 s,
horizon 1000 = 30 s): 128 x 64 x 128 cells (dx = 4.7 cm); on this CPU it takes ~5 s to make
and ~30 s per step (the task keeps its tensors on the CPU).
"""

from __future__ import annotations

import contextlib
import math
import warnings
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from engine import runtime
from engine.grid_fluid import GridFluid, SmokeConfig, SmokeState, flags_from_colliders
from engine.linsolve import SOLID
from tasks.base import Task, TaskConfig, check_action_sequence, check_actions

Box3 = tuple[tuple[float, float, float], tuple[float, float, float]]

# Partitions, ((lo), (hi)) [m]: an x = 3 m wall with (full-height) doors at z in [1, 2] (into the
# front-left room) and [4.5, 5.5] (back-left room); a full wall at z = 3 m between the left rooms.
_WALLS: tuple[Box3, ...] = (
    ((2.9, 0.0, 0.0), (3.1, 3.0, 1.0)),
    ((2.9, 0.0, 2.0), (3.1, 3.0, 4.5)),
    ((2.9, 0.0, 5.5), (3.1, 3.0, 6.0)),
    ((0.0, 0.0, 2.9), (2.9, 3.0, 3.1)),
)
# Two probes per room at 1.2 m: right room, front-left room, back-left room.
_PROBES = (
    (4.5, 1.2, 1.5),
    (4.5, 1.2, 4.5),
    (1.5, 1.2, 1.0),
    (1.5, 1.2, 2.2),
    (1.5, 1.2, 3.8),
    (1.5, 1.2, 5.0),
)
_TARGETS = (-3.0, -3.0, -3.0, -3.0, 0.0, 0.0)
_FIELDS = ("u", "v", "w", "density", "temperature", "pressure")
# Rendering palette (RGB in [0, 1]) and camera.
_WARM = (0.95, 0.42, 0.22)
_COOL = (0.12, 0.42, 1.0)
_WALL = (0.80, 0.79, 0.76)
_OUTER = (0.90, 0.89, 0.86)
_FLOOR = (0.78, 0.70, 0.58)
_AC = (0.15, 0.85, 0.30)
_GROUND = (0.36, 0.40, 0.36)
_SKY = (0.78, 0.85, 0.92)
_LIGHT = (0.4, 1.0, 0.3)
_AC_HALF = (0.15, 0.2, 0.45)
_FOV_DEG = 45.0
_COOL_AT = 0.6  # the colour map is fully cool at this fraction of the outlet's temperature offset


def _cpu_smoke() -> SmokeConfig:
    """Gas solver settings of the cpu preset: 24 x 12 x 24 cells of 0.25 m, 0.25 s steps, no
    smoke (alpha = 0, no emission), beta = g / 297 K, heat handled by the task."""
    return SmokeConfig(
        shape=(24, 12, 24),
        dx=0.25,
        dt=0.25,
        alpha=0.0,
        beta=0.033,
        source_radius=0.4,
        source_density=0.0,
        source_heat=0.0,
        rtol=1e-5,
        on_fail="warn",
    )


@dataclass(frozen=True)
class CirculationConfig(TaskConfig):
    """Circulation settings (see :class:`tasks.base.TaskConfig` for the shared fields).

    The shared MPM fields (``sim``, ``tool``, ``workspace``, ``reset_noise``, ``obs_points``) are
    unused; ``action_dofs`` only fixes A = 3, and ``action_scale`` is (max yaw [rad], pitch
    half-range [rad], max fan acceleration [m/s^2]). ``camera_pos``/``look_at`` are in the
    gas grid's frame (y up) [m].

    Attributes:
        smoke: grid solver settings; the house is ``smoke.shape * smoke.dx`` [m]. Its
            ``alpha``/``source_density``/``source_heat`` should be 0 (heat is handled here) and
            ``on_fail`` is forced to "warn" when stepping (a failed solve is a divergence).
        substeps: solver steps per env step.
        walls: solid boxes ((lo), (hi)) [m] (partitions); each is widened to at least
            1.1 dx so it covers a cell layer.
        ac_position: centre of the AC's outlet [m].
        pitch_center: outflow pitch at action 0 [rad] (negative: downward).
        outlet_temperature: temperature offset of the AC's outflow [K].
        cooling_rate: relaxation rate towards the outlet temperature at the footprint centre at
            full power [1/s].
        heat_load_time: time constant of the house relaxing back to its warm start [s].
        probes: probe positions [m].
        targets: target temperature offset per probe [K].
        tolerance: success when every probe is within this of its target [K].
        temperature_noise: standard deviation of the smooth initial perturbation [K].
        noise_length: correlation length of that perturbation [m].
        torch_threads: torch intra-op threads while making the solver, stepping, rendering and
            running the differentiable forward pass (restored afterwards); None keeps torch's
            setting. The cpu grid's tensors (~7000 cells) are too small to gain from threads,
            and on the loaded 2-core machine torch's two threads made an env step ~8x slower
            (median 0.82 s vs 0.11 s).
    """

    smoke: SmokeConfig = field(default_factory=_cpu_smoke)
    substeps: int = 1
    walls: tuple[Box3, ...] = _WALLS
    ac_position: tuple[float, float, float] = (5.75, 2.5, 1.75)
    pitch_center: float = -0.35
    outlet_temperature: float = -12.0
    cooling_rate: float = 3.0
    heat_load_time: float = 120.0
    probes: tuple[tuple[float, float, float], ...] = _PROBES
    targets: tuple[float, ...] = _TARGETS
    tolerance: float = 1.0
    temperature_noise: float = 0.2
    noise_length: float = 0.5
    torch_threads: int | None = 1

    def __post_init__(self):
        super().__post_init__()
        if self.action_dim != 3:
            raise ValueError(f"Circulation has 3 actions (yaw, pitch, power), got action_dofs {self.action_dofs}")
        if not isinstance(self.substeps, int) or self.substeps < 1:
            raise ValueError(f"substeps must be an int >= 1, got {self.substeps!r}")
        size = np.asarray(self.smoke.shape, dtype=float) * self.smoke.dx
        probes = np.asarray(self.probes, dtype=float)
        if probes.ndim != 2 or probes.shape[1] != 3 or len(probes) < 1:
            raise ValueError(f"probes must be a non-empty list of (x, y, z), got {self.probes!r}")
        if len(self.targets) != len(probes):
            raise ValueError(f"need one target per probe ({len(probes)}), got {len(self.targets)}")
        for name, pts in (("probes", probes), ("ac_position", np.asarray([self.ac_position], dtype=float))):
            if not (np.all(np.isfinite(pts)) and np.all(pts > 0) and np.all(pts < size)):
                raise ValueError(f"{name} must lie inside the house (0, {tuple(size)}), got {pts.tolist()}")
        for name in ("cooling_rate", "heat_load_time", "tolerance", "noise_length"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be positive and finite, got {value!r}")
        for name in ("temperature_noise", "outlet_temperature", "pitch_center"):
            if not math.isfinite(getattr(self, name)):
                raise ValueError(f"{name} must be finite, got {getattr(self, name)!r}")
        if not np.all(np.isfinite(self.targets)):
            raise ValueError(f"targets must be finite, got {self.targets!r}")
        if self.torch_threads is not None and (not isinstance(self.torch_threads, int) or self.torch_threads < 1):
            raise ValueError(f"torch_threads must be None or an int >= 1, got {self.torch_threads!r}")
        if self.temperature_noise < 0:
            raise ValueError(f"temperature_noise must be >= 0, got {self.temperature_noise!r}")
        if self.smoke.dt * (self.cooling_rate + 1.0 / self.heat_load_time) >= 1.0:
            raise ValueError("explicit heat terms unstable: need dt * (cooling_rate + 1/heat_load_time) < 1")

    @property
    def step_time(self) -> float:
        """Simulated seconds per env step."""
        return self.smoke.dt * self.substeps

    @property
    def temperature_scale(self) -> float:
        """RMS target temperature [K] (normalizes the loss and the observation)."""
        rms = math.sqrt(float(np.mean(np.square(self.targets))))
        return rms if rms > 0 else 1.0


@contextlib.contextmanager
def _torch_threads(n: int | None):
    """Run the body with ``n`` torch intra-op threads (None: unchanged), then restore."""
    before = torch.get_num_threads()
    if n is None or n == before:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _trilinear(points: np.ndarray, dims: tuple[int, ...]) -> tuple[torch.Tensor, np.ndarray]:
    """Flat indices (P, 8) and weights (P, 8) of trilinear interpolation at index-space points."""
    q = np.clip(points, 0.0, np.asarray(dims, dtype=float) - 1.0)
    i0 = np.minimum(np.floor(q).astype(np.int64), np.maximum(np.asarray(dims) - 2, 0))
    f = q - i0
    idx, wgt = [], []
    for c in range(8):
        o = np.array([(c >> 2) & 1, (c >> 1) & 1, c & 1])
        ii = np.minimum(i0 + o, np.asarray(dims) - 1)
        idx.append((ii[:, 0] * dims[1] + ii[:, 1]) * dims[2] + ii[:, 2])
        wgt.append(np.prod(np.where(o, f, 1.0 - f), axis=1))
    return torch.as_tensor(np.stack(idx, 1)), np.stack(wgt, 1)


class Circulation(Task):
    """Cool two rooms of a house with a steerable air conditioner, keep the third warm."""

    name = "Circulation"
    render_fps = 10

    def __init__(self, config: CirculationConfig):
        super().__init__(config)
        self.fluid: GridFluid | None = None
        self.state: SmokeState | None = None
        self._start: SmokeState | None = None
        self._legend_cache: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    @classmethod
    def default_config(cls, preset: str = "cpu") -> CirculationConfig:
        if preset == "cpu":
            smoke, substeps, horizon, threads = _cpu_smoke(), 1, 120, 1
        elif preset == "paper":
            smoke = replace(_cpu_smoke(), shape=(128, 64, 128), dx=6.0 / 128, dt=0.03)
            substeps, horizon, threads = 1, 1000, None
        else:
            raise ValueError(f"preset must be 'cpu' or 'paper', got {preset!r}")
        return CirculationConfig(
            preset=preset,
            horizon=horizon,
            smoke=smoke,
            substeps=substeps,
            torch_threads=threads,
            action_dofs=(0, 1, 2),
            action_scale=(math.radians(60.0), math.radians(35.0), 8.0),
            reset_noise=0.0,
            progress_scale=10.0,
            action_cost=0.0,
            render_size=128,
            camera_pos=(3.0, 11.5, 7.2),
            look_at=(3.0, 0.0, 2.9),
        )

    # ------------------------------------------------------------------ sizes
    @property
    def n_probes(self) -> int:
        return len(self.config.probes)

    @property
    def observation_dim(self) -> int:
        return 4 * self.n_probes + 3

    def default_params(self) -> torch.Tensor:
        """(2,) physical parameters of :meth:`differentiable_rollout`: AC outlet temperature
        offset [K] and maximum fan acceleration [m/s^2]."""
        cfg: CirculationConfig = self.config
        return torch.tensor([cfg.outlet_temperature, cfg.action_scale[2]], dtype=runtime.torch_dtype())

    # ------------------------------------------------------------------ engine
    def _wall_boxes(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """The config's wall boxes (lo, hi) [m], each widened to at least 1.1 dx per axis."""
        cfg: CirculationConfig = self.config
        out = []
        for lo, hi in cfg.walls:
            lo, hi = np.asarray(lo, dtype=float), np.asarray(hi, dtype=float)
            half = np.maximum(0.5 * (hi - lo), 0.55 * cfg.smoke.dx)
            out.append((0.5 * (lo + hi) - half, 0.5 * (lo + hi) + half))
        return out

    def flags(self) -> np.ndarray:
        """(nx, ny, nz) int8 cell flags: the walls' boxes as SOLID, the rest FLUID (closed house)."""
        from engine.colliders import Collider
        from engine.geometry import Box

        colliders = [
            Collider(Box(tuple(0.5 * (hi - lo))), pose=(*(0.5 * (lo + hi)), 1.0, 0.0, 0.0, 0.0))
            for lo, hi in self._wall_boxes()
        ]
        return flags_from_colliders(self.config.smoke.shape, self.config.smoke.dx, colliders)

    def make(self, batch_size: int) -> None:
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
        cfg: CirculationConfig = self.config
        dtype = runtime.torch_dtype()
        self.batch_size = batch_size
        flags = self.flags()
        with _torch_threads(cfg.torch_threads):  # the preconditioner set-up (small dense pinv)
            self.fluid = GridFluid(replace(cfg.smoke, on_fail="warn"), flags, batch=batch_size, dtype=dtype)
        self._solid = torch.as_tensor(flags == SOLID)
        dx = cfg.smoke.dx
        shape = tuple(cfg.smoke.shape)
        # AC footprint (peak 1) on cell centres, masked to fluid cells.
        centres = [(torch.arange(n, dtype=dtype) + 0.5) * dx for n in shape]
        X = torch.stack(torch.meshgrid(*centres, indexing="ij"), -1)
        d2 = ((X - torch.tensor(cfg.ac_position, dtype=dtype)) ** 2).sum(-1)
        self._footprint = torch.exp(-0.5 * d2 / cfg.smoke.source_radius**2) * self.fluid.fluid[0]
        # Trilinear probe stencils on the cell grid and on the three face grids.
        probes = np.asarray(cfg.probes, dtype=float) / dx
        nx, ny, nz = shape
        grids = {
            "c": (shape, (0.5, 0.5, 0.5)),
            "u": ((nx + 1, ny, nz), (0.0, 0.5, 0.5)),
            "v": ((nx, ny + 1, nz), (0.5, 0.0, 0.5)),
            "w": ((nx, ny, nz + 1), (0.5, 0.5, 0.0)),
        }
        self._stencil = {}
        for k, (dims, origin) in grids.items():
            idx, w = _trilinear(probes - np.asarray(origin), dims)
            self._stencil[k] = (idx, torch.as_tensor(w, dtype=dtype))
        self._targets = torch.tensor(cfg.targets, dtype=dtype)
        self._actuator = torch.zeros(batch_size, 3, dtype=dtype)
        self.state = self.fluid.initial_state()
        self._start = self.fluid.initial_state()

    def _require(self) -> GridFluid:
        if self.fluid is None:
            raise RuntimeError(f"{self.name}: call make(batch_size) first")
        return self.fluid

    def reset(self, mask: np.ndarray, rngs: list[np.random.Generator]) -> None:
        import scipy.ndimage

        fluid = self._require()
        cfg: CirculationConfig = self.config
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != (self.batch_size,) or len(rngs) != self.batch_size:
            raise ValueError(f"reset needs a ({self.batch_size},) mask and {self.batch_size} generators")
        sigma = cfg.noise_length / cfg.smoke.dx
        for b in np.flatnonzero(mask):
            noise = scipy.ndimage.gaussian_filter(rngs[b].standard_normal(cfg.smoke.shape), sigma, mode="wrap")
            noise *= cfg.temperature_noise / max(float(noise.std()), 1e-12)
            for name in _FIELDS:
                getattr(self._start, name)[b] = 0.0
            self._start.temperature[b] = torch.as_tensor(noise, dtype=fluid.dtype) * fluid.fluid[b]
            for name in _FIELDS:
                getattr(self.state, name)[b] = getattr(self._start, name)[b]
            self._actuator[b] = 0.0

    # ------------------------------------------------------------------ dynamics
    def _direction(self, action: torch.Tensor) -> torch.Tensor:
        """(B, 3) unit outflow direction for actions (B, >= 2) (yaw, pitch)."""
        cfg: CirculationConfig = self.config
        yaw = action[:, 0] * cfg.action_scale[0]
        pitch = cfg.pitch_center + action[:, 1] * cfg.action_scale[1]
        horizontal = torch.cos(pitch)
        return torch.stack([-horizontal * torch.cos(yaw), torch.sin(pitch), horizontal * torch.sin(yaw)], -1)

    def _sources(self, action: torch.Tensor, fan: torch.Tensor | float):
        """AC sources (B, 1, 7) and power (B,) for actions (B, 3) and the max fan acceleration."""
        power = 0.5 * (action[:, 2] + 1.0)
        pos = torch.tensor(self.config.ac_position, dtype=action.dtype).expand(action.shape[0], 3)
        return torch.cat([pos, self._direction(action), (power * fan)[:, None]], -1)[:, None], power

    def _advance(self, state: SmokeState, action: torch.Tensor, params: torch.Tensor | None = None):
        """One env step (``substeps`` solver steps) under actions (B, 3); differentiable.

        Returns:
            (new state, (B,) bool: every pressure solve of the entry converged to ~rtol).
        """
        cfg: CirculationConfig = self.config
        fluid = self.fluid
        outlet, fan = (cfg.outlet_temperature, cfg.action_scale[2]) if params is None else (params[0], params[1])
        sources, power = self._sources(action, fan)
        rate = (power * cfg.cooling_rate)[:, None, None, None] * self._footprint
        converged = torch.ones(self.batch_size, dtype=torch.bool)
        for _ in range(cfg.substeps):
            T = state.temperature
            T = T + cfg.smoke.dt * (rate * (outlet - T) - T / cfg.heat_load_time)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # reported through ``converged``
                state = fluid.step(replace(state, temperature=T), sources)
            res = fluid.last_info.residual
            converged &= torch.isfinite(res) & (res <= 10.0 * cfg.smoke.rtol)
        return state, converged

    def _finite(self, state: SmokeState) -> torch.Tensor:
        ok = torch.ones(self.batch_size, dtype=torch.bool)
        for name in ("u", "v", "w", "temperature", "pressure"):
            ok &= torch.isfinite(getattr(state, name).flatten(1)).all(1)
        return ok

    def step(self, action: np.ndarray) -> np.ndarray:
        fluid = self._require()
        a = torch.as_tensor(check_actions(action, self.batch_size, self.action_dim), dtype=fluid.dtype)
        # A non-finite entry (one that diverged before, or was set so from outside) restarts from
        # its start state so the batched solve stays finite, and is reported as diverged.
        bad = ~self._finite(self.state)
        if bad.any():
            for name in _FIELDS:
                getattr(self.state, name)[bad] = getattr(self._start, name)[bad]
        with torch.no_grad(), _torch_threads(self.config.torch_threads):
            self.state, converged = self._advance(self.state, a)
        self._actuator = torch.stack([a[:, 0], a[:, 1], 0.5 * (a[:, 2] + 1.0)], -1)
        return (bad | fluid.blown_up(self.state) | ~converged).cpu().numpy()

    # ------------------------------------------------------------------ readout
    def _probe(self, f: torch.Tensor, kind: str) -> torch.Tensor:
        idx, w = self._stencil[kind]
        flat = f.flatten(1)
        return (flat[:, idx] * w).sum(-1)

    def probe_temperatures(self, state: SmokeState | None = None) -> torch.Tensor:
        """(B, P) temperature offsets [K] at the probes (trilinear)."""
        self._require()
        return self._probe((self.state if state is None else state).temperature, "c")

    def state_loss(self, state: SmokeState) -> torch.Tensor:
        """(B,) normalized mean squared probe error (differentiable)."""
        err = self.probe_temperatures(state) - self._targets
        return (err**2).mean(-1) / self.config.temperature_scale**2

    def observe(self) -> np.ndarray:
        s = self.state
        temps = self.probe_temperatures() / self.config.temperature_scale
        vel = torch.stack([self._probe(s.u, "u"), self._probe(s.v, "v"), self._probe(s.w, "w")], -1)
        obs = torch.cat([temps, self._actuator, vel.flatten(1)], -1)
        return obs.detach().cpu().numpy().astype(np.float32)

    def loss(self) -> np.ndarray:
        with torch.no_grad():
            return self.state_loss(self.state).cpu().numpy().astype(np.float64)

    def success(self, loss: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            err = (self.probe_temperatures() - self._targets).abs()
        return (err <= self.config.tolerance).all(-1).cpu().numpy()

    # ------------------------------------------------------------------ differentiable path
    def differentiable_rollout(self, actions: torch.Tensor, params: torch.Tensor | None = None) -> torch.Tensor:
        """Loss after ``actions`` (T, 3) from every scene's last reset state, mean over scenes
        (B = 1 for the single env: scene 0). Same dynamics as :meth:`step`, so the loss of a
        rollout equals the env's ``info["loss"]`` after stepping the same actions.

        ``params`` (optional): (2,) tensor (outlet temperature [K], max fan acceleration
        [m/s^2]), see :meth:`default_params`; None uses the config's values. Every forward
        pressure solve must converge (else RuntimeError); the backward pass uses the implicit
        adjoint of :class:`engine.autograd.PoissonSolve` (one more solve per step, not checked
        for convergence because the solver is built with ``on_fail="warn"``).
        """
        fluid = self._require()
        actions = check_action_sequence(actions, self.action_dim, self.horizon)
        if params is not None:
            params = torch.as_tensor(params)
            if params.shape != (2,) or not torch.isfinite(params).all():
                raise ValueError(f"params must be a finite (2,) tensor, got shape {tuple(params.shape)}")
            params = params.to(fluid.dtype)
        actions = actions.to(fluid.dtype)
        state = SmokeState(*(getattr(self._start, k).detach().clone() for k in _FIELDS))
        with _torch_threads(self.config.torch_threads):
            for t in range(actions.shape[0]):
                state, converged = self._advance(state, actions[t].expand(self.batch_size, -1), params)
                if not bool(converged.all()):
                    raise RuntimeError(f"{self.name}: pressure solve did not converge at step {t}")
        return self.state_loss(state).mean()

    # ------------------------------------------------------------------ scripted policy
    def scripted_action(self, t: int, index: int = 0) -> np.ndarray:
        """Aim at the probe to be cooled with the largest (error above its target) x (distance
        from the AC), since far probes need the longest lead; power in proportion to the
        largest such error (full power above ``tolerance``), cut to 30 % while a keep-warm probe
        (target >= 0) is more than half the tolerance too cold. Off if nothing is to be cooled."""
        cfg: CirculationConfig = self.config
        temps = self.probe_temperatures()[index].detach().cpu().numpy()
        targets = np.asarray(cfg.targets)
        err = temps - targets
        cool = targets < 0
        if not cool.any():
            return np.array([0.0, 0.0, -1.0])
        offsets = np.asarray(cfg.probes) - np.asarray(cfg.ac_position)
        score = np.where(cool, err * np.linalg.norm(offsets, axis=1), -np.inf)
        k = int(np.argmax(score))
        d = offsets[k]
        yaw = math.atan2(d[2], -d[0])
        pitch = math.atan2(d[1], math.hypot(d[0], d[2]))
        power = np.clip(err[cool].max() / cfg.tolerance, 0.0, 1.0)
        warm_err = err[~cool]
        if warm_err.size and warm_err.min() < -0.5 * cfg.tolerance:
            power *= 0.3
        a = np.array([yaw / cfg.action_scale[0], (pitch - cfg.pitch_center) / cfg.action_scale[1], 2.0 * power - 1.0])
        return np.clip(a, -1.0, 1.0)

    # ------------------------------------------------------------------ rendering
    def render(self, index: int = 0, size: int | None = None) -> np.ndarray:
        """(size, size, 3) uint8 cut-away view of the house from above (ceiling and the outer
        walls facing the camera removed).

        The air is an emission-absorption volume ray-marched front to back through the
        trilinearly interpolated cells (Max, "Optical models for direct volume rendering", IEEE
        TVCG 1995) at half the image resolution, its emission and transmittance interpolated
        bilinearly: warm air a faint orange haze, cool air dense blue. Walls (the config's boxes), the AC
        (green) and the house's floor and far walls are ray-traced boxes with Lambert shading.
        Overlays: the AC's outflow direction (green line), the probes as discs filled with
        their temperature's colour, ringed white within ``tolerance`` of their target, else black,
        and the colour map's legend (a colour bar labelled in kelvin) at the right edge.
        """
        self._require()
        if not 0 <= index < self.batch_size:
            raise ValueError(f"render index must be in [0, {self.batch_size}), got {index}")
        size = int(size or self.config.render_size)
        with torch.no_grad(), _torch_threads(self.config.torch_threads):
            eye, dirs, project = self._camera(size)
            surface, _ = self._surfaces(eye, dirs)
            # The air is smooth on the scale of a few pixels: march it at half resolution and
            # interpolate its emission and transmittance bilinearly.
            low = max(1, size // 2)
            eye_low, dirs_low, _ = self._camera(low)
            emitted, trans = self._march(index, eye_low, dirs_low, self._surfaces(eye_low, dirs_low)[1])
            air = torch.cat([emitted, trans], -1).T.reshape(1, 4, low, low)
            air = torch.nn.functional.interpolate(air, size=(size, size), mode="bilinear", align_corners=False)
            air = air[0].reshape(4, -1).T
            image = (air[:, :3] + air[:, 3:] * surface).view(size, size, 3)
            self._draw_overlays(image, index, project)
            rgb, alpha = self._legend(size)
            image = image * (1.0 - alpha) + rgb * alpha
        return (image.clamp(0, 1) * 255 + 0.5).to(torch.uint8).numpy()

    def _legend(self, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The temperature colour map's legend at the image's right edge: a colour bar from the
        warm start (0 K, top) to the fully cool colour (bottom) with labels in kelvin, as colour
        ``(size, size, 3)`` and coverage ``(size, size, 1)``; drawn with Pillow once per size."""
        cached = self._legend_cache.get(size)
        if cached is not None:
            return cached
        from PIL import Image, ImageDraw, ImageFont

        coolest = -_COOL_AT * abs(self.config.outlet_temperature)
        font = ImageFont.load_default(size=max(8, size // 24))
        layer = Image.new("RGBA", (size, size), (0, 0, 0, 0))
        draw = ImageDraw.Draw(layer)
        bar_w, margin = max(3, size // 40), max(2, size // 64)
        top, bottom = round(0.2 * size), round(0.75 * size)
        x1 = size - margin
        x0 = x1 - bar_w
        labels = [(top, "0 K"), ((top + bottom) // 2, f"{0.5 * coolest:.1f}"), (bottom, f"{coolest:.1f}")]
        text_w = max(draw.textlength(t, font=font) for _, t in labels)
        pad = max(1, size // 128)
        draw.rectangle((x0 - text_w - 3 * pad, top - size // 24, x1 + pad, bottom + size // 24), fill=(0, 0, 0, 110))
        for row in range(top, bottom + 1):
            c = np.array(_WARM) + (np.array(_COOL) - np.array(_WARM)) * (row - top) / max(bottom - top, 1)
            draw.line((x0, row, x1 - 1, row), fill=(*(int(255 * v + 0.5) for v in c), 255))
        for row, text in labels:
            draw.text((x0 - pad, row), text, font=font, fill=(255, 255, 255, 255), anchor="rm")
        a = torch.from_numpy(np.asarray(layer, dtype=np.float32) / 255.0)
        self._legend_cache[size] = (a[..., :3], a[..., 3:])
        return self._legend_cache[size]

    def _camera(self, size: int):
        """Eye (3,), unit ray directions (size^2, 3) and a projector world (N, 3) -> pixel
        (row, col) of a pinhole camera in the grid frame (y up); float32."""
        cfg = self.config
        eye = torch.tensor(cfg.camera_pos, dtype=torch.float32)
        fwd = torch.tensor(cfg.look_at, dtype=torch.float32) - eye
        fwd = fwd / fwd.norm()
        right = torch.linalg.cross(fwd, torch.tensor([0.0, 1.0, 0.0]))
        right = right / right.norm()
        up = torch.linalg.cross(right, fwd)
        focal = 0.5 * size / math.tan(math.radians(0.5 * _FOV_DEG))
        c = torch.arange(size, dtype=torch.float32) + 0.5 - 0.5 * size
        rows, cols = torch.meshgrid(c, c, indexing="ij")
        dirs = fwd * focal + right * cols.reshape(-1, 1) - up * rows.reshape(-1, 1)

        def project(p: torch.Tensor) -> torch.Tensor:
            rel = p - eye
            depth = rel @ fwd
            return torch.stack([-(rel @ up), rel @ right], -1) * (focal / depth[:, None]) + 0.5 * size - 0.5

        return eye, dirs / dirs.norm(dim=-1, keepdim=True), project

    def _boxes(self) -> list[tuple[torch.Tensor, torch.Tensor, tuple[float, float, float]]]:
        """Opaque boxes (lo, hi, colour) [m]: each wall snapped to the faces of the cells it
        makes SOLID (so the picture shows the simulated geometry), and the AC."""
        cfg: CirculationConfig = self.config
        dx = cfg.smoke.dx
        boxes = []
        for lo, hi in self._wall_boxes():
            first = np.floor(lo / dx - 0.5) + 1  # cells whose centre lies strictly inside
            last = np.ceil(hi / dx - 0.5) - 1
            boxes.append((torch.tensor(first * dx).float(), torch.tensor((last + 1) * dx).float(), _WALL))
        ac = torch.tensor(cfg.ac_position, dtype=torch.float32)
        half = torch.tensor(_AC_HALF)
        boxes.append((ac - half, ac + half, _AC))
        return boxes

    def _surfaces(self, eye: torch.Tensor, dirs: torch.Tensor):
        """Shaded colour (R, 3) and distance (R,) of the first opaque surface along each ray:
        the boxes, else the inside of the house (tiled floor, far walls), else ground or sky."""
        cfg: CirculationConfig = self.config
        house = torch.tensor(cfg.smoke.shape, dtype=torch.float32) * cfg.smoke.dx
        inv = 1.0 / torch.where(dirs.abs() < 1e-9, torch.full_like(dirs, 1e-9), dirs)
        light = torch.tensor(_LIGHT) / torch.tensor(_LIGHT).norm()
        axes = torch.eye(3)

        def lambert(normal):
            return 0.6 + 0.4 * (normal @ light).clamp(min=0)[:, None]

        # leaving the house: the exit face's inward normal is -sign(dir) along the exit axis
        t_a, t_b = (0.0 - eye) * inv, (house - eye) * inv
        t_in = torch.minimum(t_a, t_b).amax(-1).clamp(min=0)
        t_out, axis = torch.maximum(t_a, t_b).min(-1)
        inside = t_out > t_in
        p = eye + t_out[:, None] * dirs
        normal = -torch.sign(dirs.gather(1, axis[:, None])) * axes[axis]
        tiles = ((torch.floor(p[:, 0] / 0.5) + torch.floor(p[:, 2] / 0.5)) % 2)[:, None]
        room = torch.where((axis == 1)[:, None], torch.tensor(_FLOOR) * (1.0 - 0.1 * tiles), torch.tensor(_OUTER))
        outside = torch.where(dirs[:, 1:2] < 0, torch.tensor(_GROUND), torch.tensor(_SKY))
        color = torch.where(inside[:, None], room * lambert(normal), outside)
        t_hit = torch.where(inside, t_out, torch.zeros_like(t_out))
        for lo, hi, rgb in self._boxes():
            t_a, t_b = (lo - eye) * inv, (hi - eye) * inv
            t_near, axis = torch.minimum(t_a, t_b).max(-1)
            t_far = torch.maximum(t_a, t_b).amin(-1)
            hit = (t_near < t_far) & (t_near > 0) & ((t_near < t_hit) | ~inside)
            normal = -torch.sign(dirs.gather(1, axis[:, None])) * axes[axis]
            color = torch.where(hit[:, None], torch.tensor(rgb) * lambert(normal), color)
            t_hit = torch.where(hit, t_near, t_hit)
        return color, t_hit

    def _march(self, index: int, eye, dirs, t_hit) -> tuple[torch.Tensor, torch.Tensor]:
        """The air in front of the first surface (at distance ``t_hit``) along each ray: emitted
        colour (R, 3) and transmittance (R, 1), front-to-back."""
        cfg: CirculationConfig = self.config
        house = torch.tensor(cfg.smoke.shape, dtype=torch.float32) * cfg.smoke.dx
        T = self.state.temperature[index].float()
        cool = (-T / (_COOL_AT * abs(cfg.outlet_temperature))).clamp(0, 1)
        warm = (T / 2.0).clamp(0, 1)
        rgb = torch.tensor(_WARM) + (torch.tensor(_COOL) - torch.tensor(_WARM)) * cool[..., None]
        sigma = (0.05 + 0.1 * warm + 1.6 * cool**1.5) * ~self._solid  # extinction [1/m]
        vol = torch.cat([rgb * sigma[..., None], sigma[..., None]], -1).permute(3, 2, 1, 0)[None]  # (1, 4, z, y, x)
        inv = 1.0 / torch.where(dirs.abs() < 1e-9, torch.full_like(dirs, 1e-9), dirs)
        t_a, t_b = (0.0 - eye) * inv, (house - eye) * inv
        t0 = torch.minimum(t_a, t_b).amax(-1).clamp(min=0)
        step = 0.75 * cfg.smoke.dx
        n = max(1, int(math.ceil(float((t_hit - t0).max().clamp(min=0.0)) / step)))  # to the farthest surface
        ts = t0[:, None] + (torch.arange(n, dtype=torch.float32) + 0.5) * step  # (R, n)
        pts = eye + ts[..., None] * dirs[:, None]
        grid = (2.0 * pts / house - 1.0).view(1, 1, -1, n, 3)
        samples = torch.nn.functional.grid_sample(vol.contiguous(), grid, mode="bilinear", align_corners=False)
        samples = samples.view(4, -1, n) * (ts < t_hit[:, None])
        alpha = 1.0 - torch.exp(-samples[3] * step)
        trans = torch.cumprod(torch.cat([torch.ones_like(alpha[:, :1]), 1.0 - alpha], 1), 1)
        color = (samples[:3] * (trans[:, :-1] * alpha / samples[3].clamp(min=1e-6))).sum(-1).T
        return color, trans[:, -1:]

    def _draw_overlays(self, image: torch.Tensor, index: int, project) -> None:
        cfg: CirculationConfig = self.config
        size = image.shape[0]
        rows, cols = torch.meshgrid(
            torch.arange(size, dtype=torch.float32), torch.arange(size, dtype=torch.float32), indexing="ij"
        )
        # AC outflow direction: a 1.5 m segment, about 2 px wide
        start = torch.tensor(cfg.ac_position, dtype=torch.float32)
        direction = self._direction(self._actuator[index : index + 1])[0].float()
        px = project(start + torch.linspace(0.0, 1.5, 4 * size)[:, None] * direction)
        for dr, dc in ((0, 0), (0, 1), (1, 0), (1, 1)):
            q = (px - 0.5).floor().long() + torch.tensor([dr, dc])
            ok = ((q >= 0) & (q < size)).all(-1)
            image[q[ok, 0], q[ok, 1]] = torch.tensor(_AC)
        # probes
        temps = self.probe_temperatures()[index]
        within = (temps - self._targets).abs() <= cfg.tolerance
        centres = project(torch.tensor(cfg.probes, dtype=torch.float32))
        radius = max(2.0, size / 60)
        for p in range(self.n_probes):
            d2 = (rows - centres[p, 0]) ** 2 + (cols - centres[p, 1]) ** 2
            image[d2 <= (radius + max(1.0, size / 128)) ** 2] = float(within[p])
            cool = float((-temps[p] / (_COOL_AT * abs(cfg.outlet_temperature))).clamp(0, 1))
            image[d2 <= radius**2] = torch.tensor(_WARM) + (torch.tensor(_COOL) - torch.tensor(_WARM)) * cool

    def close(self) -> None:
        self.fluid = None
        self.state = None
        self._start = None
