"""Tests of engine/tactile.py: cameras, markers, forces, depth map and tactile image.

Synthetic surfaces only (a structured grid of nodes, two triangles per cell, outward normal +z;
a spherical cap for the dome), built by the helpers below. Gradient checks run in f64 with
``torch.autograd.gradcheck``; the image and depth checks use its fast mode (a random projection
of the Jacobian) to stay quick.
"""

from __future__ import annotations

import math

import pytest
import torch

from engine import tactile
from engine.tactile import (
    FisheyeCamera,
    Light,
    MarkerLayout,
    PhongShading,
    PinholeCamera,
    TactileSensorView,
    gelsight_lights,
    net_wrench,
    normal_shear_forces,
    vertex_normals,
)

SIZE = 0.02  # pad edge [m]
CAM_DIST = 0.03  # camera behind the pad [m]


# --------------------------------------------------------------------------------------------
# synthetic surfaces


def grid_tris(nx: int, ny: int) -> torch.Tensor:
    """Two triangles per cell of an ``nx x ny`` node grid (node ``j * nx + i``), normal +z."""
    tris = []
    for j in range(ny - 1):
        for i in range(nx - 1):
            p00, p10, p01, p11 = j * nx + i, j * nx + i + 1, (j + 1) * nx + i, (j + 1) * nx + i + 1
            tris += [(p00, p10, p11), (p00, p11, p01)]
    return torch.tensor(tris, dtype=torch.int64)


def flat_pad(n: int = 6, size: float = SIZE, dtype=torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    """``n x n`` nodes on the square ``[-size/2, size/2]^2`` at ``z = 0``, and its triangles."""
    s = torch.linspace(-size / 2, size / 2, n, dtype=dtype)
    y, x = torch.meshgrid(s, s, indexing="ij")
    return torch.stack([x, y, torch.zeros_like(x)], -1).reshape(-1, 3), grid_tris(n, n)


def dome(n: int = 7, radius: float = 0.02, half_width: float = 0.012, dtype=torch.float64):
    """A spherical cap (centre at the origin, opening toward +z) over an ``n x n`` xy grid."""
    s = torch.linspace(-half_width, half_width, n, dtype=dtype)
    y, x = torch.meshgrid(s, s, indexing="ij")
    z = torch.sqrt(radius**2 - x**2 - y**2)
    return torch.stack([x, y, z], -1).reshape(-1, 3), grid_tris(n, n)


def gaussian_press(rest: torch.Tensor, depth=1.5e-3, sigma=3e-3, shear=(4e-4, -2e-4), centre=(1e-3, -5e-4)):
    """Rest nodes pushed toward the camera by a Gaussian bump (with some lateral shear), ``(1, S, 3)``."""
    r2 = (rest[:, 0] - centre[0]) ** 2 + (rest[:, 1] - centre[1]) ** 2
    g = torch.exp(-r2 / (2 * sigma**2))
    d = torch.stack([shear[0] * g, shear[1] * g, -depth * g], -1)
    return (rest + d).unsqueeze(0)


def sphere_press(rest: torch.Tensor, radius=6e-3, depth=1.2e-3):
    """A sphere of ``radius`` pressed ``depth`` into a flat pad at the origin, ``(1, S, 3)``."""
    r2 = rest[:, 0] ** 2 + rest[:, 1] ** 2
    cz = radius - depth
    inside = r2 < radius**2
    zs = cz - torch.sqrt(torch.clamp(radius**2 - r2, min=0.0))
    z = torch.where(inside, torch.minimum(rest[:, 2], zs), rest[:, 2])
    return torch.stack([rest[:, 0], rest[:, 1], z], -1).unsqueeze(0)


def pad_camera(width=12, height=12, fov=30.0):
    return PinholeCamera.from_fov(width, height, fov, position=(0.0, 0.0, -CAM_DIST))


def pad_view(n=6, width=12, height=12, dtype=torch.float64, rest=None, **kw) -> TactileSensorView:
    x0, tris = flat_pad(n, dtype=dtype)
    if rest is not None:
        x0 = rest
    markers = MarkerLayout.grid(x0.detach(), tris, rows=3, cols=4, spacing=3e-3)
    return TactileSensorView(x0, tris, pad_camera(width, height), markers=markers, **kw)


# --------------------------------------------------------------------------------------------
# cameras


def test_pinhole_translation_shifts_pixels():
    cam = PinholeCamera(64, 48, fx=80.0, fy=90.0, position=(0.0, 0.0, -CAM_DIST))
    p = torch.tensor([[1e-3, 2e-3, 0.0], [-4e-3, 3e-3, 1e-3]], dtype=torch.float64)
    dx = 1.5e-3
    shift = cam.project(p + torch.tensor([dx, 0.0, 0.0], dtype=torch.float64)) - cam.project(p)
    z = p[:, 2] + CAM_DIST
    torch.testing.assert_close(shift[:, 0], 80.0 * dx / z, rtol=1e-12, atol=0)
    torch.testing.assert_close(shift[:, 1], torch.zeros(2, dtype=torch.float64), rtol=0, atol=1e-12)
    # principal point at the image centre; unproject inverts project (as a direction)
    assert cam.project(torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)).tolist() == [31.5, 23.5]
    d = cam.unproject(cam.project(p))
    torch.testing.assert_close(d, torch.nn.functional.normalize(p - p.new_tensor(cam.position), dim=-1))


