"""Poisson solvers for the pressure projection (see the module docstrings for references).

- :mod:`engine.linsolve.operator` - matrix-free 7-point operator with FLUID/SOLID/AIR cell flags.
- :mod:`engine.linsolve.pcg` - CG/PCG and the deep conjugate direction method.
- :mod:`engine.linsolve.multigrid` - geometric multigrid V-cycle (MGPCG, McAdams et al. 2010).
- :mod:`engine.linsolve.mic0` - MIC(0) preconditioner (Taichi kernels).
- :mod:`engine.linsolve.learned` - learned multigrid preconditioner (Kaneda et al. 2023,
  Lan et al. 2024); :mod:`engine.linsolve.train` - its trainer.

:class:`PoissonSolver` sets a preconditioner up once per flag grid and solves any number of
right-hand sides with it (forward pressure solves and the implicit adjoint alike). Methods:
"cg", "jacobi" (Jacobi-PCG), "mic0" (MIC(0)-PCG), "mgpcg" (multigrid-PCG) and "learned" (the
conjugate direction method with the learned V-cycle). Vectors are (B, nx, ny, nz) tensors.
The liquid's free surface enters as the optional ghost-fluid diagonal term ``ghost``
(:mod:`engine.linsolve.operator`), which every method accepts.
"""

from __future__ import annotations

import time

import torch

from engine.linsolve.operator import AIR, FLUID, SOLID, PoissonSystem, as_flags
from engine.linsolve.pcg import ConvergenceError, SolveResult, conjugate_directions, pcg

METHODS = ("cg", "jacobi", "mic0", "mgpcg", "learned")

__all__ = [
    "AIR",
    "FLUID",
    "METHODS",
    "SOLID",
    "ConvergenceError",
    "PoissonSolver",
    "PoissonSystem",
    "SolveResult",
    "as_flags",
    "solve",
]


class PoissonSolver:
    """A Poisson system with a set-up preconditioner.

    Args:
        flags: (B, nx, ny, nz) or (nx, ny, nz) cell flags, or a :class:`PoissonSystem`.
        method: one of :data:`METHODS`.
        rtol: relative residual tolerance ||b - A x|| / ||b||.
        atol: absolute residual tolerance (0: unused).
        max_iter: iteration cap (default: 4 * max grid dimension + 200 for CG-like methods).
        dtype: float dtype of the system (must match the right-hand sides).
        model: a :class:`~engine.linsolve.learned.LearnedMG` for method "learned"
            (default: the shipped weights).
        n_keep: directions kept by the conjugate direction method.
        check: default of :meth:`solve`'s ``check`` (raise on non-convergence).
        ghost: optional (B, nx, ny, nz) ghost-fluid free-surface diagonal term (per FLUID cell the
            sum over its AIR faces of 1/theta - 1; see :mod:`engine.linsolve.operator`); only
            with raw flags (a :class:`PoissonSystem` carries its own).

    Attributes:
        setup_seconds: time spent building the preconditioner.
        last: the :class:`SolveResult` of the latest solve.
    """

    def __init__(
        self,
        flags,
        method: str = "mgpcg",
        rtol: float = 1e-6,
        atol: float = 0.0,
        max_iter: int | None = None,
        dtype: torch.dtype = torch.float64,
        model=None,
        n_keep: int = 2,
        check: bool = True,
        ghost=None,
    ):
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {method!r}")
        if not (0 < rtol < 1) and atol <= 0:
            raise ValueError(f"rtol must be in (0, 1), got {rtol}")
        if isinstance(flags, PoissonSystem):
            if ghost is not None:
                raise ValueError("ghost must be given to the PoissonSystem, not with one")
            self.system = flags
        else:
            self.system = PoissonSystem(flags, dtype, ghost=ghost)
        self.method, self.rtol, self.atol, self.n_keep = method, rtol, atol, n_keep
        self.check = check
        self.max_iter = max_iter if max_iter is not None else 4 * max(self.system.shape[1:]) + 200
        t0 = time.perf_counter()
        self.precond = _make_preconditioner(self.system, method, model)
        self.setup_seconds = time.perf_counter() - t0
        self.last: SolveResult | None = None

    def solve(
        self,
        b: torch.Tensor,
        x0: torch.Tensor | None = None,
        check: bool | None = None,
        rtol: float | None = None,
    ) -> SolveResult:
        """Solve A x = b (b: (B, nx, ny, nz)); raises ConvergenceError unless ``check=False``."""
        if b.dtype != self.system.dtype:
            raise ValueError(f"b has dtype {b.dtype}, the system {self.system.dtype}")
        rtol = self.rtol if rtol is None else rtol
        check = self.check if check is None else check
        if self.method == "learned":
            res = conjugate_directions(
                self.system,
                b,
                self.precond,
                x0,
                rtol,
                self.atol,
                self.max_iter,
                self.n_keep,
                check,
                "learned",
            )
        else:
            res = pcg(self.system, b, self.precond, x0, rtol, self.atol, self.max_iter, check, self.method)
        self.last = res
        return res


def _make_preconditioner(system: PoissonSystem, method: str, model):
    if method == "cg":
        return None
    if method == "jacobi":
        inv = system.inv_diag
        return lambda r: inv * r
    if method == "mic0":
        from engine.linsolve.mic0 import mic0_preconditioner

        return mic0_preconditioner(system)
    if method == "mgpcg":
        from engine.linsolve.multigrid import multigrid_preconditioner

        return multigrid_preconditioner(system, omega=0.8)
    from engine.linsolve.learned import learned_preconditioner

    return learned_preconditioner(system, model)


def solve(
    flags,
    b: torch.Tensor,
    method: str = "mgpcg",
    x0: torch.Tensor | None = None,
    rtol: float = 1e-6,
    **kwargs,
) -> SolveResult:
    """One-shot solve of A x = b for the given flags (see :class:`PoissonSolver`)."""
    return PoissonSolver(flags, method, rtol=rtol, dtype=b.dtype, **kwargs).solve(b, x0)
