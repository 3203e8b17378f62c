"""Poisson operator and solvers: every method reaches the same solution, null space handling,
non-convergence is reported, implicit adjoint equals the dense gradient."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.autograd import PoissonSolve
from engine.linsolve import (
    AIR,
    FLUID,
    METHODS,
    SOLID,
    ConvergenceError,
    PoissonSolver,
    PoissonSystem,
    scenes,
    solve,
)
from engine.linsolve.learned import LearnedMG
from engine.linsolve.multigrid import Hierarchy, VCycle, coarsen_flags

SCENES_8 = {
    "open_box": scenes.open_box(8),
    "sphere_box": scenes.sphere_box(8),
    "half_filled": scenes.half_filled(8),
    "random_obstacles": scenes.random_obstacles(8, seed=3),
}


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """Small grids: one torch thread avoids oversubscribing the shared 2-core CI machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _dense_solution(S: PoissonSystem, b: torch.Tensor) -> torch.Tensor:
    A = S.dense()[0]
    idx = torch.nonzero(S.fluid[0].reshape(-1) > 0).squeeze(1)
    sub = A[idx][:, idx]
    x = torch.zeros(b[0].numel(), dtype=b.dtype)
    x[idx] = torch.linalg.pinv(sub, hermitian=True) @ b[0].reshape(-1)[idx]
    return x.view_as(b)


def _solver(flags, method, **kw):
    model = LearnedMG().double() if method == "learned" else None
    return PoissonSolver(flags, method, dtype=torch.float64, model=model, **kw)


def test_operator_matches_dense_and_is_symmetric():
    rng = np.random.default_rng(0)
    flags = rng.integers(0, 3, size=(2, 5, 4, 6))
    S = PoissonSystem(flags)
    x = torch.from_numpy(rng.standard_normal((2, 5, 4, 6))) * S.fluid
    D = S.dense()
    assert torch.allclose(D, D.transpose(1, 2))
    y_dense = (D @ x.reshape(2, -1, 1)).view_as(x)
    assert torch.allclose(S.matvec(x, out=torch.empty_like(x)), y_dense, atol=1e-12)
    assert torch.allclose(S.matvec_autograd(x), y_dense, atol=1e-12)
    # 7-point stencil: an interior fluid cell with 6 fluid neighbours has diagonal 6
    S2 = PoissonSystem(np.zeros((3, 3, 3), np.int8))
    assert S2.diag[0, 1, 1, 1] == 6 and S2.diag[0, 0, 0, 0] == 3


@pytest.mark.parametrize("scene", list(SCENES_8))
def test_every_method_reaches_dense_solution(runtime, scene):
    flags = SCENES_8[scene]
    S = PoissonSystem(flags)
    b = torch.from_numpy(np.random.default_rng(1).standard_normal(S.shape)) * S.fluid
    S.project_null_(b)
    x_ref = _dense_solution(S, b)
    for method in METHODS:
        res = _solver(flags, method, rtol=1e-11).solve(b)
        assert res.converged, method
        err = float((res.x - x_ref).norm() / x_ref.norm())
        assert err < 1e-7, (method, err)
        r = b - S.matvec(res.x, out=torch.empty_like(b))
        assert float(r.norm() / b.norm()) <= 1e-11 * 1.0001, method


def test_methods_agree_at_16(runtime):
    flags = scenes.random_obstacles(16, seed=5)
    S = PoissonSystem(flags)
    b = torch.from_numpy(np.random.default_rng(2).standard_normal(S.shape))
    xs = {m: _solver(flags, m, rtol=1e-9).solve(b).x for m in METHODS}
    for m, x in xs.items():
        assert float((x - xs["cg"]).norm() / xs["cg"].norm()) < 1e-6, m


def test_null_space_removed_per_component():
    # two closed chambers separated by a solid wall: two null vectors
    f = np.zeros((8, 6, 6), np.int8)
    f[4] = SOLID
    S = PoissonSystem(f)
    assert S.singular
    b = torch.ones(S.shape, dtype=torch.float64)  # pure null-space rhs
    b[0, :4] += torch.from_numpy(np.random.default_rng(0).standard_normal((4, 6, 6)))
    res = solve(f, b, "mgpcg", rtol=1e-10)
    x = res.x[0]
    assert abs(float(x[:4].mean())) < 1e-10 and abs(float(x[5:].mean())) < 1e-10
    assert float(x[5:].abs().max()) < 1e-10  # the right chamber had a constant rhs only
    # an AIR cell in the left chamber leaves only the right chamber floating ...
    f[0, 0, 0] = AIR
    assert PoissonSystem(f).singular
    # ... and one in each chamber makes the system regular
    f[7, 0, 0] = AIR
    assert not PoissonSystem(f).singular


