"""Plumbing shared by FluxLab's policy tools: config overrides, episodes, run logs and summaries, plots.

Nothing here is an algorithm. It parses ``KEY=VALUE`` config overrides, runs one episode of a
policy ``(obs, t) -> action`` in an env (made from an :class:`envs.EnvSpec`; the quantity
reported everywhere is the task loss ``info["loss"]`` after the last step, the objective of
FluidLab's trajectory optimization, Xian et al., ICLR 2023, Sec. 5), and writes the per-run logs
(CSV and TensorBoard), the run summaries (JSON) and curve plots.
"""

from __future__ import annotations

import ast
import csv
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from envs import EnvSpec

#: A policy maps the current observation and the 0-based env step to an action in [-1, 1]^A.
Policy = Callable[[np.ndarray, int], np.ndarray]
#: Open-loop action parameterizations and squashes (:mod:`policies.trajopt`); named here so the
#: command line lists them without importing torch.
PARAMETERIZATIONS = ("per-step", "linear", "spline")
SQUASHES = ("tanh", "clamp")


def parse_overrides(items: Sequence[str] | None) -> dict[str, Any]:
    """Parse ``KEY=VALUE`` task-config overrides; values are Python literals (``8``, ``(0.1, 0.2)``)
    read with :func:`ast.literal_eval`, anything else is kept as a string.

    Raises:
        ValueError: an item without ``=`` or with an empty key.
    """
    out: dict[str, Any] = {}
    for item in items or ():
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ValueError(f"config override must look like KEY=VALUE, got {item!r}")
        try:
            out[key] = ast.literal_eval(raw.strip())
        except (ValueError, SyntaxError):
            out[key] = raw.strip()
    return out


@dataclass
class Episode:
    """Outcome of one episode.

    Attributes:
        total_reward: sum of the rewards.
        final_loss: task loss after the last step (``info["loss"]``), or after reset for 0 steps.
        success: the task's success test after the last step.
        steps: env steps taken.
        losses: task loss after reset and after every step, (steps + 1,).
        diverged: the simulation blew up (the episode was truncated there).
        frames: rendered (H, W, 3) uint8 frames (after reset and every step) when asked for.
        seconds: wall-clock time of the episode [s].
    """

    total_reward: float
    final_loss: float
    success: bool
    steps: int
    losses: list[float]
    diverged: bool = False
    frames: list[np.ndarray] = field(default_factory=list)
    seconds: float = 0.0


def run_episode(
    env,
    policy: Policy,
    *,
    seed: int | None = None,
    steps: int | None = None,
    render: bool = False,
    progress: bool = False,
    desc: str = "rollout",
) -> Episode:
    """Reset ``env`` with ``seed`` and run ``policy`` until termination, truncation or ``steps``.

    Args:
        env: a Gymnasium env (render_mode="rgb_array" when ``render``).
        policy: ``(obs, t) -> action``.
        seed: reset seed (the tool's start jitter).
        steps: at most this many steps (default: until the episode ends).
        render: collect frames.
        progress: show a tqdm progress bar.
        desc: progress-bar label.
    """
    from tqdm import tqdm

    t0 = time.perf_counter()
    obs, info = env.reset(seed=seed)
    losses = [float(info["loss"])]
    frames = [env.render()] if render else []
    limit = steps if steps is not None else getattr(env.spec, "max_episode_steps", None)
    total, success, diverged, t = 0.0, False, False, 0
    with tqdm(total=limit, desc=desc, unit="step", disable=not progress) as bar:
        while steps is None or t < steps:
            obs, reward, terminated, truncated, info = env.step(policy(obs, t))
            t += 1
            bar.update(1)
            total += float(reward)
            losses.append(float(info["loss"]))
            success = bool(info.get("success", False))
            diverged = bool(info.get("diverged", False))
            if render:
                frames.append(env.render())
            if terminated or truncated:
                break
    return Episode(
        total_reward=total,
        final_loss=losses[-1],
        success=success,
        steps=t,
        losses=losses,
        diverged=diverged,
        frames=frames,
        seconds=time.perf_counter() - t0,
    )


