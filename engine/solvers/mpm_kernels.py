"""MLS-MPM substep kernels (Hu et al. 2018, "A moving least squares material point method with
displacement discontinuity and two-way rigid body coupling", SIGGRAPH), with APIC transfers
(Jiang et al. 2015) and quadratic B-spline weights; their hand-written adjoints.

The MPM part of a substep is ``stress -> p2g -> grid_update`` (to the grid) and ``g2p`` (back to
the particles); :class:`engine.solvers.mpm.MPMSolver` launches them, and the grid boundary
conditions of colliders (engine/coupling/colliders.py) run between the two halves. Every kernel takes
ndarray arguments, so it compiles once per dtype and serves every scene and batch size.

Conventions:
* Particle buffers carry a leading *slot* axis then the batch axis: ``x[slot, b, p]`` (vec3),
  ``v`` (vec3), ``C`` (mat3, APIC affine velocity matrix), ``F`` (mat3, deformation measure, see
  materials.py), ``J`` (scalar). Kernels read slot ``s_in`` and write slot ``s_out`` and never
  overwrite what they read, which Taichi's reverse-mode autodiff requires.
* Grid buffers are ``grid_mom_mass[b, i, j, k]`` (vec4: momentum x, y, z and mass, packed so
  a scatter adds one 4-vector per node: the p2g scatter took ~0.6x the time of separate momentum
  and mass arrays) and ``grid_v`` (velocity after forces and boundary conditions, vec4 with a
  zero w: the transfers gather it, and the g2p adjoint scatters into its gradient, as 4-vectors,
  which took ~0.9x the time of 3-vectors). Node (i, j, k) sits at (i, j, k) * dx.
  ``grid_v[c]`` is the velocity after gravity, walls and the first c collider conditions; g2p
  reads the last one.

Packing correction of the liquid's J. The weakly compressible liquid's J is advected as
J <- J (1 + dt tr C), and nothing ties it to where the particles are: where a collider's
projection puts particles back on its surface, or where the grid's divergence is not the
particles' (sub-cell rearrangement), particles pack above their rest density while J stays,
and the liquid loses volume at no pressure cost. Before the constitutive update each liquid
particle's J is therefore scaled by ``J_scale[b, p]`` from the packing of the particles on the
grid, the density estimate of MPM (Stomakhin et al. 2013, "A material point method for snow
simulation", Sec. 4: rho_i = sum_p w_ip m_p / dx^3 on the grid, interpolated back): the volume
the particles claim, D_i = sum_p w_ip V0_p J_p / dx^3 (:func:`deposit_packing`), is compared with
the node's open fraction O_i, the B-spline-weighted fraction of its support outside the colliders
and the domain walls (:func:`open_fraction_walls`, :func:`open_fraction`; each wall a half-space
at the node's signed distance, fractions multiplied). Where the claim exceeds the room by more
than ``PACKING_SLACK`` the particles are packed denser than their J says, and
``J_scale = 1 - rate eps / (1 + eps)`` with eps = sum_i w_ip r(D_i - O_i) (r a C2 ramp
starting at the slack) relaxes J toward the packing (:func:`packing_scale`), one substep at a
time, the grid-density correction of FLIP/MPM liquids (Kugelstadt et al. 2019, "Implicit density
projection for volume conserving liquids", IEEE TVCG: grid density from the particles, a
correction where it exceeds the rest density). Only over-packing is corrected: free surfaces and
spray underfill their nodes by construction, so under-packing there is not a measurement of J.
The open fraction depends on the collider poses, so the correction is differentiable in them
(Taichi's reverse mode of :func:`open_fraction`); the deposit and the correction have
hand-written adjoints. The correction bounds the packing; what packs liquid against colliders in
the first place, pressure accelerating the free nodes next to a wall lying between nodes, is
removed by the colliders' contact band (``CONTACT_BAND`` in engine/coupling/colliders.py) and
the domain walls' ``bound``. ``rate`` is
``SimConfig.packing_rate``, off by default: it shifts a resting column's pressure by a few
percent (benchmarks/validation.py, case ``hydrostatic``); 0.05 (the explicit substep resolves the
acoustic time dx / c in about two substeps, so J relaxes over ~10 acoustic times) is the value
benchmarks/liquid_rest.py measures.
"""

import taichi as ti

from engine import runtime
from engine.geometry.sdf import sdf_world
from engine.materials import FLUID, N_PARAMS, P_DENSITY, P_E, P_VISCOSITY, kirchhoff_stress

ndarray = ti.types.ndarray

#: Over-packing, as a fraction of a node's open volume, that the packing correction tolerates
#: (particle-scale packing noise of a liquid in motion is below it).
PACKING_SLACK = 0.02


@ti.func
def stencil(xp, inv_dx):
    """Base node and fractional offset (in cells) of a particle at xp."""
    Xp = xp * inv_dx
    base = ti.cast(Xp - 0.5, ti.i32)
    return base, Xp - base


@ti.func
def axis_weights(fx):
    """Quadratic B-spline weights ``N[a, o]`` of the nodes base + o (o = 0, 1, 2) along axis a for
    the fractional position fx (in cells), and their derivatives ``dN[a, o]`` with respect to
    fx[a]. With d = fx - o: N = (1.5 - |d|)^2 / 2 for 1/2 <= |d| < 3/2 (o = 0, 2) and 0.75 - d^2
    for |d| < 1/2 (o = 1). Node (i, j, k) weighs N[0, i] N[1, j] N[2, k].

    The transfers below loop over the 27 nodes as three nested static loops and factor what does
    not depend on the innermost index out of it (partial weight products, the affine term
    A (o - fx) as a running sum of A's columns, sums over k before the j and i factors are
    applied): the same arithmetic as the textbook per-node form, about a third of the flops."""
    N = ti.Matrix.zero(float, 3, 3)
    dN = ti.Matrix.zero(float, 3, 3)
    for a in ti.static(range(3)):
        f = fx[a]
        N[a, 0] = 0.5 * (1.5 - f) ** 2
        dN[a, 0] = f - 1.5
        N[a, 1] = 0.75 - (f - 1.0) ** 2
        dN[a, 1] = 2.0 - 2.0 * f
        N[a, 2] = 0.5 * (f - 0.5) ** 2
        dN[a, 2] = f - 0.5
    return N, dN


@ti.func
def pad4(v):
    """A 3-vector with a zero appended (the layout of ``grid_v``)."""
    return ti.Vector([v[0], v[1], v[2], 0.0])


