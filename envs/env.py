"""The one Gymnasium environment class of FluxLab, parameterized by task name.

``FluxLabEnv(task="Pouring")`` wraps a :class:`tasks.base.Task` with batch size 1; every task is
registered as ``FluxLab/<Task>-v0`` (see :mod:`envs`). The env is a thin adapter: validation of
actions and Gymnasium's seeding; the step bookkeeping (reward terms in ``info``, blow-up
handling) is :mod:`envs.step`, shared with the vector env; the physics, the observation and the
loss live in the task.

Worker processes. An env pickles as its constructor arguments (Gymnasium's ``EzPickle``, as its
MuJoCo envs do): unpickling builds a new env (reset it before stepping) and imports this package,
which registers the ids, so a pickled env or :meth:`envs.spec.EnvSpec.make` runs in any worker
(``multiprocessing`` with any start method, Ray). Every start method works for workers that make
their own envs (see :mod:`engine.runtime` for fork); an env made before its process forked
refuses to run in the child (:func:`check_generation`).
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium.utils import EzPickle

from engine import runtime
from envs.step import finish_step
from tasks import make_task
from tasks.base import ensure_runtime, real_array


def check_generation(generation: int) -> None:
    """Raise if the process forked since an env recorded ``generation`` (:func:`engine.runtime.generation`):
    its Taichi buffers belong to the parent's runtime, which the child cannot use."""
    if generation != runtime.generation():
        raise RuntimeError(
            "this FluxLab env was made before its process forked and cannot run in the child; make the env "
            "inside the worker process (e.g. pass gymnasium.make's id or EnvSpec.make, not an env object)"
        )


class FluxLabEnv(gym.Env, EzPickle):
    """A FluxLab manipulation task as a Gymnasium environment.

    ## Description
    One of FluidLab's manipulation tasks (Xian et al., ICLR 2023) simulated by FluxLab's engine
    (MLS-MPM liquids and solids, or Eulerian gas); see the task module for the scene and goal.

    ## Action Space
    ``Box(-1, 1, (A,), float32)``: velocities of the task's tool (its config's ``action_dofs``),
    scaled by ``action_scale`` [m/s, rad/s]. NaN/Inf or wrong-shape actions raise ``ValueError``.

    ## Observation Space
    ``Box(low, high, (D,), float32)`` with the task's physical bounds: for particle tasks,
    ``obs_points`` particles per material (positions relative to the domain centre, then
    velocities) and the tool pose (7) and velocity (6); for the gas task, probe temperatures and
    the actuator state.

    ## Rewards
    ``progress_scale * (loss before - loss after) - action_cost * |a|^2`` per step; the terms
    are in ``info`` as ``reward_<term>``; ``info["loss"]`` is the task loss after the step.

    ## Starting State
    The task's scene with the tool's start (x, y) jittered by ``reset_noise`` from the seed.

    ## Episode End
    Truncation at the task horizon (``gymnasium.make`` wraps the env in a ``TimeLimit`` at that
    horizon; a ``horizon=`` override or the preset sets it); ``truncated=True``
    with ``info["diverged"]=True`` when the simulation blows up; ``terminated`` only if a task
    defines a terminal state. ``info["success"]`` reports the task's success test.

    ## Arguments
    ``task`` (registered name), ``preset`` ("cpu" | "paper"), ``render_mode`` (None |
    "rgb_array"), ``precision`` ("f32" | "f64"; default: the active runtime, else f32),
    ``render_size`` (pixels), and any task config field as a keyword override. The env pickles
    as these arguments (the unpickled env is new: reset it).

    ## Version History
    * v0: initial release.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 20}

    def __init__(
        self,
        task: str,
        preset: str = "cpu",
        render_mode: str | None = None,
        precision: str | None = None,
        render_size: int | None = None,
        **config_overrides: Any,
    ):
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be None or one of {self.metadata['render_modes']}, got {render_mode!r}")
        ensure_runtime(precision)
        precision = runtime.current().precision
        EzPickle.__init__(self, task, preset, render_mode, precision, render_size, **config_overrides)
        self._generation = runtime.generation()
        if render_size is not None:  # validated with the task config's own render_size
            config_overrides["render_size"] = render_size
        self.task = make_task(task, preset, **config_overrides)
        self.task.make(1)
        self.render_mode = render_mode
        self.render_size = render_size
        self.metadata = {**self.metadata, "render_fps": self.task.render_fps}
        self.action_space = gym.spaces.Box(-1.0, 1.0, shape=(self.task.action_dim,), dtype=np.float32)
        self.observation_space = gym.spaces.Box(*self.task.observation_limits(), dtype=np.float32)
        self._t = 0
        self._last_obs: np.ndarray | None = None
        self._last_loss: np.ndarray | None = None

    @property
    def horizon(self) -> int:
        return self.task.horizon

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        check_generation(self._generation)
        super().reset(seed=seed)
        self.task.reset(np.ones(1, dtype=bool), [self.np_random])
        self._last_obs = self.task.observe()
        self._last_loss = self.task.loss()
        self._t = 0
        return self._last_obs[0].copy(), {"loss": float(self._last_loss[0])}

    def step(self, action):
        check_generation(self._generation)
        if self._last_obs is None:
            raise RuntimeError("call reset() before step()")
        a = real_array(action, "action")
        if a.shape != self.action_space.shape:
            raise ValueError(f"action must have shape {self.action_space.shape}, got {a.shape}")
        diverged = self.task.step(a[None])
        self._t += 1
        out = finish_step(self.task, self._last_obs, self._last_loss, a[None], diverged)
        self._last_obs, self._last_loss = out.obs, out.loss
        # The horizon is also enforced by TimeLimit at the registered horizon.
        truncated = bool(out.diverged[0]) or self._t >= self.task.horizon
        return out.obs[0].copy(), float(out.reward[0]), bool(out.terminated[0]), truncated, out.scene_info(0)

    def __setstate__(self, state: dict) -> None:
        """Build the env anew from the pickled constructor arguments (:meth:`EzPickle.__getstate__`)."""
        self.__init__(*state["_ezpickle_args"], **state["_ezpickle_kwargs"])

    def render(self):
        check_generation(self._generation)
        if self.render_mode != "rgb_array":
            return None
        return self.task.render(0, self.render_size)

    def differentiable_rollout(self, actions: torch.Tensor, params: torch.Tensor | None = None) -> torch.Tensor:
        """Scalar task loss after ``actions`` (T, *action_space.shape) from the last reset state.

        ``params`` optionally replaces the material parameter table (materials, 5). The result
        is a torch scalar whose ``.backward()`` fills ``actions.grad`` and ``params.grad``.
        """
        if self._last_obs is None:
            raise RuntimeError("call reset() before differentiable_rollout()")
        check_generation(self._generation)
        return self.task.differentiable_rollout(actions, params)

    def scripted_action(self) -> np.ndarray:
        """The task's scripted reference action for the current step (float32, in the action space)."""
        return np.asarray(self.task.scripted_action(self._t, 0), dtype=np.float32)

    def close(self):
        self.task.close()
        super().close()
