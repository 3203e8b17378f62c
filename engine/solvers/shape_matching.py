"""Shape-matched rigid bodies: particles of a rigid material kept rigid after every substep.

Mueller et al. 2005, "Meshless deformations based on shape matching", SIGGRAPH: after the MPM
transfers move every particle freely, each body's particles are replaced by the best rigid fit
of their rest shape, centre ``c = sum V x / sum V`` and rotation ``R = polar(A_pq A_qq^-1)`` with
``A_pq = sum V x q^T`` (q: rest offset from the body's centroid), and their velocities corrected
by ``(goal - x) / dt``. Linear momentum is unchanged since ``sum V q = 0``.

One stage in the ``finish`` phase: it reads the MPM solver's staged positions ``x_chain[K]``
(after the collider projections) and velocities ``v_free`` and writes the output slot of the
particle state. No state of its own; differentiated by Taichi's reverse mode.
"""

import taichi as ti

from engine import arrays, runtime
from engine.solvers.base import NoState, Stage, Substep
from engine.solvers.mpm import MPMSolver
from engine.state import Model

ndarray = ti.types.ndarray

POLAR_ITERATIONS = 8  # Newton iterations R <- (R + R^-T)/2; A is near a rotation, so this converges


@ti.kernel
def body_moments(
    x_free: ndarray(),
    s_free: ti.i32,
    body_id: ndarray(),
    volume: ndarray(),
    rest_offset: ndarray(),
    body_sum_x: ndarray(),
    body_Apq: ndarray(),
):
    """Per rigid body: sum V x and the shape-matching moment A_pq = sum V x q^T."""
    for b, p in ti.ndrange(x_free.shape[1], x_free.shape[2]):
        k = body_id[p]
        if k >= 0:
            Vx = volume[p] * x_free[s_free, b, p]
            body_sum_x[b, k] += Vx
            body_Apq[b, k] += Vx.outer_product(rest_offset[p])


@ti.kernel
def body_fit(
    body_sum_x: ndarray(),
    body_Apq: ndarray(),
    body_volume: ndarray(),
    body_Aqq_inv: ndarray(),
    body_c: ndarray(),
    body_R: ndarray(),
):
    """Best rigid fit per body: centre c and rotation R = polar(A_pq A_qq^-1) (Newton iteration)."""
    for b, k in ti.ndrange(body_sum_x.shape[0], body_sum_x.shape[1]):
        body_c[b, k] = body_sum_x[b, k] / body_volume[k]
        R = body_Apq[b, k] @ body_Aqq_inv[k]
        for _ in ti.static(range(POLAR_ITERATIONS)):
            R = 0.5 * (R + R.inverse().transpose())
        body_R[b, k] = R


@ti.kernel
def body_apply(
    x_free: ndarray(),
    s_free: ti.i32,
    v_free: ndarray(),
    body_id: ndarray(),
    rest_offset: ndarray(),
    body_c: ndarray(),
    body_R: ndarray(),
    x_out: ndarray(),
    v_out: ndarray(),
    s_out: ti.i32,
    dt: float,
):
    """Move rigid particles to their shape-matching goals (velocity corrected to match);
    copy every other particle through. Linear momentum is unchanged since sum V q = 0."""
    for b, p in ti.ndrange(x_free.shape[1], x_free.shape[2]):
        k = body_id[p]
        xf = x_free[s_free, b, p]
        vf = v_free[0, b, p]
        if k >= 0:
            goal = body_c[b, k] + body_R[b, k] @ rest_offset[p]
            x_out[s_out, b, p] = goal
            v_out[s_out, b, p] = vf + (goal - xf) / dt
        else:
            x_out[s_out, b, p] = xf
            v_out[s_out, b, p] = vf


class ShapeMatchingSolver(NoState):
    """The rigid bodies of a Model (particles with ``body_id >= 0``) for B scenes."""

    name = "shape_matching"

    def __init__(self, model: Model, batch_size: int, mpm: MPMSolver):
        real = runtime.real_dtype()
        vec3, mat3 = ti.types.vector(3, real), ti.types.matrix(3, 3, real)
        self.mpm = mpm
        self.dt = model.config.dt
        B, nb = batch_size, model.n_bodies

        self.body_id = arrays.upload(model.body_id, ti.i32)
        self.rest_offset = arrays.upload(model.rest_offset, real, vec3)
        self.body_volume = arrays.upload(model.body_volume, real)
        self.body_Aqq_inv = arrays.upload(model.body_Aqq_inv, real, mat3)
        self.sum_x = ti.ndarray(vec3, (B, nb), needs_grad=True)
        self.Apq = ti.ndarray(mat3, (B, nb), needs_grad=True)
        self.c = ti.ndarray(vec3, (B, nb), needs_grad=True)
        self.R = ti.ndarray(mat3, (B, nb), needs_grad=True)

    # ------------------------------------------------------------------ driver contract
    def stages(self) -> list[Stage]:
        return [Stage("finish", self.project, self.project_adjoint, self.zero_grads, replay=True)]

    # ------------------------------------------------------------------ stages
    def project(self, sub: Substep) -> None:
        mpm, buf = self.mpm, sub.state[self.mpm.name]
        arrays.zero_array(self.sum_x)
        arrays.zero_array(self.Apq)
        body_moments(mpm.x_chain, mpm.n_projections, self.body_id, mpm.volume, self.rest_offset, self.sum_x, self.Apq)
        body_fit(self.sum_x, self.Apq, self.body_volume, self.body_Aqq_inv, self.c, self.R)
        body_apply(
            mpm.x_chain, mpm.n_projections, mpm.v_free, self.body_id, self.rest_offset, self.c, self.R,
            buf.x, buf.v, sub.s_out, self.dt,
        )  # fmt: skip

    def zero_grads(self, sub: Substep) -> None:
        for arr in (self.mpm.x_chain, self.mpm.v_free, self.sum_x, self.Apq, self.c, self.R):
            arrays.zero_array(arr.grad)

    def project_adjoint(self, sub: Substep) -> None:
        mpm, buf = self.mpm, sub.state[self.mpm.name]
        body_apply.grad(
            mpm.x_chain, mpm.n_projections, mpm.v_free, self.body_id, self.rest_offset, self.c, self.R,
            buf.x, buf.v, sub.s_out, self.dt,
        )  # fmt: skip
        body_fit.grad(self.sum_x, self.Apq, self.body_volume, self.body_Aqq_inv, self.c, self.R)
        body_moments.grad(
            mpm.x_chain, mpm.n_projections, self.body_id, mpm.volume, self.rest_offset, self.sum_x, self.Apq
        )  # fmt: skip