@ti.func
def _add_jk_moments(moment, w_ij, moment_k, sum_ij, j: ti.template()):
    """``moment`` (row a: sum over nodes o of w g o[a], for a gathered vector g) plus the
    contributions of the nodes (i, j, 0..2): w_ij * moment_k to row 2 (moment_k = sum_k k N_k g)
    and j * sum_ij to row 1 (sum_ij = w_ij sum_k N_k g). Only the first three components of
    the sums count (the 4-vector sums carry a mass or padding in w)."""
    out = moment
    for c in ti.static(range(3)):
        out[2, c] += w_ij * moment_k[c]
        if ti.static(j > 0):
            out[1, c] += j * sum_ij[c]
    return out


@ti.func
def _column4(M, a: ti.template()):
    """Column a of a 3x3 matrix with a zero appended (a momentum increment of a (momentum, mass)
    4-vector)."""
    return ti.Vector([M[0, a], M[1, a], M[2, a], 0.0])


# Reverse mode. Taichi's autodiff (``kernel.grad``) serves the per-particle and per-node kernels
# (stress of the solid models, grid_collide, project_out, rigid bodies). The fluid stress and the
# transfers have hand-written adjoints (stress_adjoint_fluid, p2g_adjoint, g2p_adjoint,
# grid_update_adjoint): differentiating the 27-node stencil
# with Taichi's reverse mode either takes ~100 s to compile (unrolled) or, flattened to one
# (particle, node) pair per iteration, makes every particle adjoint an atomic add - and every
# density adjoint an atomic add on one address - which cost ~7x the forward transfer. The
# hand-written ones gather per particle and match Taichi's autodiff to rounding
# (tests/test_mpm_gradients.py checks them against finite differences).


@ti.kernel
def stress(
    C: ndarray(),
    F: ndarray(),
    J: ndarray(),
    J_scale: ndarray(),
    s_in: ti.i32,
    s_out: ti.i32,
    kind: ti.template(),
    m_id: ti.i32,
    particles: ndarray(),
    volume: ndarray(),
    params: ndarray(),
    affine: ndarray(),
    dt: float,
    inv_dx: float,
):
    """Constitutive update of every particle and its MLS-MPM affine momentum matrix
    ``affine = -dt V0 (4/dx^2) tau + m C`` (Hu et al. 2018, eq. 29 with APIC), written to
    ``affine[b, p]``, for the particles ``particles`` of material ``m_id`` (model ``kind``). One
    launch per material, kept apart from the scatter: each kernel's adjoint stays small. A
    liquid's J is first scaled by ``J_scale[b, p]`` (the packing correction, module docstring)."""
    for b, q in ti.ndrange(C.shape[1], particles.shape[0]):
        p = particles[q]
        row = ti.Vector([params[b, m_id, r] for r in ti.static(range(N_PARAMS))])
        Cp = C[s_in, b, p]
        Jp = J[s_in, b, p]
        if ti.static(kind == FLUID):
            Jp = Jp * J_scale[b, p]
        tau, F_new, J_new = kirchhoff_stress(kind, F[s_in, b, p], Jp, Cp, row, dt)
        F[s_out, b, p] = F_new
        J[s_out, b, p] = J_new
        V0 = volume[p]
        affine[b, p] = (-dt * V0 * 4.0 * inv_dx * inv_dx) * tau + (V0 * row[P_DENSITY]) * Cp


@ti.kernel
def stress_adjoint_fluid(
    C: ndarray(),
    J: ndarray(),
    J_scale: ndarray(),
    s_in: ti.i32,
    s_out: ti.i32,
    m_id: ti.i32,
    particles: ndarray(),
    volume: ndarray(),
    params: ndarray(),
    affine_grad: ndarray(),
    J_scale_grad: ndarray(),
    params_grad: ndarray(),
    dt: float,
    inv_dx: float,
    need_params: ti.template(),
):
    """Hand-written adjoint of :func:`stress` for the fluid model (materials.kirchhoff_stress):
    with J0 = s J (s = ``J_scale``), J' = J0 (1 + dt tr C), tau = E J' (J' - 1) I + eta J' (C + C^T)
    and A = k tau + V0 rho C (k = -4 dt V0 / dx^2), from A_bar and J'_bar:
    tau_bar = k A_bar; J'_bar += E (2 J' - 1) tr(tau_bar) + eta tau_bar : (C + C^T);
    C_bar += V0 rho A_bar + eta J' (tau_bar + tau_bar^T) + dt J0 J'_bar I; J0_bar = (1 + dt tr C) J'_bar,
    J_bar = s J0_bar and s_bar = J J0_bar (written to ``J_scale_grad``);
    and, with ``need_params``, E_bar = J' (J' - 1) tr(tau_bar), eta_bar = J' tau_bar : (C + C^T),
    rho_bar = V0 A_bar : C (atomic adds). Taichi's generated adjoint of the same kernel took ~2.5x
    the forward; this one is one pass over the particles' state.

    It *writes* the adjoints of C and J in slot s_in: it is their only writer in a substep's
    adjoint (see Simulator._substep_backward) before :func:`deposit_packing_adjoint` adds to J's,
    so they need no zeroing beforehand. F (copied unchanged by the fluid model) has a zero adjoint
    for fluid particles: nothing reads it, and the rollout's output F takes no gradient
    (RolloutFunction), so it is not propagated."""
    for b, q in ti.ndrange(C.shape[1], particles.shape[0]):
        p = particles[q]
        E, eta, rho = params[b, m_id, P_E], params[b, m_id, P_VISCOSITY], params[b, m_id, P_DENSITY]
        Cp = C[s_in, b, p]
        scale = J_scale[b, p]
        Jp = J[s_in, b, p] * scale
        growth = 1.0 + dt * Cp.trace()
        J_new = Jp * growth
        strain_rate = Cp + Cp.transpose()
        V0 = volume[p]
        A_bar = affine_grad[b, p]
        tau_bar = (-dt * V0 * 4.0 * inv_dx * inv_dx) * A_bar
        tr_tau_bar = tau_bar.trace()
        tau_bar_rate = (tau_bar * strain_rate).sum()
        J_new_bar = J.grad[s_out, b, p] + E * (2.0 * J_new - 1.0) * tr_tau_bar + eta * tau_bar_rate
        C_bar = (V0 * rho) * A_bar + (eta * J_new) * (tau_bar + tau_bar.transpose())
        C.grad[s_in, b, p] = C_bar + (dt * Jp * J_new_bar) * ti.Matrix.identity(float, 3)
        J.grad[s_in, b, p] = scale * growth * J_new_bar
        J_scale_grad[b, p] = J[s_in, b, p] * growth * J_new_bar
        if ti.static(need_params):
            params_grad[b, m_id, P_E] += J_new * (J_new - 1.0) * tr_tau_bar
            params_grad[b, m_id, P_VISCOSITY] += J_new * tau_bar_rate
            params_grad[b, m_id, P_DENSITY] += V0 * (A_bar * Cp).sum()


