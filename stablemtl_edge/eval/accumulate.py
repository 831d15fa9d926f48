"""The frame-by-frame accumulator interface every task's metrics implement.

An evaluation streams frames through ``update`` and reads ``result`` once at the end, so a long benchmark
never holds more than one frame's arrays in memory.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np

from .results import TaskMetrics

__all__ = ["Accumulator"]


class Accumulator(ABC):
    """Sums a task's per-frame statistics.

    ``update`` receives the prediction in the runtime's units (relative depth, unit normals, class ids,
    normalised flows, intrinsics in [0, 1]) at the label's resolution, and applies the task's alignment
    itself, so every caller gets the protocol right by construction.
    """

    def __init__(self) -> None:
        self.frames = 0

    @abstractmethod
    def update(self, pred: np.ndarray, gt: np.ndarray, valid: np.ndarray) -> None:
        """Add one frame; frames without any valid pixel are skipped (and not counted)."""

    @abstractmethod
    def result(self) -> TaskMetrics:
        """The task's metric record (see :mod:`stablemtl_edge.eval.results`); NaN where undefined."""
