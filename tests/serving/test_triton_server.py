"""The generated repository served by a real Triton Inference Server, and the runtime's ``triton`` backend
against it: predictions equal to the in-process runtime's (both modes, all tasks, streaming with rates and
stateless), over gRPC and HTTP, from several concurrent clients, then a clean shutdown."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from stablemtl_edge.errors import StableMTLError
from stablemtl_edge.artifact.manifest import Manifest, Mode
from stablemtl_edge.runtime import Runtime
from stablemtl_edge.serving.triton_repository import RepositoryOptions, write_repository
from stablemtl_edge.tasks import TASK_NAMES
from tests.runtime.artifact_zoo import ToyModel
from tests.serving.triton_server import TritonServer, unavailable

REASON = unavailable()
pytestmark = pytest.mark.skipif(REASON is not None, reason=f"no Triton server can run here: {REASON}")


def frames(n: int, seed: int, size=(72, 150)) -> list[np.ndarray]:
    """Camera-sized frames (not the network's 64x128: the client letterboxes, the server never resizes)."""
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (*size, 3), dtype=np.uint8) for _ in range(n)]


def assert_same(remote: dict, local: dict, manifest: Manifest) -> None:
    assert sorted(remote) == sorted(local)
    for task, value in local.items():
        got = remote[task]
        assert got.dtype == value.dtype and got.shape == value.shape, task
        # Both sides run the same onnxruntime graphs on the same rows: the manifest's end-to-end tolerance
        # bounds them (the toy manifest records none, so they must agree to float rounding).
        np.testing.assert_allclose(got, value, atol=manifest.tolerance.get(task, 1e-6), rtol=0, err_msg=task)


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    return ToyModel(seed=5).write(tmp_path_factory.mktemp("zoo") / "multi", Mode.MULTI)


@pytest.fixture(scope="module")
def server(artifact, tmp_path_factory):
    work = tmp_path_factory.mktemp("triton")
    write_repository(artifact, work / "repo", RepositoryOptions(instances=2, max_streams=8))
    try:
        with TritonServer(work / "repo", work) as srv:
            yield srv
    except RuntimeError as e:  # the binary is installed but cannot run on this machine
        pytest.skip(f"tritonserver did not start: {e}")
    assert srv.returncode == 0, srv.log_tail()


def stream_both(artifact, url, images, **kw):
    with Runtime.from_artifacts(artifact, backend="triton", url=url, **kw) as remote, \
            Runtime.from_artifacts(artifact, backend="onnxruntime", **kw) as local:
        out = []
        for image in images:
            a, b = remote.infer(image), local.infer(image)
            assert a.frame_index == b.frame_index
            out.append((a, b))
        return out, remote.describe()


@pytest.mark.parametrize("protocol", ["grpc", "http"])
@pytest.mark.parametrize("mode", [Mode.SINGLE, Mode.MULTI])
def test_streams_equal_the_in_process_runtime(server, artifact, protocol, mode):
    url = server.grpc if protocol == "grpc" else f"http://{server.http}"
    pairs, engines = stream_both(artifact, url, frames(4, seed=1), mode=mode, rates={"semantic": 2})
    manifest = Manifest.load(artifact)
    for remote, local in pairs:
        assert {k: p.frame_index for k, p in remote.predictions.items()} == \
               {k: p.frame_index for k, p in local.predictions.items()}
        assert_same({k: p.value for k, p in remote.predictions.items()},
                    {k: p.value for k, p in local.predictions.items()}, manifest)
    assert sorted(pairs[-1][0].predictions) == sorted(TASK_NAMES)  # flows from the 2nd frame, all tasks
    assert pairs[0][0].timings_ms["decoder"] > 0  # the server's stage times come back
    assert all(e.startswith(f"triton[{protocol}://") for e in engines.values())


def test_stateless_predict_and_per_request_tasks(server, artifact):
    a, b = frames(2, seed=2)
    manifest = Manifest.load(artifact)
    for tasks, second in (("all", b), ("depth,optical_flow", b), ("depth,shading", None)):
        with Runtime.from_artifacts(artifact, tasks=tasks, backend="triton", url=server.grpc) as remote, \
                Runtime.from_artifacts(artifact, tasks=tasks, backend="onnxruntime") as local:
            got = remote.predict(a, second)
            assert_same(got, local.predict(a, second), manifest)
            assert sorted(got) == sorted(tasks.split(",") if tasks != "all" else TASK_NAMES)


