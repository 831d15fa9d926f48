"""The distilled decoder's gate: known answers on held-out procedural frames with ground truth."""

import pytest
import torch

from stablemtl_edge.calibration.gate import GateOptions
from stablemtl_edge.model.stablemtl import StableMTL
from stablemtl_edge.tasks import TASK_NAMES
from stablemtl_edge.training.decoder_gate import DecoderGateReport, decoder_gate

OPTIONS = GateOptions(frames=3, max_frames=6, resamples=200, min_frames=1)


@pytest.fixture(scope="module")
def model():
    return StableMTL.from_preset("tiny", multi_stream=True, seed=0).eval()


class _Decoder(torch.nn.Module):
    """A stand-in student: the model's own decoder, optionally followed by a change of the image."""

    def __init__(self, model, change=lambda x: x):
        super().__init__()
        self.model, self.change = model, change

    def forward(self, latents):
        return self.change(self.model.decode(latents))


def test_a_student_equal_to_the_full_decoder_passes_every_task_on_the_first_frames(model, tmp_path):
    report = decoder_gate(model, _Decoder(model), (64, 64), OPTIONS)
    assert report.passed and {v.task for v in report.verdicts} == set(TASK_NAMES)
    assert all(v.low == v.high == 0.0 and v.frames <= OPTIONS.frames for v in report.verdicts)
    json_path, md_path = report.write(tmp_path)
    assert DecoderGateReport.load(json_path) == report
    assert "Verdict: every task within the gate." in md_path.read_text()


def test_a_student_that_loses_the_image_fails_and_is_named(model):
    report = decoder_gate(model, _Decoder(model, lambda x: torch.zeros_like(x)), (64, 64), OPTIONS)
    assert not report.passed
    missed = {v.task for v in report.missed()}
    assert "depth" in missed or "normal" in missed
    assert report.summary().startswith(f"decoder gate: {len(missed)} of 7 tasks not within it (")
