"""External data (``<graph>.onnx.data``, how graphs over 2 GB are stored) is checked like the graphs."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import onnx
import pytest

from stablemtl_edge.artifact import digest
from stablemtl_edge.artifact.digest import cached_sha256, file_sha256
from stablemtl_edge.artifact.manifest import MANIFEST_NAME, Manifest
from stablemtl_edge.errors import StableMTLError


@pytest.fixture()
def external(tiny_artifacts, tmp_path, monkeypatch):
    """The tiny artifact with fp32/unet.onnx stored as graph + ``unet.onnx.data``, manifest updated."""
    art = tmp_path / "art"
    shutil.copytree(tiny_artifacts, art)
    graph = art / "fp32" / "unet.onnx"
    model = onnx.load(str(graph))
    onnx.save_model(model, str(graph), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="unet.onnx.data", size_threshold=0)
    doc = json.loads((art / MANIFEST_NAME).read_text())
    entry = doc["components"]["fp32"]["unet"]
    entry["external_data"] = "unet.onnx.data"
    entry["sha256"] = doc["files"]["fp32/unet.onnx"] = file_sha256(graph)
    doc["files"]["fp32/unet.onnx.data"] = file_sha256(art / "fp32" / "unet.onnx.data")
    (art / MANIFEST_NAME).write_text(json.dumps(doc))
    monkeypatch.setenv("STABLEMTL_EDGE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(digest, "CACHED_MIN_BYTES", 0)  # the tiny data file goes through the cache too
    return art


def _flip_one_byte_keeping_size_and_mtime(path):
    st = path.stat()
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x55
    path.write_bytes(bytes(data))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert path.stat().st_size == st.st_size and path.stat().st_mtime_ns == st.st_mtime_ns


def test_a_same_size_corruption_of_external_data_is_refused(external):
    manifest = Manifest.load(external)
    manifest.verify_files(external)  # intact: passes, and fills the cache
    assert json.loads((digest.cache_path()).read_text())
    _flip_one_byte_keeping_size_and_mtime(external / "fp32" / "unet.onnx.data")
    with pytest.raises(StableMTLError, match=r"unet\.onnx\.data` does not match the manifest"):
        manifest.verify_files(external)


def test_the_runtime_and_doctor_refuse_corrupted_external_data(external, capsys):
    from stablemtl_edge.runtime import Runtime
    from stablemtl_edge.runtime.cli_doctor import main as doctor

    Runtime.from_artifacts(external, mode="single").close()
    _flip_one_byte_keeping_size_and_mtime(external / "fp32" / "unet.onnx.data")
    with pytest.raises(StableMTLError, match=r"unet\.onnx\.data` does not match"):
        Runtime.from_artifacts(external, mode="single")
    capsys.readouterr()
    assert doctor(["--artifacts", str(external), "--no-run"]) == 1
    assert "unet.onnx.data` does not match" in capsys.readouterr().out


def test_external_data_without_a_recorded_digest_is_refused(external):
    doc = json.loads((external / MANIFEST_NAME).read_text())
    del doc["files"]["fp32/unet.onnx.data"]
    (external / MANIFEST_NAME).write_text(json.dumps(doc))
    with pytest.raises(StableMTLError, match="records no sha256 for this external data file"):
        Manifest.load(external).verify_files(external)


def test_the_cache_reuses_an_unchanged_file_and_rehashes_a_changed_one(tmp_path, monkeypatch):
    monkeypatch.setenv("STABLEMTL_EDGE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(digest, "CACHED_MIN_BYTES", 0)
    path = tmp_path / "blob.bin"
    path.write_bytes(np.random.default_rng(0).bytes(1 << 16))
    reads = []
    real = digest.file_sha256
    monkeypatch.setattr(digest, "file_sha256", lambda p: reads.append(p) or real(p))
    first = cached_sha256(path)
    assert cached_sha256(path) == first and len(reads) == 1  # unchanged: not read again
    _flip_one_byte_keeping_size_and_mtime(path)
    assert cached_sha256(path) == real(path) != first and len(reads) == 2  # ctime moved: re-read


def test_a_damaged_or_unwritable_cache_only_costs_a_rehash(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "sha256.json").write_text("{not json")
    monkeypatch.setenv("STABLEMTL_EDGE_CACHE", str(cache))
    monkeypatch.setattr(digest, "CACHED_MIN_BYTES", 0)
    path = tmp_path / "blob.bin"
    path.write_bytes(b"x" * 1000)
    assert cached_sha256(path) == file_sha256(path)
    monkeypatch.setenv("STABLEMTL_EDGE_CACHE", str(tmp_path / "file-not-dir" / "sub"))
    (tmp_path / "file-not-dir").write_text("")
    assert cached_sha256(path) == file_sha256(path)
    monkeypatch.setenv("STABLEMTL_EDGE_CACHE", "off")
    assert digest.cache_path() is None and cached_sha256(path) == file_sha256(path)
