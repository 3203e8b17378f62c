"""Render time per task scene at 256 x 256 and 512 x 512, and the cost of a video. Prints JSON.

For every registered task (or ``--tasks``) at its cpu preset: reset (seed 0), run the scripted
policy for ``--warm`` env steps so the liquid has moved, then time ``--repeats`` renders of the
same state at each ``--sizes`` (median and min, after one kernel-compiling render), as the env's
``render()`` does it (particle surfaces, colliders, bodies, shadows). Targets: a 256 px frame
<= 50 ms, a 512 px frame <= 0.2 s on a 2-core CPU. ``--video-steps`` (default 100, 0 skips it)
also runs that many env steps with and without a rendered frame per step and reports the share
a video adds to the rollout's wall time (target <= 25 % for 100 frames). The JSON records the
date, the command, the CPU model and the load average before and after (the machine may be
shared).

Usage: python benchmarks/render_throughput.py [--tasks Pouring LatteArt] [--sizes 256 512]
       [--repeats 7] [--warm 20] [--video-steps 100] [--out benchmarks/results/render_throughput.json]
"""

from __future__ import annotations

import argparse
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
    return platform.processor() or platform.machine()


def measure(name: str, sizes: list[int], repeats: int, warm: int, video_steps: int) -> dict:
    import gymnasium as gym

    import envs

    result = {"task": name}
    env = gym.make(envs.env_id(name), render_mode="rgb_array", render_size=sizes[0])
    env.reset(seed=0)
    inner = env.unwrapped
    for _ in range(warm):
        env.step(inner.scripted_action())
    task = inner.task
    for size in sizes:
        task.render(0, size)  # compiles kernels, traces static glass
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            task.render(0, size)
            times.append(time.perf_counter() - t0)
        result[f"render_{size}_ms"] = {
            "median": round(1e3 * statistics.median(times), 2),
            "min": round(1e3 * min(times), 2),
        }
    if video_steps:
        walls = {}
        for video in (False, True):
            env.reset(seed=0)
            t0 = time.perf_counter()
            for _ in range(video_steps):
                env.step(inner.scripted_action())
                if video:
                    env.render()
            walls[video] = time.perf_counter() - t0
        result["video"] = {
            "steps": video_steps,
            "size": sizes[0],
            "rollout_s": round(walls[False], 3),
            "rollout_with_video_s": round(walls[True], 3),
            "added_fraction": round(walls[True] / walls[False] - 1.0, 3),
        }
    env.close()
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", nargs="*", default=None)
    parser.add_argument("--sizes", nargs="+", type=int, default=[256, 512])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--warm", type=int, default=20, help="scripted env steps before timing")
    parser.add_argument("--video-steps", type=int, default=100, help="env steps of the video-overhead run (0: none)")
    parser.add_argument("--arch", default="cpu")
    parser.add_argument("--out", default=None, help="also write the JSON here")
    args = parser.parse_args(argv)

    import engine
    import tasks

    engine.init(arch=args.arch, precision="f32")
    load_before = os.getloadavg()
    results = [
        measure(name, args.sizes, args.repeats, args.warm, args.video_steps) for name in args.tasks or tasks.available()
    ]
    report = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "command": " ".join(
            ["python", "benchmarks/render_throughput.py", *(argv if argv is not None else sys.argv[1:])]
        ),
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "arch": args.arch,
        "load_average_before": [round(v, 2) for v in load_before],
        "load_average_after": [round(v, 2) for v in os.getloadavg()],
        "targets_ms": {"256": 50.0, "512": 200.0},
        "tasks": results,
    }
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
