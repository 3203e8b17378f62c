"""Mesh voxel SDF benchmark: libigl (engine.geometry.mesh_grid_sdf) against the hand-written
numpy implementation it replaced, side by side in one run. Prints JSON.

Scene: a closed torus (major radius 0.3 m, minor radius 0.1 m, 100 x 50 sections = 10,000
triangles; non-convex, so the sign test matters) voxelized on a 64^3 grid padded by 3 voxels,
as ``Mesh.from_trimesh(tm, resolution=64)`` does.

The numpy implementation is ``mesh_grid_sdf`` of ``engine/colliders.py`` at commit ``da109ed``
(exact point-triangle distances with a k-d tree over centroids, signs from generalized winding
numbers once per region the surface cannot separate), loaded from git into a temporary module,
so none of it stays in the tree. It runs on one core; libigl runs on ``--threads`` threads
(``IGL_NUM_THREADS``, set before libigl is loaded; default 1 for a like-for-like comparison).

Reports the median wall time of each over its repeats, the ratio old / new, the largest absolute
difference of the two grids, and how many samples off the surface (|d| > 1e-12 m) change sign.

Usage: python benchmarks/mesh_sdf.py [--resolution 64] [--threads 1] [--repeats 3]
       [--old-repeats 1] [--out results.json]
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from importlib import metadata

OLD_COMMIT = "da109ed"
OLD_PATH = "engine/colliders.py"


def load_old_module():
    """``engine/colliders.py`` at ``OLD_COMMIT`` as a module (numpy/scipy/trimesh/taichi only)."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    source = subprocess.run(
        ["git", "show", f"{OLD_COMMIT}:{OLD_PATH}"], cwd=root, capture_output=True, text=True, check=True
    ).stdout
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "colliders_da109ed.py")
        with open(path, "w") as f:
            f.write(source)
        spec = importlib.util.spec_from_file_location("colliders_da109ed", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    return module


def grid_of(tm, resolution: int, padding: int = 3):
    """``(lo (3,), voxel)`` of the cubic grid ``Mesh.from_trimesh`` builds around ``tm``."""
    import numpy as np

    bounds = np.asarray(tm.bounds, dtype=np.float64)
    voxel = float((bounds[1] - bounds[0]).max()) / (resolution - 1 - 2 * padding)
    lo = 0.5 * (bounds[0] + bounds[1]) - 0.5 * (resolution - 1) * voxel
    return lo, voxel


def timed(fn, repeats: int):
    """``(result of the last call, median seconds over repeats)``."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return out, statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resolution", type=int, default=64, help="samples per axis")
    parser.add_argument("--threads", type=int, default=1, help="libigl threads (IGL_NUM_THREADS)")
    parser.add_argument("--repeats", type=int, default=3, help="runs of the libigl path")
    parser.add_argument("--old-repeats", type=int, default=1, help="runs of the numpy path")
    parser.add_argument("--out", default=None, help="also write the JSON here")
    args = parser.parse_args()
    os.environ["IGL_NUM_THREADS"] = str(args.threads)

    import numpy as np
    import trimesh

    from engine.geometry import mesh_grid_sdf

    tm = trimesh.creation.torus(major_radius=0.3, minor_radius=0.1, major_sections=100, minor_sections=50)
    if not tm.is_watertight:
        raise RuntimeError("benchmark mesh is not watertight")
    lo, voxel = grid_of(tm, args.resolution)
    shape = (args.resolution,) * 3
    old = load_old_module()

    new_grid, new_s = timed(lambda: mesh_grid_sdf(tm, lo, voxel, shape), args.repeats)
    old_grid, old_s = timed(lambda: old.mesh_grid_sdf(tm, lo, voxel, shape), args.old_repeats)
    diff = np.abs(new_grid - old_grid)
    off_surface = np.abs(old_grid) > 1e-12
    result = {
        "benchmark": "mesh_sdf",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join([sys.executable.rsplit("/", 1)[-1], *sys.argv]),
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(),
            "python": platform.python_version(),
        },
        "versions": {name: metadata.version(name) for name in ("libigl", "numpy", "scipy", "trimesh")},
        "mesh": {"kind": "torus 0.3 / 0.1 m, 100 x 50 sections", "faces": len(tm.faces), "watertight": True},
        "grid": {"resolution": args.resolution, "padding": 3, "voxel_size_m": voxel, "samples": int(diff.size)},
        "old": {"implementation": f"numpy, {OLD_PATH} at {OLD_COMMIT}", "threads": 1, "seconds": old_s},
        "new": {
            "implementation": "libigl signed_distance (fast winding number)",
            "threads": args.threads,
            "seconds": new_s,
        },
        "ratio_old_over_new": old_s / new_s,
        "max_abs_difference_m": float(diff.max()),
        "sign_changes_off_surface": int(((new_grid < 0) != (old_grid < 0))[off_surface].sum()),
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
