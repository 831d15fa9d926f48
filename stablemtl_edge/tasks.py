"""The seven StableMTL tasks: canonical order, prompts, frame counts and label <-> image codecs.

Every conversion between a task's label (physical units) and the 3-channel image in [-1, 1] that the VAE
sees goes through the codecs here, in training, export, evaluation and the runtime alike. numpy only.

Layouts: images and labels are ``(H, W, C)`` float arrays (channels last); masks are ``(H, W)`` bool.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from .errors import StableMTLError
from .records import KeyEnum

__all__ = [
    "TaskName",
    "TaskSpec",
    "Codec",
    "TASKS",
    "TASK_NAMES",
    "NUM_TASKS",
    "NUM_CLASSES",
    "IGNORE_ID",
    "CLASS_NAMES",
    "PALETTE",
    "get_task",
    "parse_tasks",
]

NUM_CLASSES = 8
IGNORE_ID = 255
CLASS_NAMES = ("road", "building", "pole", "traffic light", "traffic sign", "vegetation", "sky", "vehicle")
# Cityscapes colours of the 8 classes, class id = row.
PALETTE = np.array(
    [
        (128, 64, 128),
        (70, 70, 70),
        (153, 153, 153),
        (250, 170, 30),
        (220, 220, 0),
        (107, 142, 35),
        (70, 130, 180),
        (0, 0, 142),
    ],
    dtype=np.uint8,
)
_PALETTE_SIGNED = PALETTE.astype(np.float32) / 127.5 - 1.0  # [8, 3] in [-1, 1]
_EPS = 1e-6


class TaskName(KeyEnum):
    """Task names; the value is the key used in files, CLIs, manifests and ROS parameters."""

    NORMAL = "normal"
    DEPTH = "depth"
    SEMANTIC = "semantic"
    OPTICAL_FLOW = "optical_flow"
    SCENE_FLOW = "scene_flow"
    ALBEDO = "albedo"
    SHADING = "shading"


def _as_image(x: np.ndarray, name: str) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 3 or x.shape[2] != 3:
        raise StableMTLError(f"`{name}` must have shape (H, W, 3), got {x.shape}")
    return x


def _as_mask(valid: np.ndarray | None, shape: tuple[int, int]) -> np.ndarray:
    if valid is None:
        return np.ones(shape, dtype=bool)
    valid = np.asarray(valid, dtype=bool)
    if valid.shape != shape:
        raise StableMTLError(f"`valid` must have shape {shape}, got {valid.shape}")
    return valid


def _max_abs_normalise(x: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Divide every channel by its max |value| over valid pixels (per image, per axis)."""
    out = np.zeros_like(x, dtype=np.float32)
    for c in range(x.shape[2]):
        ch = x[..., c]
        scale = float(np.abs(ch[valid]).max()) if valid.any() else 0.0
        out[..., c] = ch / max(scale, _EPS)
    out[~valid] = 0.0
    return np.clip(out, -1.0, 1.0)


