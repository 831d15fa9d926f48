import numpy as np
import pytest
from skimage.metrics import structural_similarity

from stablemtl_edge.eval.intrinsic_metrics import IntrinsicAccumulator, lmse, rmse, ssim

SKIMAGE = dict(gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1.0)


@pytest.mark.parametrize("shape", [(23, 31), (30, 40, 3)])
def test_ssim_matches_scikit_image(shape):
    rng = np.random.default_rng(4)
    gt = rng.random(shape)
    pred = np.clip(gt + 0.15 * rng.standard_normal(shape), 0, 1)
    kw = dict(channel_axis=-1) if len(shape) == 3 else {}
    assert ssim(pred, gt) == pytest.approx(structural_similarity(pred, gt, **SKIMAGE, **kw), abs=1e-12)


def test_rmse_hand_worked():
    assert rmse(np.array([[0.0, 1.0, 0.5]]), np.array([[0.0, 0.0, 0.0]]), np.array([[True, True, False]])) == pytest.approx(
        np.sqrt(0.5)
    )


def test_lmse_hand_worked_window():
    gt = np.zeros((16, 16))
    gt[:, :8] = 1.0
    # one window; best scale for an all-ones prediction is 128/256 = 0.5 -> error 64, energy 128
    assert lmse(np.ones((16, 16)), gt) == pytest.approx(0.5)
    assert lmse(3.0 * gt, gt) == pytest.approx(0.0)


def _lmse_loops(pred, gt, win=16, step=8):
    num = den = 0.0
    for i in range(0, gt.shape[0] - win + 1, step):
        for j in range(0, gt.shape[1] - win + 1, step):
            g = gt[i : i + win, j : j + win]
            p = pred[i : i + win, j : j + win]
            a = (g * p).sum() / (p * p).sum() if (p * p).sum() > 1e-5 else 0.0
            num += ((g - a * p) ** 2).sum()
            den += (g**2).sum()
    return num / den


def test_lmse_matches_window_loops():
    rng = np.random.default_rng(5)
    gt = rng.random((41, 35))
    pred = gt * rng.uniform(0.5, 2.0) + 0.2 * rng.random(gt.shape)
    assert lmse(pred, gt) == pytest.approx(_lmse_loops(pred, gt), rel=1e-10)


def test_accumulator_fits_global_scale_and_clips():
    rng = np.random.default_rng(6)
    gt = rng.uniform(0.1, 0.9, (20, 20, 3))
    acc = IntrinsicAccumulator()
    acc.update(gt * 0.25, gt, np.ones((20, 20), bool))
    m = acc.result()
    assert m.rmse == pytest.approx(0.0, abs=1e-6) and m.ssim == pytest.approx(1.0) and m.lmse == pytest.approx(0.0, abs=1e-10)
