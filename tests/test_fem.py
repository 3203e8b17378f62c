"""FEM elastomer sensors: finite-difference gradients (f64), invariants, contact laws, bad input.

Scenes are tiny (a 4x4x2-cell gel pad, 192 tets, on a box mount; a sphere indenter) so each
rollout is a few milliseconds after compilation.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.geometry.tetmesh import flat_pad

PAD = dict(width=0.012, length=0.012, thickness=0.004, nx=4, ny=4, nz=2)
MOUNT_TOP = 0.402  # world z of the mount box's top face (box centre 0.4, half height 0.002)


def _scene(
    indenter_gap=-0.0005,
    gravity=(0.0, 0.0, 0.0),
    dt=2e-5,
    substeps=4,
    batch_size=1,
    flat=False,
    indenter=None,
    **sensor_kw,
):
    """A pad glued on top of a box collider (collider 0) and an indenter (collider 1: a sphere,
    with ``flat`` a box wider than the pad, or the shape ``indenter`` turned upside down, its
    local z = 0 level as its lowest point) whose lowest point starts ``indenter_gap`` above the
    gel's surface (negative: already pressing)."""
    from engine import colliders, geometry, sampling
    from engine.config import SimConfig
    from engine.materials import WATER
    from engine.scene import SceneBuilder
    from engine.simulator import Simulator
    from engine.solvers.fem import Elastomer, PenaltyContact, Sensor

    builder = SceneBuilder(SimConfig(grid_res=16, dt=dt, substeps=substeps, gravity=gravity))
    builder.add_particles(sampling.box((0.2, 0.2, 0.2), (0.24, 0.24, 0.24), 0.02), WATER, 0.02)
    mount = builder.add_collider(
        colliders.Collider(geometry.Box((0.008, 0.008, 0.002)), pose=(0.5, 0.5, 0.4, 1, 0, 0, 0))
    )
    radius = 0.005
    top = MOUNT_TOP + PAD["thickness"]
    if indenter is not None:  # flipped: its solid side (local z < 0) faces down onto the gel
        builder.add_collider(colliders.Collider(indenter, pose=(0.5, 0.5, top + indenter_gap, 0, 1, 0, 0)))
    else:
        shape = geometry.Box((0.02, 0.02, radius)) if flat else geometry.Sphere(radius)
        builder.add_collider(colliders.Collider(shape, pose=(0.5, 0.5, top + radius + indenter_gap, 1, 0, 0, 0)))
    settings = dict(
        mesh=flat_pad(**PAD),
        offset=(0.0, 0.0, 0.002 + PAD["thickness"], 1.0, 0.0, 0.0, 0.0),  # gel on the box's top face
        material=Elastomer(E=1e5, nu=0.4, damping=5.0),
        contact=PenaltyContact(k_n=200.0, k_d=50.0),
    )
    settings.update(sensor_kw)
    builder.add_sensor(Sensor(mount=mount, **settings))
    return Simulator(builder.build(), batch_size=batch_size)


def _loss(sim, control, sensor_params, record=(2, 3), checkpoint_every=None):
    out = sim.rollout(
        sim.initial_state(), control, record=record, sensor_params=sensor_params, checkpoint_every=checkpoint_every
    )
    n = out.sensor_x.shape[2]
    w = torch.linspace(-1.0, 1.0, n, dtype=torch.float64)[None, None, :, None]
    return (w * out.sensor_x).sum() * 100.0 + out.sensor_f.sum() + (out.sensor_f**2).sum() * 10.0


def _control(T=3):
    control = torch.zeros(T, 1, 2, 6, dtype=torch.float64)
    control[:, 0, 1, 2] = -0.05  # indenter down
    control[:, 0, 1, 0] = 0.03  # and sideways (friction)
    control[:, 0, 0, 4] = 0.2  # mount tilts
    return control


