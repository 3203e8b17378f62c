"""Liquid volume at rest and in use: how much volume every particle task's liquids keep over a full
episode, and how still a resting layer stays. Prints JSON and writes it to
``benchmarks/results/liquid_rest.json`` (one section per ``--label``, so runs of two engine
versions sit side by side).

Per task with liquid (fluid-model) materials, two episodes of the full cpu-preset horizon, seed 0:
zero actions (the liquid rests in its container; the tool stays where it starts) and the task's
scripted policy. Every ``--every`` env steps, per liquid material and for all liquids together:

* ``volume``: the liquid volume measured from the particle packing, not from J. The rest volume
  V0 of each liquid particle is spread over the simulation grid with the quadratic B-spline
  weights of MLS-MPM, phi_i = sum_p w_ip V0_p / dx^3, and each node counts at most its open
  fraction, ``volume = dx^3 sum_i min(phi_i, c_i)``. The capacity c_i is the node's open
  fraction (1 minus the B-spline-weighted fraction of its support inside colliders, rigid
  bodies and domain walls, each treated as a half-space at the node's signed distance, combined
  as independent fractions) less the rest volume of the scene's other particles (solids) there.
  Underfilled nodes (free surfaces, spray) count exactly the volume deposited, so the measure does
  not depend on the shape of the free surface; only packing above the rest
  density, anywhere including against walls, lowers it. It includes the physical compression
  of the weakly compressible liquid (hydrostatic: rho g h / K, 0.5-1 % here).
  ``volume_change`` is volume / volume at the start - 1; ``worst_volume_change`` the extreme
  over the episode.
* ``depth_change`` (zero actions only, where the liquid rests): the 95th-percentile height of the
  material's particles above its starting bottom (lowest particle - half a spacing), relative to
  the start. It also drops when liquid spreads into gaps the task left between the sampled
  body and its container, so it is an upper bound of the loss; the volume is the measure.
* ``mean_J``, and ``rms_speed`` [m/s] of the material's particles at the end.

Resting layers (``layers``): water (bulk modulus 1e5 Pa) 0.1 m deep, 0.4 m domain, dx = 2 cm,
8 substeps of 1 ms, started hydrostatic where the engine offers it (``add_particles(...,
hydrostatic=True)``), 1.2 s; ``domain``: the layer fills the domain walls' box; ``cup``: in a
``Cup`` collider (slip walls) filling it to half a spacing from its walls. Reported: rms speed
and volume change over time.

Usage: python benchmarks/liquid_rest.py [--label after] [--tasks Mixing Pouring] [--every 10]
       [--precision f32] [--out benchmarks/results/liquid_rest.json]
"""

from __future__ import annotations

import argparse
import datetime
import inspect
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "benchmarks" / "results" / "liquid_rest.json"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def spline_cdf(t: np.ndarray) -> np.ndarray:
    """Integral of the quadratic B-spline kernel from -inf to t (cells): the fraction of a node's
    support beyond a plane at signed distance -t."""
    t = np.clip(t, -1.5, 1.5)
    return np.where(t < -0.5, (1.5 + t) ** 3 / 6, np.where(t < 0.5, 0.5 + 0.75 * t - t**3 / 3, 1 - (1.5 - t) ** 3 / 6))


def deposit(x: np.ndarray, V0: np.ndarray, dx: float, n: int) -> np.ndarray:
    """(n, n, n) sum_p w_ip V0_p / dx^3 with MLS-MPM's quadratic B-spline weights."""
    X = x / dx
    base = np.floor(X - 0.5).astype(int)
    f = X - base
    N = np.stack([0.5 * (1.5 - f) ** 2, 0.75 - (f - 1.0) ** 2, 0.5 * (f - 0.5) ** 2], axis=-1)
    phi = np.zeros((n, n, n))
    for i in range(3):
        for j in range(3):
            for k in range(3):
                w = N[:, 0, i] * N[:, 1, j] * N[:, 2, k]
                idx = (base[:, 0] + i, base[:, 1] + j, base[:, 2] + k)
                np.add.at(phi, idx, w * V0 / dx**3)
    return phi


def solid_poses(sim) -> np.ndarray:
    """(K + nb, 7) poses of scene 0's colliders then rigid bodies, the solids :func:`open_fraction` takes."""
    return np.concatenate([sim.collider_poses()[0], sim.body_state()[0, :, :7]]).astype(np.float64)


