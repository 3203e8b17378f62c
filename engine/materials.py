"""Constitutive models for MLS-MPM particles (Kirchhoff stress), one parameter table.

Every material is one row of a parameter table ``params[b, m, :] = (E, nu, density, viscosity,
yield_stress)`` (see :data:`PARAM_NAMES`) plus an integer model kind; particles carry a material
id, so several materials share one scene and one kernel launch. The table has a batch axis so
each scene of a batch may use different parameters, and it is differentiable.

Models (tau is the Kirchhoff stress, J = det F, f = I + dt*C the incremental deformation of one
substep, C the APIC affine velocity matrix ~ grad v):

* ``fluid`` - weakly compressible liquid, Hu et al. 2018 (MLS-MPM, eq. for fluids):
  tau = K J (J - 1) I + J eta (C + C^T), with K = ``E`` the bulk modulus and eta the Newtonian
  viscosity; the pressure is p = K (1 - J), with no clamp (J > 1 is tension). J is advected as
  J <- J (1 + dt tr C), after the MPM solver has scaled it toward the particles' packing where
  they pack denser than J says (the packing correction, engine/solvers/mpm_kernels.py). A
  resting liquid starts hydrostatic with ``SceneBuilder.add_particles(..., hydrostatic=True)``
  (engine/hydrostatic.py). Water, milk and coffee are presets.
* ``elastic`` - compressible Neo-Hookean: tau = mu (F F^T - I) + lambda ln(J) I. No SVD is needed,
  so reverse-mode autodiff is exact and stable even for repeated singular values.
* ``elastoplastic`` - von Mises (J2) plasticity in the elastic left Cauchy-Green tensor, Simo's
  return mapping (Simo & Hughes, Computational Inelasticity, Box 9.1): the particle stores the
  isochoric elastic tensor b_bar_e instead of F; trial b_bar = f_bar b_bar_e f_bar^T,
  s_trial = mu dev(b_bar); if |s_trial| > sqrt(2/3) sigma_y the deviatoric stress is returned to
  the yield surface; tau = K/2 (J^2 - 1) I + s. Plastic flow is isochoric, so J stays elastic.
* ``viscoplastic`` - the same return mapping with a Bingham (Herschel-Bulkley with flow index 1)
  rate law, as Yue et al. 2015 ("Continuum foam", SIGGRAPH) do for shear-dependent flows:
  |s| = (eta |s_trial| + 2 mu_bar dt sqrt(2/3) sigma_y) / (eta + 2 mu_bar dt), mu_bar = mu tr(b_bar)/3.
  eta -> 0 recovers perfect plasticity, eta -> inf recovers elasticity. Used for ice cream.
* ``rigid`` - no stress; particles of one body are kept rigid by shape matching (see engine/solvers/shape_matching.py).

All stress computations avoid SVD/eigen decompositions, which is what makes Taichi's reverse-mode
autodiff reliable here (a documented pitfall of SVD gradients with repeated singular values).
"""

import math
from dataclasses import dataclass

import numpy as np
import taichi as ti

FLUID, ELASTIC, ELASTOPLASTIC, VISCOPLASTIC, RIGID = 0, 1, 2, 3, 4
MODEL_KINDS = {
    "fluid": FLUID,
    "elastic": ELASTIC,
    "elastoplastic": ELASTOPLASTIC,
    "viscoplastic": VISCOPLASTIC,
    "rigid": RIGID,
}
PARAM_NAMES = ("E", "nu", "density", "viscosity", "yield_stress")
N_PARAMS = len(PARAM_NAMES)
P_E, P_NU, P_DENSITY, P_VISCOSITY, P_YIELD = range(N_PARAMS)


