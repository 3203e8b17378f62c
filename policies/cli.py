"""The ``fluxlab`` console script: a thin argparse layer over the engine, envs and policies.

Subcommands
    ``fluxlab demo``
        Builds a small scene - a water block dropped into a glass ``Cup`` standing on the floor,
        a light rigid cube (``RIGID_BODY`` particles, half the density of water) dropped onto
        it, and a ``Box`` paddle driven through the water at a constant velocity by the control
        - steps it with the :class:`engine.simulator.Simulator` fast path, renders every step
        with :class:`engine.render.Renderer` and writes a video (``.mp4`` or ``.gif``).
    ``fluxlab train-preconditioner ...``
        Forwards the rest of the command line to :func:`engine.linsolve.train.main`.
    ``fluxlab rollout --task Pouring-v0 --policy random|scripted|FILE.npz|FILE.zip --video out.mp4``
        Runs one episode of a policy in a registered env (a saved open-loop trajectory or a
        trained SB3 model), prints total reward, final loss and success, optionally writes a video.
    ``fluxlab optimize --task Pouring-v0 --iters 50``
        Gradient-based open-loop trajectory optimization (:mod:`policies.trajopt`).
    ``fluxlab cmaes --task Pouring-v0 --evals 200``
        CMA-ES over the same open-loop parameterization (:mod:`policies.cmaes`).
    ``fluxlab train --task Pouring-v0 --algo ppo|sac --timesteps 20000``
        Stable-Baselines3 PPO / SAC (:mod:`policies.rl`).

``optimize`` and ``cmaes`` write to ``--out``: ``log.csv``, TensorBoard events (``tb/``),
``loss.png``, ``best.npz`` (reload with ``fluxlab rollout --policy``), ``best.mp4`` (the best
trajectory replayed in the env; its final loss is checked against the recorded one) and
``summary.json``. ``train`` writes ``model.zip`` (+ ``model.json``), ``best_model.zip``,
monitor CSVs, ``evaluations.npz``, ``tb/``, ``learning_curve.png``, ``summary.json`` and a video.
Task ids may be given with or without the ``FluxLab/`` prefix and ``-v0`` suffix.

Usage: ``fluxlab demo --out demo.mp4 --steps 60 --precision f32`` (about a minute on a 2-core
CPU; ``--small`` is a coarse, fast variant for smoke tests).
"""

import argparse
import sys
import time
from collections.abc import Sequence

_TRAIN = "train-preconditioner"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fluxlab", description="FluxLab command line tools.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    demo = sub.add_parser("demo", help="simulate and render a water/cup/cube/paddle scene to a video")
    demo.add_argument("--out", default="demo.mp4", help="output video (.mp4 or .gif); default demo.mp4")
    demo.add_argument("--steps", type=int, default=60, help="control steps (one rendered frame each)")
    demo.add_argument("--precision", choices=("f32", "f64"), default="f32", help="simulation float type")
    demo.add_argument("--arch", choices=("cpu", "cuda", "auto"), default=None, help="Taichi backend")
    demo.add_argument("--small", action="store_true", help="coarse grid, few particles, small frames")
    demo.add_argument("--size", type=int, default=None, help="frame width and height [px]")
    demo.add_argument("--fps", type=float, default=30.0, help="video frame rate")
    demo.add_argument("--no-progress", action="store_true", help="disable the progress bar")
    demo.set_defaults(handler=_demo)

    sub.add_parser(
        _TRAIN,
        help="train the learned multigrid preconditioner (arguments: fluxlab train-preconditioner -h)",
        add_help=False,
    )
    _add_policy_parsers(sub)
    return parser


