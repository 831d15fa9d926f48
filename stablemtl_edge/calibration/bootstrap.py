"""A paired bootstrap of the relative change of a task's main metric between two pipelines (numpy only).

Both pipelines ran on the same held-out frames, so the frames are resampled *together*: one resample draws
``n`` frame indices with replacement, sums the reference's and the candidate's per-frame rows over them
(:class:`~stablemtl_edge.eval.accumulate.FrameStatistics`), recomputes both metrics from the sums (mIoU
from summed confusion matrices, never an average of per-frame mIoUs) and takes their relative change. The
interval is the percentile interval of that change over the resamples. Pairing removes the frame-to-frame
spread both pipelines share (a hard frame is hard for both), so the interval measures what quantization
changed, not how hard the frames are.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..errors import StableMTLError
from ..eval.accumulate import FrameStatistics

__all__ = ["ChangeInterval", "paired_bootstrap", "relative_change"]


def relative_change(reference: np.ndarray | float, candidate: np.ndarray | float) -> np.ndarray:
    """``(candidate - reference) / |reference|``: 0 where they are equal, NaN where either is undefined."""
    ref = np.asarray(reference, dtype=np.float64)
    cand = np.asarray(candidate, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        change = (cand - ref) / np.maximum(np.abs(ref), 1e-12)
    return np.where(ref == cand, 0.0, change)


@dataclass(frozen=True)
class ChangeInterval:
    """The main metric of both pipelines on the paired frames, and the change's bootstrap interval.

    Attributes:
        reference, candidate: the metric over all paired frames (NaN when undefined).
        low, high: the ``confidence`` percentile interval of the relative change (NaN when undefined).
        frames: paired frames used.
    """

    reference: float
    candidate: float
    low: float
    high: float
    frames: int

    @property
    def change(self) -> float:
        return float(relative_change(self.reference, self.candidate))


def paired_bootstrap(reference: FrameStatistics, candidate: FrameStatistics, *, frames: int | None = None,
                     resamples: int = 1000, confidence: float = 0.95, seed: int = 0) -> ChangeInterval:
    """The relative change of ``candidate`` against ``reference`` with a paired percentile bootstrap interval.

    Args:
        reference, candidate: per-frame rows of the same task; frames are paired by position.
        frames: use only frame positions below this (None: every position both have).
        resamples: bootstrap resamples.
        confidence: coverage of the interval (0.95: the 2.5th to 97.5th percentile).
        seed: resampling seed (same seed, same rows: same interval).
    """
    if not 0 < confidence < 1:
        raise StableMTLError(f"the bootstrap confidence must lie strictly between 0 and 1, got {confidence}")
    if resamples < 1:
        raise StableMTLError(f"the bootstrap needs at least 1 resample, got {resamples}")
    common = sorted(set(reference.positions) & set(candidate.positions))
    if frames is not None:
        common = [p for p in common if p < frames]
    if not common:
        nan = float("nan")
        return ChangeInterval(nan, nan, nan, nan, 0)
    ref, cand = reference.select(common), candidate.select(common)
    ref_value, cand_value = ref.metric(), cand.metric()
    n = len(common)
    # Multinomial counts: how often each frame is drawn in each resample (the same draws for both pipelines).
    counts = np.random.default_rng(seed).multinomial(n, np.full(n, 1.0 / n), size=resamples).astype(np.float64)
    changes = relative_change(ref.reduce(counts @ ref.rows), cand.reduce(counts @ cand.rows))
    changes = changes[np.isfinite(changes)]
    if changes.size == 0:
        low = high = float("nan")
    else:
        tail = (1.0 - confidence) / 2.0 * 100.0
        low, high = (float(x) for x in np.percentile(changes, [tail, 100.0 - tail]))
        # A percentile interval need not hold the point change (a skewed resampling distribution): widen it
        # to do so, so that a pass never has its own point change beyond the threshold.
        point = float(relative_change(ref_value, cand_value))
        if math.isfinite(point):
            low, high = min(low, point), max(high, point)
    return ChangeInterval(ref_value, cand_value, low, high, n)
