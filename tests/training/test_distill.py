"""Decoder distillation: the tiny decoder's FLOP budget, learning, exact resume, evaluation and bad input."""

from __future__ import annotations

import json
import logging
import math

import numpy as np
import pytest
import torch
from torch import nn

from stablemtl_edge.errors import StableMTLError
from stablemtl_edge.model.checkpoint import load_pretrained
from stablemtl_edge.model.tiny_decoder import (CONFIG_NAME, FLOP_BUDGET, WEIGHTS_NAME, TinyDecoder, TinyDecoderConfig,
                                               decoder_flops, full_decoder_flops, load_tiny_decoder)
from stablemtl_edge.model.vae import LatentVAE, build_vae
from stablemtl_edge.config import get_preset
from stablemtl_edge.tasks import TASK_NAMES
from stablemtl_edge.training.distill import (CHECKPOINT_DIR, LOG_NAME, DistillConfig, FramePairs, distill_decoder,
                                             distill_loss, evaluate_decoder, teacher_batch)

SIZE = (64, 64)


@pytest.fixture(autouse=True)
def one_torch_thread():
    """One thread: on the 2 shared CI cores, two OMP threads wait at every small convolution's barrier for a
    descheduled partner (12 tiny-preset steps measured 3.6 s with one thread, 105 s with two)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("preset", ["small", "sd2"])
def test_tiny_decoder_costs_at_most_a_tenth_of_the_full_decoder(preset):
    torch.manual_seed(0)
    full = LatentVAE(build_vae(get_preset(preset)))  # real CPU modules; 64x64 images keep sd2 cheap
    tiny = TinyDecoder(TinyDecoderConfig.for_preset(preset))
    full_flops, tiny_flops = decoder_flops(full, (8, 8)), decoder_flops(tiny, (8, 8))
    # The meta-device count that for_preset uses agrees (its attention goes through another SDPA kernel: 0.1%).
    assert full_flops == pytest.approx(full_decoder_flops(preset, (8, 8)), rel=0.01)
    assert tiny_flops == decoder_flops(tiny.to("meta"), (8, 8))
    assert 0 < tiny_flops <= FLOP_BUDGET * full_flops, (preset, tiny_flops / full_flops)
    image = TinyDecoder(tiny.config)(torch.randn(2, 4, 8, 8) * 3)
    assert image.shape == (2, 3, 64, 64) and image.abs().max() <= 1.0


def test_tiny_decoder_exports_to_onnx_opset_17_and_matches_torch(tmp_path):
    import onnxruntime as ort

    torch.manual_seed(0)
    tiny = TinyDecoder(TinyDecoderConfig.for_preset("tiny")).eval()
    latents = torch.randn(1, 4, 8, 16)
    path = tmp_path / "tiny_decoder.onnx"
    torch.onnx.export(tiny, (latents,), str(path), opset_version=17, input_names=["latents"],
                      output_names=["image"], dynamo=False)
    out = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"latents": latents.numpy()})[0]
    np.testing.assert_allclose(out, tiny(latents).detach().numpy(), atol=1e-5)


def _held_out_loss(model, student: TinyDecoder) -> float:
    frames = FramePairs("procedural", SIZE, split="val")
    latents, target, tasks = teacher_batch(model, frames.take(range(3)))
    with torch.no_grad():
        return float(distill_loss(student(latents, clamp=False), target, tasks)[0])


def test_distillation_learns_and_a_resumed_run_ends_with_the_same_weights(tiny_checkpoint, tmp_path, caplog):
    out = tmp_path / "run"
    config = DistillConfig(model=str(tiny_checkpoint), output=out, steps=24, batch=1, lr=3e-3, size=SIZE,
                           checkpoint_every=12, progress=False)
    distill_decoder(config)
    model = load_pretrained(tiny_checkpoint)
    torch.manual_seed(config.seed)
    untrained = TinyDecoder(TinyDecoderConfig.for_preset("tiny"))  # the student's own initialisation
    trained = load_tiny_decoder(out)
    before, after = _held_out_loss(model, untrained), _held_out_loss(model, trained)
    assert after < 0.85 * before, (before, after)

    record = json.loads((out / CONFIG_NAME).read_text())
    log_lines = [json.loads(line) for line in (out / LOG_NAME).read_text().splitlines()]
    assert record["teacher"]["preset"] == "tiny" and record["teacher"]["multi_stream"] and record["mode"] == "multi"
    assert len(record["teacher"]["weights_sha256"]) == 64 and record["steps"] == 24
    assert record["final_loss"] == log_lines[-1]["loss"] and math.isfinite(record["final_loss"])
    assert all(line["steps_per_s"] > 0 for line in log_lines)

    # A crash while step 24's checkpoint was written: its weights are truncated, the output not written yet.
    uninterrupted = {k: v.clone() for k, v in trained.state_dict().items()}
    damaged = out / CHECKPOINT_DIR / "step-0000024" / "student.safetensors"
    damaged.write_bytes(damaged.read_bytes()[:100])
    (out / WEIGHTS_NAME).unlink()
    (out / CONFIG_NAME).unlink()
    with pytest.raises(StableMTLError, match="pass --resume"):
        distill_decoder(config)
    with caplog.at_level(logging.WARNING, logger="stablemtl_edge.training.distill"):
        distill_decoder(config, resume=True)
    assert "skipping checkpoint step-0000024" in caplog.text
    resumed = load_tiny_decoder(out).state_dict()
    assert all(torch.equal(resumed[k], v) for k, v in uninterrupted.items())
    steps = [json.loads(line)["step"] for line in (out / LOG_NAME).read_text().splitlines()]
    assert steps == list(range(1, 25))  # steps 13-24 logged once, by the resumed run

    other = DistillConfig(model=str(tiny_checkpoint), output=out, steps=24, batch=2, size=SIZE, progress=False)
    with pytest.raises(StableMTLError, match="other settings \\(batch\\)"):
        distill_decoder(other, resume=True)


class _FullDecoder(nn.Module):
    """The teacher's own decoder in the student's place: evaluation must report no disagreement."""

    def __init__(self, model) -> None:
        super().__init__()
        self.model = model

    def forward(self, latents):
        return self.model.decode(latents)


def test_evaluate_decoder_reports_every_task_and_zero_for_the_full_decoder(tiny_checkpoint):
    model = load_pretrained(tiny_checkpoint)
    frames = FramePairs("procedural", SIZE, split="test").take(range(2))
    same = evaluate_decoder(model, _FullDecoder(model), frames)
    assert list(same) == list(TASK_NAMES)
    assert all(row["image_mae"] == 0 for row in same.values())
    assert same["depth"]["abs_rel"] == 0 and same["semantic"]["pixel_agreement"] == 1
    assert same["normal"]["angle_deg"] < 0.1 and same["optical_flow"]["epe_normalised"] == 0

    torch.manual_seed(0)
    other = evaluate_decoder(model, TinyDecoder(TinyDecoderConfig.for_preset("tiny")), frames)
    assert all(row["image_mae"] > 0 for row in other.values())
    assert other["normal"]["angle_deg"] > 1 and 0 <= other["semantic"]["pixel_agreement"] <= 1


def test_frames_from_an_image_folder_are_letterboxed_pairs_of_consecutive_images(tmp_path):
    import cv2

    for i in range(3):
        cv2.imwrite(str(tmp_path / f"{i}.png"), np.full((30, 40, 3), 50 * i, dtype=np.uint8))
    frames = FramePairs(str(tmp_path), (64, 64))
    pairs = frames.take([0, 1, 2, 0])
    frames.close()
    assert all(a.shape == (64, 64, 3) and a.dtype == np.uint8 for pair in pairs for a in pair)
    firsts = [int(p[0][0, 0, 0]) for p in pairs]
    seconds = [int(p[1][0, 0, 0]) for p in pairs]
    assert firsts == [0, 50, 100, 0] and seconds == [50, 100, 0, 50]  # looped; an earlier index re-reads


def test_bad_input_is_one_line_error(tiny_checkpoint, tmp_path):
    cases = [
        (lambda: distill_decoder(DistillConfig(model=str(tmp_path / "missing"), output=tmp_path / "a")),
         "does not exist"),
        (lambda: DistillConfig(model=str(tiny_checkpoint), output=tmp_path / "b", size=(64, 100)), "multiples of 64"),
        (lambda: DistillConfig(model=str(tiny_checkpoint), output=tmp_path / "c", steps=0), "--steps must be"),
        (lambda: DistillConfig(model=str(tiny_checkpoint), output=tmp_path / "d", source=str(tmp_path / "x.mp4")),
         "does not exist"),
        (lambda: distill_decoder(DistillConfig(model=str(tiny_checkpoint), output=tmp_path / "e"), resume=True),
         "no checkpoint to resume from"),
    ]
    for make, message in cases:
        with pytest.raises(StableMTLError, match=message) as info:
            make()
        assert "\n" not in str(info.value)


def test_frames_from_a_video_file_are_consecutive_and_resume_at_any_index(tmp_path):
    import cv2

    path = tmp_path / "drive.mp4"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10, (64, 48))
    for i in range(4):
        writer.write(np.full((48, 64, 3), 40 + 50 * i, dtype=np.uint8))
    writer.release()
    frames = FramePairs(str(path), (64, 128))
    levels = [[round(float(f[:48].mean()) / 50 - 0.8) for f in pair] for pair in frames.take([1, 3, 0])]
    frames.close()
    assert levels == [[1, 2], [3, 0], [0, 1]]  # grey levels 40, 90, 140, 190 survive the lossy codec


def test_a_teacher_cache_runs_the_teacher_once_per_pair_and_resumes_exactly(tiny_checkpoint, tmp_path):
    import shutil

    from stablemtl_edge.training.distill import Distiller

    out = tmp_path / "run"
    config = DistillConfig(model=str(tiny_checkpoint), output=out, steps=6, batch=1, lr=3e-3, size=SIZE,
                           checkpoint_every=3, progress=False, pairs=2)
    whole = Distiller(config)
    whole.run()
    # 6 steps over 2 distinct pairs: the teacher decoded 2 x 7 latents, not 6 x 7
    assert whole.teacher.counters["decoder_rows"] == 2 * len(TASK_NAMES)
    uninterrupted = {k: v.clone() for k, v in whole.student.state_dict().items()}
    shutil.rmtree(out / CHECKPOINT_DIR / "step-0000006")  # as if the run had stopped after step 3
    resumed = Distiller(config)
    resumed.run(resume=True)  # a fresh cache: rebuilt from the pairs, the same targets
    assert all(torch.equal(resumed.student.state_dict()[k], v) for k, v in uninterrupted.items())
    with pytest.raises(StableMTLError, match=r"--pairs must be a whole number >= --batch-size"):
        DistillConfig(model=str(tiny_checkpoint), output=tmp_path / "x", batch=2, pairs=1)
