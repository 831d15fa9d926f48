"""Which image topics a prediction becomes, in which encoding: one table for the live node and for bags.

Topic names are relative (the node puts them under its private namespace ``~/``, bag processing under a
prefix such as ``/stablemtl``). Encodings follow REP 118; depth follows REP 117 (32FC1, NaN where there is
no value) but is *relative* depth in [0, 1], never metres, hence the topic name ``depth/relative``.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Generic, TypeVar

import numpy as np

from ...errors import StableMTLError
from ...tasks import TaskName, parse_tasks
from .. import visualize
from ..prediction import FrameResult, Prediction
from .image_conversions import ImageEncoding
from ...records import KeyEnum

__all__ = ["AlbedoEncoding", "OutputOptions", "OutputTopic", "output_topics", "FreshPredictions"]


class AlbedoEncoding(KeyEnum):
    """``32FC3``: linear albedo in [0, 1] as floats; ``rgb8``: the same scaled to 0..255 for viewers."""

    FLOAT32 = "32FC3"
    RGB8 = "rgb8"

    @classmethod
    def parse(cls, value: str | AlbedoEncoding) -> AlbedoEncoding:
        """Case-insensitive lookup (``32fc3`` = ``32FC3``), naming the valid values on failure."""
        for member in cls:
            if str(value).strip().lower() == member.value.lower():
                return member
        raise StableMTLError(f"unknown albedo encoding `{value}`: choose from {', '.join(m.value for m in cls)}")


@dataclass(frozen=True)
class OutputOptions:
    """Optional topics and encodings.

    Attributes:
        semantic_color: also publish ``semantic/color`` (rgb8, Cityscapes palette) beside the class ids.
        albedo_encoding: encoding of the ``albedo`` topic.
        debug: also publish ``debug/<task>``, a colourised rgb8 picture of every task for rviz/rqt.
    """

    semantic_color: bool = True
    albedo_encoding: AlbedoEncoding = AlbedoEncoding.FLOAT32
    debug: bool = False


@dataclass(frozen=True)
class OutputTopic:
    """One published image stream of one task.

    Attributes:
        task: task key.
        name: topic name relative to the node's namespace or the bag's prefix.
        encoding: ``sensor_msgs/Image`` encoding.
        description: one line for docs and ``--help``: content, units and range.
        convert: prediction value -> array in the encoding's pixel type and channel count.
    """

    task: str
    name: str
    encoding: ImageEncoding
    description: str
    convert: Callable[[np.ndarray], np.ndarray]


def _float32(value: np.ndarray) -> np.ndarray:
    return np.asarray(value, dtype=np.float32)


def _depth(value: np.ndarray) -> np.ndarray:
    d = np.asarray(value, dtype=np.float32)
    return np.where(np.isfinite(d), d, np.float32(np.nan))  # REP 117: no value is NaN, never 0


def _class_ids(value: np.ndarray) -> np.ndarray:
    return np.asarray(value, dtype=np.uint8)


_F1, _F2, _F3 = ImageEncoding.TYPE_32FC1, ImageEncoding.TYPE_32FC2, ImageEncoding.TYPE_32FC3
# task -> (topic, encoding, description, conversion) of its primary topic.
_PRIMARY: dict[TaskName, tuple[str, ImageEncoding, str, Callable[[np.ndarray], np.ndarray]]] = {
    TaskName.NORMAL: ("normal", _F3, "unit surface normals, camera frame: x right, y up, z to camera", _float32),
    TaskName.DEPTH: (
        "depth/relative",
        _F1,
        "relative depth in [0, 1] (0 = near), affine-invariant: NOT metres; NaN = no value",
        _depth,
    ),
    TaskName.SEMANTIC: (
        "semantic",
        ImageEncoding.MONO8,
        "class ids 0..7: road, building, pole, traffic light, traffic sign, vegetation, sky, vehicle",
        _class_ids,
    ),
    TaskName.OPTICAL_FLOW: (
        "optical_flow",
        _F2,
        "forward flow (u right, v down) from the previous processed frame, normalised units in [-1, 1]",
        _float32,
    ),
    TaskName.SCENE_FLOW: (
        "scene_flow",
        _F3,
        "3-D motion since the previous processed frame, each axis in normalised units [-1, 1]",
        _float32,
    ),
    TaskName.ALBEDO: ("albedo", _F3, "reflectance, linear RGB in [0, 1]", _float32),
    TaskName.SHADING: ("shading", _F1, "grey shading in [0, 1]", _float32),
}


def _primary(task: TaskName, options: OutputOptions) -> OutputTopic:
    if task is TaskName.ALBEDO and options.albedo_encoding is AlbedoEncoding.RGB8:
        rgb = visualize.colorize_albedo
        return OutputTopic(task.value, "albedo", ImageEncoding.RGB8, "reflectance, RGB 0..255", rgb)
    name, encoding, description, convert = _PRIMARY[task]
    return OutputTopic(task.value, name, encoding, description, convert)


def output_topics(
    tasks: str | Iterable[str] | None, options: OutputOptions = OutputOptions()
) -> tuple[OutputTopic, ...]:
    """The topics published for ``tasks`` (canonical task order; primary topic first, then its extras)."""
    topics: list[OutputTopic] = []
    for spec in parse_tasks(tasks):
        topics.append(_primary(spec.name, options))
        if spec.name is TaskName.SEMANTIC and options.semantic_color:
            topics.append(
                OutputTopic(
                    spec.key,
                    "semantic/color",
                    ImageEncoding.RGB8,
                    "class ids drawn in the Cityscapes palette",
                    visualize.colorize_semantic,
                )
            )
        if options.debug:
            topics.append(
                OutputTopic(
                    spec.key,
                    f"debug/{spec.key}",
                    ImageEncoding.RGB8,
                    f"colourised {spec.key} for viewing (stablemtl_edge.runtime.visualize)",
                    lambda value, task=spec.key: visualize.colorize(task, value),
                )
            )
    return tuple(topics)


Meta = TypeVar("Meta")


class FreshPredictions(Generic[Meta]):
    """Picks the predictions of a frame result that are new, paired with the input they were computed from.

    With task rates above 1 a :class:`FrameResult` repeats older predictions; re-publishing them would
    send a stale picture under a new stamp, so each prediction goes out once, with the metadata (header,
    bag timestamp) of the frame its ``frame_index`` names.

    Args:
        history: how many recent frames' metadata to keep (must cover the largest task rate).
    """

    def __init__(self, history: int = 64) -> None:
        self._history = max(int(history), 2)
        self._meta: OrderedDict[int, Meta] = OrderedDict()
        self._sent: dict[str, int] = {}

    def add_frame(self, frame_index: int, meta: Meta) -> None:
        """Remember the input metadata of the frame the runtime numbered ``frame_index``.

        An index that does not grow means the runtime restarted its stream (a new frame size, ``reset()``):
        everything from the old stream is forgotten.
        """
        if self._meta and frame_index <= next(reversed(self._meta)):
            self.reset()
        self._meta[frame_index] = meta
        while len(self._meta) > self._history:
            self._meta.popitem(last=False)

    def take(self, result: FrameResult) -> list[tuple[Prediction, Meta]]:
        """The predictions not handed out before whose source frame is known, in the result's order."""
        fresh: list[tuple[Prediction, Meta]] = []
        for task, pred in result.predictions.items():
            if self._sent.get(task) == pred.frame_index or pred.frame_index not in self._meta:
                continue
            self._sent[task] = pred.frame_index
            fresh.append((pred, self._meta[pred.frame_index]))
        return fresh

    def reset(self) -> None:
        """Forget everything (a new stream starts; the runtime's frame indices restart)."""
        self._meta.clear()
        self._sent.clear()
