"""Poisson solver benchmark: iterations and wall time to relative residual 1e-4 and 1e-6.

Solvers (all on the same matrices, in one run): CG, Jacobi-PCG, MIC(0)-PCG, MGPCG (McAdams et
al. 2010), the learned multigrid preconditioner with the deep conjugate direction method
(:mod:`engine.linsolve.learned`), and pyamg smoothed-aggregation AMG as PCG preconditioner
(outside baseline; setup and solve timed separately). Also reported: the relative residual that
50 plain Jacobi iterations reach from zero (what FluidLab's gas projection runs).

Scenes: :data:`engine.linsolve.scenes.BENCHMARK_SCENES` (open box with smoke, closed box with a
spherical obstacle, container half filled with liquid, random obstacle field) at 32^3, 64^3,
128^3. Right-hand side: seeded white noise on fluid cells (null space removed). Times are medians
over ``--repeats`` runs (``--repeats-large`` at 128^3); wall time to 1e-4 is a separate solve with
rtol 1e-4. Prints JSON and writes it to ``--out``.

Usage: python benchmarks/poisson.py [--sizes 32,64,128] [--threads 2] [--out FILE]
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
from engine.linsolve.scenes import BENCHMARK_SCENES  # noqa: E402

TRAIN_SIZES = (16, 32, 64)


def scene_flags(name: str, n: int) -> np.ndarray:
    return BENCHMARK_SCENES[name](n)


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


def jacobi50(S: PoissonSystem, b: torch.Tensor) -> float:
    x = torch.zeros_like(b)
    r = b.clone()
    for _ in range(50):
        x = x + S.inv_diag * r
        r = b - S.matvec(x, out=torch.empty_like(x))
        S.project_null_(r)
    return float(r.norm() / b.norm())


def first_below(hist, tol):
    for k, h in enumerate(hist):
        if h <= tol:
            return k
    return None


def run_method(method, S, b, model, repeats):
    setups, t4, t6, res6, res4 = [], [], [], None, None
    for _ in range(repeats):
        solver = PoissonSolver(S, method, rtol=1e-6, max_iter=3000, model=model)
        setups.append(solver.setup_seconds)
        res4 = solver.solve(b, rtol=1e-4, check=False)
        t4.append(res4.seconds)
        res6 = solver.solve(b, rtol=1e-6, check=False)
        t6.append(res6.seconds)
    return {
        "setup_s": round(statistics.median(setups), 4),
        "iters_1e-4": res4.iterations if res4.converged else None,
        "solve_s_1e-4": round(statistics.median(t4), 4),
        "iters_1e-6": res6.iterations if res6.converged else None,
        "solve_s_1e-6": round(statistics.median(t6), 4),
        "total_s_1e-6": round(statistics.median(setups) + statistics.median(t6), 4),
        "converged_1e-6": res6.converged,
        "final_residual": float(res6.residual.max()),
        "iters_to_1e-4_in_1e-6_run": first_below(res6.history, 1e-4),
    }


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


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", default="32,64,128")
    p.add_argument("--scenes", default=",".join(BENCHMARK_SCENES))
    p.add_argument("--methods", default="cg,jacobi,mic0,mgpcg,learned,amg")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--repeats-large", type=int, default=1, help="repeats at 128^3 and above")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--dtype", default="f64", choices=["f32", "f64"])
    p.add_argument("--weights", default=None, help="learned weights (default: shipped)")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    engine.init(precision=args.dtype)
    dtype = torch.float64 if args.dtype == "f64" else torch.float32
    methods = args.methods.split(",")
    model = load_model(args.weights) if "learned" in methods else None
    if model is not None:
        model = model.to(dtype)
    results, jac = [], []
    for n in [int(s) for s in args.sizes.split(",")]:
        reps = args.repeats if n < 128 else args.repeats_large
        for scene in args.scenes.split(","):
            flags = scene_flags(scene, n)
            S = PoissonSystem(flags, dtype=dtype)
            rng = np.random.default_rng(n)
            b = torch.from_numpy(rng.standard_normal(S.shape)).to(dtype) * S.fluid
            S.project_null_(b)
            jac.append({"size": n, "scene": scene, "jacobi50_residual": jacobi50(S, b)})
            for m in methods:
                r = run_amg(S, b, reps) if m == "amg" else run_method(m, S, b, model, reps)
                r.update(
                    {
                        "size": n,
                        "scene": scene,
                        "method": m,
                        "repeats": reps,
                        "resolution_in_training": n in TRAIN_SIZES,
                    }
                )
                results.append(r)
                print(json.dumps(r), file=sys.stderr, flush=True)
    meta = {}
    if model is not None:
        meta = getattr(model, "meta", {})
    doc = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "command": "python benchmarks/poisson.py " + " ".join(argv or sys.argv[1:]),
        "machine": {
            "cpu_count": os.cpu_count(),
            "torch_threads": args.threads,
            "platform": platform.platform(),
            "torch": torch.__version__,
        },
        "dtype": args.dtype,
        "timing": "median of repeats; setup = preconditioner construction; solve excludes setup",
        "training_note": (
            "The learned model was trained on engine.linsolve.scenes.random_training scenes "
            "(random sphere/box obstacles, optional container walls, free surface or open top or "
            "bubbles) at 16^3/32^3/64^3; the benchmark grids themselves were never in training; "
            "128^3 is an unseen resolution."
        ),
        "learned_model_meta": meta,
        "results": results,
        "jacobi50": jac,
    }
    text = json.dumps(doc, indent=1)
    print(text)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
