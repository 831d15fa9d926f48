"""Colour images of the seven predictions, and a labelled montage of a frame with all of them.

Every function maps a prediction in its physical meaning (see :mod:`stablemtl_edge.runtime` and
:mod:`stablemtl_edge.tasks`) to a uint8 RGB image ``(H, W, 3)`` of the same height and width. The colour
tables are built in (numpy only), so the pictures are identical on every machine; OpenCV is used only to
resize tiles and draw the label text of the montage.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import cv2
import numpy as np

from ..errors import StableMTLError
from ..tasks import CLASS_NAMES, IGNORE_ID, PALETTE, TaskName, get_task

__all__ = [
    "TURBO_CONTROL_POINTS",
    "turbo",
    "colorize_depth",
    "colorize_normal",
    "colorize_flow",
    "colorize_scene_flow",
    "colorize_semantic",
    "colorize_albedo",
    "colorize_shading",
    "colorize",
    "flow_color_wheel",
    "montage",
    "montage_layout",
]

# Turbo (A. Mikhailov, Google, 2019; Apache-2.0), sampled at 33 evenly spaced points of [0, 1].
# Piecewise-linear interpolation of these stays within 3/255 of the full 256-entry table.
TURBO_CONTROL_POINTS = np.array(
    [
        (48, 18, 59), (57, 42, 115), (64, 64, 162), (68, 86, 199), (70, 107, 227), (70, 128, 246),
        (66, 148, 255), (55, 168, 250), (40, 188, 235), (28, 205, 216), (24, 221, 194), (31, 233, 175),
        (50, 242, 152), (78, 249, 125), (109, 254, 98), (139, 255, 75), (164, 252, 60), (183, 247, 53),
        (203, 237, 52), (221, 224, 55), (236, 209, 58), (247, 193, 58), (253, 174, 53), (254, 153, 44),
        (251, 129, 34), (245, 105, 24), (236, 83, 15), (225, 65, 9), (210, 49, 5), (193, 35, 2),
        (172, 23, 1), (149, 13, 1), (122, 4, 3),
    ],
    dtype=np.float32,
)  # fmt: skip


def _lut_from_control_points(points: np.ndarray, size: int = 256) -> np.ndarray:
    xs = np.linspace(0.0, 1.0, len(points))
    grid = np.linspace(0.0, 1.0, size)
    lut = np.stack([np.interp(grid, xs, points[:, c]) for c in range(3)], axis=1)
    return np.round(lut).astype(np.uint8)


_TURBO_LUT = _lut_from_control_points(TURBO_CONTROL_POINTS)  # (256, 3) uint8 RGB


def _flow_wheel() -> np.ndarray:
    """The Middlebury colour wheel (Baker et al., 2011): 55 hues, red -> yellow -> green -> cyan -> blue -> magenta."""
    # (length, channel held at 255, channel ramped, ramp rising?) per transition: R=0, G=1, B=2.
    segments = (
        (15, 0, 1, True), (6, 1, 0, False), (4, 1, 2, True), (11, 2, 1, False), (13, 2, 0, True), (6, 0, 2, False),
    )  # fmt: skip
    rows = []
    for n, full, ramped, rising in segments:
        ramp = np.floor(255.0 * np.arange(n) / n)
        block = np.zeros((n, 3), dtype=np.float32)
        block[:, full] = 255.0
        block[:, ramped] = ramp if rising else 255.0 - ramp
        rows.append(block)
    return np.concatenate(rows, axis=0) / 255.0


_FLOW_WHEEL = _flow_wheel()  # (55, 3) float32 in [0, 1]
_EPS = 1e-6


def flow_color_wheel() -> np.ndarray:
    """The flow colour wheel as ``(55, 3)`` float32 RGB in [0, 1] (index 0 = red, rotating through the hues)."""
    return _FLOW_WHEEL.copy()


def _values(x: Any) -> np.ndarray:
    """Accept a bare array or anything with a ``value`` array (a runtime ``Prediction``)."""
    return np.asarray(getattr(x, "value", x))


def _check(x: np.ndarray, ndim: int, channels: int | None, what: str) -> None:
    ok = x.ndim == ndim and (channels is None or x.shape[-1] == channels)
    if not ok or x.shape[0] == 0 or x.shape[1] == 0:
        want = "(H, W)" if ndim == 2 else f"(H, W, {channels})"
        raise StableMTLError(f"{what} must have shape {want}, got {x.shape}")


def turbo(x: np.ndarray) -> np.ndarray:
    """Map values in [0, 1] (clipped; NaN -> black) to Turbo colours, ``(..., 3)`` uint8 RGB."""
    x = np.asarray(x, dtype=np.float32)
    finite = np.isfinite(x)
    idx = np.round(np.clip(np.where(finite, x, 0.0), 0.0, 1.0) * 255.0).astype(np.intp)
    out = _TURBO_LUT[idx]
    out[~finite] = 0
    return out


def colorize_depth(depth: Any, near_is_warm: bool = True) -> np.ndarray:
    """Relative depth ``(H, W)`` in [0, 1] (0 = near) on the Turbo map.

    Args:
        depth: the runtime's depth (affine-invariant, so colours compare within a frame, not across).
        near_is_warm: near surfaces red and far ones blue (the usual reading of a depth map); False
            reverses it.
    """
    d = _values(depth).astype(np.float32, copy=False)
    _check(d, 2, None, "depth")
    return turbo(1.0 - d if near_is_warm else d)


def colorize_normal(normal: Any) -> np.ndarray:
    """Unit normals ``(H, W, 3)`` (x right, y up, z towards the camera) as RGB = (n + 1) / 2."""
    n = _values(normal).astype(np.float32, copy=False)
    _check(n, 3, 3, "normal")
    return np.round(np.clip((n + 1.0) * 127.5, 0.0, 255.0)).astype(np.uint8)


def colorize_flow(flow: Any, max_radius: float | None = None) -> np.ndarray:
    """Optical flow ``(H, W, 2)`` (u right, v down) on the Middlebury colour wheel.

    Hue is direction, saturation is magnitude relative to ``max_radius``: zero motion is white and a
    vector of length ``max_radius`` gets the full wheel colour; longer vectors are darkened.

    Args:
        flow: flow in any consistent unit (the runtime's normalised units, or pixels).
        max_radius: the magnitude shown fully saturated; None = the largest magnitude in this frame
            (fine for one picture; pass a constant for a video so colours do not flicker).
    """
    f = _values(flow).astype(np.float32, copy=False)
    _check(f, 3, 2, "optical flow")
    u, v = f[..., 0], f[..., 1]
    finite = np.isfinite(u) & np.isfinite(v)
    u = np.where(finite, u, 0.0)
    v = np.where(finite, v, 0.0)
    rad = np.sqrt(u * u + v * v)
    scale = float(rad.max()) if max_radius is None else float(max_radius)
    rad = rad / max(scale, _EPS)
    n = len(_FLOW_WHEEL)
    angle = np.arctan2(-v, -u) / np.pi  # (-1, 1]
    fk = (angle + 1.0) * 0.5 * (n - 1)
    k0 = np.floor(fk).astype(np.intp)
    k1 = (k0 + 1) % n
    w = (fk - k0)[..., None]
    col = (1.0 - w) * _FLOW_WHEEL[k0] + w * _FLOW_WHEEL[k1]
    r = rad[..., None]
    col = np.where(r <= 1.0, 1.0 - r * (1.0 - col), col * 0.75)
    out = np.round(col * 255.0).astype(np.uint8)
    out[~finite] = 0
    return out


def colorize_scene_flow(scene_flow: Any) -> np.ndarray:
    """Scene flow ``(H, W, 3)`` in normalised units [-1, 1] per axis as RGB = (x + 1) / 2 (grey = static)."""
    s = _values(scene_flow).astype(np.float32, copy=False)
    _check(s, 3, 3, "scene flow")
    return np.round(np.clip((s + 1.0) * 127.5, 0.0, 255.0)).astype(np.uint8)


def colorize_semantic(ids: Any) -> np.ndarray:
    """Class ids ``(H, W)`` in the Cityscapes colours of :data:`stablemtl_edge.tasks.PALETTE`; 255 = black."""
    c = _values(ids)
    _check(c, 2, None, "semantic")
    c = c.astype(np.intp, copy=False)
    valid = (c >= 0) & (c < len(PALETTE))
    out = PALETTE[np.where(valid, c, 0)]
    out[~valid] = 0
    if np.any(~valid & (c != IGNORE_ID)):
        raise StableMTLError(
            f"semantic ids must be 0..{len(PALETTE) - 1} or {IGNORE_ID} (ignore), got values up to {int(c.max())}"
        )
    return out


def colorize_albedo(albedo: Any) -> np.ndarray:
    """Albedo ``(H, W, 3)`` in [0, 1] as RGB (linear values shown directly, as the model predicts them)."""
    a = _values(albedo).astype(np.float32, copy=False)
    _check(a, 3, 3, "albedo")
    return np.round(np.clip(a, 0.0, 1.0) * 255.0).astype(np.uint8)


def colorize_shading(shading: Any) -> np.ndarray:
    """Grey shading ``(H, W)`` in [0, 1] as a grey RGB image."""
    s = _values(shading).astype(np.float32, copy=False)
    _check(s, 2, None, "shading")
    g = np.round(np.clip(s, 0.0, 1.0) * 255.0).astype(np.uint8)
    return np.repeat(g[..., None], 3, axis=2)


_COLORIZERS = {
    TaskName.DEPTH: colorize_depth,
    TaskName.NORMAL: colorize_normal,
    TaskName.SEMANTIC: colorize_semantic,
    TaskName.OPTICAL_FLOW: colorize_flow,
    TaskName.SCENE_FLOW: colorize_scene_flow,
    TaskName.ALBEDO: colorize_albedo,
    TaskName.SHADING: colorize_shading,
}


def colorize(task: str | TaskName, value: Any, flow_max_radius: float | None = None) -> np.ndarray:
    """Colour image of one task's prediction (an array or a runtime ``Prediction``), uint8 RGB ``(H, W, 3)``.

    ``flow_max_radius`` is the optical-flow colour scale (see :func:`colorize_flow`); other tasks ignore it.
    """
    name = get_task(task).name
    if name is TaskName.OPTICAL_FLOW:
        return colorize_flow(value, flow_max_radius)
    return _COLORIZERS[name](value)


def montage_layout(n_tiles: int, tile_hw: tuple[int, int], aspect: float = 16 / 9) -> tuple[int, int]:
    """(rows, columns) of a grid of ``n_tiles`` tiles whose overall shape is closest to ``aspect`` (w / h).

    Wide frames (a 375x1242 KITTI frame) stack in few columns, square ones spread out.
    """
    if n_tiles < 1:
        raise StableMTLError(f"a montage needs at least one tile, got {n_tiles}")
    th, tw = tile_hw
    best: tuple[float, int, int] | None = None
    for cols in range(1, n_tiles + 1):
        rows = math.ceil(n_tiles / cols)
        score = abs(math.log((cols * tw) / (rows * th) / aspect)) + 0.01 * (rows * cols - n_tiles)
        if best is None or score < best[0]:
            best = (score, rows, cols)
    assert best is not None
    return best[1], best[2]


def _even(x: float) -> int:
    return max(2, int(round(x / 2.0)) * 2)


def _label(tile: np.ndarray, text: str) -> None:
    """Draw ``text`` on a dark band at the top-left of ``tile`` (in place), sized to the tile."""
    scale = max(0.35, min(tile.shape[0], tile.shape[1]) / 400.0)
    thickness = max(1, int(round(scale * 1.5)))
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
    pad = max(2, th // 3)
    y1, x1 = min(tile.shape[0], th + base + 2 * pad), min(tile.shape[1], tw + 2 * pad)
    tile[:y1, :x1] = (tile[:y1, :x1].astype(np.uint16) * 2 // 5).astype(np.uint8)
    cv2.putText(tile, text, (pad, pad + th), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), thickness, cv2.LINE_AA)


# -- legends: what the colours of a tile mean, drawn inside the tile (its size never changes) --------------
_LEGEND_MIN_SIDE = 48  # tiles smaller than this carry no legend: it would cover the prediction


def _font(tile: np.ndarray) -> tuple[float, int]:
    scale = max(0.3, min(tile.shape[0], tile.shape[1]) / 600.0)
    return scale, max(1, int(round(scale * 1.5)))


def _text(tile: np.ndarray, text: str, org: tuple[int, int], scale: float, thickness: int) -> None:
    cv2.putText(tile, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), thickness + 2, cv2.LINE_AA)
    cv2.putText(tile, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), thickness, cv2.LINE_AA)


def legend_depth(tile: np.ndarray) -> None:
    """A near -> far colour bar along the bottom of a depth tile (in place)."""
    h, w = tile.shape[:2]
    scale, thick = _font(tile)
    bar_h = max(4, h // 16)
    x0, x1 = w // 4, w - w // 4
    y1 = h - max(2, h // 40)
    y0 = y1 - bar_h
    ramp = np.linspace(0.0, 1.0, x1 - x0, dtype=np.float32)[None, :].repeat(bar_h, axis=0)
    tile[y0:y1, x0:x1] = colorize_depth(ramp)  # 0 = near, warm, as in the tile
    (tw, th), _ = cv2.getTextSize("far", cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
    (nw, _), _ = cv2.getTextSize("near", cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
    _text(tile, "near", (max(0, x0 - nw - 4), y1), scale, thick)
    _text(tile, "far", (min(w - tw, x1 + 4), y1), scale, thick)


def legend_flow(tile: np.ndarray) -> None:
    """The colour wheel of :func:`colorize_flow` in the bottom-right corner of a flow tile (in place).

    Direction is hue (a pixel moving right has the colour at the wheel's right), the centre (white) is no
    motion and the rim the tile's full-saturation magnitude.
    """
    h, w = tile.shape[:2]
    r = max(6, min(h, w) // 7)
    margin = max(2, r // 4)
    cy, cx = h - margin - r, w - margin - r
    y, x = np.mgrid[-r : r + 1, -r : r + 1].astype(np.float32)
    inside = x * x + y * y <= r * r
    wheel = colorize_flow(np.stack([x, y], axis=-1) / r, max_radius=1.0)
    region = tile[cy - r : cy + r + 1, cx - r : cx + r + 1]
    region[inside] = wheel[inside]
    cv2.circle(tile, (cx, cy), r, (0, 0, 0), 1, cv2.LINE_AA)


def legend_semantic(tile: np.ndarray, ids: Any, most: int = 6) -> None:
    """Swatches and names of the classes present, largest first (at most ``most``), at the bottom-left."""
    c = np.asarray(_values(ids))
    present = [(int(n), int(k)) for k, n in enumerate(np.bincount(c[(c >= 0) & (c < len(PALETTE))].ravel(),
                                                                   minlength=len(PALETTE))) if n]
    present.sort(reverse=True)
    h, w = tile.shape[:2]
    scale, thick = _font(tile)
    (_, th), base = cv2.getTextSize("Ag", cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
    row = th + base + 4
    y = h - 4
    for _, k in reversed(present[:most]):
        if y - row < h // 3:
            break
        x0, y0 = 4, y - th
        tile[y0 : y0 + th, x0 : x0 + th] = PALETTE[k]
        cv2.rectangle(tile, (x0, y0), (x0 + th - 1, y0 + th - 1), (0, 0, 0), 1)
        _text(tile, CLASS_NAMES[k], (x0 + th + 4, y), scale, thick)
        y -= row


def _legend(tile: np.ndarray, key: str, value: Any) -> None:
    if min(tile.shape[:2]) < _LEGEND_MIN_SIDE:
        return
    if key == TaskName.DEPTH.value:
        legend_depth(tile)
    elif key == TaskName.OPTICAL_FLOW.value:
        legend_flow(tile)
    elif key == TaskName.SEMANTIC.value:
        legend_semantic(tile, value)


def montage(
    frame: np.ndarray,
    predictions: Mapping[str, Any],
    tasks: Sequence[str | TaskName] | None = None,
    tile_width: int | None = 480,
    labels: bool = True,
    flow_max_radius: float | None = None,
    caption: str | None = None,
    legends: bool | None = None,
) -> np.ndarray:
    """One RGB picture: the input frame and every task's colour image, labelled, in a grid.

    The grid has one tile per entry of ``tasks`` whether or not a prediction is present (flows are absent
    on a stream's first frame; tasks with a rate > 1 may be missing), so every montage of a stream has the
    same size and can go to one video file; a missing prediction is a dark tile saying so.

    Args:
        frame: the input, uint8 RGB ``(H, W, 3)`` (or grey ``(H, W)``).
        predictions: task key -> array or ``Prediction`` at the frame's resolution.
        tasks: the tiles after the input, in this order; None = the keys of ``predictions`` in canonical order.
        tile_width: every tile is resized to this width (aspect kept; rounded to even sizes, which video
            codecs need); None = the frame's own size.
        labels: draw each tile's name on it.
        flow_max_radius: passed to :func:`colorize_flow` (a constant keeps a video's colours steady).
        caption: extra text drawn on the input tile after its name (e.g. an fps/latency readout).
        legends: draw what the colours mean (depth near/far bar, semantic classes present, flow colour
            wheel) inside the tiles; None = as ``labels``.

    Returns:
        uint8 RGB ``(rows * h, cols * w, 3)``.
    """
    img = np.asarray(frame)
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3 or img.shape[0] == 0 or img.shape[1] == 0:
        raise StableMTLError(
            f"montage input must be a uint8 RGB (H, W, 3) or grey (H, W) frame, got {img.dtype} {img.shape}"
        )
    keys = [get_task(t).key for t in tasks] if tasks is not None else [get_task(t).key for t in predictions]
    if tasks is None:
        keys.sort(key=lambda k: get_task(k).index)
    h, w = img.shape[:2]
    if tile_width is None:
        th, tw = _even(h), _even(w)
    else:
        tw = _even(tile_width)
        th = _even(tile_width * h / w)
    # (label, image, nearest-neighbour resize: label maps must not blend colours)
    legends = labels if legends is None else legends
    # (label, image, nearest-neighbour resize: label maps must not blend colours, task key when predicted)
    tiles: list[tuple[str, np.ndarray, bool, str | None]] = [
        ("input" + (f"  {caption}" if caption else ""), img, False, None)
    ]
    for key in keys:
        name = get_task(key).prompt
        if key in predictions:
            image = colorize(key, predictions[key], flow_max_radius)
            tiles.append((name, image, key == TaskName.SEMANTIC.value, key))
        else:
            tiles.append((f"{name} (not yet)", np.full((th, tw, 3), 32, dtype=np.uint8), True, None))
    rows, cols = montage_layout(len(tiles), (th, tw))
    canvas = np.zeros((rows * th, cols * tw, 3), dtype=np.uint8)
    for i, (name, tile, nearest, key) in enumerate(tiles):
        if tile.shape[:2] != (th, tw):
            interp = cv2.INTER_NEAREST if nearest else cv2.INTER_AREA
            tile = cv2.resize(tile, (tw, th), interpolation=interp)
        else:
            tile = tile.copy()
        if legends and key is not None:
            _legend(tile, key, predictions[key])
        if labels:
            _label(tile, name)
        r, c = divmod(i, cols)
        canvas[r * th : (r + 1) * th, c * tw : (c + 1) * tw] = tile
    return canvas
