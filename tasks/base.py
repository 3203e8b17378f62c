"""Task interface: what a manipulation task must provide, and the shared MPM implementation.

A task describes one manipulation problem for a batch of B independent scenes: the scene
(materials, containers, tools), how an action in [-1, 1]^A becomes engine control, a fixed-size
observation, a differentiable loss on the simulated state, dense reward terms derived from it,
a success test and a scripted reference policy. ``envs/`` wraps any :class:`Task` as a Gymnasium
``Env`` (B = 1) or ``VectorEnv`` (B scenes in one kernel launch); the task never sees Gymnasium.

Conventions
    * Actions are (B, A) in [-1, 1]; :attr:`TaskConfig.action_scale` maps them to physical
      velocities (m/s for linear, rad/s for angular degrees of freedom).
    * ``loss`` is a cost to minimize, >= 0 at its best and differentiable in torch. The dense
      reward is progress on it: ``reward = progress_scale * (loss_before - loss_after)
      - action_cost * |a|^2`` (reward scales live in the config, the MuJoCo Playground habit),
      so the episode return telescopes to the loss reduction.
    * Success is ``loss <= success_loss`` unless a task overrides :meth:`Task.success`.

:class:`ParticleTask` implements everything for MLS-MPM scenes; a task file (``tasks/pouring.py``
and friends) subclasses it with ``default_config`` plus ``build_scene``, ``state_loss`` and
``scripted_action``. A task whose scene has free rigid bodies (engine/solvers/rigid.py) receives
their state as the keyword argument ``bodies`` of ``state_loss``, ``state_success``,
``observe_state`` ((B, nb, 13): pose then twist) and ``trajectory_loss`` ((T, B, nb, 13)). The gas
task (``tasks/circulation.py``) implements :class:`Task` directly on the grid fluid solver."""

from __future__ import annotations

import abc
import math
from dataclasses import MISSING, dataclass, field, fields
from typing import Any, ClassVar

import numpy as np
import torch

import engine
from engine import runtime
from engine.config import SimConfig

PRESETS = ("cpu", "paper")


