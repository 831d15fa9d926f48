"""Where frames come from: a camera, a video file, a folder of images, a ROS 2 bag, or a test pattern.

Every source yields :class:`Frame` records holding a uint8 RGB image, whatever the device delivers
(OpenCV's BGR, grey, RGBA or a ROS encoding), so the stream hands frames to ``Runtime.infer`` with
``layout="rgb"``. ``read()`` returns None at the end of the stream; a camera that stops delivering is
reported (log warning and :attr:`CameraSource.disconnects`) and reopened a few times before the source
ends cleanly. :func:`open_source` turns one command-line string into the right source.
"""

from __future__ import annotations

import collections
import logging
import re
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from ..errors import MissingDependencyError, StableMTLError
from .preprocess import to_rgb

__all__ = [
    "Frame",
    "Source",
    "CameraSource",
    "VideoFileSource",
    "ImageFolderSource",
    "RosBagSource",
    "PatternSource",
    "open_source",
    "IMAGE_EXTENSIONS",
    "VIDEO_EXTENSIONS",
]

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pnm")
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".mov", ".m4v", ".webm", ".mpg", ".mpeg", ".wmv", ".flv")
_BAG_EXTENSIONS = (".mcap", ".db3")


@dataclass(frozen=True)
class Frame:
    """One captured frame.

    Attributes:
        image: uint8 RGB ``(H, W, 3)``, C-contiguous.
        index: 0-based position in the source (consecutive, also across camera reconnects).
        capture_ns: ``time.monotonic_ns()`` when the frame was read: the start of its latency.
        stamp_ns: the source's own time stamp in nanoseconds when it has one (bag header stamp, video
            position), else None.
        name: where it came from (file name in a folder, ``topic`` in a bag), for messages and file outputs.
        stem: what per-frame output files are named after (the photo's file name without its extension in a
            folder run); None = the frame index.
    """

    image: np.ndarray
    index: int
    capture_ns: int
    stamp_ns: int | None = None
    name: str = ""
    stem: str | None = None


class Source(ABC):
    """A frame producer with an open / read / close life cycle (also a context manager and an iterator).

    Subclasses implement ``_open``, ``_read`` (one RGB image, or None at the end) and ``_close``; the
    base numbers frames, stamps their capture time and makes :meth:`interrupt` wake any wait.
    """

    #: Live sources (cameras) produce frames whether or not anyone reads them: a stream drops frames it
    #: cannot keep up with. Recorded sources wait for the reader, so every frame can be processed.
    live: bool = False

    def __init__(self) -> None:
        self._index = 0
        self._opened = False
        self._interrupted = threading.Event()
        self._skipped: collections.Counter[str] = collections.Counter()

    @property
    def skipped(self) -> dict[str, int]:
        """Reason -> count of inputs that could not be turned into a frame and were passed over."""
        return dict(self._skipped)

    def _skip(self, what: str, reason: str) -> None:
        """Pass over one bad input: a warning naming it, and a count under ``reason`` for the summary."""
        self._skipped[reason] += 1
        log.warning("skipped %s: %s", what, reason)

    # -- life cycle --------------------------------------------------------------------------------------
    def open(self) -> Source:
        if not self._opened:
            self._interrupted.clear()
            self._open()
            self._opened = True
        return self

    def close(self) -> None:
        if self._opened:
            self._opened = False
            self._close()

    def interrupt(self) -> None:
        """Ask a blocking :meth:`read` (a reconnect wait) to give up soon; safe from any thread."""
        self._interrupted.set()

    def __enter__(self) -> Source:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def read(self) -> Frame | None:
        """The next frame, or None when the stream has ended (or :meth:`interrupt` was called)."""
        if not self._opened:
            self.open()
        if self._interrupted.is_set():
            return None
        got = self._read()
        if got is None:
            return None
        image, stamp_ns, name = got
        frame = Frame(image=image, index=self._index, capture_ns=time.monotonic_ns(), stamp_ns=stamp_ns, name=name,
                      stem=self._stem(name))
        self._index += 1
        return frame

    def _stem(self, name: str) -> str | None:
        """The output-file stem of a frame called ``name``; None = name outputs by frame index."""
        return None

    def __iter__(self) -> Iterator[Frame]:
        while (frame := self.read()) is not None:
            yield frame

    # -- description -------------------------------------------------------------------------------------
    @property
    def nominal_fps(self) -> float | None:
        """Frame rate the source declares (camera setting, video header), None when it has none."""
        return None

    @property
    @abstractmethod
    def description(self) -> str:
        """Short human-readable name for messages (``camera 0``, ``video drive.mp4`` ...)."""

    # -- implementation ----------------------------------------------------------------------------------
    @abstractmethod
    def _open(self) -> None: ...

    @abstractmethod
    def _read(self) -> tuple[np.ndarray, int | None, str] | None:
        """(uint8 RGB image, source stamp in ns or None, name), or None at the end of the stream."""

    @abstractmethod
    def _close(self) -> None: ...