def test_concurrent_clients_each_get_their_own_stream(server, artifact):
    """Four camera streams at once on two model instances: each equals its own in-process stream."""
    manifest = Manifest.load(artifact)
    results: dict[int, list] = {}
    errors: list[BaseException] = []

    def client(i: int) -> None:
        try:
            with Runtime.from_artifacts(artifact, backend="triton", url=server.grpc,
                                        rates={"albedo": 1 + i % 3}) as rt:
                results[i] = [rt.infer(f) for f in frames(4, seed=10 + i)]
        except BaseException as e:  # noqa: BLE001  # reported below, with the client's number
            errors.append(e)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    for i, remote in results.items():
        with Runtime.from_artifacts(artifact, backend="onnxruntime", rates={"albedo": 1 + i % 3}) as local:
            for got, f in zip(remote, frames(4, seed=10 + i)):
                want = local.infer(f)
                assert_same({k: p.value for k, p in got.predictions.items()},
                            {k: p.value for k, p in want.predictions.items()}, manifest)


def test_server_refusals_are_one_line_errors(server, artifact, tmp_path):
    other = ToyModel(seed=6).write(tmp_path / "other", Mode.MULTI)
    with pytest.raises(StableMTLError, match="serves another artifact"):
        Runtime.from_artifacts(other, backend="triton", url=server.grpc)
    with pytest.raises(StableMTLError, match="needs the server's address"):
        Runtime.from_artifacts(artifact, backend="triton")
    with pytest.raises(StableMTLError, match="drop --url"):
        Runtime.from_artifacts(artifact, backend="onnxruntime", url=server.grpc)
    with pytest.raises(StableMTLError, match="no Triton server answers"):
        Runtime.from_artifacts(artifact, backend="triton", url=f"http://{server.metrics}")  # not the HTTP API
    with pytest.raises(StableMTLError, match="no Triton server answers at grpc://127.0.0.1:1"):
        Runtime.from_artifacts(artifact, backend="triton", url="127.0.0.1:1")  # nothing listens
    # What the server itself refuses comes back to any client as the one-line message, request by request.
    import tritonclient.grpc as grpc
    from tritonclient.utils import InferenceServerException

    h, w = Manifest.load(artifact).profile.height, Manifest.load(artifact).profile.width
    bad = {"FRAME1": np.zeros((h, w, 3), np.uint8), "TASK_IDS": np.asarray([9], np.int32)}
    inputs = []
    for name, value in bad.items():
        inputs.append(grpc.InferInput(name, list(value.shape), "UINT8" if value.dtype == np.uint8 else "INT32"))
        inputs[-1].set_data_from_numpy(value)
    client = grpc.InferenceServerClient(server.grpc)
    with pytest.raises(InferenceServerException, match="outside 0..6"):
        client.infer("stablemtl", inputs, sequence_id=77, sequence_start=True, sequence_end=True)
    with pytest.raises(InferenceServerException, match="must specify the START flag"):
        client.infer("stablemtl", inputs[:1], sequence_id=78)  # the sequence batcher guards stream starts
    client.close()


def test_stablemtl_run_with_backend_triton(server, artifact, tmp_path):
    """The command line: a folder of photos through the server, the saved values those of the in-process run."""
    import cv2

    from stablemtl_edge.runtime.cli_run import main

    folder = tmp_path / "photos"
    folder.mkdir()
    images = frames(3, seed=4)
    for i, image in enumerate(images):
        cv2.imwrite(str(folder / f"{i:04d}.png"), image[..., ::-1])  # RGB -> BGR on disk
    out = tmp_path / "out"
    assert main([str(folder), "-a", str(artifact), "--backend", "triton", "--url", server.grpc, "--tasks",
                 "depth,optical_flow", "--output-dir", str(out), "--save", "npy", "--quiet"]) == 0
    with Runtime.from_artifacts(artifact, tasks="depth,optical_flow", mode=None, backend="onnxruntime") as rt:
        for i, image in enumerate(images):
            want = rt.infer(image)
            for task, p in want.predictions.items():
                np.testing.assert_allclose(np.load(out / f"{i:04d}_{task}.npy"), p.value, atol=1e-6, err_msg=task)
    assert not (out / "0000_optical_flow.npy").exists() and (out / "0002_optical_flow.npy").exists()


