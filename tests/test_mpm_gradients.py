"""Reverse-mode gradients of the MLS-MPM rollout against central finite differences (f64).

Each check compares a directional derivative <grad L, d> with (L(p + eps d) - L(p - eps d)) / 2eps
for a random direction d, with |ad - fd| <= atol + rtol |fd| and rtol = 1e-4 (Warp's gradcheck).
One-sided contact conditions (separating colliders and their contact band) make the loss
piecewise smooth, with kinks where a grid node's normal velocity changes sign, and a stencil
that crosses one is off by O(1); a narrow stencil crosses fewer but loses digits to rounding
where the derivative is small against the loss. So the check takes the better of eps = 1e-5 and
1e-6 (a shape-matched body against the sphere crosses a kink at 1e-5 in x0, and its v0 derivative,
1e-3 of the loss, carries 3e-4 relative rounding at 1e-6). A wrong gradient fails both.
"""

import numpy as np
import pytest
import torch
from conftest import small_scene

from engine import colliders, geometry
from engine import materials as M

RTOL, ATOL, EPS = 1e-4, 1e-9, (1e-5, 1e-6)


def _moving_sphere(mode="separate"):
    return colliders.Collider(
        geometry.Sphere(0.06), pose=(0.45, 0.45, 0.22, 1, 0, 0, 0), boundary=colliders.BoundaryCondition(0.3, mode)
    )


def _setup(sim, steps, seed=0):
    gen = torch.Generator().manual_seed(seed)
    state = sim.initial_state()
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
        # a loss on the final and an intermediate state
        return (out.x[-1] * weights).sum() + 0.1 * (out.v[0] * weights).sum()

    return inputs, loss


def _directional_check(inputs, loss, names, seed=1):
    leaves = {k: v.clone().requires_grad_(True) for k, v in inputs.items()}
    loss(**leaves).backward()
    gen = torch.Generator().manual_seed(seed)
    for name in names:
        if inputs[name].numel() == 0:
            continue
        d = torch.randn(inputs[name].shape, generator=gen, dtype=torch.float64)
        if name == "params":
            d = d * inputs[name].abs()  # relative perturbation: E ~ 1e5 Pa, nu ~ 0.3
        ad = float((leaves[name].grad * d).sum())
        fds = []
        for eps in EPS:
            with torch.no_grad():
                plus = {**inputs, name: inputs[name] + eps * d}
                minus = {**inputs, name: inputs[name] - eps * d}
                fds.append(float(loss(**plus) - loss(**minus)) / (2 * eps))
            if abs(ad - fds[-1]) <= ATOL + RTOL * abs(fds[-1]):
                break
        else:
            raise AssertionError(f"{name}: ad={ad!r} fd={fds!r} (eps {EPS})")


@pytest.mark.parametrize("material", [M.WATER, M.MILK, M.JELLY, M.PLASTICINE, M.ICE_CREAM, M.RIGID_BODY], ids=str)
def test_material_gradients(runtime, material):
    sim = small_scene(material, colliders=[_moving_sphere()])
    inputs, loss = _setup(sim, steps=2)
    _directional_check(inputs, loss, ["x0", "v0", "params", "control"])


def test_each_material_parameter_gradient(runtime):
    """Every parameter column of an elastoplastic and a viscous fluid, one at a time."""
    for material in (M.PLASTICINE, M.ICE_CREAM, M.MILK):
        sim = small_scene(material, swirl=8.0)
        inputs, loss = _setup(sim, steps=2)
        params = inputs["params"]
        leaf = params.clone().requires_grad_(True)
        loss(inputs["x0"], inputs["v0"], leaf, inputs["control"]).backward()
        for column, name in enumerate(M.PARAM_NAMES):
            if float(params[..., column].abs().min()) == 0.0:
                continue  # a parameter the model does not use (fluid nu, plasticine viscosity)
            d = torch.zeros_like(params)
            d[..., column] = params[..., column].abs()
            ad = float((leaf.grad * d).sum())
            with torch.no_grad():
                fd = float(loss(inputs["x0"], inputs["v0"], params + EPS[0] * d, inputs["control"]))
                fd -= float(loss(inputs["x0"], inputs["v0"], params - EPS[0] * d, inputs["control"]))
                fd /= 2 * EPS[0]
            assert abs(ad - fd) <= ATOL + RTOL * abs(fd), f"{material.name}.{name}: ad={ad} fd={fd}"
            assert material.model == "fluid" or abs(fd) > 1e-9, f"{material.name}.{name} has no effect"
        if material.model == "fluid":
            assert float(leaf.grad[..., M.P_NU].abs().max()) == 0.0


