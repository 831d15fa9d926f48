"""The machine's GEMM peak as the runtime's own backend reaches it: a one-MatMul graph, timed for a second.

``stablemtl-bench`` divides each component's achieved FLOP/s (its FLOPs per row from the manifest, times
rows per frame, over its time per frame) by this figure, so the table says how far each component is
from what the same onnxruntime build, providers and thread count do on a large square matrix product.
The probe graph is a single ``MatMul`` of an ``n x n`` input by an ``n x n`` constant (fp32; fp16 on a GPU
provider) and, on a CPU with int8 dot-product instructions, a ``MatMulInteger`` (uint8 x int8 -> int32,
the kernel onnxruntime's QDQ int8 graphs run on). They are run in turn for the time budget (and once
after each frame a benchmark times) and the fastest call counts (``2 n^3`` FLOPs): a peak, not an average.

torch-free; builds the graphs with ``onnx.helper`` (onnx is imported only here, when a probe is asked for).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..artifact.manifest import Precision
from ..cpu import cpu_int8_support
from .backends.onnxruntime import CPU, ProviderSpec

__all__ = ["GemmPeak", "GemmProbe", "gemm_model", "measure_gemm_peaks", "probe_precisions", "CPU_SIZE", "GPU_SIZE"]

CPU_SIZE = 1024  # 2.1 GFLOP a call: tens of ms on a few cores, big enough for the kernels' full rate
GPU_SIZE = 4096  # 137 GFLOP a call: milliseconds on a data-centre GPU


@dataclass(frozen=True)
class GemmPeak:
    """One probe's result: the best of ``calls`` runs of an ``n x n`` by ``n x n`` product."""

    precision: str
    n: int
    provider: str
    calls: int
    best_ms: float

    @property
    def flops_per_s(self) -> float:
        return 2.0 * self.n**3 / (self.best_ms * 1e-3)

    def to_dict(self) -> dict[str, Any]:
        return {"precision": self.precision, "n": self.n, "provider": self.provider, "calls": self.calls,
                "best_ms": self.best_ms, "flops_per_s": self.flops_per_s}


def gemm_model(precision: Precision, n: int) -> bytes:
    """A one-node ``y = a @ b`` model with ``b`` a constant, as serialized bytes."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    if precision is Precision.INT8:
        a_type, y_type = TensorProto.UINT8, TensorProto.INT32
        b = rng.integers(-127, 128, (n, n), dtype=np.int8)
        node = helper.make_node("MatMulInteger", ["a", "b"], ["y"])
    else:
        a_type = y_type = TensorProto.FLOAT16 if precision is Precision.FP16 else TensorProto.FLOAT
        b = rng.standard_normal((n, n)).astype(np.float16 if precision is Precision.FP16 else np.float32)
        node = helper.make_node("MatMul", ["a", "b"], ["y"])
    graph = helper.make_graph(
        [node], f"gemm_{precision.value}_{n}", [helper.make_tensor_value_info("a", a_type, [n, n])],
        [helper.make_tensor_value_info("y", y_type, [n, n])], [numpy_helper.from_array(b, "b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # what onnxruntime 1.17 and newer read
    return onnx.shape_inference.infer_shapes(model).SerializeToString()


def _input(precision: Precision, n: int) -> np.ndarray:
    rng = np.random.default_rng(1)
    if precision is Precision.INT8:
        return rng.integers(0, 256, (n, n), dtype=np.uint8)
    return rng.standard_normal((n, n)).astype(np.float16 if precision is Precision.FP16 else np.float32)


def probe_precisions(provider: str) -> tuple[Precision, ...]:
    """fp32 always; fp16 on a GPU provider; int8 on the CPU provider when the CPU has int8 dot products
    (without them onnxruntime's int8 kernels are slower than fp32, and no int8 graph would run at that rate)."""
    if provider != CPU:
        return (Precision.FP32, Precision.FP16)
    return (Precision.FP32, Precision.INT8) if cpu_int8_support().vnni else (Precision.FP32,)


class GemmProbe:
    """The probe graphs' sessions, built once; each :meth:`sample` times one product per precision.

    A benchmark interleaves samples with the frames it times, so each frame's component rates can be set
    against the GEMM rate of the same moment: on a shared machine the load drifts within seconds.

    Args:
        providers: the runtime's granted providers, first = the device probed.
        threads: intra-op threads, as the runtime's sessions were given (None = all cores).
        n: the matrix side (default :data:`CPU_SIZE` on the CPU provider, :data:`GPU_SIZE` otherwise).
    """

    def __init__(self, providers: Sequence[ProviderSpec], threads: int | None = None, n: int | None = None) -> None:
        import onnxruntime as ort

        first = providers[0] if isinstance(providers[0], str) else providers[0][0]
        self.n = n or (CPU_SIZE if first == CPU else GPU_SIZE)
        options = ort.SessionOptions()
        options.log_severity_level = 3
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")  # as the runtime's sessions
        if threads is not None:
            options.intra_op_num_threads = int(threads)
        self._sessions = {}
        for precision in probe_precisions(first):
            session = ort.InferenceSession(gemm_model(precision, self.n), sess_options=options,
                                           providers=list(providers))
            feed = {"a": _input(precision, self.n)}
            session.run(None, feed)  # the first run allocates and packs the constant
            self._sessions[precision.value] = (session, feed)
        self._best = dict.fromkeys(self._sessions, float("inf"))
        self._calls = dict.fromkeys(self._sessions, 0)

    def sample(self) -> dict[str, float]:
        """Precision -> FLOP/s of one product now."""
        rates = {}
        for key, (session, feed) in self._sessions.items():
            start = time.perf_counter()
            session.run(None, feed)
            elapsed = time.perf_counter() - start
            self._best[key] = min(self._best[key], elapsed)
            self._calls[key] += 1
            rates[key] = 2.0 * self.n**3 / elapsed
        return rates

    def run_for(self, seconds: float) -> None:
        """Sample for ``seconds`` (at least three calls per precision)."""
        deadline = time.perf_counter() + seconds
        while min(self._calls.values()) < 3 or time.perf_counter() < deadline:
            self.sample()

    def peaks(self) -> dict[str, GemmPeak]:
        """Precision -> the fastest call so far."""
        return {k: GemmPeak(k, self.n, session.get_providers()[0], self._calls[k], self._best[k] * 1e3)
                for k, (session, _) in self._sessions.items()}


def measure_gemm_peaks(
    providers: Sequence[ProviderSpec], threads: int | None = None, seconds: float = 1.0, n: int | None = None
) -> dict[str, GemmPeak]:
    """Precision -> the best GEMM rate of this onnxruntime build with these providers and threads, probed
    for ``seconds`` after the sessions are built (see :class:`GemmProbe`)."""
    probe = GemmProbe(providers, threads, n)
    probe.run_for(seconds)
    return probe.peaks()
