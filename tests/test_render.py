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
        meta = reader.get_meta_data()
    assert len(decoded) == 4
    assert decoded[0].shape[:2] == (32, 48)
    fps = meta["fps"] if ext == ".mp4" else 1000.0 / meta["duration"]  # GIF: ms per frame
    assert fps == pytest.approx(10.0, rel=1e-3)


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


# --------------------------------------------------------------------------------------------
# Triangle meshes (FEM sensor gels) and tactile panels
# --------------------------------------------------------------------------------------------

FWD = AXIS
RIGHT = np.cross(FWD, [0.0, 0.0, 1.0]) / np.linalg.norm(np.cross(FWD, [0.0, 0.0, 1.0]))
UP = np.cross(RIGHT, FWD)
FOCAL = 0.5 * SIZE / np.tan(np.radians(45.0) / 2)  # the Renderer's default fov


def project(p):
    """(row, column) of the pixel that sees world point p (the Renderer's pinhole model)."""
    rel = np.asarray(p) - CAM
    z = rel @ FWD
    return int(np.floor(0.5 * SIZE - FOCAL * (rel @ UP) / z)), int(np.floor(0.5 * SIZE + FOCAL * (rel @ RIGHT) / z))


def facing_triangle(distance, shift=0.0, size=0.12):
    """One triangle facing the camera, its centroid ``shift`` [m] right of the axis at ``distance``."""
    c = on_axis(distance) + shift * RIGHT
    angles = np.radians([90.0, 210.0, 330.0])
    v = c + size * (np.cos(angles)[:, None] * RIGHT + np.sin(angles)[:, None] * UP)
    return v, np.array([[0, 1, 2]])


def facing_grid(distance=1.0, half=0.2, n=12, dent=0.0):
    """An n x n grid of quads (2 triangles each) facing the camera at ``distance`` on the axis,
    pushed away from the camera by a Gaussian dent of depth ``dent`` [m]."""
    s = np.linspace(-half, half, n + 1)
    S, T = np.meshgrid(s, s, indexing="ij")
    depth = dent * np.exp(-(S**2 + T**2) / (0.5 * half) ** 2)
    v = on_axis(distance) + S[..., None] * RIGHT + T[..., None] * UP + depth[..., None] * FWD
    idx = np.arange((n + 1) ** 2).reshape(n + 1, n + 1)
    a, b, c, d = idx[:-1, :-1], idx[1:, :-1], idx[1:, 1:], idx[:-1, 1:]
    tris = np.concatenate([np.stack([a, b, c], -1).reshape(-1, 3), np.stack([a, c, d], -1).reshape(-1, 3)])
    return v.reshape(-1, 3), tris


def is_red(px):
    r, g, b = (float(c) for c in px)
    return r > 2 * g + 20 and r > 2 * b + 20


