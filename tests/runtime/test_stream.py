"""The three-thread stream: latest-frame-wins hand-over, clean ends, errors, Ctrl-C; real threads, no timing asserts.

The runtime here is a small deterministic model (a box filter of the grey frame as "depth"), so the
stream's bookkeeping can be checked frame by frame; the end-to-end tests with exported artifacts live in
``test_cli_run.py``.
"""

import os
import signal
import threading

import cv2
import numpy as np
import pytest

from stablemtl_edge.errors import StableMTLError
from stablemtl_edge.runtime.prediction import FrameResult, Prediction
from stablemtl_edge.runtime.sources import CameraSource, ImageFolderSource, PatternSource
from stablemtl_edge.runtime.sinks import Sink
from stablemtl_edge.runtime.stats import LatencyWindow
from stablemtl_edge.runtime.stream import DropPolicy, FrameSlot, Stream


class BoxRuntime:
    """Depth := 9x9 box filter of the grey frame in [0, 1]; ``gate`` makes infer wait for the source."""

    def __init__(self, gate=None):
        self.calls = []
        self.gate = gate

    def infer(self, frame, layout="rgb"):
        assert layout == "rgb" and frame.dtype == np.uint8 and frame.ndim == 3
        if self.gate is not None:
            self.gate(len(self.calls))
        grey = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY).astype(np.float32) / 255.0
        depth = cv2.blur(grey, (9, 9))
        i = len(self.calls)
        self.calls.append(frame)
        return FrameResult(i, {"depth": Prediction("depth", depth, i)}, {"total": 0.0})


class Collect(Sink):
    def __init__(self, stop_after=None, on_write=None):
        self.items = []
        self.stop_after = stop_after
        self.on_write = on_write

    def write(self, item):
        self.items.append(item)
        if self.on_write is not None:
            self.on_write(item)

    @property
    def stop_requested(self):
        return self.stop_after is not None and len(self.items) >= self.stop_after


def test_slot_latest_wins_counts_drops_and_holds_one():
    slot = FrameSlot(DropPolicy.LATEST)
    for i in range(5):
        assert slot.put(i)
        assert len(slot) == 1
    assert slot.dropped == 4 and slot.max_len == 1
    assert slot.get() == 4
    assert slot.get(timeout=0) is None
    slot.put(7)
    slot.close()
    assert not slot.put(8)
    assert slot.get() == 7 and slot.get() is None  # drained after close
    slot2 = FrameSlot(DropPolicy.LATEST)
    slot2.put(1)
    slot2.close(discard=True)
    assert slot2.get() is None


def test_slot_none_policy_blocks_the_producer_instead_of_dropping():
    slot = FrameSlot(DropPolicy.NONE)
    got = []
    consumer_may_go = threading.Event()

    def consume():
        consumer_may_go.wait()
        while (x := slot.get()) is not None:
            got.append(x)

    t = threading.Thread(target=consume)
    t.start()
    slot.put(0)
    consumer_may_go.set()
    for i in range(1, 50):
        slot.put(i)  # waits while the previous item is untaken
        assert len(slot) <= 1
    slot.close()
    t.join()
    assert got == list(range(50)) and slot.dropped == 0


def test_latency_window_is_bounded_and_exact():
    w = LatencyWindow(capacity=4)
    for v in range(10):
        w.add(float(v))
    np.testing.assert_array_equal(w.values(), [6, 7, 8, 9])
    assert w.count == 10 and w.mean == pytest.approx(4.5) and w.max == 9
    assert w.percentile(50) == pytest.approx(7.5)


