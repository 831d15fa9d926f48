"""Typed evaluation results: one frozen dataclass per task family, their directions, JSON and Markdown.

Every scalar metric field carries ``metadata={"higher_is_better": bool}`` so delta_m and reports know its
sign without a second table to keep in sync. Non-scalar fields (per-class IoU) carry no direction and stay
out of delta_m.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields
from typing import ClassVar

from ..errors import StableMTLError
from ..records import JsonRecord
from ..tasks import CLASS_NAMES, TaskName, get_task

__all__ = [
    "DepthMetrics",
    "NormalMetrics",
    "SemanticMetrics",
    "OpticalFlowMetrics",
    "SceneFlowMetrics",
    "IntrinsicMetrics",
    "TaskMetrics",
    "TaskResult",
    "EvalResult",
    "METRICS_TYPE",
    "MAIN_METRIC",
    "higher_is_better",
]


def _lower(doc: str) -> object:
    return field(metadata={"higher_is_better": False, "doc": doc})


def _higher(doc: str) -> object:
    return field(metadata={"higher_is_better": True, "doc": doc})


@dataclass(frozen=True)
class DepthMetrics:
    """Depth after scale-and-shift alignment; each value is the mean of per-frame values (Marigold protocol)."""

    abs_rel: float = _lower("mean |d - d*| / d*")
    sq_rel: float = _lower("mean (d - d*)^2 / d*")
    rmse: float = _lower("sqrt(mean (d - d*)^2), metres")
    rmse_log: float = _lower("sqrt(mean (ln d - ln d*)^2)")
    log10: float = _lower("mean |log10 d - log10 d*|")
    delta1: float = _higher("share with max(d/d*, d*/d) < 1.25")
    delta2: float = _higher("share with max(d/d*, d*/d) < 1.25^2")
    delta3: float = _higher("share with max(d/d*, d*/d) < 1.25^3")
    silog: float = _lower("100 * sqrt(mean e^2 - (mean e)^2), e = ln d - ln d*")


@dataclass(frozen=True)
class NormalMetrics:
    """Angular error in degrees, pooled over every valid pixel of the dataset."""

    mean: float = _lower("mean angular error, degrees")
    median: float = _lower("median angular error, degrees (0.001 degree histogram)")
    within_11_25: float = _higher("share of pixels under 11.25 degrees")
    within_22_5: float = _higher("share of pixels under 22.5 degrees")
    within_30: float = _higher("share of pixels under 30 degrees")


@dataclass(frozen=True)
class SemanticMetrics:
    """From the confusion matrix accumulated over the dataset."""

    miou: float = _higher("mean IoU over the 8 classes (classes absent from labels and predictions skipped)")
    pixel_accuracy: float = _higher("share of valid pixels classified correctly")
    iou: tuple[float, ...] = field(default=(), metadata={"doc": "IoU per class, tasks.CLASS_NAMES order"})


@dataclass(frozen=True)
class OpticalFlowMetrics:
    """After per-channel scale fitting; pixel-weighted over the dataset."""

    epe: float = _lower("end-point error, pixels")
    fl: float = _lower("share of outliers: EPE > 3 px and > 5% of |gt|")


@dataclass(frozen=True)
class SceneFlowMetrics:
    """After per-channel scale fitting; pixel-weighted over the dataset."""

    epe3d: float = _lower("3-D end-point error, metres")
    acc_strict: float = _higher("share with EPE3d < 0.05 m or relative error < 5%")
    acc_relaxed: float = _higher("share with EPE3d < 0.1 m or relative error < 10%")
    outliers: float = _lower("share with EPE3d > 0.3 m or relative error > 10%")


@dataclass(frozen=True)
class IntrinsicMetrics:
    """Albedo or shading after a global scale fit and clipping to [0, 1]; mean of per-frame values."""

    rmse: float = _lower("root mean squared error")
    ssim: float = _higher("structural similarity (Gaussian window, sigma 1.5)")
    lmse: float = _lower("local MSE, 16x16 windows at stride 8, normalised by ground-truth energy")


TaskMetrics = DepthMetrics | NormalMetrics | SemanticMetrics | OpticalFlowMetrics | SceneFlowMetrics | IntrinsicMetrics

METRICS_TYPE: dict[str, type] = {
    TaskName.DEPTH.value: DepthMetrics,
    TaskName.NORMAL.value: NormalMetrics,
    TaskName.SEMANTIC.value: SemanticMetrics,
    TaskName.OPTICAL_FLOW.value: OpticalFlowMetrics,
    TaskName.SCENE_FLOW.value: SceneFlowMetrics,
    TaskName.ALBEDO.value: IntrinsicMetrics,
    TaskName.SHADING.value: IntrinsicMetrics,
}

# The one number per task that summaries, gates and delta_m use by default.
MAIN_METRIC: dict[str, str] = {
    TaskName.DEPTH.value: "abs_rel",
    TaskName.NORMAL.value: "mean",
    TaskName.SEMANTIC.value: "miou",
    TaskName.OPTICAL_FLOW.value: "epe",
    TaskName.SCENE_FLOW.value: "epe3d",
    TaskName.ALBEDO.value: "rmse",
    TaskName.SHADING.value: "rmse",
}


def higher_is_better(task: str | TaskName, metric: str) -> bool:
    """The sign of a metric: True where higher is better."""
    key = get_task(task).key
    for f in fields(METRICS_TYPE[key]):
        if f.name == metric and "higher_is_better" in f.metadata:
            return bool(f.metadata["higher_is_better"])
    names = [f.name for f in fields(METRICS_TYPE[key]) if "higher_is_better" in f.metadata]
    raise StableMTLError(f"`{metric}` is not a scalar metric of `{key}`: choose from {', '.join(names)}")


@dataclass(frozen=True)
class TaskResult:
    """One task's metrics over a set of frames.

    Attributes:
        task: task key.
        frames: number of frames that had a valid label for this task.
        metrics: the task family's metric record.
    """

    task: str
    frames: int
    metrics: TaskMetrics

    @property
    def main_metric(self) -> str:
        return MAIN_METRIC[self.task]

    @property
    def main_value(self) -> float:
        return float(getattr(self.metrics, self.main_metric))

    def scalars(self) -> dict[str, float]:
        """Metric name -> value for every metric that has a direction."""
        return {
            f.name: float(getattr(self.metrics, f.name))
            for f in fields(self.metrics)
            if "higher_is_better" in f.metadata
        }

    def to_dict(self) -> dict:
        """JSON-ready: NaN (an undefined metric) becomes ``null`` so the file stays strict JSON."""
        metrics = {
            k: [_to_json_number(x) for x in v] if isinstance(v, tuple) else _to_json_number(v)
            for k, v in asdict(self.metrics).items()
        }
        return {"task": self.task, "frames": self.frames, "metrics": metrics}

    @classmethod
    def from_dict(cls, data: dict) -> TaskResult:
        task = get_task(data["task"]).key
        kind = METRICS_TYPE[task]
        values = {
            k: tuple(_from_json_number(x) for x in v) if isinstance(v, list) else _from_json_number(v)
            for k, v in dict(data["metrics"]).items()
        }
        try:
            metrics = kind(**values)
        except TypeError as exc:
            raise StableMTLError(f"result for `{task}` has unexpected metric fields: {exc}") from None
        return cls(task=task, frames=int(data["frames"]), metrics=metrics)


def _to_json_number(x: float) -> float | None:
    return None if math.isnan(x) else float(x)


def _from_json_number(x: float | None) -> float:
    return float("nan") if x is None else float(x)


def _fmt(x: float) -> str:
    return "nan" if math.isnan(x) else f"{x:.4f}"


@dataclass(frozen=True)
class EvalResult(JsonRecord):
    """Metrics of one predictor on one sample set (a benchmark or the procedural split).

    Attributes:
        benchmark: name of the sample set.
        tasks: task key -> result, in canonical task order.
        info: free-form provenance (artifact path, precision, backend ...), copied into the JSON.
    """

    benchmark: str
    tasks: dict[str, TaskResult]
    info: dict[str, str] = field(default_factory=dict)

    FORMAT_VERSION: ClassVar[int] = 1
    record_name: ClassVar[str] = "evaluation result (written by stablemtl-eval)"

    def __getitem__(self, task: str | TaskName) -> TaskResult:
        key = get_task(task).key
        try:
            return self.tasks[key]
        except KeyError:
            raise StableMTLError(
                f"no `{key}` result in `{self.benchmark}` (it has: {', '.join(self.tasks) or 'none'})"
            ) from None

    def to_dict(self) -> dict:
        return {
            "format_version": self.FORMAT_VERSION,
            "benchmark": self.benchmark,
            "info": dict(self.info),
            "tasks": {k: v.to_dict() for k, v in self.tasks.items()},
        }

    @classmethod
    def from_dict(cls, data: dict) -> EvalResult:
        if data.get("format_version") != cls.FORMAT_VERSION:
            raise StableMTLError(
                f"result format version {data.get('format_version')!r} is not {cls.FORMAT_VERSION}: "
                "re-run the evaluation with this version of stablemtl-edge"
            )
        tasks = {k: TaskResult.from_dict(v) for k, v in data["tasks"].items()}
        return cls(benchmark=str(data["benchmark"]), tasks=tasks, info=dict(data.get("info", {})))

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, allow_nan=False)

    def to_markdown(self) -> str:
        """One row per task: frames, main metric with its direction, then every scalar metric."""
        lines = [
            f"### {self.benchmark}",
            "",
            "| task | frames | main metric | value | all metrics |",
            "|---|---:|---|---:|---|",
        ]
        for key, res in self.tasks.items():
            arrow = "↑" if higher_is_better(key, res.main_metric) else "↓"
            rest = ", ".join(f"{k} {_fmt(v)}" for k, v in res.scalars().items())
            lines.append(f"| {key} | {res.frames} | {res.main_metric} {arrow} | {_fmt(res.main_value)} | {rest} |")
        sem = self.tasks.get(TaskName.SEMANTIC.value)
        if sem is not None and sem.metrics.iou:
            lines += ["", "| class | IoU |", "|---|---:|"]
            lines += [f"| {n} | {_fmt(v)} |" for n, v in zip(CLASS_NAMES, sem.metrics.iou)]
        return "\n".join(lines) + "\n"