def test_nonconvergence_is_reported():
    flags = scenes.sphere_box(16)
    b = torch.from_numpy(np.random.default_rng(0).standard_normal((1, 16, 16, 16)))
    solver = PoissonSolver(flags, "cg", rtol=1e-8, max_iter=3)
    with pytest.raises(ConvergenceError, match="did not converge"):
        solver.solve(b)
    res = solver.solve(b, check=False)
    assert not res.converged and res.iterations == 3 and float(res.residual.max()) > 1e-8


def test_warm_start_reduces_iterations():
    flags = scenes.open_box(16)
    b = torch.from_numpy(np.random.default_rng(0).standard_normal((1, 16, 16, 16)))
    solver = PoissonSolver(flags, "mgpcg", rtol=1e-8)
    cold = solver.solve(b)
    warm = solver.solve(b, x0=cold.x)
    assert warm.iterations == 0 and warm.converged
    near = solver.solve(b, x0=cold.x + 1e-4 * torch.randn_like(cold.x))
    assert near.iterations < cold.iterations


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="flags"):
        PoissonSystem(np.full((4, 4, 4), 7))
    with pytest.raises(ValueError, match="flags"):
        PoissonSystem(np.zeros((4, 4)))
    solver = PoissonSolver(np.zeros((4, 4, 4), np.int8), "cg")
    with pytest.raises(ValueError, match="b must have shape"):
        solver.solve(torch.zeros(1, 4, 4, 5, dtype=torch.float64))
    b = torch.zeros(1, 4, 4, 4, dtype=torch.float64)
    b[0, 1, 1, 1] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        solver.solve(b)
    with pytest.raises(ValueError, match="method"):
        PoissonSolver(np.zeros((4, 4, 4), np.int8), "gauss")


@pytest.mark.parametrize("method", ["cg", "mgpcg", "mic0"])
def test_preconditioners_are_symmetric(runtime, method):
    flags = scenes.random_obstacles(16, seed=1)
    solver = PoissonSolver(flags, method)
    rng = np.random.default_rng(0)
    x, y = (torch.from_numpy(rng.standard_normal((1, 16, 16, 16))) * solver.system.fluid for _ in range(2))
    M = solver.precond or (lambda r: r)
    a, b = float((x * M(y)).sum()), float((y * M(x)).sum())
    assert abs(a - b) <= 1e-10 * abs(a)
    assert float((x * M(x)).sum()) > 0


def test_coarsening_rule_and_iterations_flat():
    f = np.zeros((1, 4, 4, 4), np.int8)
    f[0, :2, :2, :2] = SOLID
    f[0, 2:, :2, :2] = AIR
    f[0, 2, 2, 2] = AIR  # one AIR child makes the coarse cell AIR
    f[0, :2, 2:, 2:] = SOLID
    f[0, 0, 3, 3] = FLUID  # one FLUID child among SOLID makes it FLUID
    c = coarsen_flags(torch.from_numpy(f))[0]
    assert c[0, 0, 0] == SOLID and c[1, 0, 0] == AIR and c[1, 1, 1] == AIR
    assert c[0, 1, 1] == FLUID and c[0, 1, 0] == FLUID
    its = []
    for n in (16, 32):
        flags = scenes.half_filled(n)
        b = torch.from_numpy(np.random.default_rng(n).standard_normal((1, n, n, n)))
        its.append(solve(flags, b, "mgpcg", rtol=1e-6).iterations)
        h = Hierarchy(PoissonSystem(flags))
        assert h.systems[-1].shape[1] * h.systems[-1].shape[2] * h.systems[-1].shape[3] <= 512
    assert max(its) <= 12 and abs(its[1] - its[0]) <= 2, its


