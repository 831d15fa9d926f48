"""Gate thresholds, options and three-way verdicts, the CPU int8 note, and the held-out set."""

from __future__ import annotations

import math

import numpy as np
import pytest

from stablemtl_edge.calibration.gate import GateOptions, GateThresholds, TaskVerdict, Verdict, heldout_samples
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


def verdict(reference, candidate, threshold, low, high, frames=24, task="depth", metric="abs_rel", min_frames=5):
    return TaskVerdict("single", task, metric, reference, candidate, threshold, low, high, frames, min_frames)


def test_verdict_reads_the_interval_in_both_directions():
    v = verdict(0.200, 0.203, 0.02, 0.005, 0.019)
    assert v.change == pytest.approx(0.015) and v.verdict is Verdict.PASS and v.passed
    assert verdict(0.2, 0.203, 0.02, -0.005, 0.025).verdict is Verdict.INCONCLUSIVE  # straddles +2%
    assert not verdict(0.2, 0.203, 0.02, -0.005, 0.025).passed  # inconclusive is not a pass
    assert verdict(0.2, 0.21, 0.02, 0.021, 0.08).verdict is Verdict.FAIL  # entirely beyond
    assert verdict(0.5, 0.4, 0.02, -0.3, -0.1, task="semantic", metric="miou").verdict is Verdict.FAIL
    assert verdict(0.5, 0.6, 0.02, 0.1, 0.3, task="semantic", metric="miou").verdict is Verdict.FAIL  # even "better"
    assert verdict(0.2, 0.2, 0.0, 0.0, 0.0).verdict is Verdict.PASS  # threshold 0: identical frames only
    assert verdict(0.2, 0.2000001, 0.0, 1e-7, 1e-6).verdict is Verdict.FAIL
    assert verdict(0.2, math.nan, 0.5, math.nan, math.nan).verdict is Verdict.FAIL  # candidate lost the task
    assert verdict(math.nan, math.nan, 0.02, math.nan, math.nan, 0).verdict is Verdict.PASS  # nothing to compare
    # On fewer frames than the gate trusts, only "unchanged on every frame" is decided.
    assert verdict(0.2, 0.203, 0.5, 0.015, 0.015, frames=2).verdict is Verdict.INCONCLUSIVE
    assert verdict(0.2, 0.2, 0.0, 0.0, 0.0, frames=1).verdict is Verdict.PASS
    assert verdict(0.2, 0.203, 0.5, 0.015, 0.015, frames=2, min_frames=2).verdict is Verdict.PASS
    record = TaskVerdict("multi", "depth", "abs_rel", 0.2, 0.203, 0.02, -0.005, 0.025, 48, 5).to_dict()
    assert record["relative_change"] == pytest.approx(0.015) and record["interval"] == [-0.005, 0.025]
    assert record["verdict"] == "inconclusive" and not record["passed"] and record["frames"] == 48
    assert TaskVerdict.from_dict(record) == TaskVerdict("multi", "depth", "abs_rel", 0.2, 0.203, 0.02, -0.005, 0.025,
                                                        48, 5)
    text = verdict(0.2, 0.203, 0.02, -0.005, 0.025).describe()
    assert text == ("single-stream depth abs_rel 0.2 -> 0.203 (+1.50%, interval [-0.50%, +2.50%] on 24 frames, "
                    "threshold 2.00%: inconclusive)")


@pytest.mark.parametrize("kwargs, match", [
    ({"frames": 0}, "at least 1 held-out frame"),
    ({"frames": 24, "max_frames": 12}, "frame cap .12. is below its first frame count .24."),
    ({"resamples": 0}, "at least 1 bootstrap resample"),
    ({"confidence": 1.0}, "strictly between 0 and 1"),
    ({"min_frames": 0}, "fewest trusted frames must be >= 1"),
])
def test_gate_options_refuse_bad_values(kwargs, match):
    with pytest.raises(StableMTLError, match=match):
        GateOptions(**kwargs)
    assert GateOptions.from_dict(GateOptions(12, 36).to_dict()) == GateOptions(12, 36)


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


def test_heldout_frame_i_does_not_depend_on_how_many_frames_there_are():
    """A gate that adds frames keeps the ones it already judged."""
    few, many = heldout_samples((32, 64), 5), heldout_samples((32, 64), 50)
    assert len(few) == 5 and len(many) == 50 and [s.name for s in few] == [s.name for s in many[:5]]
    for a, b in zip(few, many[:5]):
        np.testing.assert_array_equal(a.frame1, b.frame1)
        np.testing.assert_array_equal(a.labels["depth"].value, b.labels["depth"].value)
    assert few[-1].name == few[4].name
    with pytest.raises(IndexError):
        few[5]
