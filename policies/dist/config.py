"""Sweep files (YAML or TOML) for ``fluxlab sweep``: parsed, checked in full, turned into a Tune search space.

A sweep runs one ``fluxlab`` command (``optimize``, ``cmaes`` or ``train``) per trial. Fixed
values sit at the top level (``task``, ``preset``, ``precision``, ``seed``, the command's
``settings`` and the task-config ``overrides``); swept values are axes named ``task``, ``seed``,
``preset``, ``precision``, ``settings.<name>`` or ``overrides.<field>``, listed under ``grid``
(every combination runs, Tune's ``grid_search``) or under ``random`` (drawn ``samples`` times,
by Tune's random search or Optuna's TPE sampler with ``searcher: optuna``)::

    command: cmaes
    task: Pouring-v0
    overrides: {horizon: 8}
    settings: {evals: 40, popsize: 8}
    grid: {seed: [0, 1], settings.sigma: [0.3, 0.6]}
    resources: {CPU: 1}

Everything is checked before any trial starts (:func:`load_sweep`): unknown keys (at the top, in
``settings``, in distributions), the type of every setting, every task (registered) and every
combination of task and overrides (through :class:`envs.EnvSpec`, which knows each task's
config fields); the resources are checked against the cluster by :mod:`policies.dist.cluster`.
Errors are ``ValueError`` naming the file and the key.
"""

from __future__ import annotations

import itertools
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from envs import EnvSpec
from policies.trajopt import PARAMETERIZATIONS, SQUASHES

if sys.version_info >= (3, 11):
    import tomllib
else:  # the dist extra installs tomli on Python 3.10
    import tomli as tomllib

COMMANDS = ("optimize", "cmaes", "train")
TOP_KEYS = (
    "name",
    "storage",
    "command",
    "task",
    "preset",
    "precision",
    "seed",
    "settings",
    "overrides",
    "grid",
    "random",
    "samples",
    "searcher",
    "resources",
    "worker_resources",
    "max_concurrent",
    "max_failures",
    "deterministic",
)
SEARCHERS = ("random", "optuna")
DISTRIBUTIONS = ("uniform", "loguniform", "randint", "choice")
SPEC_AXES = ("task", "preset", "precision", "seed")

_OPEN_LOOP = {
    "param": ("choice", PARAMETERIZATIONS),
    "knots": ("int", 2),
    "squash": ("choice", SQUASHES),
    "time_budget": ("float", None),
    "tensorboard": ("bool", None),
}
#: Settings of each command: name -> (kind, bound or choices). Kinds: int (>= bound), float
#: (> 0), choice, bool, int0 (>= 0). ``workers``/``env_workers`` > 0 put rollouts in Ray actors.
SETTINGS: dict[str, dict[str, tuple[str, Any]]] = {
    "optimize": {
        "iters": ("int", 1),
        "lr": ("float", None),
        "optimizer": ("choice", ("adam", "sgd", "rmsprop")),
        "clip": ("float", None),
        **_OPEN_LOOP,
    },
    "cmaes": {
        "evals": ("int", 2),
        "sigma": ("float", None),
        "popsize": ("int", 2),
        "workers": ("int0", 0),
        "batch_size": ("int", 1),
        **_OPEN_LOOP,
    },
    "train": {
        "algo": ("choice", ("ppo", "sac")),
        "timesteps": ("int", 1),
        "num_envs": ("int", 1),
        "learning_rate": ("float", None),
        "n_steps": ("int", 2),
        "batch_size": ("int", 2),
        "eval_freq": ("int", 1),
        "eval_episodes": ("int", 1),
        "time_budget": ("float", None),
        "env_workers": ("int0", 0),
        "tensorboard": ("bool", None),
    },
}
REQUIRED = {"optimize": (), "cmaes": (), "train": ("algo", "timesteps")}


