"""Render every task's scripted policy to a small GIF (the README gallery).

``python -m tasks.gallery --out assets/gallery`` runs each registered task at its cpu preset for
its full horizon with the task's scripted reference policy (seed 0), renders every ``--every``-th
step at ``--size`` pixels and writes ``<Task>.gif``, plus a contact sheet ``<Task>.png`` of six
frames to inspect by eye. Prints the loss at the start and the end of each rollout.
"""

from __future__ import annotations

import argparse
import os
import sys


def render_task(name: str, out_dir: str, size: int, every: int, fps: float) -> dict:
    import gymnasium as gym
    import imageio.v3 as iio
    import numpy as np

    import envs
    from engine.render import write_video

    env = gym.make(envs.env_id(name), render_mode="rgb_array", render_size=size)
    _, info = env.reset(seed=0)
    start = info["loss"]
    frames = [env.render()]
    task = env.unwrapped
    for t in range(task.horizon):
        _, _, terminated, truncated, info = env.step(task.scripted_action())
        if (t + 1) % every == 0:
            frames.append(env.render())
        if terminated or truncated:
            break
    env.close()
    path = write_video(frames, os.path.join(out_dir, f"{name}.gif"), fps=fps)
    picks = np.linspace(0, len(frames) - 1, 6).round().astype(int)
    iio.imwrite(os.path.join(out_dir, f"{name}.png"), np.concatenate([frames[i] for i in picks], axis=1))
    return {"task": name, "gif": path, "frames": len(frames), "loss_start": start, "loss_end": info["loss"]}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="assets/gallery")
    parser.add_argument("--tasks", nargs="*", default=None)
    parser.add_argument("--size", type=int, default=160)
    parser.add_argument("--every", type=int, default=3, help="render every n-th env step")
    parser.add_argument("--fps", type=float, default=12.0)
    args = parser.parse_args(argv)

    import engine
    import tasks

    engine.init(arch="cpu", precision="f32")
    os.makedirs(args.out, exist_ok=True)
    for name in args.tasks or tasks.available():
        print(render_task(name, args.out, args.size, args.every, args.fps), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
