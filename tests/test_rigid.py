"""Free rigid bodies two-way coupled to MPM material (engine/solvers/rigid.py): momentum exchanged
exactly, no material inside a body, gradients against f64 finite differences, checkpointed equal
to full storage, the fast path equal to the rollout."""

import numpy as np
import pytest
import torch

SPACING = 1.0 / 32


def _scene(gravity=(0.0, 0.0, -9.8), water_velocity=(0.0, 0.0, 0.0), body_z=0.42, density=500.0):
    """A 16^3 grid: a water block below a 0.24 x 0.2 x 0.12 m box body."""
    from engine import geometry, sampling
    from engine.config import SimConfig
    from engine.materials import WATER
    from engine.scene import SceneBuilder
    from engine.simulator import Simulator
    from engine.solvers.rigid import RigidBody

    builder = SceneBuilder(SimConfig(grid_res=16, dt=1e-3, substeps=4, gravity=gravity))
    water = sampling.box((0.35, 0.35, 0.2), (0.65, 0.65, 0.35), SPACING)
    builder.add_particles(water, WATER, spacing=SPACING, velocity=water_velocity)
    body = RigidBody(geometry.Box((0.12, 0.1, 0.06)), density=density, pose=(0.5, 0.51, body_z, 1, 0, 0, 0))
    builder.add_rigid_body(body)
    return Simulator(builder.build())


def _momentum(sim, x_v, bodies):
    mass_p = torch.as_tensor(sim.model.particle_mass(), dtype=x_v.dtype)
    body_mass = torch.as_tensor(sim.rigid.unit_volume_np * np.array([b.density for b in sim.model.bodies]))
    return (mass_p[:, None] * x_v[0]).sum(0) + (body_mass[:, None] * bodies[0, :, 7:10]).sum(0)


def test_water_and_body_exchange_momentum_exactly(runtime):
    sim = _scene(gravity=(0.0, 0.0, 0.0), water_velocity=(0.0, 0.0, 1.5), body_z=0.45)
    state = sim.initial_state()
    p0 = _momentum(sim, state.v, state.bodies)
    out = sim.rollout(state, torch.zeros(6, 1, 0, 6, dtype=torch.float64), record="final")
    p1 = _momentum(sim, out.final.v, out.final.bodies)
    assert out.final.bodies[0, 0, 9] > 0.05, "the body felt nothing"
    torch.testing.assert_close(p1, p0, rtol=0, atol=1e-12 * float(p0.abs().max()))


def test_no_particle_inside_a_body(runtime):
    from engine.solvers.rigid import body_points_inside

    sim = _scene(body_z=0.40)
    out = sim.rollout(sim.initial_state(), torch.zeros(10, 1, 0, 6, dtype=torch.float64), record="all")
    body = sim.model.bodies[0]
    for t in range(out.x.shape[0]):
        d = body_points_inside(body, out.bodies[t, 0, 0, :7].numpy(), out.x[t, 0].numpy())
        assert d.min() > -1e-9, f"step {t + 1}: a particle {-d.min():.2e} m inside the body"
    assert out.bodies[-1, 0, 0, 2] < 0.40, "the body did not fall"


def test_fast_path_equals_rollout(runtime):
    sim = _scene(body_z=0.40)
    out = sim.rollout(sim.initial_state(), torch.zeros(3, 1, 0, 6, dtype=torch.float64), record="final")
    sim.reset()
    for _ in range(3):
        sim.step(torch.zeros(1, 0, 6, dtype=torch.float64))
    state = sim.get_state()
    torch.testing.assert_close(state.bodies, out.final.bodies, rtol=0, atol=1e-12)
    torch.testing.assert_close(state.x, out.final.x, rtol=0, atol=1e-12)


@pytest.mark.parametrize("checkpoint_every", [None, 1])
def test_rigid_gradients_match_finite_differences(runtime, checkpoint_every):
    sim = _scene(body_z=0.40)
    state = sim.initial_state()
    state.bodies[..., 7:10] = torch.tensor([0.2, -0.1, -0.5], dtype=torch.float64)
    state.bodies[..., 10:13] = torch.tensor([0.5, 1.0, -0.3], dtype=torch.float64)
    density = sim.default_body_params()

    def loss(bodies, v, dens):
        s = state.clone()
        s.bodies, s.v = bodies, v
        out = sim.rollout(
            s, torch.zeros(3, 1, 0, 6, dtype=torch.float64), record="all", body_params=dens,
            checkpoint_every=checkpoint_every,
        )  # fmt: skip
        b = out.bodies
        return b[-1, 0, 0, 2] + 0.3 * b[-1, 0, 0, 4] + 0.1 * b[1, 0, 0, 9] + 0.2 * out.x[-1, 0, :, 2].mean()

    bodies = state.bodies.clone().requires_grad_(True)
    v = state.v.clone().requires_grad_(True)
    dens = density.clone().requires_grad_(True)
    loss(bodies, v, dens).backward()
    checks = [
        (bodies, (0, 0, 2), 1e-6),  # initial height
        (bodies, (0, 0, 9), 1e-6),  # initial vertical velocity
        (bodies, (0, 0, 10), 1e-6),  # initial angular velocity
        (dens, (0, 0, 0), 1e-2),  # density
        (v, (0, 5, 2), 1e-5),  # a water particle's velocity
    ]
    for tensor, idx, eps in checks:
        args = [bodies.detach(), v.detach(), dens.detach()]
        k = next(j for j, t in enumerate((bodies, v, dens)) if t is tensor)
        plus, minus = args[k].clone(), args[k].clone()
        plus[idx] += eps
        minus[idx] -= eps
        with torch.no_grad():
            lp = loss(*[plus if j == k else a for j, a in enumerate(args)])
            lm = loss(*[minus if j == k else a for j, a in enumerate(args)])
        fd = float((lp - lm) / (2 * eps))
        ad = float(tensor.grad[idx])
        assert abs(ad - fd) <= 1e-7 + 1e-4 * abs(fd), f"{idx}: autodiff {ad:.8g} vs finite differences {fd:.8g}"


