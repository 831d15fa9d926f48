"""What the runtime hands back: one typed record per task and one per frame.

Values are in the task's physical meaning at the *camera's* resolution (the letterbox used for the
network is undone before a :class:`Prediction` is built), so a caller never needs to know the artifact's
processing size.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["Prediction", "FrameResult"]


@dataclass(frozen=True)
class Prediction:
    """One task's output for one frame.

    Attributes:
        task: task key (``tasks.TASK_NAMES``).
        value: the prediction at the camera's resolution ``(H, W)``; per task:

            - ``depth``: float32 ``(H, W)`` relative depth in [0, 1] (affine-invariant, not metric);
            - ``normal``: float32 ``(H, W, 3)`` unit vectors, camera frame x right, y up, z towards camera;
            - ``semantic``: uint8 ``(H, W)`` class ids 0..7 (``tasks.CLASS_NAMES``);
            - ``optical_flow``: float32 ``(H, W, 2)`` forward flow from frame t-1 to frame t at frame
              t-1's pixels, normalised units (u, v each in [-1, 1]);
            - ``scene_flow``: float32 ``(H, W, 3)`` normalised units;
            - ``albedo``: float32 ``(H, W, 3)`` in [0, 1]; ``shading``: float32 ``(H, W)`` in [0, 1].
        frame_index: index of the (newest) frame the value was computed from; with a task rate above 1
            it can be older than the frame it is reported with.
    """

    task: str
    value: np.ndarray
    frame_index: int


@dataclass(frozen=True)
class FrameResult:
    """Everything :meth:`Runtime.infer` produced for one frame.

    Attributes:
        frame_index: 0-based index of the frame in the stream.
        predictions: task key -> :class:`Prediction`, for the tasks computed this frame or still valid
            from an earlier one (rates > 1); flow tasks are absent on the very first frame.
        timings_ms: wall time per stage in milliseconds: ``preprocess``, ``encoder``, ``unet``,
            ``unet_main``, ``decoder``, ``postprocess`` and ``total`` (stages that did not run are 0).
    """

    frame_index: int
    predictions: dict[str, Prediction]
    timings_ms: dict[str, float] = field(default_factory=dict)

    def __getitem__(self, task: str) -> np.ndarray:
        """``result["depth"]`` is the depth value (a shortcut for ``result.predictions["depth"].value``)."""
        return self.predictions[task].value

    def __contains__(self, task: object) -> bool:
        return task in self.predictions
