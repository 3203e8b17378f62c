"""Modified incomplete Cholesky MIC(0) preconditioner for the 7-point Poisson operator.

Reference: Bridson, "Fluid Simulation for Computer Graphics", 2nd ed., Sec. 5.4 (Fig. 5.7: the
MIC(0) factorization with tuning constant tau = 0.97 and safety constant sigma = 0.25; Fig. 5.8:
applying the preconditioner by a forward and a backward triangular solve). The factor is
L = (E + F) with E the diagonal of 1/precon and F the strictly lower part of A, and
M = L L^T; cells are visited in lexicographic (i, j, k) order, k fastest.

Both the factorization and the triangular solves are sequential by nature; they run as Taichi
kernels on ndarray arguments whose outer loop over the batch axis B is parallel and whose inner
loops are serial. Couplings are recomputed from the int32 cell flags (FLUID=0, SOLID=1, AIR=2).
Requires :func:`engine.init` (any precision; arrays are passed as torch tensors).
"""

import taichi as ti
import torch

from engine.linsolve.operator import PoissonSystem
from engine.runtime import require

TAU = 0.97
SIGMA = 0.25


@ti.func
def _c(flags: ti.template(), b, i, j, k, di, dj, dk):
    """Off-diagonal A entry between (i,j,k) and (i+di, j+dj, k+dk): -1 if both fluid."""
    v = 0.0
    nx, ny, nz = flags.shape[1], flags.shape[2], flags.shape[3]
    i2, j2, k2 = i + di, j + dj, k + dk
    if 0 <= i2 < nx and 0 <= j2 < ny and 0 <= k2 < nz:
        if flags[b, i, j, k] == 0 and flags[b, i2, j2, k2] == 0:
            v = -1.0
    return v


@ti.kernel
def mic0_factor(
    flags: ti.types.ndarray(ndim=4),
    diag: ti.types.ndarray(ndim=4),
    precon: ti.types.ndarray(ndim=4),
    tau: ti.f32,
    sigma: ti.f32,
):
    """precon[b,i,j,k] = 1/sqrt(e) of the MIC(0) factor (Bridson Fig. 5.7)."""
    nx, ny, nz = flags.shape[1], flags.shape[2], flags.shape[3]
    for b in range(flags.shape[0]):
        for i in range(nx):
            for j in range(ny):
                for k in range(nz):
                    precon[b, i, j, k] = 0.0
                    if flags[b, i, j, k] == 0:
                        d = diag[b, i, j, k]
                        e = d
                        if i > 0:
                            pi = precon[b, i - 1, j, k]
                            a = _c(flags, b, i - 1, j, k, 1, 0, 0)
                            e -= (a * pi) ** 2
                            e -= (
                                tau
                                * a
                                * (_c(flags, b, i - 1, j, k, 0, 1, 0) + _c(flags, b, i - 1, j, k, 0, 0, 1))
                                * pi
                                * pi
                            )
                        if j > 0:
                            pj = precon[b, i, j - 1, k]
                            a = _c(flags, b, i, j - 1, k, 0, 1, 0)
                            e -= (a * pj) ** 2
                            e -= (
                                tau
                                * a
                                * (_c(flags, b, i, j - 1, k, 1, 0, 0) + _c(flags, b, i, j - 1, k, 0, 0, 1))
                                * pj
                                * pj
                            )
                        if k > 0:
                            pk = precon[b, i, j, k - 1]
                            a = _c(flags, b, i, j, k - 1, 0, 0, 1)
                            e -= (a * pk) ** 2
                            e -= (
                                tau
                                * a
                                * (_c(flags, b, i, j, k - 1, 1, 0, 0) + _c(flags, b, i, j, k - 1, 0, 1, 0))
                                * pk
                                * pk
                            )
                        if e < sigma * d:
                            e = d
                        precon[b, i, j, k] = 1.0 / ti.sqrt(e)


@ti.kernel
def mic0_apply(
    flags: ti.types.ndarray(ndim=4),
    precon: ti.types.ndarray(ndim=4),
    r: ti.types.ndarray(ndim=4),
    q: ti.types.ndarray(ndim=4),
    z: ti.types.ndarray(ndim=4),
):
    """z = M^-1 r by forward (L q = r) and backward (L^T z = q) substitution (Fig. 5.8)."""
    nx, ny, nz = flags.shape[1], flags.shape[2], flags.shape[3]
    for b in range(flags.shape[0]):
        for i in range(nx):
            for j in range(ny):
                for k in range(nz):
                    t = 0.0
                    if flags[b, i, j, k] == 0:
                        t = r[b, i, j, k]
                        if i > 0:
                            t -= _c(flags, b, i - 1, j, k, 1, 0, 0) * precon[b, i - 1, j, k] * q[b, i - 1, j, k]
                        if j > 0:
                            t -= _c(flags, b, i, j - 1, k, 0, 1, 0) * precon[b, i, j - 1, k] * q[b, i, j - 1, k]
                        if k > 0:
                            t -= _c(flags, b, i, j, k - 1, 0, 0, 1) * precon[b, i, j, k - 1] * q[b, i, j, k - 1]
                        t *= precon[b, i, j, k]
                    q[b, i, j, k] = t
        for ii in range(nx):
            for jj in range(ny):
                for kk in range(nz):
                    i, j, k = nx - 1 - ii, ny - 1 - jj, nz - 1 - kk
                    t = 0.0
                    if flags[b, i, j, k] == 0:
                        t = q[b, i, j, k]
                        pc = precon[b, i, j, k]
                        if i < nx - 1:
                            t -= _c(flags, b, i, j, k, 1, 0, 0) * pc * z[b, i + 1, j, k]
                        if j < ny - 1:
                            t -= _c(flags, b, i, j, k, 0, 1, 0) * pc * z[b, i, j + 1, k]
                        if k < nz - 1:
                            t -= _c(flags, b, i, j, k, 0, 0, 1) * pc * z[b, i, j, k + 1]
                        t *= pc
                    z[b, i, j, k] = t


def mic0_preconditioner(system: PoissonSystem, tau: float = TAU, sigma: float = SIGMA):
    """Build the MIC(0) factor of ``system`` and return r -> M^-1 r (symmetric positive)."""
    require()
    flags = system.flags.to(torch.int32).contiguous()
    diag = system.diag.contiguous()
    precon = torch.zeros_like(diag)
    mic0_factor(flags, diag, precon, tau, sigma)

    def apply(r: torch.Tensor) -> torch.Tensor:
        r = r.contiguous()
        q = torch.empty_like(r)
        z = torch.empty_like(r)
        mic0_apply(flags, precon.to(r.dtype), r, q, z)
        return z

    apply.precon = precon
    return apply
