"""`stablemtl-export` as a user meets it: one-line errors, no partial artifacts, verify on damaged files."""

import importlib.util

import pytest

from stablemtl_edge.export.cli import main
from stablemtl_edge.export.tensorrt import TENSORRT_MISSING
from stablemtl_edge.artifact.manifest import Manifest

HAVE_TENSORRT = importlib.util.find_spec("tensorrt") is not None


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in err if line.startswith("error: ")]
    assert len(errors) == 1, err
    return errors[0]


def _no_partial(directory, name="out"):
    assert not (directory / name).exists()
    assert not [p for p in directory.iterdir() if p.name.startswith(f".{name}.")]


def test_missing_checkpoint(tmp_path, capsys):
    assert main(["export", str(tmp_path / "nope"), "--out", str(tmp_path / "out")]) == 1
    assert "does not exist" in _one_line_error(capsys)
    _no_partial(tmp_path)


def test_default_command_is_export(tmp_path, capsys):
    assert main([str(tmp_path / "nope"), "--out", str(tmp_path / "out")]) == 1
    assert "checkpoint" in _one_line_error(capsys)


def test_impossible_resolution(tiny_checkpoint, tmp_path, capsys):
    assert main(["export", str(tiny_checkpoint), "--out", str(tmp_path / "out"), "--resolution", "100x128"]) == 1
    line = _one_line_error(capsys)
    assert "not a multiple of 64" in line and "64x128" in line
    _no_partial(tmp_path)
    assert main(["export", str(tiny_checkpoint), "--out", str(tmp_path / "out"), "--resolution", "64by128"]) == 1
    assert "HxW" in _one_line_error(capsys)


def test_int8_is_not_an_export_precision(tiny_checkpoint, tmp_path, capsys):
    assert main(["export", str(tiny_checkpoint), "--out", str(tmp_path / "out"), "--precision", "fp32,int8"]) == 1
    assert "calibration" in _one_line_error(capsys)
    _no_partial(tmp_path)


def test_verify_names_the_tool_it_moved_to(tiny_artifacts, capsys):
    assert main(["verify", str(tiny_artifacts)]) == 1
    line = _one_line_error(capsys)
    assert f"stablemtl-doctor --artifacts {tiny_artifacts} --verify" in line


@pytest.mark.skipif(HAVE_TENSORRT, reason="TensorRT is installed: the missing-TensorRT message cannot be shown")
def test_build_without_tensorrt_says_what_to_install(tiny_artifacts, capsys):
    assert main(["build", "-a", str(tiny_artifacts), "--precision", "fp16"]) == 1
    line = _one_line_error(capsys)
    assert line == f"error: {TENSORRT_MISSING}"
    assert not (tiny_artifacts / "engines").exists()


def test_build_int8_without_int8_graphs(tiny_artifacts, capsys):
    assert main(["build-engine", "-a", str(tiny_artifacts), "--precision", "int8"]) == 1
    assert "stablemtl-calibrate" in _one_line_error(capsys)


def test_import_official_missing_file(tmp_path, capsys):
    rc = main(["import-official", "--single-stream", str(tmp_path / "x.pth"), "--sd2", str(tmp_path / "sd2"),
               "--out", str(tmp_path / "ckpt")])
    assert rc == 1
    _one_line_error(capsys)
    assert not (tmp_path / "ckpt").exists()


def test_export_cli_single_mode_static_resolution(tiny_checkpoint, tmp_path, capsys):
    out = tmp_path / "single"
    assert main(["export", str(tiny_checkpoint), "--out", str(out), "--mode", "single", "--precision", "fp32",
                 "--resolution", "64x64"]) == 0
    text = capsys.readouterr().out
    assert "| fp32 | single | depth |" in text and "PASSED export" in text
    m = Manifest.load(out)
    assert (m.profile.height, m.profile.width) == (64, 64)
    assert set(c.value for c in m.components[m.precisions()[0]]) == {"encoder", "unet", "decoder"}
    assert [t.name for t in m.entry("fp32", "unet").outputs] == ["latent"]
