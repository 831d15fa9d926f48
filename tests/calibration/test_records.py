"""The calibration records: the calibration set's record and the calibration report read back equal."""

from __future__ import annotations

import json

import pytest

from stablemtl_edge.calibration.data import CalibrationRecord, load_calibration_set
from stablemtl_edge.calibration.gate import GateOptions, GateThresholds, PipelineRun, TaskVerdict, heldout_samples
from stablemtl_edge.calibration.report import (
    CalibrationReport,
    ComponentReport,
    GateReport,
    cpu_int8_support,
    render_markdown,
)
from stablemtl_edge.errors import StableMTLError
from stablemtl_edge.eval import TrivialBaseline, evaluate

RES = (32, 64)


@pytest.fixture(scope="module")
def record() -> CalibrationRecord:
    return load_calibration_set("procedural", 3, RES, seed=5).record


def test_calibration_record_round_trip_keeps_its_digest(record, tmp_path):
    path = record.save(tmp_path / "calibration_data.json")
    loaded = CalibrationRecord.load(path)
    assert loaded == record and loaded.digest == record.digest
    assert json.loads(path.read_text())["digest"] == record.digest
    assert [p.index for p in loaded.pairs] == [p.index for p in record.pairs] and loaded.resolution == RES


@pytest.mark.parametrize("edit, match", [
    (lambda d: d["pairs"][0].update(index=d["pairs"][0]["index"] + 1), "digest does not match"),
    (lambda d: d.update(size=7), "says 7 pairs but lists 3"),
    (lambda d: d.pop("seed"), "not a valid calibration set record .*KeyError"),
    (lambda d: d.update(version=99), "version 99"),
])
def test_an_edited_calibration_record_is_refused_in_one_line(record, tmp_path, edit, match):
    data = record.to_dict()
    edit(data)
    path = tmp_path / "calibration_data.json"
    path.write_text(json.dumps(data))
    with pytest.raises(StableMTLError, match=match) as e:
        CalibrationRecord.load(path)
    assert "\n" not in str(e.value) and str(path) in str(e.value)


def _report(record: CalibrationRecord) -> CalibrationReport:
    samples = heldout_samples(RES, 2)
    result = evaluate(TrivialBaseline(), samples, progress=False)
    run = PipelineRun("fp32", {"unet": "fp32"}, {"single": result}, {"single": 12.5}, {"single": 7.25})
    verdicts = tuple(TaskVerdict("single", t, r.main_metric, r.main_value, r.main_value * 1.01, 0.02, 0.004, 0.016,
                                 r.frames) for t, r in result.tasks.items())
    return CalibrationReport(
        artifact="art", verdict="PASS: unet in int8; every task within the gate", messages=("a message",),
        cpu=cpu_int8_support(), method="minmax", target="onnxruntime", calibration=record,
        gate=GateReport("procedural test split, 2 frames", GateThresholds(0.02, {"depth": 0.05}), GateOptions(2, 4),
                        ("single",), verdicts, verdicts, {"unet": verdicts[:2]}),
        components={"unet": ComponentReport("int8", "int8/unet.onnx", 60, 12, ("a/Softmax",), {"softmax": 1}, "int8")},
        runs=(run,), int8_fp32_time_ratio={"single": {"total": 1.5, "unet": 2.0}}, tasks=tuple(result.tasks),
        timed="int8",
    )


def test_calibration_report_round_trip(record, tmp_path):
    report = _report(record)
    path = report.save(tmp_path / "calibration_report.json")
    loaded = CalibrationReport.load(path)
    # NaN metrics (a class absent from the frames) read back as NaN, so compare the strict JSON forms.
    assert loaded.to_dict() == report.to_dict()
    assert loaded.gate == report.gate and loaded.components == report.components and loaded.cpu == report.cpu
    assert loaded.calibration == record and render_markdown(loaded) == render_markdown(report)
    md = render_markdown(loaded)
    assert "| depth | abs_rel |" in md and "| +1.00% | [+0.40%, +1.60%] | 2 | pass (<= 2.00%) |" in md


def test_a_malformed_report_is_one_line_naming_the_file(record, tmp_path):
    path = tmp_path / "calibration_report.json"
    path.write_text("{not json")
    with pytest.raises(StableMTLError, match="is not a readable calibration report") as e:
        CalibrationReport.load(path)
    assert "\n" not in str(e.value) and str(path) in str(e.value)
    data = _report(record).to_dict()
    del data["gate"]["final"]
    path.write_text(json.dumps(data))
    with pytest.raises(StableMTLError, match=r"calibration_report.json` is not a valid calibration report .*final"):
        CalibrationReport.load(path)
