"""Engine cache keys, records and validation (no GPU needed), profile translation, and the GPU build."""

import dataclasses
import importlib.util
import json

import pytest

from stablemtl_edge import StableMTLError
from stablemtl_edge.export.tensorrt import BuildOptions, build_engines, profile_shapes
from stablemtl_edge.artifact.manifest import Component, ComponentEntry, Manifest, Precision, ShapeProfile, TensorSpec
from stablemtl_edge.artifact.layout import ENGINE_FILE
from stablemtl_edge.artifact.engine_cache import (
    CacheStatus,
    EngineKey,
    EngineRecord,
    EngineTarget,
    engine_dir,
    validate,
    write_record,
)

HAVE_TENSORRT = importlib.util.find_spec("tensorrt") is not None
NEEDS_TENSORRT = pytest.mark.skipif(
    not HAVE_TENSORRT, reason="TensorRT is not installed: these tests need an NVIDIA GPU with TensorRT 10+"
)
ORIN = EngineTarget("10.3.0", "Orin", "8.7")
DYNAMIC = ShapeProfile(128, 192, min_hw=(64, 64), max_hw=(256, 320))


def _key(sha="a" * 64, precision=Precision.FP16, profile=DYNAMIC, target=ORIN):
    return EngineKey(sha, precision, profile, target)


def test_key_is_deterministic_and_covers_every_field():
    base = _key()
    assert base.digest() == _key().digest() and len(base.digest()) == 64
    variants = [
        _key(sha="b" * 64),
        _key(precision=Precision.INT8),
        _key(profile=dataclasses.replace(DYNAMIC, max_batch=4)),
        _key(profile=ShapeProfile(128, 192)),
        _key(target=EngineTarget("10.4.0", "Orin", "8.7")),
        _key(target=EngineTarget("10.3.0", "NVIDIA GeForce RTX 4090", "8.7")),
        _key(target=EngineTarget("10.3.0", "Orin", "8.9")),
    ]
    assert len({base.digest(), *(v.digest() for v in variants)}) == len(variants) + 1


def _cache(tmp_path, key, component=Component.UNET, plan=b"serialized engine bytes"):
    from stablemtl_edge.artifact.manifest import file_sha256

    d = engine_dir(tmp_path, key)
    d.mkdir(parents=True)
    (d / ENGINE_FILE).write_bytes(plan)
    write_record(d, EngineRecord.for_key(key, component, file_sha256(d / ENGINE_FILE), {"optimization_level": 3}))
    return d


def test_matching_record_is_valid_after_a_json_round_trip(tmp_path):
    key = _key()
    d = _cache(tmp_path, key)
    record = json.loads((d / "engine.json").read_text())
    assert record["onnx_sha256"] == "a" * 64 and record["gpu_name"] == "Orin" and record["profile"]["min_hw"] == [64, 64]
    check = validate(tmp_path, key, Component.UNET)
    assert check and check.status is CacheStatus.VALID and check.plan == d / ENGINE_FILE


def test_missing_mismatching_and_corrupt_engines_are_never_valid(tmp_path):
    key = _key()
    assert validate(tmp_path, key, Component.UNET).status is CacheStatus.MISSING
    d = _cache(tmp_path, key)
    # a record copied under the key of another GPU: mismatch, with both machines named
    other = _key(target=EngineTarget("10.3.0", "NVIDIA A100", "8.0"))
    engine_dir(tmp_path, other).parent.mkdir(exist_ok=True)
    engine_dir(tmp_path, other).mkdir()
    for f in d.iterdir():
        (engine_dir(tmp_path, other) / f.name).write_bytes(f.read_bytes())
    check = validate(tmp_path, other, Component.UNET)
    assert check.status is CacheStatus.MISMATCH and not check
    assert "built for TensorRT 10.3.0 on Orin (sm 8.7), this is TensorRT 10.3.0 on NVIDIA A100 (sm 8.0)" in check.reason
    # right key, wrong component
    assert validate(tmp_path, key, Component.DECODER).status is CacheStatus.MISMATCH
    # plan changed after the build
    (d / ENGINE_FILE).write_bytes(b"tampered")
    assert validate(tmp_path, key, Component.UNET).status is CacheStatus.CORRUPT
    (d / ENGINE_FILE).unlink()
    assert "missing" in validate(tmp_path, key, Component.UNET).reason
    (d / "engine.json").write_text("{not json")
    assert validate(tmp_path, key, Component.UNET).status is CacheStatus.CORRUPT


