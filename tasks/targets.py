"""Goal shapes of the pattern tasks (latte art, ice cream) and the Chamfer distance to them.

FluidLab (Xian et al., ICLR 2023, Sec. 4) scores LatteArt, LatteArtStir and IceCream by how well
the material matches a goal shape. Its goals are shipped as data; ours are generated here by
deterministic geometry (no random numbers), so ``python -m tasks.targets --overwrite`` rewrites
``assets/targets/<name>.npz`` bit-identically and the committed files can be checked against it
(without ``--overwrite`` existing files are kept).

Targets (all float64 point sets, metres, in the frame of the container they are drawn in):

* ``latte_heart`` (M, 2): a filled heart (the classic ``x = 16 sin^3 t``,
  ``y = 13 cos t - 5 cos 2t - 2 cos 3t - cos 4t`` outline, scaled) sampled on a square lattice, in
  the coffee cup's x-y frame (origin on the cup axis); the tip points to +x, the pour direction.
* ``latte_swirl`` (M, 2): a two-turn Archimedean spiral band ``r = r0 + b theta`` of constant
  width, sampled on a lattice, in the coffee cup's x-y frame.
* ``ice_cream_swirl`` (M, 3): a soft-serve top: the filled cavity of the holder cup plus a stack
  of three tori of shrinking radius (the swirl) around a core, and a cap, in the holder's frame
  (origin at the holder's rim centre, z up).
* ``ice_cream_mound`` (M, 3): the filled cavity plus a low, wide dome (a scoop), same frame.

Each file holds ``points`` and ``metadata`` (a JSON string: units, frame, how it was made and the
container geometry the shape was designed for; tasks check their geometry against it).

:func:`chamfer` is the symmetric Chamfer distance (Fan et al., "A Point Set Generation Network
for 3D Object Reconstruction from a Single Image", CVPR 2017, eq. 1, with unsquared distances)
the tasks use as their differentiable loss.
"""

from __future__ import annotations

import argparse
import json
import math
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

TARGET_DIR = Path(__file__).resolve().parent.parent / "assets" / "targets"
"""Where the committed target files live."""

#: Geometry the targets are designed for [m] (the tasks' default containers).
COFFEE_CUP_INNER_RADIUS = 0.205
HOLDER_RADIUS = 0.1
HOLDER_HEIGHT = 0.09
HOLDER_WALL = 0.035
#: The latte swirl: spiral radii from/to [m], turns, band width [m].
SWIRL_RADII = (0.02, 0.17)
SWIRL_TURNS = 2.0
SWIRL_WIDTH = 0.04

_LATTICE_2D = 0.02  # lattice spacing of the 2-D targets [m]
_LATTICE_3D = 0.025  # lattice spacing of the 3-D targets [m]
_KEYS = {"points", "metadata"}


# ------------------------------------------------------------------------------ geometry
def _lattice(lo: np.ndarray, hi: np.ndarray, h: float) -> np.ndarray:
    """Cell centres of a lattice of spacing ``h`` centred on the box ``[lo, hi]``."""
    axes = []
    for a, b in zip(lo, hi, strict=True):
        n = max(1, int(math.floor((b - a) / h)))
        start = 0.5 * (a + b) - 0.5 * (n - 1) * h
        axes.append(start + h * np.arange(n))
    grids = np.meshgrid(*axes, indexing="ij")
    return np.stack([g.ravel() for g in grids], axis=1)


def _inside_polygon(points: np.ndarray, polygon: np.ndarray) -> np.ndarray:
    """Even-odd rule: which 2-D ``points`` (N, 2) lie inside the closed ``polygon`` (V, 2)."""
    x, y = points[:, 0:1], points[:, 1:2]
    x0, y0 = polygon[:, 0], polygon[:, 1]
    x1, y1 = np.roll(x0, -1), np.roll(y0, -1)
    crosses = (y0 > y) != (y1 > y)
    with np.errstate(divide="ignore", invalid="ignore"):
        x_cross = x0 + (y - y0) * (x1 - x0) / (y1 - y0)
    return np.count_nonzero(crosses & (x < x_cross), axis=1) % 2 == 1