@pytest.mark.parametrize("mode", ["sticky", "slip", "separate"])
def test_collider_control_gradient_per_contact_mode(runtime, mode):
    sim = small_scene(M.JELLY, colliders=[_moving_sphere(mode)])
    inputs, loss = _setup(sim, steps=2, seed=3)
    _directional_check(inputs, loss, ["control"])


@pytest.mark.parametrize("scatter", ["atomic", "slabs"])
def test_mixed_materials_and_box_collider_gradient(runtime, scatter):
    from engine import sampling
    from engine.config import SimConfig
    from engine.scene import SceneBuilder
    from engine.simulator import Simulator

    builder = SceneBuilder(SimConfig(grid_res=16, dt=5e-4, substeps=3))
    spacing = 1 / 40
    builder.add_particles(sampling.box((0.3, 0.3, 0.3), (0.45, 0.5, 0.45), spacing), M.WATER, spacing)
    builder.add_particles(sampling.box((0.5, 0.3, 0.3), (0.62, 0.5, 0.45), spacing), M.JELLY, spacing)
    box = geometry.Box((0.04, 0.15, 0.04))
    builder.add_collider(colliders.Collider(box, pose=(0.47, 0.4, 0.26, 0.98, 0.0, 0.2, 0.0)))
    sim = Simulator(builder.build(), batch_size=2, scatter=scatter)
    inputs, loss = _setup(sim, steps=2, seed=5)
    _directional_check(inputs, loss, ["x0", "params", "control"])


@pytest.mark.parametrize("scatter", ["atomic", "slabs"])
def test_gradcheck_autograd_bridge(runtime, scatter):
    sim = small_scene(M.JELLY, colliders=[_moving_sphere()], lo=(0.4, 0.4, 0.3), hi=(0.5, 0.5, 0.38), scatter=scatter)
    state = sim.initial_state()
    weights = torch.randn(sim.n_particles, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))

    def f(control, v_shift):
        s = state.clone()
        s.v = s.v + v_shift
        out = sim.rollout(s, control, record="all")
        return torch.stack([(out.x[-1, 0] * weights).sum(), out.v[0, 0].mean(), out.x[0, 0, :, 2].mean()])

    control = (0.2 * torch.randn(2, 1, 1, 6, dtype=torch.float64)).requires_grad_(True)
    v_shift = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(f, (control, v_shift), eps=1e-6, atol=1e-7, rtol=1e-4)