@dataclass(frozen=True)
class TaskConfig:
    """Settings common to every task; task files subclass it with their own fields.

    Attributes:
        preset: "cpu" (sized for one env step <= 0.1 s on a 2-core CPU) or "paper" (FluidLab's
            scale, meant for a GPU).
        horizon: env steps per episode.
        sim: MLS-MPM settings (grid, dt, substeps per env step); unused by grid-fluid tasks.
        tool: index of the actuated collider in the scene.
        action_dofs: which of the tool's 6 velocity components (vx, vy, vz, wx, wy, wz) the action
            drives, in action order.
        action_scale: physical velocity of action = +1 per driven DOF [m/s or rad/s].
        workspace: ((lo), (hi)) box [m] the tool position must stay in; a velocity component that
            would leave it is zeroed.
        reset_noise: half-width [m] of the uniform jitter of the tool's start (x, y) at reset.
        obs_points: particles subsampled per material for the observation.
        progress_scale: reward per unit of loss reduction.
        action_cost: reward penalty per unit |a|^2.
        success_loss: loss at or below which an episode counts as a success.
        render_size: default width and height of rendered frames [px].
        camera_pos, look_at: renderer camera [m].
    """

    preset: str = "cpu"
    horizon: int = 50
    sim: SimConfig = field(default_factory=SimConfig)
    tool: int = 0
    action_dofs: tuple[int, ...] = (0, 1, 2)
    action_scale: tuple[float, ...] = (0.3, 0.3, 0.3)
    workspace: tuple[tuple[float, float, float], tuple[float, float, float]] = ((0.1, 0.1, 0.1), (0.9, 0.9, 0.9))
    reset_noise: float = 0.01
    obs_points: int = 32
    progress_scale: float = 10.0
    action_cost: float = 0.01
    success_loss: float = 0.0
    render_size: int = 128
    camera_pos: tuple[float, float, float] = (0.5, -0.5, 0.85)
    look_at: tuple[float, float, float] = (0.5, 0.5, 0.15)

    def __post_init__(self):
        if self.preset not in PRESETS:
            raise ValueError(f"preset must be one of {PRESETS}, got {self.preset!r}")
        check_field_types(self)
        if not isinstance(self.horizon, int) or self.horizon < 1:
            raise ValueError(f"horizon must be an int >= 1, got {self.horizon!r}")
        if not self.action_dofs or any(d not in range(6) for d in self.action_dofs):
            raise ValueError(f"action_dofs must be a non-empty subset of 0..5, got {self.action_dofs!r}")
        if len(set(self.action_dofs)) != len(self.action_dofs):
            raise ValueError(f"action_dofs must not repeat, got {self.action_dofs!r}")
        if len(self.action_scale) != len(self.action_dofs):
            raise ValueError(
                f"action_scale needs one entry per action DOF ({len(self.action_dofs)}), got {self.action_scale!r}"
            )
        if any(not (math.isfinite(s) and s > 0) for s in self.action_scale):
            raise ValueError(f"action_scale entries must be positive and finite, got {self.action_scale!r}")
        lo, hi = (np.asarray(b, dtype=float) for b in self.workspace)
        if lo.shape != (3,) or hi.shape != (3,) or not np.all(lo < hi):
            raise ValueError(f"workspace must be ((lo), (hi)) with lo < hi, got {self.workspace!r}")
        for name in ("reset_noise", "progress_scale", "action_cost"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be finite and >= 0, got {value!r}")
        if not math.isfinite(self.success_loss):
            raise ValueError(f"success_loss must be finite, got {self.success_loss!r}")
        if not isinstance(self.obs_points, int) or self.obs_points < 1:
            raise ValueError(f"obs_points must be an int >= 1, got {self.obs_points!r}")
        if not isinstance(self.render_size, int) or not 16 <= self.render_size <= 2048:
            raise ValueError(f"render_size must be an int in [16, 2048], got {self.render_size!r}")

    @property
    def action_dim(self) -> int:
        return len(self.action_dofs)

    @property
    def step_time(self) -> float:
        """Simulated seconds per env step."""
        return self.sim.dt * self.sim.substeps


#: Name endings of config fields that hold a length or a divisor [m]: they keep the sign of their
#: default (a positive default must stay positive, a zero one may not turn negative).
POSITIVE_SUFFIXES = ("_scale", "_radius", "_height", "_size", "_wall", "_thickness", "_depth", "_band")
#: Fields validated on their own in :meth:`TaskConfig.__post_init__` (allowed to be 0).
_OWN_CHECKS = ("progress_scale", "action_scale")


def _is_real(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))


def check_field_types(config: TaskConfig) -> None:
    """Every field of ``config`` has the kind of its default: ``sim`` a :class:`SimConfig`, an int
    field an int, a float field a finite real, a string a string, a tuple of numbers a sequence of
    finite reals (of the same length where the annotation fixes it); length-like fields
    (:data:`POSITIVE_SUFFIXES`) keep the sign of their default.

    Raises:
        ValueError: naming the field, its value and what it must be.
    """
    for f in fields(config):
        value = getattr(config, f.name)
        if f.default is not MISSING:
            default = f.default
        elif f.default_factory is not MISSING:
            default = f.default_factory()
        else:
            continue
        if value is None and isinstance(f.type, str) and "None" in f.type:
            continue  # an optional field (``int | None``) left unset
        if isinstance(default, SimConfig):
            if not isinstance(value, SimConfig):
                raise ValueError(
                    f"sim must be an engine.config.SimConfig (change one of its fields with "
                    f"dataclasses.replace(config.sim, grid_res=...)), got {type(value).__name__} {value!r}"
                )
        elif isinstance(default, bool) or default is None:
            continue
        elif isinstance(default, int):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise ValueError(f"{f.name} must be an int, got {type(value).__name__} {value!r}")
        elif isinstance(default, float):
            if not _is_real(value) or not math.isfinite(value):
                raise ValueError(f"{f.name} must be a finite number, got {type(value).__name__} {value!r}")
            if f.name.endswith(POSITIVE_SUFFIXES) and f.name not in _OWN_CHECKS:
                if value < 0 or (default > 0 and value <= 0):
                    bound = "> 0" if default > 0 else ">= 0"
                    raise ValueError(f"{f.name} must be {bound}, got {value!r}")
        elif isinstance(default, str):
            if not isinstance(value, str):
                raise ValueError(f"{f.name} must be a string, got {type(value).__name__} {value!r}")
        elif isinstance(default, tuple) and default and all(_is_real(v) for v in default):
            fixed = isinstance(f.type, str) and "..." not in f.type  # tuple[float, float] vs tuple[float, ...]
            if not isinstance(value, (tuple, list)) or (fixed and len(value) != len(default)):
                size = len(default) if fixed else "some"
                raise ValueError(f"{f.name} must be a sequence of {size} numbers, got {value!r}")
            if not all(_is_real(v) and math.isfinite(v) for v in value):
                raise ValueError(f"{f.name} must hold finite numbers, got {value!r}")
            if f.name.endswith(POSITIVE_SUFFIXES) and f.name not in _OWN_CHECKS and any(v <= 0 for v in value):
                raise ValueError(f"{f.name} entries must be > 0, got {value!r}")