def test_profile_translation_from_the_exported_manifest(tiny_artifacts):
    m = Manifest.load(tiny_artifacts)
    shapes = profile_shapes(m.entry("fp16", "unet_main"), m.profile, m.features)
    assert shapes["sample"] == ((1, 12, 8, 16), (1, 12, 8, 16), (7, 12, 8, 16))
    assert shapes["task_id"] == ((1,), (1,), (7,))
    assert shapes["aux_feat_06"] == ((1, 7, 2, 64),) * 3  # mid block: 8x down-sampled; once per frame
    enc = profile_shapes(m.entry("fp32", "encoder"), m.profile, m.features)
    assert enc["image"][2] == (7, 64, 128, 3)


def test_profile_translation_of_dynamic_dimensions(tiny_artifacts):
    m = Manifest.load(tiny_artifacts)
    entry = ComponentEntry(
        Component.UNET, Precision.FP16, "x.onnx", "0", 17, "torchscript",
        (TensorSpec("sample", "float32", ("batch", 12, "latent_height", "latent_width")),
         TensorSpec("f", "float32", ("batch", "tokens_06", 64))),
        (),
    )
    shapes = profile_shapes(entry, DYNAMIC, m.features)
    assert shapes["sample"] == ((1, 12, 8, 8), (1, 12, 16, 24), (7, 12, 32, 40))
    assert shapes["f"] == ((1, 1, 64), (1, 6, 64), (7, 20, 64))  # ceil(h/8) * ceil(w/8) tokens
    bad = dataclasses.replace(entry, inputs=(TensorSpec("x", "float32", ("frames",)),))
    with pytest.raises(StableMTLError, match="`frames`"):
        profile_shapes(bad, DYNAMIC, m.features)


def test_build_options_are_checked():
    with pytest.raises(StableMTLError, match="0..5"):
        BuildOptions(optimization_level=7)
    with pytest.raises(StableMTLError, match="positive"):
        BuildOptions(workspace_gib=0)


@NEEDS_TENSORRT
def test_build_then_reuse_fp16_engines(tiny_artifacts, tmp_path):
    import shutil

    art = tmp_path / "art"
    shutil.copytree(tiny_artifacts, art)
    built = build_engines(art, Precision.FP16, BuildOptions(optimization_level=0, workspace_gib=1))
    assert {b.component for b in built} == set(Component) and not any(b.reused for b in built)
    again = build_engines(art, Precision.FP16, BuildOptions(optimization_level=0, workspace_gib=1))
    assert all(b.reused for b in again)


def test_every_refusal_of_the_loader_names_its_reason(tiny_artifacts, tmp_path):
    """A cached engine that cannot be used is explained: never an empty reason (`decoder/fp32: ; rebuild it`)."""
    import shutil

    from stablemtl_edge.runtime.backends.tensorrt import load_engine_for

    art = tmp_path / "art"
    shutil.copytree(tiny_artifacts, art)
    manifest = Manifest.load(art)
    key = EngineKey(manifest.entry("fp32", "decoder").sha256, Precision.FP32, manifest.profile, ORIN)
    with pytest.raises(StableMTLError, match=r"no TensorRT engine for decoder/fp32 under .*; rebuild it with"):
        load_engine_for(art, "decoder", "fp32", ORIN)
    good = _cache(art, key, Component.DECODER)
    assert load_engine_for(art, "decoder", "fp32", ORIN).plan == good / ENGINE_FILE
    moved = good.with_name("copy-of-engine")
    good.rename(moved)  # a complete, intact engine under a name that is not its key
    with pytest.raises(StableMTLError) as e:
        load_engine_for(art, "decoder", "fp32", ORIN)
    assert "under another name (copied or renamed)" in str(e.value) and ": ;" not in str(e.value)
    other = dataclasses.replace(key, target=EngineTarget("10.3.0", "NVIDIA H100", "9.0"))
    shutil.rmtree(moved)
    _cache(art, other, Component.DECODER)
    with pytest.raises(StableMTLError, match=r"differs in key, gpu_name, compute_capability: built for TensorRT"):
        load_engine_for(art, "decoder", "fp32", ORIN)
