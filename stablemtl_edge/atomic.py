"""Atomic writes that never remove what this tool did not write.

A reader sees the old file or directory or the new one, never half of either. Every directory written
here carries a small marker file (:data:`MARKER_NAME`, naming its kind, and for a temporary the pid and
host building it); an existing directory is replaced only when it carries that marker (or is an artifact
or checkpoint that an earlier version wrote, recognised by its ``manifest.json`` / ``config.json``) and
the caller asked for ``overwrite``. Anything else at the path (a user's folder, a plain file) is refused.
Temporaries left by a killed run are removed at the next run for the same output when their marker says
that this host's process that made them is gone; one without our marker is never touched. Files and
directories get the modes the umask allows (``mkstemp``/``mkdtemp`` alone would give 0600/0700).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

from . import __version__
from .errors import StableMTLError

__all__ = [
    "MARKER_NAME",
    "atomic_write_bytes",
    "atomic_write_text",
    "atomic_path",
    "atomic_directory",
    "prepare_output_directory",
    "remove_own_directory",
    "owned_kind",
]

log = logging.getLogger(__name__)
MARKER_NAME = ".stablemtl-edge"
PACKAGE = "stablemtl-edge"


def current_umask() -> int:
    """The process umask, read without changing it where Linux allows (``os.umask`` sets it to read it)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~current_umask())
    finally:
        os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


# -- ownership ----------------------------------------------------------------------------------------------
def _read_json(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _marker(directory: Path) -> dict | None:
    data = _read_json(directory / MARKER_NAME)
    return data if data is not None and data.get("package") == PACKAGE else None


def owned_kind(directory: str | os.PathLike) -> str | None:
    """The kind of output we wrote at ``directory`` (``artifact``, ``checkpoint``, ...), or None if not ours.

    Outputs of earlier versions carry no marker; an artifact is then recognised by our ``manifest.json``
    (producer stablemtl-edge), a checkpoint by our ``config.json`` and a demo folder by its summary and
    artifact.
    """
    directory = Path(directory)
    if directory.is_symlink() or not directory.is_dir():
        return None
    marker = _marker(directory)
    if marker is not None:
        return str(marker.get("kind", "output"))
    manifest = _read_json(directory / "manifest.json")
    if manifest is not None and isinstance(manifest.get("producer"), dict) and manifest["producer"].get("package") == PACKAGE:
        return "artifact"
    config = _read_json(directory / "config.json")
    if config is not None and config.get("_class_name") == "StableMTL" and "_package_version" in config:
        return "checkpoint"
    if (directory / "SUMMARY.md").is_file() and owned_kind(directory / "artifacts") == "artifact":
        return "demo"
    return None


def _write_marker(directory: Path, kind: str) -> None:
    record = {"package": PACKAGE, "version": __version__, "kind": kind, "pid": os.getpid(), "host": socket.gethostname()}
    (directory / MARKER_NAME).write_text(json.dumps(record) + "\n", encoding="utf-8")


def check_replaceable(path: Path, kind: str, overwrite: bool) -> bool:
    """Whether ``path`` holds our output to replace (True) or nothing (False); refuse anything else.

    Raises:
        StableMTLError: ``path`` is a file, a link, a folder we did not write, our output of another kind,
            or our output of this kind without ``overwrite``.
    """
    if not path.exists() and not path.is_symlink():
        return False
    if path.is_symlink():
        raise StableMTLError(f"`{path}` is a symbolic link: pass a new path or the directory it points to")
    if not path.is_dir():
        raise StableMTLError(f"`{path}` is a file, not an output directory of stablemtl-edge: choose another path")
    have = owned_kind(path)
    if have is None:
        raise StableMTLError(
            f"`{path}` exists and was not written by stablemtl-edge (it is never replaced): choose another path "
            "or move it away"
        )
    if have != kind:
        raise StableMTLError(f"`{path}` holds a stablemtl-edge {have}, not a {kind}: choose another path")
    if not overwrite:
        raise StableMTLError(f"`{path}` exists already: pass --overwrite to replace it, or choose another path")
    return True


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except (OverflowError, ValueError):
        return False
    return True


def _clean_stale(path: Path) -> None:
    """Remove our temporaries for ``path`` whose maker on this host is gone; report ones we cannot judge."""
    host = socket.gethostname()
    for tmp in path.parent.glob(f".{path.name}.*.tmp"):
        if tmp.is_symlink() or not tmp.is_dir():
            continue
        marker = _marker(tmp)
        pid = marker.get("pid") if marker else None
        if marker is None or marker.get("host") != host or not isinstance(pid, int):
            if marker is None:
                log.warning("left `%s` alone: it carries no stablemtl-edge marker (remove it yourself)", tmp)
            continue
        if pid != os.getpid() and not _alive(pid):
            log.info("removing `%s`, left by an interrupted run (pid %d)", tmp, pid)
            shutil.rmtree(tmp, ignore_errors=True)
    old = path.with_name(f".{path.name}.old")
    if old.is_dir() and not old.is_symlink() and owned_kind(old) is not None:
        if path.exists() or path.is_symlink():
            shutil.rmtree(old, ignore_errors=True)  # a replacement that completed but was cut before its cleanup
        else:
            os.replace(old, path)  # cut between the two renames: put the previous output back


def _make_dir_tmp(path: Path, kind: str) -> Path:
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    os.chmod(tmp, 0o777 & ~current_umask())
    _write_marker(tmp, kind)
    return tmp


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike, kind: str = "output", overwrite: bool = False) -> Iterator[Path]:
    """Build a directory under a temporary name and move it into place when the block succeeds.

    What is at ``path`` is checked before the block runs (so a refusal costs nothing) and again before the
    move; our own output of the same ``kind`` is replaced only with ``overwrite``, and only after the new
    one is complete. On failure nothing at ``path`` changes and the temporary directory is removed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _clean_stale(path)
    check_replaceable(path, kind, overwrite)
    tmp = _make_dir_tmp(path, kind)
    try:
        yield tmp
        if check_replaceable(path, kind, overwrite):
            old = path.with_name(f".{path.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def prepare_output_directory(path: str | os.PathLike, kind: str, overwrite: bool = False) -> Path:
    """Create ``path`` (marked as ours) for a tool that fills it step by step; replaces only our own output."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if check_replaceable(path, kind, overwrite):
        shutil.rmtree(path)
    path.mkdir()
    _write_marker(path, kind)
    return path


def remove_own_directory(path: str | os.PathLike) -> bool:
    """Remove ``path`` only if it is output we wrote; True if it was removed."""
    path = Path(path)
    if owned_kind(path) is None:
        return False
    shutil.rmtree(path)
    return True
