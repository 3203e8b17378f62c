"""Tests of engine.geometry and engine.colliders: SDF values, normals, Taichi/numpy agreement,
the kind dispatch, autodiff, mesh SDFs against analytic shapes, validation, packing and torch
pose integration.

Taichi tests use the session ``runtime`` fixture (f64, CPU by default). Gradients are checked
against central finite differences with ``|ad - fd| <= atol + rtol |fd|``.
"""

import math

import numpy as np
import pytest
import taichi as ti
import torch
import trimesh

from engine import colliders as C
from engine import geometry as G

RTOL = 1e-4
ATOL = 1e-6


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------


@ti.kernel
def _eval_kernel(
    kind: ti.i32,
    params: ti.types.ndarray(ndim=2),
    poses: ti.types.ndarray(ndim=2),
    points: ti.types.ndarray(ndim=2),
    mesh_sdf: ti.types.ndarray(ndim=1),
    out: ti.types.ndarray(ndim=2),
):
    for i in range(points.shape[0]):
        shape = G.gather_shape(params, 0)
        pos = ti.math.vec3(poses[i, 0], poses[i, 1], poses[i, 2])
        quat = ti.math.vec4(poses[i, 3], poses[i, 4], poses[i, 5], poses[i, 6])
        p = ti.math.vec3(points[i, 0], points[i, 1], points[i, 2])
        r = G.sdf_world(kind, shape, pos, quat, p, mesh_sdf)
        for j in ti.static(range(4)):
            out[i, j] = r[j]


@ti.kernel
def _loss_kernel(
    kind: ti.i32,
    params: ti.types.ndarray(ndim=2),
    pose: ti.types.ndarray(ndim=1),
    points: ti.types.ndarray(ndim=2),
    weights: ti.types.ndarray(ndim=2),
    mesh_sdf: ti.types.ndarray(ndim=1),
    loss: ti.types.ndarray(ndim=1),
):
    for i in range(points.shape[0]):
        shape = G.gather_shape(params, 0)
        pos = ti.math.vec3(pose[0], pose[1], pose[2])
        quat = ti.math.vec4(pose[3], pose[4], pose[5], pose[6])
        p = ti.math.vec3(points[i, 0], points[i, 1], points[i, 2])
        r = G.sdf_world(kind, shape, pos, quat, p, mesh_sdf)
        w = ti.math.vec3(weights[i, 0], weights[i, 1], weights[i, 2])
        loss[0] += r[0] + w.dot(ti.math.vec3(r[1], r[2], r[3]))


@ti.kernel
def _eval_static_kernel(
    kind: ti.template(),
    params: ti.types.ndarray(ndim=2),
    poses: ti.types.ndarray(ndim=2),
    points: ti.types.ndarray(ndim=2),
    mesh_sdf: ti.types.ndarray(ndim=1),
    out: ti.types.ndarray(ndim=2),
):
    """``_eval_kernel`` with the kind fixed at compile time (only that shape's code)."""
    for i in range(points.shape[0]):
        shape = G.gather_shape(params, 0)
        pos = ti.math.vec3(poses[i, 0], poses[i, 1], poses[i, 2])
        quat = ti.math.vec4(poses[i, 3], poses[i, 4], poses[i, 5], poses[i, 6])
        p = ti.math.vec3(points[i, 0], points[i, 1], points[i, 2])
        r = G.sdf_world(kind, shape, pos, quat, p, mesh_sdf)
        for j in ti.static(range(4)):
            out[i, j] = r[j]


def _ti_eval(shape, poses, points, mesh_sdf, params=None):
    """Taichi sdf_world at points (N, 3) with per-point poses (N, 7) -> (N, 4)."""
    if params is None:
        params = shape.params()
    out = np.zeros((len(points), 4))
    _eval_kernel(
        shape.kind,
        np.ascontiguousarray(params.reshape(1, -1)),
        np.ascontiguousarray(poses, dtype=np.float64),
        np.ascontiguousarray(points, dtype=np.float64),
        mesh_sdf,
        out,
    )
    return out


def _random_pose(rng):
    q = rng.normal(size=4)
    q /= np.linalg.norm(q)
    return np.concatenate([rng.normal(scale=0.1, size=3), q])


def _centre_and_extent(shape):
    """A box around the shape in its local frame: (centre (3,), half size)."""
    if isinstance(shape, G.Plane):
        return np.zeros(3), 0.5
    if isinstance(shape, G.Box):
        return np.zeros(3), 1.5 * max(shape.half_extents)
    if isinstance(shape, G.Sphere):
        return np.zeros(3), 1.5 * shape.radius
    if isinstance(shape, G.Capsule):
        return np.zeros(3), 1.5 * (shape.radius + shape.half_length)
    if isinstance(shape, G.Cylinder):
        return np.zeros(3), 1.5 * max(shape.radius, shape.half_height)
    if isinstance(shape, G.Cup):
        return np.array([0.0, 0.0, 0.5 * shape.height]), 1.3 * max(shape.radius, shape.height)
    if isinstance(shape, G.Bowl):
        return np.zeros(3), 1.3 * shape.radius
    if isinstance(shape, G.Mesh):
        lo = np.asarray(shape.lo)
        half = 0.5 * (shape.resolution - 1) * shape.voxel_size
        return lo + half, 1.3 * half
    raise AssertionError(shape)