class Task(abc.ABC):
    """The interface the Gymnasium wrappers use; one instance drives B scenes.

    Life cycle: ``task = TaskClass(config)``; ``task.make(B)``; ``task.reset(mask, rng)`` for the
    entries to (re)start; then ``step``/``observe``/``loss``/``render``.
    """

    #: Registered name (``FluxLab/<name>-v0``).
    name: ClassVar[str] = ""
    #: Frames per second of rendered rollouts.
    render_fps: ClassVar[int] = 20

    def __init__(self, config: TaskConfig):
        self.config = config
        self.batch_size = 0

    @classmethod
    @abc.abstractmethod
    def default_config(cls, preset: str = "cpu") -> TaskConfig:
        """The task's configuration at ``preset`` ("cpu" or "paper")."""

    @property
    def horizon(self) -> int:
        return self.config.horizon

    @property
    def action_dim(self) -> int:
        return self.config.action_dim

    @property
    @abc.abstractmethod
    def observation_dim(self) -> int:
        """Length of the flat observation vector."""

    def observation_limits(self) -> tuple[np.ndarray, np.ndarray]:
        """(low, high) float32 bounds of the observation (finite; the env's Box space).

        Default: +-1e4 per entry; tasks override with physical bounds."""
        bound = np.full(self.observation_dim, 1e4, dtype=np.float32)
        return -bound, bound

    @abc.abstractmethod
    def make(self, batch_size: int) -> None:
        """Allocate the engine for ``batch_size`` scenes (all start at the default state)."""

    @abc.abstractmethod
    def reset(self, mask: np.ndarray, rngs: list[np.random.Generator]) -> None:
        """Restart the scenes where ``mask`` (B,) is True; scene b draws its start jitter from
        ``rngs[b]`` (one generator per scene, so a batch entry reproduces a single env)."""

    @abc.abstractmethod
    def step(self, action: np.ndarray) -> np.ndarray:
        """Advance all scenes by one env step; action (B, A) in [-1, 1]. Returns (B,) diverged."""

    @abc.abstractmethod
    def observe(self) -> np.ndarray:
        """(B, observation_dim) float32 observation of the current state."""

    @abc.abstractmethod
    def loss(self) -> np.ndarray:
        """(B,) float64 task loss of the current state (the quantity rewards are progress on)."""

    def success(self, loss: np.ndarray) -> np.ndarray:
        """(B,) bool success test given the current ``loss``."""
        return loss <= self.config.success_loss

    def reward_terms(self, loss_before: np.ndarray, loss_after: np.ndarray, action: np.ndarray) -> dict:
        """Dense reward terms (B,) each; the reward is their sum."""
        return {
            "progress": self.config.progress_scale * (loss_before - loss_after),
            "action_cost": -self.config.action_cost * np.sum(np.square(action), axis=-1),
        }

    def terminated(self) -> np.ndarray:
        """(B,) bool: the episode reached a terminal state (default never; tasks have horizons)."""
        return np.zeros(self.batch_size, dtype=bool)

    @abc.abstractmethod
    def render(self, index: int = 0, size: int | None = None) -> np.ndarray:
        """(H, W, 3) uint8 frame of scene ``index``."""

    @abc.abstractmethod
    def differentiable_rollout(self, actions: torch.Tensor, params: torch.Tensor | None = None) -> torch.Tensor:
        """Scalar task loss after running ``actions`` (T, A) from the last reset state of scene 0.

        Differentiable with respect to ``actions`` and ``params`` (the material parameter table);
        T may be shorter than the horizon.
        """

    @abc.abstractmethod
    def scripted_action(self, t: int, index: int = 0) -> np.ndarray:
        """(A,) action in [-1, 1] of a hand-written reference policy for scene ``index`` at its
        env step ``t`` (0-based); it may read the scene's current state."""

    def close(self) -> None:  # noqa: B027 - optional hook, a no-op for tasks without buffers
        """Release engine buffers."""


