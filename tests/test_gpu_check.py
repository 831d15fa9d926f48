"""scripts/gpu_check.sh: the prepared GPU check, run here in its dry mode (no GPU, no TensorRT).

The dry run goes through every step a CPU can take (random checkpoint, distilled decoder, export with its
references, int8 calibration, the runtime bench, the onnxruntime parity check) and records the GPU steps
as skipped with the reason; the JSON it writes is what these tests read.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "gpu_check.sh"
STEPS = ["env", "checkpoint", "tiny_decoder", "export", "engines_fp16", "calibrate", "engines_int8", "engines_fp8",
         "bench_single", "bench_multi", "cuda_graphs", "parity_tensorrt", "parity_onnxruntime"]  # fmt: skip
GPU_STEPS = {"engines_fp16", "engines_int8", "engines_fp8", "cuda_graphs", "parity_tensorrt"}
TASKS = ["normal", "depth", "semantic", "optical_flow", "scene_flow", "albedo", "shading"]


def dry_run(tmp_path: Path, *extra: str, timeout: float = 1200) -> tuple[dict, str]:
    out = tmp_path / "out"
    proc = subprocess.run(
        ["bash", str(SCRIPT), "--dry-run", "--out", str(out), "--work", str(tmp_path / "work"),
         "--python", sys.executable, *extra],
        capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads((out / "gpu_check.json").read_text(encoding="utf-8")), proc.stdout


def gpu_ready() -> bool:
    from stablemtl_edge import cuda
    from stablemtl_edge.errors import StableMTLError

    try:
        cuda.device_info(0)
    except StableMTLError:
        return False
    return importlib.util.find_spec("tensorrt") is not None


def steps_by_name(report: dict) -> dict[str, dict]:
    assert [s["name"] for s in report["steps"]] == STEPS
    return {s["name"]: s for s in report["steps"]}


def test_script_parses_and_passes_shellcheck() -> None:
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck is not installed (apt-get install shellcheck)")
    result = subprocess.run(["shellcheck", str(SCRIPT)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout


def test_spent_budget_skips_every_step_with_its_reason(tmp_path: Path) -> None:
    report, stdout = dry_run(tmp_path, "--budget", "0", timeout=120)
    steps = steps_by_name(report)
    assert report["dry_run"] and report["budget_s"] == 0 and report["counts"]["skipped"] == len(STEPS)
    assert steps["env"]["reason"] == steps["checkpoint"]["reason"] == "out of time: the 0 s total budget is spent"
    for name in ("tiny_decoder", "export"):
        assert steps[name]["reason"] == "needs step checkpoint, which is skipped"
    for name in ("calibrate", "bench_single", "bench_multi", "parity_onnxruntime"):
        assert steps[name]["reason"] == "needs step export, which is skipped"
    for name in GPU_STEPS:
        assert steps[name]["reason"] == "dry run: TensorRT and CUDA not probed (step env is skipped)"
    assert "| export | skipped |" in stdout
    assert stdout.strip().endswith((tmp_path / "out" / "summary.md").read_text(encoding="utf-8").strip())


def test_device_mode_without_tensorrt_stops_after_the_probe(tmp_path: Path) -> None:
    if gpu_ready():
        pytest.skip("TensorRT and a CUDA device are here: the device mode would run the real check")
    out = tmp_path / "out"
    proc = subprocess.run(["bash", str(SCRIPT), "--out", str(out), "--work", str(tmp_path / "work"),
                           "--python", sys.executable], capture_output=True, text=True, timeout=120, check=False)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads((out / "gpu_check.json").read_text(encoding="utf-8"))
    steps = steps_by_name(report)
    assert not report["dry_run"] and (report["preset"], report["size"]) == ("sd2", "384x512")
    assert steps["env"]["status"] == "ok"
    missing = "; ".join(steps["env"]["result"]["missing"])
    for name in GPU_STEPS:
        assert (steps[name]["status"], steps[name]["reason"]) == ("failed", f"not run: {missing}")
    for name in set(STEPS) - GPU_STEPS - {"env"}:
        assert steps[name]["status"] == "skipped" and steps[name]["reason"].startswith("stopped after the probe")
    assert not (tmp_path / "work" / "checkpoint").exists()


@pytest.mark.slow
def test_dry_run_exercises_every_cpu_step(tmp_path: Path) -> None:
    report, stdout = dry_run(tmp_path)
    steps = steps_by_name(report)
    assert (report["preset"], report["size"]) == ("tiny", "64x64")
    for name in set(STEPS) - GPU_STEPS:
        assert steps[name]["status"] == "ok", (name, steps[name]["reason"])
        assert 0 <= steps[name]["seconds"] <= steps[name]["budget_s"]
        assert f"| {name} | ok |" in stdout

    # GPU steps: skipped, saying what is missing here (what the probe found, not a fixed sentence).
    env = steps["env"]["result"]
    assert env["gpu_ready"] is False and env["missing"]
    trt_missing = importlib.util.find_spec("tensorrt") is None
    assert any("TensorRT is not installed" in m for m in env["missing"]) == trt_missing
    for name in GPU_STEPS:
        assert steps[name]["status"] == "skipped"
        assert steps[name]["reason"] == "dry run: " + "; ".join(env["missing"])

    # Parity against the stored references, per precision: numbers present and within their tolerance.
    parity = steps["parity_onnxruntime"]["result"]
    assert set(parity) == {"fp32", "fp16", "int8"}
    for precision, record in parity.items():
        assert record["passed"] and record["failed"] == [] and record["comparisons"] == len(record["results"]) > 10
        for key, r in record["results"].items():
            assert r["finite"] and r["max_abs"] <= r["atol"] + r["rtol"] * r["expected_peak"], (precision, key)
        assert any(k.startswith("e2e/multi/") for k in record["results"])
        assert any(k.startswith("tiny_decoder/") for k in record["results"])
    assert parity["fp32"]["worst"]["max_abs"] < 1e-3  # onnxruntime fp32 against its own stored outputs

    # The bench: single-stream depth and multi-stream all 7, full and tiny decoder, fp32 and int8.
    for name, mode, tasks in (("bench_single", "single", ["depth"]), ("bench_multi", "multi", TASKS)):
        results = steps[name]["result"]["results"]
        assert sorted(r["config"] for r in results) == sorted(
            f"{mode}/onnxruntime/{p}{d}" for p in ("fp32", "int8") for d in ("", "+tiny")
        )
        for r in results:
            assert r["tasks"] == tasks and r["mode"] == mode and r["frames"] == 2
            assert r["wall_ms"]["mean"] > 0 and r["stages_ms"]["decoder"]["mean"] > 0
            assert f"{r['config']} {r['wall_ms']['p50']:.1f} ms" in stdout  # the summary table's figures
    assert {p.name for p in (tmp_path / "out").iterdir()} == {"gpu_check.json", "summary.md", "bench.md",
                                                              "gpu_check.log"}  # fmt: skip
