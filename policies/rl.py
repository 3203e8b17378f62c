"""Model-free RL baselines (PPO, SAC) on FluxLab envs with Stable-Baselines3.

FluidLab (Xian et al., ICLR 2023, Sec. 5) compares its gradient-based trajectory optimization
against PPO (Schulman et al., 2017) and SAC (Haarnoja et al., 2018); this module trains those
with Stable-Baselines3 on the registered envs, whose dense reward is progress on the task loss.

The batched :class:`envs.vector.FluxLabVectorEnv` (B scenes in one simulator) is exposed to SB3
through :class:`GymnasiumVecEnv`. The two autoreset conventions differ: Gymnasium's next-step
mode (FluxLab's) returns the final observation of an episode from ``step`` and resets the
scene on the *following* ``step`` (ignoring that step's action, reward 0), while SB3's VecEnv
resets in the *same* ``step``, returning the first observation of the new episode and the final
one in ``info["terminal_observation"]`` (plus ``info["TimeLimit.truncated"]``). The adapter
therefore resets finished scenes at once with ``reset(options={"reset_mask": done})``, so SB3
never sees the dummy reset step; for a same-step vector env it reads ``info["final_obs"]``.
The resulting stream equals SB3's ``DummyVecEnv`` over B single envs seeded ``seed + i``
(tested in ``tests/test_policies.py``).
"""

from __future__ import annotations

import csv
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from gymnasium.vector import AutoresetMode
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.vec_env import VecEnv

from envs import EnvSpec
from policies.common import Episode, plot_curves, run_episode, run_summary, write_summary
from policies.io import load_model, model_meta_path, save_model_meta
from policies.rundir import RunDirectory, RunDirectoryError

ALGOS = ("ppo", "sac")
#: Per-episode info keys the monitors record (task loss after the last step, success).
INFO_KEYWORDS = ("loss", "success")


class GymnasiumVecEnv(VecEnv):
    """SB3 ``VecEnv`` view of a Gymnasium ``VectorEnv`` (autoreset next-step or same-step).

    Args:
        venv: the vector env; next-step mode needs ``reset(options={"reset_mask": mask})``
            (FluxLab's and Gymnasium's own vector envs support it).

    Notes:
        Seeds set with :meth:`seed` go to the next :meth:`reset` as ``seed + i`` for scene i, as
        in ``DummyVecEnv``. ``get_attr``/``env_method`` act on the one underlying vector env and
        repeat its answer per index.
    """

    def __init__(self, venv):
        mode = venv.metadata.get("autoreset_mode", AutoresetMode.NEXT_STEP)
        if mode not in (AutoresetMode.NEXT_STEP, AutoresetMode.SAME_STEP):
            raise ValueError(f"unsupported autoreset mode {mode!r}; need next-step or same-step")
        self.venv = venv
        self.autoreset_mode = mode
        self._actions: np.ndarray | None = None
        super().__init__(venv.num_envs, venv.single_observation_space, venv.single_action_space)

    def _split(self, info: dict) -> list[dict[str, Any]]:
        """Gymnasium's dict of per-env arrays -> SB3's list of per-env dicts (mask keys ``_k`` dropped)."""
        out: list[dict[str, Any]] = [{} for _ in range(self.num_envs)]
        for key, value in info.items():
            if key.startswith("_") or key == "final_obs" or key == "final_info":
                continue
            for i in range(self.num_envs):
                item = value[i]
                out[i][key] = item.item() if isinstance(item, np.generic) else item
        return out

    def reset(self):
        seeds = self._seeds
        if any(s is not None for s in seeds) and any(s is None for s in seeds):
            raise ValueError(f"either every scene gets a seed or none: {seeds}")
        seed = None if seeds[0] is None else [int(s) for s in seeds]
        options = self._options[0] or None
        obs, info = self.venv.reset(seed=seed, options=options)
        self.reset_infos = self._split(info)
        self._reset_seeds()
        self._reset_options()
        return obs

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = np.asarray(actions)

    def step_wait(self):
        if self._actions is None:
            raise RuntimeError("step_async must come before step_wait")
        obs, reward, terminated, truncated, info = self.venv.step(self._actions)
        self._actions = None
        done = np.asarray(terminated) | np.asarray(truncated)
        infos = self._split(info)
        for i in range(self.num_envs):
            infos[i]["TimeLimit.truncated"] = bool(truncated[i] and not terminated[i])
        if done.any():
            obs = np.array(obs, copy=True)
            if self.autoreset_mode == AutoresetMode.NEXT_STEP:
                for i in np.flatnonzero(done):
                    infos[i]["terminal_observation"] = obs[i].copy()
                first, reset_info = self.venv.reset(options={"reset_mask": done})
                obs[done] = first[done]
                split = self._split(reset_info)
                for i in np.flatnonzero(done):
                    self.reset_infos[i] = split[i]
            else:
                for i in np.flatnonzero(done):
                    infos[i]["terminal_observation"] = np.asarray(info["final_obs"][i]).copy()
        return obs, np.asarray(reward, dtype=np.float32), done, infos

    def close(self) -> None:
        self.venv.close()

    def _indices(self, indices) -> list[int]:
        if indices is None:
            return list(range(self.num_envs))
        if isinstance(indices, int):
            return [indices]
        return list(indices)

    def get_attr(self, attr_name: str, indices=None) -> list[Any]:
        value = getattr(self.venv, attr_name)
        return [value for _ in self._indices(indices)]

    def set_attr(self, attr_name: str, value: Any, indices=None) -> None:
        setattr(self.venv, attr_name, value)

    def env_method(self, method_name: str, *method_args, indices=None, **method_kwargs) -> list[Any]:
        result = getattr(self.venv, method_name)(*method_args, **method_kwargs)
        return [result for _ in self._indices(indices)]

    def env_is_wrapped(self, wrapper_class, indices=None) -> list[bool]:
        return [False for _ in self._indices(indices)]

    def get_images(self):
        frames = self.venv.render()
        return list(frames) if frames is not None else [None] * self.num_envs


