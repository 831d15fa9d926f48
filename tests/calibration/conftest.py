"""One real calibration of the exported tiny StableMTL, shared by the calibration tests (it takes ~1 min)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from stablemtl_edge.calibration import CalibrationResult, GateOptions, GateThresholds, QuantizeOptions, calibrate_artifact
from stablemtl_edge.artifact.manifest import Manifest
from tests.runtime.artifact_zoo import copy_artifact


@dataclass
class Calibrated:
    """The calibrated copy of the tiny artifact and what calibration returned."""

    directory: Path
    result: CalibrationResult
    manifest: Manifest  # as written by the run (later tests may change the directory)


@pytest.fixture(scope="session")
def calibrated_unet(tiny_artifacts, tmp_path_factory) -> Calibrated:
    """``unet`` of the tiny multi-stream artifact in int8, with 2 procedural calibration pairs.

    The threshold is wide (100%) and 2 held-out frames are trusted: the tiny model has random weights, so
    what is checked here is the machinery (graphs, manifest, report, runtime path), not the accuracy of a
    model that predicts noise.
    """
    directory = copy_artifact(Path(tiny_artifacts), tmp_path_factory.mktemp("calib") / "art")
    result = calibrate_artifact(directory, "procedural", 2, components="unet", gate=GateOptions(2, 2, min_frames=1),
                                thresholds=GateThresholds(1.0), progress=False)
    return Calibrated(directory, result, Manifest.load(directory))


@pytest.fixture(scope="session")
def calibrated_unet_ort(calibrated_unet, tmp_path_factory) -> Calibrated:
    """The same calibration placed for onnxruntime: a copy of ``calibrated_unet``'s artifact, whose cached
    ranges it reuses (the graph then differs only by where Q/DQ go and the activations' number format)."""
    directory = copy_artifact(calibrated_unet.directory, tmp_path_factory.mktemp("calib-ort") / "art")
    result = calibrate_artifact(directory, "procedural", 2, components="unet", gate=GateOptions(2, 2, min_frames=1),
                                thresholds=GateThresholds(1.0), options=QuantizeOptions(target="onnxruntime"),
                                progress=False)
    return Calibrated(directory, result, Manifest.load(directory))
