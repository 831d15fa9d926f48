"""numpy <-> sensor_msgs/Image conversions on real rclpy and rosbags messages and their wire formats."""

from __future__ import annotations

import importlib.util

import cv2
import numpy as np
import pytest
from skimage import data as skdata

from stablemtl_edge.errors import StableMTLError
from stablemtl_edge.runtime.preprocess import Layout
from stablemtl_edge.runtime.ros.image_conversions import (
    ImageEncoding,
    compressed_to_numpy,
    frame_from_compressed,
    frame_from_image,
    image_to_numpy,
    numpy_to_image,
)

HAVE_RCLPY = all(importlib.util.find_spec(m) is not None for m in ("rclpy", "sensor_msgs"))
HAVE_ROSBAGS = importlib.util.find_spec("rosbags") is not None
INSTALL = 'pip install "stablemtl-edge[ros]"'
needs_rclpy = pytest.mark.skipif(not HAVE_RCLPY, reason=f"rclpy/sensor_msgs not installed: {INSTALL}")
needs_rosbags = pytest.mark.skipif(not HAVE_ROSBAGS, reason=f"rosbags not installed: {INSTALL}")


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    """A real photograph, small: (64, 48, 3) uint8 RGB."""
    return np.ascontiguousarray(skdata.astronaut()[::8, ::10][:64, :48])


def _arrays(photo: np.ndarray) -> dict[ImageEncoding, np.ndarray]:
    """One array per encoding, derived from the photograph so values are realistic and distinct."""
    rgb = photo
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    f = rgb.astype(np.float32) / 255.0
    return {
        ImageEncoding.RGB8: rgb,
        ImageEncoding.BGR8: rgb[..., ::-1],
        ImageEncoding.RGBA8: np.dstack([rgb, grey]),
        ImageEncoding.BGRA8: np.dstack([rgb[..., ::-1], 255 - grey]),
        ImageEncoding.MONO8: grey,
        ImageEncoding.MONO16: grey.astype(np.uint16) * 257,
        ImageEncoding.TYPE_16UC1: grey.astype(np.uint16) * 13 + 7,
        ImageEncoding.TYPE_32FC1: np.where(grey > 200, np.nan, f[..., 0] * 3.5).astype(np.float32),
        ImageEncoding.TYPE_32FC2: f[..., :2] * 2 - 1,
        ImageEncoding.TYPE_32FC3: f - 0.25,
    }


def _message_types(flavour: str):
    """(Image, CompressedImage, make_header, serialize, deserialize) for one message flavour."""
    if flavour == "rclpy":
        if not HAVE_RCLPY:
            pytest.skip(f"rclpy/sensor_msgs not installed: {INSTALL}")
        from builtin_interfaces.msg import Time
        from rclpy.serialization import deserialize_message, serialize_message
        from sensor_msgs.msg import CompressedImage, Image
        from std_msgs.msg import Header

        return (
            Image,
            CompressedImage,
            lambda sec, nsec, frame: Header(stamp=Time(sec=sec, nanosec=nsec), frame_id=frame),
            serialize_message,
            lambda raw, cls: deserialize_message(raw, cls),
        )
    if not HAVE_ROSBAGS:
        pytest.skip(f"rosbags not installed: {INSTALL}")
    from rosbags.typesys import Stores, get_typestore

    ts = get_typestore(Stores.ROS2_JAZZY)
    Image = ts.types["sensor_msgs/msg/Image"]
    Header = ts.types["std_msgs/msg/Header"]
    Time = ts.types["builtin_interfaces/msg/Time"]
    return (
        Image,
        ts.types["sensor_msgs/msg/CompressedImage"],
        lambda sec, nsec, frame: Header(stamp=Time(sec=sec, nanosec=nsec), frame_id=frame),
        lambda msg: ts.serialize_cdr(msg, msg.__msgtype__),
        lambda raw, cls: ts.deserialize_cdr(raw, cls.__msgtype__),
    )


