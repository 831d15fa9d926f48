"""Optical-flow and scene-flow errors after per-channel scale fitting, pixel-weighted over the dataset."""

from __future__ import annotations

import numpy as np

from .accumulate import Accumulator, ratio_of_sums
from .align import align_flow
from .results import OpticalFlowMetrics, SceneFlowMetrics

__all__ = ["end_point_error", "OpticalFlowAccumulator", "SceneFlowAccumulator"]


def end_point_error(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """Per-pixel Euclidean distance between ``(..., C)`` vectors, in the ground truth's units."""
    return np.linalg.norm(np.asarray(pred, dtype=np.float64) - np.asarray(gt, dtype=np.float64), axis=-1)


def _aligned_errors(pred, gt, valid) -> tuple[np.ndarray, np.ndarray] | None:
    """Per-pixel end-point errors after the per-channel scale fit, and the ground-truth magnitudes.

    Both flows share this protocol; None when the frame has no valid pixel.
    """
    gt = np.asarray(gt, dtype=np.float64)
    valid = np.asarray(valid, dtype=bool) & np.isfinite(gt).all(axis=-1)
    if not valid.any():
        return None
    aligned = align_flow(np.nan_to_num(np.asarray(pred, dtype=np.float64)), gt, valid)
    return end_point_error(aligned[valid], gt[valid]), np.linalg.norm(gt[valid], axis=-1)


class OpticalFlowAccumulator(Accumulator):
    """EPE and Fl (KITTI outlier: EPE > 3 px and EPE > 5% of the ground-truth magnitude)."""

    def __init__(self) -> None:
        super().__init__()
        self._epe_sum = 0.0
        self._outliers = 0
        self._count = 0

    def update(self, pred, gt, valid):
        errors = _aligned_errors(pred, gt, valid)
        if errors is None:
            return
        epe, mag = errors
        self._epe_sum += float(epe.sum())
        self._outliers += int(((epe > 3.0) & (epe > 0.05 * mag)).sum())
        self._count += epe.size
        self._add_frame([epe.sum(), epe.size])

    main_from_sums = staticmethod(ratio_of_sums)  # rows (EPE sum, pixels): pooled

    def result(self) -> OpticalFlowMetrics:
        if self._count == 0:
            return OpticalFlowMetrics(float("nan"), float("nan"))
        return OpticalFlowMetrics(epe=self._epe_sum / self._count, fl=self._outliers / self._count)


class SceneFlowAccumulator(Accumulator):
    """EPE3d and the strict / relaxed accuracies and outlier share of the FlowNet3D protocol."""

    def __init__(self) -> None:
        super().__init__()
        self._epe_sum = 0.0
        self._counts = np.zeros(3, dtype=np.int64)  # strict, relaxed, outliers
        self._count = 0

    def update(self, pred, gt, valid):
        errors = _aligned_errors(pred, gt, valid)
        if errors is None:
            return
        epe, mag = errors
        rel = epe / np.maximum(mag, 1e-12)
        self._epe_sum += float(epe.sum())
        self._counts += np.array(
            [
                ((epe < 0.05) | (rel < 0.05)).sum(),
                ((epe < 0.1) | (rel < 0.1)).sum(),
                ((epe > 0.3) | (rel > 0.1)).sum(),
            ],
            dtype=np.int64,
        )
        self._count += epe.size
        self._add_frame([epe.sum(), epe.size])

    main_from_sums = staticmethod(ratio_of_sums)  # rows (EPE sum, pixels): pooled

    def result(self) -> SceneFlowMetrics:
        if self._count == 0:
            return SceneFlowMetrics(*([float("nan")] * 4))
        strict, relaxed, outliers = (self._counts / self._count).tolist()
        return SceneFlowMetrics(
            epe3d=self._epe_sum / self._count, acc_strict=strict, acc_relaxed=relaxed, outliers=outliers
        )
