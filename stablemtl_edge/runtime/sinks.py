"""Where a stream's results go: the sink contract, and a window, a montage video, per-frame files, a console.

All sinks implement :class:`Sink` and run on the stream's output thread.
The window and the video share one :class:`MontageRenderer`, so a frame's montage is drawn once.
"""

from __future__ import annotations

import functools
import io
import os
import sys
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from dataclasses import dataclass
from typing import Any, TextIO

import cv2
import numpy as np

from ..atomic import atomic_write_bytes
from ..errors import StableMTLError
from ..records import KeyEnum
from ..tasks import TaskName, parse_tasks
from .sources import Frame
from .visualize import colorize, montage

__all__ = [
    "Sink",
    "StreamItem",
    "opencv_has_gui",
    "MontageRenderer",
    "WindowSink",
    "VideoSink",
    "OutputFormat",
    "FrameFileSink",
    "ConsoleSink",
]

# Container -> codec that this OpenCV's FFmpeg writes and reads back (checked by the tests).
_FOURCC = {".mp4": "mp4v", ".m4v": "mp4v", ".mov": "mp4v", ".avi": "MJPG", ".mkv": "FFV1"}


@dataclass(frozen=True)
class StreamItem:
    """One processed frame, as sinks receive it.

    Attributes:
        frame: the captured frame (uint8 RGB).
        result: what ``runtime.infer`` returned (a ``FrameResult``).
        latency_ms: capture to result ready (queueing + service).
        service_ms: the ``infer`` call alone.
        fps: processed frames per second over the last second or so.
        dropped: input frames dropped so far.
    """

    frame: Frame
    result: Any
    latency_ms: float
    service_ms: float
    fps: float
    dropped: int


class Sink(ABC):
    """Where processed frames go (implementations below).

    :meth:`write` is called on the stream's output thread for every processed frame; the caller that built
    a sink closes it after the stream (also a context manager).
    """

    @abstractmethod
    def write(self, item: StreamItem) -> None:
        """Consume one processed frame."""

    @property
    def stop_requested(self) -> bool:
        """True when the sink wants the stream to end (a window's ``q`` key)."""
        return False

    def close(self) -> None:
        """Release files and windows (idempotent)."""

    def __enter__(self) -> Sink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@functools.lru_cache(maxsize=1)
def opencv_has_gui() -> bool:
    """True when ``cv2.imshow`` can open a window here (a GUI OpenCV build and a display).

    ``opencv-python-headless`` (our default dependency) reports ``GUI: NONE`` in its build information;
    a GUI build without a display fails to create a window, which is tried once.
    """
    info = cv2.getBuildInformation()
    for line in info.splitlines():
        if line.strip().startswith("GUI:"):
            if line.split(":", 1)[1].strip().upper() == "NONE":
                return False
            break
    try:
        cv2.namedWindow("stablemtl-gui-probe", cv2.WINDOW_NORMAL)
        cv2.destroyWindow("stablemtl-gui-probe")
        cv2.waitKey(1)
    except cv2.error:
        return False
    return True


class MontageRenderer:
    """Draws (and caches) the montage of a :class:`StreamItem`: input + every task, with an fps/latency caption.

    Args:
        tasks: the task tiles, in canonical order (one tile per task, present or not, so the picture size
            never changes).
        tile_width: tile width in pixels (even); None = the frame's width.
        readout: write ``fps`` and latency on the input tile.
        flow_max_radius: optical-flow magnitude shown fully saturated (normalised units); a constant keeps
            colours steady from frame to frame.
    """

    def __init__(
        self,
        tasks: Sequence[str | TaskName],
        tile_width: int | None = 480,
        readout: bool = True,
        flow_max_radius: float | None = 1.0,
    ) -> None:
        self.tasks = tuple(t.key for t in parse_tasks(list(tasks)))
        self.tile_width = tile_width
        self.readout = readout
        self.flow_max_radius = flow_max_radius
        self._last: tuple[StreamItem, np.ndarray] | None = None

    def render(self, item: StreamItem) -> np.ndarray:
        """uint8 RGB montage of ``item`` (the same array for repeated calls with the same item)."""
        if self._last is not None and self._last[0] is item:
            return self._last[1]
        caption = f"#{item.frame.index}  {item.fps:.1f} fps  {item.latency_ms:.0f} ms" if self.readout else None
        preds = {k: p for k, p in item.result.predictions.items() if k in self.tasks}
        image = montage(
            item.frame.image, preds, tasks=self.tasks, tile_width=self.tile_width,
            flow_max_radius=self.flow_max_radius, caption=caption,
        )  # fmt: skip
        self._last = (item, image)
        return image


