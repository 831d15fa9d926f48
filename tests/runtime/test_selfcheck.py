"""The on-target self-check, `stablemtl-doctor --artifacts DIR --verify`, on a real exported artifact."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from stablemtl_edge.artifact.manifest import MANIFEST_NAME, file_sha256
from stablemtl_edge.runtime.cli_doctor import main
from tests.runtime.test_no_torch import BLOCKER


@pytest.fixture()
def artifact_copy(tiny_artifacts, tmp_path):
    out = tmp_path / "art"
    shutil.copytree(tiny_artifacts, out)
    return out


def _lines(capsys, word):
    return [line for line in capsys.readouterr().out.splitlines() if word in line]


def _rerecord(directory, rel, component, precision="fp32"):
    """Record a changed graph's digest in the manifest, as a careless hand edit would."""
    data = json.loads((directory / MANIFEST_NAME).read_text())
    digest = file_sha256(directory / rel)
    data["components"][precision][component]["sha256"] = digest
    data["files"][rel] = digest
    (directory / MANIFEST_NAME).write_text(json.dumps(data))


def test_verify_passes_and_accepts_task_tolerances(artifact_copy, capsys):
    assert main(["--artifacts", str(artifact_copy), "--verify", "--precision", "fp32", "--tolerance",
                 "depth:0.02"]) == 0
    out = capsys.readouterr().out
    assert "[  ok] fp32 parity" in out and "fp16 parity" not in out and out.rstrip().splitlines()[-1].startswith("PASSED")


def test_verify_refuses_a_truncated_onnx(artifact_copy, capsys):
    path = artifact_copy / "fp32" / "unet.onnx"
    path.write_bytes(path.read_bytes()[:1000])
    before = sorted(p.name for p in artifact_copy.rglob("*"))
    assert main(["--artifacts", str(artifact_copy), "--verify"]) == 1
    (line,) = _lines(capsys, " files ")
    assert "[fail]" in line and "unet.onnx" in line and "sha256" in line
    assert sorted(p.name for p in artifact_copy.rglob("*")) == before  # verify never writes


def test_verify_refuses_a_corrupt_onnx_even_with_a_matching_hash(artifact_copy, capsys):
    """A damaged file whose digest was (wrongly) re-recorded still fails: onnxruntime cannot load it."""
    (artifact_copy / "fp32" / "decoder.onnx").write_bytes(b"\x08\x07garbage" * 50)
    _rerecord(artifact_copy, "fp32/decoder.onnx", "decoder")
    assert main(["--artifacts", str(artifact_copy), "--verify", "--precision", "fp32"]) == 1
    (line,) = _lines(capsys, "parity")
    assert "[fail]" in line and "onnxruntime cannot load" in line and "decoder.onnx" in line


def test_verify_finds_a_graph_that_loads_but_computes_something_else(artifact_copy, capsys):
    """Digests prove the bytes are the recorded ones, not that they are right: the references do."""
    path = artifact_copy / "fp32" / "decoder.onnx"
    model = onnx.load(str(path))
    init = max(model.graph.initializer, key=lambda t: int(np.prod(t.dims)))
    init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init) * 1.05, init.name))
    onnx.save(model, str(path))
    _rerecord(artifact_copy, "fp32/decoder.onnx", "decoder")
    assert main(["--artifacts", str(artifact_copy), "--verify", "--precision", "fp32"]) == 1
    (line,) = _lines(capsys, "fp32 parity")
    assert "[fail]" in line and "decoder/photo/image" in line


def test_verify_flags_need_verify(tiny_artifacts, capsys):
    assert main(["--artifacts", str(tiny_artifacts), "--tolerance", "depth:0.1"]) == 1
    err = capsys.readouterr().err.strip()
    assert "--tolerance apply to `--verify`" in err and "\n" not in err


def test_unknown_task_in_a_tolerance(tiny_artifacts, capsys):
    assert main(["--artifacts", str(tiny_artifacts), "--verify", "--tolerance", "dept:0.02"]) == 1
    err = capsys.readouterr().err.strip()
    assert "dept" in err and "depth" in err and "\n" not in err


def test_verify_missing_directory(tmp_path, capsys):
    assert main(["--artifacts", str(tmp_path / "none"), "--verify"]) == 1
    (line,) = _lines(capsys, "manifest")
    assert "[fail]" in line and "does not exist" in line


def test_verify_runs_where_torch_cannot_be_imported(tiny_artifacts, tmp_path):
    """A base install (no torch) checks a real exported artifact and loads no torch module doing it."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(BLOCKER)
    path = os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    script = (
        "import sys\n"
        "from stablemtl_edge.runtime.cli_doctor import main\n"
        "rc = main(['--artifacts', sys.argv[1], '--verify'])\n"
        "assert not [m for m in sys.modules if m.split('.')[0] in ('torch', 'diffusers', 'transformers')]\n"
        "sys.exit(rc)\n"
    )
    proc = subprocess.run([sys.executable, "-c", script, str(tiny_artifacts)], env={**os.environ, "PYTHONPATH": path},
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "fp32 parity" in proc.stdout and "fp16 parity" in proc.stdout
