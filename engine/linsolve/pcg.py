"""Krylov solvers for the pressure Poisson system: (preconditioned) conjugate gradients and the
conjugate direction method used with the learned preconditioner.

- PCG: Saad, "Iterative Methods for Sparse Linear Systems", 2nd ed., Alg. 9.1. The
  preconditioner must be symmetric positive (semi-)definite: identity (CG), Jacobi, MIC(0)
  (:mod:`engine.linsolve.mic0`) or the symmetric multigrid V-cycle (MGPCG, McAdams et al. 2010).
- Conjugate directions: Kaneda et al., "A Deep Conjugate Direction Method for Iteratively Solving
  Linear Systems", ICML 2023, Alg. 2: the search direction is d = f(r) for a (possibly
  non-symmetric) approximation f of A^-1, A-orthogonalized against the last ``n_keep``
  directions, followed by the exact line search alpha = d.r / d.A d. Any scale of f is harmless.

Conventions: vectors are (B, nx, ny, nz) tensors (see :mod:`engine.linsolve.operator`); the batch
items are solved together with per-item step sizes; an item stops updating once its relative
residual ||b - A x|| / ||b|| reaches ``rtol`` (or ||b - A x|| <= ``atol``). A solve returns a
:class:`SolveResult`; non-convergence raises :class:`ConvergenceError` unless ``check=False``,
in which case the result says ``converged=False``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from engine.linsolve.operator import PoissonSystem, bdot


class ConvergenceError(RuntimeError):
    """A solve did not reach its tolerance within ``max_iter`` iterations."""

    def __init__(self, message: str, result: SolveResult):
        super().__init__(message)
        self.result = result


@dataclass
class SolveResult:
    """Outcome of one (batched) solve.

    Attributes:
        x: (B, nx, ny, nz) solution.
        iterations: iterations run (the slowest batch item).
        residual: (B,) final relative residual ||b - A x|| / ||b|| (0 where b = 0).
        converged: True when every batch item reached the tolerance.
        history: max-over-batch relative residual after each iteration (index 0: initial).
        seconds: wall time of the solve (setup of the preconditioner excluded).
    """

    x: torch.Tensor
    iterations: int
    residual: torch.Tensor
    converged: bool
    history: list[float] = field(default_factory=list)
    seconds: float = 0.0


def _check_rhs(system: PoissonSystem, b: torch.Tensor, name: str = "b") -> None:
    if tuple(b.shape) != system.shape:
        raise ValueError(f"{name} must have shape {system.shape}, got {tuple(b.shape)}")
    if not torch.isfinite(b).all():
        raise ValueError(f"{name} contains NaN or Inf")


def _finish(x, it, rnorm, tol, safe, hist, t0, max_iter, check, method):
    ok = bool((rnorm <= tol).all())
    res = SolveResult(x, it, rnorm / safe, ok, hist, time.perf_counter() - t0)
    if check and not ok:
        raise ConvergenceError(
            f"{method} did not converge: relative residual {float((rnorm / safe).max()):.3e} "
            f"above tolerance after {it} iterations (max_iter={max_iter})",
            res,
        )
    return res


def _init(system, b, x0, atol):
    """Common setup: projected rhs, initial x and residual, norms and tolerance per item."""
    B = b.shape[0]
    b = (b * system.fluid).contiguous()
    system.project_null_(b)
    bnorm = bdot(b, b).sqrt()
    if x0 is None:
        x = torch.zeros_like(b)
        r = b.clone()
    else:
        _check_rhs(system, x0, "x0")
        x = (x0.to(b.dtype) * system.fluid).contiguous()
        system.project_null_(x)
        r = torch.empty_like(b)
        system.matvec(x, out=r)
        torch.sub(b, r, out=r)
    safe = torch.where(bnorm > 0, bnorm, torch.ones_like(bnorm))
    return B, b, x, r, bnorm, safe


@torch.no_grad()
def pcg(
    system: PoissonSystem,
    b: torch.Tensor,
    precond: Callable[[torch.Tensor], torch.Tensor] | None = None,
    x0: torch.Tensor | None = None,
    rtol: float = 1e-6,
    atol: float = 0.0,
    max_iter: int = 2000,
    check: bool = True,
    method: str = "pcg",
) -> SolveResult:
    """Preconditioned conjugate gradients for A x = b.

    Args:
        system: the operator.
        b: (B, nx, ny, nz) right-hand side (entries at non-fluid cells are ignored; the
            null-space component is removed).
        precond: z = M^-1 r, symmetric positive; None for plain CG.
        x0: warm start (e.g. the previous pressure).
        rtol, atol: stop when ||r|| <= max(rtol ||b||, atol) per batch item.
        max_iter: iteration cap.
        check: raise :class:`ConvergenceError` on non-convergence.
        method: name used in messages.
    """
    _check_rhs(system, b)
    t0 = time.perf_counter()
    B, b, x, r, bnorm, safe = _init(system, b, x0, atol)
    tol = torch.maximum(rtol * bnorm, torch.full_like(bnorm, atol))
    rnorm = bdot(r, r).sqrt()
    hist = [float((rnorm / safe).max())]
    active = rnorm > tol
    it = 0
    if not active.any():
        return _finish(x, 0, rnorm, tol, safe, hist, t0, max_iter, check, method)
    z = r.clone() if precond is None else precond(r)
    if precond is not None:
        system.project_null_(z)
    p = z.clone()
    rz = bdot(r, z)
    Ap = torch.empty_like(b)
    view = (B, 1, 1, 1)
    while it < max_iter:
        it += 1
        system.matvec(p, out=Ap)
        pAp = bdot(p, Ap)
        alpha = torch.where(active & (pAp > 0), rz / torch.where(pAp > 0, pAp, 1.0), 0.0)
        x.addcmul_(p, alpha.view(view))
        r.addcmul_(Ap, alpha.view(view), value=-1.0)
        if system.singular:
            system.project_null_(r)
        rnorm = bdot(r, r).sqrt()
        hist.append(float((rnorm / safe).max()))
        active = active & (rnorm > tol)
        if not active.any():
            break
        if precond is None:
            z.copy_(r)
        else:
            z = precond(r)
            system.project_null_(z)
        rz_new = bdot(r, z)
        beta = torch.where(active, rz_new / torch.where(rz != 0, rz, 1.0), 0.0)
        rz = rz_new
        p.mul_(beta.view(view)).add_(z)
    return _finish(x, it, rnorm, tol, safe, hist, t0, max_iter, check, method)


@torch.no_grad()
def conjugate_directions(
    system: PoissonSystem,
    b: torch.Tensor,
    direction: Callable[[torch.Tensor], torch.Tensor],
    x0: torch.Tensor | None = None,
    rtol: float = 1e-6,
    atol: float = 0.0,
    max_iter: int = 500,
    n_keep: int = 4,
    check: bool = True,
    method: str = "dcdm",
) -> SolveResult:
    """Deep conjugate direction method (Kaneda et al. 2023, Alg. 2) with search directions f(r).

    Args:
        direction: d = f(r), an approximation of A^-1 r up to scale (need not be symmetric).
        n_keep: number of previous directions the new one is A-orthogonalized against.
        Other arguments as in :func:`pcg`.
    """
    _check_rhs(system, b)
    t0 = time.perf_counter()
    B, b, x, r, bnorm, safe = _init(system, b, x0, atol)
    tol = torch.maximum(rtol * bnorm, torch.full_like(bnorm, atol))
    rnorm = bdot(r, r).sqrt()
    hist = [float((rnorm / safe).max())]
    active = rnorm > tol
    view = (B, 1, 1, 1)
    dirs: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []  # (d, A d, d.A d)
    it = 0
    while active.any() and it < max_iter:
        it += 1
        d = direction(r)
        d = d * system.fluid
        system.project_null_(d)
        for dj, Adj, dAdj in dirs:
            coef = bdot(d, Adj) / torch.where(dAdj > 0, dAdj, 1.0)
            d.addcmul_(dj, coef.view(view), value=-1.0)
        Ad = system.matvec(d, out=torch.empty_like(d))
        dAd = bdot(d, Ad)
        alpha = torch.where(active & (dAd > 0), bdot(d, r) / torch.where(dAd > 0, dAd, 1.0), 0.0)
        x.addcmul_(d, alpha.view(view))
        r.addcmul_(Ad, alpha.view(view), value=-1.0)
        if system.singular:
            system.project_null_(r)
        rnorm = bdot(r, r).sqrt()
        hist.append(float((rnorm / safe).max()))
        active = active & (rnorm > tol)
        dirs.append((d, Ad, dAd))
        if len(dirs) > n_keep:
            dirs.pop(0)
    return _finish(x, it, rnorm, tol, safe, hist, t0, max_iter, check, method)
