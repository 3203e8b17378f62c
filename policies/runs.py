"""Whole policy runs as ``fluxlab`` performs them: an env from an :class:`envs.EnvSpec`, a search
or an episode, the artifacts, and the run summary.

:func:`optimize_run` (gradient descent, :mod:`policies.trajopt`) and :func:`cmaes_run` (CMA-ES,
:mod:`policies.cmaes`) search open-loop action sequences from the reset state of ``spec.seed``
and write to a run directory: ``log.csv`` and TensorBoard events (``tb/``), ``loss.png``,
``best.npz`` (the best trajectory), ``best.mp4`` or ``best.gif`` (it replayed in the env) and
``summary.json``. The replay's final loss is the env's ``info["loss"]`` and equals the recorded
loss up to round-off (see :mod:`policies.trajopt`); the summary holds both.

A run holds its directory exclusively and stops cleanly on SIGINT / SIGTERM
(:class:`policies.rundir.RunDirectory`): the current iteration or generation finishes, the best
trajectory so far is saved as ``best.npz`` (no replay, no video), the summary says
``"interrupted": true`` and ``run.log`` names the signal. The search state is saved as
``checkpoint.pt`` (optimize: parameters and optimizer state, read back with
``torch.load(weights_only=True)``) or ``checkpoint.npz`` (CMA-ES: mean, step size, best; no
pickles), and ``resume=True`` continues it until the budget (``iters`` / ``evals``, counted over
the whole run) is spent. :func:`rollout` runs one episode of a :class:`PolicySource` (random,
scripted, a saved trajectory or an SB3 model).
Every run returns its summary (:func:`policies.common.run_summary`); RL training
(:func:`policies.rl.train`) writes the same kind.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from envs import EnvSpec
from policies import common, io
from policies.rundir import RunDirectory, RunDirectoryError


@dataclass(frozen=True)
class OpenLoopSettings:
    """Parameterization and outputs of an open-loop run.

    Attributes:
        param: action parameterization (:data:`policies.trajopt.PARAMETERIZATIONS`).
        knots: knots of the ``linear`` / ``spline`` parameterizations.
        squash: map of parameters into [-1, 1] (``tanh`` or ``clamp``).
        time_budget: stop the search after this many seconds [s].
        video_format: ``mp4`` or ``gif`` for the replay video, None for no video.
        render_size: video frame width and height [px] (default: the task's).
        tensorboard: write TensorBoard events.
        progress: show progress bars.
    """

    param: str
    knots: int = 8
    squash: str = "tanh"
    time_budget: float | None = None
    video_format: str | None = "mp4"
    render_size: int | None = None
    tensorboard: bool = True
    progress: bool = False


def _open_loop_env(spec: EnvSpec, settings: OpenLoopSettings):
    """The env (rendering when a video is wanted) and the parameterization of its full horizon."""
    from policies.trajopt import ActionParameterization

    env = spec.make(
        render_mode=None if settings.video_format is None else "rgb_array", render_size=settings.render_size
    )
    task = env.unwrapped.task
    param = ActionParameterization(task.horizon, task.action_dim, settings.param, settings.knots, settings.squash)
    return env, param


def _run_key(spec: EnvSpec, settings: OpenLoopSettings, search: dict[str, Any]) -> str:
    """What a checkpoint must match to be resumed: env, parameterization and search settings."""
    facts = {"spec": spec.to_dict(), "param": settings.param, "knots": settings.knots, "squash": settings.squash}
    return json.dumps({**facts, **search}, sort_keys=True)


def _load_checkpoint(out: Path, command: str, key: str) -> dict[str, Any]:
    """The search state saved by an earlier run of ``command`` in ``out`` with the same ``key``."""
    path = out / ("checkpoint.pt" if command == "optimize" else "checkpoint.npz")
    if not path.is_file():
        raise RunDirectoryError(f"--resume: {path} not found (the run in {out} was not a {command} run)")
    try:
        if command == "optimize":
            import torch

            saved = torch.load(path, weights_only=True)
            stored, state = saved["key"], saved["state"]
        else:
            with np.load(path, allow_pickle=False) as data:
                stored = str(data["key"])
                state = {k: data[k] for k in ("mean", "best_z")}
                state.update(json.loads(str(data["scalars"])))
    except (OSError, EOFError, KeyError, TypeError, ValueError, RuntimeError) as err:
        raise RunDirectoryError(f"--resume: {path} is not a readable checkpoint ({err})") from None
    if stored != key:
        raise RunDirectoryError(
            f"--resume: {path} belongs to a run with other settings ({stored}); this command asks for {key}"
        )
    return state


def _save_checkpoint(out: Path, command: str, key: str, state: dict[str, Any]) -> None:
    if command == "optimize":
        import torch

        torch.save({"key": key, "state": state}, out / "checkpoint.pt")
        return
    scalars = {k: v for k, v in state.items() if k not in ("mean", "best_z")}
    with open(out / "checkpoint.npz", "wb") as f:
        arrays = {"mean": state["mean"], "best_z": state["best_z"], "scalars": np.array(json.dumps(scalars))}
        np.savez(f, key=np.array(key), **arrays)


def _finish_open_loop(spec, out, command, env, param, settings, result, facts, run) -> dict[str, Any]:
    """Save the best trajectory, replay it in the env (video; not after an interruption), write
    and return the summary."""
    from engine.render import write_video

    metadata = {**param.describe(), **facts}
    trajectory = io.Trajectory(result.actions, result.loss, spec, method=command, metadata=metadata)
    npz = io.save_trajectory(out / "best.npz", trajectory)
    interrupted = result.stopped == "interrupted"
    replay, video = None, None
    if not interrupted:
        replay = common.run_episode(
            env,
            common.open_loop_policy(result.actions),
            seed=spec.seed,
            render=settings.video_format is not None,
            progress=settings.progress,
            desc="replay best",
        )
        if settings.video_format is not None:
            video = write_video(replay.frames, out / f"best.{settings.video_format}", fps=env.metadata["render_fps"])
    env.close()
    summary = common.run_summary(
        command,
        spec,
        **metadata,
        initial_loss=result.initial_loss,
        best_loss=result.loss,
        replay_loss=None if replay is None else replay.final_loss,
        replay_success=None if replay is None else replay.success,
        replay_return=None if replay is None else replay.total_reward,
        stopped=result.stopped,
        interrupted=interrupted,
        interrupted_by=run.signal_name if interrupted else None,
        trajectory=str(npz),
        video=video,
    )
    common.write_summary(out, summary)
    if interrupted:
        run.note(
            f"{command} interrupted by {run.signal_name} after {len(result.history)} iterations; best loss "
            f"{result.loss:.6g} saved to best.npz (continue with --resume)"
        )
    else:
        run.note(f"{command} finished ({result.stopped}); best loss {result.loss:.6g}")
    return summary


def optimize_run(
    spec: EnvSpec,
    out: str | Path,
    settings: OpenLoopSettings,
    *,
    iters: int,
    lr: float = 0.1,
    optimizer: str = "adam",
    clip: float | None = 1.0,
    resume: bool = False,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Gradient-based trajectory optimization (:func:`policies.trajopt.optimize`) written to ``out``.

    Args:
        spec: the env; the search starts from the reset state of ``spec.seed``.
        out: run directory.
        settings: parameterization and outputs.
        iters, lr, optimizer, clip: as :func:`policies.trajopt.optimize` (``iters`` counts the
            iterations of the whole run, a resumed one included).
        resume: continue the run saved in ``out`` (same env and settings).
        overwrite: replace a run ``out`` holds.

    Returns:
        The run summary, with ``iterations`` and ``median_iter_s`` (the first iteration, which
        compiles kernels, excluded).

    Raises:
        RunDirectoryError: ``out`` is not writable, in use by another run, holds a run and
            neither ``resume`` nor ``overwrite`` is set, or ``resume`` finds no matching checkpoint.
    """
    from policies.trajopt import optimize

    out = Path(out)
    key = _run_key(spec, settings, {"command": "optimize", "lr": lr, "optimizer": optimizer, "clip": clip})
    with RunDirectory(out, resume=resume, overwrite=overwrite) as run:
        previous = _load_checkpoint(out, "optimize", key) if resume else None
        run.note(f"optimize {'resumed' if resume else 'started'}: {spec.to_dict()}, iters {iters}")
        env, param = _open_loop_env(spec, settings)
        columns = ("iter", "loss", "best_loss", "grad_norm", "lr", "iter_s", "time_s")
        with common.RunLog(out, columns, tensorboard=settings.tensorboard, append=resume) as log:
            result = optimize(
                env,
                param,
                iters=iters,
                lr=lr,
                optimizer=optimizer,
                clip=clip,
                seed=spec.seed,
                time_budget=settings.time_budget,
                callback=lambda row: log.log(**row),
                progress=settings.progress,
                stop=run.should_stop,
                resume=previous,
            )
        _save_checkpoint(out, "optimize", key, result.state)
        rows = result.history
        x = [r["iter"] for r in rows]
        common.plot_curves(
            {"loss": (x, [r["loss"] for r in rows]), "best": (x, [r["best_loss"] for r in rows])},
            out / "loss.png",
            xlabel="iteration",
            ylabel="task loss",
            title=f"{spec.task}: trajectory optimization ({optimizer}, {param.kind})",
        )
        seconds = [r["iter_s"] for r in rows[1:]] or [rows[0]["iter_s"]]
        facts = {
            "iterations": len(rows),
            "optimizer": optimizer,
            "lr": lr,
            "clip": clip,
            "median_iter_s": float(np.median(seconds)),
        }
        return _finish_open_loop(spec, out, "optimize", env, param, settings, result, facts, run)


def cmaes_run(
    spec: EnvSpec,
    out: str | Path,
    settings: OpenLoopSettings,
    *,
    evals: int,
    sigma: float = 0.5,
    popsize: int | None = None,
    resume: bool = False,
    overwrite: bool = False,
    evaluate=None,
) -> dict[str, Any]:
    """CMA-ES over open-loop action sequences (:func:`policies.cmaes.cmaes`) written to ``out``.

    Args:
        spec: the env; every candidate starts from the reset state of ``spec.seed``.
        out: run directory.
        settings: parameterization and outputs.
        evals, sigma, popsize: as :func:`policies.cmaes.cmaes` (``evals`` counts the evaluations
            of the whole run, a resumed one included).
        resume: continue the run saved in ``out`` (same env and settings).
        overwrite: replace a run ``out`` holds.
        evaluate: who scores the populations (:func:`policies.cmaes.cmaes`'s ``evaluate``, e.g.
            Ray actors, :class:`policies.dist.population.PopulationEvaluator`); default: the env.

    Returns:
        The run summary, with ``evals``, ``generations`` and ``sigma0``.

    Raises:
        RunDirectoryError: as :func:`optimize_run`.
    """
    from policies.cmaes import cmaes

    out = Path(out)
    key = _run_key(spec, settings, {"command": "cmaes", "sigma": sigma, "popsize": popsize})
    with RunDirectory(out, resume=resume, overwrite=overwrite) as run:
        previous = _load_checkpoint(out, "cmaes", key) if resume else None
        run.note(f"cmaes {'resumed' if resume else 'started'}: {spec.to_dict()}, evals {evals}")
        env, param = _open_loop_env(spec, settings)
        columns = ("evals", "generation", "loss", "mean_loss", "best_loss", "sigma", "time_s")
        with common.RunLog(out, columns, tensorboard=settings.tensorboard, append=resume) as log:
            result = cmaes(
                env,
                param,
                evals=evals,
                sigma=sigma,
                popsize=popsize,
                seed=spec.seed,
                time_budget=settings.time_budget,
                callback=lambda row: log.log(**row),
                progress=settings.progress,
                stop=run.should_stop,
                resume=previous,
                evaluate=evaluate,
            )
        _save_checkpoint(out, "cmaes", key, result.state)
        rows = result.history
        x = [r["evals"] for r in rows]
        common.plot_curves(
            {
                "generation best": (x, [r["loss"] for r in rows]),
                "generation mean": (x, [r["mean_loss"] for r in rows]),
                "best so far": (x, [r["best_loss"] for r in rows]),
            },
            out / "loss.png",
            xlabel="loss evaluations",
            ylabel="task loss",
            title=f"{spec.task}: CMA-ES ({param.kind}, {param.knots} knots)",
            hlines={"zero actions": result.initial_loss},
        )
        facts = {"evals": result.evals, "generations": len(rows), "sigma0": sigma}
        return _finish_open_loop(spec, out, "cmaes", env, param, settings, result, facts, run)


@dataclass
class PolicySource:
    """A policy to roll out: ``random``, ``scripted``, a saved trajectory or an SB3 model.

    Attributes:
        name: as given (``random``, ``scripted`` or the file path).
        spec: the env a saved policy was made for (None for random and scripted).
        trajectory: the saved open-loop trajectory, if any.
        model: the loaded SB3 model, if any.
    """

    name: str
    spec: EnvSpec | None = None
    trajectory: io.Trajectory | None = None
    model: Any = None

    @classmethod
    def load(cls, name: str) -> PolicySource:
        """``random``, ``scripted``, or a trajectory ``.npz`` / model ``.zip`` read from disk.

        Raises:
            FileNotFoundError: the file does not exist.
            ValueError: another kind of name, or an unreadable file.
        """
        if name in ("random", "scripted"):
            return cls(name)
        path = Path(name)
        if path.suffix == ".npz":
            trajectory = io.load_trajectory(path)
            return cls(name, spec=trajectory.spec, trajectory=trajectory)
        if path.suffix == ".zip":
            model, meta = io.load_model(path)
            return cls(name, spec=meta["spec"], model=model)
        raise ValueError(f"a policy is random, scripted, a .npz trajectory or a .zip model, got {path}")

    def policy(self, env, seed: int | None) -> common.Policy:
        """The ``(obs, t) -> action`` function in ``env`` (``seed`` seeds the random one)."""
        if self.name == "random":
            return common.random_policy(env, seed)
        if self.name == "scripted":
            return common.scripted_policy(env)
        if self.trajectory is not None:
            return common.open_loop_policy(self.trajectory.actions)
        from policies.rl import model_policy

        return model_policy(self.model)


def rollout(
    spec: EnvSpec,
    source: PolicySource,
    *,
    steps: int | None = None,
    video: str | None = None,
    render_size: int | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """One episode of ``source`` in the env of ``spec`` from the reset of ``spec.seed``.

    Args:
        spec: the env.
        source: the policy.
        steps: at most this many steps (default: the episode, or a trajectory's length).
        video: write the episode to this video file (``.mp4`` / ``.gif``).
        render_size: video frame width and height [px].
        progress: show a progress bar.

    Returns:
        The run summary: ``policy``, ``steps``, ``seconds``, ``total_reward``, ``final_loss``,
        ``success``, ``diverged``, ``recorded_loss`` (a trajectory's, else None) and ``video``.

    Raises:
        ValueError: ``steps`` exceeds the length of a trajectory, or the steps to play (``steps``,
            else the whole trajectory) exceed the env's horizon, where the episode would end first.
    """
    from engine.render import write_video

    trajectory = source.trajectory
    if trajectory is not None:
        if steps is not None and steps > len(trajectory.actions):
            raise ValueError(f"{steps} steps asked for, but {source.name} has {len(trajectory.actions)}")
        steps = steps or len(trajectory.actions)
        if steps > spec.horizon:
            raise ValueError(
                f"{source.name} has {steps} actions to play but the env's horizon is {spec.horizon} "
                f"(overrides {spec.overrides}); the episode would end before them: pass --steps {spec.horizon} "
                f"to play the first {spec.horizon} or --horizon {steps}"
            )
    env = spec.make(render_mode="rgb_array" if video else None, render_size=render_size)
    try:
        episode = common.run_episode(
            env,
            source.policy(env, spec.seed),
            seed=spec.seed,
            steps=steps,
            render=bool(video),
            progress=progress,
            desc=f"rollout {spec.task}",
        )
        if video:
            video = write_video(episode.frames, video, fps=env.metadata["render_fps"])
    finally:
        env.close()
    return common.run_summary(
        "rollout",
        spec,
        policy=source.name,
        steps=episode.steps,
        seconds=episode.seconds,
        total_reward=episode.total_reward,
        final_loss=episode.final_loss,
        success=episode.success,
        diverged=episode.diverged,
        recorded_loss=None if trajectory is None else trajectory.loss,
        video=video,
    )
