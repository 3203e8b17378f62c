"""Shared test fixtures.

The whole suite runs in one process with one Taichi runtime. Gradient checks need f64, so the
runtime is initialized in f64 on the arch given by ``--arch`` (default cpu), deterministic on CPU. Tests that need the
runtime take the ``runtime`` fixture; ``tests/test_runtime.py`` checks, in a subprocess, that
``import engine`` leaves Taichi uninitialized.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest


def pytest_addoption(parser):
    parser.addoption("--arch", default="cpu", choices=["cpu", "cuda", "auto"], help="Taichi arch")


@pytest.fixture(scope="session")
def runtime(request):
    import engine

    arch = request.config.getoption("--arch")
    # One thread on CPU: atomic scatter-adds then sum in a fixed order, so reruns (gradcheck's
    # reentrancy check, determinism tests) are bitwise identical. See engine/runtime.py.
    return engine.init(arch=arch, precision="f64", deterministic=arch == "cpu")


def small_scene(
    material,
    *,
    colliders=(),
    grid_res=16,
    dt=5e-4,
    substeps=3,
    gravity=(0.0, 0.0, -9.8),
    lo=(0.35, 0.35, 0.3),
    hi=(0.55, 0.55, 0.45),
    spacing=1 / 40,
    swirl=0.5,
    batch_size=1,
    scatter="auto",
):
    """A small block of one material with an affine initial velocity field (compression, shear and
    rotation, so stresses are non-trivial), optional colliders; returns a Simulator."""
    import numpy as np

    from engine import sampling
    from engine.config import SimConfig
    from engine.scene import SceneBuilder
    from engine.simulator import Simulator

    builder = SceneBuilder(SimConfig(grid_res=grid_res, dt=dt, substeps=substeps, gravity=gravity))
    points = sampling.box(lo, hi, spacing)
    centre = points.mean(0)
    gradient = np.array([[-1.0, 0.3, 0.0], [0.2, 0.5, 0.0], [0.0, 0.1, -0.8]])
    builder.add_particles(points, material, spacing, velocity=swirl * (points - centre) @ gradient.T)
    for collider in colliders:
        builder.add_collider(collider)
    return Simulator(builder.build(), batch_size=batch_size, scatter=scatter)


@pytest.fixture(scope="session")
def validation():
    """benchmarks/validation.py as a module (the validation cases the slow tests run)."""
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "validation.py"
    spec = importlib.util.spec_from_file_location("fluxlab_benchmarks_validation", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module
