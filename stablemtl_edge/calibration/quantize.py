"""Explicit int8 quantization of one component: a QDQ ONNX graph for TensorRT (strongly typed) or onnxruntime.

Built on onnxruntime's ``quantize_static`` (the maintained quantizer; nothing here computes a scale):

- ``QuantFormat.QDQ``: QuantizeLinear/DequantizeLinear pairs around float operators, the explicit form
  TensorRT consumes (its implicit int8 calibrators are gone in TensorRT 11);
- int8 weights, symmetric; activations int8 symmetric for TensorRT (every zero point 0, as it requires),
  uint8 asymmetric for onnxruntime;
- per-channel weight scales along the output channels (Conv axis 0, MatMul the last axis, Gemm its
  output axis), per-tensor activation scales;
- Q/DQ in front of :data:`~.exclusions.QUANTIZED_OP_TYPES`; biases stay float (TensorRT fuses them);
  where the graph is placed for onnxruntime (:class:`QdqTarget`), Conv outputs are quantized as well;
- ranges from minmax, percentile or entropy calibration over the recorded feeds, cached in onnxruntime's
  calibration-cache JSON so a re-run with the same graph, data and method skips calibration.

The fp32 graph first goes through onnxruntime's quantization pre-processing (ONNX shape inference and
constant folding; node names are kept, so the exclusion rules still apply): it halves the node count of
our UNets, which the quantizer's run time grows with quadratically.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper
from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process

from ..artifact.layout import PROTOBUF_LIMIT
from ..artifact.manifest import QdqTarget
from ..errors import StableMTLError
from ..fp16 import convert_to_fp16
from .exclusions import QUANTIZED_OP_TYPES, Exclusions, resolve_exclusions
from ..records import KeyEnum

__all__ = [
    "CalibMethod",
    "activation_format",
    "float_format",
    "write_qdq",
    "QuantizeOptions",
    "QuantizedGraph",
    "QDQSummary",
    "quantize_component",
    "inspect_qdq",
    "remove_graph",
    "save_graph",
]

_QDQ = ("QuantizeLinear", "DequantizeLinear")


class CalibMethod(KeyEnum):
    """How activation ranges are derived from the calibration feeds."""

    MINMAX = "minmax"  # the observed range: no clipping, sensitive to outliers
    PERCENTILE = "percentile"  # clip at a high percentile of |x| (``percentile``)
    ENTROPY = "entropy"  # the clipping that minimises the KL divergence of the int8 histogram (TensorRT's)

    @property
    def ort(self) -> CalibrationMethod:
        return {
            CalibMethod.MINMAX: CalibrationMethod.MinMax,
            CalibMethod.PERCENTILE: CalibrationMethod.Percentile,
            CalibMethod.ENTROPY: CalibrationMethod.Entropy,
        }[self]


# Where Q/DQ go, per target (:class:`~stablemtl_edge.artifact.manifest.QdqTarget`). TensorRT fuses a
# DequantizeLinear into the int8 layer it feeds and wants Q/DQ on layer inputs only, symmetric int8 (zero
# point 0). onnxruntime's CPU provider turns a Conv into an int8 ``QLinearConv`` only where a
# QuantizeLinear follows it (a Conv with float output runs in float on dequantized weights, slower than
# fp32), while a MatMul or Gemm with float output still becomes an int8 kernel; and its x86 kernels
# multiply uint8 by int8 (VPDPBUSD), so it rewrites int8 activations to uint8 itself, skipping any Q with
# several consumers, which leaves the Conv behind it unfused: uint8 activations from the start avoid that.
_FLOAT_OUTPUTS = {QdqTarget.TENSORRT: QUANTIZED_OP_TYPES, QdqTarget.ONNXRUNTIME: ("MatMul", "Gemm")}
_ACTIVATIONS = {QdqTarget.TENSORRT: (QuantType.QInt8, True), QdqTarget.ONNXRUNTIME: (QuantType.QUInt8, False)}


def activation_format(target: QdqTarget) -> str:
    """How a target's graphs quantize activations, for reports and the manifest."""
    kind, symmetric = _ACTIVATIONS[target]
    return (f"{'int8' if kind is QuantType.QInt8 else 'uint8'}, {'symmetric' if symmetric else 'asymmetric'}, "
            "per-tensor")