def test_gradients_match_finite_differences(runtime):
    sim = _scene()
    control = _control().requires_grad_(True)
    params = sim.default_sensor_params().requires_grad_(True)
    _loss(sim, control, params).backward()

    def fd(tensor, index, h):
        plus, minus = tensor.detach().clone(), tensor.detach().clone()
        plus[index] += h
        minus[index] -= h
        if tensor is control:
            return (_loss(sim, plus, params.detach()) - _loss(sim, minus, params.detach())).item() / (2 * h)
        return (_loss(sim, control.detach(), plus) - _loss(sim, control.detach(), minus)).item() / (2 * h)

    checks = [(control, (1, 0, 1, 2), 1e-4), (control, (0, 0, 1, 0), 1e-4), (control, (2, 0, 0, 4), 1e-4)]
    scales = params.detach()[0, 0]
    checks += [(params, (0, 0, k), 1e-5 * float(scales[k])) for k in range(8)]
    for tensor, index, h in checks:
        ad = tensor.grad[index].item()
        num = fd(tensor, index, h)
        assert abs(ad - num) <= 1e-7 + 1e-4 * abs(num), (index, ad, num)
    assert abs(params.grad[0, 0, 4].item()) > 0, "k_n gradient vanished: the indenter does not touch the gel"


def test_checkpointed_equals_full_storage(runtime):
    sim = _scene()
    grads = []
    for every in (None, 1):
        control = _control(T=4).requires_grad_(True)
        params = sim.default_sensor_params().requires_grad_(True)
        _loss(sim, control, params, record=(1, 3, 4), checkpoint_every=every).backward()
        grads.append((control.grad, params.grad))
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_sensor_at_rest_stays_at_rest(runtime):
    sim = _scene(indenter_gap=0.01)
    sim.reset()
    x0 = sim.get_state().sensors.x
    for _ in range(20):
        sim.step(torch.zeros(1, 2, 6, dtype=torch.float64))
    state = sim.get_state()
    assert torch.allclose(state.sensors.x, x0, atol=1e-13)
    assert state.sensors.v.abs().max() < 1e-10
    assert state.sensors.f.abs().max() == 0.0


def test_free_elastomer_conserves_momentum(runtime):
    """A free gel block (no mount nodes), no gravity, nothing to touch, random initial
    velocities: the elastic forces are internal, so the total momentum stays constant."""
    from types import SimpleNamespace

    from engine.solvers.fem import _node_volumes

    pad = flat_pad(**PAD)
    free_block = SimpleNamespace(
        nodes=pad.nodes, tets=pad.tets, surface_nodes=pad.surface_nodes, mount_nodes=np.zeros(0, int)
    )
    sim = _scene(indenter_gap=0.02, mesh=free_block)
    state = sim.initial_state()
    rng = np.random.default_rng(0)
    state.sensors.v = torch.as_tensor(rng.normal(scale=0.05, size=state.sensors.v.shape))
    mass = 1100.0 * torch.as_tensor(_node_volumes(free_block))
    p0 = (mass[None, :, None] * state.sensors.v).sum(1)
    out = sim.rollout(state, torch.zeros(5, 1, 2, 6, dtype=torch.float64), record="final")
    p1 = (mass[None, :, None] * out.final.sensors.v).sum(1)
    torch.testing.assert_close(p1, p0 * (1 - 5.0 * sim.config.dt) ** (5 * sim.config.substeps), rtol=1e-9, atol=1e-15)
    assert not torch.allclose(out.final.sensors.x, state.sensors.x), "nodes did not move"


def test_friction_never_exceeds_coulomb_cone(runtime):
    """A flat indenter wider than the pad presses and slides: every node force lies inside the
    Coulomb cone about the indenter's normal (-z), and sliding reaches the cone."""
    sim = _scene(indenter_gap=-0.0005, flat=True)
    control = torch.zeros(6, 1, 2, 6, dtype=torch.float64)
    control[:, 0, 1, 0] = 0.2  # slide along x
    out = sim.rollout(sim.initial_state(), control, record="all")
    mu = sim.model.sensors[0].contact.mu
    fn = -out.sensor_f[..., 2]  # pressing the gel down
    ft = out.sensor_f[..., :2].norm(dim=-1)
    touching = out.sensor_f.norm(dim=-1) > 0
    assert touching.any()
    assert (fn[touching] > 0).all()
    assert (ft[touching] <= mu * fn[touching] * (1 + 1e-9) + 1e-15).all()
    assert (ft[touching] > 0.99 * mu * fn[touching]).any(), "sliding contact should reach the friction cone"


