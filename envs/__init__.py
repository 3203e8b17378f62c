"""Gymnasium environments wrapping FluxLab tasks; importing this package registers them.

Every task in :data:`tasks.TASKS` is registered as ``FluxLab/<Task>-v0`` with the generic
:class:`envs.env.FluxLabEnv` (``gymnasium.make``) and the batched
:class:`envs.vector.FluxLabVectorEnv` (``gymnasium.make_vec(..., vectorization_mode=
"vector_entry_point")``), with ``max_episode_steps`` = the task's cpu-preset horizon
(:mod:`envs.registry`). :class:`envs.spec.EnvSpec` describes one environment (task, preset,
config overrides, precision, seed) as a single picklable value and makes it with the time limit
of its own horizon; with ``gymnasium.make`` and ``preset="paper"`` pass ``max_episode_steps``
yourself. Both env classes share their step bookkeeping (:mod:`envs.step`).
"""

from __future__ import annotations

from envs.registry import ENV_IDS, NAMESPACE, env_id, register_all, registered_tasks, resolve_task
from envs.spec import EnvSpec

__all__ = ["ENV_IDS", "NAMESPACE", "EnvSpec", "env_id", "register_all", "registered_tasks", "resolve_task"]
