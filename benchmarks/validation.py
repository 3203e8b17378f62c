"""Physical validation cases: scenes whose answer is published, run and compared. Prints JSON.

Each case is a function registered in :data:`CASES` (name -> :class:`Case`: a ``run`` that returns
a JSON-ready dict and a ``plot`` that draws it). ``--case NAME`` (repeatable, default all) picks
cases; each writes ``<out>/<name>.json`` and ``<out>/<name>.png``; ``--quick`` runs each case's
reduced setup (the one its test runs). Runs in f64 (``--arch`` cpu | cuda | auto).

Usage: python benchmarks/validation.py [--case hertz] [--quick] [--out benchmarks/results/validation]

Case ``hertz`` — a rigid sphere pressed into an elastomer (engine/solvers/fem.py, penalty contact
of engine/coupling/sensors.py)
    Reference: K. L. Johnson, *Contact Mechanics*, Cambridge University Press, 1985, Sec. 4.2
    (Hertz's theory of elastic contact of spheres): a rigid sphere of radius R pressed a depth d
    into an elastic half-space of Young's modulus E and Poisson ratio nu, frictionless, carries

        F = 4/3 E* R^(1/2) d^(3/2),   E* = E / (1 - nu^2),

    with contact radius a = (R d)^(1/2) and peak pressure p0 = 2 E* a / (pi R) (Johnson Eqs. 4.22,
    4.23 with a rigid indenter, 1/E* = (1 - nu^2)/E). The theory assumes a << R and a small
    against the body's size.

    Setup (:class:`HertzSetup`; choices and why):

    * Body: a half-ball of gel whose flat face (the sensor frame's ``z = 0``, facing +z) is the
      contact surface, centred under the sphere, with its curved back (radius ``outer_radius`` =
      60 mm, 30 a at the deepest point) glued to a fixed mount. Its tet mesh
      (:func:`graded_half_ball`) is graded geometrically about the contact centre: shells of the
      triangulated hemisphere (:func:`engine.geometry.tetmesh.hemisphere_rings`) at radii
      growing by ``1 + pi/(2 rings)`` per layer, so cells are about cubic and their size is a
      fixed fraction (``pi/(2 rings)``) of their distance from the contact centre. The contact
      radius therefore spans the same number of cells at every depth, and the far field costs a
      few layers (24,064 tets for 8 rings). A uniform pad resolving a with ~6 cells and 20 a
      thick would need millions of tets; a thinner one is stiffer than a half-space (about
      +10 % at a / thickness = 0.1 and nu = 0.3 for a layer bonded to its base: E. K.
      Dimitriadis et al., Biophys. J. 82, 2798, 2002). The clamped back stiffens the response
      by about ``0.64 a / outer_radius`` (the Boussinesq displacement ``F / (pi E* r)`` that the
      clamp removes from d, times 3/2): 2 % at the deepest point.
    * Material: E = 0.1 MPa (a soft silicone), nu = 0.3: linear tets lock as nu -> 0.5, and a
      lower nu also raises the stable step (P-wave speed). Strains stay small (d/R <= 0.04,
      a/R <= 0.2), where the Stable Neo-Hookean energy is linear elasticity.
    * Contact: frictionless (k_t = mu = 0, as Hertz assumes) and without contact damping
      (k_d = 0), so a node's force is ``k_n * penetration``. The penalty adds compliance (the
      gel's surface stays ``F_node / k_n`` short of the sphere's depth): with k_n = 100 N/m the
      largest node penetration is 2-5 % of d (reported per load point as
      ``max_penetration_over_d``; largest at small d, where the centre node, whose share of
      the surface is the core's, carries the peak pressure), and tripling k_n raises F by about
      1 %. A stiffer k_n costs steps: the explicit step is bounded by ``sqrt(m_node / k_n)``
      for the lightest node (a surface node near the centre), at k_n = 100 N/m already 3x
      below the elastic bound ``h_min / c_p``; dt is 0.9 of ``Sensor.stable_dt()``.
    * Loading: quasi-static, in increments: the sphere moves down to each depth in ``ramp_time``,
      then holds until the windowed mean force settles (two successive ``window`` means within
      ``settle_tol``; at most ``max_hold``). Mass-proportional damping c = 500 1/s is about
      ``5 c_s / outer_radius`` (c_s the shear wave speed), twice the lowest natural frequency of
      the clamped half-ball: near critical for the slow far field, while the fast contact modes
      still decay at c/2. Only the settled force (the mean of the last window, which spans
      several periods of the ring-down seen after a ramp) is compared, so neither damping nor
      inertia enters it.
    * Measured: the indentation d = the sphere's lowest point below the undeformed surface (from
      the collider pose), and the force F = minus the z sum of the contact forces on the gel's
      nodes (the reaction on the sphere).
    * Fitted range: d from 0.1 to 0.4 mm (a from 1 to 2 mm, 4 to 8 core radii). Below it the
      contact radius approaches the mesh core (``core_radius`` = 0.25 mm, inside which the gel
      is one fan of tets around the centre node) and the centre node's penetration grows; above
      it a/R and a/outer_radius grow. A point below the range (d = 0.05 mm) is run and
      reported, but not fitted.
    * Reduced setup (:meth:`HertzSetup.reduced`, the test's): 6 rings and a 0.4 mm core (9,648
      tets, a 3x larger step), load points 0.2, 0.3, 0.4 mm.

    Reports per load point d, F, F_Hertz, their relative error, the settled drift, the largest
    penetration, the contact radius (outermost touching node) against (R d)^(1/2); over the
    fitted range the max relative error, the least-squares E* of F = 4/3 E* R^(1/2) d^(3/2) and
    the log-log slope (Hertz: 1.5).

A scene needs MPM particles (Taichi has no zero-size arrays): each case places a small blob
(8 particles, 0 gravity, at rest) in a domain corner far from anything it could touch; it
weighs far less than the half-cell mass the sensor's MPM contact needs, so it never acts.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "validation"


# ------------------------------------------------------------------------------------ registry
@dataclass(frozen=True)
class Case:
    """A validation case.

    Attributes:
        name: the ``--case`` name and the output file stem.
        run: ``run(quick) -> dict`` (JSON-ready; ``quick`` selects the reduced setup). The dict
            holds ``passed`` (bool) and ``max_rel_error``.
        plot: ``plot(result, path)`` writes a PNG of the result.
    """

    name: str
    run: Callable[[bool], dict]
    plot: Callable[[dict, Path], None]


CASES: dict[str, Case] = {}


def register(name: str, plot: Callable[[dict, Path], None]):
    """Decorator: register ``run(quick) -> dict`` as case ``name`` with its ``plot``."""

    def wrap(run):
        if name in CASES:
            raise ValueError(f"validation case {name!r} is registered twice")
        CASES[name] = Case(name, run, plot)
        return run

    return wrap


def _blob(builder, config) -> None:
    """Eight resting particles in the domain's low corner (a scene needs MPM particles)."""
    from engine import sampling
    from engine.materials import JELLY

    lo = (config.boundary_cells + 0.1) * config.dx
    spacing = 0.002
    builder.add_particles(sampling.box((lo,) * 3, (lo + 2 * spacing,) * 3, spacing), JELLY, spacing)