@dataclass(frozen=True)
class QuantizeOptions:
    """Everything that decides the int8 graph besides the calibration data.

    Attributes:
        method: calibration method.
        percentile: clipping percentile of the ``percentile`` method.
        exclude: extra node names / globs kept in floating point.
        quantize: rule keys dropped, or node names / globs forced into int8.
        default_exclusions: apply the default exclusion rules.
        target: the runtime the Q/DQ placement is for.
    """

    method: CalibMethod = CalibMethod.MINMAX
    percentile: float = 99.999
    exclude: tuple[str, ...] = ()
    quantize: tuple[str, ...] = ()
    default_exclusions: bool = True
    target: QdqTarget = QdqTarget.TENSORRT

    def __post_init__(self) -> None:
        object.__setattr__(self, "method", _parse_method(self.method))
        object.__setattr__(self, "target", QdqTarget.parse(self.target, "Q/DQ target"))
        if not 50.0 < self.percentile <= 100.0:
            raise StableMTLError(f"the calibration percentile must be in (50, 100], got {self.percentile}")

    def calibration_key(self) -> dict[str, Any]:
        """The options that change the collected ranges (exclusions do not: ranges cover every layer)."""
        key: dict[str, Any] = {"method": self.method.value, "op_types": list(QUANTIZED_OP_TYPES)}
        if self.method is CalibMethod.PERCENTILE:
            key["percentile"] = self.percentile
        return key


def _parse_method(value: CalibMethod | str) -> CalibMethod:
    if isinstance(value, CalibMethod):
        return value
    key = str(value).strip().lower()
    if key == "max":
        key = "minmax"
    try:
        return CalibMethod(key)
    except ValueError:
        raise StableMTLError(
            f"unknown calibration method `{value}`: choose from {', '.join(m.value for m in CalibMethod)}"
        ) from None


@dataclass(frozen=True)
class QuantizedGraph:
    """What one quantization produced, read back from the written graph.

    Attributes:
        quantized: names of the Conv/MatMul/Gemm nodes with Q/DQ inputs.
        excluded: node name -> the rule that kept it in floating point.
        excluded_layers: the excluded Conv/MatMul/Gemm nodes.
        qdq_nodes: number of QuantizeLinear + DequantizeLinear nodes.
        cache_hit: calibration ranges came from the cache.
        external_data: name of the external data file, or None when the graph is one file.
    """

    quantized: tuple[str, ...]
    excluded: dict[str, str]
    excluded_layers: tuple[str, ...]
    qdq_nodes: int
    cache_hit: bool
    external_data: str | None = None
    rules: tuple[str, ...] = field(default=())

    def record(self) -> dict[str, Any]:
        by_rule: dict[str, int] = {}
        for rule in self.excluded.values():
            by_rule[rule] = by_rule.get(rule, 0) + 1
        return {
            "quantized_nodes": len(self.quantized),
            "excluded_layers": len(self.excluded_layers),
            "quantized_layers": list(self.quantized),
            "excluded_layer_names": list(self.excluded_layers),
            "excluded_nodes": list(self.excluded),
            "excluded_by_rule": by_rule,
            "qdq_nodes": self.qdq_nodes,
            "ranges": "from the calibration cache" if self.cache_hit else "calibrated",
            "rules": list(self.rules),
        }


@dataclass(frozen=True)
class QDQSummary:
    """A written QDQ graph as TensorRT will see it."""

    quantized: tuple[str, ...]  # Conv/MatMul/Gemm nodes whose two operands both come from a DequantizeLinear
    qdq_nodes: int
    zero_points: tuple[tuple[str, str, bool], ...]  # (node, zero-point dtype, all zero)
    per_channel_weights: tuple[str, ...]  # DequantizeLinear nodes of weights with one scale per channel


