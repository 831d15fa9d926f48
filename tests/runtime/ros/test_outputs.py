"""The output table (topic names, encodings, conversions) and which predictions go out once, with which frame."""

from __future__ import annotations

import numpy as np
import pytest

from stablemtl_edge.errors import StableMTLError
from stablemtl_edge.runtime import FrameResult, Prediction
from stablemtl_edge.runtime.ros.image_conversions import ImageEncoding
from stablemtl_edge.runtime.ros.outputs import AlbedoEncoding, FreshPredictions, OutputOptions, output_topics
from stablemtl_edge.tasks import PALETTE


def test_topic_table_names_encodings_and_order():
    table = [(t.task, t.name, t.encoding.value) for t in output_topics("all")]
    assert table == [
        ("normal", "normal", "32FC3"),
        ("depth", "depth/relative", "32FC1"),
        ("semantic", "semantic", "mono8"),
        ("semantic", "semantic/color", "rgb8"),
        ("optical_flow", "optical_flow", "32FC2"),
        ("scene_flow", "scene_flow", "32FC3"),
        ("albedo", "albedo", "32FC3"),
        ("shading", "shading", "32FC1"),
    ]
    names = [t.name for t in output_topics("depth,albedo", OutputOptions(False, AlbedoEncoding.RGB8, debug=True))]
    assert names == ["depth/relative", "debug/depth", "albedo", "debug/albedo"]
    assert "NOT metres" in output_topics("depth")[0].description


def test_conversions_fit_their_encodings():
    rng = np.random.default_rng(0)
    depth = rng.random((4, 5)).astype(np.float32)
    depth[1, 2] = np.inf
    ids = rng.integers(0, 8, (4, 5)).astype(np.uint8)
    albedo = rng.random((4, 5, 3)).astype(np.float32)
    topics = {t.name: t for t in output_topics("all", OutputOptions(albedo_encoding=AlbedoEncoding.RGB8, debug=True))}
    d = topics["depth/relative"].convert(depth)
    assert d.dtype == np.float32 and np.isnan(d[1, 2]) and np.isfinite(np.delete(d.ravel(), 7)).all()
    np.testing.assert_array_equal(topics["semantic/color"].convert(ids), PALETTE[ids])
    np.testing.assert_array_equal(topics["albedo"].convert(albedo), np.round(albedo * 255).astype(np.uint8))
    for name, t in topics.items():
        if name.startswith("debug/"):
            assert t.encoding is ImageEncoding.RGB8
    assert topics["debug/depth"].convert(depth).shape == (4, 5, 3)
    assert AlbedoEncoding.parse("32fc3") is AlbedoEncoding.FLOAT32
    with pytest.raises(StableMTLError, match="unknown albedo encoding `bgr8`: choose from 32FC3, rgb8"):
        AlbedoEncoding.parse("bgr8")


def _result(index: int, computed: dict[str, int]) -> FrameResult:
    return FrameResult(index, {task: Prediction(task, np.zeros(1), src) for task, src in computed.items()})


def test_fresh_predictions_go_out_once_with_their_own_frame_and_a_restart_is_a_new_stream():
    fresh: FreshPredictions[str] = FreshPredictions()
    fresh.add_frame(0, "h0")
    assert [(p.task, m) for p, m in fresh.take(_result(0, {"depth": 0, "semantic": 0}))] == [
        ("depth", "h0"), ("semantic", "h0")
    ]
    fresh.add_frame(1, "h1")  # semantic at rate 2: the frame-0 value is repeated, not re-sent
    assert [(p.task, m) for p, m in fresh.take(_result(1, {"depth": 1, "semantic": 0, "optical_flow": 1}))] == [
        ("depth", "h1"), ("optical_flow", "h1")
    ]
    fresh.add_frame(0, "new0")  # the runtime restarted (new frame size): index 0 again is a new frame
    assert [(p.task, m) for p, m in fresh.take(_result(0, {"depth": 0, "semantic": 0}))] == [
        ("depth", "new0"), ("semantic", "new0")
    ]
