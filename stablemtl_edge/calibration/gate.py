"""The accuracy gate: per-task metrics of candidate pipelines against fp32 on held-out labelled frames.

A candidate (the int8 pipeline, or one component in int8 with the rest at its fallback precision) runs
through the real :class:`~stablemtl_edge.runtime.Runtime` on the held-out set and is scored with
:func:`stablemtl_edge.eval.evaluate`, like any model. Each task's main metric
(:data:`~stablemtl_edge.eval.MAIN_METRIC`) must stay within a relative change of the fp32 value:
``|m - m_fp32| / |m_fp32| <= threshold`` (default 2%, per task overrides ``depth:0.05``). The change is
counted in both directions: a metric that moves a lot is a quantization error even when it moves the
right way on a small held-out set.

The default held-out set is the procedural generator's *test* split (calibration uses *train*), at the
artifact's processing size, with every task the generator can label; users pass their own labelled
samples (any :class:`~stablemtl_edge.data.sample.Sample` sequence, e.g. a benchmark reader) instead.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import StableMTLError
from ..eval import MAIN_METRIC, EvalResult, evaluate
from ..artifact.manifest import Component, Manifest, Mode, Precision
from ..runtime.api import Runtime
from ..runtime.backends.base import Backend
from ..data.sample import Sample
from ..tasks import TASK_NAMES, get_task
from ..records import KeyEnum

__all__ = [
    "DEFAULT_THRESHOLD",
    "OnGateFail",
    "GateThresholds",
    "TaskVerdict",
    "PipelineRun",
    "heldout_samples",
    "run_pipeline",
    "judge",
]

DEFAULT_THRESHOLD = 0.02
_UNETS = (Component.UNET, Component.UNET_MAIN)


class OnGateFail(KeyEnum):
    """What a failed gate does: keep the failing components at fp16, or fail the command."""

    FALLBACK = "fallback"
    ERROR = "error"


@dataclass(frozen=True)
class GateThresholds:
    """Allowed relative change of each task's main metric.

    Attributes:
        default: for every task without its own value.
        per_task: task key -> threshold.
    """

    default: float = DEFAULT_THRESHOLD
    per_task: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for key, value in {"default": self.default, **self.per_task}.items():
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise StableMTLError(f"gate threshold for {key} must be a number >= 0 (0.02 = 2%), got {value!r}")

    def of(self, task: str) -> float:
        return float(self.per_task.get(task, self.default))

    @classmethod
    def parse(cls, specs: str | Iterable[str] | None) -> GateThresholds:
        """Parse ``"0.02"``, ``"depth:0.05"`` or a comma-separated / repeated mix of both.

        Raises:
            StableMTLError: an unknown task or a value that is not a non-negative number.
        """
        if specs is None:
            return cls()
        items = [specs] if isinstance(specs, str) else list(specs)
        default = DEFAULT_THRESHOLD
        per_task: dict[str, float] = {}
        for item in (part.strip() for text in items for part in str(text).split(",")):
            if not item:
                continue
            task, sep, value = item.rpartition(":")
            try:
                number = float(value)
            except ValueError:
                raise StableMTLError(
                    f"gate threshold `{item}` is not a number: write 0.02 (2% for every task) or depth:0.05"
                ) from None
            if sep:
                per_task[get_task(task).key] = number
            else:
                default = number
        return cls(default, per_task)

    def to_dict(self) -> dict[str, Any]:
        return {"default": self.default, "per_task": dict(self.per_task)}

    @classmethod
    def from_dict(cls, d: Any) -> GateThresholds:
        return cls(float(d["default"]), {get_task(k).key: float(v) for k, v in d["per_task"].items()})


@dataclass(frozen=True)
class TaskVerdict:
    """One task of one mode, candidate against fp32."""

    mode: str
    task: str
    metric: str
    reference: float
    candidate: float
    threshold: float

    @property
    def change(self) -> float:
        """Signed relative change ``(candidate - reference) / |reference|`` (NaN when undefined)."""
        if math.isnan(self.reference) or math.isnan(self.candidate):
            return float("nan")
        if self.reference == self.candidate:
            return 0.0
        return (self.candidate - self.reference) / max(abs(self.reference), 1e-12)

    @property
    def passed(self) -> bool:
        if math.isnan(self.reference) and math.isnan(self.candidate):
            return True  # undefined for both (e.g. no valid pixel): nothing to compare
        change = self.change
        return not math.isnan(change) and abs(change) <= self.threshold

    def to_dict(self) -> dict[str, Any]:
        def num(x: float) -> float | None:
            return None if math.isnan(x) else float(x)

        return {
            "mode": self.mode, "task": self.task, "metric": self.metric, "fp32": num(self.reference),
            "candidate": num(self.candidate), "relative_change": num(self.change), "threshold": self.threshold,
            "passed": self.passed,
        }

    @classmethod
    def from_dict(cls, d: Any) -> TaskVerdict:
        """The mirror of :meth:`to_dict` (the change and the verdict are derived again, not read)."""
        def num(x: Any) -> float:
            return float("nan") if x is None else float(x)

        return cls(str(d["mode"]), get_task(d["task"]).key, str(d["metric"]), num(d["fp32"]), num(d["candidate"]),
                   float(d["threshold"]))


@dataclass(frozen=True)
class PipelineRun:
    """One pipeline evaluated on the held-out set.

    Attributes:
        label: ``fp32``, ``fp16``, ``int8`` or ``int8[unet]`` (only that component in int8).
        precisions: component -> precision of the graph that ran.
        results: mode -> metrics.
        ms_per_frame: mode -> mean wall time of one stateless prediction (all tasks), milliseconds.
        unet_ms_per_frame: mode -> mean time of the UNet calls (``unet`` + ``unet_main``) per frame.
    """

    label: str
    precisions: dict[str, str]
    results: dict[str, EvalResult]
    ms_per_frame: dict[str, float]
    unet_ms_per_frame: dict[str, float]

    def to_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "precisions": dict(self.precisions),
            "ms_per_frame": dict(self.ms_per_frame),
            "unet_ms_per_frame": dict(self.unet_ms_per_frame),
            "results": {m: r.to_dict() for m, r in self.results.items()},
        }

    @classmethod
    def from_dict(cls, d: Any) -> PipelineRun:
        return cls(str(d["label"]), {str(k): str(v) for k, v in d["precisions"].items()},
                   {m: EvalResult.from_dict(r) for m, r in d["results"].items()},
                   {str(k): float(v) for k, v in d["ms_per_frame"].items()},
                   {str(k): float(v) for k, v in d["unet_ms_per_frame"].items()})


def heldout_samples(resolution: tuple[int, int], frames: int = 6) -> list[Sample]:
    """Procedural test-split frames at the processing size, cycling the three domains.

    Every domain labels every task it can (``AVAILABLE_TASKS``); the driving domain labels all seven.
    """
    from ..data.procedural import AVAILABLE_TASKS, Domain, Split, procedural_split

    if frames < 1:
        raise StableMTLError(f"the gate needs at least 1 held-out frame, got {frames}")
    domains = (Domain.DRIVING, Domain.INDOOR, Domain.FLYING)
    sources = {d: procedural_split(Split.TEST, d, size=resolution, length=frames, tasks=AVAILABLE_TASKS[d])
               for d in domains}
    return [sources[domains[i % len(domains)]][i // len(domains)] for i in range(frames)]


class _TimedPredictor:
    """A Runtime as an evaluation predictor that also times every prediction and its UNet calls."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.frames = 0
        self.seconds = 0.0
        self.unet_seconds = 0.0

    def predict(self, frame1: np.ndarray, frame2: np.ndarray | None = None) -> dict[str, np.ndarray]:
        start = time.perf_counter()
        out = self.runtime.predict(frame1, frame2)
        self.seconds += time.perf_counter() - start
        self.unet_seconds += sum(r.last_inference_time for c, r in self.runtime.runners.items() if c in _UNETS)
        self.frames += 1
        return out


