"""Contact between kinematic colliders (engine/coupling/kinematic.py): commanded motions that would
enter another collider or leave the domain are stopped at contact, differentiably.

Tolerances: penetrations are measured with the shapes' exact numpy SDFs at dense surface samples
(four per sample spacing s). Flat contacts are resolved to rounding (``FLAT_TOL``); contacts at
sharp edges to a quarter voxel of the interpolated SDF (``EDGE_TOL`` = s / 12, the voxel is s / 3).
"""

from __future__ import annotations

import functools
import logging
import math
import warnings

import numpy as np
import pytest
import torch

from engine import colliders, geometry
from engine.config import SimConfig
from engine.coupling.kinematic import KinematicContact, surface_samples
from engine.geometry import integrate_poses, quat_rotate_numpy

CONFIG = SimConfig(grid_res=32, dt=1e-3, substeps=10)
FLAT_TOL = 1e-9
EDGE_TOL = 0.5 * CONFIG.dx / 12
FLOOR = CONFIG.boundary_cells * CONFIG.dx


def commanded(col, control, config=CONFIG):
    """Commanded poses and velocities ``(n + 1, B, K, ...)`` as ColliderCoupling builds them."""
    pose0 = torch.tensor([[c.pose for c in col]] * control.shape[1], dtype=torch.float64)
    n = control.shape[0] * config.substeps
    poses, vels = integrate_poses(pose0, torch.cat([control, control[-1:]]), config.dt, config.substeps)
    return poses[: n + 1], vels[: n + 1]


def resolved(col, control, config=CONFIG):
    """``(commanded poses, projected poses, projected velocities)``."""
    poses, vels = commanded(col, control, config)
    projected, velocities = KinematicContact(col, config, torch.float64).resolve(poses, vels)
    return poses, projected, velocities


@functools.lru_cache
def dense_samples(shape):
    return surface_samples(shape, 0.25 * 0.5 * CONFIG.dx)


def gap(a, pose_a, b, pose_b):
    """Most negative exact SDF of each collider at dense surface samples of the other [m]."""
    result = math.inf
    for one, p1, other, p2 in ((a, pose_a, b, pose_b), (b, pose_b, a, pose_a)):
        if isinstance(one.shape, geometry.Plane):
            continue
        local = dense_samples(one.shape)
        world = quat_rotate_numpy(p1[3:], local) + np.asarray(p1[:3])
        result = min(result, float(other.sdf(world, pose=p2)[0].min()))
    return result


def control_of(T, K, collider, twist):
    control = torch.zeros(T, 1, K, 6, dtype=torch.float64)
    control[:, 0, collider] = torch.as_tensor(twist, dtype=torch.float64)
    return control


def rot_y(angle):
    return (math.cos(angle / 2), 0.0, math.sin(angle / 2), 0.0)


def test_box_pushed_into_static_box_stops_at_contact():
    tool = colliders.Collider(geometry.Box((0.05, 0.05, 0.05)), pose=(0.3, 0.5, 0.5, 1, 0, 0, 0))
    block = colliders.Collider(geometry.Box((0.05, 0.1, 0.1)), pose=(0.5, 0.5, 0.5, 1, 0, 0, 0))
    poses, projected, vels = resolved([tool, block], control_of(20, 2, 0, (1.0, 0.2, 0, 0, 0, 0)))
    final = projected[-1, 0, 0].numpy()
    assert gap(tool, poses[-1, 0, 0].numpy(), block, block.pose) < -0.04  # the command goes through
    assert abs(gap(tool, final, block, block.pose)) <= FLAT_TOL  # stopped at contact
    assert final[0] == pytest.approx(0.4, abs=FLAT_TOL)
    assert final[1] == pytest.approx(0.5 + 0.2 * 0.2, abs=1e-12)  # the tangential motion is kept
    assert torch.equal(projected[:, 0, 1], poses[:, 0, 1])  # the obstacle does not move
    # a stopped tool has the velocity of its projected motion, x_{g+1} = x_g + dt * lin_g
    n = projected.shape[0] - 1
    step = projected[1:, 0, 0, :3] - projected[:-1, 0, 0, :3]
    assert torch.allclose(step, CONFIG.dt * vels[:n, 0, 0, :3], atol=1e-12)
    assert abs(float(vels[n - 1, 0, 0, 0])) < 1e-9 and float(vels[n - 1, 0, 0, 1]) == pytest.approx(0.2)


