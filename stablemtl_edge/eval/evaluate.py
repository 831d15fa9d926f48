"""The evaluation loop shared by the CLI, training validation and the int8 gate, decoupled from any model.

A *predictor* is anything with ``predict(frame1, frame2) -> dict[str, np.ndarray]`` returning predictions in
the runtime's units (``stablemtl_edge.runtime.Runtime`` is one; so is :class:`TrivialBaseline`). Every
sample is scored on the tasks it labels, after resizing predictions to the label's resolution.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol, runtime_checkable

import cv2
import numpy as np

from ..errors import StableMTLError
from ..data.sample import Sample
from ..tasks import NUM_CLASSES, TaskName, TaskSpec, get_task, parse_tasks
from .accumulate import Accumulator, FrameStatistics
from .depth_metrics import DepthAccumulator
from .flow_metrics import OpticalFlowAccumulator, SceneFlowAccumulator
from .intrinsic_metrics import IntrinsicAccumulator
from .normal_metrics import NormalAccumulator
from .results import EvalResult, TaskResult
from .semantic_metrics import SemanticAccumulator

__all__ = [
    "Predictor",
    "DEPTH_RANGES",
    "Evaluation",
    "make_accumulator",
    "resize_prediction",
    "evaluate",
    "TrivialBaseline",
    "fit_trivial_baseline",
]

# Depth evaluation range (metres) of each benchmark, keyed by Sample.domain; other domains use each
# frame's own valid ground-truth range.
DEPTH_RANGES: dict[str, tuple[float, float]] = {
    "diode": (0.6, 350.0),
    "kitti": (1e-3, 80.0),
}


@runtime_checkable
class Predictor(Protocol):
    """What :func:`evaluate` needs from a model."""

    def predict(self, frame1: np.ndarray, frame2: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """uint8 RGB ``(H, W, 3)`` frame(s) -> task key -> prediction in runtime units."""
        ...


def make_accumulator(task: str | TaskName | TaskSpec, depth_range: tuple[float, float] | None = None) -> Accumulator:
    """The accumulator that implements a task's evaluation protocol."""
    name = get_task(task).name
    if name is TaskName.DEPTH:
        return DepthAccumulator(depth_range)
    if name is TaskName.NORMAL:
        return NormalAccumulator()
    if name is TaskName.SEMANTIC:
        return SemanticAccumulator()
    if name is TaskName.OPTICAL_FLOW:
        return OpticalFlowAccumulator()
    if name is TaskName.SCENE_FLOW:
        return SceneFlowAccumulator()
    return IntrinsicAccumulator()  # albedo, shading


