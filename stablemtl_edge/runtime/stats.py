"""Stream statistics in fixed memory: latency windows, event rates, and the snapshot a stream reports.

Shared by :class:`~.stream.Stream` and the ROS node's diagnostics, so a run of days reports the same
figures either way and never grows.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from ..errors import StableMTLError

__all__ = ["LatencyWindow", "RateMeter", "StreamStats"]


class LatencyWindow:
    """Running count/mean/max of a series plus exact percentiles over its last ``capacity`` values.

    Memory is fixed (a ring buffer), so a stream can run for days without growing.
    """

    def __init__(self, capacity: int = 10_000) -> None:
        if capacity < 1:
            raise StableMTLError(f"latency window capacity must be >= 1, got {capacity}")
        self._buf = np.zeros(capacity, dtype=np.float64)
        self._lock = threading.Lock()
        self.count = 0
        self.total = 0.0
        self.max = 0.0

    def add(self, value: float) -> None:
        with self._lock:
            self._buf[self.count % len(self._buf)] = value
            self.count += 1
            self.total += value
            self.max = max(self.max, value)

    @property
    def mean(self) -> float:
        return self.total / self.count if self.count else float("nan")

    def values(self) -> np.ndarray:
        """The retained values (the last ``capacity``), oldest first."""
        with self._lock:
            n, cap = self.count, len(self._buf)
            if n <= cap:
                return self._buf[:n].copy()
            start = n % cap
            return np.concatenate([self._buf[start:], self._buf[:start]])

    def percentile(self, q: float) -> float:
        v = self.values()
        return float(np.percentile(v, q)) if v.size else float("nan")


@dataclass(frozen=True)
class StreamStats:
    """A snapshot of a stream's counters (all latencies in milliseconds).

    ``captured = processed + dropped (+ frames in flight)``; ``outputs_dropped`` counts results the sinks
    were too slow to take (``DropPolicy.LATEST`` only). ``ended_by`` is one of ``running``,
    ``end of stream``, ``max frames``, ``stopped``, ``interrupted``, ``error``.
    """

    captured: int
    processed: int
    dropped: int
    outputs_dropped: int
    written: int
    latency_mean_ms: float
    latency_p50_ms: float
    latency_p90_ms: float
    latency_p99_ms: float
    latency_max_ms: float
    service_mean_ms: float
    wall_s: float
    fps: float
    ended_by: str
    skipped: dict[str, int] = field(default_factory=dict)  # unreadable inputs the source passed over, by reason

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        skipped = sum(self.skipped.values())
        reasons = "; ".join(f"{n} {why}" for why, n in sorted(self.skipped.items()))
        return (
            f"{self.processed} frames processed of {self.captured} captured ({self.dropped} dropped"
            + (f", {skipped} unreadable inputs skipped: {reasons}" if skipped else "")
            + f"), {self.fps:.2f} fps, latency p50 {self.latency_p50_ms:.1f} ms / p99 {self.latency_p99_ms:.1f} ms, "
            f"service {self.service_mean_ms:.1f} ms; ended by {self.ended_by}"
        )


class RateMeter:
    """Events per second over a sliding window of about one second."""

    def __init__(self, window_s: float = 1.0) -> None:
        self.window_ns = int(window_s * 1e9)
        self._times: deque[int] = deque()

    def tick(self, now_ns: int) -> float:
        self._times.append(now_ns)
        cut = now_ns - self.window_ns
        while len(self._times) > 2 and self._times[0] < cut:
            self._times.popleft()
        if len(self._times) < 2:
            return 0.0
        return (len(self._times) - 1) * 1e9 / max(self._times[-1] - self._times[0], 1)
