import numpy as np
import pytest

from stablemtl_edge.eval.flow_metrics import OpticalFlowAccumulator, SceneFlowAccumulator


def test_optical_flow_hand_worked_pixel_weighted():
    acc = OpticalFlowAccumulator()
    valid = np.ones((1, 2), bool)
    # u: gt [1, -1], pred [1, 1] -> best non-negative scale 0 -> EPE 1, 1 (not outliers: < 3 px)
    acc.update(np.array([[[1.0, 0.0], [1.0, 0.0]]]), np.array([[[1.0, 0.0], [-1.0, 0.0]]]), valid)
    # u: gt [4, -4] -> EPE 4, 4 (> 3 px and > 5% of 4: outliers)
    acc.update(np.array([[[1.0, 0.0], [1.0, 0.0]]]), np.array([[[4.0, 0.0], [-4.0, 0.0]]]), valid)
    # a frame recovered exactly by the per-channel scales (u x 8, v x 2), half of it invalid
    gt = np.array([[[8.0, 2.0], [16.0, -4.0]]])
    acc.update(gt / [8.0, 2.0], gt, np.array([[True, True]]))
    m = acc.result()
    assert m.epe == pytest.approx((1 + 1 + 4 + 4 + 0 + 0) / 6)
    assert m.fl == pytest.approx(2 / 6)


def test_fl_needs_both_conditions():
    acc = OpticalFlowAccumulator()
    # gt magnitude 100, pred zero after the fit -> EPE 100 > 3 and > 5: outlier; a large flow with EPE 4 is not.
    gt = np.array([[[100.0, 0.0], [-100.0, 0.0]]])
    acc.update(np.array([[[1.0, 0.0], [1.0, 0.0]]]), gt, np.ones((1, 2), bool))
    assert acc.result().fl == 1.0
    acc2 = OpticalFlowAccumulator()
    gt = np.array([[[100.0, 0.0]]])
    pred = np.array([[[1.0, 0.04]]])  # v scale fitted to 0; u exact -> EPE 0
    acc2.update(pred, gt, np.ones((1, 1), bool))
    assert acc2.result().epe == pytest.approx(0.0)


def test_scene_flow_hand_worked():
    acc = SceneFlowAccumulator()
    valid = np.ones((1, 2), bool)
    acc.update(np.array([[[0, 0, 1.0], [0, 0, 1.0]]]), np.array([[[0, 0, 1.0], [0, 0, -1.0]]]), valid)  # EPE 1, rel 1
    gt = np.array([[[0.3, 0.0, 0.0], [0.0, 0.0, 2.0]]])
    acc.update(gt / 3.0, gt, valid)  # exact
    m = acc.result()
    assert m.epe3d == pytest.approx(0.5)
    assert (m.acc_strict, m.acc_relaxed, m.outliers) == pytest.approx((0.5, 0.5, 0.5))
