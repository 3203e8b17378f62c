"""CMA-ES over open-loop action sequences (gradient-free baseline of FluidLab, Xian et al., ICLR 2023).

Covariance Matrix Adaptation Evolution Strategy (Hansen & Ostermeier, Evol. Comput. 2001; the
``cma`` package's implementation) minimizes the same full-horizon task loss as
:mod:`policies.trajopt` over the same parameters ``z`` (K knots x A action dims, actions =
``squash(basis @ z)``). A candidate's loss is ``differentiable_rollout`` evaluated under
``torch.no_grad()`` (forward only, no checkpoints kept), which equals the env's final
``info["loss"]`` of a replay from the same reset seed (see :mod:`policies.trajopt`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from engine.state import SimulationDiverged
from policies.trajopt import ActionParameterization

#: Loss assigned to a candidate whose rollout blew up (SimulationDiverged or NaN/Inf), so CMA-ES ranks it last.
DIVERGED_LOSS = 1e30


@dataclass
class CMAResult:
    """Outcome of :func:`cmaes`.

    Attributes:
        actions: (T, A) float64 best action sequence evaluated.
        loss: its loss.
        initial_loss: loss of the mean at start (all-zero actions).
        history: one dict per generation: generation, evals, loss (generation best), mean_loss
            (generation mean), best_loss, sigma, time_s.
        evals: loss evaluations used (including the initial one).
        stopped: why it stopped ("evals", "time", "interrupted", or CMA-ES's own termination
            criterion).
        state: what :func:`cmaes` needs to continue (its ``resume`` argument): the search
            distribution's mean and step size, the best parameters and loss, the evaluations
            used and the history; numpy arrays and plain Python values.
    """

    actions: np.ndarray
    loss: float
    initial_loss: float
    history: list[dict] = field(default_factory=list)
    evals: int = 0
    stopped: str = "evals"
    state: dict = field(default_factory=dict)


def rollout_loss(env, parameterization: ActionParameterization, z: np.ndarray) -> float:
    """Full-horizon loss of parameters ``z`` (flat or (K, A)) from the env's last reset state, no gradient."""
    with torch.no_grad():
        actions = parameterization.actions(torch.as_tensor(np.asarray(z, dtype=np.float64)))
        try:
            value = float(env.unwrapped.differentiable_rollout(actions))
        except SimulationDiverged:
            return DIVERGED_LOSS
    return value if math.isfinite(value) else DIVERGED_LOSS


