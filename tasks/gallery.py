"""Render every task's scripted policy to a GIF (the README gallery).

``python -m tasks.gallery`` runs each registered task at its cpu preset for its full horizon with
the task's scripted reference policy (seed 0), renders every ``--every``-th step at ``--size``
pixels (default 256) and writes ``<Task>.gif``, plus a contact sheet ``<Task>.png`` of six frames
to inspect by eye, into ``--out`` (default ``out/gallery``, ignored by git);
``--assets`` writes the README's copies in ``assets/gallery`` instead. ``--views N`` renders
particle tasks from N cameras side by side (the task camera orbited by 60 degrees per view).
Prints the loss at the start and the end of each rollout.
"""

from __future__ import annotations

import argparse
import os
import sys


def render_task(name: str, out_dir: str, size: int, every: int, fps: float, views: int = 1) -> dict:
    import gymnasium as gym
    import imageio.v3 as iio
    import numpy as np

    import envs
    from engine.render import write_video
    from tasks.base import ParticleTask

    env = gym.make(envs.env_id(name), render_mode="rgb_array", render_size=size)
    _, info = env.reset(seed=0)
    start = info["loss"]
    task = env.unwrapped
    inner = getattr(task, "task", None)
    if views > 1 and isinstance(inner, ParticleTask):
        orbits = [(60.0 * k, 0.0, 1.0) for k in range(views)]

        def render():
            return inner.render(0, size, views=orbits)
    else:
        render = env.render
    frames = [render()]
    for t in range(task.horizon):
        _, _, terminated, truncated, info = env.step(task.scripted_action())
        if (t + 1) % every == 0:
            frames.append(render())
        if terminated or truncated:
            break
    env.close()
    path = write_video(frames, os.path.join(out_dir, f"{name}.gif"), fps=fps)
    picks = np.linspace(0, len(frames) - 1, 6).round().astype(int)
    iio.imwrite(os.path.join(out_dir, f"{name}.png"), np.concatenate([frames[i] for i in picks], axis=1))
    return {"task": name, "gif": path, "frames": len(frames), "loss_start": start, "loss_end": info["loss"]}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=os.path.join("out", "gallery"), help="output folder (git-ignored)")
    parser.add_argument("--assets", action="store_true", help="write the README gallery, assets/gallery")
    parser.add_argument("--tasks", nargs="*", default=None)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--views", type=int, default=1, help="cameras per frame (particle tasks)")
    parser.add_argument("--every", type=int, default=3, help="render every n-th env step")
    parser.add_argument("--fps", type=float, default=12.0)
    args = parser.parse_args(argv)

    import engine
    import tasks

    if args.views < 1:
        parser.error("--views must be >= 1")
    out = os.path.join("assets", "gallery") if args.assets else args.out
    engine.init(arch="cpu", precision="f32")
    os.makedirs(out, exist_ok=True)
    for name in args.tasks or tasks.available():
        print(render_task(name, out, args.size, args.every, args.fps, args.views), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
