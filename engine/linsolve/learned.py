"""Learned Poisson preconditioner: a multigrid V-cycle whose smoothers are per-cell 7-point
stencils predicted from the cell flags, used as the search direction of the deep conjugate
direction method.

References:
- Kaneda, Akar, Chen, Kala, Teran, "A Deep Conjugate Direction Method for Iteratively Solving
  Linear Systems", ICML 2023 (arXiv 2205.10763): network f(r) ~ A^-1 r up to scale; Alg. 2 (search
  direction f(r), A-orthogonalized against the last directions, exact line search) is
  :func:`engine.linsolve.pcg.conjugate_directions`; unsupervised loss ||r - A f(r)||^2 with the
  optimal scale factored out (their Eq. 9), here 1 - (r.A f)^2 / (|r|^2 |A f|^2).
- Lan, Gueidon, Kaneda, Panetta, Teran, "A Neural-Preconditioned Poisson Solver for Mixed
  Dirichlet and Neumann Boundary Conditions", ICML 2024 (arXiv 2310.00177): a multigrid-shaped
  network whose stencils are predicted per cell from the cell flags, so one network serves any
  domain shape, boundary condition and grid size.

Design (cheap at the fine level, geometry-aware, never worse than MGPCG at initialization):
the V-cycle of :mod:`engine.linsolve.multigrid` (same transfers, same exact coarsest solve),
where sweep s at level l applies z_i = sum_{j in {i, i+-x, i+-y, i+-z}} W_{l,s}(code_i)_j r_j.
The code of a cell is its flag and its six neighbours' flags (out-of-domain = SOLID), one of
3^7 = 2187 patterns, so the network (an MLP from the one-hot pattern to 7 weights per sweep) is
evaluated once on the 2187 patterns per level group and gathered per cell: setting the network
up for a new matrix costs one gather per level, and an application costs a few stencil sweeps.
W = omega D^-1 (damped Jacobi) + network output; the last layer starts at zero, so the untrained
model is exactly the Jacobi V-cycle. Level 0 has its own network; all coarser levels share one,
so the model applies to any number of levels (any grid size). A learned factor per level group
scales the coarse-grid correction. The preconditioner is linear in r but not symmetric, hence the
conjugate direction method rather than PCG.

Conventions: (B, nx, ny, nz) tensors, flags FLUID=0, SOLID=1, AIR=2
(:mod:`engine.linsolve.operator`). Weight files are ``torch.save`` dicts {"format", "config",
"state_dict", "meta"} loaded with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from engine.linsolve.multigrid import Hierarchy, VCycle
from engine.linsolve.operator import FLUID, SOLID, PoissonSystem

N_CODES = 3**7
FORMAT = "fluxlab-learned-mg-v1"
DEFAULT_WEIGHTS = Path(__file__).resolve().parents[2] / "assets" / "preconditioner" / "learned_mg.pt"


class WeightsError(ValueError):
    """A learned-preconditioner weight file is missing, corrupt or does not match the model."""


def neighbour_codes(flags: torch.Tensor) -> torch.Tensor:
    """Per-cell pattern code sum_k flag(n_k) 3^k over (self, -x, +x, -y, +y, -z, +z).

    Args:
        flags: (B, nx, ny, nz) int8; cells outside the domain count as SOLID.

    Returns:
        (B, nx, ny, nz) int64 codes in [0, 2187).
    """
    f = torch.nn.functional.pad(flags.to(torch.int64), (1, 1, 1, 1, 1, 1), value=SOLID)
    c = f[:, 1:-1, 1:-1, 1:-1].clone()
    c += 3 * f[:, :-2, 1:-1, 1:-1]
    c += 9 * f[:, 2:, 1:-1, 1:-1]
    c += 27 * f[:, 1:-1, :-2, 1:-1]
    c += 81 * f[:, 1:-1, 2:, 1:-1]
    c += 243 * f[:, 1:-1, 1:-1, :-2]
    c += 729 * f[:, 1:-1, 1:-1, 2:]
    return c


def code_table(dtype=torch.float32):
    """Features of all 2187 patterns: (2187, 22) [one-hot flags of 7 cells, 1/diag] and
    (2187,) float mask of patterns whose centre is FLUID, and (2187,) 1/diag."""
    codes = torch.arange(N_CODES)
    digits = torch.stack([(codes // 3**k) % 3 for k in range(7)], 1)  # (2187, 7)
    onehot = torch.nn.functional.one_hot(digits, 3).reshape(N_CODES, 21).to(dtype)
    nonsolid_nb = (digits[:, 1:] != SOLID).sum(1).to(dtype)
    fluid_c = (digits[:, 0] == FLUID).to(dtype)
    inv_diag = torch.where(nonsolid_nb > 0, 1.0 / nonsolid_nb.clamp(min=1), 0.0) * fluid_c
    return torch.cat([onehot, inv_diag[:, None]], 1), fluid_c, inv_diag


def apply_stencil(w: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """z_i = sum_j w[:, j, i] r_(i + offset_j), offsets (0, -x, +x, -y, +y, -z, +z).

    Args:
        w: (B, 7, nx, ny, nz) per-cell weights; r: (B, nx, ny, nz).
    """
    z = w[:, 0] * r
    z[:, 1:].addcmul_(w[:, 1, 1:], r[:, :-1])
    z[:, :-1].addcmul_(w[:, 2, :-1], r[:, 1:])
    z[:, :, 1:].addcmul_(w[:, 3, :, 1:], r[:, :, :-1])
    z[:, :, :-1].addcmul_(w[:, 4, :, :-1], r[:, :, 1:])
    z[:, :, :, 1:].addcmul_(w[:, 5, :, :, 1:], r[:, :, :, :-1])
    z[:, :, :, :-1].addcmul_(w[:, 6, :, :, :-1], r[:, :, :, 1:])
    return z


class StencilNet(nn.Module):
    """MLP from a cell's neighbourhood pattern to stencil corrections for every sweep."""

    def __init__(self, n_sweeps: int, hidden: int):
        super().__init__()
        self.n_sweeps = n_sweeps
        self.net = nn.Sequential(
            nn.Linear(22, hidden),
            nn.SiLU(),
            nn.Linear(hidden, hidden),
            nn.SiLU(),
            nn.Linear(hidden, n_sweeps * 7),
        )
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        return self.net(feats).view(-1, self.n_sweeps, 7)