def test_bad_input_is_named(runtime):
    from engine.solvers.fem import Elastomer, PenaltyContact

    with pytest.raises(ValueError, match="E"):
        Elastomer(E=0.0)
    with pytest.raises(ValueError, match="nu"):
        Elastomer(nu=0.5)
    with pytest.raises(ValueError, match="k_n"):
        PenaltyContact(k_n=-1.0)
    with pytest.raises(ValueError, match="dt"):
        _scene(dt=1e-3)
    sim = _scene()
    bad = sim.default_sensor_params()
    bad[0, 0, 1] = 0.7
    with pytest.raises(ValueError, match="nu"):
        sim.rollout(sim.initial_state(), _control(), sensor_params=bad)


def test_blow_up_is_detected(runtime):
    from engine.state import SimulationDiverged

    sim = _scene(indenter_gap=0.02)
    state = sim.initial_state()
    state.sensors.v[:, 5] = 1e6
    with pytest.raises(SimulationDiverged):
        sim.rollout(state, torch.zeros(2, 1, 2, 6, dtype=torch.float64))


def _mpm_scene(free_gel=False):
    """A 0.1 m domain: a jelly cube (MPM) and a pad on a box mount pressing down into it from
    above (or, with ``free_gel``, a free gel block falling onto it), no gravity."""
    from types import SimpleNamespace

    from engine import colliders, geometry, sampling
    from engine.config import SimConfig
    from engine.materials import JELLY
    from engine.scene import SceneBuilder
    from engine.simulator import Simulator
    from engine.solvers.fem import Elastomer, PenaltyContact, Sensor

    builder = SceneBuilder(SimConfig(domain_size=0.1, grid_res=32, dt=2e-5, substeps=4, gravity=(0.0, 0.0, 0.0)))
    spacing = 0.1 / 64
    builder.add_particles(sampling.box((0.042, 0.042, 0.035), (0.058, 0.058, 0.047), spacing), JELLY, spacing)
    # The mount box sits 2 dx above the jelly's grid nodes, beyond the colliders' contact band
    # (engine/coupling/colliders.py), so only the gel touches the jelly.
    mount = builder.add_collider(
        colliders.Collider(geometry.Box((0.008, 0.008, 0.002)), pose=(0.05, 0.05, 0.058, 1, 0, 0, 0))
    )
    mesh = flat_pad(**PAD)
    if free_gel:
        mesh = SimpleNamespace(
            nodes=mesh.nodes, tets=mesh.tets, surface_nodes=np.arange(len(mesh.nodes)), mount_nodes=np.zeros(0, int)
        )
    sensor = Sensor(
        mesh,
        mount=mount,
        # Flipped (contact surface facing -z) below the box, 0.5 mm into the jelly's top (z = 0.047).
        offset=(0.0, 0.0, 0.0465 - 0.058, 0.0, 1.0, 0.0, 0.0),
        material=Elastomer(E=1e5, nu=0.4),
        contact=PenaltyContact(k_n=200.0, k_d=20.0, k_t=0.5, mu=0.5),
    )
    builder.add_sensor(sensor)
    return Simulator(builder.build(), batch_size=1)


def test_gel_and_mpm_exchange_momentum_exactly(runtime):
    from engine.solvers.fem import _node_volumes

    sim = _mpm_scene(free_gel=True)
    state = sim.initial_state()
    state.sensors.v[..., 2] = -0.3  # the gel moves into the jelly
    mass_p = torch.as_tensor(sim.model.particle_mass())
    mass_n = 1100.0 * torch.as_tensor(_node_volumes(sim.model.sensors[0].mesh))

    def momentum(x_v, s_v):
        return (mass_p[:, None] * x_v[0]).sum(0) + (mass_n[:, None] * s_v[0]).sum(0)

    p0 = momentum(state.v, state.sensors.v)
    out = sim.rollout(state, torch.zeros(3, 1, 1, 6, dtype=torch.float64), record="final")
    assert out.sensor_f.abs().max() > 0, "no contact"
    p1 = momentum(out.final.v, out.final.sensors.v)
    torch.testing.assert_close(p1, p0, rtol=0, atol=1e-12 * float(p0.abs().max()))
    assert not torch.allclose(out.final.v, state.v), "the jelly felt nothing"


