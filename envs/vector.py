"""B scenes of one task stepped in one kernel launch, as a Gymnasium ``VectorEnv``.

The engine's batch axis does the vectorization (no subprocesses, no Python loop over scenes).
Semantics match ``gymnasium.vector.SyncVectorEnv`` over B :class:`envs.env.FluxLabEnv` with
``max_episode_steps`` = the task horizon: ``reset(seed=s)`` seeds scene i with ``s + i``, and
autoreset is Gymnasium's default next-step mode (the step after an episode ends resets that
scene and returns its first observation with reward 0 and no termination). The step bookkeeping
(rewards, blow-up masking, ``info``) is :mod:`envs.step`, shared with the single env.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium.utils import seeding
from gymnasium.vector import AutoresetMode
from gymnasium.vector.utils import batch_space

from envs.step import finish_step
from tasks import make_task
from tasks.base import ensure_runtime


class FluxLabVectorEnv(gym.vector.VectorEnv):
    """``num_envs`` copies of a FluxLab task in one batched simulator.

    Arguments as :class:`envs.env.FluxLabEnv`, plus ``num_envs`` and ``max_episode_steps``
    (default and upper bound: the task horizon). ``info`` holds per-scene arrays ``loss``, ``success``,
    ``diverged`` and ``reward_<term>``.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 20, "autoreset_mode": AutoresetMode.NEXT_STEP}

    def __init__(
        self,
        task: str,
        num_envs: int = 1,
        preset: str = "cpu",
        render_mode: str | None = None,
        precision: str | None = None,
        render_size: int | None = None,
        max_episode_steps: int | None = None,
        **config_overrides: Any,
    ):
        if not isinstance(num_envs, int) or num_envs < 1:
            raise ValueError(f"num_envs must be an int >= 1, got {num_envs!r}")
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be None or one of {self.metadata['render_modes']}, got {render_mode!r}")
        ensure_runtime(precision)
        self.task = make_task(task, preset, **config_overrides)
        self.task.make(num_envs)
        self.num_envs = num_envs
        self.render_mode = render_mode
        self.render_size = render_size
        # Gymnasium passes the registered (cpu-preset) limit; an episode never outlasts the task's
        # own horizon, which a config override (``horizon=...``) may shorten.
        self.max_episode_steps = min(int(max_episode_steps or self.task.horizon), self.task.horizon)
        self.metadata = {**self.metadata, "render_fps": self.task.render_fps}
        self.single_action_space = gym.spaces.Box(-1.0, 1.0, shape=(self.task.action_dim,), dtype=np.float32)
        self.single_observation_space = gym.spaces.Box(*self.task.observation_limits(), dtype=np.float32)
        self.action_space = batch_space(self.single_action_space, num_envs)
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self._rngs = [seeding.np_random(None)[0] for _ in range(num_envs)]
        self._t = np.zeros(num_envs, dtype=np.int64)
        self._autoreset = np.zeros(num_envs, dtype=bool)
        self._last_obs: np.ndarray | None = None
        self._last_loss: np.ndarray | None = None

    def reset(self, *, seed: int | list[int] | None = None, options: dict | None = None):
        if seed is not None:
            seeds = [seed + i for i in range(self.num_envs)] if isinstance(seed, int) else list(seed)
            if len(seeds) != self.num_envs:
                raise ValueError(f"need {self.num_envs} seeds, got {len(seeds)}")
            self._rngs = [seeding.np_random(s)[0] for s in seeds]
        mask = np.ones(self.num_envs, dtype=bool)
        if options is not None and "reset_mask" in options:
            mask = np.asarray(options["reset_mask"], dtype=bool)
        self.task.reset(mask, self._rngs)
        self._t[mask] = 0
        self._autoreset[mask] = False
        obs, loss = self.task.observe(), self.task.loss()
        if self._last_obs is None:
            self._last_obs, self._last_loss = obs, loss
        self._last_obs[mask], self._last_loss[mask] = obs[mask], loss[mask]
        return self._last_obs.copy(), {"loss": self._last_loss.copy()}

    def step(self, actions):
        if self._last_obs is None:
            raise RuntimeError("call reset() before step()")
        a = np.asarray(actions, dtype=np.float64)
        if a.shape != self.action_space.shape:
            raise ValueError(f"actions must have shape {self.action_space.shape}, got {a.shape}")
        restart = self._autoreset.copy()
        a = np.where(restart[:, None], 0.0, a)  # scenes being reset ignore their action
        diverged = self.task.step(a)
        if restart.any():
            self.task.reset(restart, self._rngs)
        out = finish_step(self.task, self._last_obs, self._last_loss, a, diverged, restart)
        self._t = np.where(restart, 0, self._t + 1)
        truncated = (out.diverged | (self._t >= self.max_episode_steps)) & ~restart & ~out.terminated
        self._autoreset = out.terminated | truncated
        self._last_obs, self._last_loss = out.obs, out.loss
        return out.obs.copy(), out.reward, out.terminated, truncated, out.info

    def render(self):
        if self.render_mode != "rgb_array":
            return None
        return tuple(self.task.render(i, self.render_size) for i in range(self.num_envs))

    def scripted_actions(self) -> np.ndarray:
        """(B, A) float32 scripted reference actions for every scene at its own step."""
        return np.stack([self.task.scripted_action(int(t), i) for i, t in enumerate(self._t)]).astype(np.float32)

    def differentiable_rollout(self, actions: torch.Tensor, params: torch.Tensor | None = None) -> torch.Tensor:
        """Mean task loss over the scenes after ``actions`` (T, A) from each scene's reset state."""
        return self.task.differentiable_rollout(actions, params)

    def close(self, **kwargs):
        self.task.close()
        super().close(**kwargs)