# ------------------------------------------------------------------------------------ hertz
def hertz_force(d, E: float, nu: float, R: float):
    """Hertz normal force [N] of a rigid sphere of radius R [m] at indentation d [m] (>= 0)."""
    return 4.0 / 3.0 * E / (1.0 - nu**2) * math.sqrt(R) * np.asarray(d, dtype=float) ** 1.5


def graded_half_ball(core_radius: float, outer_radius: float, rings: int):
    """Tet mesh of a gel half-ball ``|x| <= outer_radius, z <= 0``, graded about the origin.

    Node 0 is the origin (the contact centre). Shell ``l = 0 .. L`` carries the triangulated
    lower hemisphere of :func:`engine.geometry.tetmesh.hemisphere_rings` (``rings`` latitude
    rings, mirrored to ``z <= 0``) at radius ``core_radius * q^l``, ``q ~ 1 + pi / (2 rings)``
    rounded so that shell L lands on ``outer_radius``; node ``1 + l N + v`` is direction v of shell
    l. Prisms between shells split into 3 tets as in :func:`engine.geometry.tetmesh.dome` (by
    sorted direction index, so shared quads get the same diagonal); the core ball is a fan of
    tets from node 0 to shell 0's triangles.

    Contact surface: the faces on ``z = 0`` (the equator rings and node 0; normal +z). Mount:
    every node of the outer shell.

    Returns:
        :class:`engine.geometry.tetmesh.TetMesh` in the sensor frame [m].
    """
    from engine.geometry.tetmesh import TetMesh, hemisphere_rings, tet_volumes

    if not 0 < core_radius < outer_radius:
        raise ValueError(f"need 0 < core_radius < outer_radius, got {core_radius!r}, {outer_radius!r}")
    dirs, tris = hemisphere_rings(rings)
    dirs = dirs * np.array([1.0, 1.0, -1.0])  # the hemisphere below the contact plane
    n_dir = len(dirs)
    layers = max(1, round(math.log(outer_radius / core_radius) / math.log(1.0 + 0.5 * math.pi / rings)))
    radii = core_radius * (outer_radius / core_radius) ** (np.arange(layers + 1) / layers)
    nodes = np.concatenate([np.zeros((1, 3)), (radii[:, None, None] * dirs[None]).reshape(-1, 3)])
    v = np.sort(tris, axis=1) + 1
    split = np.array([[0, 1, 2, 5], [0, 1, 4, 5], [0, 3, 4, 5]])  # b0 b1 b2 t0 t1 t2 -> 3 tets
    tets = [np.concatenate([np.zeros((len(v), 1), dtype=np.int64), v], axis=1)]
    for layer in range(layers):
        prism = np.concatenate([layer * n_dir + v, (layer + 1) * n_dir + v], axis=1)
        tets.append(prism[:, split].reshape(-1, 4))
    tets = np.concatenate(tets)
    negative = tet_volumes(nodes, tets) < 0.0
    tets[negative, 1], tets[negative, 2] = tets[negative, 2], tets[negative, 1].copy()
    return TetMesh.from_tets(
        nodes,
        tets,
        mount_nodes=np.arange(1 + layers * n_dir, 1 + (layers + 1) * n_dir),
        contact_nodes=np.flatnonzero(nodes[:, 2] == 0.0),
        source=f"graded_half_ball({core_radius:g}, {outer_radius:g}, rings={rings}, layers={layers})",
    )


