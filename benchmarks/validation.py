"""Physical validation cases: scenes whose answer is published, run and compared. Prints JSON.

Each case is a function registered in :data:`CASES` (name -> :class:`Case`: a ``run`` that returns
a JSON-ready dict and a ``plot`` that draws it). ``--case NAME`` (repeatable, default all) picks
cases; each writes ``<out>/<name>.json`` and ``<out>/<name>.png``; ``--quick`` runs each case's
reduced setup (the one its test runs). Runs in f64 (``--arch`` cpu | cuda | auto).

Cases: ``hertz``, ``dam_break``, ``hydrostatic``, ``elastic_column``, ``bingham_slump``,
``taylor_green``.

Usage: python benchmarks/validation.py [--case NAME] [--quick] [--out benchmarks/results/validation]
       [--liquid-model projected]

``--liquid-model projected`` runs ``dam_break`` and ``hydrostatic`` with the pressure-projected
liquid (``SimConfig.liquid_model``, engine/solvers/pressure.py) and writes ``<case>_projected``.

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

A scene needs MPM particles (Taichi has no zero-size arrays): the hertz case places a small blob
(8 particles, 0 gravity, at rest) in a domain corner far from anything it could touch; it
weighs far less than the half-cell mass the sensor's MPM contact needs, so it never acts.

Walls (the MPM cases below). The domain's walls are slip walls that material may leave (only
the velocity into a wall is removed, at the grid nodes within ``boundary_cells`` of it). Where a
case needs a wall elsewhere, or one that holds material on both sides (a symmetry plane), it
uses a frictionless kinematic slab (a box a few cells thick, :func:`_wall`; grid condition
``slip``, which removes the normal velocity both ways, or ``sticky``). The slab's face is put
0.05 dx on the material's side of the grid node at the material's boundary, so that this node
lies inside the slab and is constrained, as the domain walls constrain the node on their face.
With the face on that node, or beyond it, the node just outside the slab carries velocity into
it, and the particles that cross the face are put back on it (``project_out``) without their J
being corrected, so that a liquid's J stops describing its particles' volume.

Case ``dam_break`` — collapse of a water column (MLS-MPM, weakly compressible water)
    Reference: J. C. Martin and W. J. Moyce, "Part IV. An experimental study of the collapse of
    liquid columns on a rigid horizontal plane", Phil. Trans. R. Soc. Lond. A 244 (882),
    312-324, 1952, Fig. 3: the distance z of the surge front from the back wall, Z = z/a,
    against T = t sqrt(2g/a) (their n t sqrt(g/a) with n^2 = 2), for columns of width a and
    height 2a, a = 1.125 in and 2.25 in. Data: benchmarks/data/martin_moyce_1952.csv (as
    digitised in PySPH, pysph/examples/db_exp_data.py).

    Setup (:class:`DamBreakSetup`; choices and why):

    * Water: :data:`engine.materials.WATER` (bulk modulus K = 0.4 MPa, sound speed c = 20 m/s:
      the late front speed, ~1.7 sqrt(2ga) = 1.8 m/s, is Mach 0.09, and the column's
      compression rho g 2a / K is 0.3 %), at rest with J = 1, released at t = 0 (no gate).
    * a = 2.25 in = 57.15 mm: the experiment's larger column, at its scale. The engine has no
      surface tension and the floor no friction, effects that grow as the column shrinks; the
      two measured series differ by 8-12 % at T = 5-5.7.
    * Quasi-2D: a slab 2 cells thick in y, between the domain wall y = lo and a slip box. The
      floor and the back wall are the domain's slip walls: frictionless (the experiment's floor
      has a viscous boundary layer far thinner than a cell).
    * Comparable range: the domain's interior is 10.5 a long, so the front meets the far wall
      at T ~ 7. Every experimental time at which the simulated front is short of 0.95 of that
      length is compared (T <= 6.45): all of the 2.25 in series (to T = 6.3, Z = 9.0).
    * Resolution: grid 128 (a = 11.8 cells), 2 particles per cell edge, dt = 0.5 dx / c.

    Measured: the front Z = (x_99 + h/2 - x_wall) / a, x_99 the 99th percentile of x over the
    particles below 0.25 a (the tongue along the floor; a percentile is not moved by a single
    particle thrown ahead), h the particle spacing (a particle stands for the cube of side h
    around it, so Z(0) = 1). Sampled every 0.05 in T and interpolated to the experiment's times.

    Tolerance: |Z_sim / Z_exp - 1| <= 10 % at every compared time of the 2.25 in series, about
    the spread of the experiment itself (its two series). Reported besides: the errors against
    the 1.125 in series; the late front speed dZ/dT (the slope of a line fitted for T >= 2) of
    simulation and experiment, which does not depend on the time origin; and the shift of the
    experiment's time origin that best aligns the two curves, with the error left after it (the
    real column is not released instantly).

    Reduced setup (the test's): grid 64 (a = 5.7 cells).

Case ``hydrostatic`` — pressure in a water column at rest
    Reference: hydrostatics, p = rho g h (e.g. G. K. Batchelor, *An Introduction to Fluid
    Dynamics*, Cambridge University Press, 1967, Sec. 1.4). In a laterally confined column the
    pressure under a particle's initial depth h0 carries the mass per area above it, rho h0
    (rho the rest density), whatever the liquid's compression; the reference is rho g h0.

    Setup (:class:`HydrostaticSetup`): a column of WATER 0.4 m high and 2 x 2 cells in
    cross-section in the domain's corner, between the domain walls (x, y = lo, and the floor)
    and two slip boxes: frictionless walls carry no shear, so the pressure depends on the depth
    only (a quasi-1D column). Grid 96 (H = 80 cells), 2 particles per cell edge,
    dt <= 0.5 dx / c.

    Measured: each particle's pressure from the fluid's equation of state (engine/materials.py:
    Kirchhoff stress K J (J - 1) I, so the Cauchy pressure is p = K (1 - J)). Water started at
    J = 1 under gravity rings acoustically (fundamental period 4H/c = 0.08 s, amplitude equal to
    the static pressure), and nothing damps it (the engine has no damping, and WATER's
    viscosity is 1e-3 Pa s): the pressure is the Hann-windowed time mean over 0.8 s (10
    periods). The Hann window's response to an oscillation with N periods in the window is at
    most ~1 / (pi N (N^2 - 1)) of its amplitude: 0.03 % for N = 10. Then its mean in 10 bins of
    initial depth.

    Tolerance: |p / (rho g h0) - 1| <= 2 % in the bins deeper than H/4. Near the free surface p
    tends to 0 and a relative error loses its meaning: the surface of a particle-sampled liquid
    is defined to about dx/4, which is 1.25 % of the depth H/4 with 80 cells (the shallower bins
    are reported, with their errors over rho g H). The particles in the first cell above the
    floor are left out of the bins and reported on their own, per particle layer (``near_floor``):
    the floor's condition acts on their grid stencils, and they deviate by up to tens of
    percent.

    Reduced setup: grid 48 (H = 38 cells), 0.4 s (5 periods: window response <= 0.3 %).

Case ``elastic_column`` — an elastic column loaded by its own weight
    Reference: the elastic bar in uniaxial strain (S. P. Timoshenko and J. N. Goodier, *Theory
    of Elasticity*, 3rd ed., McGraw-Hill, 1970; the fixed-free bar's wave equation for the
    period). A column of height L on a rigid floor, free at the top, confined laterally by
    frictionless walls, under gravity: u(z) = -rho g (L z - z^2/2) / M, the top shortens by
    rho g L^2 / (2M); its fundamental axial mode has the period 4L/c, c = sqrt(M/rho). Since
    the walls stop lateral strain, the modulus is the P-wave (constrained) modulus
    M = lambda + 2 mu = E (1 - nu) / ((1 + nu)(1 - 2 nu)), not E.

    Setup (:class:`ElasticColumnSetup`): the hydrostatic case's column (L = 0.4 m, 2 x 2
    cells, slip walls, grid 96) of the engine's compressible Neo-Hookean material (``elastic``)
    with E = 0.6 MPa, nu = 0.3 (M = 0.81 MPa, c = 28 m/s), density 1000 kg/m^3: the largest
    strain, rho g L / M = 0.49 %, keeps the Neo-Hookean response within ~0.5 % of linear.
    Gravity acts from t = 0 on the unstressed column, so the column rings about its static
    shape with the static amplitude, undamped; 0.5 s is 9 periods.

    Measured: the vertical displacement of the top particle layer (initial height L - h/2) in
    time. Static: its Hann-windowed mean against u(L - h/2). Period: the mean interval between
    its upward crossings of that mean (the higher modes of the released column weigh
    1/(2m+1)^3 of the fundamental at the top: 4 % for the next one).

    Tolerance: 3 % on each: about 1 % for the material's nonlinearity at 0.5 % strain and the
    time average, 1-2 % for where the walls and the floor act on the grid (a quarter cell over
    80 cells is 0.3 % of L; the period goes as L and the shortening as L^2).

    Reduced setup: grid 48 (L = 38 cells), 0.3 s (5 periods).

Case ``bingham_slump`` — slump of a Bingham cylinder (the ``viscoplastic`` material)
    Reference: N. Pashias, D. V. Boger, J. Summers and D. J. Glenister, "A fifty cent
    rheometer for yield stress measurement", J. Rheol. 40 (6), 1179-1189, 1996: a cylinder of
    height H = D of a yield-stress material, once its mould is lifted, slumps by s with
    s/H = 1 - 2 t' (1 - ln 2t'), t' = tau_y / (rho g H). (Their model: above the height where
    rho g (H - z) = 2 tau_y the material stays a plug; below, each layer widens until its
    uniaxial stress is 2 tau_y.)

    Yield stress: the engine's viscoplastic model (engine/materials.py) is von Mises: it flows
    where sqrt(3/2) |dev tau| > sigma_y, in simple shear at tau_y = sigma_y / sqrt(3). The
    formula's tau_y is a shear yield stress (the paper measures it with a vane), so the case
    sets sigma_y = sqrt(3) tau_y. The model's uniaxial criterion, 2 tau_y (Tresca), is 13 %
    above von Mises' sqrt(3) tau_y; the slump the formula gives with sqrt(3)/2 t' in place of
    t' is reported too.

    Setup (:class:`BinghamSlumpSetup`; choices and why):

    * A quarter of the cylinder, H = D = 0.1 m, its axis on the edge of two slip boxes that
      are the symmetry planes (bilateral: the domain's walls would let the material leave them).
    * A no-slip floor (a ``sticky`` box): the paper's suspensions adhere to the plate. On a
      frictionless floor the base spreads until the whole layer is at yield, far past the
      formula (s/H = 0.86, 0.78, 0.66 for t' = 0.1, 0.15, 0.2, grid 32, eta = 1 Pa s).
    * Material: density 1000 kg/m^3, E = 30 kPa, nu = 0.3 (the elastic strain at yield,
      sigma_y / E, is at most 1.1 %); Bingham viscosity eta = 100 Pa s, so that the slump is
      slow (Re = rho sqrt(gH) H / eta = 1): the formula is a static balance. With eta = 10 Pa s
      (Re = 10) inertia carries the material further (s/H = 0.49, 0.43, 0.34, grid 32); with
      eta = 300 Pa s the slump at 4 s is within 0.01 of eta = 100's at 2 s.
    * t' = 0.1, 0.15, 0.2 (s/H = 0.48, 0.34, 0.23), one batch entry each (the yield stress
      is a per-scene parameter).
    * Grid 40 (H = 21 cells; the axis 2 cells from the domain walls, 1.6 H from the axis to
      the far walls), 2 particles per cell edge, 2.5 s (25 sqrt(H/g)); the slump rate over the
      last 10 % of the run is reported.

    Measured: the slump s = the drop of the pile's top, the 99th percentile of z of the
    particles that start within R/4 of the axis, from t = 0 to the end.

    Tolerance: |s/H - s/H_Pashias| <= 0.05 at each t'. The model reproduces measured slumps to
    about 10 % (0.05 is 10 % of s at t' = 0.1), and its uniaxial yield criterion differs from the
    engine's von Mises one by 13 % in t' (0.03-0.04 in s/H here).

    Reduced setup: grid 24 (H = 11 cells), 2 s; its test allows 0.08 (the coarse pile's top is
    defined to about half a cell, 0.045 H).

Case ``archimedes`` — free rigid cubes floating on water (engine/solvers/rigid.py)
    Reference: Archimedes' principle: a body floating at rest displaces its own weight of
    liquid, so a cube of density rho_b floats with the immersed fraction of its height
    d/h = rho_b / rho_w.

    Setup (:class:`ArchimedesSetup`): a 0.3 m water layer filling the 1 m domain's walls
    (32^3 grid, particles at dx/2), a 0.16 m cube (5 cells) dropped from 1 cm above the surface,
    densities 500 and 750 kg/m^3, 5 s (the tolerance's "stays there for 5 s"). Measured each
    0.01 s: the immersion (free surface minus the cube's bottom, over h), the free surface being
    the 98th percentile of particle heights farther than 2 h from the cube in x or y, plus half
    a spacing; and the deepest particle inside the cube. Compared: the mean immersion after
    ``settle`` = 1.5 s (the water starts at J = 1 and rings; the cube's bobbing decays within
    about a second), and the largest deviation after it.
    Tolerance: 5 % of rho_b / rho_w on the mean, no particle deeper than half a cell inside the
    body. Reduced setup: 500 kg/m^3 only, 2.5 s.

Case ``taylor_green`` — the Taylor-Green vortex in the grid gas solver (engine/grid_fluid.py)
    Reference: G. I. Taylor and A. E. Green, "Mechanism of the production of small eddies from
    large ones", Proc. R. Soc. Lond. A 158 (895), 499-521, 1937: u = U sin(kx) cos(ky),
    v = -U cos(kx) sin(ky) solves the 2D Navier-Stokes equations with a kinetic energy
    E0 exp(-4 nu k^2 t) (k per axis); with nu = 0 (Euler) it is steady, E = E0. The gas solver
    has no viscosity term, so the reference is E = E0, and the case measures the solver's
    numerical dissipation against it.

    Setup (:class:`TaylorGreenSetup`): one vortex cell filling the closed box [0, L]^2, k = pi/L:
    its free-slip walls are the solver's domain walls (u = 0 at x = 0, L and v = 0 at y = 0, L
    hold exactly). L = 1 m, U = 1 m/s; N x N x 2 cells with the flow uniform in z (a 2D flow in
    the 3D solver; w stays 0). The MAC samples of the formula are discretely divergence-free.
    dt = 0.5 dx / U, to t = L/U (one convective time); N = 32, 64, 128 with the default
    semi-Lagrangian advection and 32, 64 with MacCormack (reported, not required). Pressure
    solves to a relative residual of 1e-8.

    Measured: E(t)/E0; the numerical viscosity nu_num from the least-squares fit of
    ln(E/E0) = -4 nu_num k^2 t (the viscous law, which the decay follows: the velocity field
    stays proportional to the initial mode, checked by their correlation) and the numerical
    Reynolds number U L / nu_num.

    Tolerance (no scheme of the solver conserves E at finite dx; it is first order):

    * nu_num <= dx^2 / (8 dt) in every run: the largest diffusion of linear-interpolation
      semi-Lagrangian advection, whose modified equation has the diffusion
      dx^2 a (1 - a) / (2 dt) per axis (a the fractional Courant number; a (1 - a) <= 1/4).
      The reported ``tolerance`` is the energy loss at this bound at the finest grid.
    * nu_num falls at least as dx^0.8 between successive semi-Lagrangian grids (E -> E0 as
      dx -> 0).
    * The correlation of the velocity field with the initial mode stays >= 0.99.

    Reduced setup: N = 16, 32 (semi-Lagrangian).
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
DATA_DIR = Path(__file__).resolve().parent / "data"


# ------------------------------------------------------------------------------------ registry
@dataclass(frozen=True)
class Case:
    """A validation case.

    Attributes:
        name: the ``--case`` name and the output file stem.
        run: ``run(quick, **options) -> dict`` (JSON-ready; ``quick`` selects the reduced setup).
            The dict holds ``passed`` (bool) and ``max_rel_error``.
        plot: ``plot(result, path)`` writes a PNG of the result.
        options: the keyword options ``run`` takes (``liquid_model``).
    """

    name: str
    run: Callable[..., dict]
    plot: Callable[[dict, Path], None]
    options: tuple[str, ...] = ()


CASES: dict[str, Case] = {}


def register(name: str, plot: Callable[[dict, Path], None], options: tuple[str, ...] = ()):
    """Decorator: register ``run(quick, **options) -> dict`` as case ``name`` with its ``plot``."""

    def wrap(run):
        if name in CASES:
            raise ValueError(f"validation case {name!r} is registered twice")
        CASES[name] = Case(name, run, plot, options)
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


# ------------------------------------------------------------------------------------ MPM helpers
def _wall(axis: int, face: float, side: int, size: float, thickness: float, mode: str = "slip"):
    """A frictionless kinematic slab, ``thickness`` thick, beyond ``face`` on ``axis``.

    ``side = +1``: the slab spans ``face < x[axis] < face + thickness``; ``-1``: the other way.
    Along the other axes it covers the domain (edge ``size``). Callers put ``face`` 0.05 dx on
    the material's side of the grid node at the material's boundary, so that node lies inside
    the slab (see the module docstring, "Walls"); a few cells of thickness hold the material (a
    particle moves far less than a cell per substep). A slab, not a half-space filling box: the
    colliders' contact geometry (engine/coupling/kinematic.py) is sampled over each collider's
    bounding box, which for a box as large as the domain took 4 GB and 15 s to build on a
    64-cell grid.
    """
    from engine import colliders, geometry

    half = [0.5 * size] * 3
    half[axis] = 0.5 * thickness
    centre = [0.5 * size] * 3
    centre[axis] = face + side * 0.5 * thickness
    return colliders.Collider(
        geometry.Box(tuple(half)),
        pose=(*centre, 1.0, 0.0, 0.0, 0.0),
        boundary=colliders.BoundaryCondition(friction=0.0, mode=mode),
    )


def _hann_weights(n: int) -> np.ndarray:
    """Hann window of n samples normalised to sum 1 (a time average with little leakage)."""
    w = np.hanning(n + 2)[1:-1]
    return w / w.sum()


def _crossing_periods(t: np.ndarray, s: np.ndarray) -> np.ndarray:
    """Intervals between successive upward zero crossings of s(t) (linear interpolation)."""
    i = np.flatnonzero((s[:-1] < 0.0) & (s[1:] >= 0.0))
    tc = t[i] - s[i] * (t[i + 1] - t[i]) / (s[i + 1] - s[i])
    return np.diff(tc)


def _confined_column(material, setup, liquid_model: str = "weakly_compressible"):
    """A column of ``material`` in the corner of the domain, laterally confined by slip walls.

    The column spans ``[lo, lo + w]^2 x [lo, lo + H]`` with ``w = setup.width_cells * dx``: the
    domain walls bound it at x = lo, y = lo and below, frictionless slip boxes at x = lo + w
    and y = lo + w. The step is ``setup.cfl`` dx over the material's wave speed, or one substep of
    ``setup.record_interval`` for a projected liquid (``liquid_model``), which has no sound speed.
    Returns ``(simulator, points (N, 3), dx, lo)``.
    """
    from engine import sampling
    from engine.config import SimConfig
    from engine.scene import SceneBuilder
    from engine.simulator import Simulator

    n, bound = setup.grid_res, setup.boundary_cells
    size = setup.height * setup.domain_over_height / (1.0 - 2.0 * bound / n)
    dx = size / n
    lo = bound * dx
    spacing = dx / setup.particles_per_cell
    dt = setup.cfl * dx / material.wave_speed()
    substeps = max(1, math.ceil(setup.record_interval / dt)) if liquid_model == "weakly_compressible" else 1
    config = SimConfig(
        grid_res=n, domain_size=size, dt=setup.record_interval / substeps, substeps=substeps, boundary_cells=bound,
        liquid_model=liquid_model,
    )  # fmt: skip
    builder = SceneBuilder(config)
    w = setup.width_cells * dx
    points = sampling.box((lo, lo, lo), (lo + w, lo + w, lo + setup.height), spacing)
    builder.add_particles(points, material, spacing)
    for axis in (0, 1):
        builder.add_collider(_wall(axis, lo + w - 0.05 * dx, +1, size, 4 * dx))
    return Simulator(builder.build(), batch_size=1), points, dx, lo


# ------------------------------------------------------------------------------------ dam_break
def load_martin_moyce(path: Path = DATA_DIR / "martin_moyce_1952.csv") -> dict[float, np.ndarray]:
    """Martin & Moyce (1952), Fig. 3: ``{a [inch]: (n, 2) array of (T, Z)}``, T = t sqrt(2g/a),
    Z = z/a (see the CSV's header)."""
    lines = [line for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]
    if lines[0].split(",") != ["a_inch", "T", "Z"]:
        raise ValueError(f"{path}: expected the header a_inch,T,Z, got {lines[0]!r}")
    rows = np.array([[float(v) for v in line.split(",")] for line in lines[1:]])
    return {float(a): rows[rows[:, 0] == a, 1:] for a in np.unique(rows[:, 0])}


@dataclass(frozen=True)
class DamBreakSetup:
    """Parameters of the dam-break case (SI units unless noted; see the module docstring).

    Attributes:
        a: column width [m] (the column is a wide, 2a high); 2.25 in, Martin & Moyce's larger.
        series_inch: the experimental series (column width [inch]) the tolerance applies to.
        grid_res: grid cells per axis.
        length_over_a: interior length of the domain along x, in units of a (the far wall).
        slab_cells: slab thickness along y [cells].
        particles_per_cell: particles per cell edge.
        cfl: dt = cfl * dx / c (c = sqrt(K / rho), the liquid's sound speed) for the weakly
            compressible liquid; dt = cfl * dx / u for the projected one, u = 2 sqrt(2 g a) (the
            surge front's speed, dZ/dT = 2: Martin & Moyce's late slope is about 1.6-1.9).
        liquid_model: ``SimConfig.liquid_model`` of the water (``--liquid-model``).
        record_T: front sampling interval in T = t sqrt(2 g / a).
        T_end: last simulated T.
        near_floor_over_a: the front is taken among particles below this height [a].
        percentile: the front is this percentile of their x.
        tolerance: pass if |Z_sim / Z_exp - 1| <= tolerance at every time of the series.
    """

    a: float = 2.25 * 0.0254
    series_inch: float = 2.25
    grid_res: int = 128
    boundary_cells: int = 2
    length_over_a: float = 10.5
    slab_cells: int = 2
    particles_per_cell: int = 2
    cfl: float = 0.5
    liquid_model: str = "weakly_compressible"
    record_T: float = 0.05
    T_end: float = 6.5
    near_floor_over_a: float = 0.25
    percentile: float = 99.0
    tolerance: float = 0.10

    @classmethod
    def reduced(cls, **changes) -> DamBreakSetup:
        """The test's version: a 64-cell grid (a = 5.9 cells instead of 11.8)."""
        return cls(**{"grid_res": 64, **changes})


def run_dam_break(setup: DamBreakSetup) -> dict:
    """Release the water column and track its surge front; compare with Martin & Moyce (1952)."""
    import torch

    from engine import sampling
    from engine.config import SimConfig
    from engine.materials import WATER
    from engine.scene import SceneBuilder
    from engine.simulator import Simulator

    started = time.perf_counter()
    g = 9.81
    a, n, bound = setup.a, setup.grid_res, setup.boundary_cells
    size = setup.length_over_a * a / (1.0 - 2.0 * bound / n)
    dx = size / n
    lo = bound * dx
    spacing = dx / setup.particles_per_cell
    t_unit = math.sqrt(a / (2.0 * g))  # t = T * t_unit
    step = setup.record_T * t_unit
    speed = WATER.wave_speed() if setup.liquid_model == "weakly_compressible" else 2.0 * math.sqrt(2.0 * g * a)
    substeps = max(1, math.ceil(step / (setup.cfl * dx / speed)))
    config = SimConfig(
        grid_res=n, domain_size=size, dt=step / substeps, substeps=substeps, boundary_cells=bound,
        liquid_model=setup.liquid_model,
    )  # fmt: skip
    builder = SceneBuilder(config)
    slab = setup.slab_cells * dx
    points = sampling.box((lo, lo, lo), (lo + a, lo + slab, lo + 2.0 * a), spacing)
    builder.add_particles(points, WATER, spacing)
    builder.add_collider(_wall(1, lo + slab - 0.05 * dx, +1, size, 4 * dx))
    sim = Simulator(builder.build(), batch_size=1)
    sim.reset()
    control = torch.zeros(1, 1, 6, dtype=sim.dtype)

    def front(x: np.ndarray) -> float:
        near = x[:, 2] < lo + setup.near_floor_over_a * a
        return (float(np.percentile(x[near, 0], setup.percentile)) + 0.5 * spacing - lo) / a

    T, Z, Z_max = [0.0], [front(points)], [(points[:, 0].max() + 0.5 * spacing - lo) / a]
    n_steps = round(setup.T_end / setup.record_T)
    snap_steps = {round(T_snap / setup.record_T) for T_snap in (1.0, 2.0, 4.0)} | {n_steps}
    snapshots = {}
    for k in range(n_steps):
        sim.step(control)
        x = sim.positions()[0].numpy()
        T.append((k + 1) * setup.record_T)
        Z.append(front(x))
        Z_max.append((x[:, 0].max() + 0.5 * spacing - lo) / a)
        if k + 1 in snap_steps:
            snapshots[f"{T[-1]:.2f}"] = {
                "x_over_a": ((x[::4, 0] - lo) / a).round(3).tolist(),
                "z_over_a": ((x[::4, 2] - lo) / a).round(3).tolist(),
            }
    T, Z = np.array(T), np.array(Z)
    J = sim.get_state().J[0].numpy()
    # Comparable range: data times within the run, with the simulated front short of the far wall.
    reach = T[Z < 0.95 * setup.length_over_a].max()
    series = {}
    for inch, data in load_martin_moyce().items():
        inside = data[:, 0] <= reach
        t_exp, z_exp = data[inside, 0], data[inside, 1]
        z_sim = np.interp(t_exp, T, Z)
        late = t_exp >= 2.0
        speed_exp = float(np.polyfit(t_exp[late], z_exp[late], 1)[0])
        speed_sim = float(np.polyfit(t_exp[late], z_sim[late], 1)[0])
        # The time shift of the experiment's origin that best aligns the two (information only).
        shifts = np.linspace(-1.0, 1.0, 401)
        misfit = [np.mean((np.interp(t_exp + s, T, Z) / z_exp - 1.0) ** 2) for s in shifts]
        shift = float(shifts[int(np.argmin(misfit))])
        series[str(inch)] = {
            "a_inch": inch,
            "T": t_exp.tolist(),
            "Z_exp": z_exp.tolist(),
            "Z_sim": z_sim.tolist(),
            "rel_error": (z_sim / z_exp - 1.0).tolist(),
            "max_rel_error": float(np.max(np.abs(z_sim / z_exp - 1.0))),
            "front_speed_exp": speed_exp,
            "front_speed_sim": speed_sim,
            "front_speed_rel_error": speed_sim / speed_exp - 1.0,
            "best_time_shift_T": shift,
            "max_rel_error_after_shift": float(np.max(np.abs(np.interp(t_exp + shift, T, Z) / z_exp - 1.0))),
        }
    primary = series[str(setup.series_inch)]
    return {
        "case": "dam_break",
        "reference": "Martin & Moyce, Phil. Trans. R. Soc. A 244, 312 (1952), Fig. 3: surge front Z = z/a vs "
        "T = t sqrt(2g/a), n^2 = 2",
        "setup": asdict(setup),
        "dx_m": dx,
        "a_over_dx": a / dx,
        "dt_s": config.dt,
        "particles": len(points),
        "comparable_T_max": float(reach),
        "series": series,
        "max_rel_error": primary["max_rel_error"],
        "tolerance": setup.tolerance,
        "passed": bool(primary["max_rel_error"] <= setup.tolerance),
        "mean_J_end": float(J.mean()),
        "history": {"T": T.round(4).tolist(), "Z": Z.round(5).tolist(), "Z_max": np.round(Z_max, 5).tolist()},
        "snapshots": snapshots,
        "wall_s": time.perf_counter() - started,
    }


def plot_dam_break(result: dict, path: Path) -> None:
    """Front position against time (simulation, both experimental series), the relative error,
    the final particle positions."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s, h = result["setup"], result["history"]
    fig, ax = plt.subplots(1, 3, figsize=(16, 4.5))
    ax[0].plot(h["T"], h["Z"], "-", color="C0", label=f"MPM, P{s['percentile']:g} of x near the floor")
    ax[0].plot(h["T"], h["Z_max"], ":", color="C0", lw=0.8, label="MPM, largest x")
    for (name, ser), marker in zip(result["series"].items(), ("s", "o"), strict=False):
        ax[0].plot(ser["T"], ser["Z_exp"], marker, mfc="none", color="k", label=f"Martin & Moyce, a = {name} in")
    ax[0].set(xlabel="T = t sqrt(2g/a)", ylabel="Z = z/a", title="surge front")
    ax[0].legend(fontsize=8)
    tol = 100 * result["tolerance"]
    ax[1].axhspan(-tol, tol, color="C2", alpha=0.12, label="tolerance")
    for (name, ser), marker in zip(result["series"].items(), ("s", "o"), strict=False):
        ax[1].plot(ser["T"], 100 * np.array(ser["rel_error"]), marker + "-", label=f"vs a = {name} in")
    ax[1].axhline(0.0, color="k", lw=0.8)
    primary = result["series"][str(s["series_inch"])]
    ax[1].set(
        xlabel="T",
        ylabel="Z_sim / Z_exp - 1 [%]",
        title=f"max |error| vs a = {s['series_inch']} in: {100 * primary['max_rel_error']:.1f} %",
    )
    ax[1].legend(fontsize=8)
    for i, (T_snap, snap) in enumerate(result["snapshots"].items()):
        ax[2].scatter(snap["x_over_a"], snap["z_over_a"], s=1, color=f"C{i}", label=f"T = {T_snap}")
    ax[2].set(
        xlabel="x / a",
        ylabel="z / a",
        title="particles (every fourth one)",
        xlim=(0, s["length_over_a"]),
        ylim=(0, 2.1),
    )
    ax[2].legend(fontsize=8, markerscale=5)
    fig.suptitle(
        f"Dam break (n^2 = 2): a = {1e3 * s['a']:.2f} mm = {result['a_over_dx']:.1f} dx, "
        f"{s.get('liquid_model', 'weakly_compressible').replace('_', ' ')} water, "
        f"slab {s['slab_cells']} cells thick between slip walls",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


@register("dam_break", plot_dam_break, options=("liquid_model",))
def dam_break_case(quick: bool = False, liquid_model: str = "weakly_compressible") -> dict:
    """Water column collapse against Martin & Moyce (1952)."""
    setup = DamBreakSetup.reduced if quick else DamBreakSetup
    return run_dam_break(setup(liquid_model=liquid_model))


# ------------------------------------------------------------------------------------ hydrostatic
@dataclass(frozen=True)
class HydrostaticSetup:
    """Parameters of the hydrostatic case (see the module docstring).

    Attributes:
        height: column height H [m].
        grid_res, boundary_cells: the grid; the domain edge is ``domain_over_height`` H plus walls.
        width_cells: column width [cells] (square cross-section).
        particles_per_cell: particles per cell edge.
        cfl: dt <= cfl * dx / c.
        record_interval: time between samples of J [s].
        t_end: simulated time [s]; the pressure is the Hann-windowed mean over [0, t_end].
        bins: depth bins.
        compared_from: bins whose centre is deeper than this fraction of H are compared.
        floor_cells: particles starting less than this many cells above the floor are left out
            of the bins (the floor's boundary layer) and reported on their own.
        tolerance: pass if their |p / p_ref - 1| <= tolerance.
        liquid_model: ``SimConfig.liquid_model`` of the water (``--liquid-model``). Projected: the
            pressure is the solved node pressure (``PressureProjection.pressure``) of the column's
            liquid nodes, interpolated linearly in height to each particle's starting position.
    """

    height: float = 0.4
    grid_res: int = 96
    boundary_cells: int = 2
    domain_over_height: float = 1.15
    width_cells: int = 2
    particles_per_cell: int = 2
    cfl: float = 0.5
    record_interval: float = 1e-3
    t_end: float = 0.8
    bins: int = 10
    compared_from: float = 0.25
    floor_cells: float = 1.0
    tolerance: float = 0.02
    liquid_model: str = "weakly_compressible"

    @classmethod
    def reduced(cls, **changes) -> HydrostaticSetup:
        """The test's version: a 48-cell grid (H = 38 cells instead of 80), 0.4 s (5 periods)."""
        return cls(**{"grid_res": 48, "t_end": 0.4, **changes})


def run_hydrostatic(setup: HydrostaticSetup) -> dict:
    """Let a water column ring under gravity; compare its time-averaged pressure with rho g h."""
    import torch

    from engine.materials import WATER

    started = time.perf_counter()
    g, rho, K = 9.81, WATER.density, WATER.E
    projected = setup.liquid_model == "projected"
    sim, points, dx, lo = _confined_column(WATER, setup, setup.liquid_model)
    sim.reset()
    control = torch.zeros(1, sim.n_colliders, 6, dtype=sim.dtype)
    spacing = dx / setup.particles_per_cell
    surface = points[:, 2].max() + 0.5 * spacing
    depth0 = surface - points[:, 2]  # initial depth: rho * depth0 is the mass per area above
    n_steps = round(setup.t_end / setup.record_interval)
    weights = _hann_weights(n_steps)
    p_mean = np.zeros(len(points))
    bottom = depth0 > depth0.max() - 0.5 * setup.height / setup.bins
    history = {"t": [], "p_bottom": [], "mean_J": []}
    for k in range(n_steps):
        sim.step(control)
        J = sim.get_state().J[0].numpy()
        if projected:
            p = _column_pressure(sim, rho, points, dx)
        else:
            p = K * (1.0 - J)  # the fluid's equation of state: Cauchy stress K (J - 1) I
        p_mean += weights[k] * p
        history["t"].append((k + 1) * setup.record_interval)
        history["p_bottom"].append(float(p[bottom].mean()))
        history["mean_J"].append(float(J.mean()))
    edges = np.linspace(0.0, setup.height, setup.bins + 1)
    near_floor = points[:, 2] - lo < setup.floor_cells * dx
    rows = []
    for lo_edge, hi_edge in zip(edges[:-1], edges[1:], strict=True):
        inside = (depth0 >= lo_edge) & (depth0 < hi_edge) & ~near_floor
        p_sim = float(p_mean[inside].mean())
        p_ref = float(rho * g * depth0[inside].mean())
        rows.append(
            {
                "depth_m": float(depth0[inside].mean()),
                "p_sim_Pa": p_sim,
                "p_ref_Pa": p_ref,
                "rel_error": p_sim / p_ref - 1.0,
                "error_over_rho_g_H": (p_sim - p_ref) / (rho * g * setup.height),
                "compared": bool(0.5 * (lo_edge + hi_edge) >= setup.compared_from * setup.height),
            }
        )
    compared = [r for r in rows if r["compared"]]
    max_err = max(abs(r["rel_error"]) for r in compared)
    c = WATER.wave_speed()
    return {
        "case": "hydrostatic",
        "reference": "hydrostatics: p = rho g h (h the depth below the free surface; rho h the mass per area above)",
        "setup": asdict(setup),
        "dx_m": dx,
        "height_over_dx": setup.height / dx,
        "dt_s": sim.config.dt,
        "particles": len(points),
        "bulk_modulus_Pa": K,
        "acoustic_period_s": 4.0 * setup.height / c,
        "bins": rows,
        "near_floor": {
            "particles": int(near_floor.sum()),
            "rel_error": float(p_mean[near_floor].mean() / (rho * g * depth0[near_floor].mean()) - 1.0),
            "layers_rel_error": [
                float(p_mean[m].mean() / (rho * g * depth0[m].mean()) - 1.0)
                for m in (np.abs(points[:, 2] - z) < 1e-9 for z in np.unique(points[near_floor, 2]))
            ],
        },
        "max_rel_error": max_err,
        "max_abs_error_over_rho_g_H": max(abs(r["error_over_rho_g_H"]) for r in rows),
        "tolerance": setup.tolerance,
        "passed": bool(max_err <= setup.tolerance),
        "p_particles": {"depth_m": depth0[::2].round(5).tolist(), "p_Pa": p_mean[::2].round(3).tolist()},
        "history": {k: np.round(v, 6).tolist() for k, v in history.items()},
        "wall_s": time.perf_counter() - started,
    }


def _column_pressure(sim, rho: float, points: np.ndarray, dx: float) -> np.ndarray:
    """The projected liquid's solved node pressure [Pa] in the node column with the most liquid
    (FLUID) nodes, interpolated linearly in height between those nodes to ``points``' heights."""
    from engine.linsolve import FLUID

    P = sim.pressure.pressure(rho)[0].numpy()
    kept = sim.pressure.last_system
    fluid = np.zeros(P.shape, dtype=bool)
    fluid[kept["crop"][1:]] = kept["flags"][0].numpy() == FLUID
    counts = fluid.sum(axis=2)
    i, j = np.unravel_index(np.argmax(counts), counts.shape)
    k = np.flatnonzero(fluid[i, j])
    return np.interp(points[:, 2], k * dx, P[i, j, k])


def plot_hydrostatic(result: dict, path: Path) -> None:
    """Pressure against depth, the error per bin, the bottom pressure history."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s, rows, h = result["setup"], result["bins"], result["history"]
    rho_g = 1000.0 * 9.81
    fig, ax = plt.subplots(1, 3, figsize=(15, 4.3))
    pp = result["p_particles"]
    ax[0].plot(pp["p_Pa"], pp["depth_m"], ".", ms=1.5, color="C0", alpha=0.4, label="particles (time mean)")
    depth = np.array([r["depth_m"] for r in rows])
    ax[0].plot([r["p_sim_Pa"] for r in rows], depth, "o", color="C0", label="bin means")
    ax[0].plot(rho_g * np.array([0.0, s["height"]]), [0.0, s["height"]], "k-", label="rho g h")
    ax[0].invert_yaxis()
    source = "solved node pressure" if s.get("liquid_model") == "projected" else "pressure from J: p = K (1 - J)"
    ax[0].set(xlabel="p [Pa]", ylabel="depth h [m]", title=source)
    ax[0].legend(fontsize=8)
    tol = 100 * result["tolerance"]
    ax[1].axvspan(-tol, tol, color="C2", alpha=0.12, label="tolerance")
    compared = np.array([r["compared"] for r in rows])
    err = 100 * np.array([r["rel_error"] for r in rows])
    ax[1].plot(err[compared], depth[compared], "o", color="C0", label="compared")
    ax[1].plot(err[~compared], depth[~compared], "o", mfc="none", color="C0", label="near the surface")
    ax[1].axvline(0.0, color="k", lw=0.8)
    ax[1].invert_yaxis()
    ax[1].set(
        xlabel="p / (rho g h) - 1 [%]",
        ylabel="depth h [m]",
        title=f"max |error| (h >= {s['compared_from']:g} H): {100 * result['max_rel_error']:.2f} %",
    )
    ax[1].legend(fontsize=8)
    ax[2].plot(h["t"], h["p_bottom"], lw=0.8, color="C0", label="bottom bin, instantaneous")
    ax[2].axhline(rows[-1]["p_ref_Pa"], color="k", ls="--", label="rho g h (bottom bin)")
    ax[2].axhline(rows[-1]["p_sim_Pa"], color="C1", label="Hann-windowed mean")
    ax[2].set(xlabel="t [s]", ylabel="p [Pa]", title="acoustic ringing (no damping): time average")
    ax[2].legend(fontsize=8)
    fig.suptitle(
        f"Hydrostatic water column: H = {s['height']} m = {result['height_over_dx']:.0f} dx, "
        f"K = {result['bulk_modulus_Pa']:g} Pa, {s['width_cells']}x{s['width_cells']} cells between slip walls",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


@register("hydrostatic", plot_hydrostatic, options=("liquid_model",))
def hydrostatic_case(quick: bool = False, liquid_model: str = "weakly_compressible") -> dict:
    """Resting water column against p = rho g h."""
    setup = HydrostaticSetup.reduced if quick else HydrostaticSetup
    return run_hydrostatic(setup(liquid_model=liquid_model))


# ------------------------------------------------------------------------------------ elastic_column
@dataclass(frozen=True)
class ElasticColumnSetup:
    """Parameters of the elastic-column case (see the module docstring).

    Attributes:
        height: column length L [m].
        E, nu, density: the Neo-Hookean solid.
        grid_res, boundary_cells, domain_over_height, width_cells, particles_per_cell, cfl,
            record_interval: as in :class:`HydrostaticSetup`.
        t_end: simulated time [s] (the static value is the Hann-windowed mean over [0, t_end]).
        tolerance: pass if the static shortening and the period are both within it (relative).
    """

    height: float = 0.4
    E: float = 6.0e5
    nu: float = 0.3
    density: float = 1000.0
    grid_res: int = 96
    boundary_cells: int = 2
    domain_over_height: float = 1.15
    width_cells: int = 2
    particles_per_cell: int = 2
    cfl: float = 0.5
    record_interval: float = 5e-4
    t_end: float = 0.5
    tolerance: float = 0.03

    @classmethod
    def reduced(cls) -> ElasticColumnSetup:
        """The test's version: a 48-cell grid (L = 38 cells instead of 80), 0.3 s (5 periods)."""
        return cls(grid_res=48, t_end=0.3)

    def p_wave_modulus(self) -> float:
        """M = lambda + 2 mu = E (1 - nu) / ((1 + nu)(1 - 2 nu)) [Pa]: uniaxial strain."""
        return self.E * (1.0 - self.nu) / ((1.0 + self.nu) * (1.0 - 2.0 * self.nu))


def run_elastic_column(setup: ElasticColumnSetup) -> dict:
    """Load a laterally confined elastic column by gravity at t = 0; compare its mean shortening
    and its ringing period with the uniaxial-strain solution."""
    import torch

    from engine.materials import Material

    started = time.perf_counter()
    g, rho, L = 9.81, setup.density, setup.height
    material = Material("column", "elastic", density=rho, E=setup.E, nu=setup.nu)
    sim, points, dx, lo = _confined_column(material, setup)
    sim.reset()
    control = torch.zeros(1, sim.n_colliders, 6, dtype=sim.dtype)
    M = setup.p_wave_modulus()
    c = math.sqrt(M / rho)
    z0 = points[:, 2] - lo  # height above the floor
    top = z0 > z0.max() - 1e-9
    n_steps = round(setup.t_end / setup.record_interval)
    weights = _hann_weights(n_steps)
    u_mean = np.zeros(len(points))
    t, u_top = [], []
    for k in range(n_steps):
        sim.step(control)
        u = sim.positions()[0, :, 2].numpy() - points[:, 2]
        u_mean += weights[k] * u
        t.append((k + 1) * setup.record_interval)
        u_top.append(float(u[top].mean()))
    t, u_top = np.array(t), np.array(u_top)

    def u_static(z):
        """Uniaxial-strain displacement [m] at height z of a column fixed at z = 0, free at L."""
        return -rho * g / M * (L * z - 0.5 * z**2)

    zt = float(z0[top][0])
    static_sim = float(u_mean[top].mean())
    static_ref = float(u_static(zt))
    periods = _crossing_periods(t, u_top - static_sim)
    period_sim = float(periods.mean())
    period_ref = 4.0 * L / c
    err_static = static_sim / static_ref - 1.0
    err_period = period_sim / period_ref - 1.0
    max_err = max(abs(err_static), abs(err_period))
    order = np.argsort(z0)
    return {
        "case": "elastic_column",
        "reference": "1D elasticity (uniaxial strain): shortening rho g L^2/(2M), period 4L/c, c = sqrt(M/rho), "
        "M = E(1-nu)/((1+nu)(1-2nu))",
        "setup": asdict(setup),
        "dx_m": dx,
        "height_over_dx": L / dx,
        "dt_s": sim.config.dt,
        "particles": len(points),
        "p_wave_modulus_Pa": M,
        "wave_speed_m_s": c,
        "max_strain": rho * g * L / M,
        "top_layer_height_m": zt,
        "static_top_displacement_m": static_sim,
        "static_top_displacement_ref_m": static_ref,
        "static_rel_error": err_static,
        "shortening_L_m": -float(u_static(L)),
        "period_s": period_sim,
        "period_ref_s": period_ref,
        "period_rel_error": err_period,
        "periods_measured": len(periods),
        "period_spread": float(periods.std() / period_sim) if len(periods) > 1 else None,
        "max_rel_error": max_err,
        "tolerance": setup.tolerance,
        "passed": bool(max_err <= setup.tolerance and len(periods) >= 3),
        "profile": {"z_m": z0[order][::4].round(5).tolist(), "u_mean_m": u_mean[order][::4].tolist()},
        "history": {"t": t.round(6).tolist(), "u_top_m": u_top.tolist()},
        "wall_s": time.perf_counter() - started,
    }


def plot_elastic_column(result: dict, path: Path) -> None:
    """Top displacement history, the time-mean displacement profile, the errors."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s, h = result["setup"], result["history"]
    L, M, rho, g = s["height"], result["p_wave_modulus_Pa"], s["density"], 9.81
    fig, ax = plt.subplots(1, 2, figsize=(13, 4.3))
    t = np.array(h["t"])
    ax[0].plot(1e3 * t, 1e3 * np.array(h["u_top_m"]), lw=0.9, color="C0", label="top layer (MPM)")
    ax[0].axhline(1e3 * result["static_top_displacement_m"], color="C1", label="Hann-windowed mean")
    ax[0].axhline(1e3 * result["static_top_displacement_ref_m"], color="k", ls="--", label="rho g L^2 / (2M)")
    u_ref = result["static_top_displacement_ref_m"]
    ax[0].plot(
        1e3 * t,
        1e3 * u_ref * (1.0 - np.cos(2 * np.pi * t / result["period_ref_s"])),
        color="k",
        lw=0.6,
        alpha=0.5,
        label="fundamental mode, period 4L/c",
    )
    ax[0].set(
        xlabel="t [ms]",
        ylabel="top displacement [mm]",
        title=f"static {100 * result['static_rel_error']:+.2f} %, period {100 * result['period_rel_error']:+.2f} % "
        f"(tolerance {100 * result['tolerance']:g} %)",
    )
    ax[0].legend(fontsize=8, loc="lower right")
    z = np.array(result["profile"]["z_m"])
    zz = np.linspace(0.0, L, 100)
    ax[1].plot(1e3 * np.array(result["profile"]["u_mean_m"]), z, ".", ms=2, color="C0", label="particles (time mean)")
    ax[1].plot(-1e3 * rho * g / M * (L * zz - 0.5 * zz**2), zz, "k-", label="-rho g (L z - z^2/2) / M")
    ax[1].set(xlabel="vertical displacement [mm]", ylabel="height z [m]", title="static profile")
    ax[1].legend(fontsize=8)
    fig.suptitle(
        f"Laterally confined elastic column: L = {L} m = {result['height_over_dx']:.0f} dx, E = {s['E']:g} Pa, "
        f"nu = {s['nu']}, M = {M:.4g} Pa, max strain {100 * result['max_strain']:.2f} %",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


@register("elastic_column", plot_elastic_column)
def elastic_column_case(quick: bool = False) -> dict:
    """Elastic column under its own weight against uniaxial-strain elasticity."""
    return run_elastic_column(ElasticColumnSetup.reduced() if quick else ElasticColumnSetup())


# ------------------------------------------------------------------------------------ bingham_slump
def pashias_slump(tau_prime):
    """Pashias et al. (1996) dimensionless slump s/H = 1 - 2 tau' (1 - ln 2 tau') (tau' < 1/2)."""
    tp = np.asarray(tau_prime, dtype=float)
    return 1.0 - 2.0 * tp * (1.0 - np.log(2.0 * tp))


def pashias_yield(slump: float) -> float:
    """The tau' whose Pashias slump is ``slump`` (0 < slump < 1), by bisection."""
    lo, hi = 1e-9, 0.5
    for _ in range(100):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if pashias_slump(mid) > slump else (lo, mid)
    return 0.5 * (lo + hi)


@dataclass(frozen=True)
class BinghamSlumpSetup:
    """Parameters of the Bingham slump case (see the module docstring).

    Attributes:
        height: cylinder height H = diameter [m].
        density, E, nu, viscosity: the viscoplastic material (Bingham viscosity eta [Pa s]).
        tau_primes: dimensionless shear yield stresses tau_y / (rho g H), one batch entry each.
        grid_res, boundary_cells: the grid; the domain edge is ``domain_over_height`` H + walls.
        particles_per_cell, cfl: sampling and dt <= cfl dx / c (c the P-wave speed).
        record_interval: control step [s]; t_end: simulated time [s].
        floor: the floor's boundary condition ("sticky": no slip).
        tolerance: pass if every |s/H - s/H_Pashias| <= tolerance.
    """

    height: float = 0.1
    density: float = 1000.0
    E: float = 3.0e4
    nu: float = 0.3
    viscosity: float = 100.0
    tau_primes: tuple[float, ...] = (0.1, 0.15, 0.2)
    grid_res: int = 40
    boundary_cells: int = 2
    domain_over_height: float = 1.6
    particles_per_cell: int = 2
    cfl: float = 0.5
    record_interval: float = 0.02
    t_end: float = 2.5
    floor: str = "sticky"
    tolerance: float = 0.05

    @classmethod
    def reduced(cls) -> BinghamSlumpSetup:
        """The test's version: a 24-cell grid (H = 11 cells instead of 21), 2 s."""
        return cls(grid_res=24, t_end=2.0)


def run_bingham_slump(setup: BinghamSlumpSetup) -> dict:
    """Slump a quarter cylinder of Bingham material (one batch entry per yield stress); compare
    the final slump with Pashias et al. (1996)."""
    import torch

    from engine import sampling
    from engine.config import SimConfig
    from engine.materials import P_YIELD, Material
    from engine.scene import SceneBuilder
    from engine.simulator import Simulator

    started = time.perf_counter()
    g, rho, H = 9.81, setup.density, setup.height
    n, bound = setup.grid_res, setup.boundary_cells
    size = setup.domain_over_height * H / (1.0 - (2.0 * bound + 2.0) / n)
    dx = size / n
    lo = bound * dx
    axis = lo + 2.0 * dx  # the cylinder's axis: on a grid node, two cells from the domain walls
    spacing = dx / setup.particles_per_cell
    # von Mises: the engine yields at sqrt(3/2) |dev tau| = sigma_y, pure shear at sigma_y / sqrt(3).
    sigma_y = [math.sqrt(3.0) * tp * rho * g * H for tp in setup.tau_primes]
    material = Material(
        "bingham",
        "viscoplastic",
        density=rho,
        E=setup.E,
        nu=setup.nu,
        viscosity=setup.viscosity,
        yield_stress=sigma_y[0],
    )
    substeps = max(1, math.ceil(setup.record_interval / (setup.cfl * dx / material.wave_speed())))
    config = SimConfig(
        grid_res=n, domain_size=size, dt=setup.record_interval / substeps, substeps=substeps, boundary_cells=bound
    )
    builder = SceneBuilder(config)
    points = sampling.cylinder((axis, axis, lo), 0.5 * H, H, spacing)
    points = points[(points[:, 0] > axis) & (points[:, 1] > axis)]
    builder.add_particles(points, material, spacing)
    for a in (0, 1):  # symmetry planes x = axis, y = axis
        builder.add_collider(_wall(a, axis + 0.05 * dx, -1, size, 2 * dx))
    builder.add_collider(_wall(2, lo + 0.05 * dx, -1, size, 2 * dx, mode=setup.floor))
    B = len(setup.tau_primes)
    sim = Simulator(builder.build(), batch_size=B)
    params = sim.default_params()
    for b, sy in enumerate(sigma_y):
        params[b, 0, P_YIELD] = sy
    sim.reset(params=params)
    control = torch.zeros(B, sim.n_colliders, 6, dtype=sim.dtype)
    r0 = np.hypot(points[:, 0] - axis, points[:, 1] - axis)
    on_axis = r0 < 0.125 * H  # the top of the pile: particles that start within R/4 of the axis

    def top(z: np.ndarray) -> np.ndarray:
        return np.percentile(z[:, on_axis], 99, axis=1)

    top0 = float(top(points[None, :, 2])[0])
    history = {"t": [0.0], "slump": [[0.0] * B], "radius": [[0.5] * B], "v_max": [[0.0] * B]}
    n_steps = round(setup.t_end / setup.record_interval)
    for k in range(n_steps):
        sim.step(control)
        x = sim.positions().numpy()
        v = sim.get_state().v.numpy()
        history["t"].append((k + 1) * setup.record_interval)
        history["slump"].append(((top0 - top(x[:, :, 2])) / H).tolist())
        r = np.hypot(x[:, :, 0] - axis, x[:, :, 1] - axis)
        history["radius"].append((np.percentile(r, 99.5, axis=1) / H).tolist())
        history["v_max"].append(np.abs(v).max(axis=(1, 2)).tolist())
    slump = np.array(history["slump"])
    t = np.array(history["t"])
    last = t >= 0.9 * setup.t_end
    rate = [float(np.polyfit(t[last], slump[last, b], 1)[0]) for b in range(B)]
    ref = pashias_slump(setup.tau_primes)
    ref_tresca = pashias_slump(np.sqrt(3.0) / 2.0 * np.array(setup.tau_primes))
    points_out = []
    for b, tp in enumerate(setup.tau_primes):
        s_sim = float(slump[-1, b])
        points_out.append(
            {
                "tau_prime": tp,
                "sigma_y_Pa": sigma_y[b],
                "slump_sim": s_sim,
                "slump_pashias": float(ref[b]),
                "abs_error": s_sim - float(ref[b]),
                "rel_error": s_sim / float(ref[b]) - 1.0,
                "slump_pashias_uniaxial_yield": float(ref_tresca[b]),
                "tau_prime_from_slump": pashias_yield(s_sim) if 0.0 < s_sim < 1.0 else None,
                "slump_rate_end_per_s": rate[b],
                "radius_over_H_end": float(history["radius"][-1][b]),
            }
        )
    max_abs = max(abs(p["abs_error"]) for p in points_out)
    x_end = sim.positions().numpy()
    edges = np.arange(0.0, size, dx)
    profiles = []  # the pile's surface: per radial bin of width dx, the P99 of z plus h/2
    for b in range(B):
        r = np.hypot(x_end[b, :, 0] - axis, x_end[b, :, 1] - axis)
        which = np.digitize(r, edges) - 1
        rows = [
            (0.5 * (edges[i] + edges[i + 1]), np.percentile(x_end[b, which == i, 2], 99) + 0.5 * spacing - lo)
            for i in range(len(edges) - 1)
            if (which == i).sum() >= 5
        ]
        profiles.append(
            {"r_over_H": [round(r / H, 4) for r, _ in rows], "z_over_H": [round(z / H, 4) for _, z in rows]}
        )
    return {
        "case": "bingham_slump",
        "reference": "Pashias, Boger, Summers & Glenister, J. Rheol. 40, 1179 (1996): s/H = 1 - 2t'(1 - ln 2t'), "
        "t' = tau_y/(rho g H), H = D",
        "setup": asdict(setup),
        "dx_m": dx,
        "height_over_dx": H / dx,
        "dt_s": config.dt,
        "particles": len(points),
        "reynolds": rho * math.sqrt(g * H) * H / setup.viscosity,
        "points": points_out,
        "max_abs_error": max_abs,
        "max_rel_error": max(abs(p["rel_error"]) for p in points_out),
        "tolerance": setup.tolerance,
        "tolerance_kind": "absolute, in s/H",
        "passed": bool(max_abs <= setup.tolerance),
        "history": {
            "t": t.round(4).tolist(),
            "slump": np.round(slump, 5).tolist(),
            "v_max": np.round(history["v_max"], 5).tolist(),
        },
        "profiles": profiles,
        "wall_s": time.perf_counter() - started,
    }


def plot_bingham_slump(result: dict, path: Path) -> None:
    """Final slump against tau' (simulation, Pashias), slump histories, final profiles."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s, pts, h = result["setup"], result["points"], result["history"]
    fig, ax = plt.subplots(1, 3, figsize=(16, 4.5))
    tt = np.linspace(0.02, 0.5, 200)
    tp = np.array([p["tau_prime"] for p in pts])
    ss = np.array([p["slump_sim"] for p in pts])
    ax[0].plot(tt, pashias_slump(tt), "k-", label="Pashias et al. 1996")
    ax[0].fill_between(
        tt, pashias_slump(tt) - result["tolerance"], pashias_slump(tt) + result["tolerance"], color="C2", alpha=0.12
    )
    ax[0].plot(tt, pashias_slump(np.sqrt(3) / 2 * tt), "k:", lw=0.8, label="same, uniaxial yield sqrt(3) tau_y")
    ax[0].plot(tp, ss, "o", color="C0", label="MPM (von Mises, sigma_y = sqrt(3) tau_y)")
    ax[0].set(
        xlabel="tau' = tau_y / (rho g H)",
        ylabel="s / H",
        title=f"final slump: max |error| {result['max_abs_error']:.3f} (tolerance {result['tolerance']:g})",
        ylim=(0, 1),
    )
    ax[0].legend(fontsize=8)
    t = np.array(h["t"])
    slump = np.array(h["slump"])
    for b, p in enumerate(pts):
        ax[1].plot(t, slump[:, b], color=f"C{b}", label=f"tau' = {p['tau_prime']:g}")
        ax[1].axhline(p["slump_pashias"], color=f"C{b}", ls="--", lw=0.8)
    ax[1].set(xlabel="t [s]", ylabel="s / H", title="slump history (dashed: Pashias)")
    ax[1].legend(fontsize=8)
    for b, p in enumerate(pts):
        prof = result["profiles"][b]
        ax[2].plot(prof["r_over_H"], prof["z_over_H"], "-", color=f"C{b}", label=f"tau' = {p['tau_prime']:g}")
        ax[2].axhline(1.0 - p["slump_pashias"], color=f"C{b}", ls="--", lw=0.8)
    ax[2].plot([0.0, 0.5, 0.5], [1.0, 1.0, 0.0], "k-", lw=0.8, label="initial cylinder")
    ax[2].set(
        xlabel="r / H", ylabel="z / H", title="final surface, P99 of z per ring (dashed: Pashias)", aspect="equal"
    )
    ax[2].legend(fontsize=8)
    fig.suptitle(
        f"Bingham slump, H = D = {s['height']} m = {result['height_over_dx']:.1f} dx (quarter cylinder, symmetry "
        f"walls, {s['floor']} floor), E = {s['E']:g} Pa, eta = {s['viscosity']:g} Pa s (Re = {result['reynolds']:.2f})",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


@register("bingham_slump", plot_bingham_slump)
def bingham_slump_case(quick: bool = False) -> dict:
    """Bingham cylinder slump against Pashias et al. (1996)."""
    return run_bingham_slump(BinghamSlumpSetup.reduced() if quick else BinghamSlumpSetup())


# ------------------------------------------------------------------------------------ taylor_green
@dataclass(frozen=True)
class TaylorGreenSetup:
    """Parameters of the Taylor-Green case (see the module docstring).

    Attributes:
        length: box edge L [m] (one vortex cell, k = pi / L).
        speed: velocity amplitude U [m/s].
        runs: (advection scheme, cells per edge N) pairs; the tolerance's checks use the
            semi-Lagrangian ones (at least two resolutions).
        cfl: dt = cfl * dx / U.
        t_end: simulated time [s] (L / U: one convective time).
        rtol: pressure solve tolerance.
        min_order: the numerical viscosity must fall at least as dx^min_order.
        min_correlation: the velocity field must stay this correlated with the initial mode.
    """

    length: float = 1.0
    speed: float = 1.0
    runs: tuple[tuple[str, int], ...] = (
        ("semi_lagrangian", 32),
        ("semi_lagrangian", 64),
        ("semi_lagrangian", 128),
        ("maccormack", 32),
        ("maccormack", 64),
    )
    cfl: float = 0.5
    t_end: float = 1.0
    rtol: float = 1e-8
    min_order: float = 0.8
    min_correlation: float = 0.99

    @classmethod
    def reduced(cls) -> TaylorGreenSetup:
        """The test's version: semi-Lagrangian at 16 and 32 cells."""
        return cls(runs=(("semi_lagrangian", 16), ("semi_lagrangian", 32)))


def _taylor_green_run(setup: TaylorGreenSetup, scheme: str, N: int) -> dict:
    """One run: kinetic energy and mode correlation over time, the fitted numerical viscosity."""
    import torch

    from engine.grid_fluid import GridFluid, SmokeConfig, SmokeState

    L, U = setup.length, setup.speed
    k = math.pi / L
    dx = L / N
    n_steps = max(1, round(setup.t_end / (setup.cfl * dx / U)))
    dt = setup.t_end / n_steps
    config = SmokeConfig(shape=(N, N, 2), dx=dx, dt=dt, alpha=0.0, beta=0.0, advection=scheme, rtol=setup.rtol)
    fluid = GridFluid(config)
    state = fluid.initial_state()
    faces = torch.arange(N + 1, dtype=torch.float64) * dx
    centres = (torch.arange(N, dtype=torch.float64) + 0.5) * dx
    u0 = (U * torch.sin(k * faces)[:, None] * torch.cos(k * centres)[None, :])[None, :, :, None].repeat(1, 1, 1, 2)
    v0 = (-U * torch.cos(k * centres)[:, None] * torch.sin(k * faces)[None, :])[None, :, :, None].repeat(1, 1, 1, 2)
    state = SmokeState(u0.clone(), v0.clone(), state.w, state.density, state.temperature, state.pressure)

    def energy(s) -> float:  # per unit depth [m^4/s^2]: one z layer of the uniform-in-z flow
        return 0.5 * float((s.u[0, :, :, 0] ** 2).sum() + (s.v[0, :, :, 0] ** 2).sum()) * dx * dx

    def correlation(s) -> float:
        dot = float((s.u * u0).sum() + (s.v * v0).sum())
        return dot / math.sqrt(float((s.u**2).sum() + (s.v**2).sum()) * float((u0**2).sum() + (v0**2).sum()))

    E0 = energy(state)
    t, ratio, corr = [0.0], [1.0], [1.0]
    started = time.perf_counter()
    for i in range(n_steps):
        state = fluid.step(state)
        t.append((i + 1) * dt)
        ratio.append(energy(state) / E0)
        corr.append(correlation(state))
    t, ratio = np.array(t), np.array(ratio)
    # Least squares of ln(E/E0) = -4 nu k^2 t through the origin (the 2D TG decay, k = pi/L per axis).
    nu = float(-(t @ np.log(ratio)) / (t @ t) / (4.0 * k * k))
    bound = dx * dx / (8.0 * dt)
    return {
        "scheme": scheme,
        "N": N,
        "dx": dx,
        "dt": dt,
        "steps": n_steps,
        "energy_ratio_end": float(ratio[-1]),
        "energy_loss_end": float(1.0 - ratio[-1]),
        "nu_num": nu,
        "nu_num_over_U_dx": nu / (U * dx),
        "reynolds_num": U * L / nu,
        "nu_bound_linear_interp": bound,
        "loss_bound_end": 1.0 - math.exp(-4.0 * k * k * bound * setup.t_end),
        "within_bound": bool(nu <= bound),
        "min_correlation": float(min(corr)),
        "max_divergence_end": float(fluid.last_info.max_divergence.max()) if fluid.last_info is not None else None,
        "t": t.round(6).tolist()[:: max(1, n_steps // 100)],
        "energy_ratio": ratio.tolist()[:: max(1, n_steps // 100)],
        "wall_s": time.perf_counter() - started,
    }


def run_taylor_green(setup: TaylorGreenSetup) -> dict:
    """The 2D Taylor-Green vortex in a free-slip box with the grid gas solver; its kinetic
    energy against the inviscid (constant) and viscous (exp(-4 nu k^2 t)) references."""
    import torch

    started = time.perf_counter()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small grids: one thread is several times faster on a shared 2-core CPU
    try:
        runs = [_taylor_green_run(setup, scheme, N) for scheme, N in setup.runs]
    finally:
        torch.set_num_threads(threads)
    sl = sorted((r for r in runs if r["scheme"] == "semi_lagrangian"), key=lambda r: r["N"])
    if len(sl) < 2:
        raise ValueError("TaylorGreenSetup.runs needs semi-Lagrangian runs at two resolutions at least")
    orders = [
        math.log(a["nu_num"] / b["nu_num"]) / math.log(b["N"] / a["N"]) for a, b in zip(sl[:-1], sl[1:], strict=True)
    ]
    finest = sl[-1]
    passed = (
        all(r["within_bound"] for r in runs)
        and min(orders) >= setup.min_order
        and min(r["min_correlation"] for r in runs) >= setup.min_correlation
    )
    return {
        "case": "taylor_green",
        "reference": "Taylor & Green, Proc. R. Soc. A 158, 499 (1937): 2D vortex u = U sin(kx) cos(ky), "
        "v = -U cos(kx) sin(ky); E(t) = E0 exp(-4 nu k^2 t), inviscid: E = E0",
        "setup": asdict(setup),
        "runs": runs,
        "orders_semi_lagrangian": orders,
        "max_rel_error": finest["energy_loss_end"],
        "error_kind": "energy lost after t_end at the finest semi-Lagrangian grid (inviscid reference: 0)",
        "tolerance": finest["loss_bound_end"],
        "tolerance_kind": "the loss of first-order linear-interpolation advection, nu <= dx^2/(8 dt), at that grid",
        "passed": bool(passed),
        "wall_s": time.perf_counter() - started,
    }


def plot_taylor_green(result: dict, path: Path) -> None:
    """Energy histories, numerical viscosity against dx."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = result["setup"]
    fig, ax = plt.subplots(1, 2, figsize=(13, 4.5))
    ax[0].axhline(1.0, color="k", lw=1.0, label="inviscid: E = E0")
    for i, r in enumerate(result["runs"]):
        style = "-" if r["scheme"] == "semi_lagrangian" else "--"
        ax[0].plot(r["t"], r["energy_ratio"], style, color=f"C{i}", label=f"{r['scheme']}, N = {r['N']}")
        t = np.array(r["t"])
        k2 = (math.pi / s["length"]) ** 2
        ax[0].plot(t, np.exp(-4 * r["nu_num"] * k2 * t), ":", color=f"C{i}", lw=0.8)
    ax[0].set(
        xlabel="t [s]",
        ylabel="E / E0",
        title="kinetic energy (dotted: exp(-4 nu_num k^2 t), the viscous TG decay)",
    )
    ax[0].legend(fontsize=8)
    for scheme, marker in (("semi_lagrangian", "o-"), ("maccormack", "s--")):
        rr = sorted((r for r in result["runs"] if r["scheme"] == scheme), key=lambda r: r["N"])
        if rr:
            ax[1].loglog([r["dx"] for r in rr], [r["nu_num"] for r in rr], marker, label=f"nu_num, {scheme}")
    rr = sorted(result["runs"], key=lambda r: r["dx"])
    dxs = np.array([r["dx"] for r in rr])
    ax[1].loglog(dxs, [r["nu_bound_linear_interp"] for r in rr], "k:", label="dx^2 / (8 dt): linear-interp. bound")
    ax[1].set(
        xlabel="dx [m]",
        ylabel="numerical viscosity [m^2/s]",
        title="order (semi-Lagrangian): " + ", ".join(f"{o:.2f}" for o in result["orders_semi_lagrangian"]),
    )
    ax[1].legend(fontsize=8)
    fig.suptitle(
        f"Taylor-Green vortex in a free-slip box, L = {s['length']} m, U = {s['speed']} m/s, CFL {s['cfl']}; "
        f"the gas solver has no viscosity term",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


@register("taylor_green", plot_taylor_green)
def taylor_green_case(quick: bool = False) -> dict:
    """Taylor-Green vortex energy with the grid gas solver."""
    return run_taylor_green(TaylorGreenSetup.reduced() if quick else TaylorGreenSetup())


# ------------------------------------------------------------------------------------ archimedes
@dataclass(frozen=True)
class ArchimedesSetup:
    """A free rigid cube (engine/solvers/rigid.py) dropped onto a resting water layer.

    Attributes:
        densities: body densities [kg/m^3], one run each.
        grid_res: grid nodes per axis over the 1 m domain (dx = 1 / grid_res).
        edge: cube edge [m].
        depth: water layer depth [m] (the domain's walls hold it).
        duration: simulated time [s].
        settle: time after which the immersion is averaged and checked [s].
        dt, substeps: MPM substep [s] and substeps per recorded step.
    """

    densities: tuple[float, ...] = (500.0, 750.0)
    grid_res: int = 32
    edge: float = 0.16
    depth: float = 0.3
    duration: float = 5.0
    settle: float = 1.5
    dt: float = 4e-4
    substeps: int = 25

    @classmethod
    def reduced(cls) -> ArchimedesSetup:
        """The test's setup: one density, 2.5 s."""
        return cls(densities=(500.0,), duration=2.5)


ARCHIMEDES_TOLERANCE = 0.05  # relative error of the mean immersion d/h against rho_b / rho_w


def run_archimedes(setup: ArchimedesSetup) -> dict:
    """Immersion d/h of a floating cube against Archimedes, and the deepest liquid particle
    inside the body, for each density of ``setup``."""
    import torch

    from engine import geometry, sampling
    from engine.config import SimConfig
    from engine.materials import WATER
    from engine.scene import SceneBuilder
    from engine.simulator import Simulator
    from engine.solvers.rigid import RigidBody, body_points_inside

    started = time.perf_counter()
    runs = []
    for density in setup.densities:
        cfg = SimConfig(grid_res=setup.grid_res, dt=setup.dt, substeps=setup.substeps)
        dx, spacing, h = cfg.dx, cfg.dx / 2, setup.edge
        lo = cfg.boundary_cells * dx
        builder = SceneBuilder(cfg)
        builder.add_particles(sampling.box((lo, lo, lo), (1 - lo, 1 - lo, lo + setup.depth), spacing), WATER, spacing)
        body = RigidBody(
            geometry.Box((h / 2,) * 3), density=density, pose=(0.5, 0.5, lo + setup.depth + h / 2 + 0.01, 1, 0, 0, 0)
        )
        builder.add_rigid_body(body)
        sim = Simulator(builder.build())
        sim.reset()
        control = torch.zeros(1, 0, 6, dtype=torch.float64)
        step_time = cfg.dt * cfg.substeps
        times, immersion, deepest = [], [], []
        for step in range(round(setup.duration / step_time)):
            sim.step(control)
            state = sim.get_state()
            pose, x = state.bodies[0, 0, :7].numpy(), state.x[0].numpy()
            away = (np.abs(x[:, 0] - 0.5) > 2 * h) | (np.abs(x[:, 1] - 0.5) > 2 * h)
            surface = np.quantile(x[away, 2], 0.98) + spacing / 2  # free surface away from the body
            times.append((step + 1) * step_time)
            immersion.append((surface - (pose[2] - h / 2)) / h)
            deepest.append(float(-body_points_inside(body, pose, x).min()))
        t, d = np.array(times), np.array(immersion)
        late = t >= setup.settle
        expected = density / WATER.density
        mean = float(d[late].mean())
        runs.append(
            {
                "density": density,
                "expected_immersion": expected,
                "mean_immersion": mean,
                "rel_error": mean / expected - 1.0,
                "max_rel_deviation_after_settle": float(np.abs(d[late] / expected - 1.0).max()),
                "deepest_particle_inside_over_dx": max(deepest) / dx,
                "history": {"t": t.tolist(), "immersion": d.tolist()},
            }
        )
    max_err = max(abs(r["rel_error"]) for r in runs)
    return {
        "case": "archimedes",
        "reference": "Archimedes' principle: a floating body's immersed fraction d/h = rho_body / rho_liquid",
        "setup": asdict(setup),
        "runs": runs,
        "max_rel_error": max_err,
        "tolerance": ARCHIMEDES_TOLERANCE,
        "passed": bool(
            max_err <= ARCHIMEDES_TOLERANCE and all(r["deepest_particle_inside_over_dx"] <= 0.5 for r in runs)
        ),
        "wall_s": time.perf_counter() - started,
    }


def plot_archimedes(result: dict, path: Path) -> None:
    """Immersion d/h against time per density, with Archimedes' value and the tolerance band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.3))
    for i, run in enumerate(result["runs"]):
        h, e = run["history"], run["expected_immersion"]
        ax.plot(h["t"], h["immersion"], color=f"C{i}", lw=1.2, label=f"rho_b = {run['density']:g} kg/m^3")
        ax.axhline(e, color=f"C{i}", ls="--", lw=0.8)
        ax.axhspan(e * (1 - result["tolerance"]), e * (1 + result["tolerance"]), color=f"C{i}", alpha=0.1)
    ax.axvline(result["setup"]["settle"], color="0.5", lw=0.8, ls=":")
    ax.set(
        xlabel="time [s]",
        ylabel="immersion d / h",
        title=f"floating cube vs Archimedes (dashed); max error {100 * result['max_rel_error']:.1f} %",
    )
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


@register("archimedes", plot_archimedes)
def archimedes_case(quick: bool = False) -> dict:
    """Floating cubes against Archimedes (the full setup, or the test's reduced one)."""
    return run_archimedes(ArchimedesSetup.reduced() if quick else ArchimedesSetup())


# ------------------------------------------------------------------------------------ driver
def _source_state() -> dict:
    """The git commit of the tree and its uncommitted changes under engine/ (read-only git
    queries; None where git is not available): a result is only as good as the engine it ran."""
    import subprocess

    root = Path(__file__).resolve().parents[1]

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10, check=True)
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.rstrip()

    status = git("status", "--porcelain", "--", "engine")
    return {
        "commit": (git("rev-parse", "HEAD") or "").strip() or None,
        "engine_uncommitted": None if status is None else [line[3:] for line in status.splitlines()],
    }


def main(argv: list[str] | None = None) -> None:
    from engine.config import LIQUID_MODELS

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--case", action="append", choices=sorted(CASES), help="case to run (repeatable; default all)")
    parser.add_argument("--quick", action="store_true", help="the reduced setups (as the tests run them)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="directory for <case>.json and <case>.png")
    parser.add_argument("--arch", default="cpu", choices=["cpu", "cuda", "auto"])
    parser.add_argument(
        "--liquid-model", default="weakly_compressible", choices=LIQUID_MODELS,
        help="SimConfig.liquid_model of the cases' water (dam_break, hydrostatic); a projected run writes "
        "<case>_projected.json",
    )  # fmt: skip
    args = parser.parse_args(argv)
    options = {}
    if args.liquid_model != "weakly_compressible":
        options["liquid_model"] = args.liquid_model
        cases = args.case or sorted(CASES)
        others = [name for name in cases if "liquid_model" not in CASES[name].options]
        if others:
            parser.error(f"--liquid-model {args.liquid_model} applies to "
                         f"{[n for n in CASES if 'liquid_model' in CASES[n].options]}, not to {others}")  # fmt: skip

    import engine

    engine.init(arch=args.arch, precision="f64")
    args.out.mkdir(parents=True, exist_ok=True)
    results = {}
    for name in args.case or sorted(CASES):
        case = CASES[name]
        result = case.run(args.quick, **options)
        stem = name if not options else f"{name}_{args.liquid_model}"
        result.update(
            date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            command=" ".join([Path(sys.executable).name, *sys.argv]),
            machine={"cpu": platform.processor() or platform.machine(), "python": platform.python_version()},
            precision="f64",
            quick=args.quick,
            source=_source_state(),
        )
        (args.out / f"{stem}.json").write_text(json.dumps(result, indent=2) + "\n")
        case.plot(result, args.out / f"{stem}.png")
        results[name] = result
    summary = {
        name: {k: r[k] for k in ("passed", "max_rel_error", "tolerance", "fit_range_mm", "wall_s") if k in r}
        for name, r in results.items()
    }
    print(json.dumps({"summary": summary, "results": results}, indent=2))


if __name__ == "__main__":
    main()
