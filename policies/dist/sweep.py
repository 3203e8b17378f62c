"""``fluxlab sweep``: a sweep file's trials as Ray Tune trials, resumable, with one results table.

Each trial is one ``optimize``, ``cmaes`` or ``train`` run (:mod:`policies.runs`,
:mod:`policies.rl`) in a Ray worker process that reserves the sweep's ``resources`` (a Tune
placement group: the trial's bundle, then one ``worker_resources`` bundle per Ray actor the
trial starts: CMA-ES population evaluators, :mod:`policies.dist.population`, or RL env workers,
:mod:`policies.dist.vec_env`). The worker initializes its own Taichi runtime
(:class:`policies.dist.worker.WorkerRuntime`, threads = its CPUs; on CUDA when the trial has a
GPU), writes the run's usual files into ``run/`` in its trial directory (replacing those of an
earlier attempt of a retried trial) and reports ``loss`` (the best open-loop loss, or the mean
final loss of RL's evaluation episodes; lower is better), ``initial_loss``, ``seconds``, ``node``
and its curve.

Tune keeps the experiment under ``storage/name`` and saves its state every
:data:`STATE_PERIOD_S` seconds and when stopped with Ctrl+C (SIGINT). Running the same sweep file
again resumes it (``Tuner.restore``): finished trials are kept as they are, unfinished and errored
ones run again (from their start; trials keep no checkpoints). A trial whose worker dies or
raises is retried up to ``max_failures`` times. At the end :mod:`policies.dist.results` writes ``results.csv``,
``results.json`` and one ``<task>.png`` per task into the experiment directory.
"""

from __future__ import annotations

import math
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from envs import EnvSpec
from policies.dist import results
from policies.dist.cluster import check_resources, connect
from policies.dist.config import SweepConfig
from policies.dist.worker import WorkerRuntime

#: Copy of the sweep file kept in the experiment directory (a resumed sweep must match it).
CONFIG_COPY = "sweep_config"
#: Period of Tune's experiment-state saves [s] unless ``TUNE_GLOBAL_CHECKPOINT_S`` is set.
STATE_PERIOD_S = 2


@dataclass
class SweepResult:
    """Outcome of :func:`run_sweep`.

    Attributes:
        path: the experiment directory (``storage/name``).
        rows: one dict per trial (see :func:`policies.dist.results.collect`).
        table: ``results.csv``; ``results.json`` lies beside it.
        plots: one PNG per task.
        resumed: an earlier run of the sweep was restored.
    """

    path: Path
    rows: list[dict[str, Any]]
    table: Path
    plots: list[Path]
    resumed: bool


def _open_loop_settings(settings: dict[str, Any]):
    from policies.runs import OpenLoopSettings

    return OpenLoopSettings(
        param=settings.get("param", "linear"),
        knots=settings.get("knots", 8),
        squash=settings.get("squash", "tanh"),
        time_budget=settings.get("time_budget"),
        video_format=None,
        tensorboard=settings.get("tensorboard", False),
    )


def _optimize(spec: EnvSpec, out: Path, settings: dict, config: dict) -> dict[str, Any]:
    from policies import runs

    opts = {"param": "per-step", **settings}
    search = {k: opts[k] for k in ("iters", "lr", "optimizer", "clip") if k in opts}
    search.setdefault("iters", 50)
    summary = runs.optimize_run(spec, out, _open_loop_settings(opts), overwrite=True, **search)
    log = results.read_csv(out / "log.csv")
    return {**_open_loop_metrics(summary), "curve_x": log["iter"], "curve_y": log["best_loss"]}


