"""Pass schedule: rows per component, batching, first-frame flow rule, rates and auxiliary reuse."""

from __future__ import annotations

import numpy as np
import pytest

from stablemtl_edge.artifact.manifest import Mode
from stablemtl_edge.errors import StableMTLError
from stablemtl_edge.runtime import Runtime
from stablemtl_edge.tasks import TASK_NAMES, get_task
from tests.runtime.artifact_zoo import HEIGHT, WIDTH, ToyModel

ONE_FRAME = ("normal", "depth", "semantic", "albedo", "shading")


@pytest.fixture(scope="module")
def toy() -> ToyModel:
    return ToyModel(seed=1)


@pytest.fixture(scope="module")
def multi_dir(tmp_path_factory, toy):
    return toy.write(tmp_path_factory.mktemp("multi"), Mode.MULTI)


def frames(n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8) for _ in range(n)]


def deltas(rt: Runtime, seq: list[np.ndarray]) -> list[dict[str, int]]:
    """Counter increments per frame."""
    out = []
    for f in seq:
        before = rt.counters
        rt.infer(f)
        out.append({k: v - before[k] for k, v in rt.counters.items()})
    return out


def decoder_calls(k: int, decoder_rows: int | str) -> int:
    """Decoder calls for k rows: one batched call (``all``), one per row (``auto`` on the CPU provider), or
    calls of n rows."""
    if decoder_rows == "all":
        return 1
    return k if decoder_rows == "auto" else -(-k // int(decoder_rows))


@pytest.mark.parametrize("decoder_rows", ["all", "auto", 2])
@pytest.mark.parametrize("tasks", [["depth"], ["depth", "semantic"], list(ONE_FRAME)])
def test_single_stream_costs_k_rows_in_one_unet_call(multi_dir, tasks, decoder_rows):
    with Runtime.from_artifacts(multi_dir, tasks=tasks, mode="single", decoder_rows=decoder_rows) as rt:
        for d in deltas(rt, frames(3)):
            k = len(tasks)
            assert d == {"frames": 1, "encoder_rows": 1, "encoder_calls": 1, "unet_rows": k, "unet_calls": 1,
                         "unet_main_rows": 0, "unet_main_calls": 0, "decoder_rows": k,
                         "decoder_calls": decoder_calls(k, decoder_rows)}


@pytest.mark.parametrize("decoder_rows", ["all", "auto", 3])
@pytest.mark.parametrize("k", [1, 2, 3, 5])
def test_multi_stream_costs_7_plus_k_rows(multi_dir, k, decoder_rows):
    tasks = list(ONE_FRAME[:k])
    with Runtime.from_artifacts(multi_dir, tasks=tasks, mode="multi", decoder_rows=decoder_rows) as rt:
        for d in deltas(rt, frames(3)):
            aux = 6 if k == 1 else 7
            assert d["unet_rows"] == aux and d["unet_calls"] == 1
            assert d["unet_main_rows"] == k and d["unet_main_calls"] == 1
            assert d["decoder_rows"] == k and d["decoder_calls"] == decoder_calls(k, decoder_rows)
            assert d["encoder_rows"] == 1  # encode once per frame


@pytest.mark.parametrize(("decoder_rows", "rows", "batching"), [
    ("auto", 1, "1 row per call (auto: onnxruntime CPU)"),
    ("all", None, "all rows in one call (asked)"),
    ("2", 2, "2 rows per call (asked)"),
])
def test_decoder_batching_is_chosen_per_backend_and_said(multi_dir, decoder_rows, rows, batching):
    with Runtime.from_artifacts(multi_dir, tasks="depth", mode="single", backend="onnxruntime",
                                decoder_rows=decoder_rows) as rt:
        assert rt.decoder_rows == rows == rt.scheduler.decoder_rows and rt.decoder_batching == batching


@pytest.mark.parametrize("bad", [0, -1, "some", 1.5, True])
def test_bad_decoder_rows_are_refused_in_one_line(multi_dir, bad):
    with pytest.raises(StableMTLError, match="`decoder_rows` must be `auto`") as e:
        Runtime.from_artifacts(multi_dir, tasks="depth", decoder_rows=bad)
    assert "\n" not in str(e.value)


def test_all_seven_tasks_multi_stream(multi_dir):
    """Frame 0 has no flows (5 main rows); from frame 1 on, 7 + 7 = 14 UNet rows against 49 officially."""
    with Runtime.from_artifacts(multi_dir, tasks="all", mode="multi") as rt:
        d = deltas(rt, frames(3))
    assert [x["unet_rows"] + x["unet_main_rows"] for x in d] == [12, 14, 14]
    assert [x["encoder_rows"] for x in d] == [1, 1, 1]


def test_flow_only_first_frame_encodes_and_nothing_else(multi_dir):
    with Runtime.from_artifacts(multi_dir, tasks=["scene_flow"], mode="multi") as rt:
        d = deltas(rt, frames(2))
        assert d[0] == {**dict.fromkeys(d[0], 0), "frames": 1, "encoder_rows": 1, "encoder_calls": 1}
        assert d[1]["unet_rows"] == 6 and d[1]["unet_main_rows"] == 1


def test_rates_run_tasks_every_nth_frame_and_hold_results(multi_dir):
    seq = frames(7, seed=3)
    with Runtime.from_artifacts(multi_dir, tasks=["depth", "semantic"], mode="single", rates={"semantic": 3}) as rt:
        results = []
        rows = []
        for f in seq:
            before = rt.counters["unet_rows"]
            results.append(rt.infer(f))
            rows.append(rt.counters["unet_rows"] - before)
    assert rows == [2, 1, 1, 2, 1, 1, 2]
    assert [r.predictions["semantic"].frame_index for r in results] == [0, 0, 0, 3, 3, 3, 6]
    assert [r.predictions["depth"].frame_index for r in results] == list(range(7))
    assert results[2]["semantic"] is results[1]["semantic"]  # held, not recomputed


def test_rates_on_a_flow_count_from_its_first_run(multi_dir):
    with Runtime.from_artifacts(multi_dir, tasks=["optical_flow"], rates={"optical_flow": 2}) as rt:
        idx = [r.predictions["optical_flow"].frame_index if "optical_flow" in r else None
               for r in (rt.infer(f) for f in frames(6))]
    assert idx == [None, 1, 1, 3, 3, 5]


def test_no_due_task_and_no_flow_skips_the_encoder(multi_dir):
    with Runtime.from_artifacts(multi_dir, tasks=["depth"], rates={"depth": 2}) as rt:
        d = deltas(rt, frames(4))
    assert [x["encoder_rows"] for x in d] == [1, 0, 1, 0]


def test_aux_reuse_recomputes_auxiliary_features_every_nth_frame(toy, multi_dir):
    seq = frames(5, seed=5)
    with Runtime.from_artifacts(multi_dir, tasks=["depth", "normal"], mode="multi", aux_reuse=3) as rt:
        rows, results = [], []
        for f in seq:
            before = rt.counters["unet_rows"]
            results.append(rt.infer(f))
            rows.append(rt.counters["unet_rows"] - before)
    assert rows == [7, 0, 0, 7, 0]
    # Frame 1 reuses frame 0's features: equal to a main pass on frame 1 with frame-0 auxiliaries.
    z0, z1 = toy.np_encoder(seq[0][None]), toy.np_encoder(seq[1][None])
    zeros = np.zeros_like(z0)
    per_task = [toy.np_unet(np.concatenate([z0, z0, zeros], 1), np.array([a]))[1] for a in range(7)]
    aux = [np.stack([feats[layer][0] for feats in per_task]) for layer in range(len(per_task[0]))]
    aux = [a[None] for a in aux]
    lat = toy.np_unet_main(np.concatenate([z1, z1, zeros], 1), np.array([get_task("depth").index]), aux)
    want = get_task("depth").codec.decode(toy.np_decoder(lat)[0].transpose(1, 2, 0))
    np.testing.assert_allclose(results[1]["depth"], want, atol=1e-4)


def test_single_main_task_ignores_its_own_zeroed_slot(toy, multi_dir):
    """k = 1 computes 6 auxiliary rows; the own slot holds zeros, which unet_main ignores."""
    (f,) = frames(1, seed=9)
    with Runtime.from_artifacts(multi_dir, tasks=["albedo"], mode="multi") as rt:
        got = rt.infer(f)["albedo"]
        stack = rt.scheduler._stack[0][0]
    assert not stack[get_task("albedo").index].any() and stack[get_task("depth").index].any()
    ref = toy.reference(f, None, ["albedo"], Mode.MULTI)["albedo"]
    np.testing.assert_allclose(got, get_task("albedo").codec.decode(ref.transpose(1, 2, 0)), atol=1e-4)


def test_predict_leaves_the_stream_untouched(multi_dir):
    a, b, c = frames(3, seed=21)
    with Runtime.from_artifacts(multi_dir, tasks=["depth", "optical_flow"], mode="multi") as rt:
        rt.infer(a)
        rt.predict(c, a)
        res = rt.infer(b)
    with Runtime.from_artifacts(multi_dir, tasks=["depth", "optical_flow"], mode="multi") as rt2:
        rt2.infer(a)
        res2 = rt2.infer(b)
    for k in ("depth", "optical_flow"):
        np.testing.assert_array_equal(res[k], res2[k])
    assert res.frame_index == 1


def test_single_stream_flows_match_stateless_predict_on_each_pair(multi_dir):
    seq = frames(4, seed=23)
    with Runtime.from_artifacts(multi_dir, tasks="all", mode="single") as rt:
        stream = [rt.infer(f) for f in seq]
        for t in range(1, 4):
            pred = rt.predict(seq[t - 1], seq[t])
            np.testing.assert_allclose(stream[t]["optical_flow"], pred["optical_flow"], atol=1e-5)
            np.testing.assert_allclose(stream[t]["scene_flow"], pred["scene_flow"], atol=1e-5)
    assert set(stream[-1].predictions) == set(TASK_NAMES)


def test_multi_stream_flows_use_one_shared_auxiliary_call(toy, multi_dir):
    """Streaming multi-stream: the shared auxiliary rows read frame t (one-frame tasks) and (t-1, t) (flows),
    so a flow at t differs from a stateless ``predict(t-1, t)``, whose one-frame streams read frame t-1."""
    seq = frames(2, seed=29)
    with Runtime.from_artifacts(multi_dir, tasks="all", mode="multi") as rt:
        rt.infer(seq[0])
        res = rt.infer(seq[1])
        pair = rt.predict(seq[0], seq[1])
    ref = toy.reference(seq[0], seq[1], list(TASK_NAMES), Mode.MULTI, stream=True)
    for k in TASK_NAMES:
        want = get_task(k).codec.decode(ref[k].transpose(1, 2, 0))
        np.testing.assert_allclose(res[k].astype(float), want.astype(float), atol=1e-4, err_msg=k)
    assert np.abs(res["optical_flow"] - pair["optical_flow"]).max() > 1e-3


@pytest.mark.parametrize(
    ("mode", "tasks", "encodes"),
    [("single", ["depth"], 1), ("single", ["depth", "optical_flow"], 2), ("multi", ["depth"], 2)],
)
def test_predict_encodes_frame2_only_when_a_stream_reads_it(multi_dir, mode, tasks, encodes):
    a, b = frames(2, seed=31)
    with Runtime.from_artifacts(multi_dir, tasks=tasks, mode=mode) as rt:
        rt.predict(a, b)
        assert rt.counters["encoder_rows"] == encodes
