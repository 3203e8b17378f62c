"""Geometric multigrid V-cycle on cell flags, used as the MGPCG preconditioner and as the
skeleton of the learned preconditioner.

Reference: McAdams, Sifakis, Teran, "A parallel multigrid Poisson solver for fluids simulation on
large grids", SCA 2010 (Sec. 3-4: coarsened cell flags, rediscretized coarse operators, damped
Jacobi smoothing, trilinear transfers, one V-cycle as the PCG preconditioner).

Choices made here:
- Coarse flags from 2x2x2 children: AIR if any child is AIR (Dirichlet wins), else FLUID if any
  child is FLUID, else SOLID (McAdams et al. Sec. 3).
- Ghost-fluid diagonal terms (:mod:`engine.linsolve.operator`) reach the coarse levels as the
  row-sum lumped Galerkin diagonal R G P 1 = R g (P 1 = 1 on fluid cells), i.e. the ghost term is
  restricted like a residual and added to the coarse diagonal.
- Prolongation P: cell-centred trilinear interpolation (1-D weights 1/4, 3/4, 3/4, 1/4),
  normalized at each fine cell by the weight of its non-solid coarse parents, so constants are
  interpolated exactly next to walls and obstacles; AIR parents carry the Dirichlet value 0.
  Restriction R = P^T / 2: the factor 1/2 is the Galerkin scale of the unit 7-point stencil
  (P^T A_h P ~ 8 (h/2h)^2 A_2h = 2 A_2h), so every level solves its own unit-stencil system.
- Smoother: damped Jacobi with weight omega, the same number of pre- and post-sweeps, so the
  V-cycle is a symmetric linear operator (needed for PCG). The coarsest level (<= 512 cells) is
  solved exactly with a dense (pseudo-)inverse; pure-Neumann components get the minimum-norm
  solution.
- The smoother is pluggable: :mod:`engine.linsolve.learned` replaces omega D^-1 by per-cell
  7-point stencils predicted from the cell flags.

Conventions as in :mod:`engine.linsolve.operator`: (B, nx, ny, nz) tensors, flags FLUID=0,
SOLID=1, AIR=2, zero entries at non-fluid cells.
"""

from __future__ import annotations

import torch

from engine.linsolve.operator import FLUID, SOLID, PoissonSystem

COARSEST_MAX_CELLS = 512


def coarsen_flags(flags: torch.Tensor) -> torch.Tensor:
    """Coarsen (B, nx, ny, nz) int8 flags by 2 in every axis (all dims must be even).

    With p = flag XOR 1 (SOLID -> 0, FLUID -> 1, AIR -> 3) the rule "AIR if any child is AIR, else
    FLUID if any is FLUID, else SOLID" is the maximum of p over the 2x2x2 children.
    """
    p = flags ^ 1
    p = torch.maximum(p[:, 0::2], p[:, 1::2])
    p = torch.maximum(p[:, :, 0::2], p[:, :, 1::2])
    p = torch.maximum(p[:, :, :, 0::2], p[:, :, :, 1::2])
    return (p ^ 1).contiguous()


def _restrict_axis(x: torch.Tensor, d: int) -> torch.Tensor:
    """Transpose of :func:`_prolong_axis` along axis d: out_i = 1/4 x_(2i-1) + 3/4 x_2i
    + 3/4 x_(2i+1) + 1/4 x_(2i+2) (zero outside). The 3-D transfer is the product of the three
    1-D ones, identical to a stride-2 convolution with the 4x4x4 trilinear kernel."""
    n = x.shape[d] // 2
    pairs = x.unflatten(d, (n, 2))
    ev, od = pairs.select(d + 1, 0), pairs.select(d + 1, 1)
    out = (ev + od) * 0.75
    if n > 1:
        out.narrow(d, 1, n - 1).add_(od.narrow(d, 0, n - 1), alpha=0.25)
        out.narrow(d, 0, n - 1).add_(ev.narrow(d, 1, n - 1), alpha=0.25)
    return out


