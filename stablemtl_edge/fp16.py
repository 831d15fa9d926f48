"""Strongly-typed fp16 graphs from the fp32 ONNX: fp16 inside, fp32 where values overflow or precision matters.

The conversion is onnxconverter-common's ``float16`` pass with ``keep_io_types`` (the graph I/O stays
float32 / int64 / uint8, so the runtime feeds every precision the same way) and a block list of the ops
that lose too much in half precision: normalisations (their mean/variance reductions), softmax,
exponentials and the timestep embedding's trigonometry. Every tensor of the result has an explicit
type, which is what a strongly-typed TensorRT network needs (TensorRT 11 has no other fp16 mode).
"""

from __future__ import annotations

import warnings

from pathlib import Path

import onnx

from .artifact.layout import PROTOBUF_LIMIT, external_data_name
from .errors import MissingDependencyError

__all__ = ["FP32_OPS", "convert_to_fp16"]

# Ops kept in fp32: reductions and normalisations overflow or lose precision in half, softmax and exp
# saturate, the sinusoidal timestep embedding needs fp32 phases; the rest of the default list of
# onnxconverter-common covers ops without fp16 kernels.
FP32_OPS = (
    "InstanceNormalization",
    "LayerNormalization",
    "GroupNormalization",
    "ReduceMean",
    "ReduceSum",
    "Pow",
    "Sqrt",
    "Softmax",
    "Exp",
    "Sin",
    "Cos",
    "Range",
    "Resize",
)


def _bypass_weight_identities(model: onnx.ModelProto) -> None:
    """Remove ``Identity`` nodes that only rename an initializer (TorchScript's shared-weight aliases).

    The converter keeps an initializer fp32 when a blocked op uses it but retypes the alias, which
    leaves a badly typed graph; pointing the consumers at the initializer itself avoids that.
    """
    graph = model.graph
    weights = {t.name for t in graph.initializer}
    outputs = {o.name for o in graph.output}
    alias = {
        n.output[0]: n.input[0]
        for n in graph.node
        if n.op_type == "Identity" and n.input[0] in weights and n.output[0] not in outputs
    }
    if not alias:
        return
    keep = [n for n in graph.node if not (n.op_type == "Identity" and n.output and n.output[0] in alias)]
    for node in keep:
        for i, name in enumerate(node.input):
            if name in alias:
                node.input[i] = alias[name]
    del graph.node[:]
    graph.node.extend(keep)
    kept_info = [v for v in graph.value_info if v.name not in alias]
    del graph.value_info[:]
    graph.value_info.extend(kept_info)


def _separate_consumed_outputs(model: onnx.ModelProto) -> None:
    """Give graph outputs that are also used inside the graph (the feature taps) a private producer name.

    ``keep_io_types`` casts an output back to fp32 under its public name; internal consumers of that name
    would then receive fp32 where fp16 is expected. An ``Identity`` to the public name avoids it.
    """
    graph = model.graph
    outputs = {o.name for o in graph.output}
    consumed = {i for n in graph.node for i in n.input} & outputs
    if not consumed:
        return
    for node in graph.node:
        for i, name in enumerate(node.output):
            if name in consumed:
                node.output[i] = f"{name}__internal"
        for i, name in enumerate(node.input):
            if name in consumed:
                node.input[i] = f"{name}__internal"
    for name in sorted(consumed):
        graph.node.append(onnx.helper.make_node("Identity", [f"{name}__internal"], [name], name=f"{name}__public"))


