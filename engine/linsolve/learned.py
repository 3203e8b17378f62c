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

Design (cheap at the fine level, geometry-aware, close to MGPCG at initialization): the
V-cycle of :mod:`engine.linsolve.multigrid` (same transfers; exact solve on a coarsest level of
at most ``coarsest`` cells, default 64, where MGPCG stops at 512) with one pre- and one
post-smoothing sweep per coarse level and, on the finest level, where the cost is, no
pre-smoothing (``fine_pre`` = 0, a sawtooth cycle) and one post-smoothing sweep; a sweep applies
a per-cell 7-point stencil to the residual. The code of a cell is its flag and its six
neighbours' flags (out-of-domain = SOLID), one of 3^7 = 2187 patterns, so the network (an MLP
from the one-hot pattern to 14 weights per sweep) is evaluated once on the 2187 patterns per
level group and gathered per cell. With the ghost-fluid diagonal D = d0 + g (d0: non-solid
neighbours, g: the free-surface term of :mod:`engine.linsolve.operator`) and s = g / D in
[0, 1), the stencil of a cell with code c is

    W_i = (d0 / D) (T0(c) + s T1(c)),    T0 = J(c) + net_0(c),  T1 = net_1(c),

where J is the stencil of two damped-Jacobi sweeps (weight omega) on a residual,
2 omega D^-1 - omega^2 D^-1 A D^-1, with the neighbours' diagonals approximated by the cell's
own. So the untrained model (last layer zero) is close to MGPCG's V-cycle with two Jacobi sweeps
per side, at the cost of one stencil sweep per side, and training learns the stencils and how
they change with the surface weight. Level 0 has its own network; all coarser levels share one,
so the model applies to any number of levels (any grid size). A learned factor per level group
scales the coarse-grid correction. The preconditioner is linear in r but not symmetric, hence the
conjugate direction method rather than PCG.

Conventions: (B, nx, ny, nz) tensors, flags FLUID=0, SOLID=1, AIR=2
(:mod:`engine.linsolve.operator`). Weight files are ``torch.save`` dicts {"format", "config",
"state_dict", "meta"} loaded with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import torch
from torch import nn

from engine.linsolve.multigrid import Hierarchy, VCycle
from engine.linsolve.operator import FLUID, SOLID, PoissonSystem

N_CODES = 3**7
FORMAT = "fluxlab-learned-mg-v2"
# bounds of the stored config, checked before any model is built
CONFIG_BOUNDS = {"fine_pre": (0, 8), "n_pre": (0, 8), "n_post": (1, 8), "hidden": (1, 1024), "coarsest": (8, 4096)}
DEFAULT_WEIGHTS = Path(__file__).resolve().parents[2] / "assets" / "preconditioner" / "learned_mg.pt"


class WeightsError(ValueError):
    """A learned-preconditioner weight file is missing, corrupt or does not match the model."""


def neighbour_codes(flags: torch.Tensor) -> torch.Tensor:
    """Per-cell pattern code sum_k flag(n_k) 3^k over (self, -x, +x, -y, +y, -z, +z).

    Args:
        flags: (B, nx, ny, nz) int8; cells outside the domain count as SOLID.

    Returns:
        (B, nx, ny, nz) int32 codes in [0, 2187).
    """
    f = torch.nn.functional.pad(flags.to(torch.int32), (1, 1, 1, 1, 1, 1), value=SOLID)
    c = f[:, 1:-1, 1:-1, 1:-1].clone()
    c += 3 * f[:, :-2, 1:-1, 1:-1]
    c += 9 * f[:, 2:, 1:-1, 1:-1]
    c += 27 * f[:, 1:-1, :-2, 1:-1]
    c += 81 * f[:, 1:-1, 2:, 1:-1]
    c += 243 * f[:, 1:-1, 1:-1, :-2]
    c += 729 * f[:, 1:-1, 1:-1, 2:]
    return c


def code_table(dtype=torch.float32):
    """Features of all 2187 patterns: (2187, 22) [one-hot flags of 7 cells, 1/d0], (2187,) float
    mask of patterns whose centre is FLUID and (2187,) 1/d0, where d0 is the number of
    non-solid neighbours (1/d0 is zero unless the centre is FLUID)."""
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