def _cmaes(spec: EnvSpec, out: Path, settings: dict, config: dict) -> dict[str, Any]:
    from policies import runs

    search = {k: settings[k] for k in ("evals", "sigma", "popsize") if k in settings}
    search.setdefault("evals", 200)
    workers = int(settings.get("workers", 0))
    if workers:
        from policies.dist.population import PopulationEvaluator
        from policies.trajopt import ActionParameterization

        opts, task = _open_loop_settings(settings), spec.task_config()
        param = ActionParameterization(task.horizon, task.action_dim, opts.param, opts.knots, opts.squash)
        with PopulationEvaluator(
            spec,
            param,
            workers=workers,
            batch_size=int(settings.get("batch_size", 1)),
            cpus_per_worker=max(1, int(config["worker_cpus"])),
            gpus_per_worker=config["worker_gpus"],
            deterministic=config["deterministic"],
        ) as evaluate:
            summary = runs.cmaes_run(
                spec, out, _open_loop_settings(settings), overwrite=True, evaluate=evaluate, **search
            )
    else:
        summary = runs.cmaes_run(spec, out, _open_loop_settings(settings), overwrite=True, **search)
    log = results.read_csv(out / "log.csv")
    return {**_open_loop_metrics(summary), "curve_x": log["evals"], "curve_y": log["best_loss"]}


def _open_loop_metrics(summary: dict) -> dict[str, Any]:
    return {
        "loss": summary["best_loss"],
        "initial_loss": summary["initial_loss"],
        "replay_loss": summary["replay_loss"],
    }


def _train(spec: EnvSpec, out: Path, settings: dict, config: dict) -> dict[str, Any]:
    from policies import rl

    hyper = {k: settings[k] for k in ("n_steps", "batch_size") if settings.get(k) is not None}
    options = {
        "timesteps": settings["timesteps"],
        "num_envs": settings.get("num_envs", 1),
        "learning_rate": settings.get("learning_rate"),
        "hyperparameters": hyper,
        "eval_freq": settings.get("eval_freq"),
        "eval_episodes": settings.get("eval_episodes", 1),
        "time_budget": settings.get("time_budget"),
        "tensorboard": settings.get("tensorboard", False),
    }
    workers = int(settings.get("env_workers", 0))
    vec_env = None
    if workers:
        from policies.dist.vec_env import RayVecEnv

        vec_env = RayVecEnv(
            spec,
            workers=workers,
            envs_per_worker=options["num_envs"],
            cpus_per_worker=max(1, int(config["worker_cpus"])),
            gpus_per_worker=config["worker_gpus"],
            deterministic=config["deterministic"],
        )
    result = rl.train(spec, settings["algo"], out=out, vec_env=vec_env, overwrite=True, **options)
    losses = [e.final_loss for e in result.evaluation]
    curve = result.curve
    return {
        "loss": float(sum(losses) / len(losses)),
        "initial_loss": float("nan"),
        "replay_loss": float("nan"),
        "curve_x": list(curve.get("timesteps", [])),
        "curve_y": list(curve.get("loss", [])),
    }


_RUNNERS = {"optimize": _optimize, "cmaes": _cmaes, "train": _train}


def run_trial(config: dict[str, Any]) -> None:
    """Tune's function trainable: one run of ``config["command"]``, its metrics reported once."""
    import ray
    from ray import tune

    WorkerRuntime(config["precision"], config["arch"], config["deterministic"], config["threads"]).start()
    spec = EnvSpec(config["task"], config["preset"], config["overrides"], config["precision"], config["seed"])
    out = Path(tune.get_context().get_trial_dir()) / "run"
    t0 = time.perf_counter()
    metrics = _RUNNERS[config["command"]](spec, out, dict(config["settings"]), config)
    metrics = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in metrics.items()}
    node = ray.get_runtime_context().get_node_id()
    tune.report({**metrics, "seconds": time.perf_counter() - t0, "node": node})


def _trial_space(cfg: SweepConfig) -> dict[str, Any]:
    """The param space plus what every trial needs to start its runtime and its actors."""
    gpus = cfg.resources.get("GPU", 0.0)
    space = cfg.param_space()
    space.update(
        arch="cuda" if gpus > 0 else "cpu",
        threads=None if cfg.deterministic or gpus > 0 else max(1, int(cfg.resources.get("CPU", 1))),
        worker_cpus=cfg.worker_resources.get("CPU", 1.0),
        worker_gpus=cfg.worker_resources.get("GPU", 0.0),
    )
    return space


