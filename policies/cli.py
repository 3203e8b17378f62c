"""The ``fluxlab`` console script: a thin argparse layer over the engine, envs and policies.

Each handler parses its options into an :class:`envs.EnvSpec` (task, preset, config overrides,
precision, seed), calls one library function and prints what it did.

Subcommands
    ``fluxlab demo``
        Simulates and renders the engine's demo scene (water, a glass cup, a floating cube and a
        paddle; :mod:`policies.demo`) and writes a video (``.mp4`` or ``.gif``).
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
    ``fluxlab sweep SWEEP.yaml [--address auto] [--num-cpus N] [--fresh]``
        A grid / random sweep of ``optimize``, ``cmaes`` or ``train`` runs as Ray Tune trials
        (:mod:`policies.dist.sweep`; needs the ``fluxlab[dist]`` extra); running it again resumes it.

``optimize`` and ``cmaes`` write to ``--out``: ``log.csv``, TensorBoard events (``tb/``),
``loss.png``, ``best.npz`` (reload with ``fluxlab rollout --policy``), ``best.mp4`` (the best
trajectory replayed in the env; its final loss is checked against the recorded one) and
``summary.json`` (:mod:`policies.runs`). ``train`` writes ``model.zip`` (+ ``model.json``),
``best_model.zip``, monitor CSVs, ``evaluations.npz``, ``tb/``, ``learning_curve.png``,
``summary.json`` and a video. All three also write ``run.log`` and hold ``--out`` alone
(:mod:`policies.rundir`): a second command into it is refused, an existing run is continued with
``--resume`` or replaced with ``--overwrite``, and SIGINT / SIGTERM end the run after its current
iteration with the best result saved (exit status 128 + the signal's number). Task ids may be
given with or without the ``FluxLab/`` prefix and ``-v0`` suffix.

The parser imports nothing heavy: ``--help``, ``--version`` and argument errors answer at once,
without starting Taichi; each handler checks its arguments and output paths before it imports
the simulator.

Usage: ``fluxlab demo --out demo.mp4 --steps 60 --precision f32`` (about a minute on a 2-core
CPU; ``--small`` is a coarse, fast variant for smoke tests).
"""

import argparse
import sys
from collections.abc import Sequence

_TRAIN = "train-preconditioner"


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Descriptions and examples kept as written; an option's default appended to its help unless
    the help already names it or there is none (None, False, [])."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if "default" in text or default in (None, False, [], argparse.SUPPRESS) or not action.option_strings:
            return text
        return f"{text} (default: %(default)s)"


#: Description and examples of each subcommand (its ``--help``); times on an idle 2-core CPU.
_ABOUT = {
    "demo": (
        "Simulate and render the engine's demo scene (water, a glass cup, a floating cube and a paddle).",
        "examples:\n  fluxlab demo --out demo.mp4             # about a minute\n"
        "  fluxlab demo --small --out demo.gif     # coarse and fast, about 15 s",
    ),
    "rollout": (
        "Run one episode of a policy (random, scripted, a saved trajectory .npz or a trained model .zip) and "
        "print its total reward, final loss and success; a saved policy brings its own env.",
        "examples:\n  fluxlab rollout --task Pouring-v0 --policy scripted --video pour.mp4   # about 30 s\n"
        "  fluxlab rollout --policy runs/opt/best.npz                             # its own task and seed",
    ),
    "optimize": (
        "Gradient-based open-loop trajectory optimization through the differentiable simulator (Adam by "
        "default). Writes log.csv, tb/, loss.png, best.npz, best.mp4, summary.json and run.log to --out. "
        "SIGINT / SIGTERM stop after the current iteration with best.npz and the summary saved; --resume "
        "continues the run until --iters iterations in all.",
        "examples:\n  fluxlab optimize --task Pouring-v0 --iters 20 --out runs/opt   # about 4 min\n"
        "  fluxlab optimize --task Pouring-v0 --iters 40 --out runs/opt --resume",
    ),
    "cmaes": (
        "CMA-ES (the cma package) over the same open-loop parameterization, forward rollouts only. Writes the "
        "same files as optimize; SIGINT / SIGTERM and --resume work the same way (--evals counts the whole run).",
        "examples:\n  fluxlab cmaes --task Pouring-v0 --evals 200 --out runs/cma   # about 10 min\n"
        "  fluxlab cmaes --task Pouring-v0 --evals 400 --out runs/cma --resume",
    ),
    "train": (
        "Train Stable-Baselines3 PPO or SAC on the task's dense reward. Writes model.zip (+ model.json), "
        "best_model.zip (+ json), monitor CSVs, evaluations.npz, tb/, learning_curve.png, summary.json, run.log "
        "and a video to --out. SIGINT / SIGTERM stop after the current step with model.zip saved; --resume "
        "continues model.zip until --timesteps steps in all.",
        "examples:\n  fluxlab train --task Pouring-v0 --algo ppo --timesteps 20000 --out runs/ppo   # about 15 min\n"
        "  fluxlab rollout --policy runs/ppo/best_model.zip --video ppo.mp4",
    ),
}


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("fluxlab")
    except PackageNotFoundError:
        return "unknown (not installed)"


