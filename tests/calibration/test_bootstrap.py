"""Per-frame statistics and the paired bootstrap behind the gate, on answers known in advance."""

from __future__ import annotations

import numpy as np
import pytest

from stablemtl_edge.calibration.bootstrap import paired_bootstrap, relative_change
from stablemtl_edge.calibration.gate import Gate, GateOptions, GateThresholds, Verdict, compare, heldout_samples
from stablemtl_edge.eval.accumulate import FrameStatistics, ratio_of_sums
from stablemtl_edge.eval.evaluate import Evaluation, evaluate
from stablemtl_edge.tasks import TASK_NAMES

RES = (32, 64)


class FramePredictor:
    """Predictions that depend on the frames (so every frame contributes differently), shifted by ``offset``."""

    def __init__(self, offset: float = 0.0) -> None:
        self.offset = offset

    def predict(self, frame1, frame2=None):
        x = frame1.astype(np.float32) / 255.0
        y = (frame2 if frame2 is not None else frame1).astype(np.float32) / 255.0
        grey = x.mean(axis=-1)
        return {
            "depth": grey + 0.1 + self.offset,
            "normal": x - 0.5 + np.float32([0.0, 0.0, 1.0]) + self.offset,
            "semantic": ((x[..., 0] + self.offset) * 8).astype(np.uint8) % 8,
            "optical_flow": (y - x)[..., :2] + self.offset,
            "scene_flow": (y - x) + self.offset,
            "albedo": np.clip(x + self.offset, 0, 1),
            "shading": np.clip(grey * 0.8 + self.offset, 0, 1),
        }


@pytest.fixture(scope="module")
def samples():
    return heldout_samples(RES, 6)


def test_per_frame_rows_recompute_each_metric_on_any_multiset_of_frames(samples):
    """A resample is a multiset of frames: the rows summed over it give the metric evaluated on those frames."""
    stats = Evaluation().add(FramePredictor(), samples, progress=False).frame_statistics()
    whole = evaluate(FramePredictor(), samples, progress=False)
    assert set(stats) == set(whole.tasks) == set(TASK_NAMES)
    picks = [0, 0, 3, 5, 5, 5]  # frames drawn with replacement, as the bootstrap does
    subset = evaluate(FramePredictor(), [samples[i] for i in picks], progress=False)
    for task, s in stats.items():
        assert s.metric() == pytest.approx(whole[task].main_value, rel=1e-9)
        drawn = [p for p in picks if p in s.positions]
        assert s.select(drawn).metric() == pytest.approx(subset[task].main_value, rel=1e-9), task
        assert len(s) == whole[task].frames


def test_identical_predictions_give_the_interval_zero_zero_and_pass(samples):
    ref = Evaluation().add(FramePredictor(), samples, progress=False).frame_statistics()
    cand = Evaluation().add(FramePredictor(), samples, progress=False).frame_statistics()
    for task in ref:
        ci = paired_bootstrap(ref[task], cand[task])
        assert (ci.low, ci.high, ci.change, ci.frames) == (0.0, 0.0, 0.0, len(ref[task]))


def stats(values: np.ndarray, task: str = "depth") -> FrameStatistics:
    """Rows of a mean of per-frame values (abs_rel-like): ``(value, 1)`` per frame."""
    rows = np.stack([values, np.ones_like(values)], axis=1)
    return FrameStatistics(task, tuple(range(len(values))), rows, ratio_of_sums)


def test_a_clear_degradation_fails_and_its_interval_is_where_it_should_be():
    rng = np.random.default_rng(1)
    ref = rng.uniform(0.1, 0.3, 24)
    ci = paired_bootstrap(stats(ref), stats(ref * 1.10))  # every frame 10% worse: the change is exactly +10%
    assert ci.change == pytest.approx(0.10) and ci.low == pytest.approx(0.10) and ci.high == pytest.approx(0.10)
    noisy = ref * (1.10 + rng.normal(0, 0.02, 24))  # +10% with some per-frame noise: still far beyond 2%
    ci = paired_bootstrap(stats(ref), stats(noisy))
    assert 0.02 < ci.low < ci.change < ci.high < 0.2


