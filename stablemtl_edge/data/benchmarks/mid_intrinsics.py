"""MID Intrinsics (Careaga and Aksoy 2023, on the MIT Multi-Illumination Dataset): albedo and shading.

Read in the evaluation layout StableMTL uses: one 8-bit image per (scene, illumination) with its albedo and
shading beside it, ``<name>.jpg``, ``<name>_albedo.jpg``, ``<name>_shading.jpg``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ...errors import StableMTLError
from ..sample import Label, Sample
from ...tasks import TaskName
from .base import BenchmarkReader
from ..formats import read_rgb

__all__ = ["MidIntrinsicsReader", "SHADING_WEIGHTS"]

# Brightness of an RGB shading image, the same weights as the shading codec of stablemtl_edge.tasks.
SHADING_WEIGHTS = np.array([0.3, 0.59, 0.11], dtype=np.float32)
_SUFFIXES = ("_albedo", "_shading")


class MidIntrinsicsReader(BenchmarkReader):
    """Albedo ``(H, W, 3)`` and grey shading ``(H, W)`` in [0, 1].

    Args:
        root: folder the image paths are relative to.
        split_file: optional list with one image path per line (first column); None = every ``*.jpg``
            under ``root`` that is not itself an ``_albedo`` / ``_shading`` file.

    Albedo pixels that are black in every channel carry no reflectance estimate and are invalid (for albedo
    and shading alike).
    """

    name = "mid_intrinsics"
    labelled = ("albedo", "shading")

    def __init__(self, root: str | Path, split_file: str | Path | None = None) -> None:
        self.root = Path(root)
        if split_file is not None:
            split_file = Path(split_file)
            if not split_file.is_file():
                raise StableMTLError(f"MID Intrinsics list `{split_file}` does not exist")
            rels = [ln.split()[0] for ln in split_file.read_text().splitlines() if ln.strip()]
            images = [self.root / r for r in rels]
        else:
            images = [p for p in sorted(self.root.rglob("*.jpg")) if not p.stem.endswith(_SUFFIXES)]
        self._images = self._require_items(images, self.root, "MID Intrinsics images (<name>.jpg)")

    def __len__(self) -> int:
        return len(self._images)

    def _load(self, index: int) -> Sample:
        path = self._images[index]
        rgb = read_rgb(path)
        albedo = read_rgb(path.with_name(f"{path.stem}_albedo{path.suffix}")).astype(np.float32) / 255.0
        shading_rgb = read_rgb(path.with_name(f"{path.stem}_shading{path.suffix}")).astype(np.float32) / 255.0
        if albedo.shape != rgb.shape or shading_rgb.shape != rgb.shape:
            raise StableMTLError(
                f"`{path}`: image, albedo and shading sizes differ ({rgb.shape}, {albedo.shape}, {shading_rgb.shape})"
            )
        valid = albedo.max(axis=-1) > 0
        labels = {
            TaskName.ALBEDO.value: Label(value=albedo, valid=valid),
            TaskName.SHADING.value: Label(value=shading_rgb @ SHADING_WEIGHTS, valid=valid.copy()),
        }
        return Sample(frame1=rgb, frame2=None, labels=labels, domain=self.name, name=str(path))
