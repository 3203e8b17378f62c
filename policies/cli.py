"""The ``fluxlab`` console script: a thin argparse layer over the engine, envs and policies.

Subcommands
    ``fluxlab demo``
        Builds a small scene - a water block dropped into a glass ``Cup`` standing on the floor,
        a light rigid cube (``RIGID_BODY`` particles, half the density of water) dropped onto
        it, and a ``Box`` paddle driven through the water at a constant velocity by the control
        - steps it with the :class:`engine.simulator.Simulator` fast path, renders every step
        with :class:`engine.render.Renderer` and writes a video (``.mp4`` or ``.gif``).
    ``fluxlab train-preconditioner ...``
        Forwards the rest of the command line to :func:`engine.linsolve.train.main`.

Usage: ``fluxlab demo --out demo.mp4 --steps 60 --precision f32`` (about a minute on a 2-core
CPU; ``--small`` is a coarse, fast variant for smoke tests).
"""

import argparse
import sys
import time
from collections.abc import Sequence

_TRAIN = "train-preconditioner"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fluxlab", description="FluxLab command line tools.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    demo = sub.add_parser("demo", help="simulate and render a water/cup/cube/paddle scene to a video")
    demo.add_argument("--out", default="demo.mp4", help="output video (.mp4 or .gif); default demo.mp4")
    demo.add_argument("--steps", type=int, default=60, help="control steps (one rendered frame each)")
    demo.add_argument("--precision", choices=("f32", "f64"), default="f32", help="simulation float type")
    demo.add_argument("--arch", choices=("cpu", "cuda", "auto"), default=None, help="Taichi backend")
    demo.add_argument("--small", action="store_true", help="coarse grid, few particles, small frames")
    demo.add_argument("--size", type=int, default=None, help="frame width and height [px]")
    demo.add_argument("--fps", type=float, default=30.0, help="video frame rate")
    demo.add_argument("--no-progress", action="store_true", help="disable the progress bar")
    demo.set_defaults(handler=_demo)

    sub.add_parser(
        _TRAIN,
        help="train the learned multigrid preconditioner (arguments: fluxlab train-preconditioner -h)",
        add_help=False,
    )
    return parser


def demo_scene(small: bool = False):
    """The demo Model and its constant control.

    Args:
        small: coarse variant (grid 32, ~3k particles) for smoke tests.

    Returns:
        ``(model, paddle_speed_fn)``: the Model, and a function ``steps -> paddle speed [m/s]``
        that moves the paddle ~0.2 m over the run (capped at 0.4 m/s).
    """
    from engine import sampling
    from engine.colliders import Box, Collider, Contact, Cup
    from engine.config import SimConfig
    from engine.materials import RIGID_BODY, WATER
    from engine.scene import SceneBuilder

    if small:
        config = SimConfig(grid_res=32, dt=6e-4, substeps=12)
    else:
        # dx = 1/48 m; water's sound speed 20 m/s crosses 0.48 dx per substep (CFL-stable).
        config = SimConfig(grid_res=48, dt=5e-4, substeps=24)
    lo = config.boundary_cells * config.dx
    spacing = 0.5 * config.dx
    cup_radius, cup_height, wall = 0.2, 0.26, max(0.025, 1.1 * config.dx)
    cup = Collider(Cup(cup_radius, cup_height, wall), pose=(0.5, 0.5, lo, 1.0, 0.0, 0.0, 0.0))
    paddle = Collider(
        Box((0.012, 0.085, 0.11)),
        pose=(0.39, 0.5, lo + wall + 0.125, 1.0, 0.0, 0.0, 0.0),
        contact=Contact(friction=0.3, mode="slip"),
    )
    builder = SceneBuilder(config)
    inner = cup_radius - wall
    water = sampling.cylinder((0.5, 0.5, lo + wall + 0.03), inner - spacing, 0.16, spacing, jitter=0.5, rng=0)
    d_paddle, _ = paddle.sdf(water)
    d_cup, _ = cup.sdf(water)
    water = water[(d_paddle > spacing) & (d_cup > 0.5 * spacing)]
    builder.add_particles(water, WATER, spacing)
    top = float(water[:, 2].max())
    side = 0.08
    c0 = (0.58, 0.5, top + 0.03 + 0.5 * side)
    cube = sampling.box(
        (c0[0] - side / 2, c0[1] - side / 2, c0[2] - side / 2),
        (c0[0] + side / 2, c0[1] + side / 2, c0[2] + side / 2),
        spacing,
    )
    builder.add_particles(cube, RIGID_BODY, spacing)
    builder.add_collider(cup)
    builder.add_collider(paddle)
    model = builder.build()
    step_time = config.dt * config.substeps

    def paddle_speed(steps: int) -> float:
        return min(0.4, 0.2 / (max(steps, 1) * step_time))

    return model, paddle_speed


