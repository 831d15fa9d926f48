"""``stablemtl-export triton``: the repository layout, and every ``config.pbtxt`` parsed against Triton's own
model-configuration schema (``model_config.proto`` as ``tritonclient`` ships it), so a field Triton does not
know, a wrong enum or a malformed block fails here, not on a GPU server."""

from __future__ import annotations

import dataclasses
import json
import os

import pytest

from stablemtl_edge.errors import StableMTLError
from stablemtl_edge.artifact.engine_cache import EngineKey, EngineRecord, EngineTarget, engine_dir, write_record
from stablemtl_edge.artifact.layout import ENGINE_FILE
from stablemtl_edge.artifact.manifest import Component, Manifest, Mode, Precision, file_sha256
from stablemtl_edge.export.cli import main as export_main
from stablemtl_edge.serving import contract
from stablemtl_edge.serving.triton_repository import Executor, RepositoryOptions, component_config, write_repository
from tests.runtime.artifact_zoo import ToyModel

model_config_pb2 = pytest.importorskip(
    "tritonclient.grpc.model_config_pb2", reason="tritonclient (the `triton` extra) ships Triton's model_config schema"
)
text_format = pytest.importorskip("google.protobuf.text_format")


def parse_config(path) -> "model_config_pb2.ModelConfig":
    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


@pytest.fixture(scope="module")
def multi(tmp_path_factory):
    return ToyModel(seed=3).write(tmp_path_factory.mktemp("zoo") / "multi", Mode.MULTI)


@pytest.fixture(scope="module")
def with_engine(tmp_path_factory):
    """A single-stream artifact with one engine-cache entry for its decoder (the plan's bytes are opaque here:
    the generator links the plan and writes the config, TensorRT reads it on the server)."""
    directory = ToyModel(seed=4).write(tmp_path_factory.mktemp("zoo") / "single", Mode.SINGLE)
    manifest = Manifest.load(directory)
    entry = manifest.entry(Precision.FP32, Component.DECODER)
    key = EngineKey(entry.sha256, Precision.FP32, manifest.profile, EngineTarget("10.3.0", "NVIDIA L4", "8.9"))
    folder = engine_dir(directory, key)
    folder.mkdir(parents=True)
    (folder / ENGINE_FILE).write_bytes(b"serialized engine")
    write_record(folder, EngineRecord.for_key(key, Component.DECODER, file_sha256(folder / ENGINE_FILE), {}))
    return directory


def test_component_configs_follow_the_manifest(multi, tmp_path):
    result = write_repository(multi, tmp_path / "repo", RepositoryOptions(instances=2))
    manifest = Manifest.load(multi)
    assert set(result.models) == {"encoder_fp32", "unet_fp32", "unet_main_fp32", "decoder_fp32", "stablemtl"}
    for component, entry in manifest.components[Precision.FP32].items():
        folder = tmp_path / "repo" / f"{component.value}_fp32"
        config = parse_config(folder / "config.pbtxt")
        assert config.name == folder.name and config.backend == "onnxruntime"
        assert (folder / "1" / "model.onnx").is_symlink()
        assert file_sha256(folder / "1" / "model.onnx") == entry.sha256
        assert [i.name for i in config.input] == [t.name for t in entry.inputs]
        assert [o.name for o in config.output] == [t.name for t in entry.outputs]
        assert config.instance_group[0].count == 2
        assert config.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_GPU
        assert config.max_batch_size == manifest.profile.max_batch  # the toy's unet_main takes tiled features
        assert config.HasField("dynamic_batching")
        assert list(config.dynamic_batching.preferred_batch_size) == [1, manifest.profile.max_batch]
        spec = {t.name: t for t in (*entry.inputs, *entry.outputs)}
        for t in (*config.input, *config.output):
            want = list(spec[t.name].shape[1:]) or [1]
            assert list(t.dims) == want, t.name
    unet = parse_config(tmp_path / "repo" / "unet_fp32" / "config.pbtxt")
    task_id = next(i for i in unet.input if i.name == "task_id")
    assert task_id.data_type == model_config_pb2.TYPE_INT64 and list(task_id.reshape.shape) == []


def test_broadcast_features_make_unet_main_unbatched(multi):
    """Features given once per call (1, 7, N, C) beside a k-row sample: Triton must not batch along dim 0."""
    manifest = Manifest.load(multi)
    entry = manifest.entry(Precision.FP32, Component.UNET_MAIN)
    inputs = tuple(dataclasses.replace(t, shape=(1, *t.shape[1:])) if t.name.startswith("aux_") else t
                   for t in entry.inputs)
    entry = dataclasses.replace(entry, inputs=inputs)
    manifest.components[Precision.FP32][Component.UNET_MAIN] = entry
    assert manifest.aux_broadcast
    config = text_format.Parse(component_config(entry, manifest, RepositoryOptions(), "unet_main_fp32"),
                               model_config_pb2.ModelConfig())
    assert config.max_batch_size == 0 and not config.HasField("dynamic_batching")
    dims = {i.name: list(i.dims) for i in config.input}
    assert dims["sample"] == [-1, 12, 8, 16] and dims["aux_feat_00"] == [1, 7, 128, 32]


