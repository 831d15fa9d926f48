"""Runners (ONNX Runtime for real; TensorRT/CUDA where installed), broken artifacts, engine-cache checks."""

from __future__ import annotations

import dataclasses
import importlib.util
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest

from stablemtl_edge.errors import MissingDependencyError, StableMTLError
from stablemtl_edge.artifact.manifest import Component, Manifest, Mode, Precision, ShapeProfile, file_sha256
from stablemtl_edge.runtime import Runtime
from stablemtl_edge.runtime.backends import OnnxRuntimeRunner
from stablemtl_edge.runtime.backends.tensorrt import TensorRTRunner, load_engine_for, probe_target
from stablemtl_edge.artifact.engine_cache import EngineKey, EngineRecord, EngineTarget, engine_dir, write_record
from tests.runtime.artifact_zoo import BROKEN, HEIGHT, WIDTH, ToyModel

HAVE_TRT = importlib.util.find_spec("tensorrt") is not None
HAVE_CUDA_PYTHON = importlib.util.find_spec("cuda") is not None


@pytest.fixture(scope="module")
def toy() -> ToyModel:
    return ToyModel(seed=2)


@pytest.fixture(scope="module")
def artifact(tmp_path_factory, toy):
    return toy.write(tmp_path_factory.mktemp("zoo") / "multi", Mode.MULTI)


def runner(artifact, component=Component.DECODER, **kw) -> OnnxRuntimeRunner:
    entry = Manifest.load(artifact).entry(Precision.FP32, component)
    return OnnxRuntimeRunner(artifact / entry.file, entry, providers=["CPUExecutionProvider"], **kw)


