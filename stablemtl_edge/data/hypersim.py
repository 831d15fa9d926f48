"""Hypersim reader: tone-mapped previews plus the HDF5 geometry and material files, as released.

Layout (one scene per directory, as the official download script writes it)::

    <root>/<scene>/images/scene_<cam>_final_preview/frame.<NNNN>.tonemap.jpg
    <root>/<scene>/images/scene_<cam>_geometry_hdf5/frame.<NNNN>.depth_meters.hdf5
    <root>/<scene>/images/scene_<cam>_geometry_hdf5/frame.<NNNN>.normal_cam.hdf5
    <root>/<scene>/images/scene_<cam>_final_hdf5/frame.<NNNN>.diffuse_reflectance.hdf5
    <root>/<scene>/images/scene_<cam>_final_hdf5/frame.<NNNN>.diffuse_illumination.hdf5
    <root>/<scene>/images/scene_<cam>_final_hdf5/frame.<NNNN>.color.hdf5

Each HDF5 file holds one array under ``dataset``. Conversions:

- ``depth_meters`` is the distance to the camera centre, not planar depth: ``z = dist * f / |(u-cx, v-cy, f)|``
  with Hypersim's 60 degree horizontal field of view (``f = W / 2 / tan 30°``, 886.81 px at 1024 wide);
- ``normal_cam`` is already in OpenGL camera axes; normals facing away from the camera (Hypersim has
  some) are flipped, and all are renormalised;
- albedo is ``diffuse_reflectance``; shading is ``diffuse_illumination`` reduced to grey
  (0.3 R + 0.59 G + 0.11 B) and scaled by the same factor Hypersim's tone mapper applies to ``color``
  (its 90th brightness percentile maps to 0.8 after gamma 1/2.2), so albedo x shading matches the linear
  preview image.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..errors import StableMTLError
from .sample import Label, Sample
from ..tasks import TaskName
from .dataset import SampleSource, select_tasks
from .formats import read_hdf5, read_rgb, require_dir

__all__ = ["HypersimSource", "HYPERSIM_TASKS", "hypersim_focal", "distance_to_planar_depth", "tonemap_scale"]

HYPERSIM_TASKS = ("normal", "depth", "albedo", "shading")
HFOV_DEG = 60.0
_GREY = np.array([0.3, 0.59, 0.11])
_PREVIEW = re.compile(r"^frame\.(\d+)\.tonemap\.jpg$")


def hypersim_focal(width: int) -> float:
    """Focal length in pixels of Hypersim's 60 degree horizontal field of view."""
    return width / 2.0 / np.tan(np.deg2rad(HFOV_DEG) / 2.0)


def distance_to_planar_depth(distance: np.ndarray, focal: float) -> np.ndarray:
    """Convert per-pixel distance to the camera centre into planar depth (principal point at the centre)."""
    H, W = distance.shape
    u = np.arange(W) - (W - 1) / 2.0
    v = np.arange(H) - (H - 1) / 2.0
    norm = np.sqrt(u[None, :] ** 2 + v[:, None] ** 2 + focal**2)
    return (distance * (focal / norm)).astype(np.float32)


def tonemap_scale(color: np.ndarray) -> float:
    """Hypersim's tone-mapping exposure: brightness percentile 90 -> 0.8 after gamma 1/2.2."""
    brightness = np.asarray(color, dtype=np.float64) @ _GREY
    finite = np.isfinite(brightness)
    if not finite.any():
        return 0.0
    p90 = float(np.percentile(brightness[finite], 90))
    return 0.0 if p90 < 1e-4 else float(np.power(0.8, 2.2) / p90)


