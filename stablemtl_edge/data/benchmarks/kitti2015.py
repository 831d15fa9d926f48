"""KITTI 2015 scene flow benchmark (training split): optical flow and, with calibration, 3-D scene flow."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ...errors import StableMTLError
from ..sample import Label, Sample
from ...tasks import TaskName
from .base import BenchmarkReader
from ..formats import read_rgb, read_unchanged
from ...records import KeyEnum

__all__ = [
    "Occlusion",
    "StereoCalibration",
    "Kitti2015Reader",
    "decode_flow_png",
    "encode_flow_png",
    "decode_disparity_png",
    "read_calibration",
    "scene_flow_from_disparities",
]


class Occlusion(KeyEnum):
    """Which ground truth to use: all pixels (``occ``) or only those visible in both frames (``noc``)."""

    OCC = "occ"
    NOC = "noc"


def decode_flow_png(png: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """KITTI flow PNG (as read by OpenCV: uint16, BGR) -> (flow ``(H, W, 2)`` px, valid ``(H, W)``).

    The file stores R = u, G = v as ``value * 64 + 2^15`` and B = 1 where the flow is valid.
    """
    if png.dtype != np.uint16 or png.ndim != 3 or png.shape[2] != 3:
        raise StableMTLError(f"KITTI flow PNG must be 3-channel 16-bit, got {png.dtype} {png.shape}")
    flow = (png[..., [2, 1]].astype(np.float32) - 2.0**15) / 64.0
    return flow, png[..., 0] > 0


def encode_flow_png(flow: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Inverse of :func:`decode_flow_png` (uint16 BGR for ``cv2.imwrite``): lets tools write KITTI flow files."""
    enc = np.clip(np.round(np.asarray(flow, dtype=np.float64) * 64.0 + 2.0**15), 0, 65535).astype(np.uint16)
    out = np.zeros(enc.shape[:2] + (3,), dtype=np.uint16)
    out[..., 2], out[..., 1] = enc[..., 0], enc[..., 1]
    out[..., 0] = np.asarray(valid, dtype=bool).astype(np.uint16)
    out[~np.asarray(valid, dtype=bool), 1:] = 0
    return out


