"""rosbag2 processing: real bags written and read with rosbags (sqlite3 and mcap), real photographs."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from skimage import data as skdata

pytest.importorskip("rosbags", reason='rosbags not installed: pip install "stablemtl-edge[ros]"')

from rosbags.rosbag2 import Reader, StoragePlugin, Writer  # noqa: E402

from stablemtl_edge.atomic import MARKER_NAME  # noqa: E402
from stablemtl_edge.errors import StableMTLError  # noqa: E402
from stablemtl_edge.artifact.manifest import Mode  # noqa: E402
from stablemtl_edge.runtime import Runtime  # noqa: E402
from stablemtl_edge.runtime.preprocess import Layout  # noqa: E402
from stablemtl_edge.runtime.ros import bag_main  # noqa: E402
from stablemtl_edge.runtime.ros.bag import (  # noqa: E402
    COMPRESSED_IMAGE_TYPE,
    IMAGE_TYPE,
    TYPESTORE,
    BagImageReader,
    PredictionBagWriter,
    process_bag,
)
from stablemtl_edge.runtime.ros.image_conversions import image_to_numpy, numpy_to_image  # noqa: E402
from stablemtl_edge.runtime.ros.outputs import AlbedoEncoding, OutputOptions, output_topics  # noqa: E402
from tests.runtime.artifact_zoo import ToyModel  # noqa: E402

Image = TYPESTORE.types[IMAGE_TYPE]
T0 = 1_700_000_000_000_000_000  # ns


def _header(i: int):
    Header = TYPESTORE.types["std_msgs/msg/Header"]
    Time = TYPESTORE.types["builtin_interfaces/msg/Time"]
    stamp = T0 + i * 33_000_000
    return Header(stamp=Time(sec=stamp // 10**9, nanosec=stamp % 10**9), frame_id="camera_optical")


def photo_frames(n: int, size: tuple[int, int] = (48, 64)) -> list[np.ndarray]:
    """``n`` uint8 RGB frames of a real photograph, panning right by 4 pixels per frame."""
    h, w = size
    img = cv2.resize(skdata.astronaut(), (160, 120), interpolation=cv2.INTER_AREA)
    return [np.ascontiguousarray(img[20 : 20 + h, 8 + 4 * i : 8 + 4 * i + w]) for i in range(n)]


def write_input_bag(path: Path, frames: list[np.ndarray], *, storage=StoragePlugin.SQLITE3,
                    topic: str = "/camera/image_raw", encoding: str = "rgb8", extra: bool = True) -> list[int]:
    """A bag with ``frames`` on ``topic`` (+ a 32FC1 message that is not a camera image, and a PNG
    CompressedImage topic when ``extra``). Returns the record timestamps of the frames."""
    stamps = []
    with Writer(path, version=9, storage_plugin=storage) as writer:
        conn = writer.add_connection(topic, IMAGE_TYPE, typestore=TYPESTORE)
        if extra:
            comp = writer.add_connection(f"{topic}/compressed", COMPRESSED_IMAGE_TYPE, typestore=TYPESTORE)
        for i, frame in enumerate(frames):
            arr = frame[..., ::-1] if encoding == "bgr8" else frame
            msg = numpy_to_image(arr, encoding, Image, _header(i))
            stamp = T0 + i * 33_000_000 + 5_000_000  # recorded 5 ms after capture
            writer.write(conn, stamp, TYPESTORE.serialize_cdr(msg, IMAGE_TYPE))
            stamps.append(stamp)
            if extra and i == 1:
                depth = numpy_to_image(np.ones(frame.shape[:2], np.float32), "32FC1", Image, _header(i))
                writer.write(conn, stamp + 1, TYPESTORE.serialize_cdr(depth, IMAGE_TYPE))
            if extra:
                ok, png = cv2.imencode(".png", frame[..., ::-1])
                cmsg = TYPESTORE.types[COMPRESSED_IMAGE_TYPE](header=_header(i), format="png", data=png.reshape(-1))
                writer.write(comp, stamp, TYPESTORE.serialize_cdr(cmsg, COMPRESSED_IMAGE_TYPE))
    return stamps


def read_bag(path: Path) -> dict[str, list[tuple[int, object]]]:
    """topic -> [(timestamp, deserialised message)] in bag order."""
    out: dict[str, list[tuple[int, object]]] = {}
    with Reader(path) as reader:
        for conn, stamp, raw in reader.messages():
            out.setdefault(conn.topic, []).append((stamp, TYPESTORE.deserialize_cdr(raw, conn.msgtype)))
    return out


def test_reader_yields_frames_headers_and_timestamps_and_skips_non_camera_messages(tmp_path):
    frames = photo_frames(3)
    stamps = write_input_bag(tmp_path / "in", frames)
    with pytest.raises(StableMTLError, match="has 2 image topics .*choose one with --topic"):
        BagImageReader(tmp_path / "in")
    with pytest.raises(StableMTLError, match="no image topic `/nope`: its image topics are /camera/image_raw"):
        BagImageReader(tmp_path / "in", "/nope")
    with pytest.raises(StableMTLError, match="is not a ROS 2 bag"):
        BagImageReader(tmp_path / "missing")

    with BagImageReader(tmp_path / "in", "/camera/image_raw") as reader:
        assert reader.count == 4  # 3 frames + the 32FC1 message
        got = list(reader)
        assert list(reader.skipped.values()) == [1]
        assert "`32FC1` is not a camera image encoding" in next(iter(reader.skipped))
    assert [g.timestamp for g in got] == stamps
    for i, (g, frame) in enumerate(zip(got, frames)):
        assert g.layout is Layout.RGB
        np.testing.assert_array_equal(g.frame, frame)
        assert (g.header.stamp.sec, g.header.stamp.nanosec) == (_header(i).stamp.sec, _header(i).stamp.nanosec)
        assert g.header.frame_id == "camera_optical"

    with BagImageReader(tmp_path / "in" / "in.db3", "/camera/image_raw/compressed") as reader:  # the file works too
        got = list(reader)
    assert len(got) == 3 and all(g.layout is Layout.BGR for g in got)
    np.testing.assert_array_equal(got[2].frame[..., ::-1], frames[2])


def test_reader_skips_a_corrupt_message_and_goes_on(tmp_path):
    frames = photo_frames(2)
    with Writer(tmp_path / "in", version=9) as writer:
        conn = writer.add_connection("/cam", IMAGE_TYPE, typestore=TYPESTORE)
        for i, frame in enumerate(frames):
            raw = TYPESTORE.serialize_cdr(numpy_to_image(frame, "rgb8", Image, _header(i)), IMAGE_TYPE)
            writer.write(conn, T0 + 2 * i, raw)
            if i == 0:
                writer.write(conn, T0 + 1, raw[: len(raw) // 2])  # truncated on the wire
    with BagImageReader(tmp_path / "in") as reader:
        got = list(reader)
    assert [g.timestamp for g in got] == [T0, T0 + 2]
    assert [r.split(":")[0] for r in reader.skipped] == ["cannot deserialise a sensor_msgs/msg/Image message"]


def _fake_predictions(frame: np.ndarray) -> dict[str, np.ndarray]:
    """Values of every task's type and range derived from a frame (for I/O only; no model involved)."""
    f = frame.astype(np.float32) / 255.0
    n = f * 2 - 1
    n /= np.linalg.norm(n, axis=2, keepdims=True) + 1e-6
    depth = f.mean(axis=2)
    depth[0, 0] = np.nan
    return {
        "normal": n,
        "depth": depth,
        "semantic": (frame[..., 0] // 32).astype(np.uint8),
        "optical_flow": n[..., :2],
        "scene_flow": n,
        "albedo": f,
        "shading": f[..., 1],
    }


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_writer_round_trip_is_atomic_and_keeps_headers(tmp_path, storage):
    frames = photo_frames(2)
    topics = output_topics("all", OutputOptions(albedo_encoding=AlbedoEncoding.RGB8, debug=True))
    out = tmp_path / "out"
    with PredictionBagWriter(out, topics, prefix="/robot/stablemtl", storage=storage) as writer:
        for i, frame in enumerate(frames):
            assert writer.write(_fake_predictions(frame), _header(i), T0 + i) == len(topics)
        assert not out.exists()  # appears only when complete
    assert out.is_dir() and (out / "metadata.yaml").is_file()
    # the bag's own files, plus our marker (what lets a later --overwrite know this folder is ours)
    assert {p.name for p in out.iterdir()} == {"metadata.yaml", f"out.{'db3' if storage == 'sqlite3' else 'mcap'}", MARKER_NAME}

    bag = read_bag(out)
    assert set(bag) == {f"/robot/stablemtl/{t.name}" for t in topics}
    for t in topics:
        msgs = bag[f"/robot/stablemtl/{t.name}"]
        assert [s for s, _ in msgs] == [T0, T0 + 1]
        for i, (_, msg) in enumerate(msgs):
            assert msg.encoding == t.encoding.value
            assert msg.header.frame_id == "camera_optical" and msg.header.stamp.sec == _header(i).stamp.sec
            want = t.convert(_fake_predictions(frames[i])[t.task])
            np.testing.assert_array_equal(image_to_numpy(msg), want)
    depth = image_to_numpy(bag["/robot/stablemtl/depth/relative"][0][1])
    assert np.isnan(depth[0, 0]) and np.isfinite(depth[1:]).all()
    assert image_to_numpy(bag["/robot/stablemtl/albedo"][0][1]).dtype == np.uint8


def test_writer_discards_on_error_and_refuses_to_overwrite(tmp_path):
    topics = output_topics("depth")
    out = tmp_path / "out"
    with pytest.raises(RuntimeError, match="boom"):
        with PredictionBagWriter(out, topics) as writer:
            writer.write({"depth": np.zeros((4, 4), np.float32)}, _header(0), T0)
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []  # nothing left behind, not even the staging directory

    with PredictionBagWriter(out, topics) as writer:
        writer.write({"depth": np.zeros((4, 4), np.float32)}, _header(0), T0)
    with pytest.raises(StableMTLError, match="exists already: choose another path or pass --overwrite"):
        PredictionBagWriter(out, topics)
    with PredictionBagWriter(out, topics, overwrite=True) as writer:
        writer.write({"depth": np.ones((4, 4), np.float32)}, _header(0), T0)
        writer.write({"depth": np.ones((4, 4), np.float32)}, _header(1), T0 + 1)
    assert len(read_bag(out)["/stablemtl/depth/relative"]) == 2
    with pytest.raises(StableMTLError, match="unknown bag storage `zip`: choose from mcap, sqlite3"):
        PredictionBagWriter(tmp_path / "other", topics, storage="zip")


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory) -> Path:
    """A small real single-stream ONNX artifact directory (all 7 tasks)."""
    return ToyModel().write(tmp_path_factory.mktemp("toy_single"), Mode.SINGLE)


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_process_bag_round_trip_equals_the_runtime_frame_by_frame(tmp_path, artifacts, storage):
    frames = photo_frames(4)
    stamps = write_input_bag(tmp_path / "in", frames, encoding="bgr8")
    with Runtime.from_artifacts(artifacts, tasks="all") as rt:
        summary = process_bag(tmp_path / "in", tmp_path / "out", rt, topic="/camera/image_raw", storage=storage,
                              copy_input=True)
    with Runtime.from_artifacts(artifacts, tasks="all") as direct:
        expected = [direct.infer(f) for f in frames]  # every frame, in order: nothing dropped offline

    assert summary.frames == 4 and summary.input_topic == "/camera/image_raw"
    assert list(summary.skipped.values()) == [1]
    bag = read_bag(tmp_path / "out")
    assert [s for s, _ in bag["/camera/image_raw"]] == stamps  # the processed input messages, copied
    for t in output_topics("all"):
        msgs = bag[f"/stablemtl/{t.name}"]
        indices = [i for i in range(4) if t.task in expected[i].predictions]
        assert summary.messages[f"/stablemtl/{t.name}"] == len(msgs) == len(indices)
        assert [s for s, _ in msgs] == [stamps[i] for i in indices], t.name  # bag timestamps preserved
        for (_, msg), i in zip(msgs, indices):
            assert msg.encoding == t.encoding.value
            assert (msg.header.stamp.sec, msg.header.stamp.nanosec) == (_header(i).stamp.sec, _header(i).stamp.nanosec)
            value, want = image_to_numpy(msg), t.convert(expected[i].predictions[t.task].value)
            assert value.shape == want.shape and value.shape[:2] == frames[i].shape[:2]
            if value.dtype == np.float32:
                np.testing.assert_allclose(value, want, atol=1e-5, err_msg=t.name)
            else:
                assert np.mean(value != want) < 1e-3, t.name
    assert len(bag["/stablemtl/optical_flow"]) == 3  # no flow on the first frame


