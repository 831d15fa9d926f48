"""Rows per decoder call change the cost, never the images: batched and per-row decoding of a real export agree."""

from __future__ import annotations

import numpy as np
import pytest

from stablemtl_edge.runtime import Runtime
from stablemtl_edge.tasks import TASK_NAMES


@pytest.fixture(scope="module")
def frames(tiny_artifacts):
    rng = np.random.default_rng(3)
    return [rng.integers(0, 256, (64, 128, 3), dtype=np.uint8) for _ in range(3)]


def _decode(tiny_artifacts, frames, mode, precision, decoder_rows):
    """Stateless and streaming images of every task, and the decoder's counters."""
    with Runtime.from_artifacts(tiny_artifacts, mode=mode, precision=precision, backend="onnxruntime",
                                decoder_rows=decoder_rows) as rt:
        stateless = {k: v.copy() for k, v in rt.scheduler.predict(frames[0], frames[1], {}).items()}
        stream = []
        for f in frames:
            _, images = rt.scheduler.step(f, {})
            stream.append({k: v.copy() for k, v in images.items()})
        return stateless, stream, rt.counters


@pytest.mark.parametrize("mode", ["single", "multi"])
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_per_row_decoding_equals_one_batched_call(tiny_artifacts, frames, mode, precision):
    batched, batched_stream, one_call = _decode(tiny_artifacts, frames, mode, precision, "all")
    assert set(batched) == set(TASK_NAMES)
    for rows in (1, 3):
        got, stream, counters = _decode(tiny_artifacts, frames, mode, precision, rows)
        for key in TASK_NAMES:  # the same graph on the same rows: equal to float rounding of the batch size
            np.testing.assert_allclose(got[key], batched[key], rtol=0, atol=1e-5, err_msg=f"{key}, {rows} rows")
        assert [set(s) for s in stream] == [set(s) for s in batched_stream]
        for mine, theirs in zip(stream, batched_stream):
            for key in mine:
                np.testing.assert_allclose(mine[key], theirs[key], rtol=0, atol=1e-5, err_msg=key)
        assert counters["decoder_rows"] == one_call["decoder_rows"]
        # stateless: 7 rows; the stream: 5 one-frame tasks on frame 0, then all 7
        assert one_call["decoder_calls"] == 4
        assert counters["decoder_calls"] == sum(-(-k // rows) for k in (7, 5, 7, 7))


def test_rows_per_call_reach_the_runtime_from_the_run_flags_and_the_ros_parameter(tiny_artifacts, frames):
    from stablemtl_edge.errors import StableMTLError
    from stablemtl_edge.runtime.cli_args import runtime_options
    from stablemtl_edge.runtime.cli_run import build_parser
    from stablemtl_edge.runtime.ros.parameters import NodeSettings

    args = build_parser().parse_args(["x.mp4", "--artifacts", str(tiny_artifacts), "--backend", "onnxruntime",
                                      "--mode", "single", "--decoder-rows", "3"])
    ros = NodeSettings.from_values({"artifact_dir": str(tiny_artifacts), "backend": "onnxruntime", "mode": "single",
                                    "decoder_rows": "3"}).runtime
    for options in (runtime_options(args), ros):
        assert options.decoder_rows == 3
        with Runtime.from_options(options) as rt:
            rt.scheduler.predict(frames[0], frames[1], {})
            assert rt.decoder_rows == 3 and rt.counters["decoder_calls"] == 3  # 7 rows: 3 + 3 + 1
    with pytest.raises(StableMTLError, match="`decoder_rows` must be `auto`.*got `0`"):
        NodeSettings.from_values({"artifact_dir": "x", "decoder_rows": "0"})
    with pytest.raises(StableMTLError, match="drop --providers / --decoder / --decoder-rows"):
        NodeSettings.from_values({"artifact_dir": "x", "backend": "triton", "url": "gpu:8001", "decoder_rows": "all"})