def test_fisheye_is_equidistant():
    cam = FisheyeCamera(100, 80, f=40.0, cx=49.0, cy=41.0, max_angle_deg=120.0)
    g = torch.Generator().manual_seed(0)
    p = torch.randn(50, 3, generator=g, dtype=torch.float64)
    px = cam.project(p)
    r = torch.linalg.vector_norm(px - px.new_tensor([49.0, 41.0]), dim=-1)
    theta = torch.acos(p[:, 2] / torch.linalg.vector_norm(p, dim=-1))
    torch.testing.assert_close(r, 40.0 * theta, rtol=1e-12, atol=1e-12)
    # azimuth kept, inverse ray direction recovers the point's direction
    torch.testing.assert_close(cam.unproject(px), torch.nn.functional.normalize(p, dim=-1))
    # smooth on the optical axis: value and finite gradient
    q = torch.tensor([[0.0, 0.0, 0.01], [1e-9, -2e-9, 0.01]], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(cam.project, (q,))
    torch.testing.assert_close(cam.project(q.detach())[0], torch.tensor([49.0, 41.0], dtype=torch.float64))


def test_rays_are_unit_and_fisheye_masks_outside_fov():
    d, valid = FisheyeCamera.from_fov(32, 32, 120.0).rays()
    torch.testing.assert_close(torch.linalg.vector_norm(d, dim=-1), torch.ones(32, 32, dtype=torch.float64))
    angle = torch.rad2deg(torch.acos(d[..., 2].clamp(-1, 1)))
    assert torch.equal(valid, angle <= 60.0 + 1e-9)
    assert not valid.all() and valid.any()


@pytest.mark.parametrize(
    ("make", "field"),
    [
        (lambda: PinholeCamera(0, 10, fx=10.0), "width"),
        (lambda: PinholeCamera(10, 2.5, fx=10.0), "height"),
        (lambda: PinholeCamera(10, 10, fx=-1.0), "fx"),
        (lambda: PinholeCamera(10, 10, fx=1.0, fy=0.0), "fy"),
        (lambda: PinholeCamera(10, 10, fx=1.0, cx=float("nan")), "cx"),
        (lambda: PinholeCamera(10, 10, fx=1.0, position=(0.0, 1.0)), "position"),
        (lambda: PinholeCamera.from_fov(10, 10, 180.0), "fov_deg"),
        (lambda: FisheyeCamera(10, 10, f=0.0), "f"),
        (lambda: FisheyeCamera(10, 10, f=1.0, max_angle_deg=190.0), "max_angle_deg"),
        (lambda: Light(color=(1.0, 0.0, 0.0)), "direction"),
        (lambda: Light(color=(1.0, -1.0, 0.0), direction=(0, 0, -1)), "color"),
        (lambda: Light(color=(1.0, 1.0, 1.0), position=(0, 0, -1), falloff=0.0), "falloff"),
        (lambda: PhongShading(shininess=0.5), "shininess"),
        (lambda: PhongShading(diffuse=-1.0), "diffuse"),
        (lambda: PhongShading(ambient=(2.0, 0.0, 0.0)), "ambient"),
        (lambda: gelsight_lights(elevation_deg=0.0), "elevation_deg"),
    ],
)
def test_bad_parameters_raise_naming_the_field(make, field):
    with pytest.raises(ValueError, match=field):
        make()


# --------------------------------------------------------------------------------------------
# markers


def test_marker_grid_and_closest_point_attachment():
    x0, tris = flat_pad(6)
    m = MarkerLayout.grid(x0, tris, rows=3, cols=4, spacing=3e-3, center=(1e-3, 0.0))
    assert len(m) == 12
    pos = m.positions(x0)
    xs = 1e-3 + 3e-3 * (torch.arange(4, dtype=torch.float64) - 1.5)
    ys = 3e-3 * (torch.arange(3, dtype=torch.float64) - 1.0)
    expected = torch.stack([xs.repeat(3), ys.repeat_interleave(4), torch.zeros(12, dtype=torch.float64)], -1)
    torch.testing.assert_close(pos, expected, rtol=0, atol=1e-15)
    # a point above the surface attaches to its foot; one beyond the rim to the nearest rim point
    pts = torch.tensor([[2e-3, 1e-3, 5e-4], [0.02, 0.0, 0.0]], dtype=torch.float64)
    foot = MarkerLayout.from_points(pts, x0, tris).positions(x0)
    torch.testing.assert_close(foot, torch.tensor([[2e-3, 1e-3, 0.0], [0.01, 0.0, 0.0]], dtype=torch.float64))
    with pytest.raises(ValueError, match="outside the surface"):
        MarkerLayout.grid(x0, tris, rows=2, cols=2, spacing=0.03)
    with pytest.raises(ValueError, match="rows"):
        MarkerLayout.grid(x0, tris, rows=0, cols=2, spacing=1e-3)
    with pytest.raises(ValueError, match="spacing"):
        MarkerLayout.grid(x0, tris, rows=2, cols=2, spacing=-1e-3)


def test_uniform_translation_shifts_marker_pixels():
    view = pad_view()
    x0 = view.surface_rest.unsqueeze(0)
    dx = 7e-4
    s = view.signals(x0 + torch.tensor([dx, 0.0, 0.0], dtype=torch.float64), torch.zeros_like(x0))
    fx = view.camera.fx
    disp = s["marker_disp_px"]
    torch.testing.assert_close(disp[..., 0], torch.full_like(disp[..., 0], fx * dx / CAM_DIST), rtol=1e-12, atol=0)
    torch.testing.assert_close(disp[..., 1], torch.zeros_like(disp[..., 1]), rtol=0, atol=1e-12)
    torch.testing.assert_close(s["markers_px"] - disp, view.marker_pixels(x0).expand_as(disp))


# --------------------------------------------------------------------------------------------
# forces


def test_forces_net_wrench_and_split():
    x0, tris = flat_pad(4)
    g = torch.Generator().manual_seed(1)
    x = x0.unsqueeze(0) + 1e-4 * torch.randn(2, 16, 3, generator=g, dtype=torch.float64)
    f = torch.randn(2, 16, 3, generator=g, dtype=torch.float64)
    w = net_wrench(x, f)
    torch.testing.assert_close(w[:, :3], f.sum(1))
    # a single force at a known point: tau = x x f
    f1 = torch.zeros(1, 16, 3, dtype=torch.float64)
    f1[0, 5] = torch.tensor([0.0, 0.0, -2.0], dtype=torch.float64)
    x1 = x0.clone().unsqueeze(0)
    x1[0, 5] = torch.tensor([0.004, -0.001, 0.0], dtype=torch.float64)
    w1 = net_wrench(x1, f1)[0]
    torch.testing.assert_close(w1, torch.tensor([0.0, 0.0, -2.0, 0.002, 0.008, 0.0], dtype=torch.float64))
    # pressing force on a flat pad (outward normal +z) is -f_z; the shear is the xy part
    n = vertex_normals(x0, tris)
    torch.testing.assert_close(n, torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64).expand(16, 3))
    normal, shear = normal_shear_forces(f, n)
    torch.testing.assert_close(normal, -f[..., 2])
    torch.testing.assert_close(shear, f * torch.tensor([1.0, 1.0, 0.0], dtype=torch.float64))