def _env_arguments(parser: argparse.ArgumentParser, task_required: bool = True) -> None:
    """Options every env-running subcommand shares."""
    parser.add_argument(
        "--task", required=task_required, default=None, help="task id, e.g. Pouring-v0 or FluxLab/Pouring-v0"
    )
    parser.add_argument("--seed", type=int, default=None, help="env reset seed (default 0)")
    parser.add_argument("--preset", choices=("cpu", "paper"), default="cpu", help="task preset")
    parser.add_argument(
        "--precision",
        choices=("f32", "f64"),
        default=None,
        help="simulation float type (default f32; a saved policy's own for rollout)",
    )
    parser.add_argument("--horizon", type=int, default=None, help="episode length override [env steps]")
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="task config override"
    )
    parser.add_argument("--size", type=int, default=None, help="video frame width and height [px]")
    parser.add_argument("--no-progress", action="store_true", help="disable progress bars")


def _open_loop_arguments(parser: argparse.ArgumentParser, param: str) -> None:
    from policies.trajopt import PARAMETERIZATIONS, SQUASHES

    parser.add_argument("--param", choices=PARAMETERIZATIONS, default=param, help="action parameterization")
    parser.add_argument("--knots", type=int, default=8, help="knots for linear/spline parameterizations")
    parser.add_argument("--squash", choices=SQUASHES, default="tanh", help="map parameters into [-1, 1]")
    parser.add_argument("--time-budget", type=float, default=None, help="stop after this many seconds")
    parser.add_argument("--out", default=None, help="output directory (default runs/<command>-<task>-s<seed>)")
    parser.add_argument("--video-format", choices=("mp4", "gif"), default="mp4", help="best-trajectory video")
    parser.add_argument("--no-video", action="store_true", help="do not render the best trajectory")
    parser.add_argument("--no-tensorboard", action="store_true", help="do not write TensorBoard events")


def _add_policy_parsers(sub) -> None:
    rollout = sub.add_parser("rollout", help="run one episode of a policy and (optionally) write a video")
    _env_arguments(rollout, task_required=False)
    rollout.add_argument(
        "--policy", required=True, help="random, scripted, a trajectory .npz or an SB3 model .zip (fluxlab train)"
    )
    rollout.add_argument("--steps", type=int, default=None, help="env steps (default: the whole episode)")
    rollout.add_argument("--video", default=None, help="output video (.mp4 or .gif)")
    rollout.set_defaults(handler=_rollout)

    opt = sub.add_parser("optimize", help="gradient-based open-loop trajectory optimization")
    _env_arguments(opt)
    opt.add_argument("--iters", type=int, default=50, help="iterations (forward + backward)")
    opt.add_argument("--lr", type=float, default=0.1, help="learning rate")
    opt.add_argument("--optimizer", choices=("adam", "sgd", "rmsprop"), default="adam", help="torch.optim method")
    opt.add_argument("--clip", type=float, default=1.0, help="max gradient norm (<= 0: no clipping)")
    _open_loop_arguments(opt, "per-step")
    opt.set_defaults(handler=_optimize)

    es = sub.add_parser("cmaes", help="CMA-ES over open-loop action sequences")
    _env_arguments(es)
    es.add_argument("--evals", type=int, default=200, help="loss evaluations (whole generations)")
    es.add_argument("--sigma", type=float, default=0.5, help="initial CMA-ES step size")
    es.add_argument("--popsize", type=int, default=None, help="population size (default 4 + 3 ln n)")
    _open_loop_arguments(es, "linear")
    es.set_defaults(handler=_cmaes)

    rl = sub.add_parser("train", help="train PPO or SAC (Stable-Baselines3)")
    _env_arguments(rl)
    rl.add_argument("--algo", choices=("ppo", "sac"), required=True, help="RL algorithm")
    rl.add_argument("--timesteps", type=int, required=True, help="environment steps")
    rl.add_argument("--num-envs", type=int, default=1, help="scenes stepped together (one batched simulator)")
    rl.add_argument("--lr", type=float, default=None, help="learning rate (default SB3's)")
    rl.add_argument("--n-steps", type=int, default=None, help="PPO rollout length per scene (default: horizon)")
    rl.add_argument("--batch-size", type=int, default=None, help="minibatch size")
    rl.add_argument("--eval-freq", type=int, default=None, help="steps between evaluations (default 5 episodes)")
    rl.add_argument("--eval-episodes", type=int, default=1, help="episodes per evaluation")
    rl.add_argument("--time-budget", type=float, default=None, help="stop training after this many seconds")
    rl.add_argument("--out", default=None, help="output directory (default runs/train-<algo>-<task>-s<seed>)")
    rl.add_argument("--video", default="eval.mp4", help="video of the final evaluation episode ('' for none)")
    rl.add_argument("--no-tensorboard", action="store_true", help="do not write TensorBoard events")
    rl.set_defaults(handler=_train)