def _local_points(shape, n, rng):
    centre, half = _centre_and_extent(shape)
    return centre + rng.uniform(-half, half, size=(n, 3))


def _smooth_mask(shape, points_local, h=1e-5, tol=2e-4, with_normal=True):
    """Points where d (and n) have matching one-sided differences along every axis (no kink)."""
    ok = np.ones(len(points_local), dtype=bool)
    cols = 4 if with_normal else 1

    def f(p):
        d, n = shape.sdf(p)
        return np.column_stack([d, n])[:, :cols]

    f0 = f(points_local)
    for a in range(3):
        e = np.zeros(3)
        e[a] = h
        fwd = (f(points_local + e) - f0) / h
        bwd = (f0 - f(points_local - e)) / h
        ok &= np.all(np.abs(fwd - bwd) < tol, axis=1)
    return ok


@pytest.fixture(scope="module")
def sphere_mesh():
    tm = trimesh.creation.icosphere(subdivisions=2, radius=0.3)
    return G.Mesh.from_trimesh(tm, resolution=20, padding=3)


@pytest.fixture(scope="module")
def all_shapes(sphere_mesh):
    return [
        G.Plane(),
        G.Box((0.3, 0.2, 0.1)),
        G.Sphere(0.25),
        G.Capsule(0.1, 0.2),
        G.Cylinder(0.2, 0.15),
        G.Cup(0.3, 0.4, 0.05),
        G.Bowl(0.3, 0.06),
        sphere_mesh,
    ]


KIND_NAMES = ["Plane", "Box", "Sphere", "Capsule", "Cylinder", "Cup", "Bowl", "Mesh"]


@pytest.fixture(params=range(len(KIND_NAMES)), ids=KIND_NAMES)
def shape_and_sdf(request, all_shapes):
    mesh_sdf, params = G.pack_mesh_sdfs(all_shapes)
    i = request.param
    return all_shapes[i], params[i], mesh_sdf


# ---------------------------------------------------------------------------------------------
# numpy mirror: known values and normals
# ---------------------------------------------------------------------------------------------


def _check(shape, point, d_expected, n_expected=None):
    d, n = shape.sdf(np.array([point], dtype=np.float64))
    assert d[0] == pytest.approx(d_expected, abs=1e-12)
    if n_expected is not None:
        np.testing.assert_allclose(n[0], n_expected, atol=1e-12)


def test_kind_ids_and_params_length(all_shapes):
    assert [s.kind for s in all_shapes] == list(range(8))
    assert (G.PLANE, G.BOX, G.SPHERE, G.CAPSULE) == (0, 1, 2, 3)
    assert (G.CYLINDER, G.CUP, G.BOWL, G.MESH, G.SHAPE_DIM) == (4, 5, 6, 7, 8)
    for s in all_shapes:
        p = s.params()
        assert p.shape == (G.SHAPE_DIM,) and p.dtype == np.float64


def test_known_values_primitives():
    _check(G.Plane(), (0.3, -1.0, -0.2), -0.2, (0, 0, 1))
    sph = G.Sphere(0.3)
    _check(sph, (0, 0, 0), -0.3)
    _check(sph, (0, 0.5, 0), 0.2, (0, 1, 0))
    box = G.Box((0.3, 0.2, 0.1))
    _check(box, (0, 0, 0), -0.1, (0, 0, 1))
    _check(box, (0.5, 0, 0), 0.2, (1, 0, 0))
    _check(box, (-0.29, 0.0, 0.0), -0.01, (-1, 0, 0))
    _check(box, (0.33, 0.24, 0.1), 0.05, (0.6, 0.8, 0))  # off a corner edge
    _check(box, (-0.33, -0.24, -0.1), 0.05, (-0.6, -0.8, 0))
    cap = G.Capsule(0.1, 0.2)
    _check(cap, (0, 0, 0.35), 0.05, (0, 0, 1))
    _check(cap, (0, 0.1, 0.1), 0.0, (0, 1, 0))
    _check(cap, (0, 0, 0), -0.1)
    cyl = G.Cylinder(0.2, 0.15)
    _check(cyl, (0, 0, 0), -0.15, (0, 0, 1))
    _check(cyl, (0.3, 0, 0), 0.1, (1, 0, 0))
    _check(cyl, (0.3, 0, -0.25), math.sqrt(0.02), (math.sqrt(0.5), 0, -math.sqrt(0.5)))
    _check(cyl, (0, 0.19, 0), -0.01, (0, 1, 0))


