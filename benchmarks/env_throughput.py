"""Environment throughput per task at the cpu preset. Prints JSON.

For every registered task (or ``--tasks``): env steps per second of ``gymnasium.make`` (B=1) and
of the batched vector env (``gymnasium.make_vec(..., vectorization_mode="vector_entry_point")``,
B=8 by default; one vector step = B env steps), under uniformly random actions, median of
``--repeats`` runs of ``--steps`` steps after a warm-up (kernel compilation excluded); and the
median render time of one ``render_size`` frame. The vector speed-up is reported as the ratio of
env-steps/s at B to that at B=1 in the same run (target >= 4 at B=8).

Usage: python benchmarks/env_throughput.py [--tasks Pouring Mixing] [--steps 10] [--repeats 3]
       [--batch 8] [--out benchmarks/results/env_throughput.json]
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import statistics
import sys
import time


def _median_rate(step_fn, steps: int, repeats: int, per_call: int) -> tuple[float, list[float]]:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(steps):
            step_fn()
        times.append(time.perf_counter() - t0)
    med = statistics.median(times)
    return per_call * steps / med, [round(t, 4) for t in times]


def measure(task: str, batch: int, steps: int, repeats: int) -> dict:
    import gymnasium as gym
    import numpy as np

    import envs

    env_id = envs.env_id(task)
    env = gym.make(env_id, render_mode="rgb_array")
    env.reset(seed=0)
    env.action_space.seed(0)

    def single_step():
        _, _, terminated, truncated, _ = env.step(env.action_space.sample())
        if terminated or truncated:
            env.reset()

    single_step()  # warm-up: compile kernels
    rate1, times1 = _median_rate(single_step, steps, repeats, 1)
    renders = []
    env.render()
    for _ in range(max(3, repeats)):
        t0 = time.perf_counter()
        frame = env.render()
        renders.append(time.perf_counter() - t0)
    task_obj = env.unwrapped.task
    info = {
        "task": task,
        "observation_dim": int(env.observation_space.shape[0]),
        "action_dim": int(env.action_space.shape[0]),
        "horizon": task_obj.horizon,
        "particles": int(getattr(getattr(task_obj, "model", None), "n_particles", 0)),
        "env_steps_per_s_B1": round(rate1, 2),
        "seconds_per_step_B1": round(1.0 / rate1, 4),
        "runs_B1_s": times1,
        "render_size": list(frame.shape[:2]),
        "render_s_median": round(statistics.median(renders), 4),
    }
    env.close()

    vec = gym.make_vec(env_id, num_envs=batch, vectorization_mode="vector_entry_point")
    vec.reset(seed=0)
    rng = np.random.default_rng(0)

    def vec_step():
        vec.step(rng.uniform(-1, 1, size=vec.action_space.shape).astype(np.float32))

    vec_step()
    rate_b, times_b = _median_rate(vec_step, steps, repeats, batch)
    vec.close()
    info.update(
        {
            f"env_steps_per_s_B{batch}": round(rate_b, 2),
            f"runs_B{batch}_s": times_b,
            f"speedup_B{batch}_over_B1": round(rate_b / rate1, 2),
        }
    )
    return info


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", nargs="*", default=None, help="task names (default: all registered)")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--precision", choices=("f32", "f64"), default="f32")
    parser.add_argument("--out", default=None, help="also write the JSON here")
    args = parser.parse_args(argv)

    import engine
    import tasks

    engine.init(arch="cpu", precision=args.precision)
    names = args.tasks or tasks.available()
    results = []
    for name in names:
        print(f"measuring {name} ...", file=sys.stderr, flush=True)
        results.append(measure(name, args.batch, args.steps, args.repeats))
    report = {
        "benchmark": "env_throughput",
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "command": " ".join([sys.executable.split("/")[-1], *sys.argv]),
        "machine": {"platform": platform.platform(), "processor": platform.processor()},
        "precision": args.precision,
        "batch": args.batch,
        "target": f"B={args.batch} env-steps/s >= 4x B=1; one env step <= 0.1 s at B=1; 256x256 frame <= 0.2 s",
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
