"""Validation: a rigid sphere pressed into an FEM elastomer gives Hertz's force (Johnson, Contact
Mechanics, 1985, Sec. 4.2) within 15 %.

Runs the reduced setup of the ``hertz`` case of benchmarks/validation.py
(:meth:`HertzSetup.reduced`: a 6-ring graded half-ball, three quasi-static load points from
0.2 to 0.4 mm); the module docstring there explains the setup and its choices.
"""

from __future__ import annotations

import pytest


@pytest.mark.slow
def test_sphere_on_gel_matches_hertz(runtime, validation):
    setup = validation.HertzSetup.reduced()
    result = validation.run_hertz(setup)
    errors = {round(p["d_mm"], 3): round(p["rel_error"], 4) for p in result["points"]}
    assert all(p["settled"] for p in result["points"]), result["points"]
    assert result["max_rel_error"] <= 0.15, errors
    # The force grows as d^(3/2): the fitted exponent, not only the magnitude, is Hertz's.
    assert abs(result["loglog_slope"] - 1.5) < 0.1, result["loglog_slope"]
    # The penalty keeps the gel's surface within a few percent of the sphere's depth.
    assert max(p["max_penetration_over_d"] for p in result["points"]) < 0.1
