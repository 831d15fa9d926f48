"""One labelled frame (pair): the record every data source produces, for training and evaluation alike.

Conventions (physical units; the codecs in :mod:`stablemtl_edge.tasks` turn them into training images):

- frames: uint8 RGB ``(H, W, 3)``; ``frame2`` is the next frame (t+1), present when a flow is labelled;
- ``depth``: ``(H, W)`` float32 planar depth (z) in metres;
- ``normal``: ``(H, W, 3)`` float32 unit normals in the camera frame, x right, y up, z towards the camera
  (OpenGL axes, as Hypersim ``normal_cam``; visible surfaces have z > 0);
- ``semantic``: ``(H, W)`` uint8 class ids 0..7 (``tasks.CLASS_NAMES``), 255 = ignore;
- ``optical_flow``: ``(H, W, 2)`` float32 forward flow frame1 -> frame2 in pixels (u right, v down);
- ``scene_flow``: ``(H, W, 3)`` float32 in metres, OpenCV axes (x right, y down, z forward): the frame-1
  point's coordinates in camera 2 minus its coordinates in camera 1 (ego-motion included), so that
  projecting ``X1 + scene_flow`` with the intrinsics lands on the pixel plus its optical flow;
- ``albedo``: ``(H, W, 3)`` float32 in [0, 1]; ``shading``: ``(H, W)`` float32 grey in [0, 1].

Every label carries a ``(H, W)`` bool validity mask. numpy only.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import StableMTLError
from ..tasks import TaskName, get_task

__all__ = ["Label", "Sample"]


@dataclass(frozen=True)
class Label:
    """A task's ground truth in physical units and where it is valid."""

    value: np.ndarray
    valid: np.ndarray


@dataclass
class Sample:
    """Frames plus the labels a source provides for them.

    Attributes:
        frame1: uint8 RGB ``(H, W, 3)``.
        frame2: uint8 RGB ``(H, W, 3)`` at t+1, or None when no flow is labelled.
        labels: task key -> :class:`Label`; sources label only some tasks.
        domain: source name (``"indoor"``, ``"hypersim"``, ``"cityscapes"`` ...).
        name: identifier used in messages (file path or seed).
        intrinsics: 3x3 pinhole matrix of frame 1 when known.
    """

    frame1: np.ndarray
    frame2: np.ndarray | None
    labels: dict[str, Label]
    domain: str
    name: str = ""
    intrinsics: np.ndarray | None = field(default=None, repr=False)

    def label(self, task: str | TaskName) -> Label:
        key = get_task(task).key
        try:
            return self.labels[key]
        except KeyError:
            have = ", ".join(self.labels) or "none"
            raise StableMTLError(f"sample `{self.name}` ({self.domain}) has no `{key}` label (it has: {have})") from None

    def encode(self, task: str | TaskName) -> tuple[np.ndarray, np.ndarray]:
        """The task's 3-channel training image in [-1, 1] and its validity, through the task codec."""
        spec = get_task(task)
        lab = self.label(spec.key)
        return spec.codec.encode(lab.value, lab.valid)
