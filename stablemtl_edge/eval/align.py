"""Least-squares alignment of affine- or scale-invariant predictions to ground truth (StableMTL protocol).

The model predicts depth up to an affine map, flows in normalised units and intrinsics up to a scale, so
every metric is computed after fitting those free parameters to the ground truth on valid pixels only.
Fits are solved in float64; outputs are float32.
"""

from __future__ import annotations

import numpy as np

from ..errors import StableMTLError

__all__ = [
    "fit_scale_shift",
    "align_depth",
    "fit_channel_scales",
    "align_flow",
    "fit_global_scale",
    "align_intrinsic",
]


def _check(pred: np.ndarray, gt: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    pred = np.asarray(pred, dtype=np.float64)
    gt = np.asarray(gt, dtype=np.float64)
    valid = np.asarray(valid, dtype=bool)
    if pred.shape != gt.shape:
        raise StableMTLError(f"prediction shape {pred.shape} differs from ground truth {gt.shape}: resize first")
    if valid.shape != gt.shape[:2]:
        raise StableMTLError(f"valid mask shape {valid.shape} must be the label's (H, W) {gt.shape[:2]}")
    return pred, gt, valid


def fit_scale_shift(pred: np.ndarray, gt: np.ndarray, valid: np.ndarray) -> tuple[float, float]:
    """Scale s and shift t minimising sum over valid pixels of (s * pred + t - gt)^2.

    A constant prediction has no unique solution; the minimum-norm one (which predicts the mean of the
    valid ground truth) is returned, so trivial baselines go through the same code.
    """
    pred, gt, valid = _check(pred, gt, valid)
    if not valid.any():
        return 1.0, 0.0
    p = pred[valid]
    a = np.stack([p, np.ones_like(p)], axis=1)
    (s, t), *_ = np.linalg.lstsq(a, gt[valid], rcond=None)
    return float(s), float(t)


def align_depth(
    pred: np.ndarray, gt: np.ndarray, valid: np.ndarray, depth_range: tuple[float, float]
) -> np.ndarray:
    """Relative depth ``(H, W)`` -> metric depth: least-squares scale and shift, then clip to the range."""
    s, t = fit_scale_shift(pred, gt, valid)
    lo, hi = depth_range
    return np.clip(np.asarray(pred, dtype=np.float64) * s + t, lo, hi).astype(np.float32)


def fit_channel_scales(pred: np.ndarray, gt: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Per channel the non-negative scale minimising sum over valid pixels of (s_c * pred_c - gt_c)^2.

    Non-negative so that a fit can never flip a predicted direction; a channel whose unconstrained optimum
    is negative gets 0 (the non-negative least-squares solution of a single variable).
    """
    pred, gt, valid = _check(pred, gt, valid)
    p = pred[valid]
    g = gt[valid]
    num = (p * g).sum(axis=0)
    den = (p * p).sum(axis=0)
    scales = np.where(den > 0, num / np.where(den > 0, den, 1.0), 0.0)
    return np.maximum(scales, 0.0)


def align_flow(pred: np.ndarray, gt: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Normalised optical ``(H, W, 2)`` or scene flow ``(H, W, 3)`` -> ground-truth units, per channel."""
    scales = fit_channel_scales(pred, gt, valid)
    return (np.asarray(pred, dtype=np.float64) * scales).astype(np.float32)


def fit_global_scale(pred: np.ndarray, gt: np.ndarray, valid: np.ndarray) -> float:
    """One scale s (all channels together) minimising sum over valid pixels of (s * pred - gt)^2."""
    pred, gt, valid = _check(pred, gt, valid)
    p = pred[valid]
    den = float((p * p).sum())
    return float((p * gt[valid]).sum()) / den if den > 0 else 0.0


def align_intrinsic(pred: np.ndarray, gt: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Albedo ``(H, W, 3)`` or shading ``(H, W)``: global least-squares scale, then clip to [0, 1]."""
    s = fit_global_scale(pred, gt, valid)
    return np.clip(np.asarray(pred, dtype=np.float64) * s, 0.0, 1.0).astype(np.float32)