def demo_scene(small: bool = False):
    """The demo Model and its constant control.

    Args:
        small: coarse variant (grid 32, ~3k particles) for smoke tests.

    Returns:
        ``(model, paddle_speed_fn)``: the Model, and a function ``steps -> paddle speed [m/s]``
        that moves the paddle ~0.2 m over the run (capped at 0.4 m/s).
    """
    from engine import sampling
    from engine.colliders import Box, Collider, Contact, Cup
    from engine.config import SimConfig
    from engine.materials import RIGID_BODY, WATER
    from engine.scene import SceneBuilder

    if small:
        config = SimConfig(grid_res=32, dt=6e-4, substeps=12)
    else:
        # dx = 1/48 m; water's sound speed 20 m/s crosses 0.48 dx per substep (CFL-stable).
        config = SimConfig(grid_res=48, dt=5e-4, substeps=24)
    lo = config.boundary_cells * config.dx
    spacing = 0.5 * config.dx
    cup_radius, cup_height, wall = 0.2, 0.26, max(0.025, 1.1 * config.dx)
    cup = Collider(Cup(cup_radius, cup_height, wall), pose=(0.5, 0.5, lo, 1.0, 0.0, 0.0, 0.0))
    paddle = Collider(
        Box((0.012, 0.085, 0.11)),
        pose=(0.39, 0.5, lo + wall + 0.125, 1.0, 0.0, 0.0, 0.0),
        contact=Contact(friction=0.3, mode="slip"),
    )
    builder = SceneBuilder(config)
    inner = cup_radius - wall
    water = sampling.cylinder((0.5, 0.5, lo + wall + 0.03), inner - spacing, 0.16, spacing, jitter=0.5, rng=0)
    d_paddle, _ = paddle.sdf(water)
    d_cup, _ = cup.sdf(water)
    water = water[(d_paddle > spacing) & (d_cup > 0.5 * spacing)]
    builder.add_particles(water, WATER, spacing)
    top = float(water[:, 2].max())
    side = 0.08
    c0 = (0.58, 0.5, top + 0.03 + 0.5 * side)
    cube = sampling.box(
        (c0[0] - side / 2, c0[1] - side / 2, c0[2] - side / 2),
        (c0[0] + side / 2, c0[1] + side / 2, c0[2] + side / 2),
        spacing,
    )
    builder.add_particles(cube, RIGID_BODY, spacing)
    builder.add_collider(cup)
    builder.add_collider(paddle)
    model = builder.build()
    step_time = config.dt * config.substeps

    def paddle_speed(steps: int) -> float:
        return min(0.4, 0.2 / (max(steps, 1) * step_time))

    return model, paddle_speed


