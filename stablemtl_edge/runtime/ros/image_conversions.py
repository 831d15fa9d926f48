"""numpy <-> ``sensor_msgs/Image`` and ``sensor_msgs/CompressedImage`` (cv_bridge is not on PyPI).

The functions read and write message *fields* (``height``, ``width``, ``encoding``, ``is_bigendian``,
``step``, ``data``; ``format`` for compressed images), so the same code serves rclpy messages in the live
node and ``rosbags`` messages in bag processing and the streaming bag source. Neither rclpy nor rosbags is
imported here.

Conventions follow REP 118 / ``sensor_msgs/image_encodings.hpp``: ``step`` is the row length in bytes and
may include padding, multi-byte pixels are stored in the byte order given by ``is_bigendian``, and the
``data`` buffer holds ``step * height`` bytes.
"""

from __future__ import annotations

import array
import sys
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from ...errors import StableMTLError
from ..preprocess import Layout
from ...records import KeyEnum

__all__ = [
    "ImageEncoding",
    "image_to_numpy",
    "numpy_to_image",
    "compressed_to_numpy",
    "frame_from_image",
    "frame_from_compressed",
    "is_rosbags_type",
]


@dataclass(frozen=True)
class _PixelFormat:
    dtype: np.dtype
    channels: int


class ImageEncoding(KeyEnum):
    """The ``encoding`` strings this module converts; the value is the ROS spelling."""

    RGB8 = "rgb8"
    BGR8 = "bgr8"
    RGBA8 = "rgba8"
    BGRA8 = "bgra8"
    MONO8 = "mono8"
    MONO16 = "mono16"
    TYPE_16UC1 = "16UC1"
    TYPE_32FC1 = "32FC1"
    TYPE_32FC2 = "32FC2"
    TYPE_32FC3 = "32FC3"

    @classmethod
    def parse(cls, value: str | ImageEncoding) -> ImageEncoding:
        """Look an encoding up by its ROS spelling (the ``32FC1`` family is case-insensitive)."""
        if isinstance(value, cls):
            return value
        text = str(value).strip()
        for member in cls:
            if member.value == text or member.value.lower() == text.lower():
                return member
        valid = ", ".join(m.value for m in cls)
        raise StableMTLError(f"unsupported image encoding `{value}`: supported encodings are {valid}")

    @property
    def dtype(self) -> np.dtype:
        """Native-byte-order numpy dtype of one channel."""
        return _FORMATS[self].dtype

    @property
    def channels(self) -> int:
        return _FORMATS[self].channels


_U8, _U16, _F32 = np.dtype(np.uint8), np.dtype(np.uint16), np.dtype(np.float32)
_FORMATS: dict[ImageEncoding, _PixelFormat] = {
    ImageEncoding.RGB8: _PixelFormat(_U8, 3),
    ImageEncoding.BGR8: _PixelFormat(_U8, 3),
    ImageEncoding.RGBA8: _PixelFormat(_U8, 4),
    ImageEncoding.BGRA8: _PixelFormat(_U8, 4),
    ImageEncoding.MONO8: _PixelFormat(_U8, 1),
    ImageEncoding.MONO16: _PixelFormat(_U16, 1),
    ImageEncoding.TYPE_16UC1: _PixelFormat(_U16, 1),
    ImageEncoding.TYPE_32FC1: _PixelFormat(_F32, 1),
    ImageEncoding.TYPE_32FC2: _PixelFormat(_F32, 2),
    ImageEncoding.TYPE_32FC3: _PixelFormat(_F32, 3),
}


_CAMERA_LAYOUTS: dict[ImageEncoding, Layout] = {
    ImageEncoding.RGB8: Layout.RGB,
    ImageEncoding.BGR8: Layout.BGR,
    ImageEncoding.RGBA8: Layout.RGBA,
    ImageEncoding.BGRA8: Layout.BGRA,
    ImageEncoding.MONO8: Layout.GRAY,
    ImageEncoding.MONO16: Layout.GRAY,
}


