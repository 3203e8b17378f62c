"""B scenes of one task stepped in one kernel launch, as a Gymnasium ``VectorEnv``.

The engine's batch axis does the vectorization (no subprocesses, no Python loop over scenes).
Semantics match ``gymnasium.vector.SyncVectorEnv`` over B :class:`envs.env.FluxLabEnv` with
``max_episode_steps`` = the task horizon: ``reset(seed=s)`` seeds scene i with ``s + i``;
``reset(options={"reset_mask": m})`` resets the scenes where the (B,) bool array ``m`` is True;
``info`` holds every key as a (B,) array with a boolean ``_<key>`` array marking the scenes that
report it. Autoreset follows Gymnasium's three modes (``autoreset_mode``, an
``gymnasium.vector.AutoresetMode`` or its value):

* ``NEXT_STEP`` (default): the step after an episode ends resets that scene (its action is
  ignored) and returns its first observation with reward 0, no termination and the reset's
  ``info`` (``loss`` only);
* ``SAME_STEP``: the step that ends an episode resets the scene at once and returns its first
  observation and the reset's ``info``; the last observation and info of the episode are in
  ``info["final_obs"]`` (an object array) and ``info["final_info"]``;
* ``DISABLED``: no autoreset; a scene whose episode ended must be reset with ``reset_mask``
  before the next step, which otherwise raises ``RuntimeError``.

The step bookkeeping (rewards, blow-up masking, ``info``) is :mod:`envs.step`, shared with the
single env. An env pickles as its constructor arguments (``gymnasium.utils.EzPickle``): the
unpickled copy is a new env, to be reset.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium.utils import EzPickle, seeding
from gymnasium.vector import AutoresetMode
from gymnasium.vector.utils import batch_space

from engine import runtime
from envs.env import check_generation
from envs.step import finish_step
from tasks import make_task
from tasks.base import ensure_runtime, real_array


def _masked_info(values: dict[str, np.ndarray], mask: np.ndarray) -> dict[str, np.ndarray]:
    """Gymnasium's vector ``info`` layout: each (B,) array with ``_<key>`` = ``mask``, and the
    values of the scenes outside ``mask`` zeroed (as ``SyncVectorEnv`` leaves them); no keys if
    no scene is in ``mask``."""
    info = {}
    if not mask.any():
        return info
    for key, value in values.items():
        info[key] = np.where(mask, value, np.zeros_like(value))
        info[f"_{key}"] = mask.copy()
    return info


def _merge_info(first: dict[str, np.ndarray], second: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Two masked infos of disjoint scenes as one (the values of ``second`` where its mask holds)."""
    out = dict(first)
    for key, value in second.items():
        if key.startswith("_") or f"_{key}" not in second:
            continue
        mask = second[f"_{key}"]
        if key in out:
            out[key] = np.where(mask, value, out[key])
            out[f"_{key}"] = out[f"_{key}"] | mask
        else:
            out[key], out[f"_{key}"] = value, mask.copy()
    return out