def test_vcycle_reduces_error_on_smooth_mode():
    flags = scenes.sphere_box(16)
    S = PoissonSystem(flags)
    h = Hierarchy(S)
    V = VCycle(h)
    g = torch.linspace(0, np.pi, 16, dtype=torch.float64)
    x = (torch.sin(g)[:, None, None] * torch.cos(g)[None, :, None] * torch.ones(16)).unsqueeze(0)
    x = x * S.fluid
    S.project_null_(x)
    b = S.matvec(x, out=torch.empty_like(x))
    e = x - V(b)
    S.project_null_(e)
    assert float(e.norm() / x.norm()) < 0.2


def _adjoint_case(singular: bool):
    f = np.zeros((4, 4, 3), np.int8)
    f[1, 1, 1] = SOLID
    if not singular:
        f[:, 3, :] = AIR
    return f


@pytest.mark.parametrize("singular", [False, True])
@pytest.mark.parametrize("method", ["mgpcg", "mic0", "learned"])
def test_adjoint_matches_dense_gradient(runtime, singular, method):
    f = _adjoint_case(singular)
    solver = _solver(f, method, rtol=1e-12)
    S = solver.system
    rng = np.random.default_rng(4)
    b0 = torch.from_numpy(rng.standard_normal(S.shape)) * S.fluid
    c = torch.from_numpy(rng.standard_normal(S.shape))
    b = b0.clone().requires_grad_(True)
    x = PoissonSolve.apply(b, solver)
    loss = (c * x).sum() + (x**2).sum()
    loss.backward()
    # dense reference with torch.linalg.solve on the fluid block (null space via a
    # zero-mean constraint / bordered system)
    A = S.dense()[0]
    idx = torch.nonzero(S.fluid[0].reshape(-1) > 0).squeeze(1)
    sub = A[idx][:, idx]
    bd = b0.reshape(-1)[idx].clone().requires_grad_(True)
    n = idx.numel()
    if singular:
        ones = torch.ones(n, 1, dtype=sub.dtype) / n**0.5
        K = torch.cat(
            [torch.cat([sub, ones], 1), torch.cat([ones.T, torch.zeros(1, 1, dtype=sub.dtype)], 1)],
            0,
        )
        bp = bd - ones[:, 0] * (ones[:, 0] @ bd)
        xd = torch.linalg.solve(K, torch.cat([bp, torch.zeros(1, dtype=sub.dtype)]))[:n]
    else:
        xd = torch.linalg.solve(sub, bd)
    cd = c.reshape(-1)[idx]
    ((cd * xd).sum() + (xd**2).sum()).backward()
    g = b.grad.reshape(-1)
    assert torch.allclose(x.detach().reshape(-1)[idx], xd.detach(), atol=1e-9)
    assert torch.allclose(g[idx], bd.grad, atol=1e-8, rtol=1e-7)
    assert float(g[S.fluid[0].reshape(-1) == 0].abs().max()) == 0.0


def test_poisson_solve_gradcheck():
    f = _adjoint_case(False)
    solver = PoissonSolver(f, "mgpcg", rtol=1e-13)
    b = (torch.from_numpy(np.random.default_rng(0).standard_normal((1, 4, 4, 3))) * solver.system.fluid).requires_grad_(
        True
    )
    assert torch.autograd.gradcheck(lambda t: PoissonSolve.apply(t, solver), (b,), atol=1e-7)


@pytest.mark.parametrize("method", ["mgpcg", "mic0", "learned"])
def test_batched_solve_equals_separate_solves(runtime, method):
    f = np.stack([scenes.open_box(16), scenes.sphere_box(16)])
    b = torch.from_numpy(np.random.default_rng(7).standard_normal(f.shape))
    both = _solver(f, method, rtol=1e-9).solve(b)
    for i in range(2):
        one = _solver(f[i], method, rtol=1e-9).solve(b[i : i + 1])
        assert float((both.x[i] - one.x[0]).norm() / one.x.norm()) < 1e-6
    assert both.residual.shape == (2,) and bool((both.residual <= 1e-9).all())


