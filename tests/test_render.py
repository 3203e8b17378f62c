"""Tests of the headless renderer (engine/render.py) and video writing.

The camera looks from ``cam`` toward ``target``; points on that line project to the image
centre, which is how the depth-test cases place one object in front of another.
"""

import imageio.v2 as imageio
import numpy as np
import pytest
import torch

from engine.colliders import Collider
from engine.geometry import Box, Cup

CAM = np.array([0.5, -0.9, 0.9])
TARGET = np.array([0.5, 0.5, 0.25])
AXIS = (TARGET - CAM) / np.linalg.norm(TARGET - CAM)
RED, GREEN = (1.0, 0.0, 0.0), (0.0, 1.0, 0.0)
SIZE = 64


def on_axis(distance):
    """World point at ``distance`` [m] from the camera along its viewing axis."""
    return CAM + distance * AXIS


def centre(img):
    return img[SIZE // 2 - 1 : SIZE // 2 + 1, SIZE // 2 - 1 : SIZE // 2 + 1].reshape(-1, 3).mean(0)


@pytest.fixture
def renderer(runtime):
    from engine.render import Renderer

    return Renderer(width=SIZE, height=SIZE, camera_pos=tuple(CAM), look_at=tuple(TARGET), particle_radius=0.03)


def blob(n=400, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.uniform([0.4, 0.4, 0.1], [0.6, 0.6, 0.3], size=(n, 3))
    return x, np.tile([0.2, 0.4, 0.9], (n, 1))


def test_render_shape_dtype_not_constant(renderer):
    x, c = blob()
    img = renderer.render(x, c)
    assert img.shape == (SIZE, SIZE, 3) and img.dtype == np.uint8
    assert img.reshape(-1, 3).std(0).max() > 5.0
    # torch input gives the same image
    assert np.array_equal(renderer.render(torch.as_tensor(x), torch.as_tensor(c)), img)


def test_depth_test_nearer_particle_wins(renderer):
    x = np.array([on_axis(1.0), on_axis(1.3)])
    for order in (slice(None), slice(None, None, -1)):
        colors = np.array([RED, GREEN])
        img = renderer.render(x[order], colors[order])
        r, g, _ = centre(img)
        assert r > 3 * g + 20, (r, g)  # the near red sphere hides the green one
    img = renderer.render(x[1:], np.array([GREEN]))
    r, g, _ = centre(img)
    assert g > 3 * r + 20  # alone, the far sphere is visible


def test_colliders_appear_and_compose_by_depth(renderer):
    empty = np.zeros((0, 3))
    background = renderer.render(empty, np.zeros((0, 3)))
    box = Collider(Box((0.05, 0.05, 0.05)))
    pose_near = (*on_axis(0.9), 1.0, 0.0, 0.0, 0.0)
    img = renderer.render(empty, np.zeros((0, 3)), [(box, pose_near)], collider_colors=[RED])
    r, g, b = centre(img)
    assert r > 2 * g + 20 and r > 2 * b + 20
    assert np.abs(img.astype(int) - background.astype(int)).sum(-1).astype(bool).mean() > 0.01
    # The box in front hides a green particle behind it; a particle in front hides the box.
    behind = np.array([on_axis(1.2)])
    img = renderer.render(behind, np.array([GREEN]), [(box, pose_near)], collider_colors=[RED])
    r, g, _ = centre(img)
    assert r > 2 * g + 20
    front = np.array([on_axis(0.7)])
    img = renderer.render(front, np.array([GREEN]), [(box, pose_near)], collider_colors=[RED])
    r, g, _ = centre(img)
    assert g > 2 * r + 20
    # A glass cup tints what it covers but leaves it visible; a bare Collider uses its own pose.
    cup = Collider(Cup(0.15, 0.2, 0.02), pose=(0.5, 0.5, 0.0, 1.0, 0.0, 0.0, 0.0))
    img = renderer.render(empty, np.zeros((0, 3)), [cup])
    assert np.abs(img.astype(int) - background.astype(int)).sum(-1).astype(bool).mean() > 0.01


def test_mesh_collider_draws_like_its_analytic_shape(renderer):
    """A voxel-SDF sphere (packed after a box, so its voxels start at a non-zero offset) covers
    nearly the same pixels as the analytic sphere it approximates."""
    import trimesh

    from engine.geometry import Mesh, Sphere

    empty = np.zeros((0, 3))
    ball = Mesh.from_trimesh(trimesh.creation.icosphere(subdivisions=3, radius=0.08), resolution=24)
    box = Collider(Box((0.02, 0.02, 0.02)), pose=(0.2, 0.2, 0.05, 1.0, 0.0, 0.0, 0.0))
    pose = (*on_axis(1.0), 1.0, 0.0, 0.0, 0.0)
    images = [
        renderer.render(empty, empty, [box, (Collider(shape), pose)], collider_colors=[GREEN, RED])
        for shape in (ball, Sphere(0.08))
    ]
    covered = [(img[..., 0].astype(int) - img[..., 1].astype(int)) > 60 for img in images]
    assert covered[1].sum() > 50
    assert (covered[0] != covered[1]).sum() < 0.1 * covered[1].sum()


def test_render_is_deterministic(runtime, renderer):
    from engine.render import Renderer

    x, c = blob(2000, seed=1)
    cols = [(Collider(Box((0.02, 0.1, 0.1))), (0.45, 0.5, 0.2, 1.0, 0.0, 0.0, 0.0))]
    a = renderer.render(x, c, cols)
    b = renderer.render(x, c, cols)
    other = Renderer(width=SIZE, height=SIZE, camera_pos=tuple(CAM), look_at=tuple(TARGET), particle_radius=0.03)
    assert np.array_equal(a, b)
    assert np.array_equal(a, other.render(x, c, cols))


def test_particle_colors_from_materials(runtime):
    from engine.config import SimConfig
    from engine.materials import RIGID_BODY, WATER
    from engine.render import particle_colors
    from engine.sampling import box
    from engine.scene import SceneBuilder

    builder = SceneBuilder(SimConfig(grid_res=16))
    builder.add_particles(box((0.3, 0.3, 0.3), (0.5, 0.5, 0.5), 0.05), WATER, 0.05)
    builder.add_particles(box((0.6, 0.6, 0.6), (0.7, 0.7, 0.7), 0.05), RIGID_BODY, 0.05)
    model = builder.build()
    colors = particle_colors(model)
    assert colors.shape == (model.n_particles, 3)
    assert np.allclose(colors[model.material_id == 0], WATER.color)
    assert np.allclose(colors[model.material_id == 1], RIGID_BODY.color)


@pytest.mark.parametrize("ext", [".gif", ".mp4"])
def test_write_video_round_trip(tmp_path, ext):
    from engine.render import write_video

    frames = [np.full((32, 48, 3), 40 * k, dtype=np.uint8) for k in range(4)]
    path = write_video(frames, tmp_path / f"clip{ext}", fps=10)
    with imageio.get_reader(path) as reader:
        decoded = list(reader.iter_data())  # len(reader) may be inf for mp4
    assert len(decoded) == 4
    assert decoded[0].shape[:2] == (32, 48)


def test_write_video_rejects_bad_input(tmp_path):
    from engine.render import write_video

    frame = np.zeros((8, 8, 3), np.uint8)
    with pytest.raises(ValueError, match="extension"):
        write_video([frame], tmp_path / "clip.avi")
    with pytest.raises(ValueError, match="at least one"):
        write_video([], tmp_path / "clip.gif")
    with pytest.raises(ValueError, match="uint8"):
        write_video([frame.astype(np.float32)], tmp_path / "clip.gif")
    with pytest.raises(ValueError, match="shape"):
        write_video([frame, np.zeros((8, 10, 3), np.uint8)], tmp_path / "clip.gif")


def test_render_rejects_bad_input(runtime, renderer):
    from engine.render import Renderer

    x, c = blob(10)
    with pytest.raises(ValueError, match="shape"):
        renderer.render(x[:, :2], c)
    with pytest.raises(ValueError, match="NaN"):
        bad = x.copy()
        bad[3, 1] = np.nan
        renderer.render(bad, c)
    with pytest.raises(ValueError, match="colors"):
        renderer.render(x, c[:5])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        renderer.render(x, c * 2.0)
    with pytest.raises(ValueError, match="pose"):
        renderer.render(x, c, [(Collider(Box((0.1, 0.1, 0.1))), (0.0, 0.0, 0.0))])
    with pytest.raises(ValueError):
        renderer.render(x, c, ["not a collider"])
    with pytest.raises(ValueError):
        Renderer(width=0)
    with pytest.raises(ValueError):
        Renderer(camera_pos=(0.5, 0.5, 0.25), look_at=(0.5, 0.5, 0.25))
    with pytest.raises(ValueError):
        Renderer(fov_deg=180.0)
    with pytest.raises(ValueError):
        Renderer(particle_radius=-1.0)