def open_fraction(model, poses: np.ndarray) -> np.ndarray:
    """(n, n, n) open fraction of every grid node: colliders then rigid bodies at ``poses``
    (K + nb, 7), and domain walls."""
    from engine.colliders import Collider

    cfg = model.config
    n, dx = cfg.grid_res, cfg.dx
    axis = np.arange(n) * dx
    nodes = np.stack(np.meshgrid(axis, axis, axis, indexing="ij"), axis=-1).reshape(-1, 3)
    free = np.ones(len(nodes))
    solids = list(model.colliders) + [Collider(body.shape) for body in model.bodies]
    for solid, pose in zip(solids, poses, strict=True):
        d, _ = solid.sdf(nodes, pose)
        free *= 1.0 - spline_cdf(-d / dx)
    lo, hi = cfg.boundary_cells * dx, cfg.domain_size - cfg.boundary_cells * dx
    for a in range(3):
        free *= (1.0 - spline_cdf((lo - nodes[:, a]) / dx)) * (1.0 - spline_cdf((nodes[:, a] - hi) / dx))
    return free.reshape(n, n, n)


def packing_volume(model, x: np.ndarray, poses: np.ndarray, liquid: np.ndarray) -> float:
    """Capped-occupancy volume [m^3] of the particles ``liquid`` (bool mask) at positions x."""
    cfg = model.config
    n, dx = cfg.grid_res, cfg.dx
    capacity = open_fraction(model, poses)
    others = ~liquid & (np.asarray([m.model for m in model.materials])[model.material_id] != "fluid")
    if others.any():
        capacity = np.maximum(capacity - deposit(x[others], model.volume[others], dx, n), 0.0)
    phi = deposit(x[liquid], model.volume[liquid], dx, n)
    return float(np.minimum(phi, capacity).sum() * dx**3)


def liquid_groups(model) -> dict[str, np.ndarray]:
    """Name -> bool mask of each fluid material's particles, plus ``all`` liquids when several."""
    groups = {}
    for m_id, material in enumerate(model.materials):
        if material.model == "fluid":
            groups[material.name] = model.material_id == m_id
    if len(groups) > 1:
        groups["all_liquid"] = np.any(list(groups.values()), axis=0)
    return groups


class Tracker:
    """Liquid measures of one episode, sampled over time."""

    def __init__(self, model, x0: np.ndarray, poses0: np.ndarray):
        self.model = model
        self.groups = liquid_groups(model)
        self.spacing = np.cbrt(model.volume)
        self.start = {}
        for name, mask in self.groups.items():
            z = x0[mask, 2]
            bottom = z.min() - 0.5 * float(np.median(self.spacing[mask]))
            self.start[name] = {
                "volume": packing_volume(model, x0, poses0, mask),
                "bottom": bottom,
                "depth": float(np.percentile(z, 95)) - bottom,
                "nominal_volume": float(model.volume[mask].sum()),
            }
        self.samples: list[dict] = []

    def sample(self, t: float, x: np.ndarray, v: np.ndarray, J: np.ndarray, poses: np.ndarray) -> dict:
        row = {"time": round(t, 6)}
        for name, mask in self.groups.items():
            s0 = self.start[name]
            volume = packing_volume(self.model, x, poses, mask)
            depth = float(np.percentile(x[mask, 2], 95)) - s0["bottom"]
            row[name] = {
                "volume_change": volume / s0["volume"] - 1.0,
                "depth_change": depth / s0["depth"] - 1.0,
                "mean_J": float(J[mask].mean()),
                "rms_speed": float(np.sqrt((v[mask] ** 2).sum(-1).mean())),
            }
        self.samples.append(row)
        return row

    def summary(self) -> dict:
        out = {}
        for name in self.groups:
            changes = [row[name]["volume_change"] for row in self.samples]
            end = self.samples[-1][name]
            out[name] = {
                "start_volume_over_nominal": self.start[name]["volume"] / self.start[name]["nominal_volume"],
                "end": end,
                "worst_volume_change": max(changes, key=abs),
            }
        return out


def run_task(name: str, policy: str, every: int) -> dict:
    import tasks

    task = tasks.make_task(name)
    task.make(1)
    task.reset(np.ones(1, dtype=bool), [np.random.default_rng(0)])
    sim = task.sim
    state = sim.get_state()
    tracker = Tracker(task.model, state.x[0].double().numpy(), solid_poses(sim))
    step_time = task.config.step_time
    losses = [float(task.loss()[0])]
    t0 = time.perf_counter()
    for t in range(task.horizon):
        action = np.zeros((1, task.action_dim)) if policy == "zero" else task.scripted_action(t, 0)[None]
        diverged = task.step(action)
        if diverged.any():
            raise RuntimeError(f"{name} ({policy}) diverged at step {t + 1}")
        if (t + 1) % every == 0 or t + 1 == task.horizon:
            s = sim.get_state()
            tracker.sample(
                (t + 1) * step_time,
                s.x[0].double().numpy(),
                s.v[0].double().numpy(),
                s.J[0].double().numpy(),
                solid_poses(sim),
            )
    losses.append(float(task.loss()[0]))
    wall = time.perf_counter() - t0
    task.close()
    return {
        "policy": policy,
        "steps": task.horizon,
        "seconds_simulated": task.horizon * step_time,
        "wall_s": round(wall, 2),
        "loss_start": losses[0],
        "loss_end": losses[1],
        "liquids": tracker.summary(),
        "samples": tracker.samples,
    }


