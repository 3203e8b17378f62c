"""FEM elastomer throughput benchmark (issue "Elastomers and touch"). Prints JSON.

Scenes (domain 0.1 m, f32, no gravity unless said):

* ``dome``: DiffTactile's dome (:func:`engine.geometry.tetmesh.dome`, 1,924 nodes, 8,100 tets)
  and ``pad``: a GelSight Mini pad (:func:`engine.geometry.tetmesh.gelsight_pad` at resolution
  1.25: 4,464 nodes, 20,700 tets), each on a box mount (collider 0) with a sphere indenter
  (collider 1, radius 5 mm) starting 0.2 mm into the gel's top and moving down at 5 mm/s. The
  default :class:`engine.solvers.fem.Elastomer` and :class:`engine.solvers.fem.PenaltyContact`;
  dt = 0.9 * ``Sensor.stable_dt()``, 10 substeps per control step. A scene needs MPM particles:
  8 resting particles in a corner, on the smallest grid allowed (8^3), so the rates measure
  the FEM and its contact, not an empty MPM grid (the profile lists the MPM stages' share).
* ``press``: the pad facing up on a fixed box, a jelly cube of 10,648 MPM particles (spacing
  dx/2, 64^3 grid) half a spacing above it, moving down at 1 m/s, and a rigid sphere collider
  (radius 8 mm) pressing the cube's top down at 1 m/s; gravity on; dt = 0.9 * the pad's stable
  step. Timed after 10 control steps, when the cube touches the gel.

Reports:

* forward tet-substeps/s of ``dome`` and ``pad`` for B = 1 and B = 8 (fast path
  ``Simulator.step``, median of ``--repeats`` runs of ``--steps`` control steps after a warm-up);
* a per-stage profile of one substep (each stage timed with ``ti.sync()`` around it) and of
  the FEM kernels alone (``elastic_forces``, ``integrate``, ``sensor_contact``,
  ``sensor_mpm_contact``, forward and reverse mode), B = 1 and 8; the kernel launches per
  substep and the cost of launching a kernel that does almost nothing;
* backward / forward time of a differentiable rollout of 10 control steps (loss on the contact
  forces and node positions; gradients for the control and the sensor parameters), per scene;
* peak resident memory of a differentiable rollout + backward of the pad scene for T = 10 vs
  T = 100 (each in a fresh subprocess after a T = 1 run that compiles the kernels; the peak is
  reset before the measured run, as benchmarks/mpm_throughput.py does);
* time per control step of the ``press`` scene (fast path, B = 1; median of ``--repeats`` runs
  of ``--steps`` steps, each after a reset and the 10 warm-up steps);
* the machine's load average before and after (the machine is shared), and the targets:
  >= 8 M tet-substeps/s forward, backward <= 3x forward, memory(T = 100) <= 2x memory(T = 10).

Usage: python benchmarks/fem_throughput.py [--steps 10] [--repeats 5] [--out benchmarks/results/fem_throughput.json]
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
from collections import defaultdict
from dataclasses import replace

from mpm_throughput import rss_mb  # the same /proc reading (this folder is on sys.path)

TARGETS = {"forward_tet_substeps_per_s": 8e6, "backward_over_forward": 3.0, "memory_ratio_T100_over_T10": 2.0}
SUBSTEPS = 10
INDENTER_RADIUS = 0.005
PRESS_SPEED = 1.0  # [m/s] of the press scene's cube and indenter
PRESS_WARMUP = 10  # control steps before the press scene's timed ones (the cube reaches the gel)
MOUNT_TOP = 0.042  # world z of the mount box's top face


def _sensor(kind: str, mount: int, offset_z: float):
    from engine.geometry.tetmesh import dome, gelsight_pad
    from engine.solvers.fem import Elastomer, PenaltyContact, Sensor

    mesh = dome() if kind == "dome" else gelsight_pad(1.25)
    return Sensor(
        mesh,
        mount=mount,
        offset=(0.0, 0.0, offset_z, 1.0, 0.0, 0.0, 0.0),
        material=Elastomer(damping=5.0),
        contact=PenaltyContact(),
        name=kind,
    )


def build(kind: str, batch_size: int):
    """A sensor scene (``dome`` or ``pad``): ``(simulator, control (B, 2, 6))``."""
    import torch

    from engine import colliders, geometry, sampling
    from engine.config import SimConfig
    from engine.materials import JELLY
    from engine.scene import SceneBuilder
    from engine.simulator import Simulator

    height = 0.015 if kind == "dome" else 0.004  # gel top above the mount face
    offset_z = 0.002 + (0.0 if kind == "dome" else height)  # the mesh frame on the box's top face
    dt = 0.9 * _sensor(kind, 0, offset_z).stable_dt()
    config = SimConfig(domain_size=0.1, grid_res=8, boundary_cells=1, dt=dt, substeps=SUBSTEPS, gravity=(0, 0, 0))
    builder = SceneBuilder(config)
    builder.add_particles(sampling.box((0.015,) * 3, (0.019,) * 3, 0.002), JELLY, 0.002)
    mount = builder.add_collider(
        colliders.Collider(geometry.Box((0.012, 0.014, 0.002)), pose=(0.05, 0.05, MOUNT_TOP - 0.002, 1, 0, 0, 0))
    )
    top = MOUNT_TOP + height
    builder.add_collider(
        colliders.Collider(
            geometry.Sphere(INDENTER_RADIUS), pose=(0.05, 0.05, top + INDENTER_RADIUS - 2e-4, 1, 0, 0, 0)
        )
    )
    builder.add_sensor(_sensor(kind, mount, offset_z))
    sim = Simulator(builder.build(), batch_size=batch_size)
    control = torch.zeros(batch_size, 2, 6, dtype=sim.dtype)
    control[:, 1, 2] = -0.005
    return sim, control


def build_press():
    """The press scene: ``(simulator, control (1, 2, 6))``."""
    import torch

    from engine import colliders, geometry, sampling
    from engine.config import SimConfig
    from engine.materials import JELLY
    from engine.scene import SceneBuilder
    from engine.simulator import Simulator

    grid_res = 64
    dx = 0.1 / grid_res
    spacing = dx / 2
    probe = _sensor("pad", 0, 0.0)
    builder = SceneBuilder(SimConfig(domain_size=0.1, grid_res=grid_res, dt=0.9 * probe.stable_dt(), substeps=SUBSTEPS))
    surface = MOUNT_TOP + 0.004
    side = 22 * spacing  # 22^3 = 10,648 particles
    lo = (0.05 - side / 2, 0.05 - side / 2, surface + spacing / 2)
    points = sampling.box(lo, (lo[0] + side - 1e-9, lo[1] + side - 1e-9, lo[2] + side - 1e-9), spacing)
    builder.add_particles(points, JELLY, spacing, velocity=(0.0, 0.0, -PRESS_SPEED))
    mount = builder.add_collider(
        colliders.Collider(geometry.Box((0.012, 0.014, 0.002)), pose=(0.05, 0.05, MOUNT_TOP - 0.002, 1, 0, 0, 0))
    )
    top = lo[2] + side
    builder.add_collider(colliders.Collider(geometry.Sphere(0.008), pose=(0.05, 0.05, top + 0.008, 1, 0, 0, 0)))
    builder.add_sensor(_sensor("pad", mount, 0.002 + 0.004))
    sim = Simulator(builder.build(), batch_size=1)
    control = torch.zeros(1, 2, 6, dtype=sim.dtype)
    control[:, 1, 2] = -PRESS_SPEED
    return sim, control


def _sync():
    import taichi as ti

    ti.sync()


def _timed_steps(sim, control, steps: int) -> float:
    sim.reset()
    _sync()
    t0 = time.perf_counter()
    for _ in range(steps):
        sim.step(control)
    _sync()
    return time.perf_counter() - t0


def forward_rate(kind: str, batch_size: int, steps: int, repeats: int) -> dict:
    sim, control = build(kind, batch_size)
    sim.reset()
    sim.step(control)  # compile + warm up
    times = [_timed_steps(sim, control, steps) for _ in range(repeats)]
    tets = len(sim.model.sensors[0].mesh.tets)
    work = batch_size * tets * SUBSTEPS * steps
    return {
        "scene": kind,
        "batch_size": batch_size,
        "tets": tets,
        "nodes": sim.fem.n_nodes,
        "dt_s": sim.config.dt,
        "steps": steps,
        "substeps_per_step": SUBSTEPS,
        "seconds_median": statistics.median(times),
        "seconds_all": times,
        "tet_substeps_per_s": work / statistics.median(times),
    }


def _stage_name(stage) -> str:
    owner = getattr(stage.forward, "__self__", None)
    return f"{getattr(owner, 'name', '?')}.{getattr(stage.forward, '__name__', '?')}"


class StageTimer:
    """Wraps every stage of a simulator (forward, adjoint, adjoint preparation) in a timer with
    ``ti.sync()`` before and after. ``totals[name]`` [s] and ``calls[name]`` accumulate until
    :meth:`reset`."""

    def __init__(self, sim):
        self.totals: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        stages = []
        for st in sim.stages:
            name = _stage_name(st)
            stages.append(
                replace(
                    st,
                    forward=self._timed(st.forward, name),
                    adjoint=self._timed(st.adjoint, name + " (adjoint)"),
                    prepare_adjoint=self._timed(st.prepare_adjoint, name + " (prepare adjoint)"),
                )
            )
        # The driver runs sim.stages, and sim._unkept (the stages that are not kept) before adjoints.
        sim.stages = stages
        sim._unkept = [st for st in stages if not st.kept]

    def _timed(self, fn, key):
        def run(sub):
            _sync()
            t0 = time.perf_counter()
            fn(sub)
            _sync()
            self.totals[key] += time.perf_counter() - t0
            self.calls[key] += 1

        return run

    def reset(self) -> None:
        self.totals.clear()
        self.calls.clear()

    def per_substep_ms(self, n_sub: int) -> dict[str, float]:
        return {k: 1e3 * v / n_sub for k, v in self.totals.items()}


def _kernel_times(sim, repeats: int = 30) -> dict:
    """Forward and reverse-mode time [ms] of the FEM and sensor-contact kernels, alone."""
    import numpy as np
    import torch

    from engine import arrays
    from engine.coupling.sensors import copy_grid_velocity, sensor_contact, sensor_mpm_contact
    from engine.solvers.base import SlotState, Substep
    from engine.solvers.fem import elastic_forces, integrate

    fem, col = sim.fem, sim.colliders
    contact = next(p for p in sim.parts if p.name == "sensor_contact")
    sim.reset()
    pose, vel = col.trajectory(
        sim.collider_poses(), torch.zeros(1, sim.batch_size, sim.n_colliders, 6, dtype=sim.dtype)
    )
    ctrl = col.control_arrays(pose.to(sim.dtype), vel.to(sim.dtype), needs_grad=True)
    buf = fem.allocate(2, needs_grad=True)
    sim.ring[fem.name].copy_slot_to(sim.ring_slot, buf, 0)
    sub = Substep(SlotState({fem.name: buf}), 0, 1, 0, ctrl)
    grids = sim.mpm.grids_of(sub)
    K = sim.n_colliders
    # The contact kernels' arguments as the coupling passes them.
    contact_args = [contact._args(sub, c) for c in range(K)]
    mpm_args = contact._mpm_args(sub)
    integrate_args = (
        buf.x, buf.v, buf.f, 0, 1, fem.forces.f_elastic, fem.forces.f_contact, fem.n_rows, fem.node_sensor,
        fem.node_volume, fem.mount_local, fem.mount_collider, fem.node_params, ctrl.pos, ctrl.quat, ctrl.lin,
        ctrl.ang, 0, fem.dt, fem.gravity,
    )  # fmt: skip
    elastic_args = (buf.x, 0, fem.tets, fem.Dm_inv, fem.rest_volume, fem.tet_params, fem.forces.f_elastic)
    calls = {
        "zero f_elastic": lambda: arrays.zero_array(fem.forces.f_elastic),
        "elastic_forces": lambda: elastic_forces(*elastic_args),
        "integrate": lambda: integrate(*integrate_args),
        "sensor_contact (all colliders)": lambda: [sensor_contact(*args) for args in contact_args],
        "copy_grid_velocity": lambda: copy_grid_velocity(grids.v, K),
        "sensor_mpm_contact": lambda: sensor_mpm_contact(*mpm_args),
        "elastic_forces.grad": lambda: elastic_forces.grad(*elastic_args),
        "integrate.grad": lambda: integrate.grad(*integrate_args),
        "sensor_contact.grad (all colliders)": lambda: [sensor_contact.grad(*args) for args in contact_args],
        "sensor_mpm_contact.grad": lambda: sensor_mpm_contact.grad(*mpm_args),
    }
    out = {}
    for name, fn in calls.items():
        fn()
        _sync()
        samples = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            _sync()
            samples.append(time.perf_counter() - t0)
        out[name] = 1e3 * float(np.median(samples))
    tets = sim.batch_size * len(sim.model.sensors[0].mesh.tets)
    out["elastic_forces_tets_per_s"] = tets / (out["elastic_forces"] * 1e-3)
    out["elastic_forces.grad_over_forward"] = out["elastic_forces.grad"] / out["elastic_forces"]
    return out


def launch_overhead(kind: str) -> dict:
    """Kernel launches per substep of the fast path (B = 1; counted by wrapping Taichi's
    ``Kernel.__call__``, an internal API: None if it moved) and the time to launch a kernel
    with almost no work, with 1 and with 12 ndarray arguments [us]."""
    import taichi as ti

    sim, control = build(kind, 1)
    sim.reset()
    sim.step(control)
    counts: dict[str, int] = defaultdict(int)
    try:
        from taichi.lang.kernel_impl import Kernel

        original = Kernel.__call__

        def counting(self, *args, **kwargs):
            counts[self.func.__name__] += 1
            return original(self, *args, **kwargs)

        Kernel.__call__ = counting
        try:
            sim.step(control)
        finally:
            Kernel.__call__ = original
        per_substep = sum(counts.values()) / SUBSTEPS
    except (ImportError, AttributeError):
        per_substep = None

    def one(x0):
        for i in x0:
            x0[i] += 1.0

    def twelve(x0, x1, x2, x3, x4, x5, x6, x7, x8, x9, x10, x11):
        for i in x0:
            x0[i] += x11[i]

    # Real annotation objects: this module's annotations are strings (PEP 563), which Taichi
    # does not evaluate.
    one.__annotations__ = {"x0": ti.types.ndarray()}
    twelve.__annotations__ = {f"x{k}": ti.types.ndarray() for k in range(12)}
    one, twelve = ti.kernel(one), ti.kernel(twelve)
    arrays_ = [ti.ndarray(ti.f32, (8,)) for _ in range(12)]
    cost = {}
    for name, fn, args in (("1_ndarray_arg", one, arrays_[:1]), ("12_ndarray_args", twelve, arrays_)):
        fn(*args)
        _sync()
        t0 = time.perf_counter()
        for _ in range(1000):
            fn(*args)
        _sync()
        cost[name] = (time.perf_counter() - t0) / 1000 * 1e6
    return {
        "scene": kind,
        "kernel_launches_per_substep": per_substep,
        "launches_per_control_step_by_kernel": dict(counts),
        "empty_kernel_launch_us": cost,
    }


def profile(kind: str, batch_size: int, steps: int) -> dict:
    """Per-substep stage times [ms] of the fast path, of a differentiable rollout's forward and
    of its backward (there a stage's plain name sums its forward reruns: the checkpoint
    segments' replay and the stages rerun before each substep's adjoint), and the FEM kernels
    alone."""
    sim, control = build(kind, batch_size)
    sim.reset()
    sim.step(control)  # compile
    out = {"scene": kind, "batch_size": batch_size, "kernels_ms": _kernel_times(sim)}
    timer = StageTimer(sim)
    sim.reset()
    timer.reset()
    for _ in range(steps):
        sim.step(control)
    out["fast_path_stage_ms_per_substep"] = timer.per_substep_ms(steps * SUBSTEPS)
    T = min(steps, 10)
    ctl = control[None].expand(T, *control.shape).clone().requires_grad_(True)
    params = sim.default_sensor_params().requires_grad_(True)
    for _ in range(2):  # the first run compiles the adjoints
        timer.reset()
        rollout = sim.rollout(sim.initial_state(), ctl, sensor_params=params)
        forward = timer.per_substep_ms(T * SUBSTEPS)
        timer.reset()
        (rollout.sensor_f.square().sum() + rollout.sensor_x.sum()).backward()
    out["rollout_forward_stage_ms_per_substep"] = forward
    out["rollout_backward_stage_ms_per_substep"] = timer.per_substep_ms(T * SUBSTEPS)
    out["rollout_backward_stage_calls"] = dict(timer.calls)
    return out


def backward_ratio(kind: str, steps: int, repeats: int) -> dict:
    import torch

    sim, control = build(kind, 1)
    ctl = control[None].expand(steps, *control.shape).clone()
    fwd, fwd_tape, bwd = [], [], []
    for r in range(repeats + 1):  # the first run compiles
        t0 = time.perf_counter()
        with torch.no_grad():
            sim.rollout(sim.initial_state(), ctl)
        _sync()
        t1 = time.perf_counter()
        c = ctl.clone().requires_grad_(True)
        params = sim.default_sensor_params().requires_grad_(True)
        out = sim.rollout(sim.initial_state(), c, sensor_params=params, record="all")
        loss = out.sensor_f.square().sum() + (out.sensor_x[-1] * 10.0).sum()
        _sync()
        t2 = time.perf_counter()
        loss.backward()
        _sync()
        t3 = time.perf_counter()
        if r:
            fwd.append(t1 - t0)
            fwd_tape.append(t2 - t1)
            bwd.append(t3 - t2)
    ratios = [b / f for b, f in zip(bwd, fwd, strict=True)]
    return {
        "scene": kind,
        "steps": steps,
        "substeps_per_step": SUBSTEPS,
        "forward_s_median": statistics.median(fwd),
        "forward_with_checkpoints_s_median": statistics.median(fwd_tape),
        "backward_s_median": statistics.median(bwd),
        "backward_over_forward": statistics.median(bwd) / statistics.median(fwd),
        "backward_over_forward_per_repeat": ratios,
        "backward_over_forward_median_of_repeats": statistics.median(ratios),
        "forward_with_checkpoints_over_forward": statistics.median(fwd_tape) / statistics.median(fwd),
    }


def press_step_time(steps: int, repeats: int) -> dict:
    sim, control = build_press()
    sim.reset()
    sim.step(control)  # compile + warm up
    times, touching = [], []
    for _ in range(repeats):
        sim.reset()
        for _ in range(PRESS_WARMUP):
            sim.step(control)
        _sync()
        t0 = time.perf_counter()
        for _ in range(steps):
            sim.step(control)
        _sync()
        times.append(time.perf_counter() - t0)
        touching.append(int((sim.get_state().sensors.f[0].norm(dim=-1) > 0).sum()))
    per_step = statistics.median(times) / steps
    return {
        "scene": "press",
        "particles": sim.n_particles,
        "grid_res": sim.config.grid_res,
        "tets": len(sim.model.sensors[0].mesh.tets),
        "dt_s": sim.config.dt,
        "substeps_per_step": SUBSTEPS,
        "warmup_steps": PRESS_WARMUP,
        "steps": steps,
        "seconds_per_control_step_median": per_step,
        "ms_per_substep": 1e3 * per_step / SUBSTEPS,
        "seconds_all": times,
        "sensor_nodes_touching_at_end": touching,
    }


def memory_child(steps: int) -> None:
    """Run in a subprocess: differentiable rollout + backward of the pad scene; print peak RSS."""
    import math

    import torch

    import engine

    engine.init(precision="f32")
    sim, control = build("pad", 1)
    for T in (1, steps):  # T = 1 compiles the kernels; its peak (LLVM) is then forgotten
        ctl = control[None].expand(T, *control.shape).clone().requires_grad_(True)
        rss_before = rss_mb("VmRSS")
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset the peak RSS (VmHWM) to the current RSS
        out = sim.rollout(sim.initial_state(), ctl)
        (out.sensor_f[-1].square().sum() + out.sensor_x[-1].sum()).backward()
        del out
    n_sub = steps * SUBSTEPS
    every = math.ceil(math.sqrt(n_sub))
    grid_slots = min(every, int(sim.grid_tape_mb * 2**20 // sim.kept_bytes()))
    print(
        json.dumps(
            {
                "steps": steps,
                "peak_rss_mb": rss_mb("VmHWM"),
                "peak_rss_increase_mb": rss_mb("VmHWM") - rss_before,
                "checkpoint_every_substeps": every,
                "grid_tape_mb": grid_slots * sim.kept_bytes() / 2**20,
                "gradient_finite": bool(torch.isfinite(ctl.grad).all()),
            }
        )
    )


def verdicts(result: dict) -> dict:
    fwd = {f"{r['scene']}_B{r['batch_size']}": r["tet_substeps_per_s"] for r in result["forward"]}
    target = TARGETS["forward_tet_substeps_per_s"]
    bwd = {r["scene"]: r["backward_over_forward"] for r in result["backward"]}
    mem = result["memory_ratio_T100_over_T10"]
    return {
        "forward_tet_substeps_per_s": {k: {"value": v, "target": target, "met": v >= target} for k, v in fwd.items()},
        "backward_over_forward": {
            k: {"value": v, "target": TARGETS["backward_over_forward"], "met": v <= TARGETS["backward_over_forward"]}
            for k, v in bwd.items()
        },
        "memory_ratio_T100_over_T10": {
            "value": mem,
            "target": TARGETS["memory_ratio_T100_over_T10"],
            "met": mem <= TARGETS["memory_ratio_T100_over_T10"],
        },
    }


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
    load_before = os.getloadavg()
    started = time.perf_counter()
    result = {
        "benchmark": "fem_throughput",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join([sys.executable.rsplit("/", 1)[-1], *sys.argv]),
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "loadavg_before": load_before,
        },
        "precision": "f32",
        "forward": [forward_rate(k, b, args.steps, args.repeats) for k in ("dome", "pad") for b in (1, 8)],
        "backward": [backward_ratio(k, 10, args.repeats) for k in ("dome", "pad")],
        "press": press_step_time(args.steps, args.repeats),
        "profile": [profile(k, b, args.steps) for k in ("dome", "pad") for b in (1, 8)],
        "launch_overhead": launch_overhead("dome"),
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
    result["targets"] = verdicts(result)
    result["machine"]["loadavg_after"] = os.getloadavg()
    result["wall_s"] = time.perf_counter() - started
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
