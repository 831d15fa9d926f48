"""Task registry and codec round trips on random fields."""

import numpy as np
import pytest

from stablemtl_edge import StableMTLError
from stablemtl_edge.tasks import NUM_CLASSES, PALETTE, TASK_NAMES, TASKS, get_task, parse_tasks

RNG = np.random.default_rng(0)
H, W = 24, 32


def test_canonical_order_prompts_and_frames():
    assert TASK_NAMES == ("normal", "depth", "semantic", "optical_flow", "scene_flow", "albedo", "shading")
    assert [t.index for t in TASKS] == list(range(7))
    assert get_task("optical_flow").prompt == "optical flow"
    assert [t.key for t in TASKS if t.frames == 2] == ["optical_flow", "scene_flow"]


def test_unknown_task_lists_valid_ones():
    with pytest.raises(StableMTLError) as e:
        get_task("dept")
    assert "dept" in str(e.value) and "optical_flow" in str(e.value)


def test_parse_tasks_canonical_order_and_aliases():
    assert [t.key for t in parse_tasks("shading,depth,optical-flow")] == ["depth", "optical_flow", "shading"]
    assert parse_tasks("all") == TASKS
    with pytest.raises(StableMTLError):
        parse_tasks("")


def test_depth_round_trip_is_affine():
    depth = RNG.uniform(1.0, 80.0, (H, W)).astype(np.float32)
    valid = RNG.random((H, W)) > 0.1
    image, v = get_task("depth").codec.encode(depth, valid)
    assert image.shape == (H, W, 3) and image.min() >= -1 and image.max() <= 1
    assert (v == valid).all()
    rel = get_task("depth").codec.decode(image)
    lo, hi = np.quantile(depth[valid], [0.02, 0.98])
    inside = valid & (depth >= lo) & (depth <= hi)
    np.testing.assert_allclose(rel[inside], (depth[inside] - lo) / (hi - lo), atol=1e-5)


def test_depth_invalid_and_nonpositive_are_masked():
    depth = np.full((H, W), 5.0, np.float32)
    depth[0, 0] = 0
    depth[1, 1] = np.nan
    _, v = get_task("depth").codec.encode(depth)
    assert not v[0, 0] and not v[1, 1] and v.sum() == H * W - 2


def test_normals_round_trip():
    n = RNG.normal(size=(H, W, 3)).astype(np.float32)
    n /= np.linalg.norm(n, axis=2, keepdims=True)
    codec = get_task("normal").codec
    image, _ = codec.encode(n)
    np.testing.assert_allclose(codec.decode(image * 0.7), n, atol=1e-5)  # decode renormalises


def test_semantic_round_trip_with_noise_and_ignore():
    ids = RNG.integers(0, NUM_CLASSES, (H, W))
    ids[0, :5] = 255
    codec = get_task("semantic").codec
    image, valid = codec.encode(ids)
    assert not valid[0, :5].any()
    noisy = image + RNG.normal(0, 0.03, image.shape).astype(np.float32)
    assert (codec.decode(noisy)[valid] == ids[valid]).all()
    np.testing.assert_allclose((image[1, 0] + 1) * 127.5, PALETTE[ids[1, 0]], atol=1e-3)


def test_optical_flow_layout_and_direction():
    flow = RNG.normal(0, 10, (H, W, 2)).astype(np.float32)
    codec = get_task("optical_flow").codec
    image, _ = codec.encode(flow)
    np.testing.assert_array_equal(image[..., 0], image[..., 2])
    out = codec.decode(image)
    np.testing.assert_allclose(out, flow / np.abs(flow).max(axis=(0, 1)), atol=1e-6)


def test_scene_flow_per_axis_normalisation():
    sf = RNG.normal(0, [0.1, 0.5, 2.0], (H, W, 3)).astype(np.float32)
    codec = get_task("scene_flow").codec
    out = codec.decode(codec.encode(sf)[0])
    np.testing.assert_allclose(np.abs(out).max(axis=(0, 1)), 1.0, atol=1e-6)
    np.testing.assert_allclose(out, sf / np.abs(sf).max(axis=(0, 1)), atol=1e-6)


def test_albedo_and_shading_round_trip():
    a = RNG.random((H, W, 3)).astype(np.float32)
    codec = get_task("albedo").codec
    np.testing.assert_allclose(codec.decode(codec.encode(a)[0]), a, atol=1e-6)
    rgb = RNG.random((H, W, 3)).astype(np.float32)
    grey = rgb @ np.array([0.3, 0.59, 0.11], np.float32)
    codec = get_task("shading").codec
    np.testing.assert_allclose(codec.decode(codec.encode(rgb)[0]), grey, atol=1e-6)


def test_decode_clips_out_of_range_images():
    image = np.full((H, W, 3), 3.0, np.float32)
    assert get_task("depth").codec.decode(image).max() == 1.0
    assert get_task("albedo").codec.decode(-image).min() == 0.0