def _demo(args: argparse.Namespace) -> int:
    if args.steps < 1:
        print("fluxlab demo: --steps must be >= 1", file=sys.stderr)
        return 2
    import numpy as np
    import torch
    from tqdm import tqdm

    import engine
    from engine.render import Renderer, particle_colors, write_video
    from engine.simulator import Simulator
    from engine.state import SimulationDiverged

    if not args.out.lower().endswith((".mp4", ".gif")):
        print(f"fluxlab demo: --out must end in .mp4 or .gif, got {args.out!r}", file=sys.stderr)
        return 2
    t_start = time.perf_counter()
    engine.init(arch=args.arch, precision=args.precision)
    model, paddle_speed = demo_scene(small=args.small)
    sim = Simulator(model, batch_size=1)
    sim.reset()
    control = torch.zeros(1, model.n_colliders, 6, dtype=sim.dtype)
    control[0, 1, 0] = paddle_speed(args.steps)  # collider 1 = paddle, +x
    size = args.size or (128 if args.small else 256)
    lo = model.config.boundary_cells * model.config.dx
    renderer = Renderer(
        width=size,
        height=size,
        camera_pos=(0.5, -0.2, 0.76),
        look_at=(0.5, 0.5, 0.14),
        fov_deg=45.0,
        particle_radius=0.7 * 0.5 * model.config.dx,
        floor_z=lo,
    )
    colors = particle_colors(model)

    def frame() -> np.ndarray:
        state = sim.get_state()
        poses = state.collider_pose[0].numpy()
        return renderer.render(state.x[0], colors, list(zip(model.colliders, poses, strict=True)))

    t0 = time.perf_counter()
    frames = [frame()]  # the first frame also compiles the render kernels
    render_times = [time.perf_counter() - t0]
    t_sim = 0.0
    bar = tqdm(range(args.steps), desc="fluxlab demo", unit="step", disable=args.no_progress)
    try:
        for _ in bar:
            t0 = time.perf_counter()
            sim.step(control)
            t1 = time.perf_counter()
            frames.append(frame())
            t_sim += t1 - t0
            render_times.append(time.perf_counter() - t1)
    except SimulationDiverged as err:
        print(f"fluxlab demo: {err}", file=sys.stderr)
        return 1
    finally:
        bar.close()
    path = write_video(frames, args.out, fps=args.fps)
    total = time.perf_counter() - t_start
    print(f"wrote {path}")
    print(
        f"{model.n_particles} particles, grid {model.config.grid_res}^3, {args.steps} steps x "
        f"{model.config.substeps} substeps, {len(frames)} frames {size}x{size}; "
        f"simulate {t_sim:.1f} s, render {sum(render_times):.1f} s "
        f"(median {1e3 * float(np.median(render_times[1:] or render_times)):.0f} ms/frame), "
        f"total {total:.1f} s"
    )
    return 0


class _UsageError(ValueError):
    """A bad command-line argument (exit status 2)."""


def _overrides(args: argparse.Namespace) -> dict:
    from policies.common import parse_overrides

    overrides = parse_overrides(args.overrides)
    if args.horizon is not None:
        if args.horizon < 1:
            raise _UsageError(f"--horizon must be >= 1, got {args.horizon}")
        overrides["horizon"] = args.horizon
    return overrides


def _check_video(path: str | None) -> None:
    if path and not path.lower().endswith((".mp4", ".gif")):
        raise _UsageError(f"video must end in .mp4 or .gif, got {path!r}")


