"""3D Eulerian smoke/gas on a staggered (MAC) grid, batched, differentiable with torch.

Per step (Fedkiw, Stam, Jensen, "Visual Simulation of Smoke", SIGGRAPH 2001; Bridson, "Fluid
Simulation for Computer Graphics", 2nd ed., ch. 2-5):

1. advect velocity, smoke density and temperature through the old velocity: semi-Lagrangian with
   a second-order (midpoint) backtrace and trilinear interpolation, or MacCormack (Selle et al.,
   "An Unconditionally Stable MacCormack Method", J. Sci. Comput. 2008, Eq. 5-8, with their
   min/max limiter);
2. forces: buoyancy f_y = -alpha * density + beta * (T - T_ambient) (Fedkiw et al. Eq. 8) and
   controllable sources (an air conditioner or a fan is an actuator): each source adds an
   acceleration strength * direction and emits density and heat with a Gaussian footprint;
3. free-slip walls and static obstacles: the normal velocity on faces touching a SOLID cell or the
   domain boundary is zero;
4. pressure projection: A phi = -div u on FLUID cells with phi = 0 on AIR cells (Dirichlet) and
   Neumann on SOLID faces (:mod:`engine.linsolve`), then u <- u - grad phi. The solve runs to the
   solver tolerance (default relative residual 1e-6) with a warm start from the previous phi and
   its implicit adjoint (:mod:`engine.autograd`); the divergence left after projection
   equals the solver residual and is reported in :attr:`GridFluid.last_info`.

Conventions: index order (x, y, z), y is up, gravity/buoyancy along y; leading batch axis B.
Velocities are face-centred: u (B, nx+1, ny, nz), v (B, nx, ny+1, nz), w (B, nx, ny, nz+1) [m/s];
scalars are cell-centred (B, nx, ny, nz): density [1], temperature offset from ambient [K].
Cell (i, j, k) spans [i dx, (i+1) dx) x ...; world coordinates [m] start at the grid corner.
The stored ``pressure`` is phi = p dt / (rho dx) [m/s]: faces are updated as
u_face -= phi_i - phi_(i-1), so A phi = -dx div u with the unit 7-point stencil.
Cell flags (FLUID=0, SOLID=1, AIR=2) come from the caller or from SDF colliders via
:func:`flags_from_colliders`.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import numpy as np
import torch

from engine.autograd import PoissonSolve
from engine.geometry.pose import quat_rotate_inverse_numpy
from engine.linsolve import METHODS, SOLID, PoissonSolver, as_flags

_SCHEMES = ("semi_lagrangian", "maccormack")


@dataclass(frozen=True)
class SmokeConfig:
    """Smoke solver parameters.

    Attributes:
        shape: grid cells (nx, ny, nz).
        dx: cell size [m].
        dt: time step [s].
        alpha: buoyancy weight of smoke density [m/s^2] (pulls smoke down).
        beta: buoyancy per kelvin of temperature offset [m/s^2/K] (lifts hot gas).
        source_radius: standard deviation of a source's Gaussian footprint [m].
        source_density: smoke emitted at a source centre [1/s].
        source_heat: heat emitted at a source centre [K/s] (negative: cooling, an AC).
        advection: "semi_lagrangian" or "maccormack".
        solver: Poisson method, one of :data:`engine.linsolve.METHODS`.
        rtol: relative residual of the pressure solve.
        max_iter: pressure solve iteration cap (None: solver default).
        on_fail: "raise" or "warn" when the pressure solve does not converge.
        max_speed: a face velocity faster than this [m/s] counts as a blow-up
            (:meth:`GridFluid.blown_up`); None means the speed that crosses the whole grid's
            longest side in one step, ``max(shape) * dx / dt`` (semi-Lagrangian advection stays
            stable at any CFL number, so the MPM limit of one cell per step would be too strict;
            a backtrace longer than the grid only samples its walls).
    """

    shape: tuple[int, int, int] = (16, 16, 16)
    dx: float = 1.0 / 16
    dt: float = 0.02
    alpha: float = 0.05
    beta: float = 0.5
    source_radius: float = 0.08
    source_density: float = 1.0
    source_heat: float = 1.0
    advection: str = "semi_lagrangian"
    solver: str = "mgpcg"
    rtol: float = 1e-6
    max_iter: int | None = None
    on_fail: str = "raise"
    max_speed: float | None = None

    def __post_init__(self):
        if len(self.shape) != 3 or any(int(n) < 2 for n in self.shape):
            raise ValueError(f"shape must be 3 ints >= 2, got {self.shape}")
        for name in ("dx", "dt", "source_radius"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v > 0):
                raise ValueError(f"{name} must be a positive finite number, got {v}")
        for name in ("alpha", "beta", "source_density", "source_heat"):
            if not math.isfinite(getattr(self, name)):
                raise ValueError(f"{name} must be finite, got {getattr(self, name)}")
        if self.advection not in _SCHEMES:
            raise ValueError(f"advection must be one of {_SCHEMES}, got {self.advection!r}")
        if self.solver not in METHODS:
            raise ValueError(f"solver must be one of {METHODS}, got {self.solver!r}")
        if not 0 < self.rtol < 1:
            raise ValueError(f"rtol must be in (0, 1), got {self.rtol}")
        if self.on_fail not in ("raise", "warn"):
            raise ValueError(f"on_fail must be 'raise' or 'warn', got {self.on_fail!r}")
        if self.max_speed is not None and not (math.isfinite(self.max_speed) and self.max_speed > 0):
            raise ValueError(f"max_speed must be None or a positive finite number, got {self.max_speed}")

    @property
    def speed_limit(self) -> float:
        """Blow-up threshold on face speed [m/s] (see ``max_speed``)."""
        return self.max_speed if self.max_speed is not None else max(self.shape) * self.dx / self.dt


@dataclass
class SmokeState:
    """Per-step smoke state (see module docstring for shapes and units)."""

    u: torch.Tensor
    v: torch.Tensor
    w: torch.Tensor
    density: torch.Tensor
    temperature: torch.Tensor
    pressure: torch.Tensor


@dataclass
class ProjectionInfo:
    """Report of the latest pressure projection.

    Attributes:
        iterations: solver iterations.
        residual: (B,) relative residual = ||div after|| / ||div before|| on fluid cells.
        converged: solver reached its tolerance.
        max_divergence: (B,) max |div u| after projection on fluid cells [1/s].
        max_divergence_before: (B,) the same before projection [1/s].
    """

    iterations: int
    residual: torch.Tensor
    converged: bool
    max_divergence: torch.Tensor
    max_divergence_before: torch.Tensor
    extra: dict = field(default_factory=dict)


# ---------------------------------------------------------------------------- interpolation
def _sample(f: torch.Tensor, q: torch.Tensor, want_range: bool = False):
    """Trilinear sample of f (B, n0, n1, n2) at index-space points q (B, M, 3) (clamped)."""
    B = f.shape[0]
    dims = f.shape[1:]
    idx, frac = [], []
    for a in range(3):
        qa = q[..., a].clamp(0.0, dims[a] - 1.0)
        i0 = qa.detach().floor().clamp(0, max(dims[a] - 2, 0)).long()
        idx.append(i0)
        frac.append(qa - i0.to(qa.dtype))
    flat = f.reshape(B, -1)
    s1, s2 = dims[1] * dims[2], dims[2]
    out = 0.0
    corners = []
    for c in range(8):
        o = ((c >> 2) & 1, (c >> 1) & 1, c & 1)
        ii = [(idx[a] + o[a]).clamp(max=dims[a] - 1) for a in range(3)]
        val = torch.gather(flat, 1, ii[0] * s1 + ii[1] * s2 + ii[2])
        wgt = 1.0
        for a in range(3):
            wgt = wgt * (frac[a] if o[a] else 1.0 - frac[a])
        out = out + wgt * val
        if want_range:
            corners.append(val)
    if want_range:
        st = torch.stack(corners)
        return out, st.amin(0), st.amax(0)
    return out


def _points(shape, origin, dtype, device):
    """Points of a grid of ``shape`` offset by ``origin``, in cell units (world / dx)."""
    axes = [torch.arange(n, dtype=dtype, device=device) + o for n, o in zip(shape, origin, strict=True)]
    g = torch.stack(torch.meshgrid(*axes, indexing="ij"), -1)
    return g.reshape(-1, 3)  # (M, 3) in cell units


_ORIGINS = {"c": (0.5, 0.5, 0.5), "u": (0.0, 0.5, 0.5), "v": (0.5, 0.0, 0.5), "w": (0.5, 0.5, 0.0)}


def _velocity_at(u, v, w, X):
    """Velocity [m/s] at points X (B, M, 3) given in cell units (world / dx)."""
    off = [torch.tensor(_ORIGINS[k], dtype=X.dtype, device=X.device) for k in "uvw"]
    return torch.stack([_sample(u, X - off[0]), _sample(v, X - off[1]), _sample(w, X - off[2])], -1)


def advect(f, kind: str, u, v, w, dt: float, dx: float, scheme: str = "semi_lagrangian"):
    """Advect a grid quantity through the MAC velocity (u, v, w).

    Args:
        f: (B, *grid) values on the grid of ``kind`` ("c" cells, "u"/"v"/"w" faces).
        u, v, w: face velocities [m/s].
        dt, dx: step [s] and cell size [m].
        scheme: "semi_lagrangian" (midpoint backtrace) or "maccormack".
    """
    B = f.shape[0]
    o = torch.tensor(_ORIGINS[kind], dtype=f.dtype, device=f.device)
    X = _points(f.shape[1:], _ORIGINS[kind], f.dtype, f.device).expand(B, -1, -1)
    h = dt / dx

    def trace(P, sign):
        mid = P - sign * 0.5 * h * _velocity_at(u, v, w, P)
        return P - sign * h * _velocity_at(u, v, w, mid)

    back = trace(X, 1.0)
    if scheme == "semi_lagrangian":
        return _sample(f, back - o).view_as(f)
    fhat, lo, hi = _sample(f, back - o, want_range=True)
    fhat = fhat.view_as(f)
    fwd = trace(X, -1.0)
    ftilde = _sample(fhat, fwd - o).view_as(f)
    corrected = fhat + 0.5 * (f - ftilde)
    return torch.minimum(torch.maximum(corrected, lo.view_as(f)), hi.view_as(f))


# ---------------------------------------------------------------------------- cell flags
def flags_from_colliders(shape, dx: float, colliders=(), air_mask=None, origin=(0.0, 0.0, 0.0)):
    """Cell flags from SDF colliders evaluated at cell centres.

    Args:
        shape: (nx, ny, nz).
        dx: cell size [m].
        colliders: objects with ``.shape.sdf(points_local (N, 3)) -> (d (N,), normal (N, 3))``
            (negative inside) and ``.pose = (px, py, pz, qw, qx, qy, qz)`` (the body-to-world
            transform), e.g. :class:`engine.colliders.Collider`.
        air_mask: optional (nx, ny, nz) bool, cells that are AIR (free surface / open sides).
        origin: world position [m] of the grid corner.

    Returns:
        (nx, ny, nz) int8 flags: SOLID where any collider's SDF < 0, else AIR where
        ``air_mask``, else FLUID.
    """
    shape = tuple(int(n) for n in shape)
    flags = np.zeros(shape, np.int8)
    if air_mask is not None:
        air_mask = np.asarray(air_mask, dtype=bool)
        if air_mask.shape != shape:
            raise ValueError(f"air_mask must have shape {shape}, got {air_mask.shape}")
        flags[air_mask] = 2
    c = [(np.arange(n) + 0.5) * dx + o for n, o in zip(shape, origin, strict=True)]
    X = np.stack(np.meshgrid(*c, indexing="ij"), -1).reshape(-1, 3)
    for col in colliders:
        pose = np.asarray(col.pose, dtype=np.float64)
        if pose.shape != (7,) or not np.isfinite(pose).all():
            raise ValueError(f"collider pose must be 7 finite numbers, got {pose}")
        local = quat_rotate_inverse_numpy(pose[3:] / np.linalg.norm(pose[3:]), X - pose[:3])
        d, _ = col.shape.sdf(local)
        d = np.asarray(d).reshape(-1)
        if d.shape[0] != X.shape[0] or not np.isfinite(d).all():
            raise ValueError("collider sdf must return N finite distances")
        flags.reshape(-1)[d < 0] = SOLID
    return flags


# ---------------------------------------------------------------------------- solver
class GridFluid:
    """Batched MAC smoke solver.

    Args:
        config: :class:`SmokeConfig`.
        flags: (B, nx, ny, nz) or (nx, ny, nz) cell flags (default all FLUID: a closed box).
        batch: B when ``flags`` is None or unbatched.
        dtype, device: torch dtype/device of the state.
        model: learned preconditioner model for solver "learned" (default: shipped weights).
    """

    def __init__(
        self,
        config: SmokeConfig,
        flags=None,
        batch: int = 1,
        dtype: torch.dtype = torch.float64,
        device="cpu",
        model=None,
    ):
        self.cfg = config
        shape = tuple(config.shape)
        if flags is None:
            flags = np.zeros((batch, *shape), np.int8)
        flags = as_flags(flags)
        if flags.shape[0] == 1 and batch > 1:
            flags = flags.expand(batch, *shape).contiguous()
        if tuple(flags.shape[1:]) != shape:
            raise ValueError(f"flags must have grid shape {shape}, got {tuple(flags.shape[1:])}")
        self.flags = flags.to(device)
        self.B = flags.shape[0]
        self.dtype, self.device = dtype, device
        self.solver = PoissonSolver(
            self.flags,
            config.solver,
            rtol=config.rtol,
            max_iter=config.max_iter,
            dtype=dtype,
            model=model,
            check=config.on_fail == "raise",
        )
        S = self.solver.system
        self.fluid = S.fluid
        ns = (self.flags != SOLID).to(dtype)
        pad = torch.nn.functional.pad
        # open faces: both neighbours non-solid and inside the domain
        self.open_u = pad(ns[:, 1:] * ns[:, :-1], (0, 0, 0, 0, 1, 1))
        self.open_v = pad(ns[:, :, 1:] * ns[:, :, :-1], (0, 0, 1, 1))
        self.open_w = pad(ns[:, :, :, 1:] * ns[:, :, :, :-1], (1, 1))
        self.last_info: ProjectionInfo | None = None
        X = {k: _points(_grid_shape(shape, k), _ORIGINS[k], dtype, device) * config.dx for k in "cuvw"}
        self._X = X

    def initial_state(self) -> SmokeState:
        """Fluid at rest, no smoke, ambient temperature."""
        nx, ny, nz = self.cfg.shape
        z = lambda *s: torch.zeros(self.B, *s, dtype=self.dtype, device=self.device)  # noqa: E731
        return SmokeState(
            z(nx + 1, ny, nz),
            z(nx, ny + 1, nz),
            z(nx, ny, nz + 1),
            z(nx, ny, nz),
            z(nx, ny, nz),
            z(nx, ny, nz),
        )

    # ------------------------------------------------------------------ pieces
    def divergence(self, u, v, w) -> torch.Tensor:
        """Cell divergence [1/s] (B, nx, ny, nz), masked to fluid cells."""
        d = (u[:, 1:] - u[:, :-1]) + (v[:, :, 1:] - v[:, :, :-1]) + (w[..., 1:] - w[..., :-1])
        return d * self.fluid / self.cfg.dx

    def _gauss(self, X, sources):
        """Footprints (B, S, M) of sources (B, S, 7) at world points X (M, 3)."""
        pos = sources[..., :3]
        d2 = ((X[None, None] - pos[:, :, None]) ** 2).sum(-1)
        return torch.exp(-0.5 * d2 / self.cfg.source_radius**2)

    def apply_sources(self, state: SmokeState, sources: torch.Tensor | None) -> SmokeState:
        """Add source accelerations, density and heat (see module docstring)."""
        if sources is None:
            return state
        if sources.ndim != 3 or sources.shape[0] != self.B or sources.shape[2] != 7:
            raise ValueError(f"sources must have shape (B={self.B}, S, 7), got {tuple(sources.shape)}")
        if not torch.isfinite(sources).all():
            raise ValueError("sources contains NaN or Inf")
        sources = sources.to(self.dtype)
        cfg = self.cfg
        d = sources[..., 3:6]
        d = d / d.norm(dim=-1, keepdim=True).clamp(min=1e-12)
        acc = sources[..., 6:7] * d  # (B, S, 3) [m/s^2]
        new = {}
        for a, k in enumerate("uvw"):
            g = self._gauss(self._X[k], sources)  # (B, S, M)
            add = (acc[..., a : a + 1] * g).sum(1) * cfg.dt
            f = getattr(state, k)
            new[k] = f + add.view_as(f)
        gc = self._gauss(self._X["c"], sources).sum(1).view_as(state.density)
        dens = state.density + cfg.dt * cfg.source_density * gc * self.fluid
        temp = state.temperature + cfg.dt * cfg.source_heat * gc * self.fluid
        return SmokeState(new["u"], new["v"], new["w"], dens, temp, state.pressure)

    def buoyancy(self, state: SmokeState) -> torch.Tensor:
        """New v after buoyancy: dv = dt (-alpha rho + beta T) averaged to y-faces."""
        f = -self.cfg.alpha * state.density + self.cfg.beta * state.temperature
        fv = torch.nn.functional.pad(0.5 * (f[:, :, 1:] + f[:, :, :-1]), (0, 0, 1, 1))
        return state.v + self.cfg.dt * fv

    def project(self, u, v, w, p0=None):
        """Pressure projection; returns (u, v, w, phi) and sets :attr:`last_info`."""
        u, v, w = u * self.open_u, v * self.open_v, w * self.open_w
        div = self.divergence(u, v, w) * self.cfg.dx  # unit-stencil divergence
        phi = PoissonSolve.apply(-div, self.solver, p0)
        res = self.solver.last
        pad = torch.nn.functional.pad
        u = u - pad(phi[:, 1:] - phi[:, :-1], (0, 0, 0, 0, 1, 1)) * self.open_u
        v = v - pad(phi[:, :, 1:] - phi[:, :, :-1], (0, 0, 1, 1)) * self.open_v
        w = w - pad(phi[..., 1:] - phi[..., :-1], (1, 1)) * self.open_w
        with torch.no_grad():
            after = self.divergence(u, v, w).abs().flatten(1).amax(1)
            before = (div.abs() / self.cfg.dx).flatten(1).amax(1)
        self.last_info = ProjectionInfo(res.iterations, res.residual, res.converged, after, before)
        if not res.converged:
            msg = (
                f"pressure solve ({self.cfg.solver}) did not converge: residual "
                f"{float(res.residual.max()):.2e} after {res.iterations} iterations"
            )
            if self.cfg.on_fail == "raise":
                raise RuntimeError(msg)
            warnings.warn(msg, RuntimeWarning, stacklevel=2)
        return u, v, w, phi

    def blown_up(self, state: SmokeState) -> torch.Tensor:
        """(B,) bool: a field of ``state`` holds NaN/Inf, or a face velocity exceeds
        :attr:`SmokeConfig.speed_limit` (the gas counterpart of the MPM blow-up test)."""
        bad = torch.zeros(state.u.shape[0], dtype=torch.bool, device=state.u.device)
        for f in (state.u, state.v, state.w, state.density, state.temperature, state.pressure):
            bad |= ~torch.isfinite(f.detach()).flatten(1).all(1)
        limit = self.cfg.speed_limit
        for f in (state.u, state.v, state.w):
            bad |= f.detach().abs().flatten(1).amax(1) > limit  # NaN compares False; caught above
        return bad

    def step(self, state: SmokeState, sources: torch.Tensor | None = None) -> SmokeState:
        """Advance one time step (advect, forces, walls, project); see module docstring.

        Args:
            state: current state (not modified).
            sources: (B, S, 7) per source: position (3) [m], direction (3) (normalized here),
                strength [m/s^2] (acceleration at the source centre); None for no sources.
        """
        cfg = self.cfg
        u0, v0, w0 = state.u, state.v, state.w
        adv = lambda f, k: advect(f, k, u0, v0, w0, cfg.dt, cfg.dx, cfg.advection)  # noqa: E731
        s = SmokeState(
            adv(u0, "u"),
            adv(v0, "v"),
            adv(w0, "w"),
            adv(state.density, "c") * self.fluid,
            adv(state.temperature, "c") * self.fluid,
            state.pressure,
        )
        s = self.apply_sources(s, sources)
        v = self.buoyancy(s)
        u, v, w, phi = self.project(s.u, v, s.w, p0=state.pressure.detach())
        return SmokeState(u, v, w, s.density, s.temperature, phi)


def _grid_shape(shape, kind):
    nx, ny, nz = shape
    return {"c": (nx, ny, nz), "u": (nx + 1, ny, nz), "v": (nx, ny + 1, nz), "w": (nx, ny, nz + 1)}[kind]