def latte_heart(size: float = 0.3) -> np.ndarray:
    """(M, 2) filled heart of width ``size`` [m] centred on the origin, tip toward +x."""
    t = np.linspace(0.0, 2.0 * np.pi, 721)[:-1]
    u = 16.0 * np.sin(t) ** 3  # across the heart
    w = 13.0 * np.cos(t) - 5.0 * np.cos(2 * t) - 2.0 * np.cos(3 * t) - np.cos(4 * t)  # lobes at +w
    outline = np.stack([-w, u], axis=1)  # tip (w < 0) toward +x
    outline -= 0.5 * (outline.min(0) + outline.max(0))
    outline *= size / np.ptp(outline[:, 1])
    lattice = _lattice(outline.min(0), outline.max(0), _LATTICE_2D)
    return lattice[_inside_polygon(lattice, outline)]


def latte_swirl() -> np.ndarray:
    """(M, 2) spiral band ``r = r0 + (r1 - r0) theta / (2 pi turns)``, ``theta`` in
    ``[0, 2 pi turns]`` (counter-clockwise outward), of width ``SWIRL_WIDTH`` [m]."""
    (r0, r1), turns, width = SWIRL_RADII, SWIRL_TURNS, SWIRL_WIDTH
    theta = np.linspace(0.0, 2.0 * np.pi * turns, 2000)
    r = r0 + (r1 - r0) * theta / theta[-1]
    curve = np.stack([r * np.cos(theta), r * np.sin(theta)], axis=1)
    lattice = _lattice(np.full(2, -r1 - width), np.full(2, r1 + width), _LATTICE_2D)
    dist = np.min(np.linalg.norm(lattice[:, None, :] - curve[None, :, :], axis=-1), axis=1)
    return lattice[dist <= 0.5 * width]


def _holder_cavity(h: float) -> np.ndarray:
    """(M, 3) lattice filling the holder cup's cavity, holder frame (rim centre at z = 0)."""
    r_in = HOLDER_RADIUS - HOLDER_WALL
    depth = HOLDER_HEIGHT - HOLDER_WALL
    pts = _lattice(np.array([-r_in, -r_in, -depth]), np.array([r_in, r_in, 0.0]), h)
    return pts[np.hypot(pts[:, 0], pts[:, 1]) <= r_in - 0.25 * h]


def ice_cream_swirl() -> np.ndarray:
    """(M, 3) soft-serve top: cavity plus three stacked tori and a cap, holder frame [m]."""
    h = _LATTICE_3D
    tube = 0.03  # torus tube radius [m]
    rings = ((0.065, tube), (0.045, 2.4 * tube), (0.025, 3.8 * tube))  # (ring radius, centre height)
    lattice = _lattice(np.array([-0.12, -0.12, 0.0]), np.array([0.12, 0.12, 0.2]), h)
    rho = np.hypot(lattice[:, 0], lattice[:, 1])
    inside = np.zeros(len(lattice), dtype=bool)
    for R, zc in rings:
        inside |= (rho - R) ** 2 + (lattice[:, 2] - zc) ** 2 <= tube**2
    inside |= rho**2 + (lattice[:, 2] - 4.8 * tube) ** 2 <= tube**2  # cap
    inside |= (rho <= 0.065) & (lattice[:, 2] <= 2.4 * tube)  # core under the rings
    return np.concatenate([_holder_cavity(h), lattice[inside]])


def ice_cream_mound() -> np.ndarray:
    """(M, 3) scoop: cavity plus a dome ``(rho/0.11)^2 + (z/0.07)^2 <= 1``, holder frame [m]."""
    h = _LATTICE_3D
    lattice = _lattice(np.array([-0.12, -0.12, 0.0]), np.array([0.12, 0.12, 0.08]), h)
    rho = np.hypot(lattice[:, 0], lattice[:, 1])
    dome = (rho / 0.11) ** 2 + (lattice[:, 2] / 0.07) ** 2 <= 1.0
    return np.concatenate([_holder_cavity(h), lattice[dome]])


def _holder_meta() -> dict:
    return {"holder_radius": HOLDER_RADIUS, "holder_height": HOLDER_HEIGHT, "holder_wall": HOLDER_WALL}