def test_known_values_cup():
    cup = G.Cup(0.3, 0.4, 0.05)
    _check(cup, (0, 0, 0.2), 0.15, (0, 0, 1))  # cavity: free space above the inner bottom
    _check(cup, (0.2, 0, 0.3), 0.05, (-1, 0, 0))  # cavity near the inner wall
    _check(cup, (0.28, 0, 0.2), -0.02, (1, 0, 0))  # inside the side wall
    _check(cup, (0, 0.1, 0.02), -0.02, (0, 0, -1))  # inside the bottom
    _check(cup, (0, 0, -0.1), 0.1, (0, 0, -1))  # below
    _check(cup, (0.5, 0, 0.2), 0.2, (1, 0, 0))  # beside
    _check(cup, (0.0, 0.0, 0.5), math.hypot(0.25, 0.1))  # above the opening: nearest is the rim
    _check(cup, (0.275, 0, 0.45), 0.05, (0, 0, 1))  # above the rim


def test_known_values_bowl():
    bowl = G.Bowl(0.3, 0.05)
    _check(bowl, (0, 0, 0), 0.25)  # cavity
    _check(bowl, (0, 0, -0.1), 0.15, (0, 0, 1))
    _check(bowl, (0, 0, -0.27), -0.02, (0, 0, 1))  # inside the shell, nearer the inner face
    _check(bowl, (0, 0, -0.4), 0.1, (0, 0, -1))  # below
    _check(bowl, (0.275, 0, 0.1), 0.1, (0, 0, 1))  # above the rim
    _check(bowl, (0, 0, 0.1), math.hypot(0.25, 0.1))  # above the opening
    _check(bowl, (0.28, 0, -0.005), -0.005, (0, 0, 1))  # just under the rim plane


def test_normals_are_unit_and_match_fd_gradient(all_shapes):
    rng = np.random.default_rng(1)
    h = 1e-6
    for shape in all_shapes:
        p = _local_points(shape, 400, rng)
        d, n = shape.sdf(p)
        np.testing.assert_allclose(np.linalg.norm(n, axis=1), 1.0, atol=1e-12)
        ok = _smooth_mask(shape, p, with_normal=False)
        assert ok.mean() > 0.8, type(shape).__name__
        fd = np.zeros_like(p)
        for a in range(3):
            e = np.zeros(3)
            e[a] = h
            fd[:, a] = (shape.sdf(p + e)[0] - shape.sdf(p - e)[0]) / (2 * h)
        fd_norm = np.linalg.norm(fd, axis=1, keepdims=True)
        if not isinstance(shape, G.Mesh):
            # Exact distance fields have unit gradient; the mesh's trilinear one only nearly.
            np.testing.assert_allclose(fd_norm[ok], 1.0, atol=1e-4)
        err = np.abs(fd[ok] / fd_norm[ok] - n[ok]).max()
        assert err < 1e-4, (type(shape).__name__, err)


def test_sdf_is_signed_correctly_inside_solids():
    rng = np.random.default_rng(2)
    # Points sampled inside each primitive by rejection must have d <= 0, outside d >= 0.
    box = G.Box((0.3, 0.2, 0.1))
    p = rng.uniform(-0.4, 0.4, size=(2000, 3))
    inside = np.all(np.abs(p) <= [0.3, 0.2, 0.1], axis=1)
    d, _ = box.sdf(p)
    assert np.all(d[inside] <= 0) and np.all(d[~inside] >= 0)
    cup = G.Cup(0.3, 0.4, 0.05)
    p = rng.uniform([-0.4, -0.4, -0.1], [0.4, 0.4, 0.5], size=(4000, 3))
    rho = np.hypot(p[:, 0], p[:, 1])
    z = p[:, 2]
    solid = (rho <= 0.3) & (z >= 0) & ((z <= 0.05) | ((rho >= 0.25) & (z <= 0.4)))
    d, _ = cup.sdf(p)
    assert np.all(d[solid] <= 0) and np.all(d[~solid] >= 0)
    bowl = G.Bowl(0.3, 0.05)
    p = rng.uniform(-0.4, 0.4, size=(4000, 3))
    r = np.linalg.norm(p, axis=1)
    solid = (r >= 0.25) & (r <= 0.3) & (p[:, 2] <= 0)
    d, _ = bowl.sdf(p)
    assert np.all(d[solid] <= 0) and np.all(d[~solid] >= 0)


# ---------------------------------------------------------------------------------------------
# Taichi: mirror agreement and reverse-mode gradients
# ---------------------------------------------------------------------------------------------


def test_taichi_matches_numpy_mirror(runtime, shape_and_sdf):
    shape, params, mesh_sdf = shape_and_sdf
    rng = np.random.default_rng(3 + shape.kind)
    for _ in range(2):
        pose = _random_pose(rng)
        local = _local_points(shape, 300, rng)
        world = G.quat_rotate_numpy(pose[3:], local) + pose[:3]
        out = _ti_eval(shape, np.tile(pose, (len(world), 1)), world, mesh_sdf, params)
        d, n = C.Collider(shape, tuple(pose)).sdf(world)
        np.testing.assert_allclose(out[:, 0], d, atol=1e-9, rtol=0)
        np.testing.assert_allclose(out[:, 1:], n, atol=1e-9, rtol=0)
        # The world distance equals the local one (rigid motion).
        np.testing.assert_allclose(d, shape.sdf(local)[0], atol=1e-9)