def test_pairing_removes_the_spread_both_pipelines_share():
    """Frames that are hard for both do not widen the interval of the change (an unpaired one would)."""
    rng = np.random.default_rng(2)
    ref = rng.uniform(0.05, 0.6, 48)  # very different frames
    cand = ref * (1.0 + rng.normal(0, 0.01, 48))
    ci = paired_bootstrap(stats(ref), stats(cand))
    assert ci.high - ci.low < 0.01
    assert paired_bootstrap(stats(ref), stats(cand), seed=3) != ci  # the seed is used ...
    assert paired_bootstrap(stats(ref), stats(cand)) == ci  # ... and fixes the interval


def test_relative_change_is_zero_for_equal_values_and_nan_when_undefined():
    got = relative_change([0.0, 0.2, -0.2, np.nan], [0.0, 0.3, -0.1, 0.1])
    np.testing.assert_allclose(got, [0.0, 0.5, 0.5, np.nan])


class SyntheticTrial:
    """A pipeline whose per-frame rows are given: the gate reveals them a prefix at a time."""

    def __init__(self, label: str, values: np.ndarray) -> None:
        self.label, self.values, self._frames, self.extended = label, values, 0, []

    @property
    def frames(self) -> int:
        return self._frames

    def extend(self, samples, upto):
        upto = min(upto, len(samples))
        if upto > self._frames:
            self.extended.append(upto)
            self._frames = upto

    def statistics(self):
        return {"single": {"depth": stats(self.values[: self._frames])}}


def noisy_pair(n: int, sigma: float, seed: int = 4):
    rng = np.random.default_rng(seed)
    ref = rng.uniform(0.1, 0.3, n)
    return ref, ref * (1.0 + rng.normal(0, sigma, n))  # no true change, 6% noise per frame


def test_a_noisy_small_change_widens_on_few_frames_then_settles_with_more():
    ref, cand = noisy_pair(192, 0.06)
    few = paired_bootstrap(stats(ref), stats(cand), frames=8)
    many = paired_bootstrap(stats(ref), stats(cand), frames=192)
    assert few.low < -0.02 or few.high > 0.02  # 8 frames cannot tell 0 from 2%
    assert many.high - many.low < (few.high - few.low) / 2.5  # ~ 1 / sqrt(n)
    gate = Gate(SyntheticTrial("fp32", ref), range(192), GateThresholds(0.02), GateOptions(8, 192))
    candidate = SyntheticTrial("int8", cand)
    (v,) = gate.judge(candidate)
    assert v.verdict is Verdict.PASS and 8 < v.frames < 192 and -0.02 <= v.low <= v.high <= 0.02
    assert candidate.extended == list(range(8, v.frames + 1, 8))  # frames added 8 at a time, only while open
    assert gate.reference.frames == v.frames


def test_still_straddling_at_the_cap_is_inconclusive_with_the_numbers():
    ref, cand = noisy_pair(192, 0.06)
    gate = Gate(SyntheticTrial("fp32", ref), range(192), GateThresholds(0.02), GateOptions(8, 16))
    (v,) = gate.judge(SyntheticTrial("int8", cand))
    assert v.verdict is Verdict.INCONCLUSIVE and v.frames == 16
    assert v.low < -0.02 < v.high or v.low < 0.02 < v.high
    assert "inconclusive" in v.describe() and "on 16 frames" in v.describe()
    # The cap is also bounded by the samples there are.
    short = Gate(SyntheticTrial("fp32", ref), range(12), GateThresholds(0.02), GateOptions(8, 64))
    assert short.cap == 12 and short.judge(SyntheticTrial("int8", cand))[0].frames == 12


def test_a_task_the_candidate_lost_fails():
    ref, _ = noisy_pair(8, 0.0)

    class Lost(SyntheticTrial):
        def statistics(self):
            return {"single": {}}

    reference = SyntheticTrial("fp32", ref)
    reference.extend(range(8), 8)
    (v,) = compare(reference, Lost("int8", ref), GateThresholds(0.5), GateOptions(8, 8), 8)
    assert v.verdict is Verdict.FAIL and v.reference == pytest.approx(ref.mean())
