"""torch.autograd bridge for the pressure Poisson solve with an implicit adjoint.

Forward: x = A^+ b, solved to the solver's tolerance by :class:`engine.linsolve.PoissonSolver`
(any method). Backward: A is symmetric, so dL/db = A^+ dL/dx is one more solve of the same
system with the same solver and preconditioner; no solver iteration is recorded on the tape
(implicit differentiation of A x = b, e.g. Blondel et al., "Efficient and Modular Implicit
Differentiation", NeurIPS 2022, Sec. 2). On pure-Neumann components both the right-hand side and
the solution are projected to zero mean, i.e. A^+ is the pseudo-inverse restricted to fluid
cells, and the same projection applies to the adjoint, so the gradient is exact up to the
tolerance. The gradient with respect to b at non-fluid cells is zero.

Conventions: b, x are (B, nx, ny, nz) tensors of the solver's dtype. The lead merges this file
into ``engine/autograd.py``.
"""

from __future__ import annotations

import torch

from engine.linsolve import PoissonSolver


class PoissonSolve(torch.autograd.Function):
    """x = PoissonSolve.apply(b, solver, x0): differentiable in b via the implicit adjoint.

    ``solver.last`` holds the forward solve's :class:`~engine.linsolve.SolveResult` after the
    forward call and the adjoint's after backward; non-convergence raises
    :class:`~engine.linsolve.ConvergenceError` in either direction.
    """

    @staticmethod
    def forward(ctx, b: torch.Tensor, solver: PoissonSolver, x0: torch.Tensor | None = None):
        res = solver.solve(b.detach(), None if x0 is None else x0.detach())
        ctx.solver = solver
        ctx.forward_result = res
        return res.x

    @staticmethod
    def backward(ctx, grad_x: torch.Tensor):
        res = ctx.solver.solve(grad_x.detach().contiguous())
        return res.x, None, None


def poisson_solve(b: torch.Tensor, solver: PoissonSolver, x0: torch.Tensor | None = None):
    """Functional form of :class:`PoissonSolve`."""
    return PoissonSolve.apply(b, solver, x0)
