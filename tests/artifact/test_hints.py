"""What an error tells the user to run must be a command that works (issue 15: contradicting hints)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest

from stablemtl_edge.artifact.manifest import Manifest
from stablemtl_edge.cli.shell import missing_extra_message
from stablemtl_edge.errors import MissingDependencyError, StableMTLError


def test_missing_int8_points_to_calibration_not_to_export(tiny_artifacts):
    with pytest.raises(StableMTLError) as e:
        Manifest.load(tiny_artifacts).entry("int8", "unet")
    message = str(e.value)
    assert "stablemtl-calibrate" in message and "stablemtl-export" not in message


def test_the_suggested_export_command_parses(tiny_artifacts, tmp_path):
    """The fp16 hint names `stablemtl-export export CKPT --out DIR --precision fp16`: export's parser takes it."""
    from stablemtl_edge.export.cli import build_parser

    doc = Manifest.load(tiny_artifacts)
    doc.components.pop(next(p for p in doc.precisions() if p.value == "fp16"))
    with pytest.raises(StableMTLError) as e:
        doc.entry("fp16", "unet")
    command = str(e.value).split("`")[1].split()
    assert command[:2] == ["stablemtl-export", "export"]
    filled = [{"<checkpoint>": "demo", "<artifact": str(tmp_path / "a")}.get(w, w) for w in command[1:] if w != "dir>"]
    args = build_parser().parse_args(filled)
    assert args.command == "export" and args.precision == "fp16"


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="TensorRT is installed here")
def test_missing_tensorrt_never_suggests_an_extra_that_does_not_bring_it():
    from stablemtl_edge.runtime.backends.tensorrt import _trt

    with pytest.raises(MissingDependencyError) as e:
        _trt()
    assert "stablemtl-edge[" not in str(e.value) and "JetPack" in str(e.value) and "pip install tensorrt" in str(e.value)
    assert "stablemtl-edge[" not in missing_extra_message("stablemtl-export", "tensorrt")


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="TensorRT is installed here")
def test_build_without_tensorrt_is_one_line(tiny_artifacts):
    run = subprocess.run([sys.executable, "-m", "stablemtl_edge.export.cli", "build", "-a", str(tiny_artifacts)],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 1 and run.stderr.count("\n") == 1 and "JetPack" in run.stderr, run.stderr