def jacobi_pair_table(omega: float) -> torch.Tensor:
    """(2187, 14) [J | 0]: the stencil of two damped-Jacobi sweeps on a residual,
    2 omega / d0 at the centre and omega^2 / d0^2 at each FLUID neighbour (neighbour diagonals
    approximated by the cell's own d0); zero for non-FLUID centres."""
    codes = torch.arange(N_CODES)
    digits = torch.stack([(codes // 3**k) % 3 for k in range(7)], 1)
    _, fluid_c, inv_d0 = code_table()
    t = torch.zeros(N_CODES, 14)
    t[:, 0] = (2 * omega - omega**2) * inv_d0
    t[:, 1:7] = (digits[:, 1:] == FLUID).float() * (omega * inv_d0[:, None]) ** 2
    return t * fluid_c[:, None]


class StencilNet(nn.Module):
    """MLP from a cell's neighbourhood pattern to stencil corrections (T0 and T1, 7 weights
    each) for every sweep."""

    def __init__(self, n_sweeps: int, hidden: int):
        super().__init__()
        self.n_sweeps = n_sweeps
        self.net = nn.Sequential(
            nn.Linear(22, hidden),
            nn.SiLU(),
            nn.Linear(hidden, hidden),
            nn.SiLU(),
            nn.Linear(hidden, n_sweeps * 14),
        )
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        return self.net(feats).view(-1, self.n_sweeps, 14)


class LearnedMG(nn.Module):
    """The learned V-cycle's parameters: stencil networks and coarse-correction scales.

    Args:
        n_pre, n_post: pre- and post-smoothing sweeps per coarse level.
        hidden: MLP width.
        omega: Jacobi damping of the initial (untrained) smoother.
        coarsest: coarsening stops once a level has at most this many cells (exact solve there).
        fine_pre: pre-smoothing sweeps on the finest level (0: sawtooth there, the cheapest
            cycle; the finest level dominates the cost).
    """

    def __init__(
        self,
        n_pre: int = 1,
        n_post: int = 1,
        hidden: int = 64,
        omega: float = 0.8,
        coarsest: int = 64,
        fine_pre: int = 0,
    ):
        super().__init__()
        self.config = {
            "n_pre": n_pre,
            "n_post": n_post,
            "hidden": hidden,
            "omega": omega,
            "coarsest": coarsest,
            "fine_pre": fine_pre,
        }
        self.n_pre, self.n_post, self.omega, self.coarsest = n_pre, n_post, omega, coarsest
        self.fine_pre = fine_pre
        sweeps = (fine_pre + n_post, n_pre + n_post)
        self.nets = nn.ModuleList([StencilNet(k, hidden) for k in sweeps])
        self.log_gamma = nn.Parameter(torch.zeros(2))
        feats, fluid_c, _ = code_table()
        self.register_buffer("feats", feats, persistent=False)
        self.register_buffer("fluid_c", fluid_c, persistent=False)
        J = jacobi_pair_table(omega)[:, None]
        self.register_buffer("base0", J.repeat(1, sweeps[0], 1), persistent=False)
        self.register_buffer("base1", J.repeat(1, sweeps[1], 1), persistent=False)

    def tables(self) -> list[torch.Tensor]:
        """Per level group (fine, coarse): (2187, sweeps, 14) pattern tables [T0 | T1]."""
        bases = (self.base0, self.base1)
        return [
            (base + net(self.feats)) * self.fluid_c[:, None, None] for base, net in zip(bases, self.nets, strict=True)
        ]

    def frozen_tables(self, dtype: torch.dtype) -> list[torch.Tensor]:
        """:meth:`tables` without autograd, cached until a parameter changes (inference binds a
        new system every solve; the tables stay the same)."""
        key = (dtype, tuple(p._version for p in self.parameters()))
        if getattr(self, "_frozen_key", None) != key:
            with torch.no_grad():
                self._frozen = [t.to(dtype) for t in self.tables()]
            self._frozen_key = key
        return self._frozen

    def bind(self, system: PoissonSystem, hierarchy: Hierarchy | None = None) -> LearnedVCycle:
        """Specialize the model to one batch of flag grids (codes per level)."""
        return LearnedVCycle(self, system, hierarchy)


class LearnedVCycle:
    """The learned V-cycle bound to a system: r -> f(r). Differentiable in the model's
    parameters when called under autograd (training); call :meth:`precompute` once for inference
    (per-cell stencils gathered once)."""

    def __init__(self, model: LearnedMG, system: PoissonSystem, hierarchy: Hierarchy | None):
        self.model = model
        self.h = hierarchy if hierarchy is not None else Hierarchy(system, model.coarsest)
        self.codes = [neighbour_codes(S.flags) for S in self.h.systems]
        self.weights = None
        self._cycle = VCycle(self.h, self._smooth, [model.fine_pre, model.n_pre], model.n_post)

    def _ghost_factors(self, lvl: int):
        """Cells with a ghost weight at level lvl: (flat index, d0 / D, s = 1 - d0 / D), or None."""
        S = self.h.systems[lvl]
        if S.ghost is None:
            return None
        idx = torch.nonzero(S.ghost.reshape(-1) > 0).squeeze(1)
        sc = 1.0 - S.ghost.reshape(-1)[idx] * S.inv_diag.reshape(-1)[idx]  # d0 / D
        return idx, sc, 1.0 - sc

    def stencils(self, tables) -> list[torch.Tensor]:
        """Per-level per-cell stencils (B, n_sweeps, 7, nx, ny, nz) from the pattern tables."""
        out = []
        dtype = self.h.dtype
        for lvl, codes in enumerate(self.codes):
            t = tables[min(lvl, 1)].to(dtype)  # (2187, S, 14)
            n_s = t.shape[1]
            B, cells = codes.shape[0], codes[0].numel()
            gf = self._ghost_factors(lvl)
            if torch.is_grad_enabled() and t.requires_grad:
                w = t[codes.reshape(-1)]  # (B * cells, S, 14)
                if gf is not None:
                    idx, sc, s = gf
                    wg = (w[idx, :, :7] + s[:, None, None] * w[idx, :, 7:]) * sc[:, None, None]
                    w = w[:, :, :7].index_copy(0, idx, wg)
                else:
                    w = w[:, :, :7]
                w = w.view(B, cells, n_s * 7).transpose(1, 2)
            else:
                rows = t[:, :, :7].reshape(N_CODES, -1).T.contiguous()  # (S*7, 2187)
                flat = codes.reshape(-1)
                w = torch.index_select(rows, 1, flat)  # (S*7, B*cells)
                if gf is not None:
                    idx, sc, s = gf
                    g_rows = t[:, :, 7:].reshape(N_CODES, -1).T
                    c = flat[idx]
                    w[:, idx] = (rows[:, c] + s * g_rows[:, c]) * sc
                w = w.view(n_s * 7, B, cells).transpose(0, 1)
            out.append(w.reshape(B, n_s, 7, *codes.shape[1:]).contiguous())
        return out

    def precompute(self) -> LearnedVCycle:
        """Gather per-cell stencils once (no autograd); later calls reuse them."""
        with torch.no_grad():
            self.weights = self.stencils(self.model.frozen_tables(self.h.dtype))
            self._cycle.coarse_scale = [float(g) for g in self.model.log_gamma.exp()]
        return self

    def _smooth(self, lvl: int, sweep: int, r: torch.Tensor) -> torch.Tensor:
        return apply_stencil(self.weights[lvl][:, sweep], r)

    def __call__(self, r: torch.Tensor) -> torch.Tensor:
        if self.weights is None or torch.is_grad_enabled():
            weights_saved = self.weights
            self.weights = self.stencils(self.model.tables())
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
        WeightsError: missing file, unreadable/corrupt file, wrong format tag, a config field
            out of range (checked before the model is built), or a state dict whose keys/shapes
            do not match the configured model or that holds NaN/Inf. The message names the file
            and the field.
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
    model = LearnedMG(**_checked_config(path, blob.get("config")))
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


def _checked_config(path, cfg) -> dict:
    """Validate a weight file's stored config before any model is built (no allocation)."""
    keys = {"n_pre", "n_post", "hidden", "omega", "coarsest", "fine_pre"}
    if not isinstance(cfg, dict) or set(cfg) != keys:
        raise WeightsError(f"{path}: field 'config' must hold exactly {sorted(keys)}")
    out = {}
    for key, (lo, hi) in CONFIG_BOUNDS.items():
        v = cfg[key]
        if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
            raise WeightsError(f"{path}: field 'config.{key}' must be an integer in [{lo}, {hi}], got {v!r}")
        out[key] = v
    w = cfg["omega"]
    if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w) or not 0 < w < 2:
        raise WeightsError(f"{path}: field 'config.omega' must be a finite number in (0, 2), got {w!r}")
    out["omega"] = float(w)
    return out


def learned_preconditioner(system: PoissonSystem, model: LearnedMG | None = None):
    """Bind a (default: shipped) model to ``system``; returns r -> f(r) for the DCDM solver."""
    model = model if model is not None else load_model()
    return model.bind(system).precompute()
