"""Open-loop trajectory optimization by gradient descent through the differentiable simulator.

FluidLab's gradient-based trajectory optimization (Xian et al., ICLR 2023, Sec. 5): minimize the
task loss L(a_1..T) of a full episode over the open-loop action sequence with Adam, the gradient
coming from the simulator's reverse-mode differentiation (``env.unwrapped.differentiable_rollout``,
MLS-MPM adjoint as in DiffTaichi / PlasticineLab).

Parameterization: ``actions (T, A) = squash(basis (T, K) @ z (K, A))`` where ``basis`` is the
identity (``per-step``, K = T), piecewise-linear hat functions on K evenly spaced knots
(``linear``) or the natural cubic spline through K knots (``spline``; column k of the basis is
scipy's interpolating spline of the k-th unit knot vector, since the spline is linear in the
knot values), and ``squash`` is
``tanh`` (smooth, never saturates exactly) or ``clamp`` to [-1, 1] (zero gradient outside).

Replay relation (what makes saved trajectories reproducible): ``differentiable_rollout`` of a
full-horizon action sequence returns ``trajectory_loss``, which by default
(:meth:`tasks.base.ParticleTask.trajectory_loss`) is the state loss of the final state - exactly
the env's ``info["loss"]`` after the last step of the episode reset with the same seed and driven
by the same actions. The optimizer therefore always optimizes T = horizon steps, and the saved
loss is checked against a replay in the env (equal up to round-off, both paths run the same
kernels; a task that overrides ``trajectory_loss`` with a running cost breaks this by design).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from engine.state import SimulationDiverged
from policies.common import PARAMETERIZATIONS, SQUASHES

OPTIMIZERS = {"adam": torch.optim.Adam, "sgd": torch.optim.SGD, "rmsprop": torch.optim.RMSprop}
#: Consecutive iterations with a non-finite loss or gradient after which :func:`optimize` gives up.
MAX_FAILURES = 4


def basis_matrix(kind: str, horizon: int, knots: int) -> np.ndarray:
    """(T, K) float64 matrix mapping knot values to per-step values.

    Args:
        kind: ``per-step`` (identity, K = T, ``knots`` ignored), ``linear`` (hat functions) or
            ``spline`` (natural cubic spline); knots evenly spaced over steps 0..T-1.
        horizon: T >= 1.
        knots: K, 2 <= K <= T for ``linear``/``spline``.
    """
    if kind not in PARAMETERIZATIONS:
        raise ValueError(f"parameterization must be one of {PARAMETERIZATIONS}, got {kind!r}")
    if horizon < 1:
        raise ValueError(f"horizon must be >= 1, got {horizon}")
    if kind == "per-step":
        return np.eye(horizon)
    if not 2 <= knots <= horizon:
        raise ValueError(f"{kind} needs 2 <= knots <= horizon ({horizon}), got {knots}")
    steps = np.arange(horizon, dtype=np.float64)
    where = np.linspace(0.0, horizon - 1.0, knots)
    unit = np.eye(knots)
    if kind == "linear":
        return np.stack([np.interp(steps, where, unit[k]) for k in range(knots)], axis=1)
    from scipy.interpolate import CubicSpline

    return CubicSpline(where, unit, bc_type="natural")(steps)


class ActionParameterization:
    """Open-loop actions from unconstrained parameters: ``squash(basis @ z)``.

    Args:
        horizon: T, env steps.
        action_dim: A.
        kind: one of :data:`PARAMETERIZATIONS`.
        knots: K for ``linear`` / ``spline``.
        squash: ``tanh`` or ``clamp``.
    """

    def __init__(self, horizon: int, action_dim: int, kind: str = "per-step", knots: int = 8, squash: str = "tanh"):
        if squash not in SQUASHES:
            raise ValueError(f"squash must be one of {SQUASHES}, got {squash!r}")
        if action_dim < 1:
            raise ValueError(f"action_dim must be >= 1, got {action_dim}")
        self.kind, self.squash = kind, squash
        self.horizon, self.action_dim = int(horizon), int(action_dim)
        self.basis = torch.from_numpy(basis_matrix(kind, self.horizon, int(knots)))
        self.knots = self.basis.shape[1]

    @property
    def shape(self) -> tuple[int, int]:
        """Shape (K, A) of the parameter tensor."""
        return (self.knots, self.action_dim)

    @property
    def size(self) -> int:
        return self.knots * self.action_dim

    def initial(self) -> torch.Tensor:
        """(K, A) float64 zeros: all actions 0 (the tool holds still)."""
        return torch.zeros(self.shape, dtype=torch.float64)

    def actions(self, z: torch.Tensor) -> torch.Tensor:
        """(T, A) actions in [-1, 1] for parameters ``z`` (K, A) (or flat (K*A,)); differentiable."""
        z = torch.as_tensor(z, dtype=torch.float64).reshape(self.shape)
        u = self.basis @ z
        return torch.tanh(u) if self.squash == "tanh" else torch.clamp(u, -1.0, 1.0)

    def describe(self) -> dict:
        return {"param": self.kind, "knots": self.knots, "squash": self.squash}


@dataclass
class OptimizeResult:
    """Outcome of :func:`optimize`.

    Attributes:
        actions: (T, A) float64 best action sequence found.
        loss: its loss (the lowest evaluated).
        initial_loss: loss of the initial parameters (all-zero actions).
        history: one dict per iteration: iter, loss, best_loss, grad_norm (before clipping), lr,
            iter_s, time_s (loss and grad_norm are NaN for a failed iteration).
        stopped: why it stopped ("iters", "time", "non-finite", "interrupted").
        state: what :func:`optimize` needs to continue the search (its ``resume`` argument):
            parameters, optimizer state, best so far, failure count and history; tensors and
            plain Python values only (``torch.load(weights_only=True)`` reads it back).
    """

    actions: np.ndarray
    loss: float
    initial_loss: float
    history: list[dict] = field(default_factory=list)
    stopped: str = "iters"
    state: dict = field(default_factory=dict)


def optimize(
    env,
    parameterization: ActionParameterization,
    *,
    iters: int,
    lr: float = 0.1,
    optimizer: str = "adam",
    clip: float | None = 1.0,
    seed: int | None = 0,
    time_budget: float | None = None,
    callback: Callable[[dict], None] | None = None,
    progress: bool = False,
    stop: Callable[[], bool] | None = None,
    resume: dict | None = None,
) -> OptimizeResult:
    """Minimize the full-horizon task loss of ``env`` over open-loop actions.

    Each iteration runs ``differentiable_rollout`` (forward + backward) from the reset state of
    ``seed``, clips the gradient norm of the parameters to ``clip``
    (:func:`torch.nn.utils.clip_grad_norm_`; the logged norm is the one before clipping) and takes
    one optimizer step. An iteration whose rollout blows up (``SimulationDiverged``) or whose loss
    or gradient is non-finite (seen with f32 adjoints on Pouring at the full horizon, never in
    f64) takes no step: the parameters return to the last finite iterate and the learning rate is
    halved; after :data:`MAX_FAILURES` such iterations in a row the run stops.

    Args:
        env: a FluxLab env (``gymnasium.make``); it is reset with ``seed``.
        parameterization: maps parameters to (T, A) actions; T must equal the task horizon.
        iters: maximum iterations (forward + backward passes).
        lr: learning rate.
        optimizer: ``adam`` (default), ``sgd`` or ``rmsprop`` (torch.optim).
        clip: maximum gradient norm, None for no clipping.
        seed: reset seed.
        time_budget: stop after this many wall-clock seconds [s] (checked after each iteration).
        callback: called with each history row.
        progress: show a tqdm bar.
        stop: polled after each iteration; True ends the search there (``stopped="interrupted"``).
        resume: an earlier result's :attr:`OptimizeResult.state`; the search continues from it
            (same optimizer) until the history holds ``iters`` iterations.

    Returns:
        An :class:`OptimizeResult` with the lowest finite loss seen.
    """
    from tqdm import tqdm

    base = env.unwrapped
    if parameterization.horizon != base.horizon:
        raise ValueError(
            f"the parameterization has {parameterization.horizon} steps but the task horizon is {base.horizon}; "
            "optimize full episodes so the loss equals the env's final loss"
        )
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {sorted(OPTIMIZERS)}, got {optimizer!r}")
    if iters < 1 or not lr > 0:
        raise ValueError(f"need iters >= 1 and lr > 0, got iters={iters}, lr={lr}")
    env.reset(seed=seed)
    z = parameterization.initial().requires_grad_(True)
    opt = OPTIMIZERS[optimizer]([z], lr=lr)
    max_norm = math.inf if clip is None else float(clip)
    best_loss, best_actions, initial_loss = math.inf, None, math.nan
    last_good = z.detach().clone()
    failures = 0
    history: list[dict] = []
    if resume is not None:
        with torch.no_grad():
            z.copy_(resume["z"])
        opt.load_state_dict(resume["optimizer"])
        best_loss, initial_loss = float(resume["best_loss"]), float(resume["initial_loss"])
        best_actions = resume["best_actions"].numpy().astype(np.float64)
        last_good, failures = resume["last_good"].clone(), int(resume["failures"])
        history = [dict(row) for row in resume["history"]]
    stopped = "iters"
    start = time.perf_counter() - (history[-1]["time_s"] if history else 0.0)
    bar = tqdm(range(len(history), iters), desc="optimize", unit="iter", disable=not progress)
    for it in bar:
        t0 = time.perf_counter()
        opt.zero_grad()
        actions = parameterization.actions(z)
        try:
            loss = base.differentiable_rollout(actions)
            loss.backward()
            value = float(loss.detach())
            grad_norm = float(torch.nn.utils.clip_grad_norm_([z], max_norm))
        except SimulationDiverged:
            value, grad_norm = math.nan, math.nan
        if it == 0:
            initial_loss = value
        lr_now = opt.param_groups[0]["lr"]
        if math.isfinite(value) and math.isfinite(grad_norm):
            failures = 0
            if value < best_loss:
                best_loss, best_actions = value, actions.detach().cpu().numpy().astype(np.float64)
            last_good = z.detach().clone()
            opt.step()
        else:
            # A blow-up or a non-finite adjoint: go back to the last parameters with a finite
            # loss and gradient and halve the step size (the optimizer's state is kept).
            failures += 1
            with torch.no_grad():
                z.copy_(last_good)
            for group in opt.param_groups:
                group["lr"] *= 0.5
        now = time.perf_counter()
        row = {
            "iter": it,
            "loss": value,
            "best_loss": best_loss,
            "grad_norm": grad_norm,
            "lr": lr_now,
            "iter_s": now - t0,
            "time_s": now - start,
        }
        history.append(row)
        bar.set_postfix(loss=f"{value:.4g}", best=f"{best_loss:.4g}")
        if callback is not None:
            callback(row)
        if failures >= MAX_FAILURES:
            stopped = "non-finite"
            break
        if time_budget is not None and now - start >= time_budget:
            stopped = "time"
            break
        if stop is not None and stop():
            stopped = "interrupted"
            break
    bar.close()
    if best_actions is None:
        raise RuntimeError(f"optimization produced no finite loss and gradient (first loss {initial_loss})")
    state = {
        "z": z.detach().clone(),
        "optimizer": opt.state_dict(),
        "best_loss": best_loss,
        "initial_loss": initial_loss,
        "best_actions": torch.from_numpy(best_actions),
        "last_good": last_good,
        "failures": failures,
        "history": history,
    }
    return OptimizeResult(
        actions=best_actions, loss=best_loss, initial_loss=initial_loss, history=history, stopped=stopped, state=state
    )