def test_held_cup_lowered_onto_another_cups_wall_is_stopped():
    cup = geometry.Cup(0.1, 0.12, 0.03)
    held = colliders.Collider(cup, pose=(0.45, 0.5, 0.3, 1, 0, 0, 0))
    target = colliders.Collider(cup, pose=(0.6, 0.5, FLOOR, 1, 0, 0, 0))
    tilt = 0.3  # rad/s about y: the rim of the held cup rolls on the target's rim
    poses, projected, _ = resolved([held, target], control_of(25, 2, 0, (0.05, 0.0, -0.5, 0.0, tilt, 0.0)))
    worst = min(gap(held, projected[i, 0, 0].numpy(), target, target.pose) for i in range(0, 251, 25))
    assert gap(held, poses[-1, 0, 0].numpy(), target, target.pose) < -0.01
    assert worst >= -EDGE_TOL
    assert projected[-1, 0, 0, 2] > poses[-1, 0, 0, 2] + 0.03  # it rests on the rim
    assert torch.allclose(projected[..., 3:], poses[..., 3:])  # the commanded tilt is kept


def test_paddle_moving_inside_a_cup_hollow_is_not_disturbed(runtime):
    from engine import sampling
    from engine.coupling import ColliderCoupling
    from engine.materials import WATER
    from engine.scene import SceneBuilder
    from engine.simulator import Simulator

    cup = colliders.Collider(geometry.Cup(0.15, 0.15, 0.03), pose=(0.5, 0.5, FLOOR, 1, 0, 0, 0))
    paddle = colliders.Collider(geometry.Box((0.01, 0.04, 0.05)), pose=(0.5, 0.5, 0.2, 1, 0, 0, 0))
    builder = SceneBuilder(CONFIG)
    builder.add_particles(sampling.box((0.15, 0.15, 0.15), (0.2, 0.2, 0.2), 1 / 64), WATER, 1 / 64)
    builder.add_collider(cup)
    builder.add_collider(paddle)
    sim = Simulator(builder.build(), batch_size=2)
    coupling = next(p for p in sim.parts if isinstance(p, ColliderCoupling))
    t = torch.arange(10, dtype=torch.float64) * 2 * math.pi / 10
    control = torch.zeros(10, 2, 2, 6, dtype=torch.float64)
    control[:, :, 1, 0], control[:, :, 1, 1] = 0.4 * torch.cos(t)[:, None], 0.4 * torch.sin(t)[:, None]
    control[:, 1, 1, 5] = 3.0  # and spinning in the second scene
    pose0 = torch.tensor([[cup.pose, paddle.pose]] * 2, dtype=torch.float64)
    poses, vels = coupling.trajectory(pose0, control)
    expected_poses, expected_vels = commanded([cup, paddle], control)
    assert torch.equal(poses, expected_poses) and torch.equal(vels, expected_vels)
    assert min(gap(paddle, poses[i, b, 1].numpy(), cup, cup.pose) for i in range(0, 101, 10) for b in (0, 1)) > 0.0


def test_floor_stops_a_tool_and_a_rotation_into_it():
    box = colliders.Collider(geometry.Box((0.05, 0.03, 0.02)), pose=(0.5, 0.5, 0.2, 1, 0, 0, 0))
    _, projected, _ = resolved([box], control_of(20, 1, 0, (0.0, 0.0, -1.0, 0, 0, 0)))
    assert float(projected[-1, 0, 0, 2]) == pytest.approx(FLOOR + 0.02, abs=FLAT_TOL)
    # resting on the floor and turning about y: a corner would dig in; it is lifted instead
    resting = colliders.Collider(box.shape, pose=(0.5, 0.5, FLOOR + 0.02, 1, 0, 0, 0))
    poses, projected, vels = resolved([resting], control_of(10, 1, 0, (0.0, 0.0, 0.0, 0.0, 3.0, 0.0)))
    floor = colliders.Collider(geometry.Plane(), pose=(0.0, 0.0, FLOOR, 1, 0, 0, 0))
    assert gap(resting, poses[-1, 0, 0].numpy(), floor, floor.pose) < -0.01
    assert gap(resting, projected[-1, 0, 0].numpy(), floor, floor.pose) >= -FLAT_TOL
    assert float(vels[5, 0, 0, 2]) > 0.0 and torch.equal(
        vels[:, 0, 0, 3:], poses.new_tensor([0, 3.0, 0]).expand(101, 3)
    )


