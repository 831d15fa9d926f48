"""Every tool's --help is plain text: no reST markup, no `(default: None)`, nothing printed twice."""

from __future__ import annotations

import argparse
import contextlib
import io
import re

import pytest
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]


def _helps(tool: str) -> list[str]:
    """The --help text of the tool and of each of its subcommands."""
    module, func = SCRIPTS[tool].split(":")
    if tool.startswith("stablemtl-ros"):
        pytest.importorskip("rclpy", reason="the ROS tools need the `ros` extra")
    main = getattr(__import__(module, fromlist=[func]), func)
    texts = []
    for argv in [["--help"], *([c, "--help"] for c in _subcommands(module))]:
        out = io.StringIO()
        with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as e:
            main([tool, *argv] if tool == "stablemtl-ros" else argv)
        assert e.value.code == 0, argv
        texts.append(out.getvalue())
    return texts


def _subcommands(module: str) -> list[str]:
    mod = __import__(module, fromlist=["build_parser"])
    if not hasattr(mod, "build_parser"):
        return []
    parser = mod.build_parser()
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return sorted({name for s in subs for name in s.choices})


@pytest.mark.parametrize("tool", sorted(SCRIPTS))
def test_help_is_plain_and_says_each_thing_once(tool):
    for text in _helps(tool):
        assert "``" not in text and not re.search(r":(class|mod|func|meth):`", text), text
        assert "(default: None)" not in text and "(default: False)" not in text, text
        flat = " ".join(text.split())
        assert not re.search(r"\(default: [^)]*\) \(default:", flat), text
        paragraphs = [" ".join(p.split()) for p in text.split("\n\n") if len(p.split()) > 6]
        assert len(paragraphs) == len(set(paragraphs)), "a paragraph is printed twice"