def test_load_benchmark_record(server, artifact):
    from stablemtl_edge.serving.load_bench import run_load, table

    record = run_load(artifact, server.grpc, [1, 2], frames=3, tasks="depth,normal", mode="single", warmup=1)
    assert record["in_process"]["n"] == 3
    assert [lv["clients"] for lv in record["levels"]] == [1, 2]
    for lv in record["levels"]:
        assert lv["n"] == 3 * lv["clients"] and lv["fps"] > 0 and lv["p99"] >= lv["p50"] > 0
        assert lv["server_stage_ms"]["p50"] > 0  # the server's own time came back with every frame
    assert "| 2 |" in table(record)


# What a component model runs in the BLS test: the repository's own model.onnx, on onnxruntime, behind the
# generated config (batching, reshape and all) with only the backend swapped, because the pytriton binary has
# the Python backend alone. On a GPU server the same configs load on the onnxruntime / tensorrt backends.
_COMPONENT_STAND_IN = '''
from pathlib import Path

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb


class TritonPythonModel:
    def initialize(self, args):
        path = Path(args["model_repository"]) / args["model_version"] / "model.onnx"
        self.session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        self.inputs = [i.name for i in self.session.get_inputs()]

    def execute(self, requests):
        responses = []
        for r in requests:
            feed = {n: np.from_dlpack(pb.get_input_tensor_by_name(r, n)) for n in self.inputs}
            names = list(r.requested_output_names()) or [o.name for o in self.session.get_outputs()]
            values = self.session.run(names, feed)
            responses.append(pb.InferenceResponse(
                [pb.Tensor.from_dlpack(n, np.ascontiguousarray(v).__dlpack__()) for n, v in zip(names, values)]))
        return responses
'''


def test_bls_executor_calls_the_component_models(artifact, tmp_path):
    from stablemtl_edge.serving.triton_repository import Executor, InstanceKind, model_name
    from stablemtl_edge.artifact.manifest import Precision

    repo = tmp_path / "repo"
    write_repository(artifact, repo, RepositoryOptions(executor=Executor.BLS, kind=InstanceKind.CPU, copy=True))
    components = [model_name(c, Precision.FP32) for c in Mode.MULTI.components]
    for name in components:
        config = repo / name / "config.pbtxt"
        text = config.read_text().replace('backend: "onnxruntime"', 'backend: "python"')
        config.write_text(text.replace('default_model_filename: "model.onnx"', 'default_model_filename: "model.py"'))
        (repo / name / "1" / "model.py").write_text(_COMPONENT_STAND_IN)
    manifest = Manifest.load(artifact)
    with TritonServer(repo, tmp_path, models=("stablemtl", *components)) as srv:
        for mode in (Mode.SINGLE, Mode.MULTI):
            pairs, _ = stream_both(artifact, srv.grpc, frames(3, seed=7), mode=mode)
            for remote, local in pairs:
                # Batched rows through other models: equal to float rounding (the decoder batches all rows).
                assert sorted(remote.predictions) == sorted(local.predictions)
                for k, p in local.predictions.items():
                    np.testing.assert_allclose(remote.predictions[k].value, p.value,
                                               atol=manifest.tolerance.get(k, 1e-5), rtol=0, err_msg=k)
    assert srv.returncode == 0, srv.log_tail()


def test_float16_wire_stays_within_the_tolerance(artifact, tmp_path):
    """Half the bytes per frame: every value within 1e-3 of in-process (the image's float16 rounding, at most
    2.5e-4, through each task's decoding), class ids equal but where a pixel sits on a class boundary."""
    from stablemtl_edge.serving.triton_repository import WireType

    write_repository(artifact, tmp_path / "repo", RepositoryOptions(wire=WireType.FLOAT16))
    with TritonServer(tmp_path / "repo", tmp_path) as srv:
        pairs, _ = stream_both(artifact, srv.grpc, frames(3, seed=8), mode=Mode.MULTI)
    assert srv.returncode == 0
    for remote, local in pairs:
        assert sorted(remote.predictions) == sorted(local.predictions)
        for task, p in local.predictions.items():
            got = remote.predictions[task].value
            assert got.dtype == p.value.dtype and got.shape == p.value.shape
            if task == "semantic":
                assert np.mean(got != p.value) < 0.01, task
            else:
                np.testing.assert_allclose(got, p.value, atol=1e-3, rtol=0, err_msg=task)
