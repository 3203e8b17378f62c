"""System identification of a tactile sensor: recover gel and friction parameters from its signals.

DiffTactile (Si et al., "DiffTactile: A Physics-based Differentiable Tactile Simulator for
Contact-rich Robotic Manipulation", ICLR 2024) uses its differentiability to refine the simulated
sensor's physical parameters against real-world data (real2sim); that code was never released.
This module is a small, complete version of the loop on FluxLab's FEM sensor:

1. :func:`press_and_slide_scene` builds a GelSight-style flat pad (``flat_pad``) glued on a box
   mount and a rigid sphere that presses straight down into it, then slides along +x at a fixed
   depth. The trajectory makes both default unknowns observable:

   * pressing: the normal force and the imprint the markers show depend on the gel's Young's
     modulus ``E`` (in series with the penalty stiffness ``k_n``);
   * sliding: the penalty friction of a node is ``min(mu F_n, m |v_t| / dt, k_t |v_t|)``
     (:func:`engine.coupling.sensors.penalty_force`): it holds a node (stick) until the Coulomb cap
     ``mu F_n``, then slips. Once the contact slips, the net shear-to-normal force ratio reads
     ``mu``, and the markers shear by about the friction force over the gel's shear stiffness
     (``G = E / (2 (1 + nu))``), which ties ``mu`` and ``E`` together a second time.

2. :func:`measure` runs the scene with given sensor parameters and returns what the sensor
   reports at every control step (engine/tactile.py): the marker displacements seen by the
   sensor's camera [px] and the net wrench on the gel [N, N m]. With known ("true") parameters
   this makes synthetic measurements; with a real sensor one fills a :class:`Measurement` with
   the recorded signals of the same trajectory instead.

3. :func:`identify` fits the selected parameters (default ``("E", "mu")``; any of
   :data:`engine.solvers.fem.SENSOR_PARAM_NAMES`) by gradient descent through the simulator.

Loss (sums over recorded steps, batch entries, markers and components)::

    L = |m - m*|^2 / |m*|^2  +  |F - F*|^2 / |F*|^2  +  |tau - tau*|^2 / |tau*|^2

with ``m (R, B, M, 2)`` the marker displacements [px], ``F, tau (R, B, 3)`` the net force [N]
and torque about the sensor origin [N m], ``*`` the measurement. Each term is a relative squared
error, so pixels, newtons and newton-metres weigh the same whatever their scales, and the loss
is 0 exactly at parameters that reproduce the measurement.

Optimizer: torch's L-BFGS (Nocedal & Wright, "Numerical Optimization", 2006, Alg. 7.5) with a
strong-Wolfe line search, or Adam (Kingma & Ba, ICLR 2015), on ``z = log(theta)`` of the selected
parameters (the others stay at their values in ``init_params``). In log space a step changes each
parameter by about the same fraction whatever its units (``E ~ 1e5 Pa``, ``mu ~ 0.5``) and keeps
it positive. The gradient is the simulator's adjoint (engine/autograd.py; checked against finite
differences in tests/test_fem.py). L-BFGS is the default because E and mu trade off along a
curved valley of the loss (a stiffer gel with more friction shears the markers alike): measured
on the default scene from E +30 %, mu -30 %, L-BFGS reaches 2e-6 relative error in 9 rollouts
(then stops: converged), while Adam (lr 0.08, cosine decay to lr / 20) overshoots along the
valley and still sits 2 % (E) and 4.5 % (mu) off after 40. The estimate is the evaluated iterate with the lowest loss.

Conventions: sensor parameter tables are ``(B, S, 8)`` in the order of ``SENSOR_PARAM_NAMES``
(B scenes, S sensors; here B = S = 1); control is ``(T, B, K, 6)`` collider velocities per
control step (linear [m/s], angular [rad/s]; collider 0 the mount, 1 the indenter); signals are
taken in the sensor frame (contact surface ``z = 0`` facing +z, camera behind the gel). Run
``python -m policies.sysid`` for the default identification (f64 on the CPU).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

#: Signals the loss compares (keys of :meth:`engine.tactile.TactileSensorView.signals`).
SIGNALS = ("marker_disp_px", "net_wrench")


@dataclass(frozen=True)
class Scene:
    """A press-and-slide experiment: the simulator, its control and the sensor's tactile view.

    Attributes:
        sim: :class:`engine.simulator.Simulator` (B = 1) with one sensor mounted on collider 0
            and the indenter as collider 1.
        control: ``(T, 1, 2, 6)`` collider velocities per control step.
        view: :class:`engine.tactile.TactileSensorView` of the pad (camera and markers).
    """

    sim: object
    control: torch.Tensor
    view: object


@dataclass(frozen=True)
class Measurement:
    """What the sensor reported along a trajectory, and the camera/marker model that saw it.

    Attributes:
        marker_disp_px: ``(R, B, M, 2)`` marker displacements [px] at the recorded steps.
        net_wrench: ``(R, B, 6)`` net force [N] and torque about the sensor origin [N m].
        view: the :class:`engine.tactile.TactileSensorView` whose markers and camera produced
            ``marker_disp_px`` (the simulated signals are computed through the same view).
        sensor: index of the sensor in the scene.
    """

    marker_disp_px: torch.Tensor
    net_wrench: torch.Tensor
    view: object
    sensor: int = 0


@dataclass
class SysIdResult:
    """Outcome of :func:`identify`.

    Attributes:
        names: the identified parameter names.
        estimate: ``{name: value}`` of the lowest-loss iterate.
        params: ``(B, S, 8)`` full sensor parameter table of that iterate (detached).
        loss: its loss.
        history: one dict per rollout (loss and gradient evaluation, including L-BFGS's line
            search trials): ``eval`` (0, 1, ...), ``loss`` and one key per identified
            parameter (its value there).
        time_s: wall-clock seconds.
    """

    names: tuple[str, ...]
    estimate: dict[str, float]
    params: torch.Tensor
    loss: float
    history: list[dict] = field(default_factory=list)
    time_s: float = 0.0


# ------------------------------------------------------------------------------------ scene
def press_and_slide_scene(
    E: float = 1.0e5,
    mu: float = 0.5,
    *,
    depth: float = 8e-4,
    slide: float = 1.2e-3,
    press_steps: int = 8,
    slide_steps: int = 12,
    radius: float = 0.008,
    cells: tuple[int, int, int] = (6, 6, 2),
    dt: float = 5e-5,
    substeps: int = 5,
) -> Scene:
    """A 12 x 12 x 4 mm gel pad pressed by a sphere that then slides along +x.

    The sphere starts touching the surface; it moves down by ``depth`` during ``press_steps``
    control steps and then along +x by ``slide`` during ``slide_steps`` (both at constant
    speed): by default 0.8 mm in 2 ms, then 1.2 mm in 3 ms, 100 substeps in all, about 0.6 s
    per rollout forward and backward on one CPU core. So short a run is not quasi-static (the
    pad's lowest mode has a period of about 3 ms); the gel's dynamics are part of the signals,
    which is fine as long as the real experiment is simulated along its real trajectory. The
    pad's other parameters: ``nu = 0.4``, density 1,100 kg/m^3, mass damping 500 1/s (damps the
    ringing), penalty ``k_n = 200 N/m``, ``k_d = 50 N s/m^2``, ``k_t = 1 N s/m``. No gravity.

    Args:
        E: Young's modulus of the gel [Pa] (the scene's default sensor parameters).
        mu: friction coefficient of the gel against the sphere.
        depth: indentation [m]. slide: sliding distance [m].
        press_steps, slide_steps: control steps of each phase.
        radius: sphere radius [m].
        cells: ``(nx, ny, nz)`` cells of the pad mesh.
        dt: substep [s]; must not exceed the sensor's stable explicit step (checked by the
            scene builder). substeps: substeps per control step.

    Returns:
        A :class:`Scene`; its marker view is a 5 x 5 grid at 2 mm pitch seen by a 64 x 64 px,
        70 degree pinhole camera 12 mm behind the contact surface.
    """
    from engine import colliders, geometry, sampling
    from engine.config import SimConfig
    from engine.geometry.tetmesh import flat_pad
    from engine.materials import WATER
    from engine.scene import SceneBuilder
    from engine.simulator import Simulator
    from engine.solvers.fem import Elastomer, PenaltyContact, Sensor
    from engine.tactile import MarkerLayout, PinholeCamera, TactileSensorView

    width, thickness = 0.012, 0.004
    builder = SceneBuilder(SimConfig(grid_res=16, dt=dt, substeps=substeps, gravity=(0.0, 0.0, 0.0)))
    # The simulator needs MPM particles; a few water particles far from the sensor take no part.
    builder.add_particles(sampling.box((0.2, 0.2, 0.2), (0.24, 0.24, 0.24), 0.02), WATER, 0.02)
    mount_z, mount_half = 0.4, 0.002
    mount = builder.add_collider(
        colliders.Collider(geometry.Box((0.008, 0.008, mount_half)), pose=(0.5, 0.5, mount_z, 1, 0, 0, 0))
    )
    surface_z = mount_z + mount_half + thickness
    builder.add_collider(colliders.Collider(geometry.Sphere(radius), pose=(0.5, 0.5, surface_z + radius, 1, 0, 0, 0)))
    mesh = flat_pad(width, width, thickness, *cells)
    builder.add_sensor(
        Sensor(
            mesh,
            mount=mount,
            offset=(0.0, 0.0, mount_half + thickness, 1.0, 0.0, 0.0, 0.0),  # gel on the box's top face
            material=Elastomer(E=E, nu=0.4, density=1100.0, damping=500.0),
            contact=PenaltyContact(k_n=200.0, k_d=50.0, k_t=1.0, mu=mu),
            name="pad",
        )
    )
    sim = Simulator(builder.build(), batch_size=1)

    step = dt * substeps
    control = torch.zeros(press_steps + slide_steps, 1, 2, 6, dtype=torch.float64)
    control[:press_steps, 0, 1, 2] = -depth / (press_steps * step)  # press down ...
    control[press_steps:, 0, 1, 0] = slide / (slide_steps * step)  # ... then slide along +x

    rest = torch.as_tensor(mesh.nodes[mesh.surface_nodes])
    tris = torch.as_tensor(np.array(mesh.surface_tris))
    view = TactileSensorView(
        rest,
        tris,
        PinholeCamera.from_fov(64, 64, 70.0, position=(0.0, 0.0, -0.012)),
        markers=MarkerLayout.grid(rest, tris, rows=5, cols=5, spacing=0.002),
    )
    return Scene(sim=sim, control=control, view=view)


# ------------------------------------------------------------------------------------ signals
def simulate_signals(sim, control: torch.Tensor, params: torch.Tensor, view, sensor: int = 0) -> dict:
    """Tactile signals of a rollout at every control step (differentiable in ``params``).

    Args:
        sim: the simulator. control: ``(T, B, K, 6)``. params: ``(B, S, 8)`` sensor parameters.
        view: the sensor's :class:`engine.tactile.TactileSensorView`. sensor: which sensor.

    Returns:
        ``{"marker_disp_px": (T, B, M, 2) [px], "net_wrench": (T, B, 6) [N, N m]}``.
    """
    out = sim.rollout(sim.initial_state(), control, record="all", sensor_params=params)
    x, f = sim.fem.to_sensor_frame(sensor, out.sensor_x, out.sensor_f, out.collider_pose)  # (T, B, S, 3)
    T, B = x.shape[:2]
    signals = view.signals(x.reshape(T * B, *x.shape[2:]), f.reshape(T * B, *f.shape[2:]), keys=SIGNALS)
    return {k: v.reshape(T, B, *v.shape[1:]) for k, v in signals.items()}


def measure(sim, control: torch.Tensor, params: torch.Tensor, view, sensor: int = 0) -> Measurement:
    """Synthetic measurements: the signals the sensor reports with known parameters ``params``.

    Args:
        sim: the simulator. control: ``(T, B, K, 6)`` collider velocities.
        params: ``(B, S, 8)`` sensor parameters (e.g. ``sim.default_sensor_params()``).
        view: the sensor's tactile view. sensor: which sensor.

    Returns:
        A :class:`Measurement` (detached tensors).
    """
    with torch.no_grad():
        signals = simulate_signals(sim, control, params, view, sensor)
    return Measurement(signals["marker_disp_px"], signals["net_wrench"], view, sensor)


def sysid_loss(signals: dict, observed: Measurement) -> torch.Tensor:
    """The relative squared error of markers, net force and net torque (see the module doc)."""

    def relative(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return (a - b).pow(2).sum() / b.pow(2).sum().clamp_min(1e-30)

    w, w_obs = signals["net_wrench"], observed.net_wrench
    return (
        relative(signals["marker_disp_px"], observed.marker_disp_px)
        + relative(w[..., :3], w_obs[..., :3])
        + relative(w[..., 3:], w_obs[..., 3:])
    )


# ------------------------------------------------------------------------------------ identification
class _BudgetSpent(Exception):
    """Raised by the loss closure when ``steps`` rollouts are spent (L-BFGS's line search would
    otherwise run past ``max_eval``)."""


def identify(
    sim,
    control: torch.Tensor,
    observed: Measurement,
    init_params: torch.Tensor,
    param_names: Sequence[str] = ("E", "mu"),
    steps: int = 20,
    lr: float | None = None,
    *,
    optimizer: str = "lbfgs",
    verbose: bool = False,
) -> SysIdResult:
    """Recover sensor parameters from tactile measurements by gradient descent through the simulator.

    Args:
        sim: the simulator of the experiment (the scene the measurement was taken in).
        control: ``(T, B, K, 6)`` the trajectory the measurement was taken along.
        observed: the :class:`Measurement`, ``T`` recorded steps (one per control step).
        init_params: ``(B, S, 8)`` initial guess; parameters not in ``param_names`` stay fixed
            at these values.
        param_names: which of :data:`engine.solvers.fem.SENSOR_PARAM_NAMES` to identify; each
            must start > 0 (they are optimized in log space).
        steps: most rollouts (loss and gradient evaluations, forward + backward) to spend;
            L-BFGS stops earlier once converged.
        lr: learning rate in log-parameter units; None: 1 for L-BFGS (its line search scales
            the step), 0.08 for Adam (about 8 % per step, decaying to 0.4 %).
        optimizer: ``"lbfgs"`` or ``"adam"`` (see the module docstring).
        verbose: print one line per rollout.

    Returns:
        A :class:`SysIdResult`.

    Raises:
        ValueError: an unknown or repeated parameter name, a non-positive initial value, shapes
            that do not match, ``steps < 1``, ``lr <= 0``, an unknown optimizer, or an iterate
            whose parameters make the simulator's substep unstable for the sensor.
    """
    from engine.solvers.fem import SENSOR_PARAM_NAMES

    names = tuple(param_names)
    unknown = [n for n in names if n not in SENSOR_PARAM_NAMES]
    if unknown:
        raise ValueError(f"unknown sensor parameter(s) {unknown}; known: {list(SENSOR_PARAM_NAMES)}")
    if not names or len(set(names)) != len(names):
        raise ValueError(f"param_names must be distinct names, at least one, got {names}")
    if optimizer not in ("lbfgs", "adam"):
        raise ValueError(f"optimizer must be 'lbfgs' or 'adam', got {optimizer!r}")
    lr = (1.0 if optimizer == "lbfgs" else 0.08) if lr is None else lr
    if not (isinstance(steps, int) and steps >= 1) or not lr > 0:
        raise ValueError(f"need an int steps >= 1 and lr > 0, got steps={steps!r}, lr={lr!r}")
    expected = tuple(sim.default_sensor_params().shape)
    init = torch.as_tensor(init_params, dtype=torch.float64).detach()
    if tuple(init.shape) != expected:
        raise ValueError(f"init_params must have shape {expected} (B, sensors, 8), got {tuple(init.shape)}")
    T = int(control.shape[0])
    if observed.marker_disp_px.shape[0] != T or observed.net_wrench.shape[0] != T:
        raise ValueError(
            f"observed must hold one row per control step ({T}), got marker_disp_px "
            f"{tuple(observed.marker_disp_px.shape)} and net_wrench {tuple(observed.net_wrench.shape)}"
        )
    cols = [SENSOR_PARAM_NAMES.index(n) for n in names]
    start = init[..., cols]
    if not bool((start > 0).all()):
        bad = [n for k, n in enumerate(names) if not bool((start[..., k] > 0).all())]
        raise ValueError(f"initial values must be > 0 to optimize in log space; not so for {bad}")

    z = start.log().clone().requires_grad_(True)  # (B, S, P): the optimized log-parameters
    history: list[dict] = []
    best: dict = {"loss": math.inf}
    t0 = time.perf_counter()

    def closure() -> torch.Tensor:
        """One rollout: loss and its gradient with respect to z (recorded in history)."""
        if len(history) == steps:
            raise _BudgetSpent
        params = init.clone()
        params[..., cols] = z.exp()  # differentiable; the other columns stay fixed
        loss = sysid_loss(simulate_signals(sim, control, params, observed.view, observed.sensor), observed)
        z.grad = None
        loss.backward()
        value = loss.item()
        row = {"eval": len(history), "loss": value}
        row.update(zip(names, params.detach()[0, observed.sensor, cols].tolist(), strict=True))
        history.append(row)
        if verbose:
            print("  ".join(f"{k}={v:.6g}" for k, v in row.items()))
        if value < best["loss"]:
            best.update(loss=value, params=params.detach().clone())
        return loss

    try:
        if optimizer == "lbfgs":
            opt = torch.optim.LBFGS([z], lr=lr, max_iter=steps, max_eval=steps, line_search_fn="strong_wolfe")
            opt.step(closure)
        else:
            opt = torch.optim.Adam([z], lr=lr)
            decay = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps, eta_min=lr / 20)
            for _ in range(steps):
                opt.step(closure)
                decay.step()
    except _BudgetSpent:
        pass
    params = best["params"]
    estimate = dict(zip(names, params[0, observed.sensor, cols].tolist(), strict=True))
    return SysIdResult(names, estimate, params, best["loss"], history, time.perf_counter() - t0)


# ------------------------------------------------------------------------------------ example
def main(argv: Sequence[str] | None = None) -> dict[str, float]:
    """``python -m policies.sysid``: identify E and mu of the default press-and-slide scene from
    a start 30 % off each (E too stiff, mu too low). Prints every rollout, the recovered values
    and their relative errors; returns the relative errors."""
    import argparse

    import engine
    from engine.solvers.fem import SENSOR_PARAM_NAMES

    parser = argparse.ArgumentParser(prog="python -m policies.sysid", description=main.__doc__)
    parser.add_argument("--optimizer", choices=("lbfgs", "adam"), default="lbfgs")
    parser.add_argument("--steps", type=int, default=None, help="rollouts (default 20 for lbfgs, 40 for adam)")
    args = parser.parse_args(argv)
    steps = args.steps or (20 if args.optimizer == "lbfgs" else 40)

    engine.init(precision="f64")
    true = {"E": 1.0e5, "mu": 0.5}
    scene = press_and_slide_scene(**true)
    truth = scene.sim.default_sensor_params()
    observed = measure(scene.sim, scene.control, truth, scene.view)
    init = truth.clone()
    init[..., SENSOR_PARAM_NAMES.index("E")] *= 1.3
    init[..., SENSOR_PARAM_NAMES.index("mu")] *= 0.7
    print(
        f"true E={true['E']:.6g} Pa, mu={true['mu']:.4g}; start E={1.3 * true['E']:.6g} Pa, mu={0.7 * true['mu']:.4g}"
    )
    result = identify(
        scene.sim, scene.control, observed, init, ("E", "mu"), steps=steps, optimizer=args.optimizer, verbose=True
    )
    errors = {n: result.estimate[n] / true[n] - 1.0 for n in result.names}
    for n in result.names:
        print(f"{n}: recovered {result.estimate[n]:.6g} (true {true[n]:.6g}), relative error {errors[n]:+.2e}")
    print(f"loss {result.loss:.3g} after {len(result.history)} rollouts, {result.time_s:.1f} s")
    return errors


if __name__ == "__main__":
    main()