#: name -> (generator, spatial dimension, metadata)
TARGETS: dict[str, tuple[Callable[[], np.ndarray], int, dict]] = {
    "latte_heart": (
        latte_heart,
        2,
        {
            "frame": "coffee cup x-y, origin on the cup axis; tip toward +x",
            "made": f"filled heart of width 0.3 m, lattice spacing {_LATTICE_2D} m",
            "cup_inner_radius": COFFEE_CUP_INNER_RADIUS,
        },
    ),
    "latte_swirl": (
        latte_swirl,
        2,
        {
            "frame": "coffee cup x-y, origin on the cup axis",
            "made": f"{SWIRL_TURNS}-turn Archimedean spiral band r = {SWIRL_RADII} m, width {SWIRL_WIDTH} m, "
            f"lattice {_LATTICE_2D} m",
            "cup_inner_radius": COFFEE_CUP_INNER_RADIUS,
        },
    ),
    "ice_cream_swirl": (
        ice_cream_swirl,
        3,
        {
            "frame": "holder cup, origin at its rim centre, z up",
            "made": f"cavity + 3 stacked tori (R 0.065/0.045/0.025 m, tube 0.03 m) + core + cap, lattice {_LATTICE_3D}",
            **_holder_meta(),
        },
    ),
    "ice_cream_mound": (
        ice_cream_mound,
        3,
        {
            "frame": "holder cup, origin at its rim centre, z up",
            "made": f"cavity + dome of radius 0.11 m and height 0.07 m, lattice {_LATTICE_3D} m",
            **_holder_meta(),
        },
    ),
}


# ------------------------------------------------------------------------------ files
def write_targets(directory: str | Path = TARGET_DIR, overwrite: bool = True) -> list[Path]:
    """Generate every target and write ``<directory>/<name>.npz``; returns the paths written.

    With ``overwrite=False`` an existing file is kept (and not returned)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, (make, dim, meta) in TARGETS.items():
        path = directory / f"{name}.npz"
        if path.exists() and not overwrite:
            continue
        points = np.ascontiguousarray(make(), dtype=np.float64)
        if points.ndim != 2 or points.shape[1] != dim:
            raise RuntimeError(f"generator of {name!r} returned shape {points.shape}, expected (M, {dim})")
        metadata = {"name": name, "units": "m", "dim": dim, "n_points": len(points), **meta}
        np.savez_compressed(path, points=points, metadata=np.array(json.dumps(metadata, sort_keys=True)))
        paths.append(path)
    return paths


def load_metadata(name: str, directory: str | Path = TARGET_DIR) -> dict:
    """The metadata dict of target ``name`` (validated as in :func:`load_target`)."""
    return _load(name, directory)[1]


def load_target(name: str, directory: str | Path = TARGET_DIR) -> np.ndarray:
    """(M, D) float64 points [m] of target ``name`` (D = 2 for latte art, 3 for ice cream).

    Raises:
        ValueError: unknown name, or a malformed file naming it (not an npz, wrong keys, wrong
            shape or dtype, NaN/Inf, unreadable or incomplete metadata, points that do not fit
            the container the metadata names).
        FileNotFoundError: the file is missing (regenerate with ``python -m tasks.targets``).
    """
    return _load(name, directory)[0]


def _load(name: str, directory: str | Path) -> tuple[np.ndarray, dict]:
    if name not in TARGETS:
        raise ValueError(f"unknown target {name!r}; known: {sorted(TARGETS)}")
    dim = TARGETS[name][1]
    path = Path(directory) / f"{name}.npz"
    if not path.is_file():
        raise FileNotFoundError(f"target file {path} is missing; regenerate it with `python -m tasks.targets`")
    with open(path, "rb") as f:
        if f.read(4) != b"PK\x03\x04":
            raise ValueError(f"target file {path} is not a readable .npz archive (no zip header)")
    try:
        with np.load(path, allow_pickle=False) as data:
            keys = set(data.files)
            if keys != _KEYS:
                raise ValueError(f"target file {path}: expected keys {sorted(_KEYS)}, got {sorted(keys)}")
            points = data["points"]
            raw_meta = data["metadata"]
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise ValueError(f"target file {path} is not a readable .npz archive ({exc})") from exc
    except ValueError as exc:  # object arrays (allow_pickle=False) and our own key check
        raise ValueError(f"target file {path} is malformed: {exc}") from exc
    if points.dtype != np.float64 or points.ndim != 2 or points.shape[1] != dim or len(points) == 0:
        raise ValueError(f"target file {path}: points must be a non-empty float64 (M, {dim}) array, got "
                         f"{points.dtype} {points.shape}")  # fmt: skip
    if not np.all(np.isfinite(points)):
        raise ValueError(f"target file {path}: points contain NaN/Inf")
    try:
        metadata = json.loads(str(raw_meta))
    except (json.JSONDecodeError, TypeError) as exc:
        raise ValueError(f"target file {path}: metadata is not a JSON string ({exc})") from exc
    if not isinstance(metadata, dict) or metadata.get("units") != "m" or metadata.get("name") != name:
        raise ValueError(f"target file {path}: metadata must be a dict with units 'm' and name {name!r}")
    _check_metadata(path, name, points, metadata)
    return points, metadata


def _check_metadata(path: Path, name: str, points: np.ndarray, metadata: dict) -> None:
    """The metadata has every key the generator writes, its container sizes are positive numbers,
    ``n_points`` counts the points, and the points fit the container: within the cup's inner radius
    (2-D), within 1.5 holder radii of the axis and above the holder's outer bottom (3-D; a
    soft-serve top may overhang the holder's rim, by half its radius at most)."""
    dim, design = TARGETS[name][1], TARGETS[name][2]
    required = {"name", "units", "dim", "n_points", *design}
    missing = sorted(required - set(metadata))
    if missing:
        raise ValueError(f"target file {path}: metadata lacks {missing} (regenerate it with `python -m tasks.targets`)")
    sizes = {k: metadata[k] for k, v in design.items() if isinstance(v, float)}
    for key, value in sizes.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
            raise ValueError(f"target file {path}: metadata {key!r} must be a positive number [m], got {value!r}")
    if metadata["dim"] != dim or metadata["n_points"] != len(points):
        raise ValueError(
            f"target file {path}: metadata says dim {metadata['dim']!r} and n_points {metadata['n_points']!r}, "
            f"the points are ({len(points)}, {dim})"
        )
    radius = float(np.max(np.hypot(points[:, 0], points[:, 1])))
    if dim == 2:
        bound, what = sizes["cup_inner_radius"], f"cup_inner_radius {sizes['cup_inner_radius']} m"
    else:
        bound, what = 1.5 * sizes["holder_radius"], f"1.5 x holder_radius {sizes['holder_radius']} m"
        if float(points[:, 2].min()) < -sizes["holder_height"]:
            raise ValueError(
                f"target file {path}: points reach {points[:, 2].min():.4g} m below the rim, deeper than the "
                f"holder_height {sizes['holder_height']} m its metadata names (wrong units or scale?)"
            )
    if radius > bound:
        raise ValueError(
            f"target file {path}: points reach {radius:.4g} m from the axis, beyond the {what} its metadata names "
            "(wrong units or scale?)"
        )


