"""CMA-ES whose populations are evaluated by Ray actors, each holding a batched env of B scenes.

Hansen's CMA-ES (:func:`policies.cmaes.cmaes`, the ``cma`` package) asks for a population, the
candidates are scored, and it is told their losses. Here the scoring is spread over W Ray
actors: the population, in the order ``ask`` returned it, is cut into W contiguous chunks of
near-equal size (``numpy.array_split``); each actor scores its chunk with a
:class:`policies.dist.batch.BatchEvaluator` (B candidates per batched rollout) and the losses
are joined back in order, so the search sees exactly what the single-process loop would see.
Population size is therefore bounded by W x B scenes per round, not by one process.

Each actor is a separate worker process with its own Taichi runtime
(:class:`policies.dist.worker.WorkerRuntime`, its thread pool sized to the actor's CPUs). An
actor that dies is restarted by Ray and its call retried (scoring is a pure function of the
candidates), up to ``max_restarts`` times.

With the deterministic runtime the result (every loss, the best actions, the history) is
bitwise that of single-process :func:`policies.cmaes.cmaes` with the same seed; see
:mod:`policies.dist.batch`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import ray

from envs import EnvSpec
from policies.cmaes import CMAResult, cmaes
from policies.dist.batch import BatchEvaluator
from policies.dist.worker import WorkerRuntime
from policies.trajopt import ActionParameterization


class _PopulationWorker:
    """A Ray actor: one process, one runtime, one batched env."""

    def __init__(self, spec: EnvSpec, parameterization: ActionParameterization, batch_size: int, runtime):
        runtime.start()
        self.evaluator = BatchEvaluator(spec, parameterization, batch_size)

    def evaluate(self, candidates: list[np.ndarray]) -> list[float]:
        return self.evaluator(candidates)

    def node_id(self) -> str:
        return ray.get_runtime_context().get_node_id()


class PopulationEvaluator:
    """Scores CMA-ES populations on ``workers`` Ray actors of ``batch_size`` scenes each.

    Callable as ``evaluate(candidates) -> losses`` (the ``evaluate`` argument of
    :func:`policies.cmaes.cmaes`). Connects to the running Ray cluster (``ray.init`` first;
    otherwise Ray starts a local one). Use as a context manager, or call :meth:`close`.

    Args:
        spec: the env; every rollout starts from the reset state of ``spec.seed``.
        parameterization: maps parameters to (T, A) actions, T the task horizon.
        workers: actors.
        batch_size: scenes per actor (candidates per batched rollout).
        cpus_per_worker: CPUs reserved for each actor (and its Taichi thread pool).
        gpus_per_worker: GPUs reserved for each actor (its engine then runs on CUDA).
        deterministic: one-thread bitwise-reproducible kernels in every actor (CPU only).
        max_restarts: how often Ray restarts a dead actor and retries its call.

    Raises:
        ValueError: ``workers``, ``batch_size`` or ``cpus_per_worker`` < 1, or a negative
            ``gpus_per_worker``.
    """

    def __init__(
        self,
        spec: EnvSpec,
        parameterization: ActionParameterization,
        *,
        workers: int,
        batch_size: int,
        cpus_per_worker: int = 1,
        gpus_per_worker: float = 0.0,
        deterministic: bool = False,
        max_restarts: int = 2,
    ):
        for name, value in (("workers", workers), ("batch_size", batch_size), ("cpus_per_worker", cpus_per_worker)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an int >= 1, got {value!r}")
        if not gpus_per_worker >= 0:
            raise ValueError(f"gpus_per_worker must be >= 0, got {gpus_per_worker!r}")
        arch = "cuda" if gpus_per_worker > 0 else "cpu"
        runtime = WorkerRuntime(spec.precision, arch, deterministic, None if deterministic else cpus_per_worker)
        actor = ray.remote(_PopulationWorker).options(
            num_cpus=cpus_per_worker, num_gpus=gpus_per_worker, max_restarts=max_restarts, max_task_retries=max_restarts
        )
        self.workers = [actor.remote(spec, parameterization, batch_size, runtime) for _ in range(workers)]
        self.batch_size = batch_size

    def __call__(self, candidates: Sequence[np.ndarray]) -> list[float]:
        """Losses of ``candidates`` (flat parameter vectors), in order."""
        chunks = [c for c in np.array_split(np.arange(len(candidates)), len(self.workers)) if len(c)]
        calls = [
            w.evaluate.remote([np.asarray(candidates[i]) for i in c])
            for w, c in zip(self.workers[: len(chunks)], chunks, strict=True)
        ]
        return [loss for part in ray.get(calls) for loss in part]

    def node_ids(self) -> list[str]:
        """The Ray node of each actor."""
        return ray.get([w.node_id.remote() for w in self.workers])

    def close(self) -> None:
        for w in self.workers:
            ray.kill(w)
        self.workers = []

    def __enter__(self) -> PopulationEvaluator:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def distributed_cmaes(
    spec: EnvSpec,
    parameterization: ActionParameterization,
    *,
    evals: int,
    workers: int,
    batch_size: int,
    sigma: float = 0.5,
    popsize: int | None = None,
    time_budget: float | None = None,
    callback: Callable[[dict], None] | None = None,
    progress: bool = False,
    cpus_per_worker: int = 1,
    gpus_per_worker: float = 0.0,
    deterministic: bool = False,
) -> CMAResult:
    """:func:`policies.cmaes.cmaes` from the reset state of ``spec.seed`` with its populations
    scored by a :class:`PopulationEvaluator`; arguments as those two."""
    with PopulationEvaluator(
        spec,
        parameterization,
        workers=workers,
        batch_size=batch_size,
        cpus_per_worker=cpus_per_worker,
        gpus_per_worker=gpus_per_worker,
        deterministic=deterministic,
    ) as evaluate:
        return cmaes(
            None,
            parameterization,
            evals=evals,
            sigma=sigma,
            popsize=popsize,
            seed=spec.seed,
            time_budget=time_budget,
            callback=callback,
            progress=progress,
            evaluate=evaluate,
        )
