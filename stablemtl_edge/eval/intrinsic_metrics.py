"""Albedo and shading metrics: RMSE, SSIM and LMSE after a global scale fit, averaged per frame."""

from __future__ import annotations

import numpy as np

from .accumulate import Accumulator, ratio_of_sums
from .align import align_intrinsic
from .results import IntrinsicMetrics

__all__ = ["rmse", "ssim", "lmse", "IntrinsicAccumulator", "SSIM_SIGMA", "LMSE_WINDOW", "LMSE_STRIDE"]

# SSIM as Wang et al. (2004) and scikit-image's structural_similarity(gaussian_weights=True, sigma=1.5,
# use_sample_covariance=False, data_range=1): Gaussian window truncated at 3.5 sigma (11 taps), image
# borders reflected, the (window-1)/2 border of the SSIM map left out of the mean.
SSIM_SIGMA = 1.5
_SSIM_TRUNCATE = 3.5
_K1, _K2 = 0.01, 0.03
LMSE_WINDOW = 16
LMSE_STRIDE = 8


def _channels(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x[..., None] if x.ndim == 2 else x


def rmse(pred: np.ndarray, gt: np.ndarray, valid: np.ndarray) -> float:
    """Root mean squared error over every channel of the valid pixels."""
    m = np.asarray(valid, dtype=bool)
    if not m.any():
        return float("nan")
    d = _channels(pred)[m] - _channels(gt)[m]
    return float(np.sqrt(np.mean(d**2)))


def _gaussian_taps(sigma: float) -> np.ndarray:
    radius = int(_SSIM_TRUNCATE * sigma + 0.5)
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    w = np.exp(-0.5 * (x / sigma) ** 2)
    return w / w.sum()


def _gaussian_blur(img: np.ndarray, taps: np.ndarray) -> np.ndarray:
    """Separable filter of an ``(H, W)`` image with half-sample symmetric borders (``d c b a | a b c d``)."""
    r = taps.size // 2
    out = img
    for axis in (0, 1):
        pad = [(0, 0), (0, 0)]
        pad[axis] = (r, r)
        padded = np.pad(out, pad, mode="symmetric")
        n = out.shape[axis]
        acc = np.zeros_like(out)
        for k, w in enumerate(taps):
            acc += w * (padded[k : k + n, :] if axis == 0 else padded[:, k : k + n])
        out = acc
    return out


def ssim(pred: np.ndarray, gt: np.ndarray, valid: np.ndarray | None = None, data_range: float = 1.0) -> float:
    """Mean structural similarity; for several channels the mean of per-channel values.

    With ``valid`` the SSIM map is averaged over valid pixels only (still excluding the border); with every
    pixel valid the result equals scikit-image's on the same settings.

    Args:
        pred, gt: ``(H, W)`` or ``(H, W, C)`` float images.
        valid: ``(H, W)`` bool or None (all valid).
        data_range: dynamic range of the images (1 for [0, 1]).
    """
    p, g = _channels(pred), _channels(gt)
    taps = _gaussian_taps(SSIM_SIGMA)
    r = taps.size // 2
    h, w = g.shape[:2]
    mask = np.ones((h, w), dtype=bool) if valid is None else np.asarray(valid, dtype=bool).copy()
    border = np.zeros_like(mask)
    border[r : h - r, r : w - r] = True
    mask &= border
    if not mask.any():
        return float("nan")
    c1, c2 = (_K1 * data_range) ** 2, (_K2 * data_range) ** 2
    values = []
    for c in range(g.shape[2]):
        x, y = p[..., c], g[..., c]
        ux, uy = _gaussian_blur(x, taps), _gaussian_blur(y, taps)
        vx = _gaussian_blur(x * x, taps) - ux * ux
        vy = _gaussian_blur(y * y, taps) - uy * uy
        vxy = _gaussian_blur(x * y, taps) - ux * uy
        s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux**2 + uy**2 + c1) * (vx + vy + c2))
        values.append(s[mask].mean())
    return float(np.mean(values))


def _windows(x: np.ndarray) -> np.ndarray:
    """``(H, W, C)`` -> ``(N, C, win, win)`` windows at the LMSE stride (top-left anchored, no padding)."""
    v = np.lib.stride_tricks.sliding_window_view(x, (LMSE_WINDOW, LMSE_WINDOW), axis=(0, 1))
    v = v[::LMSE_STRIDE, ::LMSE_STRIDE]
    return v.reshape(-1, x.shape[2], LMSE_WINDOW, LMSE_WINDOW)


def lmse(pred: np.ndarray, gt: np.ndarray, valid: np.ndarray | None = None) -> float:
    """Local MSE (Grosse et al. 2009): in every window and channel the prediction gets its own best scale;
    the summed squared errors are divided by the summed squared ground truth in the same windows.

    Returns NaN when the image is smaller than one window or the ground truth has no energy.
    """
    p, g = _channels(pred), _channels(gt)
    m = np.ones(g.shape[:2], dtype=bool) if valid is None else np.asarray(valid, dtype=bool)
    if g.shape[0] < LMSE_WINDOW or g.shape[1] < LMSE_WINDOW:
        return float("nan")
    mf = np.broadcast_to(m[..., None], g.shape).astype(np.float64)
    pw, gw, mw = _windows(p), _windows(g), _windows(mf)
    pp = (pw * pw * mw).sum(axis=(2, 3))
    pg = (pw * gw * mw).sum(axis=(2, 3))
    alpha = np.where(pp > 1e-5, pg / np.where(pp > 1e-5, pp, 1.0), 0.0)
    err = (mw * (gw - alpha[..., None, None] * pw) ** 2).sum()
    energy = (mw * gw * gw).sum()
    return float(err / energy) if energy > 0 else float("nan")


class IntrinsicAccumulator(Accumulator):
    """Global least-squares scale, clip to [0, 1], then per-frame RMSE / SSIM / LMSE averaged over frames."""

    def __init__(self) -> None:
        super().__init__()
        self._sums = np.zeros(3, dtype=np.float64)
        self._counts = np.zeros(3, dtype=np.int64)

    def update(self, pred, gt, valid):
        gt = np.asarray(gt, dtype=np.float64)
        valid = np.asarray(valid, dtype=bool) & np.isfinite(_channels(gt)).all(axis=-1)
        if not valid.any():
            return
        gt = np.where(np.isfinite(gt), gt, 0.0)
        aligned = align_intrinsic(np.nan_to_num(np.asarray(pred, dtype=np.float64)), gt, valid)
        values = np.array([rmse(aligned, gt, valid), ssim(aligned, gt, valid), lmse(aligned, gt, valid)])
        ok = np.isfinite(values)
        self._sums[ok] += values[ok]
        self._counts[ok] += 1
        self._add_frame([values[0] if ok[0] else 0.0, float(ok[0])])

    main_from_sums = staticmethod(ratio_of_sums)  # rows (rmse, 1): a mean of frame values

    def result(self) -> IntrinsicMetrics:
        with np.errstate(invalid="ignore", divide="ignore"):
            means = np.where(self._counts > 0, self._sums / np.maximum(self._counts, 1), np.nan)
        return IntrinsicMetrics(*means.tolist())
