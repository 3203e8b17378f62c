"""Gymnasium environments wrapping FluxLab tasks; importing this package registers them.

Every task in :data:`tasks.TASKS` is registered as ``FluxLab/<Task>-v0`` with the generic
:class:`envs.env.FluxLabEnv` (``gymnasium.make``) and the batched
:class:`envs.vector.FluxLabVectorEnv` (``gymnasium.make_vec(..., vectorization_mode=
"vector_entry_point")``), with ``max_episode_steps`` = the task's cpu-preset horizon. For
``preset="paper"`` pass ``max_episode_steps`` to ``gymnasium.make`` yourself.
"""

from __future__ import annotations

import gymnasium as gym

import tasks

NAMESPACE = "FluxLab"


def env_id(task: str) -> str:
    """The registered id of a task, e.g. ``FluxLab/Pouring-v0``."""
    return f"{NAMESPACE}/{task}-v0"


def register_all() -> list[str]:
    """Register every available task (idempotent); returns the ids."""
    ids = []
    for name in tasks.available():
        eid = env_id(name)
        if eid not in gym.registry:
            gym.register(
                id=eid,
                entry_point="envs.env:FluxLabEnv",
                vector_entry_point="envs.vector:FluxLabVectorEnv",
                max_episode_steps=tasks.task_class(name).default_config("cpu").horizon,
                kwargs={"task": name},
            )
        ids.append(eid)
    return ids


ENV_IDS = register_all()
