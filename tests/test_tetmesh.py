"""Tests of engine.geometry.tetmesh: the TetMesh validators, the pad and dome generators and
tetrahedralize (numpy/scipy only, no Taichi runtime).

Checked: positive volumes; exact pad volume; dome volume against (2/3) pi (R^3 - r^3) within the
chord error of the faceted spheres, converging as rings^-2; conformity (every face shared by one
or two tets, boundary faces exactly the expected sets); outward surface and boundary triangles
(divergence theorem); mount and contact sets; node counts; build time of a >= 20k-tet pad; the
scipy and (optional) fTetWild tetrahedralization; ValueErrors naming the field.
"""

import math
import sys
import time

import numpy as np
import pytest
import trimesh

from engine.geometry import tetmesh as T


def _face_counts(tets):
    """Independent face count: {sorted face: number of tets}."""
    counts = {}
    for t in np.asarray(tets):
        for f in ((t[1], t[2], t[3]), (t[0], t[2], t[3]), (t[0], t[1], t[3]), (t[0], t[1], t[2])):
            key = tuple(sorted(int(v) for v in f))
            counts[key] = counts.get(key, 0) + 1
    return counts


def _normals(nodes, tris):
    """Area-weighted normals (b - a) x (c - a) / 2 and centroids of triangles."""
    x = nodes[tris]
    return 0.5 * np.cross(x[:, 1] - x[:, 0], x[:, 2] - x[:, 0]), x.mean(axis=1)


def _check_closed_outward(mesh):
    """Boundary normals sum to zero and the divergence theorem gives the tets' volume, which holds
    only if every boundary triangle points outward."""
    n, c = _normals(mesh.nodes, mesh.boundary_faces)
    scale = np.abs(n).sum()
    assert np.abs(n.sum(axis=0)).max() <= 1e-12 * scale
    v_surface = (n * c).sum() / 3.0
    assert v_surface == pytest.approx(mesh.total_volume, rel=1e-10)


def _check_conforming(mesh):
    counts = _face_counts(mesh.tets)
    assert set(counts.values()) <= {1, 2}
    boundary = {k for k, v in counts.items() if v == 1}
    assert boundary == {tuple(sorted(f)) for f in mesh.boundary_faces.tolist()}
    assert len(mesh.boundary_faces) == len(boundary)


def _tet(x0=(0.0, 0.0, 0.0)):
    nodes = np.array([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]) + np.asarray(x0)
    return nodes, np.array([[0, 1, 2, 3]])


# ---------------------------------------------------------------------------------------------
# utilities
# ---------------------------------------------------------------------------------------------


def test_single_tet_faces_outward():
    nodes, tets = _tet()
    assert T.tet_volumes(nodes, tets) == pytest.approx([1.0 / 6.0])
    faces = T.boundary_faces(tets)
    assert faces.shape == (4, 3)
    n, c = _normals(nodes, faces)
    centre = nodes.mean(axis=0)
    assert np.all((n * (c - centre)).sum(axis=1) > 0.0)


def test_boundary_faces_of_two_tets_drops_the_shared_face():
    nodes = np.array([[0.0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1], [0, 0, -1]])
    tets = np.array([[0, 1, 2, 3], [0, 2, 1, 4]])
    assert np.all(T.tet_volumes(nodes, tets) > 0)
    faces = T.boundary_faces(tets)
    assert len(faces) == 6
    assert (0, 1, 2) not in {tuple(sorted(f)) for f in faces.tolist()}


def test_boundary_faces_rejects_non_manifold():
    tets = np.array([[0, 1, 2, 3], [0, 2, 1, 4], [0, 1, 2, 5]])
    with pytest.raises(ValueError, match="shared by 3 tets"):
        T.boundary_faces(tets)


# ---------------------------------------------------------------------------------------------
# flat pad
# ---------------------------------------------------------------------------------------------