def _assert_same(got: np.ndarray, want: np.ndarray) -> None:
    assert got.shape == want.shape
    assert got.dtype == want.dtype
    np.testing.assert_array_equal(got, want)  # NaN positions must match too


@pytest.mark.parametrize("flavour", ["rclpy", "rosbags"])
@pytest.mark.parametrize("encoding", list(ImageEncoding))
@pytest.mark.parametrize("bigendian", [False, True])
def test_round_trip_through_the_wire_format(flavour, encoding, bigendian, photo):
    Image, _, make_header, serialize, deserialize = _message_types(flavour)
    want = _arrays(photo)[encoding]
    msg = numpy_to_image(want, encoding, Image, make_header(12, 345, "cam"), bigendian=bigendian)
    assert (msg.height, msg.width, msg.encoding) == (want.shape[0], want.shape[1], encoding.value)
    assert msg.step == want.shape[1] * encoding.channels * encoding.dtype.itemsize
    assert msg.is_bigendian == int(bigendian)
    back = deserialize(serialize(msg), Image)
    assert (back.header.stamp.sec, back.header.stamp.nanosec, back.header.frame_id) == (12, 345, "cam")
    _assert_same(image_to_numpy(back), want.astype(encoding.dtype))


@needs_rclpy
@needs_rosbags
def test_rclpy_wire_bytes_read_by_rosbags(photo):
    """A message serialised by rclpy deserialises in rosbags and converts to the same pixels."""
    from rosbags.typesys import Stores, get_typestore

    Image, _, make_header, serialize, _ = _message_types("rclpy")
    want = _arrays(photo)[ImageEncoding.TYPE_32FC3]
    raw = serialize(numpy_to_image(want, "32FC3", Image, make_header(1, 2, "x")))
    other = get_typestore(Stores.ROS2_JAZZY).deserialize_cdr(raw, "sensor_msgs/msg/Image")
    _assert_same(image_to_numpy(other), want)


class _Fields:
    """A bare message with the sensor_msgs/Image fields, to hand-craft layouts a publisher may send."""

    def __init__(self, **kw):
        self.__dict__.update(kw)


