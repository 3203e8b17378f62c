"""The ``fluxlab demo`` example: the engine alone, with no task, env or policy.

The video has two parts.

1. Pour, float, stir (``--steps`` frames, default 300, 3.6 s of simulated time at 12 ms per
   frame). A glass cup held above the floor, full of water (MLS-MPM, drawn as a clear liquid
   surface), tilts by 115 degrees and pours into a second glass cup on the floor, in which a
   light cube (a free :class:`engine.solvers.rigid.RigidBody`, half the density of water) lies.
   The water lifts the cube, which floats; the held cup tilts back; a rod comes down into the
   filled cup and stirs it in circles around the floating cube. Each frame shows two views side
   by side: the scene's camera and the same camera orbited 60 degrees and raised 25 degrees
   (:func:`engine.render_camera.orbit`).
2. Tactile press (45 frames, 22 ms of simulated time). A GelSight-style gel pad (FEM,
   ``engine/solvers/fem.py``) on a finger moves 3 mm down onto a firm jelly ball (MPM, 14 mm
   across, resting on the floor) and back up; the pad and the ball both give, and each frame
   shows the scene beside the sensor's shaded tactile image (``engine/tactile.py``,
   :func:`engine.panels.compose_tactile_frame`), where the ball's imprint appears as the
   coloured dome of a GelSight image.

Both parts step the :class:`engine.simulator.Simulator` without a tape (the press records its
rollout for the tactile signals) and render with :class:`engine.render.Renderer`; the video is
``.mp4`` or ``.gif``. ``small=True`` is a coarse variant (grid 32 and 16 substeps for the pour,
128 px views) for smoke tests; fewer ``steps`` shorten both parts in proportion.

Usage: ``fluxlab demo --out demo.mp4`` (about 2 minutes of CPU time; ``--small`` about 1), or
:func:`run`.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass

POUR_STEPS = 300
"""Frames of the pour/stir part at its full length."""
PRESS_STEPS = 45
"""Frames of the tactile press at its full length."""
STEP_TIME = 0.012
"""Simulated time per frame of the pour/stir part [s]."""
SECOND_VIEW = (60.0, 25.0, 1.0)
"""(azimuth_deg, elevation_deg, zoom) of the second view."""

_CUP_RADIUS, _CUP_HEIGHT = 0.14, 0.17
_SOURCE_X, _TARGET_X = 0.51, 0.68
_TILT_RATE = 1.6  # [rad/s] for 1.25 s: 115 degrees
_STIR_RADIUS, _STIR_PERIOD = 0.055, 0.9  # [m], [s]
_PRESS_DEPTH, _PRESS_SPEED = 3.0e-3, 0.3  # finger travel [m] and its top speed [m/s]
_BALL_RADIUS, _BALL_E = 7e-3, 3e5  # jelly ball [m], its Young's modulus [Pa] (firmer than the gel)
_PRESS_GAP = 5e-4  # pad to ball at the start [m]
_PAD_OFFSET = 6.5e-3  # finger centre to the pad's contact face [m]
_FINGER_COLOR = (0.30, 0.32, 0.36)


def demo_scene(small: bool = False):
    """The pour/stir Model and its control schedule.

    Args:
        small: coarse variant (grid 32) for smoke tests.

    Returns:
        ``(model, control_at)``: the Model (colliders: held cup, floor cup, rod) and a function
        ``t [s] -> (3, 6)`` collider twists (linear, angular velocity) at simulated time t.
    """
    import numpy as np

    from engine import sampling
    from engine.colliders import BoundaryCondition, Collider
    from engine.config import SimConfig
    from engine.geometry import Box, Cup
    from engine.materials import WATER
    from engine.scene import SceneBuilder
    from engine.solvers.rigid import RigidBody

    if small:
        # dx = 1/32 m; the same margin: 0.48 dx per substep at 20 m/s.
        config = SimConfig(grid_res=32, dt=7.5e-4, substeps=16)
    else:
        # dx = 1/48 m; water's sound speed 20 m/s crosses 0.48 dx per substep (CFL-stable).
        config = SimConfig(grid_res=48, dt=5e-4, substeps=24)
    lo = config.boundary_cells * config.dx
    spacing = 0.5 * config.dx
    wall = max(0.03, 1.1 * config.dx)
    cup = Cup(_CUP_RADIUS, _CUP_HEIGHT, wall)
    source_z = lo + _CUP_HEIGHT + 0.08
    source = Collider(cup, pose=(_SOURCE_X, 0.5, source_z, 1, 0, 0, 0), boundary=BoundaryCondition(mode="slip"))
    target = Collider(cup, pose=(_TARGET_X, 0.5, lo, 1, 0, 0, 0), boundary=BoundaryCondition(mode="slip"))
    rod_start = (_TARGET_X + _STIR_RADIUS, 0.5, lo + _CUP_HEIGHT + 0.3)
    rod = Collider(Box((0.012, 0.012, 0.1)), pose=(*rod_start, 1, 0, 0, 0), boundary=BoundaryCondition(mode="slip"))
    builder = SceneBuilder(config)
    inner = _CUP_RADIUS - wall
    bottom = (_SOURCE_X, 0.5, source_z + wall + 0.5 * spacing)
    builder.add_particles(sampling.cylinder(bottom, inner - 0.75 * spacing, 0.11, spacing), WATER, spacing)
    side = 0.06
    cube = RigidBody(
        Box((side / 2,) * 3), density=500.0, pose=(_TARGET_X - 0.02, 0.5, lo + wall + 0.5 * side + 0.005, 1, 0, 0, 0),
        name="cube", color=(0.9, 0.35, 0.2),
    )  # fmt: skip
    builder.add_rigid_body(cube)
    for c in (source, target, rod):
        builder.add_collider(c)
    model = builder.build()
    descent = (rod_start[2] - (lo + wall + 0.13)) / 0.4  # the rod reaches 13 cm above the floor in 0.4 s

    def control_at(t: float) -> np.ndarray:
        u = np.zeros((3, 6))
        if 0.2 <= t < 1.45:
            u[0, 4] = _TILT_RATE  # tilt the held cup's rim toward the floor cup
        elif 1.8 <= t < 3.05:
            u[0, 4] = -_TILT_RATE
        if 1.8 <= t < 2.2:
            u[2, 2] = -descent
        elif t >= 2.2:
            w = 2.0 * math.pi / _STIR_PERIOD
            phase = w * (t - 2.2)
            u[2, 0] = -_STIR_RADIUS * w * math.sin(phase)
            u[2, 1] = _STIR_RADIUS * w * math.cos(phase)
        return u

    return model, control_at


def press_scene():
    """The tactile-press Model and its sensor view.

    Returns:
        ``(model, view, pad)``: a jelly ball resting on the floor under a finger that carries a
        flat gel pad (the README's "Touch" sensor, facing down, its contact face
        :data:`_PRESS_GAP` above the ball), and a 64 x 64
        :class:`engine.tactile.TactileSensorView` of the pad.
    """
    import torch

    from engine import colliders, geometry, sampling
    from engine.config import SimConfig
    from engine.geometry.tetmesh import flat_pad
    from engine.materials import JELLY
    from engine.scene import SceneBuilder
    from engine.solvers.fem import Sensor
    from engine.tactile import PinholeCamera, TactileSensorView

    config = SimConfig(domain_size=0.1, grid_res=32, dt=1.5e-5, substeps=33, gravity=(0, 0, 0))
    builder = SceneBuilder(config)
    spacing = 0.1 / 64
    floor = config.boundary_cells * config.dx
    center = (0.05, 0.05, floor + _BALL_RADIUS)
    ball = dataclasses.replace(JELLY, E=_BALL_E)
    builder.add_particles(sampling.sphere(center, _BALL_RADIUS, spacing), ball, spacing)
    finger_z = floor + 2.0 * _BALL_RADIUS + _PRESS_GAP + _PAD_OFFSET
    finger = builder.add_collider(
        colliders.Collider(geometry.Box((0.01, 0.013, 0.002)), pose=(0.05, 0.05, finger_z, 1, 0, 0, 0))
    )
    pad = flat_pad()
    builder.add_sensor(Sensor(pad, mount=finger, offset=(0, 0, -_PAD_OFFSET, 0, 1, 0, 0)))
    camera = PinholeCamera.from_fov(64, 64, 64.0, position=(0, 0, -0.02))  # the pad fills the image
    view = TactileSensorView(torch.tensor(pad.nodes[pad.surface_nodes]), torch.tensor(pad.surface_tris.copy()), camera)
    return builder.build(), view, pad


@dataclass
class DemoResult:
    """What :func:`run` did.

    Attributes:
        video: path of the written video.
        particles: particles in the pour/stir scene.
        grid_res: its grid cells per axis.
        steps: control steps of the pour/stir part.
        substeps: its MPM substeps per control step.
        press_steps: control steps of the tactile press.
        frames: frames written (one after each reset and one per step).
        size: height of a frame, and width of one view [px].
        simulate_s: time spent stepping the simulators [s].
        render_s: time spent rendering (first, kernel-compiling frames included) [s].
        median_render_ms: median render time of a pour/stir frame (both views), the first
            excluded [ms].
        total_s: wall-clock time of the whole run, runtime start-up included [s].
    """

    video: str
    particles: int
    grid_res: int
    steps: int
    substeps: int
    press_steps: int
    frames: int
    size: int
    simulate_s: float
    render_s: float
    median_render_ms: float
    total_s: float


def run(
    out: str,
    *,
    steps: int | None = None,
    precision: str = "f32",
    arch: str | None = None,
    small: bool = False,
    size: int | None = None,
    fps: float = 30.0,
    progress: bool = True,
) -> DemoResult:
    """Simulate both parts of the demo and write the video ``out``.

    Args:
        out: output video path (``.mp4`` or ``.gif``).
        steps: frames of the pour/stir part, >= 1 (default :data:`POUR_STEPS`); the press gets
            ``PRESS_STEPS * steps / POUR_STEPS`` frames (at least 2).
        precision: simulation float type (``f32`` or ``f64``); initializes the engine.
        arch: Taichi backend (``cpu``, ``cuda``, ``auto``; default: the engine's).
        small: the coarse pour scene (grid 32) and 128 px views.
        size: height and view width [px] (default 256, or 128 when ``small``).
        fps: video frame rate.
        progress: show a tqdm progress bar.

    Raises:
        ValueError: ``steps`` < 1.
        engine.state.SimulationDiverged: a simulation blew up (no video is written).
    """
    import numpy as np
    from tqdm import tqdm

    import engine
    from engine.render import write_video

    steps = POUR_STEPS if steps is None else steps
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be an int >= 1, got {steps!r}")
    press_steps = max(2, round(PRESS_STEPS * steps / POUR_STEPS))
    t_start = time.perf_counter()
    engine.init(arch=arch, precision=precision)
    size = size or (128 if small else 256)
    bar = tqdm(total=steps + press_steps, desc="fluxlab demo", unit="step", disable=not progress)
    try:
        pour = _pour(small, steps, size, bar)
        press = _press(press_steps, size, pour["frames"][0].shape[1], bar)
    finally:
        bar.close()
    frames = pour["frames"] + press["frames"]
    path = write_video(frames, out, fps=fps)
    return DemoResult(
        video=path,
        particles=pour["particles"],
        grid_res=pour["grid_res"],
        steps=steps,
        substeps=pour["substeps"],
        press_steps=press_steps,
        frames=len(frames),
        size=size,
        simulate_s=pour["simulate_s"] + press["simulate_s"],
        render_s=sum(pour["render_s"]) + press["render_s"],
        median_render_ms=1e3 * float(np.median(pour["render_s"][1:] or pour["render_s"])),
        total_s=time.perf_counter() - t_start,
    )


def _pour(small: bool, steps: int, size: int, bar) -> dict:
    """Simulate and render the pour/stir part; frames are two views side by side."""
    import torch

    from engine.render import Renderer, particle_colors, particle_optics
    from engine.render_camera import orbit, tile
    from engine.simulator import Simulator

    model, control_at = demo_scene(small=small)
    config = model.config
    sim = Simulator(model, batch_size=1)
    sim.reset()
    lo = config.boundary_cells * config.dx
    eye, target = (0.56, -0.32, 0.72), (0.56, 0.5, 0.17)
    cameras = [eye, orbit(eye, target, *SECOND_VIEW)]
    renderer = Renderer(
        width=size, height=size, camera_pos=eye, look_at=target, particle_radius=0.35 * config.dx, floor_z=lo
    )
    colors, optics = particle_colors(model), particle_optics(model)
    control = torch.zeros(1, model.n_colliders, 6, dtype=sim.dtype)

    def frame():
        state = sim.get_state()
        colliders = list(zip(model.colliders, state.collider_pose[0].numpy(), strict=True))
        bodies = list(zip(model.bodies, state.bodies[0, :, :7].numpy(), strict=True))
        views = []
        for camera in cameras:
            renderer.set_camera(camera, target)
            views.append(renderer.render(state.x[0], colors, colliders, bodies=bodies, optics=optics))
        return tile(views)

    t0 = time.perf_counter()
    frames = [frame()]  # the first frame also compiles the render kernels
    render_s = [time.perf_counter() - t0]
    simulate_s = 0.0
    step_time = config.dt * config.substeps
    for k in range(steps - 1):
        t0 = time.perf_counter()
        control[0] = torch.as_tensor(control_at(k * step_time), dtype=sim.dtype)
        sim.step(control)
        t1 = time.perf_counter()
        frames.append(frame())
        simulate_s += t1 - t0
        render_s.append(time.perf_counter() - t1)
        bar.update()
    bar.update()
    return {
        "frames": frames,
        "particles": model.n_particles,
        "grid_res": config.grid_res,
        "substeps": config.substeps,
        "simulate_s": simulate_s,
        "render_s": render_s,
    }


def _press(steps: int, size: int, width: int, bar) -> dict:
    """Simulate the tactile press (down for 60 % of the steps, then up) and render each step
    beside the tactile image; frames are padded to ``width``."""
    import numpy as np
    import torch

    from engine.panels import compose_tactile_frame
    from engine.render import Renderer, particle_colors, particle_optics, sensor_meshes
    from engine.simulator import Simulator

    model, view, _ = press_scene()
    sim = Simulator(model)
    control = torch.zeros(steps, 1, 1, 6, dtype=sim.dtype)
    down = max(1, round(0.6 * steps))
    step_time = model.config.dt * model.config.substeps
    speed = min(_PRESS_DEPTH / (down * step_time), _PRESS_SPEED)
    control[:down, ..., 2] = -speed  # the finger's twist: down, then back up
    control[down:, ..., 2] = speed * down / max(steps - down, 1)
    t0 = time.perf_counter()
    with torch.no_grad():
        out = sim.rollout(sim.initial_state(), control, record="all")
    simulate_s = time.perf_counter() - t0
    renderer = Renderer(
        width=size,
        height=size,
        camera_pos=(0.074, 0.0, 0.032),
        look_at=(0.05, 0.05, 0.019),
        fov_deg=40.0,
        particle_radius=0.9 * 0.1 / 64,
        light_dir=(-0.3, -0.9, 0.6),
        floor_z=model.config.boundary_cells * model.config.dx,
        scene_bounds=((0.03, 0.03, 0.0), (0.07, 0.07, 0.04)),
        checker=0.01,
    )
    colors, optics = particle_colors(model), particle_optics(model)
    frames = []
    t0 = time.perf_counter()
    sensor = [sim.fem.to_sensor_frame(0, out.sensor_x[k], out.sensor_f[k], out.collider_pose[k]) for k in range(steps)]
    with torch.no_grad():  # one batched call: the view's per-call work is shared by all frames
        images = view.signals(torch.cat([x for x, _ in sensor]), torch.cat([f for _, f in sensor]), keys=("image",))
    for k in range(steps):
        poses = out.collider_pose[k, 0].numpy()
        scene = renderer.render(
            out.x[k, 0],
            colors,
            list(zip(model.colliders, poses, strict=True)),
            collider_colors=[_FINGER_COLOR],
            meshes=sensor_meshes(sim, out.sensor_x[k]),
            optics=optics,
        )
        panel = compose_tactile_frame(scene, images["image"][k])
        pad = max(width - panel.shape[1], 0)
        frames.append(np.pad(panel, ((0, 0), (0, pad), (0, 0)), constant_values=24)[:, :width])
        bar.update()
    return {"frames": frames, "simulate_s": simulate_s, "render_s": time.perf_counter() - t0}
