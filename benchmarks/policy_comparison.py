"""Policy comparison: trajectory optimization vs PPO, SAC, CMA-ES, random and scripted.

FluidLab's main comparison (Xian et al., ICLR 2023, Sec. 5, Fig. 4) on FluxLab's tasks at their cpu
preset: every learning method gets the same wall-clock budget per task (``--budget`` seconds,
stated in the output), then its policy is evaluated on one episode from the same reset seed:

* ``trajopt``: Adam through the differentiable simulator on per-step tanh-squashed actions
  (:mod:`policies.trajopt`, the ``fluxlab optimize`` defaults: lr 0.1 (``--trajopt-lr``),
  gradient-norm clip 1);
* ``cmaes``: CMA-ES on 8 piecewise-linear knots per action dimension (:mod:`policies.cmaes`);
* ``ppo`` / ``sac``: Stable-Baselines3 with the ``fluxlab train`` defaults, 1 scene, evaluated
  deterministically (:mod:`policies.rl`);
* ``random`` (uniform actions) and ``scripted`` (the task's reference script): one episode each,
  no budget.

The budget is checked after each iteration / generation / env step, so a method may overrun it by
one unit of work (a full-horizon forward + backward for ``trajopt``). Reported per method: final
task loss of the evaluation episode, success, return, wall-clock time and work done, and a
best-loss-vs-time curve. Outputs: JSON (with date and command), a markdown table and one PNG.

Usage: ``python benchmarks/policy_comparison.py --budget 600`` (all registered tasks; roughly
4 x budget + a minute per task). Smoke: ``--tasks Pouring --budget 5 --horizon 4 --out /tmp/pc.json``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

METHODS = ("trajopt", "cmaes", "ppo", "sac", "random", "scripted")
LEARNERS = ("trajopt", "cmaes", "ppo", "sac")
DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "policy_comparison.json"


def _episode_summary(episode) -> dict:
    return {
        "final_loss": episode.final_loss,
        "success": bool(episode.success),
        "return": episode.total_reward,
        "diverged": bool(episode.diverged),
        "episode_s": episode.seconds,
    }


def warm_up(env) -> float:
    """Pay the one-off costs outside the timed budgets: lazy imports (SB3, cma, matplotlib, torch's
    optimizer machinery) and Taichi kernel compilation of env steps and of a differentiable
    forward + backward. Returns the seconds spent."""
    import cma  # noqa: F401
    import matplotlib
    import torch
    from stable_baselines3 import PPO, SAC  # noqa: F401

    matplotlib.use("Agg")
    import matplotlib.pyplot  # noqa: F401

    t0 = time.perf_counter()
    w = torch.zeros(1, requires_grad=True)
    opt = torch.optim.Adam([w], lr=0.1)
    (w**2).sum().backward()
    opt.step()
    env.reset(seed=0)
    actions = torch.zeros(1, env.action_space.shape[0], dtype=torch.float64, requires_grad=True)
    env.unwrapped.differentiable_rollout(actions).backward()
    env.step(env.action_space.sample())
    return time.perf_counter() - t0


def run_task(
    name: str, methods: list[str], budget: float, seed: int, overrides: dict, runs: Path, trajopt_lr: float = 0.1
) -> dict:
    """All ``methods`` on task ``name``; returns the task's results (JSON-compatible)."""
    from envs import EnvSpec
    from policies import common, rl
    from policies.cmaes import cmaes
    from policies.trajopt import ActionParameterization, optimize

    t_task = time.perf_counter()
    spec = EnvSpec(name, config_overrides=overrides, precision="f32", seed=seed)
    env = spec.make()
    task = env.unwrapped.task
    horizon, action_dim = task.horizon, task.action_dim
    result = {"horizon": horizon, "action_dim": action_dim, "overrides": overrides, "methods": {}}
    result["warmup_s"] = warm_up(env)
    _, info = env.reset(seed=seed)
    result["reset_loss"] = info["loss"]
    for method in methods:
        t0 = time.perf_counter()
        print(f"[{name}] {method} ...", flush=True)
        if method == "trajopt":
            param = ActionParameterization(horizon, action_dim, "per-step")
            out = optimize(env, param, iters=10**9, lr=trajopt_lr, clip=1.0, seed=seed, time_budget=budget)
            entry = {"work": f"{len(out.history)} iterations", "zero_action_loss": out.initial_loss}
            entry["curve"] = [(r["time_s"], r["best_loss"]) for r in out.history]
            episode = common.run_episode(env, common.open_loop_policy(out.actions), seed=seed)
        elif method == "cmaes":
            param = ActionParameterization(horizon, action_dim, "linear", knots=min(8, horizon))
            out = cmaes(env, param, evals=10**9, sigma=0.5, seed=seed, time_budget=budget)
            entry = {"work": f"{out.evals} evaluations", "zero_action_loss": out.initial_loss}
            entry["curve"] = [(r["time_s"], r["best_loss"]) for r in out.history]
            episode = common.run_episode(env, common.open_loop_policy(out.actions), seed=seed)
        elif method in ("ppo", "sac"):
            hyper = {"buffer_size": 50_000} if method == "sac" else {}
            trained = rl.train(
                spec,
                method,
                timesteps=10**9,
                out=runs / name / method,
                hyperparameters=hyper,
                eval_seed=seed,
                time_budget=budget,
                tensorboard=False,
            )
            episode = trained.evaluation[0]
            monitor = rl.read_monitor(runs / name / method / "train.monitor.csv")
            best, curve = float("inf"), []
            for t, loss in zip(monitor.get("t", []), monitor.get("loss", []), strict=True):
                best = min(best, loss)
                curve.append((t, best))
            entry = {"work": f"{trained.timesteps} env steps", "curve": curve}
        elif method == "random":
            episode = common.run_episode(env, common.random_policy(env, seed), seed=seed)
            entry = {"work": "1 episode"}
        elif method == "scripted":
            episode = common.run_episode(env, common.scripted_policy(env), seed=seed)
            entry = {"work": "1 episode"}
        else:
            raise ValueError(f"unknown method {method!r}; known: {METHODS}")
        entry.update(_episode_summary(episode))
        entry["wall_s"] = time.perf_counter() - t0
        result["methods"][method] = entry
        print(
            f"[{name}] {method}: final loss {entry['final_loss']:.5g}, success {entry['success']}, "
            f"{entry['work']}, {entry['wall_s']:.1f} s",
            flush=True,
        )
    env.close()
    result["wall_s"] = time.perf_counter() - t_task
    return result