def inspect_qdq(model: onnx.ModelProto) -> QDQSummary:
    """Walk a QDQ graph: which layers are quantized, every zero point, which weights are per-channel."""
    inits = {i.name: i for i in model.graph.initializer}
    producer = {o: n for n in model.graph.node for o in n.output}
    quantized = []
    zps = []
    per_channel = []
    qdq = 0
    for node in model.graph.node:
        if node.op_type in _QDQ:
            qdq += 1
            zp = inits.get(node.input[2]) if len(node.input) > 2 else None
            if zp is None:
                zps.append((node.name, "missing", False))
            else:
                arr = numpy_helper.to_array(zp)
                zps.append((node.name, str(arr.dtype), bool(np.all(arr == 0))))
            scale = inits.get(node.input[1])
            if node.op_type == "DequantizeLinear" and node.input[0] in inits and scale is not None:
                if numpy_helper.to_array(scale).size > 1:
                    per_channel.append(node.name)
        elif node.op_type in QUANTIZED_OP_TYPES:
            # Both operands, not just one: with onnxruntime's placement a float layer may read a tensor
            # that an int8 Conv before it wrote through Q/DQ.
            if all(i in producer and producer[i].op_type == "DequantizeLinear" for i in node.input[:2]):
                quantized.append(node.name)
    return QDQSummary(tuple(quantized), qdq, tuple(zps), tuple(per_channel))


@contextlib.contextmanager
def _quiet_ort_advice() -> Iterator[None]:
    """Drop onnxruntime's root-logger advice to pre-process (done) so progress output stays readable."""

    class _Filter(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            return "pre-process" not in record.getMessage()

    f = _Filter()
    root = logging.getLogger()
    root.addFilter(f)
    try:
        yield
    finally:
        root.removeFilter(f)


#: Where QuantizeLinear / DequantizeLinear take fp16 scales.
FP16_SCALES_OPSET = 19
# Ops whose schema changed between opset 17 and 19 in ways their defaults keep the old behaviour of
# (new types, float8 saturation, optional inputs and attributes): the raise to 19 is a renumbering for them.
_SAME_BEHAVIOUR_AT_19 = frozenset({"QuantizeLinear", "DequantizeLinear", "Cast", "CastLike", "Equal", "Reshape",
                                   "Resize", "Shape", "Size", "Identity", "Constant", "Pad", "AveragePool"})


def float_format(target: QdqTarget) -> str:
    """What the layers outside int8 compute in, for reports and the manifest."""
    if target is QdqTarget.TENSORRT:
        return "fp16, with the fp16 graphs' fp32 islands (normalisations, softmax, reductions, exp, trigonometry)"
    return "fp32"


def write_qdq(model: onnx.ModelProto, path: Path, target: QdqTarget) -> str | None:
    """Save a QDQ graph (float part fp32, as the quantizer writes it) in the form its target runs best.

    A strongly typed TensorRT network computes every layer in the type the graph gives it, so for TensorRT
    the layers outside int8 become fp16 as in the fp16 graphs, scales included (opset 19); onnxruntime's CPU
    provider has no fast fp16 kernels, so its graphs stay fp32 around the int8 ones. ``model``'s opset may
    be raised in place. Returns the external data file name, or None.
    """
    if target is QdqTarget.ONNXRUNTIME:
        return save_graph(model, path)
    _raise_opset(model, FP16_SCALES_OPSET)
    with tempfile.TemporaryDirectory(prefix=".qdq-fp32-", dir=path.parent) as scratch:
        source = Path(scratch) / path.name
        save_graph(model, source)
        return convert_to_fp16(source, path)


def _raise_opset(model: onnx.ModelProto, version: int) -> None:
    default = next(o for o in model.opset_import if o.domain in ("", "ai.onnx"))
    if default.version >= version:
        return
    changed = sorted({
        n.op_type for n in model.graph.node if n.domain in ("", "ai.onnx")
        and onnx.defs.get_schema(n.op_type, version).since_version
        != onnx.defs.get_schema(n.op_type, default.version).since_version
    } - _SAME_BEHAVIOUR_AT_19)
    if changed:  # our exporter's graphs have none of these: a new op there needs a real conversion here
        raise RuntimeError(f"cannot renumber opset {default.version} to {version}: {', '.join(changed)} changed")
    default.version = version


def save_graph(model: onnx.ModelProto, path: Path) -> str | None:
    """Save as one file, or with one external data file ``<name>.data`` above protobuf's 2 GB."""
    size = sum(len(t.raw_data) for t in model.graph.initializer)
    if size + (64 << 20) < PROTOBUF_LIMIT:
        onnx.save_model(model, str(path))
        return None
    data = f"{path.name}.data"  # the artifact contract's external data name (manifest.py)
    onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True, location=data,
                    size_threshold=1024)
    return data


