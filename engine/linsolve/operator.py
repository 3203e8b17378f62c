"""Matrix-free 7-point Poisson operator on a cell-centred grid with fluid/solid/air cell flags.

Discretization (Bridson, "Fluid Simulation for Computer Graphics", 2nd ed., ch. 5; McAdams,
Sifakis, Teran, "A parallel multigrid Poisson solver for fluids simulation on large grids",
SCA 2010, eq. 2): for every FLUID cell i

    (A p)_i = sum over non-solid neighbours j of (p_i - p_j),   p_j = 0 for AIR cells,

i.e. homogeneous Neumann at SOLID faces (and at the domain boundary, which counts as solid) and
homogeneous Dirichlet at AIR cells. The stencil has unit coefficients: the factor dt / (rho dx^2)
is folded into the unknown by the caller.

Ghost-fluid free surface (Gibou, Fedkiw, Cheng, Kang, "A second-order-accurate symmetric
discretization of the Poisson equation on irregular domains", JCP 2002; Enright, Nguyen, Gibou,
Fedkiw, "Using the particle level set method and a second order accurate pressure boundary
condition for free surface flows", 2003): when the surface crosses the face between a FLUID cell
and an AIR cell at the fraction theta in (0, 1] of the cell spacing, the face's coefficient in the
diagonal is 1/theta instead of 1. The optional per-cell tensor ``ghost`` holds the sum over the
cell's AIR faces of (1/theta - 1) >= 0; it only adds to the diagonal, so A stays symmetric, and
``ghost=None`` (or zeros) is the plain operator above.

A is symmetric positive semi-definite; it is singular exactly on the fluid connected components
that touch no AIR cell and carry no positive ghost weight (pure Neumann). Those components'
constant vectors span the null space, which :class:`PoissonSystem` removes by projecting vectors
to zero mean per such component (as PhiFlow's ``rank_deficiency``).

Conventions: arrays are torch tensors shaped (B, nx, ny, nz) with a leading batch axis B and
index order (x, y, z); flags are int8 with FLUID=0, SOLID=1, AIR=2. Entries of vectors at
non-fluid cells are zero and stay zero under every operation here.
"""

from __future__ import annotations

import numpy as np
import scipy.ndimage
import torch

FLUID = 0
SOLID = 1
AIR = 2


def as_flags(flags) -> torch.Tensor:
    """Validate cell flags and return them as a contiguous int8 tensor (B, nx, ny, nz).

    Args:
        flags: (B, nx, ny, nz) or (nx, ny, nz) integer array/tensor with values in {0, 1, 2}.

    Raises:
        ValueError: wrong rank, empty grid, non-integer dtype or values outside {0, 1, 2}.
    """
    t = torch.as_tensor(np.asarray(flags) if not isinstance(flags, torch.Tensor) else flags)
    if t.dtype.is_floating_point or t.dtype == torch.bool:
        raise ValueError(f"flags must be an integer array, got dtype {t.dtype}")
    if t.ndim == 3:
        t = t.unsqueeze(0)
    if t.ndim != 4 or min(t.shape) < 1:
        raise ValueError(f"flags must have shape (B, nx, ny, nz), got {tuple(t.shape)}")
    if t.numel() and (int(t.min()) < 0 or int(t.max()) > 2):
        raise ValueError("flags values must be FLUID=0, SOLID=1 or AIR=2")
    return t.to(torch.int8).contiguous()