def _is_uri(storage: str) -> bool:
    return "://" in storage


def run_sweep(
    cfg: SweepConfig,
    *,
    address: str | None = None,
    num_cpus: int | None = None,
    fresh: bool = False,
    verbose: int = 1,
) -> SweepResult:
    """Run (or resume) the sweep ``cfg`` on Ray and write its results table and plots.

    Args:
        cfg: a checked sweep (:func:`policies.dist.config.load_sweep`).
        address: a running Ray cluster (``auto``, ``HOST:PORT``); None starts a local instance.
        num_cpus: CPUs of the local instance (default: all of this machine's).
        fresh: discard an earlier run of the sweep instead of resuming it.
        verbose: Tune's console output (0 silent, 1 status, 2 trial results).

    Raises:
        ValueError: the cluster cannot give a trial its resources, or the sweep file differs
            from the one an earlier run of this experiment used.
    """
    from ray import tune
    from ray.tune.search.basic_variant import BasicVariantGenerator

    connect(address, num_cpus)
    check_resources(cfg)
    storage = cfg.storage if _is_uri(cfg.storage) else str(Path(cfg.storage).resolve())
    path = f"{storage.rstrip('/')}/{cfg.name}"
    local = None if _is_uri(storage) else Path(path)
    copy = None if local is None else local / f"{CONFIG_COPY}{cfg.path.suffix}"

    def resources(config: dict) -> tune.PlacementGroupFactory:
        return tune.PlacementGroupFactory(cfg.bundles(cfg.worker_count(config["settings"])))

    trainable = tune.with_resources(run_trial, resources)
    resumed = not fresh and tune.Tuner.can_restore(path)
    if resumed:
        if copy is not None and copy.is_file() and copy.read_text() != cfg.path.read_text():
            raise ValueError(
                f"sweep config {cfg.path} differs from the one {path} was started with ({copy}); "
                "run it with --fresh, or give it another name"
            )
        tuner = tune.Tuner.restore(path, trainable=trainable, resume_unfinished=True, restart_errored=True)
    else:
        if fresh and local is not None and local.exists():
            shutil.rmtree(local)
        if cfg.searcher == "optuna":
            from ray.tune.search.optuna import OptunaSearch

            search = OptunaSearch(metric="loss", mode="min", seed=0)
        else:
            search = BasicVariantGenerator(random_state=0)
        varies = {"precision", "deterministic"} & {a.split(".")[0] for a in cfg.axes}
        tuner = tune.Tuner(
            trainable,
            param_space=_trial_space(cfg),
            tune_config=tune.TuneConfig(
                metric="loss",
                mode="min",
                num_samples=cfg.samples,
                search_alg=search,
                max_concurrent_trials=cfg.max_concurrent or None,
                reuse_actors=not varies,
            ),
            run_config=tune.RunConfig(
                name=cfg.name,
                storage_path=storage,
                failure_config=tune.FailureConfig(max_failures=cfg.max_failures),
                sync_config=tune.SyncConfig(sync_artifacts=True),
                verbose=verbose,
            ),
        )
        if copy is not None:
            copy.parent.mkdir(parents=True, exist_ok=True)
            copy.write_text(cfg.path.read_text())
    # Tune saves the experiment state (and copies finished trials' results to storage) at most
    # this often [s]; its default, at least 10 s, would let a hard kill lose finished trials.
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", str(STATE_PERIOD_S))
    grid = tuner.fit()
    rows = results.collect(grid, cfg)
    out = local if local is not None else Path(cfg.name)
    table = results.write_table(rows, out)
    plots = results.plot_tasks(rows, cfg, out)
    return SweepResult(path=out, rows=rows, table=table, plots=plots, resumed=resumed)
