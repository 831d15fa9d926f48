"""Runtime API on real toy ONNX artifacts: numbers equal an independent numpy re-computation."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from stablemtl_edge.errors import StableMTLError
from stablemtl_edge.artifact.manifest import Mode
from stablemtl_edge.runtime import FrameResult, Prediction, Runtime
from stablemtl_edge.tasks import TASK_NAMES, get_task
from tests.runtime.artifact_zoo import HEIGHT, WIDTH, ToyModel

# The toy graphs and their numpy twins differ only by float32 summation order: errors ~1e-6 before
# decoding; semantic ids can flip only at an exact palette tie, which random inputs do not hit.
ATOL = 1e-4


@pytest.fixture(scope="module")
def toy() -> ToyModel:
    return ToyModel()


@pytest.fixture(scope="module")
def multi_dir(tmp_path_factory, toy):
    return toy.write(tmp_path_factory.mktemp("multi"), Mode.MULTI)


@pytest.fixture(scope="module")
def single_dir(tmp_path_factory, toy):
    return toy.write(tmp_path_factory.mktemp("single"), Mode.SINGLE)


def frames(n: int, hw: tuple[int, int] = (HEIGHT, WIDTH), seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, hw + (3,), dtype=np.uint8) for _ in range(n)]


def decode_reference(ref: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {k: get_task(k).codec.decode(v.transpose(1, 2, 0)) for k, v in ref.items()}


def assert_matches(pred: dict[str, np.ndarray], expected: dict[str, np.ndarray]) -> None:
    assert set(pred) == set(expected)
    for k, v in expected.items():
        assert pred[k].shape == v.shape and pred[k].dtype == v.dtype, k
        np.testing.assert_allclose(pred[k].astype(np.float64), v.astype(np.float64), atol=ATOL, err_msg=k)


@pytest.mark.parametrize("mode", [Mode.SINGLE, Mode.MULTI])
@pytest.mark.parametrize("tasks", [["depth"], ["normal", "semantic", "albedo"], None])
def test_predict_equals_row_by_row_reference(toy, multi_dir, mode, tasks):
    f1, f2 = frames(2)
    with Runtime.from_artifacts(multi_dir, tasks=tasks, mode=mode, providers=["CPUExecutionProvider"]) as rt:
        pred = rt.predict(f1, f2)
    keys = list(TASK_NAMES) if tasks is None else tasks
    assert_matches(pred, decode_reference(toy.reference(f1, f2, keys, mode)))


def test_single_stream_artifact_serves_single_mode(toy, single_dir):
    f1, f2 = frames(2, seed=3)
    with Runtime.from_artifacts(single_dir, tasks="depth,optical_flow", mode="single") as rt:
        assert rt.tasks == ("depth", "optical_flow")
        pred = rt.predict(f1, f2)
    assert_matches(pred, decode_reference(toy.reference(f1, f2, ["depth", "optical_flow"], Mode.SINGLE)))


def test_values_have_the_documented_types_and_ranges(multi_dir):
    f1, f2 = frames(2, seed=5)
    with Runtime.from_artifacts(multi_dir, mode="multi") as rt:
        p = rt.predict(f1, f2)
    h, w = HEIGHT, WIDTH
    assert p["depth"].shape == (h, w) and 0 <= p["depth"].min() and p["depth"].max() <= 1
    np.testing.assert_allclose(np.linalg.norm(p["normal"], axis=2), 1.0, atol=1e-5)
    assert p["semantic"].dtype == np.uint8 and p["semantic"].max() < 8
    assert p["optical_flow"].shape == (h, w, 2) and np.abs(p["optical_flow"]).max() <= 1
    assert p["scene_flow"].shape == (h, w, 3)
    assert p["albedo"].shape == (h, w, 3) and p["shading"].shape == (h, w)


def test_infer_streams_flows_on_previous_and_current_frame(toy, multi_dir):
    seq = frames(3, seed=7)
    with Runtime.from_artifacts(multi_dir, tasks=["depth", "optical_flow"], mode="multi") as rt:
        results = [rt.infer(f) for f in seq]
    assert isinstance(results[0], FrameResult)
    assert [r.frame_index for r in results] == [0, 1, 2]
    assert "optical_flow" not in results[0].predictions  # no previous frame yet
    for t in (1, 2):
        # one shared auxiliary call: one-frame streams read frame t, flow streams (t-1, t)
        ref = toy.reference(seq[t - 1], seq[t], ["depth", "optical_flow"], Mode.MULTI, stream=True)
        ref = decode_reference(ref)
        np.testing.assert_allclose(results[t]["optical_flow"], ref["optical_flow"], atol=ATOL)
        np.testing.assert_allclose(results[t]["depth"], ref["depth"], atol=ATOL)
        pred = results[t].predictions["optical_flow"]
        assert isinstance(pred, Prediction) and pred.frame_index == t and pred.task == "optical_flow"
    stages = {"preprocess", "encoder", "unet", "unet_main", "decoder", "postprocess", "total"}
    assert set(results[2].timings_ms) == stages
    assert results[2].timings_ms["total"] >= results[2].timings_ms["unet_main"] > 0


@pytest.mark.parametrize(
    ("layout", "convert"),
    [
        ("bgr", lambda f: f[..., ::-1].copy()),
        ("rgba", lambda f: np.dstack([f, np.full(f.shape[:2], 7, np.uint8)])),
        ("bgra", lambda f: np.dstack([f[..., ::-1], np.full(f.shape[:2], 7, np.uint8)])),
    ],
)
def test_layouts_give_the_rgb_result(multi_dir, layout, convert):
    (f,) = frames(1, seed=11)
    with Runtime.from_artifacts(multi_dir, tasks=["depth", "normal"]) as rt:
        want = rt.predict(f)
        got = rt.predict(convert(f), layout=layout)
    assert_matches(got, want)


def test_gray_frames_are_replicated_to_rgb(toy, multi_dir):
    rng = np.random.default_rng(2)
    g = rng.integers(0, 256, (HEIGHT, WIDTH), dtype=np.uint8)
    with Runtime.from_artifacts(multi_dir, tasks=["shading"]) as rt:
        got = rt.predict(g, layout="gray")
        got1 = rt.predict(g[..., None], layout="gray")
    ref = decode_reference(toy.reference(np.dstack([g, g, g]), None, ["shading"], Mode.SINGLE))
    assert_matches(got, ref)
    assert_matches(got1, ref)


def test_odd_frame_is_letterboxed_and_restored(toy, multi_dir):
    """A 375x1242 frame (KITTI) maps to 39x128 inside the 64x128 profile, edge-padded, then back."""
    (f,) = frames(1, hw=(375, 1242), seed=13)
    with Runtime.from_artifacts(multi_dir, tasks=["depth", "normal", "semantic"]) as rt:
        pred = rt.predict(f)
    inner = cv2.resize(f, (128, 39), interpolation=cv2.INTER_AREA)
    padded = np.concatenate([inner, np.repeat(inner[-1:], HEIGHT - 39, axis=0)], axis=0)
    ref = decode_reference(toy.reference(padded, None, ["depth", "normal", "semantic"], Mode.SINGLE))
    assert pred["depth"].shape == (375, 1242) and pred["normal"].shape == (375, 1242, 3)
    want_depth = cv2.resize(ref["depth"][:39], (1242, 375), interpolation=cv2.INTER_LINEAR)
    np.testing.assert_allclose(pred["depth"], want_depth, atol=ATOL)
    want_sem = cv2.resize(ref["semantic"][:39], (1242, 375), interpolation=cv2.INTER_NEAREST)
    np.testing.assert_array_equal(pred["semantic"], want_sem)
    np.testing.assert_allclose(np.linalg.norm(pred["normal"], axis=2), 1.0, atol=1e-5)


def test_frame_size_change_restarts_the_stream(multi_dir):
    a, b = frames(2, seed=17)
    (c,) = frames(1, hw=(40, 90), seed=19)
    with Runtime.from_artifacts(multi_dir, tasks=["depth", "optical_flow"], mode="single") as rt:
        rt.infer(a)
        assert "optical_flow" in rt.infer(b)
        res = rt.infer(c)
        assert set(res.predictions) == {"depth"} and res["depth"].shape == (40, 90)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda rt: rt.infer(np.zeros((64, 128, 3), np.float32)), r"`frame` must be uint8"),
        (lambda rt: rt.infer(np.zeros((64, 128, 4), np.uint8)), r"shape \(64, 128, 4\) but layout `rgb` needs"),
        (lambda rt: rt.infer(np.zeros((64, 128), np.uint8), layout="bgr"), r"layout `bgr` needs \(H, W, 3\)"),
        (lambda rt: rt.infer(np.zeros((0, 128, 3), np.uint8)), r"`frame` is empty"),
        (lambda rt: rt.infer([[1, 2]]), r"`frame` must be a numpy array"),
        (lambda rt: rt.infer(np.zeros((8, 8, 3), np.uint8), layout="yuv"), r"unknown frame layout `yuv`"),
        (lambda rt: rt.predict(np.zeros((8, 8, 3), np.uint8)), r"optical_flow need two frames"),
        (
            lambda rt: rt.predict(np.zeros((8, 8, 3), np.uint8), np.zeros((8, 9, 3), np.uint8)),
            r"`frame2` has shape \(8, 9, 3\) but `frame1` has \(8, 8, 3\)",
        ),
    ],
)
def test_invalid_frames_are_one_line_errors(multi_dir, call, message):
    with Runtime.from_artifacts(multi_dir, tasks=["depth", "optical_flow"]) as rt:
        with pytest.raises(StableMTLError, match=message) as e:
            call(rt)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"tasks": ["depht"]}, r"unknown task `depht`: valid tasks are normal, depth"),
        ({"mode": "triple"}, r"unknown mode `triple`: choose from single, multi"),
        ({"backend": "openvino"}, r"unknown backend `openvino`: choose from auto, onnxruntime, tensorrt"),
        ({"precision": "fp16"}, r"has no fp16 components \(it has: fp32\).*--precision fp16"),
        ({"rates": {"semantic": 3}, "tasks": ["depth"]}, r"rate is given for `semantic`, which is not among"),
        ({"rates": {"depth": 0}, "tasks": ["depth"]}, r"rate of `depth` must be an integer >= 1"),
        ({"aux_reuse": 2}, r"`aux_reuse` applies to the multi-stream mode only"),
        ({"aux_reuse": 0, "mode": "multi"}, r"`aux_reuse` must be an integer >= 1"),
        ({"providers": ["CUDAExecutionProvider"]}, r"CUDAExecutionProvider are not in this onnxruntime build"),
        ({"backend": "tensorrt", "providers": ["CPUExecutionProvider"]}, r"`providers` are onnxruntime settings"),
    ],
)
def test_bad_options_are_one_line_errors(multi_dir, kwargs, message):
    import onnxruntime

    if "CUDAExecutionProvider" in str(kwargs) and "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("this onnxruntime build has the CUDA provider")
    with pytest.raises(StableMTLError, match=message) as e:
        Runtime.from_artifacts(multi_dir, **kwargs)
    assert "\n" not in str(e.value)


def test_multi_mode_on_a_single_stream_artifact_is_refused(single_dir):
    with pytest.raises(StableMTLError, match=r"is a single-stream artifact: use mode `single`"):
        Runtime.from_artifacts(single_dir, mode="multi")


def test_properties_and_close(multi_dir):
    rt = Runtime.from_artifacts(multi_dir, tasks=["albedo", "depth"], mode="multi", threads=1)
    assert rt.tasks == ("depth", "albedo")  # canonical order
    assert rt.resolution == (HEIGHT, WIDTH)
    assert rt.manifest.mode is Mode.MULTI
    assert set(rt.describe()) == {"encoder", "unet", "unet_main", "decoder"}
    assert all("CPUExecutionProvider" in d for d in rt.describe().values())
    assert rt.fallbacks() == []
    assert rt.counters == dict.fromkeys(rt.counters, 0) and "unet_rows" in rt.counters
    rt.close()
    rt.close()  # idempotent
    with pytest.raises(StableMTLError, match="this Runtime is closed"):
        rt.infer(frames(1)[0])