class Codec(ABC):
    """Converts a task label to the 3-channel training image and a decoded image back to a prediction."""

    @abstractmethod
    def encode(self, label: np.ndarray, valid: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Label in physical units -> (image ``(H, W, 3)`` float32 in [-1, 1], valid ``(H, W)`` bool).

        Invalid pixels (given, or non-finite in the label) are marked in the returned mask; their image
        value is a neutral constant that the masked loss ignores.
        """

    @abstractmethod
    def decode(self, image: np.ndarray) -> np.ndarray:
        """Decoded image ``(H, W, 3)`` (clipped to [-1, 1] here first) -> the task's prediction."""


class DepthCodec(Codec):
    """Affine-invariant depth: 2%/98% quantiles of valid depth map to -1/+1; decodes to [0, 1]."""

    low_quantile = 0.02
    high_quantile = 0.98

    def encode(self, label, valid=None):
        depth = np.asarray(label, dtype=np.float32)
        if depth.ndim == 3 and depth.shape[2] == 1:
            depth = depth[..., 0]
        if depth.ndim != 2:
            raise StableMTLError(f"depth label must have shape (H, W), got {depth.shape}")
        valid = _as_mask(valid, depth.shape) & np.isfinite(depth) & (depth > 0)
        image = np.zeros(depth.shape + (3,), dtype=np.float32)
        if valid.any():
            lo, hi = np.quantile(depth[valid], [self.low_quantile, self.high_quantile])
            norm = (depth - lo) / max(float(hi - lo), _EPS) * 2.0 - 1.0
            norm = np.where(valid, np.clip(norm, -1.0, 1.0), 0.0)
            image[:] = norm[..., None]
        return image, valid

    def decode(self, image):
        x = np.clip(_as_image(image, "image"), -1.0, 1.0)
        return ((x.mean(axis=2) + 1.0) * 0.5).astype(np.float32)  # (H, W) relative depth in [0, 1]


class NormalCodec(Codec):
    """Unit camera-frame normals used directly as RGB; decode renormalises per pixel."""

    def encode(self, label, valid=None):
        n = _as_image(label, "normal label")
        norm = np.linalg.norm(n, axis=2)
        valid = _as_mask(valid, n.shape[:2]) & np.isfinite(n).all(axis=2) & (norm > 0.5)
        image = np.where(valid[..., None], np.clip(n / np.maximum(norm, _EPS)[..., None], -1, 1), 0.0)
        return image.astype(np.float32), valid

    def decode(self, image):
        x = np.clip(_as_image(image, "image"), -1.0, 1.0)
        norm = np.linalg.norm(x, axis=2, keepdims=True)
        return (x / np.maximum(norm, _EPS)).astype(np.float32)  # (H, W, 3) unit vectors


class SemanticCodec(Codec):
    """Class ids drawn in the fixed Cityscapes palette; decode picks the nearest palette colour."""

    def encode(self, label, valid=None):
        ids = np.asarray(label)
        if ids.ndim != 2:
            raise StableMTLError(f"semantic label must have shape (H, W) of class ids, got {ids.shape}")
        valid = _as_mask(valid, ids.shape) & (ids >= 0) & (ids < NUM_CLASSES)
        image = np.full(ids.shape + (3,), -1.0, dtype=np.float32)
        image[valid] = _PALETTE_SIGNED[ids[valid].astype(np.int64)]
        return image, valid

    def decode(self, image):
        x = np.clip(_as_image(image, "image"), -1.0, 1.0)
        # |x - p|^2 = |x|^2 - 2 x.p + |p|^2; |x|^2 is the same for every p.
        score = x @ (-2.0 * _PALETTE_SIGNED.T) + (_PALETTE_SIGNED**2).sum(axis=1)
        return score.argmin(axis=2).astype(np.uint8)  # (H, W) class ids


class OpticalFlowCodec(Codec):
    """Flow in pixels, u and v each divided by their max |value|; laid out as channels [u, v, u]."""

    def encode(self, label, valid=None):
        flow = np.asarray(label, dtype=np.float32)
        if flow.ndim != 3 or flow.shape[2] != 2:
            raise StableMTLError(f"optical flow label must have shape (H, W, 2), got {flow.shape}")
        valid = _as_mask(valid, flow.shape[:2]) & np.isfinite(flow).all(axis=2)
        uv = _max_abs_normalise(np.where(valid[..., None], flow, 0.0), valid)
        return np.concatenate([uv, uv[..., :1]], axis=2), valid

    def decode(self, image):
        x = np.clip(_as_image(image, "image"), -1.0, 1.0)
        return np.ascontiguousarray(x[..., :2])  # (H, W, 2) normalised units


class SceneFlowCodec(Codec):
    """3-D motion in metres, each axis divided by its max |value|."""

    def encode(self, label, valid=None):
        sf = _as_image(label, "scene flow label")
        valid = _as_mask(valid, sf.shape[:2]) & np.isfinite(sf).all(axis=2)
        return _max_abs_normalise(np.where(valid[..., None], sf, 0.0), valid), valid

    def decode(self, image):
        return np.clip(_as_image(image, "image"), -1.0, 1.0)  # (H, W, 3) normalised units


class AlbedoCodec(Codec):
    """Reflectance in [0, 1] mapped linearly to [-1, 1]."""

    def encode(self, label, valid=None):
        a = _as_image(label, "albedo label")
        valid = _as_mask(valid, a.shape[:2]) & np.isfinite(a).all(axis=2)
        image = np.where(valid[..., None], np.clip(a, 0.0, 1.0) * 2.0 - 1.0, 0.0)
        return image.astype(np.float32), valid

    def decode(self, image):
        x = np.clip(_as_image(image, "image"), -1.0, 1.0)
        return ((x + 1.0) * 0.5).astype(np.float32)  # (H, W, 3) in [0, 1]


class ShadingCodec(Codec):
    """Grey shading in [0, 1] (RGB input is reduced with 0.3 R + 0.59 G + 0.11 B), copied to 3 channels."""

    def encode(self, label, valid=None):
        s = np.asarray(label, dtype=np.float32)
        if s.ndim == 3 and s.shape[2] == 3:
            s = s @ np.array([0.3, 0.59, 0.11], dtype=np.float32)
        elif s.ndim == 3 and s.shape[2] == 1:
            s = s[..., 0]
        if s.ndim != 2:
            raise StableMTLError(f"shading label must have shape (H, W) or (H, W, 3), got {s.shape}")
        valid = _as_mask(valid, s.shape) & np.isfinite(s)
        grey = np.where(valid, np.clip(s, 0.0, 1.0) * 2.0 - 1.0, 0.0)
        return np.repeat(grey[..., None], 3, axis=2).astype(np.float32), valid

    def decode(self, image):
        x = np.clip(_as_image(image, "image"), -1.0, 1.0)
        return ((x.mean(axis=2) + 1.0) * 0.5).astype(np.float32)  # (H, W) in [0, 1]


@dataclass(frozen=True)
class TaskSpec:
    """One task of the registry.

    Attributes:
        name: the task's enum member; ``name.value`` is its key everywhere.
        index: position in the canonical order (the task id fed to exported graphs).
        frames: 1, or 2 for the flows (frames t and t+1).
        prompt: text whose CLIP embedding conditions the UNet (underscore -> space).
        codec: label <-> image conversion.
    """

    name: TaskName
    index: int
    frames: int
    prompt: str
    codec: Codec

    @property
    def key(self) -> str:
        return self.name.value

    def __str__(self) -> str:
        return self.name.value


_CODECS: dict[TaskName, Codec] = {
    TaskName.NORMAL: NormalCodec(),
    TaskName.DEPTH: DepthCodec(),
    TaskName.SEMANTIC: SemanticCodec(),
    TaskName.OPTICAL_FLOW: OpticalFlowCodec(),
    TaskName.SCENE_FLOW: SceneFlowCodec(),
    TaskName.ALBEDO: AlbedoCodec(),
    TaskName.SHADING: ShadingCodec(),
}
_TWO_FRAME = {TaskName.OPTICAL_FLOW, TaskName.SCENE_FLOW}

TASKS: tuple[TaskSpec, ...] = tuple(
    TaskSpec(
        name=name,
        index=i,
        frames=2 if name in _TWO_FRAME else 1,
        prompt=name.value.replace("_", " "),
        codec=_CODECS[name],
    )
    for i, name in enumerate(TaskName)
)
TASK_NAMES: tuple[str, ...] = tuple(t.key for t in TASKS)
NUM_TASKS = len(TASKS)
_BY_KEY = {t.key: t for t in TASKS}


def get_task(name: str | TaskName | TaskSpec) -> TaskSpec:
    """Look a task up by key (``"optical_flow"``, also accepted as ``"optical-flow"``) or enum member."""
    if isinstance(name, TaskSpec):
        return name
    key = name.value if isinstance(name, TaskName) else str(name).strip().lower().replace("-", "_")
    try:
        return _BY_KEY[key]
    except KeyError:
        raise StableMTLError(
            f"unknown task `{name}`: valid tasks are {', '.join(TASK_NAMES)}"
        ) from None


def parse_tasks(names: str | Iterable[str | TaskName | TaskSpec] | None) -> tuple[TaskSpec, ...]:
    """Parse a task list (comma-separated string, iterable, ``"all"`` or None = all) into canonical order."""
    if names is None:
        return TASKS
    if isinstance(names, str):
        if names.strip().lower() == "all":
            return TASKS
        names = [n for n in names.split(",") if n.strip()]
    names = list(names) if isinstance(names, Iterable) else names
    if not isinstance(names, list) or not all(isinstance(n, (str, TaskSpec)) for n in names):
        raise StableMTLError(
            f"tasks must be task names (a list or a comma-separated string) or `all`, got {names!r}: "
            f"choose from {', '.join(TASK_NAMES)}"
        )
    specs = {get_task(n).index: get_task(n) for n in names}
    if not specs:
        raise StableMTLError(f"the task list is empty: choose from {', '.join(TASK_NAMES)} or `all`")
    return tuple(specs[i] for i in sorted(specs))
