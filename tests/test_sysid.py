"""System identification (policies/sysid.py): E and mu recovered from synthetic tactile signals.

Measurements come from the default press-and-slide scene with known parameters (E = 100 kPa,
mu = 0.5); identification starts 30 % off in opposite directions and must land within 5 %.
f64 on the CPU (the ``runtime`` fixture); one rollout forward and backward is about 0.6 s.
"""

from __future__ import annotations

import pytest
import torch

TRUE = {"E": 1.0e5, "mu": 0.5}


@pytest.fixture(scope="module")
def scene(runtime):
    from policies.sysid import press_and_slide_scene

    return press_and_slide_scene(**TRUE)


@pytest.fixture(scope="module")
def observed(scene):
    from policies.sysid import measure

    return measure(scene.sim, scene.control, scene.sim.default_sensor_params(), scene.view)


def _start(scene, factors):
    from engine.solvers.fem import SENSOR_PARAM_NAMES

    init = scene.sim.default_sensor_params()
    for name, factor in factors.items():
        init[..., SENSOR_PARAM_NAMES.index(name)] *= factor
    return init


@pytest.mark.slow
@pytest.mark.parametrize("factors", [{"E": 1.3, "mu": 0.7}, {"E": 0.7, "mu": 1.3}], ids=["E+30,mu-30", "E-30,mu+30"])
def test_identify_recovers_E_and_mu(scene, observed, factors):
    from policies.sysid import identify

    truth = scene.sim.default_sensor_params()
    # Both phases show up in the measurement: an imprint, then shear along +x.
    assert observed.net_wrench[..., 2].min() < 0 and observed.net_wrench[-1, 0, 0] > 0
    assert observed.marker_disp_px.abs().max() > 0.5

    result = identify(scene.sim, scene.control, observed, _start(scene, factors), ("E", "mu"), steps=20)
    assert len(result.history) <= 20
    assert result.loss < 1e-2 * result.history[0]["loss"]
    for name in ("E", "mu"):
        assert abs(result.estimate[name] / TRUE[name] - 1.0) < 0.05, (name, result.estimate, result.history)
    # The parameters not identified are untouched.
    others = [k for k in range(8) if k not in (0, 7)]
    torch.testing.assert_close(result.params[..., others], truth[..., others], rtol=0, atol=0)


def test_bad_input_is_named(scene):
    from policies.sysid import Measurement, identify

    T = scene.control.shape[0]
    observed = Measurement(torch.zeros(T, 1, 25, 2, dtype=torch.float64), torch.zeros(T, 1, 6), scene.view)
    init = scene.sim.default_sensor_params()
    with pytest.raises(ValueError, match="youngs_modulus"):
        identify(scene.sim, scene.control, observed, init, ("E", "youngs_modulus"))
    with pytest.raises(ValueError, match="mu"):
        identify(scene.sim, scene.control, observed, _start(scene, {"mu": 0.0}))
    with pytest.raises(ValueError, match="optimizer"):
        identify(scene.sim, scene.control, observed, init, optimizer="sgd")
    with pytest.raises(ValueError, match="one row per control step"):
        identify(scene.sim, scene.control[:-1], observed, init)
    with pytest.raises(ValueError, match="init_params"):
        identify(scene.sim, scene.control, observed, init[..., :7])
