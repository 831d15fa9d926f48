"""Validation during and after training: per-task metrics through :mod:`stablemtl_edge.eval`, VAE PSNR.

The torch model is wrapped as an evaluation :class:`~stablemtl_edge.eval.Predictor`, so training
validation, the bundled model's held-out report and any other evaluation share one protocol.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import cv2
import numpy as np
import torch

from ..eval import EvalResult, evaluate
from ..artifact.manifest import Mode
from ..model.stablemtl import StableMTL, frames_to_tensor
from ..data.sample import Sample
from ..tasks import TASKS, parse_tasks
from ..data.dataset import SampleSource

__all__ = ["ModelPredictor", "take_samples", "evaluate_model", "vae_psnr", "main_metrics"]


class ModelPredictor:
    """The torch model as an evaluation predictor at its processing resolution.

    Frames of another size are resized to ``resolution`` (evaluation resizes predictions back to the
    labels). Flow tasks are predicted only when a second frame is given.

    Args:
        model: the reference model.
        mode: ``single`` or ``multi`` (multi-stream models only).
        tasks: tasks to predict (default: all seven).
        resolution: processing ``(H, W)``, multiples of 64 (default: the preset's).
    """

    def __init__(self, model: StableMTL, mode: Mode | str = Mode.SINGLE, tasks: str | Iterable[str] | None = None,
                 resolution: tuple[int, int] | None = None) -> None:
        self.model = model
        self.mode = Mode(str(mode))
        self.tasks = parse_tasks(tasks)
        self.resolution = tuple(resolution or model.preset.resolution)

    def _fit(self, frame: np.ndarray | None) -> np.ndarray | None:
        if frame is None or frame.shape[:2] == self.resolution:
            return frame
        return cv2.resize(frame, (self.resolution[1], self.resolution[0]), interpolation=cv2.INTER_AREA)

    def predict(self, frame1: np.ndarray, frame2: np.ndarray | None = None) -> dict[str, np.ndarray]:
        tasks = [t.key for t in self.tasks if t.frames == 1 or frame2 is not None]
        return self.model.predict(self._fit(frame1), self._fit(frame2), tasks, self.mode)


def take_samples(sources: Sequence[SampleSource], per_source: int) -> list[Sample]:
    """The first ``per_source`` samples of each source (validation sets are small and fixed)."""
    return [s[i] for s in sources for i in range(min(per_source, len(s)))]


def evaluate_model(model: StableMTL, samples: Sequence[Sample], mode: Mode | str = Mode.SINGLE,
                   tasks: str | Iterable[str] | None = None, benchmark: str = "validation",
                   progress: bool = False) -> EvalResult:
    """Per-task metrics of ``model`` on labelled samples (each contributes to the tasks it labels)."""
    was_training = model.training
    model.eval()
    try:
        return evaluate(ModelPredictor(model, mode, tasks), samples, tasks, benchmark=benchmark, progress=progress)
    finally:
        model.train(was_training)


def main_metrics(result: EvalResult) -> dict[str, dict[str, float]]:
    """``{task: {main metric: value}}`` for a compact log line."""
    return {k: {r.main_metric: r.main_value} for k, r in result.tasks.items()}


@torch.no_grad()
def vae_psnr(model: StableMTL, samples: Sequence[Sample]) -> dict[str, float]:
    """Reconstruction PSNR (dB, peak-to-peak 2 on [-1, 1] images) of the RGB frame and each task image.

    Task images are scored on their valid pixels only; every sample contributes the images it labels.
    The image is cropped to a multiple of 8 pixels (the VAE factor).
    """
    sums: dict[str, list[float]] = {}
    for s in samples:
        images = {"rgb": (frames_to_tensor(s.frame1)[0], None)}
        for spec in TASKS:
            if spec.key in s.labels:
                img, valid = s.encode(spec)
                images[spec.key] = (torch.from_numpy(img).permute(2, 0, 1), torch.from_numpy(valid))
        for name, (img, valid) in images.items():
            h, w = (img.shape[1] // 8) * 8, (img.shape[2] // 8) * 8
            x = img[None, :, :h, :w].to(model.device)
            rec = model.vae.decode(model.vae.encode(x))[0].cpu()
            err = (rec - x[0].cpu()) ** 2
            m = torch.ones(h, w, dtype=torch.bool) if valid is None else valid[:h, :w]
            if m.any():
                sums.setdefault(name, []).append(float(err[:, m].mean()))
    # PSNR of the pooled MSE of each image type
    return {k: 10.0 * math.log10(4.0 / max(float(np.mean(v)), 1e-12)) for k, v in sums.items()}
