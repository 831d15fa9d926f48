"""Folder runs: bad photos are skipped and counted (or stop the run with --strict), nothing already done is
lost, outputs are named after the photos, and flows that cannot be computed are explained once."""

from __future__ import annotations

import json
import logging

import cv2
import numpy as np
import pytest

from stablemtl_edge.errors import StableMTLError
from stablemtl_edge.runtime import Runtime
from stablemtl_edge.runtime.cli_run import main
from stablemtl_edge.runtime.sources import ImageFolderSource, PatternSource
from tests.runtime.artifact_zoo import ToyModel


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    return ToyModel().write(tmp_path_factory.mktemp("zoo") / "multi")


def _photo(path, seed=0, size=(48, 80)):
    rng = np.random.default_rng(seed)
    cv2.imwrite(str(path), rng.integers(0, 255, (*size, 3), dtype=np.uint8))


@pytest.fixture()
def mixed_folder(tmp_path):
    """Two good photos around three bad files, in natural order: a, b (empty), c (text), d (float TIFF), e."""
    folder = tmp_path / "photos"
    folder.mkdir()
    _photo(folder / "a_street.png", 0)
    (folder / "b_empty.png").write_bytes(b"")
    (folder / "c_notes.jpg").write_text("not an image")
    cv2.imwrite(str(folder / "d_depth.tiff"), np.random.default_rng(1).random((48, 80), dtype=np.float32))
    _photo(folder / "e_park.jpg", 2)
    return folder


def test_bad_photos_are_skipped_named_and_counted(artifacts, mixed_folder, tmp_path, caplog, capsys):
    out, stats_json = tmp_path / "preds", tmp_path / "stats.json"
    with caplog.at_level(logging.WARNING):
        rc = main([str(mixed_folder), "-a", str(artifacts), "--tasks", "depth", "--output-dir", str(out),
                   "--save", "npy", "--stats-json", str(stats_json), "--quiet"])
    assert rc == 0
    assert sorted(p.name for p in out.iterdir()) == ["a_street_depth.npy", "e_park_depth.npy"]
    stats = json.loads(stats_json.read_text())
    assert stats["processed"] == 2 and sum(stats["skipped"].values()) == 3
    warned = " ".join(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    for name, why in (("b_empty.png", "empty"), ("c_notes.jpg", "not an image"), ("d_depth.tiff", "float32 pixels")):
        assert name in warned and why in warned
    assert "3 unreadable inputs skipped" in capsys.readouterr().err


def test_strict_stops_at_the_first_bad_photo_and_keeps_what_was_done(artifacts, mixed_folder, tmp_path, capsys):
    out = tmp_path / "preds"
    rc = main([str(mixed_folder), "-a", str(artifacts), "--tasks", "depth", "--output-dir", str(out),
               "--save", "npy", "--strict", "--quiet"])
    err = capsys.readouterr().err
    assert rc == 1 and "b_empty.png" in err and "the file is empty" in err and "Traceback" not in err
    assert (out / "a_street_depth.npy").is_file()  # the frame before it is kept


def test_a_photo_deleted_after_listing_is_called_disappeared(tmp_path, caplog):
    for i in range(3):
        _photo(tmp_path / f"{i}.png", i)
    with caplog.at_level(logging.WARNING), ImageFolderSource(tmp_path) as src:
        (tmp_path / "1.png").unlink()
        names = [f.name for f in src]
        assert names == ["0.png", "2.png"] and src.skipped == {"the file disappeared after the folder was listed": 1}
    assert "1.png" in caplog.text and "damaged" not in caplog.text


def test_strict_source_names_the_file(tmp_path):
    (tmp_path / "x.png").write_text("junk")
    with pytest.raises(StableMTLError, match=r"x\.png`: the file is damaged or not an image"):
        with ImageFolderSource(tmp_path, strict=True) as src:
            src.read()


def test_outputs_keep_apart_photos_of_one_stem(artifacts, tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    _photo(folder / "shot.png", 0)
    _photo(folder / "shot.jpg", 1)
    _photo(folder / "v1.2.png", 2)
    out = tmp_path / "preds"
    assert main([str(folder), "-a", str(artifacts), "--tasks", "depth", "--output-dir", str(out), "--save", "npy",
                 "--quiet"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["shot_jpg_depth.npy", "shot_png_depth.npy", "v1.2_depth.npy"]


def test_flows_dropping_out_on_mixed_sizes_is_said_once(artifacts, caplog):
    frames = [PatternSource(h, w, frames=1).open().read().image for h, w in ((48, 80), (64, 64), (40, 90), (48, 80))]
    with caplog.at_level(logging.WARNING), Runtime.from_artifacts(artifacts, tasks="depth,optical_flow") as rt:
        results = [rt.infer(f) for f in frames]
    assert all("optical_flow" not in r.predictions for r in results)
    said = [r for r in caplog.records if "frame size changed" in r.getMessage()]
    assert len(said) == 1 and "optical_flow" in said[0].getMessage()
