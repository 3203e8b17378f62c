"""Tetrahedral meshes of elastomer tactile sensors: the validated container and its generators.

What is computed
    :class:`TetMesh` holds a linear-tetrahedron mesh of a sensor gel (nodes, positively oriented
    tets, the contact surface, the mount set) and checks it when built. Three ways to build one:

    * :func:`flat_pad` / :func:`gelsight_pad`: a GelSight-style gel slab; a regular grid of
      hexahedral cells, each split into the 6 tets of the Kuhn (Freudenthal) subdivision along
      its main diagonal. All cells are translated copies, so the face diagonals of neighbouring
      cells coincide and the mesh is conforming.
    * :func:`dome`: a DiffTactile-style hemispherical shell. The hemisphere is triangulated by
      latitude rings with octahedral topology (ring ``k`` of ``rings`` holds ``4 k`` nodes, the
      last ring is the equator ``z = 0``), the triangulation is extruded radially into prism
      layers, and every prism is split into 3 tets by the order of its three global surface
      indices (each quad side takes the diagonal from its lower-index node on the inner layer to
      its higher-index node on the outer layer), so neighbouring prisms split shared quads alike.
    * :func:`tetrahedralize`: any closed triangle mesh to tets, with scipy's Qhull (a Delaunay
      triangulation of surface samples and an interior lattice, the default, no extra
      dependency) or fTetWild (optional extra ``mesh``).

    :func:`boundary_faces` gives the outward boundary triangles of any tet set and
    :func:`tet_volumes` the signed rest volumes.

Conventions
    * Sensor frame [m]. The gel's contact side faces ``+z``: the pad occupies
      ``z in [-thickness, 0]`` with its contact surface on ``z = 0`` (outward normal ``+z``) and
      its mount (the back face glued to a rigid plate) on ``z = -thickness``; the dome is centred
      at the origin and bulges toward ``+z`` (pole at ``(0, 0, outer_radius)``), its rim on the
      equator plane ``z = 0`` and its hollow side open toward ``-z``, where the mount is.
    * A tet ``(i0, i1, i2, i3)`` is positively oriented: ``det[x1 - x0, x2 - x0, x3 - x0] > 0``;
      its rest volume is that determinant over 6. Its outward faces are the rows of
      :data:`TET_FACES` (row ``i`` is the face opposite node ``i``).
    * A triangle ``(a, b, c)`` is outward when its normal ``(b - a) x (c - a)`` points out of the
      gel. ``surface_tris`` index ``surface_nodes`` (local surface indices);
      :attr:`TetMesh.surface_faces` gives the same triangles in node indices.
    * ``mount_nodes`` is the kinematic (Dirichlet) set that the sensor's mount drives;
      ``surface_nodes`` / ``surface_tris`` are the contact surface (the part of the outer surface
      that touches the world), not the whole boundary (:attr:`TetMesh.boundary_faces` is that).
    * Indices are int64, coordinates float64; stored arrays are read-only. Validation raises
      ``ValueError`` naming ``TetMesh.field``.

References
    * H. W. Kuhn, "Some combinatorial lemmas in topology", IBM J. Res. Dev. 4 (1960);
      H. Freudenthal, "Simplizialzerlegungen von beschraenkter Flachheit", Ann. Math. 43 (1942).
    * J. Dompierre, P. Labbe, M.-G. Vallet, R. Camarero, "How to subdivide pyramids, prisms and
      hexahedra into tetrahedra", 8th International Meshing Roundtable (1999).
    * Z. Si, G. Zhang, Q. Ben, B. Romero, Z. Xian, C. Liu, C. Gan, "DiffTactile: A Physics-based
      Differentiable Tactile Simulator for Contact-rich Robotic Manipulation", ICLR 2024 (dome:
      7.5 mm inner and 15 mm outer radius, 4 node layers, 1,910 nodes).
    * F. Labelle, J. R. Shewchuk, "Isosurface stuffing: fast tetrahedral meshes with good
      dihedral angles", SIGGRAPH 2007 (the body-centred cubic lattice used inside).
    * Y. Hu, T. Schneider, B. Wang, D. Zorin, D. Panozzo, "Fast Tetrahedral Meshing in the Wild"
      (fTetWild), SIGGRAPH 2020; Python bindings ``wildmeshing`` (MPL-2.0).
"""

import math
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any

import numpy as np

from engine.geometry.shapes import check_positive

if TYPE_CHECKING:
    import trimesh

__all__ = [
    "TET_FACES",
    "TET_VOLUME_RTOL",
    "TetMesh",
    "boundary_faces",
    "dome",
    "flat_pad",
    "gelsight_pad",
    "hemisphere_rings",
    "tet_volumes",
    "tetrahedralize",
]

TET_VOLUME_RTOL = 1e-9
"""A tet is degenerate when its volume is ``<= TET_VOLUME_RTOL * (longest edge)**3``; a regular
tet has ``volume / edge**3 = 1 / (6 sqrt 2) ~ 0.118``."""

TET_FACES = np.array([[1, 2, 3], [0, 3, 2], [0, 1, 3], [0, 2, 1]], dtype=np.int64)
"""Outward faces of a positively oriented tet, as local node indices; row ``i`` is the face
opposite node ``i``."""

GELSIGHT_PAD_SIZE = (18e-3, 24e-3, 4e-3)
"""Width (x), length (y) and thickness (z) [m] of a GelSight Mini-sized gel."""

