"""SIGTERM (systemd, `docker stop`) stops `stablemtl-run` like Ctrl-C: summary, statistics, a playable video."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import cv2

from tests.runtime.artifact_zoo import ToyModel


def test_sigterm_finalises_the_montage_video_and_the_statistics(tmp_path):
    artifacts = ToyModel().write(tmp_path / "multi")
    video, stats = tmp_path / "montage.mp4", tmp_path / "stats.json"
    partial = tmp_path / ".montage.partial.mp4"
    run = subprocess.Popen(
        [sys.executable, "-m", "stablemtl_edge.runtime.cli_run", "pattern:48x80", "-a", str(artifacts),
         "--tasks", "depth", "--pace-fps", "20", "--output-video", str(video), "--stats-json", str(stats), "--quiet"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    deadline = time.monotonic() + 60
    while not (partial.exists() and partial.stat().st_size > 0) and time.monotonic() < deadline:
        assert run.poll() is None, run.communicate()[1]
        time.sleep(0.1)
    time.sleep(0.5)  # a few more frames
    run.send_signal(signal.SIGTERM)
    _, err = run.communicate(timeout=60)
    assert run.returncode == 0, err
    assert "ended by terminated" in err and "Traceback" not in err
    record = json.loads(stats.read_text())
    assert record["ended_by"] == "terminated" and record["processed"] >= 1
    capture = cv2.VideoCapture(str(video))
    count = 0
    while capture.read()[0]:
        count += 1
    capture.release()
    assert count >= 1 and not partial.exists()
