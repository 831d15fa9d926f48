"""Virtual KITTI 2 reader: RGB, depth, class segmentation and forward flows in the released PNG formats.

Accepted layouts, per modality (the release ships one tar per modality; both the merged tree and the
tars unpacked side by side work)::

    <root>/<SceneXX>/<variation>/frames/<modality>/Camera_<c>/<prefix>_<NNNNN>.<ext>
    <root>/vkitti_2.0.3_<modality>/<SceneXX>/<variation>/frames/<modality>/Camera_<c>/...

with ``rgb/rgb_*.jpg``, ``depth/depth_*.png``, ``classSegmentation/classgt_*.png``,
``forwardFlow/flow_*.png``, ``forwardSceneFlow/sceneFlow_*.png``; ``colors.txt`` and ``intrinsic.txt`` live
in ``<SceneXX>/<variation>/`` (or under ``vkitti_2.0.3_textgt/``).

Decodings (the dataset's official ones):

- depth: uint16 centimetres; 65535 (655.35 m, the far plane: sky) is invalid;
- flow: 16-bit RGB, R and G are u and v normalised as ``(2 / 65535) * x - 1`` times ``W - 1`` and ``H - 1``;
  B == 0 marks invalid flow (sky, points leaving the view);
- scene flow: 16-bit RGB = (dx, dy, dz) mapped from [-10, 10] m as ``((2 / 65535) * x - 1) * 10``, in the
  camera frame with OpenCV axes; valid where the optical flow is;
- classes: ``colors.txt`` colours mapped to the 8 StableMTL classes (Tree and Vegetation -> vegetation;
  Car, Van, Truck -> vehicle); other classes are ignored (255).

Virtual KITTI 2 has no surface normals: they are computed from the depth map with the intrinsics
(cross product of neighbouring back-projected points), valid where the 3x3 neighbourhood is continuous.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..errors import StableMTLError
from .sample import Label, Sample
from ..tasks import IGNORE_ID, TaskName
from .dataset import SampleSource, select_tasks
from .formats import read_png16, read_rgb, require_dir, require_file

__all__ = [
    "VKitti2Source",
    "VKITTI2_TASKS",
    "VKITTI2_CLASSES",
    "DEFAULT_INTRINSICS",
    "decode_depth",
    "decode_flow",
    "decode_scene_flow",
    "read_colors",
    "normals_from_depth",
]

VKITTI2_TASKS = ("normal", "depth", "semantic", "optical_flow", "scene_flow")
DEFAULT_INTRINSICS = (725.0087, 725.0087, 620.5, 187.0)  # fx, fy, cx, cy of every vKITTI2 camera
FAR_CM = 65535
SCENE_FLOW_RANGE_M = 10.0
# Official colors.txt of the release (used when a scene has none).
VKITTI2_CLASSES: dict[str, tuple[int, int, int]] = {
    "Terrain": (210, 0, 200), "Sky": (90, 200, 255), "Tree": (0, 199, 0), "Vegetation": (90, 240, 0),
    "Building": (140, 140, 140), "Road": (100, 60, 100), "GuardRail": (250, 100, 255),
    "TrafficSign": (255, 255, 0), "TrafficLight": (200, 200, 0), "Pole": (255, 130, 0), "Misc": (80, 80, 80),
    "Truck": (160, 60, 60), "Car": (255, 127, 80), "Van": (0, 139, 139), "Undefined": (0, 0, 0),
}
_TO_OURS = {"Road": 0, "Building": 1, "Pole": 2, "TrafficLight": 3, "TrafficSign": 4, "Tree": 5, "Vegetation": 5,
            "Sky": 6, "Car": 7, "Van": 7, "Truck": 7}
_MODALITY = {  # key -> (directory names tried, file prefix, extension, tar name)
    "rgb": (("rgb",), "rgb", "jpg", "rgb"),
    "depth": (("depth",), "depth", "png", "depth"),
    "semantic": (("classSegmentation", "classsegmentation"), "classgt", "png", "classSegmentation"),
    "optical_flow": (("forwardFlow",), "flow", "png", "forwardFlow"),
    "scene_flow": (("forwardSceneFlow",), "sceneFlow", "png", "forwardSceneFlow"),
}
_FRAME = re.compile(r"^rgb_(\d+)\.jpg$")


def decode_depth(raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """uint16 centimetres -> (depth in metres float32, valid); the far plane (sky) is invalid."""
    valid = (raw > 0) & (raw < FAR_CM)
    return (raw.astype(np.float32) / 100.0), valid


def decode_flow(rgb16: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Official vKITTI2 forward-flow decoding: 16-bit RGB -> (flow (H, W, 2) in pixels, valid)."""
    H, W = rgb16.shape[:2]
    valid = rgb16[..., 2] != 0
    flow = 2.0 / (2**16 - 1.0) * rgb16[..., :2].astype(np.float32) - 1.0
    flow[..., 0] *= W - 1
    flow[..., 1] *= H - 1
    flow[~valid] = 0.0
    return flow, valid


