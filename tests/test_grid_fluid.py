"""Grid smoke solver: divergence after projection within the solver tolerance, free-slip
obstacles, buoyancy direction, f64 finite-difference gradient w.r.t. a source parameter, cell
flags from SDF colliders."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.grid_fluid import (
    GridFluid,
    SmokeConfig,
    advect,
    flags_from_colliders,
)
from engine.linsolve import AIR, FLUID, SOLID, scenes


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """Small grids: one torch thread avoids oversubscribing the shared 2-core CI machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _random_velocity(sim, seed=0):
    g = torch.Generator().manual_seed(seed)
    s = sim.initial_state()
    return [torch.randn(t.shape, generator=g, dtype=torch.float64) for t in (s.u, s.v, s.w)]


@pytest.mark.parametrize("scene", ["open_box", "sphere_box", "random_obstacles"])
@pytest.mark.parametrize("method", ["mgpcg", "mic0"])
def test_projection_divergence_within_tolerance(runtime, scene, method):
    n = 12
    flags = getattr(scenes, scene)(n)
    cfg = SmokeConfig(shape=(n, n, n), dx=1.0 / n, solver=method, rtol=1e-6)
    sim = GridFluid(cfg, flags)
    u, v, w = _random_velocity(sim)
    before = sim.divergence(u * sim.open_u, v * sim.open_v, w * sim.open_w)
    u, v, w, _ = sim.project(u, v, w)
    after = sim.divergence(u, v, w)
    info = sim.last_info
    assert info.converged
    assert float(after.norm() / before.norm()) <= 1e-6 * 1.001
    assert float(info.max_divergence.max()) <= float(info.max_divergence_before.max()) * 1e-5
    # free slip: zero normal velocity on faces touching solids or the domain boundary
    assert float((u * (1 - sim.open_u)).abs().max()) == 0.0
    assert float((v * (1 - sim.open_v)).abs().max()) == 0.0
    # projecting again changes (almost) nothing
    u2, v2, w2, _ = sim.project(u, v, w)
    assert float((u2 - u).abs().max()) < 1e-5 * float(u.abs().max())


def test_rest_stays_at_rest_and_hot_smoke_rises(runtime):
    n = 12
    coms = []
    for heat in (0.0, 40.0):
        cfg = SmokeConfig(shape=(n, n, n), dx=1.0 / n, dt=0.05, source_heat=heat, alpha=0.0)
        sim = GridFluid(cfg, scenes.open_box(n))
        s = sim.step(sim.initial_state())
        assert float(max(s.u.abs().max(), s.v.abs().max(), s.w.abs().max())) == 0.0
        src = torch.tensor([[[0.5, 0.25, 0.5, 1.0, 0.0, 0.0, 0.0]]], dtype=torch.float64)
        y = (torch.arange(n, dtype=torch.float64) + 0.5) / n
        for _ in range(8):
            s = sim.step(s, src)
        coms.append(float((s.density.sum((1, 3)) * y).sum() / s.density.sum()))
        if heat > 0:
            assert float(s.v[0, 5:7, 3:9, 5:7].mean()) > 0  # updraft above the source
    assert coms[1] > coms[0] + 0.01, coms  # heated smoke rose, cold smoke did not


def test_advection_preserves_constants_and_maccormack_runs():
    n = 8
    cfg = SmokeConfig(shape=(n, n, n), dx=1.0 / n, advection="maccormack")
    sim = GridFluid(cfg)
    u, v, w = _random_velocity(sim, 1)
    u, v, w, _ = sim.project(u, v, w)
    ones = torch.ones(1, n, n, n, dtype=torch.float64)
    for scheme in ("semi_lagrangian", "maccormack"):
        out = advect(ones, "c", u, v, w, 0.05, 1.0 / n, scheme)
        assert torch.allclose(out, ones)
    # MacCormack keeps values within the range of the advected field (limiter)
    blob = torch.rand(1, n, n, n, dtype=torch.float64)
    out = advect(blob, "c", u, v, w, 0.05, 1.0 / n, "maccormack")
    assert float(out.min()) >= float(blob.min()) - 1e-12
    assert float(out.max()) <= float(blob.max()) + 1e-12


def _rollout_loss(strength, py, method="mgpcg", steps=3):
    n = 8
    cfg = SmokeConfig(shape=(n, n, n), dx=1.0 / n, dt=0.05, solver=method, rtol=1e-12, source_radius=0.15)
    flags = scenes.open_box(n)
    flags[5:7, 3:5, 3:5] = SOLID  # an obstacle in the plume
    sim = GridFluid(cfg, flags)
    s = sim.initial_state()
    src = torch.stack(
        [
            torch.tensor(0.45, dtype=torch.float64),
            py,
            torch.tensor(0.5, dtype=torch.float64),
            torch.tensor(0.3, dtype=torch.float64),
            torch.tensor(1.0, dtype=torch.float64),
            torch.tensor(0.0, dtype=torch.float64),
            strength,
        ]
    ).view(1, 1, 7)
    for _ in range(steps):
        s = sim.step(s, src)
    wgt = torch.linspace(-1, 1, n, dtype=torch.float64)
    return (s.density * wgt.view(1, n, 1, 1)).sum() + (s.v**2).sum() + (s.u * s.u).mean()