def quantize_component(
    source: str | Path,
    destination: str | Path,
    feeds: CalibrationDataReader | None,
    options: QuantizeOptions,
    cache: str | Path,
    component: str = "",
    preprocessed: str | Path | None = None,
) -> QuantizedGraph:
    """Write the int8 QDQ version of one fp32 graph.

    Args:
        source: the fp32 ONNX file (external data beside it is followed).
        destination: the int8 ONNX file to write (replaced atomically, with its external data if any).
        feeds: calibration inputs; may be None when ``cache`` already holds the ranges.
        options: method and exclusions.
        cache: calibration-range cache file (read when present, written otherwise).
        component: name for messages.
        preprocessed: a directory that receives the pre-processed fp32 graph the quantizer started from
            (``pre.onnx``, same node names as the int8 graph) and the QDQ graph with its float part still
            fp32 (``qdq.onnx``), for :func:`~.mixed.keep_in_float`, whose result :func:`write_qdq` saves.

    Returns:
        The quantized and excluded nodes, read back from the written graph.

    Raises:
        StableMTLError: no ranges cached and no feeds, or an exclusion pattern that matches nothing.
    """
    source, destination, cache = Path(source), Path(destination), Path(cache)
    component = component or source.stem
    _check_onnxruntime()
    if feeds is None and not cache.is_file():
        raise StableMTLError(f"`{component}`: no cached calibration ranges at `{cache}` and no calibration feeds")
    big = source.stat().st_size > PROTOBUF_LIMIT or any(
        p.name.startswith(source.name + ".") for p in source.parent.iterdir()
    )
    destination.parent.mkdir(parents=True, exist_ok=True)
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache_hit = cache.is_file()
    with tempfile.TemporaryDirectory(prefix=f".quantize-{component}-", dir=destination.parent) as scratch:
        pre = Path(scratch) / "pre.onnx"
        raw = Path(scratch) / "qdq.onnx"  # the quantizer's output: float part fp32
        with _quiet_ort_advice():
            quant_pre_process(str(source), str(pre), skip_symbolic_shape=True, save_as_external_data=big,
                              all_tensors_to_one_file=True, external_data_location="pre.onnx.data")
            exclusions = resolve_exclusions(
                onnx.load(str(pre), load_external_data=False), component, options.exclude, options.quantize,
                options.default_exclusions, require_match=False,  # the caller checks patterns over every graph
            )
            if not exclusions.candidates:
                raise StableMTLError(
                    f"`{component}`: every Conv/MatMul/Gemm layer is excluded, nothing is left to quantize: "
                    "drop some --exclude patterns or leave this component out of --components"
                )
            extra: dict[str, Any] = {
                "ActivationSymmetric": _ACTIVATIONS[options.target][1],
                "WeightSymmetric": True,
                "QuantizeBias": False,
                "QDQOpTypePerChannelSupportToAxis": {"MatMul": -1},  # output channels, also for [T, K, N]
                "OpTypesToExcludeOutputQuantization": list(_FLOAT_OUTPUTS[options.target]),
            }
            stride = _stride(feeds)
            if stride:
                # Calibrate in slices of `stride` feeds, merging ranges/histograms between slices: the
                # augmented graph's outputs of a full-size UNet do not fit in memory for a whole set.
                # (CalibMaxIntermediateOutputs would be the obvious option, but onnxruntime 1.32 drops
                # the data of each full slice instead of merging it.)
                extra["CalibStridedMinMax"] = stride
            if options.method is CalibMethod.PERCENTILE:
                extra["CalibPercentile"] = options.percentile
            quantize_static(
                str(pre),
                str(raw),
                feeds,
                quant_format=QuantFormat.QDQ,
                op_types_to_quantize=list(QUANTIZED_OP_TYPES),
                per_channel=True,
                reduce_range=False,
                activation_type=_ACTIVATIONS[options.target][0],
                weight_type=QuantType.QInt8,
                nodes_to_exclude=list(exclusions.excluded),
                use_external_data_format=big,
                calibrate_method=options.method.ort,
                extra_options=extra,
                calibration_cache_path=str(cache),
            )
        model = onnx.load(str(raw), load_external_data=True)
        summary = inspect_qdq(model)
        _check_layers(summary, exclusions, component)
        if options.target is QdqTarget.TENSORRT:
            _check_tensorrt_rules(summary, component)
        if preprocessed is not None:  # both graphs as written, with their external data: moved, not saved again
            Path(preprocessed).mkdir(parents=True, exist_ok=True)
            for f in Path(scratch).iterdir():
                if f.name.startswith((pre.name, raw.name)):
                    f.replace(Path(preprocessed) / f.name)
        staged = Path(scratch) / destination.name
        data = write_qdq(model, staged, options.target)
        del model
        onnx.checker.check_model(str(staged))
        _move_into_place(staged, destination, data)
    return QuantizedGraph(
        quantized=summary.quantized,
        excluded=dict(exclusions.excluded),
        excluded_layers=exclusions.excluded_layers,
        qdq_nodes=summary.qdq_nodes,
        cache_hit=cache_hit,
        external_data=data,
        rules=exclusions.rules,
    )


