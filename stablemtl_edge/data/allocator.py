"""Keep freed heap memory in the process while samples are generated (glibc only).

Every procedural sample allocates and frees the same few dozen arrays of 0.1-5 MB. With glibc's defaults
each of them is a fresh ``mmap`` (or the heap top is trimmed after it is freed), so the next sample
page-faults the same memory back in: about a tenth of a sample's time at 128x160. Raising the mmap and
trim thresholds lets the freed blocks be reused. The process keeps up to ``trim_threshold`` of freed
memory, which is what a data-generating process wants; the library never does this on import: the
command-line tools that generate data in bulk (``stablemtl-train``, the generator benchmark) call it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

__all__ = ["retain_freed_memory"]

# mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_TOP_PAD = -2
_M_MMAP_THRESHOLD = -3
_MMAP_THRESHOLD_MAX = 32 << 20  # glibc's ceiling on 64-bit systems (DEFAULT_MMAP_THRESHOLD_MAX)


def retain_freed_memory(mmap_threshold: int = _MMAP_THRESHOLD_MAX, trim_threshold: int = 256 << 20,
                        top_pad: int = 64 << 20) -> bool:
    """Serve blocks below ``mmap_threshold`` from the heap and keep up to ``trim_threshold`` of freed heap.

    Returns True when glibc accepted the settings, False elsewhere (musl, macOS, Windows): there the
    allocator's defaults stay, which is only slower.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    settings = ((_M_MMAP_THRESHOLD, min(mmap_threshold, _MMAP_THRESHOLD_MAX)), (_M_TRIM_THRESHOLD, trim_threshold),
                (_M_TOP_PAD, top_pad))
    return all(mallopt(param, value) == 1 for param, value in settings)