class LearnedMG(nn.Module):
    """The learned V-cycle's parameters: stencil networks and coarse-correction scales.

    Args:
        n_pre, n_post: smoothing sweeps per level.
        hidden: MLP width.
        omega: Jacobi damping of the initial (untrained) smoother.
    """

    def __init__(self, n_pre: int = 2, n_post: int = 2, hidden: int = 64, omega: float = 0.8):
        super().__init__()
        self.config = {"n_pre": n_pre, "n_post": n_post, "hidden": hidden, "omega": omega}
        self.n_pre, self.n_post, self.omega = n_pre, n_post, omega
        n_sweeps = n_pre + n_post
        self.nets = nn.ModuleList([StencilNet(n_sweeps, hidden) for _ in range(2)])
        self.log_gamma = nn.Parameter(torch.zeros(2))
        feats, fluid_c, inv_diag = code_table()
        self.register_buffer("feats", feats, persistent=False)
        self.register_buffer("fluid_c", fluid_c, persistent=False)
        base = torch.zeros(N_CODES, n_sweeps, 7)
        base[:, :, 0] = omega * inv_diag[:, None]
        self.register_buffer("base", base, persistent=False)

    def tables(self) -> list[torch.Tensor]:
        """Per level group (fine, coarse): (2187, n_sweeps, 7) stencil weights."""
        return [(self.base + net(self.feats)) * self.fluid_c[:, None, None] for net in self.nets]

    def bind(self, system: PoissonSystem, hierarchy: Hierarchy | None = None) -> LearnedVCycle:
        """Specialize the model to one batch of flag grids (gathers per-cell stencils)."""
        return LearnedVCycle(self, system, hierarchy)