def test_compile_time_and_runtime_kind_agree(runtime, shape_and_sdf):
    """One dispatch, two uses: a template kind and a runtime kind give the same SDF.

    They agree to rounding, not to the bit: the two kernels differ in structure and Taichi
    compiles with fast-math (fused multiply-adds where LLVM sees fit). Normals are compared away
    from kinks, where a rounding-level shift of the point cannot turn them.
    """
    shape, params, mesh_sdf = shape_and_sdf
    rng = np.random.default_rng(20 + shape.kind)
    pose = _random_pose(rng)
    local = _local_points(shape, 300, rng)
    world = G.quat_rotate_numpy(pose[3:], local) + pose[:3]
    poses = np.tile(pose, (len(world), 1))
    runtime_kind = _ti_eval(shape, poses, world, mesh_sdf, params)
    static_kind = np.zeros_like(runtime_kind)
    _eval_static_kernel(shape.kind, np.ascontiguousarray(params.reshape(1, -1)), poses, world, mesh_sdf, static_kind)
    np.testing.assert_allclose(static_kind[:, 0], runtime_kind[:, 0], rtol=0, atol=1e-14)
    smooth = _smooth_mask(shape, local)
    assert smooth.mean() > 0.5
    np.testing.assert_allclose(static_kind[smooth, 1:], runtime_kind[smooth, 1:], rtol=0, atol=1e-12)


def test_taichi_reverse_mode_gradients(runtime, shape_and_sdf):
    shape, params, mesh_sdf = shape_and_sdf
    rng = np.random.default_rng(10 + shape.kind)
    pose_np = _random_pose(rng)
    local = _local_points(shape, 400, rng)
    local = local[_smooth_mask(shape, local, h=1e-4, tol=1e-2)][:12]
    assert len(local) == 12
    world = G.quat_rotate_numpy(pose_np[3:], local) + pose_np[:3]
    n_pts = len(world)
    weights_np = rng.normal(size=(n_pts, 3))
    params2 = np.ascontiguousarray(params.reshape(1, -1))

    def ad(weights_arr):
        pose = ti.ndarray(ti.f64, 7, needs_grad=True)
        pts = ti.ndarray(ti.f64, (n_pts, 3), needs_grad=True)
        loss = ti.ndarray(ti.f64, 1, needs_grad=True)
        pose.from_numpy(pose_np)
        pts.from_numpy(world)
        loss.fill(0.0)
        loss.grad.fill(1.0)
        pose.grad.fill(0.0)
        pts.grad.fill(0.0)
        w = np.ascontiguousarray(weights_arr)
        _loss_kernel(shape.kind, params2, pose, pts, w, mesh_sdf, loss)
        _loss_kernel.grad(shape.kind, params2, pose, pts, w, mesh_sdf, loss)
        return pose.grad.to_numpy(), pts.grad.to_numpy()

    # d(sum d)/dp is the world normal (up to normalization for the interpolated mesh SDF).
    _, g_pts0 = ad(np.zeros((n_pts, 3)))
    n_world = C.Collider(shape, tuple(pose_np)).sdf(world)[1]
    if isinstance(shape, G.Mesh):
        g_pts0 = g_pts0 / np.linalg.norm(g_pts0, axis=1, keepdims=True)
    np.testing.assert_allclose(g_pts0, n_world, atol=1e-9)

    g_pose, g_pts = ad(weights_np)

    def losses(poses, points, weights):
        out = _ti_eval(shape, poses, points, mesh_sdf, params)
        return out[:, 0] + (weights * out[:, 1:]).sum(axis=1)

    h = 1e-6
    # Points: the loss is a sum over points, so perturb each point's coordinate on its own.
    fd_pts = np.zeros_like(world)
    poses = np.tile(pose_np, (n_pts, 1))
    for a in range(3):
        e = np.zeros(3)
        e[a] = h
        fd_pts[:, a] = (losses(poses, world + e, weights_np) - losses(poses, world - e, weights_np)) / (2 * h)
    # Pose: perturb each of the 7 numbers (the quaternion leaves the unit sphere; the kernel
    # uses the same polynomial rotation, so the derivative is still well defined).
    fd_pose = np.zeros(7)
    for j in range(7):
        e = np.zeros(7)
        e[j] = h
        lp = losses(np.tile(pose_np + e, (n_pts, 1)), world, weights_np).sum()
        lm = losses(np.tile(pose_np - e, (n_pts, 1)), world, weights_np).sum()
        fd_pose[j] = (lp - lm) / (2 * h)
    assert np.all(np.abs(g_pts - fd_pts) <= ATOL + RTOL * np.abs(fd_pts)), (g_pts, fd_pts)
    assert np.all(np.abs(g_pose - fd_pose) <= ATOL + RTOL * np.abs(fd_pose)), (g_pose, fd_pose)
    assert np.all(np.isfinite(g_pose)) and np.abs(g_pose).max() > 0


