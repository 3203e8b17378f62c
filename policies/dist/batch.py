"""Losses of many open-loop candidates from one batched env: B candidates per batched rollout.

CMA-ES (:mod:`policies.cmaes`) scores each candidate parameter vector ``z`` by the full-horizon
task loss of the actions ``squash(basis @ z)`` from the reset state of one seed. Here B
candidates run at once, one per scene of a :class:`envs.vector.FluxLabVectorEnv` (the engine's
batch axis, one kernel launch per stage for all scenes): every scene is reset with the same seed,
scene i plays candidate i's actions for the whole horizon, and the candidate's loss is the
scene's ``info["loss"]`` after the last step; a scene that diverged scores
:data:`policies.cmaes.DIVERGED_LOSS`. A population of n candidates takes ceil(n / B) batched
rollouts; the last batch is padded with copies of its first candidate, whose losses are dropped.

The env's last-step loss is the task's ``state_loss`` of the final state, the quantity
``differentiable_rollout`` returns for a full horizon (:meth:`tasks.base.ParticleTask.trajectory_loss`).
With the deterministic runtime (one CPU thread, :mod:`engine.runtime`) each scene's numbers do not
depend on its neighbours, so the losses are bitwise those of :func:`policies.cmaes.rollout_loss`
one candidate at a time; multi-threaded, they agree to rounding.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from envs import EnvSpec
from policies.cmaes import DIVERGED_LOSS
from policies.trajopt import ActionParameterization


class BatchEvaluator:
    """Full-horizon losses of open-loop candidates, ``batch_size`` at a time, in this process.

    Args:
        spec: the env; every rollout starts from the reset state of ``spec.seed``.
        parameterization: maps a flat parameter vector to (T, A) actions, T the task horizon.
        batch_size: scenes of the batched env (candidates per batched rollout).

    Raises:
        ValueError: ``batch_size`` < 1, or a parameterization whose horizon or action size
            differs from the task's.
    """

    def __init__(self, spec: EnvSpec, parameterization: ActionParameterization, batch_size: int):
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
        self.spec = spec
        self.parameterization = parameterization
        self.batch_size = batch_size
        self.venv = spec.make_vec(batch_size)
        task = self.venv.unwrapped.task
        if (parameterization.horizon, parameterization.action_dim) != (task.horizon, task.action_dim):
            self.venv.close()
            raise ValueError(
                f"the parameterization is {parameterization.horizon} steps x {parameterization.action_dim} "
                f"actions but task {spec.task} has {task.horizon} x {task.action_dim}"
            )

    def __call__(self, candidates: Sequence[np.ndarray]) -> list[float]:
        """Loss of each candidate (flat parameter vectors), in order."""
        losses: list[float] = []
        B = self.batch_size
        for start in range(0, len(candidates), B):
            chunk = list(candidates[start : start + B])
            losses.extend(self._rollout(chunk + [chunk[0]] * (B - len(chunk)))[: len(chunk)])
        return losses

    def _rollout(self, batch: list[np.ndarray]) -> list[float]:
        """One batched rollout of exactly B candidates."""
        with torch.no_grad():
            actions = np.stack(
                [self.parameterization.actions(torch.as_tensor(np.array(z, dtype=np.float64))).numpy() for z in batch]
            )
        self.venv.reset(seed=[self.spec.seed] * self.batch_size)
        # A scene's loss is taken at the step its episode ends (the horizon, a terminal state or a
        # blow-up); the env would reset it on the following step.
        final = np.full(self.batch_size, np.nan)
        diverged = np.zeros(self.batch_size, dtype=bool)
        for t in range(actions.shape[1]):
            _, _, terminated, truncated, info = self.venv.step(actions[:, t])
            ended = (np.asarray(terminated) | np.asarray(truncated)) & np.isnan(final)
            final[ended] = np.asarray(info["loss"])[ended]
            diverged |= np.asarray(info["diverged"], dtype=bool) & ended
        final = np.where(np.isnan(final), np.asarray(info["loss"]), final)
        return [
            DIVERGED_LOSS if bad or not math.isfinite(value) else float(value)
            for value, bad in zip(final, diverged, strict=True)
        ]

    def close(self) -> None:
        self.venv.close()