def markdown_table(report: dict) -> str:
    lines = [
        f"Policy comparison, {report['budget_s']:g} s wall-clock budget per learning method and task "
        f"(cpu preset, f32, seed {report['seed']}, {report['date']}).",
        "",
        "| task | method | final loss | success | return | work | wall [s] |",
        "|---|---|---:|---|---:|---|---:|",
    ]
    for name, res in report["tasks"].items():
        for method, m in res["methods"].items():
            lines.append(
                f"| {name} | {method} | {m['final_loss']:.4g} | {'yes' if m['success'] else 'no'} | "
                f"{m['return']:.4g} | {m['work']} | {m['wall_s']:.0f} |"
            )
    return "\n".join(lines) + "\n"


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(report["tasks"])
    fig, axes = plt.subplots(1, len(names), figsize=(5.5 * len(names), 4.0), dpi=100, squeeze=False)
    for ax, name in zip(axes[0], names, strict=True):
        res = report["tasks"][name]
        for n, (method, m) in enumerate(res["methods"].items()):
            if m.get("curve"):
                t, loss = zip(*m["curve"], strict=True)
                label = method if method in ("trajopt", "cmaes") else f"{method} (training episodes)"
                ax.step(t, loss, where="post", color=f"C{n}", marker=".", label=label)
            if method in LEARNERS:
                ax.plot([m["wall_s"]], [m["final_loss"]], "o", color=f"C{n}")
            else:
                ax.axhline(m["final_loss"], color=f"C{n}", linestyle="--", label=method)
        ax.axvline(report["budget_s"], color="gray", linestyle=":", label="budget")
        ax.set_title(f"{name} (T = {res['horizon']})")
        ax.set_xlabel("wall-clock time [s]")
        ax.set_ylabel("task loss (best so far; dots: evaluated)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", default=None, help="task ids (default: all registered)")
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS), help="methods to run")
    parser.add_argument("--budget", type=float, default=600.0, help="wall-clock seconds per learning method")
    parser.add_argument("--seed", type=int, default=0, help="reset seed of every evaluation; training seed")
    parser.add_argument("--horizon", type=int, default=None, help="override every task's horizon (smoke runs)")
    parser.add_argument("--trajopt-lr", type=float, default=0.1, help="Adam learning rate of trajopt")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON output (.md and .png next to it)")
    parser.add_argument("--runs-dir", type=Path, default=None, help="keep the RL runs here (default: temp dir)")
    args = parser.parse_args(argv)
    if not args.budget > 0:
        parser.error("--budget must be > 0")

    import torch

    import envs

    names = [envs.resolve_task(t) for t in args.tasks] if args.tasks else envs.registered_tasks()
    overrides = {} if args.horizon is None else {"horizon": args.horizon}
    report = {
        "benchmark": "policy_comparison",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(["python", *sys.argv]) if argv is None else " ".join(["policy_comparison.py", *argv]),
        "budget_s": args.budget,
        "budget_note": "same wall-clock budget per learning method (trajopt, cmaes, ppo, sac) and task; "
        "random and scripted run one episode",
        "seed": args.seed,
        "trajopt_lr": args.trajopt_lr,
        "preset": "cpu",
        "precision": "f32",
        "machine": {"cpu": platform.machine(), "cores": os.cpu_count(), "torch_threads": torch.get_num_threads()},
        "python": platform.python_version(),
        "tasks": {},
    }
    with tempfile.TemporaryDirectory(prefix="fluxlab-policy-comparison-") as tmp:
        runs = args.runs_dir or Path(tmp)
        for name in names:
            res = run_task(name, args.methods, args.budget, args.seed, overrides, runs, args.trajopt_lr)
            report["tasks"][name] = res
            print(f"[{name}] whole task: {res['wall_s']:.1f} s", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    table = markdown_table(report)
    args.out.with_suffix(".md").write_text(table)
    plot(report, args.out.with_suffix(".png"))
    print(table)
    print(f"wrote {args.out}, {args.out.with_suffix('.md')}, {args.out.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
