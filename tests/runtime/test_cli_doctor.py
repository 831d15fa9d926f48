"""``stablemtl-doctor`` on this machine and on sound and broken artifact directories."""

import importlib.util
import json
import re

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from stablemtl_edge.runtime.cli_doctor import (
    Status,
    artifact_checks,
    main,
    probe_model,
    provider_checks,
)
from stablemtl_edge.artifact.manifest import Component, Manifest, Precision, file_sha256
from stablemtl_edge.artifact.engine_cache import EngineKey, EngineRecord, EngineTarget, engine_dir, write_record
from tests.runtime.artifact_zoo import BROKEN, ToyModel, copy_artifact


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    return ToyModel().write(tmp_path_factory.mktemp("zoo") / "multi")


def test_probe_model_is_valid_onnx_and_computes_x_plus_x():
    model = onnx.load_from_string(probe_model())
    onnx.checker.check_model(model, full_check=True)
    session = ort.InferenceSession(probe_model(), providers=["CPUExecutionProvider"])
    x = np.array([[1.5, -2.0, 0.0, 3.0]], dtype=np.float32)
    np.testing.assert_array_equal(session.run(["y"], {"x": x})[0], 2 * x)


def test_cpu_provider_really_usable():
    checks = {c.name: c for c in provider_checks()}
    assert checks["CPUExecutionProvider"].status is Status.OK


def test_sound_artifact_passes_with_one_inference(artifacts, tmp_path, capsys):
    checks = artifact_checks(artifacts)
    by_name = {c.name: c for c in checks}
    assert by_name["manifest"].status is Status.OK and "multi-stream" in by_name["manifest"].detail
    assert by_name["fp32 files"].status is Status.OK
    assert by_name["tensorrt engines"].status is Status.SKIP
    assert by_name["fp32 inference"].status is Status.OK and "all 7 tasks" in by_name["fp32 inference"].detail
    report = tmp_path / "doctor.json"
    assert main(["--artifacts", str(artifacts), "--json", str(report)]) == 0
    out = capsys.readouterr().out
    assert "CPUExecutionProvider" in out and "PASSED" in out
    rows = json.loads(report.read_text())
    assert {"section", "name", "status", "detail"} <= set(rows[0])


@pytest.mark.parametrize("name,breaker,message", BROKEN, ids=[b[0] for b in BROKEN])
def test_broken_artifacts_fail_with_their_message(artifacts, tmp_path, capsys, name, breaker, message):
    bad = copy_artifact(artifacts, tmp_path / name)
    breaker(bad)
    failures = [c for c in artifact_checks(bad) if c.status is Status.FAIL]
    assert failures
    assert any(re.search(message, c.detail) for c in failures), [c.detail for c in failures]
    assert main(["--artifacts", str(bad)]) == 1
    assert "FAILED" in capsys.readouterr().out


def test_cached_engine_without_tensorrt_is_reported(artifacts, tmp_path):
    if importlib.util.find_spec("tensorrt") is not None:
        pytest.skip("TensorRT is installed: the engine would be checked for real")
    art = copy_artifact(artifacts, tmp_path / "with_engine")
    m = Manifest.load(art)
    key = EngineKey(m.entry("fp32", "unet").sha256, Precision.FP32, m.profile, EngineTarget("10.3.0", "Orin", "8.7"))
    engine = engine_dir(art, key)
    engine.mkdir(parents=True)
    (engine / "engine.plan").write_bytes(b"plan")
    write_record(engine, EngineRecord.for_key(key, Component.UNET, file_sha256(engine / "engine.plan"), {}))
    check = {c.name: c for c in artifact_checks(art, run=False)}["tensorrt engines"]
    assert check.status is Status.WARN and "TensorRT is not installed" in check.detail