@dataclass(frozen=True)
class HertzSetup:
    """Parameters of the Hertz case (SI units; see the module docstring for the choices).

    Attributes:
        E, nu, density, damping: the gel (:class:`engine.solvers.fem.Elastomer`).
        k_n: penalty stiffness [N/m] (k_d = k_t = mu = 0).
        radius: sphere radius R [m].
        rings, core_radius, outer_radius: the mesh (:func:`graded_half_ball`).
        depths: load points, increasing indentations d [m].
        fit_range: (d_lo, d_hi) [m]: the load points compared against the tolerance.
        ramp_time: time to move from one depth to the next [s].
        window, settle_tol, max_hold: hold until two successive window means [s] differ by less
            than settle_tol (relative), at most max_hold [s].
        substeps: substeps per control step (the force is sampled once per control step).
        dt_safety: dt = dt_safety * Sensor.stable_dt().
        tolerance: pass if every fitted point's |F / F_Hertz - 1| is at most this.
    """

    E: float = 1.0e5
    nu: float = 0.3
    density: float = 1100.0
    damping: float = 500.0
    k_n: float = 100.0
    radius: float = 0.01
    rings: int = 8
    core_radius: float = 0.25e-3
    outer_radius: float = 0.06
    depths: tuple[float, ...] = (0.05e-3, 0.1e-3, 0.15e-3, 0.2e-3, 0.25e-3, 0.3e-3, 0.35e-3, 0.4e-3)
    fit_range: tuple[float, float] = (0.1e-3, 0.4e-3)
    ramp_time: float = 1.0e-3
    window: float = 1.5e-3
    settle_tol: float = 3e-3
    max_hold: float = 6e-3
    substeps: int = 100
    dt_safety: float = 0.9
    tolerance: float = 0.15

    @classmethod
    def reduced(cls) -> HertzSetup:
        """The test's version: a coarser mesh (6 rings, 0.4 mm core: 9,648 tets instead of
        24,064, a 3x larger stable step) and three load points."""
        return cls(rings=6, core_radius=0.4e-3, depths=(0.2e-3, 0.3e-3, 0.4e-3), fit_range=(0.2e-3, 0.4e-3))


