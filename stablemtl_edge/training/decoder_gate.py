"""The distilled decoder's accuracy gate: each task's main metric, tiny against full decoder, on held-out
frames with ground truth.

Both decoders read the same predicted latents, so the UNets run once per frame and the two decodes are
scored on the same frames; the verdicts come from the paired bootstrap gate that judges int8
(:class:`~stablemtl_edge.calibration.gate.Gate`): **pass** when the interval of a task's relative change lies
within the threshold (default 2%), **fail** when it lies beyond, otherwise frames are added up to a cap and
the task is **inconclusive** there. A task that misses is named with its numbers: the runtime can keep the
full decoder (``--decoder full``) where it matters.
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from ..atomic import atomic_write_text
from ..calibration.gate import Gate, GateOptions, GateThresholds, HeldoutFrames, TaskVerdict
from ..data.sample import Sample
from ..eval.accumulate import FrameStatistics
from ..eval.evaluate import Evaluation
from ..model.stablemtl import StableMTL
from ..model.tiny_decoder import TinyDecoder
from ..records import JsonRecord
from ..tasks import TaskSpec

__all__ = ["DecoderGateReport", "decoder_gate", "GATE_JSON", "GATE_MD"]

GATE_JSON, GATE_MD = "decoder_gate.json", "decoder_gate.md"


class _Latents:
    """The model's predicted latents per frame pair, computed once and read by both decoders."""

    def __init__(self, model: StableMTL) -> None:
        self.model, self.mode = model, "multi" if model.multi_stream else "single"
        self._cache: dict[bytes, tuple[tuple[TaskSpec, ...], torch.Tensor]] = {}

    def __call__(self, frame1: np.ndarray, frame2: np.ndarray | None) -> tuple[tuple[TaskSpec, ...], torch.Tensor]:
        key = hashlib.blake2b(frame1.tobytes() + (b"" if frame2 is None else frame2.tobytes()), digest_size=16).digest()
        if key not in self._cache:
            self._cache[key] = self.model.predict_latents(frame1, frame2, None, self.mode)
        return self._cache[key]


class _DecoderTrial:
    """One decoder as a gate trial: the model's latents decoded by it, scored by the evaluation's accumulators."""

    def __init__(self, label: str, latents: _Latents, decode: Callable[[torch.Tensor], torch.Tensor]) -> None:
        self.label, self.latents, self.decode = label, latents, decode
        self.evaluation = Evaluation(benchmark=f"{label} decoder")

    @property
    def frames(self) -> int:
        return self.evaluation.samples

    @torch.no_grad()
    def predict(self, frame1: np.ndarray, frame2: np.ndarray | None = None) -> dict[str, np.ndarray]:
        specs, z = self.latents(frame1, frame2)
        images = self.decode(z).clamp(-1.0, 1.0).permute(0, 2, 3, 1).float().cpu().numpy()
        return {t.key: t.codec.decode(img) for t, img in zip(specs, images)}

    def extend(self, samples: Sequence[Sample], upto: int) -> None:
        self.evaluation.add(self, [samples[i] for i in range(self.frames, min(upto, len(samples)))], progress=False)

    def statistics(self) -> dict[str, dict[str, FrameStatistics]]:
        return {self.latents.mode: self.evaluation.frame_statistics()}


@dataclass(frozen=True)
class DecoderGateReport(JsonRecord):
    """Per task: the main metric with the full and the tiny decoder, the change's interval and the verdict."""

    record_name: ClassVar[str] = "decoder gate report"
    verdicts: tuple[TaskVerdict, ...]
    options: GateOptions
    thresholds: GateThresholds

    @property
    def passed(self) -> bool:
        return all(v.passed for v in self.verdicts)

    def missed(self) -> list[TaskVerdict]:
        return [v for v in self.verdicts if not v.passed]

    def summary(self) -> str:
        """One line: every task within the gate, or which ones are not and why."""
        if self.passed:
            return f"decoder gate: pass on all {len(self.verdicts)} tasks"
        misses = "; ".join(v.describe() for v in self.missed())
        return f"decoder gate: {len(self.missed())} of {len(self.verdicts)} tasks not within it ({misses})"

    def markdown(self) -> str:
        lines = ["# Distilled decoder against the full decoder", "",
                 f"Held-out procedural test frames with ground truth; paired bootstrap ({self.options.resamples} "
                 f"resamples, {self.options.confidence:.0%}); frames {self.options.frames} at a time up to "
                 f"{self.options.max_frames}; threshold {self.thresholds.default:.0%} relative change per task.", "",
                 "| task | metric | full | tiny | change | interval | frames | verdict |",
                 "|---|---|---:|---:|---:|---|---:|---|"]
        for v in self.verdicts:
            change = "n/a" if np.isnan(v.change) else f"{v.change * 100:+.2f}%"
            interval = "n/a" if np.isnan(v.low) else f"[{v.low * 100:+.2f}%, {v.high * 100:+.2f}%]"
            lines.append(f"| {v.task} | {v.metric} | {v.reference:.4g} | {v.candidate:.4g} | {change} | {interval} | "
                         f"{v.frames} | {v.verdict.value} |")
        verdict = ("every task within the gate" if self.passed else
                   "not within the gate: " + ", ".join(f"{v.task} ({v.verdict.value})" for v in self.missed())
                   + "; keep `--decoder full` where these tasks matter")
        return "\n".join(lines) + f"\n\nVerdict: {verdict}.\n"

    def to_dict(self) -> dict[str, Any]:
        return {"passed": self.passed, "options": self.options.to_dict(), "thresholds": self.thresholds.to_dict(),
                "verdicts": [v.to_dict() for v in self.verdicts]}

    @classmethod
    def from_dict(cls, d: Any) -> DecoderGateReport:
        return cls(tuple(TaskVerdict.from_dict(v) for v in d["verdicts"]), GateOptions.from_dict(d["options"]),
                   GateThresholds.from_dict(d["thresholds"]))

    def write(self, directory: str | Path) -> tuple[Path, Path]:
        directory = Path(directory)
        md = directory / GATE_MD
        atomic_write_text(md, self.markdown())
        return self.save(directory / GATE_JSON), md


def decoder_gate(model: StableMTL, student: TinyDecoder, size: tuple[int, int],
                 options: GateOptions = GateOptions(), thresholds: GateThresholds = GateThresholds(),
                 samples: Sequence[Sample] | None = None, progress: bool = False) -> DecoderGateReport:
    """Judge ``student`` against the model's own decoder on held-out frames (the procedural test split at
    ``size`` unless ``samples`` are given), in the model's own mode."""
    model.eval()
    student = student.to(model.device).eval()
    samples = HeldoutFrames(size, options.max_frames) if samples is None else samples
    latents = _Latents(model)
    full = _DecoderTrial("full", latents, model.decode)
    tiny = _DecoderTrial("tiny", latents, student)
    if progress:
        print(f"decoder gate: judging the distilled decoder on up to {min(options.max_frames, len(samples))} "
              "held-out frames", file=sys.stderr, flush=True)
    verdicts = Gate(full, samples, thresholds, options, progress=progress).judge(tiny)
    return DecoderGateReport(tuple(verdicts), options, thresholds)