class WindowSink(Sink):
    """Shows the montage in an OpenCV window; ``q`` or Esc in the window ends the stream.

    Raises:
        StableMTLError: OpenCV has no GUI support here (headless build or no display).
    """

    def __init__(self, renderer: MontageRenderer, title: str = "stablemtl") -> None:
        if not opencv_has_gui():
            raise StableMTLError(
                "this OpenCV cannot open a window (opencv-python-headless, or no display): install the GUI "
                "build with `pip uninstall -y opencv-python-headless && pip install \"stablemtl-edge[gui]\"`, "
                "or record with --output-video instead of --show"
            )
        self.renderer = renderer
        self.title = title
        self._stop = False
        self._open = False

    def write(self, item: StreamItem) -> None:
        image = self.renderer.render(item)
        cv2.imshow(self.title, cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        self._open = True
        if cv2.waitKey(1) & 0xFF in (ord("q"), 27):
            self._stop = True

    @property
    def stop_requested(self) -> bool:
        return self._stop

    def close(self) -> None:
        if self._open:
            cv2.destroyWindow(self.title)
            cv2.waitKey(1)
            self._open = False


class VideoSink(Sink):
    """Records the montage (or the input) to a video file, moved into place when closed.

    The codec follows the extension (``.mp4``/``.mov``: mp4v, ``.avi``: MJPG, ``.mkv``: FFV1, lossless).
    The size is taken from the first frame; odd sizes are padded by one replicated row/column, because
    FFmpeg's encoders silently drop the last row of an odd-sized frame. Until :meth:`close` finalises the
    container, the video is written under a hidden temporary name beside ``path``: a process that dies
    mid-run leaves no unplayable file at ``path`` (a run stopped by Ctrl-C or an error is closed normally
    and keeps the frames written so far).

    Args:
        path: output file.
        renderer: draws what is recorded; None = record the input frames themselves.
        fps: frame rate written in the file's header.
    """

    def __init__(self, path: str | os.PathLike, renderer: MontageRenderer | None, fps: float = 10.0) -> None:
        self.path = Path(path)
        suffix = self.path.suffix.lower()
        if suffix not in _FOURCC:
            raise StableMTLError(f"cannot write video `{self.path}`: use one of the extensions {', '.join(_FOURCC)}")
        if fps <= 0:
            raise StableMTLError(f"video fps must be > 0, got {fps}")
        self.renderer = renderer
        self.fps = float(fps)
        self.frames = 0
        self.size: tuple[int, int] | None = None  # (width, height) as written
        self._tmp = self.path.with_name(f".{self.path.stem}.partial{suffix}")
        self._writer: cv2.VideoWriter | None = None

    def write(self, item: StreamItem) -> None:
        image = self.renderer.render(item) if self.renderer is not None else item.frame.image
        h, w = image.shape[:2]
        pad_h, pad_w = h % 2, w % 2
        if pad_h or pad_w:
            image = cv2.copyMakeBorder(image, 0, pad_h, 0, pad_w, cv2.BORDER_REPLICATE)
        size = (image.shape[1], image.shape[0])
        if self._writer is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            codec = _FOURCC[self.path.suffix.lower()]
            writer = cv2.VideoWriter(str(self._tmp), cv2.VideoWriter_fourcc(*codec), self.fps, size)
            if not writer.isOpened():
                raise StableMTLError(f"OpenCV cannot write `{self.path}` ({codec}); try .avi or .mp4")
            self._writer, self.size = writer, size
        elif size != self.size:
            raise StableMTLError(f"video frames changed size from {self.size} to {size}: one video holds one size")
        self._writer.write(cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        self.frames += 1

    def close(self) -> None:
        if self._writer is not None:
            self._writer.release()
            self._writer = None
            os.replace(self._tmp, self.path)


class OutputFormat(KeyEnum):
    """Per-frame file outputs: ``npy`` = the prediction's values, ``png`` = its colour image."""

    NPY = "npy"
    PNG = "png"


class FrameFileSink(Sink):
    """Writes every processed frame's predictions as files ``DIR/<name>_<task>.<ext>``.

    ``<name>`` is the source photo's file name in a folder run (``IMG_0042_depth.png``), else the frame
    index (``000042_depth.png``).

    ``.npy`` holds the value exactly as the runtime returned it (dtype and units of ``Prediction.value``);
    ``.png`` is the colour image of :mod:`.visualize`. A prediction carried over from an earlier frame
    (task rate > 1) is written again under the new index, so every index has every computed task. Files
    are written atomically.

    Args:
        directory: created if missing.
        formats: which files to write.
        tasks: which tasks; None = every task in the result.
        flow_max_radius: colour scale of optical-flow PNGs (see :func:`.visualize.colorize_flow`).
    """

    def __init__(
        self,
        directory: str | os.PathLike,
        formats: Sequence[OutputFormat | str] = (OutputFormat.NPY, OutputFormat.PNG),
        tasks: Sequence[str | TaskName] | None = None,
        flow_max_radius: float | None = 1.0,
    ) -> None:
        self.directory = Path(directory)
        self.formats = tuple(OutputFormat(str(f).lower()) for f in formats)
        if not self.formats:
            raise StableMTLError("no output format chosen: use npy, png or both")
        self.tasks = None if tasks is None else tuple(t.key for t in parse_tasks(list(tasks)))
        self.flow_max_radius = flow_max_radius
        self.directory.mkdir(parents=True, exist_ok=True)
        self.files = 0

    def write(self, item: StreamItem) -> None:
        index = item.frame.index
        for key, pred in item.result.predictions.items():
            if self.tasks is not None and key not in self.tasks:
                continue
            stem = self.directory / f"{item.frame.stem or f'{index:06d}'}_{key}"
            if OutputFormat.NPY in self.formats:
                buf = io.BytesIO()
                np.save(buf, np.asarray(pred.value), allow_pickle=False)
                atomic_write_bytes(f"{stem}.npy", buf.getvalue())  # not with_suffix: photo names may hold dots
                self.files += 1
            if OutputFormat.PNG in self.formats:
                rgb = colorize(key, pred.value, self.flow_max_radius)
                ok, png = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
                if not ok:
                    raise StableMTLError(f"OpenCV could not encode the {key} image of frame {index} as PNG")
                atomic_write_bytes(f"{stem}.png", png.tobytes())
                self.files += 1


class ConsoleSink(Sink):
    """Prints frame, fps, latency and dropped frames about every ``interval_s`` (one line, overwritten on a tty)."""

    def __init__(self, interval_s: float = 1.0, out: TextIO | None = None) -> None:
        self.interval_s = interval_s
        self.out = out if out is not None else sys.stderr
        self._next = 0.0
        self._tty = hasattr(self.out, "isatty") and self.out.isatty()
        self._printed = False

    def write(self, item: StreamItem) -> None:
        now = time.monotonic()
        if now < self._next:
            return
        self._next = now + self.interval_s
        line = (
            f"frame {item.frame.index:6d}  {item.fps:6.2f} fps  latency {item.latency_ms:7.1f} ms  "
            f"service {item.service_ms:7.1f} ms  dropped {item.dropped}"
        )
        self.out.write(("\r" + line) if self._tty else (line + "\n"))
        self.out.flush()
        self._printed = True

    def close(self) -> None:
        if self._printed and self._tty:
            self.out.write("\n")
            self.out.flush()
        self._printed = False