def _subparser(sub, name: str, help_text: str, **kwargs) -> argparse.ArgumentParser:
    import textwrap

    description, epilog = _ABOUT.get(name, (None, None))
    description = description and textwrap.fill(description, 100)
    return sub.add_parser(
        name, help=help_text, description=description, epilog=epilog, formatter_class=_Formatter, **kwargs
    )


def _frame_size(text: str) -> int:
    """``--size``: a frame width and height [px] in [16, 2048]."""
    try:
        size = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer number of pixels, got {text!r}") from None
    if not 16 <= size <= 2048:
        raise argparse.ArgumentTypeError(f"must be in [16, 2048] pixels, got {size}")
    return size


def build_parser() -> argparse.ArgumentParser:
    """The argument parser; building it imports nothing heavy (no torch, no Taichi)."""
    parser = argparse.ArgumentParser(
        prog="fluxlab",
        description="FluxLab command line tools; 'fluxlab COMMAND --help' describes each command.",
        formatter_class=_Formatter,
    )
    parser.add_argument("--version", action="version", version=f"fluxlab {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    demo = _subparser(sub, "demo", "simulate and render a water/cup/cube/paddle scene to a video")
    demo.add_argument("--out", default="demo.mp4", help="output video (.mp4 or .gif); default demo.mp4")
    demo.add_argument("--steps", type=int, default=300, help="frames of the pour/stir part (default 300)")
    demo.add_argument("--precision", choices=("f32", "f64"), default="f32", help="simulation float type")
    demo.add_argument("--arch", choices=("cpu", "cuda", "auto"), default=None, help="Taichi backend")
    demo.add_argument("--small", action="store_true", help="coarse grid, few particles, small frames")
    demo.add_argument("--size", type=_frame_size, default=None, help="frame width and height [px]")
    demo.add_argument("--fps", type=float, default=30.0, help="video frame rate")
    demo.add_argument("--no-progress", action="store_true", help="disable the progress bar")
    demo.set_defaults(handler=_demo)

    sub.add_parser(
        _TRAIN,
        help="train the learned multigrid preconditioner (arguments: fluxlab train-preconditioner -h)",
        add_help=False,
    )
    _add_policy_parsers(sub)

    sweep = sub.add_parser("sweep", help="run a sweep file's trials on Ray Tune (resumes an interrupted sweep)")
    sweep.add_argument("config", help="sweep file (.yaml, .yml or .toml)")
    sweep.add_argument("--address", default=None, help="a running Ray cluster (auto, HOST:PORT); default: local")
    sweep.add_argument("--num-cpus", type=int, default=None, help="CPUs of the local Ray instance (default: all)")
    sweep.add_argument("--fresh", action="store_true", help="discard an earlier run of this sweep instead of resuming")
    sweep.add_argument("--check", action="store_true", help="check the sweep file and the cluster, run nothing")
    sweep.add_argument("--quiet", action="store_true", help="no Tune status output")
    sweep.set_defaults(handler=_sweep)
    return parser


def _env_arguments(parser: argparse.ArgumentParser, task_required: bool = True, saved_policy: bool = False) -> None:
    """Options every env-running subcommand shares (``saved_policy``: rollout's wording)."""
    parser.add_argument(
        "--task", required=task_required, default=None, help="task id, e.g. Pouring-v0 or FluxLab/Pouring-v0"
    )
    parser.add_argument("--seed", type=int, default=None, help="env reset seed (default 0)")
    parser.add_argument("--preset", choices=("cpu", "paper"), default="cpu", help="task preset")
    default = "a saved policy's own, else f32" if saved_policy else "f32"
    parser.add_argument(
        "--precision", choices=("f32", "f64"), default=None, help=f"simulation float type (default: {default})"
    )
    parser.add_argument("--horizon", type=int, default=None, help="episode length override [env steps]")
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="task config override"
    )
    parser.add_argument("--size", type=_frame_size, default=None, help="video frame width and height [px]")
    parser.add_argument("--no-progress", action="store_true", help="disable progress bars")