def test_taichi_gradients_finite_at_degenerate_points(runtime, all_shapes):
    """Centres and axes (normal undefined) give finite values and gradients."""
    mesh_sdf, params_list = G.pack_mesh_sdfs(all_shapes)
    pts_np = np.array([[0.0, 0.0, 0.0], [0.0, 0.0, 0.1], [0.0, 0.0, -0.27], [0.0, 0.0, 0.05]])
    for shape, params in zip(all_shapes, params_list, strict=True):
        pose = ti.ndarray(ti.f64, 7, needs_grad=True)
        pts = ti.ndarray(ti.f64, (len(pts_np), 3), needs_grad=True)
        loss = ti.ndarray(ti.f64, 1, needs_grad=True)
        pose.from_numpy(np.array([0, 0, 0, 1.0, 0, 0, 0]))
        pts.from_numpy(pts_np)
        loss.grad.fill(1.0)
        w = np.ones((len(pts_np), 3))
        p2 = np.ascontiguousarray(params.reshape(1, -1))
        _loss_kernel(shape.kind, p2, pose, pts, w, mesh_sdf, loss)
        _loss_kernel.grad(shape.kind, p2, pose, pts, w, mesh_sdf, loss)
        assert np.isfinite(loss.to_numpy()).all()
        assert np.isfinite(pts.grad.to_numpy()).all(), type(shape).__name__
        assert np.isfinite(pose.grad.to_numpy()).all(), type(shape).__name__


# ---------------------------------------------------------------------------------------------
# meshes
# ---------------------------------------------------------------------------------------------


def test_mesh_from_obj_file_matches_sphere(tmp_path):
    path = tmp_path / "ball.obj"
    trimesh.creation.icosphere(subdivisions=3, radius=0.25).export(path)
    mesh = G.Mesh.from_file(path, resolution=24)
    assert mesh.resolution == 24 and mesh.values.shape == (24, 24, 24)
    assert str(path) in mesh.source
    rng = np.random.default_rng(4)
    lo = np.asarray(mesh.lo)
    hi = lo + 23 * mesh.voxel_size
    p = rng.uniform(lo, hi, size=(2000, 3))
    d, n = mesh.sdf(p)
    exact = np.linalg.norm(p, axis=1) - 0.25
    assert np.abs(d - exact).max() < 1.5 * mesh.voxel_size
    near = np.abs(exact) < 0.05
    cos = (n[near] * p[near] / np.linalg.norm(p[near], axis=1, keepdims=True)).sum(axis=1)
    assert cos.min() > 0.9
    # Far outside the sampled box: positive, growing, continuous.
    far = mesh.sdf(np.array([[2.0, 0, 0], [3.0, 0, 0]]))[0]
    assert far[0] > 1.5 and far[1] == pytest.approx(far[0] + 1.0, abs=1e-9)
    edge = hi[0]
    dd = mesh.sdf(np.array([[edge - 1e-9, 0.0, 0.0], [edge + 1e-9, 0.0, 0.0]]))[0]
    assert abs(dd[1] - dd[0]) < 1e-6


def test_mesh_box_matches_analytic_box():
    tm = trimesh.creation.box(extents=(0.4, 0.3, 0.2))
    mesh = G.Mesh.from_trimesh(tm, resolution=20, padding=2)
    box = G.Box((0.2, 0.15, 0.1))
    lo = np.asarray(mesh.lo)
    rng = np.random.default_rng(5)
    p = rng.uniform(lo, lo + 19 * mesh.voxel_size, size=(2000, 3))
    assert np.abs(mesh.sdf(p)[0] - box.sdf(p)[0]).max() < 1.5 * mesh.voxel_size
    # Grid samples are exact distances (samples on grid-aligned faces are 0, of either sign).
    axis = np.arange(20) * mesh.voxel_size
    grid = np.stack(np.meshgrid(axis, axis, axis, indexing="ij"), -1).reshape(-1, 3) + lo
    np.testing.assert_allclose(mesh.values.reshape(-1), box.sdf(grid)[0], atol=1e-12)