def test_flat_pad_volume_orientation_and_sets():
    w, ln, th, nx, ny, nz = 18e-3, 24e-3, 4e-3, 6, 8, 3
    pad = T.flat_pad(w, ln, th, nx, ny, nz)
    assert pad.n_nodes == (nx + 1) * (ny + 1) * (nz + 1)
    assert pad.n_tets == 6 * nx * ny * nz
    assert np.all(pad.rest_volumes > 0.0)
    assert pad.total_volume == pytest.approx(w * ln * th, rel=1e-12)
    z = pad.nodes[:, 2]
    assert z.min() == -th and z.max() == 0.0
    # Mount: exactly the back face; contact: exactly the top face, normals +z.
    assert set(pad.mount_nodes.tolist()) == set(np.flatnonzero(z == -th).tolist())
    assert set(pad.surface_nodes.tolist()) == set(np.flatnonzero(z == 0.0).tolist())
    assert len(pad.surface_tris) == 2 * nx * ny
    n, _ = _normals(pad.nodes, pad.surface_faces)
    assert np.allclose(n[:, :2], 0.0, atol=1e-20) and np.all(n[:, 2] > 0.0)
    assert n[:, 2].sum() == pytest.approx(w * ln, rel=1e-12)
    _check_conforming(pad)
    _check_closed_outward(pad)
    assert len(pad.boundary_faces) == 4 * (nx * ny + ny * nz + nx * nz)
    # The 6 Kuhn tets of a cube are congruent.
    cubes = T.flat_pad(6e-3, 8e-3, 3e-3, 6, 8, 3)
    assert np.ptp(cubes.shape_quality) < 1e-12


def test_gelsight_pad_counts():
    pad = T.gelsight_pad()
    assert (pad.n_nodes, pad.n_tets) == (19 * 25 * 5, 6 * 18 * 24 * 4)
    lo, hi = pad.nodes.min(axis=0), pad.nodes.max(axis=0)
    assert np.allclose(hi - lo, [18e-3, 24e-3, 4e-3], rtol=0, atol=1e-15)
    assert hi[2] == 0.0


def test_gelsight_pad_20k_builds_fast():
    best = math.inf
    for _ in range(3):
        t0 = time.perf_counter()
        pad = T.gelsight_pad(1.25)
        best = min(best, time.perf_counter() - t0)
    assert pad.n_tets == 20_700 and pad.n_nodes == 4_464
    assert best < 0.5, f"gelsight_pad(1.25) took {best:.3f} s"


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"width": 0.0}, "width"),
        ({"thickness": -1e-3}, "thickness"),
        ({"nx": 0}, "nx"),
        ({"nz": 1.5}, "nz"),
    ],
)
def test_flat_pad_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        T.flat_pad(**kwargs)


# ---------------------------------------------------------------------------------------------
# dome
# ---------------------------------------------------------------------------------------------


def _dome_delta(mesh, R):
    """Largest facet sagitta over the radius: 1 - min distance from the origin to a facet plane."""
    n, _ = _normals(mesh.nodes, mesh.surface_faces)
    n /= np.linalg.norm(n, axis=1, keepdims=True)
    return 1.0 - (n * mesh.nodes[mesh.surface_faces[:, 0]]).sum(axis=1).min() / R


def test_dome_default_counts_sets_and_orientation():
    r, R, layers, rings = 7.5e-3, 15e-3, 4, 15
    d = T.dome()
    per_layer = 1 + 2 * rings * (rings + 1)
    assert d.n_nodes == layers * per_layer == 1924  # DiffTactile's dome: 1,910
    assert abs(d.n_nodes - 1910) / 1910 < 0.01
    assert d.n_tets == 12 * rings**2 * (layers - 1) == 8100
    assert np.all(d.rest_volumes > 0.0)
    radius = np.linalg.norm(d.nodes, axis=1)
    assert np.all(d.nodes[:, 2] >= 0.0)
    for layer in range(layers):
        shell = radius[layer * per_layer : (layer + 1) * per_layer]
        assert np.allclose(shell, r + (R - r) * layer / (layers - 1), rtol=1e-14)
    # Mount: exactly the inner layer; contact: exactly the outer layer, normals radially out.
    assert set(d.mount_nodes.tolist()) == set(np.flatnonzero(np.isclose(radius, r, rtol=1e-12)).tolist())
    assert set(d.surface_nodes.tolist()) == set(np.flatnonzero(np.isclose(radius, R, rtol=1e-12)).tolist())
    n, c = _normals(d.nodes, d.surface_faces)
    cos = (n * c).sum(axis=1) / np.linalg.norm(n, axis=1) / np.linalg.norm(c, axis=1)
    assert cos.min() > 0.99
    _check_conforming(d)
    _check_closed_outward(d)


