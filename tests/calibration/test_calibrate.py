"""End to end on the exported tiny StableMTL: QDQ graphs registered, the gate's three outcomes, the CLI."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace

import numpy as np
import pytest

from stablemtl_edge.calibration import GateOptions, GateThresholds, calibrate_artifact, cpu_int8_support
from stablemtl_edge.calibration.cli import main
from stablemtl_edge.calibration.report import CalibrationReport, render_markdown
from stablemtl_edge.errors import StableMTLError
from stablemtl_edge.artifact.manifest import MANIFEST_NAME, Component, Manifest, Precision, file_sha256
from stablemtl_edge.runtime import Runtime
from stablemtl_edge.tasks import TASK_NAMES

from tests.runtime.artifact_zoo import copy_artifact


def test_int8_set_is_registered_truthfully(calibrated_unet):
    m = calibrated_unet.manifest
    d = calibrated_unet.directory
    want = {"encoder": "fp16", "unet": "int8", "unet_main": "fp16", "decoder": "fp16"}
    assert calibrated_unet.result.precisions == want
    int8 = m.components[Precision.INT8]
    unet = int8[Component.UNET]
    assert unet.file == "int8/unet.onnx" and unet.precision is Precision.INT8
    assert file_sha256(d / unet.file) == unet.sha256 == m.files["int8/unet.onnx"]
    assert unet.inputs == m.entry(Precision.FP32, Component.UNET).inputs  # same contract, fp32 I/O
    q = unet.quantization
    assert q["method"] == "minmax" and q["format"] == "QDQ" and q["calibration_set"]["size"] == 2
    assert q["gate"]["passed"] and q["gate"]["options"]["max_frames"] == 2
    assert q["quantized_nodes"] > 50 and q["excluded_layers"] > 10
    for c in (Component.ENCODER, Component.UNET_MAIN, Component.DECODER):
        e = int8[c]
        assert replace(e, quantization=None) == replace(m.entry(Precision.FP16, c), quantization=None)
        assert e.precision is Precision.FP16
        assert e.file == f"fp16/{c.value}.onnx" and e.quantization["quantized"] is False
    # The set's name says what it is: only the unet runs in int8.
    assert m.describe_precision("int8") == ("int8 set: encoder fp16 (not selected for int8), unet int8, "
                                            "unet_main fp16 (not selected for int8), decoder fp16 (not selected for int8)")
    assert m.describe_precision("fp16") == "fp16"
    record = json.loads((d / "int8" / "calibration_data.json").read_text())
    assert record["digest"] == q["calibration_set"]["digest"] and len(record["pairs"]) == 2
    assert not [p for p in (d / "int8").iterdir() if p.name.startswith(".")]  # no staging left behind


def test_report_has_per_task_metrics_nodes_and_the_cpu_note(calibrated_unet):
    res = calibrated_unet.result
    report = json.loads(res.report_json.read_text())
    assert [r["label"] for r in report["runs"]] == ["fp32", "fp16", "int8"]
    assert {v["task"] for v in report["gate"]["final"]} == set(TASK_NAMES)
    assert {v["mode"] for v in report["gate"]["final"]} == {"single", "multi"}
    for v in report["gate"]["int8"]:  # every verdict carries its interval and the frames it used
        low, high = v["interval"]
        assert low <= v["relative_change"] <= high and 1 <= v["frames"] <= 2 and v["verdict"] == "pass"
    assert report["components"]["unet"]["quantized_nodes"] > 50
    assert report["cpu"] == cpu_int8_support().to_dict()
    assert set(report["int8_fp32_time_ratio"]) == {"single", "multi"}
    int8 = next(r for r in report["runs"] if r["label"] == report["timed"] == "int8")  # the set as registered
    fp32 = report["runs"][0]
    ratio = report["int8_fp32_time_ratio"]["single"]["total"]
    assert ratio == pytest.approx(int8["ms_per_frame"]["single"] / fp32["ms_per_frame"]["single"], rel=1e-12)
    md = res.report_md.read_text()
    assert "| depth | abs_rel |" in md and "| unet | int8 |" in md and report["cpu"]["note"] in md
    if report["cpu"]["vnni"] is False:
        assert "no VNNI" in md and "slower than fp32" in md
    # The CPU advice carries this run's own verdict, so it cannot contradict the timing table.
    ratio = report["int8_fp32_time_ratio"]["multi"]["total"]
    assert f"the int8 set is {'slower' if ratio > 1 else 'faster'} than fp32 (" in md
    # The file is the typed record: it reads back as what calibration returned, and renders the same page.
    loaded = CalibrationReport.load(res.report_json)
    assert loaded.to_dict() == res.report.to_dict() and render_markdown(loaded) == md


def test_int8_runtime_path_runs_end_to_end(calibrated_unet):
    from stablemtl_edge.calibration.gate import heldout_samples

    sample = heldout_samples((64, 128), 1)[0]
    out, ref = {}, {}
    for mode in ("single", "multi"):
        with Runtime.from_artifacts(calibrated_unet.directory, tasks="all", mode=mode, precision="int8") as rt:
            assert rt.runners[Component.UNET].entry.precision is Precision.INT8
            out[mode] = rt.predict(sample.frame1, sample.frame2)
        with Runtime.from_artifacts(calibrated_unet.directory, tasks="all", mode=mode, precision="fp32") as rt:
            ref[mode] = rt.predict(sample.frame1, sample.frame2)
        assert set(out[mode]) == set(TASK_NAMES)
        for key in TASK_NAMES:
            assert out[mode][key].shape == ref[mode][key].shape
            assert np.isfinite(out[mode][key].astype(np.float32)).all()
    # Single-stream predictions come from the int8 UNet itself: they really changed.
    assert any(not np.array_equal(out["single"][k], ref["single"][k]) for k in TASK_NAMES)
    depth_err = np.abs(out["single"]["depth"] - ref["single"]["depth"]).mean()
    assert 0 < depth_err < 0.1  # relative depth in [0, 1]


def test_gate_failure_error_mode_then_fallback_mode(calibrated_unet, tmp_path, capsys):
    d = copy_artifact(calibrated_unet.directory, tmp_path / "art")
    before = (d / MANIFEST_NAME).read_bytes()
    # Threshold 0: any change fails. Error mode: the command fails and the manifest is untouched.
    with pytest.raises(StableMTLError, match="did not pass the accuracy gate.*interval.*manifest is unchanged"):
        calibrate_artifact(d, "procedural", 2, components="unet", gate=GateOptions(2, 2),
                           thresholds=GateThresholds(0.0), on_gate_fail="error", progress=False)
    assert (d / MANIFEST_NAME).read_bytes() == before
    assert (d / "int8" / "unet.onnx").is_file()  # the previously registered graph is still in place
    report = json.loads((d / "int8" / "calibration_report.json").read_text())
    assert report["verdict"].startswith("FAILED")
    # Fallback mode through the CLI: unet is left at fp16 and the message says so.
    # One try of the mixed-precision search (its most sensitive block in float) cannot pass a 0 threshold either.
    code = main(["-a", str(d), "--calib-size", "2", "--components", "unet", "--gate-frames", "2", "--gate-max-frames", "2",
                 "--gate-threshold", "0", "--mixed-tries", "1", "--quiet"])
    out = capsys.readouterr().out
    assert code == 0
    assert "unet did not pass the gate" in out and "left at fp16" in out
    assert "keeping up to 1 of its most sensitive blocks in floating point did not pass either" in out
    search = CalibrationReport.load(d / "int8" / "calibration_report.json").components["unet"].mixed["search"]
    assert len(search["tries"]) == 1 and not search["tries"][0]["passed"]
    assert search["ranking"][0]["gain"] >= search["ranking"][-1]["gain"]  # most sensitive first
    m = Manifest.load(d)
    unet = m.entry(Precision.INT8, Component.UNET)
    assert unet.precision is Precision.FP16 and unet.file == "fp16/unet.onnx"
    assert "did not pass the int8 accuracy gate" in unet.quantization["reason"]
    assert not (d / "int8" / "unet.onnx").exists() and "int8/unet.onnx" not in m.files
    ranges = json.loads((d / "int8" / "calibration_report.json").read_text())
    assert ranges["verdict"].startswith("FALLBACK")
    with Runtime.from_artifacts(d, tasks="depth", precision="int8") as rt:  # the int8 set still opens
        assert rt.runners[Component.UNET].entry.precision is Precision.FP16
        assert rt.component_precisions()["unet"] == "fp16"
        assert "unet fp16 (failed the int8 gate)" in rt.describe_precision()
    # Every tool that names the set says which component runs in what.
    from stablemtl_edge.runtime.cli_doctor import main as doctor

    assert doctor(["--artifacts", str(d), "--no-run"]) == 0
    (line,) = [ln for ln in capsys.readouterr().out.splitlines() if "] manifest" in ln]
    assert "int8 set: encoder fp16 (not selected for int8), unet fp16 (failed the int8 gate)" in line


def test_cli_bad_input_is_one_line(tmp_path, tiny_artifacts, capsys):
    d = copy_artifact(tiny_artifacts, tmp_path / "art")
    (tmp_path / "empty").mkdir()
    assert main(["-a", str(d), "--calib-data", str(tmp_path / "empty"), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "has no images" in err
    assert main(["-a", str(d), "--components", "decoder,unet_mian", "--quiet"]) == 1
    assert "unknown component `unet_mian`" in capsys.readouterr().err
    assert main(["-a", str(d), "--gate-threshold", "depht:0.1", "--quiet"]) == 1
    assert "unknown task" in capsys.readouterr().err
    assert main(["-a", str(d), "--gate-frames", "24", "--gate-max-frames", "12", "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "frame cap (12) is below its first frame count (24)" in err and err.count("\n") == 1
    assert main(["-a", str(tmp_path / "nothing"), "--quiet"]) == 1
    assert "does not exist" in capsys.readouterr().err
    assert Manifest.load(d).precisions() == Manifest.load(tiny_artifacts).precisions()


@pytest.mark.slow
def test_default_components_are_every_component(tiny_artifacts, tmp_path):
    d = copy_artifact(tiny_artifacts, tmp_path / "art")
    result = calibrate_artifact(d, "procedural", 3, gate=GateOptions(3, 3, min_frames=1),
                                thresholds=GateThresholds(1.0), progress=False)
    assert result.precisions == {"encoder": "int8", "unet": "int8", "unet_main": "int8", "decoder": "int8"}
    assert Manifest.load(d).describe_precision("int8") == "int8"
    main_entry = Manifest.load(d).entry(Precision.INT8, Component.UNET_MAIN)
    assert main_entry.quantization["excluded_by_rule"]["task_attention_softmax"] == 16
    shutil.rmtree(d)