def test_gel_mpm_gradients_match_finite_differences(runtime):
    sim = _mpm_scene()
    control = torch.zeros(2, 1, 1, 6, dtype=torch.float64)
    control[:, 0, 0, 2] = -0.1
    control[:, 0, 0, 0] = 0.05
    control.requires_grad_(True)
    params = sim.default_sensor_params().requires_grad_(True)
    mpm_params = sim.default_params().requires_grad_(True)

    def loss(c, p, q):
        out = sim.rollout(sim.initial_state(), c, params=q, sensor_params=p, record="all")
        return out.sensor_f.sum() + 10.0 * out.x[-1, ..., 0].mean() + (out.sensor_x[-1] ** 2).sum()

    loss(control, params, mpm_params).backward()
    checks = [
        (control, (0, 0, 0, 2), 1e-4, 0),
        (control, (1, 0, 0, 0), 1e-4, 0),
        (params, (0, 0, 4), 1e-3, 1),
        (params, (0, 0, 7), 1e-5, 1),
        (mpm_params, (0, 0, 0), 1.0, 2),
    ]
    for tensor, index, h, which in checks:
        args = [control.detach(), params.detach(), mpm_params.detach()]
        plus, minus = [a.clone() for a in args], [a.clone() for a in args]
        plus[which][index] += h
        minus[which][index] -= h
        num = (loss(*plus) - loss(*minus)).item() / (2 * h)
        ad = tensor.grad[index].item()
        assert abs(ad - num) <= 1e-8 + 1e-4 * abs(num), (index, ad, num)
    assert abs(params.grad[0, 0, 4].item()) > 0


def test_tactile_signals_from_a_rollout(runtime):
    """A sphere pressed into the pad: the tactile view of the rollout shows an imprint whose net
    normal force equals the contact forces' sum, and whose depth peaks under the sphere;
    gradients reach the control through the tactile image."""
    from engine.tactile import PinholeCamera, TactileSensorView

    sim = _scene(indenter_gap=-0.0003)
    mesh = sim.model.sensors[0].mesh
    rest = torch.as_tensor(mesh.nodes[mesh.surface_nodes])
    view = TactileSensorView(
        rest, torch.tensor(np.array(mesh.surface_tris)), PinholeCamera.from_fov(32, 32, 70.0, position=(0, 0, -0.012))
    )
    control = torch.zeros(3, 1, 2, 6, dtype=torch.float64)
    control[:, 0, 1, 2] = -0.05
    control.requires_grad_(True)
    out = sim.rollout(sim.initial_state(), control, record="all")
    x, f = sim.fem.to_sensor_frame(0, out.sensor_x[-1], out.sensor_f[-1], out.collider_pose[-1])
    torch.testing.assert_close(x[0, :, 2].max(), torch.tensor(0.0, dtype=torch.float64), atol=1e-3, rtol=0)
    signals = view.signals(x, f)
    torch.testing.assert_close(signals["net_wrench"][0, 2], f[0, :, 2].sum())
    assert signals["net_wrench"][0, 2] < 0, "the sphere presses the gel toward -z of the sensor"
    assert signals["depth"].max() > 0
    signals["image"].sum().backward()
    assert control.grad[:, 0, 1, 2].abs().sum() > 0


def test_long_press_gradient_stays_bounded(runtime):
    """A fine pad (1 mm tets, light surface nodes) pressed for 160 substeps: the adjoint stays
    bounded (an explicit step whose contact damping or friction exceeds 2 m / dt amplifies the
    adjoint by |1 - dt c / m| per substep, to 1e27 here, while the forward looks stable)."""
    fine = dict(width=0.012, length=0.012, thickness=0.004, nx=12, ny=12, nz=4)
    from engine.solvers.fem import PenaltyContact

    stiff_viscous = PenaltyContact(k_n=300.0, k_d=5e3, k_t=1.0)  # far above 2 m / dt for these nodes
    sim = _scene(indenter_gap=0.0, dt=1e-5, substeps=20, mesh=flat_pad(**fine), contact=stiff_viscous)
    control = torch.zeros(8, 1, 2, 6, dtype=torch.float64)
    control[:, 0, 1, 2] = -0.1
    control[:, 0, 1, 0] = 0.02
    control.requires_grad_(True)
    out = sim.rollout(sim.initial_state(), control, record="final")
    out.sensor_f[-1].sum().backward()
    assert out.sensor_f.abs().sum() > 0
    assert torch.isfinite(control.grad).all() and control.grad.abs().max() < 1e3