def test_mesh_sdf_brackets_analytic_sphere():
    """Voxel SDF (libigl) of an icosphere against the analytic Sphere, with an exact tolerance.

    The icosphere P has its vertices on the sphere of radius r, so B(r_in) c P c B(r) with r_in
    the distance from the centre to the nearest face plane. A signed distance can only decrease
    as the solid grows, so ``|p| - r <= d_P(p) <= |p| - r_in`` everywhere: the tolerance is the
    sag ``r - r_in`` of the polyhedron (plus rounding), not a tuned number; and the signs agree
    with the analytic sphere wherever ``|p|`` lies outside ``[r_in, r]``.
    """
    r = 0.25
    tm = trimesh.creation.icosphere(subdivisions=3, radius=r)
    tri = np.asarray(tm.triangles)
    normal = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    r_in = np.abs((normal * tri[:, 0]).sum(axis=1) / np.linalg.norm(normal, axis=1)).min()
    assert 0.0 < r - r_in < 0.01 * r
    mesh = G.Mesh.from_trimesh(tm, resolution=32, padding=3)
    axis = np.arange(32) * mesh.voxel_size
    grid = np.stack(np.meshgrid(axis, axis, axis, indexing="ij"), -1).reshape(-1, 3) + np.asarray(mesh.lo)
    rng = np.random.default_rng(8)
    scattered = rng.uniform(-1.3 * r, 1.3 * r, size=(4000, 3))
    for points, d in ((grid, mesh.values.reshape(-1)), (scattered, G.mesh_signed_distance(tm, scattered))):
        rho = np.linalg.norm(points, axis=1)
        assert np.all(d >= G.Sphere(r).sdf(points)[0] - 1e-12)
        assert np.all(d <= rho - r_in + 1e-12)
        inside, outside = rho < r_in, rho > r
        assert inside.sum() > 500 and outside.sum() > 500
        assert np.all(d[inside] < 0.0) and np.all(d[outside] > 0.0)
        contains = G.mesh_contains(tm, points)
        assert np.all(contains[inside]) and not np.any(contains[outside])


def test_mesh_sdf_signs_match_analytic_box():
    """Box mesh: distances equal the analytic Box to rounding, signs agree off the surface."""
    tm = trimesh.creation.box(extents=(0.4, 0.3, 0.2))
    box = G.Box((0.2, 0.15, 0.1))
    p = np.random.default_rng(9).uniform(-0.3, 0.3, size=(5000, 3))
    exact = box.sdf(p)[0]
    d = G.mesh_signed_distance(tm, p)
    np.testing.assert_allclose(d, exact, rtol=1e-12, atol=1e-15)
    off_surface = np.abs(exact) > 1e-9
    assert np.array_equal(G.mesh_contains(tm, p)[off_surface], exact[off_surface] < 0.0)


def test_mesh_signed_distance_nonconvex():
    # A cup-like annulus made by a boolean-free construction: a torus is non-convex.
    tm = trimesh.creation.torus(major_radius=0.3, minor_radius=0.1, major_sections=24)
    pts = np.array([[0.0, 0.0, 0.0], [0.3, 0.0, 0.0], [0.0, -0.3, 0.0], [0.0, 0.0, 0.3]])
    sd = G.mesh_signed_distance(tm, pts)
    assert sd[0] > 0.15 and sd[1] < -0.08 and sd[2] < -0.08 and sd[3] > 0.1
    assert list(G.mesh_contains(tm, pts)) == [False, True, True, False]
    grid = G.mesh_grid_sdf(tm, (-0.45, -0.45, -0.15), 0.05, (19, 19, 7))
    axes = [lo + 0.05 * np.arange(n) for lo, n in ((-0.45, 19), (-0.45, 19), (-0.15, 7))]
    g = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3)
    np.testing.assert_allclose(grid.reshape(-1), G.mesh_signed_distance(tm, g), atol=1e-12)


def test_mesh_not_watertight_raises(tmp_path):
    tm = trimesh.creation.icosphere(subdivisions=1, radius=0.2)
    tm.update_faces(np.arange(len(tm.faces)) > 3)
    path = tmp_path / "open.obj"
    tm.export(path)
    with pytest.raises(ValueError, match="not watertight"):
        G.Mesh.from_file(path, resolution=12)
    with pytest.raises(ValueError, match="not watertight"):
        G.Mesh.from_trimesh(tm, resolution=12)


def test_mesh_garbage_and_missing_files_raise(tmp_path):
    bad = tmp_path / "garbage.obj"
    bad.write_bytes(b"\x00\x01 this is not a mesh \xff\xfe\n v 1 2\n f 9 9 9\n")
    with pytest.raises(ValueError, match="garbage.obj"):
        G.Mesh.from_file(bad)
    bad2 = tmp_path / "noise.stl"
    bad2.write_bytes(np.random.default_rng(0).bytes(300))
    with pytest.raises(ValueError, match="noise.stl"):
        G.Mesh.from_file(bad2)
    with pytest.raises(ValueError, match="missing.obj"):
        G.Mesh.from_file(tmp_path / "missing.obj")


def test_mesh_validation():
    with pytest.raises(ValueError, match="cubic"):
        G.Mesh(np.zeros((4, 4, 5)), (0, 0, 0), 0.1)
    with pytest.raises(ValueError, match="voxel_size"):
        G.Mesh(np.zeros((4, 4, 4)), (0, 0, 0), 0.0)
    with pytest.raises(ValueError, match="finite"):
        G.Mesh(np.full((4, 4, 4), np.nan), (0, 0, 0), 0.1)
    tm = trimesh.creation.box(extents=(1, 1, 1))
    with pytest.raises(ValueError, match="resolution"):
        G.Mesh.from_trimesh(tm, resolution=6, padding=3)