def decode_disparity_png(png: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """KITTI disparity PNG (uint16, ``value / 256`` px, 0 = unknown) -> (disparity, valid)."""
    if png.dtype != np.uint16 or png.ndim != 2:
        raise StableMTLError(f"KITTI disparity PNG must be single-channel 16-bit, got {png.dtype} {png.shape}")
    return png.astype(np.float32) / 256.0, png > 0


class StereoCalibration:
    """Rectified left camera (``P_rect_02``) intrinsics and the stereo baseline to camera 3, in metres."""

    def __init__(self, p2: np.ndarray, p3: np.ndarray) -> None:
        self.K = np.asarray(p2, dtype=np.float64)[:, :3].copy()
        fx = self.K[0, 0]
        self.baseline = float(p2[0, 3] - p3[0, 3]) / fx
        if not fx > 0 or not self.baseline > 0:
            raise StableMTLError(f"calibration gives focal {fx} and baseline {self.baseline}: both must be positive")


def read_calibration(path: str | Path) -> StereoCalibration:
    """Parse ``calib_cam_to_cam/<id>.txt`` (``key: numbers`` lines) for ``P_rect_02`` and ``P_rect_03``."""
    path = Path(path)
    if not path.is_file():
        raise StableMTLError(f"KITTI calibration `{path}` is missing: extract data_scene_flow_calib.zip")
    values: dict[str, np.ndarray] = {}
    for line in path.read_text().splitlines():
        key, sep, rest = line.partition(":")
        if not sep:
            continue
        try:
            values[key.strip()] = np.array([float(v) for v in rest.split()])
        except ValueError:
            continue  # non-numeric entries such as calib_time
    try:
        return StereoCalibration(values["P_rect_02"].reshape(3, 4), values["P_rect_03"].reshape(3, 4))
    except (KeyError, ValueError):
        raise StableMTLError(f"`{path}` lacks 12-number P_rect_02 / P_rect_03 lines: is it calib_cam_to_cam?") from None


def scene_flow_from_disparities(
    flow: np.ndarray, disp0: np.ndarray, disp1: np.ndarray, calib: StereoCalibration
) -> np.ndarray:
    """3-D motion of each frame-1 pixel in metres, OpenCV camera axes (x right, y down, z forward).

    The pixel (x, y) at depth f b / d0 moves to (x + u, y + v) at depth f b / d1 (``disp_occ_1`` is the
    t+1 disparity stored at the frame-t pixel). Invalid disparities give non-finite values; mask them.
    """
    h, w = disp0.shape
    fx, fy, cx, cy = calib.K[0, 0], calib.K[1, 1], calib.K[0, 2], calib.K[1, 2]
    fb = fx * calib.baseline
    with np.errstate(divide="ignore", invalid="ignore"):
        z0 = np.where(disp0 > 0, fb / disp0.astype(np.float64), np.nan)
        z1 = np.where(disp1 > 0, fb / disp1.astype(np.float64), np.nan)
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    x1, y1 = xs + flow[..., 0], ys + flow[..., 1]
    p0 = np.stack([(xs - cx) * z0 / fx, (ys - cy) * z0 / fy, z0], axis=-1)
    p1 = np.stack([(x1 - cx) * z1 / fx, (y1 - cy) * z1 / fy, z1], axis=-1)
    return (p1 - p0).astype(np.float32)


class Kitti2015Reader(BenchmarkReader):
    """KITTI 2015 flow / scene flow, 200 training pairs.

    Layout (``data_scene_flow.zip`` and, for scene flow, ``data_scene_flow_calib.zip``)::

        root/image_2/<id>_10.png, <id>_11.png       frames t and t+1
        root/flow_{occ,noc}/<id>_10.png             16-bit flow
        root/disp_{occ,noc}_0/<id>_10.png           16-bit disparity at t
        root/disp_{occ,noc}_1/<id>_10.png           16-bit disparity at t+1, at frame-t pixels
        calib_root/calib_cam_to_cam/<id>.txt        P_rect_02, P_rect_03

    Args:
        root: the ``training`` folder of the scene-flow archive.
        calib_root: the ``training`` folder of the calibration archive; None = no scene flow labels.
        occlusion: ``occ`` (all pixels, the benchmark default) or ``noc``.
    """

    name = "kitti2015"
    labelled = ("optical_flow", "scene_flow")

    def __init__(
        self, root: str | Path, calib_root: str | Path | None = None, occlusion: Occlusion = Occlusion.OCC
    ) -> None:
        self.root = Path(root)
        self.calib_root = Path(calib_root) if calib_root is not None else None
        self.occlusion = Occlusion(occlusion)
        frames = sorted((self.root / "image_2").glob("*_10.png"))
        ids = [p.name[: -len("_10.png")] for p in frames]
        self._ids = self._require_items(ids, self.root / "image_2", "`<id>_10.png` frames")

    def __len__(self) -> int:
        return len(self._ids)

    def _load(self, index: int) -> Sample:
        fid = self._ids[index]
        occ = self.occlusion.value
        frame1 = read_rgb(self.root / "image_2" / f"{fid}_10.png")
        frame2 = read_rgb(self.root / "image_2" / f"{fid}_11.png")
        flow_png = read_unchanged(self.root / f"flow_{occ}" / f"{fid}_10.png", "KITTI flow PNG")
        flow, flow_valid = decode_flow_png(flow_png)
        labels = {TaskName.OPTICAL_FLOW.value: Label(value=flow, valid=flow_valid)}
        intrinsics = None
        if self.calib_root is not None:
            calib = read_calibration(self.calib_root / "calib_cam_to_cam" / f"{fid}.txt")
            d0, v0 = self._disparity(f"disp_{occ}_0", fid)
            d1, v1 = self._disparity(f"disp_{occ}_1", fid)
            sf = scene_flow_from_disparities(flow, d0, d1, calib)
            valid = flow_valid & v0 & v1 & np.isfinite(sf).all(axis=-1)
            sf = np.where(valid[..., None], sf, 0.0).astype(np.float32)
            labels[TaskName.SCENE_FLOW.value] = Label(value=sf, valid=valid)
            intrinsics = calib.K
        return Sample(
            frame1=frame1,
            frame2=frame2,
            labels=labels,
            domain=self.name,
            name=f"{self.root}/{fid}",
            intrinsics=intrinsics,
        )

    def _disparity(self, folder: str, fid: str) -> tuple[np.ndarray, np.ndarray]:
        return decode_disparity_png(read_unchanged(self.root / folder / f"{fid}_10.png", "KITTI disparity PNG"))