def decode_scene_flow(rgb16: np.ndarray) -> np.ndarray:
    """Official vKITTI2 scene-flow decoding: 16-bit RGB -> (H, W, 3) metres in [-10, 10]."""
    return ((2.0 / (2**16 - 1.0) * rgb16.astype(np.float32) - 1.0) * SCENE_FLOW_RANGE_M).astype(np.float32)


def read_colors(path: str | os.PathLike) -> dict[str, tuple[int, int, int]]:
    """Parse ``colors.txt`` (``Category r g b`` header, then one class per line)."""
    path = require_file(path, "vKITTI2 colors.txt")
    out: dict[str, tuple[int, int, int]] = {}
    for n, line in enumerate(path.read_text().splitlines()[1:], start=2):
        parts = line.split()
        if not parts:
            continue
        try:
            name, rgb = " ".join(parts[:-3]), tuple(int(x) for x in parts[-3:])
        except ValueError:
            raise StableMTLError(f"corrupt vKITTI2 colors file `{path}` line {n}: expected `Name r g b`") from None
        out[name] = rgb  # type: ignore[assignment]
    return out


def _class_lut(colors: dict[str, tuple[int, int, int]]) -> dict[int, int]:
    return {(r << 16) | (g << 8) | b: _TO_OURS.get(name, IGNORE_ID) for name, (r, g, b) in colors.items()}


def _map_classes(rgb: np.ndarray, lut: dict[int, int]) -> np.ndarray:
    packed = (rgb[..., 0].astype(np.int64) << 16) | (rgb[..., 1].astype(np.int64) << 8) | rgb[..., 2]
    values, inverse = np.unique(packed, return_inverse=True)
    ids = np.array([lut.get(int(v), IGNORE_ID) for v in values], dtype=np.uint8)
    return ids[inverse].reshape(packed.shape)


