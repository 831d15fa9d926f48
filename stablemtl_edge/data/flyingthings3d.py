"""FlyingThings3D reader: images, PFM optical flow, disparity and disparity change, as released.

Layout (``<split>`` is ``TRAIN`` or ``TEST``, ``<set>`` ``A``/``B``/``C``, left camera)::

    <root>/frames_cleanpass/<split>/<set>/<seq>/left/<NNNN>.png      (or frames_finalpass)
    <root>/optical_flow/<split>/<set>/<seq>/into_future/left/OpticalFlowIntoFuture_<NNNN>_L.pfm
    <root>/disparity/<split>/<set>/<seq>/left/<NNNN>.pfm
    <root>/disparity_change/<split>/<set>/<seq>/into_future/left/<NNNN>.pfm

Scene flow comes from disparity ``d`` and its change ``dc`` with the dataset's camera (focal 1050 px,
baseline 1 scene unit, principal point at the image centre): ``z1 = f b / d``, ``z2 = f b / (d + dc)``;
the point at pixel ``(u, v)`` moves to ``(u + fu, v + fv)`` at depth ``z2``; scene flow is the difference of
the two back-projections (OpenCV axes). Pixels with non-positive disparity or non-finite values are invalid.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

from ..errors import StableMTLError
from .sample import Label, Sample
from ..tasks import TaskName
from .dataset import SampleSource, select_tasks
from .formats import read_pfm, read_rgb, require_dir
from ..records import KeyEnum

__all__ = ["FlyingThings3DSource", "RenderPass", "FT3D_TASKS", "FOCAL_PX", "BASELINE", "scene_flow_from_disparity"]

FT3D_TASKS = ("optical_flow", "scene_flow")
FOCAL_PX = 1050.0
BASELINE = 1.0
MAX_FLOW_PX = 1000.0  # a few FlyingThings3D flows are numerically broken; beyond this they are invalid
_FRAME = re.compile(r"^(\d{4})\.png$")


class RenderPass(KeyEnum):
    """Which rendering of the frames to read."""

    CLEAN = "clean"
    FINAL = "final"


def scene_flow_from_disparity(flow: np.ndarray, disparity: np.ndarray, disparity_change: np.ndarray,
                              focal: float = FOCAL_PX, baseline: float = BASELINE,
                              principal: tuple[float, float] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Scene flow ``(H, W, 3)`` and validity from flow, disparity and disparity change."""
    H, W = disparity.shape
    cx, cy = principal if principal is not None else ((W - 1) / 2.0, (H - 1) / 2.0)
    d1 = disparity.astype(np.float64)
    d2 = d1 + disparity_change
    valid = (np.isfinite(flow).all(-1) & np.isfinite(d1) & np.isfinite(d2) & (d1 > 0) & (d2 > 0)
             & (np.abs(flow) < MAX_FLOW_PX).all(-1))
    d1s, d2s = np.where(valid, d1, 1.0), np.where(valid, d2, 1.0)
    z1, z2 = focal * baseline / d1s, focal * baseline / d2s
    u, v = np.meshgrid(np.arange(W, dtype=np.float64), np.arange(H, dtype=np.float64))
    fl = np.where(valid[..., None], flow, 0.0)
    p1 = np.stack([(u - cx) * z1 / focal, (v - cy) * z1 / focal, z1], axis=-1)
    p2 = np.stack([(u + fl[..., 0] - cx) * z2 / focal, (v + fl[..., 1] - cy) * z2 / focal, z2], axis=-1)
    return np.where(valid[..., None], p2 - p1, 0.0).astype(np.float32), valid


