"""Frame sources on real files: videos written by cv2.VideoWriter, image folders, ROS 2 bags."""

import shutil

import cv2
import numpy as np
import pytest

from stablemtl_edge.errors import StableMTLError
from stablemtl_edge.runtime.sources import (
    CameraSource,
    ImageFolderSource,
    PatternSource,
    RosBagSource,
    VideoFileSource,
    open_source,
)


def _write_video(path, frames, fourcc="MJPG", fps=10.0):
    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (w, h))
    assert writer.isOpened()
    for f in frames:
        writer.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    writer.release()
    return path


def _pattern_frames(n, h=96, w=128):
    with PatternSource(h, w, frames=n) as src:
        return [f.image for f in src]


@pytest.mark.parametrize("fourcc,ext", [("MJPG", ".avi"), ("mp4v", ".mp4")])
def test_video_file_round_trip(tmp_path, fourcc, ext):
    frames = _pattern_frames(6)
    frames[0] = np.zeros_like(frames[0])
    frames[0][..., 0] = 255  # pure red: RGB order must survive OpenCV's BGR
    path = _write_video(tmp_path / f"clip{ext}", frames, fourcc)
    with VideoFileSource(path) as src:
        assert src.nominal_fps == pytest.approx(10.0) and src.frame_count == 6
        got = list(src)
    assert [f.index for f in got] == list(range(6))
    for f, ref in zip(got, frames):
        assert f.image.dtype == np.uint8 and f.image.shape == ref.shape and f.image.flags.c_contiguous
        assert np.abs(f.image.astype(int) - ref).mean() < 12
    assert got[0].image[..., 0].mean() > 200 and got[0].image[..., 2].mean() < 50
    assert got[1].stamp_ns > got[0].stamp_ns


def test_video_loop_restarts(tmp_path):
    path = _write_video(tmp_path / "clip.avi", _pattern_frames(3))
    with VideoFileSource(path, loop=True) as src:
        got = [src.read() for _ in range(7)]
    np.testing.assert_array_equal(got[3].image, got[0].image)
    assert got[6].index == 6


def test_video_errors(tmp_path):
    with pytest.raises(StableMTLError, match="does not exist"):
        VideoFileSource(tmp_path / "missing.mp4").open()
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video at all" * 10)
    with pytest.raises(StableMTLError, match="cannot decode"):
        VideoFileSource(bad).open()


