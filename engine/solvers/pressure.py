"""Pressure projection of MPM liquids on the grid nodes: the incompressible (``projected``) liquid
mode, with free-surface (air) and solid (collider, domain wall) boundaries, and its adjoint.

Method. The MLS-MPM grid is collocated (velocities on nodes), so the projection is an
*approximate projection* (Almgren, Bell, Szymczak, "A numerical method for the incompressible
Navier-Stokes equations based on an approximate projection", SIAM J. Sci. Comput. 1996) with the
liquid/air/solid cell classification of marker-particle liquids (Foster, Fedkiw, "Practical
animation of liquids", SIGGRAPH 2001; Bridson, "Fluid Simulation for Computer Graphics", 2nd
ed., ch. 5). Each node is a cell of the 7-point Poisson operator (:mod:`engine.linsolve`), with
the pressure at the node. Per substep, after the grid update and the colliders' conditions
(stage ``grid_coupling``, ``grid_v[c] -> grid_v[c + 1]``):

1. Flags per node. SOLID: in the domain walls' band (an index <= ``boundary_cells`` or >=
   n - ``boundary_cells`` along some axis: the nodes whose normal velocity the wall condition
   sets; the walls lie on the planes of the band's inner indices, where the particles are
   clamped), inside a collider (signed distance < 0) or within :data:`SOLID_BAND` = 1/2 dx
   outside it: a collider surface within half a cell of a node is treated like a domain wall's
   plane through that node (the walls' band node). The collider condition's contact band
   (engine/coupling/colliders.py ``CONTACT_BAND`` = 1 dx) is wider; its nodes from 1/2 to 1 dx
   out stay in the projection, which may give them back an approaching normal velocity, because
   the scenes that hold liquid between slabs 2 cells apart (benchmarks/validation.py: dam break,
   hydrostatic column, slabs 0.05 dx in front of a node) would have no FLUID node left across
   them. FLUID: not SOLID and
   the liquid's packing phi_i = sum_p w_ip V0_p / (dx^3 o_i) is at least
   :data:`FLUID_FRACTION`: the rest volumes of the liquid particles spread with the quadratic
   B-spline weights of the transfers, per unit of the node's open support o_i (the fraction of
   its B-spline support inside the walls, 1/2 on a wall plane). AIR otherwise. A full node has
   phi = 1; a plane free surface through a node gives it 1/2, so the nodes counted as liquid are
   those whose centre lies inside it. The open support does not discount colliders: a node just
   outside a collider's surface reads as under-filled. (Discounting them as a plane at the
   node's signed distance, as benchmarks/liquid_rest.py measures volume, over-reads thin
   columns between slabs by ~3 % and drives a spurious expansion through the volume correction.)
2. Face velocities between adjacent nodes i, j = i + e_a: the mean of the two nodes' a-components
   between two FLUID nodes; the FLUID node's component between FLUID and AIR (the liquid's
   velocity extrapolated to the surface, as at a MAC grid's air faces); the SOLID node's
   component between FLUID and SOLID (the wall's or collider's velocity, not corrected). Node
   velocities count only where the node has mass.
3. Solve A p = s - D u_f on the FLUID nodes (A the unit 7-point operator: Neumann at SOLID,
   p = 0 at AIR; D the unit-spacing divergence; s the volume correction below) with
   ``SimConfig.pressure_solver`` to ``SimConfig.pressure_rtol``. The face velocities
   u_f - (p_j - p_i) on FLUID-FLUID and FLUID-AIR faces then have divergence s up to the solve's
   residual, the invariant the tests check.
4. Every non-SOLID node's a-component is corrected by the mean of the corrections on its
   corrected a-faces (FLUID-FLUID, FLUID-AIR). A constant correction field is reproduced, so a
   resting column's nodes come to rest exactly. A node of a wall's band (the wall plane and the
   layer beyond it, which the particles at the wall reach; slip wall: only the normal component
   is the wall's) takes the correction of the inner neighbour across the wall plane for its two
   tangential components, so the liquid along a wall is projected with the rest. A SOLID node of
   a collider from 3/2 dx inside to 1/2 dx outside it (signed distance d) likewise adds the
   tangential part (to the collider's surface normal n) of the correction of the node
   round((1 + max(0, -d/dx)) n) away, the first one at least 1/2 dx outside: its normal velocity
   stays what the collider condition left, so the projection never drives liquid into a collider.

Volume correction (Kugelstadt et al., "Implicit density projection for volume conserving
liquids", IEEE TVCG 2019: a divergence source from the grid's density error). Where a FLUID
node is packed above rest by more than :data:`VOLUME_SLACK`, the projection asks for the
expansion s_i = :data:`VOLUME_RATE` (phi_i - 1 - slack) dx / dt, which removes that fraction of
the excess per substep; where a FLUID node whose six neighbours are all FLUID is packed below
rest by more than the slack, the same rate asks for a compression. Nodes next to air or a solid
are not compressed (a free surface, spray and a collider's surface under-fill their nodes by
construction). The velocity this adds lasts one substep: the next projection removes divergent
velocity again.

The pressure is in the units of the unit stencil, p dt / (rho dx) [m/s]; the projection is not
weighted by density, so liquids of different densities in one scene exchange pressure as one
liquid (their buoyancy against each other is not resolved).

Adjoint. For fixed flags the projection is affine in the node velocities and the source,
u' = u - S G A^+ (s - D W u), where W, D, G, S are the face-averaging, divergence, gradient and
node-averaging maps above; the flags are piecewise constant in the particle positions (they
change only when a packing crosses the threshold or a node crosses a collider surface), so their
derivative is zero almost everywhere. The transpose is u_bar = u'_bar + W^T D^T A^+ G^T S^T
(-u'_bar) and s_bar = A^+ G^T S^T (-u'_bar): one more solve with the same symmetric operator and
preconditioner (implicit differentiation, no solver iteration on a tape). The source's adjoint
goes through the packing deposit to the particle positions (:func:`deposit_liquid_adjoint`).

Limits: free rigid bodies (engine/solvers/rigid.py) exchange momentum with the weakly
compressible liquid only; the simulator refuses them with this mode. The liquid's explicit
viscosity keeps its stability limit (engine/scene.py ``check_stability``).

The solve runs on the bounding box of the FLUID nodes grown by one node (every corrected node and
face lies in it), widened to a multiple of 4 nodes per axis where the grid allows, so its cost
follows the liquid, not the domain. While the flags on that box stay equal from one projection to
the next, the operator and its preconditioner are reused (no setup).

Conventions: node arrays are torch tensors (B, n, n, n) in index order (x, y, z), node (i, j, k)
at (i, j, k) dx; velocities (B, n, n, n, 3); a-faces (B, ..., n - 1 along axis a, ...), face i
between nodes i and i + 1.
"""