@dataclass(frozen=True)
class SweepConfig:
    """A checked sweep file.

    Attributes:
        path: the file.
        name: experiment name (default: the file's stem); Tune's directory under ``storage``.
        storage: where Tune keeps the experiment (a local path, shared by all machines of a
            cluster, or a cloud URI); default ``runs/sweeps``.
        command: ``optimize``, ``cmaes`` or ``train``.
        base: fixed trial values: ``task``, ``preset``, ``precision``, ``seed``, ``settings``
            (dict), ``overrides`` (dict).
        grid: axis -> list of values.
        random: axis -> ``{distribution: arguments}``.
        samples: Tune's ``num_samples`` (repeats of the grid; draws of the random axes).
        searcher: ``random`` or ``optuna``.
        resources: what one trial reserves, e.g. ``{"CPU": 1}`` or ``{"CPU": 1, "GPU": 0.5}``.
        worker_resources: what each Ray actor of a trial reserves (``settings.workers`` of
            cmaes, ``settings.env_workers`` of train).
        max_concurrent: trials at once (0: as many as the resources allow).
        max_failures: retries of a trial whose worker died or raised.
        deterministic: one-thread bitwise-reproducible kernels (CPU only).
    """

    path: Path
    name: str
    storage: str
    command: str
    base: dict[str, Any]
    grid: dict[str, list] = field(default_factory=dict)
    random: dict[str, dict[str, Any]] = field(default_factory=dict)
    samples: int = 1
    searcher: str = "random"
    resources: dict[str, float] = field(default_factory=lambda: {"CPU": 1.0})
    worker_resources: dict[str, float] = field(default_factory=lambda: {"CPU": 1.0})
    max_concurrent: int = 0
    max_failures: int = 1
    deterministic: bool = False

    @property
    def axes(self) -> list[str]:
        """Swept axes, grid first."""
        return [*self.grid, *self.random]

    def trial_count(self) -> int:
        """Trials the sweep runs: grid combinations x samples."""
        n = 1
        for values in self.grid.values():
            n *= len(values)
        return n * self.samples

    def worker_count(self, settings: Mapping[str, Any]) -> int:
        """Ray actors a trial with ``settings`` starts (CMA-ES evaluators or RL env workers)."""
        return int(settings.get("workers", 0) or settings.get("env_workers", 0) or 0)

    def max_workers(self) -> int:
        """The most actors any trial of the sweep starts."""
        key = "workers" if self.command == "cmaes" else "env_workers"
        values = self.grid.get(f"settings.{key}", [self.base["settings"].get(key, 0)])
        return max(int(v or 0) for v in values)

    def bundles(self, workers: int) -> list[dict[str, float]]:
        """Placement-group bundles of a trial with ``workers`` actors: the trial, then each actor."""
        return [dict(self.resources)] + [dict(self.worker_resources) for _ in range(workers)]

    def param_space(self) -> dict[str, Any]:
        """Tune's ``param_space``: the trial config with grid and random axes as Tune domains."""
        from ray import tune

        space: dict[str, Any] = {
            "command": self.command,
            "deterministic": self.deterministic,
            **{k: self.base[k] for k in SPEC_AXES},
            "settings": dict(self.base["settings"]),
            "overrides": dict(self.base["overrides"]),
        }
        for axis, values in self.grid.items():
            _assign(space, axis, tune.grid_search(list(values)))
        for axis, dist in self.random.items():
            ((kind, args),) = dist.items()
            domain = {
                "uniform": lambda a: tune.uniform(*a),
                "loguniform": lambda a: tune.loguniform(*a),
                "randint": lambda a: tune.randint(*a),
                "choice": lambda a: tune.choice(list(a)),
            }[kind](args)
            _assign(space, axis, domain)
        return space


def _assign(space: dict, axis: str, value: Any) -> None:
    group, _, key = axis.partition(".")
    if key:
        space[group][key] = value
    else:
        space[group] = value


def _fail(path: Path, message: str) -> ValueError:
    return ValueError(f"sweep config {path}: {message}")


def _read(path: Path) -> dict:
    if not path.is_file():
        raise FileNotFoundError(f"sweep config {path} does not exist")
    text = path.read_text()
    try:
        if path.suffix == ".toml":
            data = tomllib.loads(text)
        elif path.suffix in (".yaml", ".yml"):
            data = yaml.safe_load(text)
        else:
            raise _fail(path, "must be a .yaml, .yml or .toml file")
    except (yaml.YAMLError, tomllib.TOMLDecodeError) as err:
        raise _fail(path, f"cannot be parsed: {err}") from None
    if not isinstance(data, dict):
        raise _fail(path, "must hold a mapping of keys (command, task, grid, ...)")
    return data


