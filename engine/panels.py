"""Video frames with tactile panels: a scene frame, a sensor's tactile image and its marker field
(arrows from each marker's rest pixel along its displacement) side by side, numpy only.

Arrows and dots are painted as thick pixel segments; images are resized with separable
bilinear interpolation by plain indexing (a matrix-product version competed with other
processes for BLAS threads and ran 5x slower on a shared CPU).
"""

import math
from typing import Any

import numpy as np

from engine.render import as_numpy

__all__ = ["compose_tactile_frame"]


_PANEL_GREY = (128, 128, 128)
_GAP_COLOR = (24, 24, 24)
_ARROW_COLOR = (235, 64, 32)
_MARKER_COLOR = (20, 20, 20)


def _image_u8(a: Any, name: str) -> np.ndarray:
    """(h, w, 3) uint8 from uint8, or from float in [0, 1]; a leading batch axis of 1 is dropped."""
    if hasattr(a, "detach"):
        a = a.detach().cpu().numpy()
    a = np.asarray(a)
    if a.ndim == 4 and a.shape[0] == 1:
        a = a[0]
    if a.ndim != 3 or a.shape[2] != 3 or a.shape[0] < 1 or a.shape[1] < 1:
        raise ValueError(f"{name} must have shape (H, W, 3), got {a.shape}")
    if a.dtype == np.uint8:
        return a
    if a.dtype.kind != "f":
        raise ValueError(f"{name} must be uint8 or float in [0, 1], got dtype {a.dtype}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} contains NaN/Inf")
    return (np.clip(a, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def _resize_bilinear(img: np.ndarray, h: int, w: int) -> np.ndarray:
    """Bilinear resize of (H, W, 3) uint8 to (h, w, 3) uint8, pixel centres aligned.

    Gathers, not matrix products: BLAS threads oversubscribe a busy CPU (30x slower medians
    were measured on 2 shared cores)."""
    H, W = img.shape[:2]
    if (H, W) == (h, w):
        return img.copy()

    def axis(n_out: int, n_in: int):
        s = np.clip((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0.0, n_in - 1)
        i0 = np.floor(s).astype(np.intp)
        return i0, np.minimum(i0 + 1, n_in - 1), (s - i0).astype(np.float32)

    y0, y1, wy = axis(h, H)
    x0, x1, wx = axis(w, W)
    f = img.astype(np.float32)
    wy = wy[:, None, None]
    rows = f[y0] * (1.0 - wy) + f[y1] * wy  # (h, W, 3)
    wx = wx[None, :, None]
    out = rows[:, x0] * (1.0 - wx) + rows[:, x1] * wx
    out += 0.5
    return out.astype(np.uint8)


def _paint(img: np.ndarray, pts: np.ndarray, color: tuple[int, int, int], width: int) -> None:
    """Set the pixels at points ``pts (..., 2)`` (x = column, y = row), ``width`` pixels wide."""
    pts = pts.reshape(-1, 2)
    lo = -(width // 2)
    offs = np.arange(lo, lo + width)
    cols = np.rint(pts[:, 0])[:, None, None] + offs[None, :, None]
    rows = np.rint(pts[:, 1])[:, None, None] + offs[None, None, :]
    cols, rows = np.broadcast_arrays(cols, rows)
    keep = (cols >= 0) & (cols < img.shape[1]) & (rows >= 0) & (rows < img.shape[0])
    img[rows[keep].astype(np.intp), cols[keep].astype(np.intp)] = color


def _segments(p0: np.ndarray, p1: np.ndarray) -> np.ndarray:
    """Points every <= 0.5 px along each segment p0[k] -> p1[k]: (K, n, 2)."""
    if not len(p0):
        return np.zeros((0, 1, 2))
    n = int(np.ceil(2.0 * np.abs(p1 - p0).max())) + 1
    s = np.linspace(0.0, 1.0, n)[None, :, None]
    return p0[:, None] + s * (p1 - p0)[:, None]


def _draw_arrows(img: np.ndarray, tail: np.ndarray, tip: np.ndarray, color, width: int) -> None:
    d = tip - tail
    length = np.linalg.norm(d, axis=1)
    keep = length >= 1.0
    tail, tip, d, length = tail[keep], tip[keep], d[keep], length[keep]
    if not len(tail):
        return
    back = -d / length[:, None]
    head = np.clip(0.35 * length, 2.0, 3.0 + 2.0 * width)[:, None]
    c, s = math.cos(math.radians(28.0)), math.sin(math.radians(28.0))
    wing1 = tip + head * np.stack([c * back[:, 0] - s * back[:, 1], s * back[:, 0] + c * back[:, 1]], axis=1)
    wing2 = tip + head * np.stack([c * back[:, 0] + s * back[:, 1], -s * back[:, 0] + c * back[:, 1]], axis=1)
    for a, b in ((tail, tip), (tip, wing1), (tip, wing2)):
        _paint(img, _segments(a, b), color, width)


def compose_tactile_frame(
    scene_frame: Any,
    tactile_image: Any,
    markers_px: Any = None,
    marker_disp_px: Any = None,
    arrow_scale: float = 5.0,
    markers_on: str = "panel",
    gap: int = 2,
) -> np.ndarray:
    """A video frame: the scene, its tactile image, and the marker field, side by side.

    Layout ``[scene | tactile image | marker panel]`` at the scene's height (the tactile image
    is resized bilinearly, keeping its aspect ratio), separated by ``gap`` dark columns. The
    marker field is drawn as arrows from each marker's rest pixel along its displacement times
    ``arrow_scale`` (markers that move less than a pixel after scaling show only their dot),
    on a grey panel of the tactile image's size (``markers_on="panel"``) or over the tactile
    image itself (``"image"``, two panels). numpy only.

    Args:
        scene_frame: ``(H, W, 3)`` uint8 (a :meth:`Renderer.render` frame).
        tactile_image: ``(h, w, 3)`` float in [0, 1] or uint8, or ``(1, h, w, 3)``
            (``TactileSensorView.signals()["image"]``).
        markers_px: ``(M, 2)`` or ``(1, M, 2)`` current marker pixels ``(u, v)`` = (column, row)
            in the tactile image, pixel centres at integers; None: no marker field.
        marker_disp_px: same shape, marker pixels minus their rest pixels.
        arrow_scale: displacement magnification of the arrows, > 0.
        markers_on: ``"panel"`` or ``"image"``.
        gap: separator width [pixels], >= 0.

    Returns:
        ``(H, W + gap + w' [+ gap + w'], 3)`` uint8 with ``w' = round(H w / h)``.

    Raises:
        ValueError: wrong shapes or dtypes, NaN/Inf, or bad options (the message names the
            argument).
    """
    scene = np.asarray(scene_frame)
    if scene.ndim != 3 or scene.shape[2] != 3 or scene.dtype != np.uint8 or 0 in scene.shape:
        raise ValueError(f"scene_frame must be an (H, W, 3) uint8 image, got {scene.shape} {scene.dtype}")
    tact = _image_u8(tactile_image, "tactile_image")
    if not (isinstance(arrow_scale, (int, float)) and math.isfinite(arrow_scale) and arrow_scale > 0):
        raise ValueError(f"arrow_scale must be a positive number, got {arrow_scale!r}")
    if markers_on not in ("panel", "image"):
        raise ValueError(f"markers_on must be 'panel' or 'image', got {markers_on!r}")
    if isinstance(gap, bool) or not isinstance(gap, (int, np.integer)) or gap < 0:
        raise ValueError(f"gap must be an int >= 0, got {gap!r}")
    if (markers_px is None) != (marker_disp_px is None):
        raise ValueError("markers_px and marker_disp_px must be given together")
    markers = None
    if markers_px is not None:
        px = as_numpy(markers_px, "markers_px")
        disp = as_numpy(marker_disp_px, "marker_disp_px")
        if px.ndim == 3 and px.shape[0] == 1:
            px = px[0]
        if disp.ndim == 3 and disp.shape[0] == 1:
            disp = disp[0]
        if px.ndim != 2 or px.shape[1] != 2:
            raise ValueError(f"markers_px must have shape (M, 2), got {px.shape}")
        if disp.shape != px.shape:
            raise ValueError(f"marker_disp_px must have the shape of markers_px {px.shape}, got {disp.shape}")
        if not (np.all(np.isfinite(px)) and np.all(np.isfinite(disp))):
            raise ValueError("markers_px / marker_disp_px contain NaN/Inf")
        markers = (px, disp)

    H = scene.shape[0]
    h, w = tact.shape[:2]
    w_out = max(1, round(H * w / h))
    panel = _resize_bilinear(tact, H, w_out)
    panels = [scene, panel]
    if markers is not None:
        target = panel
        if markers_on == "panel":
            target = np.empty_like(panel)
            target[:] = _PANEL_GREY
            panels.append(target)
        px, disp = markers
        scale = np.array([w_out / w, H / h])
        rest = (px - disp + 0.5) * scale - 0.5
        tip = rest + arrow_scale * disp * scale
        width = max(1, round(H / 160))
        _paint(target, rest, _MARKER_COLOR, width + 1)
        _draw_arrows(target, rest, tip, _ARROW_COLOR, width)
    out = []
    for k, p in enumerate(panels):
        if k and gap:
            sep = np.empty((H, gap, 3), np.uint8)
            sep[:] = _GAP_COLOR
            out.append(sep)
        out.append(p)
    return np.concatenate(out, axis=1)
