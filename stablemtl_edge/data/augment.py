"""Label-aware augmentation and resizing of :class:`~stablemtl_edge.data.sample.Sample` records.

Geometry changes must change the labels consistently: a horizontal flip mirrors every map and negates
the x components of normals, optical flow and scene flow (and moves the principal point); a vertical flip
negates the y components. Resizing scales optical flow with the image, keeps metric labels (depth, scene
flow) unchanged, resamples class ids and validity masks with nearest neighbour, and resamples continuous
labels with their validity as weights so invalid pixels never leak into valid ones.

The recipe (DESIGN.md section 2) is :class:`Augmentation`: horizontal flip for every task, vertical flip
for FlyingThings3D (and its procedural stand-in) flows, colour jitter on flow data with the same
parameters on both frames so brightness constancy holds. numpy + OpenCV.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import cv2
import numpy as np

from ..errors import StableMTLError
from .sample import Label, Sample
from ..tasks import TaskName, get_task

__all__ = ["hflip", "vflip", "color_jitter", "resize_sample", "Augmentation", "FLYING_DOMAINS", "NEAREST_TASKS"]

FLYING_DOMAINS = frozenset({"flyingthings3d", "flying"})
# Labels resampled by nearest neighbour: class ids, and depth, where averaging across an occlusion edge
# would invent a surface between foreground and background.
NEAREST_TASKS = frozenset({"semantic", "depth"})
_X_SIGNED = {"normal": 0, "optical_flow": 0, "scene_flow": 0}  # component negated by a horizontal flip
_Y_SIGNED = {"normal": 1, "optical_flow": 1, "scene_flow": 1}  # ... by a vertical flip
_GREY = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def _flip(sample: Sample, axis: int, signed: dict[str, int]) -> Sample:
    labels = {}
    for key, lab in sample.labels.items():
        value = np.flip(lab.value, axis=axis).copy()
        if key in signed:
            # Normals use OpenGL axes (y up), flows and scene flow image/OpenCV axes (y down); a mirror
            # negates the component along the mirrored axis in both conventions.
            value[..., signed[key]] *= -1.0
        labels[key] = Label(value, np.flip(lab.valid, axis=axis).copy())
    f1 = np.flip(sample.frame1, axis=axis).copy()
    f2 = None if sample.frame2 is None else np.flip(sample.frame2, axis=axis).copy()
    K = sample.intrinsics
    if K is not None:
        K = K.copy()
        size = sample.frame1.shape[axis]  # axis 1 (columns) -> width, axis 0 (rows) -> height
        row = 0 if axis == 1 else 1
        K[row, 2] = size - 1 - K[row, 2]
    return replace(sample, frame1=f1, frame2=f2, labels=labels, intrinsics=K)


def hflip(sample: Sample) -> Sample:
    """Mirror left-right: maps flipped, x of normals / optical flow / scene flow negated."""
    return _flip(sample, 1, _X_SIGNED)


def vflip(sample: Sample) -> Sample:
    """Mirror top-bottom: maps flipped, y of normals / optical flow / scene flow negated."""
    return _flip(sample, 0, _Y_SIGNED)


def color_jitter(sample: Sample, brightness: float, contrast: float, saturation: float) -> Sample:
    """Apply one colour transform (factors around 1) to frame 1 and, identically, frame 2.

    The contrast pivot is frame 1's mean grey for both frames, so the two frames see the same affine map.
    """
    pivot = float((sample.frame1.astype(np.float32) @ _GREY).mean())

    def apply(frame: np.ndarray) -> np.ndarray:
        x = frame.astype(np.float32) * brightness
        x = (x - pivot * brightness) * contrast + pivot * brightness
        grey = (x @ _GREY)[..., None]
        x = grey + (x - grey) * saturation
        return np.clip(np.rint(x), 0, 255).astype(np.uint8)

    f2 = None if sample.frame2 is None else apply(sample.frame2)
    return replace(sample, frame1=apply(sample.frame1), frame2=f2)


def _resize_image(x: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    H, W = x.shape[:2]
    interp = cv2.INTER_AREA if size[0] < H and size[1] < W else cv2.INTER_LINEAR
    return cv2.resize(x, (size[1], size[0]), interpolation=interp)


def _resize_nearest(x: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    return cv2.resize(x, (size[1], size[0]), interpolation=cv2.INTER_NEAREST)


def _resize_masked(value: np.ndarray, valid: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Resample ``value`` weighted by ``valid``; a result is valid where every source pixel under it was."""
    v = np.where(valid[..., None] if value.ndim == 3 else valid, value, 0.0).astype(np.float32)
    w = valid.astype(np.float32)
    num = _resize_image(v, size)
    den = _resize_image(w, size)
    if num.ndim == 2 and value.ndim == 3:
        num = num[..., None]
    new_valid = den > 0.999
    out = num / np.maximum(den, 1e-6)[..., None] if num.ndim == 3 else num / np.maximum(den, 1e-6)
    out = np.where(new_valid[..., None] if out.ndim == 3 else new_valid, out, 0.0)
    return out.astype(np.float32), new_valid


