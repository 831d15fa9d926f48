"""``stablemtl-bench``: the official-schedule baseline is a real schedule (same outputs, 7 passes per task),
the pass counts of ours, and the report files. No timing is asserted."""

import json

import numpy as np
import pytest

from stablemtl_edge.artifact.manifest import Manifest
from stablemtl_edge.runtime import Runtime
from stablemtl_edge.runtime.cli_bench import BenchSettings, bench_config, main, markdown, soak
from stablemtl_edge.runtime.official_schedule import OfficialSchedule
from stablemtl_edge.runtime.options import RuntimeOptions
from stablemtl_edge.runtime.sources import PatternSource
from tests.runtime.artifact_zoo import HEIGHT, WIDTH, ToyModel


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    return ToyModel().write(tmp_path_factory.mktemp("zoo") / "multi")


@pytest.mark.parametrize("mode", ["single", "multi"])
@pytest.mark.parametrize("tasks", [["depth"], ["normal", "optical_flow", "shading"], None])
def test_official_schedule_equals_the_runtime_and_costs_seven_passes_per_task(artifacts, mode, tasks):
    with PatternSource(HEIGHT, WIDTH, frames=2) as src:
        prev, cur = (f.image for f in src)
    with Runtime.from_artifacts(artifacts, tasks=tasks, mode=mode) as rt:
        k = len(rt.tasks)
        timings = {}
        rt.scheduler.step(prev, timings)
        before = rt.counters
        _, ours = rt.scheduler.step(cur, timings)
        ours = {key: v.copy() for key, v in ours.items()}
        our_unet = rt.counters["unet_rows"] - before["unet_rows"]
        official = OfficialSchedule(rt)
        theirs = official.run(cur, prev, {})
    assert set(theirs) == set(ours) == set(rt.tasks)
    for key in ours:
        np.testing.assert_allclose(theirs[key], ours[key], atol=1e-5, err_msg=key)
    rows = official.counters
    if mode == "multi":
        assert rows["unet_rows"] == 6 * k and rows["unet_main_rows"] == k  # 7 passes per task
        assert our_unet == (6 if k == 1 else 7)  # shared auxiliary pass
    else:
        assert rows["unet_rows"] == k and our_unet == k
    assert rows["decoder_rows"] == k and rows["encoder_rows"] >= k


def test_bench_config_record(artifacts):
    options = RuntimeOptions.parse(artifacts, tasks="all", mode="multi", backend="onnxruntime")
    r = bench_config(options, BenchSettings(frames=3, warmup=1, size=(45, 150)))
    assert r["config"] == "multi/onnxruntime/fp32" and r["frame_hw"] == [45, 150]
    assert r["precision_set"] == "fp32" and set(r["component_precisions"].values()) == {"fp32"}
    assert r["rows_per_frame"]["unet_rows"] == 7 and r["rows_per_frame"]["unet_main_rows"] == 7
    assert r["official"]["rows_per_frame"]["unet_rows"] == 42 and r["official"]["rows_per_frame"]["unet_main_rows"] == 7
    for s in ("encoder", "unet", "unet_main", "decoder", "total"):
        p = r["stages_ms"][s]
        assert 0 <= p["p50"] <= p["p90"] <= p["p99"]
    assert r["ratio_vs_official"] > 0 and r["rss_mb"]["peak"] > 0
    model = sum(r["stages_ms"][s]["mean"] for s in ("encoder", "unet", "unet_main", "decoder"))
    assert r["overhead_ms"]["mean"] == pytest.approx(r["stages_ms"]["total"]["mean"] - model)


def test_soak_counts_are_consistent(artifacts):
    options = RuntimeOptions.parse(artifacts, tasks="depth", mode="single")
    s = soak(options, frames=40, size=(33, 61), calibrate=3)
    assert s["captured"] == 40 and s["processed"] + s["dropped"] == 40 and s["ended_by"] == "max frames"
    assert s["latency_p99_ms"] >= s["latency_p50_ms"] > 0 and s["p99_over_service"] > 0


def test_bench_cli_writes_markdown_and_json(artifacts, tmp_path, capsys):
    out = tmp_path / "bench.json"
    md = tmp_path / "bench.md"
    rc = main(["-a", str(artifacts), "--mode", "single,multi", "--backend", "onnxruntime", "--frames", "2",
               "--warmup", "1", "--soak", "20", "--json", str(out), "--markdown", str(md)])  # fmt: skip
    assert rc == 0
    data = json.loads(out.read_text())
    assert [r["config"] for r in data["results"]] == ["single/onnxruntime/fp32", "multi/onnxruntime/fp32"]
    assert data["soak"]["captured"] == 20
    table = capsys.readouterr().out
    assert table.strip() == md.read_text().strip()
    assert "| multi/onnxruntime/fp32 | 7 | 64x128 |" in table and "ours / official" in table


