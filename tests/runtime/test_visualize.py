"""Colour maps against their definitions (OpenCV's Turbo, the Middlebury wheel, the Cityscapes palette)."""

import cv2
import numpy as np
import pytest

from stablemtl_edge.errors import StableMTLError
from stablemtl_edge.runtime import visualize as viz
from stablemtl_edge.runtime.prediction import Prediction
from stablemtl_edge.tasks import PALETTE, TASK_NAMES


def test_turbo_matches_opencv_turbo_table():
    x = np.arange(256, dtype=np.float32) / 255.0
    ours = viz.turbo(x).astype(int)
    ref = cv2.applyColorMap(np.arange(256, dtype=np.uint8)[None], cv2.COLORMAP_TURBO)[0, :, ::-1].astype(int)
    assert np.abs(ours - ref).max() <= 3


def test_depth_near_is_warm_and_nan_is_black():
    depth = np.array([[0.0, 1.0, np.nan]], dtype=np.float32)
    out = viz.colorize_depth(depth)
    assert out.dtype == np.uint8 and out.shape == (1, 3, 3)
    assert out[0, 0, 0] > out[0, 0, 2]  # near: red dominates
    assert out[0, 1, 2] > out[0, 1, 0]  # far: blue dominates
    assert (out[0, 2] == 0).all()
    np.testing.assert_array_equal(viz.colorize_depth(depth, near_is_warm=False)[0, :2], out[0, 1::-1])


def test_normals_as_rgb():
    n = np.array([[[0, 0, 1], [1, 0, 0], [0, -1, 0]]], dtype=np.float32)
    np.testing.assert_array_equal(viz.colorize_normal(n)[0], [[128, 128, 255], [255, 128, 128], [128, 0, 128]])


def test_flow_wheel_definition():
    wheel = viz.flow_color_wheel() * 255
    assert wheel.shape == (55, 3)
    # Segment starts: red, yellow, green, cyan, blue, magenta (15, 6, 4, 11, 13, 6 hues long).
    for idx, rgb in [(0, (255, 0, 0)), (15, (255, 255, 0)), (21, (0, 255, 0)), (25, (0, 255, 255)),
                     (36, (0, 0, 255)), (49, (255, 0, 255))]:  # fmt: skip
        np.testing.assert_array_equal(wheel[idx], rgb)


def test_flow_direction_and_saturation():
    flow = np.array([[[1, 0], [-1, 0], [0, 0], [0.5, 0], [2, 0], [np.nan, 0]]], dtype=np.float32)
    out = viz.colorize_flow(flow, max_radius=1.0)[0].astype(int)
    np.testing.assert_array_equal(out[0], [255, 0, 0])  # rightwards: red
    np.testing.assert_array_equal(out[1], [0, 209, 255])  # leftwards: wheel index 27 (cyan-blue)
    np.testing.assert_array_equal(out[2], [255, 255, 255])  # no motion: white
    np.testing.assert_array_equal(out[3], [255, 128, 128])  # half magnitude: half saturated red
    np.testing.assert_array_equal(out[4], [191, 0, 0])  # beyond max_radius: darkened (x0.75)
    np.testing.assert_array_equal(out[5], [0, 0, 0])
    # Without a fixed radius the largest vector of the frame is fully saturated.
    np.testing.assert_array_equal(viz.colorize_flow(flow[:, :5])[0, 4], [255, 0, 0])


def test_semantic_palette_and_ignore():
    ids = np.array([[0, 1, 7, 255]], dtype=np.uint8)
    out = viz.colorize_semantic(ids)
    np.testing.assert_array_equal(out[0, :3], PALETTE[[0, 1, 7]])
    np.testing.assert_array_equal(out[0, 3], [0, 0, 0])
    with pytest.raises(StableMTLError, match="semantic ids"):
        viz.colorize_semantic(np.array([[9]], dtype=np.uint8))


def test_albedo_shading_scene_flow():
    a = np.array([[[0, 0.5, 1.0]]], dtype=np.float32)
    np.testing.assert_array_equal(viz.colorize_albedo(a)[0, 0], [0, 128, 255])
    np.testing.assert_array_equal(viz.colorize_shading(np.array([[0.0, 1.0]]))[0], [[0, 0, 0], [255, 255, 255]])
    np.testing.assert_array_equal(viz.colorize_scene_flow(np.zeros((1, 1, 3)))[0, 0], [128, 128, 128])


def test_colorize_dispatch_accepts_predictions_and_checks_shapes():
    d = np.linspace(0, 1, 12, dtype=np.float32).reshape(3, 4)
    np.testing.assert_array_equal(viz.colorize("depth", Prediction("depth", d, 0)), viz.colorize_depth(d))
    with pytest.raises(StableMTLError, match=r"\(H, W, 3\)"):
        viz.colorize("normal", d)
    with pytest.raises(StableMTLError, match="unknown task"):
        viz.colorize("height", d)


def _all_predictions(h, w):
    rng = np.random.default_rng(0)
    n = rng.normal(size=(h, w, 3)).astype(np.float32)
    return {
        "normal": n / np.linalg.norm(n, axis=2, keepdims=True),
        "depth": rng.random((h, w), dtype=np.float32),
        "semantic": rng.integers(0, 8, (h, w)).astype(np.uint8),
        "optical_flow": rng.uniform(-1, 1, (h, w, 2)).astype(np.float32),
        "scene_flow": rng.uniform(-1, 1, (h, w, 3)).astype(np.float32),
        "albedo": rng.random((h, w, 3), dtype=np.float32),
        "shading": rng.random((h, w), dtype=np.float32),
    }


def test_montage_of_odd_sized_frame_has_even_tiles_and_exact_content():
    h, w = 375, 1242
    frame = np.random.default_rng(1).integers(0, 256, (h, w, 3), dtype=np.uint8)
    preds = _all_predictions(h, w)
    out = viz.montage(frame, preds, tile_width=None, labels=False)
    rows, cols = viz.montage_layout(8, (376, 1242))
    assert out.shape == (rows * 376, cols * 1242, 3)
    assert cols * 1242 / (rows * 376) == pytest.approx(16 / 9, rel=0.5)
    # Tiles in canonical order after the input; unlabelled tiles are the colour images themselves.
    th, tw = 376, 1242
    tile = lambda i: out[(i // cols) * th : (i // cols + 1) * th, (i % cols) * tw : (i % cols + 1) * tw]  # noqa: E731
    sem = cv2.resize(viz.colorize_semantic(preds["semantic"]), (tw, th), interpolation=cv2.INTER_NEAREST)
    np.testing.assert_array_equal(tile(1 + TASK_NAMES.index("semantic")), sem)


def test_montage_marks_missing_tasks_and_keeps_its_size():
    frame = np.zeros((120, 160, 3), dtype=np.uint8)
    preds = _all_predictions(120, 160)
    full = viz.montage(frame, preds, tasks=TASK_NAMES, tile_width=80)
    del preds["optical_flow"], preds["scene_flow"]
    partial = viz.montage(frame, preds, tasks=TASK_NAMES, tile_width=80)
    assert partial.shape == full.shape
    assert full.shape[1] % 2 == 0 and full.shape[0] % 2 == 0
    with pytest.raises(StableMTLError, match="uint8 RGB"):
        viz.montage(frame.astype(np.float32), preds)


def test_montage_layout_prefers_few_columns_for_wide_tiles():
    assert viz.montage_layout(8, (375, 1242))[1] < viz.montage_layout(8, (480, 480))[1]
    assert viz.montage_layout(1, (10, 10)) == (1, 1)