def _rollout(args: argparse.Namespace) -> int:
    from engine.render import write_video
    from policies import common, io

    if args.steps is not None and args.steps < 1:
        raise _UsageError(f"--steps must be >= 1, got {args.steps}")
    _check_video(args.video)
    overrides, preset, seed, trajectory, model = {}, args.preset, args.seed, None, None
    precision = args.precision
    task = args.task
    if args.policy in ("random", "scripted"):
        if task is None:
            raise _UsageError("--task is required with --policy random|scripted")
    else:
        from pathlib import Path

        path = Path(args.policy)
        if path.suffix == ".npz":
            trajectory = io.load_trajectory(path)
            file_task, preset, overrides = trajectory.task, trajectory.preset, dict(trajectory.overrides)
            seed = trajectory.seed if seed is None else seed
            precision = precision or trajectory.metadata.get("precision")
        elif path.suffix == ".zip":
            model, meta = io.load_model(path)
            file_task, preset, overrides = meta["task"], meta.get("preset", "cpu"), dict(meta["overrides"])
            precision = precision or meta.get("precision")
        else:
            raise _UsageError(f"--policy must be random, scripted, a .npz trajectory or a .zip model, got {path}")
        if task is not None and common.resolve_task(task) != common.resolve_task(file_task):
            raise _UsageError(f"{path} is for task {file_task!r}, not {task!r}")
        task = file_task
    extra = _overrides(args)
    if extra and trajectory is not None:
        print(f"note: config overrides {extra} on top of the trajectory's {overrides}; the loss may differ")
    overrides.update(extra)
    seed = 0 if seed is None else seed
    env = common.make_env(
        task,
        preset=preset,
        overrides=overrides,
        render_mode="rgb_array" if args.video else None,
        render_size=args.size,
        precision=precision or "f32",
    )
    steps = args.steps
    if args.policy == "random":
        policy = common.random_policy(env, seed)
    elif args.policy == "scripted":
        policy = common.scripted_policy(env)
    elif trajectory is not None:
        if steps is not None and steps > len(trajectory.actions):
            raise _UsageError(f"--steps {steps} exceeds the {len(trajectory.actions)} steps of {args.policy}")
        steps = steps or len(trajectory.actions)
        policy = common.open_loop_policy(trajectory.actions)
    else:
        from policies.rl import model_policy

        policy = model_policy(model)
    name = common.resolve_task(task)
    episode = common.run_episode(
        env,
        policy,
        seed=seed,
        steps=steps,
        render=bool(args.video),
        progress=not args.no_progress,
        desc=f"rollout {name}",
    )
    if args.video:
        print(f"wrote {write_video(episode.frames, args.video, fps=env.metadata['render_fps'])}")
    env.close()
    print(f"task {name}, policy {args.policy}, seed {seed}, {episode.steps} steps in {episode.seconds:.1f} s")
    print(f"total reward {episode.total_reward:.6g}, final loss {episode.final_loss:.6g}, success {episode.success}")
    if episode.diverged:
        print("warning: the simulation diverged; the episode was truncated", file=sys.stderr)
    if trajectory is not None:
        diff = episode.final_loss - trajectory.loss
        print(f"recorded loss {trajectory.loss:.6g} (replay - recorded = {diff:.3g})")
    return 0


def _run_dir(args: argparse.Namespace, command: str, name: str, seed: int):
    from pathlib import Path

    return Path(args.out or f"runs/{command}-{name}-s{seed}")


def _open_loop_run(args: argparse.Namespace, command: str):
    """Common set-up of ``optimize`` and ``cmaes``: env, parameterization, run directory."""
    from policies import common
    from policies.trajopt import ActionParameterization

    name = common.resolve_task(args.task)
    seed = 0 if args.seed is None else args.seed
    args.precision = args.precision or "f32"
    overrides = _overrides(args)
    env = common.make_env(
        name,
        preset=args.preset,
        overrides=overrides,
        render_mode=None if args.no_video else "rgb_array",
        render_size=args.size,
        precision=args.precision,
    )
    task = env.unwrapped.task
    param = ActionParameterization(task.horizon, task.action_dim, args.param, args.knots, args.squash)
    return name, seed, overrides, env, param, _run_dir(args, command, name, seed)