def real_array(value: Any, name: str = "action") -> np.ndarray:
    """``value`` (a number, a nested sequence, a numpy array or a torch tensor) as a float64 array.

    Raises:
        ValueError: naming ``name``: a torch tensor that requires grad (detach it; the env path
            has no gradient), a ragged nested sequence, complex numbers (their imaginary part
            would be dropped), or anything that is not real numbers (strings, objects, None).
    """
    if isinstance(value, torch.Tensor):
        if value.requires_grad:
            raise ValueError(
                f"{name} is a torch tensor that requires grad; pass {name}.detach() (env steps take no "
                "gradient; use differentiable_rollout for that)"
            )
        value = value.detach().cpu().numpy()
    try:
        a = np.asarray(value)
    except ValueError as err:  # numpy refuses ragged nesting with "inhomogeneous shape"
        raise ValueError(f"{name} must be a rectangular array of numbers, got a ragged sequence ({err})") from None
    if a.dtype.kind == "c":
        raise ValueError(f"{name} must be real, got complex values ({a.dtype})")
    if a.dtype.kind not in "biuf":
        raise ValueError(f"{name} must be real numbers, got {a.dtype} ({type(value).__name__})")
    return a.astype(np.float64)


def check_actions(actions: Any, batch_size: int, action_dim: int) -> np.ndarray:
    """Validate a (B, A) action batch: real numbers, right shape, finite, inside [-1, 1] (with
    rounding slack).

    Returns:
        float64 copy clipped to [-1, 1].

    Raises:
        ValueError: see :func:`real_array`; wrong shape, NaN/Inf, or values outside [-1, 1] by
            more than 1e-6.
    """
    a = real_array(actions, "action")
    if a.shape != (batch_size, action_dim):
        raise ValueError(f"action must have shape {(batch_size, action_dim)}, got {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"action contains NaN/Inf: {a.tolist()}")
    if np.any(np.abs(a) > 1.0 + 1e-6):
        raise ValueError(f"action must lie in [-1, 1], got range [{a.min():g}, {a.max():g}]")
    return np.clip(a, -1.0, 1.0)


def check_action_sequence(actions, action_dim: int, horizon: int) -> torch.Tensor:
    """Validate an open-loop action sequence (T, A) for ``differentiable_rollout``: the same
    rules as an env step's actions (:func:`check_actions`), gradients allowed.

    Returns:
        ``actions`` as a real torch tensor (the input itself when it is one, so its gradient
        flows).

    Raises:
        ValueError: not real numbers (complex, ragged, strings), wrong shape, T outside
            [1, horizon], NaN/Inf entries, or values outside [-1, 1] by more than 1e-6.
    """
    if not isinstance(actions, torch.Tensor):
        actions = torch.as_tensor(real_array(actions, "actions"))
    elif actions.is_complex():
        raise ValueError(f"actions must be real, got complex values ({actions.dtype})")
    elif not actions.is_floating_point():
        actions = actions.to(torch.float64)
    if actions.ndim != 2 or actions.shape[1] != action_dim or actions.shape[0] < 1:
        raise ValueError(f"actions must have shape (T, {action_dim}) with T >= 1, got {tuple(actions.shape)}")
    if actions.shape[0] > horizon:
        raise ValueError(f"actions has {actions.shape[0]} steps, more than the horizon {horizon}")
    values = actions.detach()
    if not torch.isfinite(values).all():
        raise ValueError("actions contain NaN/Inf")
    if (values.abs() > 1.0 + 1e-6).any():
        raise ValueError(
            f"actions must lie in [-1, 1] as in env.step, got range [{values.min().item():g}, {values.max().item():g}]"
        )
    return actions


#: Name endings of config fields that hold a start position, listed when a collider starts outside the domain.
_POSITION_SUFFIXES = ("_start", "_pos", "_position", "_center", "nozzle")
#: Largest index of a Taichi ndarray on the CPU and CUDA backends (they index with int32).
INT32_MAX = 2**31 - 1


def available_memory() -> int | None:
    """Bytes this process may still allocate: the memory available on the machine (psutil if
    installed, else ``MemAvailable`` of /proc/meminfo), capped by the process's address-space limit
    (``ulimit -v``) less what it has mapped; None where nothing answers."""
    import resource

    free = None
    try:
        import psutil
    except ImportError:
        psutil = None
    if psutil is not None:
        free = int(psutil.virtual_memory().available)
    else:
        try:
            with open("/proc/meminfo") as f:
                for line in f:
                    if line.startswith("MemAvailable:"):
                        free = int(line.split()[1]) * 1024
        except (OSError, ValueError, IndexError):
            free = None
    limit = resource.getrlimit(resource.RLIMIT_AS)[0]
    if limit != resource.RLIM_INFINITY:
        try:
            with open("/proc/self/statm") as f:
                mapped = int(f.read().split()[0]) * resource.getpagesize()
        except (OSError, ValueError, IndexError):
            mapped = 0
        room = max(limit - mapped, 0)
        free = room if free is None else min(free, room)
    return free


def check_allocation(sim: SimConfig, batch_size: int, n_colliders: int, n_particles: int) -> None:
    """Refuse an MLS-MPM scene the machine cannot hold, before any of it is allocated.

    Counts what :mod:`engine.solvers.mpm` allocates at least, per scene: the grid's momentum and
    mass (a 4-vector per node) and one 4-vector velocity set per collider plus two, each with its
    gradient, the liquid's packing buffers (one per node and one per collider plus one), and about
    135 reals per particle (state with gradients and two slots, transfer scratch). Pouring at
    128^3 (f32, one scene) is estimated at 433 MB; making it raised the resident memory by 357 MB.

    Raises:
        ValueError: naming ``sim.grid_res``: the largest grid array has more entries than an int32
            index reaches, or the estimate exceeds the memory available now.
    """
    real = 8 if runtime.current() is not None and runtime.current().precision == "f64" else 4
    nodes = sim.grid_res**3
    sets = n_colliders + 2
    largest = 4 * sets * batch_size * nodes
    if largest > INT32_MAX:
        raise ValueError(
            f"sim.grid_res={sim.grid_res} with {batch_size} scene(s) needs grid arrays of {largest:.3g} entries, "
            f"beyond the int32 index range of Taichi arrays ({INT32_MAX + 1:.3g}); lower grid_res"
        )
    per_node = 8 + 8 * sets + 2 + 2 * (n_colliders + 1)
    need = real * batch_size * (nodes * per_node + 135 * n_particles)
    free = available_memory()
    if free is not None and need > free:
        raise ValueError(
            f"sim.grid_res={sim.grid_res} with {batch_size} scene(s)"
            + (f" and {n_particles} particles" if n_particles else "")
            + f" needs at least {need / 2**30:.1f} GiB, more than the {free / 2**30:.1f} GiB of memory available; "
            "lower grid_res or the number of scenes"
        )


class ParticleTask(Task):
    """A task on the MLS-MPM simulator; subclasses define the scene, the loss and a script.

    Subclass hooks:
        ``default_config(preset)``; ``build_scene() -> Model`` (the tool is collider
        ``config.tool``); ``state_loss(x, v, pose) -> (B,)`` differentiable in torch;
        ``scripted_action(t)``. Optional: ``trajectory_loss`` (default: ``state_loss`` of the
        final state), ``observe_state`` (default: subsampled particles per material plus tool
        pose and velocity), ``success``.
    """

    def __init__(self, config: TaskConfig):
        super().__init__(config)
        runtime.require()
        check_allocation(config.sim, batch_size=1, n_colliders=1, n_particles=0)  # before sampling particles
        self.model = self.build_scene()
        if not 0 <= config.tool < self.model.n_colliders:
            raise ValueError(f"{self.name}: tool {config.tool}, but the scene has {self.model.n_colliders} colliders")
        self._check_start()
        self.sim = None
        self._renderer = None
        self._obs_index = self._observation_indices()
        self._dofs = torch.tensor(config.action_dofs)
        self._scale = torch.tensor(config.action_scale, dtype=torch.float64)
        self._workspace = torch.tensor(config.workspace, dtype=torch.float64)
        self._colors = None

    def _check_start(self) -> None:
        """Every collider starts inside the domain, and the tool's jittered start too."""
        cfg = self.config
        size = cfg.sim.domain_size
        positions = {
            f.name: getattr(cfg, f.name)
            for f in fields(cfg)
            if f.name.endswith(_POSITION_SUFFIXES) and f.name != "camera_pos"
        }
        for k, collider in enumerate(self.model.colliders):
            where = np.asarray(collider.pose[:3], dtype=np.float64)
            if np.any(where < 0.0) or np.any(where > size):
                tool = " (the tool)" if k == cfg.tool else ""
                raise ValueError(
                    f"{self.name}: collider {k}{tool} starts at {tuple(where.round(4).tolist())} m, outside the "
                    f"{size:g} m domain [0, {size:g}]^3; the config's positions: {positions}"
                )
        start = np.asarray(self.model.colliders[cfg.tool].pose[:2], dtype=np.float64)
        if np.any(start - cfg.reset_noise < 0.0) or np.any(start + cfg.reset_noise > size):
            raise ValueError(
                f"{self.name}: reset_noise={cfg.reset_noise:g} m moves the tool's start (x, y) = "
                f"{tuple(start.round(4).tolist())} m out of the {size:g} m domain"
            )

    # ------------------------------------------------------------------ hooks
    @abc.abstractmethod
    def build_scene(self):
        """The task's :class:`engine.state.Model` (particles, materials, colliders)."""

    @abc.abstractmethod
    def state_loss(self, x: torch.Tensor, v: torch.Tensor, pose: torch.Tensor) -> torch.Tensor:
        """(B,) differentiable loss of a state: x, v (B, N, 3), collider poses (B, K, 7)."""

    def trajectory_loss(self, xs: torch.Tensor, vs: torch.Tensor, poses: torch.Tensor, **bodies) -> torch.Tensor:
        """(B,) loss of a whole rollout: xs, vs (T, B, N, 3) after each step, poses (B, K, 7) final.

        Default: the state loss of the final state, so ``differentiable_rollout`` of a full
        episode equals the loss the env reports at its last step.
        """
        return self.state_loss(xs[-1], vs[-1], poses, **{k: v[-1] for k, v in bodies.items()})

    # ------------------------------------------------------------------ observation
    def _observation_indices(self) -> np.ndarray:
        """Fixed particle indices observed: ``obs_points`` per material, evenly spread."""
        picks = []
        for m in range(len(self.model.materials)):
            ids = np.flatnonzero(self.model.material_id == m)
            k = min(self.config.obs_points, len(ids))
            chosen = ids[np.linspace(0, len(ids) - 1, k).round().astype(int)]
            if k < self.config.obs_points:  # pad by repetition so the size is fixed
                chosen = np.resize(chosen, self.config.obs_points)
            picks.append(chosen)
        return np.concatenate(picks)

    @property
    def observation_dim(self) -> int:
        return len(self._obs_index) * 6 + 7 + 6

    def observation_limits(self) -> tuple[np.ndarray, np.ndarray]:
        """Positions within half a domain of the centre, velocities within the blow-up speed
        (anything faster is reported as diverged), quaternions in [-1, 1], tool velocity within
        the largest action scale."""
        cfg = self.config
        n = len(self._obs_index) * 3
        half, speed = 0.5 * cfg.sim.domain_size, cfg.sim.speed_limit
        tool_speed = max(cfg.action_scale)
        high = np.concatenate(
            [np.full(n, half), np.full(n, speed), np.full(3, half), np.ones(4), np.full(6, tool_speed)]
        )
        return (-high).astype(np.float32), high.astype(np.float32)

    def observe_state(self, x: torch.Tensor, v: torch.Tensor, pose: torch.Tensor, tool_vel: torch.Tensor):
        """(B, observation_dim) observation: subsampled positions (centred on the domain) and
        velocities per material, tool pose (position centred, quaternion) and tool velocity."""
        centre = 0.5 * self.config.sim.domain_size
        idx = torch.as_tensor(self._obs_index)
        xs, vs = x[:, idx] - centre, v[:, idx]
        tool = pose[:, self.config.tool]
        tool = torch.cat([tool[:, :3] - centre, tool[:, 3:]], dim=-1)
        B = x.shape[0]
        return torch.cat([xs.reshape(B, -1), vs.reshape(B, -1), tool, tool_vel], dim=-1)

    # ------------------------------------------------------------------ actions
    def control(self, action: torch.Tensor, pose: torch.Tensor) -> torch.Tensor:
        """(B, K, 6) collider velocities for actions (B, A): the tool's driven DOFs get
        ``action * action_scale``, every other collider stays still. A linear component that
        would carry the tool out of the workspace within this step is zeroed."""
        B, K = action.shape[0], self.model.n_colliders
        dtype = action.dtype
        vel = action * self._scale.to(dtype)
        tool_vel = torch.zeros(B, 6, dtype=dtype).index_copy(1, self._dofs, vel)
        position = pose[:, self.config.tool, :3].detach().to(dtype)
        target = position + tool_vel[:, :3].detach() * self.config.step_time
        ws = self._workspace.to(dtype)
        inside = ((target >= ws[0]) & (target <= ws[1])).to(dtype)
        lin = tool_vel[:, :3] * inside
        tool_vel = torch.cat([lin, tool_vel[:, 3:]], dim=-1)
        control = torch.zeros(B, K, 6, dtype=dtype)
        return control.index_copy(1, torch.tensor([self.config.tool]), tool_vel[:, None])

    # ------------------------------------------------------------------ engine
    def make(self, batch_size: int) -> None:
        from engine.simulator import Simulator

        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
        check_allocation(self.config.sim, batch_size, self.model.n_colliders, self.model.n_particles)
        self.batch_size = batch_size
        self.sim = Simulator(self.model, batch_size=batch_size)
        self._start = self.sim.initial_state()
        self._tool_vel = torch.zeros(batch_size, 6, dtype=self.sim.dtype)
        self.sim.reset(self._start)

    def _require_sim(self):
        if self.sim is None:
            raise RuntimeError(f"{self.name}: call make(batch_size) first")
        return self.sim

    def reset(self, mask: np.ndarray, rngs: list[np.random.Generator]) -> None:
        sim = self._require_sim()
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != (self.batch_size,) or len(rngs) != self.batch_size:
            raise ValueError(f"reset needs a ({self.batch_size},) mask and {self.batch_size} generators")
        if not mask.any():
            return
        initial = sim.initial_state()
        rows = np.flatnonzero(mask)
        noise = np.stack([rngs[b].uniform(-1.0, 1.0, size=2) for b in rows])
        jitter = torch.as_tensor(noise * self.config.reset_noise, dtype=sim.dtype)
        initial.collider_pose[rows, self.config.tool, :2] += jitter
        for name in ("x", "v", "C", "F", "J", "collider_pose"):
            getattr(self._start, name)[rows] = getattr(initial, name)[rows]
        if initial.bodies is not None:
            self._start.bodies[rows] = initial.bodies[rows]
        self._tool_vel[rows] = 0.0
        sim.reset(initial, entries=rows.tolist())

    def step(self, action: np.ndarray) -> np.ndarray:
        sim = self._require_sim()
        a = torch.as_tensor(check_actions(action, self.batch_size, self.action_dim), dtype=sim.dtype)
        control = self.control(a, sim.collider_poses())
        self._tool_vel = control[:, self.config.tool].clone()
        status = sim.step(control, raise_on_divergence=False)
        return status != 0

    def _bodies(self, bodies: torch.Tensor | None) -> dict:
        """The ``bodies`` keyword for the loss and observation hooks (none without rigid bodies)."""
        return {} if bodies is None else {"bodies": bodies}

    def _current(self):
        sim = self._require_sim()
        state = sim.get_state()
        return state.x, state.v, state.collider_pose, self._bodies(state.bodies)

    def observe(self) -> np.ndarray:
        x, v, pose, bodies = self._current()
        obs = self.observe_state(x, v, pose, self._tool_vel, **bodies).detach().cpu().numpy().astype(np.float32)
        low, high = self.observation_limits()
        return np.clip(obs, low, high)

    def loss(self) -> np.ndarray:
        x, v, pose, bodies = self._current()
        with torch.no_grad():
            return self.state_loss(x, v, pose, **bodies).cpu().numpy().astype(np.float64)

    def state_success(self, x: torch.Tensor, v: torch.Tensor, pose: torch.Tensor) -> torch.Tensor | None:
        """(B,) bool success of a state, or None to use ``loss <= success_loss``."""
        return None

    def success(self, loss: np.ndarray) -> np.ndarray:
        x, v, pose, bodies = self._current()
        with torch.no_grad():
            ok = self.state_success(x, v, pose, **bodies)
        return super().success(loss) if ok is None else ok.cpu().numpy().astype(bool)

    def tool_pose(self, index: int = 0) -> np.ndarray:
        """(7,) current pose of the tool in scene ``index`` (for scripted policies)."""
        return self._require_sim().collider_poses()[index, self.config.tool].cpu().numpy().astype(np.float64)

    # ------------------------------------------------------------------ differentiable path
    def differentiable_rollout(self, actions: torch.Tensor, params: torch.Tensor | None = None) -> torch.Tensor:
        sim = self._require_sim()
        actions = check_action_sequence(actions, self.action_dim, self.horizon)
        dtype = sim.dtype
        actions = actions.to(dtype)
        B = self.batch_size
        start = self._start.detach()
        if params is not None:
            params = torch.as_tensor(params).to(dtype)
            if params.ndim == 2:
                params = params.expand(B, *params.shape)
        # The workspace clamp needs the tool pose at every step; it is a function of the controls
        # alone, so advance it with the engine's own pose integrator (no gradient needed there).
        from engine.geometry import step_pose

        pose = start.collider_pose.to(dtype)
        controls = []
        for t in range(actions.shape[0]):
            c = self.control(actions[t].expand(B, -1), pose)
            controls.append(c)
            with torch.no_grad():
                for _ in range(self.config.sim.substeps):
                    pose = step_pose(pose, c, self.config.sim.dt)
        control = torch.stack(controls)
        out = sim.rollout(start, control, params=params, record="all")
        final_pose = out.final.collider_pose
        bodies = self._bodies(out.bodies if self.model.n_rigid else None)
        return self.trajectory_loss(out.x, out.v, final_pose, **bodies).mean()

    # ------------------------------------------------------------------ rendering
    def render(
        self, index: int = 0, size: int | None = None, views: list[tuple[float, float, float]] | None = None
    ) -> np.ndarray:
        """(size, size, 3) uint8 frame of scene ``index`` from the task's camera.

        ``views``: one ``(azimuth_deg, elevation_deg, zoom)`` orbit of that camera per view
        (:func:`engine.render_camera.orbit`); the views are returned side by side.
        """
        from engine.render import Renderer, particle_colors, particle_optics
        from engine.render_camera import orbit, tile

        sim = self._require_sim()
        if not 0 <= index < self.batch_size:
            raise ValueError(f"render index must be in [0, {self.batch_size}), got {index}")
        size = size or self.config.render_size
        cfg = self.config
        if self._renderer is None or self._renderer.width != size:
            self._renderer = Renderer(
                width=size,
                height=size,
                camera_pos=cfg.camera_pos,
                look_at=cfg.look_at,
                fov_deg=45.0,
                particle_radius=0.35 * cfg.sim.dx,
                floor_z=cfg.sim.boundary_cells * cfg.sim.dx,
            )
            self._colors = particle_colors(self.model)
            self._optics = particle_optics(self.model)
        x = sim.positions()[index]
        pose = sim.collider_poses()[index].cpu().numpy()
        colliders = list(zip(self.model.colliders, pose, strict=True))
        bodies = []
        if self.model.n_rigid:
            body_pose = sim.body_state()[index, :, :7].cpu().numpy()
            bodies = list(zip(self.model.bodies, body_pose, strict=True))
        frames = []
        for view in views or [(0.0, 0.0, 1.0)]:
            if len(view) != 3:
                raise ValueError(f"each view must be (azimuth_deg, elevation_deg, zoom), got {view!r}")
            self._renderer.set_camera(orbit(cfg.camera_pos, cfg.look_at, *view), cfg.look_at)
            frames.append(self._renderer.render(x, self._colors, colliders, bodies=bodies, optics=self._optics))
        return tile(frames)

    def close(self) -> None:
        self.sim = None
        self._renderer = None


def ensure_runtime(precision: str | None = None) -> None:
    """Initialize the engine (CPU, f32 unless given) if nothing has yet; else check precision."""
    if runtime.current() is None:
        engine.init(precision=precision or "f32")
    elif precision is not None and runtime.current().precision != precision:
        raise ValueError(
            f"the FluxLab runtime already runs in {runtime.current().precision}; cannot make a {precision} env"
        )