def _check_onnxruntime() -> None:
    """The range cache is onnxruntime's own (``calibration_cache_path``, 1.32+): refuse older versions clearly."""
    if "calibration_cache_path" not in inspect.signature(quantize_static).parameters:
        import onnxruntime

        raise StableMTLError(
            f"onnxruntime {onnxruntime.__version__} is too old for int8 calibration (its quantizer has no "
            "calibration cache): `pip install \"onnxruntime>=1.32\"`"
        )


def _stride(feeds: CalibrationDataReader | None, largest: int = 4) -> int | None:
    """The largest slice size <= ``largest`` that divides the number of feeds (onnxruntime's requirement)."""
    if feeds is None or not hasattr(feeds, "set_range") or not hasattr(feeds, "__len__"):
        return None
    n = len(feeds)  # type: ignore[arg-type]
    return max(d for d in range(1, min(largest, max(n, 1)) + 1) if n % d == 0) if n else None


def _check_tensorrt_rules(summary: QDQSummary, component: str) -> None:
    """A graph placed for TensorRT must be what it accepts; a violation is our bug, not the user's."""
    bad = [(n, dt) for n, dt, zero in summary.zero_points if dt != "int8" or not zero]
    if bad:
        raise RuntimeError(f"{component}: Q/DQ nodes with a non-zero or non-int8 zero point: {bad[:5]}")


def _check_layers(summary: QDQSummary, exclusions: Exclusions, component: str) -> None:
    leaked = set(summary.quantized) & set(exclusions.excluded)
    if leaked:
        raise RuntimeError(f"{component}: excluded nodes were quantized: {sorted(leaked)[:5]}")


def _move_into_place(staged: Path, destination: Path, data: str | None) -> None:
    """Rename the staged graph (and its data file first) onto the destination; drop a stale data file."""
    if data is not None:
        os.replace(staged.parent / data, destination.parent / data)
    else:
        stale = destination.parent / f"{destination.name}.data"
        if stale.exists():
            stale.unlink()
    os.replace(staged, destination)


def remove_graph(path: str | Path) -> None:
    """Delete an int8 graph and its external data file, if present."""
    path = Path(path)
    for p in (path, path.parent / f"{path.name}.data"):
        if p.exists():
            p.unlink()
