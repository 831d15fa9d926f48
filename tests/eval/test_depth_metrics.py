import math

import numpy as np
import pytest

from stablemtl_edge.eval.depth_metrics import DepthAccumulator, depth_metrics


def test_hand_worked_frame():
    pred = np.array([[1.0, 2.0, 4.0, 99.0]])
    gt = np.array([[2.0, 2.0, 2.0, 5.0]])
    valid = np.array([[True, True, True, False]])
    m = depth_metrics(pred, gt, valid)
    ln2 = math.log(2.0)
    assert m.abs_rel == pytest.approx(0.5)
    assert m.sq_rel == pytest.approx(5.0 / 6.0)
    assert m.rmse == pytest.approx(math.sqrt(5.0 / 3.0))
    assert m.rmse_log == pytest.approx(ln2 * math.sqrt(2.0 / 3.0))
    assert m.log10 == pytest.approx(2.0 * math.log10(2.0) / 3.0)
    assert (m.delta1, m.delta2, m.delta3) == pytest.approx((1 / 3, 1 / 3, 1 / 3))
    assert m.silog == pytest.approx(100.0 * ln2 * math.sqrt(2.0 / 3.0))  # mean log error is 0


def test_accumulator_aligns_then_averages_frames():
    rng = np.random.default_rng(1)
    gt = rng.uniform(2.0, 50.0, (8, 8))
    acc = DepthAccumulator((1e-3, 80.0))
    acc.update((gt - 1.0) / 60.0, gt, np.ones_like(gt, bool))  # perfect up to scale and shift
    bad = np.array([[1.0, 2.0], [4.0, 8.0]])
    acc.update(np.array([[1.0, 1.0], [1.0, 1.0]]), bad, np.ones((2, 2), bool))  # constant -> mean 3.75
    res = acc.result()
    assert acc.frames == 2
    expected_bad = np.mean(np.abs(3.75 - bad) / bad)
    assert res.abs_rel == pytest.approx((0.0 + expected_bad) / 2, abs=1e-6)


def test_range_masks_ground_truth_and_empty_frames_skip():
    acc = DepthAccumulator((1.0, 10.0))
    acc.update(np.ones((2, 2)), np.full((2, 2), 50.0), np.ones((2, 2), bool))
    assert acc.frames == 0 and math.isnan(acc.result().abs_rel)
