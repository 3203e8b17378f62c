"""A Stable-Baselines3 ``VecEnv`` whose scenes live in Ray actors, each holding a batched FluxLab env.

RL with more scenes than one process steps: W Ray actors each hold a
:class:`envs.vector.FluxLabVectorEnv` of B scenes behind :class:`policies.rl.GymnasiumVecEnv`
(SB3's same-step autoreset, ``terminal_observation``), and :class:`RayVecEnv` presents the W x B
scenes to SB3 as one ``VecEnv``: ``step_async`` sends each actor its slice of the actions without
waiting, ``step_wait`` gathers the slices in actor order. Scene i of actor w is scene w x B + i
of the whole, seeded ``seed + w x B + i`` as in SB3's ``DummyVecEnv``; with the deterministic
runtime the stream (observations, rewards, dones, infos) is bitwise that of one
``GymnasiumVecEnv`` over a W x B batched env in one process. PPO and SAC learn in the driver
(the policy is small; the simulation is the cost), as RLlib's env runners do for sampling.

SB3 rather than RLlib: the trained model, its ``model.json``, the evaluation, the learning curve
and ``fluxlab rollout`` stay those of :func:`policies.rl.train`, and the only new part is where
the scenes step.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import ray
from stable_baselines3.common.vec_env import VecEnv

from envs import EnvSpec
from policies.dist.worker import WorkerRuntime


class _EnvWorker:
    """A Ray actor: one process, one runtime, one batched env of B scenes (SB3 semantics)."""

    def __init__(self, spec: EnvSpec, num_envs: int, runtime: WorkerRuntime):
        from policies.rl import GymnasiumVecEnv

        runtime.start()
        self.env = GymnasiumVecEnv(spec.make_vec(num_envs))

    def spaces(self):
        return self.env.observation_space, self.env.action_space

    def reset(self, seed: int | None):
        if seed is not None:
            self.env.seed(seed)
        obs = self.env.reset()
        return obs, self.env.reset_infos

    def step(self, actions: np.ndarray):
        obs, rewards, dones, infos = self.env.step(actions)
        return obs, rewards, dones, infos, self.env.reset_infos

    def call(self, method: str, *args, **kwargs):
        return getattr(self.env, method)(*args, **kwargs)

    def close(self) -> None:
        self.env.close()


class RayVecEnv(VecEnv):
    """``workers`` Ray actors x ``envs_per_worker`` scenes as one SB3 ``VecEnv``.

    Args:
        spec: the env of every scene.
        workers: actors (W).
        envs_per_worker: scenes per actor (B), stepped in one batched simulator.
        cpus_per_worker: CPUs each actor reserves (and its Taichi thread pool).
        gpus_per_worker: GPUs each actor reserves (its engine then runs on CUDA).
        deterministic: one-thread bitwise-reproducible kernels in every actor (CPU only).

    Raises:
        ValueError: ``workers``, ``envs_per_worker`` or ``cpus_per_worker`` < 1.
    """

    def __init__(
        self,
        spec: EnvSpec,
        *,
        workers: int,
        envs_per_worker: int,
        cpus_per_worker: int = 1,
        gpus_per_worker: float = 0.0,
        deterministic: bool = False,
    ):
        for name, value in (
            ("workers", workers),
            ("envs_per_worker", envs_per_worker),
            ("cpus_per_worker", cpus_per_worker),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an int >= 1, got {value!r}")
        arch = "cuda" if gpus_per_worker > 0 else "cpu"
        runtime = WorkerRuntime(spec.precision, arch, deterministic, None if deterministic else cpus_per_worker)
        actor = ray.remote(_EnvWorker).options(num_cpus=cpus_per_worker, num_gpus=gpus_per_worker)
        self.actors = [actor.remote(spec, envs_per_worker, runtime) for _ in range(workers)]
        self.envs_per_worker = envs_per_worker
        observation_space, action_space = ray.get(self.actors[0].spaces.remote())
        self._pending: list | None = None
        super().__init__(workers * envs_per_worker, observation_space, action_space)

    def _slices(self) -> list[slice]:
        B = self.envs_per_worker
        return [slice(w * B, (w + 1) * B) for w in range(len(self.actors))]

    def reset(self):
        seeds = self._seeds
        if any(s is not None for s in seeds) and any(s is None for s in seeds):
            raise ValueError(f"either every scene gets a seed or none: {seeds}")
        parts = ray.get(
            [a.reset.remote(None if seeds[s.start] is None else int(seeds[s.start])) for a, s in self._pairs()]
        )
        self.reset_infos = [info for _, infos in parts for info in infos]
        self._reset_seeds()
        self._reset_options()
        return np.concatenate([obs for obs, _ in parts])

    def _pairs(self):
        return zip(self.actors, self._slices(), strict=True)

    def step_async(self, actions: np.ndarray) -> None:
        actions = np.asarray(actions)
        self._pending = [a.step.remote(actions[s]) for a, s in self._pairs()]

    def step_wait(self):
        if self._pending is None:
            raise RuntimeError("step_async must come before step_wait")
        parts = ray.get(self._pending)
        self._pending = None
        self.reset_infos = [info for part in parts for info in part[4]]
        obs = np.concatenate([p[0] for p in parts])
        rewards = np.concatenate([p[1] for p in parts])
        dones = np.concatenate([p[2] for p in parts])
        infos = [info for p in parts for info in p[3]]
        return obs, rewards, dones, infos

    def close(self) -> None:
        ray.get([a.close.remote() for a in self.actors])
        for a in self.actors:
            ray.kill(a)
        self.actors = []

    def _indices(self, indices) -> list[int]:
        if indices is None:
            return list(range(self.num_envs))
        if isinstance(indices, int):
            return [indices]
        return list(indices)

    def _by_actor(self, indices) -> dict[int, list[int]]:
        """Global scene indices -> {actor: local indices}."""
        out: dict[int, list[int]] = {}
        for i in self._indices(indices):
            out.setdefault(i // self.envs_per_worker, []).append(i % self.envs_per_worker)
        return out

    def get_attr(self, attr_name: str, indices=None) -> list[Any]:
        groups = self._by_actor(indices)
        parts = ray.get([self.actors[w].call.remote("get_attr", attr_name, local) for w, local in groups.items()])
        return [value for part in parts for value in part]

    def set_attr(self, attr_name: str, value: Any, indices=None) -> None:
        groups = self._by_actor(indices)
        ray.get([self.actors[w].call.remote("set_attr", attr_name, value, local) for w, local in groups.items()])

    def env_method(self, method_name: str, *method_args, indices=None, **method_kwargs) -> list[Any]:
        groups = self._by_actor(indices)
        calls = [
            self.actors[w].call.remote("env_method", method_name, *method_args, indices=local, **method_kwargs)
            for w, local in groups.items()
        ]
        return [value for part in ray.get(calls) for value in part]

    def env_is_wrapped(self, wrapper_class, indices=None) -> list[bool]:
        return [False for _ in self._indices(indices)]

    def get_images(self):
        return [image for part in ray.get([a.call.remote("get_images") for a in self.actors]) for image in part]
