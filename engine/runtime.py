"""Taichi runtime: the one place in FluxLab that calls ``ti.init``.

``init(arch, precision, debug)`` starts Taichi once per process. Calling it again with the same
arguments is a no-op; calling it with different ones raises, because Taichi kernels compiled for
one precision/backend cannot be mixed with another in one process. Importing :mod:`engine` never
initializes Taichi.

The default backend is the CPU; the environment variable ``FLUXLAB_ARCH`` (``cpu``, ``cuda`` or
``auto``) overrides the default when ``arch`` is not passed. The offline kernel cache is on, so
kernels compiled once are reused by later processes.

Determinism: on the CPU the forward particle-to-grid scatters add in a fixed order (slabs, or one
ordered pass for small scenes; engine/solvers/mpm_kernels.py), so env episodes of the MPM and gas
tasks are bitwise identical for the same seed and actions with the default threads
(benchmarks/results/env_determinism.json). Kernels that still accumulate with parallel atomic
adds, whose order depends on thread timing, so that reruns agree only to rounding (about 1e-16
relative in f64, 1e-7 in f32): the reverse-mode kernels (gradients of ``differentiable_rollout``
and ``Simulator.rollout``), the rigid-body assembly (engine/solvers/rigid.py), shape-matching
moments and the FEM sensors' forces. ``deterministic=True`` runs kernels on one CPU thread, which
makes those bitwise reproducible too, at the cost of parallel speed; the test suite uses it.

Memory: Taichi 1.7 returns the memory of a scalar ndarray to its allocator when Python drops it,
but its vector and matrix ndarrays lack that finalizer, so every Simulator ever built stayed
resident (2-4 MB per env). :func:`init` gives them the scalar ndarrays' finalizer (Taichi's own
``ScalarNdarray.__del__``, which frees nothing a pending kernel still uses), so a closed env's
buffers are freed and reused.

Forked processes: Taichi's CPU backend runs kernels on a thread pool, and a child made by
``fork()`` (``multiprocessing``'s default start method on Linux, which Gymnasium's
``AsyncVectorEnv`` and Stable-Baselines3's ``SubprocVecEnv`` use) inherits the runtime without
its threads, so its first kernel launch would wait for them forever. A fork hook
(``os.register_at_fork``) therefore starts a fresh Taichi program in every child forked from a
process with an initialized runtime (same arguments, about 0.2 s; kernels come from the offline
cache); on a GPU, whose driver context does not survive fork, the child gets the error below
instead. The parent's program is left untouched in the child: finalizing it would wait for the
same missing threads. PyTorch's OpenMP thread pool has the same flaw (a forked child hangs in
its first parallel operation), so the hook also sets the child's torch to one intra-op thread,
as PyTorch's own DataLoader workers do. The parent's ndarrays, and any Simulator built before the
fork, are unusable in the child; :func:`generation` tells objects built before the fork from
those built after. Should the restart fail, every later :func:`init` or :func:`require` in the
child raises a ``RuntimeError`` that names the start methods that work ("spawn", "forkserver").
"""

from __future__ import annotations

import ctypes
import os
import sys
from dataclasses import asdict, dataclass

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
# Taichi programs started in this process's line of forks (see the module docstring), and why a
# forked child could not start its own.
_generation = 0
_fork_error: str | None = None
_fork_hook_registered = False
# Taichi 1.7 allows one Program per process and counts them in this C++ static.
_PROGRAM_COUNT_SYMBOL = "_ZN6taichi4lang7Program14num_instances_E"


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
    global _current, _fork_hook_registered
    if _fork_error is not None:
        raise RuntimeError(_fork_error)
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
    _free_vector_ndarrays()
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
    if not _fork_hook_registered:
        os.register_at_fork(after_in_child=_restart_in_forked_child)
        _fork_hook_registered = True
    return _current


def _free_vector_ndarrays() -> None:
    """Give Taichi's vector and matrix ndarrays the finalizer its scalar ndarrays have (see the
    module docstring); a Taichi version that defines one keeps its own."""
    from taichi.lang._ndarray import ScalarNdarray
    from taichi.lang.matrix import MatrixNdarray, VectorNdarray

    for cls in (MatrixNdarray, VectorNdarray):
        if "__del__" not in vars(cls):
            cls.__del__ = ScalarNdarray.__del__


def generation() -> int:
    """How many times this process's line of forks has started Taichi anew: 0 in the process that
    called :func:`init` first, incremented in each forked child (see the module docstring).
    Objects holding Taichi ndarrays record it and refuse to run under another generation."""
    return _generation


def _abandon_parent_program() -> None:
    """Detach the Taichi program inherited through fork, without finalizing it.

    The program object is kept alive for good (its destructor would join the parent's threads,
    which do not exist here) and Taichi's one-program-per-process count is released, so that
    ``ti.init`` can start a new program."""
    from taichi.lang import impl

    count = ctypes.c_int.in_dll(ctypes.CDLL(impl._ti_core.__file__), _PROGRAM_COUNT_SYMBOL)
    runtime = impl.get_runtime()
    if runtime.prog is not None:
        ctypes.pythonapi.Py_IncRef(ctypes.py_object(runtime.prog))
        runtime.prog = None
        count.value -= 1
    impl.reset()


def _restart_in_forked_child() -> None:
    """``os.register_at_fork(after_in_child=...)`` hook: one torch thread and a fresh Taichi program
    in the child, with the parent's arguments; on failure, record the error :func:`init` and :func:`require` raise."""
    global _current, _generation, _fork_error
    if _current is None:
        return
    config, _current = _current, None
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(1)
    try:
        from taichi.lang import impl

        if impl.current_cfg().arch != ti.cpu:
            raise RuntimeError("a GPU context does not survive fork")
        _abandon_parent_program()
        init(**asdict(config))
        _generation += 1
    except Exception as err:  # any failure becomes the error every later call reports
        _current = None
        _fork_error = (
            f"FluxLab's Taichi runtime was initialized before this process was forked and could not be "
            f"restarted in the child ({type(err).__name__}: {err}). Start worker processes with the 'spawn' "
            "or 'forkserver' method instead (gymnasium.make_vec(..., vector_kwargs={'context': 'spawn'}), "
            "SubprocVecEnv(..., start_method='spawn')), or make the first env only inside the workers."
        )


def current() -> RuntimeConfig | None:
    """The active runtime configuration, or None before :func:`init`."""
    return _current


def require() -> RuntimeConfig:
    """The active runtime configuration; raises if :func:`init` was not called."""
    if _fork_error is not None:
        raise RuntimeError(_fork_error)
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
