"""The demo's own pieces (clips, report table) and, marked slow, the whole demo on the tiny model."""

import json

import cv2
import pytest

from stablemtl_edge.demo import accuracy_table, main, trivial_baseline, write_photo_pan, write_procedural_clip


def test_photo_pan_is_a_readable_video_of_full_frames(tmp_path):
    path = write_photo_pan(tmp_path / "pan.mp4", frames=9, size=(96, 128))
    cap = cv2.VideoCapture(str(path))
    shapes = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        shapes.append(frame.shape)
    assert len(shapes) == 9 and set(shapes) == {(96, 128, 3)}


def test_procedural_clip_is_a_folder_of_lossless_frames(tmp_path):
    folder = write_procedural_clip(tmp_path / "clip", frames=3, size=(64, 128))
    assert sorted(p.name for p in folder.iterdir()) == ["0000.png", "0001.png", "0002.png"]
    assert cv2.imread(str(folder / "0000.png")).shape == (64, 128, 3)


def test_accuracy_table_puts_every_configuration_side_by_side():
    trivial = trivial_baseline("indoor", "64x128", 2)
    table = accuracy_table({"trivial baseline": {"indoor": trivial}, "copy": {"indoor": trivial}})
    row = next(line for line in table.splitlines() if line.startswith("| depth | indoor | abs_rel"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[3] == cells[4] == f"{trivial['tasks']['depth']['metrics']['abs_rel']:.4g}"


@pytest.mark.slow
def test_demo_end_to_end_on_the_tiny_model(tiny_checkpoint, tmp_path):
    out = tmp_path / "demo"
    rc = main(["--checkpoint", str(tiny_checkpoint), "--out", str(out), "--clip-frames", "4",
               "--eval-frames", "2", "--calib-size", "2"])
    assert rc == 0
    for name in ("SUMMARY.md", "accuracy.md", "bench.md", "doctor.json", "montage_procedural.mp4", "montage_photos.mp4"):
        assert (out / name).is_file(), name
    assert json.loads((out / "artifacts" / "manifest.json").read_text())["mode"] == "multi"


def test_decoder_gate_passes_a_task_within_two_percent_and_names_one_beyond():
    import copy

    from stablemtl_edge.demo import decoder_gate

    full = trivial_baseline("indoor", "64x128", 2)
    tiny = copy.deepcopy(full)
    tiny["tasks"]["depth"]["metrics"]["abs_rel"] *= 1.05  # 5% worse: beyond the gate
    tiny["tasks"]["normal"]["metrics"]["mean"] *= 1.01  # 1% worse: within it
    text = decoder_gate({"indoor": full}, {"indoor": tiny})
    rows = {line.split("|")[1].strip(): line for line in text.splitlines() if line.startswith("| ") and "indoor" in line}
    assert "-5.0%" in rows["depth"] and rows["depth"].rstrip(" |").endswith("MISS")
    assert "-1.0%" in rows["normal"] and rows["normal"].rstrip(" |").endswith("pass")
    assert "misses the gate on depth (indoor)" in text