def test_rates_write_each_prediction_once_with_its_own_frame(tmp_path, artifacts):
    frames = photo_frames(5)
    stamps = write_input_bag(tmp_path / "in", frames, extra=False)
    with Runtime.from_artifacts(artifacts, tasks="depth,semantic", rates={"semantic": 2}) as rt:
        process_bag(tmp_path / "in", tmp_path / "out", rt, options=OutputOptions(semantic_color=False))
    bag = read_bag(tmp_path / "out")
    assert [s for s, _ in bag["/stablemtl/depth/relative"]] == stamps
    assert [s for s, _ in bag["/stablemtl/semantic"]] == stamps[::2]
    assert set(bag) == {"/stablemtl/depth/relative", "/stablemtl/semantic"}


def test_command_line(tmp_path, artifacts, capsys):
    write_input_bag(tmp_path / "in", photo_frames(2), extra=False)
    args = [str(tmp_path / "in"), str(tmp_path / "out"), "--artifacts", str(artifacts), "--tasks", "depth,normal",
            "--debug", "--storage", "sqlite3", "--prefix", "/pred"]
    assert bag_main(args) == 0
    out = capsys.readouterr().out
    assert "/pred/depth/relative  2" in out and "/pred/debug/normal" in out and "2 frames of /camera/image_raw" in out
    assert set(read_bag(tmp_path / "out")) == {"/pred/normal", "/pred/debug/normal", "/pred/depth/relative",
                                                "/pred/debug/depth"}

    assert bag_main(args) == 1  # the output exists
    assert capsys.readouterr().err.startswith("error: output bag")
    assert bag_main([str(tmp_path / "none"), str(tmp_path / "o2"), "--artifacts", str(artifacts)]) == 1
    assert "is not a ROS 2 bag" in capsys.readouterr().err
    assert bag_main(args[:2] + ["--artifacts", str(tmp_path / "nothing"), "--overwrite"]) == 1
    assert "artifact directory" in capsys.readouterr().err
    assert bag_main(args[:4] + ["--tasks", "depth", "--rates", "depth=2", "--overwrite"]) == 1
    assert "must read task:N" in capsys.readouterr().err
    assert not (tmp_path / "o2").exists()


def test_the_documented_python_example_runs(tmp_path, artifacts, monkeypatch, capsys):
    write_input_bag(tmp_path / "recording", photo_frames(2), topic="/camera/color/image_raw", extra=False)
    text = (Path(__file__).resolve().parents[3] / "docs" / "ros2.md").read_text()
    block = next(b.split("```", 1)[0] for b in text.split("```python\n")[1:] if "process_bag(" in b)
    monkeypatch.chdir(tmp_path)
    exec(block.replace('"artifacts/small"', repr(str(artifacts))), {})  # noqa: S102 - our own documentation
    assert capsys.readouterr().out.startswith("2 {")
    assert set(read_bag(tmp_path / "predictions")) == {f"/stablemtl/{t.name}" for t in output_topics("all")}
