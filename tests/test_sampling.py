"""Tests of engine.sampling: counts ~ volume / spacing^3, points inside, determinism, errors."""

import math

import numpy as np
import pytest
import trimesh

from engine import geometry, sampling


def test_particle_volume():
    assert sampling.particle_volume(0.01) == pytest.approx(1e-6)
    with pytest.raises(ValueError, match="spacing"):
        sampling.particle_volume(0.0)


def test_box_exact_lattice():
    p = sampling.box((0, 0, 0), (0.1, 0.2, 0.05), 0.01)
    assert p.dtype == np.float64 and p.shape == (10 * 20 * 5, 3)
    # Cell centres: half a spacing from the faces, spacing apart.
    np.testing.assert_allclose(p.min(axis=0), [0.005, 0.005, 0.005])
    np.testing.assert_allclose(p.max(axis=0), [0.095, 0.195, 0.045])
    assert len(np.unique(np.round(p[:, 0] / 0.01 - 0.5).astype(int))) == 10


def test_box_jitter_inside_and_deterministic():
    lo, hi = np.array([-0.1, 0.0, 0.2]), np.array([0.1, 0.15, 0.3])
    a = sampling.box(lo, hi, 0.01, jitter=0.8, rng=np.random.default_rng(3))
    b = sampling.box(lo, hi, 0.01, jitter=0.8, rng=np.random.default_rng(3))
    c = sampling.box(lo, hi, 0.01, jitter=0.8, rng=4)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    np.testing.assert_array_equal(sampling.box(lo, hi, 0.01, 0.8), sampling.box(lo, hi, 0.01, 0.8))
    assert np.all((a >= lo) & (a <= hi))
    expected = np.prod(hi - lo) / 0.01**3
    assert abs(len(a) - expected) / expected < 0.03


def test_sphere_count_and_inside():
    c = np.array([0.1, -0.2, 0.3])
    r, h = 0.1, 0.01
    p = sampling.sphere(c, r, h)
    expected = 4.0 / 3.0 * math.pi * r**3 / h**3
    assert abs(len(p) - expected) / expected < 0.03
    assert np.all(np.linalg.norm(p - c, axis=1) <= r)
    pj = sampling.sphere(c, r, h, jitter=1.0, rng=1)
    assert abs(len(pj) - expected) / expected < 0.03
    assert np.all(np.linalg.norm(pj - c, axis=1) <= r)


def test_cylinder_count_and_inside():
    c = np.array([0.0, 0.1, 0.05])  # centre of the bottom face
    r, H, h = 0.05, 0.1, 0.005
    for jitter in (0.0, 0.5):
        p = sampling.cylinder(c, r, H, h, jitter=jitter, rng=2)
        expected = math.pi * r**2 * H / h**3
        assert abs(len(p) - expected) / expected < 0.03
        assert np.all(np.hypot(p[:, 0] - c[0], p[:, 1] - c[1]) <= r)
        assert np.all((p[:, 2] >= c[2]) & (p[:, 2] <= c[2] + H))
    assert p[:, 2].min() < c[2] + h and p[:, 2].max() > c[2] + H - h


@pytest.fixture(scope="module")
def ball_obj(tmp_path_factory):
    path = tmp_path_factory.mktemp("meshes") / "ball.obj"
    trimesh.creation.icosphere(subdivisions=3, radius=0.05).export(path)
    return path


def test_mesh_interior_from_file(ball_obj):
    h = 0.005
    p = sampling.mesh_interior(ball_obj, h)
    tm = geometry.load_mesh(ball_obj)
    expected = tm.volume / h**3
    assert abs(len(p) - expected) / expected < 0.05
    assert np.all(geometry.mesh_contains(tm, p))
    assert np.all(np.linalg.norm(p, axis=1) <= 0.05)


def test_mesh_interior_pose_and_jitter(ball_obj):
    tm = geometry.load_mesh(ball_obj)
    h = 0.005
    q = np.array([math.cos(0.4), 0.0, 0.0, math.sin(0.4)])
    pose = (0.3, -0.1, 0.2, *q)
    p = sampling.mesh_interior(tm, h, pose=pose, jitter=0.7, rng=5)
    p2 = sampling.mesh_interior(tm, h, pose=pose, jitter=0.7, rng=5)
    np.testing.assert_array_equal(p, p2)
    local = geometry.quat_rotate_inverse_numpy(q, p - np.array(pose[:3]))
    assert np.all(geometry.mesh_contains(tm, local))
    expected = tm.volume / h**3
    assert abs(len(p) - expected) / expected < 0.05


def test_mesh_interior_box_mesh_exact_count():
    tm = trimesh.creation.box(extents=(0.1, 0.06, 0.04))
    p = sampling.mesh_interior(tm, 0.01)
    assert len(p) == 10 * 6 * 4
    assert np.all(np.abs(p) < [0.05, 0.03, 0.02])


def test_mesh_interior_errors(tmp_path):
    tm = trimesh.creation.icosphere(subdivisions=1, radius=0.05)
    tm.update_faces(np.arange(len(tm.faces)) > 2)
    with pytest.raises(ValueError, match="not watertight"):
        sampling.mesh_interior(tm, 0.01)
    open_path = tmp_path / "open.obj"
    tm.export(open_path)
    with pytest.raises(ValueError, match="not watertight"):
        sampling.mesh_interior(open_path, 0.01)
    bad = tmp_path / "junk.obj"
    bad.write_text("this is not an obj file\n")
    with pytest.raises(ValueError, match="junk.obj"):
        sampling.mesh_interior(bad, 0.01)
    with pytest.raises(ValueError, match="nope.stl"):
        sampling.mesh_interior(tmp_path / "nope.stl", 0.01)
    with pytest.raises(ValueError, match="mesh_or_path"):
        sampling.mesh_interior(42, 0.01)
    ball = trimesh.creation.icosphere(subdivisions=1, radius=0.05)
    with pytest.raises(ValueError, match="pose"):
        sampling.mesh_interior(ball, 0.01, pose=(0, 0, 0, 0, 0, 0, 0))


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: sampling.box((0, 0, 0), (1, 1, 1), 0.0), "spacing"),
        (lambda: sampling.box((0, 0, 0), (1, 1, 1), -0.1), "spacing"),
        (lambda: sampling.box((0, 0, 0), (1, 1, 1), float("nan")), "spacing"),
        (lambda: sampling.box((0, 0, 0), (1, 0, 1), 0.1), "lo < hi"),
        (lambda: sampling.box((0, 0), (1, 1, 1), 0.1), "lo"),
        (lambda: sampling.box((0, 0, float("inf")), (1, 1, 1), 0.1), "lo"),
        (lambda: sampling.box((0, 0, 0), (1, 1, 1), 0.1, jitter=1.5), "jitter"),
        (lambda: sampling.box((0, 0, 0), (1, 1, 1), 0.1, jitter=0.1, rng="x"), "rng"),
        (lambda: sampling.box((0, 0, 0), (1, 1, 1), 1e-6), "increase spacing"),
        (lambda: sampling.sphere((0, 0, 0), 0.0, 0.1), "radius"),
        (lambda: sampling.sphere((0, 0, 0), 1.0, "a"), "spacing"),
        (lambda: sampling.cylinder((0, 0, 0), 0.1, -1.0, 0.01), "height"),
        (lambda: sampling.cylinder((0, 0, 0), float("nan"), 1.0, 0.01), "radius"),
    ],
)
def test_invalid_inputs(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_tiny_shape_gives_few_points():
    p = sampling.sphere((0, 0, 0), 0.001, 0.01)
    assert p.shape[1] == 3 and len(p) <= 1
