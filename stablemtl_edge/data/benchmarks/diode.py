"""DIODE val: depth (``_depth.npy`` + ``_depth_mask.npy``) and surface normals (``_normal.npy``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ...errors import StableMTLError
from ..sample import Label, Sample
from ...tasks import TaskName
from .base import BenchmarkReader
from ..formats import read_npy, read_rgb

__all__ = ["DiodeReader", "diode_normals_to_opengl", "DIODE_NORMAL_SIGNS"]

# DIODE stores camera-frame normals on OpenCV axes (x right, y down, z forward), so surfaces facing the
# camera have z < 0. Our convention (data/sample.py) is OpenGL axes (x right, y up, z towards the camera):
# keep x, negate y and z.
DIODE_NORMAL_SIGNS = np.array([1.0, -1.0, -1.0], dtype=np.float32)


def diode_normals_to_opengl(normals: np.ndarray) -> np.ndarray:
    """``(H, W, 3)`` DIODE normals -> OpenGL camera axes (see :data:`DIODE_NORMAL_SIGNS`)."""
    return np.asarray(normals, dtype=np.float32) * DIODE_NORMAL_SIGNS


class DiodeReader(BenchmarkReader):
    """DIODE val, indoor and outdoor scans.

    Layout (the ``val.tar.gz`` archive, with ``val_normals.tar.gz`` extracted over it)::

        root/{indoors,outdoor}/scene_<nnnnn>/scan_<nnnnn>/<id>.png
        .../<id>_depth.npy        (H, W, 1) float32 metres
        .../<id>_depth_mask.npy   (H, W) 0/1
        .../<id>_normal.npy       (H, W, 3) float32, zero where undefined (optional)

    Args:
        root: the ``val`` folder.
        scenes: ``("indoors", "outdoor")`` or one of them.
    """

    name = "diode"
    labelled = ("normal", "depth")

    def __init__(self, root: str | Path, scenes: tuple[str, ...] = ("indoors", "outdoor")) -> None:
        self.root = Path(root)
        images = []
        for scene in scenes:
            images += sorted((self.root / scene).glob("*/*/*.png"))
        self._images = self._require_items(images, self.root, "DIODE images (<scene>/<scan>/<id>.png)")

    def __len__(self) -> int:
        return len(self._images)

    def _load(self, index: int) -> Sample:
        path = self._images[index]
        stem = path.with_suffix("")
        rgb = read_rgb(path)
        hw = rgb.shape[:2]
        depth = np.asarray(read_npy(f"{stem}_depth.npy", "DIODE depth"), dtype=np.float32).reshape(hw)
        mask = np.asarray(read_npy(f"{stem}_depth_mask.npy", "DIODE depth mask")).reshape(hw) > 0
        labels = {TaskName.DEPTH.value: Label(value=depth, valid=mask & np.isfinite(depth) & (depth > 0))}
        normal_path = Path(f"{stem}_normal.npy")
        if normal_path.is_file():
            normal = diode_normals_to_opengl(np.asarray(read_npy(normal_path, "DIODE normals")).reshape(hw + (3,)))
            norm = np.linalg.norm(normal, axis=-1)
            valid = np.isfinite(norm) & (norm > 0.5)
            # Visible surfaces face the camera (z > 0 in OpenGL axes): if most do not, the file does not
            # follow the convention assumed above and every angle would be wrong, so refuse it.
            if valid.any() and np.median(normal[valid][:, 2]) < 0:
                raise StableMTLError(
                    f"`{normal_path}`: after the DIODE sign fix most normals point away from the camera; this file "
                    "does not use the DIODE release convention (OpenCV axes, surfaces facing the camera with z < 0)"
                )
            labels[TaskName.NORMAL.value] = Label(value=normal, valid=valid)
        return Sample(frame1=rgb, frame2=None, labels=labels, domain=self.name, name=str(path))
