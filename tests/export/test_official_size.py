"""The official size: sd2 (random weights) through import, export and the self-check, each step measured."""

import subprocess
import sys

import pytest
import torch

from stablemtl_edge.artifact.manifest import Mode, Precision
from stablemtl_edge.export.official_size import measured, run_official_size, write_release_layout
from stablemtl_edge.model.official import import_official


def test_each_step_reports_its_own_peak_memory():
    big = measured("big", [sys.executable, "-c", "import numpy as np; a = np.ones(96 * 2**20 // 8)"])
    small = measured("small", [sys.executable, "-c", "pass"])
    failing = measured("failing", [sys.executable, "-c", "raise SystemExit(3)"])
    assert big.returncode == 0 and small.returncode == 0 and failing.returncode == 3
    assert big.peak_rss_gib - small.peak_rss_gib > 80 / 1024  # the 96 MiB array is the big child's alone
    assert small.peak_rss_gib < big.peak_rss_gib and small.seconds > 0


@pytest.mark.parametrize("multi", [False, True])
def test_the_release_layout_writer_round_trips_through_the_importer(tmp_path, multi):
    written = write_release_layout(tmp_path, multi_stream=multi, seed=4, preset="tiny")
    imported = import_official(tmp_path / "single_stream_unet.pth", tmp_path / "stable-diffusion-2",
                               tmp_path / "multi_stream" if multi else None, preset="tiny",
                               embeddings=tmp_path / "task_embeddings.safetensors")
    expected, got = written.state_dict(), imported.state_dict()
    assert sorted(expected) == sorted(got)
    assert all(torch.equal(expected[k], got[k]) for k in expected)
    if multi:  # the branch is live, so the export's parity covers task attention
        assert all(float(m.to_out_task.weight.detach().abs().max()) > 0 for m in imported.main.task_attention)


def test_help_runs_without_torch_work():
    proc = subprocess.run([sys.executable, "-m", "stablemtl_edge.export.official_size", "--help"],
                          capture_output=True, text=True, check=True)
    assert "--steps" in proc.stdout and "--write-release" in proc.stdout


@pytest.mark.slow
def test_sd2_single_stream_every_step_fits_24_gib(tmp_path):
    report = run_official_size(tmp_path, Mode.SINGLE, (384, 512), (Precision.FP32,),
                               steps=("write", "import", "export", "verify"))
    assert report.ok, report.markdown()
    assert report.external_data.get("fp32/unet") == "unet.onnx.data"  # the UNet is over 2 GB
    assert report.import_ratio() <= 1.3, report.markdown()
    assert max(s.peak_rss_gib for s in report.steps) < 24, report.markdown()
