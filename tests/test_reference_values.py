"""The simulator's behaviour is pinned: every task's states, rewards, losses and gradients, and
engine scenes of every material model with a collider, agree to rounding with recorded values.

The values in ``tests/reference/values.npz`` were recorded with ``tests/reference/compute.py``
(f64, deterministic runtime); a change of the engine's structure must leave them unchanged. A
deliberate change of the physics records them anew with that script and says why in its commit.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

REFERENCE = Path(__file__).parent / "reference" / "values.npz"


@pytest.mark.slow
def test_reference_values(runtime):
    from reference.compute import compute

    if runtime.precision != "f64" or not runtime.deterministic:
        pytest.skip("reference values are recorded with a deterministic f64 runtime")
    expected = dict(np.load(REFERENCE, allow_pickle=False))
    actual = compute()
    assert sorted(actual) == sorted(expected)
    failures = []
    for key in sorted(expected):
        a, e = actual[key], expected[key]
        if a.shape != e.shape:
            failures.append(f"{key}: shape {a.shape} != {e.shape}")
            continue
        scale = max(float(np.max(np.abs(e))), 1e-300) if e.size else 1.0
        err = float(np.max(np.abs(a - e))) if e.size else 0.0
        if not err <= 1e-9 * scale:
            failures.append(f"{key}: max |diff| {err:.3g} (scale {scale:.3g})")
    assert not failures, "\n".join(failures)