def test_pack_mesh_sdfs(sphere_mesh):
    box_mesh = G.Mesh.from_trimesh(trimesh.creation.box(extents=(0.2, 0.2, 0.2)), resolution=10)
    shapes = [sphere_mesh, G.Sphere(0.1), box_mesh]
    data, params = G.pack_mesh_sdfs(shapes)
    r0, r1 = sphere_mesh.resolution, box_mesh.resolution
    assert data.shape == (r0**3 + r1**3,) and data.dtype == np.float64
    assert params[0][0] == 0 and params[0][1] == r0
    assert params[2][0] == r0**3 and params[2][1] == r1
    np.testing.assert_array_equal(params[1], G.Sphere(0.1).params())
    np.testing.assert_array_equal(data[r0**3 :], box_mesh.values.reshape(-1))
    i, j, k = 3, 5, 7
    assert data[r0**3 + (i * r1 + j) * r1 + k] == box_mesh.values[i, j, k]
    dummy, p2 = G.pack_mesh_sdfs([G.Plane(), G.Box((1, 1, 1))])
    assert dummy.shape == (G.SHAPE_DIM,) and len(p2) == 2
    with pytest.raises(ValueError, match="Shape"):
        G.pack_mesh_sdfs([C.Collider(G.Box((1, 1, 1)))])


def test_pack_colliders(sphere_mesh):
    cols = [
        C.Collider(G.Cup(0.1, 0.2, 0.01), (0, 0, 0.1, 1, 0, 0, 0), C.BoundaryCondition(0.3, "separate")),
        C.Collider(sphere_mesh, boundary=C.BoundaryCondition(mode="sticky")),
    ]
    packed = C.pack_colliders(cols)
    assert packed.kinds.tolist() == [G.CUP, G.MESH]
    assert packed.params.shape == (2, G.SHAPE_DIM) and packed.poses.shape == (2, 7)
    assert packed.modes.tolist() == [2, 0]
    np.testing.assert_allclose(packed.friction, [0.3, 0.5])
    assert packed.mesh_sdf.shape == (sphere_mesh.resolution**3,)


# ---------------------------------------------------------------------------------------------
# validation
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "field"),
    [
        (lambda: G.Sphere(-1.0), "Sphere.radius"),
        (lambda: G.Sphere(float("nan")), "Sphere.radius"),
        (lambda: G.Box((0.1, 0.0, 0.1)), r"Box.half_extents\[1\]"),
        (lambda: G.Box((0.1, 0.1)), "Box.half_extents"),
        (lambda: G.Capsule(0.1, -0.1), "Capsule.half_length"),
        (lambda: G.Cylinder(0.1, float("inf")), "Cylinder.half_height"),
        (lambda: G.Cup(0.1, 0.2, 0.1), "Cup.thickness"),
        (lambda: G.Cup(0.1, 0.02, 0.05), "Cup.thickness"),
        (lambda: G.Cup(0.0, 0.2, 0.01), "Cup.radius"),
        (lambda: G.Bowl(0.1, 0.2), "Bowl.thickness"),
        (lambda: G.Bowl("a", 0.01), "Bowl.radius"),
        (lambda: C.BoundaryCondition(friction=-0.1), "BoundaryCondition.friction"),
        (lambda: C.BoundaryCondition(mode="glue"), "BoundaryCondition.mode"),
        (lambda: C.Collider(G.Plane(), (0, 0, 0, 0, 0, 0, 0)), "Collider.pose"),
        (lambda: C.Collider(G.Plane(), (0, 0, float("nan"), 1, 0, 0, 0)), "Collider.pose"),
        (lambda: C.Collider(G.Plane(), (0, 0, 0)), "Collider.pose"),
        (lambda: C.Collider("sphere"), "Collider.shape"),
    ],
)
def test_validation_errors(make, field):
    with pytest.raises(ValueError, match=field):
        make()


def test_boundary_condition_and_collider_defaults():
    c = C.BoundaryCondition()
    assert (c.friction, c.mode, c.mode_id) == (0.5, "slip", C.SLIP)
    assert (C.STICKY, C.SLIP, C.SEPARATE) == (0, 1, 2)
    assert [C.BoundaryCondition(mode=m).mode_id for m in C.BOUNDARY_MODES] == [0, 1, 2]
    assert C.BOUNDARY_MODES[C.SEPARATE] == "separate"
    col = C.Collider(G.Sphere(0.1), (1, 2, 3, 2.0, 0, 0, 0))
    assert col.pose == (1.0, 2.0, 3.0, 1.0, 0.0, 0.0, 0.0)
    assert col.boundary == C.BoundaryCondition() and col.kind == G.SPHERE
    # Frozen.
    with pytest.raises(AttributeError):
        col.pose = (0, 0, 0, 1, 0, 0, 0)


# ---------------------------------------------------------------------------------------------
# torch pose integration
# ---------------------------------------------------------------------------------------------