@pytest.mark.parametrize("method", ["mgpcg", "mic0"])
def test_gradient_wrt_source_matches_finite_differences(runtime, method):
    strength = torch.tensor(3.0, dtype=torch.float64, requires_grad=True)
    py = torch.tensor(0.3, dtype=torch.float64, requires_grad=True)
    loss = _rollout_loss(strength, py, method)
    gs, gp = torch.autograd.grad(loss, (strength, py))
    h = 1e-5
    with torch.no_grad():
        fd_s = (_rollout_loss(strength + h, py, method) - _rollout_loss(strength - h, py, method)) / (2 * h)
        fd_p = (_rollout_loss(strength, py + h, method) - _rollout_loss(strength, py - h, method)) / (2 * h)
    for ad, fd in ((gs, fd_s), (gp, fd_p)):
        assert abs(float(ad) - float(fd)) <= 1e-6 + 1e-4 * abs(float(fd)), (float(ad), float(fd))
    assert abs(float(gs)) > 1e-3  # the check is not vacuous


class _Box:
    """Stand-in collider shape with the colliders.py interface: sdf(points) -> (d, normal)."""

    def __init__(self, half):
        self.half = np.asarray(half, float)

    def sdf(self, p):
        q = np.abs(p) - self.half
        out = np.linalg.norm(np.maximum(q, 0), axis=1)
        inside = np.minimum(q.max(1), 0)
        return out + inside, np.zeros_like(p)


class _Collider:
    def __init__(self, shape, pose):
        self.shape, self.pose = shape, pose


def test_flags_from_colliders_rotates_into_local_frame():
    n = 16
    dx = 1.0 / n
    box = _Box([0.3, 0.05, 0.05])  # long along local x
    f = flags_from_colliders((n, n, n), dx, [_Collider(box, (0.5, 0.5, 0.5, 1, 0, 0, 0))])
    ext = np.nonzero(f == SOLID)
    assert np.ptp(ext[0]) > 5 * np.ptp(ext[1])
    c, s = np.cos(np.pi / 4), np.sin(np.pi / 4)  # 90 degrees about z: local x -> world y
    f = flags_from_colliders(
        (n, n, n),
        dx,
        [_Collider(box, (0.5, 0.5, 0.5, c, 0, 0, s))],
        air_mask=np.pad(np.ones((n, 1, n), bool), ((0, 0), (n - 1, 0), (0, 0))),
    )
    ext = np.nonzero(f == SOLID)
    assert np.ptp(ext[1]) > 5 * np.ptp(ext[0])
    assert (f[:, -1] == AIR).all() and (f[:, 0] == FLUID).all()
    # the flags drive the solver
    sim = GridFluid(SmokeConfig(shape=(n, n, n), dx=dx), f)
    assert int((sim.flags == SOLID).sum()) == int((f == SOLID).sum())


def test_bad_config_and_inputs_are_named():
    with pytest.raises(ValueError, match="dt"):
        SmokeConfig(dt=-1.0)
    with pytest.raises(ValueError, match="advection"):
        SmokeConfig(advection="upwind")
    with pytest.raises(ValueError, match="solver"):
        SmokeConfig(solver="sor")
    sim = GridFluid(SmokeConfig(shape=(6, 6, 6), dx=1 / 6))
    with pytest.raises(ValueError, match="sources"):
        sim.step(sim.initial_state(), torch.zeros(1, 1, 6, dtype=torch.float64))
    bad = torch.zeros(1, 1, 7, dtype=torch.float64)
    bad[0, 0, 0] = float("inf")
    with pytest.raises(ValueError, match="sources"):
        sim.step(sim.initial_state(), bad)
    with pytest.raises(ValueError, match="flags"):
        GridFluid(SmokeConfig(shape=(6, 6, 6), dx=1 / 6), np.zeros((5, 6, 6), np.int8))


def test_unconverged_projection_is_reported():
    n = 8
    src = torch.tensor([[[0.5, 0.3, 0.5, 0.0, 1.0, 0.0, 5.0]]], dtype=torch.float64)
    cfg = SmokeConfig(shape=(n, n, n), dx=1 / n, solver="cg", max_iter=1, on_fail="warn")
    sim = GridFluid(cfg, scenes.sphere_box(n))
    with pytest.warns(RuntimeWarning, match="did not converge"):
        sim.step(sim.initial_state(), src)
    assert not sim.last_info.converged
    sim = GridFluid(SmokeConfig(shape=(n, n, n), dx=1 / n, solver="cg", max_iter=1), scenes.sphere_box(n))
    with pytest.raises(RuntimeError, match="did not converge"):
        sim.step(sim.initial_state(), src)


def test_flags_from_colliders_match_engine_colliders():
    from engine import colliders, geometry

    n, dx = 16, 1.0 / 16
    c, s = np.cos(0.3), np.sin(0.3)  # 0.6 rad about the axis (1, 1, 0)/sqrt(2)
    pose = (0.5, 0.45, 0.5, c, s / np.sqrt(2), s / np.sqrt(2), 0.0)
    cols = [
        colliders.Collider(geometry.Box((0.3, 0.06, 0.1)), pose),
        colliders.Collider(geometry.Sphere(0.12), (0.2, 0.8, 0.3, 1.0, 0.0, 0.0, 0.0)),
    ]
    f = flags_from_colliders((n, n, n), dx, cols)
    g = (np.stack(np.meshgrid(*[np.arange(n) + 0.5] * 3, indexing="ij"), -1) * dx).reshape(-1, 3)
    inside = np.zeros(len(g), bool)
    for col in cols:
        inside |= col.sdf(g)[0] < 0  # the collider's own world-frame SDF
    assert inside.sum() > 50
    assert np.array_equal(f.reshape(-1) == SOLID, inside)
