"""File reads shared by the benchmark readers, with one-line errors naming the file."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from ...errors import StableMTLError

__all__ = ["read_rgb", "read_unchanged", "read_npy"]


def _missing(path: Path, what: str) -> StableMTLError:
    return StableMTLError(f"{what} `{path}` is missing or unreadable: check the benchmark folder is complete")


def read_rgb(path: str | Path) -> np.ndarray:
    """8-bit colour image -> uint8 RGB ``(H, W, 3)``."""
    path = Path(path)
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise _missing(path, "image")
    return np.ascontiguousarray(img[..., ::-1])


def read_unchanged(path: str | Path, what: str = "label image") -> np.ndarray:
    """PNG at its stored depth and channels (16-bit stays uint16); colour stays in OpenCV's BGR order."""
    path = Path(path)
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise _missing(path, what)
    return img


def read_npy(path: str | Path, what: str = "array") -> np.ndarray:
    """A ``.npy`` array (never pickled objects)."""
    path = Path(path)
    if not path.is_file():
        raise _missing(path, what)
    try:
        return np.load(path, allow_pickle=False)
    except ValueError as exc:
        raise StableMTLError(f"{what} `{path}` is not a plain .npy array ({exc})") from None