def random_policy(env, seed: int | None) -> Policy:
    """Uniform random actions from the env's action space, seeded."""
    env.action_space.seed(seed)
    return lambda obs, t: env.action_space.sample()


def scripted_policy(env) -> Policy:
    """The task's scripted reference policy (``env.unwrapped.scripted_action()``)."""
    return lambda obs, t: env.unwrapped.scripted_action()


def open_loop_policy(actions: np.ndarray) -> Policy:
    """Replay a fixed (T, A) action sequence (step t plays row t).

    Raises:
        IndexError: asked for a step beyond the sequence.
    """
    actions = np.asarray(actions)

    def act(obs: np.ndarray, t: int) -> np.ndarray:
        if t >= len(actions):
            raise IndexError(f"the trajectory has {len(actions)} steps; step {t} was asked for")
        return actions[t]

    return act


class RunLog:
    """Per-iteration scalars to a CSV file and TensorBoard, kept in memory for the plot.

    Args:
        out: run directory; writes ``log.csv`` and TensorBoard events under ``tb/``.
        columns: CSV columns in order; the first is the TensorBoard step.
        tensorboard: also write TensorBoard events.
        append: continue an existing ``log.csv`` (a resumed run; its columns must match).
    """

    def __init__(self, out: str | Path, columns: Sequence[str], tensorboard: bool = True, append: bool = False):
        self.out = Path(out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.columns = list(columns)
        self.rows: list[dict[str, float]] = []
        self.csv_path = self.out / "log.csv"
        resume = append and self.csv_path.is_file() and self.csv_path.stat().st_size > 0
        if resume:
            with open(self.csv_path, newline="") as f:
                header = next(csv.reader(f), [])
            if header != self.columns:
                raise ValueError(f"{self.csv_path}: columns {header}, expected {self.columns}")
        self._file = open(self.csv_path, "a" if resume else "w", newline="")  # closed in close()
        self._csv = csv.DictWriter(self._file, fieldnames=self.columns)
        if not resume:
            self._csv.writeheader()
        self._tb = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(log_dir=str(self.out / "tb"))

    def log(self, **row: float) -> None:
        """Append one row (every column must be given)."""
        missing = set(self.columns) - set(row)
        if missing:
            raise ValueError(f"log row lacks columns {sorted(missing)}")
        row = {k: row[k] for k in self.columns}
        self.rows.append(row)
        self._csv.writerow(row)
        self._file.flush()
        if self._tb is not None:
            step = int(row[self.columns[0]])
            for key in self.columns[1:]:
                value = float(row[key])
                if math.isfinite(value):
                    self._tb.add_scalar(key, value, step)

    def close(self) -> None:
        self._file.close()
        if self._tb is not None:
            self._tb.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def run_summary(command: str, spec: EnvSpec, **facts: Any) -> dict[str, Any]:
    """The JSON-compatible summary of a run: ``command``, the env (:meth:`envs.EnvSpec.to_dict`
    keys at the top level: task, preset, overrides, precision, seed), then ``facts``."""
    return {"command": command, **spec.to_dict(), **facts}


def write_summary(out: str | Path, summary: dict[str, Any]) -> Path:
    """Write ``summary`` to ``out/summary.json`` (indented JSON); returns the path."""
    path = Path(out) / "summary.json"
    path.write_text(json.dumps(summary, indent=2))
    return path


def plot_curves(
    series: dict[str, tuple[Sequence[float], Sequence[float]]],
    path: str | Path,
    *,
    xlabel: str,
    ylabel: str,
    title: str,
    hlines: dict[str, float] | None = None,
    logy: bool = False,
) -> Path:
    """One PNG with a line per ``series`` entry ``label -> (x, y)`` and optional reference lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.0, 4.0), dpi=100)
    for label, (x, y) in series.items():
        ax.plot(x, y, marker="." if len(x) < 40 else None, label=label)
    for n, (label, value) in enumerate((hlines or {}).items()):
        ax.axhline(value, color=f"C{len(series) + n}", linestyle="--", label=label)
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path