# Scatters (p2g, g2p_adjoint) come in two forms running the same per-particle function:
# * over all particles with atomic adds (GPU);
# * over particles binned into slabs of SLAB_WIDTH base-node columns along x, one colour (even or
#   odd slabs) per launch, with plain adds (CPU): a particle writes nodes base..base+2, so slabs
#   two apart never touch the same node and each slab is one serial task. CPU float atomics are
#   compare-and-swap loops; they made the scatter ~2.5x slower than the same loop without them.
#   The slab form costs extra launches, which small scenes do not win back: measured env steps
#   (when only the slab form binned), 672 particles at B = 1 took 0.051 s with slabs and 0.034 s
#   without; from ~2k particles (or B = 8 of 672) slabs were faster. Hence the threshold on B * N.
#   Particles are binned with either form: the grid kernels use the bins to skip empty planes.
# On the CPU both forward forms are bitwise reproducible: a slab is summed serially in particle
# order, and the all-particle form (:func:`p2g`, :func:`deposit_packing`) runs there as one serial
# pass in particle order, its atomics demoted to plain adds. Parallel float atomics would add in
# an order set by thread timing (runs then differed by ~1e-7 relative in f32); the serial pass
# serves scenes below SLAB_MIN_PARTICLES, whose scatter is a small part of a step (measured:
# benchmarks/results/env_determinism.json). The adjoint scatters (g2p_adjoint) stay parallel.
SLAB_WIDTH = 2
SLAB_MIN_PARTICLES = 4096
# Taichi 1.7's CPU backend hands a parallel loop to its threads in blocks of at least 512
# iterations, so a loop over a few dozen slabs (or grid planes) runs on one thread. A slab kernel
# therefore loops over TASK_SPREAD iterations per slab, of which the first does the slab's work:
# each block then holds at most one slab, and the slabs spread over the threads (measured: a
# 64-iteration loop of heavy iterations took 0.17 s either way on 2 threads; spread, 0.086 s).
TASK_SPREAD = 1024