@pytest.mark.parametrize("encoding", list(ImageEncoding))
@pytest.mark.parametrize("bigendian", [False, True])
def test_padded_rows_and_byte_order(encoding, bigendian, photo):
    """Rows padded to a 64-byte step with junk after each row, in either byte order, read back exactly."""
    want = _arrays(photo)[encoding].astype(encoding.dtype)
    h, w = want.shape[:2]
    stored = encoding.dtype.newbyteorder(">" if bigendian else "<")
    row = np.ascontiguousarray(want.reshape(h, -1), dtype=stored).view(np.uint8)
    step = (row.shape[1] // 64 + 1) * 64
    buf = np.full((h, step), 0xAB, dtype=np.uint8)
    buf[:, : row.shape[1]] = row
    msg = _Fields(height=h, width=w, encoding=encoding.value, is_bigendian=int(bigendian), step=step,
                  data=buf.tobytes())
    got = image_to_numpy(msg)
    _assert_same(got, want)
    assert got.flags.c_contiguous


def test_big_endian_known_values():
    msg = _Fields(height=1, width=2, encoding="mono16", is_bigendian=1, step=4, data=bytes([0x01, 0x02, 0xFF, 0x00]))
    np.testing.assert_array_equal(image_to_numpy(msg), [[0x0102, 0xFF00]])
    msg = _Fields(height=1, width=1, encoding="32FC1", is_bigendian=1, step=4, data=bytes([0x3F, 0x80, 0, 0]))
    assert image_to_numpy(msg)[0, 0] == 1.0


@pytest.mark.parametrize("flavour", ["rclpy", "rosbags"])
def test_compressed_png_is_lossless_and_jpeg_close(flavour, photo):
    _, CompressedImage, make_header, serialize, deserialize = _message_types(flavour)
    bgr = np.ascontiguousarray(photo[..., ::-1])
    for fmt, ext, mean_tol in (("png", ".png", 0.0), ("jpeg", ".jpg", 6.0)):
        ok, enc = cv2.imencode(ext, bgr)
        assert ok
        data = enc.reshape(-1) if flavour == "rosbags" else enc.tobytes()
        msg = CompressedImage(header=make_header(3, 4, "cam"), format=fmt, data=data)
        back = deserialize(serialize(msg), CompressedImage)
        pixels, layout = compressed_to_numpy(back)
        assert layout is Layout.BGR and pixels.shape == bgr.shape
        err = np.abs(pixels.astype(int) - bgr.astype(int))
        assert err.mean() <= mean_tol
        frame, layout = frame_from_compressed(back)
        assert frame.dtype == np.uint8 and layout is Layout.BGR


def test_compressed_grey_and_16bit_png(photo):
    grey16 = cv2.cvtColor(photo, cv2.COLOR_RGB2GRAY).astype(np.uint16) * 257
    ok, enc = cv2.imencode(".png", grey16)
    msg = _Fields(format="png", data=enc.tobytes())
    pixels, layout = compressed_to_numpy(msg)
    assert layout is Layout.GRAY
    _assert_same(pixels, grey16)
    frame, _ = frame_from_compressed(msg)
    _assert_same(frame, (grey16 >> 8).astype(np.uint8))


def test_compressed_garbage_is_a_clear_error():
    with pytest.raises(StableMTLError, match="could not decode a compressed image of format `jpeg`"):
        compressed_to_numpy(_Fields(format="jpeg", data=b"not an image"))


@pytest.mark.parametrize(
    "encoding, layout",
    [("rgb8", Layout.RGB), ("bgr8", Layout.BGR), ("rgba8", Layout.RGBA),
     ("bgra8", Layout.BGRA), ("mono8", Layout.GRAY), ("mono16", Layout.GRAY)],
)
def test_camera_frames_for_the_runtime(encoding, layout, photo):
    arr = _arrays(photo)[ImageEncoding(encoding)]
    msg = numpy_to_image(arr, encoding, _Fields, None)
    frame, got_layout = frame_from_image(msg)
    assert got_layout is layout and frame.dtype == np.uint8
    want = (arr >> 8).astype(np.uint8) if arr.dtype == np.uint16 else arr
    _assert_same(frame, want)


@pytest.mark.parametrize("encoding", ["32FC1", "16UC1", "32FC3"])
def test_non_camera_encodings_are_refused_as_frames(encoding, photo):
    msg = numpy_to_image(_arrays(photo)[ImageEncoding(encoding)], encoding, _Fields, None)
    with pytest.raises(StableMTLError, match=f"`{encoding}` is not a camera image encoding"):
        frame_from_image(msg)


def test_user_errors_are_one_line_and_name_the_fix(photo):
    with pytest.raises(StableMTLError, match="unsupported image encoding `bayer_rggb8`: supported encodings are rgb8"):
        image_to_numpy(_Fields(height=1, width=1, encoding="bayer_rggb8", is_bigendian=0, step=1, data=b"\0"))
    with pytest.raises(StableMTLError, match="truncated"):
        image_to_numpy(_Fields(height=2, width=2, encoding="rgb8", is_bigendian=0, step=6, data=bytes(11)))
    with pytest.raises(StableMTLError, match="shorter than one row"):
        image_to_numpy(_Fields(height=1, width=2, encoding="rgb8", is_bigendian=0, step=5, data=bytes(6)))
    with pytest.raises(StableMTLError, match=r"need an array of shape \(H, W, 3\)"):
        numpy_to_image(photo[..., 0], "rgb8", _Fields, None)
    with pytest.raises(StableMTLError, match="cannot store a float32 array as `rgb8`"):
        numpy_to_image(photo.astype(np.float32), "rgb8", _Fields, None)
    # The 32F family is matched case-insensitively, as some drivers spell it.
    assert ImageEncoding.parse("32fc1") is ImageEncoding.TYPE_32FC1