class FluxLabVectorEnv(gym.vector.VectorEnv, EzPickle):
    """``num_envs`` copies of a FluxLab task in one batched simulator.

    Arguments as :class:`envs.env.FluxLabEnv`, plus ``num_envs``, ``max_episode_steps``
    (default and upper bound: the task horizon) and ``autoreset_mode`` (see the module docstring;
    also the attribute ``autoreset_mode`` and ``metadata["autoreset_mode"]``). ``info`` holds
    per-scene arrays ``loss``, ``success``, ``diverged`` and ``reward_<term>``, each with its
    ``_<key>`` mask.
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
        autoreset_mode: AutoresetMode | str = AutoresetMode.NEXT_STEP,
        **config_overrides: Any,
    ):
        if not isinstance(num_envs, int) or num_envs < 1:
            raise ValueError(f"num_envs must be an int >= 1, got {num_envs!r}")
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be None or one of {self.metadata['render_modes']}, got {render_mode!r}")
        try:
            self.autoreset_mode = AutoresetMode(autoreset_mode)
        except ValueError:
            modes = [mode.value for mode in AutoresetMode]
            raise ValueError(f"autoreset_mode must be one of {modes}, got {autoreset_mode!r}") from None
        ensure_runtime(precision)
        precision = runtime.current().precision
        EzPickle.__init__(
            self, task, num_envs, preset, render_mode, precision, render_size, max_episode_steps,
            self.autoreset_mode.value, **config_overrides,
        )  # fmt: skip
        self._generation = runtime.generation()
        if render_size is not None:  # validated with the task config's own render_size
            config_overrides["render_size"] = render_size
        self.task = make_task(task, preset, **config_overrides)
        self.task.make(num_envs)
        self.num_envs = num_envs
        self.render_mode = render_mode
        self.render_size = render_size
        # Gymnasium passes the registered (cpu-preset) limit; an episode never outlasts the task's
        # own horizon, which a config override (``horizon=...``) may shorten.
        self.max_episode_steps = min(int(max_episode_steps or self.task.horizon), self.task.horizon)
        self.metadata = {**self.metadata, "render_fps": self.task.render_fps, "autoreset_mode": self.autoreset_mode}
        self.single_action_space = gym.spaces.Box(-1.0, 1.0, shape=(self.task.action_dim,), dtype=np.float32)
        self.single_observation_space = gym.spaces.Box(*self.task.observation_limits(), dtype=np.float32)
        self.action_space = batch_space(self.single_action_space, num_envs)
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self._rngs = [seeding.np_random(None)[0] for _ in range(num_envs)]
        self._t = np.zeros(num_envs, dtype=np.int64)
        self._ended = np.zeros(num_envs, dtype=bool)  # episode over: NEXT_STEP restarts it, DISABLED waits for reset
        self._last_obs: np.ndarray | None = None
        self._last_loss: np.ndarray | None = None

    def reset(self, *, seed: int | list[int] | None = None, options: dict | None = None):
        check_generation(self._generation)
        if seed is not None:
            seeds = [seed + i for i in range(self.num_envs)] if isinstance(seed, int) else list(seed)
            if len(seeds) != self.num_envs:
                raise ValueError(f"need {self.num_envs} seeds, got {len(seeds)}")
            self._rngs = [seeding.np_random(s)[0] for s in seeds]
        mask = np.ones(self.num_envs, dtype=bool)
        if options is not None and "reset_mask" in options:
            mask = np.asarray(options["reset_mask"])
            if mask.shape != (self.num_envs,) or mask.dtype != np.bool_:
                raise ValueError(
                    f"options['reset_mask'] must be a bool array of shape ({self.num_envs},), "
                    f"got {mask.dtype} {mask.shape}"
                )
        self.task.reset(mask, self._rngs)
        self._t[mask] = 0
        self._ended[mask] = False
        obs, loss = self.task.observe(), self.task.loss()
        if self._last_obs is None:
            self._last_obs, self._last_loss = obs, loss
        self._last_obs[mask], self._last_loss[mask] = obs[mask], loss[mask]
        return self._last_obs.copy(), _masked_info({"loss": self._last_loss}, mask)

    def step(self, actions):
        check_generation(self._generation)
        if self._last_obs is None:
            raise RuntimeError("call reset() before step()")
        a = real_array(actions, "actions")
        if a.shape != self.action_space.shape:
            raise ValueError(f"actions must have shape {self.action_space.shape}, got {a.shape}")
        restart = np.zeros(self.num_envs, dtype=bool)
        if self.autoreset_mode == AutoresetMode.NEXT_STEP:
            restart = self._ended.copy()
        elif self.autoreset_mode == AutoresetMode.DISABLED and self._ended.any():
            raise RuntimeError(
                f"scenes {np.flatnonzero(self._ended).tolist()} ended their episode; with autoreset_mode DISABLED "
                "reset them with reset(options={'reset_mask': mask}) before the next step"
            )
        a = np.where(restart[:, None], 0.0, a)  # scenes being reset ignore their action
        diverged = self.task.step(a)
        if restart.any():
            self.task.reset(restart, self._rngs)
        out = finish_step(self.task, self._last_obs, self._last_loss, a, diverged, restart)
        self._t = np.where(restart, 0, self._t + 1)
        truncated = (out.diverged | (self._t >= self.max_episode_steps)) & ~restart & ~out.terminated
        ended = out.terminated | truncated
        # A restarted scene reports its reset's info (the loss) only, as SyncVectorEnv does.
        info = _merge_info(_masked_info(out.info, ~restart), _masked_info({"loss": out.loss}, restart))
        obs, loss = out.obs, out.loss
        if self.autoreset_mode == AutoresetMode.SAME_STEP and ended.any():
            final_obs = np.full(self.num_envs, None, dtype=object)
            for i in np.flatnonzero(ended):
                final_obs[i] = obs[i].copy()
            final_info = _masked_info(out.info, ended)
            self.task.reset(ended, self._rngs)
            obs[ended], loss[ended] = self.task.observe()[ended], self.task.loss()[ended]
            self._t[ended] = 0
            info = _merge_info(_masked_info(out.info, ~ended), _masked_info({"loss": loss}, ended))
            info.update(final_obs=final_obs, _final_obs=ended.copy(), final_info=final_info, _final_info=ended.copy())
            ended = np.zeros(self.num_envs, dtype=bool)
        self._ended = ended
        self._last_obs, self._last_loss = obs, loss
        return obs.copy(), out.reward, out.terminated, truncated, info

    def __setstate__(self, state: dict) -> None:
        """Build the env anew from the pickled constructor arguments (:meth:`EzPickle.__getstate__`)."""
        self.__init__(*state["_ezpickle_args"], **state["_ezpickle_kwargs"])

    def render(self):
        check_generation(self._generation)
        if self.render_mode != "rgb_array":
            return None
        return tuple(self.task.render(i, self.render_size) for i in range(self.num_envs))

    def scripted_actions(self) -> np.ndarray:
        """(B, A) float32 scripted reference actions for every scene at its own step."""
        return np.stack([self.task.scripted_action(int(t), i) for i, t in enumerate(self._t)]).astype(np.float32)

    def differentiable_rollout(self, actions: torch.Tensor, params: torch.Tensor | None = None) -> torch.Tensor:
        """Mean task loss over the scenes after ``actions`` (T, A) from each scene's reset state."""
        check_generation(self._generation)
        return self.task.differentiable_rollout(actions, params)

    def close(self, **kwargs):
        if hasattr(self, "task"):  # Gymnasium 1.1 also closes, on deletion, an env whose __init__ raised
            self.task.close()
        super().close(**kwargs)
