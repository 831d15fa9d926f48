"""The README's commands are real: every tool it names is a declared entry point and answers --help."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib", reason="reading pyproject.toml needs Python 3.11's tomllib")

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
SCRIPTS = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
TOOLS = sorted(set(re.findall(r"\b(stablemtl-[a-z-]+[a-z])\b", README)) - {"stablemtl-edge"})


def test_readme_names_tools_and_the_two_commands():
    assert "make demo" in README and "make test" in README
    assert {"stablemtl-export", "stablemtl-run", "stablemtl-calibrate", "stablemtl-train"} <= set(TOOLS)
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make test" in ci


@pytest.mark.parametrize("tool", TOOLS)
def test_every_readme_tool_is_an_entry_point_with_help(tool):
    assert tool in SCRIPTS, f"README mentions {tool}, which pyproject.toml does not declare"
    module, func = SCRIPTS[tool].split(":")
    if tool.startswith("stablemtl-ros"):
        pytest.importorskip("rosbags", reason="the ROS tools need the `ros` extra")
    code = f"import sys; from {module} import {func} as m; sys.argv=['{tool}', '--help']; sys.exit(m())"
    if tool == "stablemtl-ros":
        code = f"import sys; from {module} import {func} as m; sys.exit(m(['{tool}', '--help']))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "usage" in done.stdout.lower()