def _finish_open_loop(args, command, name, seed, overrides, env, param, out, result, extra: dict) -> int:
    """Save the best trajectory, replay it in the env (video), check the replayed loss, write a summary."""
    import json

    from engine.render import write_video
    from policies import common, io

    trajectory = io.Trajectory(
        actions=result.actions,
        loss=result.loss,
        task=name,
        seed=seed,
        preset=args.preset,
        overrides=overrides,
        method=command,
        metadata={**param.describe(), "precision": args.precision, **extra},
    )
    npz = io.save_trajectory(out / "best.npz", trajectory)
    replay = common.run_episode(
        env,
        common.open_loop_policy(result.actions),
        seed=seed,
        render=not args.no_video,
        progress=not args.no_progress,
        desc="replay best",
    )
    video = None
    if not args.no_video:
        video = write_video(replay.frames, out / f"best.{args.video_format}", fps=env.metadata["render_fps"])
    env.close()
    summary = {
        "command": command,
        "task": name,
        "seed": seed,
        "preset": args.preset,
        "precision": args.precision,
        "overrides": overrides,
        **param.describe(),
        **extra,
        "initial_loss": result.initial_loss,
        "best_loss": result.loss,
        "replay_loss": replay.final_loss,
        "replay_success": replay.success,
        "replay_return": replay.total_reward,
        "stopped": result.stopped,
        "trajectory": str(npz),
        "video": video,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(f"wrote {npz}" + (f" and {video}" if video else ""))
    print(f"{name}: loss {result.initial_loss:.6g} (zero actions) -> {result.loss:.6g} (best, {result.stopped})")
    gap = abs(replay.final_loss - result.loss)
    print(f"replay: final loss {replay.final_loss:.6g} (|replay - recorded| = {gap:.3g}), success {replay.success}")
    if gap > 1e-3 * max(1.0, abs(result.loss)):
        print("warning: the replayed loss differs from the recorded one by more than 1e-3", file=sys.stderr)
    return 0


def _optimize(args: argparse.Namespace) -> int:
    import numpy as np

    from policies import common, trajopt

    if args.iters < 1 or not args.lr > 0:
        raise _UsageError(f"need --iters >= 1 and --lr > 0, got {args.iters}, {args.lr}")
    name, seed, overrides, env, param, out = _open_loop_run(args, "optimize")
    columns = ("iter", "loss", "best_loss", "grad_norm", "lr", "iter_s", "time_s")
    with common.RunLog(out, columns, tensorboard=not args.no_tensorboard) as log:
        result = trajopt.optimize(
            env,
            param,
            iters=args.iters,
            lr=args.lr,
            optimizer=args.optimizer,
            clip=args.clip if args.clip > 0 else None,
            seed=seed,
            time_budget=args.time_budget,
            callback=lambda row: log.log(**row),
            progress=not args.no_progress,
        )
    rows = result.history
    iters = [r["iter"] for r in rows]
    common.plot_curves(
        {"loss": (iters, [r["loss"] for r in rows]), "best": (iters, [r["best_loss"] for r in rows])},
        out / "loss.png",
        xlabel="iteration",
        ylabel="task loss",
        title=f"{name}: trajectory optimization ({args.optimizer}, {param.kind})",
    )
    seconds = [r["iter_s"] for r in rows[1:]] or [rows[0]["iter_s"]]  # the first one compiles kernels
    print(
        f"{len(rows)} iterations, median {float(np.median(seconds)):.2f} s per iteration "
        "(forward + backward; the first, which compiles kernels, excluded)"
    )
    extra = {
        "iterations": len(rows),
        "optimizer": args.optimizer,
        "lr": args.lr,
        "clip": args.clip,
        "median_iter_s": float(np.median(seconds)),
    }
    return _finish_open_loop(args, "optimize", name, seed, overrides, env, param, out, result, extra)


def _cmaes(args: argparse.Namespace) -> int:
    from policies import cmaes, common

    if args.evals < 2 or not args.sigma > 0:
        raise _UsageError(f"need --evals >= 2 and --sigma > 0, got {args.evals}, {args.sigma}")
    name, seed, overrides, env, param, out = _open_loop_run(args, "cmaes")
    columns = ("evals", "generation", "loss", "mean_loss", "best_loss", "sigma", "time_s")
    with common.RunLog(out, columns, tensorboard=not args.no_tensorboard) as log:
        result = cmaes.cmaes(
            env,
            param,
            evals=args.evals,
            sigma=args.sigma,
            popsize=args.popsize,
            seed=seed,
            time_budget=args.time_budget,
            callback=lambda row: log.log(**row),
            progress=not args.no_progress,
        )
    rows = result.history
    evals = [r["evals"] for r in rows]
    common.plot_curves(
        {
            "generation best": (evals, [r["loss"] for r in rows]),
            "generation mean": (evals, [r["mean_loss"] for r in rows]),
            "best so far": (evals, [r["best_loss"] for r in rows]),
        },
        out / "loss.png",
        xlabel="loss evaluations",
        ylabel="task loss",
        title=f"{name}: CMA-ES ({param.kind}, {param.knots} knots)",
        hlines={"zero actions": result.initial_loss},
    )
    extra = {"evals": result.evals, "generations": len(rows), "sigma0": args.sigma}
    return _finish_open_loop(args, "cmaes", name, seed, overrides, env, param, out, result, extra)


def _train(args: argparse.Namespace) -> int:
    import json

    from policies import common, rl

    if args.timesteps < 1 or args.num_envs < 1 or args.eval_episodes < 1:
        raise _UsageError("--timesteps, --num-envs and --eval-episodes must be >= 1")
    _check_video(args.video)
    name = common.resolve_task(args.task)
    seed = 0 if args.seed is None else args.seed
    args.precision = args.precision or "f32"
    out = _run_dir(args, f"train-{args.algo}", name, seed)
    hyper = {}
    if args.n_steps is not None:
        if args.algo != "ppo":
            raise _UsageError("--n-steps applies to PPO only")
        hyper["n_steps"] = args.n_steps
    if args.batch_size is not None:
        hyper["batch_size"] = args.batch_size
    overrides = _overrides(args)
    result = rl.train(
        name,
        args.algo,
        timesteps=args.timesteps,
        out=out,
        num_envs=args.num_envs,
        seed=seed,
        preset=args.preset,
        overrides=overrides,
        precision=args.precision,
        learning_rate=args.lr,
        hyperparameters=hyper,
        eval_freq=args.eval_freq,
        eval_episodes=args.eval_episodes,
        time_budget=args.time_budget,
        video=(out / args.video) if args.video else None,
        render_size=args.size,
        tensorboard=not args.no_tensorboard,
        progress=not args.no_progress,
    )
    episodes = result.evaluation
    summary = {
        "command": "train",
        "task": name,
        "algo": args.algo,
        "seed": seed,
        "preset": args.preset,
        "precision": args.precision,
        "overrides": overrides,
        "timesteps": result.timesteps,
        "seconds": result.seconds,
        "model": str(result.model_path),
        "best_model": str(result.best_model_path) if result.best_model_path else None,
        "eval_final_loss": [e.final_loss for e in episodes],
        "eval_return": [e.total_reward for e in episodes],
        "eval_success": [e.success for e in episodes],
        "training_episodes": len(result.curve.get("l", [])),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(f"wrote {result.model_path} ({result.timesteps} steps in {result.seconds:.1f} s) and {out}")
    for i, e in enumerate(episodes):
        print(f"eval episode {i}: return {e.total_reward:.6g}, final loss {e.final_loss:.6g}, success {e.success}")
    return 0


def _train_preconditioner(argv: Sequence[str]) -> int:
    from engine.linsolve import train

    code = train.main(list(argv))
    return int(code or 0)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``fluxlab`` console script; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == _TRAIN:
        # Forwarded verbatim (including -h) so the trainer owns its own options.
        return _train_preconditioner(argv[1:])
    args = build_parser().parse_args(argv)
    if args.handler is _demo:
        return args.handler(args)
    try:
        return args.handler(args)
    except (ValueError, FileNotFoundError) as err:
        # Bad arguments, unknown tasks, unreadable or corrupt files: one clear line, exit 2.
        print(f"fluxlab {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