def test_density_matters_and_bodies_validate(runtime):
    from engine import geometry
    from engine.solvers.rigid import RigidBody

    with pytest.raises(ValueError, match="density"):
        RigidBody(geometry.Box((0.1, 0.1, 0.1)), density=-1.0)
    body = RigidBody(geometry.Box((0.05, 0.1, 0.2)), density=1.0, resolution=48)
    volume, com, inertia = body.mass_properties()
    assert volume == pytest.approx(0.1 * 0.2 * 0.4, rel=1e-2)  # smoothed occupancy on a 48^3 grid
    np.testing.assert_allclose(com, 0.0, atol=1e-9)
    expected = volume / 12 * np.array([0.2**2 + 0.4**2, 0.1**2 + 0.4**2, 0.1**2 + 0.2**2])
    np.testing.assert_allclose(np.diag(inertia), expected, rtol=1e-2)
    sim = _scene(body_z=0.40)
    with pytest.raises(ValueError, match="body_params"):
        sim.rollout(sim.initial_state(), torch.zeros(1, 1, 0, 6), body_params=torch.zeros(1, 1, 1))


def test_a_table_carries_a_body_and_a_tool_pushes_it(runtime):
    """A cube dropped on a static box (a table) comes to rest on it, the domain walls keep it in,
    and a box tool moving sideways pushes it along (frictionless contact)."""
    from engine import colliders, geometry, sampling
    from engine.config import SimConfig
    from engine.materials import WATER
    from engine.scene import SceneBuilder
    from engine.simulator import Simulator
    from engine.solvers.rigid import RigidBody

    builder = SceneBuilder(SimConfig(grid_res=16, dt=1e-3, substeps=10))
    builder.add_particles(sampling.box((0.2, 0.2, 0.2), (0.25, 0.25, 0.25), SPACING), WATER, SPACING)  # far away
    builder.add_collider(colliders.Collider(geometry.Box((0.3, 0.3, 0.05)), pose=(0.5, 0.5, 0.3, 1, 0, 0, 0)))
    builder.add_collider(colliders.Collider(geometry.Box((0.02, 0.1, 0.05)), pose=(0.35, 0.6, 0.42, 1, 0, 0, 0)))
    builder.add_rigid_body(RigidBody(geometry.Box((0.05, 0.05, 0.05)), density=500.0, pose=(0.45, 0.6, 0.45)
                                     + (1, 0, 0, 0)))  # fmt: skip
    sim = Simulator(builder.build())
    control = torch.zeros(40, 1, 2, 6, dtype=torch.float64)
    control[20:, 0, 1, 0] = 0.5  # the tool moves +x after the cube has landed
    out = sim.rollout(sim.initial_state(), control, record="all")
    z = out.bodies[:, 0, 0, 2]
    rest = 0.35 + 0.05  # table top + half edge
    assert abs(float(z[19]) - rest) < 0.01, f"resting height {float(z[19]):.4f}, expected {rest}"
    assert float(out.bodies[19, 0, 0, 0]) == pytest.approx(0.45, abs=1e-3), "it slid before being pushed"
    assert float(out.bodies[-1, 0, 0, 0]) > 0.45 + 0.05, "the tool did not push it"
    assert (z[20:] > rest - 0.01).all(), "it sank into the table while pushed"


def test_checkpointed_gradients_equal_full_storage(runtime):
    sim = _scene(body_z=0.40)
    state = sim.initial_state()
    state.bodies[..., 7:10] = torch.tensor([0.2, -0.1, -0.5], dtype=torch.float64)
    grads = []
    for every in (1, 3, 12):  # 3 steps x 4 substeps: every = 12 keeps every state
        bodies = state.bodies.clone().requires_grad_(True)
        dens = sim.default_body_params().requires_grad_(True)
        s = state.clone()
        s.bodies = bodies
        out = sim.rollout(s, torch.zeros(3, 1, 0, 6, dtype=torch.float64), body_params=dens, checkpoint_every=every)
        (out.bodies[-1, 0, 0, 2] + out.x[-1, 0, :, 2].mean()).backward()
        grads.append(torch.cat([bodies.grad.flatten(), dens.grad.flatten()]))
    for g in grads[:2]:
        torch.testing.assert_close(g, grads[2], rtol=0, atol=1e-10)