# --------------------------------------------------------------------------------------------
# rest, imprint, depth


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_rest_gives_background_zero_displacement_zero_wrench(dtype):
    view = pad_view(width=16, height=12, dtype=dtype)
    x0 = view.surface_rest.unsqueeze(0).expand(3, -1, -1)
    s = view.signals(x0, torch.zeros_like(x0))
    assert set(s) == set(tactile.ALL_SIGNALS)
    assert s["image"].shape == (3, 12, 16, 3) and s["image"].dtype == dtype
    assert s["depth"].shape == (3, 12, 16)
    assert torch.equal(s["marker_disp_px"], torch.zeros_like(s["marker_disp_px"]))
    assert torch.equal(s["depth"], torch.zeros_like(s["depth"]))
    assert torch.equal(s["net_wrench"], torch.zeros_like(s["net_wrench"]))
    background = view._rest(dtype, torch.device("cpu"))["background"].reshape(12, 16, 3)
    assert torch.equal(s["image"], background.expand_as(s["image"]))
    assert view.coverage.all()
    # the default background is ambient + rest shading: three grazing lights at 25 degrees
    grey = 0.25 + 0.7 * math.sin(math.radians(25.0))
    torch.testing.assert_close(background, torch.full_like(background, grey), rtol=1e-6, atol=1e-6)


