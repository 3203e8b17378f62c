"""The pressure-projected liquid mode against the weakly compressible one on the liquid tasks: wall
time per simulated second and liquid volume drift, side by side in one run, and the pressure
solve's cost per Poisson method on the systems those tasks produce. Prints JSON and writes it to
``benchmarks/results/liquid_projection.json``.

Per task (cpu preset, the task's scripted policy, full horizon, seed 0):

* ``weakly_compressible``: the task's own SimConfig (its dt and substeps).
* ``projected``: the same config with ``liquid_model="projected"`` at a ladder of steps: the
  task's substeps, then halved (rounded down) down to 1, with dt grown so that the env step
  (dt x substeps) and the horizon stay the task's. The reference is the projected model at the
  task's own dt. A step is accepted while the episode does not diverge, the scene passes its
  stability check (explicit viscosity still limits dt, engine/scene.py ``check_stability``), and
  the scripted loss at the end stays within ``--loss-tol`` (relative) of the reference's; the
  ladder stops at the first step that fails. ``largest_stable`` is the last accepted one.

Measures: ``wall_per_sim_s`` (wall seconds per simulated second, the first env step excluded so
that kernel compilation does not count), and the liquid volume from the particle packing
(:mod:`benchmarks.liquid_rest`: Tracker, packing_volume, solid_poses): ``worst_volume_change``
over the episode (sampled every ``--every`` env steps) and at the end. ``ratios`` compares the
projected model at its largest accepted dt with the weakly compressible one.

Solvers (``solvers``): the flags and right-hand sides of the projected reference episode, kept
every ``--every`` env steps (the liquid's bounding box as the projection solves it), solved by
each method of ``--methods`` with its preconditioner built anew each time (the flags change every
substep in a liquid): setup + solve wall time, median over the kept systems, and iterations to
the engine's ``pressure_rtol``. Methods are interleaved per system so that load from other
processes hits them alike. Each task's entry records its date, command, CPU model and
``os.getloadavg()`` at its start and end; a run updates the entries of its ``--tasks`` in
``--out`` and keeps the others (tasks may run as separate processes).

Usage: python benchmarks/liquid_projection.py [--tasks Mixing Pouring] [--every 10] [--loss-tol 0.05]
       [--methods mic0 mgpcg learned] [--out benchmarks/results/liquid_projection.json]
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from liquid_rest import Tracker, cpu_model, solid_poses  # noqa: E402

DEFAULT_OUT = ROOT / "benchmarks" / "results" / "liquid_projection.json"
TASKS = ("Pouring", "LatteArt", "LatteArtStir", "Mixing")


def ladder(substeps: int) -> list[int]:
    """The task's substeps, then halved (rounded down) to 1."""
    out = [substeps]
    while out[-1] > 1:
        out.append(out[-1] // 2)
    return out


def episode(name: str, sim_changes: dict, every: int, keep_systems: bool = False) -> dict:
    """One scripted episode of task ``name`` with its SimConfig changed by ``sim_changes``."""
    import tasks

    base = tasks.task_config(name, "cpu")
    sim_cfg = dataclasses.replace(base.sim, **sim_changes)
    row = {"dt": sim_cfg.dt, "substeps": sim_cfg.substeps, "liquid_model": sim_cfg.liquid_model}
    try:
        task = tasks.make_task(name, "cpu", sim=sim_cfg)
        task.make(1)
    except ValueError as err:  # the scene's stability check
        return {**row, "refused": str(err)}
    task.reset(np.ones(1, dtype=bool), [np.random.default_rng(0)])
    sim = task.sim
    state = sim.get_state()
    tracker = Tracker(task.model, state.x[0].double().numpy(), solid_poses(sim))
    step_time = task.config.step_time
    systems, iterations = [], []
    wall = 0.0
    for t in range(task.horizon):
        t0 = time.perf_counter()
        diverged = task.step(task.scripted_action(t, 0)[None])
        if t > 0:
            wall += time.perf_counter() - t0
        if sim.pressure is not None and sim.pressure.last_info is not None:
            iterations.append(sim.pressure.last_info["iterations"])
        if diverged.any():
            task.close()
            return {**row, "diverged_at_step": t + 1}
        if (t + 1) % every == 0 or t + 1 == task.horizon:
            s = sim.get_state()
            tracker.sample(
                (t + 1) * step_time,
                s.x[0].double().numpy(),
                s.v[0].double().numpy(),
                s.J[0].double().numpy(),
                solid_poses(sim),
            )
            if keep_systems and sim.pressure.last_system is not None:
                kept = sim.pressure.last_system
                systems.append((kept["flags"].clone(), kept["rhs"].clone()))
    loss = float(task.loss()[0])
    task.close()
    summary = tracker.summary()
    liquid = "all_liquid" if "all_liquid" in summary else next(iter(summary))
    row.update(
        {
            "loss_end": loss,
            "wall_s": round(wall, 2),
            "wall_per_sim_s": wall / ((task.horizon - 1) * step_time),
            "worst_volume_change": summary[liquid]["worst_volume_change"],
            "end_volume_change": summary[liquid]["end"]["volume_change"],
            "end_rms_speed": summary[liquid]["end"]["rms_speed"],
        }
    )
    if iterations:
        row["pressure_iterations_mean"] = float(np.mean(iterations))
    if keep_systems:
        row["_systems"] = systems
    return row


def time_solvers(systems: list, methods: list[str], rtol: float) -> dict:
    """Setup + solve wall time and iterations per method over the kept (flags, rhs) systems."""
    from engine.linsolve import PoissonSolver

    times = {m: [] for m in methods}
    iters = {m: [] for m in methods}
    for flags, rhs in systems:
        for m in methods:
            t0 = time.perf_counter()
            solver = PoissonSolver(flags, m, rtol=rtol, dtype=rhs.dtype, check=False)
            res = solver.solve(rhs)
            times[m].append(time.perf_counter() - t0)
            iters[m].append(res.iterations)
    shapes = sorted({tuple(f.shape[1:]) for f, _ in systems})
    out = {"systems": len(systems), "box_shapes": [list(s) for s in shapes]}
    for m in methods:
        out[m] = {
            "median_s": statistics.median(times[m]),
            "min_s": min(times[m]),
            "median_iterations": statistics.median(iters[m]),
            "max_iterations": max(iters[m]),
        }
    return out


def run_task(name: str, every: int, loss_tol: float, methods: list[str]) -> dict:
    import tasks

    own = tasks.task_config(name, "cpu").sim
    step = own.dt * own.substeps
    wc = episode(name, {}, every)
    print(f"{name}: weakly compressible {wc.get('wall_per_sim_s')}", file=sys.stderr, flush=True)
    runs, reference, best = [], None, None
    for n_sub in ladder(own.substeps):
        changes = {"liquid_model": "projected", "packing_rate": 0.0, "substeps": n_sub, "dt": step / n_sub}
        row = episode(name, changes, every, keep_systems=reference is None)
        systems = row.pop("_systems", None)
        if reference is None:
            reference = row
            if systems:
                row["solvers"] = time_solvers(systems, methods, own.pressure_rtol)
        ok = "loss_end" in row and abs(row["loss_end"] - reference.get("loss_end", np.nan)) <= loss_tol * abs(
            reference.get("loss_end", np.nan)
        )
        row["accepted"] = bool(ok)
        runs.append(row)
        print(f"{name}: projected substeps {n_sub}: {row.get('wall_per_sim_s')} accepted {ok}", file=sys.stderr,
              flush=True)  # fmt: skip
        if not ok:
            break
        best = row
    out = {"weakly_compressible": wc, "projected": runs}
    if best is not None and "wall_per_sim_s" in wc:
        out["largest_stable"] = {"dt": best["dt"], "substeps": best["substeps"]}
        out["ratios"] = {
            "dt_projected_over_weakly_compressible": best["dt"] / own.dt,
            "wall_speedup": wc["wall_per_sim_s"] / best["wall_per_sim_s"],
            "wall_speedup_at_own_dt": wc["wall_per_sim_s"] / reference["wall_per_sim_s"],
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="*", default=list(TASKS))
    parser.add_argument("--every", type=int, default=10, help="env steps between volume samples / kept systems")
    parser.add_argument("--loss-tol", type=float, default=0.05, help="relative scripted-loss change accepted")
    parser.add_argument("--methods", nargs="*", default=None, help="Poisson methods (default: mic0 mgpcg learned)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()

    import engine
    from engine.linsolve import METHODS

    engine.init(arch="cpu", precision="f32")
    methods = args.methods or [m for m in ("mic0", "mgpcg", "learned") if m in METHODS]
    stored = json.loads(args.out.read_text()) if args.out.exists() else {}
    stored.update({"benchmark": "liquid_projection", "precision": "f32"})
    for name in args.tasks:
        run = {
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "command": " ".join(["python", *sys.argv]),
            "machine": {"cpu": cpu_model(), "cores": os.cpu_count(), "python": platform.python_version()},
            "load_average_start": os.getloadavg(),
            "loss_tol": args.loss_tol,
        }
        run.update(run_task(name, args.every, args.loss_tol, methods))
        run["load_average_end"] = os.getloadavg()
        # Re-read before writing: runs of other tasks may have finished meanwhile.
        stored = json.loads(args.out.read_text()) if args.out.exists() else stored
        stored.setdefault("tasks", {})[name] = run
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(stored, indent=1) + "\n")
        print(json.dumps({name: run}, indent=1))


if __name__ == "__main__":
    main()
