"""Live inference on a frame source: capture, inference and output on three threads.

::

    source --capture--> [slot of 1] --inference--> [slot of 1] --output--> sinks

Each hand-over is a :class:`FrameSlot` holding at most one item. With :attr:`DropPolicy.LATEST` (the
default for cameras) a new item replaces one that was not taken yet and the replaced one is counted as
dropped, so when the camera is faster than the model the model always works on the newest frame and
latency stays at about one service time instead of growing with a queue. With :attr:`DropPolicy.NONE`
(the default for files, folders and bags) the producer waits instead, so every frame is processed.

The stream ends at the end of the source, after ``max_frames``, when a sink asks to stop (a window's
``q`` key), on :meth:`Stream.stop` from any thread, or on Ctrl-C in :meth:`Stream.run`; the threads are
always joined and the source closed. An exception in any thread stops the others and is re-raised by
:meth:`Stream.run` / :meth:`Stream.join`.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Sequence
from typing import Any, Generic, Protocol, TypeVar

import numpy as np

from ..errors import StableMTLError
from ..records import KeyEnum
from .sinks import Sink, StreamItem
from .sources import Frame, Source
from .stats import LatencyWindow, RateMeter, StreamStats

__all__ = [
    "DropPolicy",
    "FrameSlot",
    "FrameRuntime",
    "Stream",
]

log = logging.getLogger(__name__)

# Signals that end a stream cleanly, and the `ended_by` they leave in the statistics.
STOP_SIGNALS = {signal.SIGINT: "interrupted", signal.SIGTERM: "terminated"}
T = TypeVar("T")


class DropPolicy(KeyEnum):
    """What a full hand-over slot does with a new item."""

    LATEST = "latest"  #: replace the waiting item (counted as dropped): bounded latency, for live sources
    NONE = "none"  #: wait until the consumer takes it: every frame processed, for recorded sources


class FrameSlot(Generic[T]):
    """A thread-safe queue of at most one item with a drop counter.

    Attributes:
        dropped: items replaced before a consumer took them (``DropPolicy.LATEST`` only).
        max_len: the most items ever held at once (always <= 1; exposed so tests can check the bound).
    """

    def __init__(self, policy: DropPolicy = DropPolicy.LATEST) -> None:
        self.policy = DropPolicy(policy)
        self._cond = threading.Condition()
        self._item: T | None = None
        self._full = False
        self._closed = False
        self.dropped = 0
        self.max_len = 0

    def __len__(self) -> int:
        with self._cond:
            return int(self._full)

    @property
    def closed(self) -> bool:
        return self._closed

    def put(self, item: T) -> bool:
        """Hand an item over; returns False (item discarded) when the slot is closed."""
        with self._cond:
            if self.policy is DropPolicy.NONE:
                while self._full and not self._closed:
                    self._cond.wait()
            if self._closed:
                return False
            if self._full:
                self.dropped += 1
            self._item, self._full = item, True
            self.max_len = max(self.max_len, 1)
            self._cond.notify_all()
            return True

    def get(self, timeout: float | None = None) -> T | None:
        """Take the item, waiting for one; None when the slot is closed and empty (or on timeout)."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._full or self._closed, timeout):
                return None
            if not self._full:
                return None
            item, self._item, self._full = self._item, None, False
            self._cond.notify_all()
            return item

    def close(self, discard: bool = False) -> None:
        """No more puts; a waiting item is still delivered unless ``discard``."""
        with self._cond:
            self._closed = True
            if discard and self._full:
                self._item, self._full = None, False
            self._cond.notify_all()


class FrameRuntime(Protocol):
    """What the stream needs of a runtime: ``stablemtl_edge.runtime.Runtime`` satisfies it."""

    def infer(self, frame: np.ndarray, layout: str = "rgb") -> Any: ...