def test_press_shows_an_imprint_and_depth():
    view = pad_view(n=16, width=32, height=32)
    x0 = view.surface_rest
    x = sphere_press(x0, radius=6e-3, depth=1.2e-3)
    image, depth = view.render(x)
    rest_image, _ = view.render(x0.unsqueeze(0))
    change = (image - rest_image).abs().amax(-1)[0]
    assert change.max() > 0.2  # visible shading
    assert (depth > 0).sum() > 20 and depth.min() >= 0
    assert float(depth.max()) == pytest.approx(1.2e-3, rel=0.15)  # centre pixel sees the bottom of the cap
    # the imprint's colours follow the light azimuths: the red light sits at +y (azimuth 90 deg);
    # on the dimple's +y flank (lower rows) the camera-side normal tilts toward +y, so it turns
    # redder, and the -y flank (upper rows) less red
    red = image[0, ..., 0] - rest_image[0, ..., 0]
    assert red[18:24, 14:18].mean() > 0.05 and red[8:14, 14:18].mean() < -0.05
    # no change far from the contact
    assert change[0, 0] == 0 and change[-1, -1] == 0


def test_depth_of_rigid_motions_of_the_pad():
    view = pad_view(n=6, width=10, height=10)
    x0 = view.surface_rest.unsqueeze(0)
    d, _ = view.camera.rays()
    # toward the camera by dz: the range shrinks by dz / cos(ray angle)
    dz = 5e-4
    r = view.rasterize(x0 - torch.tensor([0.0, 0.0, dz], dtype=torch.float64))
    torch.testing.assert_close(r["depth"][0], dz / d[..., 2], rtol=1e-10, atol=1e-15)
    # sliding sideways: a flat pad looks the same
    img0, _ = view.render(x0)
    img, depth = view.render(x0 + torch.tensor([1.5e-3, -1e-3, 0.0], dtype=torch.float64))
    torch.testing.assert_close(depth, torch.zeros_like(depth), rtol=0, atol=1e-15)
    torch.testing.assert_close(img, img0, rtol=0, atol=1e-12)


def test_walk_follows_a_bump_sliding_over_several_triangles():
    """A bump moved with the nodes by whole cells is the same piecewise-linear surface as the bump
    drawn that far over on the unmoved grid, so interior pixels must see the same thing; the
    pixels' rest triangles are two or more triangles away, so this needs the walk."""
    x0, tris = flat_pad(11)  # 2 mm cells
    cam = pad_camera(24, 24)
    cell = SIZE / 10

    def bump(centre):
        r2 = (x0[:, 0] - centre[0]) ** 2 + (x0[:, 1] - centre[1]) ** 2
        return x0 - torch.stack([0 * r2, 0 * r2, 1e-3 * torch.exp(-r2 / (2 * 2.5e-3**2))], -1)

    shift = torch.tensor([2 * cell, cell, 0.0], dtype=torch.float64)
    moved = (bump((0.0, 0.0)) + shift).unsqueeze(0)
    drawn = bump((2 * cell, cell)).unsqueeze(0)
    view = TactileSensorView(x0, tris, cam)
    a, b = view.rasterize(moved), view.rasterize(drawn)
    p = b["point"][0]
    inner = (p[..., 0] > -6e-3 + cell) & (p[..., 1] > -8e-3 + cell)  # one cell inside the moved pad
    assert inner.sum() > 200
    for key in ("depth", "normal_map", "point"):
        torch.testing.assert_close(a[key][0][inner], b[key][0][inner], rtol=0, atol=1e-12)
    torch.testing.assert_close(view.render(moved)[0][0][inner], view.render(drawn)[0][0][inner], rtol=0, atol=1e-12)
    assert (b["depth"][0][inner] > 1e-4).sum() > 20  # the bump is in view
    # without enough walking steps the pixels stay on wrong triangles
    short = TactileSensorView(x0, tris, cam, walk_steps=1)
    assert (short.rasterize(moved)["depth"][0][inner] - b["depth"][0][inner]).abs().max() > 1e-5