class TimeBudgetCallback(BaseCallback):
    """Stops ``learn`` once ``seconds`` of wall-clock time have passed since training started."""

    def __init__(self, seconds: float):
        super().__init__()
        self.seconds = float(seconds)
        self._start = 0.0

    def _on_training_start(self) -> None:
        self._start = time.perf_counter()

    def _on_step(self) -> bool:
        return time.perf_counter() - self._start < self.seconds


class StopCallback(BaseCallback):
    """Stops ``learn`` after the current step once ``should_stop()`` is True (a SIGINT / SIGTERM
    received by :class:`policies.rundir.RunDirectory`)."""

    def __init__(self, should_stop):
        super().__init__()
        self.should_stop = should_stop

    def _on_step(self) -> bool:
        return not self.should_stop()


class TqdmCallback(BaseCallback):
    """A tqdm progress bar over environment steps (SB3's own needs ``rich``).

    Args:
        total: the steps ``learn`` will take: PPO collects whole rollouts of ``n_steps`` per
            scene, so its total is the budget rounded up to a multiple of ``n_steps * num_envs``.
        desc: bar label.
        initial: steps already taken (a resumed run).
    """

    def __init__(self, total: int, desc: str, initial: int = 0):
        super().__init__()
        self.total, self.desc, self.initial = total, desc, initial
        self._bar = None

    def _on_training_start(self) -> None:
        from tqdm import tqdm

        self._bar = tqdm(total=self.total, initial=self.initial, desc=self.desc, unit="step")

    def _on_step(self) -> bool:
        self._bar.update(self.training_env.num_envs)
        return True

    def _on_training_end(self) -> None:
        self._bar.close()


@dataclass
class TrainResult:
    """Outcome of :func:`train`.

    Attributes:
        model_path: final SB3 checkpoint (.zip, with a .json side file).
        best_model_path: EvalCallback's best checkpoint, if any evaluation ran.
        timesteps: environment steps taken.
        seconds: wall-clock training time [s].
        evaluation: deterministic evaluation episodes after training (seeds ``eval_seed + i``).
        curve: training episodes: (timesteps at episode end, return, final loss) lists.
        interrupted: SIGINT / SIGTERM stopped training (no final evaluation ran).
    """

    model_path: Path
    best_model_path: Path | None
    timesteps: int
    seconds: float
    evaluation: list[Episode] = field(default_factory=list)
    curve: dict[str, list[float]] = field(default_factory=dict)
    interrupted: bool = False


