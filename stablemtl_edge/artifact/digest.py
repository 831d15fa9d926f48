"""sha256 of artifact files, with a cache so that a multi-GB graph is not re-read at every start.

The official-size UNet is a 3.4 GB ``unet.onnx.data``: hashing it costs seconds on every runtime start and
every ``stablemtl-doctor``. A file whose identity and stat are unchanged since it was last hashed is not
read again. The key is (device, inode, size, mtime_ns, ctime_ns): ``ctime`` cannot be set from user space,
so even a same-size rewrite that restores the old mtime (``touch -r``) is re-hashed. Small files are always
read (hashing them is cheaper than the bookkeeping).

The cache is one JSON file under ``$STABLEMTL_EDGE_CACHE`` (default ``$XDG_CACHE_HOME/stablemtl-edge`` or
``~/.cache/stablemtl-edge``). It is advisory: unreadable, damaged or unwritable, it is ignored and files
are hashed as if it did not exist. ``STABLEMTL_EDGE_CACHE=off`` turns it off. torch-free.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
from pathlib import Path

from ..atomic import atomic_write_text

__all__ = ["file_sha256", "cached_sha256", "cache_path", "CACHED_MIN_BYTES"]

log = logging.getLogger(__name__)

CACHED_MIN_BYTES = 64 << 20  # below this a file is simply read
_MAX_ENTRIES = 512
_CACHE_FILE = "sha256.json"
_lock = threading.Lock()


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """The sha256 of a file's bytes (read in full)."""
    h = hashlib.sha256()
    with open(path, "rb", buffering=0) as f:
        buffer = bytearray(chunk)
        view = memoryview(buffer)
        while n := f.readinto(buffer):
            h.update(view[:n])
    return h.hexdigest()


def cache_path() -> Path | None:
    """Where the digest cache lives, or None when it is turned off."""
    configured = os.environ.get("STABLEMTL_EDGE_CACHE")
    if configured is not None:
        return None if configured.lower() in ("", "0", "off", "no", "false") else Path(configured) / _CACHE_FILE
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "stablemtl-edge" / _CACHE_FILE


def _stat_key(st: os.stat_result) -> list[int]:
    return [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]


def _load(path: Path) -> dict[str, dict]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _store(path: Path, entries: dict[str, dict]) -> None:
    if len(entries) > _MAX_ENTRIES:  # keep the most recently hashed
        newest = sorted(entries.items(), key=lambda kv: kv[1].get("seen", 0))[-_MAX_ENTRIES:]
        entries = dict(newest)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(entries, sort_keys=True))
    except OSError as e:  # a read-only home: hash every time, say why once at debug level
        log.debug("sha256 cache %s not written: %s", path, e)


def cached_sha256(path: str | os.PathLike) -> str:
    """:func:`file_sha256`, reusing the digest of an unchanged large file (see the module docstring)."""
    path = Path(path)
    st = path.stat()
    store = cache_path()
    if store is None or st.st_size < CACHED_MIN_BYTES:
        return file_sha256(path)
    name = str(path.resolve())
    key = _stat_key(st)
    with _lock:
        hit = _load(store).get(name)
    if isinstance(hit, dict) and hit.get("stat") == key and isinstance(hit.get("sha256"), str):
        return hit["sha256"]
    digest = file_sha256(path)
    if _stat_key(path.stat()) != key:  # changed while we read it: do not remember a digest of mixed bytes
        return digest
    with _lock:
        entries = _load(store)
        entries[name] = {"stat": key, "sha256": digest, "seen": time.time_ns()}
        _store(store, entries)
    return digest
