import json

import cv2
import numpy as np
import pytest

from stablemtl_edge.eval.cli import main
from stablemtl_edge.artifact.manifest import Mode
from tests.runtime.artifact_zoo import ToyModel


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    return ToyModel().write(tmp_path_factory.mktemp("artifact"), Mode.SINGLE)


def _cityscapes(root, n=2):
    rng = np.random.default_rng(9)
    for i in range(n):
        stem = f"bonn_000000_{i:06d}"
        (root / "leftImg8bit" / "val" / "bonn").mkdir(parents=True, exist_ok=True)
        (root / "gtFine" / "val" / "bonn").mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(root / "leftImg8bit" / "val" / "bonn" / f"{stem}_leftImg8bit.png"), rng.integers(0, 255, (32, 64, 3), np.uint8))
        ids = rng.choice([7, 11, 21, 23, 26, 8], (32, 64)).astype(np.uint8)
        cv2.imwrite(str(root / "gtFine" / "val" / "bonn" / f"{stem}_gtFine_labelIds.png"), ids)


def test_cityscapes_end_to_end_with_json_trivial_floor_and_delta_m(tmp_path, artifact, capsys):
    _cityscapes(tmp_path / "cs")
    out = tmp_path / "r.json"
    argv = ["--artifacts", str(artifact), "--benchmark", "cityscapes", "--data", str(tmp_path / "cs"), "--json", str(out),
            "--trivial", "--no-progress", "--backend", "onnxruntime", "--threads", "1"]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "| semantic | 2 | miou ↑ |" in text and "trivial baseline" in text
    data = json.loads(out.read_text())
    assert data["tasks"]["semantic"]["frames"] == 2 and data["info"]["runner.unet"].startswith("onnxruntime")
    # the same frames scored again against the first result: delta_m is exactly 0
    assert main(argv[:-6] + ["--baseline", str(out), "--no-progress", "--markdown", str(tmp_path / "r.md")]) == 0
    assert "delta_m vs" in capsys.readouterr().out and "+0.00%" in (tmp_path / "r.md").read_text()


def test_user_errors_are_one_line(tmp_path, artifact, capsys):
    assert main(["--artifacts", str(artifact), "--benchmark", "diode", "--no-progress"]) == 1
    assert capsys.readouterr().err.strip() == "error: benchmark `diode` needs --data: see `stablemtl-eval --help`"
    _cityscapes(tmp_path / "cs", 1)
    assert main(["--artifacts", str(artifact), "--benchmark", "cityscapes", "--data", str(tmp_path / "cs"), "--tasks", "depth"]) == 1
    assert "labels semantic" in capsys.readouterr().err
    # one unlabelled task among labelled ones is refused by name, never dropped in silence
    assert main(["--artifacts", str(artifact), "--benchmark", "cityscapes", "--data", str(tmp_path / "cs"),
                 "--tasks", "semantic,depth"]) == 1
    assert capsys.readouterr().err.strip() == (
        "error: `cityscapes` labels semantic, not depth: ask for labelled tasks or leave --tasks out to score all of them")


def test_procedural_held_out_split(tmp_path, artifact, capsys):
    pytest.importorskip("stablemtl_edge.data.procedural", reason="procedural data generator not present")
    argv = ["--artifacts", str(artifact), "--benchmark", "procedural", "--domain", "indoor", "--split", "val", "--frames", "2",
            "--size", "32x48", "--no-progress", "--json", str(tmp_path / "p.json"), "--threads", "1"]
    assert main(argv) == 0
    res = json.loads((tmp_path / "p.json").read_text())
    assert res["benchmark"] == "procedural:indoor:val" and res["tasks"]
    assert main(argv[:4] + ["--split", "train"]) == 1
