"""Every component quantizable (VAE exclusions), and the sensitivity-guided mixed-precision search."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest
from onnx import helper, numpy_helper

from stablemtl_edge.artifact.manifest import Component, Manifest, Precision, file_sha256
from stablemtl_edge.calibration import (
    GateOptions,
    GateThresholds,
    OutputError,
    block_of,
    calibrate_artifact,
    inspect_qdq,
    keep_in_float,
    resolve_exclusions,
)
from stablemtl_edge.calibration.quantize import QuantizeOptions, quantize_component
from stablemtl_edge.calibration.report import CalibrationReport, render_markdown
from stablemtl_edge.errors import StableMTLError
from tests.runtime.artifact_zoo import copy_artifact

SENSITIVE = "/decoder/up_blocks.1/upsamplers.0/conv/Conv"  # the layer made sensitive below (on the main path)
SENSITIVE_BLOCK = "/decoder/up_blocks.1/upsamplers.0"


def test_blocks_are_named_by_their_module_path():
    assert block_of("/unet/unet/down_blocks.1/attentions.0/transformer_blocks.0/attn1/to_q/MatMul") == \
        "/unet/unet/down_blocks.1/attentions.0"
    assert block_of("/decoder/mid_block/resnets.1/conv2/Conv") == "/decoder/mid_block/resnets.1"
    assert block_of("/decoder/layers/layers.7/conv1/Conv") == "/decoder/layers/layers.7"
    assert block_of("/encoder/conv_in/Conv") == "/encoder/conv_in"
    assert block_of(SENSITIVE) == SENSITIVE_BLOCK
    assert block_of("/decoder/up_blocks.1/resnets.0/conv1/Conv") == "/decoder/up_blocks.1/resnets.0"


def test_vae_graphs_keep_their_boundaries_norms_and_attention_in_float(tiny_artifacts):
    for component, first, last in (("encoder", "/encoder/conv_in/Conv", "/quant_conv/Conv"),
                                   ("decoder", "/post_quant_conv/Conv", "/decoder/conv_out/Conv")):
        model = onnx.load(str(Path(tiny_artifacts) / "fp32" / f"{component}.onnx"), load_external_data=False)
        ex = resolve_exclusions(model, component)
        ops = {n.name: n.op_type for n in model.graph.node}
        assert first in ex.excluded and last in ex.excluded
        assert all(ex.excluded[n] == "normalization" for n, op in ops.items() if op == "InstanceNormalization")
        assert all(ex.excluded[n] == "softmax" for n, op in ops.items() if op == "Softmax")  # the mid-block's
        assert all(ex.excluded[n] == "vae_shortcut" for n in ops if "/conv_shortcut/" in n)
        assert any(n.endswith("/mid_block/attentions.0/to_q/MatMul") for n in ex.candidates)
        assert {ops[n] for n in ex.candidates} <= {"Conv", "MatMul"} and len(ex.candidates) > 15
    # The VAE-only rules leave the UNet alone.
    unet = onnx.load(str(Path(tiny_artifacts) / "fp32" / "unet.onnx"), load_external_data=False)
    assert not {"vae_boundary", "vae_shortcut"} & set(resolve_exclusions(unet, "unet").counts())


def test_every_layer_back_in_float_gives_the_fp32_outputs(tiny_artifacts, tmp_path):
    """The surgery is exact: the QDQ graph with all its layers put back in float computes the fp32 graph."""
    src = Path(tiny_artifacts) / "fp32" / "decoder.onnx"
    rng = np.random.default_rng(0)
    feeds = [{"latent": rng.standard_normal((1, 4, 8, 16)).astype(np.float32)} for _ in range(2)]

    class Feeds:
        def __init__(self):
            self.items = iter(feeds)

        def get_next(self):
            return next(self.items, None)

    graph = quantize_component(src, tmp_path / "decoder.onnx", Feeds(), QuantizeOptions(), tmp_path / "cache.json",
                               "decoder", preprocessed=tmp_path / "float")
    qdq = onnx.load(str(tmp_path / "float" / "qdq.onnx"))  # before the fp16 pass of TensorRT's graphs
    flt = onnx.load(str(tmp_path / "float" / "pre.onnx"))
    proxy = OutputError(flt, feeds)
    assert proxy(qdq) > 1e-3  # int8 really changes the output
    restored = keep_in_float(qdq, flt, graph.quantized)
    assert inspect_qdq(restored).qdq_nodes == 0 and proxy(restored) < 1e-6
    half = keep_in_float(qdq, flt, graph.quantized[::2])
    assert set(inspect_qdq(half).quantized) == set(graph.quantized[1::2])
    session = onnxruntime.InferenceSession(half.SerializeToString(), providers=["CPUExecutionProvider"])
    assert np.isfinite(session.run(None, feeds[0])[0]).all()
    with pytest.raises(ValueError, match="is not a Conv/MatMul/Gemm layer"):
        keep_in_float(qdq, flt, ["/decoder/conv_norm_out/InstanceNormalization"])


def _make_sensitive(directory: Path, layer: str = SENSITIVE, factor: float = 1e5) -> None:
    """Give one input channel of ``layer`` an outlier ``factor`` times its range and divide that channel's
    weights by it: fp32 computes the same function, but one per-tensor int8 scale for the activation now
    rounds every other channel away (the case SmoothQuant was made for)."""
    manifest = Manifest.load(directory)
    entry = manifest.entry(Precision.FP32, Component.DECODER)
    path = directory / entry.file
    model = onnx.load(str(path))
    node = next(n for n in model.graph.node if n.name == layer)
    inits = {i.name: i for i in model.graph.initializer}
    weight = numpy_helper.to_array(inits[node.input[1]]).copy()
    channels = weight.shape[1]
    scale = np.ones((1, channels, 1, 1), np.float32)
    scale[0, 0] = factor
    weight[:, 0] /= factor
    inits[node.input[1]].CopyFrom(numpy_helper.from_array(weight, node.input[1]))
    model.graph.initializer.append(numpy_helper.from_array(scale, "outlier_scale"))
    index = list(model.graph.node).index(node)
    model.graph.node.insert(index, helper.make_node("Mul", [node.input[0], "outlier_scale"], ["outlier_out"],
                                                    name="/outlier/Mul"))
    node.input[0] = "outlier_out"
    onnx.save(model, str(path))
    entry = replace(entry, sha256=file_sha256(path))
    components = {p: dict(v) for p, v in manifest.components.items()}
    components[Precision.FP32][Component.DECODER] = entry
    replace(manifest, components=components, files={**manifest.files, entry.file: entry.sha256}).save(directory)


def test_a_sensitive_block_is_found_kept_in_float_and_the_gate_then_passes(tiny_artifacts, tmp_path):
    d = copy_artifact(Path(tiny_artifacts), tmp_path / "art")
    _make_sensitive(d)
    result = calibrate_artifact(d, "procedural", 2, components="decoder", gate=GateOptions(2, 2, min_frames=1),
                                thresholds=GateThresholds(0.1), mixed_tries=2, progress=False)
    report = result.report
    assert not all(v.passed for v in report.gate.int8)  # the decoder in int8 fails the gate
    assert result.passed and result.precisions["decoder"] == "int8" and report.verdict.startswith("PASS")
    m = Manifest.load(d)
    entry = m.entry(Precision.INT8, Component.DECODER)
    mixed = entry.quantization["mixed"]
    assert mixed["blocks_in_float"] == [SENSITIVE_BLOCK]  # found on the first try: the most sensitive block
    assert mixed["proxy_error_after"] < mixed["proxy_error_before"] / 5
    summary = inspect_qdq(onnx.load(str(d / entry.file)))
    block_layers = [n for n in report.components["decoder"].excluded_layer_names if n.startswith(SENSITIVE_BLOCK + "/")]
    assert SENSITIVE in block_layers and not set(block_layers) & set(summary.quantized)
    assert mixed["int8_layers_after"] == len(summary.quantized) == mixed["int8_layers_before"] - len(block_layers)
    assert entry.quantization["excluded_by_rule"]["sensitivity"] == len(block_layers)
    # The label says the component is not all int8.
    assert "decoder int8 (mixed: 1 block in floating point)" in m.describe_precision("int8")
    # The report: the ranking puts the sensitive block first, the try passed, the page lists it.
    search = report.components["decoder"].mixed["search"]
    assert search["ranking"][0]["block"] == SENSITIVE_BLOCK and search["tries"][0]["passed"]
    md = result.report_md.read_text()
    assert "## Mixed precision" in md and f"`{SENSITIVE_BLOCK}`" in md
    assert CalibrationReport.load(result.report_json).to_dict() == report.to_dict()
    assert render_markdown(CalibrationReport.load(result.report_json)) == md


def test_without_the_search_the_sensitive_component_falls_back(tiny_artifacts, tmp_path):
    d = copy_artifact(Path(tiny_artifacts), tmp_path / "art")
    _make_sensitive(d)
    result = calibrate_artifact(d, "procedural", 2, components="decoder", gate=GateOptions(2, 2, min_frames=1),
                                thresholds=GateThresholds(0.1), mixed_tries=0, progress=False)
    assert result.precisions["decoder"] == "fp16" and "decoder" in result.fallbacks
    assert not result.report.components["decoder"].mixed
    with pytest.raises(StableMTLError, match="tries must be an integer >= 0"):
        calibrate_artifact(d, "procedural", 2, components="decoder", mixed_tries=-1, progress=False)


def test_patterns_must_match_some_chosen_graph(tiny_artifacts, tmp_path):
    d = copy_artifact(Path(tiny_artifacts), tmp_path / "art")
    with pytest.raises(StableMTLError, match="pattern `\\*/attn9/\\*` matches no node of encoder, decoder"):
        calibrate_artifact(d, "procedural", 2, components="encoder,decoder", options=QuantizeOptions(exclude=("*/attn9/*",)),
                           progress=False)


@pytest.mark.slow
def test_every_component_by_default_with_the_distilled_decoder(tiny_checkpoint, tmp_path):
    """Default components: all of the set; the distilled decoder is judged decoding (decoder=tiny)."""
    import shutil

    import torch

    from stablemtl_edge.artifact.manifest import Mode
    from stablemtl_edge.export.artifacts import ExportRequest, export_artifacts
    from stablemtl_edge.model.checkpoint import load_pretrained
    from stablemtl_edge.model.tiny_decoder import TinyDecoder, TinyDecoderConfig, save_tiny_decoder
    from stablemtl_edge.runtime import Runtime
    from stablemtl_edge.training.distill import teacher_identity

    ckpt = tmp_path / "model"
    shutil.copytree(tiny_checkpoint, ckpt)
    model = load_pretrained(ckpt)
    torch.manual_seed(0)
    save_tiny_decoder(TinyDecoder(TinyDecoderConfig.for_preset(model.preset)), ckpt,
                      extra={"teacher": teacher_identity(model), "steps": 0, "final_loss": 1.0})
    art = tmp_path / "art"
    export_artifacts(ExportRequest(str(ckpt), art, Mode.SINGLE, (Precision.FP32, Precision.FP16)))
    result = calibrate_artifact(art, "procedural", 2, gate=GateOptions(2, 2, min_frames=1),
                                thresholds=GateThresholds(1.0), progress=False)
    assert result.precisions == {"encoder": "int8", "unet": "int8", "decoder": "int8", "tiny_decoder": "int8"}
    report = json.loads(result.report_json.read_text())
    assert {r["label"] for r in report["runs"]} >= {"fp32", "fp32 (tiny decoder)", "int8 (tiny decoder)"}
    assert report["gate"]["tiny_decoder"] and all(v["passed"] for v in report["gate"]["tiny_decoder"])
    tiny = report["components"]["tiny_decoder"]
    assert tiny["excluded_by_rule"] == {"vae_boundary": 2} and tiny["quantized_layers"]
    with Runtime.from_artifacts(art, tasks="depth", mode="single", precision="int8", decoder="tiny") as rt:
        assert rt.runners[Component.DECODER].entry.component is Component.TINY_DECODER
        assert rt.runners[Component.DECODER].entry.precision is Precision.INT8