def build_hertz(setup: HertzSetup):
    """The Hertz scene: ``(simulator, surface point (3,), sphere collider index)``.

    Collider 0 is the sensor's mount (a small box at the surface centre, sensor offset zero);
    collider 1 the sphere, its lowest point on the undeformed surface.
    """
    from engine import colliders, geometry
    from engine.config import SimConfig
    from engine.scene import SceneBuilder
    from engine.simulator import Simulator
    from engine.solvers.fem import Elastomer, PenaltyContact, Sensor

    mesh = graded_half_ball(setup.core_radius, setup.outer_radius, setup.rings)
    material = Elastomer(E=setup.E, nu=setup.nu, density=setup.density, damping=setup.damping)
    contact = PenaltyContact(k_n=setup.k_n, k_d=0.0, k_t=0.0, mu=0.0)
    probe = Sensor(mesh, mount=0, material=material, contact=contact)
    dt = setup.dt_safety * probe.stable_dt()
    # The domain holds the whole gel; grid_res 8: the MPM part is only the resting blob, so its
    # grid is as small as allowed.
    size = 0.2
    if setup.outer_radius > 0.45 * size or setup.radius > 0.1 * size:
        raise ValueError("HertzSetup: outer_radius must be <= 90 mm and radius <= 20 mm (0.2 m domain)")
    config = SimConfig(
        domain_size=size, grid_res=8, boundary_cells=1, dt=dt, substeps=setup.substeps, gravity=(0.0, 0.0, 0.0)
    )
    builder = SceneBuilder(config)
    _blob(builder, config)
    surface = np.array([0.5, 0.5, 0.7]) * size
    mount = builder.add_collider(colliders.Collider(geometry.Box((1e-3, 1e-3, 1e-3)), pose=(*surface, 1, 0, 0, 0)))
    sphere = builder.add_collider(
        colliders.Collider(geometry.Sphere(setup.radius), pose=(*surface[:2], surface[2] + setup.radius, 1, 0, 0, 0))
    )
    builder.add_sensor(Sensor(mesh, mount=mount, material=material, contact=contact, name="hertz_gel"))
    return Simulator(builder.build(), batch_size=1), surface, sphere