def test_dome_with_fisheye():
    x0, tris = dome(n=7)
    cam = FisheyeCamera.from_fov(24, 24, 80.0)
    markers = MarkerLayout.grid(x0, tris, rows=3, cols=3, spacing=5e-3)
    view = TactileSensorView(x0, tris, cam, markers=markers)
    rest = x0.unsqueeze(0)
    s0 = view.signals(rest, torch.zeros_like(rest))
    assert torch.equal(s0["marker_disp_px"], torch.zeros_like(s0["marker_disp_px"]))
    background = view._rest(torch.float64, torch.device("cpu"))["background"].reshape(24, 24, 3)
    assert torch.equal(s0["image"][0], background)
    cover = view.coverage
    assert cover.any() and not cover.all()  # the cap's square footprint inside the fisheye circle
    # a uniform shrink toward the camera centre scales every range: depth = eps * rest range
    eps = 0.02
    r0 = view.rasterize(rest)["range"][0]
    s = view.signals((1 - eps) * rest, torch.zeros_like(rest))
    torch.testing.assert_close(s["depth"][0], eps * r0, rtol=1e-10, atol=1e-15)
    # markers move radially in 3D, along their rays: no pixel motion
    torch.testing.assert_close(s["marker_disp_px"], torch.zeros_like(s["marker_disp_px"]), rtol=0, atol=1e-9)
    # normals stay close to radial (vertex normals of a coarse 7 x 7 cap: worst at its rim)
    n = s["normal_map"][0][cover]
    radial = torch.nn.functional.normalize(view.rasterize(rest)["point"][0][cover], dim=-1)
    angle = torch.acos((n * radial).sum(-1).clamp(-1, 1))
    assert angle.max() < math.radians(6.0) and angle.mean() < math.radians(2.0)


# --------------------------------------------------------------------------------------------
# gradients (f64)


def _pressed_inputs(view, batch=1):
    x = gaussian_press(view.surface_rest).expand(batch, -1, -1).clone()
    if batch > 1:
        x[1:] += 2e-4 * torch.sin(torch.arange(x[1:].numel(), dtype=torch.float64)).reshape(x[1:].shape)
    g = torch.Generator().manual_seed(3)
    f = torch.randn(x.shape, generator=g, dtype=torch.float64)
    return x.requires_grad_(), f.requires_grad_()


def test_gradcheck_markers_and_forces():
    view = pad_view()
    x, f = _pressed_inputs(view, batch=2)
    assert torch.autograd.gradcheck(lambda x: view.signals(x, f.detach(), keys=["markers_px"])["markers_px"], (x,))
    assert torch.autograd.gradcheck(lambda x, f: view.signals(x, f, keys=["net_wrench"])["net_wrench"], (x, f))
    assert torch.autograd.gradcheck(
        lambda f: tuple(view.signals(x.detach(), f, keys=["normal_force", "shear_force"]).values()), (f,)
    )


