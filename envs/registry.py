"""Gymnasium registration of every FluxLab task, and task ids to registered names.

Every task in :data:`tasks.TASKS` whose module is present is registered as
``FluxLab/<Task>-v0`` with :func:`make_env` (``gymnasium.make``: the generic
:class:`envs.env.FluxLabEnv` in a ``TimeLimit`` at the task's own horizon, so a ``horizon=``
override or the paper preset sets the episode length and ``env.spec.max_episode_steps`` reports
it) and the batched :class:`envs.vector.FluxLabVectorEnv` (``gymnasium.make_vec(...,
vectorization_mode="vector_entry_point")``). The registry itself holds no ``max_episode_steps``
(a fixed one would cut a longer horizon short); ``gymnasium.make(..., max_episode_steps=n)`` still
adds a limit of its own. Importing this module registers them.
"""

from __future__ import annotations

import gymnasium as gym

import tasks

NAMESPACE = "FluxLab"


def env_id(task: str) -> str:
    """The registered id of a task, e.g. ``FluxLab/Pouring-v0``."""
    return f"{NAMESPACE}/{task}-v0"


def make_env(**kwargs) -> gym.Env:
    """``FluxLabEnv(**kwargs)`` with Gymnasium's ``TimeLimit`` at its task's horizon."""
    from envs.env import FluxLabEnv

    env = FluxLabEnv(**kwargs)
    return gym.wrappers.TimeLimit(env, max_episode_steps=env.horizon)


def register_all() -> list[str]:
    """Register every available task (idempotent); returns the ids."""
    ids = []
    for name in tasks.available():
        eid = env_id(name)
        if eid not in gym.registry:
            gym.register(
                id=eid,
                entry_point="envs.registry:make_env",
                vector_entry_point="envs.vector:FluxLabVectorEnv",
                kwargs={"task": name},
            )
        ids.append(eid)
    return ids


ENV_IDS = register_all()


def resolve_task(task: str) -> str:
    """The registered task name of ``task`` given as ``Pouring``, ``Pouring-v0`` or ``FluxLab/Pouring-v0``.

    Raises:
        ValueError: the task is not registered (the message lists the registered ids).
    """
    name = str(task)
    if name.startswith(f"{NAMESPACE}/"):
        name = name[len(NAMESPACE) + 1 :]
    if name.endswith("-v0"):
        name = name[: -len("-v0")]
    if env_id(name) not in ENV_IDS:
        raise ValueError(f"unknown task {task!r}; registered: {', '.join(ENV_IDS)}")
    return name


def registered_tasks() -> list[str]:
    """Names of all registered tasks (those whose module is present)."""
    return [resolve_task(eid) for eid in ENV_IDS]