def run_pipeline(
    directory: str | Path,
    manifest: Manifest,
    precision: Precision,
    label: str,
    samples: Sequence[Sample],
    modes: Sequence[Mode],
    tasks: Sequence[str] = TASK_NAMES,
    threads: int | None = None,
    progress: bool = False,
) -> PipelineRun:
    """Evaluate the components ``manifest`` registers under ``precision`` on ``samples``, per mode."""
    results: dict[str, EvalResult] = {}
    ms: dict[str, float] = {}
    unet_ms: dict[str, float] = {}
    precisions: dict[str, str] = {}
    for mode in modes:
        with Runtime.from_artifacts(
            directory, tasks=list(tasks), mode=mode, backend=Backend.ONNXRUNTIME, precision=precision,
            providers=["CPUExecutionProvider"], threads=threads, manifest=manifest,
        ) as rt:
            predictor = _TimedPredictor(rt)
            result = evaluate(predictor, samples, tasks, benchmark=f"{label} {mode.value}-stream", progress=progress)
            precisions.update({c.value: r.entry.precision.value for c, r in rt.runners.items()})
        results[mode.value] = result
        frames = max(predictor.frames, 1)
        ms[mode.value] = predictor.seconds * 1e3 / frames
        unet_ms[mode.value] = predictor.unet_seconds * 1e3 / frames
    return PipelineRun(label, precisions, results, ms, unet_ms)


def judge(reference: PipelineRun, candidate: PipelineRun, thresholds: GateThresholds) -> list[TaskVerdict]:
    """Compare every task of every mode; a task missing from the candidate is a failure."""
    verdicts = []
    for mode, ref in reference.results.items():
        cand = candidate.results.get(mode)
        for task, res in ref.tasks.items():
            metric = MAIN_METRIC[task]
            value = float("nan") if cand is None or task not in cand.tasks else cand.tasks[task].main_value
            verdicts.append(TaskVerdict(mode, task, metric, res.main_value, value, thresholds.of(task)))
    return verdicts