def test_gradient_of_a_sliding_contact_matches_finite_differences():
    """A box pressed onto a static block tilted by 30 degrees slides along its face: the final
    position depends on the control through the projection (gradcheck, f64)."""
    angle = math.radians(30.0)
    block = colliders.Collider(geometry.Box((0.1, 0.1, 0.05)), pose=(0.5, 0.5, 0.35, *rot_y(angle)))
    n = np.array([math.sin(angle), 0.0, math.cos(angle)])
    support = 0.03 * (abs(n[0]) + abs(n[2]))  # the tool's lowest corner along -n
    start = np.array([0.5, 0.5, 0.35]) + n * (0.05 + support + 0.002)
    tool = colliders.Collider(geometry.Box((0.03, 0.03, 0.03)), pose=(*start, 1, 0, 0, 0))
    config = SimConfig(grid_res=32, dt=2e-3, substeps=5)
    resolver = KinematicContact([tool, block], config, torch.float64)
    pose0 = torch.tensor([[tool.pose, block.pose]], dtype=torch.float64)

    def final_position(u):
        tool_twist = torch.cat([u, torch.zeros_like(u)], dim=-1)
        control = torch.stack([tool_twist, torch.zeros_like(tool_twist)], dim=1)[:, None]
        poses, vels = integrate_poses(pose0, torch.cat([control, control[-1:]]), config.dt, config.substeps)
        projected, _ = resolver.resolve(poses[:21], vels[:21])
        return projected[-1, 0, 0, :3]

    u = torch.tensor([[0.3, 0.1, -0.5], [0.2, -0.1, -0.6], [0.4, 0.0, -0.4], [0.1, 0.2, -0.7]], dtype=torch.float64)
    u.requires_grad_(True)
    final = final_position(u).detach().numpy()
    assert gap(tool, (*final, 1, 0, 0, 0), block, block.pose) == pytest.approx(0.0, abs=FLAT_TOL)  # in contact
    assert torch.autograd.gradcheck(final_position, (u,), eps=1e-6, atol=1e-7, rtol=1e-5)
    jac = torch.autograd.functional.jacobian(final_position, u)
    # pushing harder into the face changes nothing along its normal
    assert abs(float(jac[:, 0, 2] @ torch.as_tensor(n))) < 1e-9


def test_overlapping_grouped_and_non_solid_pairs_are_not_resolved(caplog):
    box = geometry.Box((0.05, 0.05, 0.05))
    twist = (1.0, 0, 0, 0, 0, 0)
    overlapping = [
        colliders.Collider(box, pose=(0.45, 0.5, 0.5, 1, 0, 0, 0)),
        colliders.Collider(box, pose=(0.5, 0.5, 0.5, 1, 0, 0, 0)),
    ]
    with caplog.at_level(logging.INFO, logger="engine.coupling.kinematic"):
        poses, projected, _ = resolved(overlapping, control_of(5, 2, 0, twist))
    assert "colliders 0 and 1 overlap" in caplog.text
    assert torch.equal(poses, projected)
    apart = [(0.3, 0.5, 0.5, 1, 0, 0, 0), (0.5, 0.5, 0.5, 1, 0, 0, 0)]
    for settings in ({"contact_group": 3}, {"solid": False}):
        col = [colliders.Collider(box, pose=p, **settings) for p in apart]
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            poses, projected, _ = resolved(col, control_of(20, 2, 0, twist))
        assert torch.equal(poses, projected)
    with pytest.raises(ValueError, match="solid"):
        colliders.Collider(box, solid="yes")


def test_rollout_through_contact_gives_gradients(runtime):
    from engine import sampling
    from engine.materials import WATER
    from engine.scene import SceneBuilder
    from engine.simulator import Simulator

    config = SimConfig(grid_res=16, dt=5e-4, substeps=4)
    builder = SceneBuilder(config)
    builder.add_particles(sampling.box((0.4, 0.4, 0.2), (0.5, 0.5, 0.3), 1 / 32), WATER, 1 / 32)
    tool = colliders.Collider(geometry.Box((0.05, 0.05, 0.03)), pose=(0.45, 0.45, 0.6, 1, 0, 0, 0))
    shelf = colliders.Collider(geometry.Box((0.2, 0.2, 0.02)), pose=(0.45, 0.45, 0.55, 1, 0, 0, 0))
    resting_z = 0.57 + 0.03  # the tool starts resting on the shelf
    builder.add_collider(tool)
    builder.add_collider(shelf)
    sim = Simulator(builder.build(), batch_size=1)

    def run(control):
        state = sim.initial_state()
        state.x.requires_grad_(True)
        out = sim.rollout(state, control, record="all")
        loss = out.final.collider_pose[0, 0, :3].sum() + (out.x[-1] ** 2).sum()
        return loss, out, state

    control = torch.zeros(6, 1, 2, 6, dtype=torch.float64)
    control[:, 0, 0, 0], control[:, 0, 0, 2] = 0.5, -0.8  # slide along the shelf, pressed into it
    control.requires_grad_(True)
    loss, out, state = run(control)
    loss.backward()
    final = out.final.collider_pose[0, 0].detach()
    assert float(final[2]) == pytest.approx(resting_z, abs=FLAT_TOL)
    assert float(final[0]) == pytest.approx(0.45 + 0.5 * 6 * 4 * 5e-4, abs=1e-12)
    grad = control.grad[:, 0, 0]
    assert torch.isfinite(grad).all() and torch.isfinite(state.x.grad).all()
    assert torch.allclose(grad[:, 0], torch.full((6,), 4 * 5e-4, dtype=torch.float64))  # dx/dvx = substeps * dt
    assert torch.all(grad[:, 2].abs() < 1e-15)  # pressing harder does not move it
    sim.reset(sim.initial_state())
    for t in range(6):  # one control step at a time: the same poses
        sim.step(control[t].detach())
    assert torch.equal(sim.collider_poses(), out.final.collider_pose.detach())
