"""The GEMM peak probe: a real matrix product, timed within its budget, int8 only where the CPU has it."""

from __future__ import annotations

import time

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper

from stablemtl_edge.artifact.manifest import Precision
from stablemtl_edge.runtime import peak
from stablemtl_edge.runtime.backends.onnxruntime import CPU


@pytest.mark.parametrize("precision", [Precision.FP32, Precision.INT8])
def test_the_probe_graph_is_the_matrix_product(precision):
    n = 48
    session = ort.InferenceSession(peak.gemm_model(precision, n), providers=[CPU])
    a = peak._input(precision, n)
    (y,) = session.run(None, {"a": a})
    (b,) = (numpy_helper.to_array(t) for t in onnx.load_from_string(peak.gemm_model(precision, n)).graph.initializer)
    if precision is Precision.INT8:
        np.testing.assert_array_equal(y, a.astype(np.int32) @ b.astype(np.int32))
    else:
        np.testing.assert_allclose(y, a @ b, rtol=1e-4, atol=1e-3)


def test_the_probe_keeps_to_its_budget_and_reports_the_best_call():
    start = time.perf_counter()
    peaks = peak.measure_gemm_peaks([CPU], threads=1, seconds=0.4, n=256)
    elapsed = time.perf_counter() - start
    assert elapsed < 0.4 + 2.0  # set-up (imports, sessions) and one call past the deadline per precision
    for precision, g in peaks.items():
        assert g.precision == precision and g.provider == CPU and g.n == 256 and g.calls >= 3
        assert g.flops_per_s == pytest.approx(2 * 256**3 / (g.best_ms * 1e-3))
        assert g.to_dict()["flops_per_s"] == g.flops_per_s


@pytest.mark.parametrize("vnni", [True, False, None])
def test_int8_is_probed_only_on_a_cpu_with_int8_dot_products(monkeypatch, vnni):
    real = peak.cpu_int8_support()
    monkeypatch.setattr(peak, "cpu_int8_support", lambda: type(real)(real.machine, (), vnni, "test", "test"))
    want = (Precision.FP32, Precision.INT8) if vnni else (Precision.FP32,)
    assert peak.probe_precisions(CPU) == want
    assert peak.probe_precisions("CUDAExecutionProvider") == (Precision.FP32, Precision.FP16)