def test_gradcheck_with_respect_to_rest_geometry():
    x0, tris = flat_pad(5)
    rest = gaussian_press(x0, depth=5e-4)[0].requires_grad_()  # a slightly curved rest surface
    x = gaussian_press(rest.detach(), depth=3e-4, centre=(2e-3, 1e-3)).detach()
    f = torch.randn(x.shape, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    markers = MarkerLayout.grid(rest.detach(), tris, rows=2, cols=2, spacing=4e-3)

    def fn(rest):
        view = TactileSensorView(rest, tris, pad_camera(8, 8), markers=markers)
        s = view.signals(x, f, keys=["marker_disp_px", "normal_force", "depth"])
        return tuple(s.values())

    assert torch.autograd.gradcheck(fn, (rest,), fast_mode=True)


@pytest.mark.parametrize("key", ["depth", "normal_map", "image"])
def test_gradcheck_depth_normals_image(key):
    shading = PhongShading(specular=0.3, shininess=8.0) if key == "image" else PhongShading()
    view = pad_view(width=12, height=10, shading=shading)
    x, f = _pressed_inputs(view, batch=2)

    def fn(x):
        return view.signals(x, f.detach(), keys=[key])[key]

    assert torch.autograd.gradcheck(fn, (x,), fast_mode=True)
    out = fn(x)
    assert out.abs().sum() > 0
    assert (torch.autograd.grad(out.square().sum(), x)[0] != 0).any()


def test_gradcheck_image_point_lights_and_dome():
    x0, tris = dome(n=6)
    lights = (
        Light(color=(1.0, 0.3, 0.2), position=(0.01, 0.0, -0.005), falloff=0.02),
        Light(color=(0.1, 0.3, 1.0), direction=(-1.0, 0.5, -0.6)),
    )
    view = TactileSensorView(x0, tris, FisheyeCamera.from_fov(10, 10, 70.0), shading=PhongShading(lights=lights))
    x = (x0 * (1 - 0.03 * torch.exp(-(x0[:, 0] ** 2 + x0[:, 1] ** 2) / 2e-5)).unsqueeze(-1)).unsqueeze(0)
    x = x.requires_grad_()
    assert torch.autograd.gradcheck(lambda x: view.render(x)[0], (x,), fast_mode=True)


# --------------------------------------------------------------------------------------------
# input validation


def test_bad_inputs_raise_naming_the_argument():
    view = pad_view()
    x0 = view.surface_rest.unsqueeze(0)
    f0 = torch.zeros_like(x0)
    with pytest.raises(ValueError, match="surface_x"):
        view.signals(x0[0], f0)
    with pytest.raises(ValueError, match="surface_x"):
        view.signals(x0[:, :5], f0)
    with pytest.raises(ValueError, match="surface_x"):
        view.signals(torch.full_like(x0, float("nan")), f0)
    with pytest.raises(ValueError, match="surface_x"):
        view.signals(x0.long(), f0)
    with pytest.raises(ValueError, match="surface_f"):
        view.signals(x0, f0[..., :2])
    with pytest.raises(ValueError, match="surface_f"):
        view.signals(x0, torch.full_like(f0, float("inf")))
    with pytest.raises(ValueError, match="surface_f"):
        view.signals(x0, f0.float())
    with pytest.raises(ValueError, match="keys"):
        view.signals(x0, f0, keys=["colour"])
    x, tris = flat_pad(4)
    with pytest.raises(ValueError, match="surface_tris"):
        TactileSensorView(x, tris.int(), pad_camera())
    with pytest.raises(ValueError, match="surface_tris"):
        TactileSensorView(x, tris + 100, pad_camera())
    with pytest.raises(ValueError, match="surface_rest"):
        TactileSensorView(x[:, :2], tris, pad_camera())
    with pytest.raises(ValueError, match="background"):
        TactileSensorView(x, tris, pad_camera(), background=torch.zeros(5, 5, 3))
    with pytest.raises(ValueError, match="walk_steps"):
        TactileSensorView(x, tris, pad_camera(), walk_steps=0)
    with pytest.raises(ValueError, match="camera"):
        TactileSensorView(x, tris, camera="pinhole")
    with pytest.raises(ValueError, match="markers"):
        TactileSensorView(x, tris, pad_camera()).signals(x[None], torch.zeros_like(x[None]), keys=["markers_px"])


def test_given_background_and_cuda_if_available():
    x0, tris = flat_pad(6, dtype=torch.float32)
    bg = torch.rand(12, 12, 3, generator=torch.Generator().manual_seed(5))
    view = TactileSensorView(x0, tris, pad_camera(), background=bg)
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for device in devices:
        x = x0.to(device).unsqueeze(0)
        img, _ = view.render(x)
        assert img.device.type == device
        assert torch.equal(img[0].cpu(), bg)
        img, depth = view.render(sphere_press(x0, radius=6e-3, depth=1e-3).to(device))
        assert (depth > 0).any() and not torch.equal(img[0].cpu(), bg)
