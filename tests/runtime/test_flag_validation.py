"""Numbers that make no sense are refused where they are given, in one line (issue 15)."""

from __future__ import annotations

import pytest

from stablemtl_edge.errors import StableMTLError

RUN_CASES = [
    (["--pace-fps", "nan"], "--pace-fps: must be a finite number > 0"),
    (["--pace-fps", "-5"], "--pace-fps: must be a finite number > 0"),
    (["--video-fps", "0"], "--video-fps: must be a finite number > 0"),
    (["--video-fps", "inf"], "--video-fps: must be a finite number > 0"),
    (["--tile-width", "0"], "--tile-width: must be an integer >= 64"),
    (["--tile-width", "-10"], "--tile-width: must be an integer >= 64"),
    (["--tile-width", "1"], "--tile-width: must be an integer >= 64"),
    (["--max-frames", "0"], "--max-frames: must be an integer >= 1"),
    (["--camera-retries", "-1"], "--camera-retries: must be an integer >= 0"),
]


@pytest.mark.parametrize("flags,expected", RUN_CASES, ids=[" ".join(c[0]) for c in RUN_CASES])
def test_stablemtl_run_refuses_bad_numbers(flags, expected, capsys, tmp_path):
    from stablemtl_edge.runtime.cli_run import build_parser

    with pytest.raises(SystemExit) as e:
        build_parser().parse_args(["pattern", "-a", str(tmp_path), *flags])
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert e.value.code == 2 and expected in err


def test_output_dir_naming_a_file_is_refused_and_the_file_kept(tmp_path, capsys):
    from stablemtl_edge.runtime.cli_run import build_parser

    existing = tmp_path / "notes.txt"
    existing.write_text("keep me")
    with pytest.raises(SystemExit):
        build_parser().parse_args(["pattern", "-a", str(tmp_path), "--output-dir", str(existing)])
    assert "is an existing file, not a directory" in capsys.readouterr().err
    assert existing.read_text() == "keep me"


@pytest.mark.parametrize("flags,expected", [
    (["--max-batch", "0"], "--max-batch: must be an integer >= 1"),
    (["--opset", "0"], "--opset: must be an integer >= 1"),
], ids=["max-batch 0", "opset 0"])
def test_export_refuses_bad_numbers(flags, expected, capsys):
    from stablemtl_edge.export.cli import build_parser

    with pytest.raises(SystemExit):
        build_parser().parse_args(["export", "demo", "--out", "x", *flags])
    assert expected in capsys.readouterr().err


@pytest.mark.parametrize("kwargs,expected", [
    ({"tasks": 5}, "tasks must be task names (a list or a comma-separated string) or `all`, got 5"),
    ({"tasks": "depth,foo"}, "unknown task `foo`"),
    ({"rates": {"semantic": "abc"}}, "the rate of `semantic` must be an integer >= 1"),
    ({"rates": {"semantic": 0}}, "the rate of `semantic` must be an integer >= 1"),
], ids=["tasks=5", "unknown task", "rate abc", "rate 0"])
def test_the_api_refuses_bad_arguments_in_one_line(tiny_artifacts, kwargs, expected):
    from stablemtl_edge.runtime import Runtime

    with pytest.raises(StableMTLError) as e:
        Runtime.from_artifacts(tiny_artifacts, **kwargs)
    assert expected in str(e.value) and "\n" not in str(e.value)


def test_tasks_none_means_every_task_the_artifact_serves(tiny_artifacts):
    from stablemtl_edge.runtime import Runtime

    with Runtime.from_artifacts(tiny_artifacts, tasks=None) as rt:
        assert len(rt.tasks) == 7
