"""Trainer of the learned multigrid preconditioner (``fluxlab train-preconditioner``).

Unsupervised objective of Kaneda et al., ICML 2023 (arXiv 2205.10763, Eq. 9): for residual-like
vectors r, minimize ||r - s A f(r)||^2 / ||r||^2 over the network with the optimal scale s
factored out, i.e. the loss 1 - (r.A f)^2 / (|r|^2 |A f|^2) (:mod:`engine.linsolve.learned`).

Training data: random liquid scenes of :func:`engine.linsolve.scenes.random_liquid` (containers,
layers, blobs and drops with ghost-fluid free-surface weights, solid obstacles at random poses;
fraction ``--liquid``) and unit-coefficient scenes of :func:`engine.linsolve.scenes.random_training`
(obstacles, containers, free surfaces, bubbles, closed boxes) at the grid sizes given by
``--sizes``, several scenes stacked on the batch axis of one
:class:`~engine.linsolve.operator.PoissonSystem` (float32). The vectors
are rich in the low end of A's spectrum in the way that matters to a preconditioned solver: they
are the residuals r_k of our own MGPCG solves (k = 0..8) started from white-noise and smooth
random right-hand sides, normalized; the residuals after a few V-cycles are exactly the
components the plain V-cycle handles worst. The pool of scenes is refreshed during training.

Model selection: every ``--val-every`` steps the conjugate direction solve (rtol 1e-6) runs on a
fixed validation set (four 32^3 liquid scenes, seed 12345, not in the training stream); the
weights with the fewest total iterations (ties: lower loss) are kept.
Outputs: the weight file (``--out``, by default under the git-ignored ``out/``; an existing file
is replaced only with ``--overwrite``, so regenerating the shipped weights is ``--out
assets/preconditioner/learned_mg.pt --overwrite``), a loss-curve PNG (``--plot``) and a JSON log
next to it.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import time
from pathlib import Path

import numpy as np
import torch

from engine.linsolve.learned import DEFAULT_WEIGHTS, LearnedMG, save_weights
from engine.linsolve.multigrid import Hierarchy, JacobiSmoother, VCycle
from engine.linsolve.operator import FLUID, PoissonSystem, bdot
from engine.linsolve.pcg import conjugate_directions
from engine.linsolve.scenes import random_liquid, random_training


def parse_args(argv):
    p = argparse.ArgumentParser(prog="fluxlab train-preconditioner", description=__doc__.split("\n")[0])
    p.add_argument(
        "--out",
        type=Path,
        default=Path("out/preconditioner/learned_mg.pt"),
        help=f"weight file to write (default out/preconditioner/learned_mg.pt; the shipped file is {DEFAULT_WEIGHTS})",
    )
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    p.add_argument("--plot", type=Path, default=None, help="loss curve PNG (default: next to --out)")
    p.add_argument("--minutes", type=float, default=45.0, help="wall-clock training budget")
    p.add_argument("--steps", type=int, default=100000, help="maximum optimizer steps")
    p.add_argument("--sizes", default="16,32,32,32,64", help="grid sizes sampled for the pool")
    p.add_argument("--batch", type=int, default=4, help="scenes per system (32^3; scaled by size)")
    p.add_argument("--pool", type=int, default=24, help="systems kept in the data pool")
    p.add_argument("--refresh", type=int, default=40, help="replace one pool system every N steps")
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--n-smooth", type=int, default=1, help="pre- and post-smoothing sweeps (coarse levels)")
    p.add_argument("--fine-pre", type=int, default=0, help="pre-smoothing sweeps on the finest level")
    p.add_argument("--coarsest", type=int, default=64, help="cells of the coarsest level (exact solve)")
    p.add_argument("--liquid", type=float, default=0.75, help="fraction of liquid (ghost-fluid) scenes")
    p.add_argument("--val-every", type=int, default=250)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--no-progress", action="store_true", help="disable the tqdm bar")
    return p.parse_args(argv)


def _smooth_noise(shape, rng, dtype):
    """Low-frequency random field: white noise with a random spectral falloff."""
    x = torch.from_numpy(rng.standard_normal(shape)).to(dtype)
    X = torch.fft.rfftn(x, dim=(1, 2, 3))
    k = [torch.fft.fftfreq(n) for n in shape[1:3]] + [torch.fft.rfftfreq(shape[3])]
    kk = sum(g**2 for g in torch.meshgrid(*k, indexing="ij"))
    X = X / (1.0 + kk * (shape[1] ** 2) * float(rng.uniform(0.05, 1.0))) ** float(rng.uniform(1.0, 2.0))
    return torch.fft.irfftn(X, s=shape[1:], dim=(1, 2, 3)).to(dtype)


def random_scene(n: int, rng, liquid: float = 0.75):
    """(flags, ghost) of one training scene: a liquid scene with probability ``liquid``, else a
    unit-coefficient scene (zero ghost); scenes with under 2 % fluid cells are drawn again."""
    while True:
        if rng.random() < liquid:
            f, g = random_liquid(n, rng)
        else:
            f = random_training(n, rng)
            g = np.zeros(f.shape)
        if (f == FLUID).mean() >= 0.02:
            return f, g


def make_item(n: int, batch: int, rng, dtype=torch.float32, liquid: float = 0.75, coarsest: int = 64):
    """One pool entry: a batched system, its hierarchy and MGPCG residuals (list of (B, ...))."""
    scenes = [random_scene(n, rng, liquid) for _ in range(batch)]
    flags = np.stack([f for f, _ in scenes])
    ghost = np.stack([g for _, g in scenes])
    S = PoissonSystem(flags, dtype=dtype, ghost=ghost)
    h = Hierarchy(S, coarsest)
    V = VCycle(h, JacobiSmoother(h, 0.8))
    shape = S.shape
    res = []
    with torch.no_grad():
        for kind in ("white", "smooth"):
            if kind == "white":
                b = torch.from_numpy(rng.standard_normal(shape)).to(dtype)
            else:
                b = _smooth_noise(shape, rng, dtype)
            b = b * S.fluid
            S.project_null_(b)
            # short MGPCG run, collecting normalized residuals
            r = b.clone()
            z = V(r)
            S.project_null_(z)
            p = z.clone()
            rz = bdot(r, z)
            for _ in range(9):
                nr = bdot(r, r).sqrt().clamp(min=1e-30)
                res.append((r / nr.view(-1, 1, 1, 1)).clone())
                Ap = S.matvec(p, out=torch.empty_like(p))
                alpha = rz / bdot(p, Ap).clamp(min=1e-30)
                r = r - alpha.view(-1, 1, 1, 1) * Ap
                S.project_null_(r)
                z = V(r)
                S.project_null_(z)
                rz_new = bdot(r, z)
                p = z + (rz_new / rz.clamp(min=1e-30)).view(-1, 1, 1, 1) * p
                rz = rz_new
    keep = [x for x in res if torch.isfinite(x).all() and bdot(x, x).min() > 0.5]
    return {"n": n, "system": S, "hierarchy": h, "residuals": keep}


def loss_fn(S: PoissonSystem, f, r: torch.Tensor) -> torch.Tensor:
    """Scale-invariant loss 1 - (r.Af)^2 / (|r|^2 |Af|^2), averaged over the batch."""
    z = f(r)
    Az = S.matvec_autograd(z)
    num = (r * Az).sum(dim=(1, 2, 3)) ** 2
    den = (r * r).sum(dim=(1, 2, 3)) * (Az * Az).sum(dim=(1, 2, 3)) + 1e-30
    return (1.0 - num / den).mean()


def validation_set(seed: int = 12345, coarsest: int = 64):
    """Fixed validation systems (32^3 liquid scenes with ghost-fluid weights, f32)."""
    rng = np.random.default_rng(seed)
    out = []
    while len(out) < 4:
        f, g = random_liquid(32, rng)
        if (f == 0).mean() < 0.1:
            continue
        S = PoissonSystem(f, dtype=torch.float32, ghost=g)
        b = torch.from_numpy(rng.standard_normal(S.shape)).float()
        out.append((S, Hierarchy(S, coarsest), b))
    return out


def validate(model, vset) -> int:
    total = 0
    for S, h, b in vset:
        f = model.bind(S, h).precompute()
        res = conjugate_directions(S, b, f, rtol=1e-6, max_iter=100, n_keep=2, check=False)
        total += res.iterations if res.converged else 100
    return total


def main(argv: list[str] | None = None) -> int:
    """Train and write the weights; returns a process exit code."""
    args = parse_args(argv)
    from tqdm import tqdm

    torch.set_num_threads(max(1, args.threads))
    torch.manual_seed(args.seed)
    random.seed(args.seed)
    rng = np.random.default_rng(args.seed)
    sizes = [int(s) for s in args.sizes.split(",") if s]
    if not sizes or any(s < 8 or s % 4 for s in sizes):
        raise ValueError(f"--sizes must be multiples of 4 and >= 8, got {args.sizes!r}")
    if args.out.exists() and not args.overwrite:
        raise SystemExit(f"--out {args.out} exists; pass --overwrite to replace it")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    plot = args.plot or args.out.with_suffix(".loss.png")
    t0 = time.time()
    budget = args.minutes * 60.0

    def batch_for(n):
        return max(1, int(round(args.batch * (32 / n) ** 3))) if n >= 32 else args.batch * 2

    pool = []
    for _ in range(args.pool):
        n = random.choice(sizes)
        pool.append(make_item(n, batch_for(n), rng, liquid=args.liquid, coarsest=args.coarsest))
    model = LearnedMG(args.n_smooth, args.n_smooth, args.hidden, coarsest=args.coarsest, fine_pre=args.fine_pre)
    bound = [model.bind(it["system"], it["hierarchy"]) for it in pool]
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    vset = validation_set(coarsest=args.coarsest)
    best_iters = validate(model, vset)
    init_iters = best_iters
    best_loss = math.inf
    best_state = {k: v.clone() for k, v in model.state_dict().items()}
    log = {"steps": [], "loss": [], "val_steps": [0], "val_iters": [best_iters]}
    ema = None
    bar = tqdm(total=args.steps, disable=args.no_progress, mininterval=5.0)
    step = 0
    while step < args.steps and time.time() - t0 < budget:
        step += 1
        if step % args.refresh == 0:
            j = random.randrange(len(pool))
            n = random.choice(sizes)
            pool[j] = make_item(n, batch_for(n), rng, liquid=args.liquid, coarsest=args.coarsest)
            bound[j] = model.bind(pool[j]["system"], pool[j]["hierarchy"])
        j = random.randrange(len(pool))
        item = pool[j]
        r = random.choice(item["residuals"])
        loss = loss_fn(item["system"], bound[j], r)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        lv = loss.item()
        ema = lv if ema is None else 0.98 * ema + 0.02 * lv
        log["steps"].append(step)
        log["loss"].append(lv)
        bar.update(1)
        bar.set_postfix(loss=f"{ema:.4f}", best_val_iters=best_iters, refresh=False)
        if step % args.val_every == 0:
            it = validate(model, vset)
            log["val_steps"].append(step)
            log["val_iters"].append(it)
            if it < best_iters or (it == best_iters and ema < best_loss):
                best_iters, best_loss = it, ema
                best_state = {k: v.clone() for k, v in model.state_dict().items()}
                model.load_state_dict(best_state)
                save_weights(model, args.out, _meta(args, step, t0, best_iters, init_iters, ema))
    bar.close()
    model.load_state_dict(best_state)
    save_weights(model, args.out, _meta(args, step, t0, best_iters, init_iters, best_loss))
    log["final"] = _meta(args, step, t0, best_iters, init_iters, ema)
    plot.with_suffix(".json").write_text(json.dumps(log))
    _plot(log, plot)
    print(json.dumps(log["final"]))
    return 0


def _meta(args, step, t0, best_iters, init_iters, loss):
    return {
        "steps": step,
        "seconds": round(time.time() - t0, 1),
        "sizes": args.sizes,
        "liquid_fraction": args.liquid,
        "val_iters_total_rtol1e-6": best_iters,
        "val_iters_total_untrained": init_iters,
        "loss_ema": None if loss is None or not math.isfinite(loss) else round(float(loss), 5),
        "date": time.strftime("%Y-%m-%d"),
        "seed": args.seed,
    }


def _plot(log, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 2, figsize=(10, 4))
    loss = np.asarray(log["loss"])
    if loss.size:
        w = max(1, loss.size // 100)
        sm = np.convolve(loss, np.ones(w) / w, mode="valid")
        ax[0].semilogy(log["steps"], loss, alpha=0.25, lw=0.5)
        ax[0].semilogy(log["steps"][w - 1 :], sm)
    ax[0].set_xlabel("step")
    ax[0].set_ylabel("1 - cos^2(r, A f(r))")
    ax[1].plot(log["val_steps"], log["val_iters"], "o-")
    ax[1].set_xlabel("step")
    ax[1].set_ylabel("validation iterations (sum of 4, rtol 1e-6)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    raise SystemExit(main())
