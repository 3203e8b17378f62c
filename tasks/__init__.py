"""Manipulation tasks built on the FluxLab engine (FluidLab's ten tasks, Xian et al., ICLR 2023).

Each task is one module with a :class:`tasks.base.Task` subclass and its ``default_config``;
:data:`TASKS` maps the registered name to ``"module:Class"`` so nothing is imported (and no
Taichi kernel compiled) until a task is made. :func:`make_task` builds one,
:func:`task_config` only its configuration.
"""

from __future__ import annotations

import importlib
import importlib.util

TASKS = {
    "LatteArt": "tasks.latte_art:LatteArt",
    "LatteArtStir": "tasks.latte_art_stir:LatteArtStir",
    "IceCreamStatic": "tasks.ice_cream:IceCreamStatic",
    "IceCreamDynamic": "tasks.ice_cream:IceCreamDynamic",
    "GatheringEasy": "tasks.gathering:GatheringEasy",
    "GatheringO": "tasks.gathering:GatheringO",
    "Mixing": "tasks.mixing:Mixing",
    "Pouring": "tasks.pouring:Pouring",
    "Transporting": "tasks.transporting:Transporting",
    "Circulation": "tasks.circulation:Circulation",
}


def available() -> list[str]:
    """Names of the tasks whose module is present (the registry of envs uses this)."""
    names = []
    for name, target in TASKS.items():
        module = target.split(":")[0]
        if importlib.util.find_spec(module) is not None:
            names.append(name)
    return names


def task_class(name: str):
    """The Task subclass registered as ``name``."""
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; known: {sorted(TASKS)}")
    module, cls = TASKS[name].split(":")
    return getattr(importlib.import_module(module), cls)


def task_config(name: str, preset: str = "cpu", **overrides):
    """The config of task ``name`` at ``preset`` with ``overrides`` replacing its fields.

    Raises:
        TypeError: an override that is not a field of the task's config, worded as Python words an
            unexpected keyword argument (clients such as TorchRL's ``GymEnv`` retry without a
            keyword on that error); the message lists the known fields.
        ValueError: a value the config's validation rejects.
    """
    from dataclasses import fields, replace

    config = task_class(name).default_config(preset)
    known = {f.name for f in fields(config)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise TypeError(
            f"{name}: got an unexpected keyword argument {unknown[0]!r} (unknown config fields {unknown}); "
            f"known: {sorted(known)}"
        )
    return replace(config, **overrides) if overrides else config


def make_task(name: str, preset: str = "cpu", **overrides):
    """Instantiate task ``name`` at ``preset``; ``overrides`` replace config fields."""
    return task_class(name)(task_config(name, preset, **overrides))
