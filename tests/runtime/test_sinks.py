"""Sinks write real files: montage videos read back by OpenCV, .npy/.png per frame, a console readout."""

import io

import cv2
import numpy as np
import pytest

from stablemtl_edge.errors import StableMTLError
from stablemtl_edge.runtime import visualize as viz
from stablemtl_edge.runtime.prediction import FrameResult, Prediction
from stablemtl_edge.runtime.sinks import (
    ConsoleSink,
    FrameFileSink,
    MontageRenderer,
    VideoSink,
    WindowSink,
    opencv_has_gui,
)
from stablemtl_edge.runtime.sources import Frame, VideoFileSource
from stablemtl_edge.runtime.sinks import StreamItem


def _item(index, h=37, w=53, tasks=("depth", "semantic", "optical_flow")):
    rng = np.random.default_rng(index)
    values = {
        "depth": rng.random((h, w), dtype=np.float32),
        "semantic": rng.integers(0, 8, (h, w)).astype(np.uint8),
        "optical_flow": rng.uniform(-1, 1, (h, w, 2)).astype(np.float32),
    }
    preds = {k: Prediction(k, values[k], index) for k in tasks}
    frame = Frame(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), index, 0)
    return StreamItem(frame, FrameResult(index, preds, {"total": 1.0}), 12.5, 10.0, 30.0, 0)


def test_montage_renderer_caches_and_keeps_size_when_tasks_are_missing():
    r = MontageRenderer(["optical_flow", "depth", "semantic"], tile_width=64)
    assert r.tasks == ("depth", "semantic", "optical_flow")
    a = _item(0, tasks=("depth", "semantic"))
    img = r.render(a)
    assert r.render(a) is img
    assert r.render(_item(1)).shape == img.shape


def test_video_sink_records_montage_with_odd_frame_size(tmp_path):
    path = tmp_path / "out" / "montage.mp4"
    sink = VideoSink(path, MontageRenderer(["depth", "semantic", "optical_flow"], tile_width=None), fps=12)
    items = [_item(i, h=375, w=1242) for i in range(4)]
    for it in items:
        sink.write(it)
    assert not path.exists()  # written under a temporary name until closed
    sink.close()
    sink.close()  # idempotent
    with VideoFileSource(path) as src:
        assert src.nominal_fps == pytest.approx(12)
        frames = list(src)
    assert len(frames) == 4
    w, h = sink.size
    assert frames[0].image.shape == (h, w, 3) and h % 2 == 0 and w % 2 == 0
    assert w == 2 * 1242 and h == 2 * 376  # 4 tiles of 376x1242 (375 rounded to even), 2x2


def test_video_sink_pads_odd_input_frames_instead_of_losing_a_row(tmp_path):
    path = tmp_path / "raw.mkv"  # FFV1: lossless, so the round trip is exact
    with VideoSink(path, None, fps=5) as sink:
        for i in range(2):
            sink.write(_item(i, h=375, w=1241))
    assert sink.size == (1242, 376)
    with VideoFileSource(path) as src:
        first = src.read()
    ref = _item(0, h=375, w=1241).frame.image
    assert first.image.shape == (376, 1242, 3)
    np.testing.assert_array_equal(first.image[:375, :1241], ref)
    np.testing.assert_array_equal(first.image[375, :1241], ref[374])  # replicated, not black


def test_video_sink_rejects_unknown_container_and_size_changes(tmp_path):
    with pytest.raises(StableMTLError, match="extensions"):
        VideoSink(tmp_path / "a.gif", None)
    sink = VideoSink(tmp_path / "a.avi", None)
    sink.write(_item(0))
    with pytest.raises(StableMTLError, match="changed size"):
        sink.write(_item(1, h=40))
    sink.close()


def test_frame_file_sink_round_trips_values_and_colours(tmp_path):
    sink = FrameFileSink(tmp_path / "frames", formats=["npy", "png"], tasks=["depth", "optical_flow"])
    it = _item(3)
    sink.write(it)
    names = sorted(p.name for p in (tmp_path / "frames").iterdir())
    assert names == ["000003_depth.npy", "000003_depth.png", "000003_optical_flow.npy", "000003_optical_flow.png"]
    np.testing.assert_array_equal(np.load(tmp_path / "frames" / "000003_depth.npy"), it.result["depth"])
    png = cv2.cvtColor(cv2.imread(str(tmp_path / "frames" / "000003_optical_flow.png")), cv2.COLOR_BGR2RGB)
    np.testing.assert_array_equal(png, viz.colorize_flow(it.result["optical_flow"], 1.0))
    with pytest.raises(StableMTLError, match="no output format"):
        FrameFileSink(tmp_path / "x", formats=[])


def test_console_sink_prints_fps_latency_and_drops():
    out = io.StringIO()
    sink = ConsoleSink(interval_s=0.0, out=out)
    sink.write(_item(5))
    sink.close()
    line = out.getvalue()
    assert "frame      5" in line and "30.00 fps" in line and "latency    12.5 ms" in line and "dropped 0" in line


@pytest.mark.skipif(opencv_has_gui(), reason="this OpenCV has GUI support; the headless refusal cannot be seen")
def test_window_sink_refuses_clearly_without_gui():
    assert "GUI:                           NONE" in cv2.getBuildInformation() or not opencv_has_gui()
    with pytest.raises(StableMTLError, match="cannot open a window"):
        WindowSink(MontageRenderer(["depth"]))
