import math

import numpy as np
import pytest

from stablemtl_edge.eval.semantic_metrics import SemanticAccumulator, confusion_matrix, metrics_from_confusion
from stablemtl_edge.tasks import IGNORE_ID, NUM_CLASSES


def test_hand_worked_iou():
    gt = np.array([[0, 0, 1, 1, IGNORE_ID]], dtype=np.uint8)
    pred = np.array([[0, 1, 1, 1, 0]], dtype=np.uint8)
    acc = SemanticAccumulator()
    acc.update(pred, gt, np.ones(gt.shape, bool))
    m = acc.result()
    # class 0: TP 1, FN 1 -> 1/2; class 1: TP 2, FP 1 -> 2/3; others absent -> NaN, skipped.
    assert m.iou[0] == pytest.approx(0.5) and m.iou[1] == pytest.approx(2 / 3)
    assert all(math.isnan(v) for v in m.iou[2:])
    assert m.miou == pytest.approx((0.5 + 2 / 3) / 2)
    assert m.pixel_accuracy == pytest.approx(3 / 4)


def _confusion_by_loops(preds, gts, valids):
    conf = np.zeros((NUM_CLASSES, NUM_CLASSES), dtype=np.int64)
    for p, g, v in zip(preds, gts, valids):
        for pi, gi, vi in zip(p.ravel(), g.ravel(), v.ravel()):
            if vi and gi < NUM_CLASSES:
                conf[gi, pi] += 1
    return conf


def test_miou_against_confusion_built_by_loops():
    rng = np.random.default_rng(3)
    preds, gts, valids = [], [], []
    acc = SemanticAccumulator()
    for _ in range(4):
        gt = rng.integers(0, NUM_CLASSES, (10, 12)).astype(np.uint8)
        gt[rng.random(gt.shape) < 0.1] = IGNORE_ID
        pred = np.where(rng.random(gt.shape) < 0.6, gt % NUM_CLASSES, rng.integers(0, NUM_CLASSES, gt.shape)).astype(np.uint8)
        valid = rng.random(gt.shape) > 0.1
        acc.update(pred, gt, valid)
        preds.append(pred), gts.append(gt), valids.append(valid)
    conf = _confusion_by_loops(preds, gts, valids)
    np.testing.assert_array_equal(acc.confusion, conf)
    ious = []
    for c in range(NUM_CLASSES):
        tp = conf[c, c]
        union = conf[c, :].sum() + conf[:, c].sum() - tp
        if union:
            ious.append(tp / union)
    m = acc.result()
    assert m.miou == pytest.approx(np.mean(ious))
    assert m.pixel_accuracy == pytest.approx(np.trace(conf) / conf.sum())


def test_out_of_range_prediction_counts_as_wrong():
    conf = confusion_matrix(np.array([[9, 0]]), np.array([[0, 0]]), np.ones((1, 2), bool))
    assert conf[0, 0] == 1 and conf.sum() == 1
    m = metrics_from_confusion(conf, total=2)
    assert m.pixel_accuracy == pytest.approx(0.5)
