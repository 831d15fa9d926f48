"""The record convention: every saved record reads back equal, through the atomic writer, as strict JSON."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from stablemtl_edge.artifact.engine_cache import EngineKey, EngineRecord, EngineTarget, read_record, write_record
from stablemtl_edge.artifact.manifest import Component, Manifest, Mode, Precision, ShapeProfile
from stablemtl_edge.artifact.references import ReferenceSet
from stablemtl_edge.config import get_preset
from stablemtl_edge.errors import StableMTLError
from stablemtl_edge.eval.results import EvalResult
from stablemtl_edge.records import KeyEnum, dump_json, load_json


class Colour(KeyEnum):
    RED = "red"
    DARK_BLUE = "dark_blue"


def test_key_enum_prints_parses_and_lists_its_keys():
    assert str(Colour.RED) == "red" and f"{Colour.DARK_BLUE}" == "dark_blue"
    assert Colour.parse(" Dark_Blue ") is Colour.DARK_BLUE and Colour.parse(Colour.RED) is Colour.RED
    assert Colour.choices() == ("red", "dark_blue")
    with pytest.raises(StableMTLError, match=r"unknown colour `green`: choose from red, dark_blue"):
        Colour.parse("green", "colour")


def test_strict_json_has_no_nan_and_keeps_enums_as_keys(tmp_path):
    path = dump_json(tmp_path / "r.json", {"a": math.nan, "b": [1.5, math.inf], "c": Precision.FP16})
    assert "NaN" not in path.read_text() and "Infinity" not in path.read_text()
    assert load_json(path, "test record") == {"a": None, "b": [1.5, None], "c": "fp16"}
    assert not list(tmp_path.glob("*.tmp"))  # the atomic writer left nothing behind


def test_an_unreadable_record_is_one_line_naming_the_file(tmp_path):
    (tmp_path / "engine.json").write_text("{not json")
    with pytest.raises(StableMTLError, match=r"engine.json` is not a readable TensorRT engine record") as e:
        read_record(tmp_path)
    assert "\n" not in str(e.value)
    (tmp_path / "engine.json").write_text(json.dumps({"key": "x"}))
    with pytest.raises(StableMTLError, match=r"is not a valid TensorRT engine record .*KeyError"):
        read_record(tmp_path)
    with pytest.raises(StableMTLError, match=r"is missing: it should hold the evaluation result"):
        EvalResult.load(tmp_path / "none.json")


def test_engine_record_round_trip(tmp_path):
    profile = ShapeProfile(64, 128)
    key = EngineKey("a" * 64, Precision.FP16, profile, EngineTarget("10.3.0", "NVIDIA Orin", "8.7"))
    record = EngineRecord.for_key(key, Component.UNET, "b" * 64, {"optimization_level": 3, "seconds": 12.5})
    write_record(tmp_path, record)
    assert read_record(tmp_path) == record


def test_preset_round_trip(tmp_path):
    for name in ("small", "sd2"):
        preset = get_preset(name)
        preset.save(tmp_path / f"{name}.json")
        assert type(preset).load(tmp_path / f"{name}.json") == preset


def test_manifest_round_trip(tiny_artifacts, tmp_path):
    manifest = Manifest.load(tiny_artifacts)
    manifest.save(tmp_path)
    assert Manifest.load(tmp_path) == manifest


def test_reference_set_round_trip(tiny_artifacts, tmp_path):
    manifest = Manifest.load(tiny_artifacts)
    refs = ReferenceSet.load(tiny_artifacts, manifest)
    assert set(refs.end_to_end) == {Mode.SINGLE, Mode.MULTI} and Component.UNET_MAIN in refs.components
    files = refs.save(tmp_path)
    assert files == manifest.references
    for name, rel in files.items():  # uncompressed npz: identical arrays give identical bytes
        assert (tmp_path / rel).read_bytes() == (tiny_artifacts / rel).read_bytes(), name
    again = ReferenceSet.load(tmp_path, manifest)
    np.testing.assert_array_equal(again.frames[0], refs.frames[0])


def test_eval_result_round_trip(tmp_path):
    from stablemtl_edge.eval.evaluate import evaluate, fit_trivial_baseline
    from stablemtl_edge.data.procedural import procedural_split

    source = procedural_split("test", "driving", size=(64, 64), length=2)
    samples = [source[i] for i in range(len(source))]
    result = evaluate(fit_trivial_baseline(samples), samples, benchmark="procedural", progress=False)
    assert len(result.tasks) >= 5
    result.save(tmp_path / "r.json")
    assert EvalResult.load(tmp_path / "r.json").to_dict() == result.to_dict()
