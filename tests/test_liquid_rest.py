"""A resting liquid stays at rest and keeps its volume; the packing correction of the liquid's J
is differentiable and conserves mass.

Scenes: a water layer (bulk modulus 1e5 Pa) 0.1 m deep filling the domain walls' box of a 0.4 m
domain (dx = 2 cm, 8 substeps of 1 ms), started hydrostatic; water pressed onto a moving box
collider (the packing correction is active there).
"""

from __future__ import annotations

import importlib.util
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from engine import colliders, geometry, sampling
from engine import materials as M
from engine.config import SimConfig
from engine.hydrostatic import hydrostatic_start
from engine.scene import SceneBuilder
from engine.simulator import Simulator

LAYER_WATER = replace(M.WATER, name="layer_water", E=1e5)


def _liquid_rest_module():
    """benchmarks/liquid_rest.py, whose packing measure the volume tests use."""
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "liquid_rest.py"
    spec = importlib.util.spec_from_file_location("fluxlab_benchmarks_liquid_rest", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


MEASURE = _liquid_rest_module()


def packing_volume(x: np.ndarray, V0: np.ndarray, config: SimConfig) -> float:
    """Liquid volume from the particle packing (benchmarks/liquid_rest.py): the rest volume spread
    over the grid with the quadratic B-spline weights, each node counting at most its open
    fraction inside the domain walls."""
    n, dx = config.grid_res, config.dx
    phi = MEASURE.deposit(x, V0, dx, n)
    nodes = np.arange(n)
    b = config.boundary_cells
    free1 = (1.0 - MEASURE.spline_cdf(b - nodes)) * (1.0 - MEASURE.spline_cdf(nodes - (n - b)))
    capacity = free1[:, None, None] * free1[None, :, None] * free1[None, None, :]
    return float(np.minimum(phi, capacity).sum() * dx**3)


def layer(hydrostatic: bool) -> Simulator:
    config = SimConfig(grid_res=20, domain_size=0.4, dt=1e-3, substeps=8)
    dx = config.dx
    lo, hi = config.boundary_cells * dx, config.domain_size - config.boundary_cells * dx
    builder = SceneBuilder(config)
    points = sampling.box((lo, lo, lo), (hi, hi, lo + 0.1), dx / 2)
    builder.add_particles(points, LAYER_WATER, dx / 2, hydrostatic=hydrostatic)
    return Simulator(builder.build(), batch_size=1)


def test_hydrostatic_start_pressure(runtime):
    """J0 gives p = K (1 - J0) = rho g d at rest depth d; the compressed column keeps its bottom."""
    spacing = 0.01
    points = sampling.box((0.3, 0.3, 0.3), (0.4, 0.4, 0.5), spacing)
    moved, J0 = hydrostatic_start(points, 1000.0, 1e5, spacing, (0.0, 0.0, -9.81))
    top = points[:, 2].max() + 0.5 * spacing
    np.testing.assert_allclose(1e5 * (1.0 - J0), 1000.0 * 9.81 * (top - points[:, 2]), rtol=1e-12)
    # p = rho g (surface - z) in the compressed column, to the density change (second order)
    surface = moved[:, 2].max() + 0.5 * spacing * J0[np.argmax(moved[:, 2])]
    np.testing.assert_allclose(1e5 * (1.0 - J0), 1000.0 * 9.81 * (surface - moved[:, 2]), rtol=0.02)
    assert np.all(moved[:, 2] <= points[:, 2]) and moved[:, 2].min() > points[:, 2].min() - 0.5 * spacing
    np.testing.assert_array_equal(moved[:, :2], points[:, :2])
    builder = SceneBuilder(SimConfig(grid_res=16))
    with pytest.raises(ValueError, match="not a fluid"):
        builder.add_particles(points, M.JELLY, spacing, hydrostatic=True)
    builder.add_particles(points, LAYER_WATER, spacing, hydrostatic=True)
    sim = Simulator(builder.build(), batch_size=2)
    np.testing.assert_array_equal(sim.initial_state().J.numpy(), np.stack([J0, J0]))


@pytest.mark.slow
def test_resting_layer_stays_still_and_keeps_its_volume(runtime):
    """The hydrostatic layer's rms speed stays below 2 mm/s after 1 s and its volume from the
    packing within 1 % over 1.5 s; the same layer started at J = 1 rings acoustically."""
    sim = layer(hydrostatic=True)
    sim.reset()
    control = torch.zeros(1, 0, 6, dtype=torch.float64)
    V0 = sim.model.volume
    volume0 = packing_volume(sim.get_state().x[0].numpy(), V0, sim.config)
    speeds, volumes = [], []
    for step in range(1, 188):  # 1.5 s
        sim.step(control)
        if step % 25 == 0 or step == 187:
            state = sim.get_state()
            volumes.append(packing_volume(state.x[0].numpy(), V0, sim.config) / volume0 - 1.0)
            if step * 8e-3 >= 1.0:
                speeds.append(float(state.v[0].square().sum(1).mean().sqrt()))
    assert max(speeds) <= 2e-3, speeds
    assert max(abs(v) for v in volumes) <= 0.01, volumes
    ringing = layer(hydrostatic=False)
    ringing.reset()
    for _ in range(50):
        ringing.step(control)
    assert float(ringing.get_state().v[0].square().sum(1).mean().sqrt()) > 5e-3


@pytest.mark.slow
def test_layer_resting_in_a_cup_keeps_its_volume(runtime):
    """Water resting in a Cup collider, whose walls lie between grid nodes, keeps its packing
    volume within 1 % over 1.5 s (0.44 %) and settles below 2 mm/s rms after 1 s: the collider's
    contact band stops the liquid's pressure from packing it against the walls (without the band
    it loses about a quarter of its volume in that time)."""
    result = MEASURE.run_layer("cup", 1.5, every=25)
    volumes = [change for _, change in result["volume_change"]]
    speeds = [speed for t, speed in result["rms_speed"] if t >= 1.0]
    assert max(abs(v) for v in volumes) <= 0.01, volumes
    assert max(speeds) <= 2e-3, speeds


def piled_scene(scatter: str = "auto") -> Simulator:
    """Water falling onto a box collider's top (between grid nodes), which the
    control moves: particles are projected onto its surface and pack above their J."""
    config = SimConfig(grid_res=16, dt=5e-4, substeps=3, packing_rate=0.05)
    spacing = config.dx / 2
    builder = SceneBuilder(config)
    points = sampling.box((0.38, 0.38, 0.33), (0.56, 0.56, 0.42), spacing)
    builder.add_particles(points, M.WATER, spacing, velocity=(0.0, 0.0, -1.5))
    top = 0.3125 + 0.37 * config.dx  # between grid nodes, off the B-spline knots (x / dx = k + 1/2)
    floor = colliders.Collider(
        geometry.Box((0.15, 0.15, 0.05)),
        pose=(0.47, 0.47, top - 0.05, 1, 0, 0, 0),
        boundary=colliders.BoundaryCondition(0.2, "slip"),
    )
    builder.add_collider(floor)
    return Simulator(builder.build(), batch_size=2, scatter=scatter)


def test_packing_correction_is_active_and_conserves_mass(runtime):
    from engine.solvers.base import Substep

    sim = piled_scene()
    state = sim.initial_state()
    state.x[1] += 0.004 * torch.sin(9.0 * state.x[1])  # the scenes differ
    sim.reset(state)
    control = torch.zeros(2, 1, 6, dtype=torch.float64)
    control[1, 0, 2] = 0.3
    for _ in range(6):
        sim.step(control)
    slot = sim.ring_slot
    pose, vel = sim.colliders.trajectory(sim.collider_poses(), control[None])
    ctrl = sim.colliders.control_arrays(pose, vel, needs_grad=False)
    sim.mpm.to_grid(Substep(sim.ring, slot, 1 - slot, 0, ctrl, keep=True))
    scale = sim.mpm.packing.J_scale.to_numpy()
    assert scale.min() < 1.0 - 1e-4, "the packing correction did not act"
    assert scale.max() <= 1.0
    grid_mass = sim.mpm.grids.mom_mass.to_numpy()[..., 3].reshape(2, -1).sum(1)
    np.testing.assert_allclose(grid_mass, sim.model.particle_mass().sum(), rtol=1e-13)


def _directional_check(sim: Simulator, state, steps: int, names: list[str], seed: int = 0):
    """<grad L, d> against central differences (L(p + eps d) - L(p - eps d)) / 2 eps for a random
    direction d, |ad - fd| <= 1e-9 + 1e-4 |fd| (as tests/test_mpm_gradients.py)."""
    gen = torch.Generator().manual_seed(seed)
    inputs = {
        "x0": state.x.clone(),
        "v0": state.v.clone(),
        "params": sim.default_params(),
        "control": 0.3 * torch.randn(steps, sim.batch_size, sim.n_colliders, 6, generator=gen, dtype=torch.float64),
    }
    weights = torch.randn(sim.batch_size, sim.n_particles, 3, generator=gen, dtype=torch.float64)

    def loss(x0, v0, params, control):
        s = state.clone()
        s.x, s.v = x0, v0
        out = sim.rollout(s, control, params=params, record="all")
        return (out.x[-1] * weights).sum() + 0.1 * (out.v[0] * weights).sum()

    leaves = {k: v.clone().requires_grad_(True) for k, v in inputs.items()}
    loss(**leaves).backward()
    eps = 1e-5
    for name in names:
        d = torch.randn(inputs[name].shape, generator=gen, dtype=torch.float64)
        if name == "params":
            d = d * inputs[name].abs()
        ad = float((leaves[name].grad * d).sum())
        with torch.no_grad():
            plus = loss(**{**inputs, name: inputs[name] + eps * d})
            minus = loss(**{**inputs, name: inputs[name] - eps * d})
        fd = float(plus - minus) / (2 * eps)
        assert abs(ad - fd) <= 1e-9 + 1e-4 * abs(fd), f"{name}: ad={ad!r} fd={fd!r}"


@pytest.mark.parametrize("scatter", ["atomic", "slabs"])
def test_packing_correction_gradients(runtime, scatter):
    """f64 finite differences through substeps where the correction acts (the water piled on the
    box), with respect to positions, velocities, material parameters and the box's control."""
    sim = piled_scene(scatter)
    sim.reset()
    for _ in range(5):  # the water lands and piles
        sim.step(torch.zeros(2, 1, 6, dtype=torch.float64))
    landed = sim.get_state()
    _directional_check(sim, landed, steps=2, names=["x0", "v0", "params", "control"])
    # the backward recomputed the first substep's correction last: it acted
    assert sim.mpm.packing.J_scale.to_numpy().min() < 1.0 - 1e-4