def _bgr_to_rgb(image: np.ndarray) -> np.ndarray:
    """An OpenCV capture/imread result (BGR, BGRA or grey, possibly 16-bit) as contiguous uint8 RGB."""
    if image.dtype == np.uint16:
        image = (image >> 8).astype(np.uint8)
    if image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 1):
        return to_rgb(image, "gray")
    return to_rgb(image, "bgra" if image.shape[2] == 4 else "bgr")


class CameraSource(Source):
    """A live camera through ``cv2.VideoCapture``: a device index, a device path or a stream URL.

    When the camera stops delivering frames (unplugged, network stream dropped) the disconnect is logged
    and counted, and the device is reopened up to ``retries`` times, ``retry_delay_s`` apart; if no
    attempt yields a frame the source ends (``read`` returns None) and the stream stops cleanly.

    Args:
        device: camera index (``0``), device path (``/dev/video2``) or URL (``rtsp://...``).
        width, height, fps: capture settings requested from the driver (None = the driver's default); the
            driver may choose differently, frames come at whatever size it delivers.
        retries: reconnect attempts after a disconnect before giving up (0 = end at the first failure).
        retry_delay_s: wait before each reconnect attempt.
    """

    live = True

    def __init__(
        self,
        device: int | str = 0,
        width: int | None = None,
        height: int | None = None,
        fps: float | None = None,
        retries: int = 3,
        retry_delay_s: float = 1.0,
    ) -> None:
        super().__init__()
        if retries < 0 or retry_delay_s < 0:
            raise StableMTLError(f"camera retries and retry delay must be >= 0, got {retries} and {retry_delay_s}")
        self.device = device
        self.width, self.height, self.fps = width, height, fps
        self.retries = retries
        self.retry_delay_s = retry_delay_s
        self.disconnects = 0
        self._cap: cv2.VideoCapture | None = None

    @property
    def description(self) -> str:
        return f"camera {self.device}"

    @property
    def nominal_fps(self) -> float | None:
        if self._cap is not None:
            fps = self._cap.get(cv2.CAP_PROP_FPS)
            if fps and fps > 0:
                return float(fps)
        return self.fps

    def _connect(self) -> bool:
        cap = cv2.VideoCapture(self.device)
        if not cap.isOpened():
            cap.release()
            return False
        for prop, value in ((cv2.CAP_PROP_FRAME_WIDTH, self.width), (cv2.CAP_PROP_FRAME_HEIGHT, self.height),
                            (cv2.CAP_PROP_FPS, self.fps)):  # fmt: skip
            if value is not None:
                cap.set(prop, float(value))
        self._cap = cap
        return True

    def _open(self) -> None:
        if not self._connect():
            raise StableMTLError(
                f"cannot open {self.description}: no such device or it is busy; list cameras with "
                "`ls /dev/video*` (Linux) and check that no other program holds it"
            )

    def _release(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None

    def _read(self) -> tuple[np.ndarray, int | None, str] | None:
        attempts = 0  # reconnects since the last frame; a reopened device that gives no frame counts too
        while True:
            if self._cap is not None:
                ok, image = self._cap.read()
                if ok and image is not None and image.size:
                    return _bgr_to_rgb(image), None, self.description
            if attempts == 0:
                self.disconnects += 1
                log.warning("%s stopped delivering frames (disconnect %d)", self.description, self.disconnects)
            self._release()
            if attempts >= self.retries:
                log.warning("%s: no frame after %d reconnect attempts; ending the stream", self.description, attempts)
                return None
            attempts += 1
            if self._interrupted.wait(self.retry_delay_s):
                return None
            if self._connect():
                log.warning("%s reopened (attempt %d of %d)", self.description, attempts, self.retries)
            else:
                log.warning("%s: reconnect attempt %d of %d failed", self.description, attempts, self.retries)

    def _close(self) -> None:
        self._release()


class VideoFileSource(Source):
    """A video file read with OpenCV's FFmpeg backend (mp4, avi, mkv, ...).

    Args:
        path: the file.
        loop: start again at the end instead of ending (a camera stand-in for soak tests and demos).
    """

    def __init__(self, path: str | Path, loop: bool = False) -> None:
        super().__init__()
        self.path = Path(path)
        self.loop = loop
        self._cap: cv2.VideoCapture | None = None

    @property
    def description(self) -> str:
        return f"video {self.path}"

    @property
    def nominal_fps(self) -> float | None:
        if self._cap is None:
            return None
        fps = self._cap.get(cv2.CAP_PROP_FPS)
        return float(fps) if fps and fps > 0 else None

    @property
    def frame_count(self) -> int | None:
        """Frames declared by the container (None before open or when unknown; may be approximate)."""
        if self._cap is None:
            return None
        n = int(self._cap.get(cv2.CAP_PROP_FRAME_COUNT))
        return n if n > 0 else None

    def _open(self) -> None:
        if not self.path.is_file():
            raise StableMTLError(f"video file `{self.path}` does not exist")
        cap = cv2.VideoCapture(str(self.path))
        if not cap.isOpened():
            cap.release()
            raise StableMTLError(
                f"OpenCV cannot decode `{self.path}`: not a video, or a codec its FFmpeg lacks; "
                "convert it with `ffmpeg -i IN -c:v mpeg4 OUT.mp4` or extract frames to a folder"
            )
        self._cap = cap

    def _read(self) -> tuple[np.ndarray, int | None, str] | None:
        assert self._cap is not None
        ok, image = self._cap.read()
        if not ok and self.loop and self._index > 0:
            self._cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
            ok, image = self._cap.read()
        if not ok or image is None:
            return None
        stamp_ns = int(self._cap.get(cv2.CAP_PROP_POS_MSEC) * 1e6)
        return _bgr_to_rgb(image), stamp_ns, self.path.name

    def _close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None


def _natural_key(path: Path) -> list[Any]:
    """``frame_2.png`` before ``frame_10.png``."""
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", path.name)]


class ImageFolderSource(Source):
    """Every image file of a folder, in natural order of the file names (``2.png`` before ``10.png``).

    A file that cannot be read (empty, not an image, float pixels, deleted since the folder was listed) is
    skipped with a warning naming it and counted in :attr:`skipped`: one bad photo does not end a run of
    thousands. ``strict`` stops at it instead, with an error naming the file.

    Args:
        path: the folder (not searched recursively).
        loop: start again after the last image.
        strict: raise at the first unreadable file instead of skipping it.
    """

    def __init__(self, path: str | Path, loop: bool = False, strict: bool = False) -> None:
        super().__init__()
        self.path = Path(path)
        self.loop = loop
        self.strict = strict
        self.files: list[Path] = []
        self._stems: dict[str, str] = {}
        self._pos = 0

    @property
    def description(self) -> str:
        return f"image folder {self.path}"

    def _open(self) -> None:
        if not self.path.is_dir():
            raise StableMTLError(f"image folder `{self.path}` does not exist")
        self.files = sorted(
            (p for p in self.path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS), key=_natural_key
        )
        if not self.files:
            raise StableMTLError(
                f"image folder `{self.path}` has no images: expected files ending in {', '.join(IMAGE_EXTENSIONS)}"
            )
        stems = collections.Counter(p.stem for p in self.files)
        # a.png and a.jpg would write the same a_depth.png: those keep their extension in the name
        self._stems = {p.name: p.stem if stems[p.stem] == 1 else p.name.replace(".", "_") for p in self.files}
        self._pos = 0

    def _stem(self, name: str) -> str | None:
        return self._stems.get(name)

    def _read(self) -> tuple[np.ndarray, int | None, str] | None:
        failures_in_a_row = 0
        while True:
            if self._pos >= len(self.files):
                if not self.loop or failures_in_a_row >= len(self.files):
                    return None
                self._pos = 0
            path = self.files[self._pos]
            self._pos += 1
            image, reason = self._load(path)
            if image is not None:
                return image, None, path.name
            if self.strict:
                raise StableMTLError(f"cannot read image `{path}`: {reason}; remove it from the folder, or run "
                                     "without --strict to skip such files")
            self._skip(f"`{path}`", reason)
            failures_in_a_row += 1

    @staticmethod
    def _load(path: Path) -> tuple[np.ndarray | None, str]:
        """The image as uint8 RGB, or None and why not."""
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            return None, "the file disappeared after the folder was listed"
        if size == 0:
            return None, "the file is empty"
        image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if image is None:
            if not path.exists():
                return None, "the file disappeared after the folder was listed"
            return None, "the file is damaged or not an image"
        if image.dtype not in (np.uint8, np.uint16):
            return None, f"{image.dtype} pixels (a data image, e.g. a depth map, not a camera frame)"
        try:
            return _bgr_to_rgb(image), ""
        except StableMTLError as e:
            return None, str(e)

    def _close(self) -> None:
        self.files = []


class RosBagSource(Source):
    """Camera frames from a ROS 2 bag (``sensor_msgs/Image`` or ``sensor_msgs/CompressedImage``).

    Reading and decoding are those of the bag tools (:class:`stablemtl_edge.runtime.ros.bag.BagImageReader`,
    which needs ``rosbags``); the header stamp becomes :attr:`Frame.stamp_ns`. Messages that are not
    camera images (a ``32FC1`` depth, a corrupt JPEG) are skipped and counted in :attr:`skipped`.

    Args:
        path: the bag directory (or its ``.mcap`` / ``.db3`` file).
        topic: the image topic; None = the bag's only image topic.
        loop: start again at the end.
    """

    def __init__(self, path: str | Path, topic: str | None = None, loop: bool = False) -> None:
        super().__init__()
        self.path = Path(path)
        self.topic = topic
        self.loop = loop
        self._reader: Any = None
        self._frames: Iterator[Any] | None = None

    @property
    def description(self) -> str:
        return f"bag {self.path}" + (f" topic {self.topic}" if self.topic else "")

    @property
    def skipped(self) -> dict[str, int]:
        """Reason -> count of messages that could not be turned into a frame."""
        return dict(self._reader.skipped) if self._reader is not None else {}

    def _open(self) -> None:
        try:
            from .ros.bag import BagImageReader
        except ImportError:
            raise MissingDependencyError("rosbags", "ros", "reading ROS 2 bags") from None
        self._reader = BagImageReader(self.path, self.topic)
        self.topic = self._reader.topic
        self._frames = None

    def _read(self) -> tuple[np.ndarray, int | None, str] | None:
        assert self._reader is not None
        for attempt in range(2):
            if self._frames is None:
                self._frames = iter(self._reader)
            item = next(self._frames, None)
            if item is not None:
                break
            self._frames = None
            if not self.loop or attempt == 1 or self._index == 0:
                return None
        stamp = item.header.stamp
        image = to_rgb(item.frame, item.layout.value)
        return image, int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec), self._reader.topic

    def _close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None
            self._frames = None


