"""Side-by-side speed of two source trees of FluxLab (this one and a baseline checkout). Prints JSON.

Each round runs one subprocess per tree, alternating, with ``PYTHONPATH`` set to the tree, and
measures with public APIs only (so any version of the engine runs the same code):

* ``mpm_forward_substeps_per_s``: the reference MLS-MPM scene (64k water particles, 64³ grid,
  f32, B=1; see mpm_throughput.py) forward, particle-substeps per second;
* ``mpm_backward_s``: a 10-step differentiable rollout of that scene, backward seconds;
* ``env_steps_per_s/<Task>``: env steps per second of every registered task at B=1 under
  uniformly random actions (after a warm-up step);
* ``trajopt_iteration_s``: one trajectory-optimization iteration on Pouring (full horizon,
  ``differentiable_rollout`` forward and backward).

Reports per tree the median and the best over rounds, and the ratios this tree / baseline of
both (for rates, > 1 is faster; for seconds, < 1 is faster). On a shared machine the best of
several rounds is the steadier estimate of what the code costs.

Usage: python benchmarks/ab_trees.py --baseline /path/to/old/checkout [--rounds 3]
       [--out benchmarks/results/ab_trees.json]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]


ENV_STEPS = 40  # env steps timed per task


def _measure() -> dict:
    """Run inside the subprocess: every measurement with the tree on sys.path."""
    import gymnasium as gym
    import numpy as np
    import torch

    import engine

    engine.init(arch="cpu", precision="f32")
    import envs
    from engine import sampling
    from engine.config import SimConfig
    from engine.materials import WATER
    from engine.scene import SceneBuilder
    from engine.simulator import Simulator

    out: dict = {}
    builder = SceneBuilder(SimConfig(grid_res=64, dt=2e-4, substeps=10))
    spacing = 1 / 128
    builder.add_particles(sampling.box((0.3, 0.3, 0.15), (0.7, 0.7, 0.55), spacing), WATER, spacing)
    sim = Simulator(builder.build(), batch_size=1)
    control = torch.zeros(1, 1, 0, 6)
    sim.reset()
    sim.step(control[0])
    t0 = time.perf_counter()
    for _ in range(5):
        sim.step(control[0])
    out["mpm_forward_substeps_per_s"] = 5 * 10 * sim.n_particles / (time.perf_counter() - t0)
    state = sim.initial_state()
    state.x.requires_grad_(True)
    rollout = sim.rollout(state, torch.zeros(10, 1, 0, 6), record="final")
    loss = rollout.x[-1, :, :, 2].mean()
    t0 = time.perf_counter()
    loss.backward()
    out["mpm_backward_s"] = time.perf_counter() - t0

    for env_id in envs.ENV_IDS:
        env = gym.make(env_id)
        env.reset(seed=0)
        env.action_space.seed(0)
        env.step(env.action_space.sample())
        t0 = time.perf_counter()
        for _ in range(ENV_STEPS):
            _, _, terminated, truncated, _ = env.step(env.action_space.sample())
            if terminated or truncated:
                env.reset()
        out[f"env_steps_per_s/{env_id.split('/')[1]}"] = ENV_STEPS / (time.perf_counter() - t0)
        env.close()

    env = gym.make("FluxLab/Pouring-v0")
    env.reset(seed=0)
    horizon = env.unwrapped.task.horizon
    actions = torch.zeros(horizon, *env.action_space.shape, requires_grad=True)
    env.unwrapped.differentiable_rollout(actions[:2]).backward()  # warm-up: compile kernels
    rng = np.random.default_rng(0)
    actions = torch.tensor(rng.uniform(-0.5, 0.5, (horizon, *env.action_space.shape)), requires_grad=True)
    t0 = time.perf_counter()
    env.unwrapped.differentiable_rollout(actions).backward()
    out["trajopt_iteration_s"] = time.perf_counter() - t0
    env.close()
    return out


def _run_tree(tree: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    code = f"import json, sys; sys.path.insert(0, {str(HERE / 'benchmarks')!r}); import ab_trees; "
    code += "print('RESULT' + json.dumps(ab_trees._measure()))"
    proc = subprocess.run([sys.executable, "-c", code], env=env, cwd=tree, capture_output=True, text=True, check=False)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT"):
            return json.loads(line[len("RESULT") :])
    raise RuntimeError(f"measurement in {tree} failed:\n{proc.stderr[-3000:]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", type=Path, required=True, help="checkout of the baseline tree")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    if not (args.baseline / "engine" / "simulator.py").is_file():
        parser.error(f"--baseline {args.baseline}: not a FluxLab checkout (no engine/simulator.py)")
    trees = {"this": HERE, "baseline": args.baseline.resolve()}
    runs: dict[str, list[dict]] = {name: [] for name in trees}
    for r in range(args.rounds):
        for name, tree in trees.items() if r % 2 == 0 else reversed(trees.items()):
            runs[name].append(_run_tree(tree))
            print(f"round {r + 1}/{args.rounds}: {name} done", file=sys.stderr)
    keys = list(runs["this"][0])
    medians = {name: {k: statistics.median(run[k] for run in rs) for k in keys} for name, rs in runs.items()}
    best = {
        name: {k: (min if k.endswith("_s") else max)(run[k] for run in rs) for k in keys} for name, rs in runs.items()
    }
    result = {
        "benchmark": "ab_trees",
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "command": "python " + " ".join(sys.argv),
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform()},
        "rounds": args.rounds,
        "trees": {name: str(tree) for name, tree in trees.items()},
        "median": medians,
        "ratio_this_over_baseline": {k: medians["this"][k] / medians["baseline"][k] for k in keys},
        "best": best,
        "best_ratio_this_over_baseline": {k: best["this"][k] / best["baseline"][k] for k in keys},
        "runs": runs,
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.out is not None:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
