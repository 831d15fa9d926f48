"""Camera frames in, network frames out, and back: pixel layouts and the letterbox of the manifest.

A frame of any size is resized with its aspect ratio kept to fit the artifact's processing size
``H x W`` and padded by edge replication at the bottom/right (``manifest.preprocess``); a prediction at
``H x W`` is cropped to the resized region and resized to the frame's size. numpy + OpenCV only.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from ..errors import StableMTLError
from ..records import KeyEnum

__all__ = ["Layout", "Letterbox", "to_rgb", "parse_layout"]


class Layout(KeyEnum):
    """Pixel layout of a uint8 camera frame."""

    RGB = "rgb"
    BGR = "bgr"
    RGBA = "rgba"
    BGRA = "bgra"
    GRAY = "gray"


_CHANNELS = {Layout.RGB: 3, Layout.BGR: 3, Layout.RGBA: 4, Layout.BGRA: 4, Layout.GRAY: 1}
_TO_RGB = {
    Layout.BGR: cv2.COLOR_BGR2RGB,
    Layout.RGBA: cv2.COLOR_RGBA2RGB,
    Layout.BGRA: cv2.COLOR_BGRA2RGB,
    Layout.GRAY: cv2.COLOR_GRAY2RGB,
}


def parse_layout(layout: Layout | str) -> Layout:
    if isinstance(layout, Layout):
        return layout
    key = str(layout).strip().lower()
    if key == "grey":
        key = "gray"
    try:
        return Layout(key)
    except ValueError:
        valid = ", ".join(m.value for m in Layout)
        raise StableMTLError(f"unknown frame layout `{layout}`: choose from {valid}") from None


def to_rgb(frame: object, layout: Layout | str = Layout.RGB, name: str = "frame") -> np.ndarray:
    """Check a camera frame and return it as contiguous uint8 RGB ``(H, W, 3)``.

    An RGB frame that is already contiguous is returned as is (no copy).
    """
    layout = parse_layout(layout)
    if not isinstance(frame, np.ndarray):
        raise StableMTLError(f"`{name}` must be a numpy array, got {type(frame).__name__}")
    if frame.dtype != np.uint8:
        raise StableMTLError(
            f"`{name}` must be uint8 (0..255), got {frame.dtype}; convert it with "
            "`np.clip(x * 255, 0, 255).astype(np.uint8)` for images in [0, 1]"
        )
    want = _CHANNELS[layout]
    if frame.ndim == 3 and layout is Layout.GRAY and frame.shape[2] == 1:
        frame = frame[..., 0]
    ok = frame.ndim == 2 if want == 1 else (frame.ndim == 3 and frame.shape[2] == want)
    if not ok:
        expected = "(H, W) or (H, W, 1)" if want == 1 else f"(H, W, {want})"
        raise StableMTLError(
            f"`{name}` has shape {frame.shape} but layout `{layout.value}` needs {expected}; "
            "pass the right `layout` (rgb, bgr, rgba, bgra, gray)"
        )
    if frame.shape[0] < 1 or frame.shape[1] < 1:
        raise StableMTLError(f"`{name}` is empty (shape {frame.shape})")
    if layout is Layout.RGB:
        return np.ascontiguousarray(frame)
    return cv2.cvtColor(np.ascontiguousarray(frame), _TO_RGB[layout])


@dataclass(frozen=True)
class Letterbox:
    """Geometry between a camera frame ``(src_h, src_w)`` and the processing size ``(height, width)``.

    ``inner_h x inner_w`` is the resized frame in the top-left corner; the rest is edge padding.
    """

    src_h: int
    src_w: int
    height: int
    width: int
    inner_h: int
    inner_w: int

    @classmethod
    def fit(cls, src_hw: tuple[int, int], dst_hw: tuple[int, int]) -> Letterbox:
        """The largest aspect-preserving size of ``src_hw`` that fits ``dst_hw``."""
        sh, sw = int(src_hw[0]), int(src_hw[1])
        h, w = int(dst_hw[0]), int(dst_hw[1])
        scale = min(h / sh, w / sw)
        ih = min(h, max(1, int(round(sh * scale))))
        iw = min(w, max(1, int(round(sw * scale))))
        return cls(sh, sw, h, w, ih, iw)

    @property
    def identity(self) -> bool:
        return (self.src_h, self.src_w) == (self.height, self.width)

    def apply(self, rgb: np.ndarray) -> np.ndarray:
        """uint8 ``(src_h, src_w, C)`` -> uint8 ``(height, width, C)`` (resize, then edge padding)."""
        if rgb.shape[:2] != (self.src_h, self.src_w):
            raise StableMTLError(f"frame of shape {rgb.shape} given to a letterbox for {self.src_h}x{self.src_w}")
        if self.identity:
            return rgb
        shrink = self.inner_h < self.src_h or self.inner_w < self.src_w
        inner = cv2.resize(
            rgb, (self.inner_w, self.inner_h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
        )
        if (self.inner_h, self.inner_w) == (self.height, self.width):
            return inner
        return cv2.copyMakeBorder(
            inner, 0, self.height - self.inner_h, 0, self.width - self.inner_w, cv2.BORDER_REPLICATE
        )

    @property
    def resampled(self) -> bool:
        """True when predictions are resized on the way back (not only cropped)."""
        return (self.inner_h, self.inner_w) != (self.src_h, self.src_w)

    def crop(self, value: np.ndarray) -> np.ndarray:
        """``(height, width, ...)`` -> the resized frame's region ``(inner_h, inner_w, ...)`` (a view)."""
        return value[: self.inner_h, : self.inner_w]

    def resize_back(self, value: np.ndarray, nearest: bool = False) -> np.ndarray:
        """A cropped ``(inner_h, inner_w[, C])`` array -> ``(src_h, src_w[, C])``.

        Args:
            value: float32 or uint8 array, channels last (at most 4 channels).
            nearest: nearest-neighbour resampling (class ids); otherwise bilinear.
        """
        if not self.resampled:
            return value if value.flags.c_contiguous else np.ascontiguousarray(value)
        out = cv2.resize(
            value, (self.src_w, self.src_h), interpolation=cv2.INTER_NEAREST if nearest else cv2.INTER_LINEAR
        )
        if value.ndim == 3 and out.ndim == 2:  # OpenCV drops a trailing channel axis of size 1
            out = out[..., None]
        return out

    def restore(self, value: np.ndarray, nearest: bool = False) -> np.ndarray:
        """A prediction at ``(height, width[, C])`` -> cropped and resized to ``(src_h, src_w[, C])``."""
        if self.identity:
            return value
        return self.resize_back(self.crop(value), nearest)