_EDGES = ((0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3))


# ---------------------------------------------------------------------------------------------
# index-array helpers
# ---------------------------------------------------------------------------------------------


def _index_array(name: str, value: Any, ncols: int | None) -> np.ndarray:
    """``value`` as a C-contiguous int64 array of shape ``(k,)`` (``ncols`` None) or ``(k, ncols)``."""
    a = np.asarray(value)
    if a.size == 0:
        a = a.astype(np.int64)
    if a.dtype == np.bool_ or not (np.issubdtype(a.dtype, np.integer) or np.issubdtype(a.dtype, np.floating)):
        raise ValueError(f"{name} must hold integer indices, got dtype {a.dtype}")
    if np.issubdtype(a.dtype, np.floating):
        if not np.all(np.isfinite(a)) or not np.all(a == np.round(a)):
            raise ValueError(f"{name} must hold integer indices, got non-integral values")
    want = "(k,)" if ncols is None else f"(k, {ncols})"
    if (ncols is None and a.ndim != 1) or (ncols is not None and (a.ndim != 2 or a.shape[1] != ncols)):
        raise ValueError(f"{name} must have shape {want}, got {a.shape}")
    return np.ascontiguousarray(a, dtype=np.int64)


def _check_range(name: str, a: np.ndarray, n: int, what: str = "nodes") -> None:
    """ValueError naming ``name`` and the first entry outside ``[0, n)``."""
    bad = (a < 0) | (a >= n)
    if bad.any():
        flat = int(np.flatnonzero(bad.reshape(-1))[0])
        where = ", ".join(str(int(i)) for i in np.unravel_index(flat, a.shape))
        raise ValueError(f"{name}[{where}] = {int(a.reshape(-1)[flat])} is out of range [0, {n}) ({n} {what})")


def _check_unique(name: str, a: np.ndarray) -> None:
    values, counts = np.unique(a, return_counts=True)
    if (counts > 1).any():
        raise ValueError(f"{name} lists index {int(values[counts > 1][0])} more than once")


def _readonly(a: np.ndarray) -> np.ndarray:
    a.setflags(write=False)
    return a


