"""Calibration data, int8 QDQ quantization and the per-task accuracy gate.

    from stablemtl_edge.calibration import calibrate_artifact, GateOptions, GateThresholds, QuantizeOptions

    result = calibrate_artifact("artifacts/small", "drive.mp4", calib_size=32,
                                options=QuantizeOptions(method="entropy"),
                                thresholds=GateThresholds.parse("0.02,depth:0.05"),
                                gate=GateOptions(frames=24, max_frames=72))
    print(result.precisions, result.report.verdict, result.report_md)

Needs onnx and onnxruntime (its quantization tools); not torch. The int8 graphs it writes are run by the
runtime like any other precision (``Runtime.from_artifacts(..., precision="int8")``) and turned into
TensorRT engines on the target.
"""

from .calibrate import CalibrationResult, calibrate_artifact, default_components
from .data import PROCEDURAL, CalibrationPair, CalibrationSet, load_calibration_set
from .exclusions import DEFAULT_RULES, QUANTIZED_OP_TYPES, ExclusionRule, resolve_exclusions
from .gate import DEFAULT_THRESHOLD, GateOptions, GateThresholds, OnGateFail, TaskVerdict, Verdict, heldout_samples
from .mixed import BlockSensitivity, OutputError, block_of, blocks_of, keep_in_float, rank_blocks
from .quantize import CalibMethod, QuantizedGraph, QuantizeOptions, inspect_qdq, quantize_component
from .report import CalibrationReport, cpu_int8_support

__all__ = [
    "BlockSensitivity",
    "CalibMethod",
    "CalibrationReport",
    "CalibrationPair",
    "CalibrationResult",
    "CalibrationSet",
    "DEFAULT_RULES",
    "DEFAULT_THRESHOLD",
    "ExclusionRule",
    "GateOptions",
    "GateThresholds",
    "OnGateFail",
    "OutputError",
    "PROCEDURAL",
    "QUANTIZED_OP_TYPES",
    "QuantizeOptions",
    "QuantizedGraph",
    "TaskVerdict",
    "Verdict",
    "block_of",
    "blocks_of",
    "calibrate_artifact",
    "cpu_int8_support",
    "default_components",
    "heldout_samples",
    "inspect_qdq",
    "keep_in_float",
    "load_calibration_set",
    "quantize_component",
    "rank_blocks",
    "resolve_exclusions",
]
