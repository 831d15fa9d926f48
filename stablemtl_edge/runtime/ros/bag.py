"""Offline rosbag2 processing: every frame of an image topic through the runtime, predictions into a new bag.

Offline means nothing is dropped: each input message is inferred in order, and every prediction is
written with the input's header (stamp and frame_id) and the input's bag timestamp, so the output bag
lines up with the input when both are played together. Needs ``rosbags`` (the ``ros`` extra), not rclpy.
"""

from __future__ import annotations

import argparse
import enum
import os
import sys
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ...atomic import atomic_directory
from ...errors import MissingDependencyError, StableMTLError
from ...manifest import Mode, Precision, parse_enum
from ...tasks import TASK_NAMES
from ..backends.base import Backend
from ..preprocess import Layout
from .image_conversions import frame_from_compressed, frame_from_image, numpy_to_image
from .options import RuntimeOptions
from .outputs import AlbedoEncoding, FreshPredictions, OutputOptions, OutputTopic, output_topics

try:
    from rosbags.rosbag2 import Reader, StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore
except ModuleNotFoundError as exc:  # pragma: no cover - exercised in a process without rosbags
    raise MissingDependencyError("rosbags", "ros", "reading and writing ROS 2 bags") from exc

__all__ = [
    "IMAGE_TYPE",
    "COMPRESSED_IMAGE_TYPE",
    "BagFrame",
    "BagImageReader",
    "BagStorage",
    "PredictionBagWriter",
    "BagSummary",
    "process_bag",
    "main",
]

IMAGE_TYPE = "sensor_msgs/msg/Image"
COMPRESSED_IMAGE_TYPE = "sensor_msgs/msg/CompressedImage"
_FRAME_READERS: dict[str, Callable[[Any], tuple[np.ndarray, Layout]]] = {
    IMAGE_TYPE: frame_from_image,
    COMPRESSED_IMAGE_TYPE: frame_from_compressed,
}
# sensor_msgs/Image and CompressedImage have not changed since Foxy; Jazzy is our ROS distribution.
TYPESTORE = get_typestore(Stores.ROS2_JAZZY)


@dataclass(frozen=True)
class BagFrame:
    """One decoded input message.

    Attributes:
        timestamp: the bag's record time of the message, nanoseconds.
        header: the message's ``std_msgs/Header`` (rosbags object), copied onto the outputs.
        frame: uint8 pixels for ``Runtime.infer``; layout says their channel order.
        layout: channel layout of ``frame``.
        raw: the serialised message, to copy the input into the output bag.
    """

    timestamp: int
    header: Any
    frame: np.ndarray
    layout: Layout
    raw: bytes = field(repr=False)


class BagImageReader:
    """Reads the camera frames of one image topic (``sensor_msgs/Image`` or ``CompressedImage``) of a bag.

    Messages that cannot be turned into a frame (a depth encoding, corrupt JPEG) are skipped and counted
    in :attr:`skipped` by reason; iteration goes on.

    Args:
        path: the bag directory (sqlite3 or mcap storage).
        topic: the image topic; None picks the bag's only image topic.

    Raises:
        StableMTLError: no such bag, no such topic, or several image topics and none chosen.
    """

    def __init__(self, path: str | os.PathLike, topic: str | None = None) -> None:
        self.path = Path(path)
        if not (self.path / "metadata.yaml").is_file():
            raise StableMTLError(
                f"`{self.path}` is not a ROS 2 bag (no metadata.yaml): pass the directory `ros2 bag record` wrote"
            )
        self._reader = Reader(self.path)
        self._reader.open()
        images = {c.topic: c.msgtype for c in self._reader.connections if c.msgtype in _FRAME_READERS}
        if topic is None:
            if len(images) != 1:
                found = ", ".join(sorted(images)) or "none"
                self.close()
                raise StableMTLError(
                    f"bag `{self.path}` has {len(images)} image topics ({found}): choose one with --topic"
                )
            topic = next(iter(images))
        if topic not in images:
            found = ", ".join(f"{t} ({m})" for t, m in sorted(images.items())) or "none"
            self.close()
            raise StableMTLError(f"bag `{self.path}` has no image topic `{topic}`: its image topics are {found}")
        self.topic = topic
        self.msgtype = images[topic]
        self._connections = [c for c in self._reader.connections if c.topic == topic]
        self.count = sum(c.msgcount for c in self._connections)
        self.skipped: Counter[str] = Counter()

    def __iter__(self) -> Iterator[BagFrame]:
        to_frame = _FRAME_READERS[self.msgtype]
        for connection, timestamp, raw in self._reader.messages(connections=self._connections):
            msg = TYPESTORE.deserialize_cdr(raw, connection.msgtype)
            try:
                frame, layout = to_frame(msg)
            except StableMTLError as exc:
                self.skipped[str(exc)] += 1
                continue
            yield BagFrame(timestamp, msg.header, frame, layout, bytes(raw))

    def close(self) -> None:
        if self._reader.is_open:
            self._reader.close()

    def __enter__(self) -> BagImageReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class BagStorage(str, enum.Enum):
    """rosbag2 storage plugin of the output bag (``mcap`` is the Jazzy default)."""

    MCAP = "mcap"
    SQLITE3 = "sqlite3"

    def __str__(self) -> str:
        return self.value

    @property
    def plugin(self) -> StoragePlugin:
        return StoragePlugin.MCAP if self is BagStorage.MCAP else StoragePlugin.SQLITE3