class FlyingThings3DSource(SampleSource):
    """Forward frame pairs of FlyingThings3D (left camera).

    Args:
        root: directory holding ``frames_cleanpass``, ``optical_flow``, ``disparity``, ``disparity_change``.
        split: ``TRAIN`` or ``TEST``.
        render_pass: clean or final frames.
        tasks: subset of :data:`FT3D_TASKS` (default both).
        focal, baseline: the dataset's camera (1050 px, 1 unit).
    """

    def __init__(self, root: str | os.PathLike, split: str = "TRAIN",
                 render_pass: RenderPass | str = RenderPass.CLEAN, tasks: list[str | TaskName] | None = None,
                 focal: float = FOCAL_PX, baseline: float = BASELINE) -> None:
        self.root = require_dir(root, "FlyingThings3D root")
        self._tasks = select_tasks(tasks, FT3D_TASKS, "FlyingThings3D")
        try:
            self.render_pass = RenderPass(str(render_pass).lower())
        except ValueError:
            raise StableMTLError(f"unknown FlyingThings3D pass `{render_pass}`: use clean or final") from None
        self.split = split.upper()
        if self.split not in ("TRAIN", "TEST"):
            raise StableMTLError(f"unknown FlyingThings3D split `{split}`: use TRAIN or TEST")
        self.focal, self.baseline = float(focal), float(baseline)
        frames_root = require_dir(self.root / f"frames_{self.render_pass.value}pass" / self.split,
                                  "FlyingThings3D frames")
        self.frames: list[tuple[str, str, int]] = []  # (set, sequence, frame)
        for seq_dir in sorted(frames_root.glob("*/*/left")):
            ids = sorted(int(m.group(1)) for f in seq_dir.iterdir() if (m := _FRAME.match(f.name)))
            have = set(ids)
            self.frames += [(seq_dir.parent.parent.name, seq_dir.parent.name, i) for i in ids if i + 1 in have]
        if not self.frames:
            raise StableMTLError(
                f"no FlyingThings3D frame pairs under `{frames_root}`: expected <set>/<seq>/left/<NNNN>.png"
            )

    @property
    def domain(self) -> str:
        return "flyingthings3d"

    @property
    def tasks(self) -> tuple[str, ...]:
        return self._tasks

    def __len__(self) -> int:
        return len(self.frames)

    def paths(self, index: int) -> dict[str, Path]:
        s, seq, i = self.frames[self._check_index(index)]
        rel = Path(self.split) / s / seq
        return {
            "frame1": self.root / f"frames_{self.render_pass.value}pass" / rel / "left" / f"{i:04d}.png",
            "frame2": self.root / f"frames_{self.render_pass.value}pass" / rel / "left" / f"{i + 1:04d}.png",
            "flow": self.root / "optical_flow" / rel / "into_future" / "left" / f"OpticalFlowIntoFuture_{i:04d}_L.pfm",
            "disparity": self.root / "disparity" / rel / "left" / f"{i:04d}.pfm",
            "disparity_change": self.root / "disparity_change" / rel / "into_future" / "left" / f"{i:04d}.pfm",
        }

    def __getitem__(self, index: int) -> Sample:
        p = self.paths(index)
        f1 = read_rgb(p["frame1"], "FlyingThings3D frame")
        f2 = read_rgb(p["frame2"], "FlyingThings3D frame")
        H, W = f1.shape[:2]

        def pfm(key: str, channels: int) -> np.ndarray:
            arr = read_pfm(p[key])
            want = (H, W) if channels == 1 else (H, W, 3)
            if arr.shape != want:
                raise StableMTLError(f"FlyingThings3D {key} `{p[key]}` has shape {arr.shape}, expected {want}")
            return arr

        flow = pfm("flow", 3)[..., :2]
        labels: dict[str, Label] = {}
        fvalid = np.isfinite(flow).all(-1) & (np.abs(flow) < MAX_FLOW_PX).all(-1)
        if "optical_flow" in self._tasks:
            labels["optical_flow"] = Label(np.where(fvalid[..., None], flow, 0.0).astype(np.float32), fvalid)
        if "scene_flow" in self._tasks:
            sf, valid = scene_flow_from_disparity(flow, pfm("disparity", 1), pfm("disparity_change", 1),
                                                  self.focal, self.baseline)
            labels["scene_flow"] = Label(sf, valid)
        K = np.array([[self.focal, 0, (W - 1) / 2], [0, self.focal, (H - 1) / 2], [0, 0, 1]], dtype=np.float32)
        return Sample(f1, f2, labels, self.domain, name=str(p["frame1"]), intrinsics=K)
