"""Poisson solver benchmark: iterations and wall time per solve, setup included, to relative
residual 1e-6, all methods side by side on the same matrices in one run.

Solvers: MIC(0)-PCG, MGPCG (McAdams et al. 2010), the learned multigrid preconditioner with the
deep conjugate direction method (:mod:`engine.linsolve.learned`), optionally CG, Jacobi-PCG and
pyamg smoothed-aggregation AMG as PCG preconditioner (outside baseline).

Scenes (``--scenes``): the liquid operators of the pressure-projected liquid mode, i.e. cell flags
with ghost-fluid free-surface weights (theta_min 0.01): ``random_liquid:SEED`` draws from the
training family (:func:`engine.linsolve.scenes.random_liquid`) with seeds the trainer never uses
(it draws from seed 0's stream); ``dam_break`` and ``tilted_pool`` are geometries outside the
training family; the unit-coefficient scenes of :data:`engine.linsolve.scenes.BENCHMARK_SCENES`
are accepted too. Sizes 48^3 and 128^3 are resolutions never used in training (16, 32, 64).

Timing: the flags change every solve in a liquid, so each solve builds its preconditioner anew:
total = setup (preconditioner construction) + solve; the operator itself (PoissonSystem, shared
by all methods) is timed apart. Methods are interleaved within each repeat so that load from
other processes on the machine hits them alike; medians and minima over ``--repeats`` are
reported, and the load average at start and end is recorded. Right-hand side: seeded white noise
on fluid cells. Prints JSON and writes it to ``--out``.

Usage: python benchmarks/poisson.py [--sizes 48,64,128] [--threads 1] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import engine  # noqa: E402
from engine.linsolve import PoissonSolver, PoissonSystem  # noqa: E402
from engine.linsolve.learned import load_model  # noqa: E402
from engine.linsolve.scenes import BENCHMARK_SCENES, LIQUID_SCENES, random_liquid  # noqa: E402


def to_scipy(S: PoissonSystem):
    """The fluid-cell block of A as a scipy CSR matrix and the fluid index."""
    import scipy.sparse as sp

    fluid = S.fluid[0].reshape(-1).numpy() > 0
    idx = np.nonzero(fluid)[0]
    pos = -np.ones(fluid.size, np.int64)
    pos[idx] = np.arange(idx.size)
    rows, cols = [idx], [idx]
    vals = [S.diag[0].reshape(-1).numpy()[idx]]
    shape = S.shape[1:]
    strides = (shape[1] * shape[2], shape[2], 1)
    for c, stride in zip((S.cx, S.cy, S.cz), strides, strict=True):
        a = c[0].numpy()
        full = np.zeros(shape)
        sl = tuple(slice(0, s) for s in a.shape)
        full[sl] = a
        i = np.nonzero(full.reshape(-1) > 0)[0]
        j = i + stride
        rows += [pos[i], pos[j]]
        cols += [pos[j], pos[i]]
        vals += [-np.ones(i.size), -np.ones(i.size)]
    rows[0] = pos[idx]
    cols[0] = pos[idx]
    A = sp.csr_matrix(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
        shape=(idx.size, idx.size),
    )
    return A, idx


def first_below(hist, tol):
    for k, h in enumerate(hist):
        if h <= tol:
            return k
    return None


def run_once(method, S, b, model, n_keep):
    solver = PoissonSolver(S, method, rtol=1e-6, max_iter=3000, model=model, n_keep=n_keep, check=False)
    res = solver.solve(b)
    return solver.setup_seconds, res


def run_amg(S, b, repeats):
    import pyamg

    A, idx = to_scipy(S)
    bb = b[0].reshape(-1).numpy()[idx]
    out = {}
    setups = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        ml = pyamg.smoothed_aggregation_solver(A, symmetry="symmetric")
        setups.append(time.perf_counter() - t0)
    out["setup_s"] = round(statistics.median(setups), 4)
    for tol in (1e-4, 1e-6):
        ts, its, rel = [], None, None
        for _ in range(repeats):
            residuals = []
            t0 = time.perf_counter()
            x = ml.solve(bb, tol=tol, accel="cg", maxiter=500, residuals=residuals)
            ts.append(time.perf_counter() - t0)
            its = len(residuals) - 1
            rel = float(np.linalg.norm(bb - A @ x) / np.linalg.norm(bb))
        key = "1e-4" if tol == 1e-4 else "1e-6"
        out[f"iters_{key}"] = its
        out[f"solve_s_{key}"] = round(statistics.median(ts), 4)
        out[f"true_residual_{key}"] = rel
    out["total_s_1e-6"] = round(out["setup_s"] + out["solve_s_1e-6"], 4)
    out["converged_1e-6"] = out["true_residual_1e-6"] <= 1.01e-6
    out["matrix_rows"] = int(A.shape[0])
    return out


def build_case(scene: str, n: int, dtype):
    if scene.startswith("random_liquid:"):
        f, g = random_liquid(n, np.random.default_rng(int(scene.split(":")[1])))
    elif scene in LIQUID_SCENES:
        f, g = LIQUID_SCENES[scene](n)
    elif scene in BENCHMARK_SCENES:
        f, g = BENCHMARK_SCENES[scene](n), None
    else:
        raise ValueError(f"--scenes: unknown scene {scene!r}")
    t0 = time.perf_counter()
    S = PoissonSystem(f, dtype=dtype, ghost=g)
    return f, g, S, time.perf_counter() - t0


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", default="48,64,128")
    p.add_argument("--scenes", default="random_liquid:1001,random_liquid:1002,dam_break,tilted_pool")
    p.add_argument("--methods", default="mic0,mgpcg,learned")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--repeats-large", type=int, default=3, help="repeats at 128^3 and above")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--dtype", default="f32", choices=["f32", "f64"])
    p.add_argument("--n-keep", type=int, default=4, help="directions kept by the learned solver")
    p.add_argument("--weights", default=None, help="learned weights (default: shipped)")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    engine.init(precision=args.dtype)
    dtype = torch.float64 if args.dtype == "f64" else torch.float32
    methods = args.methods.split(",")
    model = load_model(args.weights).to(dtype) if "learned" in methods else None
    load_start = os.getloadavg()
    results, summary = [], []
    for n in [int(s) for s in args.sizes.split(",")]:
        reps = args.repeats if n < 128 else args.repeats_large
        for scene in args.scenes.split(","):
            f, g, S, system_s = build_case(scene, n, dtype)
            rng = np.random.default_rng(n)
            b = torch.from_numpy(rng.standard_normal(S.shape)).to(dtype) * S.fluid
            S.project_null_(b)
            runs = {m: [] for m in methods}
            for _ in range(reps):
                for m in methods:
                    if m == "amg":
                        continue
                    setup, res = run_once(m, S, b, model, args.n_keep)
                    runs[m].append((setup, res.seconds, res))
            row = {}
            for m in methods:
                if m == "amg":
                    r = run_amg(S, b, reps)
                else:
                    tot = [a + c for a, c, _ in runs[m]]
                    last = runs[m][-1][2]
                    r = {
                        "setup_s": round(statistics.median(a for a, _, _ in runs[m]), 4),
                        "solve_s": round(statistics.median(c for _, c, _ in runs[m]), 4),
                        "total_s_median": round(statistics.median(tot), 4),
                        "total_s_min": round(min(tot), 4),
                        "iters_1e-6": last.iterations if last.converged else None,
                        "converged_1e-6": last.converged,
                        "final_residual": float(last.residual.max()),
                        "iters_to_1e-4": first_below(last.history, 1e-4),
                    }
                r.update(
                    {
                        "size": n,
                        "scene": scene,
                        "method": m,
                        "repeats": reps,
                        "fluid_cells": int((f == 0).sum()),
                        "ghost": g is not None,
                        "system_s": round(system_s, 4),
                    }
                )
                row[m] = r
                results.append(r)
                print(json.dumps(r), file=sys.stderr, flush=True)
            if "learned" in row and "mgpcg" in row:
                L, M = row["learned"], row["mgpcg"]
                summary.append(
                    {
                        "size": n,
                        "scene": scene,
                        "learned_over_mgpcg_total_median": round(L["total_s_median"] / M["total_s_median"], 3),
                        "learned_over_mgpcg_total_min": round(L["total_s_min"] / M["total_s_min"], 3),
                        "iters_learned": L["iters_1e-6"],
                        "iters_mgpcg": M["iters_1e-6"],
                        "iters_mic0": row.get("mic0", {}).get("iters_1e-6"),
                    }
                )
    doc = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "command": "python benchmarks/poisson.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": {
            "cpu_model": cpu_model(),
            "cpu_count": os.cpu_count(),
            "torch_threads": args.threads,
            "load_average_start": [round(x, 2) for x in load_start],
            "load_average_end": [round(x, 2) for x in os.getloadavg()],
            "platform": platform.platform(),
            "torch": torch.__version__,
        },
        "dtype": args.dtype,
        "timing": (
            "per solve, setup included (preconditioner built anew for every solve, as when the flags change "
            "every step); median and min over repeats, methods interleaved; system_s (the operator, shared "
            "by all methods) excluded"
        ),
        "learned_model_meta": getattr(model, "meta", {}) if model is not None else {},
        "learned_n_keep": args.n_keep,
        "summary": summary,
        "results": results,
    }
    text = json.dumps(doc, indent=1)
    print(text)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
