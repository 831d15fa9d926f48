"""Offline rosbag2 processing: every frame of an image topic through the runtime, predictions into a new bag.

Offline means nothing is dropped: each input message is inferred in order, and every prediction is
written with the input's header (stamp and frame_id) and the input's bag timestamp, so the output bag
lines up with the input when both are played together. Needs ``rosbags`` (the ``ros`` extra), not rclpy.
"""

from __future__ import annotations

import argparse
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
from ...cli.shell import HelpFormatter, add_artifact_args, run_cli
from ..api import Runtime
from ..cli_args import add_runtime_args, runtime_options
from ..preprocess import Layout
from .image_conversions import frame_from_compressed, frame_from_image, numpy_to_image
from .outputs import AlbedoEncoding, FreshPredictions, OutputOptions, OutputTopic, output_topics
from ...records import KeyEnum

try:
    from rosbags.rosbag2 import Reader, ReaderError, StoragePlugin, Writer
    from rosbags.serde import SerdeError
    from rosbags.typesys import Stores, get_typestore
    from tqdm import tqdm
except ModuleNotFoundError as exc:  # a robot image without the extra
    missing = (exc.name or "rosbags").split(".")[0]
    raise MissingDependencyError(missing, "ros", "reading and writing ROS 2 bags") from exc

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
        path: the bag directory (sqlite3 or mcap storage), or its ``.db3`` / ``.mcap`` file.
        topic: the image topic; None picks the bag's only image topic.

    Raises:
        StableMTLError: no such bag, no such topic, or several image topics and none chosen.
    """

    def __init__(self, path: str | os.PathLike, topic: str | None = None) -> None:
        path = Path(path)
        self.path = path.parent if path.is_file() and path.suffix in (".mcap", ".db3") else path
        if not (self.path / "metadata.yaml").is_file():
            raise StableMTLError(
                f"`{self.path}` is not a ROS 2 bag (no metadata.yaml): pass the directory `ros2 bag record` wrote"
            )
        try:
            self._reader = Reader(self.path)
            self._reader.open()
        except ReaderError as exc:
            raise StableMTLError(f"cannot read bag `{self.path}`: {exc}") from None
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
        self._connections = [c for c in self._reader.connections if c.topic == topic and c.msgtype in _FRAME_READERS]
        self.count = sum(c.msgcount for c in self._connections)
        self.skipped: Counter[str] = Counter()

    def __iter__(self) -> Iterator[BagFrame]:
        for connection, timestamp, raw in self._reader.messages(connections=self._connections):
            try:
                msg = TYPESTORE.deserialize_cdr(raw, connection.msgtype)
                frame, layout = _FRAME_READERS[connection.msgtype](msg)
            except SerdeError as exc:
                self.skipped[f"cannot deserialise a {connection.msgtype} message: {exc}"] += 1
                continue
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


class BagStorage(KeyEnum):
    """rosbag2 storage plugin of the output bag (``mcap`` is the Jazzy default)."""

    MCAP = "mcap"
    SQLITE3 = "sqlite3"

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
        storage = BagStorage.parse(storage, "bag storage")
        self.topics = tuple(topics)
        self.prefix = "/" + prefix.strip("/") if prefix.strip("/") else ""
        self.counts: Counter[str] = Counter()
        # Built under a temporary name beside `path` and renamed into place by close(ok=True).
        self._staging_cm = atomic_directory(self.path, kind="bag", overwrite=overwrite)
        self._staging = self._staging_cm.__enter__()
        try:
            self._writer: Writer | None = Writer(
                self._staging / self.path.name, version=9, storage_plugin=storage.plugin
            )
            self._writer.open()
            self._connections = {
                t.name: self._writer.add_connection(self.topic_name(t), IMAGE_TYPE, typestore=TYPESTORE)
                for t in self.topics
            }
            self._input_connection = (
                self._writer.add_connection(copy_input[0], copy_input[1], typestore=TYPESTORE) if copy_input else None
            )
        except BaseException as exc:
            self._staging_cm.__exit__(type(exc), exc, exc.__traceback__)  # removes the staging directory
            raise
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


@dataclass(frozen=True)
class BagSummary:
    """What :func:`process_bag` did.

    Attributes:
        output: the output bag directory.
        input_topic: the image topic read.
        frames: frames inferred (every decodable input message).
        skipped: reason -> number of input messages that could not be turned into a frame.
        messages: output topic -> messages written.
    """

    output: Path
    input_topic: str
    frames: int
    skipped: dict[str, int]
    messages: dict[str, int]


def process_bag(
    input_path: str | os.PathLike,
    output_path: str | os.PathLike,
    runtime: Any,
    *,
    topic: str | None = None,
    prefix: str = "/stablemtl",
    options: OutputOptions = OutputOptions(),
    storage: BagStorage | str = BagStorage.MCAP,
    copy_input: bool = False,
    overwrite: bool = False,
    progress: bool = False,
) -> BagSummary:
    """Run ``runtime`` on every frame of a bag's image topic and write the predictions to a new bag.

    Args:
        input_path: input bag directory.
        output_path: output bag directory (written atomically).
        runtime: an open ``stablemtl_edge.runtime.Runtime``; its stream state continues from whatever it
            saw before, so pass a fresh one for a bag that starts a new sequence.
        topic: input image topic; None = the bag's only image topic.
        prefix: namespace of the output topics.
        options: optional topics and encodings.
        storage: storage plugin of the output bag.
        copy_input: copy the processed input messages into the output bag, so it replays on its own.
        overwrite: replace an existing output bag once the new one is complete.
        progress: show a progress bar on stderr.

    Raises:
        StableMTLError: bag, topic or runtime problems the user can fix; the output bag is then not created.
    """
    with BagImageReader(input_path, topic) as reader:
        topics = output_topics(runtime.tasks, options)
        copy = (reader.topic, reader.msgtype) if copy_input else None
        fresh: FreshPredictions[tuple[Any, int]] = FreshPredictions()
        frames = 0
        with (
            PredictionBagWriter(output_path, topics, prefix, storage, overwrite, copy) as writer,
            tqdm(total=reader.count, unit="frame", desc=reader.topic, disable=not progress, file=sys.stderr) as bar,
        ):
            warned: set[str] = set()
            for item in reader:
                result = runtime.infer(item.frame, layout=item.layout.value)
                frames += 1
                fresh.add_frame(result.frame_index, (item.header, item.timestamp))
                if copy:
                    writer.write_input(item.raw, item.timestamp)
                for pred, (header, stamp) in fresh.take(result):
                    writer.write({pred.task: pred.value}, header, stamp)
                for reason in set(reader.skipped) - warned:
                    bar.write(f"warning: skipping messages of {reader.topic}: {reason}", file=sys.stderr)
                    warned.add(reason)
                bar.update(frames + sum(reader.skipped.values()) - bar.n)
            bar.update(frames + sum(reader.skipped.values()) - bar.n)
        return BagSummary(
            output=Path(output_path),
            input_topic=reader.topic,
            frames=frames,
            skipped=dict(reader.skipped),
            messages=dict(writer.counts),
        )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="stablemtl-ros-bag",
        description=(
            "Run StableMTL on every frame of a ROS 2 bag's image topic (sensor_msgs/Image or CompressedImage) "
            "and write the predictions as sensor_msgs/Image topics into a new bag, with the input's headers "
            "and timestamps. Offline: no frame is dropped."
        ),
        formatter_class=HelpFormatter,
    )
    parser.add_argument("input", type=Path, help="input bag directory (sqlite3 or mcap)")
    parser.add_argument("output", type=Path, help="output bag directory (must not exist, see --overwrite)")
    add_artifact_args(parser)
    parser.add_argument("--topic", default=None, help="input image topic (default: the bag's only image topic)")
    add_runtime_args(parser)
    parser.add_argument("--prefix", default="/stablemtl", help="namespace of the output topics")
    parser.add_argument("--no-semantic-color", action="store_true",
                        help="do not write <prefix>/semantic/color (rgb8 palette picture of the class ids)")
    parser.add_argument("--albedo-encoding", default=AlbedoEncoding.FLOAT32.value,
                        choices=[a.value for a in AlbedoEncoding], help="encoding of <prefix>/albedo")
    parser.add_argument("--debug", action="store_true", help="also write <prefix>/debug/<task> colour pictures")
    parser.add_argument("--copy-input", action="store_true",
                        help="copy the processed input messages into the output bag")
    parser.add_argument("--storage", default=BagStorage.MCAP.value, choices=[s.value for s in BagStorage],
                        help="storage plugin of the output bag")
    parser.add_argument("--overwrite", action="store_true", help="replace the output bag if it exists")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """``stablemtl-ros-bag``: process a bag; user mistakes print one line and exit 1."""
    return run_cli(_process, build_parser(), argv)


def _process(args: argparse.Namespace) -> int:
    options = OutputOptions(
        semantic_color=not args.no_semantic_color,
        albedo_encoding=AlbedoEncoding.parse(args.albedo_encoding),
        debug=args.debug,
    )
    with Runtime.from_options(runtime_options(args)) as runtime:
        summary = process_bag(
            args.input, args.output, runtime, topic=args.topic, prefix=args.prefix, options=options,
            storage=args.storage, copy_input=args.copy_input, overwrite=args.overwrite, progress=True,
        )
    width = max((len(t) for t in summary.messages), default=5)
    print(f"{'topic':<{width}}  messages")
    for name, count in summary.messages.items():
        print(f"{name:<{width}}  {count}")
    for reason, count in summary.skipped.items():
        print(f"skipped {count} message(s) of {summary.input_topic}: {reason}", file=sys.stderr)
    print(f"wrote {summary.output}: {summary.frames} frames of {summary.input_topic} processed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
