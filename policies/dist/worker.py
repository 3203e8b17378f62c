"""The Taichi runtime of a Ray worker process: one ``engine.init`` per process, threads = its CPUs.

Ray starts worker processes from its raylet (a fresh interpreter, never a fork of the driver),
so each actor or Tune trial initializes its own Taichi runtime here, once, with the arguments
of :func:`engine.runtime.init`. The CPU thread pool is sized to the CPUs Ray gave the worker
(Taichi reads ``TI_CPU_MAX_NUM_THREADS`` when ``ti.init`` runs; torch's intra-op pool is set
alike), so workers sharing a machine do not oversubscribe its cores. ``deterministic=True`` runs
kernels on one thread (bitwise reproducible, :mod:`engine.runtime`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

ARCHES = ("cpu", "cuda", "auto")


@dataclass(frozen=True)
class WorkerRuntime:
    """How a worker process runs the engine.

    Attributes:
        precision: ``f32`` or ``f64``.
        arch: ``cpu``, ``cuda`` or ``auto``.
        deterministic: one CPU thread, bitwise-reproducible kernels (CPU only).
        threads: CPU threads of Taichi's and torch's pools (None: Taichi's default, all cores).
    """

    precision: str = "f32"
    arch: str = "cpu"
    deterministic: bool = False
    threads: int | None = None

    def __post_init__(self):
        if self.precision not in ("f32", "f64"):
            raise ValueError(f"WorkerRuntime.precision must be f32 or f64, got {self.precision!r}")
        if self.arch not in ARCHES:
            raise ValueError(f"WorkerRuntime.arch must be one of {ARCHES}, got {self.arch!r}")
        if self.deterministic and self.arch != "cpu":
            raise ValueError("WorkerRuntime.deterministic needs arch='cpu'")
        if self.threads is not None and (not isinstance(self.threads, int) or self.threads < 1):
            raise ValueError(f"WorkerRuntime.threads must be an int >= 1 or None, got {self.threads!r}")

    def start(self) -> None:
        """Initialize this process's engine (idempotent for equal settings; see :func:`engine.init`)."""
        import torch

        import engine

        if self.threads is not None:
            os.environ["TI_CPU_MAX_NUM_THREADS"] = str(self.threads)
            torch.set_num_threads(self.threads)
        engine.init(arch=self.arch, precision=self.precision, deterministic=self.deterministic)
