"""Depth metrics after least-squares scale-and-shift alignment, averaged per frame (Marigold protocol)."""

from __future__ import annotations

import numpy as np

from .accumulate import Accumulator, ratio_of_sums
from .align import align_depth
from .results import DepthMetrics

__all__ = ["depth_metrics", "DepthAccumulator"]

_NAN = DepthMetrics(*([float("nan")] * 9))


def depth_metrics(pred: np.ndarray, gt: np.ndarray, valid: np.ndarray) -> DepthMetrics:
    """Metrics of one frame of metric depth (already aligned), over valid pixels with gt > 0 and pred > 0.

    Args:
        pred: ``(H, W)`` predicted depth, metres.
        gt: ``(H, W)`` ground-truth depth, metres.
        valid: ``(H, W)`` bool.
    """
    pred = np.asarray(pred, dtype=np.float64)
    gt = np.asarray(gt, dtype=np.float64)
    m = np.asarray(valid, dtype=bool) & (gt > 0) & (pred > 0) & np.isfinite(gt) & np.isfinite(pred)
    if not m.any():
        return _NAN
    p, g = pred[m], gt[m]
    diff = p - g
    log_diff = np.log(p) - np.log(g)
    ratio = np.maximum(p / g, g / p)
    return DepthMetrics(
        abs_rel=float(np.mean(np.abs(diff) / g)),
        sq_rel=float(np.mean(diff**2 / g)),
        rmse=float(np.sqrt(np.mean(diff**2))),
        rmse_log=float(np.sqrt(np.mean(log_diff**2))),
        log10=float(np.mean(np.abs(np.log10(p) - np.log10(g)))),
        delta1=float(np.mean(ratio < 1.25)),
        delta2=float(np.mean(ratio < 1.25**2)),
        delta3=float(np.mean(ratio < 1.25**3)),
        silog=float(100.0 * np.sqrt(max(np.mean(log_diff**2) - np.mean(log_diff) ** 2, 0.0))),
    )


class DepthAccumulator(Accumulator):
    """Aligns each relative-depth frame to its ground truth, clips to the range, averages frame metrics.

    Args:
        depth_range: (min, max) metres of the benchmark (DIODE 0.6-350, KITTI 1e-3-80). Ground truth
            outside it is invalid and aligned predictions are clipped to it. None = each frame's own
            valid ground-truth range.
    """

    def __init__(self, depth_range: tuple[float, float] | None = None) -> None:
        super().__init__()
        self.depth_range = depth_range
        self._sums = np.zeros(9, dtype=np.float64)

    def update(self, pred, gt, valid):
        gt = np.asarray(gt, dtype=np.float64)
        valid = np.asarray(valid, dtype=bool) & np.isfinite(gt) & (gt > 0)
        if self.depth_range is not None:
            lo, hi = self.depth_range
            valid &= (gt >= lo) & (gt <= hi)
        if not valid.any():
            return
        rng = self.depth_range or (float(gt[valid].min()), float(gt[valid].max()))
        aligned = align_depth(np.nan_to_num(np.asarray(pred, dtype=np.float64)), gt, valid, rng)
        m = depth_metrics(aligned, gt, valid)
        self._sums += np.array([getattr(m, f) for f in DepthMetrics.__dataclass_fields__], dtype=np.float64)
        self._add_frame([m.abs_rel, 1.0])

    main_from_sums = staticmethod(ratio_of_sums)  # rows (abs_rel, 1): a mean of frame values

    def result(self) -> DepthMetrics:
        if self.frames == 0:
            return _NAN
        return DepthMetrics(*(self._sums / self.frames).tolist())