def _gel_and_body(free_gel: bool):
    """A 0.1 m domain without gravity: a small gel pad (facing -z) on a box mount just above a
    free rigid box, or (``free_gel``) the same gel unmounted, moving down onto the box."""
    from types import SimpleNamespace

    from engine import colliders, geometry, sampling
    from engine.config import SimConfig
    from engine.geometry.tetmesh import flat_pad
    from engine.materials import JELLY
    from engine.scene import SceneBuilder
    from engine.simulator import Simulator
    from engine.solvers.fem import Elastomer, PenaltyContact, Sensor
    from engine.solvers.rigid import RigidBody

    builder = SceneBuilder(SimConfig(domain_size=0.1, grid_res=16, dt=2e-5, substeps=4, gravity=(0.0, 0.0, 0.0)))
    builder.add_particles(sampling.box((0.02,) * 3, (0.024,) * 3, 0.002), JELLY, 0.002)  # far away
    mount = builder.add_collider(
        colliders.Collider(geometry.Box((0.008, 0.008, 0.002)), pose=(0.05, 0.05, 0.06, 1, 0, 0, 0))
    )
    mesh = flat_pad(width=0.012, length=0.012, thickness=0.004, nx=4, ny=4, nz=2)
    if free_gel:
        mesh = SimpleNamespace(
            nodes=mesh.nodes, tets=mesh.tets, surface_nodes=np.arange(len(mesh.nodes)), mount_nodes=np.zeros(0, int)
        )
    # Contact surface facing -z, 0.3 mm into the box's top (z = 0.05).
    offset = (0.0, 0.0, 0.0497 - 0.06, 0.0, 1.0, 0.0, 0.0)
    sensor = Sensor(mesh, mount=mount, offset=offset, material=Elastomer(E=1e5, nu=0.4),
                    contact=PenaltyContact(k_n=200.0, k_d=20.0, k_t=0.5, mu=0.5))  # fmt: skip
    builder.add_sensor(sensor)
    builder.add_rigid_body(RigidBody(geometry.Box((0.01, 0.01, 0.01)), density=1000.0, pose=(0.052, 0.05, 0.04)
                                     + (1, 0, 0, 0)))  # fmt: skip
    return Simulator(builder.build())


def test_sensor_and_body_exchange_momentum_exactly(runtime):
    from engine.solvers.fem import _node_volumes

    sim = _gel_and_body(free_gel=True)
    state = sim.initial_state()
    state.sensors.v[..., 2] = -0.3
    mass_n = torch.as_tensor(1100.0 * _node_volumes(sim.model.sensors[0].mesh))
    mass_b = float(sim.rigid.unit_volume_np[0] * 1000.0)

    def momentum(s_v, bodies):
        return (mass_n[:, None] * s_v[0]).sum(0) + mass_b * bodies[0, 0, 7:10]

    p0 = momentum(state.sensors.v, state.bodies)
    out = sim.rollout(state, torch.zeros(3, 1, 1, 6, dtype=torch.float64), record="final")
    assert out.final.bodies[0, 0, 9] < -1e-3, "the body felt nothing"
    torch.testing.assert_close(momentum(out.final.sensors.v, out.final.bodies), p0, rtol=0, atol=1e-12)


def test_sensor_pushing_a_body_gradients_match_finite_differences(runtime):
    sim = _gel_and_body(free_gel=False)
    control = torch.zeros(3, 1, 1, 6, dtype=torch.float64)
    control[:, 0, 0, 2] = -0.2
    control[:, 0, 0, 0] = 0.05

    def loss(c, dens):
        out = sim.rollout(sim.initial_state(), c, record="all", body_params=dens)
        return out.bodies[-1, 0, 0, 9] + 5.0 * out.bodies[-1, 0, 0, 11] + out.sensor_f[-1, 0, :, 2].sum()

    c = control.clone().requires_grad_(True)
    dens = sim.default_body_params().requires_grad_(True)
    loss(c, dens).backward()
    for tensor, base, idx, eps in ((c, control, (1, 0, 0, 2), 1e-4), (dens, dens.detach(), (0, 0, 0), 1.0)):
        plus, minus = base.clone(), base.clone()
        plus[idx] += eps
        minus[idx] -= eps
        with torch.no_grad():
            if tensor is c:
                fd = float((loss(plus, dens.detach()) - loss(minus, dens.detach())) / (2 * eps))
            else:
                fd = float((loss(control, plus) - loss(control, minus)) / (2 * eps))
        ad = float(tensor.grad[idx])
        assert ad != 0.0
        assert abs(ad - fd) <= 1e-8 + 1e-4 * abs(fd), f"{idx}: autodiff {ad:.8g} vs finite differences {fd:.8g}"