class Stream:
    """Runs a runtime on a source with capture, inference and output on separate threads.

    Args:
        source: where frames come from (opened by :meth:`start`, closed when capture ends).
        runtime: anything with ``infer(frame, layout="rgb")``; normally a ``Runtime``.
        sinks: receivers of every processed frame, called in order on the output thread. The caller owns
            them (closes them after the stream).
        policy: :class:`DropPolicy`; None = ``LATEST`` for live sources, ``NONE`` for recorded ones.
        pace_fps: read the source at most this often (emulates a camera of that rate on a file; None =
            as fast as the source delivers).
        max_frames: stop after reading this many frames (None = until the source ends).
        history: latencies kept for percentiles (a ring buffer; counts and means cover every frame).
    """

    def __init__(
        self,
        source: Source,
        runtime: FrameRuntime,
        sinks: Sequence[Sink] = (),
        policy: DropPolicy | None = None,
        pace_fps: float | None = None,
        max_frames: int | None = None,
        history: int = 10_000,
    ) -> None:
        if pace_fps is not None and pace_fps <= 0:
            raise StableMTLError(f"pace_fps must be > 0 frames per second, got {pace_fps}")
        if max_frames is not None and max_frames < 1:
            raise StableMTLError(f"max_frames must be >= 1, got {max_frames}")
        self.source = source
        self.runtime = runtime
        self.sinks = list(sinks)
        self.policy = DropPolicy(policy) if policy is not None else (
            DropPolicy.LATEST if source.live else DropPolicy.NONE
        )
        self.pace_fps = pace_fps
        self.max_frames = max_frames
        self.latency = LatencyWindow(history)
        self.service = LatencyWindow(history)
        self._inputs: FrameSlot[Frame] = FrameSlot(self.policy)
        self._outputs: FrameSlot[StreamItem] = FrameSlot(self.policy)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._done: list[threading.Event] = []
        self._error: BaseException | None = None
        self._error_lock = threading.Lock()
        self._ended_by = "running"
        self._skipped: dict[str, int] | None = None
        self._captured = 0
        self._written = 0
        self._fps = 0.0
        self._t0 = 0.0
        self._t1: float | None = None

    # -- control -----------------------------------------------------------------------------------------
    def start(self) -> Stream:
        """Open the source (errors raise here, in the caller's thread) and start the three threads."""
        if self._threads:
            raise StableMTLError("this stream was already started; build a new Stream to run again")
        self.source.open()
        self._t0 = time.perf_counter()
        for name, target in (("capture", self._capture), ("inference", self._infer), ("output", self._output)):
            done = threading.Event()
            t = threading.Thread(target=self._guard, args=(target, done), name=f"stablemtl-{name}", daemon=True)
            self._threads.append(t)
            self._done.append(done)
        started = 0
        try:
            for t in self._threads:
                t.start()
                started += 1
        except BaseException:  # Ctrl-C while starting: the started threads stop, the others never run
            for ev in self._done[started:]:
                ev.set()
            self.stop("interrupted")
            raise
        return self

    def stop(self, reason: str = "stopped") -> None:
        """Ask every thread to finish now (pending frames are discarded); safe from any thread."""
        if not self._stop.is_set():
            if self._ended_by == "running":
                self._ended_by = reason
            self._stop.set()
        self.source.interrupt()
        self._inputs.close(discard=True)
        self._outputs.close(discard=True)

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the threads; True when all finished. Re-raises an exception from any of them."""
        # Waiting on events, not Thread.join: a Ctrl-C that interrupts Thread.join can leave the thread
        # marked finished while it still runs (CPython gh-90882), and run() must see the real state.
        deadline = None if timeout is None else time.monotonic() + timeout
        for ev in self._done:
            ev.wait(None if deadline is None else max(0.0, deadline - time.monotonic()))
        done = all(ev.is_set() for ev in self._done)
        if done:
            for t in self._threads:
                if t.ident is not None:
                    t.join()
        if done and self._t1 is None:
            self._t1 = time.perf_counter()
        if done and self._error is not None:
            raise self._error
        return done

    def run(self) -> StreamStats:
        """Start, wait for the end, and return the final statistics.

        In the main thread, Ctrl-C (SIGINT) and SIGTERM (what systemd and ``docker stop`` send) stop the
        stream cleanly: the sinks finish their files and the statistics come back; a second signal while
        stopping raises KeyboardInterrupt. They are taken by handlers, not as a KeyboardInterrupt: Python
        drops an exception raised while the main thread happens to run a finaliser (``Exception ignored
        in ...``), and a dropped interrupt would leave an endless source running forever. The previous
        handlers are restored on return.
        """
        previous: dict[int, Any] = {}
        if threading.current_thread() is threading.main_thread():
            previous = {sig: signal.signal(sig, self._on_signal) for sig in STOP_SIGNALS}
        try:
            self.start()
            while not self.join(timeout=0.1):
                pass
        except KeyboardInterrupt:  # outside the main thread, or a second signal while stopping
            log.info("interrupted: stopping the stream")
            self.stop("interrupted")
            self.join()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        return self.stats

    def _on_signal(self, signum: int, frame: object) -> None:
        if self._stop.is_set():
            raise KeyboardInterrupt  # stopping takes too long: the user insists
        reason = STOP_SIGNALS[signum]
        log.info("%s: stopping the stream", reason)
        self.stop(reason)

    @property
    def max_pending(self) -> int:
        """The most items ever waiting in a hand-over slot (input or output): the queue bound, always <= 1."""
        return max(self._inputs.max_len, self._outputs.max_len)

    @property
    def running(self) -> bool:
        return not all(ev.is_set() for ev in self._done)

    # -- statistics --------------------------------------------------------------------------------------
    @property
    def stats(self) -> StreamStats:
        end = self._t1 if self._t1 is not None else time.perf_counter()
        wall = max(end - self._t0, 1e-9) if self._t0 else 0.0
        processed = self.service.count
        return StreamStats(
            captured=self._captured,
            processed=processed,
            dropped=self._inputs.dropped,
            outputs_dropped=self._outputs.dropped,
            written=self._written,
            latency_mean_ms=self.latency.mean,
            latency_p50_ms=self.latency.percentile(50),
            latency_p90_ms=self.latency.percentile(90),
            latency_p99_ms=self.latency.percentile(99),
            latency_max_ms=self.latency.max if processed else float("nan"),
            service_mean_ms=self.service.mean,
            wall_s=wall,
            fps=processed / wall if wall else 0.0,
            ended_by=self._ended_by,
            skipped=self._skipped if self._skipped is not None else self.source.skipped,
        )

    # -- threads -----------------------------------------------------------------------------------------
    def _guard(self, target: Any, done: threading.Event) -> None:
        try:
            target()
        except BaseException as e:  # re-raised in the caller's thread by join()
            self._record_error(e)
            self.stop("error")
        finally:
            done.set()

    def _record_error(self, e: BaseException) -> None:
        with self._error_lock:
            if self._error is None:
                self._error = e

    def _capture(self) -> None:
        period_ns = int(1e9 / self.pace_fps) if self.pace_fps else 0
        next_ns = time.monotonic_ns()
        try:
            while not self._stop.is_set():
                if self.max_frames is not None and self._captured >= self.max_frames:
                    self._finish("max frames")
                    break
                if period_ns:
                    wait_ns = next_ns - time.monotonic_ns()
                    if wait_ns > 0 and self._stop.wait(wait_ns / 1e9):
                        break
                    # Never catch up in a burst after a stall: a camera does not either.
                    next_ns = max(next_ns + period_ns, time.monotonic_ns())
                try:
                    frame = self.source.read()
                except Exception as e:
                    # The source failed (--strict on a bad photo, a broken bag): the run ends with this
                    # error, but frames already read are still inferred and written, not discarded.
                    self._record_error(e)
                    self._finish("error")
                    break
                if frame is None:
                    self._finish("end of stream")
                    break
                self._captured += 1
                if not self._inputs.put(frame):
                    break
        finally:
            self._inputs.close()
            self._skipped = self.source.skipped  # before close: a bag's reader goes with it
            self.source.close()

    def _finish(self, reason: str) -> None:
        if self._ended_by == "running":
            self._ended_by = reason

    def _infer(self) -> None:
        rate = RateMeter()
        try:
            while (frame := self._inputs.get()) is not None:
                t0 = time.monotonic_ns()
                result = self.runtime.infer(frame.image, layout="rgb")
                t1 = time.monotonic_ns()
                service_ms = (t1 - t0) / 1e6
                latency_ms = (t1 - frame.capture_ns) / 1e6
                self.service.add(service_ms)
                self.latency.add(latency_ms)
                self._fps = rate.tick(t1)
                item = StreamItem(frame, result, latency_ms, service_ms, self._fps, self._inputs.dropped)
                if not self._outputs.put(item):
                    break
        finally:
            self._outputs.close()

    def _output(self) -> None:
        while (item := self._outputs.get()) is not None:
            for sink in self.sinks:
                sink.write(item)
            self._written += 1
            if any(s.stop_requested for s in self.sinks):
                self.stop("stopped")