def _buffer(data: Any) -> np.ndarray:
    """The message's byte buffer as a flat uint8 array, without copying where the type allows.

    rclpy gives ``array.array('B')``, rosbags a numpy uint8 array; bytes and lists also work.
    """
    if isinstance(data, np.ndarray):
        return np.ascontiguousarray(data).reshape(-1).view(np.uint8)
    if isinstance(data, (bytes, bytearray, memoryview, array.array)):
        return np.frombuffer(data, dtype=np.uint8)
    return np.asarray(data, dtype=np.uint8).reshape(-1)


def image_to_numpy(msg: Any) -> np.ndarray:
    """Read a ``sensor_msgs/Image`` into an array of its native pixel type.

    Row padding (``step`` larger than the pixel row) is skipped and big-endian data is converted to the
    machine's byte order. The result may share memory with ``msg.data`` when no conversion was needed:
    copy it before writing to it.

    Args:
        msg: an rclpy or rosbags ``sensor_msgs/Image`` (anything with its fields).

    Returns:
        ``(H, W)`` for one-channel encodings, else ``(H, W, C)``; uint8, uint16 or float32 as the encoding says.

    Raises:
        StableMTLError: unsupported encoding, or ``step`` / ``data`` inconsistent with the image size.
    """
    enc = ImageEncoding.parse(msg.encoding)
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    stored = enc.dtype.newbyteorder(">" if msg.is_bigendian else "<")
    row_bytes = width * enc.channels * stored.itemsize
    if step < row_bytes:
        raise StableMTLError(
            f"image step {step} is shorter than one row of {width} `{enc}` pixels ({row_bytes} bytes): "
            "the publisher filled the message wrongly"
        )
    buf = _buffer(msg.data)
    if buf.size < step * height:
        raise StableMTLError(
            f"image data holds {buf.size} bytes but {height} rows of step {step} need {step * height}: "
            "the message is truncated"
        )
    rows = buf[: step * height].reshape(height, step)[:, :row_bytes]
    if step != row_bytes:
        rows = np.ascontiguousarray(rows)  # drop the padding so the result is C-contiguous
    pixels = rows.view(stored).reshape(height, width, enc.channels)
    if not stored.isnative:
        pixels = pixels.astype(enc.dtype)
    return pixels[..., 0] if enc.channels == 1 else pixels


def is_rosbags_type(msg_type: type) -> bool:
    """True for message classes generated by ``rosbags`` (dataclasses carrying ``__msgtype__``)."""
    return hasattr(msg_type, "__msgtype__")


def _check_dtype(array_dtype: np.dtype, enc: ImageEncoding) -> None:
    target = enc.dtype
    if target.kind == "f":
        ok = array_dtype.kind in "fiu"
    else:
        ok = np.can_cast(array_dtype, target, casting="safe") or array_dtype == np.bool_
    if not ok:
        raise StableMTLError(
            f"cannot store a {array_dtype} array as `{enc}` ({target} pixels): convert it first "
            "(for example scale floats in [0, 1] to uint8 for rgb8)"
        )