def test_dome_boundary_is_outer_inner_and_equator():
    r, R, layers, rings = 7.5e-3, 15e-3, 3, 6
    d = T.dome(r, R, layers=layers, rings=rings)
    faces = d.boundary_faces
    x = d.nodes[faces]
    rad = np.linalg.norm(x, axis=2)
    outer = np.all(np.isclose(rad, R, rtol=1e-12), axis=1)
    inner = np.all(np.isclose(rad, r, rtol=1e-12), axis=1)
    equator = np.all(x[:, :, 2] == 0.0, axis=1)
    assert outer.sum() == inner.sum() == 4 * rings**2
    assert equator.sum() == 2 * 4 * rings * (layers - 1)
    assert np.all(outer ^ inner ^ equator)
    n, c = _normals(d.nodes, faces)
    radial = (n * c).sum(axis=1)
    assert np.all(radial[outer] > 0.0) and np.all(radial[inner] < 0.0)
    assert np.all(n[equator, 2] < 0.0) and np.allclose(n[equator, :2], 0.0, atol=1e-20)


def test_dome_volume_within_chord_error_and_converges():
    r, R = 7.5e-3, 15e-3
    exact = 2.0 / 3.0 * math.pi * (R**3 - r**3)
    errors = []
    for rings in (8, 16, 32):
        d = T.dome(r, R, rings=rings)
        err = 1.0 - d.total_volume / exact
        delta = _dome_delta(d, R)
        # Faceted (inscribed) shells: 0 < deficit <= 1 - (1 - delta)^3 <= 3 delta.
        assert 0.0 < err <= 1.0 - (1.0 - delta) ** 3
        errors.append(err)
    assert errors[0] / errors[1] == pytest.approx(4.0, rel=0.1)
    assert errors[1] / errors[2] == pytest.approx(4.0, rel=0.1)
    assert 1.0 - T.dome().total_volume / exact < 0.007  # default: 0.66 %


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"inner_radius": 2e-2}, "inner_radius must be < outer_radius"),
        ({"layers": 1}, "layers"),
        ({"rings": 0}, "rings"),
        ({"outer_radius": float("nan")}, "outer_radius"),
    ],
)
def test_dome_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        T.dome(**kwargs)


# ---------------------------------------------------------------------------------------------
# TetMesh validation
# ---------------------------------------------------------------------------------------------


def _two_tets(**override):
    nodes = np.array([[0.0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1], [0, 0, -1]])
    fields = {
        "nodes": nodes,
        "tets": np.array([[0, 1, 2, 3], [0, 2, 1, 4]]),
        "surface_nodes": np.array([1, 2, 3]),
        "surface_tris": np.array([[0, 1, 2]]),  # face (1, 2, 3) of tet 0, outward
        "mount_nodes": np.array([4]),
    }
    fields.update(override)
    return T.TetMesh(**fields)


def test_tetmesh_valid_and_readonly():
    m = _two_tets()
    assert m.n_tets == 2 and m.total_volume == pytest.approx(1.0 / 3.0)
    for name in ("nodes", "tets", "surface_nodes", "surface_tris", "mount_nodes", "rest_volumes", "boundary_faces"):
        assert not getattr(m, name).flags.writeable, name
    with pytest.raises(AttributeError):
        m.nodes = np.zeros((4, 3))