def as_ghost(ghost, flags: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Validate the ghost-fluid diagonal term and return it as a (B, nx, ny, nz) tensor.

    Args:
        ghost: (B, nx, ny, nz) or (nx, ny, nz) float array/tensor, finite, >= 0, zero at
            non-FLUID cells: per FLUID cell the sum over its AIR faces of (1/theta - 1).
        flags: the validated (B, nx, ny, nz) int8 flags it belongs to.
        dtype: float dtype of the system.

    Raises:
        ValueError: non-float dtype, shape other than the flags', NaN/Inf, negative entries or
            nonzero entries at SOLID/AIR cells (the message names ``ghost``).
    """
    g = torch.as_tensor(np.asarray(ghost) if not isinstance(ghost, torch.Tensor) else ghost)
    if not g.dtype.is_floating_point:
        raise ValueError(f"ghost must be a float array, got dtype {g.dtype}")
    if g.ndim == 3:
        g = g.unsqueeze(0)
    if tuple(g.shape) != tuple(flags.shape):
        raise ValueError(f"ghost must have the flags' shape {tuple(flags.shape)}, got {tuple(g.shape)}")
    g = g.to(device=flags.device, dtype=dtype).contiguous()
    lo, hi = torch.aminmax(g) if g.numel() else (g.new_zeros(()), g.new_zeros(()))
    if not (torch.isfinite(lo) and torch.isfinite(hi)):
        raise ValueError("ghost contains NaN or Inf")
    if float(lo) < 0:
        raise ValueError(f"ghost must be >= 0 (sum of 1/theta - 1 over AIR faces), min is {float(lo)}")
    if bool(((g != 0) & (flags != FLUID)).any()):
        raise ValueError("ghost must be zero at SOLID and AIR cells")
    return g


def bdot(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-batch dot product of (B, ...) tensors -> (B,), without a full-size temporary."""
    B = x.shape[0]
    return torch.bmm(x.reshape(B, 1, -1), y.reshape(B, -1, 1)).view(B)


class PoissonSystem:
    """The operator A for a batch of flag grids, with its null space.

    Args:
        flags: (B, nx, ny, nz) or (nx, ny, nz) cell flags (see :func:`as_flags`).
        dtype: float dtype of the operator's arrays.
        device: torch device (default: the flags').
        ghost: optional (B, nx, ny, nz) ghost-fluid diagonal term (see :func:`as_ghost` and the
            module docstring); None is the plain operator.
        null_space: label the pure-Neumann components (needed by :meth:`project_null_`); False
            skips the labelling for operators that are never projected (coarse multigrid
            levels), and :attr:`singular` is then None.

    Attributes:
        flags: (B, nx, ny, nz) int8.
        fluid: (B, nx, ny, nz) float mask of FLUID cells.
        ghost: (B, nx, ny, nz) ghost-fluid diagonal term, or None.
        diag: (B, nx, ny, nz) number of non-solid neighbours of each fluid cell plus ``ghost``
            (0 at non-fluid cells).
        cx, cy, cz: couplings, 1 where a cell and its +x/+y/+z neighbour are both fluid;
            shapes (B, nx-1, ny, nz), (B, nx, ny-1, nz), (B, nx, ny, nz-1).
        singular: True when some fluid component touches no AIR cell.
    """

    def __init__(self, flags, dtype: torch.dtype = torch.float64, device=None, ghost=None, null_space: bool = True):
        self.flags = as_flags(flags).to(device)
        self.dtype = dtype
        f = self.flags
        self.shape = tuple(f.shape)
        fluid = f == FLUID
        nonsolid = f != SOLID
        self.fluid = fluid.to(dtype)
        nb = torch.zeros(self.shape, dtype=dtype, device=f.device)
        ns = nonsolid.to(dtype)
        nb[:, 1:] += ns[:, :-1]
        nb[:, :-1] += ns[:, 1:]
        nb[:, :, 1:] += ns[:, :, :-1]
        nb[:, :, :-1] += ns[:, :, 1:]
        nb[:, :, :, 1:] += ns[:, :, :, :-1]
        nb[:, :, :, :-1] += ns[:, :, :, 1:]
        self.diag = nb * self.fluid
        self.ghost = None if ghost is None else as_ghost(ghost, self.flags, dtype)
        anchored = None  # cells whose row sum is positive: an AIR face or a ghost weight
        if self.ghost is not None:
            anchored = self.ghost > 0
            self.diag = self.diag + self.ghost
        self.cx = (self.fluid[:, :-1] * self.fluid[:, 1:]).contiguous()
        self.cy = (self.fluid[:, :, :-1] * self.fluid[:, :, 1:]).contiguous()
        self.cz = (self.fluid[:, :, :, :-1] * self.fluid[:, :, :, 1:]).contiguous()
        self.inv_diag = torch.where(self.diag > 0, 1.0 / self.diag.clamp(min=1), 0.0)
        if null_space:
            self._build_null_space(anchored)
        else:
            self.singular, self._labels = None, None

    # ------------------------------------------------------------------ null space
    def _build_null_space(self, anchored: torch.Tensor | None):
        """Label fluid components that touch no AIR cell and have no ghost weight (each adds one
        null vector)."""
        f = self.flags.cpu().numpy()
        B = f.shape[0]
        nfluid_nb = torch.zeros(self.shape, dtype=self.dtype, device=self.flags.device)
        nfluid_nb[:, :-1] += self.cx
        nfluid_nb[:, 1:] += self.cx
        nfluid_nb[:, :, :-1] += self.cy
        nfluid_nb[:, :, 1:] += self.cy
        nfluid_nb[:, :, :, :-1] += self.cz
        nfluid_nb[:, :, :, 1:] += self.cz
        touches = (self.diag - nfluid_nb) > 0.5
        if anchored is not None:
            touches |= anchored
        touches_air = touches.cpu().numpy()
        labels = np.zeros(f.shape, dtype=np.int64)
        counts = [1.0]
        at_most_one = True  # every batch item has at most one floating component
        next_id = 1
        for b in range(B):
            lab, n = scipy.ndimage.label(f[b] == FLUID)
            floating = [c for c in range(1, n + 1) if not touches_air[b][lab == c].any()]
            at_most_one = at_most_one and len(floating) <= 1
            for c in floating:
                m = lab == c
                labels[b][m] = next_id
                counts.append(float(m.sum()))
                next_id += 1
        self.singular = next_id > 1
        dev = self.flags.device
        if not self.singular:
            self._labels = None
            return
        self._simple = at_most_one
        self._labels = torch.from_numpy(labels).to(dev).view(-1)
        self._counts = torch.tensor(counts, dtype=self.dtype, device=dev)
        self._floating_mask = torch.from_numpy(labels > 0).to(dev, self.dtype)
        nf = self._floating_mask.reshape(B, -1).sum(1)
        self._inv_nf = torch.where(nf > 0, 1.0 / nf.clamp(min=1), 0.0)

    def project_null_(self, x: torch.Tensor) -> torch.Tensor:
        """Remove the null-space component of x in place (zero mean per floating component)."""
        if self._labels is None:
            return x
        B = x.shape[0]
        if self._simple:
            mean = bdot(x, self._floating_mask) * self._inv_nf
            x.addcmul_(self._floating_mask, mean.view(B, 1, 1, 1), value=-1.0)
            return x
        sums = torch.zeros_like(self._counts).index_add_(0, self._labels, x.reshape(-1))
        means = sums / self._counts
        means[0] = 0.0
        x.sub_(means[self._labels].view_as(x))
        return x

    def project_null(self, x: torch.Tensor) -> torch.Tensor:
        """Out-of-place, autograd-friendly version of :meth:`project_null_`."""
        if self._labels is None:
            return x
        sums = torch.zeros_like(self._counts).index_add(0, self._labels, x.reshape(-1))
        means = sums / self._counts
        means = torch.cat([means.new_zeros(1), means[1:]])
        return x - means[self._labels].view_as(x)

    # ------------------------------------------------------------------ operator
    def matvec(self, x: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """y = A x for x (B, nx, ny, nz); writes into ``out`` when given (no autograd then)."""
        if out is None:
            return self.matvec_autograd(x)
        torch.mul(self.diag, x, out=out)
        out[:, :-1].addcmul_(self.cx, x[:, 1:], value=-1.0)
        out[:, 1:].addcmul_(self.cx, x[:, :-1], value=-1.0)
        out[:, :, :-1].addcmul_(self.cy, x[:, :, 1:], value=-1.0)
        out[:, :, 1:].addcmul_(self.cy, x[:, :, :-1], value=-1.0)
        out[:, :, :, :-1].addcmul_(self.cz, x[:, :, :, 1:], value=-1.0)
        out[:, :, :, 1:].addcmul_(self.cz, x[:, :, :, :-1], value=-1.0)
        return out

    def matvec_autograd(self, x: torch.Tensor) -> torch.Tensor:
        """y = A x built from out-of-place ops (differentiable)."""
        gx = self.cx * (x[:, 1:] - x[:, :-1])
        gy = self.cy * (x[:, :, 1:] - x[:, :, :-1])
        gz = self.cz * (x[:, :, :, 1:] - x[:, :, :, :-1])
        nonfluid_nb = (self.diag - _neighbour_sum(self.cx, self.cy, self.cz)) * x
        div = (
            torch.nn.functional.pad(gx, (0, 0, 0, 0, 1, 0))
            - torch.nn.functional.pad(gx, (0, 0, 0, 0, 0, 1))
            + torch.nn.functional.pad(gy, (0, 0, 1, 0))
            - torch.nn.functional.pad(gy, (0, 0, 0, 1))
            + torch.nn.functional.pad(gz, (1, 0))
            - torch.nn.functional.pad(gz, (0, 1))
        )
        return div + nonfluid_nb

    def dense(self) -> torch.Tensor:
        """Dense matrices (B, N, N), N = nx*ny*nz (identity rows for non-fluid cells are zero).

        For tests and tiny coarse grids only.
        """
        B = self.shape[0]
        N = int(np.prod(self.shape[1:]))
        eye = torch.eye(N, dtype=self.dtype, device=self.flags.device)
        cols = []
        for b in range(B):
            sub = PoissonSystem.__new__(PoissonSystem)
            sub.diag = self.diag[b : b + 1].expand(N, *self.shape[1:])
            sub.cx = self.cx[b : b + 1].expand(N, *self.cx.shape[1:])
            sub.cy = self.cy[b : b + 1].expand(N, *self.cy.shape[1:])
            sub.cz = self.cz[b : b + 1].expand(N, *self.cz.shape[1:])
            Ae = sub.matvec_autograd(eye.view(N, *self.shape[1:]))
            cols.append(Ae.reshape(N, N).T * self.fluid[b].reshape(1, N))
        return torch.stack(cols)


def _neighbour_sum(cx, cy, cz):
    """Number of fluid neighbours per cell from the couplings."""
    pad = torch.nn.functional.pad
    return (
        pad(cx, (0, 0, 0, 0, 1, 0))
        + pad(cx, (0, 0, 0, 0, 0, 1))
        + pad(cy, (0, 0, 1, 0))
        + pad(cy, (0, 0, 0, 1))
        + pad(cz, (1, 0))
        + pad(cz, (0, 1))
    )