def run_layer(kind: str, seconds: float, every: int) -> dict:
    """A resting water layer (see the module docstring) for ``seconds``."""
    from dataclasses import replace

    import torch

    from engine import sampling
    from engine.colliders import BoundaryCondition, Collider
    from engine.config import SimConfig
    from engine.geometry import Cup
    from engine.materials import WATER
    from engine.scene import SceneBuilder
    from engine.simulator import Simulator

    cfg = SimConfig(grid_res=20, domain_size=0.4, dt=1e-3, substeps=8)
    dx = cfg.dx
    s = 0.5 * dx
    lo, hi = cfg.boundary_cells * dx, cfg.domain_size - cfg.boundary_cells * dx
    water = replace(WATER, name="layer_water", E=1e5)
    builder = SceneBuilder(cfg)
    extra = {"hydrostatic": True} if "hydrostatic" in inspect.signature(builder.add_particles).parameters else {}
    if kind == "domain":
        points = sampling.box((lo, lo, lo), (hi, hi, lo + 0.1), s)
    else:
        wall, centre = 1.5 * dx, 0.5 * cfg.domain_size
        bottom = lo + wall
        points = sampling.cylinder((centre, centre, bottom - 0.5 * s), 0.13 - wall - 0.5 * s, 0.1, s)
        cup = Collider(Cup(0.13, 0.2, wall), pose=(centre, centre, lo, 1, 0, 0, 0), boundary=BoundaryCondition(0.0))
        builder.add_collider(cup)
    builder.add_particles(points, water, s, **extra)
    sim = Simulator(builder.build(), batch_size=1)
    state = sim.initial_state()
    sim.reset(state)
    tracker = Tracker(sim.model, state.x[0].double().numpy(), solid_poses(sim))
    control = torch.zeros(1, sim.n_colliders, 6, dtype=sim.dtype)
    steps = round(seconds / (cfg.dt * cfg.substeps))
    for t in range(steps):
        sim.step(control)
        if (t + 1) % every == 0 or t + 1 == steps:
            st = sim.get_state()
            tracker.sample(
                (t + 1) * cfg.dt * cfg.substeps,
                st.x[0].double().numpy(),
                st.v[0].double().numpy(),
                st.J[0].double().numpy(),
                solid_poses(sim),
            )
    return {
        "hydrostatic_start": bool(extra),
        "particles": sim.n_particles,
        "liquids": tracker.summary(),
        "rms_speed": [[row["time"], row["layer_water"]["rms_speed"]] for row in tracker.samples],
        "volume_change": [[row["time"], row["layer_water"]["volume_change"]] for row in tracker.samples],
    }


def liquid_tasks() -> list[str]:
    import tasks

    names = []
    for name in tasks.available():
        cls = tasks.task_class(name)
        if not hasattr(cls, "build_scene"):
            continue
        task = cls(cls.default_config("cpu"))
        if any(m.model == "fluid" for m in task.model.materials):
            names.append(name)
    return names


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--label", default="current", help="section of the output file these results go to")
    parser.add_argument("--tasks", nargs="*", help="task names (default: every task with a liquid)")
    parser.add_argument("--policies", nargs="*", default=["zero", "scripted"], choices=["zero", "scripted"])
    parser.add_argument("--every", type=int, default=10, help="env steps between samples")
    parser.add_argument("--layer-seconds", type=float, default=1.2)
    parser.add_argument("--no-layers", action="store_true")
    parser.add_argument("--precision", default="f32", choices=["f32", "f64"])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()

    import engine

    engine.init(arch="cpu", precision=args.precision)
    names = args.tasks or liquid_tasks()
    result = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(["python", *sys.argv]),
        "machine": {"cpu": cpu_model(), "python": platform.python_version()},
        "precision": args.precision,
        "volume_measure": "capped occupancy on the simulation grid (module docstring)",
        "tasks": {},
        "layers": {},
    }
    for name in names:
        result["tasks"][name] = [run_task(name, policy, args.every) for policy in args.policies]
        print(f"{name}: done", file=sys.stderr, flush=True)
    if not args.no_layers:
        for kind in ("domain", "cup"):
            result["layers"][kind] = run_layer(kind, args.layer_seconds, args.every)
    stored = json.loads(args.out.read_text()) if args.out.exists() else {}
    stored.setdefault("benchmark", "liquid_rest")
    stored.setdefault("runs", {})[args.label] = result
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(stored, indent=1) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
