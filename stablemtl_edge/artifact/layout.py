"""Every file name inside an artifact directory, in one place.

The writers (export, calibration, the TensorRT builder) and the readers (runtime, doctor, self-check)
agree on the tree below through these names only; a path spelled anywhere else is a bug::

    manifest.json                      written last, atomically: the artifact exists once it does
    fp32/<component>.onnx[.data]       graphs per precision, external data beside its graph
    fp16/<component>.onnx[.data]
    int8/<component>.onnx[.data]       QDQ graphs, with the calibration set and report
    int8/calibration_data.json         what the int8 graphs were calibrated on (sources, digest)
    int8/calibration_report.{json,md}
    reference/<component>.npz          photograph inputs and torch outputs (the self-check's ground truth)
    reference/end_to_end.npz
    engines/<key>/engine.{plan,json}   TensorRT engines, one folder per cache key
    engines/timing.cache
    engines/onnxruntime-tensorrt/      onnxruntime's own TensorRT engine cache

All names are POSIX and relative to the artifact directory, as the manifest stores them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .manifest import Component, Precision

__all__ = [
    "MANIFEST_NAME",
    "PROTOBUF_LIMIT",
    "REFERENCE_DIR",
    "END_TO_END",
    "ENGINES_DIR",
    "ENGINE_FILE",
    "RECORD_FILE",
    "TIMING_CACHE_FILE",
    "ORT_TRT_CACHE",
    "INT8_DIR",
    "CALIBRATION_SET",
    "CALIBRATION_REPORT_JSON",
    "CALIBRATION_REPORT_MD",
    "graph_file",
    "external_data_name",
    "reference_file",
    "calibration_file",
]

MANIFEST_NAME = "manifest.json"
REFERENCE_DIR = "reference"
END_TO_END = "end_to_end"
ENGINES_DIR = "engines"
ENGINE_FILE = "engine.plan"
RECORD_FILE = "engine.json"
TIMING_CACHE_FILE = "timing.cache"
ORT_TRT_CACHE = f"{ENGINES_DIR}/onnxruntime-tensorrt"
INT8_DIR = "int8"
CALIBRATION_SET = "calibration_data.json"
CALIBRATION_REPORT_JSON = "calibration_report.json"
CALIBRATION_REPORT_MD = "calibration_report.md"


def graph_file(precision: Precision | str, component: Component | str) -> str:
    """``<precision>/<component>.onnx``."""
    return f"{getattr(precision, 'value', precision)}/{getattr(component, 'value', component)}.onnx"


def external_data_name(onnx_name: str) -> str:
    """The external-data file of a graph: its own name plus ``.data``, in the same folder (what onnx and
    TensorRT resolve relative to the graph)."""
    return f"{onnx_name}.data"


#: A single ONNX protobuf cannot exceed 2 GB: past it, weights go to the external data file.
PROTOBUF_LIMIT = 2 * 1024**3


def reference_file(name: str) -> str:
    """``reference/<name>.npz``: a component name or :data:`END_TO_END`."""
    return f"{REFERENCE_DIR}/{name}.npz"


def calibration_file(name: str) -> str:
    """A calibration product (set, report) beside the int8 graphs."""
    return f"{INT8_DIR}/{name}"