def cmaes(
    env,
    parameterization: ActionParameterization,
    *,
    evals: int,
    sigma: float = 0.5,
    popsize: int | None = None,
    seed: int = 0,
    time_budget: float | None = None,
    callback: Callable[[dict], None] | None = None,
    progress: bool = False,
    evaluate: Callable[[list[np.ndarray]], Sequence[float]] | None = None,
    stop: Callable[[], bool] | None = None,
    resume: dict | None = None,
) -> CMAResult:
    """Minimize the full-horizon task loss of ``env`` with CMA-ES from zero actions.

    Args:
        env: a FluxLab env; it is reset with ``seed`` (the start state all candidates share).
            May be None when ``evaluate`` is given.
        parameterization: maps parameters to (T, A) actions; T must equal the task horizon.
        evals: budget of loss evaluations; whole generations only, so the run stops before a
            generation that would exceed it (at least one generation runs).
        sigma: initial step size in parameter space (tanh squash: 0.5 moves actions by ~0.46).
        popsize: candidates per generation (default: cma's 4 + 3 ln(n)).
        seed: env reset seed and CMA-ES sampling seed (cma's seed ``seed + 1``; 0 would mean
            "from the clock" there).
        time_budget: stop after this many wall-clock seconds [s] (checked per generation).
        callback: called with each history row.
        progress: show a tqdm bar over evaluations.
        evaluate: losses of a list of flat parameter vectors, in their order, each a full-horizon
            rollout from the reset state of ``seed`` (e.g. Ray actors,
            :class:`policies.dist.population.PopulationEvaluator`); it scores the initial mean and
            every generation. Default: :func:`rollout_loss` in ``env``, one candidate at a time.
        stop: polled after each generation; True ends the search there (``stopped="interrupted"``).
        resume: an earlier result's :attr:`CMAResult.state`; the search restarts from its mean
            and step size (the covariance starts again from the identity) and counts its
            evaluations against ``evals``.
    """
    import cma
    from tqdm import tqdm

    if env is None and evaluate is None:
        raise ValueError("cmaes needs an env or an evaluate function")
    if env is not None and parameterization.horizon != env.unwrapped.horizon:
        raise ValueError(
            f"the parameterization has {parameterization.horizon} steps but the task horizon is "
            f"{env.unwrapped.horizon}"
        )
    if evals < 2 or not sigma > 0:
        raise ValueError(f"need evals >= 2 and sigma > 0, got evals={evals}, sigma={sigma}")
    if evaluate is None:
        env.reset(seed=seed)

        def evaluate(candidates: list[np.ndarray]) -> list[float]:
            return [rollout_loss(env, parameterization, x) for x in candidates]

    x0 = parameterization.initial().numpy().ravel()
    if x0.size == 1:
        raise ValueError("CMA-ES needs at least 2 parameters")
    options = {"seed": int(seed) + 1, "verbose": -9}
    if popsize is not None:
        options["popsize"] = int(popsize)
    mean, sigma_now, history = x0, sigma, []
    if resume is not None:
        mean, sigma_now = np.asarray(resume["mean"], dtype=np.float64), float(resume["sigma"])
        history = [dict(row) for row in resume["history"]]
        options["seed"] += len(history)  # fresh samples, reproducible
    es = cma.CMAEvolutionStrategy(mean, sigma_now, options)
    start = time.perf_counter() - (history[-1]["time_s"] if history else 0.0)
    if resume is None:
        initial_loss = float(evaluate([x0])[0])
        best_loss, best_z, used = initial_loss, x0.copy(), 1
    else:
        initial_loss, best_loss = float(resume["initial_loss"]), float(resume["best_loss"])
        best_z, used = np.asarray(resume["best_z"], dtype=np.float64), int(resume["used"])
    stopped = "evals"
    # Whole generations only: the bar's total is what the budget allows (one generation at least).
    generations_left = (evals - used) // es.popsize if history else max((evals - used) // es.popsize, 1)
    planned = used + es.popsize * generations_left
    bar = tqdm(total=planned, initial=used, desc="cmaes", unit="eval", disable=not progress)
    generation = len(history)
    while True:
        if es.stop():
            stopped = ",".join(es.stop())
            break
        if generation > 0 and used + es.popsize > evals:
            break
        candidates = es.ask()
        losses = [float(v) for v in evaluate(candidates)]
        es.tell(candidates, losses)
        used += len(candidates)
        bar.update(len(candidates))
        k = int(np.argmin(losses))
        if losses[k] < best_loss:
            best_loss, best_z = float(losses[k]), np.asarray(candidates[k]).copy()
        generation += 1
        row = {
            "generation": generation,
            "evals": used,
            "loss": float(losses[k]),
            "mean_loss": float(np.mean(losses)),
            "best_loss": best_loss,
            "sigma": float(es.sigma),
            "time_s": time.perf_counter() - start,
        }
        history.append(row)
        bar.set_postfix(best=f"{best_loss:.4g}", sigma=f"{es.sigma:.3g}")
        if callback is not None:
            callback(row)
        if time_budget is not None and row["time_s"] >= time_budget:
            stopped = "time"
            break
        if stop is not None and stop():
            stopped = "interrupted"
            break
    bar.close()
    with torch.no_grad():
        actions = parameterization.actions(torch.as_tensor(best_z)).numpy().astype(np.float64)
    state = {
        "mean": np.asarray(es.mean, dtype=np.float64).copy(),
        "sigma": float(es.sigma),
        "best_z": best_z,
        "best_loss": best_loss,
        "initial_loss": initial_loss,
        "used": used,
        "history": history,
    }
    return CMAResult(
        actions=actions,
        loss=best_loss,
        initial_loss=initial_loss,
        history=history,
        evals=used,
        stopped=stopped,
        state=state,
    )
