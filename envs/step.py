"""What one env step reports after the task has simulated it, for B scenes at once.

Shared by :class:`envs.env.FluxLabEnv` (B = 1) and :class:`envs.vector.FluxLabVectorEnv`, so
both report the same quantities:

* reward = the sum of the task's reward terms (in the task's order), each a function of the
  loss before and after the step and the action (:meth:`tasks.base.Task.reward_terms`);
* a scene whose simulation blew up during the step (``diverged``) keeps its last observation
  and loss, gets reward 0 and every reward term 0, and neither terminates nor succeeds;
* a scene restarted in this step (the vector env's next-step autoreset) reports its first
  observation and loss, reward 0 and every reward term 0, does not terminate, and is never
  ``diverged``;
* ``info`` holds ``reward_<term>``, ``loss`` (after the step), ``success`` and ``diverged``,
  each a (B,) array.

Time limits and autoreset stay with the env classes (they differ: the single env has
Gymnasium's ``TimeLimit``, the vector env resets scenes itself).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass
class StepOutcome:
    """The per-scene results of one step.

    Attributes:
        obs: (B, D) float32 observations.
        loss: (B,) float64 task loss after the step (the last one for diverged scenes).
        reward: (B,) float64 rewards.
        terminated: (B,) bool.
        diverged: (B,) bool, the simulation blew up in this step.
        info: ``reward_<term>``, ``loss``, ``success``, ``diverged`` as (B,) arrays.
    """

    obs: np.ndarray
    loss: np.ndarray
    reward: np.ndarray
    terminated: np.ndarray
    diverged: np.ndarray
    info: dict[str, np.ndarray]

    def scene_info(self, index: int) -> dict[str, Any]:
        """``info`` of scene ``index`` as Python scalars (float rewards and loss, bool flags)."""
        return {key: value[index].item() for key, value in self.info.items()}


def finish_step(
    task,
    last_obs: np.ndarray,
    last_loss: np.ndarray,
    actions: np.ndarray,
    diverged: np.ndarray,
    restart: np.ndarray | None = None,
) -> StepOutcome:
    """Observe ``task`` after its step and apply the rules of the module docstring.

    Args:
        task: a :class:`tasks.base.Task` that has just stepped (and reset the ``restart`` scenes).
        last_obs: (B, D) observations before the step.
        last_loss: (B,) loss before the step.
        actions: (B, A) float64 actions the task stepped with.
        diverged: (B,) bool, scenes whose step blew up (the task's ``step`` result).
        restart: (B,) bool, scenes reset in this step instead of stepped (default: none).

    Returns:
        The :class:`StepOutcome`; its arrays are new (callers may keep them as the next
        ``last_obs`` / ``last_loss``).
    """
    restart = np.zeros(len(last_loss), dtype=bool) if restart is None else restart
    obs, loss = task.observe(), task.loss()
    terms = task.reward_terms(last_loss, loss, actions)
    reward = np.sum(np.stack(list(terms.values())), axis=0)
    success = task.success(loss)
    terminated = task.terminated().copy()
    diverged = diverged & ~restart
    obs[diverged], loss[diverged] = last_obs[diverged], last_loss[diverged]
    silent = diverged | restart
    reward[silent] = 0.0
    terminated &= ~silent
    success &= ~diverged
    info = {f"reward_{k}": np.where(silent, 0.0, v) for k, v in terms.items()}
    info.update(loss=loss.copy(), success=success, diverged=diverged)
    return StepOutcome(
        obs=obs, loss=loss, reward=reward.astype(np.float64), terminated=terminated, diverged=diverged, info=info
    )