def test_mesh_renders_where_projected(renderer):
    empty = np.zeros((0, 3))
    background = renderer.render(empty)
    v, t = facing_triangle(1.0)
    img = renderer.render(empty, meshes=[(v, t, RED)])
    assert is_red(centre(img))
    # The triangle covers its projected area (circumradius 0.12 m at 1 m: ~9 px) around the centre.
    red = np.array([[is_red(p) for p in row] for row in img])
    rows, cols = np.nonzero(red)
    assert 60 < red.sum() < 400
    assert np.abs(rows + 0.5 - SIZE / 2).max() < 11 and np.abs(cols + 0.5 - SIZE / 2).max() < 11
    # Elsewhere only its shadow on the floor (darker, away from the light) changes the image.
    changed = np.abs(img.astype(int) - background.astype(int)).sum(-1) > 0
    shade = img.astype(int).sum(-1) - background.astype(int).sum(-1)
    assert changed[~red].any() and (shade[changed & ~red] < 0).all()
    assert not changed[: SIZE // 2 - 12].any(), "nothing above the triangle changes"
    # Shifted right by 0.2 m: it appears where its centroid projects, and the centre is background.
    v, t = facing_triangle(1.0, shift=0.2)
    img = renderer.render(empty, meshes=[(v, t, RED)])
    i, j = project(v.mean(0))
    assert j > SIZE / 2 + 10
    assert is_red(img[i, j])
    assert np.array_equal(centre(img), centre(background))
    # Several meshes and torch input; the default color is the silicone grey-blue.
    v2, t2 = facing_triangle(1.0, shift=-0.2)
    img2 = renderer.render(empty, meshes=[(torch.as_tensor(v), torch.as_tensor(t), RED), (v2, t2)])
    assert np.array_equal(img2[i, j], img[i, j])
    i2, j2 = project(v2.mean(0))
    r, g, b = img2[i2, j2].astype(int)
    assert b > r + 10 and abs(r - g) < 40  # grey-blue


def test_mesh_composes_by_depth(renderer):
    empty = np.zeros((0, 3))
    v, t = facing_triangle(1.0)
    mesh = [(v, t, RED)]
    box = Collider(Box((0.04, 0.04, 0.04)))
    # An opaque collider in front hides the mesh; behind it, the mesh hides the collider.
    img = renderer.render(
        empty, colliders=[(box, (*on_axis(0.8), 1.0, 0.0, 0.0, 0.0))], collider_colors=[GREEN], meshes=mesh
    )
    r, g, _ = centre(img)
    assert g > 2 * r + 20
    img = renderer.render(
        empty, colliders=[(box, (*on_axis(1.3), 1.0, 0.0, 0.0, 0.0))], collider_colors=[GREEN], meshes=mesh
    )
    assert is_red(centre(img))
    # Particles: the nearer of particle and mesh wins.
    img = renderer.render(np.array([on_axis(0.7)]), np.array([GREEN]), meshes=mesh)
    r, g, _ = centre(img)
    assert g > 2 * r + 20
    img = renderer.render(np.array([on_axis(1.3)]), np.array([GREEN]), meshes=mesh)
    assert is_red(centre(img))
    # Of two meshes, the nearer wins whatever the order.
    near, far = facing_triangle(0.9), facing_triangle(1.2)
    for order in ((near, far), (far, near)):
        colors = (GREEN, RED) if order[0] is near else (RED, GREEN)
        img = renderer.render(empty, meshes=[(*order[0], colors[0]), (*order[1], colors[1])])
        r, g, _ = centre(img)
        assert g > 2 * r + 20


def test_deformed_mesh_renders_differently_and_casts_a_shadow(renderer):
    empty = np.zeros((0, 3))
    background = renderer.render(empty)
    rest, dented = facing_grid(), facing_grid(dent=0.08)
    a = renderer.render(empty, meshes=[rest])
    b = renderer.render(empty, meshes=[dented])
    assert np.array_equal(a, renderer.render(empty, meshes=[rest]))  # deterministic
    # Smooth normals make the dent visible: its shading varies across it, the flat grid's little.
    diff = np.abs(a.astype(int) - b.astype(int)).sum(-1)
    assert (diff > 30).sum() > 20
    patch = (slice(SIZE // 2 - 8, SIZE // 2 + 8), slice(SIZE // 2 - 8, SIZE // 2 + 8))
    assert b[patch].astype(int).std(axis=(0, 1)).max() > a[patch].astype(int).std(axis=(0, 1)).max() + 5
    # The grid shadows the floor away from the light (light_dir (-0.35, -0.5, 1)): the floor
    # point in the shadow of the grid's centre is darker than without the grid.
    light = np.array([-0.35, -0.5, 1.0]) / np.linalg.norm([-0.35, -0.5, 1.0])
    c = on_axis(1.0)
    i, j = project(c - c[2] / light[2] * light)
    assert not (abs(i - SIZE / 2) < 17 and abs(j - SIZE / 2) < 17), "that floor point is not behind the grid"
    assert a[i, j].astype(int).sum() < background[i, j].astype(int).sum() - 60


def test_sensor_meshes_from_a_simulator(runtime, renderer):
    from engine import colliders, geometry, sampling
    from engine.config import SimConfig
    from engine.geometry.tetmesh import flat_pad
    from engine.materials import WATER
    from engine.render import sensor_meshes
    from engine.scene import SceneBuilder
    from engine.simulator import Simulator
    from engine.solvers.fem import Sensor

    # tests/test_fem.py's pad: 12 x 12 x 4 mm on a box mount whose top face is at z = 0.402 m.
    builder = SceneBuilder(SimConfig(grid_res=16, dt=2e-5, substeps=4))
    builder.add_particles(sampling.box((0.2, 0.2, 0.2), (0.24, 0.24, 0.24), 0.02), WATER, 0.02)
    mount = builder.add_collider(
        colliders.Collider(geometry.Box((0.008, 0.008, 0.002)), pose=(0.5, 0.5, 0.4, 1, 0, 0, 0))
    )
    pad = flat_pad(width=0.012, length=0.012, thickness=0.004, nx=4, ny=4, nz=2)
    builder.add_sensor(Sensor(mesh=pad, mount=mount, offset=(0.0, 0.0, 0.006, 1.0, 0.0, 0.0, 0.0)))
    sim = Simulator(builder.build(), batch_size=1)
    state = sim.initial_state()
    meshes = sensor_meshes(sim, state)
    mesh = sim.model.sensors[0].mesh
    assert len(meshes) == 1
    v, t, color = meshes[0]
    assert v.shape == (mesh.n_nodes, 3) and np.array_equal(t, mesh.boundary_faces)
    np.testing.assert_allclose(v, state.sensors.x[0, sim.fem.nodes_of(0)].numpy())
    assert np.array_equal(sensor_meshes(sim, state.sensors.x)[0][0], v)
    # The pad (12 mm, 4 mm thick, on a mount at z = 0.4 m) seen from 3 cm away.
    from engine.render import Renderer

    near = Renderer(width=SIZE, height=SIZE, camera_pos=(0.5, 0.475, 0.42), look_at=(0.5, 0.5, 0.404))
    img = near.render(np.zeros((0, 3)), meshes=meshes)
    r, g, b = img[SIZE // 2, SIZE // 2].astype(int)
    assert b > r + 10  # the grey-blue gel fills the centre
    with pytest.raises(ValueError, match="x must have shape"):
        sensor_meshes(sim, state.sensors.x[:, :5])
    with pytest.raises(ValueError, match="batch_index"):
        sensor_meshes(sim, state, batch_index=3)


def test_mesh_rejects_bad_input(renderer):
    empty = np.zeros((0, 3))
    v, t = facing_triangle(1.0)
    cases = [
        ([(v[:, :2], t)], r"meshes\[0\] vertices must have shape"),
        ([(np.where(np.arange(3)[:, None] == 1, np.nan, v), t)], r"meshes\[0\] vertices contain NaN"),
        ([(v, t), (v, t + 1)], r"meshes\[1\] triangles index vertices out of range"),
        ([(v, t - 1)], r"meshes\[0\] triangles index vertices out of range"),
        ([(v, t.astype(float))], r"meshes\[0\] triangles must be an integer array"),
        ([(v, t[:, :2])], r"meshes\[0\] triangles must have shape"),
        ([(v, t, (2.0, 0.0, 0.0))], r"meshes\[0\] color"),
        ([(v, t, (1.0, 0.0))], r"meshes\[0\] color"),
        ([v], r"meshes\[0\] must be"),
        (v, r"meshes"),
    ]
    for meshes, match in cases:
        with pytest.raises(ValueError, match=match):
            renderer.render(empty, meshes=meshes)


def test_compose_tactile_frame():
    from engine.panels import compose_tactile_frame

    scene = np.full((64, 80, 3), 200, np.uint8)
    tactile = np.full((16, 16, 3), 0.5)
    grid = np.stack(np.meshgrid(np.arange(2.0, 16.0, 4.0), np.arange(2.0, 16.0, 4.0)), -1).reshape(-1, 2)
    disp = np.zeros_like(grid)
    moved = 5  # the marker at (u, v) = (6, 6) moves 1 px right
    disp[moved] = (1.0, 0.0)
    frame = compose_tactile_frame(scene, tactile, grid + disp, disp, arrow_scale=5.0)
    assert frame.shape == (64, 80 + 2 + 64 + 2 + 64, 3) and frame.dtype == np.uint8
    assert np.array_equal(frame[:, :80], scene)
    np.testing.assert_allclose(frame[:, 82:146].astype(int), 128, atol=1)  # the tactile image, resized
    panel = frame[:, 148:].astype(int)
    arrow = (panel[..., 0] > 200) & (panel[..., 1] < 120)
    # Panel scale 4: the rest pixel (6, 6) maps to (25.5, 25.5); the arrow is 5 x 4 = 20 px long.
    rows, cols = np.nonzero(arrow)
    assert arrow.sum() > 20
    assert rows.min() >= 20 and rows.max() <= 31 and cols.min() >= 24 and cols.max() <= 47
    assert arrow[24:28, 27:44].any(axis=0).all(), "an unbroken shaft to the right"
    # Markers that did not move show only their dots; a longer scale gives a longer arrow.
    dots = panel.sum(-1) < 100
    assert dots[(grid[:, 1] * 4 + 1.5).astype(int), (grid[:, 0] * 4 + 1.5).astype(int)].all()
    longer = compose_tactile_frame(scene, tactile, grid + disp, disp, arrow_scale=8.0)[:, 148:].astype(int)
    assert ((longer[..., 0] > 200) & (longer[..., 1] < 120)).sum() > arrow.sum()
    # Over the image instead of a panel; torch inputs with a batch axis of 1; no markers.
    over = compose_tactile_frame(
        scene, torch.as_tensor(tactile)[None], torch.as_tensor(grid + disp)[None], torch.as_tensor(disp)[None],
        arrow_scale=5.0, markers_on="image", gap=0,
    )  # fmt: skip
    assert over.shape == (64, 144, 3)
    over_arrow = (over[:, 80:, 0].astype(int) > 200) & (over[:, 80:, 1].astype(int) < 120)
    assert np.array_equal(over_arrow, arrow)
    assert compose_tactile_frame(scene, tactile).shape == (64, 146, 3)


def test_compose_tactile_frame_rejects_bad_input():
    from engine.panels import compose_tactile_frame

    scene = np.zeros((32, 32, 3), np.uint8)
    tactile = np.zeros((8, 8, 3))
    px = np.zeros((4, 2))
    cases = [
        (dict(scene_frame=scene.astype(float)), "scene_frame"),
        (dict(tactile_image=np.zeros((8, 8))), "tactile_image"),
        (dict(tactile_image=np.full((8, 8, 3), np.nan)), "tactile_image"),
        (dict(markers_px=np.zeros((4, 3)), marker_disp_px=np.zeros((4, 3))), "markers_px"),
        (dict(marker_disp_px=np.zeros((3, 2))), "marker_disp_px"),
        (dict(marker_disp_px=None), "together"),
        (dict(arrow_scale=0.0), "arrow_scale"),
        (dict(markers_on="left"), "markers_on"),
    ]
    for override, match in cases:
        args = dict(scene_frame=scene, tactile_image=tactile, markers_px=px, marker_disp_px=px) | override
        with pytest.raises(ValueError, match=match):
            compose_tactile_frame(**args)


# --------------------------------------------------------------------------------------------
# Particle surfaces (liquids and soft solids), edge cases, cameras
# --------------------------------------------------------------------------------------------

H_LAYER = 1.0 / 64  # particle spacing of the resting layer [m] (grid dx / 2 at 32 cells)


def resting_layer(seed=0):
    """A 0.3 x 0.3 x 0.04 m block sampled at H_LAYER with the jitter the scene sampler uses."""
    from engine.sampling import box

    return box((0.35, 0.35, 0.02), (0.65, 0.65, 0.06), H_LAYER, jitter=0.5, rng=seed)


def top_down(runtime):
    from engine.render import Renderer

    # Radius 0.7 x spacing, as tasks draw their particles (0.35 dx at spacing dx / 2).
    return Renderer(
        width=SIZE, height=SIZE, camera_pos=(0.5, 0.5, 0.8), look_at=(0.5, 0.5, 0.0), particle_radius=0.7 * H_LAYER
    )


def test_resting_liquid_layer_is_a_continuous_surface(runtime):
    """Every pixel inside the silhouette of a two-particle-thick liquid layer shows the liquid,
    not the floor between particles; small beads at the same positions leave gaps."""
    renderer = top_down(runtime)
    x = resting_layer()
    x = x[x[:, 2] < 0.02 + 2 * H_LAYER]  # two particle layers
    colors = np.tile(RED, (len(x), 1))
    optics = np.tile([0.0, 1.0], (len(x), 1))  # opaque: a pixel is red only if it sees liquid
    # Pixels that see the layer's top face, 2 px inside its edge (camera straight above).
    focal = 0.5 * SIZE / np.tan(np.radians(22.5))
    half_px = focal * 0.15 / (0.8 - 0.05) - 2
    c = np.arange(SIZE) + 0.5 - 0.5 * SIZE
    inside = (np.abs(c)[:, None] < half_px) & (np.abs(c)[None, :] < half_px)

    def liquid(img):
        img = img.astype(int)
        return (img[..., 0] > img[..., 1] + 40) & (img[..., 0] > img[..., 2] + 40)

    covered = liquid(renderer.render(x, colors, optics=optics))[inside].mean()
    assert covered > 0.995, covered
    renderer.particle_radius = 0.2 * H_LAYER
    beads = liquid(renderer.render(x, colors, optics=optics))[inside].mean()
    assert beads < covered - 0.05, (beads, covered)


def test_front_layer_colours_the_surface(runtime):
    """Milk drawn on coffee (latte art): the top layer's colour shows where milk lies on top,
    the coffee's elsewhere, with no mixing through the depth."""
    from engine.materials import COFFEE, MILK

    renderer = top_down(runtime)
    x = resting_layer()
    top = x[:, 2] > 0.06 - 1.5 * H_LAYER
    stripe = top & (x[:, 0] < 0.5)  # milk on the top layer of the left half
    colors = np.where(stripe[:, None], MILK.color, COFFEE.color)
    img = renderer.render(x, colors, optics=np.tile([0.0, 1.0], (len(x), 1))).astype(float)
    mid = SIZE // 2
    left, right = img[mid - 4 : mid + 4, mid - 10 : mid - 4], img[mid - 4 : mid + 4, mid + 4 : mid + 10]
    assert left.mean() > 2.0 * right.mean(), (left.mean(), right.mean())  # the x axis runs left to right
    assert right[..., 0].mean() > right[..., 2].mean() + 10  # coffee brown, not grey


def test_particle_optics_from_materials(runtime):
    from engine.config import SimConfig
    from engine.materials import ICE_CREAM, MILK, WATER
    from engine.render import particle_optics
    from engine.sampling import box
    from engine.scene import SceneBuilder

    builder = SceneBuilder(SimConfig(grid_res=16))
    for k, m in enumerate((WATER, MILK, ICE_CREAM)):
        builder.add_particles(box((0.2 + 0.2 * k, 0.3, 0.3), (0.3 + 0.2 * k, 0.4, 0.4), 0.05), m, 0.05)
    model = builder.build()
    optics = particle_optics(model)
    assert optics.shape == (model.n_particles, 2)
    clarity = [optics[model.material_id == k, 0] for k in range(3)]
    gloss = [optics[model.material_id == k, 1] for k in range(3)]
    assert clarity[0].min() > 0.5 and clarity[1].max() == 0.0 and clarity[2].max() == 0.0
    assert gloss[1].min() > gloss[2].max()  # liquids shine more than ice cream


def test_render_edge_cases(runtime, renderer):
    """Empty scene, a single particle, particles outside the view and extreme positions."""
    empty = renderer.render(np.zeros((0, 3)))
    assert empty.shape == (SIZE, SIZE, 3) and empty.dtype == np.uint8
    one = renderer.render(np.array([on_axis(1.0)]), np.array([RED]))
    changed = np.abs(one.astype(int) - empty.astype(int)).sum(-1) > 30
    assert 10 < changed.sum() < 0.5 * SIZE * SIZE and is_red(centre(one))
    outside = np.array([CAM - 0.5 * AXIS, CAM + 2.0 * RIGHT + 0.1 * AXIS, on_axis(1.0) + 5.0 * UP])
    assert np.array_equal(renderer.render(outside), empty)  # behind the camera or out of frame
    extreme = np.array([CAM + 1e-4 * AXIS, on_axis(5e3), CAM + 2e-3 * AXIS + 1e-3 * RIGHT, on_axis(1e-2)])
    img = renderer.render(extreme, optics=np.tile([0.9, 1.0], (4, 1)))
    assert img.shape == (SIZE, SIZE, 3) and img.dtype == np.uint8
    assert np.array_equal(img, renderer.render(extreme, optics=np.tile([0.9, 1.0], (4, 1))))
    with pytest.raises(ValueError, match="optics"):
        renderer.render(extreme, optics=np.full((4, 2), 2.0))


def test_orbit_zoom_and_views(runtime, renderer):
    from engine.render_camera import orbit, tile

    eye = orbit(CAM, TARGET, azimuth_deg=90.0, elevation_deg=0.0, zoom=2.0)
    assert np.linalg.norm(np.subtract(eye, TARGET)) == pytest.approx(0.5 * np.linalg.norm(CAM - TARGET))
    assert eye[2] - TARGET[2] == pytest.approx(0.5 * (CAM[2] - TARGET[2]))  # same elevation angle
    assert np.allclose(orbit(CAM, TARGET, azimuth_deg=360.0), CAM)
    assert orbit(CAM, TARGET, elevation_deg=200.0)[2] < CAM[2] + np.linalg.norm(CAM - TARGET)  # clamped
    with pytest.raises(ValueError, match="zoom"):
        orbit(CAM, TARGET, zoom=0.0)
    x, c = blob(200)
    front = renderer.render(x, c)
    renderer.set_camera(orbit(CAM, TARGET, azimuth_deg=90.0), TARGET)
    side = renderer.render(x, c)
    renderer.set_camera(tuple(CAM), tuple(TARGET))
    assert not np.array_equal(front, side)
    assert np.array_equal(renderer.render(x, c), front)
    both = tile([front, side])
    assert both.shape == (SIZE, 2 * SIZE + 2, 3) and np.array_equal(both[:, SIZE + 2 :], side)
    with pytest.raises(ValueError, match="height"):
        tile([front, side[:-1]])


def test_clear_liquid_casts_no_shadow(runtime):
    """A ball of water (clear) lets the light through: outside its silhouette the floor looks as
    in the empty scene, while the same ball drawn opaque darkens the floor in its shadow."""
    from engine import sampling
    from engine.render import Renderer

    spacing = 0.0125
    x = sampling.sphere((0.5, 0.5, 0.35), 0.05, spacing)
    colors = np.tile((0.55, 0.75, 0.95), (len(x), 1))
    renderer = Renderer(
        width=SIZE, height=SIZE, camera_pos=(0.5, 0.5, 1.2), look_at=(0.5, 0.5, 0.0), particle_radius=0.7 * spacing
    )
    empty = renderer.render(np.zeros((0, 3))).astype(float)
    clear = renderer.render(x, colors, optics=np.tile((0.9, 1.0), (len(x), 1))).astype(float)
    opaque = renderer.render(x, colors, optics=np.tile((0.0, 1.0), (len(x), 1))).astype(float)
    # The ball projects within ~5 px of the image centre (camera straight above); its shadow
    # falls 10-16 px away along the light's horizontal direction.
    c = np.arange(SIZE) + 0.5 - 0.5 * SIZE
    outside = np.hypot(c[:, None], c[None, :]) > 8
    shadow = (empty - opaque).mean(-1) > 20
    assert (shadow & outside).sum() >= 20, (shadow & outside).sum()
    assert np.abs(clear - empty).max(-1)[outside].max() <= 2