def _demo(args: argparse.Namespace) -> int:
    if args.steps < 1:
        print("fluxlab demo: --steps must be >= 1", file=sys.stderr)
        return 2
    import numpy as np
    import torch
    from tqdm import tqdm

    import engine
    from engine.render import Renderer, particle_colors, write_video
    from engine.simulator import Simulator
    from engine.state import SimulationDiverged

    if not args.out.lower().endswith((".mp4", ".gif")):
        print(f"fluxlab demo: --out must end in .mp4 or .gif, got {args.out!r}", file=sys.stderr)
        return 2
    t_start = time.perf_counter()
    engine.init(arch=args.arch, precision=args.precision)
    model, paddle_speed = demo_scene(small=args.small)
    sim = Simulator(model, batch_size=1)
    sim.reset()
    control = torch.zeros(1, model.n_colliders, 6, dtype=sim.dtype)
    control[0, 1, 0] = paddle_speed(args.steps)  # collider 1 = paddle, +x
    size = args.size or (128 if args.small else 256)
    lo = model.config.boundary_cells * model.config.dx
    renderer = Renderer(
        width=size,
        height=size,
        camera_pos=(0.5, -0.2, 0.76),
        look_at=(0.5, 0.5, 0.14),
        fov_deg=45.0,
        particle_radius=0.7 * 0.5 * model.config.dx,
        floor_z=lo,
    )
    colors = particle_colors(model)

    def frame() -> np.ndarray:
        state = sim.get_state()
        poses = state.collider_pose[0].numpy()
        return renderer.render(state.x[0], colors, list(zip(model.colliders, poses, strict=True)))

    t0 = time.perf_counter()
    frames = [frame()]  # the first frame also compiles the render kernels
    render_times = [time.perf_counter() - t0]
    t_sim = 0.0
    bar = tqdm(range(args.steps), desc="fluxlab demo", unit="step", disable=args.no_progress)
    try:
        for _ in bar:
            t0 = time.perf_counter()
            sim.step(control)
            t1 = time.perf_counter()
            frames.append(frame())
            t_sim += t1 - t0
            render_times.append(time.perf_counter() - t1)
    except SimulationDiverged as err:
        print(f"fluxlab demo: {err}", file=sys.stderr)
        return 1
    finally:
        bar.close()
    path = write_video(frames, args.out, fps=args.fps)
    total = time.perf_counter() - t_start
    print(f"wrote {path}")
    print(
        f"{model.n_particles} particles, grid {model.config.grid_res}^3, {args.steps} steps x "
        f"{model.config.substeps} substeps, {len(frames)} frames {size}x{size}; "
        f"simulate {t_sim:.1f} s, render {sum(render_times):.1f} s "
        f"(median {1e3 * float(np.median(render_times[1:] or render_times)):.0f} ms/frame), "
        f"total {total:.1f} s"
    )
    return 0


def _train_preconditioner(argv: Sequence[str]) -> int:
    from engine.linsolve import train

    code = train.main(list(argv))
    return int(code or 0)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``fluxlab`` console script; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == _TRAIN:
        # Forwarded verbatim (including -h) so the trainer owns its own options.
        return _train_preconditioner(argv[1:])
    args = build_parser().parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