def _unshare_mixed_weights(model: onnx.ModelProto, blocked_ops: set[str], blocked_nodes: set[str]) -> None:
    """Copy initializers that both an fp32-kept op and an fp16 op read (the exporter merges equal weights).

    The converter keeps such a weight fp32, so its fp16 consumers would see mixed types; each side gets
    its own copy instead.
    """
    graph = model.graph
    weights = {t.name: t for t in graph.initializer}
    users: dict[str, list[tuple[onnx.NodeProto, bool]]] = {}
    for node in graph.node:
        is_blocked = node.op_type in blocked_ops or node.name in blocked_nodes
        for name in node.input:
            if name in weights:
                users.setdefault(name, []).append((node, is_blocked))
    for name, nodes in users.items():
        if weights[name].data_type != onnx.TensorProto.FLOAT or len({b for _, b in nodes}) < 2:
            continue
        copy = onnx.TensorProto()
        copy.CopyFrom(weights[name])
        copy.name = f"{name}__half"
        graph.initializer.append(copy)
        for node, is_blocked in nodes:
            if not is_blocked:
                for i, n in enumerate(node.input):
                    if n == name:
                        node.input[i] = copy.name


def _float_casts(model: onnx.ModelProto) -> list[str]:
    """Names of the ``Cast(to=float)`` nodes (the encoder's uint8 input), kept fp32 with a cast after.

    The converter retypes their outputs but not their ``to`` attribute; blocking them by name (not by op
    type, which would make it block its own inserted casts) keeps the graph consistently typed.
    """
    names = []
    for i, node in enumerate(model.graph.node):
        if node.op_type == "Cast" and any(a.name == "to" and a.i == onnx.TensorProto.FLOAT for a in node.attribute):
            if not node.name:
                node.name = f"fp32_cast_{i}"
            names.append(node.name)
    return names


def _load_with_shapes(src: Path) -> onnx.ModelProto:
    """``src`` with its weights and inferred value types, for graphs of any size.

    In-memory shape inference serialises the model, weights included, into one protobuf, which cannot
    exceed 2 GB (the sd2 UNets are 3.5 GB); inference on the file reads the external data by reference.
    """
    inferred = src.with_name(src.stem + ".shapes.onnx")  # beside src, so its external data resolves
    try:
        onnx.shape_inference.infer_shapes_path(str(src), str(inferred))
        return onnx.load(str(inferred), load_external_data=True)
    finally:
        inferred.unlink(missing_ok=True)


def convert_to_fp16(src: Path, dst: Path) -> str | None:
    """Write the fp16 version of ``src`` to ``dst``; return its external data file name, or None.

    Args:
        src: an fp32 graph written by :func:`.onnx_export.export_component` (external data beside it).
        dst: where to write; external data is used when the fp16 weights still exceed 2 GB.
    """
    try:
        from onnxconverter_common import float16
    except ImportError:
        raise MissingDependencyError("onnxconverter-common", "export", "fp16 conversion") from None

    model = _load_with_shapes(src)
    _bypass_weight_identities(model)
    _separate_consumed_outputs(model)
    blocked = set(float16.DEFAULT_OP_BLOCK_LIST) | set(FP32_OPS)
    casts = _float_casts(model)
    _unshare_mixed_weights(model, blocked, set(casts))
    with warnings.catch_warnings():
        # One warning per constant clamped to the fp16 range (e.g. -inf -> -10000 in attention masks);
        # the parity check against fp32 that follows is what tells whether that matters.
        warnings.filterwarnings("ignore", category=UserWarning, module="onnxconverter_common")
        half = float16.convert_float_to_float16(  # shapes are inferred already: the converter's own
            model, keep_io_types=True, op_block_list=sorted(blocked), node_block_list=casts,  # pass serialises
            disable_shape_infer=True,  # the whole model, which fails past 2 GB
        )
    del model
    dst.parent.mkdir(parents=True, exist_ok=True)
    size = sum(len(t.raw_data) for t in half.graph.initializer)
    data = None
    if size + (64 << 20) < PROTOBUF_LIMIT:
        onnx.save_model(half, str(dst))
    else:
        data = external_data_name(dst.name)
        onnx.save_model(
            half, str(dst), save_as_external_data=True, all_tensors_to_one_file=True, location=data, size_threshold=1024
        )
    del half
    onnx.checker.check_model(str(dst))
    return data
