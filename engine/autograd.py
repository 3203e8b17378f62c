"""The torch <-> Taichi bridge: one ``torch.autograd.Function`` per rollout.

``RolloutFunction`` takes the initial positions/velocities, the material parameter table and the
collider trajectory (poses at substep boundaries, velocities per substep, both computed from the
user's control with differentiable torch ops) and returns the recorded positions/velocities.
Its backward runs the checkpointed adjoint of :class:`engine.simulator.Simulator`. Nothing else in
FluxLab defines autograd Functions, and no tensor subclassing is used.
"""

from __future__ import annotations

import torch


class RolloutFunction(torch.autograd.Function):
    """(x0, v0, params, pose, vel) -> (x_rec, v_rec, C, F, J) of a simulator rollout."""

    @staticmethod
    def forward(ctx, sim, plan, extra, x0, v0, params, pose, vel):
        x_rec, v_rec, C, F, J, ckpt = sim.forward(plan, extra, x0, v0, params, pose, vel, keep_checkpoints=True)
        ctx.sim, ctx.plan, ctx.ckpt = sim, plan, ckpt
        ctx.save_for_backward(params, pose, vel)
        ctx.mark_non_differentiable(C, F, J)
        return x_rec, v_rec, C, F, J

    @staticmethod
    def backward(ctx, grad_x, grad_v, *_unused):
        params, pose, vel = ctx.saved_tensors
        g_x0, g_v0, g_params, g_pose, g_vel = ctx.sim.backward(ctx.plan, ctx.ckpt, params, pose, vel, grad_x, grad_v)
        if g_pose is None:
            g_pose, g_vel = torch.zeros_like(pose), torch.zeros_like(vel)
        return None, None, None, g_x0, g_v0, g_params, g_pose, g_vel
