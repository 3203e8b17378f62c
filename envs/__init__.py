"""Gymnasium environments wrapping FluxLab tasks; importing this package registers them.

Every task in :data:`tasks.TASKS` is registered as ``FluxLab/<Task>-v0`` with the generic
:class:`envs.env.FluxLabEnv` (``gymnasium.make``, in a ``TimeLimit`` at the task's horizon after
overrides and preset) and the batched :class:`envs.vector.FluxLabVectorEnv`
(``gymnasium.make_vec(..., vectorization_mode="vector_entry_point")``) (:mod:`envs.registry`).
:class:`envs.spec.EnvSpec` describes one environment (task, preset, config overrides, precision,
seed) as a single picklable value. Both env classes share their step bookkeeping
(:mod:`envs.step`).
"""

from __future__ import annotations

from envs.registry import ENV_IDS, NAMESPACE, env_id, register_all, registered_tasks, resolve_task
from envs.spec import EnvSpec

__all__ = ["ENV_IDS", "NAMESPACE", "EnvSpec", "env_id", "register_all", "registered_tasks", "resolve_task"]