@pytest.mark.parametrize(
    "override, match",
    [
        ({"tets": np.array([[0, 2, 1, 3], [0, 2, 1, 4]])}, r"TetMesh\.tets: tet 0 .* is inverted"),
        (
            {"nodes": np.array([[0.0, 0, 0], [1, 0, 0], [0, 1, 0], [1, 1, 0], [0, 0, -1]])},
            r"TetMesh\.tets: tet 0 .* is degenerate \(volume 0",
        ),
        ({"tets": np.array([[0, 1, 2, 3], [0, 2, 1, 5]])}, r"TetMesh\.tets\[1, 3\] = 5 is out of range"),
        ({"tets": np.array([[0, 1, 2, 3], [0, 1, 2, 3]])}, r"TetMesh\.tets: tets 0 and 1 overlap"),
        ({"tets": np.zeros((0, 4), dtype=int)}, r"TetMesh\.tets must hold at least one tet"),
        ({"tets": np.array([0, 1, 2, 3])}, r"TetMesh\.tets must have shape"),
        ({"nodes": np.array([[0.0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, np.nan], [0, 0, -1]])}, r"TetMesh\.nodes"),
        ({"mount_nodes": np.array([], dtype=int)}, r"TetMesh\.mount_nodes must be non-empty"),
        ({"mount_nodes": np.array([7])}, r"TetMesh\.mount_nodes\[0\] = 7 is out of range"),
        ({"mount_nodes": np.array([4, 4])}, r"TetMesh\.mount_nodes lists index 4 more than once"),
        ({"surface_nodes": np.array([1, 2, 9])}, r"TetMesh\.surface_nodes\[2\] = 9 is out of range"),
        ({"surface_tris": np.array([[0, 1, 3]])}, r"TetMesh\.surface_tris\[0, 2\] = 3 is out of range"),
        ({"surface_tris": np.array([[0, 2, 1]])}, r"TetMesh\.surface_tris\[0\] .* is oriented inward"),
        (
            {"surface_nodes": np.array([0, 1, 2]), "surface_tris": np.array([[0, 1, 2]])},
            r"TetMesh\.surface_tris\[0\] .* is not a boundary face",
        ),
        ({"surface_tris": np.array([[0, 1, 2], [1, 2, 0]])}, r"TetMesh\.surface_tris\[0\] .* is listed twice"),
        ({"surface_nodes": np.array([1, 2, 3, 4])}, r"TetMesh\.surface_nodes\[3\] \(node 4\) is used by no"),
        ({"surface_tris": np.array([[0.5, 1, 2]])}, r"TetMesh\.surface_tris must hold integer indices"),
    ],
)
def test_tetmesh_rejects_bad_fields(override, match):
    with pytest.raises(ValueError, match=match):
        _two_tets(**override)


def test_from_tets_contact_selection():
    nodes, tets = _tet()
    m = T.TetMesh.from_tets(nodes, tets, mount_nodes=[0], contact_nodes=[1, 2, 3])
    assert len(m.surface_tris) == 1 and set(m.surface_nodes.tolist()) == {1, 2, 3}
    # Default contact: every boundary face with a node outside the mount set.
    m = T.TetMesh.from_tets(nodes, tets, mount_nodes=np.array([True, False, False, False]))
    assert len(m.surface_tris) == 4
    with pytest.raises(ValueError, match="no boundary face qualifies as contact surface"):
        T.TetMesh.from_tets(nodes, tets, mount_nodes=[0], contact_nodes=[1, 2])
    with pytest.raises(ValueError, match="mount_nodes"):
        T.TetMesh.from_tets(nodes, tets, mount_nodes=np.array([True, False]))


# ---------------------------------------------------------------------------------------------
# tetrahedralize
# ---------------------------------------------------------------------------------------------