def default_hyperparameters(algo: str, horizon: int, num_envs: int, timesteps: int) -> dict[str, Any]:
    """SB3 constructor arguments sized for short FluxLab episodes.

    PPO: one episode per scene per update (``n_steps`` = horizon), 4 minibatches. SAC: replay
    buffer no larger than the run (observations are ~200 floats), learning after
    min(100, timesteps / 2) steps.
    """
    if algo == "ppo":
        n_steps = max(horizon, 2)
        return {"n_steps": n_steps, "batch_size": max(2, n_steps * num_envs // 4)}
    if algo == "sac":
        return {
            "buffer_size": int(min(max(timesteps, 1000), 200_000)),
            "learning_starts": int(min(100, timesteps // 2)),
        }
    raise ValueError(f"algo must be one of {ALGOS}, got {algo!r}")


def read_monitor(path: str | Path) -> dict[str, list[float]]:
    """Columns of an SB3 monitor CSV (``r`` return, ``l`` length, ``t`` time, info keywords)."""
    path = Path(path)
    with open(path, newline="") as f:
        lines = [line for line in f if not line.startswith("#")]
    rows = list(csv.DictReader(lines))
    columns: dict[str, list[float]] = {}
    for row in rows:
        for key, value in row.items():
            columns.setdefault(key, []).append(float(value == "True") if value in ("True", "False") else float(value))
    return columns


def model_policy(model):
    """Deterministic policy ``(obs, t) -> action`` of an SB3 model."""
    return lambda obs, t: model.predict(obs, deterministic=True)[0]


def train(
    spec: EnvSpec,
    algo: str,
    *,
    timesteps: int,
    out: str | Path,
    num_envs: int = 1,
    learning_rate: float | None = None,
    hyperparameters: dict[str, Any] | None = None,
    eval_freq: int | None = None,
    eval_episodes: int = 1,
    eval_seed: int | None = None,
    time_budget: float | None = None,
    video: str | Path | None = None,
    render_size: int | None = None,
    tensorboard: bool = True,
    progress: bool = False,
    verbose: int = 0,
    vec_env: VecEnv | None = None,
    resume: bool = False,
    overwrite: bool = False,
) -> TrainResult:
    """Train PPO or SAC in the env of ``spec`` and write the run to ``out``.

    The run holds ``out`` as a :class:`policies.rundir.RunDirectory`: one writer at a time, no
    silent overwrite, and SIGINT / SIGTERM end training after the current step with
    ``model.zip`` saved, no final evaluation, ``"interrupted": true`` in the summary and a line in
    ``run.log``. The side files (``model.json``, ``best_model.json``) are written before training
    starts, so an ``EvalCallback`` checkpoint is loadable by ``fluxlab rollout`` however the run ends.

    Writes ``model.zip`` (+ ``model.json``), ``best_model.zip`` (+ json) and
    ``evaluations.npz`` from SB3's ``EvalCallback``, ``train.monitor.csv`` (training episodes)
    and ``eval.monitor.csv``, TensorBoard events under ``tb/``, ``learning_curve.png`` and
    ``summary.json`` (:func:`policies.common.run_summary`).

    Args:
        spec: the env; ``spec.seed`` seeds SB3, the training scenes (``seed + i``), the periodic
            evaluations (``seed + 20000``) and the final evaluation (``seed + 10000`` unless
            ``eval_seed``).
        algo: ``ppo`` or ``sac``.
        timesteps: environment steps (summed over scenes); PPO rounds up to whole rollouts.
        out: run directory.
        num_envs: scenes stepped together (one batched simulator).
        learning_rate: optimizer step size (default: SB3's 3e-4).
        hyperparameters: extra SB3 constructor arguments (override the defaults).
        eval_freq: environment steps between evaluations (default: 5 episodes' worth).
        eval_episodes: episodes per evaluation and in the final evaluation.
        eval_seed: reset seed of the first final-evaluation episode (default ``seed + 10000``;
            episode i uses ``eval_seed + i``).
        time_budget: stop training after this many wall-clock seconds [s].
        video: write the first final-evaluation episode to this video file (.mp4 / .gif).
        render_size: video frame size [px] (default: the task's).
        tensorboard: write TensorBoard events.
        progress: tqdm bar.
        verbose: SB3 verbosity.
        vec_env: the training scenes as an SB3 ``VecEnv`` of this spec's env (e.g.
            :class:`policies.dist.vec_env.RayVecEnv`, scenes in Ray actors) instead of one batched
            simulator of ``num_envs`` scenes; ``num_envs`` is then its ``num_envs``.
        resume: continue the ``model.zip`` of the run in ``out`` (same env and algorithm) until
            ``timesteps`` steps in all (SAC's replay buffer starts empty again).
        overwrite: replace a run ``out`` holds.

    Raises:
        RunDirectoryError: ``out`` is not writable, in use, holds a run and neither ``resume``
            nor ``overwrite`` is set, or ``resume`` finds no model of this env and algorithm.
    """
    with RunDirectory(out, resume=resume, overwrite=overwrite) as run:
        return _train(
            run,
            spec,
            algo,
            timesteps=timesteps,
            num_envs=num_envs,
            learning_rate=learning_rate,
            hyperparameters=hyperparameters,
            eval_freq=eval_freq,
            eval_episodes=eval_episodes,
            eval_seed=eval_seed,
            time_budget=time_budget,
            video=video,
            render_size=render_size,
            tensorboard=tensorboard,
            progress=progress,
            verbose=verbose,
            vec_env=vec_env,
        )


def _resumed_model(out: Path, spec: EnvSpec, algo: str, env, tensorboard_log: str | None):
    """The ``model.zip`` of an earlier run in ``out``, attached to ``env`` to train on."""
    try:
        model, meta = load_model(out / "model.zip")
    except (FileNotFoundError, ValueError) as err:
        raise RunDirectoryError(f"--resume: {err}") from None
    if meta["spec"] != spec or meta["algo"] != algo:
        raise RunDirectoryError(
            f"--resume: {out / 'model.zip'} is a {meta['algo']} model of {meta['spec'].to_dict()}; this command "
            f"trains {algo} on {spec.to_dict()}"
        )
    # The loader stores unbounded spaces of the side file's sizes; training checks the env's own.
    model.observation_space = model.policy.observation_space = env.observation_space
    model.set_env(env)
    model.tensorboard_log = tensorboard_log
    return model


def _train(
    run: RunDirectory,
    spec: EnvSpec,
    algo: str,
    *,
    timesteps: int,
    num_envs: int,
    learning_rate: float | None,
    hyperparameters: dict[str, Any] | None,
    eval_freq: int | None,
    eval_episodes: int,
    eval_seed: int | None,
    time_budget: float | None,
    video: str | Path | None,
    render_size: int | None,
    tensorboard: bool,
    progress: bool,
    verbose: int,
    vec_env: VecEnv | None,
) -> TrainResult:
    """:func:`train` in the open run directory ``run``."""
    from stable_baselines3 import PPO, SAC
    from stable_baselines3.common.callbacks import CallbackList, EvalCallback
    from stable_baselines3.common.vec_env import DummyVecEnv, VecMonitor

    if algo not in ALGOS:
        raise ValueError(f"algo must be one of {ALGOS}, got {algo!r}")
    if timesteps < 1 or num_envs < 1 or eval_episodes < 1:
        raise ValueError("timesteps, num_envs and eval_episodes must be >= 1")
    out = run.path
    seed = spec.seed
    run.note(f"train {algo} {'resumed' if run.resume else 'started'}: {spec.to_dict()}, timesteps {timesteps}")
    if vec_env is None:
        vec_env = GymnasiumVecEnv(spec.make_vec(num_envs))
    num_envs = vec_env.num_envs
    horizon = spec.horizon
    train_env = VecMonitor(vec_env, filename=str(out / "train"), info_keywords=INFO_KEYWORDS)
    train_env.seed(seed)
    eval_env = spec.make(render_mode="rgb_array" if video else None, render_size=render_size)
    # The periodic evaluations log to eval.monitor.csv; the final evaluation below steps eval_env directly.
    eval_vec = VecMonitor(DummyVecEnv([lambda: eval_env]), filename=str(out / "eval"), info_keywords=INFO_KEYWORDS)
    eval_vec.seed(seed + 20_000)
    kwargs = default_hyperparameters(algo, horizon, num_envs, timesteps)
    kwargs.update(hyperparameters or {})
    if learning_rate is not None:
        kwargs["learning_rate"] = learning_rate
    cls = {"ppo": PPO, "sac": SAC}[algo]
    tensorboard_log = str(out / "tb") if tensorboard else None
    if run.resume:
        model = _resumed_model(out, spec, algo, train_env, tensorboard_log)
    else:
        model = cls(
            "MlpPolicy", train_env, seed=seed, device="cpu", verbose=verbose, tensorboard_log=tensorboard_log, **kwargs
        )
    meta = {
        "algo": algo,
        "num_envs": num_envs,
        "observation_dim": int(train_env.observation_space.shape[0]),
        "action_dim": int(train_env.action_space.shape[0]),
        "timesteps": int(model.num_timesteps),
        "hyperparameters": {k: v for k, v in kwargs.items() if isinstance(v, (int, float, str))},
    }
    model_path, best_path = out / "model.zip", out / "best_model.zip"
    for path in (model_path, best_path):  # before training: any checkpoint EvalCallback saves is loadable
        save_model_meta(path, spec, meta)
    eval_every = eval_freq or 5 * horizon
    evaluator = EvalCallback(
        eval_vec,
        n_eval_episodes=eval_episodes,
        eval_freq=max(eval_every // num_envs, 1),
        log_path=str(out),
        best_model_save_path=str(out),
        deterministic=True,
        verbose=0,
    )
    callbacks = [evaluator, StopCallback(run.should_stop)]
    if time_budget is not None:
        callbacks.append(TimeBudgetCallback(time_budget))
    done = int(model.num_timesteps)
    remaining = max(timesteps - done, 0)
    if progress:
        total = remaining
        if algo == "ppo":  # PPO collects whole rollouts of n_steps per scene
            rollout = model.n_steps * num_envs
            total = -(-remaining // rollout) * rollout
        callbacks.append(TqdmCallback(done + total, f"train {algo}", initial=done))
    t0 = time.perf_counter()
    if remaining:
        callback = CallbackList(callbacks)
        model.learn(total_timesteps=remaining, callback=callback, tb_log_name=algo, reset_num_timesteps=not run.resume)
    seconds = time.perf_counter() - t0
    interrupted = run.stop_requested
    meta["timesteps"] = int(model.num_timesteps)
    model.save(model_path)
    save_model_meta(model_path, spec, meta)
    if best_path.is_file():
        save_model_meta(best_path, spec, meta)
    else:
        model_meta_path(best_path).unlink(missing_ok=True)
        best_path = None
    policy = model_policy(model)
    first = seed + 10_000 if eval_seed is None else eval_seed
    evaluation = []
    if not interrupted:
        evaluation = [
            run_episode(eval_env, policy, seed=first + i, render=bool(video) and i == 0) for i in range(eval_episodes)
        ]
    if video and evaluation:
        from engine.render import write_video

        write_video(evaluation[0].frames, video, fps=eval_env.metadata["render_fps"])
        evaluation[0].frames = []
    train_env.close()
    eval_vec.close()
    curve = read_monitor(out / "train.monitor.csv")
    lengths = np.asarray(curve.get("l", []), dtype=float)
    curve["timesteps"] = np.cumsum(lengths).tolist()
    plot_learning_curve(out, algo, curve)
    summary = run_summary(
        "train",
        spec,
        algo=algo,
        timesteps=int(model.num_timesteps),
        seconds=seconds,
        model=str(model_path),
        best_model=str(best_path) if best_path else None,
        eval_final_loss=[e.final_loss for e in evaluation],
        eval_return=[e.total_reward for e in evaluation],
        eval_success=[e.success for e in evaluation],
        training_episodes=len(curve.get("l", [])),
        interrupted=interrupted,
        interrupted_by=run.signal_name if interrupted else None,
    )
    write_summary(out, summary)
    if interrupted:
        run.note(
            f"train interrupted by {run.signal_name} after {model.num_timesteps} steps; model.zip saved "
            "(continue with --resume)"
        )
    else:
        run.note(f"train finished after {model.num_timesteps} steps")
    return TrainResult(
        model_path=model_path,
        best_model_path=best_path,
        timesteps=int(model.num_timesteps),
        seconds=seconds,
        evaluation=evaluation,
        curve=curve,
        interrupted=interrupted,
    )


def plot_learning_curve(out: Path, algo: str, curve: dict[str, list[float]]) -> Path:
    """``learning_curve.png``: final task loss of training episodes and of the evaluations vs steps."""
    series = {}
    if curve.get("timesteps"):
        series["training episodes"] = (curve["timesteps"], curve["loss"])
    evaluations = out / "evaluations.npz"
    if evaluations.is_file():
        with np.load(evaluations, allow_pickle=False) as data:
            steps, per_eval = data["timesteps"], data["results"].shape[1]
        # eval.monitor.csv holds the EvalCallback episodes in order.
        losses = read_monitor(out / "eval.monitor.csv").get("loss", [])
        if len(steps) and len(losses) >= per_eval * len(steps):
            means = np.asarray(losses[: per_eval * len(steps)]).reshape(len(steps), per_eval).mean(axis=1)
            series["evaluation (deterministic)"] = (steps.tolist(), means.tolist())
    return plot_curves(
        series or {"(no finished episode)": ([], [])},
        out / "learning_curve.png",
        xlabel="environment steps",
        ylabel="task loss at episode end",
        title=f"{algo.upper()} learning curve",
    )
