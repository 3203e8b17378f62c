"""The ``fluxlab demo`` example: the engine alone, with no task, env or policy.

The demo shows the MLS-MPM engine's two-way coupling and its headless renderer in one short
clip: a water block dropped into a glass ``Cup`` standing on the floor, a light rigid cube (a free
:class:`engine.solvers.rigid.RigidBody`, half the density of water) dropped onto it, and a ``Box`` paddle driven
through the water at a constant velocity by the control. The scene is stepped with the
:class:`engine.simulator.Simulator` fast path (no tape), rendered every step with
:class:`engine.render.Renderer`, and written as a video (``.mp4`` or ``.gif``).

Usage: ``fluxlab demo --out demo.mp4 --steps 60 --precision f32`` (about a minute on a 2-core
CPU), or :func:`run` from Python; ``small=True`` is a coarse, fast variant for smoke tests.
"""

from __future__ import annotations

import time
from dataclasses import dataclass


def demo_scene(small: bool = False):
    """The demo Model and its constant control.

    Args:
        small: coarse variant (grid 32, ~3k particles) for smoke tests.

    Returns:
        ``(model, paddle_speed_fn)``: the Model, and a function ``steps -> paddle speed [m/s]``
        that moves the paddle ~0.2 m over the run (capped at 0.4 m/s).
    """
    from engine import sampling
    from engine.colliders import BoundaryCondition, Collider
    from engine.config import SimConfig
    from engine.geometry import Box, Cup
    from engine.materials import WATER
    from engine.scene import SceneBuilder
    from engine.solvers.rigid import RigidBody

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
        boundary=BoundaryCondition(friction=0.3, mode="slip"),
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
    cube = RigidBody(
        Box((side / 2,) * 3), density=500.0, pose=(0.58, 0.5, top + 0.03 + 0.5 * side, 1.0, 0.0, 0.0, 0.0),
        name="cube", color=(0.9, 0.35, 0.2),
    )  # fmt: skip
    builder.add_rigid_body(cube)
    builder.add_collider(cup)
    builder.add_collider(paddle)
    model = builder.build()
    step_time = config.dt * config.substeps

    def paddle_speed(steps: int) -> float:
        return min(0.4, 0.2 / (max(steps, 1) * step_time))

    return model, paddle_speed


@dataclass
class DemoResult:
    """What :func:`run` did.

    Attributes:
        video: path of the written video.
        particles: particles in the scene.
        grid_res: grid cells per axis.
        steps: control steps simulated.
        substeps: MPM substeps per control step.
        frames: frames written (one after reset and one per step).
        size: frame width and height [px].
        simulate_s: time spent stepping the simulator [s].
        render_s: time spent rendering, the first (kernel-compiling) frame included [s].
        median_render_ms: median render time per frame, the first excluded [ms].
        total_s: wall-clock time of the whole run, runtime start-up included [s].
    """

    video: str
    particles: int
    grid_res: int
    steps: int
    substeps: int
    frames: int
    size: int
    simulate_s: float
    render_s: float
    median_render_ms: float
    total_s: float


def run(
    out: str,
    *,
    steps: int = 60,
    precision: str = "f32",
    arch: str | None = None,
    small: bool = False,
    size: int | None = None,
    fps: float = 30.0,
    progress: bool = True,
) -> DemoResult:
    """Simulate the demo scene for ``steps`` control steps and write the video ``out``.

    Args:
        out: output video path (``.mp4`` or ``.gif``).
        steps: control steps (one rendered frame each), >= 1.
        precision: simulation float type (``f32`` or ``f64``); initializes the engine.
        arch: Taichi backend (``cpu``, ``cuda``, ``auto``; default: the engine's).
        small: the coarse scene (grid 32) and 128 px frames.
        size: frame width and height [px] (default 256, or 128 when ``small``).
        fps: video frame rate.
        progress: show a tqdm progress bar.

    Raises:
        engine.state.SimulationDiverged: the simulation blew up (no video is written).
    """
    import numpy as np
    import torch
    from tqdm import tqdm

    import engine
    from engine.render import Renderer, particle_colors, write_video
    from engine.simulator import Simulator

    t_start = time.perf_counter()
    engine.init(arch=arch, precision=precision)
    model, paddle_speed = demo_scene(small=small)
    sim = Simulator(model, batch_size=1)
    sim.reset()
    control = torch.zeros(1, model.n_colliders, 6, dtype=sim.dtype)
    control[0, 1, 0] = paddle_speed(steps)  # collider 1 = paddle, +x
    size = size or (128 if small else 256)
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
        bodies = list(zip(model.bodies, state.bodies[0, :, :7].numpy(), strict=True))
        return renderer.render(state.x[0], colors, list(zip(model.colliders, poses, strict=True)), bodies=bodies)

    t0 = time.perf_counter()
    frames = [frame()]  # the first frame also compiles the render kernels
    render_times = [time.perf_counter() - t0]
    t_sim = 0.0
    bar = tqdm(range(steps), desc="fluxlab demo", unit="step", disable=not progress)
    try:
        for _ in bar:
            t0 = time.perf_counter()
            sim.step(control)
            t1 = time.perf_counter()
            frames.append(frame())
            t_sim += t1 - t0
            render_times.append(time.perf_counter() - t1)
    finally:
        bar.close()
    path = write_video(frames, out, fps=fps)
    return DemoResult(
        video=path,
        particles=model.n_particles,
        grid_res=model.config.grid_res,
        steps=steps,
        substeps=model.config.substeps,
        frames=len(frames),
        size=size,
        simulate_s=t_sim,
        render_s=sum(render_times),
        median_render_ms=1e3 * float(np.median(render_times[1:] or render_times)),
        total_s=time.perf_counter() - t_start,
    )
