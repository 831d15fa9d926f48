"""File formats shared by the training and benchmark readers: PFM, PNG at any depth, 8-bit images, .npy
and HDF5 arrays.

Every reader opens files through these functions so that a missing or corrupt file always surfaces as a
one-line :class:`~stablemtl_edge.errors.StableMTLError` that names the path, whatever library failed.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import cv2
import numpy as np

from ..atomic import atomic_path
from ..errors import MissingDependencyError, StableMTLError

__all__ = [
    "require_file",
    "require_dir",
    "read_pfm",
    "write_pfm",
    "read_png16",
    "write_png16",
    "read_rgb",
    "write_rgb",
    "read_unchanged",
    "read_npy",
    "read_hdf5",
]

_PFM_HEADER = re.compile(rb"^(PF|Pf)\s+(\d+)\s+(\d+)\s+(-?[0-9.eE+-]+)\s")


def require_file(path: str | os.PathLike, what: str) -> Path:
    """Return ``path`` if it is a file, else raise naming it and what it should have held."""
    path = Path(path)
    if not path.is_file():
        raise StableMTLError(f"missing {what}: `{path}` does not exist; check the dataset root and its layout")
    return path


def require_dir(path: str | os.PathLike, what: str) -> Path:
    """Return ``path`` if it is a directory, else raise naming it."""
    path = Path(path)
    if not path.is_dir():
        raise StableMTLError(f"missing {what}: directory `{path}` does not exist; check the dataset root")
    return path


def read_pfm(path: str | os.PathLike) -> np.ndarray:
    """Read a Portable Float Map (FlyingThings3D flow and disparity).

    PFM stores rows bottom-to-top with a little-endian float32 payload when the scale is negative; the
    result is top-to-bottom, ``(H, W)`` for ``Pf`` and ``(H, W, 3)`` for ``PF``, float32.
    """
    path = require_file(path, "PFM file")
    data = path.read_bytes()
    match = _PFM_HEADER.match(data)
    if match is None:
        raise StableMTLError(f"corrupt PFM file `{path}`: the header is not `PF|Pf <width> <height> <scale>`")
    channels = 3 if match.group(1) == b"PF" else 1
    width, height = int(match.group(2)), int(match.group(3))
    scale = float(match.group(4))
    dtype = np.dtype("<f4") if scale < 0 else np.dtype(">f4")
    count = width * height * channels
    payload = data[match.end() : match.end() + count * 4]
    if len(payload) != count * 4:
        raise StableMTLError(
            f"corrupt PFM file `{path}`: expected {count * 4} payload bytes for {width}x{height}x{channels}, "
            f"found {len(payload)} (truncated download?)"
        )
    arr = np.frombuffer(payload, dtype=dtype).reshape(height, width, channels)[::-1]
    arr = arr.astype(np.float32)
    return arr[..., 0] if channels == 1 else arr


def write_pfm(path: str | os.PathLike, array: np.ndarray) -> None:
    """Write ``(H, W)`` or ``(H, W, 3)`` float data as little-endian PFM (atomically)."""
    arr = np.asarray(array, dtype="<f4")
    if arr.ndim == 2:
        kind = b"Pf"
    elif arr.ndim == 3 and arr.shape[2] == 3:
        kind = b"PF"
    else:
        raise StableMTLError(f"PFM holds (H, W) or (H, W, 3) arrays, got shape {arr.shape}")
    header = kind + f"\n{arr.shape[1]} {arr.shape[0]}\n-1.0\n".encode("ascii")
    with atomic_path(path) as tmp:
        tmp.write_bytes(header + np.ascontiguousarray(arr[::-1]).tobytes())


def _imread(path: Path, flags: int, what: str) -> np.ndarray:
    require_file(path, what)
    # np.fromfile + imdecode: cv2.imread cannot report why it failed and mangles non-ASCII paths.
    img = cv2.imdecode(np.fromfile(str(path), dtype=np.uint8), flags)
    if img is None:
        raise StableMTLError(f"corrupt {what} `{path}`: OpenCV could not decode it (truncated or not an image)")
    return img


def read_png16(path: str | os.PathLike, what: str = "16-bit PNG") -> np.ndarray:
    """Read a 16-bit PNG as uint16, ``(H, W)`` or ``(H, W, 3)`` with channels in **RGB** order."""
    img = _imread(Path(path), cv2.IMREAD_ANYCOLOR | cv2.IMREAD_ANYDEPTH, what)
    if img.dtype != np.uint16:
        raise StableMTLError(f"{what} `{path}` holds {img.dtype} pixels, expected 16-bit (uint16)")
    return img if img.ndim == 2 else np.ascontiguousarray(img[..., ::-1])


def write_png16(path: str | os.PathLike, array: np.ndarray) -> None:
    """Write uint16 ``(H, W)`` or RGB ``(H, W, 3)`` as a 16-bit PNG (atomically)."""
    arr = np.asarray(array)
    if arr.dtype != np.uint16:
        raise StableMTLError(f"a 16-bit PNG needs uint16 data, got {arr.dtype}")
    if arr.ndim == 3:
        arr = np.ascontiguousarray(arr[..., ::-1])
    ok, buf = cv2.imencode(".png", arr)
    if not ok:
        raise StableMTLError(f"OpenCV could not encode a {arr.shape} uint16 array as PNG for `{path}`")
    with atomic_path(path) as tmp:
        tmp.write_bytes(buf.tobytes())


def read_rgb(path: str | os.PathLike, what: str = "image") -> np.ndarray:
    """Read an image (jpg/png) as uint8 RGB ``(H, W, 3)`` (OpenCV reduces 16-bit files to 8 bits)."""
    img = _imread(Path(path), cv2.IMREAD_COLOR, what)
    return np.ascontiguousarray(img[..., ::-1])


def write_rgb(path: str | os.PathLike, rgb: np.ndarray, quality: int = 95) -> None:
    """Write uint8 RGB ``(H, W, 3)`` to ``path`` (format from the suffix) atomically."""
    path = Path(path)
    params = [cv2.IMWRITE_JPEG_QUALITY, quality] if path.suffix.lower() in (".jpg", ".jpeg") else []
    ok, buf = cv2.imencode(path.suffix, np.ascontiguousarray(np.asarray(rgb, dtype=np.uint8)[..., ::-1]), params)
    if not ok:
        raise StableMTLError(f"OpenCV could not encode an image for `{path}`")
    with atomic_path(path) as tmp:
        tmp.write_bytes(buf.tobytes())


def read_unchanged(path: str | os.PathLike, what: str = "label image") -> np.ndarray:
    """An image at its stored depth and channels (16-bit stays uint16); colour stays in OpenCV's BGR order."""
    return _imread(Path(path), cv2.IMREAD_UNCHANGED, what)


def read_npy(path: str | os.PathLike, what: str = "array") -> np.ndarray:
    """A ``.npy`` array (never pickled objects)."""
    path = require_file(path, what)
    try:
        return np.load(path, allow_pickle=False)
    except ValueError as exc:
        raise StableMTLError(f"{what} `{path}` is not a plain .npy array ({exc})") from None


def read_hdf5(path: str | os.PathLike, what: str, dataset: str = "dataset") -> np.ndarray:
    """Read one dataset of an HDF5 file (Hypersim stores each map under the name ``dataset``)."""
    try:
        import h5py
    except ImportError:
        raise MissingDependencyError("h5py", "train", "reading Hypersim HDF5 files") from None
    path = require_file(path, what)
    try:
        with h5py.File(path, "r") as f:
            if dataset not in f:
                raise StableMTLError(
                    f"{what} `{path}` has no `{dataset}` dataset (found: {', '.join(f.keys()) or 'nothing'})"
                )
            return np.asarray(f[dataset][()])
    except OSError as exc:
        raise StableMTLError(f"corrupt {what} `{path}`: HDF5 could not read it ({exc})") from None