def _prolong_axis(c: torch.Tensor, d: int) -> torch.Tensor:
    """Cell-centred linear interpolation by 2 along axis d: fine_2i = 3/4 c_i + 1/4 c_(i-1),
    fine_(2i+1) = 3/4 c_i + 1/4 c_(i+1) (zero outside). Without autograd it writes into the
    interleaved output in place (no stacking copy)."""
    n = c.shape[d]
    if torch.is_grad_enabled() and c.requires_grad:
        ev, od = c * 0.75, c * 0.75
        if n > 1:
            ev.narrow(d, 1, n - 1).add_(c.narrow(d, 0, n - 1), alpha=0.25)
            od.narrow(d, 0, n - 1).add_(c.narrow(d, 1, n - 1), alpha=0.25)
        return torch.stack([ev, od], d + 1).flatten(d, d + 1)
    shape = list(c.shape)
    shape[d] = 2 * n
    out = torch.empty(shape, dtype=c.dtype, device=c.device)
    pairs = out.unflatten(d, (n, 2))
    ev, od = pairs.select(d + 1, 0), pairs.select(d + 1, 1)
    torch.mul(c, 0.75, out=ev)
    torch.mul(c, 0.75, out=od)
    if n > 1:
        ev.narrow(d, 1, n - 1).add_(c.narrow(d, 0, n - 1), alpha=0.25)
        od.narrow(d, 0, n - 1).add_(c.narrow(d, 1, n - 1), alpha=0.25)
    return out


class Hierarchy:
    """Grid hierarchy: one :class:`PoissonSystem` per level plus transfer weights.

    Args:
        system: the fine-level system.
        max_coarsest: stop coarsening once a level has at most this many cells.
    """

    def __init__(self, system: PoissonSystem, max_coarsest: int = COARSEST_MAX_CELLS):
        self.systems = [system]
        self.dtype = system.dtype
        flags = system.flags
        # pscale: fine-cell scale m_f / (sum of trilinear weights of non-solid coarse parents)
        self.pscale = []
        while True:
            shape = flags.shape[1:]
            cells = shape[0] * shape[1] * shape[2]
            if cells <= max_coarsest or any(n % 2 or n < 4 for n in shape):
                break
            fine = self.systems[-1]
            flags = coarsen_flags(flags)
            den = (flags != SOLID).to(self.dtype)
            for d in (1, 2, 3):
                den = _prolong_axis(den, d)
            self.pscale.append(torch.where(den > 1e-12, fine.fluid / den.clamp(min=1e-12), 0.0))
            ghost = None
            if fine.ghost is not None:  # row-sum lumped Galerkin diagonal: R (G P 1) = R g
                fluid_c = (flags == FLUID).to(self.dtype)
                ghost = self._restrict(len(self.pscale) - 1, fine.ghost, fluid_c)
            # the V-cycle never projects coarse vectors, so coarse levels skip the null-space labels
            coarse = PoissonSystem(flags, dtype=system.dtype, device=flags.device, ghost=ghost, null_space=False)
            self.systems.append(coarse)
        self._build_coarse_solver()

    @property
    def n_levels(self) -> int:
        return len(self.systems)

    def _build_coarse_solver(self):
        S = self.systems[-1]
        n = S.shape[1] * S.shape[2] * S.shape[3]
        self.coarse_inv = None
        if n > 4096:
            return
        A = S.dense()
        inv = torch.zeros_like(A)
        for b in range(A.shape[0]):
            idx = torch.nonzero(S.fluid[b].reshape(-1) > 0).squeeze(1)
            if idx.numel() == 0:
                continue
            sub = A[b][idx][:, idx].to(torch.float64)
            inv_sub = torch.linalg.pinv(sub, hermitian=True)
            inv[b][idx[:, None], idx[None, :]] = inv_sub.to(A.dtype)
        self.coarse_inv = inv

    def prolong(self, lvl: int, ec: torch.Tensor) -> torch.Tensor:
        """Coarse (level lvl+1) -> fine (level lvl) correction."""
        up = ec
        for d in (1, 2, 3):
            up = _prolong_axis(up, d)
        return up * self.pscale[lvl]

    def restrict(self, lvl: int, r: torch.Tensor) -> torch.Tensor:
        """Fine (level lvl) residual -> coarse right-hand side, R = P^T / 2."""
        return self._restrict(lvl, r, self.systems[lvl + 1].fluid)

    def _restrict(self, lvl: int, r: torch.Tensor, fluid_c: torch.Tensor) -> torch.Tensor:
        down = r * self.pscale[lvl]
        for d in (1, 2, 3):
            down = _restrict_axis(down, d)
        return down * (0.5 * fluid_c)

    def coarse_solve(self, b: torch.Tensor, omega: float = 2.0 / 3.0) -> torch.Tensor:
        """Exact (pseudo-inverse) solve at the coarsest level, or 50 Jacobi sweeps if large."""
        S = self.systems[-1]
        if self.coarse_inv is not None:
            B = b.shape[0]
            return torch.bmm(self.coarse_inv, b.reshape(B, -1, 1)).view_as(b)
        x = omega * S.inv_diag * b
        for _ in range(49):
            x = x + omega * S.inv_diag * residual(S, b, x)
        return x