import numpy as np
import taichi as ti
import torch

from engine import arrays, runtime
from engine.colliders import pack_colliders
from engine.geometry.sdf import SHAPE_DIM, sdf_world
from engine.linsolve import AIR, FLUID, SOLID, PoissonSolver
from engine.materials import FLUID as FLUID_MODEL
from engine.materials import P_E
from engine.solvers.base import NoState, Stage, Substep
from engine.solvers.mpm_kernels import axis_weights, pad4, stencil

ndarray = ti.types.ndarray

#: Packing phi_i (liquid rest volume per node volume) from which a node is FLUID.
FLUID_FRACTION = 0.5
#: Fraction of a FLUID node's over-packing (phi_i - 1 > 0) the projection removes per substep.
VOLUME_RATE = 0.5
#: Packing deviation |phi_i - 1| the volume correction tolerates (particle-scale noise).
VOLUME_SLACK = 0.02
#: Distance [dx] outside a collider within which a node counts as SOLID (module docstring, step 1).
SOLID_BAND = 0.5


# ---------------------------------------------------------------------------- kernels
@ti.kernel
def gather_velocity(grid_mom_mass: ndarray(), grid_v: ndarray(), c: ti.i32, u: ndarray()):
    """u[b, i, j, k] = grid_v[c, b, i, j, k].xyz where the node has mass, else 0."""
    for b, i, j, k in ti.ndrange(u.shape[0], u.shape[1], u.shape[2], u.shape[3]):
        v = ti.Vector.zero(float, 3)
        if grid_mom_mass[b, i, j, k][3] > 0.0:
            v = grid_v[c, b, i, j, k].xyz
        for a in ti.static(range(3)):
            u[b, i, j, k, a] = v[a]


@ti.kernel
def scatter_velocity(u: ndarray(), grid_v: ndarray(), c: ti.i32):
    """grid_v[c, b, i, j, k] = (u[b, i, j, k], 0)."""
    for b, i, j, k in ti.ndrange(u.shape[0], u.shape[1], u.shape[2], u.shape[3]):
        grid_v[c, b, i, j, k] = pad4(ti.Vector([u[b, i, j, k, 0], u[b, i, j, k, 1], u[b, i, j, k, 2]]))