def test_image_folder_odd_size_layouts_and_natural_order(tmp_path):
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (375, 1242, 3), dtype=np.uint8)
    cv2.imwrite(str(tmp_path / "frame_10.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    grey = rng.integers(0, 256, (375, 1242), dtype=np.uint8)
    cv2.imwrite(str(tmp_path / "frame_2.png"), grey)
    rgba = np.dstack([rgb, np.full(rgb.shape[:2], 7, np.uint8)])
    cv2.imwrite(str(tmp_path / "frame_1.png"), cv2.cvtColor(rgba, cv2.COLOR_RGBA2BGRA))
    deep = (rgb.astype(np.uint16) * 257)
    cv2.imwrite(str(tmp_path / "frame_3.png"), cv2.cvtColor(deep, cv2.COLOR_RGB2BGR))
    (tmp_path / "notes.txt").write_text("not an image")
    got = list(ImageFolderSource(tmp_path))
    assert [f.name for f in got] == ["frame_1.png", "frame_2.png", "frame_3.png", "frame_10.png"]
    for f in got:
        assert f.image.shape == (375, 1242, 3) and f.image.dtype == np.uint8
    np.testing.assert_array_equal(got[0].image, rgb)
    np.testing.assert_array_equal(got[1].image, np.repeat(grey[..., None], 3, axis=2))
    np.testing.assert_array_equal(got[2].image, rgb)
    np.testing.assert_array_equal(got[3].image, rgb)


def test_image_folder_errors(tmp_path):
    with pytest.raises(StableMTLError, match="has no images"):
        ImageFolderSource(tmp_path).open()
    (tmp_path / "broken.png").write_bytes(b"\x89PNG truncated")
    with pytest.raises(StableMTLError, match="broken.png"):
        ImageFolderSource(tmp_path, strict=True).read()
    lenient = ImageFolderSource(tmp_path)  # the default skips it: the only image, so the folder just ends
    assert lenient.read() is None and lenient.skipped == {"the file is damaged or not an image": 1}


def test_pattern_moves_by_its_motion():
    with PatternSource(37, 53, frames=3, motion=(2, 1)) as src:
        a, b, c = list(src)
    np.testing.assert_array_equal(b.image, np.roll(a.image, (1, 2), axis=(0, 1)))
    assert c.index == 2 and src.read() is None


def test_camera_open_failure_is_a_clear_error():
    with pytest.raises(StableMTLError, match="cannot open camera 97"):
        CameraSource(97, retries=0).open()


def test_camera_reconnects_then_ends_cleanly_when_the_device_is_gone(tmp_path):
    # A device path served by OpenCV's file backend: at its end the "camera" stops delivering, as an
    # unplugged one does; reopening succeeds while the device exists and fails once it is gone.
    path = _write_video(tmp_path / "cam.avi", _pattern_frames(3))
    cam = CameraSource(str(path), retries=2, retry_delay_s=0.0)
    with cam:
        first = [cam.read() for _ in range(3)]
        again = cam.read()  # end of the "device": disconnect, reconnect, next frame
        assert cam.disconnects == 1
        np.testing.assert_array_equal(again.image, first[0].image)
        assert again.index == 3
        shutil.move(path, tmp_path / "unplugged.avi")
        while cam.read() is not None:
            pass
        assert cam.disconnects == 2


def test_camera_that_reopens_without_frames_counts_as_failed_attempts(tmp_path):
    # A device that opens every time but never delivers must not be retried forever.
    path = _write_video(tmp_path / "cam.avi", _pattern_frames(1))
    cam = CameraSource(str(path), retries=3, retry_delay_s=0.0)
    with cam:
        assert cam.read() is not None
        assert cam.read() is not None  # reopened after the end of the one-frame device
        empty = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (128, 96))
        empty.release()  # a valid video without frames: it opens every time but never delivers
        assert cv2.VideoCapture(str(path)).isOpened()
        assert cam.read() is None
        assert cam.disconnects == 2


def test_camera_interrupt_ends_a_reconnect_wait(tmp_path):
    path = _write_video(tmp_path / "cam.avi", _pattern_frames(1))
    cam = CameraSource(str(path), retries=1000, retry_delay_s=30.0)
    with cam:
        assert cam.read() is not None
        cam.interrupt()
        assert cam.read() is None


def _write_bag(path, frames, topic="/camera/image", compressed_topic=None):
    from rosbags.rosbag2 import Writer
    from rosbags.typesys import Stores, get_typestore

    from stablemtl_edge.runtime.ros.image_conversions import numpy_to_image

    ts = get_typestore(Stores.ROS2_JAZZY)
    Image = ts.types["sensor_msgs/msg/Image"]
    Compressed = ts.types["sensor_msgs/msg/CompressedImage"]
    Header = ts.types["std_msgs/msg/Header"]
    Time = ts.types["builtin_interfaces/msg/Time"]
    with Writer(path, version=9) as writer:
        conn = writer.add_connection(topic, Image.__msgtype__, typestore=ts)
        cconn = None
        if compressed_topic:
            cconn = writer.add_connection(compressed_topic, Compressed.__msgtype__, typestore=ts)
        for i, f in enumerate(frames):
            header = Header(stamp=Time(sec=100 + i, nanosec=5), frame_id="cam")
            bgr = np.ascontiguousarray(f[..., ::-1])
            msg = numpy_to_image(bgr, "bgr8", Image, header=header)
            t = (100 + i) * 1_000_000_000 + 5
            writer.write(conn, t, ts.serialize_cdr(msg, Image.__msgtype__))
            if cconn is not None:
                ok, png = cv2.imencode(".png", bgr)
                cmsg = Compressed(header=header, format="png", data=png.reshape(-1))
                writer.write(cconn, t, ts.serialize_cdr(cmsg, Compressed.__msgtype__))


def test_rosbag_source_reads_image_and_compressed_topics(tmp_path):
    pytest.importorskip("rosbags", reason="ROS 2 bag support needs the `ros` extra (rosbags)")
    frames = _pattern_frames(3, 37, 53)
    bag = tmp_path / "bag"
    _write_bag(bag, frames, compressed_topic="/camera/image/compressed")
    with pytest.raises(StableMTLError, match="2 image topics"):
        RosBagSource(bag).open()
    for topic in ("/camera/image", "/camera/image/compressed"):
        got = list(RosBagSource(bag, topic=topic))
        assert len(got) == 3
        for i, (f, ref) in enumerate(zip(got, frames)):
            np.testing.assert_array_equal(f.image, ref)  # bgr8 and PNG are lossless
            assert f.stamp_ns == (100 + i) * 1_000_000_000 + 5 and f.name == topic
    with RosBagSource(bag, topic="/camera/image", loop=True) as src:
        looped = [src.read() for _ in range(5)]
    np.testing.assert_array_equal(looped[3].image, looped[0].image)
    assert looped[3].stamp_ns == looped[0].stamp_ns and looped[4].index == 4
    with pytest.raises(StableMTLError, match="no image topic `/other`"):
        RosBagSource(bag, topic="/other").open()
    assert isinstance(open_source(str(bag), topic="/camera/image"), RosBagSource)


def test_open_source_dispatch(tmp_path):
    assert isinstance(open_source("0"), CameraSource)
    assert isinstance(open_source("rtsp://example.invalid/stream"), CameraSource)
    p = open_source("pattern:375x1242:4")
    assert isinstance(p, PatternSource) and (p.height, p.width, p.frames) == (375, 1242, 4)
    assert isinstance(open_source(str(tmp_path)), ImageFolderSource)
    video = _write_video(tmp_path / "a.mp4", _pattern_frames(1), "mp4v")
    assert isinstance(open_source(str(video), loop=True), VideoFileSource)
    (tmp_path / "x.txt").write_text("x")
    with pytest.raises(StableMTLError, match="neither a video"):
        open_source(str(tmp_path / "x.txt"))
    with pytest.raises(StableMTLError, match="not found"):
        open_source(str(tmp_path / "nothing"))