def normals_from_depth(depth: np.ndarray, valid: np.ndarray, K: np.ndarray,
                       max_jump: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """Unit normals (OpenGL camera axes, facing the camera) from planar depth by central differences.

    A pixel is valid when its 3x3 neighbourhood is valid and no neighbour's depth differs by more than
    ``max_jump`` (relative), so normals are not invented across occlusion edges.
    """
    H, W = depth.shape
    u, v = np.meshgrid(np.arange(W, dtype=np.float64), np.arange(H, dtype=np.float64))
    z = np.where(valid, depth, 1.0).astype(np.float64)
    P = np.stack([(u - K[0, 2]) / K[0, 0] * z, (v - K[1, 2]) / K[1, 1] * z, z], axis=-1)
    n = np.zeros((H, W, 3))
    n[1:-1, 1:-1] = np.cross(P[1:-1, 2:] - P[1:-1, :-2], P[2:, 1:-1] - P[:-2, 1:-1])
    norm = np.linalg.norm(n, axis=-1, keepdims=True)
    ok = np.zeros((H, W), dtype=bool)
    inner = valid[1:-1, 1:-1].copy()
    for dv in (-1, 0, 1):
        for du in (-1, 0, 1):
            nb_valid = valid[1 + dv : H - 1 + dv, 1 + du : W - 1 + du]
            nb = z[1 + dv : H - 1 + dv, 1 + du : W - 1 + du]
            inner &= nb_valid & (np.abs(nb - z[1:-1, 1:-1]) <= max_jump * z[1:-1, 1:-1])
    ok[1:-1, 1:-1] = inner & (norm[1:-1, 1:-1, 0] > 0)
    n = np.where(ok[..., None], n / np.maximum(norm, 1e-12), 0.0)
    n[(n * P).sum(-1) > 0] *= -1.0  # face the camera (OpenCV: n . ray < 0)
    return (n * np.array([1.0, -1.0, -1.0])).astype(np.float32), ok


class VKitti2Source(SampleSource):
    """Frames of Virtual KITTI 2 under ``root``.

    Args:
        root: release root (merged tree or the ``vkitti_2.0.3_<modality>`` directories side by side).
        scenes: scene names (default: every ``Scene*`` found for RGB).
        variations: variation names (``clone``, ``fog``, ``morning`` ...).
        camera: 0 (left) or 1 (right).
        tasks: subset of :data:`VKITTI2_TASKS` (default: all five). Frames without a next frame are
            dropped when a flow is requested.
    """

    def __init__(self, root: str | os.PathLike, scenes: Sequence[str] | None = None,
                 variations: Sequence[str] = ("clone",), camera: int = 0,
                 tasks: Sequence[str | TaskName] | None = None) -> None:
        self.root = require_dir(root, "Virtual KITTI 2 root")
        self._tasks = select_tasks(tasks, VKITTI2_TASKS, "Virtual KITTI 2")
        self.camera = int(camera)
        if scenes is None:
            rgb_root = self.root / "vkitti_2.0.3_rgb" if (self.root / "vkitti_2.0.3_rgb").is_dir() else self.root
            scenes = sorted(p.name for p in rgb_root.glob("Scene*") if p.is_dir())
        self._two_frames = any(t in ("optical_flow", "scene_flow") for t in self._tasks)
        self.frames: list[tuple[str, str, int]] = []
        for scene in scenes:
            for var in variations:
                rgb_dir = self._dir(scene, var, "rgb")
                ids = sorted(int(m.group(1)) for f in rgb_dir.iterdir() if (m := _FRAME.match(f.name)))
                have = set(ids)
                self.frames += [(scene, var, i) for i in ids if not self._two_frames or i + 1 in have]
        if not self.frames:
            raise StableMTLError(
                f"no Virtual KITTI 2 frames under `{self.root}`: expected "
                f"<SceneXX>/<variation>/frames/rgb/Camera_{self.camera}/rgb_<NNNNN>.jpg"
            )
        self._luts: dict[tuple[str, str], dict[int, int]] = {}
        self._K: dict[tuple[str, str], dict[int, np.ndarray]] = {}

    @property
    def domain(self) -> str:
        return "vkitti2"

    @property
    def tasks(self) -> tuple[str, ...]:
        return self._tasks

    def __len__(self) -> int:
        return len(self.frames)

    def _dir(self, scene: str, var: str, key: str) -> Path:
        names, _, _, tar = _MODALITY[key]
        tried = []
        for base in (self.root, self.root / f"vkitti_2.0.3_{tar}"):
            for name in names:
                d = base / scene / var / "frames" / name / f"Camera_{self.camera}"
                if d.is_dir():
                    return d
                tried.append(d)
        raise StableMTLError(
            f"missing Virtual KITTI 2 {key} directory: none of {', '.join(map(str, tried[:2]))} exists"
        )

    def _text(self, scene: str, var: str, name: str) -> Path | None:
        for base in (self.root, self.root / "vkitti_2.0.3_textgt"):
            p = base / scene / var / name
            if p.is_file():
                return p
        return None

    def path(self, index: int, key: str, offset: int = 0) -> Path:
        """File of modality ``key`` (``rgb``, ``depth``, ``semantic``, ``optical_flow``, ``scene_flow``)."""
        scene, var, frame = self.frames[self._check_index(index)]
        _, prefix, ext, _ = _MODALITY[key]
        return self._dir(scene, var, key) / f"{prefix}_{frame + offset:05d}.{ext}"

    def _lut(self, scene: str, var: str) -> dict[int, int]:
        if (scene, var) not in self._luts:
            colors_file = self._text(scene, var, "colors.txt")
            self._luts[scene, var] = _class_lut(read_colors(colors_file) if colors_file else VKITTI2_CLASSES)
        return self._luts[scene, var]

    def intrinsics(self, index: int) -> np.ndarray:
        """3x3 K of the frame from ``intrinsic.txt`` (the release default when the file is absent)."""
        scene, var, frame = self.frames[self._check_index(index)]
        if (scene, var) not in self._K:
            table: dict[int, np.ndarray] = {}
            f = self._text(scene, var, "intrinsic.txt")
            if f is not None:
                for n, line in enumerate(f.read_text().splitlines()[1:], start=2):
                    parts = line.split()
                    if not parts:
                        continue
                    try:
                        fr, cam, fx, fy, cx, cy = (float(x) for x in parts[:6])
                    except ValueError:
                        raise StableMTLError(
                            f"corrupt vKITTI2 intrinsics `{f}` line {n}: expected `frame cameraID fx fy cx cy`"
                        ) from None
                    if int(cam) == self.camera:
                        table[int(fr)] = np.array([[fx, 0, cx], [0, fy, cy], [0, 0, 1]], dtype=np.float32)
            self._K[scene, var] = table
        fx, fy, cx, cy = DEFAULT_INTRINSICS
        default = np.array([[fx, 0, cx], [0, fy, cy], [0, 0, 1]], dtype=np.float32)
        return self._K[scene, var].get(frame, default)

    def __getitem__(self, index: int) -> Sample:
        index = self._check_index(index)
        scene, var, _ = self.frames[index]
        rgb = read_rgb(self.path(index, "rgb"), "vKITTI2 RGB image")
        H, W = rgb.shape[:2]
        frame2 = read_rgb(self.path(index, "rgb", 1), "vKITTI2 RGB image") if self._two_frames else None
        K = self.intrinsics(index)
        labels: dict[str, Label] = {}

        def png16(key: str, what: str) -> np.ndarray:
            path = self.path(index, key)
            arr = read_png16(path, what)
            if arr.shape[:2] != (H, W):
                raise StableMTLError(f"{what} `{path}` is {arr.shape[1]}x{arr.shape[0]}, the image is {W}x{H}")
            return arr

        if "depth" in self._tasks or "normal" in self._tasks:
            raw = png16("depth", "vKITTI2 depth PNG")
            if raw.ndim != 2:
                raise StableMTLError(f"vKITTI2 depth PNG `{self.path(index, 'depth')}` must be single-channel")
            depth, dvalid = decode_depth(raw)
            if "depth" in self._tasks:
                labels["depth"] = Label(depth, dvalid)
            if "normal" in self._tasks:
                labels["normal"] = Label(*normals_from_depth(depth, dvalid, K.astype(np.float64)))
        if "semantic" in self._tasks:
            seg = read_rgb(self.path(index, "semantic"), "vKITTI2 class segmentation PNG")
            ids = _map_classes(seg, self._lut(scene, var))
            labels["semantic"] = Label(ids, ids != IGNORE_ID)
        flow_valid = None
        if "optical_flow" in self._tasks or "scene_flow" in self._tasks:
            flow, flow_valid = decode_flow(_rgb16(png16("optical_flow", "vKITTI2 forward flow PNG"),
                                                  self.path(index, "optical_flow")))
            if "optical_flow" in self._tasks:
                labels["optical_flow"] = Label(flow, flow_valid)
        if "scene_flow" in self._tasks:
            sf = decode_scene_flow(_rgb16(png16("scene_flow", "vKITTI2 forward scene flow PNG"),
                                          self.path(index, "scene_flow")))
            labels["scene_flow"] = Label(np.where(flow_valid[..., None], sf, 0.0).astype(np.float32), flow_valid)
        labels = {k: labels[k] for k in self._tasks}
        return Sample(rgb, frame2, labels, self.domain, name=str(self.path(index, "rgb")), intrinsics=K)


def _rgb16(arr: np.ndarray, path: Path) -> np.ndarray:
    if arr.ndim != 3:
        raise StableMTLError(f"`{path}` must be a 3-channel 16-bit PNG, got shape {arr.shape}")
    return arr
