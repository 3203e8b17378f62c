"""Camera placement and multi-view frames for the renderer.

* :func:`orbit` moves a look-at camera on the sphere around its target: ``azimuth_deg`` turns it
  about the vertical axis through the target (counter-clockwise seen from above),
  ``elevation_deg`` raises it toward the zenith (clamped to +-85 degrees from the horizontal
  plane), and ``zoom`` divides its distance to the target.
* :func:`tile` puts frames of equal height side by side (a multi-view video frame), with a thin
  dark gap between them.

World frame z-up, metres, as in :mod:`engine.render`.
"""

import math
from collections.abc import Sequence

import numpy as np

__all__ = ["orbit", "tile"]

_MAX_ELEVATION_DEG = 85.0
_GAP = 2  # pixels between tiled views
_GAP_COLOR = 24


def orbit(
    camera_pos: Sequence[float],
    look_at: Sequence[float],
    azimuth_deg: float = 0.0,
    elevation_deg: float = 0.0,
    zoom: float = 1.0,
) -> tuple[float, float, float]:
    """Camera position after orbiting about ``look_at`` and zooming toward it.

    Args:
        camera_pos, look_at: the starting camera [m]; they must differ.
        azimuth_deg: turn about the vertical through ``look_at`` [degrees].
        elevation_deg: added to the camera's elevation above the target [degrees].
        zoom: > 0; the new distance to the target is the old one divided by ``zoom``.

    Returns:
        The new camera position (x, y, z) [m]; the target is unchanged.

    Raises:
        ValueError: non-finite input, coincident points or a non-positive zoom.
    """
    eye = np.asarray(camera_pos, dtype=np.float64)
    target = np.asarray(look_at, dtype=np.float64)
    if eye.shape != (3,) or target.shape != (3,) or not (np.all(np.isfinite(eye)) and np.all(np.isfinite(target))):
        raise ValueError(f"camera_pos and look_at must be 3 finite numbers, got {camera_pos!r}, {look_at!r}")
    for name, v in (("azimuth_deg", azimuth_deg), ("elevation_deg", elevation_deg), ("zoom", zoom)):
        if not (isinstance(v, (int, float)) and math.isfinite(v)):
            raise ValueError(f"{name} must be a finite number, got {v!r}")
    if zoom <= 0.0:
        raise ValueError(f"zoom must be > 0, got {zoom!r}")
    rel = eye - target
    dist = float(np.linalg.norm(rel))
    if dist < 1e-9:
        raise ValueError("camera_pos and look_at must differ")
    azimuth = math.atan2(rel[1], rel[0]) + math.radians(azimuth_deg)
    elevation = math.asin(max(-1.0, min(1.0, rel[2] / dist))) + math.radians(elevation_deg)
    limit = math.radians(_MAX_ELEVATION_DEG)
    elevation = max(-limit, min(limit, elevation))
    dist /= zoom
    horizontal = dist * math.cos(elevation)
    return (
        float(target[0] + horizontal * math.cos(azimuth)),
        float(target[1] + horizontal * math.sin(azimuth)),
        float(target[2] + dist * math.sin(elevation)),
    )


def tile(frames: Sequence[np.ndarray]) -> np.ndarray:
    """Frames of equal height side by side, separated by a 2-pixel dark gap.

    Args:
        frames: one or more ``(H, W_k, 3)`` uint8 images.

    Returns:
        ``(H, sum(W_k) + 2 (K - 1), 3)`` uint8.

    Raises:
        ValueError: no frames, or frames of another shape, dtype or height.
    """
    if len(frames) == 0:
        raise ValueError("tile needs at least one frame")
    out = []
    for k, f in enumerate(frames):
        a = np.asarray(f)
        if a.ndim != 3 or a.shape[2] != 3 or a.dtype != np.uint8:
            raise ValueError(f"frames[{k}] must be an (H, W, 3) uint8 array, got {a.shape} {a.dtype}")
        if a.shape[0] != np.asarray(frames[0]).shape[0]:
            raise ValueError(f"frames[{k}] has height {a.shape[0]}, expected {np.asarray(frames[0]).shape[0]}")
        if k:
            out.append(np.full((a.shape[0], _GAP, 3), _GAP_COLOR, dtype=np.uint8))
        out.append(a)
    return np.concatenate(out, axis=1)
