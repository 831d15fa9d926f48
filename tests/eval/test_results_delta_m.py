import math

import pytest

from stablemtl_edge.errors import StableMTLError
from stablemtl_edge.eval import (
    DepthMetrics,
    EvalResult,
    SemanticMetrics,
    TaskResult,
    delta_m,
    higher_is_better,
)


def _result(abs_rel: float, miou: float) -> EvalResult:
    depth = DepthMetrics(abs_rel, 0.1, 1.0, 0.2, 0.05, 0.9, 0.95, 0.99, 12.0)
    sem = SemanticMetrics(miou=miou, pixel_accuracy=0.8, iou=(0.5, float("nan")) + (0.1,) * 6)
    return EvalResult("bench", {"depth": TaskResult("depth", 3, depth), "semantic": TaskResult("semantic", 3, sem)})


def test_directions():
    assert not higher_is_better("depth", "abs_rel") and higher_is_better("depth", "delta1")
    assert higher_is_better("semantic", "miou") and not higher_is_better("optical_flow", "fl")
    with pytest.raises(StableMTLError, match="not a scalar metric"):
        higher_is_better("semantic", "iou")


def test_json_round_trip_keeps_nan_and_types(tmp_path):
    res = _result(0.1, 0.6)
    res.save(tmp_path / "r.json")
    back = EvalResult.load(tmp_path / "r.json")
    assert back.tasks["depth"] == res.tasks["depth"]
    assert math.isnan(back["semantic"].metrics.iou[1]) and back["semantic"].metrics.iou[0] == 0.5
    assert isinstance(back["semantic"].metrics, SemanticMetrics)


def test_markdown_lists_main_metric_with_direction():
    md = _result(0.1, 0.6).to_markdown()
    assert "| depth | 3 | abs_rel ↓ | 0.1000 |" in md
    assert "| semantic | 3 | miou ↑ | 0.6000 |" in md
    assert "| road | 0.5000 |" in md


def test_delta_m_hand_worked_from_file(tmp_path):
    base = _result(0.2, 0.5)
    base.save(tmp_path / "baseline.json")
    # depth: -(0.1 - 0.2) / 0.2 = +0.5; semantic: +(0.6 - 0.5) / 0.5 = +0.2 -> 100 * 0.7 / 2
    assert delta_m(_result(0.1, 0.6), tmp_path / "baseline.json") == pytest.approx(35.0)
    assert delta_m(_result(0.1, 0.6), base, {"depth": ["abs_rel", "delta1"]}) == pytest.approx(25.0)


def test_delta_m_errors(tmp_path):
    with pytest.raises(StableMTLError, match="missing.json` is missing: it should hold the evaluation result"):
        delta_m(_result(0.1, 0.6), tmp_path / "missing.json")
    with pytest.raises(StableMTLError, match="finite non-zero"):
        delta_m(_result(0.1, 0.6), _result(0.0, 0.5))
