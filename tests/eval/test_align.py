import numpy as np
import pytest

from stablemtl_edge.errors import StableMTLError
from stablemtl_edge.eval.align import (
    align_depth,
    align_flow,
    align_intrinsic,
    fit_channel_scales,
    fit_global_scale,
    fit_scale_shift,
)


def test_scale_shift_recovered_exactly_ignoring_invalid_pixels():
    rng = np.random.default_rng(0)
    gt = rng.uniform(1.0, 10.0, (12, 9))
    pred = (gt - 3.0) / 2.0  # gt = 2 * pred + 3
    valid = rng.random(gt.shape) > 0.3
    pred[~valid] = 1e6  # garbage where invalid must not influence the fit
    s, t = fit_scale_shift(pred, gt, valid)
    assert s == pytest.approx(2.0, abs=1e-10) and t == pytest.approx(3.0, abs=1e-9)
    out = align_depth(pred, gt, valid, (0.5, 20.0))
    np.testing.assert_allclose(out[valid], gt[valid], rtol=1e-6)
    assert out[~valid].max() == 20.0  # clipped to the range


def test_align_depth_clips_to_range():
    gt = np.array([[1.0, 2.0, 3.0]])
    out = align_depth(np.array([[0.0, 0.5, 1.0]]), gt, np.ones((1, 3), bool), (1.5, 2.5))
    np.testing.assert_allclose(out, [[1.5, 2.0, 2.5]])


def test_channel_scales_non_negative_and_exact():
    gt = np.zeros((2, 2, 2))
    gt[..., 0] = [[1, 2], [3, 4]]
    gt[..., 1] = [[1, -1], [1, -1]]
    pred = np.zeros_like(gt)
    pred[..., 0] = gt[..., 0] / 5.0
    pred[..., 1] = [[-1, -1], [-1, -1]]  # anti-correlated overall? sum(p*g)=0 -> 0
    pred[0, 0, 1] = -3.0  # now sum(p*g) = -3 + 1 - 1 + 1 = -2 < 0: unconstrained optimum negative
    s = fit_channel_scales(pred, gt, np.ones((2, 2), bool))
    np.testing.assert_allclose(s, [5.0, 0.0])
    np.testing.assert_allclose(align_flow(pred, gt, np.ones((2, 2), bool))[..., 0], gt[..., 0], rtol=1e-6)


def test_global_scale_then_clip():
    gt = np.array([[0.2, 0.4], [0.6, 0.8]])
    assert fit_global_scale(gt / 4.0, gt, np.ones((2, 2), bool)) == pytest.approx(4.0)
    out = align_intrinsic(np.array([[0.1, 0.2], [0.3, 2.0]]), np.array([[0.2, 0.4], [0.6, 0.8]]), np.array([[1, 1], [1, 0]], bool))
    np.testing.assert_allclose(out, [[0.2, 0.4], [0.6, 1.0]], rtol=1e-6)  # s = 2 from valid pixels; 4.0 -> 1


def test_shape_mismatch_is_a_user_error():
    with pytest.raises(StableMTLError, match="resize first"):
        fit_scale_shift(np.zeros((2, 2)), np.zeros((3, 3)), np.ones((3, 3), bool))
