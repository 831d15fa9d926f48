"""Calibration frames: every source kind, deterministic stratified sampling, the record, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from skimage import data as skdata

from stablemtl_edge.calibration.data import load_calibration_set, stratified_starts
from stablemtl_edge.errors import StableMTLError
from stablemtl_edge.runtime.preprocess import Letterbox

RES = (64, 128)


def photo_frames(n: int, size: tuple[int, int] = (60, 80)) -> list[np.ndarray]:
    """``n`` RGB frames of a real photograph panning right by 3 pixels per frame (distinct contents)."""
    h, w = size
    img = cv2.resize(skdata.astronaut(), (200, 150), interpolation=cv2.INTER_AREA)
    return [np.ascontiguousarray(img[30 : 30 + h, 3 * i : 3 * i + w]) for i in range(n)]


def write_folder(path: Path, frames: list[np.ndarray]) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    for i, f in enumerate(frames):
        cv2.imwrite(str(path / f"frame_{i}.png"), f[..., ::-1])  # natural order: frame_2 before frame_10
    return path


def test_stratified_starts_are_seeded_and_spread():
    starts = stratified_starts(101, 10, seed=3)
    assert starts == stratified_starts(101, 10, seed=3)
    assert starts != stratified_starts(101, 10, seed=4)
    for k, s in enumerate(starts):  # one start in each tenth of the 100 possible starts
        assert 10 * k <= s < 10 * (k + 1)
    assert stratified_starts(5, 4, seed=0) == [0, 1, 2, 3]  # every pair when exactly N + 1 frames


def test_image_folder_pairs_are_consecutive_letterboxed_and_recorded(tmp_path):
    frames = photo_frames(12)
    folder = write_folder(tmp_path / "imgs", frames)
    calib = load_calibration_set(folder, 4, RES, seed=1)
    assert len(calib) == 4
    box = Letterbox.fit(frames[0].shape[:2], RES)
    for pair in calib:
        assert pair.frame1.shape == (*RES, 3) and pair.frame1.dtype == np.uint8
        np.testing.assert_array_equal(pair.frame1, box.apply(frames[pair.index]))  # exactly the runtime's preprocessing
        np.testing.assert_array_equal(pair.frame2, box.apply(frames[pair.index + 1]))
        assert pair.name == f"frame_{pair.index}.png"
    rec = calib.record
    assert rec.source["frames"] == 12 and rec.size == 4 and rec.seed == 1 and rec.resolution == RES
    assert [p.index for p in rec.pairs] == [p.index for p in calib]
    assert all(len(p.sha256) == 2 for p in rec.pairs)
    again = load_calibration_set(folder, 4, RES, seed=1)
    assert again.digest == calib.digest
    saved = json.loads(calib.save(tmp_path / "calib.json").read_text())
    assert saved["digest"] == calib.digest


def test_changing_a_frame_changes_the_digest(tmp_path):
    frames = photo_frames(6)
    folder = write_folder(tmp_path / "imgs", frames)
    before = load_calibration_set(folder, 5, RES)
    cv2.imwrite(str(folder / "frame_3.png"), np.zeros_like(frames[3]))
    assert load_calibration_set(folder, 5, RES).digest != before.digest


def test_video_file_pairs(tmp_path):
    frames = photo_frames(9)
    path = tmp_path / "clip.avi"
    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (w, h))
    for f in frames:
        writer.write(f[..., ::-1])
    writer.release()
    calib = load_calibration_set(path, 3, RES, seed=0)
    box = Letterbox.fit((h, w), RES)
    for pair in calib:  # MJPG is lossy: each frame is closest to the frame it was written from
        errs = [np.abs(pair.frame2.astype(int) - box.apply(f).astype(int)).mean() for f in frames]
        assert int(np.argmin(errs)) == pair.index + 1
    assert calib.record.source["kind"] == "videofile"


def test_ros_bag_pairs(tmp_path):
    pytest.importorskip("rosbags", reason='rosbags not installed: pip install "stablemtl-edge[ros]"')
    from rosbags.rosbag2 import Writer
    from rosbags.typesys.stores.ros2_jazzy import builtin_interfaces__msg__Time as Time
    from rosbags.typesys.stores.ros2_jazzy import sensor_msgs__msg__Image as Image
    from rosbags.typesys.stores.ros2_jazzy import std_msgs__msg__Header as Header

    from stablemtl_edge.runtime.ros.bag import IMAGE_TYPE, TYPESTORE
    from stablemtl_edge.runtime.ros.image_conversions import numpy_to_image

    frames = photo_frames(7)
    with Writer(tmp_path / "bag", version=9) as writer:
        conn = writer.add_connection("/cam/image", IMAGE_TYPE, typestore=TYPESTORE)
        for i, f in enumerate(frames):
            msg = numpy_to_image(f, "rgb8", Image, Header(stamp=Time(sec=i, nanosec=0), frame_id="cam"))
            writer.write(conn, i * 10**9, TYPESTORE.serialize_cdr(msg, IMAGE_TYPE))
    calib = load_calibration_set(tmp_path / "bag", 3, RES)
    box = Letterbox.fit(frames[0].shape[:2], RES)
    for pair in calib:
        np.testing.assert_array_equal(pair.frame2, box.apply(frames[pair.index + 1]))
    assert calib.record.source["topic"] is None and calib.record.source["frames"] == 7


def test_procedural_pairs_cover_the_domains():
    calib = load_calibration_set("procedural", 4, RES, seed=0)
    assert len(calib) == 4
    names = [p.name for p in calib]
    assert sum("indoor" in n for n in names) == 2 and sum("driving" in n for n in names) == 1
    assert all(p.frame1.shape == (*RES, 3) for p in calib)
    assert any(not np.array_equal(p.frame1, p.frame2) for p in calib)  # the second frame really moves
    assert load_calibration_set("procedural", 4, RES, seed=0).digest == calib.digest


def test_empty_folder_is_a_clear_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(StableMTLError, match="has no images"):
        load_calibration_set(tmp_path / "empty", 2, RES)


def test_unreadable_video_is_a_clear_error(tmp_path):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"this is not a video" * 100)
    with pytest.raises(StableMTLError, match="cannot decode|no frames") as exc:
        load_calibration_set(bad, 2, RES)
    assert "\n" not in str(exc.value)


def test_fewer_frames_than_asked_is_a_clear_error(tmp_path):
    folder = write_folder(tmp_path / "imgs", photo_frames(4))
    with pytest.raises(StableMTLError, match=r"4 frame\(s\), i.e. 3 consecutive pair\(s\), but 5 pairs.*--calib-size"):
        load_calibration_set(folder, 5, RES)


def test_missing_path_camera_and_bad_size_are_refused(tmp_path):
    with pytest.raises(StableMTLError, match="not found"):
        load_calibration_set(tmp_path / "nowhere", 2, RES)
    with pytest.raises(StableMTLError, match="live camera"):
        load_calibration_set("0", 2, RES)
    with pytest.raises(StableMTLError, match=">= 1"):
        load_calibration_set("procedural", 0, RES)
