"""Letterbox geometry, edge padding, crop/resize back, and frame layouts (numpy ground truth)."""

from __future__ import annotations

import numpy as np
import pytest

from stablemtl_edge.errors import StableMTLError
from stablemtl_edge.runtime.preprocess import Layout, Letterbox, to_rgb


@pytest.mark.parametrize(
    ("src", "inner"),
    [((375, 1242), (39, 128)), ((64, 128), (64, 128)), ((128, 128), (64, 64)), ((32, 128), (32, 128)),
     ((480, 640), (64, 85)), ((1, 1000), (1, 128)), ((1000, 3), (64, 1))],
)
def test_fit_keeps_aspect_and_fits(src, inner):
    box = Letterbox.fit(src, (64, 128))
    assert (box.inner_h, box.inner_w) == inner
    assert box.inner_h <= 64 and box.inner_w <= 128


def test_padding_replicates_the_last_row_and_column():
    rng = np.random.default_rng(0)
    f = rng.integers(0, 256, (32, 100, 3), dtype=np.uint8)  # fits at scale 1.28: 41 x 128
    box = Letterbox.fit(f.shape[:2], (64, 128))
    out = box.apply(f)
    assert out.shape == (64, 128, 3)
    np.testing.assert_array_equal(out[box.inner_h:], np.repeat(out[box.inner_h - 1 : box.inner_h], 64 - box.inner_h, 0))


def test_exact_half_scale_is_a_2x2_mean_and_restores_to_the_frame():
    rng = np.random.default_rng(1)
    f = rng.integers(0, 256, (128, 128, 3), dtype=np.uint8)
    box = Letterbox.fit(f.shape[:2], (64, 128))
    out = box.apply(f)
    mean = f.reshape(64, 2, 64, 2, 3).astype(np.float64).mean(axis=(1, 3))
    np.testing.assert_allclose(out[:, :64], mean, atol=0.51)  # OpenCV rounds to uint8
    np.testing.assert_array_equal(out[:, 64:], np.repeat(out[:, 63:64], 64, axis=1))
    # back: crop the padding, 2x nearest resize gives each value a 2x2 block
    pred = np.arange(64 * 128, dtype=np.float32).reshape(64, 128)
    back = box.restore(pred.astype(np.uint8), nearest=True)
    assert back.shape == (128, 128)
    np.testing.assert_array_equal(back, np.repeat(np.repeat(pred[:, :64].astype(np.uint8), 2, 0), 2, 1))


def test_restore_crops_without_resampling_when_the_frame_was_only_padded():
    box = Letterbox.fit((32, 128), (64, 128))
    pred = np.random.default_rng(2).normal(size=(64, 128, 3)).astype(np.float32)
    back = box.restore(pred)
    np.testing.assert_array_equal(back, pred[:32])
    assert back.flags.c_contiguous


def test_restore_keeps_a_channel_axis_of_one():
    box = Letterbox.fit((40, 40), (64, 128))
    assert box.restore(np.zeros((64, 128, 1), np.float32)).shape == (40, 40, 1)


def test_identity_is_no_copy():
    f = np.zeros((64, 128, 3), np.uint8)
    box = Letterbox.fit(f.shape[:2], (64, 128))
    assert box.identity and box.apply(f) is f


@pytest.mark.parametrize(
    ("layout", "make"),
    [
        (Layout.RGB, lambda f: f),
        (Layout.BGR, lambda f: f[..., ::-1]),  # a non-contiguous view is accepted
        ("RGBA", lambda f: np.dstack([f, np.zeros(f.shape[:2], np.uint8)])),
        ("bgra", lambda f: np.dstack([f[..., ::-1], np.zeros(f.shape[:2], np.uint8)])),
    ],
)
def test_to_rgb_layouts(layout, make):
    f = np.random.default_rng(3).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    np.testing.assert_array_equal(to_rgb(make(f), layout), f)


def test_gray_and_grey():
    g = np.arange(35, dtype=np.uint8).reshape(5, 7)
    np.testing.assert_array_equal(to_rgb(g, "grey"), np.dstack([g, g, g]))


def test_bad_frame_names_the_argument():
    with pytest.raises(StableMTLError, match=r"`frame2` must be uint8 \(0..255\), got float64"):
        to_rgb(np.zeros((4, 4, 3)), "rgb", "frame2")