@dataclass(frozen=True)
class Material:
    """One material: a constitutive model and its physical parameters.

    Attributes:
        name: label (used for rendering colors and observations).
        model: one of ``fluid``, ``elastic``, ``elastoplastic``, ``viscoplastic``, ``rigid``.
        density: rest density [kg/m^3].
        E: Young's modulus [Pa]; for ``fluid`` the bulk modulus K [Pa]. Weakly compressible
            liquids use K far below water's 2.2 GPa so the explicit step is stable
            (sound speed sqrt(K/rho) must satisfy c*dt < dx).
        nu: Poisson's ratio, in (-1, 0.5) for solids (unused by fluid and rigid).
        viscosity: dynamic viscosity eta [Pa s] (fluid: Newtonian; viscoplastic: Bingham).
        yield_stress: von Mises yield stress sigma_y [Pa] (elastoplastic, viscoplastic).
        color: RGB in [0, 1] for rendering.
    """

    name: str
    model: str
    density: float
    E: float
    nu: float = 0.0
    viscosity: float = 0.0
    yield_stress: float = 0.0
    color: tuple[float, float, float] = (0.5, 0.5, 0.5)

    def __post_init__(self):
        if self.model not in MODEL_KINDS:
            raise ValueError(f"material {self.name!r}: model must be one of {tuple(MODEL_KINDS)}, got {self.model!r}")
        check_params(self.name, self.model, self.as_row())

    @property
    def kind(self) -> int:
        return MODEL_KINDS[self.model]

    def as_row(self) -> np.ndarray:
        """The parameter row (E, nu, density, viscosity, yield_stress)."""
        return np.array([self.E, self.nu, self.density, self.viscosity, self.yield_stress], dtype=np.float64)

    def lame(self) -> tuple[float, float]:
        """Lame parameters (mu, lambda) [Pa]."""
        return lame(self.E, self.nu)

    def wave_speed(self) -> float:
        """Fastest elastic (P-)wave speed [m/s], the CFL-limiting speed of an explicit step."""
        if self.kind == RIGID:
            return 0.0
        if self.kind == FLUID:
            return math.sqrt(self.E / self.density)
        mu, lam = self.lame()
        return math.sqrt((lam + 2 * mu) / self.density)


def lame(E: float, nu: float) -> tuple[float, float]:
    """Lame parameters from Young's modulus and Poisson's ratio."""
    return E / (2 * (1 + nu)), E * nu / ((1 + nu) * (1 - 2 * nu))


def check_params(name: str, model: str, row) -> None:
    """Raise ValueError naming the field if a parameter row is non-physical."""
    row = np.asarray(row, dtype=np.float64)
    for field_name, value in zip(PARAM_NAMES, row, strict=True):
        if not math.isfinite(value):
            raise ValueError(f"material {name!r}: {field_name} must be finite, got {value}")
    E, nu, density, viscosity, yield_stress = row
    if density <= 0:
        raise ValueError(f"material {name!r}: density must be > 0 kg/m^3, got {density}")
    if model != "rigid" and E <= 0:
        raise ValueError(f"material {name!r}: E must be > 0 Pa, got {E}")
    if model in ("elastic", "elastoplastic", "viscoplastic") and not -1 < nu < 0.5:
        raise ValueError(f"material {name!r}: nu must be in (-1, 0.5), got {nu}")
    if viscosity < 0:
        raise ValueError(f"material {name!r}: viscosity must be >= 0 Pa s, got {viscosity}")
    if yield_stress < 0:
        raise ValueError(f"material {name!r}: yield_stress must be >= 0 Pa, got {yield_stress}")


