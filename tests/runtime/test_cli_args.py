"""The shared runtime argument groups: parsing, the artifact's own mode as default, sweeps, errors."""

import argparse

import pytest

from stablemtl_edge.errors import StableMTLError
from stablemtl_edge.artifact.manifest import Mode, Precision
from stablemtl_edge.runtime import Runtime
from stablemtl_edge.runtime.backends.base import Backend
from stablemtl_edge.cli.parsers import parse_list
from stablemtl_edge.cli.shell import add_artifact_args, run_cli
from stablemtl_edge.runtime.cli_args import add_runtime_args, options_label, runtime_option_grid, runtime_options
from tests.runtime.artifact_zoo import ToyModel


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    root = tmp_path_factory.mktemp("zoo")
    return ToyModel().write(root / "multi", Mode.MULTI), ToyModel().write(root / "single", Mode.SINGLE)


def _parser(multiple=False):
    p = argparse.ArgumentParser()
    add_artifact_args(p)
    add_runtime_args(p, multiple=multiple)
    return p


def test_parse_list():
    assert parse_list("a, b,,c") == ["a", "b", "c"]
    assert parse_list(["a,b", "c"]) == ["a", "b", "c"]
    assert parse_list(None) == []


def test_options_default_to_the_artifacts_mode(artifacts):
    multi, single = artifacts
    args = _parser().parse_args(["-a", str(multi), "--tasks", "semantic,depth", "--rates", "semantic:3"])
    o = runtime_options(args)
    assert o.mode is Mode.MULTI and o.tasks == ("depth", "semantic") and o.rates == {"semantic": 3}
    assert options_label(o) == "multi/auto/fp32"
    assert runtime_options(_parser().parse_args(["-a", str(single)])).mode is Mode.SINGLE
    argv = ["-a", str(multi), "--mode", "single", "--providers", "CPUExecutionProvider",
            "--rates", "depth:2", "--rates", "normal:4"]  # fmt: skip
    o = runtime_options(_parser().parse_args(argv))
    assert o.mode is Mode.SINGLE and o.providers == ("CPUExecutionProvider",) and o.rates == {"depth": 2, "normal": 4}
    with Runtime.from_options(o) as rt:
        assert rt.mode is Mode.SINGLE and rt.rates == {"depth": 2, "normal": 4}


def test_grid_is_the_product_of_the_lists(artifacts):
    multi, _ = artifacts
    args = _parser(multiple=True).parse_args(["-a", str(multi), "--mode", "single,multi",
                                              "--backend", "onnxruntime", "--precision", "fp32,fp16"])  # fmt: skip
    grid = runtime_option_grid(args)
    assert [(o.mode, o.backend, o.precision) for o in grid] == [
        (Mode.SINGLE, Backend.ONNXRUNTIME, Precision.FP32),
        (Mode.SINGLE, Backend.ONNXRUNTIME, Precision.FP16),
        (Mode.MULTI, Backend.ONNXRUNTIME, Precision.FP32),
        (Mode.MULTI, Backend.ONNXRUNTIME, Precision.FP16),
    ]
    args = _parser(multiple=True).parse_args(["-a", str(multi), "--mode", "multi", "--decoder", "full,tiny"])
    grid = runtime_option_grid(args)
    assert [options_label(o) for o in grid] == ["multi/auto/fp32", "multi/auto/fp32+tiny"]


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--mode", "single,multi"], "--mode takes one value"),
        (["--mode", "triple"], "unknown mode `triple`"),
        (["--backend", "openvino"], "unknown backend `openvino`"),
        (["--rates", "depth:0"], "integer >= 1"),
        (["--tasks", "height"], "unknown task `height`"),
    ],
)
def test_errors_are_user_errors(artifacts, argv, message):
    with pytest.raises(StableMTLError, match=message):
        runtime_options(_parser().parse_args(["-a", str(artifacts[0]), *argv]))


def test_run_cli_turns_user_errors_into_one_line_and_exit_1(capsys):
    def body(args):
        raise StableMTLError("what was wrong; what to do")

    assert run_cli(body, argparse.ArgumentParser(), []) == 1
    assert capsys.readouterr().err == "error: what was wrong; what to do\n"

    def interrupted(args):
        raise KeyboardInterrupt

    assert run_cli(interrupted, argparse.ArgumentParser(), []) == 130


# One rule set: the same mistake gets the same message from the Python API, a command line and the ROS
# node's parameters (the three doors RuntimeOptions.parse sits behind). A stray rate is no mistake in ROS,
# where every task has a standing rate parameter (the next test).
MISTAKES = [
    ({"tasks": "depth", "rates": "semantic:3"}, ["-t", "depth", "--rates", "semantic:3"],
     None, "a rate is given for `semantic`, which is not among the requested tasks"),
    ({"mode": "single", "aux_reuse": 2}, ["--mode", "single", "--aux-reuse", "2"],
     {"mode": "single", "aux_reuse": 2}, "`aux_reuse` applies to the multi-stream mode only"),
    ({"rates": {"depth": 0}}, ["--rates", "depth:0"], {"rates.depth": 0}, "the rate of `depth` must be an integer >= 1"),
]


@pytest.mark.parametrize("api,argv,ros,message", MISTAKES, ids=["stray rate", "aux_reuse single", "rate 0"])
def test_one_rule_set_for_the_api_the_command_line_and_ros(artifacts, api, argv, ros, message):
    from stablemtl_edge.runtime.ros.parameters import NodeSettings

    multi = artifacts[0]
    errors = []
    attempts = [lambda: Runtime.from_artifacts(multi, **api),
                lambda: runtime_options(_parser().parse_args(["-a", str(multi), *argv]))]
    if ros is not None:
        attempts.append(lambda: NodeSettings.from_values({"artifact_dir": str(multi), **ros}))
    for attempt in attempts:
        with pytest.raises(StableMTLError) as e:
            attempt()
        errors.append(str(e.value))
    assert all(message in err and "\n" not in err for err in errors), errors


def test_ros_rate_parameters_of_tasks_not_requested_are_checked_but_unused(artifacts):
    from stablemtl_edge.runtime.ros.parameters import NodeSettings

    multi = artifacts[0]
    settings = NodeSettings.from_values({"artifact_dir": str(multi), "tasks": "depth", "rates.semantic": 3,
                                         "rates.depth": 2})
    assert settings.runtime.rates == {"depth": 2}