def resize_prediction(task: str | TaskName | TaskSpec, pred: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bring a prediction to the label's ``(H, W)``: nearest neighbour for class ids, bilinear otherwise.

    Normals are renormalised after interpolation. Flows stay in normalised units (their scale is fitted
    afterwards, so the resize factor does not matter).
    """
    spec = get_task(task)
    pred = np.asarray(pred)
    h, w = size
    if pred.shape[:2] == (h, w):
        return pred
    if spec.name is TaskName.SEMANTIC:
        return cv2.resize(pred.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST)
    out = cv2.resize(pred.astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR)
    if out.ndim == 2 and pred.ndim == 3:  # OpenCV drops a trailing channel axis of size 1
        out = out[..., None]
    if spec.name is TaskName.NORMAL:
        out = out / np.maximum(np.linalg.norm(out, axis=-1, keepdims=True), 1e-6)
    return out


def _check_prediction(spec: TaskSpec, pred: np.ndarray, label_shape: tuple[int, ...], sample: Sample) -> None:
    want = label_shape[2:] if len(label_shape) > 2 else ()
    have = pred.shape[2:] if pred.ndim > 2 else ()
    if pred.ndim < 2 or have != want:
        raise StableMTLError(
            f"`{spec.key}` prediction for `{sample.name}` has shape {pred.shape}, expected (H, W{', ' if want else ''}"
            f"{', '.join(map(str, want))}) as the runtime returns it: check the predictor"
        )


class Evaluation:
    """An evaluation that can be fed more samples: the accumulators live between :meth:`add` calls.

    The int8 gate uses it to grow its held-out set while a verdict is open, and reads each task's
    :meth:`frame_statistics` to resample frames. :func:`evaluate` is one :meth:`add` and a :meth:`result`.

    Args:
        tasks: tasks to score (None = all seven); a sample contributes to those it labels.
        benchmark: name written into the result.
        depth_range: depth range in metres; None = :data:`DEPTH_RANGES` by sample domain, else per frame.
    """

    def __init__(self, tasks: str | Iterable[str | TaskName] | None = None, *, benchmark: str = "",
                 depth_range: tuple[float, float] | None = None) -> None:
        self.specs = parse_tasks(tasks)
        self.benchmark = benchmark
        self.depth_range = depth_range
        self.samples = 0  # samples fed so far: the position of the next one
        self._accs: dict[str, Accumulator] = {}
        self._positions: dict[str, list[int]] = {}

    def add(self, predictor: Predictor, samples: Iterable[Sample], progress: bool = True) -> Evaluation:
        """Score ``predictor`` on ``samples`` (consumed once), after every sample added before."""
        for sample in _progress(samples, self.benchmark, progress):
            position, self.samples = self.samples, self.samples + 1
            wanted = [s for s in self.specs if s.key in sample.labels]
            if not wanted:
                continue
            preds = predictor.predict(sample.frame1, sample.frame2)
            for spec in wanted:
                if spec.key not in preds:
                    raise StableMTLError(
                        f"the predictor returned no `{spec.key}` for `{sample.name}` (it returned: "
                        f"{', '.join(preds) or 'nothing'}): configure it for the tasks being evaluated"
                    )
                label = sample.labels[spec.key]
                pred = np.asarray(preds[spec.key])
                _check_prediction(spec, pred, np.shape(label.value), sample)
                pred = resize_prediction(spec, pred, np.shape(label.value)[:2])
                if spec.key not in self._accs:
                    rng = self.depth_range if self.depth_range is not None else DEPTH_RANGES.get(sample.domain)
                    self._accs[spec.key] = make_accumulator(spec, rng)
                    self._positions[spec.key] = []
                acc = self._accs[spec.key]
                before = acc.frames
                acc.update(pred, label.value, label.valid)
                if acc.frames > before:
                    self._positions[spec.key].append(position)
        return self

    def result(self) -> EvalResult:
        """An :class:`EvalResult` holding only tasks that had at least one valid frame."""
        results = {
            s.key: TaskResult(task=s.key, frames=self._accs[s.key].frames, metrics=self._accs[s.key].result())
            for s in self.specs
            if s.key in self._accs and self._accs[s.key].frames > 0
        }
        return EvalResult(benchmark=self.benchmark, tasks=results)

    def frame_statistics(self) -> dict[str, FrameStatistics]:
        """Task key -> the main metric's per-frame rows, for every task with at least one valid frame."""
        return {
            key: FrameStatistics(key, tuple(self._positions[key]), acc.frame_rows(), acc.main_from_sums)
            for key, acc in self._accs.items()
            if acc.frames > 0
        }


def evaluate(
    predictor: Predictor,
    samples: Iterable[Sample],
    tasks: str | Iterable[str | TaskName] | None = None,
    *,
    benchmark: str = "",
    depth_range: tuple[float, float] | None = None,
    progress: bool = True,
) -> EvalResult:
    """Score a predictor on labelled samples, one frame at a time.

    Args:
        predictor: see :class:`Predictor`; called once per sample with ``sample.frame2`` (None when the
            sample has no second frame).
        samples: any iterable of :class:`~stablemtl_edge.data.sample.Sample` (a benchmark reader, the
            procedural split); consumed once.
        tasks: tasks to score (None = all seven); a sample contributes to those it labels.
        benchmark: name written into the result.
        depth_range: depth range in metres; None = :data:`DEPTH_RANGES` by sample domain, else per frame.
        progress: show a tqdm bar on stderr when tqdm is installed.

    Returns:
        An :class:`EvalResult` holding only tasks that had at least one valid frame.
    """
    evaluation = Evaluation(tasks, benchmark=benchmark, depth_range=depth_range)
    return evaluation.add(predictor, samples, progress).result()


def _progress(samples: Iterable[Sample], name: str, enabled: bool) -> Iterable[Sample]:
    if not enabled:
        return samples
    try:
        from tqdm import tqdm
    except ImportError:  # tqdm is optional for a robot image; evaluation still runs
        return samples
    total = len(samples) if hasattr(samples, "__len__") else None
    return tqdm(samples, total=total, desc=f"eval {name}".strip(), unit="frame", leave=False)


class TrivialBaseline:
    """Predicts the same thing for every frame, so model results can be read against a floor.

    Depth: a constant (after the scale-and-shift fit this is each frame's mean valid depth); normal: the
    mean ground-truth direction; semantic: the majority class; flows: zero; albedo / shading: the mean
    ground-truth value. Build it with :func:`fit_trivial_baseline`.
    """

    def __init__(
        self,
        normal: np.ndarray | None = None,
        semantic_class: int = 0,
        albedo: np.ndarray | None = None,
        shading: float = 0.5,
    ) -> None:
        self.normal = np.array([0.0, 0.0, 1.0] if normal is None else normal, dtype=np.float32)
        self.normal /= max(float(np.linalg.norm(self.normal)), 1e-12)
        self.semantic_class = int(semantic_class)
        self.albedo = np.array([0.5, 0.5, 0.5] if albedo is None else albedo, dtype=np.float32)
        self.shading = float(shading)

    def predict(self, frame1: np.ndarray, frame2: np.ndarray | None = None) -> dict[str, np.ndarray]:
        h, w = np.shape(frame1)[:2]
        return {
            TaskName.DEPTH.value: np.full((h, w), 0.5, dtype=np.float32),
            TaskName.NORMAL.value: np.broadcast_to(self.normal, (h, w, 3)).copy(),
            TaskName.SEMANTIC.value: np.full((h, w), self.semantic_class, dtype=np.uint8),
            TaskName.OPTICAL_FLOW.value: np.zeros((h, w, 2), dtype=np.float32),
            TaskName.SCENE_FLOW.value: np.zeros((h, w, 3), dtype=np.float32),
            TaskName.ALBEDO.value: np.broadcast_to(self.albedo, (h, w, 3)).copy(),
            TaskName.SHADING.value: np.full((h, w), self.shading, dtype=np.float32),
        }


def fit_trivial_baseline(samples: Iterable[Sample]) -> TrivialBaseline:
    """Fit the constants of :class:`TrivialBaseline` on the labels of a sample set (one streaming pass)."""
    normal_sum = np.zeros(3)
    class_counts = np.zeros(NUM_CLASSES, dtype=np.int64)
    albedo_sum, albedo_n = np.zeros(3), 0
    shading_sum, shading_n = 0.0, 0
    for s in samples:
        if (lab := s.labels.get(TaskName.NORMAL.value)) is not None and lab.valid.any():
            normal_sum += np.asarray(lab.value, dtype=np.float64)[lab.valid].sum(axis=0)
        if (lab := s.labels.get(TaskName.SEMANTIC.value)) is not None:
            ids = np.asarray(lab.value)[lab.valid]
            class_counts += np.bincount(ids[ids < NUM_CLASSES].astype(np.int64), minlength=NUM_CLASSES)
        if (lab := s.labels.get(TaskName.ALBEDO.value)) is not None and lab.valid.any():
            albedo_sum += np.asarray(lab.value, dtype=np.float64)[lab.valid].sum(axis=0)
            albedo_n += int(lab.valid.sum())
        if (lab := s.labels.get(TaskName.SHADING.value)) is not None and lab.valid.any():
            shading_sum += float(np.asarray(lab.value, dtype=np.float64)[lab.valid].sum())
            shading_n += int(lab.valid.sum())
    return TrivialBaseline(
        normal=normal_sum if np.linalg.norm(normal_sum) > 0 else None,
        semantic_class=int(class_counts.argmax()),
        albedo=albedo_sum / albedo_n if albedo_n else None,
        shading=shading_sum / shading_n if shading_n else 0.5,
    )