def _pinch_scene(free=False, gap=0.0002):
    """Two pads facing each other (a lower one facing +z, an upper one flipped to face -z) on two
    box mounts, their surfaces ``gap`` apart; with ``free`` the gels have no mount nodes."""
    from types import SimpleNamespace

    from engine import colliders, geometry, sampling
    from engine.config import SimConfig
    from engine.materials import JELLY
    from engine.scene import SceneBuilder
    from engine.simulator import Simulator
    from engine.solvers.fem import Elastomer, PenaltyContact, Sensor

    builder = SceneBuilder(SimConfig(domain_size=0.1, grid_res=32, dt=2e-5, substeps=4, gravity=(0.0, 0.0, 0.0)))
    spacing = 0.1 / 64
    builder.add_particles(sampling.box((0.02, 0.02, 0.02), (0.024, 0.024, 0.024), spacing), JELLY, spacing)
    t = PAD["thickness"]
    lower = builder.add_collider(
        colliders.Collider(geometry.Box((0.007, 0.007, 0.002)), pose=(0.05, 0.05, 0.04, 1, 0, 0, 0))
    )
    top = 0.04 + 0.002 + t  # the lower gel's surface
    upper = builder.add_collider(
        colliders.Collider(geometry.Box((0.007, 0.007, 0.002)), pose=(0.05, 0.05, top + gap + t + 0.002, 1, 0, 0, 0))
    )
    pad = flat_pad(**PAD)
    if free:
        pad = SimpleNamespace(
            nodes=pad.nodes, tets=pad.tets, surface_nodes=pad.surface_nodes, surface_tris=pad.surface_tris,
            mount_nodes=np.zeros(0, int),
        )  # fmt: skip
    kw = dict(material=Elastomer(E=1e5, nu=0.4), contact=PenaltyContact(k_n=200.0, k_d=20.0, k_t=0.5, mu=0.5))
    builder.add_sensor(Sensor(pad, mount=lower, offset=(0, 0, 0.002 + t, 1, 0, 0, 0), name="lower", **kw))
    builder.add_sensor(Sensor(pad, mount=upper, offset=(0, 0, -0.002 - t, 0, 1, 0, 0), name="upper", **kw))
    return Simulator(builder.build(), batch_size=1)


def test_two_gels_exchange_momentum_exactly(runtime):
    from engine.solvers.fem import _node_volumes

    sim = _pinch_scene(free=True, gap=-0.0001)
    state = sim.initial_state()
    n = state.sensors.x.shape[1] // 2
    state.sensors.v[:, :n, 2] = 0.2  # the gels move toward each other, the lower one slanted
    state.sensors.v[:, :n, 0] = 0.05
    state.sensors.v[:, n:, 2] = -0.1
    mass = 1100.0 * torch.as_tensor(np.concatenate([_node_volumes(s.mesh) for s in sim.model.sensors]))
    p0 = (mass[:, None] * state.sensors.v[0]).sum(0)
    out = sim.rollout(state, torch.zeros(3, 1, 2, 6, dtype=torch.float64), record="all")
    assert out.sensor_f.abs().max() > 0, "the gels never touched"
    p1 = (mass[:, None] * out.final.sensors.v[0]).sum(0)
    torch.testing.assert_close(p1, p0, rtol=0, atol=1e-12 * float(p0.abs().max()))


