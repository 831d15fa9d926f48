"""Evaluation (numpy): alignment, per-task metrics, delta_m, benchmark readers and the evaluation loop.

Typical use::

    from stablemtl_edge.eval import evaluate, fit_trivial_baseline
    from stablemtl_edge.data.benchmarks import CityscapesReader

    bench = CityscapesReader("/data/cityscapes", size=(256, 512))
    result = evaluate(runtime, bench, ["semantic"], benchmark=bench.name)
    floor = evaluate(fit_trivial_baseline(bench), bench, ["semantic"], benchmark=bench.name)
    print(result.to_markdown())
"""

from .align import align_depth, align_flow, align_intrinsic, fit_channel_scales, fit_global_scale, fit_scale_shift
from .delta_m import delta_m
from .evaluate import (
    DEPTH_RANGES,
    Predictor,
    TrivialBaseline,
    evaluate,
    fit_trivial_baseline,
    make_accumulator,
    resize_prediction,
)
from .results import (
    MAIN_METRIC,
    DepthMetrics,
    EvalResult,
    IntrinsicMetrics,
    NormalMetrics,
    OpticalFlowMetrics,
    SceneFlowMetrics,
    SemanticMetrics,
    TaskResult,
    higher_is_better,
)

__all__ = [
    "DEPTH_RANGES",
    "MAIN_METRIC",
    "DepthMetrics",
    "EvalResult",
    "IntrinsicMetrics",
    "NormalMetrics",
    "OpticalFlowMetrics",
    "Predictor",
    "SceneFlowMetrics",
    "SemanticMetrics",
    "TaskResult",
    "TrivialBaseline",
    "align_depth",
    "align_flow",
    "align_intrinsic",
    "delta_m",
    "evaluate",
    "fit_channel_scales",
    "fit_global_scale",
    "fit_scale_shift",
    "fit_trivial_baseline",
    "higher_is_better",
    "make_accumulator",
    "resize_prediction",
]
