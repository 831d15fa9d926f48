"""The frame-by-frame accumulator interface every task's metrics implement, and its per-frame rows.

An evaluation streams frames through ``update`` and reads ``result`` once at the end, so a long benchmark
never holds more than one frame's arrays in memory. Besides its sums, every accumulator keeps one short
row per frame: the statistics of the task's main metric (:data:`~stablemtl_edge.eval.MAIN_METRIC`) that
frame contributes, such that the metric of any multiset of frames is ``main_from_sums`` of their summed
rows (mIoU from summed confusion matrices, a pixel-pooled mean from summed errors and pixel counts, a
per-frame mean from summed values and frame counts). A bootstrap over frames resamples these rows; it never
averages per-frame metric values, which would be a different metric for every pooled one.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from .results import TaskMetrics

__all__ = ["Accumulator", "FrameStatistics", "ratio_of_sums"]


def ratio_of_sums(sums: np.ndarray) -> np.ndarray:
    """``sums[..., 0] / sums[..., 1]``, NaN where the denominator is 0: the ``main_from_sums`` of every metric
    whose row is ``(value sum, count)`` (a pixel-pooled mean, or a mean of per-frame values)."""
    sums = np.asarray(sums, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(sums[..., 1] > 0, sums[..., 0] / sums[..., 1], np.nan)


@dataclass(frozen=True)
class FrameStatistics:
    """One task's main-metric statistics, frame by frame.

    Attributes:
        task: task key.
        positions: each row's frame position in the evaluated sample stream (frames without a valid
            label have no row), increasing.
        rows: ``(frames, k)`` float64 statistics that add up over frames.
        reduce: summed rows ``(..., k)`` -> the main metric ``(...)`` (the accumulator's ``main_from_sums``).
    """

    task: str
    positions: tuple[int, ...]
    rows: np.ndarray = field(repr=False)
    reduce: Callable[[np.ndarray], np.ndarray] = field(repr=False, compare=False)

    def __len__(self) -> int:
        return len(self.positions)

    def metric(self) -> float:
        """The main metric over every frame (equal to the accumulator's result)."""
        return float(self.reduce(self.rows.sum(axis=0)))

    def select(self, positions: Sequence[int]) -> FrameStatistics:
        """The rows of the given frame positions, in that order (each must have a row)."""
        index = {p: i for i, p in enumerate(self.positions)}
        return FrameStatistics(self.task, tuple(positions), self.rows[[index[p] for p in positions]], self.reduce)


class Accumulator(ABC):
    """Sums a task's per-frame statistics.

    ``update`` receives the prediction in the runtime's units (relative depth, unit normals, class ids,
    normalised flows, intrinsics in [0, 1]) at the label's resolution, and applies the task's alignment
    itself, so every caller gets the protocol right by construction.
    """

    def __init__(self) -> None:
        self.frames = 0
        self._rows: list[np.ndarray] = []

    @abstractmethod
    def update(self, pred: np.ndarray, gt: np.ndarray, valid: np.ndarray) -> None:
        """Add one frame; frames without any valid pixel are skipped (and not counted)."""

    @abstractmethod
    def result(self) -> TaskMetrics:
        """The task's metric record (see :mod:`stablemtl_edge.eval.results`); NaN where undefined."""

    @staticmethod
    @abstractmethod
    def main_from_sums(sums: np.ndarray) -> np.ndarray:
        """The main metric from summed per-frame rows ``(..., k)``, vectorised over the leading axes."""

    def _add_frame(self, row: np.ndarray | Sequence[float]) -> None:
        """Count one frame and keep its row of main-metric statistics."""
        self._rows.append(np.asarray(row, dtype=np.float64).ravel())
        self.frames += 1

    def frame_rows(self) -> np.ndarray:
        """``(frames, k)``: one row per counted frame, in update order (``(0, 0)`` before any frame)."""
        return np.stack(self._rows) if self._rows else np.zeros((0, 0))
