"""KITTI Eigen test split: RGB from the raw recordings, depth from the projected-LiDAR PNGs."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ...errors import StableMTLError
from ..sample import Label, Sample
from ...tasks import TaskName
from .base import BenchmarkReader
from ..formats import read_rgb, read_unchanged
from ...records import KeyEnum

__all__ = ["EvalCrop", "KittiDepthReader", "crop_mask", "kb_crop_box", "decode_depth_png"]

KB_CROP_HW = (352, 1216)


class EvalCrop(KeyEnum):
    """The evaluation region of the KITTI Eigen split (fractions of the image height and width)."""

    GARG = "garg"
    EIGEN = "eigen"
    NONE = "none"


_CROPS = {
    EvalCrop.GARG: (0.40810811, 0.99189189, 0.03594771, 0.96405229),
    EvalCrop.EIGEN: (0.3324324, 0.91351351, 0.0359477, 0.96405229),
}


def crop_mask(shape: tuple[int, int], crop: EvalCrop) -> np.ndarray:
    """``(H, W)`` bool: True inside the Garg or Eigen region (everything for ``NONE``)."""
    h, w = shape
    mask = np.zeros((h, w), dtype=bool)
    if crop is EvalCrop.NONE:
        mask[:] = True
        return mask
    t, b, l, r = _CROPS[EvalCrop(crop)]
    mask[int(t * h) : int(b * h), int(l * w) : int(r * w)] = True
    return mask


def kb_crop_box(shape: tuple[int, int]) -> tuple[int, int]:
    """Top-left corner of the KITTI-benchmark crop: the bottom 352 rows, the centred 1216 columns."""
    h, w = shape
    ch, cw = KB_CROP_HW
    if h < ch or w < cw:
        raise StableMTLError(f"KITTI image {h}x{w} is smaller than the benchmark crop {ch}x{cw}: disable kb_crop")
    return h - ch, (w - cw) // 2


def decode_depth_png(png: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """uint16 projected-LiDAR PNG -> (depth metres float32, valid); 0 means no measurement."""
    if png.dtype != np.uint16 or png.ndim != 2:
        raise StableMTLError(f"KITTI depth PNG must be single-channel 16-bit, got {png.dtype} {png.shape}")
    return png.astype(np.float32) / 256.0, png > 0


class KittiDepthReader(BenchmarkReader):
    """KITTI Eigen depth, as evaluated by Marigold and StableMTL.

    The split file has one line per frame: ``<rgb path> <depth path> [focal]`` relative to ``rgb_root``
    and ``depth_root`` (e.g. ``2011_09_26/2011_09_26_drive_0002_sync/image_02/data/0000000069.png
    2011_09_26_drive_0002_sync/proj_depth/groundtruth/image_02/0000000069.png 721.5377``); lines whose depth
    path is ``None`` have no ground truth and are skipped. The focal length is not needed for depth metrics
    and is ignored (the list gives no principal point, so no intrinsics are attached).

    Args:
        split_file: the Eigen test list.
        rgb_root: root of the raw KITTI recordings.
        depth_root: root of the projected depth PNGs (same as ``rgb_root`` if None).
        crop: evaluation region, Garg (default) or Eigen.
        kb_crop: first cut images to the 352 x 1216 KITTI-benchmark crop (the region is taken on that crop).
    """

    name = "kitti"
    labelled = ("depth",)

    def __init__(
        self,
        split_file: str | Path,
        rgb_root: str | Path,
        depth_root: str | Path | None = None,
        crop: EvalCrop = EvalCrop.GARG,
        kb_crop: bool = True,
    ) -> None:
        split_file = Path(split_file)
        if not split_file.is_file():
            raise StableMTLError(f"KITTI split file `{split_file}` does not exist: pass the Eigen test list")
        self.rgb_root = Path(rgb_root)
        self.depth_root = Path(depth_root) if depth_root is not None else self.rgb_root
        self.crop = EvalCrop(crop)
        self.kb_crop = kb_crop
        items = []
        for n, line in enumerate(split_file.read_text().splitlines(), 1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) < 2:
                raise StableMTLError(f"{split_file}:{n}: expected `<rgb> <depth> [focal]`, got `{line}`")
            if parts[1] != "None":
                items.append((parts[0], parts[1]))
        self._items = self._require_items(items, split_file, "frames with ground truth")

    def __len__(self) -> int:
        return len(self._items)

    def _load(self, index: int) -> Sample:
        rgb_rel, depth_rel = self._items[index]
        rgb = read_rgb(self.rgb_root / rgb_rel)
        depth, valid = decode_depth_png(read_unchanged(self.depth_root / depth_rel, "KITTI depth PNG"))
        if depth.shape != rgb.shape[:2]:
            raise StableMTLError(f"KITTI depth {depth.shape} and image {rgb.shape[:2]} differ for `{rgb_rel}`")
        if self.kb_crop:
            top, left = kb_crop_box(depth.shape)
            ch, cw = KB_CROP_HW
            rgb, depth, valid = (a[top : top + ch, left : left + cw] for a in (rgb, depth, valid))
        valid = valid & crop_mask(depth.shape, self.crop)
        return Sample(
            frame1=np.ascontiguousarray(rgb),
            frame2=None,
            labels={TaskName.DEPTH.value: Label(value=np.ascontiguousarray(depth), valid=np.ascontiguousarray(valid))},
            domain=self.name,
            name=rgb_rel,
        )