def test_frame_model_config_is_the_contract(multi, tmp_path):
    write_repository(multi, tmp_path / "repo", RepositoryOptions(max_streams=5, copy=True))
    folder = tmp_path / "repo" / contract.MODEL_NAME
    config = parse_config(folder / "config.pbtxt")
    assert config.backend == "python" and config.max_batch_size == 0
    inputs = {i.name: i for i in config.input}
    assert list(inputs[contract.FRAME1].dims) == [64, 128, 3]
    assert inputs[contract.FRAME1].data_type == model_config_pb2.TYPE_UINT8
    assert all(inputs[n].optional for n in (contract.FRAME2, contract.TASK_IDS, contract.MODE, contract.RATES))
    assert [o.name for o in config.output] == [*Manifest.load(multi).tasks, contract.FRAME_INDEX, contract.STAGE_MS]
    seq = config.sequence_batching
    assert seq.oldest.max_candidate_sequences == 5
    kinds = {c.name: c.control[0].kind for c in seq.control_input}
    assert kinds == {contract.START: model_config_pb2.ModelSequenceBatching.Control.CONTROL_SEQUENCE_START,
                     contract.END: model_config_pb2.ModelSequenceBatching.Control.CONTROL_SEQUENCE_END,
                     contract.CORRID: model_config_pb2.ModelSequenceBatching.Control.CONTROL_SEQUENCE_CORRID}
    params = {k: v.string_value for k, v in config.parameters.items()}
    assert params[contract.MANIFEST_SHA256] == file_sha256(multi / "manifest.json")
    assert params["executor"] == "inprocess"
    # --copy: a self-contained folder whose artifact still verifies
    artifact = folder / params["artifact"]
    assert not (artifact / "manifest.json").is_symlink()
    Manifest.load(artifact).verify_files(artifact, [Precision.FP32], list(Mode.MULTI.components))
    assert "from stablemtl_edge.serving.triton_model import TritonPythonModel" in (folder / "1" / "model.py").read_text()


def test_bls_executor_names_the_component_models(multi, tmp_path):
    write_repository(multi, tmp_path / "repo", RepositoryOptions(executor=Executor.BLS))
    config = parse_config(tmp_path / "repo" / contract.MODEL_NAME / "config.pbtxt")
    params = {k: v.string_value for k, v in config.parameters.items()}
    for c in Mode.MULTI.components:
        component = parse_config(tmp_path / "repo" / params[f"model_{c.value}"] / "config.pbtxt")
        assert params[f"batched_{c.value}"] == str(component.max_batch_size > 0).lower()


def test_engines_become_tensorrt_models(with_engine, tmp_path):
    out = tmp_path / "repo"
    assert export_main(["triton", "-a", str(with_engine), "--out", str(out), "--kind", "cpu", "--no-dynamic-batching"]) == 0
    config = parse_config(out / "decoder_fp32_trt" / "config.pbtxt")
    assert config.backend == "tensorrt" and config.default_model_filename == "model.plan"
    assert config.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_GPU  # engines need GPUs
    assert os.path.realpath(out / "decoder_fp32_trt" / "1" / "model.plan").endswith(ENGINE_FILE)
    onnx = parse_config(out / "decoder_fp32" / "config.pbtxt")
    assert onnx.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_CPU
    assert not onnx.HasField("dynamic_batching")
    assert "unet_main_fp32" not in os.listdir(out)  # single-stream artifact
    readme = (out / "README.md").read_text()
    assert "nvcr.io/nvidia/tritonserver" in readme and "decoder_fp32_trt" in readme


def test_refusals(multi, tmp_path, capsys):
    with pytest.raises(StableMTLError, match="holds no manifest.json"):
        write_repository(tmp_path, tmp_path / "repo")
    with pytest.raises(StableMTLError, match="has no fp16 graphs"):
        write_repository(multi, tmp_path / "repo", RepositoryOptions(precision=Precision.FP16))
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "notes.txt").write_text("mine")
    assert export_main(["triton", "-a", str(multi), "--out", str(tmp_path / "taken")]) == 1
    assert "error:" in capsys.readouterr().err
    assert (tmp_path / "taken" / "notes.txt").read_text() == "mine"  # someone else's folder is never replaced
    write_repository(multi, tmp_path / "repo")
    with pytest.raises(StableMTLError):
        write_repository(multi, tmp_path / "repo")  # ours, but no overwrite asked
    write_repository(multi, tmp_path / "repo", overwrite=True)
    assert json.loads((tmp_path / "repo" / contract.MODEL_NAME / "artifact" / "manifest.json").read_text())
