"""Cost and effect of the ordered particle-to-grid scatter on env steps (CPU, default runtime). Prints JSON.

Scenes below ``SLAB_MIN_PARTICLES`` (every task at B=1 on the cpu preset) scatter with
:func:`engine.solvers.mpm_kernels.p2g`, which on the CPU runs as one serial pass in particle
order so that an episode is bitwise reproducible. This script compares it, in the same process,
with the parallel atomic-add form of the same kernel (the GPU form), swapped in for the A/B:
median seconds per env step over ``--rounds`` alternating runs of ``--steps`` random-action
steps, and whether three episodes from the same seed are bitwise identical with each form.

Usage: python benchmarks/env_determinism.py [--tasks Pouring Mixing] [--batch 1] [--steps 10]
       [--rounds 5] [--out benchmarks/results/env_determinism.json]
"""

import argparse
import dataclasses
import datetime
import json
import os
import platform
import statistics
import sys
import time


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def _parallel_p2g():
    """The atomic-add p2g over all particles in parallel (what the CPU ran before the ordered pass)."""
    import taichi as ti

    from engine.solvers import mpm_kernels as K

    nd = ti.types.ndarray

    @ti.kernel
    def p2g_parallel(
        x: nd(), v: nd(), s_in: ti.i32, material_id: nd(), volume: nd(), params: nd(), affine: nd(),
        grid_mom_mass: nd(), inv_dx: float,
    ):  # fmt: skip
        for b, p in ti.ndrange(x.shape[1], x.shape[2]):
            K._p2g_particle(b, p, x, v, s_in, material_id, volume, params, affine, grid_mom_mass, inv_dx, True)

    return p2g_parallel


def measure(task: str, batch: int, steps: int, rounds: int, kernels: dict) -> dict:
    import gymnasium as gym
    import numpy as np

    import envs
    from engine.solvers import mpm_kernels as K

    if batch == 1:
        env = gym.make(envs.env_id(task))
    else:
        env = gym.make_vec(envs.env_id(task), batch, vectorization_mode="vector_entry_point")
    if steps >= env.unwrapped.task.horizon:
        raise ValueError(f"--steps must be below {task}'s horizon ({env.unwrapped.task.horizon}), got {steps}")

    def episode(seed: int) -> np.ndarray:
        obs, _ = env.reset(seed=seed)
        env.action_space.seed(seed)
        rows = [np.ravel(obs)]
        for _ in range(steps):
            obs, reward, *_ = env.step(env.action_space.sample())
            rows.append(np.concatenate([np.ravel(obs), np.ravel(reward)]))
        return np.concatenate(rows)

    times = {name: [] for name in kernels}
    reproducible = {}
    for name, kernel in kernels.items():
        K.p2g = kernel
        runs = [episode(3) for _ in range(3)]  # also compiles
        reproducible[name] = all(np.array_equal(runs[0], r) for r in runs[1:])
    for _ in range(rounds):
        for name, kernel in kernels.items():
            K.p2g = kernel
            env.reset(seed=0)
            t0 = time.perf_counter()
            for _ in range(steps):
                env.step(env.action_space.sample())
            times[name].append((time.perf_counter() - t0) / steps)
    K.p2g = kernels["ordered"]
    particles = getattr(env.unwrapped.task, "sim", None)
    env.close()
    med = {name: statistics.median(t) for name, t in times.items()}
    return {
        "task": task,
        "batch": batch,
        "particles": getattr(particles, "n_particles", None),
        "seconds_per_step": {name: round(m, 5) for name, m in med.items()},
        "runs_s": {name: [round(t, 5) for t in ts] for name, ts in times.items()},
        "ordered_over_parallel": round(med["ordered"] / med["parallel"], 3),
        "bitwise_reproducible": reproducible,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", nargs="*", default=None, help="task names (default: all registered)")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", default=None, help="also write the JSON here")
    args = parser.parse_args(argv)

    import engine
    import tasks
    from engine.solvers import mpm_kernels as K

    engine.init(arch="cpu", precision="f32")
    kernels = {"ordered": K.p2g, "parallel": _parallel_p2g()}
    names = args.tasks or tasks.available()
    results = []
    for name in names:
        print(f"measuring {name} ...", file=sys.stderr, flush=True)
        results.append(measure(name, args.batch, args.steps, args.rounds, kernels))
    ratios = [r["ordered_over_parallel"] for r in results]
    report = {
        "benchmark": "env_determinism",
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "command": " ".join([sys.executable.split("/")[-1], *sys.argv]),
        "machine": {"platform": platform.platform(), "cpu": _cpu_model(), "cpu_count": os.cpu_count()},
        "runtime": dataclasses.asdict(engine.runtime.current()),
        "target": "ordered scatter costs <= 10 % per env step (median ordered / parallel <= 1.10)",
        "median_ordered_over_parallel": round(statistics.median(ratios), 3),
        "results": results,
    }
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
