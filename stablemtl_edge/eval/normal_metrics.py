"""Surface-normal angular errors, pooled over every valid pixel of a dataset."""

from __future__ import annotations

import numpy as np

from .accumulate import Accumulator, ratio_of_sums
from .results import NormalMetrics

__all__ = ["angular_error_deg", "NormalAccumulator", "MEDIAN_BIN_DEG"]

# The dataset median comes from a histogram so that memory stays constant: its resolution, in degrees.
MEDIAN_BIN_DEG = 1e-3
_NUM_BINS = int(round(180.0 / MEDIAN_BIN_DEG))
_THRESHOLDS = (11.25, 22.5, 30.0)


def angular_error_deg(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """Per-pixel angle between ``(..., 3)`` vectors, degrees; both are renormalised first."""
    pred = np.asarray(pred, dtype=np.float64)
    gt = np.asarray(gt, dtype=np.float64)
    pn = pred / np.maximum(np.linalg.norm(pred, axis=-1, keepdims=True), 1e-12)
    gn = gt / np.maximum(np.linalg.norm(gt, axis=-1, keepdims=True), 1e-12)
    cos = np.clip((pn * gn).sum(axis=-1), -1.0, 1.0)
    return np.degrees(np.arccos(cos))


class NormalAccumulator(Accumulator):
    """Sum, threshold counts and a fine histogram of angular errors (no alignment: normals are absolute)."""

    def __init__(self) -> None:
        super().__init__()
        self._sum = 0.0
        self._count = 0
        self._under = np.zeros(len(_THRESHOLDS), dtype=np.int64)
        self._hist = np.zeros(_NUM_BINS, dtype=np.int64)

    def update(self, pred, gt, valid):
        gt = np.asarray(gt, dtype=np.float64)
        valid = np.asarray(valid, dtype=bool) & np.isfinite(gt).all(axis=-1) & (np.linalg.norm(gt, axis=-1) > 0.5)
        if not valid.any():
            return
        err = angular_error_deg(np.nan_to_num(np.asarray(pred, dtype=np.float64))[valid], gt[valid])
        self._sum += float(err.sum())
        self._count += err.size
        self._under += np.array([(err < t).sum() for t in _THRESHOLDS], dtype=np.int64)
        idx = np.minimum((err / MEDIAN_BIN_DEG).astype(np.int64), _NUM_BINS - 1)
        self._hist += np.bincount(idx, minlength=_NUM_BINS)
        self._add_frame([err.sum(), err.size])

    main_from_sums = staticmethod(ratio_of_sums)  # rows (error sum, pixels): pooled

    def _median(self) -> float:
        # Lower-middle and upper-middle order statistics (as np.median), each at its bin centre.
        cum = np.cumsum(self._hist)
        lo = int(np.searchsorted(cum, (self._count - 1) // 2 + 1))
        hi = int(np.searchsorted(cum, self._count // 2 + 1))
        return (lo + hi + 1) * 0.5 * MEDIAN_BIN_DEG

    def result(self) -> NormalMetrics:
        if self._count == 0:
            return NormalMetrics(*([float("nan")] * 5))
        under = self._under / self._count
        return NormalMetrics(
            mean=self._sum / self._count,
            median=self._median(),
            within_11_25=float(under[0]),
            within_22_5=float(under[1]),
            within_30=float(under[2]),
        )
