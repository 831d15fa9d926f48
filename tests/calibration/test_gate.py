"""Gate thresholds and verdicts, the CPU int8 note, and the held-out set."""

from __future__ import annotations

import math

import pytest

from stablemtl_edge.calibration.gate import GateThresholds, TaskVerdict, heldout_samples
from stablemtl_edge.calibration.report import cpu_int8_support
from stablemtl_edge.errors import StableMTLError
from stablemtl_edge.tasks import TASK_NAMES


def test_thresholds_parse_default_and_per_task():
    t = GateThresholds.parse(["0.05", "depth:0.01,optical-flow:0.1"])
    assert t.of("depth") == 0.01 and t.of("optical_flow") == 0.1 and t.of("normal") == 0.05
    assert GateThresholds.parse(None).of("albedo") == 0.02
    assert GateThresholds.parse("depth:0").of("depth") == 0.0


@pytest.mark.parametrize("bad, match", [("fast", "not a number"), ("depht:0.1", "unknown task"), ("-0.1", ">= 0")])
def test_thresholds_refuse_bad_values(bad, match):
    with pytest.raises(StableMTLError, match=match):
        GateThresholds.parse(bad)


def test_verdict_relative_change_both_directions():
    v = TaskVerdict("single", "depth", "abs_rel", 0.200, 0.203, 0.02)
    assert v.change == pytest.approx(0.015) and v.passed
    assert not TaskVerdict("single", "depth", "abs_rel", 0.200, 0.210, 0.02).passed
    assert not TaskVerdict("single", "semantic", "miou", 0.5, 0.6, 0.02).passed  # a big move, even "better"
    assert TaskVerdict("single", "depth", "abs_rel", 0.2, 0.2, 0.0).passed  # threshold 0: identical only
    assert not TaskVerdict("single", "depth", "abs_rel", 0.2, 0.2000001, 0.0).passed
    assert not TaskVerdict("single", "depth", "abs_rel", 0.2, math.nan, 0.5).passed  # candidate lost the task
    assert TaskVerdict("single", "depth", "abs_rel", math.nan, math.nan, 0.02).passed
    record = TaskVerdict("multi", "depth", "abs_rel", 0.2, 0.203, 0.02).to_dict()
    assert record["relative_change"] == pytest.approx(0.015) and record["passed"]


def test_cpu_int8_support_reads_the_flags(tmp_path):
    no = tmp_path / "cpuinfo_avx2"
    no.write_text("processor\t: 0\nflags\t\t: fpu sse avx avx2 fma\n\nprocessor\t: 1\nflags\t\t: fpu avx2\n")
    info = cpu_int8_support(no)
    assert info.vnni is False and "no VNNI" in info.note and "slower than fp32" in info.note
    yes = tmp_path / "cpuinfo_vnni"
    yes.write_text("flags\t\t: fpu avx2 avx512f avx512_vnni\n")
    assert cpu_int8_support(yes).flags_found == ("avx512_vnni",)
    arm = tmp_path / "cpuinfo_arm"
    arm.write_text("Features\t: fp asimd asimddp\n")
    assert cpu_int8_support(arm).vnni is True
    assert cpu_int8_support(tmp_path / "missing").vnni is None


def test_this_machine_is_reported_truthfully():
    """The report states what /proc/cpuinfo says, whatever machine runs the tests."""
    info = cpu_int8_support()
    if info.vnni is None:
        pytest.skip("no /proc/cpuinfo on this system")
    text = open("/proc/cpuinfo").read()
    assert info.vnni == any(f in text.split() for f in ("avx512_vnni", "avx_vnni", "amx_int8", "asimddp", "i8mm"))


def test_heldout_samples_label_every_task_and_stay_off_the_training_split():
    samples = heldout_samples((64, 128), 3)
    assert [s.domain for s in samples] == ["driving", "indoor", "flying"]
    assert set(samples[0].labels) == set(TASK_NAMES)
    assert all(s.frame2 is not None and s.frame1.shape == (64, 128, 3) for s in samples)
    assert all("seed=2000000011" in s.name for s in samples)  # the test split's seed