# ---------------------------------------------------------------------- ghost-fluid free surface
def _ghost_case(n: int = 8, seed: int = 0):
    """A container half full with a free surface at a random height per column."""
    rng = np.random.default_rng(seed)
    f = scenes.half_filled(n)
    y = np.arange(n) + 0.5
    level = n / 2 - rng.uniform(0.0, 1.0, size=(n, 1, n))
    phi = np.broadcast_to(y[None, :, None] - level, (n, n, n))
    return f, scenes.ghost_from_levelset(f, phi, theta_min=0.05)


def test_ghost_operator_matches_hand_built_dense():
    f, g = _ghost_case()
    assert g.max() > 0 and g[f != FLUID].max() == 0
    S0, S = PoissonSystem(f), PoissonSystem(f, ghost=g)
    x = torch.from_numpy(np.random.default_rng(1).standard_normal(S.shape)) * S.fluid
    # A_ghost = A_plain + diag(ghost), built here from the plain dense matrix
    D = S0.dense()[0] + torch.diag(torch.from_numpy(g).reshape(-1))
    y = (D @ x.reshape(-1)).view_as(x)
    assert torch.allclose(S.matvec(x, out=torch.empty_like(x)), y, atol=1e-12)
    assert torch.allclose(S.matvec_autograd(x), y, atol=1e-12)
    assert torch.allclose(S.dense()[0], D)
    # ghost=None and an all-zero ghost are today's operator
    Sz = PoissonSystem(f, ghost=np.zeros(f.shape))
    assert torch.equal(Sz.diag, S0.diag) and S0.ghost is None
    # the surface weight is 1/theta: theta = 0.25 on the single AIR face of a cell
    f1 = np.full((1, 2, 1), FLUID, np.int8)
    f1[0, 1, 0] = AIR
    g1 = scenes.ghost_from_levelset(f1, np.array([[[-0.25], [0.75]]]), theta_min=0.01)
    assert g1[0, 0, 0] == pytest.approx(3.0) and g1[0, 1, 0] == 0.0


@pytest.mark.parametrize("method", METHODS)
def test_every_method_solves_the_ghost_system(runtime, method):
    f, g = _ghost_case()
    S = PoissonSystem(f, ghost=g)
    b = torch.from_numpy(np.random.default_rng(2).standard_normal(S.shape)) * S.fluid
    x_ref = _dense_solution(S, b)
    res = _solver(f, method, rtol=1e-11, ghost=g).solve(b)
    assert res.converged
    assert float((res.x - x_ref).norm() / x_ref.norm()) < 1e-7
    plain = _dense_solution(PoissonSystem(f), b)
    assert float((plain - x_ref).norm() / x_ref.norm()) > 1e-3  # the ghost term matters


def test_ghost_reaches_coarse_levels_and_removes_null_space():
    f, g = _ghost_case(16, seed=3)
    h0, h = Hierarchy(PoissonSystem(f)), Hierarchy(PoissonSystem(f, ghost=g))
    assert h.n_levels == h0.n_levels >= 2
    for S0, S in zip(h0.systems[1:], h.systems[1:], strict=True):
        extra = S.diag - S0.diag
        assert float(extra.min()) >= 0 and float(extra.sum()) > 0
    # restriction of the ghost term keeps its total weight up to the Galerkin factor
    total = float(h.systems[0].ghost.sum())
    assert 0.5 * total / 2 < float(h.systems[1].ghost.sum()) <= 8 * total / 2
    # a closed box is pure Neumann; any positive ghost weight anchors the component
    box = np.zeros((6, 6, 6), np.int8)
    assert PoissonSystem(box).singular
    gb = np.zeros(box.shape)
    gb[2, 2, 2] = 0.1
    assert not PoissonSystem(box, ghost=gb).singular


def test_bad_ghost_is_named():
    f, g = _ghost_case()
    for bad, msg in (
        (g[:, :, :-1], "ghost must have"),
        (-np.abs(g) - 1.0 * (f == FLUID), "ghost must be >= 0"),
        (np.where(f == SOLID, 1.0, g), "zero at SOLID and AIR"),
        (np.where(g > 0, np.nan, g), "ghost contains NaN"),
        ((g > 0).astype(np.int64), "ghost must be a float"),
    ):
        with pytest.raises(ValueError, match=msg):
            PoissonSystem(f, ghost=bad)
    with pytest.raises(ValueError, match="ghost must be given to the PoissonSystem"):
        PoissonSolver(PoissonSystem(f), "cg", ghost=g)