def _shapes():
    return {
        "icosphere": trimesh.creation.icosphere(subdivisions=3, radius=1e-2),
        "box": trimesh.creation.box(extents=(2e-2, 3e-2, 1e-2)),
    }


@pytest.mark.parametrize("name", ["icosphere", "box"])
def test_tetrahedralize_scipy_convex(name):
    tm = _shapes()[name]
    m = T.tetrahedralize(tm, max_volume=tm.volume / 2000)
    assert np.all(m.rest_volumes > 0.0)
    # Convex input: the tets fill the mesh's solid exactly (its facets re-triangulated).
    assert m.total_volume == pytest.approx(tm.volume, rel=1e-9)
    assert 1500 < m.n_tets < 20000
    _check_conforming(m)
    _check_closed_outward(m)
    assert np.all(np.bincount(m.tets.reshape(-1), minlength=m.n_nodes) > 0)
    # Default mount: the boundary nodes on the lowest z.
    z = m.nodes[:, 2]
    assert np.all(z[m.mount_nodes] == z.min())
    again = T.tetrahedralize(tm, max_volume=tm.volume / 2000)
    assert np.array_equal(again.nodes, m.nodes) and np.array_equal(again.tets, m.tets)


def test_tetrahedralize_box_mount_is_the_bottom_face():
    tm = trimesh.creation.box(extents=(2e-2, 3e-2, 1e-2))
    m = T.tetrahedralize(tm, max_volume=tm.volume / 500)
    bottom = np.flatnonzero(m.nodes[:, 2] == -5e-3)
    assert set(m.mount_nodes.tolist()) == set(bottom.tolist())
    # Contact: every other boundary face (top and sides).
    n, _ = _normals(m.nodes, m.surface_faces)
    assert np.all(n[:, 2] >= -1e-20)


def test_tetrahedralize_scipy_nonconvex_torus_and_callables():
    tm = trimesh.creation.torus(major_radius=1e-2, minor_radius=4e-3)
    m = T.tetrahedralize(
        tm,
        max_volume=tm.volume / 2000,
        mount=lambda x: x[:, 2] < -3.5e-3,
        contact=lambda x: x[:, 2] > 0.0,
    )
    assert np.all(m.rest_volumes > 0.0)
    assert m.total_volume == pytest.approx(tm.volume, rel=0.02)
    _check_conforming(m)
    assert np.all(m.nodes[m.mount_nodes, 2] < -3.5e-3)
    assert np.all(m.nodes[m.surface_faces, 2] > 0.0)


@pytest.mark.parametrize("name", ["icosphere", "box"])
def test_tetrahedralize_ftetwild(name):
    pytest.importorskip("wildmeshing")
    tm = _shapes()[name]
    m = T.tetrahedralize(tm, max_volume=tm.volume / 2000, method="ftetwild")
    assert np.all(m.rest_volumes > 0.0)
    assert m.total_volume == pytest.approx(tm.volume, rel=0.02)
    _check_conforming(m)
    _check_closed_outward(m)
    assert m.shape_quality.min() > 0.05


def test_tetrahedralize_ftetwild_missing_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "wildmeshing", None)
    tm = _shapes()["box"]
    with pytest.raises(ImportError, match=r"fluxlab\[mesh\]"):
        T.tetrahedralize(tm, method="ftetwild")


def test_tetrahedralize_rejects_bad_input():
    sphere = trimesh.creation.icosphere(subdivisions=2, radius=1e-2)
    hole = trimesh.Trimesh(sphere.vertices, sphere.faces[1:], process=False)
    with pytest.raises(ValueError, match="not watertight"):
        T.tetrahedralize(hole)
    with pytest.raises(ValueError, match="max_volume"):
        T.tetrahedralize(sphere, max_volume=-1.0)
    with pytest.raises(ValueError, match="method"):
        T.tetrahedralize(sphere, method="tetgen")
    with pytest.raises(ValueError, match="mount_nodes must be non-empty"):
        T.tetrahedralize(sphere, mount=lambda x: x[:, 2] > 1.0)
