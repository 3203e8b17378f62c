"""Shared test fixtures.

The whole suite runs in one process with one Taichi runtime. Gradient checks need f64, so the
runtime is initialized in f64 on the arch given by ``--arch`` (default cpu). Tests that need the
runtime take the ``runtime`` fixture; ``tests/test_runtime.py`` checks, in a subprocess, that
``import engine`` leaves Taichi uninitialized.
"""

from __future__ import annotations

import pytest


def pytest_addoption(parser):
    parser.addoption("--arch", default="cpu", choices=["cpu", "cuda", "auto"], help="Taichi arch")


@pytest.fixture(scope="session")
def runtime(request):
    import engine

    return engine.init(arch=request.config.getoption("--arch"), precision="f64")