class PatternSource(Source):
    """A moving test pattern, like a driver's test-pattern mode: checks a pipeline without a camera.

    The picture is a fixed textured scene (colour gradients, a checkerboard and discs) translated by
    ``(dx, dy)`` pixels per frame, so consecutive frames have a known uniform motion.

    Args:
        height, width: frame size in pixels (any size, odd ones included).
        frames: frames to produce, None = endless.
        motion: ``(dx, dy)`` pixels per frame.
    """

    def __init__(self, height: int, width: int, frames: int | None = None, motion: tuple[int, int] = (2, 1)) -> None:
        super().__init__()
        if height < 1 or width < 1 or (frames is not None and frames < 0):
            raise StableMTLError(f"test pattern needs a positive size and frame count, got {height}x{width}, {frames}")
        self.height, self.width, self.frames, self.motion = height, width, frames, motion
        self._scene: np.ndarray | None = None

    @property
    def description(self) -> str:
        return f"pattern {self.height}x{self.width}"

    def _open(self) -> None:
        # Frames are np.roll shifts of this scene; its gradients have the frame's size as period, so the
        # wrap-around seam shows only in the checkerboard.
        h, w = self.height, self.width
        y, x = np.mgrid[0:h, 0:w].astype(np.float32)
        scene = np.empty((h, w, 3), dtype=np.float32)
        scene[..., 0] = 0.5 + 0.5 * np.sin(2 * np.pi * x / w)
        scene[..., 1] = 0.5 + 0.5 * np.cos(2 * np.pi * y / h)
        scene[..., 2] = 0.5 + 0.5 * np.sin(2 * np.pi * (x / w + y / h))
        cell = max(4, min(h, w) // 12)
        checker = ((x // cell + y // cell) % 2).astype(np.float32)
        scene = 0.75 * scene + 0.25 * checker[..., None]
        self._scene = np.round(scene * 255).astype(np.uint8)

    def _read(self) -> tuple[np.ndarray, int | None, str] | None:
        assert self._scene is not None
        i = self._index
        if self.frames is not None and i >= self.frames:
            return None
        dx, dy = self.motion
        image = np.roll(self._scene, shift=(i * dy, i * dx), axis=(0, 1))
        return np.ascontiguousarray(image), None, self.description

    def _close(self) -> None:
        self._scene = None


_PATTERN = re.compile(r"^pattern:(\d+)x(\d+)(?::(\d+))?$")


def open_source(
    spec: str, loop: bool = False, topic: str | None = None, camera_retries: int = 3, strict: bool = False
) -> Source:
    """Build the source a command-line string names (the source is not opened yet).

    Args:
        spec: ``0`` (camera index), ``/dev/video2`` or ``rtsp://...`` (camera), a video file, a folder of
            images, a ROS 2 bag (directory with ``metadata.yaml``, or its ``.mcap``/``.db3``), or
            ``pattern:HxW[:N]`` (a moving test pattern, N frames, endless without N).
        loop: restart recorded sources at their end.
        topic: image topic of a bag.
        camera_retries: reconnect attempts of a camera.
        strict: a folder stops at an unreadable file instead of skipping it.

    Raises:
        StableMTLError: the path does not exist or is of no known kind.
    """
    text = str(spec).strip()
    if text.isdigit():
        return CameraSource(int(text), retries=camera_retries)
    if (m := _PATTERN.match(text)) is not None:
        frames = int(m.group(3)) if m.group(3) else None
        return PatternSource(int(m.group(1)), int(m.group(2)), frames=frames)
    if "://" in text or text.startswith("/dev/video"):
        return CameraSource(text, retries=camera_retries)
    path = Path(text)
    if path.is_dir():
        if (path / "metadata.yaml").is_file() or any(p.suffix in _BAG_EXTENSIONS for p in path.iterdir()):
            return RosBagSource(path, topic=topic, loop=loop)
        return ImageFolderSource(path, loop=loop, strict=strict)
    if path.is_file():
        suffix = path.suffix.lower()
        if suffix in _BAG_EXTENSIONS:
            return RosBagSource(path, topic=topic, loop=loop)
        if suffix in VIDEO_EXTENSIONS:
            return VideoFileSource(path, loop=loop)
        raise StableMTLError(
            f"`{path}` is neither a video ({', '.join(VIDEO_EXTENSIONS)}) nor a bag; "
            "for single images pass their folder"
        )
    raise StableMTLError(
        f"source `{text}` not found: give a camera index (0), a device or URL, a video file, an image folder, "
        "a ROS 2 bag or pattern:HxW"
    )
