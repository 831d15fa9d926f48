"""Every command the README and docs show is accepted by its tool as written, and those that need only what
`make demo` leaves behind really run on a tree shaped like `out/demo` (the tiny artifact in its place)."""

from __future__ import annotations

import importlib
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

PARSERS = {
    "stablemtl-export": "stablemtl_edge.export.cli",
    "stablemtl-calibrate": "stablemtl_edge.calibration.cli",
    "stablemtl-run": "stablemtl_edge.runtime.cli_run",
    "stablemtl-bench": "stablemtl_edge.runtime.cli_bench",
    "stablemtl-doctor": "stablemtl_edge.runtime.cli_doctor",
    "stablemtl-ros-bag": "stablemtl_edge.runtime.ros.bag",
    "stablemtl-train": "stablemtl_edge.training.cli",
    "stablemtl-eval": "stablemtl_edge.eval.cli",
}

# Commands that need nothing but the demo's output: run for real (matched on their first words).
RUN_AFTER_DEMO = (
    "stablemtl-doctor -a out/demo/artifacts --verify",
    "stablemtl-export bench -a out/demo/artifacts",
    "stablemtl-doctor -a out/demo/artifacts",
    "stablemtl-run out/demo/clips/photos.mp4",
    "stablemtl-run out/demo/clips/procedural",
)


def _commands(text: str) -> list[str]:
    """Tool command lines of the code blocks (indented or fenced), continuations joined, comments dropped."""
    found, pending, fenced = [], "", False
    for line in text.splitlines():
        if line.startswith("```"):
            fenced = not fenced
            continue
        code = fenced or line.startswith("    ")
        stripped = line.strip()
        if pending:
            pending += " " + stripped.rstrip("\\").strip()
            if not stripped.endswith("\\"):
                found.append(pending)
                pending = ""
            continue
        if code and re.match(r"stablemtl-[a-z-]+ ", stripped):
            if stripped.endswith("\\"):
                pending = stripped.rstrip("\\").strip()
            else:
                found.append(stripped)
    return [" ".join(shlex.split(c, comments=True)) for c in found]


COMMANDS = sorted({c for doc in DOCS for c in _commands(doc.read_text())})


def test_the_docs_show_commands():
    assert len(COMMANDS) >= 15 and all(any(c.startswith(r) for c in COMMANDS) for r in RUN_AFTER_DEMO)


@pytest.mark.parametrize("command", COMMANDS)
def test_every_documented_command_is_accepted_by_its_tool(command):
    tool, *argv = shlex.split(command)
    if tool == "stablemtl-ros":
        pytest.skip("ROS arguments are parsed by rclpy: the node's parameters are checked by tests/runtime/ros")
    if tool == "stablemtl-ros-bag":
        pytest.importorskip("rosbags", reason="the bag tool needs the `ros` extra")
    assert tool in PARSERS, f"{command!r}: add its tool to PARSERS"
    module = importlib.import_module(PARSERS[tool])
    subcommands = getattr(module, "COMMANDS", None) or getattr(module, "SUBCOMMANDS", None)
    if subcommands and argv[0] not in subcommands:  # as the tool's main does: its default subcommand
        argv.insert(0, subcommands[0])
    parser = module.build_parser()
    try:
        parser.parse_args(argv)
    except SystemExit as e:
        pytest.fail(f"{command!r} is refused by {tool} (exit {e.code})")


@pytest.fixture()
def demo_tree(tmp_path, tiny_artifacts):
    """A folder laid out like the output of `make demo`, holding the tiny artifact and short clips."""
    from stablemtl_edge.artifact.manifest import Manifest
    from stablemtl_edge.demo import write_photo_pan, write_procedural_clip

    out = tmp_path / "out" / "demo"
    shutil.copytree(tiny_artifacts, out / "artifacts")
    profile = Manifest.load(tiny_artifacts).profile
    write_procedural_clip(out / "clips" / "procedural", 3, (profile.height, profile.width))
    write_photo_pan(out / "clips" / "photos.mp4", 3)
    return tmp_path


@pytest.mark.parametrize("prefix", RUN_AFTER_DEMO)
def test_commands_run_as_written_after_the_demo(demo_tree, prefix):
    command = prefix if prefix in COMMANDS else next(c for c in COMMANDS if c.startswith(prefix))
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    done = subprocess.run(shlex.split(command), cwd=demo_tree, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"{command}\n{done.stderr[-3000:]}"