def latent(b: int = 2) -> np.ndarray:
    return np.random.default_rng(0).normal(size=(b, 4, HEIGHT // 8, WIDTH // 8)).astype(np.float32)


# -- ONNX Runtime runner -------------------------------------------------------------------------------------
def test_runner_life_cycle_and_numbers(toy, artifact):
    r = runner(artifact)
    with pytest.raises(StableMTLError, match="is not active"):
        r.infer({"latent": latent()})
    with r:
        assert r.is_active and r.providers == ["CPUExecutionProvider"] and r.fallback is None
        assert r.get_input_metadata()["latent"].shape == ("batch", 4, HEIGHT // 8, WIDTH // 8)
        out = r.infer({"latent": latent()})
        assert r.last_inference_time > 0
        assert "CPUExecutionProvider" in r.describe()
    assert not r.is_active
    np.testing.assert_allclose(out["image"], toy.np_decoder(latent()), atol=1e-5)


def test_io_binding_gives_the_same_outputs(artifact):
    x = {"sample": np.random.default_rng(1).normal(size=(3, 12, 8, 16)).astype(np.float32),
         "task_id": np.array([0, 4, 6], np.int64)}
    with runner(artifact, Component.UNET, io_binding=True) as bound, runner(artifact, Component.UNET) as plain:
        a = bound.infer(x, ["latent", "feat_06"])
        b = plain.infer(x, ["latent", "feat_06"])
    assert set(a) == {"latent", "feat_06"}
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])


@pytest.mark.parametrize(
    ("feed", "message"),
    [
        ({}, r"do not match the graph's \['sample', 'task_id'\] \(missing \['sample', 'task_id'\]"),
        ({"sample": np.zeros((1, 12, 8, 16), np.float32), "task_id": np.zeros(1, np.int32)},
         r"input `task_id` must be int64, got int32"),
        ({"sample": np.zeros((1, 12, 8, 8), np.float32), "task_id": np.zeros(1, np.int64)},
         r"input `sample` must have shape \('batch', 12, 8, 16\), got \(1, 12, 8, 8\)"),
        ({"sample": np.zeros((2, 12, 8, 16), np.float32), "task_id": np.zeros(3, np.int64)},
         r"dimension `batch` is 2 in one input and 3 in `task_id`"),
    ],
)
def test_inputs_are_checked_against_the_manifest(artifact, feed, message):
    with runner(artifact, Component.UNET) as r:
        with pytest.raises(StableMTLError, match=message):
            r.infer(feed)


def test_activating_twice_warns(artifact):
    r = runner(artifact)
    r.activate()
    with pytest.warns(RuntimeWarning, match="already active"):
        r.activate()
    r.deactivate()


def test_graph_that_disagrees_with_the_manifest_is_refused(artifact):
    m = Manifest.load(artifact)
    wrong = m.entry(Precision.FP32, Component.DECODER)
    path = artifact / m.entry(Precision.FP32, Component.ENCODER).file
    with pytest.raises(StableMTLError, match=r"has inputs \['image'\] but the manifest says \['latent'\]"):
        OnnxRuntimeRunner(path, wrong).activate()


@pytest.mark.skipif(
    "CUDAExecutionProvider" not in __import__("onnxruntime").get_available_providers(),
    reason="needs onnxruntime-gpu (the CUDA provider) to observe a provider fallback",
)
def test_cuda_provider_fallback_is_reported(artifact):  # pragma: no cover - GPU builds only
    entry = Manifest.load(artifact).entry(Precision.FP32, Component.DECODER)
    r = OnnxRuntimeRunner(artifact / entry.file, entry, providers=["CUDAExecutionProvider", "CPUExecutionProvider"])
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        r.activate()
    if r.providers[0] == "CUDAExecutionProvider":
        assert r.fallback is None
    else:
        assert "CUDAExecutionProvider was requested" in r.fallback
    r.deactivate()


# -- broken artifacts ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(("name", "breaker", "message"), BROKEN, ids=[b[0] for b in BROKEN])
def test_broken_artifacts_give_their_one_line_error(tmp_path, artifact, name, breaker, message):
    broken = tmp_path / name
    shutil.copytree(artifact, broken)
    breaker(broken)
    with pytest.raises(StableMTLError, match=message) as e:
        Runtime.from_artifacts(broken, mode="multi", backend="onnxruntime")
    assert "\n" not in str(e.value)


def test_missing_directory(tmp_path):
    with pytest.raises(StableMTLError, match=r"artifact directory `.*nowhere` does not exist"):
        Runtime.from_artifacts(tmp_path / "nowhere")


# -- TensorRT engine cache -----------------------------------------------------------------------------------
ENV = EngineTarget("10.3.0", "Orin", "8.7")


def write_engine(artifact, component=Component.UNET, target=ENV, onnx_sha256=None, profile=None,
                 corrupt_plan=False) -> Path:
    """An engine cache entry written exactly as the builder writes it (key digest, record, plan)."""
    m = Manifest.load(artifact)
    entry = m.entry(Precision.FP32, component)
    key = EngineKey(onnx_sha256 or entry.sha256, Precision.FP32, profile or m.profile, target)
    d = engine_dir(artifact, key)
    d.mkdir(parents=True, exist_ok=True)
    (d / "engine.plan").write_bytes(b"plan bytes " + key.digest().encode())
    write_record(d, EngineRecord.for_key(key, component, file_sha256(d / "engine.plan"), {}))
    if corrupt_plan:
        (d / "engine.plan").write_bytes(b"changed")
    return d


@pytest.fixture
def cache_dir(tmp_path, artifact):
    return shutil.copytree(artifact, tmp_path / "a")


def test_no_engine_says_how_to_build_one(cache_dir):
    with pytest.raises(StableMTLError, match=r"no TensorRT engine for unet/fp32 under .*stablemtl-export build"):
        load_engine_for(cache_dir, "unet", "fp32", ENV)


def test_matching_engine_is_found(cache_dir):
    write_engine(cache_dir, target=EngineTarget("9.0", "Orin", "8.7"))
    good = write_engine(cache_dir)
    write_engine(cache_dir, component=Component.DECODER)
    got = load_engine_for(cache_dir, Component.UNET, Precision.FP32, ENV)
    assert got.plan == good / "engine.plan" and got.record.key == good.name


def test_dynamic_profile_engine_is_found(tmp_path, artifact):
    d = shutil.copytree(artifact, tmp_path / "dyn")
    m = Manifest.load(d)
    m.profile = dataclasses.replace(m.profile, min_hw=(64, 64), max_hw=(256, 256))  # tuples in memory, lists on disk
    m.save(d)
    good = write_engine(d)
    assert load_engine_for(d, "unet", "fp32", ENV).plan == good / "engine.plan"


@pytest.mark.parametrize(
    ("over", "message"),
    [
        ({"target": EngineTarget("10.7.0", "Orin", "8.7")}, r"built for TensorRT 10.7.0 on Orin \(sm 8.7\), this is TensorRT 10.3.0"),
        ({"target": EngineTarget("10.3.0", "RTX 4090", "8.9")}, r"built for TensorRT 10.3.0 on RTX 4090 \(sm 8.9\)"),
        ({"onnx_sha256": "0" * 64}, r"differs in key, onnx_sha256"),
        ({"profile": ShapeProfile(height=64, width=64)}, r"differs in key, profile"),
        ({"corrupt_plan": True}, r"engine.plan` changed since it was built"),
    ],
)
def test_foreign_or_stale_engines_are_refused(cache_dir, over, message):
    write_engine(cache_dir, **over)
    with pytest.raises(StableMTLError, match=message + r".*; rebuild it with `stablemtl-export build"):
        load_engine_for(cache_dir, "unet", "fp32", ENV)


@pytest.mark.skipif(HAVE_TRT, reason="checks the message given when TensorRT is absent")
def test_tensorrt_backend_without_tensorrt_names_the_missing_package(artifact):
    with pytest.raises(MissingDependencyError, match=r"`tensorrt` is not installed"):
        Runtime.from_artifacts(artifact, backend="tensorrt")


def test_auto_backend_without_engines_is_onnxruntime(artifact):
    with Runtime.from_artifacts(artifact, tasks=["depth"]) as rt:
        assert rt.backend.value == "onnxruntime"


@pytest.mark.skipif(HAVE_CUDA_PYTHON, reason="checks the message given when cuda-python is absent")
def test_cuda_adapter_without_cuda_python_names_the_extra():
    from stablemtl_edge import cuda

    with pytest.raises(MissingDependencyError, match=r"`cuda-python` is not installed .*stablemtl-edge\[gpu\]"):
        cuda.Stream()


@pytest.mark.tensorrt
@pytest.mark.gpu
@pytest.mark.skipif(not (HAVE_TRT and HAVE_CUDA_PYTHON), reason="needs TensorRT and cuda-python on an NVIDIA GPU")
@pytest.mark.parametrize("cuda_graphs", [False, True])
def test_tensorrt_runner_matches_numpy(tmp_path, toy, artifact, cuda_graphs):  # pragma: no cover - GPU only
    import tensorrt as trt

    d = shutil.copytree(artifact, tmp_path / "a")
    m = Manifest.load(d)
    entry = m.entry(Precision.FP32, Component.DECODER)
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    parser = trt.OnnxParser(network, logger)
    assert parser.parse((d / entry.file).read_bytes())
    config = builder.create_builder_config()
    profile = builder.create_optimization_profile()
    lat = (4, HEIGHT // 8, WIDTH // 8)
    profile.set_shape("latent", (1, *lat), (1, *lat), (7, *lat))
    config.add_optimization_profile(profile)
    plan = builder.build_serialized_network(network, config)
    key = EngineKey(entry.sha256, Precision.FP32, m.profile, probe_target())
    engine = engine_dir(d, key)
    engine.mkdir(parents=True)
    (engine / "engine.plan").write_bytes(bytes(plan))
    write_record(engine, EngineRecord.for_key(key, Component.DECODER, file_sha256(engine / "engine.plan"), {}))
    with TensorRTRunner(d, entry, cuda_graphs=cuda_graphs) as r:
        for b in (2, 3, 2):
            out = r.infer({"latent": latent(b)})["image"]
            np.testing.assert_allclose(out, toy.np_decoder(latent(b)), atol=1e-4)