def test_offline_stream_processes_every_frame_in_order(tmp_path):
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (375, 1242, 3), dtype=np.uint8) for _ in range(5)]
    for i, f in enumerate(frames):
        cv2.imwrite(str(tmp_path / f"{i}.png"), cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    rt, sink = BoxRuntime(), Collect()
    stats = Stream(ImageFolderSource(tmp_path), rt, [sink]).run()
    assert stats.ended_by == "end of stream"
    assert (stats.captured, stats.processed, stats.dropped, stats.written) == (5, 5, 0, 5)
    assert [it.frame.index for it in sink.items] == list(range(5))
    for item, f in zip(sink.items, frames):
        np.testing.assert_array_equal(item.frame.image, f)
        ref = cv2.blur(cv2.cvtColor(f, cv2.COLOR_RGB2GRAY).astype(np.float32) / 255.0, (9, 9))
        np.testing.assert_array_equal(item.result["depth"], ref)
        assert item.latency_ms >= item.service_ms >= 0


def test_live_stream_drops_old_frames_instead_of_queueing():
    # The source runs ahead of inference: every infer waits until the source has produced 3 more frames,
    # so the latest-frame-wins slot must drop frames and never hold more than one.
    src = PatternSource(48, 64, frames=60)
    src.live = True

    def gate(call_index):
        target = min(60, 3 * (call_index + 1))
        while stream.stats.captured < target:
            threading.Event().wait(0.001)

    sink = Collect()
    stream = Stream(src, BoxRuntime(gate), [sink])
    assert stream.policy is DropPolicy.LATEST
    stats = stream.run()
    assert stats.ended_by == "end of stream"
    assert stats.captured == 60
    assert stats.dropped > 0
    assert stats.processed + stats.dropped == stats.captured
    assert stream.max_pending == 1
    idx = [it.frame.index for it in sink.items]
    assert idx == sorted(set(idx)) and idx[-1] == 59  # newest frames win, the last one is processed
    assert len(sink.items) + stats.outputs_dropped == stats.processed


def test_max_frames_and_pacing():
    stats = Stream(PatternSource(16, 16), BoxRuntime(), [Collect()], max_frames=7, pace_fps=500.0).run()
    assert stats.ended_by == "max frames" and stats.captured == 7 and stats.processed == 7


def test_sink_can_stop_an_endless_stream():
    sink = Collect(stop_after=4)
    stream = Stream(PatternSource(16, 16), BoxRuntime(), [sink])
    stats = stream.run()
    assert stats.ended_by == "stopped" and len(sink.items) == 4
    assert not stream.running and src_closed(stream)


def src_closed(stream):
    return not stream.source._opened


def test_runtime_error_stops_the_stream_and_is_reraised():
    class Failing(BoxRuntime):
        def infer(self, frame, layout="rgb"):
            if len(self.calls) == 3:
                raise StableMTLError("bad frame")
            return super().infer(frame, layout)

    stream = Stream(PatternSource(16, 16), Failing())
    with pytest.raises(StableMTLError, match="bad frame"):
        stream.run()
    assert not stream.running and stream.stats.ended_by == "error" and src_closed(stream)


def test_ctrl_c_stops_cleanly():
    def interrupt(item):
        if item.frame.index == 2:
            os.kill(os.getpid(), signal.SIGINT)

    stream = Stream(PatternSource(16, 16), BoxRuntime(), [Collect(on_write=interrupt)])
    stats = stream.run()
    assert stats.ended_by == "interrupted"
    assert not stream.running and src_closed(stream)


def test_ctrl_c_is_taken_by_a_handler_while_running_and_the_previous_one_comes_back():
    """An interrupt is a handler call, not a KeyboardInterrupt that a finaliser running in the main thread
    could swallow (which left an endless stream running in a long test session)."""
    seen = []

    def look(item):
        if item.frame.index == 1:
            seen.append(signal.getsignal(signal.SIGINT))
            os.kill(os.getpid(), signal.SIGINT)

    before = signal.getsignal(signal.SIGINT)
    stream = Stream(PatternSource(16, 16), BoxRuntime(), [Collect(on_write=look)])
    assert stream.run().ended_by == "interrupted"
    assert seen == [stream._on_signal]
    assert signal.getsignal(signal.SIGINT) is before


def test_sigterm_stops_cleanly_and_the_previous_handler_comes_back():
    """systemd and `docker stop` send SIGTERM: the same clean stop as Ctrl-C, named for what it was."""
    def terminate(item):
        if item.frame.index == 2:
            os.kill(os.getpid(), signal.SIGTERM)

    before = signal.getsignal(signal.SIGTERM)
    stream = Stream(PatternSource(16, 16), BoxRuntime(), [Collect(on_write=terminate)])
    stats = stream.run()
    assert stats.ended_by == "terminated" and stats.processed >= 3
    assert not stream.running and src_closed(stream)
    assert signal.getsignal(signal.SIGTERM) is before


def test_camera_disconnect_ends_the_stream_cleanly(tmp_path):
    path = tmp_path / "cam.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 48))
    for f in PatternSource(48, 64, frames=4):
        writer.write(f.image)
    writer.release()

    def unplug(item):
        if item.frame.index == 0:
            path.unlink()

    cam = CameraSource(str(path), retries=2, retry_delay_s=0.0)
    stats = Stream(cam, BoxRuntime(), [Collect(on_write=unplug)], policy=DropPolicy.NONE).run()
    assert stats.ended_by == "end of stream" and stats.processed == 4 and cam.disconnects == 1


def test_stream_arguments_are_checked():
    with pytest.raises(StableMTLError, match="pace_fps"):
        Stream(PatternSource(8, 8), BoxRuntime(), pace_fps=0)
    stream = Stream(PatternSource(8, 8, frames=1), BoxRuntime())
    stream.run()
    with pytest.raises(StableMTLError, match="already started"):
        stream.start()