# ------------------------------------------------------------------------------ loss
def chamfer(points: torch.Tensor, target: torch.Tensor, extra: torch.Tensor | None = None) -> torch.Tensor:
    """Symmetric Chamfer distance between point sets, batched and differentiable.

    ``mean_j min_i d_ij + mean_i min_j d_ij`` with ``d_ij = sqrt(|p_i - t_j|^2 + e_i^2)``: the
    first term is coverage (every target point has material near it), the second precision
    (every particle is near the target). ``extra`` adds a per-particle offset (e.g. the height
    of a particle above a surface layer) orthogonal to the compared coordinates.

    Args:
        points: (B, N, D) particle coordinates [m].
        target: (M, D) target points [m].
        extra: optional (B, N) non-negative offset [m] per particle.

    Returns:
        (B,) distance [m].
    """
    t = target.to(points.dtype)
    d2 = torch.cdist(points, t.expand(points.shape[0], *t.shape)) ** 2  # (B, N, M)
    if extra is not None:
        d2 = d2 + extra[..., None] ** 2
    d = torch.sqrt(d2 + 1e-12)
    return d.min(dim=1).values.mean(dim=-1) + d.min(dim=2).values.mean(dim=-1)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Write the goal targets of the pattern tasks (.npz).")
    parser.add_argument("--out", default=str(TARGET_DIR), help="output directory (default: assets/targets)")
    parser.add_argument("--overwrite", action="store_true", help="replace target files that exist (the shipped ones)")
    args = parser.parse_args(argv)
    kept = [name for name in TARGETS if (Path(args.out) / f"{name}.npz").exists()] if not args.overwrite else []
    for path in write_targets(args.out, overwrite=args.overwrite):
        points = load_target(path.stem, path.parent)
        print(f"{path}: {points.shape[0]} points, {path.stat().st_size} bytes")
    if kept:
        print(f"kept the existing {', '.join(kept)} in {args.out} (pass --overwrite to regenerate them)")


if __name__ == "__main__":
    main()