def _quat_mul(a, b):
    w1, x1, y1, z1 = a
    w2, x2, y2, z2 = b
    return np.array(
        [
            w1 * w2 - x1 * x2 - y1 * y2 - z1 * z2,
            w1 * x2 + x1 * w2 + y1 * z2 - z1 * y2,
            w1 * y2 - x1 * z2 + y1 * w2 + z1 * x2,
            w1 * z2 + x1 * y2 - y1 * x2 + z1 * w2,
        ]
    )


def test_integrate_poses_constant_rotation_and_translation():
    T, S, dt = 50, 10, 1e-3
    omega = 2.0
    axis = np.array([1.0, 2.0, 2.0]) / 3.0
    q0 = np.array([math.cos(0.3), 0.0, math.sin(0.3), 0.0])
    pose0 = torch.tensor(np.concatenate([[0.1, -0.2, 0.3], q0]), dtype=torch.float64)
    pose0 = pose0.reshape(1, 1, 7)
    v = np.concatenate([[0.5, -1.0, 0.25], omega * axis])
    vel = torch.tensor(v, dtype=torch.float64).reshape(1, 1, 1, 6).repeat(T, 1, 1, 1)
    poses, vels = G.integrate_poses(pose0, vel, dt, S)
    assert poses.shape == (T * S, 1, 1, 7) and vels.shape == (T * S, 1, 1, 6)
    torch.testing.assert_close(poses[0], pose0)
    final = G.step_pose(poses[-1], vels[-1], dt)[0, 0].numpy()
    t = T * S * dt
    np.testing.assert_allclose(final[:3], [0.1, -0.2, 0.3] + v[:3] * t, atol=1e-12)
    half = 0.5 * omega * t
    expected = _quat_mul(np.concatenate([[math.cos(half)], math.sin(half) * axis]), q0)
    q = final[3:] * np.sign(final[3] * expected[0])
    np.testing.assert_allclose(q, expected, atol=1e-6)
    norms = torch.linalg.vector_norm(poses[..., 3:], dim=-1)
    torch.testing.assert_close(norms, torch.ones_like(norms))
    # Pose s is the pose at the start of substep s.
    np.testing.assert_allclose(poses[7, 0, 0, :3].numpy(), [0.1, -0.2, 0.3] + v[:3] * 7 * dt, atol=1e-12)


def test_integrate_poses_piecewise_velocity_and_batch():
    B, K, T, S, dt = 2, 3, 3, 4, 0.01
    rng = np.random.default_rng(6)
    q = rng.normal(size=(B, K, 4))
    q /= np.linalg.norm(q, axis=-1, keepdims=True)
    pose0 = torch.tensor(np.concatenate([rng.normal(size=(B, K, 3)), q], -1))
    vel = torch.tensor(rng.normal(size=(T, B, K, 6)))
    vel[..., 3:] = 0.0
    poses, vels = G.integrate_poses(pose0, vel, dt, S)
    torch.testing.assert_close(vels[S : 2 * S], vel[1:2].expand(S, B, K, 6))
    expected = pose0[..., :3] + dt * S * (vel[0, ..., :3] + vel[1, ..., :3])
    torch.testing.assert_close(poses[2 * S, ..., :3], expected)
    torch.testing.assert_close(poses[..., 3:], pose0[..., 3:].expand(T * S, B, K, 4))


def test_integrate_poses_gradcheck():
    rng = np.random.default_rng(7)
    q = rng.normal(size=4)
    q /= np.linalg.norm(q)
    pose0 = torch.tensor(np.concatenate([rng.normal(size=3), q]).reshape(1, 1, 7))
    pose0.requires_grad_(True)
    vel = torch.tensor(rng.normal(size=(2, 1, 1, 6)), requires_grad=True)

    def fn(p, v):
        poses, vels = G.integrate_poses(p, v, 0.1, 2)
        return poses, vels

    assert torch.autograd.gradcheck(fn, (pose0, vel), eps=1e-6, atol=1e-7, rtol=1e-5)
    poses, _ = fn(pose0, vel)
    poses[-1].sum().backward()
    assert vel.grad is not None and pose0.grad is not None
    assert torch.isfinite(vel.grad).all() and vel.grad.abs().sum() > 0


def test_integrate_poses_validation():
    pose0 = torch.zeros(1, 1, 7)
    pose0[..., 3] = 1.0
    vel = torch.zeros(2, 1, 1, 6)
    with pytest.raises(ValueError, match="pose0"):
        G.integrate_poses(pose0[0], vel, 0.1, 2)
    with pytest.raises(ValueError, match="velocity"):
        G.integrate_poses(pose0, torch.zeros(2, 1, 2, 6), 0.1, 2)
    with pytest.raises(ValueError, match="dt"):
        G.integrate_poses(pose0, vel, 0.0, 2)
    with pytest.raises(ValueError, match="substeps"):
        G.integrate_poses(pose0, vel, 0.1, 0)