def test_bench_isolated_process_and_errors(artifacts, tmp_path, capsys):
    out = tmp_path / "b.json"
    assert main(["-a", str(artifacts), "--mode", "single", "--tasks", "depth", "--frames", "1", "--warmup", "0",
                 "--no-baseline", "--json", str(out)]) == 0  # fmt: skip
    r = json.loads(out.read_text())["results"][0]
    assert "official" not in r and r["rss_mb"]["peak"] > 0
    assert main(["-a", str(artifacts), "--size", "12by3", "--json", str(out)]) == 1
    assert "--size must read HxW" in capsys.readouterr().err
    assert main(["-a", str(artifacts), "--precision", "fp16", "--json", str(out), "--no-isolate"]) == 1
    assert "no fp16 components" in capsys.readouterr().err
    assert main(["-a", str(artifacts), "--backend", "triton", "--url", "localhost:8001", "--json", str(out)]) == 1
    assert "serving.load_bench" in capsys.readouterr().err  # components on a server are not timed here


def test_bench_writes_no_file_unasked(artifacts, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["-a", str(artifacts), "--mode", "single", "--tasks", "depth", "--frames", "1", "--warmup", "0",
                 "--no-baseline", "--no-isolate"]) == 0  # fmt: skip
    assert "| single/" in capsys.readouterr().out and list(tmp_path.iterdir()) == []


def test_an_artifact_without_flops_says_n_a(artifacts):
    """The toy graphs record no FLOPs: achieved rate and fraction of peak are n/a, the probe still runs."""
    options = RuntimeOptions.parse(artifacts, tasks="all", mode="multi", backend="onnxruntime")
    r = bench_config(options, BenchSettings(frames=2, warmup=1, baseline=False, peak_seconds=0.2))
    assert r["gemm_peak"]["fp32"]["flops_per_s"] > 0 and "fp32" in r["gemm_peak_note"]
    assert set(r["flops"]) == {"encoder", "unet", "unet_main", "decoder"}
    for f in r["flops"].values():
        assert f["flops_per_row"] is None and f["achieved_flops_per_s"] is None and f["fraction_of_peak"] is None
    assert r["flops"]["decoder"]["rows_per_call"] == 1 and r["decoder_rows_per_call"] == 1  # auto on the CPU
    lines = [line for line in markdown([r]).splitlines() if line.startswith("| multi/onnxruntime/fp32 | unet_main |")
             and line.count("|") == 10]  # the FLOP table's row, not the stage table's
    assert len(lines) == 1 and lines[0].count("n/a") == 4


def test_achieved_flops_and_fraction_of_peak_from_the_manifest(tiny_artifacts):
    options = RuntimeOptions.parse(tiny_artifacts, tasks="all", mode="multi", backend="onnxruntime")
    r = bench_config(options, BenchSettings(frames=2, warmup=1, baseline=False, peak_seconds=0.2), "all")
    manifest = Manifest.load(tiny_artifacts)
    peak = r["gemm_peak"]["fp32"]["flops_per_s"]
    for component, f in r["flops"].items():
        assert f["flops_per_row"] == manifest.flops_per_row(component) > 0
        ms, rows = r["stages_ms"][component]["mean"], r["rows_per_frame"][f"{component}_rows"]
        assert f["rows_per_frame"] == rows and f["ms_per_frame"] == pytest.approx(ms)
        assert f["achieved_flops_per_s"] == pytest.approx(f["flops_per_row"] * rows / (ms * 1e-3))
        assert f["peak_precision"] == "fp32" and f["fraction_of_peak"] == pytest.approx(f["achieved_flops_per_s"] / peak)
        assert 0 < f["fraction_of_gemm_same_moment"]
    # the probe ran its budget, then once after each of the 2 timed frames; the peak is its fastest call
    assert r["gemm_peak"]["fp32"]["calls"] >= 3 + 2
    assert r["flops"]["decoder"]["rows_per_call"] == 7 and r["decoder_rows_per_call"] is None
    assert r["config"] == "multi/onnxruntime/fp32+decall" and r["decoder_batching"] == "all rows in one call (asked)"


def test_the_cli_sweeps_decoder_rows_and_shows_the_choice(artifacts, tmp_path, capsys):
    out = tmp_path / "b.json"
    assert main(["-a", str(artifacts), "--mode", "single", "--tasks", "depth,normal", "--backend", "onnxruntime",
                 "--frames", "1", "--warmup", "0", "--no-baseline", "--no-isolate", "--decoder-rows", "auto,all", "--peak-seconds", "0",
                 "--json", str(out)]) == 0  # fmt: skip
    results = json.loads(out.read_text())["results"]
    assert [r["config"] for r in results] == ["single/onnxruntime/fp32", "single/onnxruntime/fp32+decall"]
    assert [r["calls_per_frame"]["decoder_calls"] for r in results] == [2, 1]
    assert [r["gemm_peak"] for r in results] == [{}, {}]
    table = capsys.readouterr().out
    assert "single/onnxruntime/fp32: decoder 1 row per call (auto: onnxruntime CPU)" in table
    assert "single/onnxruntime/fp32+decall: decoder all rows in one call (asked)" in table
    assert "GEMM peak no GEMM probe (--peak-seconds 0)" in table
    assert main(["-a", str(artifacts), "--decoder-rows", "0", "--no-isolate"]) == 1
    assert "`decoder_rows` must be `auto`" in capsys.readouterr().err