@ti.kernel
def read_velocity_grad(grid_v_grad: ndarray(), c: ti.i32, out: ndarray()):
    """out[b, i, j, k] = grid_v_grad[c, b, i, j, k].xyz."""
    for b, i, j, k in ti.ndrange(out.shape[0], out.shape[1], out.shape[2], out.shape[3]):
        g = grid_v_grad[c, b, i, j, k]
        for a in ti.static(range(3)):
            out[b, i, j, k, a] = g[a]


@ti.kernel
def add_velocity_grad(u_bar: ndarray(), grid_mom_mass: ndarray(), grid_v_grad: ndarray(), c: ti.i32):
    """grid_v_grad[c] += (u_bar, 0) where the node has mass (the adjoint of :func:`gather_velocity`)."""
    for b, i, j, k in ti.ndrange(u_bar.shape[0], u_bar.shape[1], u_bar.shape[2], u_bar.shape[3]):
        if grid_mom_mass[b, i, j, k][3] > 0.0:
            g = ti.Vector([u_bar[b, i, j, k, 0], u_bar[b, i, j, k, 1], u_bar[b, i, j, k, 2], 0.0])
            grid_v_grad[c, b, i, j, k] = grid_v_grad[c, b, i, j, k] + g


@ti.kernel
def deposit_liquid(x: ndarray(), s_in: ti.i32, particles: ndarray(), volume: ndarray(), phi: ndarray(), inv_dx: float):
    """phi[b, i] += sum_p w_ip V0_p / dx^3 over the liquid particles ``particles`` (atomic adds)."""
    for b, q in ti.ndrange(x.shape[1], particles.shape[0]):
        p = particles[q]
        base, fx = stencil(x[s_in, b, p], inv_dx)
        N, _ = axis_weights(fx)
        rest = volume[p] * inv_dx * inv_dx * inv_dx
        for i, j, k in ti.static(ti.ndrange(3, 3, 3)):
            phi[b, base[0] + i, base[1] + j, base[2] + k] += rest * N[0, i] * N[1, j] * N[2, k]


@ti.kernel
def deposit_liquid_adjoint(
    x: ndarray(), s_in: ti.i32, particles: ndarray(), volume: ndarray(), phi_bar: ndarray(), x_grad: ndarray(),
    inv_dx: float,
):  # fmt: skip
    """x_grad[s_in, b, p] += V0_p / dx^3 sum_i grad_x(w_ip) phi_bar[b, i] (a gather per particle)."""
    for b, q in ti.ndrange(x.shape[1], particles.shape[0]):
        p = particles[q]
        base, fx = stencil(x[s_in, b, p], inv_dx)
        N, dN = axis_weights(fx)
        g = ti.Vector.zero(float, 3)
        for i, j, k in ti.static(ti.ndrange(3, 3, 3)):
            f = phi_bar[b, base[0] + i, base[1] + j, base[2] + k]
            g += f * ti.Vector(
                [dN[0, i] * N[1, j] * N[2, k], N[0, i] * dN[1, j] * N[2, k], N[0, i] * N[1, j] * dN[2, k]]
            )
        rest = volume[p] * inv_dx * inv_dx * inv_dx
        x_grad[s_in, b, p] = x_grad[s_in, b, p] + (rest * inv_dx) * g


@ti.kernel
def mark_collider(
    solid: ndarray(), band: ndarray(), normal: ndarray(), c: ti.i32, kind: ti.template(), collider_shape: ndarray(),
    collider_pos: ndarray(), collider_quat: ndarray(), mesh_sdf: ndarray(), g: ti.i32, dx: float,
):  # fmt: skip
    """For collider c (pose at the start of substep g): solid[b, i, j, k] = 1 where node (i, j, k)
    lies inside it or within :data:`SOLID_BAND` dx outside it; there and within 3/2 dx inside it
    (the nodes the particles outside reach) band = 1 and normal = the outward surface normal
    scaled to reach the first node at least 1/2 dx outside (1 + max(0, -d / dx) nodes along it)."""
    for b, i, j, k in ti.ndrange(solid.shape[0], solid.shape[1], solid.shape[2], solid.shape[3]):
        p = ti.Vector([i, j, k]) * dx
        res = sdf_world(kind, collider_shape[c], collider_pos[g, b, c], collider_quat[g, b, c], p, mesh_sdf)
        if res[0] < SOLID_BAND * dx:
            solid[b, i, j, k] = ti.cast(1, ti.i8)
            if res[0] > -1.5 * dx:
                band[b, i, j, k] = ti.cast(1, ti.i8)
                reach = 1.0 + ti.max(0.0, -res[0] / dx)
                for a in ti.static(range(3)):
                    normal[b, i, j, k, a] = res[1 + a] * reach