def _check_setting(path: Path, command: str, name: str, value: Any, where: str) -> None:
    kinds = SETTINGS[command]
    if name not in kinds:
        raise _fail(path, f"{where}: {command} has no setting {name!r}; settings: {', '.join(kinds)}")
    kind, arg = kinds[name]
    if value is None and name in ("clip", "time_budget", "popsize", "learning_rate", "eval_freq", "n_steps"):
        return
    ok = {
        "int": lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= arg,
        "int0": lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0,
        "float": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0,
        "choice": lambda v: v in arg,
        "bool": lambda v: isinstance(v, bool),
    }[kind](value)
    if not ok:
        need = {
            "int": f"an int >= {arg}",
            "int0": "an int >= 0",
            "float": "a number > 0",
            "choice": f"one of {arg}",
            "bool": "true or false",
        }[kind]
        raise _fail(path, f"{where}: {name} must be {need}, got {value!r}")


def _check_axis(path: Path, command: str, axis: str, where: str) -> None:
    group, dot, key = axis.partition(".")
    if axis in SPEC_AXES:
        return
    if dot and key and group == "settings":
        if key not in SETTINGS[command]:
            raise _fail(path, f"{where}: {command} has no setting {key!r}; settings: {', '.join(SETTINGS[command])}")
        return
    if dot and key and group == "overrides":
        return
    raise _fail(
        path, f"{where}: unknown axis {axis!r}; axes are {', '.join(SPEC_AXES)}, settings.NAME, overrides.FIELD"
    )


def _representatives(kind: str, args: Any) -> list:
    """Values that stand for a distribution when checking configs (its ends, or every choice)."""
    if kind == "choice":
        return list(args)
    if kind == "randint":
        return [args[0], args[1] - 1]
    return list(args)


def _check_distribution(path: Path, axis: str, dist: Any) -> None:
    where = f"random.{axis}"
    if not isinstance(dist, dict) or len(dist) != 1:
        raise _fail(
            path,
            f"{where} must be one of {{uniform: [lo, hi]}}, {{loguniform: [lo, hi]}}, "
            "{randint: [lo, hi]}, {choice: [values]}",
        )
    ((kind, args),) = dist.items()
    if kind not in DISTRIBUTIONS:
        raise _fail(path, f"{where}: unknown distribution {kind!r}; use one of {DISTRIBUTIONS}")
    if not isinstance(args, list) or not args:
        raise _fail(path, f"{where}.{kind} needs a list")
    if kind == "choice":
        return
    if len(args) != 2 or not all(isinstance(a, (int, float)) and not isinstance(a, bool) for a in args):
        raise _fail(path, f"{where}.{kind} needs [low, high] numbers, got {args!r}")
    lo, hi = args
    if not lo < hi or (kind == "loguniform" and lo <= 0):
        raise _fail(
            path, f"{where}.{kind}: need low < high{' and low > 0' if kind == 'loguniform' else ''}, got {args!r}"
        )
    if kind == "randint" and not all(isinstance(a, int) for a in args):
        raise _fail(path, f"{where}.randint needs int bounds, got {args!r}")


def _resources(path: Path, data: Any, where: str) -> dict[str, float]:
    if not isinstance(data, dict) or not data:
        raise _fail(path, f"{where} must map resource names to amounts, e.g. {{CPU: 1}} or {{CPU: 1, GPU: 0.5}}")
    out = {}
    for key, value in data.items():
        if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
            raise _fail(path, f"{where}.{key} must be a number >= 0, got {value!r}")
        if key == "GPU" and value > 1 and value != int(value):
            raise _fail(path, f"{where}.GPU must be a fraction <= 1 or a whole number, got {value!r}")
        out[str(key)] = float(value)
    if out.get("CPU", 0) < 1 and out.get("GPU", 0) == 0:
        raise _fail(path, f"{where} must reserve at least one CPU or some GPU, got {data!r}")
    return out


def _combinations(cfg: SweepConfig) -> list[dict[str, Any]]:
    """Every trial config the sweep can produce, with random axes at their representative values."""
    axes: list[tuple[str, list]] = list(cfg.grid.items())
    for axis, dist in cfg.random.items():
        ((kind, args),) = dist.items()
        axes.append((axis, _representatives(kind, args)))
    out = []
    for values in itertools.product(*(v for _, v in axes)):
        trial = {k: cfg.base[k] for k in SPEC_AXES}
        trial["settings"] = dict(cfg.base["settings"])
        trial["overrides"] = dict(cfg.base["overrides"])
        for (axis, _), value in zip(axes, values, strict=True):
            _assign(trial, axis, value)
        out.append(trial)
    return out