def _run_arguments(parser: argparse.ArgumentParser) -> None:
    """``--resume`` / ``--overwrite`` of the commands that write a run directory."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--resume", action="store_true", help="continue the run saved in --out")
    group.add_argument("--overwrite", action="store_true", help="delete the run saved in --out first")


def _open_loop_arguments(parser: argparse.ArgumentParser, param: str) -> None:
    from policies.common import PARAMETERIZATIONS, SQUASHES

    parser.add_argument("--param", choices=PARAMETERIZATIONS, default=param, help="action parameterization")
    parser.add_argument("--knots", type=int, default=8, help="knots for linear/spline parameterizations")
    parser.add_argument("--squash", choices=SQUASHES, default="tanh", help="map parameters into [-1, 1]")
    parser.add_argument("--time-budget", type=float, default=None, help="stop after this many seconds")
    parser.add_argument("--out", default=None, help="output directory (default runs/<command>-<task>-s<seed>)")
    parser.add_argument("--video-format", choices=("mp4", "gif"), default="mp4", help="best-trajectory video")
    parser.add_argument("--no-video", action="store_true", help="do not render the best trajectory")
    parser.add_argument("--no-tensorboard", action="store_true", help="do not write TensorBoard events")
    _run_arguments(parser)


def _add_policy_parsers(sub) -> None:
    rollout = _subparser(sub, "rollout", "run one episode of a policy and (optionally) write a video")
    _env_arguments(rollout, task_required=False, saved_policy=True)
    rollout.add_argument(
        "--policy", required=True, help="random, scripted, a trajectory .npz or an SB3 model .zip (fluxlab train)"
    )
    rollout.add_argument("--steps", type=int, default=None, help="env steps (default: the whole episode)")
    rollout.add_argument("--video", default=None, help="output video (.mp4 or .gif)")
    rollout.set_defaults(handler=_rollout)

    opt = _subparser(sub, "optimize", "gradient-based open-loop trajectory optimization")
    _env_arguments(opt)
    opt.add_argument("--iters", type=int, default=50, help="iterations (forward + backward)")
    opt.add_argument("--lr", type=float, default=0.1, help="learning rate")
    opt.add_argument("--optimizer", choices=("adam", "sgd", "rmsprop"), default="adam", help="torch.optim method")
    opt.add_argument("--clip", type=float, default=1.0, help="max gradient norm (<= 0: no clipping)")
    _open_loop_arguments(opt, "per-step")
    opt.set_defaults(handler=_optimize)

    es = _subparser(sub, "cmaes", "CMA-ES over open-loop action sequences")
    _env_arguments(es)
    es.add_argument("--evals", type=int, default=200, help="loss evaluations (whole generations)")
    es.add_argument("--sigma", type=float, default=0.5, help="initial CMA-ES step size")
    es.add_argument("--popsize", type=int, default=None, help="population size (default 4 + 3 ln n)")
    _open_loop_arguments(es, "linear")
    es.set_defaults(handler=_cmaes)

    rl = _subparser(sub, "train", "train PPO or SAC (Stable-Baselines3)")
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
    _run_arguments(rl)
    rl.set_defaults(handler=_train)


def _demo(args: argparse.Namespace) -> int:
    if args.steps < 1:
        print("fluxlab demo: --steps must be >= 1", file=sys.stderr)
        return 2
    if not args.out.lower().endswith((".mp4", ".gif")):
        print(f"fluxlab demo: --out must end in .mp4 or .gif, got {args.out!r}", file=sys.stderr)
        return 2
    from engine.state import SimulationDiverged
    from policies import demo

    options = {"precision": args.precision, "arch": args.arch, "small": args.small, "size": args.size}
    try:
        r = demo.run(args.out, steps=args.steps, fps=args.fps, progress=not args.no_progress, **options)
    except SimulationDiverged as err:
        print(f"fluxlab demo: {err}", file=sys.stderr)
        return 1
    print(f"wrote {r.video}")
    print(
        f"{r.particles} particles, grid {r.grid_res}^3, {r.steps} steps x {r.substeps} substeps, {r.frames} frames "
        f"{r.size}x{r.size}; simulate {r.simulate_s:.1f} s, render {r.render_s:.1f} s "
        f"(median {r.median_render_ms:.0f} ms/frame), total {r.total_s:.1f} s"
    )
    return 0


class _UsageError(ValueError):
    """A bad command-line argument (exit status 2)."""


def _overrides(args: argparse.Namespace) -> dict:
    """The config overrides of ``--set KEY=VALUE`` and ``--horizon``."""
    from policies.common import parse_overrides

    overrides = parse_overrides(args.overrides)
    if args.horizon is not None:
        if args.horizon < 1:
            raise _UsageError(f"--horizon must be >= 1, got {args.horizon}")
        overrides["horizon"] = args.horizon
    return overrides


def _blame(args: argparse.Namespace, build):
    """``build(overrides)`` (an env spec); a config error names the ``--set`` item or option that caused it."""
    overrides = _overrides(args)
    try:
        return build(overrides)
    except ValueError as err:
        items = [(f"--set {item}", k) for item, k in zip(args.overrides, _overrides_keys(args), strict=True)]
        if args.horizon is not None:
            items.append((f"--horizon {args.horizon}", "horizon"))
        for option, key in items:
            try:
                build({key: overrides[key]})
            except ValueError:
                raise _UsageError(f"{option}: {err}") from None
        raise


def _overrides_keys(args: argparse.Namespace) -> list[str]:
    return [item.partition("=")[0].strip() for item in args.overrides]


def _spec(args: argparse.Namespace):
    """The env of the command line (precision f32 and seed 0 unless given)."""
    from envs import EnvSpec

    seed = 0 if args.seed is None else args.seed
    return _blame(args, lambda overrides: EnvSpec(args.task, args.preset, overrides, args.precision or "f32", seed))


def _check_video(path: str | None) -> None:
    if path and not path.lower().endswith((".mp4", ".gif")):
        raise _UsageError(f"video must end in .mp4 or .gif, got {path!r}")


def _run_dir(args: argparse.Namespace, command: str, spec) -> str:
    return args.out or f"runs/{command}-{spec.task}-s{spec.seed}"


def _rollout_source(args: argparse.Namespace):
    """The policy of ``--policy`` and the env to run it in: the command line's for random and
    scripted; a saved policy's own, with ``--precision``, ``--seed`` (a model: 0 unless given) and
    config overrides from the command line on top (``--preset`` does not apply)."""
    from dataclasses import replace
    from pathlib import Path

    from envs import resolve_task
    from policies.runs import PolicySource

    if args.policy not in ("random", "scripted") and Path(args.policy).suffix not in (".npz", ".zip"):
        raise _UsageError(f"--policy must be random, scripted, a .npz trajectory or a .zip model, got {args.policy}")
    source = PolicySource.load(args.policy)
    if source.spec is None:
        if args.task is None:
            raise _UsageError("--task is required with --policy random|scripted")
        return source, _spec(args)
    spec, overrides = source.spec, _overrides(args)
    if args.task is not None and resolve_task(args.task) != spec.task:
        raise _UsageError(f"{args.policy} is for task {spec.task!r}, not {args.task!r}")
    if overrides and source.trajectory is not None:
        print(f"note: config overrides {overrides} on top of the trajectory's {spec.overrides}; the loss may differ")
    seed = args.seed
    if seed is None:
        seed = spec.seed if source.trajectory is not None else 0  # a model's spec holds its training seed
    spec = _blame(args, lambda more: spec.with_overrides(**more))
    return source, replace(spec, precision=args.precision or spec.precision, seed=seed)


def _check_writable(path: str, option: str) -> None:
    """The file ``path`` can be written: its folder exists (or can be made) and is writable."""
    import os
    from pathlib import Path

    folder = Path(path).expanduser().resolve().parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise _UsageError(f"{option} {path}: cannot create {folder} ({err.strerror or err})") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise _UsageError(f"{option} {path}: the folder {folder} is not writable")


def _interrupted(summary: dict) -> int:
    """Exit status of a run: 0, or 128 + the number of the signal that stopped it."""
    import signal

    name = summary.get("interrupted_by")
    if not summary.get("interrupted") or name is None:
        return 0
    print(f"interrupted by {name}; the best result so far is saved (continue with --resume)", file=sys.stderr)
    return 128 + int(signal.Signals[name])


def _rollout(args: argparse.Namespace) -> int:
    if args.steps is not None and args.steps < 1:
        raise _UsageError(f"--steps must be >= 1, got {args.steps}")
    _check_video(args.video)
    if args.video:
        _check_writable(args.video, "--video")
    from policies import runs

    source, spec = _rollout_source(args)
    options = {"steps": args.steps, "video": args.video, "render_size": args.size, "progress": not args.no_progress}
    run = runs.rollout(spec, source, **options)
    if run["video"]:
        print(f"wrote {run['video']}")
    print(f"task {spec.task}, policy {args.policy}, seed {spec.seed}, {run['steps']} steps in {run['seconds']:.1f} s")
    print(f"total reward {run['total_reward']:.6g}, final loss {run['final_loss']:.6g}, success {run['success']}")
    if run["diverged"]:
        print("warning: the simulation diverged; the episode was truncated", file=sys.stderr)
    if run["recorded_loss"] is not None:
        diff = run["final_loss"] - run["recorded_loss"]
        print(f"recorded loss {run['recorded_loss']:.6g} (replay - recorded = {diff:.3g})")
    return 0


def _open_loop_settings(args: argparse.Namespace):
    from policies.runs import OpenLoopSettings

    return OpenLoopSettings(
        param=args.param,
        knots=args.knots,
        squash=args.squash,
        time_budget=args.time_budget,
        video_format=None if args.no_video else args.video_format,
        render_size=args.size,
        tensorboard=not args.no_tensorboard,
        progress=not args.no_progress,
    )


def _print_open_loop(run: dict) -> None:
    """What ``optimize`` and ``cmaes`` report: the files, the search, the replay."""
    print(f"wrote {run['trajectory']}" + (f" and {run['video']}" if run["video"] else ""))
    loss = run["best_loss"]
    print(f"{run['task']}: loss {run['initial_loss']:.6g} (zero actions) -> {loss:.6g} (best, {run['stopped']})")
    replay = run["replay_loss"]
    if replay is None:
        return
    gap = abs(replay - loss)
    print(f"replay: final loss {replay:.6g} (|replay - recorded| = {gap:.3g}), success {run['replay_success']}")
    if gap > 1e-3 * max(1.0, abs(loss)):
        print("warning: the replayed loss differs from the recorded one by more than 1e-3", file=sys.stderr)


def _optimize(args: argparse.Namespace) -> int:
    if args.iters < 1 or not args.lr > 0:
        raise _UsageError(f"need --iters >= 1 and --lr > 0, got {args.iters}, {args.lr}")
    from policies import runs

    spec = _spec(args)
    search = {
        "iters": args.iters,
        "lr": args.lr,
        "optimizer": args.optimizer,
        "clip": args.clip if args.clip > 0 else None,
        "resume": args.resume,
        "overwrite": args.overwrite,
    }
    run = runs.optimize_run(spec, _run_dir(args, "optimize", spec), _open_loop_settings(args), **search)
    print(
        f"{run['iterations']} iterations, median {run['median_iter_s']:.2f} s per iteration "
        "(forward + backward; the first, which compiles kernels, excluded)"
    )
    _print_open_loop(run)
    return _interrupted(run)


def _cmaes(args: argparse.Namespace) -> int:
    if args.evals < 2 or not args.sigma > 0:
        raise _UsageError(f"need --evals >= 2 and --sigma > 0, got {args.evals}, {args.sigma}")
    from policies import runs

    spec = _spec(args)
    search = {
        "evals": args.evals,
        "sigma": args.sigma,
        "popsize": args.popsize,
        "resume": args.resume,
        "overwrite": args.overwrite,
    }
    run = runs.cmaes_run(spec, _run_dir(args, "cmaes", spec), _open_loop_settings(args), **search)
    _print_open_loop(run)
    return _interrupted(run)


def _train_options(args: argparse.Namespace, out) -> dict:
    """Keyword arguments of :func:`policies.rl.train` from the command line."""
    hyper = {k: v for k, v in (("n_steps", args.n_steps), ("batch_size", args.batch_size)) if v is not None}
    return {
        "timesteps": args.timesteps,
        "num_envs": args.num_envs,
        "learning_rate": args.lr,
        "hyperparameters": hyper,
        "eval_freq": args.eval_freq,
        "eval_episodes": args.eval_episodes,
        "time_budget": args.time_budget,
        "video": (out / args.video) if args.video else None,
        "render_size": args.size,
        "tensorboard": not args.no_tensorboard,
        "progress": not args.no_progress,
        "resume": args.resume,
        "overwrite": args.overwrite,
    }


def _train(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    if args.timesteps < 1 or args.num_envs < 1 or args.eval_episodes < 1:
        raise _UsageError("--timesteps, --num-envs and --eval-episodes must be >= 1")
    if args.n_steps is not None and args.algo != "ppo":
        raise _UsageError("--n-steps applies to PPO only")
    _check_video(args.video)
    from policies import rl

    spec = _spec(args)
    out = Path(_run_dir(args, f"train-{args.algo}", spec))
    result = rl.train(spec, args.algo, out=out, **_train_options(args, out))
    print(f"wrote {result.model_path} ({result.timesteps} steps in {result.seconds:.1f} s) and {out}")
    for i, e in enumerate(result.evaluation):
        print(f"eval episode {i}: return {e.total_reward:.6g}, final loss {e.final_loss:.6g}, success {e.success}")
    return _interrupted(json.loads((out / "summary.json").read_text()))


def _sweep(args: argparse.Namespace) -> int:
    try:
        from policies.dist import cluster, config, sweep
    except ImportError as err:
        raise _UsageError(f"fluxlab sweep needs the dist extra (pip install 'fluxlab[dist]'): {err}") from None

    if args.num_cpus is not None and args.num_cpus < 1:
        raise _UsageError(f"--num-cpus must be >= 1, got {args.num_cpus}")
    cfg = config.load_sweep(args.config)
    if args.check:
        cluster.connect(args.address, args.num_cpus)
        cluster.check_resources(cfg)
        trials = f"{cfg.trial_count()} trials of {cfg.command} ({cfg.searcher} search)"
        print(f"{args.config}: {trials}; the cluster can run them")
        return 0
    result = sweep.run_sweep(
        cfg, address=args.address, num_cpus=args.num_cpus, fresh=args.fresh, verbose=0 if args.quiet else 1
    )
    ok = sum(row["status"] == "ok" for row in result.rows)
    print(f"{'resumed' if result.resumed else 'ran'} {len(result.rows)} trials ({ok} ok) in {result.path}")
    print(f"wrote {result.table} and " + ", ".join(str(p) for p in result.plots))
    best = min((r for r in result.rows if r["loss"] is not None), key=lambda r: r["loss"], default=None)
    if best is not None:
        print(f"best: trial {best['trial']} ({best['task']}, seed {best['seed']}), loss {best['loss']:.6g}")
    return 0 if ok == len(result.rows) else 1


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
