"""Readers for the zero-shot benchmarks, each yielding :class:`stablemtl_edge.data.sample.Sample` records."""

from .base import BenchmarkReader
from .cityscapes import CityscapesReader
from .diode import DiodeReader
from .kitti2015 import Kitti2015Reader, Occlusion
from .kitti_depth import EvalCrop, KittiDepthReader
from .mid_intrinsics import MidIntrinsicsReader

__all__ = [
    "BenchmarkReader",
    "CityscapesReader",
    "DiodeReader",
    "EvalCrop",
    "Kitti2015Reader",
    "KittiDepthReader",
    "MidIntrinsicsReader",
    "Occlusion",
]