class HypersimSource(SampleSource):
    """Frames of Hypersim scenes under ``root``.

    Args:
        root: directory holding the ``ai_<vol>_<scene>`` scene directories.
        scenes: scene names to use (default: every scene found).
        tasks: subset of :data:`HYPERSIM_TASKS` to load (default: all four).
    """

    def __init__(self, root: str | os.PathLike, scenes: Sequence[str] | None = None,
                 tasks: Sequence[str | TaskName] | None = None) -> None:
        self.root = require_dir(root, "Hypersim root")
        self._tasks = select_tasks(tasks, HYPERSIM_TASKS, "Hypersim")
        scene_dirs = [self.root / s for s in scenes] if scenes else sorted(p for p in self.root.iterdir() if p.is_dir())
        self.frames: list[tuple[Path, str, str]] = []  # (scene images dir, camera, frame id)
        for scene in scene_dirs:
            images = require_dir(scene / "images", "Hypersim scene images")
            for preview in sorted(images.glob("scene_*_final_preview")):
                cam = preview.name[len("scene_") : -len("_final_preview")]
                for f in sorted(preview.iterdir()):
                    m = _PREVIEW.match(f.name)
                    if m:
                        self.frames.append((images, cam, m.group(1)))
        if not self.frames:
            raise StableMTLError(
                f"no Hypersim frames under `{self.root}`: expected "
                "<scene>/images/scene_<cam>_final_preview/frame.<NNNN>.tonemap.jpg"
            )

    @property
    def domain(self) -> str:
        return "hypersim"

    @property
    def tasks(self) -> tuple[str, ...]:
        return self._tasks

    def __len__(self) -> int:
        return len(self.frames)

    def paths(self, index: int) -> dict[str, Path]:
        """Files that make up sample ``index``."""
        images, cam, frame = self.frames[self._check_index(index)]
        geo, fin = images / f"scene_{cam}_geometry_hdf5", images / f"scene_{cam}_final_hdf5"
        return {
            "rgb": images / f"scene_{cam}_final_preview" / f"frame.{frame}.tonemap.jpg",
            "depth": geo / f"frame.{frame}.depth_meters.hdf5",
            "normal": geo / f"frame.{frame}.normal_cam.hdf5",
            "albedo": fin / f"frame.{frame}.diffuse_reflectance.hdf5",
            "illumination": fin / f"frame.{frame}.diffuse_illumination.hdf5",
            "color": fin / f"frame.{frame}.color.hdf5",
        }

    def __getitem__(self, index: int) -> Sample:
        p = self.paths(index)
        rgb = read_rgb(p["rgb"], "Hypersim tone-mapped image")
        H, W = rgb.shape[:2]
        f = hypersim_focal(W)
        K = np.array([[f, 0, (W - 1) / 2], [0, f, (H - 1) / 2], [0, 0, 1]], dtype=np.float32)
        labels: dict[str, Label] = {}

        def load(key: str, what: str, channels: int) -> np.ndarray:
            arr = read_hdf5(p[key], what).astype(np.float32)
            want = (H, W) if channels == 1 else (H, W, channels)
            if arr.shape != want:
                raise StableMTLError(f"{what} `{p[key]}` has shape {arr.shape}, expected {want} to match the image")
            return arr

        if "depth" in self._tasks:
            dist = load("depth", "Hypersim depth_meters", 1)
            valid = np.isfinite(dist) & (dist > 0)
            labels["depth"] = Label(np.where(valid, distance_to_planar_depth(np.nan_to_num(dist), f), 0.0), valid)
        if "normal" in self._tasks:
            n = load("normal", "Hypersim normal_cam", 3)
            norm = np.linalg.norm(n, axis=-1, keepdims=True)
            valid = np.isfinite(n).all(-1) & (norm[..., 0] > 1e-3)
            n = np.where(valid[..., None], n / np.where(valid[..., None], norm, 1.0), 0.0)
            u = (np.arange(W) - K[0, 2]) / f
            v = (np.arange(H) - K[1, 2]) / f
            ray = np.stack(np.broadcast_arrays(u[None, :], -v[:, None], -np.ones((1, 1))), axis=-1)  # OpenGL
            away = (n * ray).sum(-1) > 0
            labels["normal"] = Label(np.where(away[..., None], -n, n).astype(np.float32), valid)
        if "albedo" in self._tasks:
            a = load("albedo", "Hypersim diffuse_reflectance", 3)
            valid = np.isfinite(a).all(-1)
            labels["albedo"] = Label(np.clip(np.nan_to_num(a), 0.0, 1.0), valid)
        if "shading" in self._tasks:
            illum = load("illumination", "Hypersim diffuse_illumination", 3)
            scale = tonemap_scale(load("color", "Hypersim color", 3))
            grey = np.nan_to_num(illum) @ _GREY.astype(np.float32)
            valid = np.isfinite(illum).all(-1) & (scale > 0)
            labels["shading"] = Label(np.clip(grey * scale, 0.0, 1.0).astype(np.float32), valid)
        return Sample(rgb, None, labels, self.domain, name=str(p["rgb"]), intrinsics=K)

