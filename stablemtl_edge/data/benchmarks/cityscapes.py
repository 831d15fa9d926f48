"""Cityscapes val (``leftImg8bit`` + ``gtFine`` label ids) with labels mapped to the 8 StableMTL classes."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from ...errors import StableMTLError
from ..sample import Label, Sample
from ...tasks import IGNORE_ID, TaskName
from .base import BenchmarkReader
from ..formats import read_rgb, read_unchanged

__all__ = ["CityscapesReader", "CITYSCAPES_TO_CLASS", "map_label_ids"]

# Cityscapes label id (labels.py of cityscapesScripts) -> our class id (tasks.CLASS_NAMES); all other ids
# (sidewalk, person, rider, caravan, trailer, ...) are ignored. vehicle = car, truck, bus: the vehicle
# classes the synthetic training data (Virtual KITTI 2: car, van, truck) teaches.
CITYSCAPES_TO_CLASS: dict[int, int] = {
    7: 0,  # road
    11: 1,  # building
    17: 2,  # pole
    19: 3,  # traffic light
    20: 4,  # traffic sign
    21: 5,  # vegetation
    23: 6,  # sky
    26: 7,  # car -> vehicle
    27: 7,  # truck -> vehicle
    28: 7,  # bus -> vehicle
}
_LUT = np.full(256, IGNORE_ID, dtype=np.uint8)
for _src, _dst in CITYSCAPES_TO_CLASS.items():
    _LUT[_src] = _dst


def map_label_ids(label_ids: np.ndarray) -> np.ndarray:
    """``(H, W)`` Cityscapes label ids -> uint8 class ids 0..7, 255 elsewhere."""
    ids = np.asarray(label_ids)
    if ids.ndim != 2:
        raise StableMTLError(f"Cityscapes labelIds image must be single-channel (H, W), got {ids.shape}")
    return _LUT[ids.astype(np.uint8)]


class CityscapesReader(BenchmarkReader):
    """Cityscapes semantic labels.

    Layout (the official ``leftImg8bit_trainvaltest`` and ``gtFine_trainvaltest`` archives extracted into
    one root)::

        root/leftImg8bit/val/<city>/<city>_<seq>_<frame>_leftImg8bit.png
        root/gtFine/val/<city>/<city>_<seq>_<frame>_gtFine_labelIds.png

    Args:
        root: folder holding ``leftImg8bit`` and ``gtFine``.
        split: ``val`` (the StableMTL benchmark) or ``train``.
        size: optional ``(H, W)`` to evaluate at (the paper uses 256 x 512): the image is resized with area
            averaging and the labels with nearest neighbour. None keeps 1024 x 2048.
    """

    name = "cityscapes"
    labelled = ("semantic",)

    def __init__(self, root: str | Path, split: str = "val", size: tuple[int, int] | None = None) -> None:
        self.root = Path(root)
        self.size = size
        img_dir = self.root / "leftImg8bit" / split
        self._images = self._require_items(sorted(img_dir.glob("*/*_leftImg8bit.png")), img_dir, "Cityscapes images")

    def __len__(self) -> int:
        return len(self._images)

    def label_path(self, image_path: Path) -> Path:
        rel = image_path.relative_to(self.root / "leftImg8bit")
        stem = image_path.name[: -len("_leftImg8bit.png")]
        return self.root / "gtFine" / rel.parent / f"{stem}_gtFine_labelIds.png"

    def _load(self, index: int) -> Sample:
        path = self._images[index]
        rgb = read_rgb(path)
        raw = read_unchanged(self.label_path(path), "Cityscapes labelIds image")
        classes = map_label_ids(raw)
        if self.size is not None:
            h, w = self.size
            rgb = cv2.resize(rgb, (w, h), interpolation=cv2.INTER_AREA)
            classes = cv2.resize(classes, (w, h), interpolation=cv2.INTER_NEAREST)
        label = Label(value=classes, valid=classes != IGNORE_ID)
        labels = {TaskName.SEMANTIC.value: label}
        return Sample(frame1=rgb, frame2=None, labels=labels, domain=self.name, name=str(path))