# Presets. Liquids are weakly compressible (K ~ 1e5..1e6 Pa): the compression under a 0.5 m
# column of water is rho*g*h/K < 5%. Viscosities of milk and coffee are raised above their real
# values (~2e-3 Pa s) so the difference between the two is visible at this resolution.
WATER = Material("water", "fluid", density=1000.0, E=4e5, viscosity=1e-3, color=(0.25, 0.5, 0.95))
MILK = Material("milk", "fluid", density=1030.0, E=4e5, viscosity=0.2, color=(0.97, 0.95, 0.9))
COFFEE = Material("coffee", "fluid", density=1000.0, E=4e5, viscosity=0.05, color=(0.35, 0.2, 0.1))
JELLY = Material("jelly", "elastic", density=1000.0, E=5e4, nu=0.3, color=(0.9, 0.3, 0.4))
PLASTICINE = Material(
    "plasticine",
    "elastoplastic",
    density=1200.0,
    E=2e5,
    nu=0.3,
    yield_stress=2e3,
    color=(0.8, 0.6, 0.3),
)
ICE_CREAM = Material(
    "ice_cream",
    "viscoplastic",
    density=900.0,
    E=3e4,
    nu=0.3,
    viscosity=20.0,
    yield_stress=300.0,
    color=(0.98, 0.85, 0.75),
)
RIGID_BODY = Material("rigid", "rigid", density=500.0, E=0.0, color=(1.0, 0.85, 0.1))
PRESETS = {m.name: m for m in (WATER, MILK, COFFEE, JELLY, PLASTICINE, ICE_CREAM, RIGID_BODY)}


@ti.func
def kirchhoff_stress(kind: ti.template(), F, J, C, row, dt):
    """Advance a particle's deformation by one substep and return its Kirchhoff stress.

    Args:
        kind: model kind (FLUID, ELASTIC, ...), a compile-time constant: each kernel instance
            contains one model only, which keeps Taichi's reverse-mode compile small.
        F: (3,3) stored deformation measure: F (elastic), b_bar_e (plastic), unused otherwise.
        J: volume ratio det F.
        C: (3,3) APIC affine matrix (velocity gradient) of the particle.
        row: parameter row (E, nu, density, viscosity, yield_stress).
        dt: substep [s].

    Returns:
        (tau, F_new, J_new): Kirchhoff stress [Pa] and the updated deformation measures.
    """
    I = ti.Matrix.identity(float, 3)
    f = I + dt * C
    E, nu, eta, sigma_y = row[P_E], row[P_NU], row[P_VISCOSITY], row[P_YIELD]
    mu = E / (2.0 * (1.0 + nu))
    lam = E * nu / ((1.0 + nu) * (1.0 - 2.0 * nu))
    tau = ti.Matrix.zero(float, 3, 3)
    F_new = F
    J_new = J
    if ti.static(kind == FLUID):
        J_new = J * (1.0 + dt * C.trace())
        tau = E * J_new * (J_new - 1.0) * I + J_new * eta * (C + C.transpose())
    elif ti.static(kind == ELASTIC):
        F_new = f @ F
        J_new = F_new.determinant()
        tau = mu * (F_new @ F_new.transpose() - I) + lam * ti.log(J_new) * I
    elif ti.static(kind == ELASTOPLASTIC or kind == VISCOPLASTIC):
        det_f = f.determinant()
        J_new = J * det_f
        f_bar = f * ti.pow(det_f, -1.0 / 3.0)
        b_trial = f_bar @ F @ f_bar.transpose()
        Ie = b_trial.trace() / 3.0
        s_trial = mu * (b_trial - Ie * I)
        s_norm_sq = (s_trial * s_trial).sum()
        yield_radius = ti.sqrt(2.0 / 3.0) * sigma_y
        s = s_trial
        if s_norm_sq > yield_radius * yield_radius:
            s_norm = ti.sqrt(s_norm_sq)
            two_mu_dt = 2.0 * mu * Ie * dt
            eta_eff = eta if ti.static(kind == VISCOPLASTIC) else 0.0
            s = s_trial * ((eta_eff * s_norm + two_mu_dt * yield_radius) / ((eta_eff + two_mu_dt) * s_norm))
        F_new = s / mu + Ie * I
        K = lam + 2.0 * mu / 3.0
        tau = 0.5 * K * (J_new * J_new - 1.0) * I + s
    return tau, F_new, J_new