def test_pinch_gradients_match_finite_differences(runtime):
    sim = _pinch_scene(gap=-0.0002)
    control = torch.zeros(2, 1, 2, 6, dtype=torch.float64)
    control[:, 0, 1, 2] = -0.1  # the upper finger presses
    control[:, 0, 1, 0] = 0.05  # and slides
    control.requires_grad_(True)
    params = sim.default_sensor_params().requires_grad_(True)

    def loss(c, p):
        out = sim.rollout(sim.initial_state(), c, sensor_params=p, record="all")
        n = out.sensor_x.shape[2]
        w = torch.linspace(-1.0, 1.0, n, dtype=torch.float64)[None, None, :, None]
        return out.sensor_f.sum() + (out.sensor_f**2).sum() * 10.0 + 100.0 * (w * out.sensor_x).sum()

    loss(control, params).backward()
    for tensor, index, h in [(control, (0, 0, 1, 2), 1e-5), (control, (1, 0, 1, 0), 1e-5), (params, (0, 1, 4), 1e-3)]:
        args = [control.detach(), params.detach()]
        which = 0 if tensor is control else 1
        plus, minus = [a.clone() for a in args], [a.clone() for a in args]
        plus[which][index] += h
        minus[which][index] -= h
        num = (loss(*plus) - loss(*minus)).item() / (2 * h)
        ad = tensor.grad[index].item()
        assert abs(ad - num) <= 1e-8 + 1e-4 * abs(num), (index, ad, num)
    assert params.grad[0, 1, 4].abs() > 0, "k_n of the upper gel has no effect: no gel-gel contact"


def test_dome_presses_a_plane_and_stays_within_the_penetration_tolerance(runtime):
    """DiffTactile's dome (coarse variant), mounted on a small box and pushed onto a plane: the
    plane pushes back along +z, the fisheye tactile view shows the imprint, and no surface
    node sinks into the plane deeper than the penalty's documented equilibrium depth
    (node force / k_n) plus what one substep can add."""
    from engine import colliders, geometry, sampling
    from engine.config import SimConfig
    from engine.geometry.tetmesh import dome
    from engine.materials import JELLY
    from engine.scene import SceneBuilder
    from engine.simulator import Simulator
    from engine.solvers.fem import Elastomer, Sensor
    from engine.tactile import FisheyeCamera, TactileSensorView

    builder = SceneBuilder(SimConfig(domain_size=0.1, grid_res=32, dt=2e-5, substeps=10, gravity=(0.0, 0.0, 0.0)))
    spacing = 0.1 / 64
    builder.add_particles(sampling.box((0.02, 0.02, 0.02), (0.024, 0.024, 0.024), spacing), JELLY, spacing)
    holder = builder.add_collider(
        colliders.Collider(geometry.Box((0.004, 0.004, 0.004)), pose=(0.05, 0.05, 0.06, 1, 0, 0, 0))
    )
    floor_z = 0.06 - 0.015 + 0.0003  # the dome's pole (15 mm below the holder, facing down) 0.3 mm into the plane
    builder.add_collider(colliders.Collider(geometry.Plane(), pose=(0.05, 0.05, floor_z, 1, 0, 0, 0)))
    mesh = dome(rings=8)
    builder.add_sensor(
        Sensor(mesh, mount=holder, offset=(0, 0, 0, 0, 1, 0, 0), material=Elastomer(E=2e5, nu=0.45, damping=20.0))
    )
    sim = Simulator(builder.build())
    control = torch.zeros(6, 1, 2, 6, dtype=torch.float64)
    control[:, 0, 0, 2] = -0.05
    out = sim.rollout(sim.initial_state(), control, record="all")
    force = out.sensor_f[-1, 0].sum(0)
    assert force[2] > 0 and force[2].abs() > 10 * force[:2].abs().max()
    depth = (floor_z - out.sensor_x[-1, 0, :, 2]).clamp(min=0)
    k_n = sim.model.sensors[0].contact.k_n
    node_load = out.sensor_f[-1, 0].norm(dim=-1)
    speed = out.final.sensors.v[0].norm(dim=-1)
    assert (depth <= node_load / k_n + speed * sim.config.dt + 1e-9).all()
    assert depth.max() < 1e-3
    rest = torch.tensor(np.array(mesh.nodes[mesh.surface_nodes]))
    view = TactileSensorView(rest, torch.tensor(np.array(mesh.surface_tris)), FisheyeCamera.from_fov(32, 32, 160.0))
    x, f = sim.fem.to_sensor_frame(0, out.sensor_x[-1], out.sensor_f[-1], out.collider_pose[-1])
    assert view.signals(x, f)["depth"].max() > 0


