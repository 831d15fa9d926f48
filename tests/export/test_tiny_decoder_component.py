"""The distilled decoder as an optional artifact component: exported with parity, chosen at run time."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from stablemtl_edge.artifact.manifest import Component, Manifest, Mode, Precision
from stablemtl_edge.errors import StableMTLError
from stablemtl_edge.export.artifacts import ExportRequest, export_artifacts
from stablemtl_edge.model.checkpoint import load_pretrained
from stablemtl_edge.model.tiny_decoder import (CONFIG_NAME, TinyDecoder, TinyDecoderConfig, decoder_flops,
                                               load_tiny_decoder, save_tiny_decoder)
from stablemtl_edge.runtime import Runtime
from stablemtl_edge.runtime.selfcheck import check_parity
from stablemtl_edge.tasks import TASK_NAMES
from stablemtl_edge.training.distill import teacher_identity


@pytest.fixture(scope="module")
def with_tiny(tiny_checkpoint, tmp_path_factory):
    """A copy of the tiny checkpoint holding an (untrained) distilled decoder recorded against its weights,
    exported single-stream fp32 + fp16."""
    root = tmp_path_factory.mktemp("tiny_decoder")
    ckpt = root / "model"
    shutil.copytree(tiny_checkpoint, ckpt)
    model = load_pretrained(ckpt)
    torch.manual_seed(0)
    save_tiny_decoder(TinyDecoder(TinyDecoderConfig.for_preset(model.preset)), ckpt,
                      extra={"teacher": teacher_identity(model), "steps": 0, "final_loss": 1.0})
    out = root / "artifact"
    export_artifacts(ExportRequest(str(ckpt), out, Mode.SINGLE, (Precision.FP32, Precision.FP16)))
    return ckpt, out


def test_the_distilled_decoder_is_exported_beside_the_decoder_with_parity(with_tiny):
    _, art = with_tiny
    m = Manifest.load(art)
    for p in (Precision.FP32, Precision.FP16):
        tiny, full = m.entry(p, Component.TINY_DECODER), m.entry(p, Component.DECODER)
        assert tiny.file == f"{p.value}/tiny_decoder.onnx" and tiny.inputs == full.inputs and tiny.outputs == full.outputs
        assert tiny.parity["photo/image"]["passed"] and tiny.parity["random/image"]["passed"]
    ckpt, _ = with_tiny  # its FLOPs, counted at export, agree with the distillation's own count of the student
    student = load_tiny_decoder(ckpt)
    assert m.flops_per_row(Component.TINY_DECODER) == decoder_flops(student, m.profile.latent_hw) > 0
    assert m.flops_per_row(Component.TINY_DECODER) < m.flops_per_row(Component.DECODER) / 10
    record = m.source["tiny_decoder"]
    assert record["steps"] == 0 and set(record["image_mae_vs_full_decoder"]) == set(TASK_NAMES)
    assert "tiny_decoder" in m.references
    assert m.describe_precision("fp16") == "fp16"
    results = check_parity(art, m)  # the self-check covers it too
    assert all("tiny_decoder/photo/image" in {r.key for r in c.results} and not c.failures() for c in results.values())


def test_the_runtime_runs_the_distilled_decoder_in_the_decoders_place(with_tiny):
    _, art = with_tiny
    frame = np.random.default_rng(0).integers(0, 256, (64, 128, 3), dtype=np.uint8)
    out = {}
    for decoder in ("full", "tiny"):
        with Runtime.from_artifacts(art, tasks="depth,normal", mode="single", decoder=decoder) as rt:
            assert rt.runners[Component.DECODER].entry.component.value == f"{'tiny_' if decoder == 'tiny' else ''}decoder"
            out[decoder] = rt.predict(frame)
    assert set(out["tiny"]) == {"depth", "normal"}
    assert not np.allclose(out["tiny"]["depth"], out["full"]["depth"])  # an untrained student decodes otherwise


def test_no_distilled_decoder_is_one_line(tiny_artifacts):
    with pytest.raises(StableMTLError, match=r"`decoder=tiny`: the fp32 graphs of .* include no distilled decoder") as e:
        Runtime.from_artifacts(tiny_artifacts, decoder="tiny")
    assert "\n" not in str(e.value)
    with pytest.raises(StableMTLError, match=r"unknown decoder `small`: choose from full, tiny"):
        Runtime.from_artifacts(tiny_artifacts, decoder="small")


def test_a_decoder_distilled_from_other_weights_is_refused(with_tiny, tmp_path):
    ckpt, _ = with_tiny
    other = tmp_path / "model"
    shutil.copytree(ckpt, other)
    record = json.loads((other / CONFIG_NAME).read_text())
    record["teacher"]["weights_sha256"] = "0" * 64
    (other / CONFIG_NAME).write_text(json.dumps(record))
    with pytest.raises(StableMTLError, match=r"was distilled from other weights"):
        export_artifacts(ExportRequest(str(other), tmp_path / "art", Mode.SINGLE, (Precision.FP32,)))
    assert not (tmp_path / "art").exists()
    # Turning it off exports without it.
    result = export_artifacts(ExportRequest(str(other), tmp_path / "art", Mode.SINGLE, (Precision.FP32,),
                                            tiny_decoder=None))
    assert Component.TINY_DECODER not in result.manifest.components[Precision.FP32]