def resize_sample(sample: Sample, size: tuple[int, int]) -> Sample:
    """Resize frames and labels to ``(height, width)``, treating each label by its kind.

    Optical flow is rescaled to the new pixel units; normals are renormalised; intrinsics follow.
    """
    h, w = (int(s) for s in size)
    if h < 1 or w < 1:
        raise StableMTLError(f"resize target must be positive (height, width), got {size}")
    H, W = sample.frame1.shape[:2]
    if (h, w) == (H, W):
        return sample
    sx, sy = w / W, h / H
    labels = {}
    for key, lab in sample.labels.items():
        if key in NEAREST_TASKS:
            value = _resize_nearest(np.ascontiguousarray(lab.value), (h, w))
            valid = _resize_nearest(lab.valid.astype(np.uint8), (h, w)).astype(bool)
        else:
            value, valid = _resize_masked(lab.value, lab.valid, (h, w))
            if key == "optical_flow":
                value = value * np.array([sx, sy], dtype=np.float32)
            elif key == "normal":
                norm = np.linalg.norm(value, axis=-1, keepdims=True)
                valid &= norm[..., 0] > 0.5
                value = np.where(valid[..., None], value / np.maximum(norm, 1e-6), 0.0).astype(np.float32)
        labels[key] = Label(value, valid)
    K = sample.intrinsics
    if K is not None:
        K = K.astype(np.float32).copy()
        K[0, 0] *= sx
        K[1, 1] *= sy
        K[0, 2] = (K[0, 2] + 0.5) * sx - 0.5
        K[1, 2] = (K[1, 2] + 0.5) * sy - 0.5
    f2 = None if sample.frame2 is None else _resize_image(sample.frame2, (h, w))
    return replace(sample, frame1=_resize_image(sample.frame1, (h, w)), frame2=f2, labels=labels, intrinsics=K)


@dataclass(frozen=True)
class Augmentation:
    """The training recipe's augmentation, applied per (sample, task).

    Attributes:
        hflip_prob: probability of a horizontal flip (every task).
        vflip_prob: probability of a vertical flip, for flow tasks of FlyingThings3D-like domains only.
        jitter_prob: probability of colour jitter, for flow tasks only.
        brightness, contrast, saturation: jitter factors are drawn uniformly in ``[1 - x, 1 + x]``.
    """

    hflip_prob: float = 0.5
    vflip_prob: float = 0.5
    jitter_prob: float = 0.8
    brightness: float = 0.2
    contrast: float = 0.2
    saturation: float = 0.2

    def __post_init__(self) -> None:
        for name in ("hflip_prob", "vflip_prob", "jitter_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise StableMTLError(f"{name} must be a probability in [0, 1], got {getattr(self, name)}")
        for name in ("brightness", "contrast", "saturation"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise StableMTLError(f"{name} must be in [0, 1), got {getattr(self, name)}")

    def __call__(self, sample: Sample, task: str | TaskName, rng: np.random.Generator) -> Sample:
        spec = get_task(task)
        flow = spec.frames == 2
        if rng.random() < self.hflip_prob:
            sample = hflip(sample)
        if flow and sample.domain in FLYING_DOMAINS and rng.random() < self.vflip_prob:
            sample = vflip(sample)
        if flow and rng.random() < self.jitter_prob:
            b, c, s = (float(rng.uniform(1 - x, 1 + x)) for x in (self.brightness, self.contrast, self.saturation))
            sample = color_jitter(sample, b, c, s)
        return sample