class PredictionBagWriter:
    """Writes prediction images into a new bag, atomically: the bag appears at ``path`` only when complete.

    Args:
        path: output bag directory; must not exist unless ``overwrite``.
        topics: the output topics (:func:`outputs.output_topics`).
        prefix: namespace of the output topics, e.g. ``/stablemtl`` -> ``/stablemtl/depth/relative``.
        storage: ``mcap`` (Jazzy's default) or ``sqlite3``.
        overwrite: replace an existing bag at ``path`` (only once the new one is complete).
        copy_input: (topic, msgtype) of the input to copy into the output bag too, or None.

    Raises:
        StableMTLError: ``path`` exists and ``overwrite`` is False, or an unknown storage name.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        topics: Sequence[OutputTopic],
        prefix: str = "/stablemtl",
        storage: BagStorage | str = BagStorage.MCAP,
        overwrite: bool = False,
        copy_input: tuple[str, str] | None = None,
    ) -> None:
        self.path = Path(path)
        if self.path.exists() and not overwrite:
            raise StableMTLError(f"output bag `{self.path}` exists already: choose another path or pass --overwrite")
        storage = parse_enum(BagStorage, storage, "bag storage")
        self.topics = tuple(topics)
        self.prefix = "/" + prefix.strip("/") if prefix.strip("/") else ""
        self.counts: Counter[str] = Counter()
        # Built under a temporary name beside `path` and renamed into place by close(ok=True).
        self._staging_cm = atomic_directory(self.path)
        self._staging = self._staging_cm.__enter__()
        self._writer: Writer | None = Writer(self._staging / self.path.name, version=9, storage_plugin=storage.plugin)
        self._writer.open()
        self._connections = {
            t.name: self._writer.add_connection(self.topic_name(t), IMAGE_TYPE, typestore=TYPESTORE)
            for t in self.topics
        }
        self._input_connection = (
            self._writer.add_connection(copy_input[0], copy_input[1], typestore=TYPESTORE) if copy_input else None
        )
        self._image_type = TYPESTORE.types[IMAGE_TYPE]

    def topic_name(self, topic: OutputTopic) -> str:
        return f"{self.prefix}/{topic.name}"

    def write(self, values: Mapping[str, np.ndarray], header: Any, timestamp: int) -> int:
        """Write the topics of the tasks in ``values`` (task -> prediction value); returns messages written."""
        n = 0
        for t in self.topics:
            if t.task not in values:
                continue
            msg = numpy_to_image(t.convert(values[t.task]), t.encoding, self._image_type, header)
            self._writer.write(self._connections[t.name], timestamp, TYPESTORE.serialize_cdr(msg, IMAGE_TYPE))
            self.counts[self.topic_name(t)] += 1
            n += 1
        return n

    def write_input(self, raw: bytes, timestamp: int) -> None:
        """Copy one serialised input message (needs ``copy_input``)."""
        if self._input_connection is None:
            raise StableMTLError("this writer was opened without copy_input: the input topic is not in the output bag")
        self._writer.write(self._input_connection, timestamp, raw)
        self.counts[self._input_connection.topic] += 1

    def close(self, ok: bool = True) -> None:
        """Finish the bag; with ``ok`` move it into place at ``path``, else discard it."""
        if self._writer is None:
            return
        writer, self._writer = self._writer, None
        done = False
        try:
            writer.close()
            if ok:
                # rosbags names the bag's files after its directory: move them up into the staging
                # directory, which atomic_directory then renames to `path`.
                inner = self._staging / self.path.name
                for f in inner.iterdir():
                    os.replace(f, self._staging / f.name)
                inner.rmdir()
                done = True
        finally:
            if done:
                self._staging_cm.__exit__(None, None, None)
            else:
                discard = StableMTLError(f"output bag `{self.path}` discarded")
                self._staging_cm.__exit__(StableMTLError, discard, None)

    def __enter__(self) -> PredictionBagWriter:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self.close(ok=exc_type is None)
