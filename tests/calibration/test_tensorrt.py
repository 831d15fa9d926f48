"""int8 TensorRT engines from the QDQ graphs, through the export builder (strongly typed). Needs a GPU."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from stablemtl_edge.artifact.manifest import Component, Precision
from stablemtl_edge.runtime import Runtime
from tests.runtime.artifact_zoo import copy_artifact

HAVE_TENSORRT = importlib.util.find_spec("tensorrt") is not None


@pytest.mark.gpu
@pytest.mark.tensorrt
@pytest.mark.skipif(not HAVE_TENSORRT, reason="TensorRT is not installed: int8 engines are built on an NVIDIA GPU "
                                               "with TensorRT 10+")
def test_int8_engines_build_from_the_qdq_graphs_and_agree_with_onnxruntime(calibrated_unet, tmp_path):
    from stablemtl_edge.calibration.gate import heldout_samples
    from stablemtl_edge.export.tensorrt import BuildOptions, build_engines

    d = copy_artifact(calibrated_unet.directory, tmp_path / "art")
    built = build_engines(d, Precision.INT8, BuildOptions(optimization_level=0, workspace_gib=1.0))
    assert {b.component for b in built} == set(calibrated_unet.manifest.components[Precision.INT8])
    assert all(b.plan.is_file() and not b.reused for b in built)
    sample = heldout_samples((64, 128), 1)[0]
    with Runtime.from_artifacts(d, tasks="depth,albedo", mode="single", precision="int8", backend="tensorrt") as rt:
        assert rt.runners[Component.UNET].entry.precision is Precision.INT8
        trt_out = rt.predict(sample.frame1)
    with Runtime.from_artifacts(d, tasks="depth,albedo", mode="single", precision="int8",
                                providers=["CPUExecutionProvider"]) as rt:
        ort_out = rt.predict(sample.frame1)
    for key in ("depth", "albedo"):  # same QDQ graph: only kernel rounding differs
        assert np.abs(trt_out[key] - ort_out[key]).mean() < 0.02
    again = build_engines(d, Precision.INT8)
    assert all(b.reused for b in again)
