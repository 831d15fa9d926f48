"""``stablemtl-run`` end to end on real ONNX artifacts: video file and image folder in, montage video out."""

import json

import cv2
import numpy as np
import pytest

from stablemtl_edge.runtime import Runtime
from stablemtl_edge.runtime.cli_run import main
from stablemtl_edge.runtime.sources import ImageFolderSource, PatternSource, VideoFileSource
from stablemtl_edge.runtime.stream import Stream
from stablemtl_edge.tasks import TASK_NAMES
from tests.runtime.artifact_zoo import ToyModel


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    return ToyModel().write(tmp_path_factory.mktemp("zoo") / "multi")


@pytest.fixture()
def odd_folder(tmp_path):
    folder = tmp_path / "frames"
    folder.mkdir()
    with PatternSource(375, 1242, frames=3) as src:
        for f in src:
            cv2.imwrite(str(folder / f"{f.index:04d}.png"), cv2.cvtColor(f.image, cv2.COLOR_RGB2BGR))
    return folder


def test_run_on_odd_sized_image_folder_writes_montage_video_and_frames(artifacts, odd_folder, tmp_path):
    video = tmp_path / "montage.mp4"
    out = tmp_path / "out"
    stats_json = tmp_path / "stats.json"
    rc = main([str(odd_folder), "-a", str(artifacts), "--output-video", str(video), "--tile-width", "320",
               "--output-dir", str(out), "--save", "npy", "--stats-json", str(stats_json), "--quiet"])  # fmt: skip
    assert rc == 0
    with VideoFileSource(video) as src:
        frames = list(src)
    assert len(frames) == 3
    # 8 tiles (input + 7 tasks) of 320 x 96 (1242:375 kept, even), laid out near 16:9.
    h, w = frames[0].image.shape[:2]
    assert w % 320 == 0 and h % 96 == 0 and (w // 320) * (h // 96) >= 8
    stats = json.loads(stats_json.read_text())
    assert stats["processed"] == 3 and stats["dropped"] == 0 and stats["ended_by"] == "end of stream"
    # The saved values are the runtime's own output on the same frames, at the camera's resolution.
    with Runtime.from_artifacts(artifacts, mode="multi") as rt:
        results = [rt.infer(f.image) for f in ImageFolderSource(odd_folder)]
    for i, res in enumerate(results):
        for key in TASK_NAMES:
            path = out / f"{i:04d}_{key}.npy"  # named after the source photo (0000.png)
            if key in res.predictions:
                np.testing.assert_array_equal(np.load(path), res[key])
                assert np.load(path).shape[:2] == (375, 1242)
            else:
                assert i == 0 and not path.exists()  # flows start at the second frame


def test_run_on_video_file_with_rates_and_single_mode(artifacts, tmp_path):
    clip = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"MJPG"), 15, (200, 120))
    for f in PatternSource(120, 200, frames=5):
        writer.write(f.image)
    writer.release()
    video = tmp_path / "montage.avi"
    stats_json = tmp_path / "s.json"
    rc = main([str(clip), "-a", str(artifacts), "--mode", "single", "--tasks", "depth,semantic",
               "--rates", "semantic:2", "-o", str(video), "--stats-json", str(stats_json), "-q"])  # fmt: skip
    assert rc == 0
    with VideoFileSource(video) as src:
        assert src.nominal_fps == pytest.approx(15)  # the source's rate
        assert len(list(src)) == 5
    assert json.loads(stats_json.read_text())["options"] == "single/auto/fp32"


def test_stream_with_real_runtime_equals_direct_inference(artifacts):
    with Runtime.from_artifacts(artifacts, tasks=["depth", "optical_flow"], mode="multi") as rt:
        collected = []

        class Keep:
            stop_requested = False

            def write(self, item):
                collected.append(item)

        stats = Stream(PatternSource(45, 77, frames=4), rt, [Keep()]).run()
    assert stats.processed == 4 and rt.counters["frames"] == 4
    with Runtime.from_artifacts(artifacts, tasks=["depth", "optical_flow"], mode="multi") as ref:
        for item, f in zip(collected, PatternSource(45, 77, frames=4)):
            direct = ref.infer(f.image)
            assert set(direct.predictions) == set(item.result.predictions)
            for k in direct.predictions:
                np.testing.assert_array_equal(item.result[k], direct[k])


def test_run_errors_are_one_line(artifacts, tmp_path, capsys):
    assert main([str(tmp_path / "nope"), "-a", str(artifacts), "-q"]) == 1
    assert capsys.readouterr().err.strip().startswith("error: source")
    assert main(["pattern:8x8:1", "-a", str(tmp_path / "none"), "-q"]) == 1
    assert "does not exist" in capsys.readouterr().err
    assert main(["pattern:8x8:1", "-a", str(artifacts), "--tasks", "height", "-q"]) == 1
    assert "unknown task `height`" in capsys.readouterr().err
    assert main(["pattern:8x8:1", "-a", str(artifacts), "--rates", "depth", "-q"]) == 1
    assert "task:N" in capsys.readouterr().err
    out = str(tmp_path / "o")
    assert main(["pattern:8x8:1", "-a", str(artifacts), "--output-dir", out, "--save", "gif", "-q"]) == 1
    assert "unknown output format `gif`" in capsys.readouterr().err


def test_cli_tools_run_where_torch_cannot_be_imported(artifacts, tmp_path):
    import os
    import subprocess
    import sys

    from tests.runtime.test_no_torch import BLOCKED, BLOCKER

    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(BLOCKER)
    path = os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env = {**os.environ, "PYTHONPATH": path}
    video = tmp_path / "m.avi"
    script = (
        "import sys\n"
        "from stablemtl_edge.runtime import cli_bench, cli_doctor, cli_run, sinks, sources, stream, visualize\n"
        f"rc = cli_run.main(['pattern:375x1242:3', '-a', {str(artifacts)!r}, '-o', {str(video)!r}, '-q'])\n"
        f"rc |= cli_doctor.main(['-a', {str(artifacts)!r}])\n"
        f"blocked = {sorted({b.split('.')[0] for b in BLOCKED})!r}\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] in blocked)\n"
        "assert not loaded, loaded\n"
        "sys.exit(rc)\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    with VideoFileSource(video) as src:
        assert len(list(src)) == 3
