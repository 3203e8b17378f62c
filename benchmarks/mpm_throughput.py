"""MLS-MPM throughput benchmark. Prints JSON.

Reference scene (the one Genesis' MPM liquid example builds): domain [0, 1]^3, a water block 0.4 m
wide centred at (0.5, 0.5, 0.35), particle spacing 0.01 m (64,000 particles), 64^3 grid,
substep dt = 2e-4 s, 10 substeps per step, f32.

Reports: forward particle-substeps/s for B=1 and B=4 (median of --repeats runs of --steps steps),
backward/forward time ratio of a differentiable rollout of 10 steps, and peak resident memory of a
differentiable rollout + backward for T=10 vs T=100 (each in a fresh subprocess, after a T=1 run
that compiles the kernels; the peak is reset before the measured run, so ``peak_rss_increase_mb``
is what the rollout itself adds), together with the simulator's own checkpoint + tape bytes (particle
states, and the grids the backward keeps for the replayed substeps).

Usage: python benchmarks/mpm_throughput.py [--steps 10] [--repeats 5] [--out results.json]
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import statistics
import subprocess
import sys
import time


def build(batch_size: int):
    from engine import sampling
    from engine.config import SimConfig
    from engine.materials import WATER
    from engine.scene import SceneBuilder
    from engine.simulator import Simulator

    builder = SceneBuilder(SimConfig(grid_res=64, dt=2e-4, substeps=10))
    spacing = 0.01
    builder.add_particles(sampling.box((0.3, 0.3, 0.15), (0.7, 0.7, 0.55), spacing), WATER, spacing)
    return Simulator(builder.build(), batch_size=batch_size)


def forward_rate(batch_size: int, steps: int, repeats: int) -> dict:
    import torch

    sim = build(batch_size)
    sim.reset()
    control = torch.zeros(batch_size, 0, 6, dtype=sim.dtype)
    sim.step(control)  # compile + warm up
    times = []
    for _ in range(repeats):
        sim.reset()
        t0 = time.perf_counter()
        for _ in range(steps):
            sim.step(control)
        times.append(time.perf_counter() - t0)
    work = batch_size * sim.n_particles * sim.config.substeps * steps
    return {
        "batch_size": batch_size,
        "particles": sim.n_particles,
        "steps": steps,
        "seconds_median": statistics.median(times),
        "seconds_all": times,
        "particle_substeps_per_s": work / statistics.median(times),
    }


def backward_ratio(steps: int, repeats: int) -> dict:
    import torch

    sim = build(1)
    control = torch.zeros(steps, 1, 0, 6, dtype=sim.dtype)
    fwd, fwd_tape, bwd = [], [], []
    for r in range(repeats + 1):  # the first run compiles
        state = sim.initial_state()
        t0 = time.perf_counter()
        with torch.no_grad():
            sim.rollout(state, control)
        t1 = time.perf_counter()
        state.v.requires_grad_(True)
        out = sim.rollout(state, control)
        loss = out.x[-1, :, :, 2].mean()
        t2 = time.perf_counter()
        loss.backward()
        t3 = time.perf_counter()
        if r:
            fwd.append(t1 - t0)
            fwd_tape.append(t2 - t1)
            bwd.append(t3 - t2)
    return {
        "steps": steps,
        "forward_s_median": statistics.median(fwd),
        "forward_with_checkpoints_s_median": statistics.median(fwd_tape),
        "backward_s_median": statistics.median(bwd),
        "backward_over_forward": statistics.median(bwd) / statistics.median(fwd),
        # each repeat times its forward and backward back to back, so the per-repeat ratio is less
        # exposed to the machine's speed drifting between repeats
        "backward_over_forward_per_repeat": [b / f for b, f in zip(bwd, fwd, strict=True)],
        "backward_over_forward_median_of_repeats": statistics.median(b / f for b, f in zip(bwd, fwd, strict=True)),
    }


def rss_mb(field: str) -> float:
    """VmRSS (current) or VmHWM (peak since the last reset) of this process [MiB], Linux."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def memory_child(steps: int) -> None:
    """Run in a subprocess: differentiable rollout + backward, print peak RSS and buffer bytes."""
    import math

    import torch

    import engine

    engine.init(precision="f32")
    sim = build(1)
    for T in (1, steps):  # T = 1 compiles the kernels; its peak (LLVM) is then forgotten
        state = sim.initial_state()
        state.v.requires_grad_(True)
        rss_before = rss_mb("VmRSS")
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset the peak RSS (VmHWM) to the current RSS
        out = sim.rollout(state, torch.zeros(T, 1, 0, 6, dtype=sim.dtype))
        out.x[-1, :, :, 2].mean().backward()
        del out
    n_sub = steps * sim.config.substeps
    every = math.ceil(math.sqrt(n_sub))
    state_bytes = sim.n_particles * (3 + 3 + 9 + 9 + 1) * 4
    grid_slots = min(every, int(sim.grid_tape_mb * 2**20 // sim.kept_bytes()))
    print(
        json.dumps(
            {
                "steps": steps,
                "peak_rss_mb": rss_mb("VmHWM"),
                "peak_rss_increase_mb": rss_mb("VmHWM") - rss_before,
                # checkpoints, and the replay tape of every + 1 states with their gradients
                "checkpoint_and_tape_mb": (math.ceil(n_sub / every) + 2 * (every + 1)) * state_bytes / 2**20,
                "grid_tape_mb": grid_slots * sim.kept_bytes() / 2**20,
                "checkpoint_every_substeps": every,
                "gradient_finite": bool(torch.isfinite(state.v.grad).all()),
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default=None, help="also write the JSON here")
    parser.add_argument("--memory-child", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child is not None:
        memory_child(args.memory_child)
        return

    import engine

    engine.init(precision="f32")
    result = {
        "benchmark": "mpm_throughput",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join([sys.executable.rsplit("/", 1)[-1], *sys.argv]),
        "machine": {"cpu": platform.processor() or platform.machine(), "python": platform.python_version()},
        "precision": "f32",
        "forward": [forward_rate(b, args.steps, args.repeats) for b in (1, 4)],
        "backward": backward_ratio(10, args.repeats),
    }
    memory = []
    for steps in (10, 100):
        out = subprocess.run(
            [sys.executable, __file__, "--memory-child", str(steps)], capture_output=True, text=True, check=True
        )
        memory.append(json.loads(out.stdout.strip().splitlines()[-1]))
    result["memory"] = memory
    result["memory_ratio_T100_over_T10"] = memory[1]["peak_rss_mb"] / memory[0]["peak_rss_mb"]
    result["memory_increase_ratio_T100_over_T10"] = (
        memory[1]["peak_rss_increase_mb"] / memory[0]["peak_rss_increase_mb"]
    )
    result["targets"] = {
        "forward_particle_substeps_per_s": 4e6,
        "backward_over_forward": 2.5,
        "memory_ratio_T100_over_T10": 2.0,
        "genesis_1_4_5_reference": {"particle_substeps_per_s": 1.29e6, "backward_over_forward": 6.1},
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
