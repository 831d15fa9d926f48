"""The written QDQ graphs obey TensorRT's rules; exclusions resolve against our real node names."""

from __future__ import annotations

import fnmatch
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper

from stablemtl_edge.calibration import QUANTIZED_OP_TYPES, inspect_qdq, resolve_exclusions
from stablemtl_edge.calibration.quantize import FP16_SCALES_OPSET, QuantizeOptions
from stablemtl_edge.calibration.report import cpu_advice
from stablemtl_edge.export.tensorrt import build_engines
from stablemtl_edge.errors import StableMTLError
from stablemtl_edge.artifact.layout import reference_file
from stablemtl_edge.artifact.manifest import Component, Precision


def _int8_graph(calibrated) -> onnx.ModelProto:
    entry = calibrated.manifest.entry(Precision.INT8, Component.UNET)
    return onnx.load(str(calibrated.directory / entry.file))


def test_every_quantize_dequantize_has_int8_zero_point_zero(calibrated_unet):
    model = _int8_graph(calibrated_unet)
    inits = {i.name: i for i in model.graph.initializer}
    qdq = [n for n in model.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    assert len(qdq) > 100
    for node in qdq:
        assert len(node.input) == 3, f"{node.name} has no explicit zero point"
        zp = numpy_helper.to_array(inits[node.input[2]])
        assert zp.dtype == np.int8, f"{node.name}: zero point {zp.dtype}"
        assert not zp.any(), f"{node.name}: non-zero zero point"
        assert node.domain in ("", "ai.onnx")  # standard ops: TensorRT parses them


def test_weights_are_per_channel_along_output_channels_and_activations_per_tensor(calibrated_unet):
    model = _int8_graph(calibrated_unet)
    inits = {i.name: i for i in model.graph.initializer}
    producer = {o: n for n in model.graph.node for o in n.output}
    checked = {"Conv": 0, "MatMul": 0, "Gemm": 0}
    for node in model.graph.node:
        if node.op_type not in QUANTIZED_OP_TYPES or node.input[0] not in producer:
            continue
        act = producer.get(node.input[0])
        if act is None or act.op_type != "DequantizeLinear":
            continue
        assert numpy_helper.to_array(inits[act.input[1]]).size == 1  # activation: one scale
        wdq = producer.get(node.input[1])
        assert wdq is not None and wdq.op_type == "DequantizeLinear" and wdq.input[0] in inits
        weight = numpy_helper.to_array(inits[wdq.input[0]])
        scale = numpy_helper.to_array(inits[wdq.input[1]])
        assert weight.dtype == np.int8
        axis = next(a.i for a in wdq.attribute if a.name == "axis") % weight.ndim
        out_axis = 0 if node.op_type == "Conv" else weight.ndim - 1
        if node.op_type == "Gemm":
            trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
            out_axis = 0 if trans_b else 1
        assert axis == out_axis, f"{node.name}: per-channel axis {axis}, output channels on {out_axis}"
        assert scale.shape == (weight.shape[axis],)
        checked[node.op_type] += 1
    assert checked["Conv"] > 10 and checked["MatMul"] > 10


def test_excluded_nodes_really_stay_float(calibrated_unet):
    model = _int8_graph(calibrated_unet)
    record = calibrated_unet.manifest.entry(Precision.INT8, Component.UNET).quantization
    summary = inspect_qdq(model)
    excluded = set(record["excluded_nodes"])
    assert len(summary.quantized) == record["quantized_nodes"] > 50
    assert not excluded & set(summary.quantized)
    for pattern in ("*/conv_in/Conv", "*/conv_out/Conv", "*/time_emb_proj/Gemm", "*/time_embedding/linear_1/Gemm",
                    "*/attn2/to_k/MatMul", "*/attn2/to_v/MatMul", "*/attn1/MatMul", "*/attn1/MatMul_1"):
        hits = [n for n in excluded if fnmatch.fnmatchcase(n, pattern)]
        assert hits, f"no excluded node matches {pattern}"
        assert not set(hits) & set(summary.quantized)
    assert any(fnmatch.fnmatchcase(n, "*/attn1/to_q/MatMul") for n in summary.quantized)
    assert any(fnmatch.fnmatchcase(n, "*/resnets.0/conv1/Conv") for n in summary.quantized)
    by_rule = record["excluded_by_rule"]
    assert {"conv_in", "conv_out", "time_embedding", "task_embedding", "normalization", "attention_matmul",
            "softmax"} <= set(by_rule)


def test_default_rules_and_overrides_resolve_against_the_exported_main_stream(tiny_artifacts):
    path = Path(tiny_artifacts) / "fp32" / "unet_main.onnx"
    model = onnx.load(str(path), load_external_data=False)
    base = resolve_exclusions(model, "unet_main")
    names = {n.name: n.op_type for n in model.graph.node}
    task_softmax = [n for n in names if fnmatch.fnmatchcase(n, "*/task_attention*/Softmax*")]
    assert len(task_softmax) == 16 and all(base.excluded[n] == "task_attention_softmax" for n in task_softmax)
    ranks = {i.name: len(i.dims) for i in model.graph.initializer}
    # Scores, attention x values and the query MLP whose weights are gathered by task_id: two activations.
    # (to_out_task is left out: its zero-initialised weights are deduplicated through Identity nodes in
    # this untrained export; the quantizer's pre-processing folds them back into constants.)
    task_act = [n.name for n in model.graph.node if n.op_type == "MatMul" and "task_attention" in n.name
                and "to_out_task" not in n.name and n.input[1] not in ranks]
    assert len(task_act) == 16 * 6 and all(base.excluded[n] == "attention_matmul" for n in task_act)
    stacked = [n.name for n in model.graph.node if n.op_type == "MatMul" and ranks.get(n.input[1], 0) == 3]
    assert len(stacked) == 16 * 4  # key and value MLPs (2 layers each) of 16 task-attention blocks
    assert all(base.excluded[n] == "batched_weight_matmul" for n in stacked)
    assert not set(base.candidates) & set(base.excluded)
    # Force conv_out back into int8 by rule key, keep the middle block in float by glob.
    custom = resolve_exclusions(model, "unet_main", exclude=["*/mid_block/*"], quantize=["conv_out"])
    conv_out = next(n for n in names if n.endswith("/conv_out/Conv"))
    assert conv_out in custom.candidates and conv_out in base.excluded
    mid = [n for n, op in names.items() if "/mid_block/" in n and op in QUANTIZED_OP_TYPES]
    assert mid and all(custom.excluded[n] == "exclude:*/mid_block/*" for n in mid if n not in base.excluded)
    # A node name forces one layer back even when a rule covers it.
    to_k = next(n for n in names if n.endswith("/attn2/to_k/MatMul"))
    assert to_k in resolve_exclusions(model, "unet_main", quantize=[to_k]).candidates
    every = resolve_exclusions(model, "unet_main", defaults=False)
    assert not every.excluded and len(every.candidates) == sum(op in QUANTIZED_OP_TYPES for op in names.values())


def test_patterns_that_match_nothing_are_errors(tiny_artifacts):
    model = onnx.load(str(Path(tiny_artifacts) / "fp32" / "unet.onnx"), load_external_data=False)
    with pytest.raises(StableMTLError, match="`\\*/no_such_layer/\\*` matches no node of `unet`"):
        resolve_exclusions(model, "unet", exclude=["*/no_such_layer/*"])
    with pytest.raises(StableMTLError, match="--quantize pattern"):
        resolve_exclusions(model, "unet", quantize=["conv_outt"])


def test_options_are_checked():
    assert QuantizeOptions(method="max").method.value == "minmax"
    with pytest.raises(StableMTLError, match="choose from minmax, percentile, entropy"):
        QuantizeOptions(method="kl")
    with pytest.raises(StableMTLError, match="percentile"):
        QuantizeOptions(method="percentile", percentile=120.0)
    with pytest.raises(StableMTLError, match="unknown Q/DQ target `trt`: choose from tensorrt, onnxruntime"):
        QuantizeOptions(target="trt")


def _fused(path: Path, tmp_path: Path) -> dict[str, int]:
    """Op counts of the graph as onnxruntime's CPU provider runs it (portable optimization level)."""
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    opts.optimized_model_filepath = str(tmp_path / f"{path.stem}-optimized.onnx")
    ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    return Counter(n.op_type for n in onnx.load(opts.optimized_model_filepath, load_external_data=False).graph.node)


def test_onnxruntime_placement_turns_every_int8_conv_into_an_int8_kernel(calibrated_unet, calibrated_unet_ort,
                                                                          tmp_path):
    graphs = {}
    for name, calibrated in (("tensorrt", calibrated_unet), ("onnxruntime", calibrated_unet_ort)):
        entry = calibrated.manifest.entry(Precision.INT8, Component.UNET)
        assert entry.quantization["target"] == name
        model = onnx.load(str(calibrated.directory / entry.file))
        quantized = set(inspect_qdq(model).quantized)
        convs = sum(n.op_type == "Conv" and n.name in quantized for n in model.graph.node)
        graphs[name] = (calibrated.directory / entry.file, convs, entry.quantization["quantized_nodes"])
    # Same ranges, same exclusions: the same layers are in int8 under both placements.
    assert graphs["tensorrt"][1:] == graphs["onnxruntime"][1:] and graphs["onnxruntime"][1] > 10
    # TensorRT's placement leaves onnxruntime a float Conv on dequantized weights; ours fuses all of them.
    assert _fused(graphs["tensorrt"][0], tmp_path)["QLinearConv"] == 0
    assert _fused(graphs["onnxruntime"][0], tmp_path)["QLinearConv"] == graphs["onnxruntime"][1]
    assert calibrated_unet_ort.manifest.describe_precision("int8").startswith("int8 set (Q/DQ for onnxruntime): ")
    assert calibrated_unet.manifest.describe_precision("int8").startswith("int8 set: ")
    report = calibrated_unet_ort.result.report
    assert report.target == "onnxruntime" and "--target onnxruntime" not in cpu_advice(report.cpu, {}, "onnxruntime")
    assert "--target onnxruntime" in cpu_advice(report.cpu, {}, "tensorrt")


def test_onnxruntime_placement_has_uint8_activations_and_stays_close_to_fp32(calibrated_unet, calibrated_unet_ort):
    # The export's own reference inputs: latents of real frames, inside the calibrated ranges.
    with np.load(calibrated_unet.directory / reference_file(Component.UNET.value)) as ref:
        feed = {"sample": ref["in.sample"], "task_id": ref["in.task_id"]}
    outputs = {}
    for name, directory, precision in (("fp32", calibrated_unet.directory, Precision.FP32),
                                       ("tensorrt", calibrated_unet.directory, Precision.INT8),
                                       ("onnxruntime", calibrated_unet_ort.directory, Precision.INT8)):
        path = directory / calibrated_unet.manifest.entry(precision, Component.UNET).file
        if name == "onnxruntime":
            model = onnx.load(str(path))
            inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
            q = [n for n in model.graph.node if n.op_type == "QuantizeLinear"]
            assert q and all(inits[n.input[2]].dtype == np.uint8 for n in q)
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        outputs[name] = session.run(["latent"], feed)[0]
    scale = float(np.abs(outputs["fp32"]).max())
    errors = {k: float(np.abs(outputs[k] - outputs["fp32"]).max()) / scale for k in ("tensorrt", "onnxruntime")}
    assert 0 < errors["onnxruntime"] < 0.3, errors  # a wrong zero point or scale would be O(1)
    assert errors["onnxruntime"] < 2 * errors["tensorrt"] + 0.01, errors  # the output Q/DQ costs little


def test_tensorrt_refuses_graphs_placed_for_onnxruntime_before_building(calibrated_unet_ort):
    # The check runs before TensorRT is imported: it holds on a machine without it.
    with pytest.raises(StableMTLError, match=r"placed for onnxruntime .* `stablemtl-calibrate --target tensorrt`"):
        build_engines(calibrated_unet_ort.directory, Precision.INT8)


def test_tensorrt_graphs_run_their_float_layers_in_fp16_with_the_fp16_graphs_fp32_islands(calibrated_unet):
    entry = calibrated_unet.manifest.entry(Precision.INT8, Component.UNET)
    assert entry.quantization["float"].startswith("fp16") and entry.opset == FP16_SCALES_OPSET
    model = onnx.load(str(calibrated_unet.directory / entry.file))
    inferred = onnx.shape_inference.infer_shapes(model)
    dtype = {v.name: v.type.tensor_type.elem_type for v in (*inferred.graph.value_info, *inferred.graph.input)}
    dtype.update({i.name: i.data_type for i in model.graph.initializer})
    f16, f32 = onnx.TensorProto.FLOAT16, onnx.TensorProto.FLOAT
    quantized = set(inspect_qdq(model).quantized)
    dq = [n for n in model.graph.node if n.op_type == "DequantizeLinear"]
    assert dq and all(dtype[n.input[1]] == f16 for n in dq)  # scales, hence dequantized values, in fp16
    layers = [n for n in model.graph.node if n.op_type in QUANTIZED_OP_TYPES]
    assert {dtype[n.output[0]] for n in layers if n.name in quantized} == {f16}
    float_layers = [n for n in layers if n.name not in quantized]
    assert float_layers and sum(dtype[n.output[0]] == f16 for n in float_layers) > len(float_layers) // 2
    islands = [n for n in model.graph.node if n.op_type in ("InstanceNormalization", "LayerNormalization", "Softmax")]
    assert islands and all(dtype[n.output[0]] == f32 for n in islands)
    assert {o.type.tensor_type.elem_type for o in model.graph.output} == {f32}  # the I/O contract is unchanged