def test_checkpointed_equals_full_storage(runtime):
    sim = small_scene(M.PLASTICINE, colliders=[_moving_sphere()], substeps=2)
    inputs, _ = _setup(sim, steps=4)
    grads = []
    for every in (1, 3, 8):  # 8 = all substeps stored (no recomputation)
        leaves = {k: v.clone().requires_grad_(True) for k, v in inputs.items()}
        s = sim.initial_state()
        s.x, s.v = leaves["x0"], leaves["v0"]
        out = sim.rollout(s, leaves["control"], params=leaves["params"], record=(2, 4), checkpoint_every=every)
        (out.x.square().sum() + out.v.sum()).backward()
        grads.append([leaves[k].grad for k in inputs])
    for other in grads[:-1]:
        for g_ckpt, g_full in zip(other, grads[-1], strict=True):
            assert torch.allclose(g_ckpt, g_full, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize(
    ("material", "collider"), [(M.WATER, False), (M.PLASTICINE, True), (M.RIGID_BODY, True)], ids=str
)
@pytest.mark.parametrize("scatter", ["atomic", "slabs"])
def test_stored_grids_equal_recomputed_grids(runtime, material, collider, scatter):
    """The backward keeps the replayed substeps' grids up to grid_tape_mb and recomputes the
    rest; every split gives the same gradients, to the bit (without colliders or bodies the
    adjoint of a stored substep skips g2p, so that path is covered too)."""
    # The bottom layer starts 1e-5 m above the floor clamp (z = 3 dx) and moves down: the clamp's
    # adjoint reads the output velocity, which a stored substep takes from the tape.
    lo = (0.35, 0.35, 3 / 16 - 1 / 80 + 1e-5)
    sim = small_scene(
        material, colliders=[_moving_sphere()] if collider else [], substeps=2, scatter=scatter, lo=lo, swirl=-2.0
    )
    inputs, _ = _setup(sim, steps=4)
    two_substeps_mb = 2 * sim.kept_bytes() / 2**20
    grads = []
    for budget in (0.0, two_substeps_mb, 1024.0):  # none stored, 2 of every 3, all
        sim.grid_tape_mb = budget
        leaves = {k: v.clone().requires_grad_(True) for k, v in inputs.items()}
        s = sim.initial_state()
        s.x, s.v = leaves["x0"], leaves["v0"]
        out = sim.rollout(s, leaves["control"], params=leaves["params"], record=(2, 4), checkpoint_every=3)
        (out.x.square().sum() + out.v.sum()).backward()
        grads.append([leaves[k].grad for k in inputs])
    assert any(g is not None and g.abs().sum() > 0 for g in grads[0])
    for other in grads[1:]:
        for g_stored, g_recomputed in zip(other, grads[0], strict=True):
            assert (g_stored is None and g_recomputed is None) or torch.equal(g_stored, g_recomputed)


def test_backward_after_another_rollout(runtime):
    """The forward leaves its last checkpoint segment on the backward's tape; a backward that
    runs after another rollout has taken the tape replays that segment instead, to the same
    gradients (bit-identical: the kept segment is what the replay computes)."""
    sim = small_scene(M.WATER, colliders=[_moving_sphere()], substeps=2)
    inputs, loss = _setup(sim, steps=4)
    other = {k: v + 0.01 if k == "v0" else v for k, v in inputs.items()}

    def grads(interleave):
        leaves = {k: v.clone().requires_grad_(True) for k, v in inputs.items()}
        first = loss(**leaves)
        if interleave:
            second = loss(**{k: v.clone().requires_grad_(True) for k, v in other.items()})
        first.backward()
        if interleave:
            second.backward()
        return [leaves[k].grad for k in inputs]

    alone, interleaved = grads(False), grads(True)
    assert any(g.abs().sum() > 0 for g in alone)
    for a, b in zip(alone, interleaved, strict=True):
        assert torch.equal(a, b)


def test_gradients_without_parameter_gradient_are_the_same(runtime):
    """When params need no gradient the backward skips their reductions; nothing else changes."""
    sim = small_scene(M.MILK, colliders=[_moving_sphere()])
    inputs, loss = _setup(sim, steps=2)
    grads = []
    for params_grad in (True, False):
        leaves = {k: v.clone().requires_grad_(k != "params" or params_grad) for k, v in inputs.items()}
        loss(**leaves).backward()
        assert (leaves["params"].grad is not None) == params_grad
        grads.append([leaves[k].grad for k in ("x0", "v0", "control")])
    for with_params, without in zip(*grads, strict=True):
        assert torch.equal(with_params, without)


def test_rollout_without_grad_matches_fast_path(runtime):
    sim = small_scene(M.WATER, colliders=[_moving_sphere()])
    state = sim.initial_state()
    control = 0.3 * torch.ones(3, 1, 1, 6, dtype=torch.float64)
    out = sim.rollout(state, control, record="all")
    sim.reset(state)
    for t in range(3):
        sim.step(control[t])
        np.testing.assert_allclose(sim.positions().numpy(), out.x[t].numpy(), rtol=0, atol=1e-12)