def residual(S: PoissonSystem, b: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """b - A x (one buffer without autograd)."""
    if torch.is_grad_enabled() and (x.requires_grad or b.requires_grad):
        return b - S.matvec_autograd(x)
    Ax = S.matvec(x, out=torch.empty_like(x))
    return torch.sub(b, Ax, out=Ax)


class JacobiSmoother:
    """Damped Jacobi smoothing z = omega D^-1 r on every level and sweep."""

    def __init__(self, hierarchy: Hierarchy, omega: float = 2.0 / 3.0):
        self.scaled = [omega * S.inv_diag for S in hierarchy.systems]

    def __call__(self, lvl: int, sweep: int, r: torch.Tensor) -> torch.Tensor:
        return self.scaled[lvl] * r


class VCycle:
    """One V-cycle from a zero initial guess: z = V(r) ~ A^-1 r.

    Args:
        hierarchy: levels and transfers.
        smoother: callable (level, sweep, residual) -> correction; at a level with p
            pre-smoothing sweeps, sweeps 0..p-1 are the pre-smoothing ones and p..p+n_post-1 the
            post-smoothing ones.
        n_pre: pre-smoothing sweeps, one int for every level or a sequence per level (the last
            entry serves the deeper levels); 0 at a level gives the sawtooth cycle there (the
            coarse grid sees the right-hand side itself).
        n_post: post-smoothing sweeps (equal to n_pre for a symmetric cycle).
        coarse_scale: optional per-level factors on the coarse correction (default 1).
    """

    def __init__(self, hierarchy, smoother=None, n_pre=2, n_post: int = 2, coarse_scale=None):
        self.h = hierarchy
        self.smoother = smoother if smoother is not None else JacobiSmoother(hierarchy)
        self.n_pre = [n_pre] if isinstance(n_pre, int) else list(n_pre)
        self.n_post = n_post
        self.coarse_scale = coarse_scale

    def __call__(self, r: torch.Tensor) -> torch.Tensor:
        return self.cycle(0, r)

    def cycle(self, lvl: int, b: torch.Tensor) -> torch.Tensor:
        h = self.h
        if lvl == h.n_levels - 1:
            return h.coarse_solve(b)
        S = h.systems[lvl]
        n_pre = self.n_pre[min(lvl, len(self.n_pre) - 1)]
        if n_pre == 0:
            x, r = None, b
        else:
            x = self.smoother(lvl, 0, b)
            for s in range(1, n_pre):
                x = x + self.smoother(lvl, s, residual(S, b, x))
            r = residual(S, b, x)
        ec = self.cycle(lvl + 1, h.restrict(lvl, r))
        if self.coarse_scale is not None:  # P is linear: scale the (8x smaller) coarse vector
            ec = ec * self.coarse_scale[min(lvl, len(self.coarse_scale) - 1)]
        corr = h.prolong(lvl, ec)
        x = corr if x is None else x + corr
        for s in range(n_pre, n_pre + self.n_post):
            x = x + self.smoother(lvl, s, residual(S, b, x))
        return x


def multigrid_preconditioner(system: PoissonSystem, omega: float = 2.0 / 3.0, n_smooth: int = 2):
    """The MGPCG preconditioner r -> V(r) (symmetric, no autograd)."""
    h = Hierarchy(system)
    v = VCycle(h, JacobiSmoother(h, omega), n_smooth, n_smooth)

    def apply(r: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return v(r)

    apply.hierarchy = h
    return apply
