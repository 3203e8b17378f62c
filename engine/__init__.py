"""FluxLab engine: differentiable MLS-MPM, grid fluids and rendering on Taichi.

Importing this package does not initialize Taichi; call :func:`engine.init` first.
"""

from engine.runtime import init

__all__ = ["init"]
