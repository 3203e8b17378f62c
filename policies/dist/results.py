"""A sweep's results: one row per trial in ``results.csv`` / ``results.json``, one plot per task.

A row holds the trial id, its status (``ok`` or ``error``), the swept values (one column per
axis of the sweep file), the task and seed, the reported metrics (``loss``: lower is better;
``initial_loss``, ``replay_loss``, ``seconds``, the Ray ``node``), the run directory and the
error, if any. Rows are in Tune's trial order. ``<task>.png`` draws each trial's curve (best loss
against iterations or loss evaluations; RL: final loss of the training episodes against
environment steps), labelled by its swept values.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

from policies.common import plot_curves
from policies.dist.config import SweepConfig

METRICS = ("loss", "initial_loss", "replay_loss", "seconds", "node", "out")
XLABELS = {"optimize": "iteration", "cmaes": "loss evaluations", "train": "environment steps"}
YLABELS = {"optimize": "best task loss", "cmaes": "best task loss", "train": "task loss at episode end"}


def read_csv(path: str | Path) -> dict[str, list[float]]:
    """Numeric columns of a CSV file (a run's ``log.csv``)."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    return {key: [float(r[key]) for r in rows] for key in (rows[0] if rows else {})}


def _value(config: dict, axis: str) -> Any:
    group, _, key = axis.partition(".")
    return config[group][key] if key else config[group]


def collect(grid, cfg: SweepConfig) -> list[dict[str, Any]]:
    """The rows of a Tune ``ResultGrid`` of ``cfg`` (curves under the private key ``_curve``)."""
    rows = []
    for result in grid:
        config, metrics = result.config or {}, result.metrics or {}
        trial = metrics.get("trial_id") or Path(result.path).name
        row: dict[str, Any] = {"trial": trial, "status": "ok" if result.error is None else "error"}
        row.update({axis: _value(config, axis) for axis in cfg.axes if axis not in ("task", "seed")})
        row["task"], row["seed"] = config.get("task"), config.get("seed")
        row.update({k: metrics.get(k) for k in METRICS})
        row["out"] = str(Path(result.path) / "run")
        row["error"] = None if result.error is None else str(result.error).strip().splitlines()[-1][:300]
        row["_curve"] = (metrics.get("curve_x") or [], metrics.get("curve_y") or [])
        rows.append(row)
    return rows


def write_table(rows: list[dict[str, Any]], out: Path) -> Path:
    """``results.csv`` and ``results.json`` in ``out``; returns the CSV path."""
    out.mkdir(parents=True, exist_ok=True)
    public = [{k: v for k, v in row.items() if not k.startswith("_")} for row in rows]
    (out / "results.json").write_text(json.dumps(public, indent=2))
    columns = list(dict.fromkeys(k for row in public for k in row))
    path = out / "results.csv"
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(public)
    return path


def plot_tasks(rows: list[dict[str, Any]], cfg: SweepConfig, out: Path) -> list[Path]:
    """One ``<task>.png`` per task in ``out`` with every finished trial's curve."""
    labels = [a for a in cfg.axes if a != "task"]
    paths = []
    for task in dict.fromkeys(row["task"] for row in rows):
        series = {}
        for row in rows:
            x, y = row["_curve"]
            if row["task"] != task or not x:
                continue
            label = ", ".join(
                f"{a.split('.')[-1]}={row[a]:.3g}" if isinstance(row[a], float) else f"{a.split('.')[-1]}={row[a]}"
                for a in labels
            )
            series[label or row["trial"]] = (x, [v if v is not None else math.nan for v in y])
        paths.append(
            plot_curves(
                series or {"(no finished trial)": ([], [])},
                out / f"{task}.png",
                xlabel=XLABELS[cfg.command],
                ylabel=YLABELS[cfg.command],
                title=f"{cfg.name}: {task} ({cfg.command})",
            )
        )
    return paths