def run_hertz(setup: HertzSetup) -> dict:
    """Press the sphere quasi-statically to each of ``setup.depths``; compare with Hertz.

    Needs an initialized runtime (f64 recommended). Returns the JSON-ready result (see the
    module docstring).
    """
    import torch

    started = time.perf_counter()
    sim, surface, sphere = build_hertz(setup)
    mesh, cfg = sim.model.sensors[0].mesh, sim.config
    step_time = cfg.dt * cfg.substeps
    surf = sim.fem.nodes_of(0).start + np.asarray(mesh.surface_nodes)
    rest_xy = sim.initial_state().sensors.x[0, surf, :2].numpy() - surface[:2]
    r_surf = np.linalg.norm(rest_xy, axis=1)
    sim.reset()
    control = torch.zeros(1, sim.n_colliders, 6, dtype=sim.dtype)
    t, history, points = 0.0, {"t": [], "d": [], "F": []}, []
    window_steps = max(1, round(setup.window / step_time))

    def advance(velocity: float) -> tuple[float, float, np.ndarray]:
        nonlocal t
        control[0, sphere, 2] = velocity
        sim.step(control)
        t += step_time
        f = sim.get_state().sensors.f[0].numpy()
        d = surface[2] - (float(sim.collider_poses()[0, sphere, 2]) - setup.radius)
        F = -float(f[:, 2].sum())
        for key, value in (("t", t), ("d", d), ("F", F)):
            history[key].append(value)
        return d, F, f

    d_prev = 0.0
    for d_target in setup.depths:
        n_ramp = max(1, math.ceil(setup.ramp_time / step_time))
        for _ in range(n_ramp):
            advance(-(d_target - d_prev) / (n_ramp * step_time))
        d_prev = d_target
        means, hold_steps, forces = [], 0, []
        while True:
            d, F, f = advance(0.0)
            forces.append(F)
            hold_steps += 1
            if hold_steps % window_steps == 0:
                means.append(float(np.mean(forces[-window_steps:])))
                settled = len(means) >= 2 and abs(means[-1] - means[-2]) <= setup.settle_tol * abs(means[-1])
                if settled or hold_steps * step_time >= setup.max_hold:
                    break
        F_set = means[-1]
        settled = len(means) >= 2 and abs(means[-1] - means[-2]) <= setup.settle_tol * abs(means[-1])
        F_h = float(hertz_force(d, setup.E, setup.nu, setup.radius))
        touching = np.linalg.norm(f[surf], axis=1) > 0
        points.append(
            {
                "d_mm": float(d) * 1e3,
                "force_N": F_set,
                "hertz_N": F_h,
                "rel_error": F_set / F_h - 1.0,
                "settled": bool(settled),
                "drift_last_window": (means[-1] - means[-2]) / means[-1] if len(means) >= 2 else None,
                "hold_ms": hold_steps * step_time * 1e3,
                "max_penetration_over_d": float(np.linalg.norm(f, axis=1).max()) / setup.k_n / d,
                "contact_radius_mm": float(r_surf[touching].max()) * 1e3 if touching.any() else 0.0,
                "hertz_contact_radius_mm": math.sqrt(setup.radius * d) * 1e3,
                "touching_nodes": int(touching.sum()),
            }
        )
    lo, hi = setup.fit_range
    fitted = [p for p in points if lo * (1 - 1e-9) <= p["d_mm"] * 1e-3 <= hi * (1 + 1e-9)]
    d_fit = np.array([p["d_mm"] for p in fitted]) * 1e-3
    F_fit = np.array([p["force_N"] for p in fitted])
    basis = 4.0 / 3.0 * math.sqrt(setup.radius) * d_fit**1.5
    E_star_fit = float(basis @ F_fit / (basis @ basis))
    slope = float(np.polyfit(np.log(d_fit), np.log(F_fit), 1)[0]) if len(fitted) > 1 else None
    max_err = max(abs(p["rel_error"]) for p in fitted)
    sensor = sim.model.sensors[0]
    return {
        "case": "hertz",
        "reference": "Johnson, Contact Mechanics (1985), Sec. 4.2: F = 4/3 E/(1-nu^2) R^1/2 d^3/2",
        "setup": asdict(setup),
        "mesh": {
            "source": mesh.source,
            "nodes": mesh.n_nodes,
            "tets": mesh.n_tets,
            "surface_nodes": len(mesh.surface_nodes),
            "min_tet_height_m": sensor.min_height(),
            "stable_dt_s": sensor.stable_dt(),
            "elastic_dt_bound_s": sensor.min_height() / sensor.material.wave_speed(),
        },
        "dt_s": cfg.dt,
        "substeps": cfg.substeps,
        "points": points,
        "fit_range_mm": [lo * 1e3, hi * 1e3],
        "max_rel_error": max_err,
        "tolerance": setup.tolerance,
        "passed": bool(max_err <= setup.tolerance and all(p["settled"] for p in fitted)),
        "E_star_fit_over_E_star": E_star_fit / (setup.E / (1.0 - setup.nu**2)),
        "loglog_slope": slope,
        "history": {k: [round(x, 9) for x in v[:: max(1, len(v) // 2000)]] for k, v in history.items()},
        "simulated_s": t,
        "substeps_run": round(t / cfg.dt),
        "wall_s": time.perf_counter() - started,
    }


def plot_hertz(result: dict, path: Path) -> None:
    """Force against indentation (simulation, Hertz), the relative error, the force history."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s, pts = result["setup"], result["points"]
    lo, hi = result["fit_range_mm"]
    d = np.array([p["d_mm"] for p in pts])
    F = np.array([p["force_N"] for p in pts])
    err = np.array([p["rel_error"] for p in pts])
    fitted = (d >= lo * (1 - 1e-9)) & (d <= hi * (1 + 1e-9))
    dd = np.linspace(0.0, d.max() * 1.05, 200)
    fig, ax = plt.subplots(1, 3, figsize=(15, 4.3))
    ax[0].plot(dd, hertz_force(dd * 1e-3, s["E"], s["nu"], s["radius"]), "k-", label="Hertz (Johnson 1985, 4.2)")
    ax[0].plot(d[fitted], F[fitted], "o", color="C0", label="FEM, fitted range")
    ax[0].plot(d[~fitted], F[~fitted], "o", mfc="none", color="C0", label="FEM, outside range")
    ax[0].set(xlabel="indentation d [mm]", ylabel="normal force F [N]", title="sphere on a gel: F(d)")
    ax[0].legend()
    ax[1].axhspan(-100 * result["tolerance"], 100 * result["tolerance"], color="C2", alpha=0.12, label="tolerance")
    ax[1].axvspan(lo, hi, color="0.85", alpha=0.5, label="fitted range")
    ax[1].plot(d, 100 * err, "o-", color="C0")
    ax[1].axhline(0.0, color="k", lw=0.8)
    ax[1].set(
        xlabel="indentation d [mm]",
        ylabel="F / F_Hertz - 1 [%]",
        title=f"max |error| in range: {100 * result['max_rel_error']:.1f} %",
    )
    ax[1].legend()
    h = result["history"]
    ax[2].plot(np.array(h["t"]) * 1e3, h["F"], lw=0.8, color="C0", label="F (simulated)")
    ax[2].plot(
        np.array(h["t"]) * 1e3,
        hertz_force(np.array(h["d"]), s["E"], s["nu"], s["radius"]),
        lw=0.8,
        color="k",
        ls="--",
        label="Hertz at the current d",
    )
    ax[2].set(xlabel="time [ms]", ylabel="F [N]", title="loading history (ramp, hold)")
    ax[2].legend()
    mesh = result["mesh"]
    fig.suptitle(
        f"Hertz: R = {1e3 * s['radius']:g} mm, E = {s['E']:g} Pa, nu = {s['nu']:g}, k_n = {s['k_n']:g} N/m; "
        f"{mesh['tets']} tets ({mesh['source']})",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


@register("hertz", plot_hertz)
def hertz_case(quick: bool = False) -> dict:
    """Sphere on an elastomer against Hertz (the full setup, or the test's reduced one)."""
    return run_hertz(HertzSetup.reduced() if quick else HertzSetup())


# ------------------------------------------------------------------------------------ driver
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--case", action="append", choices=sorted(CASES), help="case to run (repeatable; default all)")
    parser.add_argument("--quick", action="store_true", help="the reduced setups (as the tests run them)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="directory for <case>.json and <case>.png")
    parser.add_argument("--arch", default="cpu", choices=["cpu", "cuda", "auto"])
    args = parser.parse_args(argv)

    import engine

    engine.init(arch=args.arch, precision="f64")
    args.out.mkdir(parents=True, exist_ok=True)
    results = {}
    for name in args.case or sorted(CASES):
        case = CASES[name]
        result = case.run(args.quick)
        result.update(
            date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            command=" ".join([Path(sys.executable).name, *sys.argv]),
            machine={"cpu": platform.processor() or platform.machine(), "python": platform.python_version()},
            precision="f64",
            quick=args.quick,
        )
        (args.out / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
        case.plot(result, args.out / f"{name}.png")
        results[name] = result
    summary = {
        name: {k: r[k] for k in ("passed", "max_rel_error", "tolerance", "fit_range_mm", "wall_s") if k in r}
        for name, r in results.items()
    }
    print(json.dumps({"summary": summary, "results": results}, indent=2))


if __name__ == "__main__":
    main()