@ti.func
def _slab_tasks(slab_start: ti.template()):
    """Iteration count of a slab-colour loop (see :func:`_slab_task`)."""
    return slab_start.shape[0] * (slab_start.shape[1] // 2) * TASK_SPREAD


@ti.func
def _slab_task(slab_start: ti.template(), t, colour):
    """Scene b and particle range [lo, hi) (in ``order``) of iteration t of a slab-colour loop;
    empty except for one iteration in TASK_SPREAD."""
    b, lo, hi = 0, 0, 0
    if t % TASK_SPREAD == 0:
        half = slab_start.shape[1] // 2
        b = t // TASK_SPREAD // half
        slab = 2 * (t // TASK_SPREAD % half) + colour
        if slab + 1 < slab_start.shape[1]:
            lo, hi = slab_start[b, slab], slab_start[b, slab + 1]
    return b, lo, hi


@ti.kernel
def bin_particles(x: ndarray(), s_in: ti.i32, inv_dx: float, slab_start: ndarray(), rank: ndarray(), order: ndarray()):
    """Counting sort of particles by slab (base node // SLAB_WIDTH along x): particles of slab s of
    scene b are ``order[b, slab_start[b, s]:slab_start[b, s + 1]]``, in particle order. The
    counting runs serially per scene: parallel atomic increments of a few dozen counters made the
    kernel ~1.4x slower (the threads contend for the counters' cache lines), and a serial count
    makes the order, and so the slab scatters' summation order, the same on every run."""
    for b in range(slab_start.shape[0]):
        for s in range(slab_start.shape[1]):
            slab_start[b, s] = 0
        for p in range(x.shape[2]):
            base, _ = stencil(x[s_in, b, p], inv_dx)
            s = base[0] // SLAB_WIDTH + 1
            rank[b, p] = slab_start[b, s]
            slab_start[b, s] = slab_start[b, s] + 1
        for s in range(1, slab_start.shape[1]):
            slab_start[b, s] = slab_start[b, s] + slab_start[b, s - 1]
    for b, p in ti.ndrange(x.shape[1], x.shape[2]):
        base, _ = stencil(x[s_in, b, p], inv_dx)
        order[b, slab_start[b, base[0] // SLAB_WIDTH] + rank[b, p]] = p


def _serial_scatter() -> bool:
    """Whether the all-particle scatters run as one ordered serial pass (on the CPU, see above)."""
    return runtime.on_cpu()


@ti.func
def _scatter_add(grid: ti.template(), b, node, value, atomic: ti.template()):
    """grid[b, node] += value, as an atomic add or (slab kernels, no races) a plain one."""
    if ti.static(atomic):
        grid[b, node[0], node[1], node[2]] += value
    else:
        grid[b, node[0], node[1], node[2]] = grid[b, node[0], node[1], node[2]] + value


@ti.func
def _scatter_add5(grid: ti.template(), s, b, node, value, atomic: ti.template()):
    """grid[s, b, node] += value for a stack of grids (see :func:`_scatter_add`)."""
    if ti.static(atomic):
        grid[s, b, node[0], node[1], node[2]] += value
    else:
        grid[s, b, node[0], node[1], node[2]] = grid[s, b, node[0], node[1], node[2]] + value


@ti.func
def _p2g_particle(
    b,
    p,
    x: ti.template(),
    v: ti.template(),
    s_in,
    material_id: ti.template(),
    volume: ti.template(),
    params: ti.template(),
    affine: ti.template(),
    grid_mom_mass: ti.template(),
    inv_dx,
    atomic: ti.template(),
):
    """Particle-to-grid scatter of one particle's APIC momentum m v + affine (x_i - x_p) and mass.

    With x_i - x_p = (o - fx) dx for node base + o, the (momentum, mass) 4-vector is
    q(o) = q(0) + (A dx) o with a zero mass row."""
    base, fx = stencil(x[s_in, b, p], inv_dx)
    N, _ = axis_weights(fx)
    mass = volume[p] * params[b, material_id[p], P_DENSITY]
    A_dx = affine[b, p] / inv_dx
    momentum = mass * v[s_in, b, p] - A_dx @ fx
    q_i = ti.Vector([momentum[0], momentum[1], momentum[2], mass])
    for i in ti.static(range(3)):
        q_ij = q_i
        for j in ti.static(range(3)):
            q = q_ij
            w_ij = N[0, i] * N[1, j]
            for k in ti.static(range(3)):
                _scatter_add(grid_mom_mass, b, base + ti.Vector([i, j, k]), (w_ij * N[2, k]) * q, atomic)
                q += _column4(A_dx, 2)
            q_ij += _column4(A_dx, 1)
        q_i += _column4(A_dx, 0)


@ti.kernel
def p2g(
    x: ndarray(),
    v: ndarray(),
    s_in: ti.i32,
    material_id: ndarray(),
    volume: ndarray(),
    params: ndarray(),
    affine: ndarray(),
    grid_mom_mass: ndarray(),
    inv_dx: float,
):
    """Particle-to-grid scatter of mass and APIC momentum: atomic adds in parallel, or on the CPU
    plain adds in one serial pass in particle order (reproducible; see SLAB_WIDTH's note)."""
    ti.loop_config(serialize=ti.static(_serial_scatter()))
    for b, p in ti.ndrange(x.shape[1], x.shape[2]):
        atomic = ti.static(not _serial_scatter())
        _p2g_particle(b, p, x, v, s_in, material_id, volume, params, affine, grid_mom_mass, inv_dx, atomic)


@ti.kernel
def p2g_slabs(
    x: ndarray(),
    v: ndarray(),
    s_in: ti.i32,
    material_id: ndarray(),
    volume: ndarray(),
    params: ndarray(),
    affine: ndarray(),
    grid_mom_mass: ndarray(),
    inv_dx: float,
    slab_start: ndarray(),
    order: ndarray(),
    colour: ti.i32,
):
    """:func:`p2g` for the slabs of one colour (see :func:`bin_particles`), plain adds."""
    for t in range(_slab_tasks(slab_start)):
        b, lo, hi = _slab_task(slab_start, t, colour)
        for q in range(lo, hi):
            p = order[b, q]
            _p2g_particle(b, p, x, v, s_in, material_id, volume, params, affine, grid_mom_mass, inv_dx, False)


# Grid kernels loop in parallel over rows (b, i, j) and serially along k: a flattened 4-D range
# costs Taichi an integer division per index per node, which made these kernels 2-3x slower on
# CPU, and a parallel loop over planes (b, i) alone is too short to be split among CPU threads
# (see TASK_SPREAD).


@ti.kernel
def zero_grid(grid: ndarray()):
    """grid = 0 for a (B, n, n, n) grid, looping in parallel over rows (see above)."""
    for b, i, j in ti.ndrange(grid.shape[0], grid.shape[1], grid.shape[2]):
        for k in range(grid.shape[3]):
            grid[b, i, j, k] = ti.zero(grid[b, i, j, k])


@ti.func
def _wall_free(node, v, n, bound):
    """1 where velocity component a may stay, 0 where the slip wall removes it: components into
    a wall at nodes within ``bound`` of it (<= bound from the low side, >= n - bound from the high
    side, matching the particle clamp of :func:`g2p`)."""
    free = ti.Vector([1.0, 1.0, 1.0])
    for a in ti.static(range(3)):
        if (node[a] <= bound and v[a] < 0.0) or (node[a] >= n - bound and v[a] > 0.0):
            free[a] = 0.0
    return free


@ti.func
def _plane_in_use(slab_start: ti.template(), b, i):
    """Whether any particle of scene b reaches grid plane x = i, by the slab bins of the substep
    (:func:`bin_particles`): those of slabs i // 2 - 1 and i // 2 (a particle reaches base..base
    + 2). Grid kernels skip the other planes: nothing scatters there, and no gather reads them."""
    s = i // SLAB_WIDTH
    return slab_start[b, s + 1] > slab_start[b, ti.max(s - 1, 0)]


@ti.func
def _clear_node(grid: ti.template(), b, i, j, k, value):
    """Zero node (i, j, k) of grid (holding value), writing only where non-zero: most nodes are
    empty, and a NaN (!= 0) is cleared too."""
    if (value != 0.0).any():
        grid[b, i, j, k] = ti.zero(value)


@ti.kernel
def grid_update(
    grid_mom_mass: ndarray(),
    grid_v: ndarray(),
    gravity: ti.math.vec3,
    dt: float,
    bound: ti.i32,
    clear: ti.template(),
    slab_start: ndarray(),
):
    """Grid momentum -> velocity, plus gravity and slip domain walls; writes ``grid_v[0]`` on the
    planes in use (:func:`_plane_in_use`). With ``clear`` it also zeroes grid_mom_mass for
    the next scatter (saves a pass over memory), else leaves it for the adjoint."""
    n = grid_mom_mass.shape[1]
    for b, i, j in ti.ndrange(grid_mom_mass.shape[0], n, n):
        if _plane_in_use(slab_start, b, i):
            for k in range(n):
                node = grid_mom_mass[b, i, j, k]
                m = node[3]
                mv = node.xyz
                v = ti.Vector.zero(float, 3)
                if m > 0.0:
                    v = mv / m + dt * gravity
                    v *= _wall_free(ti.Vector([i, j, k]), v, n, bound)
                if ti.static(clear):
                    _clear_node(grid_mom_mass, b, i, j, k, node)
                grid_v[0, b, i, j, k] = pad4(v)


@ti.kernel
def grid_update_adjoint(
    grid_mom_mass: ndarray(),
    grid_v_grad: ndarray(),
    grid_mom_mass_grad: ndarray(),
    gravity: ti.math.vec3,
    dt: float,
    bound: ti.i32,
    slab_start: ndarray(),
    other_grad: ndarray(),
    add_other: ti.template(),
):
    """Adjoint of :func:`grid_update` (on the planes in use); *writes* (not accumulates)
    ``grid_mom_mass_grad`` = (mv_bar, m_bar): with v = mask (mv / m + dt g), mv_bar = mask v_bar / m and
    m_bar = -sum_a mask_a v_bar_a mv_a / m^2 (zero where the node is empty). With ``add_other``
    it adds ``other_grad``, the adjoint of grid momentum and mass from later readers of the grid
    (the sensors' contact; ``other_grad`` may be ``grid_mom_mass_grad`` itself).

    It is the last reader of its inputs, so it leaves them as the previous substep needs them:
    the grid velocity adjoints (every grid_v_grad[c]) zero, as that substep's adjoint accumulates
    into them, and grid_mom_mass zero, ready for a scatter."""
    n = grid_mom_mass.shape[1]
    for b, i, j in ti.ndrange(grid_mom_mass.shape[0], n, n):
        if _plane_in_use(slab_start, b, i):
            for k in range(n):
                node = grid_mom_mass[b, i, j, k]
                m = node[3]
                mv = node.xyz
                mv_bar = ti.Vector.zero(float, 3)
                m_bar = 0.0
                if m > 0.0:
                    v = mv / m + dt * gravity
                    mv_bar = _wall_free(ti.Vector([i, j, k]), v, n, bound) * grid_v_grad[0, b, i, j, k].xyz / m
                    m_bar = -mv_bar.dot(mv) / m
                bar = ti.Vector([mv_bar[0], mv_bar[1], mv_bar[2], m_bar])
                if ti.static(add_other):
                    bar += other_grad[b, i, j, k]
                grid_mom_mass_grad[b, i, j, k] = bar
                _clear_node(grid_mom_mass, b, i, j, k, node)
                for c in range(grid_v_grad.shape[0]):
                    if (grid_v_grad[c, b, i, j, k] != 0.0).any():
                        grid_v_grad[c, b, i, j, k] = ti.zero(grid_v_grad[c, b, i, j, k])


@ti.kernel
def g2p(
    x: ndarray(),
    s_in: ti.i32,
    x_out: ndarray(),
    s_x: ti.i32,
    v_out: ndarray(),
    s_v: ti.i32,
    C_out: ndarray(),
    s_C: ti.i32,
    grid_v: ndarray(),
    g_final: ti.i32,
    dt: float,
    inv_dx: float,
    lo: float,
    hi: float,
):
    """Grid-to-particle APIC transfer from ``grid_v[g_final]`` and advection, clamped to the
    domain interior. Writes the new position to ``x_out[s_x]`` (colliders project it further)."""
    for b, p in ti.ndrange(x.shape[1], x.shape[2]):
        xp = x[s_in, b, p]
        base, fx = stencil(xp, inv_dx)
        N, _ = axis_weights(fx)
        # new_C = (4/dx) sum_o w gv (o - fx)^T; column a is (4/dx) (moment[a] - fx[a] new_v), with
        # moment[a] = sum_o w gv o[a] summed over k first, then j, then i (each weight factor applied
        # once per partial sum).
        new_v = ti.Vector.zero(float, 3)
        moment = ti.Matrix.zero(float, 3, 3)
        for i in ti.static(range(3)):
            sum_i = ti.Vector.zero(float, 3)  # sum over (j, k) of N_j N_k gv
            for j in ti.static(range(3)):
                sum_k = ti.Vector.zero(float, 3)  # sum over k of N_k gv
                moment_k = ti.Vector.zero(float, 3)  # sum over k of k N_k gv
                for k in ti.static(range(3)):
                    gv = N[2, k] * grid_v[g_final, b, base[0] + i, base[1] + j, base[2] + k].xyz
                    sum_k += gv
                    if ti.static(k > 0):
                        moment_k += k * gv
                w_ij = N[0, i] * N[1, j]
                sum_ij = w_ij * sum_k
                sum_i += sum_ij
                moment = _add_jk_moments(moment, w_ij, moment_k, sum_ij, j)
            new_v += sum_i
            if ti.static(i > 0):
                for c in ti.static(range(3)):
                    moment[0, c] += i * sum_i[c]
        x_out[s_x, b, p] = ti.math.clamp(xp + dt * new_v, lo, hi)
        v_out[s_v, b, p] = new_v
        C_out[s_C, b, p] = (4.0 * inv_dx) * (moment - fx.outer_product(new_v)).transpose()


@ti.kernel
def p2g_adjoint(
    x: ndarray(),
    v: ndarray(),
    s_in: ti.i32,
    material_id: ndarray(),
    volume: ndarray(),
    params: ndarray(),
    affine: ndarray(),
    grid_mom_mass_grad: ndarray(),
    x_grad: ndarray(),
    v_grad: ndarray(),
    affine_grad: ndarray(),
    mass_grad: ndarray(),
    inv_dx: float,
):
    """Adjoint of :func:`p2g`, one particle per iteration (a gather: no atomics).

    With w_i the node weight, dpos_i = (i - fx) dx and (G_i, g_i) = ``grid_mom_mass_grad`` the
    adjoints of grid momentum and mass, the scatter ``mv_i += w_i (m v + A dpos_i)``,
    ``m_i += w_i m`` gives
    v_bar += m sum w G; A_bar = sum w G dpos^T; m_bar = sum w (G.v + g);
    fx_bar = sum grad(w) (G.(m v + A dpos) + g m) - dx w A^T G; x_bar += fx_bar / dx.
    Accumulates into ``x_grad[s_in]`` (after :func:`g2p_adjoint`); writes ``v_grad[s_in]`` (p2g
    is the only reader of v in a substep), ``affine_grad`` and the
    particle mass adjoint ``mass_grad`` (reduced into the density gradient by
    :func:`density_grad`)."""
    for b, p in ti.ndrange(x.shape[1], x.shape[2]):
        base, fx = stencil(x[s_in, b, p], inv_dx)
        N, dN = axis_weights(fx)
        dx = 1.0 / inv_dx
        mass = volume[p] * params[b, material_id[p], P_DENSITY]
        vp = v[s_in, b, p]
        A = affine[b, p]
        A_dx = A * dx
        # 4-vectors below pair a momentum adjoint sum (xyz) with the mass adjoint sum (w).
        Gg_sum = ti.Vector.zero(float, 4)  # sum_o w (G, g)
        G_moment = ti.Matrix.zero(float, 3, 3)  # row a: sum_o w G o[a], summed over k, then j, then i
        fx_bar = ti.Vector.zero(float, 3)
        momentum = mass * vp - A_dx @ fx
        q_i = ti.Vector([momentum[0], momentum[1], momentum[2], mass])  # as in _p2g_particle
        for i in ti.static(range(3)):
            q_ij = q_i
            Gg_i = ti.Vector.zero(float, 4)  # sum over (j, k) of N_j N_k (G, g)
            for j in ti.static(range(3)):
                q = q_ij
                w_ij = N[0, i] * N[1, j]
                s_N, s_dN = 0.0, 0.0  # sum_k N[2, k] s_k and sum_k dN[2, k] s_k, s = G.q + g m
                Gg_k = ti.Vector.zero(float, 4)  # sum over k of N_k (G, g)
                G_kk = ti.Vector.zero(float, 4)  # sum over k of k N_k (G, g); w unused
                for k in ti.static(range(3)):
                    Gg = grid_mom_mass_grad[b, base[0] + i, base[1] + j, base[2] + k]
                    NGg = N[2, k] * Gg
                    Gg_k += NGg
                    if ti.static(k > 0):
                        G_kk += k * NGg
                    s = Gg.dot(q)
                    s_N += N[2, k] * s
                    s_dN += dN[2, k] * s
                    q += _column4(A_dx, 2)
                fx_bar += ti.Vector([dN[0, i] * N[1, j] * s_N, N[0, i] * dN[1, j] * s_N, w_ij * s_dN])
                Gg_ij = w_ij * Gg_k
                Gg_i += Gg_ij
                G_moment = _add_jk_moments(G_moment, w_ij, G_kk, Gg_ij, j)
                q_ij += _column4(A_dx, 1)
            Gg_sum += Gg_i
            if ti.static(i > 0):
                for c in ti.static(range(3)):
                    G_moment[0, c] += i * Gg_i[c]
            q_i += _column4(A_dx, 0)
        G_sum = Gg_sum.xyz
        fx_bar -= A_dx.transpose() @ G_sum
        x_grad[s_in, b, p] = x_grad[s_in, b, p] + inv_dx * fx_bar  # not `+=`: that is an atomic add
        v_grad[s_in, b, p] = mass * G_sum
        affine_grad[b, p] = dx * (G_moment - fx.outer_product(G_sum)).transpose()
        mass_grad[b, p] = G_sum.dot(vp) + Gg_sum[3]


@ti.kernel
def density_grad(material_id: ndarray(), volume: ndarray(), mass_grad: ndarray(), params_grad: ndarray()):
    """params_grad[b, m, density] += sum over the particles p of material m of V_p mass_grad[b, p]
    (mass = V density); one serial sum per scene, so no atomic contention on one address."""
    for b in range(mass_grad.shape[0]):
        for p in range(mass_grad.shape[1]):
            m = material_id[p]
            params_grad[b, m, P_DENSITY] = params_grad[b, m, P_DENSITY] + volume[p] * mass_grad[b, p]


@ti.func
def _g2p_adjoint_particle(
    b,
    p,
    x: ti.template(),
    s_in,
    v_out: ti.template(),
    v_out_grad: ti.template(),
    s_v,
    C_out_grad: ti.template(),
    s_C,
    x_out_grad: ti.template(),
    s_x,
    grid_v: ti.template(),
    grid_v_grad: ti.template(),
    g_final,
    x_grad: ti.template(),
    dt,
    inv_dx,
    lo,
    hi,
    atomic: ti.template(),
):
    """Adjoint of :func:`g2p` for one particle.

    The advection x' = clamp(x + dt v) sends x'_bar to x_bar and dt x'_bar to v_bar where the
    clamp is inactive. Then with v = sum w_i gv_i and C = (4/dx) sum w_i gv_i d_i^T
    (d_i = i - fx): the node velocity adjoint gv_bar_i = w_i v_bar + (4/dx) w_i C_bar d_i is
    scattered into ``grid_v_grad[g_final]``, and x_bar += (1/dx) sum [grad(w_i) (gv_i.v_bar +
    (4/dx) gv_i.C_bar d_i)] - (4/dx) C_bar^T v into ``x_grad[s_in]`` (sum w_i gv_i is the primal
    output velocity ``v_out[s_v]``). ``v_out_grad[s_v]`` is read, not updated. ``x_grad[s_in]`` is
    written, not accumulated: this is the first adjoint kernel to reach the substep's input."""
    xp = x[s_in, b, p]
    v_new = v_out[s_v, b, p]
    x_new = xp + dt * v_new
    inside = ti.Vector([ti.select(x_new[a] > lo, ti.select(x_new[a] < hi, 1.0, 0.0), 0.0) for a in ti.static(range(3))])
    x_out_bar = inside * x_out_grad[s_x, b, p]
    base, fx = stencil(xp, inv_dx)
    N, dN = axis_weights(fx)
    C_bar = (4.0 * inv_dx) * C_out_grad[s_C, b, p]
    fx_bar = ti.Vector.zero(float, 3)
    u_i = pad4(v_out_grad[s_v, b, p] + dt * x_out_bar - C_bar @ fx)  # u(o) = v_bar + C_bar (o - fx), padded
    for i in ti.static(range(3)):
        u_ij = u_i
        for j in ti.static(range(3)):
            u = u_ij
            w_ij = N[0, i] * N[1, j]
            s_N, s_dN = 0.0, 0.0  # sum_k N[2, k] gv_k.u_k and sum_k dN[2, k] gv_k.u_k
            for k in ti.static(range(3)):
                node = base + ti.Vector([i, j, k])
                gv = grid_v[g_final, b, node[0], node[1], node[2]]
                _scatter_add5(grid_v_grad, g_final, b, node, (w_ij * N[2, k]) * u, atomic)
                s = gv.dot(u)
                s_N += N[2, k] * s
                s_dN += dN[2, k] * s
                u += _column4(C_bar, 2)
            fx_bar += ti.Vector([dN[0, i] * N[1, j] * s_N, N[0, i] * dN[1, j] * s_N, w_ij * s_dN])
            u_ij += _column4(C_bar, 1)
        u_i += _column4(C_bar, 0)
    x_grad[s_in, b, p] = x_out_bar + inv_dx * (fx_bar - C_bar.transpose() @ v_new)


@ti.kernel
def g2p_adjoint(
    x: ndarray(),
    s_in: ti.i32,
    v_out: ndarray(),
    v_out_grad: ndarray(),
    s_v: ti.i32,
    C_out_grad: ndarray(),
    s_C: ti.i32,
    x_out_grad: ndarray(),
    s_x: ti.i32,
    grid_v: ndarray(),
    grid_v_grad: ndarray(),
    g_final: ti.i32,
    x_grad: ndarray(),
    dt: float,
    inv_dx: float,
    lo: float,
    hi: float,
):
    """Adjoint of :func:`g2p`, atomic scatter into the grid adjoint: the primal inputs and
    outputs (x, v_out, grid_v) with the adjoints of the outputs (v_out_grad, C_out_grad,
    x_out_grad) give grid_v_grad[g_final] (accumulated) and x_grad[s_in] (written)."""
    for b, p in ti.ndrange(x.shape[1], x.shape[2]):
        _g2p_adjoint_particle(
            b, p, x, s_in, v_out, v_out_grad, s_v, C_out_grad, s_C, x_out_grad, s_x, grid_v, grid_v_grad,
            g_final, x_grad, dt, inv_dx, lo, hi, True,
        )  # fmt: skip


@ti.kernel
def g2p_adjoint_slabs(
    x: ndarray(),
    s_in: ti.i32,
    v_out: ndarray(),
    v_out_grad: ndarray(),
    s_v: ti.i32,
    C_out_grad: ndarray(),
    s_C: ti.i32,
    x_out_grad: ndarray(),
    s_x: ti.i32,
    grid_v: ndarray(),
    grid_v_grad: ndarray(),
    g_final: ti.i32,
    x_grad: ndarray(),
    dt: float,
    inv_dx: float,
    lo: float,
    hi: float,
    slab_start: ndarray(),
    order: ndarray(),
    colour: ti.i32,
):
    """:func:`g2p_adjoint` for the slabs of one colour, plain adds (see :func:`p2g_slabs`)."""
    for t in range(_slab_tasks(slab_start)):
        b, first, end = _slab_task(slab_start, t, colour)
        for q in range(first, end):
            p = order[b, q]
            _g2p_adjoint_particle(
                b, p, x, s_in, v_out, v_out_grad, s_v, C_out_grad, s_C, x_out_grad, s_x, grid_v,
                grid_v_grad, g_final, x_grad, dt, inv_dx, lo, hi, False,
            )  # fmt: skip


# Packing correction of the liquid's J (module docstring). Forward: deposit_packing (or its slab
# form), open_fraction_walls and one open_fraction per collider, then packing_scale per liquid
# material, before stress. Adjoint, after the stress adjoints: packing_scale_adjoint,
# deposit_packing_adjoint, then open_fraction.grad per collider in reverse order.


@ti.func
def spline_cdf(t):
    """Integral of the quadratic B-spline kernel from -inf to t (in cells): the fraction of a
    node's support (along one axis) on the far side of a plane at signed distance -t."""
    u = ti.math.clamp(t, -1.5, 1.5)
    out = 0.0
    if u < -0.5:
        out = (1.5 + u) ** 3 / 6.0
    elif u < 0.5:
        out = 0.5 + 0.75 * u - u**3 / 3.0
    else:
        out = 1.0 - (1.5 - u) ** 3 / 6.0
    return out


@ti.func
def _excess_ramp(e, slack):
    """r(e) and dr/de: 0 up to ``slack``; with u = (e - slack) / slack, slack (u^3 - u^4 / 2) up to
    2 slack (r' a smoothstep), then e - 3 slack / 2. C2, so central differences across the onset
    stay second order (the gradient tests)."""
    u = (e - slack) / slack
    r, dr = 0.0, 0.0
    if u >= 1.0:
        r, dr = e - 1.5 * slack, 1.0
    elif u > 0.0:
        r, dr = slack * u * u * u * (1.0 - 0.5 * u), u * u * (3.0 - 2.0 * u)
    return r, dr


@ti.func
def _deposit_particle(b, p, x: ti.template(), J: ti.template(), s_in, volume: ti.template(),
                      packing: ti.template(), inv_dx, atomic: ti.template()):  # fmt: skip
    """packing[b, node] += w V0 J / dx^3 over the particle's 27 nodes."""
    base, fx = stencil(x[s_in, b, p], inv_dx)
    N, _ = axis_weights(fx)
    q = volume[p] * J[s_in, b, p] * inv_dx * inv_dx * inv_dx
    for i in ti.static(range(3)):
        for j in ti.static(range(3)):
            w_ij = N[0, i] * N[1, j] * q
            for k in ti.static(range(3)):
                _scatter_add(packing, b, base + ti.Vector([i, j, k]), w_ij * N[2, k], atomic)


@ti.kernel
def deposit_packing(x: ndarray(), J: ndarray(), s_in: ti.i32, volume: ndarray(), packing: ndarray(), inv_dx: float):
    """The volume the particles claim on the grid, ``packing[b, i, j, k] += sum_p w_ip V0_p J_p /
    dx^3`` (a fraction of the node's cell volume; 1 where the material at J fills it), atomic adds
    in parallel, or on the CPU one serial pass in particle order (as :func:`p2g`)."""
    ti.loop_config(serialize=ti.static(_serial_scatter()))
    for b, p in ti.ndrange(x.shape[1], x.shape[2]):
        _deposit_particle(b, p, x, J, s_in, volume, packing, inv_dx, ti.static(not _serial_scatter()))


@ti.kernel
def deposit_packing_slabs(
    x: ndarray(), J: ndarray(), s_in: ti.i32, volume: ndarray(), packing: ndarray(), inv_dx: float,
    slab_start: ndarray(), order: ndarray(), colour: ti.i32,
):  # fmt: skip
    """:func:`deposit_packing` for the slabs of one colour (see :func:`bin_particles`), plain adds."""
    for t in range(_slab_tasks(slab_start)):
        b, lo, hi = _slab_task(slab_start, t, colour)
        for q in range(lo, hi):
            _deposit_particle(b, order[b, q], x, J, s_in, volume, packing, inv_dx, False)


@ti.kernel
def deposit_packing_adjoint(
    x: ndarray(), J: ndarray(), s_in: ti.i32, volume: ndarray(), packing_grad: ndarray(), x_grad: ndarray(),
    J_grad: ndarray(), inv_dx: float,
):  # fmt: skip
    """Adjoint of :func:`deposit_packing`, one particle per iteration (a gather): with D_bar the
    node adjoints and q = V0 J / dx^3, J_bar += (V0 / dx^3) sum w D_bar and
    x_bar += (q / dx) sum grad(w) D_bar, added to ``J_grad[s_in]`` and ``x_grad[s_in]``."""
    for b, p in ti.ndrange(x.shape[1], x.shape[2]):
        base, fx = stencil(x[s_in, b, p], inv_dx)
        N, dN = axis_weights(fx)
        rest = volume[p] * inv_dx * inv_dx * inv_dx
        w_sum = 0.0
        fx_bar = ti.Vector.zero(float, 3)
        for i in ti.static(range(3)):
            for j in ti.static(range(3)):
                for k in ti.static(range(3)):
                    g = packing_grad[b, base[0] + i, base[1] + j, base[2] + k]
                    w_sum += N[0, i] * N[1, j] * N[2, k] * g
                    fx_bar += g * ti.Vector(
                        [dN[0, i] * N[1, j] * N[2, k], N[0, i] * dN[1, j] * N[2, k], N[0, i] * N[1, j] * dN[2, k]]
                    )
        Jp = J[s_in, b, p]
        J_grad[s_in, b, p] = J_grad[s_in, b, p] + rest * w_sum
        x_grad[s_in, b, p] = x_grad[s_in, b, p] + (rest * Jp * inv_dx) * fx_bar


@ti.kernel
def open_fraction_walls(
    open_frac: ndarray(), bound: ti.i32, packing: ndarray(), slack: float, slab_start: ndarray()
):  # fmt: skip
    """``open_frac[0]``: the fraction of each node's support inside the domain walls' box
    [bound, n - bound]^3 (in nodes), where the particles claim more than ``slack`` of the node
    (``packing``; elsewhere the correction does not read it) on the planes in use
    (:func:`_plane_in_use`)."""
    n = open_frac.shape[2]
    for b, i, j in ti.ndrange(open_frac.shape[1], n, n):
        if _plane_in_use(slab_start, b, i):
            for k in range(n):
                if packing[b, i, j, k] <= slack:
                    continue
                node = ti.Vector([i, j, k])
                f = 1.0
                for a in ti.static(range(3)):
                    f *= (1.0 - spline_cdf(bound - node[a])) * (1.0 - spline_cdf(node[a] - (n - bound)))
                open_frac[0, b, i, j, k] = f


@ti.kernel
def open_fraction(
    open_frac: ndarray(),
    c: ti.i32,
    kind: ti.template(),
    collider_shape: ndarray(),
    collider_pos: ndarray(),
    collider_quat: ndarray(),
    mesh_sdf: ndarray(),
    g: ti.i32,
    dx: float,
    packing: ndarray(),
    slack: float,
    slab_start: ndarray(),
):
    """``open_frac[c + 1] = open_frac[c] (1 - S)`` with S = spline_cdf(-d / dx) the fraction of
    the node's support inside collider c (of shape ``kind``, pose at the start of substep g),
    d the node's signed distance to it, at the nodes :func:`open_fraction_walls` fills.
    Differentiated by Taichi's reverse mode (``open_fraction.grad`` adds to the collider pose
    adjoints)."""
    for b, i, j in ti.ndrange(open_frac.shape[1], open_frac.shape[2], open_frac.shape[3]):
        if _plane_in_use(slab_start, b, i):
            for k in range(open_frac.shape[4]):
                if packing[b, i, j, k] > slack:
                    p = ti.Vector([i, j, k]) * dx
                    pos, quat = collider_pos[g, b, c], collider_quat[g, b, c]
                    res = sdf_world(kind, collider_shape[c], pos, quat, p, mesh_sdf)
                    open_frac[c + 1, b, i, j, k] = open_frac[c, b, i, j, k] * (1.0 - spline_cdf(-res[0] / dx))


@ti.kernel
def packing_scale(
    x: ndarray(),
    s_in: ti.i32,
    particles: ndarray(),
    packing: ndarray(),
    open_frac: ndarray(),
    c_open: ti.i32,
    J_scale: ndarray(),
    inv_dx: float,
    slack: float,
    rate: float,
):
    """``J_scale[b, p] = 1 - rate eps / (1 + eps)``, eps = sum_i w_ip r(D_i - O_i), for the
    particles ``particles`` (D = ``packing``, O = ``open_frac[c_open]``; r: :func:`_excess_ramp`)."""
    for b, q in ti.ndrange(x.shape[1], particles.shape[0]):
        p = particles[q]
        base, fx = stencil(x[s_in, b, p], inv_dx)
        N, _ = axis_weights(fx)
        eps = 0.0
        for i in ti.static(range(3)):
            for j in ti.static(range(3)):
                for k in ti.static(range(3)):
                    node = base + ti.Vector([i, j, k])
                    e = packing[b, node[0], node[1], node[2]] - open_frac[c_open, b, node[0], node[1], node[2]]
                    r, _ = _excess_ramp(e, slack)
                    eps += N[0, i] * N[1, j] * N[2, k] * r
        J_scale[b, p] = 1.0 - rate * eps / (1.0 + eps)


@ti.kernel
def packing_scale_adjoint(
    x: ndarray(),
    s_in: ti.i32,
    particles: ndarray(),
    packing: ndarray(),
    open_frac: ndarray(),
    c_open: ti.i32,
    J_scale_grad: ndarray(),
    packing_grad: ndarray(),
    open_frac_grad: ndarray(),
    x_grad: ndarray(),
    inv_dx: float,
    slack: float,
    rate: float,
):
    """Adjoint of :func:`packing_scale`: eps_bar = -rate s_bar / (1 + eps)^2; each node gets
    w r'(e) eps_bar into ``packing_grad`` and minus that into ``open_frac_grad[c_open]`` (atomic
    adds), and x_bar += (eps_bar / dx) sum grad(w) r(e) is added to ``x_grad[s_in]``."""
    for b, q in ti.ndrange(x.shape[1], particles.shape[0]):
        p = particles[q]
        base, fx = stencil(x[s_in, b, p], inv_dx)
        N, dN = axis_weights(fx)
        eps = 0.0
        for i in ti.static(range(3)):
            for j in ti.static(range(3)):
                for k in ti.static(range(3)):
                    node = base + ti.Vector([i, j, k])
                    e = packing[b, node[0], node[1], node[2]] - open_frac[c_open, b, node[0], node[1], node[2]]
                    r, _ = _excess_ramp(e, slack)
                    eps += N[0, i] * N[1, j] * N[2, k] * r
        eps_bar = -rate * J_scale_grad[b, p] / ((1.0 + eps) * (1.0 + eps))
        fx_bar = ti.Vector.zero(float, 3)
        for i in ti.static(range(3)):
            for j in ti.static(range(3)):
                for k in ti.static(range(3)):
                    node = base + ti.Vector([i, j, k])
                    e = packing[b, node[0], node[1], node[2]] - open_frac[c_open, b, node[0], node[1], node[2]]
                    r, dr = _excess_ramp(e, slack)
                    if dr > 0.0:
                        e_bar = N[0, i] * N[1, j] * N[2, k] * dr * eps_bar
                        packing_grad[b, node[0], node[1], node[2]] += e_bar
                        open_frac_grad[c_open, b, node[0], node[1], node[2]] -= e_bar
                        fx_bar += (eps_bar * r) * ti.Vector(
                            [dN[0, i] * N[1, j] * N[2, k], N[0, i] * dN[1, j] * N[2, k], N[0, i] * N[1, j] * dN[2, k]]
                        )
        x_grad[s_in, b, p] = x_grad[s_in, b, p] + inv_dx * fx_bar


@ti.kernel
def check_state(x: ndarray(), v: ndarray(), s: ti.i32, speed_limit: float, status: ndarray()):
    """status[b] = 1 if any position/velocity of scene b is NaN/Inf, 2 if a speed exceeds the limit."""
    for b, p in ti.ndrange(x.shape[1], x.shape[2]):
        xp = x[s, b, p]
        vp = v[s, b, p]
        flag = 0
        for a in ti.static(range(3)):
            if ti.math.isnan(xp[a]) or ti.math.isinf(xp[a]) or ti.math.isnan(vp[a]) or ti.math.isinf(vp[a]):
                flag = 1
        if flag == 0 and vp.dot(vp) > speed_limit * speed_limit:
            flag = 2
        if flag > 0:
            ti.atomic_max(status[b], flag)


@ti.kernel
def copy_state_slot(
    x: ndarray(), v: ndarray(), C: ndarray(), F: ndarray(), J: ndarray(), s: ti.i32,
    x_dst: ndarray(), v_dst: ndarray(), C_dst: ndarray(), F_dst: ndarray(), J_dst: ndarray(), t: ti.i32,
):  # fmt: skip
    """Slot s of the particle state (x, v, C, F, J) -> slot t of another, in one launch."""
    for b, p in ti.ndrange(x.shape[1], x.shape[2]):
        x_dst[t, b, p] = x[s, b, p]
        v_dst[t, b, p] = v[s, b, p]
        C_dst[t, b, p] = C[s, b, p]
        F_dst[t, b, p] = F[s, b, p]
        J_dst[t, b, p] = J[s, b, p]


@ti.kernel
def zero_state_slot(x: ndarray(), v: ndarray(), C: ndarray(), F: ndarray(), J: ndarray(), s: ti.i32):
    """Slot s of the particle arrays x, v, C, F, J = 0, in one launch."""
    for b, p in ti.ndrange(x.shape[1], x.shape[2]):
        x[s, b, p] = ti.zero(x[s, b, p])
        v[s, b, p] = ti.zero(v[s, b, p])
        C[s, b, p] = ti.zero(C[s, b, p])
        F[s, b, p] = ti.zero(F[s, b, p])
        J[s, b, p] = 0.0
