"""Atomic writes never remove what this tool did not write, clean their own leftovers and honour the umask."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys

import pytest

from stablemtl_edge.atomic import (
    MARKER_NAME,
    atomic_directory,
    atomic_write_text,
    owned_kind,
    prepare_output_directory,
    remove_own_directory,
)
from stablemtl_edge.errors import StableMTLError


def _user_folder(path):
    path.mkdir()
    (path / "notes.txt").write_text("mine")
    (path / "sub").mkdir()
    (path / "sub" / "data.bin").write_bytes(b"x")
    return path


def _write(path, kind="artifact", overwrite=False, text="new"):
    with atomic_directory(path, kind=kind, overwrite=overwrite) as tmp:
        (tmp / "payload.txt").write_text(text)


def _hidden(parent):
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


def test_a_user_folder_is_refused_even_with_overwrite(tmp_path):
    folder = _user_folder(tmp_path / "out")
    for overwrite in (False, True):
        with pytest.raises(StableMTLError, match="not written by stablemtl-edge") as e:
            _write(folder, overwrite=overwrite)
        assert "\n" not in str(e.value) and str(folder) in str(e.value)
    assert (folder / "notes.txt").read_text() == "mine" and (folder / "sub" / "data.bin").is_file()
    assert _hidden(tmp_path) == []


def test_a_plain_file_at_the_path_is_refused_and_kept(tmp_path):
    path = tmp_path / "out"
    path.write_text("precious")
    with pytest.raises(StableMTLError, match="is a file"):
        _write(path, overwrite=True)
    assert path.read_text() == "precious" and _hidden(tmp_path) == []


def test_our_output_is_replaced_only_with_overwrite(tmp_path):
    path = tmp_path / "out"
    _write(path, text="one")
    assert owned_kind(path) == "artifact"
    with pytest.raises(StableMTLError, match="pass --overwrite"):
        _write(path, text="two")
    assert (path / "payload.txt").read_text() == "one"
    with pytest.raises(StableMTLError, match="holds a stablemtl-edge artifact, not a checkpoint"):
        _write(path, kind="checkpoint", overwrite=True)
    _write(path, overwrite=True, text="two")
    assert (path / "payload.txt").read_text() == "two" and _hidden(tmp_path) == []


def test_outputs_of_earlier_versions_are_recognised_by_their_manifest_or_config(tmp_path):
    artifact = tmp_path / "art"
    artifact.mkdir()
    (artifact / "manifest.json").write_text(json.dumps({"producer": {"package": "stablemtl-edge", "version": "0"}}))
    checkpoint = tmp_path / "ckpt"
    checkpoint.mkdir()
    (checkpoint / "config.json").write_text(json.dumps({"_class_name": "StableMTL", "_package_version": "0"}))
    foreign = tmp_path / "other"
    foreign.mkdir()
    (foreign / "config.json").write_text(json.dumps({"_class_name": "UNet2DConditionModel"}))
    assert (owned_kind(artifact), owned_kind(checkpoint), owned_kind(foreign)) == ("artifact", "checkpoint", None)
    _write(artifact, overwrite=True)
    _write(checkpoint, kind="checkpoint", overwrite=True)
    with pytest.raises(StableMTLError, match="not written by stablemtl-edge"):
        _write(foreign, kind="checkpoint", overwrite=True)


def test_a_failed_block_changes_nothing(tmp_path):
    path = tmp_path / "out"
    _write(path, text="one")
    with pytest.raises(RuntimeError):
        with atomic_directory(path, kind="artifact", overwrite=True) as tmp:
            (tmp / "payload.txt").write_text("half")
            raise RuntimeError("cut")
    assert (path / "payload.txt").read_text() == "one" and _hidden(tmp_path) == []


def _stale_tmp(parent, name, pid, host=None, marked=True):
    tmp = parent / f".{name}.abc123.tmp"
    tmp.mkdir()
    (tmp / "big.onnx.data").write_bytes(b"\0" * 1024)
    if marked:
        record = {"package": "stablemtl-edge", "kind": "artifact", "pid": pid, "host": host or socket.gethostname()}
        (tmp / MARKER_NAME).write_text(json.dumps(record))
    return tmp


def _dead_pid():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_our_stale_temporaries_are_removed_at_the_next_run_and_others_never(tmp_path):
    dead = _stale_tmp(tmp_path, "out", _dead_pid())
    (tmp_path / "live").mkdir()
    live = _stale_tmp(tmp_path / "live", "out", os.getppid())  # a running process: an export in progress
    (tmp_path / "host").mkdir()
    other_host = _stale_tmp(tmp_path / "host", "out", _dead_pid(), host="another-robot")
    (tmp_path / "plain").mkdir()
    unmarked = _stale_tmp(tmp_path / "plain", "out", 0, marked=False)
    for parent in (tmp_path, tmp_path / "live", tmp_path / "host", tmp_path / "plain"):
        _write(parent / "out")
    assert not dead.exists()
    assert live.is_dir() and other_host.is_dir() and unmarked.is_dir()


def test_a_replacement_cut_between_its_renames_is_put_back(tmp_path):
    path = tmp_path / "out"
    _write(path, text="one")
    os.replace(path, tmp_path / ".out.old")  # killed after moving the old output aside
    _write(tmp_path / "sibling")  # another output: not its business
    assert (tmp_path / ".out.old").is_dir()
    _write(path, overwrite=True, text="two")
    assert (path / "payload.txt").read_text() == "two" and _hidden(tmp_path) == []


def test_prepare_and_remove_touch_only_our_own_directories(tmp_path):
    folder = _user_folder(tmp_path / "demo")
    with pytest.raises(StableMTLError, match="not written by stablemtl-edge"):
        prepare_output_directory(folder, "demo", overwrite=True)
    assert remove_own_directory(folder) is False and (folder / "notes.txt").is_file()
    ours = prepare_output_directory(tmp_path / "d2", "demo")
    (ours / "SUMMARY.md").write_text("x")
    with pytest.raises(StableMTLError, match="pass --overwrite"):
        prepare_output_directory(ours, "demo")
    assert prepare_output_directory(ours, "demo", overwrite=True) == ours and not (ours / "SUMMARY.md").exists()
    assert remove_own_directory(ours) is True and not ours.exists()


def test_written_files_and_directories_honour_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "a.json", "{}")
        _write(tmp_path / "art")
    finally:
        os.umask(old)
    mode = lambda p: stat.S_IMODE(p.stat().st_mode)  # noqa: E731
    assert mode(tmp_path / "a.json") == 0o644
    assert mode(tmp_path / "art") == 0o755 and mode(tmp_path / "art" / MARKER_NAME) == 0o644
    old = os.umask(0o077)
    try:
        atomic_write_text(tmp_path / "b.json", "{}")
    finally:
        os.umask(old)
    assert mode(tmp_path / "b.json") == 0o600


# -- the tools behind --out -------------------------------------------------------------------------------
def test_export_cli_refuses_a_user_folder_and_replaces_its_own_artifact_only_with_overwrite(
    tiny_checkpoint, tiny_artifacts, tmp_path, capsys
):
    import shutil

    from stablemtl_edge.export.cli import main

    folder = _user_folder(tmp_path / "out")
    for extra in ([], ["--overwrite"]):
        assert main(["export", str(tiny_checkpoint), "--out", str(folder), "--mode", "multi", *extra]) == 1
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and "not written by stablemtl-edge" in err and str(folder) in err
    assert (folder / "notes.txt").read_text() == "mine" and (folder / "sub" / "data.bin").is_file()

    art = tmp_path / "art"
    shutil.copytree(tiny_artifacts, art)
    args = ["export", str(tiny_checkpoint), "--out", str(art), "--mode", "multi", "--precision", "fp32"]
    assert main(args) == 1  # fp16 would be dropped: a change, so it needs --overwrite
    assert "--overwrite" in capsys.readouterr().err and (art / "fp16").is_dir()
    assert main([*args, "--overwrite"]) == 0
    assert not (art / "fp16").exists() and owned_kind(art) == "artifact"


def test_checkpoint_writers_refuse_a_user_folder(tmp_path, capsys):
    from stablemtl_edge.model.checkpoint import save_pretrained
    from stablemtl_edge.model.stablemtl import StableMTL
    from stablemtl_edge.training.cli import main as train_main

    model = StableMTL.from_preset("tiny", seed=0)
    folder = _user_folder(tmp_path / "ckpt")
    with pytest.raises(StableMTLError, match="not written by stablemtl-edge"):
        save_pretrained(model, folder, overwrite=True)
    ckpt = save_pretrained(model, tmp_path / "model")
    with pytest.raises(StableMTLError, match="--overwrite"):
        save_pretrained(model, ckpt)
    save_pretrained(model, ckpt, overwrite=True)

    assert train_main(["release", "--model", str(ckpt), "--output", str(folder), "--overwrite"]) == 1
    assert "not written by stablemtl-edge" in capsys.readouterr().err
    assert (folder / "notes.txt").read_text() == "mine"
    release = tmp_path / "release"
    assert train_main(["release", "--model", str(ckpt), "--output", str(release)]) == 0
    assert train_main(["release", "--model", str(ckpt), "--output", str(release)]) == 1
    assert train_main(["release", "--model", str(ckpt), "--output", str(release), "--overwrite"]) == 0
