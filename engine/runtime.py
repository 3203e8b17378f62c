"""Taichi runtime: the one place in FluxLab that calls ``ti.init``.

``init(arch, precision, debug)`` starts Taichi once per process. Calling it again with the same
arguments is a no-op; calling it with different ones raises, because Taichi kernels compiled for
one precision/backend cannot be mixed with another in one process. Importing :mod:`engine` never
initializes Taichi.

The default backend is the CPU; the environment variable ``FLUXLAB_ARCH`` (``cpu``, ``cuda`` or
``auto``) overrides the default when ``arch`` is not passed. The offline kernel cache is on, so
kernels compiled once are reused by later processes.

Determinism: particle-to-grid transfers and every reverse-mode kernel accumulate with atomic adds.
On a multi-threaded CPU the order of those additions depends on thread timing, so two identical
runs agree to rounding (about 1e-16 relative in f64, 1e-7 in f32) but not bit for bit.
``deterministic=True`` runs kernels on one CPU thread, which makes reruns bitwise identical at the
cost of parallel speed. The test suite uses it; environments and benchmarks do not by default.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import taichi as ti

_ARCHES = ("cpu", "cuda", "auto")
_PRECISIONS = ("f32", "f64")


@dataclass(frozen=True)
class RuntimeConfig:
    """The arguments Taichi was initialized with.

    Attributes:
        arch: "cpu", "cuda" or "auto" (as requested; "auto" picks CUDA when available).
        precision: "f32" or "f64"; the default float type of every kernel and buffer.
        debug: Taichi debug mode (bounds checks), slow.
        deterministic: one CPU thread, so atomic accumulations happen in a fixed order.
    """

    arch: str
    precision: str
    debug: bool
    deterministic: bool = False


_current: RuntimeConfig | None = None


def init(
    arch: str | None = None, precision: str = "f32", debug: bool = False, deterministic: bool = False
) -> RuntimeConfig:
    """Initialize Taichi (idempotent).

    Args:
        arch: "cpu" | "cuda" | "auto"; None means ``$FLUXLAB_ARCH`` or "cpu".
        precision: "f32" | "f64".
        debug: enable Taichi bounds checking.
        deterministic: bitwise-reproducible runs (CPU only): kernels run on one thread.

    Returns:
        The active :class:`RuntimeConfig`.

    Raises:
        ValueError: unknown arch or precision, ``deterministic`` on a GPU arch, or arguments that
            conflict with an earlier call.
    """
    global _current
    if arch is None:
        arch = os.environ.get("FLUXLAB_ARCH", "cpu")
    if arch not in _ARCHES:
        raise ValueError(f"arch must be one of {_ARCHES}, got {arch!r}")
    if precision not in _PRECISIONS:
        raise ValueError(f"precision must be one of {_PRECISIONS}, got {precision!r}")
    if deterministic and arch != "cpu":
        raise ValueError("deterministic=True is only available on arch='cpu' (GPU atomics are unordered)")
    requested = RuntimeConfig(arch=arch, precision=precision, debug=bool(debug), deterministic=bool(deterministic))
    if _current is not None:
        if requested != _current:
            raise ValueError(
                f"Taichi is already initialized with {_current}; cannot re-initialize with "
                f"{requested} in the same process"
            )
        return _current
    ti_arch = {"cpu": ti.cpu, "cuda": ti.cuda, "auto": ti.gpu}[arch]
    extra = {"cpu_max_num_threads": 1} if deterministic else {}
    ti.init(
        arch=ti_arch,
        default_fp=ti.f64 if precision == "f64" else ti.f32,
        default_ip=ti.i32,
        debug=bool(debug),
        offline_cache=True,
        log_level=ti.WARN,
        **extra,
    )
    _current = requested
    return _current


def current() -> RuntimeConfig | None:
    """The active runtime configuration, or None before :func:`init`."""
    return _current


def require() -> RuntimeConfig:
    """The active runtime configuration; raises if :func:`init` was not called."""
    if _current is None:
        raise RuntimeError("FluxLab runtime not initialized: call engine.init(...) first")
    return _current


def on_cpu() -> bool:
    """Whether kernels run on the CPU (also when "auto" found no GPU)."""
    require()
    from taichi.lang import impl

    return impl.current_cfg().arch == ti.cpu


def real_dtype():
    """Taichi float type of the active precision (ti.f32 or ti.f64)."""
    return ti.f64 if require().precision == "f64" else ti.f32


def torch_dtype():
    """torch float dtype matching the active precision."""
    import torch

    return torch.float64 if require().precision == "f64" else torch.float32
