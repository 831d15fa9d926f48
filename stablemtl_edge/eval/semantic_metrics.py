"""Semantic segmentation: a confusion matrix accumulated over the dataset, then IoU per class."""

from __future__ import annotations

import numpy as np

from ..tasks import NUM_CLASSES
from .accumulate import Accumulator
from .results import SemanticMetrics

__all__ = ["confusion_matrix", "metrics_from_confusion", "SemanticAccumulator"]


def confusion_matrix(pred: np.ndarray, gt: np.ndarray, valid: np.ndarray, num_classes: int = NUM_CLASSES) -> np.ndarray:
    """``(C, C)`` int64 counts, rows = ground-truth class, columns = predicted class, valid pixels only.

    Ground truth outside 0..C-1 (255 = ignore) is skipped; a prediction outside that range counts as
    wrong for its ground-truth class without being any class's prediction.
    """
    gt = np.asarray(gt).astype(np.int64)
    pred = np.asarray(pred).astype(np.int64)
    m = np.asarray(valid, dtype=bool) & (gt >= 0) & (gt < num_classes)
    g, p = gt[m], pred[m]
    out = np.bincount(g * (num_classes + 1) + np.where((p >= 0) & (p < num_classes), p, num_classes),
                      minlength=num_classes * (num_classes + 1))
    return out.reshape(num_classes, num_classes + 1)[:, :num_classes]


def metrics_from_confusion(conf: np.ndarray, total: int | None = None) -> SemanticMetrics:
    """IoU_c = TP / (TP + FP + FN); mIoU is the NaN-mean over classes (a class absent from both ground
    truth and predictions has no IoU). ``total`` = number of valid pixels (default: the matrix sum)."""
    conf = np.asarray(conf, dtype=np.float64)
    tp = np.diag(conf)
    union = conf.sum(axis=0) + conf.sum(axis=1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, tp / union, np.nan)
    total = float(conf.sum()) if total is None else float(total)
    miou = float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan")
    acc = float(tp.sum() / total) if total > 0 else float("nan")
    return SemanticMetrics(miou=miou, pixel_accuracy=acc, iou=tuple(float(v) for v in iou))


class SemanticAccumulator(Accumulator):
    """Adds each frame's confusion matrix (class ids are compared directly: no alignment)."""

    def __init__(self) -> None:
        super().__init__()
        self.confusion = np.zeros((NUM_CLASSES, NUM_CLASSES), dtype=np.int64)
        self._total = 0

    def update(self, pred, gt, valid):
        gt = np.asarray(gt)
        m = np.asarray(valid, dtype=bool) & (gt < NUM_CLASSES)
        if not m.any():
            return
        frame = confusion_matrix(pred, gt, m)
        self.confusion += frame
        self._total += int(m.sum())
        self._add_frame(frame)  # mIoU of any frames is that of their summed confusion matrices

    @staticmethod
    def main_from_sums(sums: np.ndarray) -> np.ndarray:
        """mIoU of summed flattened confusion matrices ``(..., C * C)`` (as :func:`metrics_from_confusion`)."""
        conf = np.asarray(sums, dtype=np.float64).reshape(*np.shape(sums)[:-1], NUM_CLASSES, NUM_CLASSES)
        tp = np.diagonal(conf, axis1=-2, axis2=-1)
        union = conf.sum(axis=-2) + conf.sum(axis=-1) - tp
        with np.errstate(invalid="ignore", divide="ignore"):
            iou = np.where(union > 0, tp / union, np.nan)
        defined = np.isfinite(iou).any(axis=-1)
        return np.where(defined, np.nansum(iou, axis=-1) / np.maximum(np.isfinite(iou).sum(axis=-1), 1), np.nan)

    def result(self) -> SemanticMetrics:
        return metrics_from_confusion(self.confusion, self._total)