def load_sweep(path: str | Path) -> SweepConfig:
    """Read and check a sweep file (see the module docstring); nothing is started.

    Raises:
        FileNotFoundError: no such file.
        ValueError: naming the file and the key: unknown or missing keys, wrong types, an
            unknown task, a config override a task does not have or rejects, a setting the
            command does not have or a value it does not accept.
    """
    path = Path(path)
    data = _read(path)
    unknown = sorted(set(data) - set(TOP_KEYS))
    if unknown:
        raise _fail(path, f"unknown key(s) {unknown}; allowed: {', '.join(TOP_KEYS)}")
    command = data.get("command")
    if command not in COMMANDS:
        raise _fail(path, f"command must be one of {COMMANDS}, got {command!r}")
    for key in ("settings", "overrides", "grid", "random"):
        if not isinstance(data.get(key, {}), dict):
            raise _fail(path, f"{key} must be a mapping")
    grid, random = dict(data.get("grid", {})), dict(data.get("random", {}))
    if "task" not in data and "task" not in grid and "task" not in random:
        raise _fail(path, "no task: give task: NAME, or a grid/random axis 'task'")
    for axis, values in grid.items():
        _check_axis(path, command, axis, f"grid.{axis}")
        if not isinstance(values, list) or not values:
            raise _fail(path, f"grid.{axis} must be a non-empty list of values")
    for axis, dist in random.items():
        _check_axis(path, command, axis, f"random.{axis}")
        if axis in grid:
            raise _fail(path, f"axis {axis!r} is both in grid and random")
        _check_distribution(path, axis, dist)
    samples = data.get("samples", 1)
    if not isinstance(samples, int) or isinstance(samples, bool) or samples < 1:
        raise _fail(path, f"samples must be an int >= 1, got {samples!r}")
    searcher = data.get("searcher", "random")
    if searcher not in SEARCHERS:
        raise _fail(path, f"searcher must be one of {SEARCHERS}, got {searcher!r}")
    if searcher == "optuna" and (grid or not random):
        raise _fail(path, "searcher optuna samples the random axes only: give random axes and no grid")
    for key in ("max_concurrent", "max_failures"):
        value = data.get(key, 0 if key == "max_concurrent" else 1)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise _fail(path, f"{key} must be an int >= 0, got {value!r}")
    if not isinstance(data.get("deterministic", False), bool):
        raise _fail(path, "deterministic must be true or false")
    settings = dict(data.get("settings", {}))
    for name, value in settings.items():
        _check_setting(path, command, name, value, "settings")
    base = {
        "task": data.get("task"),
        "preset": data.get("preset", "cpu"),
        "precision": data.get("precision", "f32"),
        "seed": data.get("seed", 0),
        "settings": settings,
        "overrides": dict(data.get("overrides", {})),
    }
    cfg = SweepConfig(
        path=path,
        name=str(data.get("name", path.stem)),
        storage=str(data.get("storage", "runs/sweeps")),
        command=command,
        base=base,
        grid=grid,
        random=random,
        samples=samples,
        searcher=searcher,
        resources=_resources(path, data.get("resources", {"CPU": 1}), "resources"),
        worker_resources=_resources(path, data.get("worker_resources", {"CPU": 1}), "worker_resources"),
        max_concurrent=data.get("max_concurrent", 0),
        max_failures=data.get("max_failures", 1),
        deterministic=data.get("deterministic", False),
    )
    if cfg.deterministic and cfg.resources.get("GPU", 0) > 0:
        raise _fail(path, "deterministic runs on the CPU; remove GPU from resources")
    for trial in _combinations(cfg):
        where = ", ".join(f"{a}={_get(trial, a)!r}" for a in cfg.axes) or "the trial"
        for name in REQUIRED[command]:
            if name not in trial["settings"]:
                raise _fail(path, f"{command} needs settings.{name}")
        for name, value in trial["settings"].items():
            _check_setting(path, command, name, value, f"settings ({where})")
        try:
            EnvSpec(trial["task"], trial["preset"], trial["overrides"], trial["precision"], trial["seed"])
        except ValueError as err:
            raise _fail(path, f"{where}: {err}") from None
    return cfg


def _get(trial: dict, axis: str) -> Any:
    group, _, key = axis.partition(".")
    return trial[group][key] if key else trial[group]
