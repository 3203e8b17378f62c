"""Tactile signal benchmark: time of ``TactileSensorView.signals`` (engine/tactile.py). Prints JSON.

Scene: a flat 20 mm x 20 mm pad of 30 x 30 surface nodes (1682 triangles), a pinhole camera
25 mm behind it whose view fits inside the pad, 136 markers (8 x 17 grid), the default GelSight
lights; the surface is pressed 1 mm deep by a sphere of radius 6 mm with a little shear (so the
per-pixel walk has to move), random node forces. All signals are computed (markers, forces,
wrench, depth, normal map, image).

For each image size (64^2, 128^2) and batch size (1, 8), f32 on the chosen device:
    * ``forward``: ``signals()`` under ``torch.no_grad()``;
    * ``forward_backward``: ``signals()`` on inputs that require grad, then ``backward()`` of the
      sum of every output's mean.
Each is the median (and the minimum) wall time of ``--repeats`` runs after one warm-up run.
The view's one-time setup (which triangle each pixel sees at rest) is timed separately.

Usage: python benchmarks/tactile_image.py [--repeats 7] [--threads 1] [--device cpu]
       [--out results.json] [--example /tmp/tactile_example.png]
(``--example`` also writes a 128 x 128 tactile image of the pressed pad as a PNG.)
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from engine.tactile import MarkerLayout, PinholeCamera, TactileSensorView  # noqa: E402

NODES = 30
SIZE = 0.02  # pad edge [m]
CAM_DIST = 0.025  # camera behind the pad [m]
FOV_DEG = 40.0  # sees a 18.2 mm square of the pad


def pad(n: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """``n x n`` nodes on ``[-SIZE/2, SIZE/2]^2`` at ``z = 0``; two triangles per cell, normal +z."""
    s = torch.linspace(-SIZE / 2, SIZE / 2, n, dtype=dtype)
    y, x = torch.meshgrid(s, s, indexing="ij")
    nodes = torch.stack([x, y, torch.zeros_like(x)], -1).reshape(-1, 3)
    j, i = torch.meshgrid(torch.arange(n - 1), torch.arange(n - 1), indexing="ij")
    p00 = (j * n + i).reshape(-1)
    p10, p01, p11 = p00 + 1, p00 + n, p00 + n + 1
    tris = torch.cat([torch.stack([p00, p10, p11], -1), torch.stack([p00, p11, p01], -1)])
    return nodes, tris


def pressed(rest: torch.Tensor, batch: int, radius=6e-3, depth=1e-3, shear=(3e-4, -2e-4)) -> torch.Tensor:
    """A sphere pressed into the pad (nodes moved onto the sphere), plus a smooth shear, ``(B, S, 3)``."""
    r2 = rest[:, 0] ** 2 + rest[:, 1] ** 2
    zs = (radius - depth) - torch.sqrt(torch.clamp(radius**2 - r2, min=0.0))
    z = torch.where(r2 < radius**2, torch.minimum(rest[:, 2], zs), rest[:, 2])
    g = torch.exp(-r2 / (2 * (radius / 2) ** 2))
    x = torch.stack([rest[:, 0] + shear[0] * g, rest[:, 1] + shear[1] * g, z], -1)
    return x.unsqueeze(0).repeat(batch, 1, 1)


def make_view(size: int, dtype: torch.dtype) -> TactileSensorView:
    rest, tris = pad(NODES, dtype)
    markers = MarkerLayout.grid(rest, tris, rows=8, cols=17, spacing=1.0e-3)
    camera = PinholeCamera.from_fov(size, size, FOV_DEG, position=(0.0, 0.0, -CAM_DIST))
    return TactileSensorView(rest, tris, camera, markers=markers)


def timed(fn, repeats: int) -> list[float]:
    fn()  # warm-up (also fills the view's per-dtype caches)
    out = []
    for _ in range(repeats):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        out.append(time.perf_counter() - t0)
    return out


def bench(size: int, batch: int, repeats: int, device: str) -> dict:
    dtype = torch.float32
    t0 = time.perf_counter()
    view = make_view(size, dtype)
    setup = time.perf_counter() - t0
    x = pressed(view.surface_rest, batch).to(device)
    f = torch.randn(x.shape, generator=torch.Generator().manual_seed(0), dtype=dtype).to(device)

    def forward():
        with torch.no_grad():
            view.signals(x, f)

    xg, fg = x.clone().requires_grad_(), f.clone().requires_grad_()

    def forward_backward():
        s = view.signals(xg, fg)
        sum(v.mean() for v in s.values()).backward()
        xg.grad = fg.grad = None

    fwd, fb = timed(forward, repeats), timed(forward_backward, repeats)
    return {
        "image": [size, size],
        "batch_size": batch,
        "covered_pixels": int(view.coverage.sum()),
        "setup_seconds": setup,
        "forward_ms_median": 1e3 * statistics.median(fwd),
        "forward_backward_ms_median": 1e3 * statistics.median(fb),
        "forward_ms_min": 1e3 * min(fwd),
        "forward_backward_ms_min": 1e3 * min(fb),
        "forward_ms_all": [1e3 * t for t in fwd],
        "forward_backward_ms_all": [1e3 * t for t in fb],
    }


def write_example(path: str) -> None:
    """A 128 x 128 tactile image of the pressed pad (f64), saved as PNG."""
    import imageio.v3 as iio

    view = make_view(128, torch.float64)
    image, depth = view.render(pressed(view.surface_rest, 1))
    iio.imwrite(path, (image[0] * 255).round().to(torch.uint8).numpy())
    print(f"wrote {path}: max depth {1e3 * float(depth.max()):.3f} mm", file=sys.stderr)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (CPU)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default=None, help="also write the JSON here")
    parser.add_argument("--example", default=None, help="write an example tactile image (PNG) here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    load = os.getloadavg()[0]  # other processes on a shared machine make the medians noisy
    if args.example:
        write_example(args.example)
    runs = [bench(size, batch, args.repeats, args.device) for size in (64, 128) for batch in (1, 8)]
    result = {
        "benchmark": "tactile_image",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": "python " + " ".join([os.path.relpath(sys.argv[0])] + sys.argv[1:]),
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(),
            "python": platform.python_version(),
            "device": args.device if args.device == "cpu" else torch.cuda.get_device_name(args.device),
            "load_average_1min_at_start": load,
        },
        "versions": {"torch": torch.__version__},
        "threads": torch.get_num_threads(),
        "precision": "f32",
        "scene": {
            "surface_nodes": NODES * NODES,
            "triangles": 2 * (NODES - 1) ** 2,
            "markers": 136,
            "press": "sphere of radius 6 mm, 1 mm deep, 0.36 mm peak shear",
        },
        "runs": runs,
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        with open(args.out, "w") as fh:
            fh.write(text + "\n")


if __name__ == "__main__":
    main()