class LearnedVCycle:
    """The learned V-cycle bound to a system: r -> f(r). Differentiable in the model's
    parameters when called under autograd (training); use :meth:`precompute` for inference."""

    def __init__(self, model: LearnedMG, system: PoissonSystem, hierarchy: Hierarchy | None):
        self.model = model
        self.h = hierarchy if hierarchy is not None else Hierarchy(system)
        self.codes = [neighbour_codes(S.flags) for S in self.h.systems]
        self.weights = None
        self._cycle = VCycle(self.h, self._smooth, model.n_pre, model.n_post)

    def precompute(self) -> LearnedVCycle:
        """Gather per-cell stencils once (no autograd); later calls reuse them."""
        with torch.no_grad():
            self.weights = self._gather(self.model.tables())
            self._cycle.coarse_scale = [float(g) for g in self.model.log_gamma.exp()]
        return self

    def _gather(self, tables):
        out = []
        dtype = self.h.dtype
        for lvl, codes in enumerate(self.codes):
            t = tables[min(lvl, 1)].to(dtype)  # (2187, S, 7)
            if torch.is_grad_enabled() and t.requires_grad:
                w = t[codes].permute(0, 4, 5, 1, 2, 3)  # (B, S, 7, nx, ny, nz)
            else:
                rows = t.reshape(N_CODES, -1).T.contiguous()  # (S*7, 2187)
                w = torch.index_select(rows, 1, codes.reshape(-1))
                w = w.view(rows.shape[0], *codes.shape).transpose(0, 1)
                w = w.reshape(codes.shape[0], t.shape[1], 7, *codes.shape[1:])
            out.append(w.contiguous())
        return out

    def _smooth(self, lvl: int, sweep: int, r: torch.Tensor) -> torch.Tensor:
        return apply_stencil(self.weights[lvl][:, sweep], r)

    def __call__(self, r: torch.Tensor) -> torch.Tensor:
        if self.weights is None or torch.is_grad_enabled():
            weights_saved = self.weights
            self.weights = self._gather(self.model.tables())
            g = self.model.log_gamma.exp()
            self._cycle.coarse_scale = [g[0], g[1]]
            try:
                return self._cycle(r)
            finally:
                self.weights = weights_saved
        with torch.no_grad():
            return self._cycle(r)


def save_weights(model: LearnedMG, path, meta: dict | None = None) -> None:
    """Write a weight file loadable by :func:`load_model`."""
    state = {k: v.detach().cpu().float() for k, v in model.state_dict().items()}
    torch.save(
        {
            "format": FORMAT,
            "config": dict(model.config),
            "state_dict": state,
            "meta": dict(meta or {}),
        },
        path,
    )


def load_model(path=None) -> LearnedMG:
    """Load a trained :class:`LearnedMG` (default: the shipped weights).

    Raises:
        WeightsError: missing file, unreadable/corrupt file, wrong format tag, or a
            state dict whose keys/shapes do not match the configured model.
    """
    path = Path(path if path is not None else os.environ.get("FLUXLAB_PRECOND_WEIGHTS", DEFAULT_WEIGHTS))
    if not path.is_file():
        raise WeightsError(
            f"learned preconditioner weights not found: {path} (train them with `fluxlab train-preconditioner`)"
        )
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling failure means a corrupt file
        raise WeightsError(f"cannot read learned preconditioner weights {path}: {e}") from e
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        raise WeightsError(f"{path} is not a {FORMAT} weight file (field 'format')")
    cfg = blob.get("config")
    if not isinstance(cfg, dict) or set(cfg) != {"n_pre", "n_post", "hidden", "omega"}:
        raise WeightsError(f"{path}: field 'config' must hold n_pre, n_post, hidden, omega")
    try:
        model = LearnedMG(int(cfg["n_pre"]), int(cfg["n_post"]), int(cfg["hidden"]), float(cfg["omega"]))
    except (TypeError, ValueError) as e:
        raise WeightsError(f"{path}: invalid field 'config': {e}") from e
    sd = blob.get("state_dict")
    if not isinstance(sd, dict):
        raise WeightsError(f"{path}: field 'state_dict' missing")
    expected = model.state_dict()
    if set(sd) != set(expected):
        raise WeightsError(f"{path}: field 'state_dict' keys {sorted(sd)} do not match the model's {sorted(expected)}")
    for k, v in expected.items():
        if not isinstance(sd[k], torch.Tensor) or sd[k].shape != v.shape:
            raise WeightsError(
                f"{path}: field 'state_dict.{k}' has shape {getattr(sd[k], 'shape', None)}, expected {tuple(v.shape)}"
            )
        if not torch.isfinite(sd[k]).all():
            raise WeightsError(f"{path}: field 'state_dict.{k}' contains NaN or Inf")
    model.load_state_dict(sd)
    model.meta = blob.get("meta", {})
    model.eval()
    return model


def learned_preconditioner(system: PoissonSystem, model: LearnedMG | None = None):
    """Bind a (default: shipped) model to ``system``; returns r -> f(r) for the DCDM solver."""
    model = model if model is not None else load_model()
    return model.bind(system).precompute()