def test_pad_on_a_textured_mesh_surface_feels_the_texture(runtime):
    """A voxel-SDF (MESH kind) surface with ridges (6 mm period, 0.3 mm amplitude) pressed onto
    the pad: the contact forces follow the ridges (nodes under crests carry more than nodes
    under troughs), which a flat plane pressed the same way does not."""
    from engine import geometry

    res, voxel = 24, 0.001
    g = -0.012 + voxel * np.arange(res)
    X, _, Z = np.meshgrid(g, g, g, indexing="ij")
    ridges = geometry.Mesh(Z - 0.0003 * np.cos(2 * np.pi * X / 0.006), (-0.012,) * 3, voxel, source="ridges")
    surf = np.array(flat_pad(**PAD).surface_nodes)
    forces = {}
    for name, shape in (("ridges", ridges), ("plane", geometry.Plane())):
        sim = _scene(indenter_gap=-0.0002, indenter=shape)
        out = sim.rollout(sim.initial_state(), torch.zeros(4, 1, 2, 6, dtype=torch.float64), record="final")
        forces[name] = -out.sensor_f[-1, 0, surf, 2]  # pressing the gel down
        x = out.sensor_x[-1, 0, surf, 0] - 0.5
    phase = torch.cos(2 * np.pi * x / 0.006)
    crest, trough = phase > 0.7, phase < -0.7
    assert crest.any() and trough.any()
    assert forces["ridges"][crest].mean() > 1.5 * forces["ridges"][trough].mean()
    assert forces["plane"].std() < 0.5 * forces["ridges"].std()


def test_rollout_bridge_passes_gradcheck(runtime):
    """torch.autograd.gradcheck on the rollout bridge with sensors: sensor parameters (E, nu,
    k_n, mu of the pad) and the indenter's control -> recorded sensor forces and positions."""
    sim = _scene(substeps=2)
    base = sim.default_sensor_params()
    chosen = [0, 1, 4, 7]
    scale = base[0, 0, chosen].clone()

    def f(rel_params, control):
        params = base.clone()
        params[0, 0, chosen] = scale * rel_params
        out = sim.rollout(sim.initial_state(), control, sensor_params=params, record="all")
        return out.sensor_f[..., 2].sum(-1), out.sensor_x[-1, 0, :5, 2]

    rel = torch.ones(4, dtype=torch.float64, requires_grad=True)
    control = (_control(T=2) * 0.5).requires_grad_(True)
    assert torch.autograd.gradcheck(f, (rel, control), eps=1e-6, atol=1e-7, rtol=1e-4)


def test_sensor_params_outside_the_stable_step_are_refused(runtime):
    """Parameters given to a rollout are checked like the scene's own: a stiffer gel, a stiffer
    contact or a heavier damping than the substep allows is an error naming the numbers."""
    sim = _scene()
    for column, value in ((0, 5e7), (4, 1e6), (3, 1e6)):
        bad = sim.default_sensor_params()
        bad[0, 0, column] = value
        with pytest.raises(ValueError, match=r"sensor_params\[0, 0\].*dt="):
            sim.rollout(sim.initial_state(), _control(), sensor_params=bad)


@pytest.mark.parametrize("scene", ["pad", "pinch", "mpm"])
def test_kept_forces_equal_recomputed_forces(runtime, scene):
    """The backward keeps each replayed substep's FEM forces (and grids) up to grid_tape_mb and
    recomputes the rest: both give the same gradients (sensor pairs rerun their contact stage
    either way)."""
    sim = {"pad": _scene, "pinch": _pinch_scene, "mpm": _mpm_scene}[scene]()
    K = sim.n_colliders
    control = torch.zeros(3, 1, K, 6, dtype=torch.float64)
    control[:, 0, K - 1, 2] = -0.05
    control[:, 0, K - 1, 0] = 0.02
    grads = []
    for budget in (0.0, 1024.0):
        sim.grid_tape_mb = budget
        c = control.clone().requires_grad_(True)
        p = sim.default_sensor_params().requires_grad_(True)
        out = sim.rollout(sim.initial_state(), c, sensor_params=p, record="all", checkpoint_every=4)
        (out.sensor_f.sum() + (out.sensor_x**2).sum() + out.x.sum()).backward()
        grads.append((c.grad, p.grad))
    assert grads[0][0].abs().sum() > 0
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-14)