def numpy_to_image(
    array_: np.ndarray,
    encoding: str | ImageEncoding,
    msg_type: type,
    header: Any,
    *,
    bigendian: bool = sys.byteorder == "big",
) -> Any:
    """Build a ``sensor_msgs/Image`` of class ``msg_type`` from an array (no row padding).

    Args:
        array_: ``(H, W)`` or ``(H, W, C)`` with C equal to the encoding's channel count. Float encodings
            take any real array (converted to float32); integer encodings take arrays that convert safely.
        encoding: target encoding.
        msg_type: ``sensor_msgs.msg.Image`` (rclpy) or a rosbags typestore's ``sensor_msgs__msg__Image``.
        header: the header to carry (the input frame's header, so stamp and frame_id are preserved).
        bigendian: byte order written for multi-byte pixels; defaults to the machine's.

    Raises:
        StableMTLError: the array's shape or dtype does not fit the encoding.
    """
    enc = ImageEncoding.parse(encoding)
    a = np.asarray(array_)
    if a.ndim == 2:
        a = a[..., None]
    if a.ndim != 3 or a.shape[2] != enc.channels:
        want = "(H, W)" if enc.channels == 1 else f"(H, W, {enc.channels})"
        raise StableMTLError(f"`{enc}` images need an array of shape {want}, got {np.shape(array_)}")
    _check_dtype(a.dtype, enc)
    stored = enc.dtype.newbyteorder(">" if bigendian else "<")
    raw = np.ascontiguousarray(a, dtype=stored).view(np.uint8).reshape(-1)
    height, width = a.shape[:2]
    if is_rosbags_type(msg_type):
        data: Any = raw
    else:  # rclpy checks every element of anything but array.array('B'); frombytes is one memcpy
        data = array.array("B")
        data.frombytes(memoryview(raw))
    return msg_type(
        header=header,
        height=height,
        width=width,
        encoding=enc.value,
        is_bigendian=int(bigendian),
        step=width * enc.channels * stored.itemsize,
        data=data,
    )


def compressed_to_numpy(msg: Any) -> tuple[np.ndarray, Layout]:
    """Decode a ``sensor_msgs/CompressedImage`` (JPEG, PNG, ... as OpenCV reads them).

    OpenCV decodes colour to BGR order, so the layout is returned with the pixels. 16-bit PNGs stay uint16.

    Returns:
        (pixels, layout): ``(H, W)`` grey, ``(H, W, 3)`` BGR or ``(H, W, 4)`` BGRA.

    Raises:
        StableMTLError: the bytes are not an image OpenCV can decode.
    """
    buf = _buffer(msg.data)
    pixels = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED) if buf.size else None
    if pixels is None:
        raise StableMTLError(
            f"could not decode a compressed image of format `{msg.format}` ({buf.size} bytes): "
            "expected JPEG or PNG data as image_transport's `compressed` plugin publishes"
        )
    if pixels.ndim == 2:
        return pixels, Layout.GRAY
    layout = {3: Layout.BGR, 4: Layout.BGRA}.get(pixels.shape[2])
    if layout is None:
        raise StableMTLError(f"compressed image decoded to {pixels.shape[2]} channels: expected 1, 3 or 4")
    return pixels, layout


def _to_uint8(pixels: np.ndarray) -> np.ndarray:
    """16-bit grey camera data (full 16-bit range, REP 118 ``mono16``) to 8 bits."""
    return pixels if pixels.dtype == np.uint8 else (pixels >> 8).astype(np.uint8)


def frame_from_image(msg: Any) -> tuple[np.ndarray, Layout]:
    """A camera ``sensor_msgs/Image`` as the uint8 frame and layout that ``Runtime.infer`` takes.

    Raises:
        StableMTLError: the encoding is not a camera image (e.g. ``32FC1`` depth) or not supported, or the
            image is empty (width or height 0): skipped input, not something to infer on.
    """
    enc = ImageEncoding.parse(msg.encoding)
    layout = _CAMERA_LAYOUTS.get(enc)
    if layout is None:
        valid = ", ".join(e.value for e in _CAMERA_LAYOUTS)
        raise StableMTLError(f"`{enc}` is not a camera image encoding: input frames must be {valid}")
    return _nonempty(_to_uint8(image_to_numpy(msg))), layout


def _nonempty(frame: np.ndarray) -> np.ndarray:
    if frame.size == 0:
        h, w = frame.shape[:2]
        raise StableMTLError(f"empty image ({w}x{h} pixels): the publisher sent a frame without pixels")
    return frame


def frame_from_compressed(msg: Any) -> tuple[np.ndarray, Layout]:
    """A ``sensor_msgs/CompressedImage`` as the uint8 frame and layout that ``Runtime.infer`` takes."""
    pixels, layout = compressed_to_numpy(msg)
    return _nonempty(_to_uint8(pixels)), layout