# ---------------------------------------------------------------------------- the projection
def _pad(t: torch.Tensor, axis: int, before: int, after: int) -> torch.Tensor:
    """Zero-pad the node axis ``axis`` (0, 1, 2) of a (B, nx, ny, nz) tensor."""
    pad = [0, 0] * (3 - axis - 1) + [before, after]
    return torch.nn.functional.pad(t, pad)


def _pair(t: torch.Tensor, axis: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The left (index i) and right (i + 1) node of every face along ``axis``."""
    n = t.shape[axis + 1]
    return t.narrow(axis + 1, 0, n - 1), t.narrow(axis + 1, 1, n - 1)


class NodeProjection:
    """The approximate projection for one set of node flags (module docstring, steps 2-4), and
    its transpose.

    Args:
        flags: (B, n, n, n) int8 node flags (FLUID=0, SOLID=1, AIR=2).
        method, rtol: the Poisson method and relative residual (:class:`engine.linsolve.PoissonSolver`).
        dtype: torch float dtype of the velocities.

    Attributes:
        solver: the :class:`~engine.linsolve.PoissonSolver` (its ``last`` result: the latest solve).
        fluid: (B, n, n, n) float mask of the FLUID nodes.
        rhs: the right-hand side s - D W u of the latest :meth:`apply` (unset before it).
    """

    def __init__(self, flags: torch.Tensor, method: str, rtol: float, dtype: torch.dtype):
        self.flags = flags
        self.dtype = dtype
        fluid, air, solid = flags == FLUID, flags == AIR, flags == SOLID
        self.fluid = fluid.to(dtype)
        self.w_left, self.w_right, self.open, self.inv_open = [], [], [], []
        for a in range(3):
            fl, fr = _pair(fluid, a)
            al, ar = _pair(air, a)
            sl, sr = _pair(solid, a)
            ff = (fl & fr).to(dtype)
            self.w_left.append(0.5 * ff + (fl & ar).to(dtype) + (sl & fr).to(dtype))
            self.w_right.append(0.5 * ff + (al & fr).to(dtype) + (fl & sr).to(dtype))
            opened = (fl & fr) | (fl & ar) | (al & fr)
            self.open.append(opened.to(dtype))
            count = _pad(self.open[a], a, 0, 1) + _pad(self.open[a], a, 1, 0)
            self.inv_open.append(torch.where(count > 0, 1.0 / count.clamp(min=1), 0.0))
        self.solver = PoissonSolver(flags, method, rtol=rtol, dtype=dtype, check=False)

    # -- the linear maps (u: (B, n, n, n, 3); faces: a list of three face tensors)
    def face_velocity(self, u: torch.Tensor) -> list[torch.Tensor]:
        """W u: the face velocities."""
        faces = []
        for a in range(3):
            ul, ur = _pair(u[..., a], a)
            faces.append(self.w_left[a] * ul + self.w_right[a] * ur)
        return faces

    def face_velocity_transpose(self, faces: list[torch.Tensor]) -> torch.Tensor:
        """W^T: face adjoints to node velocity adjoints."""
        comps = []
        for a in range(3):
            comps.append(_pad(self.w_left[a] * faces[a], a, 0, 1) + _pad(self.w_right[a] * faces[a], a, 1, 0))
        return torch.stack(comps, dim=-1)

    def divergence(self, faces: list[torch.Tensor]) -> torch.Tensor:
        """D u_f at the FLUID nodes (unit spacing: [m/s])."""
        d = sum(_pad(f, a, 0, 1) - _pad(f, a, 1, 0) for a, f in enumerate(faces))
        return d * self.fluid

    def divergence_transpose(self, d_bar: torch.Tensor) -> list[torch.Tensor]:
        """D^T: node divergence adjoints to face adjoints."""
        d_bar = d_bar * self.fluid
        out = []
        for a in range(3):
            left, right = _pair(d_bar, a)
            out.append(left - right)
        return out

    def gradient(self, p: torch.Tensor) -> list[torch.Tensor]:
        """G p: the face corrections p_j - p_i on the corrected faces."""
        out = []
        for a in range(3):
            pl, pr = _pair(p, a)
            out.append(self.open[a] * (pr - pl))
        return out

    def gradient_transpose(self, faces: list[torch.Tensor]) -> torch.Tensor:
        """G^T, restricted to the FLUID nodes."""
        p_bar = sum(_pad(self.open[a] * f, a, 1, 0) - _pad(self.open[a] * f, a, 0, 1) for a, f in enumerate(faces))
        return p_bar * self.fluid

    def node_correction(self, faces: list[torch.Tensor]) -> torch.Tensor:
        """S: per node and axis, the mean of the corrections on its corrected faces."""
        comps = [(_pad(f, a, 0, 1) + _pad(f, a, 1, 0)) * self.inv_open[a] for a, f in enumerate(faces)]
        return torch.stack(comps, dim=-1)

    def node_correction_transpose(self, corr_bar: torch.Tensor) -> list[torch.Tensor]:
        """S^T."""
        out = []
        for a in range(3):
            left, right = _pair(corr_bar[..., a] * self.inv_open[a], a)
            out.append(self.open[a] * (left + right))
        return out

    # -- the projection
    def apply(self, u: torch.Tensor, source: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """u' = u - S G p with A p = s - D W u. Returns (u', p)."""
        rhs = -self.divergence(self.face_velocity(u))
        if source is not None:
            rhs = rhs + source * self.fluid
        self.rhs = rhs.contiguous()
        p = self.solver.solve(self.rhs).x
        return u - self.node_correction(self.gradient(p)), p

    def transpose(self, u_bar: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The adjoint of :meth:`apply`: (dL/du, dL/ds) from dL/du'."""
        p_bar = self.gradient_transpose(self.node_correction_transpose(-u_bar))
        b_bar = self.solver.solve(p_bar.contiguous()).x
        return u_bar - self.face_velocity_transpose(self.divergence_transpose(b_bar)), b_bar * self.fluid

    def face_divergence(self, u: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        """D (W u - G p): the divergence of the corrected face field [m/s, unit spacing]."""
        faces = [f - g for f, g in zip(self.face_velocity(u), self.gradient(p), strict=True)]
        return self.divergence(faces)


def spline_cdf(t: np.ndarray) -> np.ndarray:
    """Integral of the quadratic B-spline kernel from -inf to t (in cells), as
    :func:`engine.solvers.mpm_kernels.spline_cdf`."""
    u = np.clip(t, -1.5, 1.5)
    return np.where(u < -0.5, (1.5 + u) ** 3 / 6.0, np.where(u < 0.5, 0.5 + 0.75 * u - u**3 / 3.0,
                                                              1.0 - (1.5 - u) ** 3 / 6.0))  # fmt: skip


def wall_support(n: int, bound: int) -> np.ndarray:
    """(n, n, n): the fraction of each node's B-spline support inside the walls' box
    [bound, n - bound]^3 (in nodes), a product of one factor per axis."""
    i = np.arange(n, dtype=np.float64)
    f = (1.0 - spline_cdf(bound - i)) * (1.0 - spline_cdf(i - (n - bound)))
    return f[:, None, None] * f[None, :, None] * f[None, None, :]


def crop_box(fluid: torch.Tensor, multiple: int = 4) -> tuple[slice, slice, slice] | None:
    """The node box of the FLUID nodes of any batch entry grown by one node and widened to a
    multiple of ``multiple`` nodes per axis where the grid allows; None without FLUID nodes."""
    box = []
    for a in range(3):
        other = tuple(d for d in range(4) if d != a + 1)
        occupied = torch.nonzero(fluid.amax(dim=other)).flatten()
        if occupied.numel() == 0:
            return None
        n = fluid.shape[a + 1]
        lo, hi = max(int(occupied[0]) - 1, 0), min(int(occupied[-1]) + 2, n)
        size = min(-(-(hi - lo) // multiple) * multiple, n)
        hi = min(lo + size, n)
        lo = hi - size
        box.append(slice(lo, hi))
    return tuple(box)


def enclosed(solid: torch.Tensor) -> torch.Tensor:
    """(B, n, n, n) bool: the nodes whose six neighbours are all SOLID (``solid``: bool mask; a
    neighbour past the grid's end counts as SOLID). A FLUID node there has no face to correct and
    a zero row in the Poisson operator, so the projection counts it as SOLID."""
    sp = torch.nn.functional.pad(solid.to(torch.uint8), (1, 1, 1, 1, 1, 1), value=1).bool()
    inner = (slice(None), slice(1, -1), slice(1, -1), slice(1, -1))
    out = torch.ones_like(solid)
    for a in range(3):
        for lo, hi in ((0, -2), (2, None)):
            idx = list(inner)
            idx[a + 1] = slice(lo, hi)
            out &= sp[tuple(idx)]
    return out


def volume_source(phi: torch.Tensor, flags: torch.Tensor, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The volume correction's divergence source at the FLUID nodes (module docstring) and its
    derivative ds/dphi (scale = VOLUME_RATE dx / dt): s = scale (phi - 1 - slack) above 1 + slack
    everywhere, s = scale (phi - 1 + slack) below 1 - slack at the nodes whose six neighbours are
    all FLUID (slack = :data:`VOLUME_SLACK`)."""
    fluid = flags == FLUID
    inner = fluid.clone()
    for a in range(3):
        left, right = _pair(fluid, a)
        inner[(slice(None),) * (a + 1) + (slice(1, None),)] &= left
        inner[(slice(None),) * (a + 1) + (slice(0, -1),)] &= right
    inner[:, 0] = inner[:, -1] = inner[:, :, 0] = inner[:, :, -1] = inner[..., 0] = inner[..., -1] = False
    over = (phi > 1.0 + VOLUME_SLACK) & fluid
    under = (phi < 1.0 - VOLUME_SLACK) & inner
    dsource = scale * (over | under).to(phi.dtype)
    source = dsource * (phi - 1.0 - VOLUME_SLACK * (over.to(phi.dtype) - under.to(phi.dtype)))
    return source, dsource


# ---------------------------------------------------------------------------- the stage
class PressureProjection(NoState):
    """The projected liquid mode as a part of the simulator: one ``grid_coupling`` stage after
    every other grid condition, ``grid_v[condition] -> grid_v[condition + 1]``.

    Args:
        model: the scene (its config's ``pressure_solver``, ``pressure_rtol``).
        batch_size: B.
        mpm: the MPM solver (its grids and particle state).
        condition: the grid velocity set the projection reads.

    Attributes:
        last_info: of the latest forward projection: ``iterations`` and ``residual`` (the worst
            over the batch) of the solve, ``fluid_nodes`` per batch entry, and
            ``divergence_after`` (the largest |D u_f - s| over the FLUID nodes, [m/s] at unit
            spacing), or None before the first.
        last_system: of the latest forward projection with FLUID nodes: its cropped node
            ``flags``, right-hand side ``rhs`` and solved ``pressure`` (unit stencil), and the
            ``crop`` (index tuple into the full grid); None otherwise.
    """

    name = "pressure"

    def __init__(self, model, batch_size: int, mpm, condition: int):
        cfg = model.config
        self.mpm = mpm
        self.batch_size = batch_size
        self.condition = condition
        self.n = cfg.grid_res
        self.dx, self.inv_dx, self.dt = cfg.dx, 1.0 / cfg.dx, cfg.dt
        self.method, self.rtol = cfg.pressure_solver, cfg.pressure_rtol
        self.source_scale = VOLUME_RATE * cfg.dx / cfg.dt
        liquid = np.flatnonzero(np.isin(model.material_id, [m for m, mat in enumerate(model.materials)
                                                             if mat.kind == FLUID_MODEL]))  # fmt: skip
        self.liquid = arrays.upload(liquid, ti.i32) if len(liquid) else None
        self.n_colliders = K = model.n_colliders
        packed = pack_colliders(model.colliders)
        self.kinds = tuple(int(k) for k in packed.kinds)
        real = runtime.real_dtype()
        table = np.zeros((max(K, 1), SHAPE_DIM))
        table[:K] = packed.params
        self.shape = arrays.upload(table, real, ti.types.vector(SHAPE_DIM, real))
        self.mesh_sdf = arrays.upload(np.asarray(packed.mesh_sdf, dtype=np.float64), real)
        n, bound = self.n, cfg.boundary_cells
        idx = torch.arange(n)
        band = (idx <= bound) | (idx >= n - bound)
        self.walls = (band[:, None, None] | band[None, :, None] | band[None, None, :]).expand(batch_size, n, n, n)
        support = torch.as_tensor(wall_support(n, bound), dtype=runtime.torch_dtype())
        #: 1 / o_i: the deposit's scale per node (module docstring, step 1).
        self.inv_support = torch.where(support > 0, 1.0 / support.clamp(min=1e-12), 0.0)
        #: The wall-band nodes that carry mass (the plane and the layer beyond it) and the inner
        #: neighbour whose correction their tangential components take: (band, inner, axes),
        #: applied in order (an edge node takes what its neighbour took along the earlier axis).
        self.ties = []
        for a in range(3):
            for layers, neighbour in (((bound - 1, bound), bound + 1), ((n - bound, n - bound + 1), n - bound - 1)):
                for layer in layers:
                    dst, src = [slice(None)] * 4, [slice(None)] * 4
                    dst[a + 1], src[a + 1] = layer, neighbour
                    self.ties.append((tuple(dst), tuple(src), [t for t in range(3) if t != a]))
        self.last_info: dict | None = None
        self.last_system: dict | None = None
        #: The latest NodeProjection, reused while the cropped flags stay equal (a liquid at rest
        #: or moving slowly keeps its flags for many substeps; a different box never compares equal).
        self._cached: NodeProjection | None = None
        self._band_ties: tuple | None = None

    def stages(self) -> list[Stage]:
        # Its output is a grid velocity set, which the replay tape keeps; the adjoint rebuilds
        # the flags and the solver from the kept grid mass and the substep's input positions.
        return [Stage("grid_coupling", self.project, self.project_adjoint, kept=True)]

    # ------------------------------------------------------------------ pieces
    def _deposit(self, sub: Substep) -> torch.Tensor:
        """(B, n, n, n) sum_p w_ip V0_p / dx^3 over the liquid particles at the substep's start."""
        n, dt = self.n, runtime.torch_dtype()
        deposit = torch.zeros(self.batch_size, n, n, n, dtype=dt)
        if self.liquid is not None:
            buf = sub.state[self.mpm.name]
            deposit_liquid(buf.x, sub.s_in, self.liquid, self.mpm.volume, deposit, self.inv_dx)
        return deposit

    def _flags(self, sub: Substep, phi: torch.Tensor) -> tuple[torch.Tensor, tuple | None]:
        """Node flags (B, n, n, n) int8 (module docstring, step 1) and the colliders' ties (module
        docstring, step 4): (node index, neighbour index, unit normals (m, 3)), or None without."""
        solid = self.walls.to(torch.int8).contiguous()
        ctrl = sub.control
        ties = None
        if self.n_colliders:
            band = torch.zeros_like(solid)
            normal = torch.zeros(*solid.shape, 3, dtype=phi.dtype)
            for c in range(self.n_colliders):
                mark_collider(solid, band, normal, c, self.kinds[c], self.shape, ctrl.pos, ctrl.quat, self.mesh_sdf,
                              sub.g, self.dx)  # fmt: skip
            band_nodes = ((band > 0) & ~self.walls).nonzero()
            if len(band_nodes):
                reach = normal[tuple(band_nodes.T)]
                inner = band_nodes.clone()
                inner[:, 1:] = (band_nodes[:, 1:] + torch.round(reach).long()).clamp(0, self.n - 1)
                n_hat = reach / reach.norm(dim=-1, keepdim=True).clamp(min=1e-12)
                ties = (tuple(band_nodes.T), tuple(inner.T), n_hat)
        flags = torch.full_like(solid, AIR)
        flags[phi >= FLUID_FRACTION] = FLUID
        flags[solid > 0] = SOLID
        flags[(flags == FLUID) & enclosed(flags == SOLID)] = SOLID
        return flags, ties

    def _setup(self, sub: Substep):
        """The projection on the liquid's box, the box, the source there and ds/dphi (None, ...
        without FLUID nodes)."""
        phi = self._deposit(sub) * self.inv_support
        flags, self._band_ties = self._flags(sub, phi)
        box = crop_box(flags == FLUID)
        if box is None:
            return None, None, None, None
        crop = (slice(None), *box)
        cropped = flags[crop].contiguous()
        cached = self._cached
        if cached is not None and cached.flags.shape == cropped.shape and torch.equal(cached.flags, cropped):
            proj = cached  # same flags on the same box: the preconditioner's setup is reused
        else:
            proj = NodeProjection(cropped, self.method, self.rtol, runtime.torch_dtype())
        self._cached = proj
        source, dsource = volume_source(phi[crop], proj.flags, self.source_scale)
        return proj, crop, source, dsource

    def _velocity(self, sub: Substep) -> torch.Tensor:
        grids, n = self.mpm.grids_of(sub), self.n
        u = torch.empty(self.batch_size, n, n, n, 3, dtype=runtime.torch_dtype())
        gather_velocity(grids.mom_mass, grids.v, self.condition, u)
        return u

    # ------------------------------------------------------------------ stages
    def project(self, sub: Substep) -> None:
        grids = self.mpm.grids_of(sub)
        proj, crop, source, _ = self._setup(sub)
        u = self._velocity(sub)
        if proj is None:
            scatter_velocity(u, grids.v, self.condition + 1)
            self.last_info = {"iterations": 0, "residual": 0.0, "fluid_nodes": [0] * self.batch_size,
                              "divergence_after": [0.0] * self.batch_size}  # fmt: skip
            self.last_system = None
            return
        u_box = u[crop].clone()
        u_new, p = proj.apply(u_box, source)
        corr = torch.zeros_like(u)
        corr[crop] = u_box - u_new
        for dst, src, tangential in self.ties:
            corr[dst][..., tangential] += corr[src][..., tangential]
        if self._band_ties is not None:
            dst, src, n_hat = self._band_ties
            c = corr[src]
            corr[dst] += c - (c * n_hat).sum(-1, keepdim=True) * n_hat
        # Nodes without mass keep what gather_velocity read (zero); nothing reads them.
        scatter_velocity((u - corr).contiguous(), grids.v, self.condition + 1)
        res = proj.solver.last
        after = (proj.face_divergence(u_box, p) - source).abs().flatten(1).amax(1)
        self.last_info = {
            "iterations": res.iterations,
            "residual": float(res.residual.max()),
            "fluid_nodes": proj.fluid.flatten(1).sum(1).tolist(),
            "divergence_after": after.tolist(),
        }
        self.last_system = {"flags": proj.flags, "rhs": proj.rhs, "pressure": p, "crop": crop}

    def pressure(self, density: float) -> torch.Tensor:
        """(B, n, n, n) the latest forward projection's pressure [Pa] at the nodes for a liquid of
        ``density`` [kg/m^3]: the solved unit-stencil pressure p times density dx / dt (zero outside
        the FLUID nodes; the projection is not weighted by density, so this is the pressure of a
        scene with one liquid)."""
        if self.last_system is None:
            raise ValueError("pressure: no projection has run yet (step the simulator first)")
        out = torch.zeros(self.batch_size, self.n, self.n, self.n, dtype=self.last_system["pressure"].dtype)
        out[self.last_system["crop"]] = self.last_system["pressure"] * (density * self.dx / self.dt)
        return out

    def project_adjoint(self, sub: Substep) -> None:
        grids, n = self.mpm.grids_of(sub), self.n
        v_grad = self.mpm.v_grad(grids)
        proj, crop, _, dsource = self._setup(sub)
        u_bar = torch.empty(self.batch_size, n, n, n, 3, dtype=runtime.torch_dtype())
        read_velocity_grad(v_grad, self.condition + 1, u_bar)
        if proj is not None:
            h = u_bar.clone()  # (I + E)^T u'_bar, E the wall-plane and collider-band ties
            if self._band_ties is not None:
                dst, src, n_hat = self._band_ties
                c = h[dst]
                h.index_put_(src, c - (c * n_hat).sum(-1, keepdim=True) * n_hat, accumulate=True)
            for dst, src, tangential in reversed(self.ties):
                h[src][..., tangential] += h[dst][..., tangential]
            h_box = h[crop].contiguous()
            t_box, s_bar = proj.transpose(h_box)
            u_bar[crop] += t_box - h_box
        add_velocity_grad(u_bar, grids.mom_mass, v_grad, self.condition)
        if proj is None or self.liquid is None:
            return
        phi_bar = torch.zeros(self.batch_size, n, n, n, dtype=u_bar.dtype)
        phi_bar[crop] = s_bar * dsource
        if bool((phi_bar != 0).any()):
            buf = sub.state[self.mpm.name]
            deposit_bar = (phi_bar * self.inv_support).contiguous()
            deposit_liquid_adjoint(buf.x, sub.s_in, self.liquid, self.mpm.volume, deposit_bar, buf.x.grad, self.inv_dx)


def equation_of_state_mask(model) -> torch.Tensor:
    """(M, 5) ones, with zeros at the bulk modulus E of the liquid (``fluid``-model) materials:
    in the projected mode the material table reaches the MPM stress through this mask, so a
    liquid carries no equation-of-state pressure (its viscous stress remains) and its E gets no
    gradient."""
    mask = torch.ones(len(model.materials), 5, dtype=runtime.torch_dtype())
    for m, material in enumerate(model.materials):
        if material.kind == FLUID_MODEL:
            mask[m, P_E] = 0.0
    return mask
