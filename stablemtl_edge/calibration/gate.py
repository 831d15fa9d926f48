"""The accuracy gate: per-task metrics of candidate pipelines against fp32 on held-out labelled frames.

A candidate (the int8 pipeline, or one component in int8 with the rest at its fallback precision) runs
through the real :class:`~stablemtl_edge.runtime.Runtime` on the held-out set and is scored by the
evaluation's own accumulators, like any model. Each task's main metric
(:data:`~stablemtl_edge.eval.MAIN_METRIC`) must stay within a relative change of the fp32 value on the
same frames, ``|m - m_fp32| / |m_fp32| <= threshold`` (default 2%, per task overrides ``depth:0.05``),
counted in both directions: a metric that moves a lot is a quantization error even when it moves the
right way.

One number on a few frames measures noise, so every change comes with a paired bootstrap interval
(:mod:`.bootstrap`, 1000 resamples, 95%): **pass** when the whole interval lies within the threshold,
**fail** when it lies entirely beyond it; otherwise the gate adds held-out frames, ``frames`` at a time, up
to ``max_frames``, and judges again; an interval that still straddles the threshold there is
**inconclusive**, which counts as not passed (the component stays at its fallback precision and the report
gives the numbers). A task seen on fewer than ``min_frames`` frames is inconclusive unless it did not change
at all. Judging again as frames arrive is a sequential test: each look spends some of the 5% error, so the
cap is kept small (three looks by default) and a pass needs the whole interval inside the threshold.

The default held-out set is the procedural generator's *test* split (calibration uses *train*), at the
artifact's processing size, with every task the generator can label; users pass their own labelled
samples (any :class:`~stablemtl_edge.data.sample.Sample` sequence, e.g. a benchmark reader) instead.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, overload

import numpy as np

from ..errors import StableMTLError
from ..eval.accumulate import FrameStatistics
from ..eval.evaluate import Evaluation
from ..eval.results import MAIN_METRIC, EvalResult
from ..artifact.manifest import Component, Manifest, Mode, Precision
from ..runtime.api import Runtime
from ..runtime.backends.base import Backend
from ..data.sample import Sample
from ..tasks import TASK_NAMES, get_task
from ..records import KeyEnum
from .bootstrap import paired_bootstrap, relative_change

__all__ = [
    "DEFAULT_THRESHOLD",
    "Gate",
    "GateOptions",
    "GateRun",
    "GateThresholds",
    "HeldoutFrames",
    "OnGateFail",
    "PipelineRun",
    "TaskVerdict",
    "Trial",
    "Verdict",
    "compare",
    "heldout_samples",
]

DEFAULT_THRESHOLD = 0.02
#: Held-out frames judged first, and added at a time while a verdict is open (a multiple of the 3 domains).
DEFAULT_GATE_FRAMES = 24
#: The most held-out frames one verdict may use.
DEFAULT_GATE_MAX_FRAMES = 72
_UNETS = (Component.UNET, Component.UNET_MAIN)


class OnGateFail(KeyEnum):
    """What a failed gate does: keep the failing components at fp16, or fail the command."""

    FALLBACK = "fallback"
    ERROR = "error"


class Verdict(KeyEnum):
    """One task's verdict: the change's interval within the threshold, beyond it, or straddling it."""

    PASS = "pass"
    FAIL = "fail"
    INCONCLUSIVE = "inconclusive"


@dataclass(frozen=True)
class GateOptions:
    """How many held-out frames the gate uses and how it resamples them.

    Attributes:
        frames: frames judged first, and added at a time while any verdict is inconclusive.
        max_frames: the most frames a verdict may use; still inconclusive there, it stays inconclusive.
        resamples: paired bootstrap resamples.
        confidence: coverage of the interval.
        seed: resampling seed.
        min_frames: the fewest paired frames whose interval is trusted: a bootstrap of one or two frames has
            (almost) no spread to resample, so a task seen on fewer frames cannot pass or fail on its
            interval unless every frame is unchanged (it is inconclusive until frames are added).
    """

    frames: int = DEFAULT_GATE_FRAMES
    max_frames: int = DEFAULT_GATE_MAX_FRAMES
    resamples: int = 1000
    confidence: float = 0.95
    seed: int = 0
    min_frames: int = 5

    def __post_init__(self) -> None:
        if self.frames < 1:
            raise StableMTLError(f"the gate needs at least 1 held-out frame, got {self.frames}")
        if self.max_frames < self.frames:
            raise StableMTLError(f"the gate's frame cap ({self.max_frames}) is below its first frame count "
                                 f"({self.frames}): raise --gate-max-frames or lower --gate-frames")
        if self.resamples < 1:
            raise StableMTLError(f"the gate needs at least 1 bootstrap resample, got {self.resamples}")
        if not 0 < self.confidence < 1:
            raise StableMTLError(f"the gate's confidence must lie strictly between 0 and 1, got {self.confidence}")
        if self.min_frames < 1:
            raise StableMTLError(f"the gate's fewest trusted frames must be >= 1, got {self.min_frames}")

    def to_dict(self) -> dict[str, Any]:
        return {"frames": self.frames, "max_frames": self.max_frames, "resamples": self.resamples,
                "confidence": self.confidence, "seed": self.seed, "min_frames": self.min_frames}

    @classmethod
    def from_dict(cls, d: Any) -> GateOptions:
        return cls(int(d["frames"]), int(d["max_frames"]), int(d["resamples"]), float(d["confidence"]),
                   int(d["seed"]), int(d["min_frames"]))


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
    """One task of one mode, candidate against fp32 on the same frames.

    Attributes:
        mode, task, metric: what was judged.
        reference, candidate: the main metric of fp32 and of the candidate on the paired frames.
        threshold: the allowed relative change.
        low, high: the bootstrap interval of the relative change.
        frames: paired frames used.
        min_frames: the fewest frames whose interval is trusted (:attr:`GateOptions.min_frames`).
    """

    mode: str
    task: str
    metric: str
    reference: float
    candidate: float
    threshold: float
    low: float
    high: float
    frames: int
    min_frames: int = 1

    @property
    def change(self) -> float:
        """Signed relative change ``(candidate - reference) / |reference|`` (NaN when undefined)."""
        return float(relative_change(self.reference, self.candidate))

    @property
    def verdict(self) -> Verdict:
        if math.isnan(self.reference) and math.isnan(self.candidate):
            return Verdict.PASS  # undefined for both (e.g. no valid pixel): nothing to compare
        if math.isnan(self.change) or math.isnan(self.low) or math.isnan(self.high):
            return Verdict.FAIL  # the candidate lost the task
        if self.frames < self.min_frames and not self.low == self.high == 0.0:
            return Verdict.INCONCLUSIVE  # too few frames for the interval to mean anything
        if -self.threshold <= self.low and self.high <= self.threshold:
            return Verdict.PASS
        if self.low > self.threshold or self.high < -self.threshold:
            return Verdict.FAIL
        return Verdict.INCONCLUSIVE

    @property
    def passed(self) -> bool:
        return self.verdict is Verdict.PASS

    def describe(self) -> str:
        """One phrase: ``multi-stream semantic miou 0.1518 -> 0.148 (-2.49%, interval [-4.10%, -0.90%] on 24
        frames, threshold 2.00%: fail)``."""
        change = "undefined" if math.isnan(self.change) else f"{self.change * 100:+.2f}%"
        interval = ("no interval" if math.isnan(self.low) else
                    f"interval [{self.low * 100:+.2f}%, {self.high * 100:+.2f}%]")
        return (f"{self.mode}-stream {self.task} {self.metric} {self.reference:.4g} -> {self.candidate:.4g} "
                f"({change}, {interval} on {self.frames} frames, threshold {self.threshold * 100:.2f}%: "
                f"{self.verdict.value})")

    def to_dict(self) -> dict[str, Any]:
        def num(x: float) -> float | None:
            return None if math.isnan(x) else float(x)

        return {
            "mode": self.mode, "task": self.task, "metric": self.metric, "fp32": num(self.reference),
            "candidate": num(self.candidate), "relative_change": num(self.change),
            "interval": [num(self.low), num(self.high)], "frames": self.frames, "min_frames": self.min_frames,
            "threshold": self.threshold, "verdict": self.verdict.value, "passed": self.passed,
        }

    @classmethod
    def from_dict(cls, d: Any) -> TaskVerdict:
        """The mirror of :meth:`to_dict` (the change and the verdict are derived again, not read)."""
        def num(x: Any) -> float:
            return float("nan") if x is None else float(x)

        low, high = d["interval"]
        return cls(str(d["mode"]), get_task(d["task"]).key, str(d["metric"]), num(d["fp32"]), num(d["candidate"]),
                   float(d["threshold"]), num(low), num(high), int(d["frames"]), int(d["min_frames"]))


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


class HeldoutFrames(Sequence[Sample]):
    """The procedural test split's frames at the processing size, cycling the three domains, rendered when read.

    Frame ``i`` depends only on ``i`` (not on how many frames there are), so a gate that grows its held-out
    set keeps the frames it has already judged. Every domain labels every task it can (``AVAILABLE_TASKS``);
    the driving domain labels all seven.
    """

    def __init__(self, resolution: tuple[int, int], frames: int) -> None:
        from ..data.procedural import AVAILABLE_TASKS, Domain, Split, procedural_split

        if frames < 1:
            raise StableMTLError(f"the gate needs at least 1 held-out frame, got {frames}")
        self._domains = (Domain.DRIVING, Domain.INDOOR, Domain.FLYING)
        per_domain = -(-frames // len(self._domains))
        self._sources = [procedural_split(Split.TEST, d, size=resolution, length=per_domain, tasks=AVAILABLE_TASKS[d])
                         for d in self._domains]
        self._frames = frames

    def __len__(self) -> int:
        return self._frames

    @overload
    def __getitem__(self, index: int) -> Sample: ...
    @overload
    def __getitem__(self, index: slice) -> list[Sample]: ...

    def __getitem__(self, index: int | slice) -> Sample | list[Sample]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(self._frames))]
        if not -self._frames <= index < self._frames:
            raise IndexError(f"held-out frame {index} of {self._frames}")
        index %= self._frames
        return self._sources[index % len(self._domains)][index // len(self._domains)]


def heldout_samples(resolution: tuple[int, int], frames: int = DEFAULT_GATE_FRAMES) -> HeldoutFrames:
    """The default held-out set: :class:`HeldoutFrames` of the procedural test split."""
    return HeldoutFrames(resolution, frames)


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


class Trial(Protocol):
    """What the gate judges: a pipeline scored on a growing prefix of the held-out samples."""

    label: str

    @property
    def frames(self) -> int:
        """Samples scored so far (the prefix ``samples[:frames]``)."""
        ...

    def extend(self, samples: Sequence[Sample], upto: int) -> None:
        """Score ``samples[frames:upto]`` too."""
        ...

    def statistics(self) -> dict[str, dict[str, FrameStatistics]]:
        """Mode -> task -> per-frame rows of the main metric."""
        ...


class GateRun:
    """The components ``manifest`` registers under ``precision``, scored per mode on a growing prefix.

    Each :meth:`extend` opens the runtime of every mode, scores the new samples into the same
    :class:`~stablemtl_edge.eval.evaluate.Evaluation` and closes it again (the sessions are not held
    between batches), and adds the time of every prediction.
    """

    def __init__(self, directory: str | Path, manifest: Manifest, precision: Precision, label: str,
                 modes: Sequence[Mode], tasks: Sequence[str] = TASK_NAMES, threads: int | None = None,
                 progress: bool = False, decoder: str = "full") -> None:
        self.directory, self.manifest, self.precision, self.label = Path(directory), manifest, precision, label
        self.decoder = decoder  # ``tiny``: the distilled decoder decodes (the runtime's ``decoder`` option)
        self.modes, self.tasks, self.threads, self.progress = tuple(modes), tuple(tasks), threads, progress
        self.evaluations = {m.value: Evaluation(self.tasks, benchmark=f"{label} {m.value}-stream") for m in modes}
        self.precisions: dict[str, str] = {}
        self._seconds = {m.value: 0.0 for m in modes}
        self._unet_seconds = {m.value: 0.0 for m in modes}
        self._predictions = {m.value: 0 for m in modes}

    @property
    def frames(self) -> int:
        return min(e.samples for e in self.evaluations.values())

    def extend(self, samples: Sequence[Sample], upto: int) -> None:
        start, upto = self.frames, min(upto, len(samples))
        if upto <= start:
            return
        if self.progress:
            print(f"calibration: evaluating {self.label} on held-out frames {start + 1}-{upto}", file=sys.stderr,
                  flush=True)
        batch = [samples[i] for i in range(start, upto)]  # rendered once for every mode
        for mode in self.modes:
            with Runtime.from_artifacts(
                self.directory, tasks=list(self.tasks), mode=mode, backend=Backend.ONNXRUNTIME,
                precision=self.precision, providers=["CPUExecutionProvider"], threads=self.threads,
                manifest=self.manifest, decoder=self.decoder,
            ) as rt:
                predictor = _TimedPredictor(rt)
                self.evaluations[mode.value].add(predictor, batch, self.progress)
                self.precisions.update({r.entry.component.value: r.entry.precision.value for r in rt.runners.values()})
            self._seconds[mode.value] += predictor.seconds
            self._unet_seconds[mode.value] += predictor.unet_seconds
            self._predictions[mode.value] += predictor.frames

    def statistics(self) -> dict[str, dict[str, FrameStatistics]]:
        return {m: e.frame_statistics() for m, e in self.evaluations.items()}

    def record(self) -> PipelineRun:
        """What the report keeps: metrics over every frame scored, and the mean time per prediction."""
        def ms(seconds: dict[str, float]) -> dict[str, float]:
            return {m: s * 1e3 / max(self._predictions[m], 1) for m, s in seconds.items()}

        return PipelineRun(self.label, dict(self.precisions), {m: e.result() for m, e in self.evaluations.items()},
                           ms(self._seconds), ms(self._unet_seconds))


def compare(reference: Trial, candidate: Trial, thresholds: GateThresholds, options: GateOptions,
            frames: int) -> list[TaskVerdict]:
    """Every task of every mode of ``reference``, on the first ``frames`` samples; a task the candidate lacks
    fails."""
    verdicts = []
    cand_stats = candidate.statistics()
    for mode, tasks in reference.statistics().items():
        for task, ref in tasks.items():
            metric = MAIN_METRIC[task]
            cand = cand_stats.get(mode, {}).get(task)
            if cand is None:
                value = ref.select([p for p in ref.positions if p < frames]).metric()
                verdicts.append(TaskVerdict(mode, task, metric, value, float("nan"), thresholds.of(task),
                                            float("nan"), float("nan"), 0, options.min_frames))
                continue
            ci = paired_bootstrap(ref, cand, frames=frames, resamples=options.resamples,
                                  confidence=options.confidence, seed=options.seed)
            verdicts.append(TaskVerdict(mode, task, metric, ci.reference, ci.candidate, thresholds.of(task),
                                        ci.low, ci.high, ci.frames, options.min_frames))
    return verdicts


class Gate:
    """Judges candidates against one fp32 reference, adding held-out frames while a verdict is open.

    Args:
        reference: the fp32 pipeline (extended as far as the candidates need).
        samples: the held-out samples; a verdict uses at most ``min(options.max_frames, len(samples))``.
        thresholds: allowed relative change per task.
        options: frame counts and bootstrap settings.
        progress: a line on stderr when frames are added.
    """

    def __init__(self, reference: Trial, samples: Sequence[Sample], thresholds: GateThresholds,
                 options: GateOptions = GateOptions(), progress: bool = False) -> None:
        self.reference, self.samples, self.thresholds, self.options = reference, samples, thresholds, options
        self.cap = min(options.max_frames, len(samples))
        self.progress = progress

    @property
    def first(self) -> int:
        """Frames every candidate is judged on first."""
        return min(self.options.frames, self.cap)

    def judge(self, candidate: Trial) -> list[TaskVerdict]:
        """The candidate's verdicts, on as many frames as it took to settle them (at most the cap)."""
        frames = self.first
        while True:
            for run in (self.reference, candidate):
                run.extend(self.samples, frames)
            verdicts = compare(self.reference, candidate, self.thresholds, self.options, frames)
            open_ = [v for v in verdicts if v.verdict is Verdict.INCONCLUSIVE]
            if not open_ or frames >= self.cap:
                return verdicts
            frames = min(frames + self.options.frames, self.cap)
            if self.progress:
                print(f"calibration: {candidate.label}: {len(open_)} task(s) inconclusive, judging again on {frames} "
                      "frames", file=sys.stderr, flush=True)
