"""One value that defines a FluxLab environment: task, preset, config overrides, precision, seed.

:class:`EnvSpec` is what trajectories (``.npz``), trained models (``model.json``), run summaries
(``summary.json``) and remote workers record and exchange, so an environment is rebuilt from it
alone. It is a frozen dataclass: picklable, hashable, and equal when it describes the same
environment. Config overrides are kept as ``(key, value)`` pairs sorted by key, so their order
never matters; list values become tuples (task configs hold tuples) and every value must be
JSON-compatible (None, bool, int, float, str, or nested sequences of them), so
:meth:`EnvSpec.to_dict` and :meth:`EnvSpec.from_dict` round-trip through JSON.

Rendering (``render_mode``, ``render_size``) is an argument of :meth:`EnvSpec.make`, not part of
the spec: it changes what an env draws, never its dynamics, observations or rewards.

Change a field with :func:`dataclasses.replace` (``replace(spec, seed=3)``; a replaced
``config_overrides`` is normalized and validated again), add overrides with
:meth:`EnvSpec.with_overrides`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

import tasks
from envs.registry import env_id, resolve_task
from tasks.base import PRESETS

PRECISIONS = ("f32", "f64")
#: Keys of :meth:`EnvSpec.to_dict`, in order.
DICT_KEYS = ("task", "preset", "overrides", "precision", "seed")


def _freeze(value: Any, where: str) -> Any:
    """``value`` as an immutable JSON-compatible value: sequences become tuples, numpy scalars Python ones."""
    if isinstance(value, np.generic):
        value = value.item()
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{where} must be finite, got {value!r}")
        return value
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v, f"{where}[{i}]") for i, v in enumerate(value))
    raise ValueError(
        f"{where} must be None, bool, int, float, str or a sequence of them (JSON-compatible), "
        f"got {type(value).__name__}"
    )


def _thaw(value: Any) -> Any:
    """Tuples back to lists, for JSON."""
    return [_thaw(v) for v in value] if isinstance(value, tuple) else value


@dataclass(frozen=True)
class EnvSpec:
    """A FluxLab environment, as one picklable, hashable value.

    Attributes:
        task: registered task name; ``Pouring``, ``Pouring-v0`` and ``FluxLab/Pouring-v0`` are
            all stored as ``Pouring``.
        preset: task preset, ``cpu`` or ``paper``.
        config_overrides: task-config fields to replace, given as a mapping or ``(key, value)``
            pairs; stored as pairs sorted by key (read them as a dict with :attr:`overrides`).
        precision: simulation float type, ``f32`` or ``f64`` (the process's Taichi runtime must
            run in it; the first env made initializes it).
        seed: env reset seed of the episodes this spec describes (``env.reset(seed=spec.seed)``;
            :meth:`make` does not reset).

    Raises:
        ValueError: naming the field: an unknown task or preset, an override that is not a
            field of the task's config (or ``preset``, which has its own field), a value that
            is not JSON-compatible or that the task config rejects, a precision other than f32 /
            f64, or a seed that is not an int >= 0.

    Example:
        >>> spec = EnvSpec("Pouring-v0", config_overrides={"horizon": 6}, seed=2)
        >>> env = spec.make(render_mode="rgb_array")
        >>> obs, info = env.reset(seed=spec.seed)
    """

    task: str
    preset: str = "cpu"
    config_overrides: tuple[tuple[str, Any], ...] | Mapping[str, Any] = ()
    precision: str = "f32"
    seed: int = 0

    def __post_init__(self):
        try:
            name = resolve_task(self.task)
        except ValueError as err:
            raise ValueError(f"EnvSpec.task: {err}") from None
        if self.preset not in PRESETS:
            raise ValueError(f"EnvSpec.preset must be one of {PRESETS}, got {self.preset!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"EnvSpec.precision must be one of {PRECISIONS}, got {self.precision!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, (int, np.integer)) or self.seed < 0:
            raise ValueError(f"EnvSpec.seed must be an int >= 0, got {self.seed!r}")
        items = self.config_overrides
        pairs = items.items() if isinstance(items, Mapping) else items
        try:
            overrides = dict(pairs)
        except (TypeError, ValueError):
            overrides = None
        if overrides is None or not all(isinstance(key, str) for key in overrides):
            raise ValueError(f"EnvSpec.config_overrides must map field names to values, got {items!r}")
        if "preset" in overrides:
            raise ValueError("EnvSpec.config_overrides: set the preset with EnvSpec.preset, not as an override")
        frozen = tuple(sorted((k, _freeze(v, f"EnvSpec.config_overrides[{k!r}]")) for k, v in overrides.items()))
        object.__setattr__(self, "task", name)
        object.__setattr__(self, "config_overrides", frozen)
        object.__setattr__(self, "seed", int(self.seed))
        try:
            self.task_config()
        except (TypeError, ValueError) as err:
            raise ValueError(f"EnvSpec.config_overrides: {err}") from None

    @property
    def overrides(self) -> dict[str, Any]:
        """The config overrides as a new dict (key -> value)."""
        return dict(self.config_overrides)

    @property
    def env_id(self) -> str:
        """The registered Gymnasium id, e.g. ``FluxLab/Pouring-v0``."""
        return env_id(self.task)

    def task_config(self):
        """The task's config (a :class:`tasks.base.TaskConfig`) at the preset, with the overrides."""
        return tasks.task_config(self.task, self.preset, **self.overrides)

    @property
    def horizon(self) -> int:
        """Episode length [env steps] after the overrides."""
        return int(self.task_config().horizon)

    def with_overrides(self, **overrides: Any) -> EnvSpec:
        """A copy with ``overrides`` added to (or replacing) the config overrides."""
        return EnvSpec(self.task, self.preset, {**self.overrides, **overrides}, self.precision, self.seed)

    def make(self, render_mode: str | None = None, render_size: int | None = None):
        """``gymnasium.make`` of this env; its ``TimeLimit`` is the task horizon after overrides
        (:func:`envs.registry.make_env`).

        Args:
            render_mode: None or ``"rgb_array"``.
            render_size: frame width and height [px] (default: the task's).
        """
        import gymnasium as gym

        return gym.make(
            self.env_id,
            preset=self.preset,
            render_mode=render_mode,
            render_size=render_size,
            precision=self.precision,
            **self.overrides,
        )

    def make_vec(self, num_envs: int, render_mode: str | None = None, render_size: int | None = None):
        """The batched :class:`envs.vector.FluxLabVectorEnv` of ``num_envs`` scenes (``gymnasium.make_vec``
        with the vector entry point); ``reset(seed=s)`` seeds scene i with ``s + i``."""
        import gymnasium as gym

        return gym.make_vec(
            self.env_id,
            num_envs=num_envs,
            vectorization_mode="vector_entry_point",
            max_episode_steps=self.horizon,
            preset=self.preset,
            render_mode=render_mode,
            render_size=render_size,
            precision=self.precision,
            **self.overrides,
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-compatible dict with keys :data:`DICT_KEYS` (override tuples as lists)."""
        return {
            "task": self.task,
            "preset": self.preset,
            "overrides": {k: _thaw(v) for k, v in self.config_overrides},
            "precision": self.precision,
            "seed": self.seed,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EnvSpec:
        """The spec of a :meth:`to_dict` dict; missing keys other than ``task`` take the defaults.

        Raises:
            ValueError: not a mapping, no ``task``, keys other than :data:`DICT_KEYS`, or an
                invalid field.
        """
        if not isinstance(data, Mapping):
            raise ValueError(f"an EnvSpec dict must be a mapping, got {type(data).__name__}")
        unknown = sorted(set(data) - set(DICT_KEYS))
        if unknown or "task" not in data:
            raise ValueError(f"an EnvSpec dict needs 'task' and only keys {DICT_KEYS}; got keys {sorted(data)}")
        overrides = data.get("overrides", {})
        if not isinstance(overrides, Mapping):
            raise ValueError(f"EnvSpec 'overrides' must be a JSON object, got {overrides!r}")
        return cls(
            task=data["task"],
            preset=data.get("preset", "cpu"),
            config_overrides=overrides,
            precision=data.get("precision", "f32"),
            seed=data.get("seed", 0),
        )