def _face_ids(faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Dense ids of unordered triangles: ``(ids (F,), counts (U,))``, ``counts[ids[i]]`` = copies of face i."""
    s = np.sort(faces, axis=1)
    n = int(s.max()) + 1 if s.size else 1
    if n <= 2**21:  # the key n**3 fits in int64
        key = (s[:, 0] * n + s[:, 1]) * n + s[:, 2]
        _, ids, counts = np.unique(key, return_inverse=True, return_counts=True)
    else:
        _, ids, counts = np.unique(s, axis=0, return_inverse=True, return_counts=True)
    return ids.reshape(-1), counts


def _odd(faces: np.ndarray) -> np.ndarray:
    """Parity of the permutation that sorts each row of ``faces (F, 3)`` (True = odd)."""
    a, b, c = faces[:, 0], faces[:, 1], faces[:, 2]
    return ((a > b).astype(np.int64) + (a > c) + (b > c)) % 2 == 1


def _all_tet_faces(tets: np.ndarray) -> np.ndarray:
    """``(4 m, 3)`` outward faces of every tet; row ``4 t + i`` is the face of tet ``t`` opposite node ``i``."""
    return tets[:, TET_FACES].reshape(-1, 3)


# ---------------------------------------------------------------------------------------------
# public utilities
# ---------------------------------------------------------------------------------------------


def tet_volumes(nodes: Any, tets: Any) -> np.ndarray:
    """Signed volumes ``(m,)`` [m^3] = ``det[x1 - x0, x2 - x0, x3 - x0] / 6`` of ``tets (m, 4)``.

    Args:
        nodes: ``(n, 3)`` positions [m].
        tets: ``(m, 4)`` node indices (in range; not checked here).
    """
    x = np.asarray(nodes, dtype=np.float64)[np.asarray(tets, dtype=np.int64)]
    d1, d2, d3 = x[:, 1] - x[:, 0], x[:, 2] - x[:, 0], x[:, 3] - x[:, 0]
    return np.einsum("ij,ij->i", d1, np.cross(d2, d3)) / 6.0


def boundary_faces(tets: Any) -> np.ndarray:
    """Boundary triangles ``(f, 3)`` of a tet set: the faces that belong to exactly one tet.

    Each triangle keeps its tet's orientation (:data:`TET_FACES`), so for positively oriented
    tets its normal ``(b - a) x (c - a)`` points out of the mesh. Rows come in tet order, then in
    :data:`TET_FACES` order.

    Args:
        tets: ``(m, 4)`` node indices.

    Raises:
        ValueError: ``tets`` is not an ``(m, 4)`` index array, or a face is shared by more than
            two tets (no well-defined boundary).
    """
    t = _index_array("tets", tets, 4)
    faces = _all_tet_faces(t)
    if len(faces) == 0:
        return np.zeros((0, 3), dtype=np.int64)
    ids, counts = _face_ids(faces)
    c = counts[ids]
    if (c > 2).any():
        i = int(np.flatnonzero(c > 2)[0])
        raise ValueError(f"tets: face {tuple(int(v) for v in faces[i])} is shared by {int(c[i])} tets (non-manifold)")
    return np.ascontiguousarray(faces[c == 1])


def _orient(nodes: np.ndarray, tets: np.ndarray) -> np.ndarray:
    """``tets`` with nodes 1 and 2 swapped where the signed volume is negative."""
    t = np.array(tets, dtype=np.int64)
    neg = tet_volumes(nodes, t) < 0.0
    t[neg, 1], t[neg, 2] = t[neg, 2], t[neg, 1].copy()
    return t


# ---------------------------------------------------------------------------------------------
# the container
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class TetMesh:
    """A validated tetrahedral mesh of a sensor gel, in the sensor frame.

    Attributes:
        nodes: ``(n, 3)`` float64 rest positions [m], finite.
        tets: ``(m, 4)`` int64 node indices, positively oriented
            (``det[x1 - x0, x2 - x0, x3 - x0] > 0``), no degenerate tet (see
            :data:`TET_VOLUME_RTOL`), every face shared by at most two tets and, when by two,
            with opposite orientations (no overlapping tets).
        surface_nodes: ``(S,)`` int64 node indices of the contact surface (unique, each used by
            a surface triangle).
        surface_tris: ``(F, 3)`` int64 indices into ``surface_nodes``; each triangle is a
            boundary face of the tets with its outward orientation (normal out of the gel).
        mount_nodes: ``(k,)`` int64 node indices driven by the sensor mount (Dirichlet set),
            unique, non-empty.
        source: where the mesh came from, informational.

    Raises:
        ValueError: a field fails the checks above (the message names ``TetMesh.field`` and the
            first offending entry).
    """

    nodes: np.ndarray
    tets: np.ndarray
    surface_nodes: np.ndarray
    surface_tris: np.ndarray
    mount_nodes: np.ndarray
    source: str = field(default="", compare=False)

    def __post_init__(self):
        x = np.array(self.nodes, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != 3 or len(x) < 4:
            raise ValueError(f"TetMesh.nodes must have shape (n, 3) with n >= 4, got {x.shape}")
        if not np.all(np.isfinite(x)):
            i = int(np.flatnonzero(~np.all(np.isfinite(x), axis=1))[0])
            raise ValueError(f"TetMesh.nodes must be finite; node {i} is {x[i].tolist()}")
        n = len(x)
        object.__setattr__(self, "nodes", _readonly(np.ascontiguousarray(x)))

        t = _index_array("TetMesh.tets", self.tets, 4)
        if len(t) == 0:
            raise ValueError("TetMesh.tets must hold at least one tet")
        _check_range("TetMesh.tets", t, n)
        vol = tet_volumes(x, t)
        xt = x[t]
        longest = np.max([np.linalg.norm(xt[:, j] - xt[:, i], axis=1) for i, j in _EDGES], axis=0)
        tol = TET_VOLUME_RTOL * longest**3
        bad = vol <= tol
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            kind = "inverted" if vol[i] < -tol[i] else "degenerate"
            raise ValueError(
                f"TetMesh.tets: tet {i} {tuple(int(v) for v in t[i])} is {kind} (volume {vol[i]:.6g} m^3, must "
                f"exceed {tol[i]:.3g} = {TET_VOLUME_RTOL:g} * longest edge^3); tets must be positively oriented, "
                "det[x1 - x0, x2 - x0, x3 - x0] > 0"
            )
        faces = _all_tet_faces(t)
        ids, counts = _face_ids(faces)
        c = counts[ids]
        if (c > 2).any():
            i = int(np.flatnonzero(c > 2)[0])
            raise ValueError(
                f"TetMesh.tets: face {tuple(int(v) for v in faces[i])} is shared by {int(c[i])} tets (non-manifold)"
            )
        # Two tets sharing a face must see it with opposite orientations, else they overlap.
        shared = np.flatnonzero(c == 2)
        order = shared[np.argsort(ids[shared], kind="stable")]
        first, second = order[0::2], order[1::2]
        odd = _odd(faces)
        same = odd[first] == odd[second]
        if same.any():
            k = int(np.flatnonzero(same)[0])
            a, b = sorted((int(first[k]) // 4, int(second[k]) // 4))
            raise ValueError(
                f"TetMesh.tets: tets {a} and {b} overlap (they share face "
                f"{tuple(int(v) for v in faces[first[k]])} with the same orientation)"
            )
        object.__setattr__(self, "tets", _readonly(t))
        bfaces = np.ascontiguousarray(faces[c == 1])

        m = _index_array("TetMesh.mount_nodes", self.mount_nodes, None)
        if len(m) == 0:
            raise ValueError("TetMesh.mount_nodes must be non-empty (the mount drives the gel)")
        _check_range("TetMesh.mount_nodes", m, n)
        _check_unique("TetMesh.mount_nodes", m)
        object.__setattr__(self, "mount_nodes", _readonly(m))

        s = _index_array("TetMesh.surface_nodes", self.surface_nodes, None)
        if len(s) == 0:
            raise ValueError("TetMesh.surface_nodes must be non-empty (the contact surface)")
        _check_range("TetMesh.surface_nodes", s, n)
        _check_unique("TetMesh.surface_nodes", s)
        object.__setattr__(self, "surface_nodes", _readonly(s))

        f = _index_array("TetMesh.surface_tris", self.surface_tris, 3)
        if len(f) == 0:
            raise ValueError("TetMesh.surface_tris must hold at least one triangle")
        _check_range("TetMesh.surface_tris", f, len(s), what="surface nodes")
        used = np.zeros(len(s), dtype=bool)
        used[f.reshape(-1)] = True
        if not used.all():
            i = int(np.flatnonzero(~used)[0])
            raise ValueError(f"TetMesh.surface_nodes[{i}] (node {int(s[i])}) is used by no surface triangle")
        g = s[f]
        # Match surface triangles against the boundary faces, first unordered, then oriented.
        ids, counts = _face_ids(np.concatenate([bfaces, g]))
        b_ids, g_ids = ids[: len(bfaces)], ids[len(bfaces) :]
        in_boundary = np.zeros(len(counts), dtype=bool)
        in_boundary[b_ids] = True
        missing = ~in_boundary[g_ids]
        if missing.any():
            i = int(np.flatnonzero(missing)[0])
            raise ValueError(
                f"TetMesh.surface_tris[{i}] (nodes {tuple(int(v) for v in g[i])}) is not a boundary face of the tets"
            )
        if (np.bincount(g_ids, minlength=len(counts)) > 1).any():
            i = int(np.flatnonzero(np.bincount(g_ids, minlength=len(counts))[g_ids] > 1)[0])
            raise ValueError(f"TetMesh.surface_tris[{i}] (nodes {tuple(int(v) for v in g[i])}) is listed twice")
        b_odd = np.zeros(len(counts), dtype=bool)
        b_odd[b_ids] = _odd(bfaces)
        inward = b_odd[g_ids] != _odd(g)
        if inward.any():
            i = int(np.flatnonzero(inward)[0])
            raise ValueError(
                f"TetMesh.surface_tris[{i}] (nodes {tuple(int(v) for v in g[i])}) is oriented inward; surface "
                "triangles must be outward, (b - a) x (c - a) pointing out of the gel"
            )
        object.__setattr__(self, "surface_tris", _readonly(f))
        # Prime the cached properties computed on the way.
        self.__dict__["rest_volumes"] = _readonly(vol)
        self.__dict__["boundary_faces"] = _readonly(bfaces)

    @classmethod
    def from_tets(
        cls,
        nodes: Any,
        tets: Any,
        mount_nodes: Any,
        contact_nodes: Any = None,
        source: str = "",
    ) -> "TetMesh":
        """Build a mesh whose contact surface is taken from the boundary faces.

        Args:
            nodes: ``(n, 3)`` rest positions [m].
            tets: ``(m, 4)`` positively oriented node indices.
            mount_nodes: ``(k,)`` node indices, or an ``(n,)`` bool mask, of the mount set.
            contact_nodes: ``(c,)`` node indices, or an ``(n,)`` bool mask: the contact surface is
                every boundary face whose three nodes are all in this set. Default: every
                boundary face with at least one node outside the mount set.
            source: stored on the result.

        Raises:
            ValueError: invalid arrays (as for :class:`TetMesh`), or no boundary face qualifies
                as contact surface.
        """
        x = np.asarray(nodes, dtype=np.float64)
        n = len(x) if x.ndim >= 1 else 0
        t = _index_array("TetMesh.tets", tets, 4)
        _check_range("TetMesh.tets", t, n)
        mount = _nodes_from_selection("TetMesh.mount_nodes", mount_nodes, n)
        bf = boundary_faces(t)
        if contact_nodes is None:
            in_mount = np.zeros(n, dtype=bool)
            in_mount[mount] = True
            keep = ~in_mount[bf].all(axis=1)
        else:
            contact = np.zeros(n, dtype=bool)
            contact[_nodes_from_selection("contact_nodes", contact_nodes, n)] = True
            keep = contact[bf].all(axis=1)
        g = bf[keep]
        if len(g) == 0:
            raise ValueError("TetMesh.surface_tris: no boundary face qualifies as contact surface")
        surface_nodes, local = np.unique(g, return_inverse=True)
        return cls(
            nodes=x,
            tets=t,
            surface_nodes=surface_nodes,
            surface_tris=local.reshape(-1, 3),
            mount_nodes=mount,
            source=source,
        )

    @property
    def n_nodes(self) -> int:
        """Number of nodes."""
        return int(len(self.nodes))

    @property
    def n_tets(self) -> int:
        """Number of tets."""
        return int(len(self.tets))

    @cached_property
    def rest_volumes(self) -> np.ndarray:
        """``(m,)`` rest volume of each tet [m^3], all > 0."""
        return _readonly(tet_volumes(self.nodes, self.tets))

    @cached_property
    def shape_quality(self) -> np.ndarray:
        """``(m,)`` tet shape measure ``6 sqrt(2) V / l_rms^3`` in ``(0, 1]``: 1 for a regular
        tet, toward 0 for slivers and needles (``l_rms``: root-mean-square edge length)."""
        x = self.nodes[self.tets]
        l2 = np.sum([((x[:, j] - x[:, i]) ** 2).sum(axis=1) for i, j in _EDGES], axis=0) / 6.0
        return _readonly(6.0 * math.sqrt(2.0) * self.rest_volumes / l2**1.5)

    @property
    def total_volume(self) -> float:
        """Rest volume of the gel [m^3]."""
        return float(self.rest_volumes.sum())

    @cached_property
    def boundary_faces(self) -> np.ndarray:
        """``(f, 3)`` node indices of all boundary triangles, outward (see :func:`boundary_faces`)."""
        return _readonly(boundary_faces(self.tets))

    @cached_property
    def surface_faces(self) -> np.ndarray:
        """``(F, 3)`` node indices of the contact triangles (``surface_nodes[surface_tris]``), outward."""
        return _readonly(self.surface_nodes[self.surface_tris])

    def __repr__(self) -> str:
        src = f", source={self.source!r}" if self.source else ""
        return (
            f"TetMesh(n_nodes={self.n_nodes}, n_tets={self.n_tets}, surface_nodes={len(self.surface_nodes)}, "
            f"surface_tris={len(self.surface_tris)}, mount_nodes={len(self.mount_nodes)}{src})"
        )


def _nodes_from_selection(name: str, selection: Any, n: int) -> np.ndarray:
    """Node indices from an index array or an ``(n,)`` bool mask (ValueError naming ``name``)."""
    a = np.asarray(selection)
    if a.dtype == np.bool_:
        if a.shape != (n,):
            raise ValueError(f"{name}: a bool mask must have shape ({n},), got {a.shape}")
        return np.flatnonzero(a).astype(np.int64)
    idx = _index_array(name, a, None)
    _check_range(name, idx, n)
    return idx


# ---------------------------------------------------------------------------------------------
# structured generators
# ---------------------------------------------------------------------------------------------


def _check_count(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or int(value) != value or int(value) < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _kuhn_table() -> np.ndarray:
    """``(6, 4, 3)`` corner offsets of the 6 Kuhn tets of the unit cube, positively oriented."""
    eye = np.eye(3, dtype=np.int64)
    out = []
    for p in ((0, 1, 2), (0, 2, 1), (1, 0, 2), (1, 2, 0), (2, 0, 1), (2, 1, 0)):
        v = [np.zeros(3, dtype=np.int64), eye[p[0]], eye[p[0]] + eye[p[1]], np.ones(3, dtype=np.int64)]
        if np.linalg.det(np.stack([v[1], v[2], v[3]]).astype(np.float64)) < 0.0:
            v[1], v[2] = v[2], v[1]
        out.append(v)
    return np.array(out)


def flat_pad(
    width: float = GELSIGHT_PAD_SIZE[0],
    length: float = GELSIGHT_PAD_SIZE[1],
    thickness: float = GELSIGHT_PAD_SIZE[2],
    nx: int = 18,
    ny: int = 24,
    nz: int = 4,
) -> TetMesh:
    """A rectangular gel slab (GelSight-style) of ``nx * ny * nz`` cells, 6 Kuhn tets each.

    The gel occupies ``x in [-width/2, width/2]``, ``y in [-length/2, length/2]``,
    ``z in [-thickness, 0]``. Node ``(i, j, k)`` (grid indices along x, y, z) is
    ``(i * (ny + 1) + j) * (nz + 1) + k``. Every cell is cut along its diagonal from its
    ``(i, j, k)`` corner to its ``(i+1, j+1, k+1)`` corner, so the mesh is conforming.

    Contact surface: the face ``z = 0`` (normals ``+z``). Mount: the nodes of the back face
    ``z = -thickness``. Counts: ``(nx+1)(ny+1)(nz+1)`` nodes, ``6 nx ny nz`` tets,
    ``2 nx ny`` contact triangles. The defaults give 1 mm cells: 2,375 nodes, 10,368 tets.

    Args:
        width, length, thickness: gel size along x, y, z [m], > 0.
        nx, ny, nz: cells along x, y, z, >= 1.

    Raises:
        ValueError: a non-positive size or a cell count below 1.
    """
    w = check_positive("flat_pad", "width", width)
    ln = check_positive("flat_pad", "length", length)
    th = check_positive("flat_pad", "thickness", thickness)
    nx = _check_count("flat_pad nx", nx, 1)
    ny = _check_count("flat_pad ny", ny, 1)
    nz = _check_count("flat_pad nz", nz, 1)
    xs = np.linspace(-0.5 * w, 0.5 * w, nx + 1)
    ys = np.linspace(-0.5 * ln, 0.5 * ln, ny + 1)
    zs = np.linspace(-th, 0.0, nz + 1)
    nodes = np.stack(np.meshgrid(xs, ys, zs, indexing="ij"), axis=-1).reshape(-1, 3)
    idx = np.arange(len(nodes), dtype=np.int64).reshape(nx + 1, ny + 1, nz + 1)
    table = _kuhn_table()
    tets = np.empty((nx * ny * nz, 6, 4), dtype=np.int64)
    for t in range(6):
        for v in range(4):
            a, b, c = table[t, v]
            tets[:, t, v] = idx[a : a + nx, b : b + ny, c : c + nz].reshape(-1)
    return TetMesh.from_tets(
        nodes,
        tets.reshape(-1, 4),
        mount_nodes=idx[:, :, 0].reshape(-1),
        contact_nodes=idx[:, :, nz].reshape(-1),
        source=f"flat_pad({w:g}, {ln:g}, {th:g}, nx={nx}, ny={ny}, nz={nz})",
    )


def gelsight_pad(resolution: float = 1.0) -> TetMesh:
    """A GelSight Mini-sized pad (18 x 24 x 4 mm, :data:`GELSIGHT_PAD_SIZE`) via :func:`flat_pad`.

    Args:
        resolution: at least this many cells per millimetre along each axis
            (``ceil(size_mm * resolution)`` cells), > 0. ``1.0``: 18 x 24 x 4 cells, 2,375 nodes,
            10,368 tets; ``1.25``: 23 x 30 x 5 cells, 4,464 nodes, 20,700 tets; ``2.0``:
            36 x 48 x 8 cells, 16,317 nodes, 82,944 tets.

    Raises:
        ValueError: ``resolution`` is not a finite number > 0.
    """
    res = check_positive("gelsight_pad", "resolution", resolution)
    counts = [max(1, math.ceil(size * 1e3 * res - 1e-9)) for size in GELSIGHT_PAD_SIZE]
    return flat_pad(*GELSIGHT_PAD_SIZE, *counts)


def hemisphere_rings(rings: int) -> tuple[np.ndarray, np.ndarray]:
    """Triangulated unit hemisphere ``z >= 0`` by latitude rings with octahedral topology.

    Node 0 is the pole ``(0, 0, 1)``; ring ``k = 1 .. rings`` holds ``4 k`` nodes at polar angle
    ``(pi / 2) k / rings``, evenly spaced in azimuth starting at ``+x``; the last ring is the
    equator (``z = 0`` exactly). Between rings ``k - 1`` and ``k`` each quadrant holds ``2 k - 1``
    triangles (the rows of a subdivided octahedron face).

    Returns:
        ``(dirs (1 + 2 r (r + 1), 3), tris (4 r^2, 3))``: unit vectors and outward triangles.
    """
    f = _check_count("rings", rings, 1)
    start = [0] + [1 + 2 * k * (k - 1) for k in range(1, f + 1)]
    dirs = [np.array([[0.0, 0.0, 1.0]])]
    for k in range(1, f + 1):
        theta = 0.5 * math.pi * k / f
        phi = 0.5 * math.pi * np.arange(4 * k) / k
        z = 0.0 if k == f else math.cos(theta)
        s = 1.0 if k == f else math.sin(theta)
        dirs.append(np.stack([s * np.cos(phi), s * np.sin(phi), np.full(4 * k, z)], axis=1))
    tris = []
    for k in range(1, f + 1):
        for q in range(4):

            def outer(i, k=k, q=q):
                return start[k] + (q * k + i) % (4 * k)

            def inner(i, k=k, q=q):
                return 0 if k == 1 else start[k - 1] + (q * (k - 1) + i) % (4 * (k - 1))

            for i in range(k):
                tris.append((outer(i), outer(i + 1), inner(i)))
            for i in range(k - 1):
                tris.append((inner(i), outer(i + 1), inner(i + 1)))
    d = np.concatenate(dirs)
    t = np.array(tris, dtype=np.int64)
    p = d[t]
    outward = np.einsum("ij,ij->i", np.cross(p[:, 1] - p[:, 0], p[:, 2] - p[:, 0]), p.sum(axis=1)) > 0.0
    t[~outward] = t[~outward][:, ::-1]
    return d, t


def dome(
    inner_radius: float = 7.5e-3,
    outer_radius: float = 15e-3,
    layers: int = 4,
    rings: int = 15,
) -> TetMesh:
    """A hemispherical gel shell (DiffTactile's dome sensor) of prisms split into 3 tets.

    The shell lies between ``inner_radius`` and ``outer_radius`` around the origin, in
    ``z >= 0`` (it bulges toward ``+z``; the rim is on ``z = 0``, the hollow side opens toward
    ``-z``). ``layers`` node shells at evenly spaced radii carry the same triangulated
    hemisphere (:func:`hemisphere_rings`); node ``l * N + v`` is surface node ``v`` of shell
    ``l`` (shell 0 innermost), ``N = 1 + 2 rings (rings + 1)``. Each prism between two shells is
    split into ``(b0, b1, b2, t2), (b0, b1, t1, t2), (b0, t0, t1, t2)`` with ``v0 < v1 < v2``
    its sorted surface indices (``b`` inner, ``t`` outer shell), so every shared quad gets the
    same diagonal from both sides.

    Contact surface: the outer shell (normals radially outward). Mount: every node of the inner
    shell. Counts: ``layers * N`` nodes, ``12 rings^2 (layers - 1)`` tets; the defaults give
    4 x 481 = 1,924 nodes (DiffTactile's mesh: 1,910) and 8,100 tets.

    The facets are chords of the spheres, so the volume falls short of
    ``(2/3) pi (R^3 - r^3)`` by a relative ``1 - (1 - delta)^3 <= 3 delta``, ``delta`` the
    largest facet sagitta over the radius: with the default 15 rings ``delta = 0.40 %``, and
    the deficit is 0.66 %; both fall as ``rings^-2``.

    Args:
        inner_radius, outer_radius: shell radii [m], ``0 < inner < outer``.
        layers: node shells, >= 2 (``layers - 1`` prism layers); DiffTactile uses 4.
        rings: latitude rings from the pole to the equator, >= 1.

    Raises:
        ValueError: bad radii or counts.
    """
    r = check_positive("dome", "inner_radius", inner_radius)
    R = check_positive("dome", "outer_radius", outer_radius)
    if not r < R:
        raise ValueError(f"dome inner_radius must be < outer_radius, got {r!r} >= {R!r}")
    layers = _check_count("dome layers", layers, 2)
    rings = _check_count("dome rings", rings, 1)
    dirs, tris = hemisphere_rings(rings)
    N = len(dirs)
    radii = r + (R - r) * np.arange(layers) / (layers - 1)
    radii[-1] = R
    nodes = (radii[:, None, None] * dirs[None]).reshape(-1, 3)
    v = np.sort(tris, axis=1)
    local = np.array([[0, 1, 2, 5], [0, 1, 4, 5], [0, 3, 4, 5]])  # b0 b1 b2 t0 t1 t2 -> 0..5
    tets = []
    for layer in range(layers - 1):
        prism = np.concatenate([layer * N + v, (layer + 1) * N + v], axis=1)
        tets.append(prism[:, local].reshape(-1, 4))
    tets = _orient(nodes, np.concatenate(tets))
    return TetMesh.from_tets(
        nodes,
        tets,
        mount_nodes=np.arange(N),
        contact_nodes=np.arange((layers - 1) * N, layers * N),
        source=f"dome({r:g}, {R:g}, layers={layers}, rings={rings})",
    )


# ---------------------------------------------------------------------------------------------
# closed triangle mesh -> tets
# ---------------------------------------------------------------------------------------------


def _regular_triangulation(points: np.ndarray) -> np.ndarray:
    """Tets ``(m, 4)`` of the Delaunay triangulation of ``points`` with ties broken by tiny weights.

    Symmetric point sets (lattice squares, rings of surface samples) have 5 or more cospherical
    points, where Qhull's triangulated Delaunay output may contain flat (zero-volume) tets. Here
    the points are lifted to ``(p, |p|^2 + w)`` with fixed pseudo-random weights
    ``w ~ 1e-7`` (coordinates scaled to the unit box) and the lower hull of the lift is taken:
    a regular triangulation, in which four coplanar points never form a tet, that differs from
    a Delaunay triangulation only where the empty-sphere test is within ``w`` of a tie.
    """
    from scipy.spatial import ConvexHull

    centre = 0.5 * (points.min(axis=0) + points.max(axis=0))
    scale = float(np.abs(points - centre).max())
    p = (points - centre) / scale
    w = np.random.default_rng(0).uniform(0.0, 1e-7, len(p))
    hull = ConvexHull(np.concatenate([p, ((p * p).sum(axis=1) + w)[:, None]], axis=1))
    lower = hull.equations[:, 3] < -1e-9
    return hull.simplices[lower].astype(np.int64)


def _delaunay_tets(tm: "trimesh.Trimesh", max_volume: float) -> tuple[np.ndarray, np.ndarray]:
    """Delaunay tets of surface samples + an interior BCC lattice, kept where the centroid is inside."""
    from trimesh import remesh

    from engine.geometry.mesh import mesh_signed_distance

    a = (6.0 * max_volume) ** (1.0 / 3.0)  # BCC cube edge: lattice tets of volume a^3 / 12
    V = np.asarray(tm.vertices, dtype=np.float64)
    F = np.asarray(tm.faces, dtype=np.int64)
    surface, _ = remesh.subdivide_to_size(V, F, max_edge=a, max_iter=30)
    lo, hi = np.asarray(tm.bounds, dtype=np.float64)
    # Shift the lattice off the mesh's axis-aligned planes so no lattice point lies on them.
    shift = np.array([0.2137, 0.4619, 0.3371]) * a
    axes = [np.arange(lo[i] - a + shift[i], hi[i] + a, a) for i in range(3)]
    corners = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3)
    lattice = np.concatenate([corners, corners + 0.5 * a])
    lattice = lattice[mesh_signed_distance(tm, lattice) < -0.5 * a]
    points = np.concatenate([surface, lattice])
    simplices = _regular_triangulation(points)
    centroids = points[simplices].mean(axis=1)
    # Keep tets inside the mesh (the triangulation fills the convex hull); the margin also drops
    # slivers lying flat on the surface.
    inside = mesh_signed_distance(tm, centroids) < -1e-6 * a
    return points, simplices[inside]


@contextmanager
def _stdout_to_devnull():
    """Send file descriptor 1 to /dev/null (fTetWild prints its progress with C++ streams)."""
    import ctypes
    import os
    import sys

    sys.stdout.flush()
    try:
        fflush = ctypes.CDLL(None).fflush
    except (OSError, AttributeError, TypeError):  # no C library handle on this platform
        fflush = None
    try:
        saved = os.dup(1)
    except OSError:  # no file descriptor 1: nothing to silence
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 1)
        yield
    finally:
        if fflush is not None:
            fflush(None)
        os.dup2(saved, 1)
        os.close(saved)
        os.close(devnull)


def _ftetwild_tets(tm: "trimesh.Trimesh", max_volume: float) -> tuple[np.ndarray, np.ndarray]:
    """fTetWild (``wildmeshing``) tets with the ideal edge length of a regular tet of ``max_volume``."""
    try:
        import wildmeshing
    except ImportError as exc:
        raise ImportError(
            "tetrahedralize(method='ftetwild') needs the optional dependency wildmeshing (fTetWild, MPL-2.0); "
            "install it with: pip install 'fluxlab[mesh]'"
        ) from exc
    V = np.ascontiguousarray(tm.vertices, dtype=np.float64)
    F = np.ascontiguousarray(tm.faces, dtype=np.int32)
    edge = (6.0 * math.sqrt(2.0) * max_volume) ** (1.0 / 3.0)
    diag = float(np.linalg.norm(np.ptp(V, axis=0)))
    with _stdout_to_devnull():
        mesher = wildmeshing.Tetrahedralizer(edge_length_r=edge / diag, coarsen=False)
        mesher.set_log_level(6)
        mesher.set_mesh(V, F)
        mesher.tetrahedralize()
        points, tets = mesher.get_tet_mesh()[:2]
    return np.asarray(points, dtype=np.float64), np.asarray(tets, dtype=np.int64)


def tetrahedralize(
    mesh: "trimesh.Trimesh",
    max_volume: float | None = None,
    *,
    method: str = "scipy",
    mount: Callable[[np.ndarray], np.ndarray] | Any = None,
    contact: Callable[[np.ndarray], np.ndarray] | Any = None,
) -> TetMesh:
    """Fill a closed triangle mesh with tets.

    Methods:
        ``"scipy"`` (default, no extra dependency): surface samples (the mesh's triangles
        subdivided until every edge is at most the lattice spacing ``a``) plus a body-centred
        cubic lattice of spacing ``a = (6 max_volume)^(1/3)`` (lattice tets have volume
        ``max_volume / 2``; lattice points closer than ``a / 2`` to the surface are dropped) are
        triangulated by Qhull (``scipy.spatial.ConvexHull`` of the points lifted onto a
        paraboloid, with tiny fixed weights that break the ties of cospherical points, so that
        no flat tet appears; otherwise the Delaunay triangulation), and the tets whose centroid
        lies inside the mesh (signed distance below ``-1e-6 a``) are kept. Deterministic.
        Guarantees: every tet positively oriented and not degenerate (else ``ValueError``); the
        tets conform (each interior face shared by exactly two). For a convex mesh the tets fill
        the mesh's solid, its surface re-triangulated on the same facets (up to flat slivers
        dropped on the surface: 1e-9 relative volume at most in the tests).
        Not guaranteed: for a non-convex mesh the boundary follows Delaunay faces, not the
        input triangles, where the surface samples are too sparse to recover them (tets may
        bridge a concavity or leave a notch); tet shape: tets touching the surface may be
        slivers (tiny dihedral angles, e.g. for input meshes with long thin triangles), and may
        exceed ``max_volume``. Check :attr:`TetMesh.shape_quality` before simulating.
        ``"ftetwild"`` (optional extra ``mesh``: the ``wildmeshing`` bindings of fTetWild,
        MPL-2.0): robust for non-convex and imperfect input; tet shapes are optimized (smallest
        dihedral angle above 10 degrees on the sphere, box, torus and capsule tried here); the
        output surface lies within fTetWild's envelope (``1e-3`` of the bounding-box diagonal)
        of the input, not on it; the target edge length is that of a regular tet of volume
        ``max_volume``. Runs do not repeat bit for bit.

    Args:
        mesh: watertight ``trimesh.Trimesh`` [m] (e.g. from :func:`engine.geometry.load_mesh`),
            in the sensor frame.
        max_volume: target tet volume [m^3] > 0; default ``mesh volume / 2000``.
        method: ``"scipy"`` or ``"ftetwild"``.
        mount: the mount set: a callable ``nodes (n, 3) -> (n,) bool`` mask, a bool mask or node
            indices. Default: the boundary nodes on the lowest ``z`` of the mesh (within
            ``1e-9`` of its bounding-box diagonal), i.e. a flat back face when the contact side
            faces ``+z``.
        contact: the contact surface, same forms; boundary faces with all three nodes in it.
            Default: every boundary face with a node outside the mount set.

    Returns:
        The mesh (unreferenced sample points removed).

    Raises:
        ValueError: the mesh is not watertight or has no volume, a bad ``max_volume`` or
            ``method``, an empty mount set, or an output with inverted/degenerate tets.
        ImportError: ``method="ftetwild"`` without ``wildmeshing`` installed (names the extra).
    """
    from engine.geometry.mesh import check_watertight

    check_watertight(mesh, "tetrahedralize mesh")
    solid = abs(float(mesh.volume))
    if not solid > 0.0:
        raise ValueError("tetrahedralize mesh encloses no volume")
    if max_volume is None:
        max_volume = solid / 2000.0
    max_volume = check_positive("tetrahedralize", "max_volume", max_volume)
    if method == "scipy":
        points, tets = _delaunay_tets(mesh, max_volume)
    elif method == "ftetwild":
        points, tets = _ftetwild_tets(mesh, max_volume)
    else:
        raise ValueError(f"tetrahedralize method must be 'scipy' or 'ftetwild', got {method!r}")
    if len(tets) == 0:
        raise ValueError(f"tetrahedralize({method!r}) produced no tets; try a smaller max_volume")
    used, tets = np.unique(tets, return_inverse=True)
    nodes = points[used]
    tets = _orient(nodes, tets.reshape(-1, 4))
    n = len(nodes)
    if mount is None:
        on_boundary = np.zeros(n, dtype=bool)
        on_boundary[boundary_faces(tets).reshape(-1)] = True
        diag = float(np.linalg.norm(np.ptp(nodes, axis=0)))
        z_min = nodes[on_boundary, 2].min()
        mount = on_boundary & (nodes[:, 2] <= z_min + 1e-9 * diag)
    elif callable(mount):
        mount = np.asarray(mount(nodes))
    if callable(contact):
        contact = np.asarray(contact(nodes))
    try:
        return TetMesh.from_tets(nodes, tets, mount, contact, source=f"tetrahedralize(method={method!r})")
    except ValueError as exc:
        raise ValueError(f"tetrahedralize({method!r}) produced an invalid mesh: {exc}") from exc
