import numpy as np
import pytest

from stablemtl_edge.eval.normal_metrics import MEDIAN_BIN_DEG, NormalAccumulator, angular_error_deg


def test_hand_worked_angles():
    gt = np.array([[[0, 0, 1], [0, 0, 1], [0, 0, 1], [0, 0, 1]]], dtype=float)
    pred = np.array([[[0, 0, 1], [1, 0, 1], [0, 1, 0], [0, 0, 5]]], dtype=float)  # 0, 45, 90, 0 (unnormalised)
    np.testing.assert_allclose(angular_error_deg(pred, gt), [[0, 45, 90, 0]], atol=1e-6)
    acc = NormalAccumulator()
    acc.update(pred, gt, np.ones((1, 4), bool))
    m = acc.result()
    assert m.mean == pytest.approx(33.75)
    assert m.median == pytest.approx(22.5, abs=MEDIAN_BIN_DEG)
    assert (m.within_11_25, m.within_22_5, m.within_30) == pytest.approx((0.5, 0.5, 0.5))


def test_pooled_over_frames_median_matches_numpy():
    rng = np.random.default_rng(2)
    acc = NormalAccumulator()
    errors = []
    for _ in range(3):
        gt = rng.standard_normal((9, 7, 3))
        gt /= np.linalg.norm(gt, axis=-1, keepdims=True)
        pred = gt + 0.5 * rng.standard_normal(gt.shape)
        valid = rng.random((9, 7)) > 0.2
        acc.update(pred, gt, valid)
        errors.append(angular_error_deg(pred, gt)[valid])
    all_err = np.concatenate(errors)
    m = acc.result()
    assert m.mean == pytest.approx(all_err.mean(), rel=1e-9)
    assert m.median == pytest.approx(np.median(all_err), abs=MEDIAN_BIN_DEG)
    assert m.within_30 == pytest.approx(np.mean(all_err < 30))


def test_zero_ground_truth_normals_are_invalid():
    acc = NormalAccumulator()
    acc.update(np.ones((2, 2, 3)), np.zeros((2, 2, 3)), np.ones((2, 2), bool))
    assert acc.frames == 0
