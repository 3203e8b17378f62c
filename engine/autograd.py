"""The torch <-> simulator bridges: the only ``torch.autograd.Function``s in FluxLab.

1. ``RolloutFunction`` — one per MLS-MPM rollout.

``RolloutFunction`` takes the initial positions/velocities, the material parameter table, the
collider trajectory (poses at substep boundaries, velocities per substep, both computed from the
user's control with differentiable torch ops), the sensor parameter table, the initial rigid-body
state and the rigid-body densities, and returns the recorded particle positions/velocities,
sensor node positions/contact forces and rigid-body states.
Its backward runs the checkpointed adjoint of :class:`engine.simulator.Simulator`.

2. ``PoissonSolve`` — the pressure Poisson solve with an implicit adjoint.
Forward: x = A^+ b, solved to the solver's tolerance by :class:`engine.linsolve.PoissonSolver`
(any method). Backward: A is symmetric, so dL/db = A^+ dL/dx is one more solve of the same
system with the same solver and preconditioner; no solver iteration is recorded on the tape
(implicit differentiation of A x = b, e.g. Blondel et al., "Efficient and Modular Implicit
Differentiation", NeurIPS 2022, Sec. 2). On pure-Neumann components both the right-hand side and
the solution are projected to zero mean, i.e. A^+ is the pseudo-inverse restricted to fluid
cells, and the same projection applies to the adjoint, so the gradient is exact up to the
tolerance. The gradient with respect to b at non-fluid cells is zero. b, x are (B, nx, ny, nz).

No tensor subclassing is used anywhere.
"""

from __future__ import annotations

import torch

from engine.linsolve import PoissonSolver


class RolloutFunction(torch.autograd.Function):
    """(x0, v0, params, pose, vel, sensor_params, bodies0, body_params) -> (x_rec, v_rec, C, F, J,
    sensor_x_rec, sensor_f_rec, sensor_v, bodies_rec) of a simulator rollout."""

    @staticmethod
    def forward(ctx, sim, plan, extra, x0, v0, params, pose, vel, sensor_params, bodies0, body_params):
        *out, ckpt = sim.forward(
            plan, extra, x0, v0, params, pose, vel, sensor_params, bodies0, body_params, keep_checkpoints=True
        )
        ctx.sim, ctx.plan, ctx.ckpt = sim, plan, ckpt
        ctx.save_for_backward(params, pose, vel, sensor_params, bodies0, body_params)
        ctx.mark_non_differentiable(out[2], out[3], out[4], out[7])  # C, F, J, sensor velocities
        return tuple(out)

    @staticmethod
    def backward(ctx, grad_x, grad_v, _C, _F, _J, grad_sx, grad_sf, _sv, grad_b):
        params, pose, vel, sensor_params, bodies0, body_params = ctx.saved_tensors
        g_x0, g_v0, g_params, g_pose, g_vel, g_sensor, g_body0, g_body_params = ctx.sim.backward(
            ctx.plan, ctx.ckpt, params, pose, vel, sensor_params, body_params,
            (grad_x, grad_v, grad_sx, grad_sf, grad_b), need_params=ctx.needs_input_grad[5],
        )  # fmt: skip
        if g_pose is None:
            g_pose, g_vel = torch.zeros_like(pose), torch.zeros_like(vel)
        if g_sensor is None:
            g_sensor = torch.zeros_like(sensor_params)
        if g_body0 is None:
            g_body0, g_body_params = torch.zeros_like(bodies0), torch.zeros_like(body_params)
        return None, None, None, g_x0, g_v0, g_params, g_pose, g_vel, g_sensor, g_body0, g_body_params


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
