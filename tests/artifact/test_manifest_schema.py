"""A manifest of the wrong JSON types or out of range is one error naming its key, in every reader."""

from __future__ import annotations

import copy
import json

import pytest

from stablemtl_edge.artifact.manifest import MANIFEST_NAME, Component, Manifest, Precision
from stablemtl_edge.errors import StableMTLError


def _set(path: str, value):
    """Edit ``path`` (dots; ``[i]`` for list items) of a manifest dictionary to ``value``."""

    def edit(d):
        keys = path.replace("[", ".").replace("]", "").split(".")
        for k in keys[:-1]:
            d = d[int(k)] if isinstance(d, list) else d[k]
        last = keys[-1]
        if isinstance(d, list):
            d[int(last)] = value
        else:
            d[last] = value

    return edit


def _drop(key: str):
    return lambda d: d.pop(key)


def _replace(value):
    return value


CASES = [
    # (id, edit of the good manifest or a whole document, expected text in the error)
    ("list", [], "the top level must be a JSON object, got []"),
    ("null", None, "the top level must be a JSON object, got null"),
    ("components-list", _set("components", []), "components must be a JSON object, got []"),
    ("components-fp32-null", _set("components.fp32", None), "components.fp32 must be a JSON object, got null"),
    ("entry-string", _set("components.fp32.unet", "x"), "components.fp32.unet must be a JSON object"),
    ("opset-string", _set("components.fp32.unet.opset", "17"), 'components.fp32.unet.opset must be an integer >= 1, got "17"'),
    ("sha-number", _set("components.fp32.unet.sha256", 5), "components.fp32.unet.sha256 must be a sha256 hex digest"),
    ("file-escapes", _set("components.fp32.unet.file", "../../etc/passwd"), "components.fp32.unet.file must be a relative path"),
    ("inputs-null", _set("components.fp32.unet.inputs", None), "components.fp32.unet.inputs must be a JSON array"),
    ("shape-float", _set("components.fp32.unet.inputs[0].shape", [1.5]), "components.fp32.unet.inputs[0].shape[0] must be an integer"),
    ("wrong-slot", _set("components.fp32.unet.component", "decoder"), "components.fp32.unet.component must be unet, got \"decoder\""),
    ("height-negative", _set("profile.height", -64), "profile.height must be a positive multiple of 64, got -64"),
    ("width-string", _set("profile.width", "128"), 'profile.width must be a positive multiple of 64, got "128"'),
    ("height-odd", _set("profile.height", 100), "profile.height must be a positive multiple of 64, got 100"),
    ("batch-zero", _set("profile.max_batch", 0), "profile.max_batch must be an integer >= 1, got 0"),
    ("profile-list", _set("profile", [64, 128]), "profile must be a JSON object"),
    ("profile-missing", _drop("profile"), "`profile` is missing"),
    ("scale-string", _set("latent_scale", "0.18"), 'latent_scale must be a finite number, got "0.18"'),
    ("timestep-bool", _set("timestep", True), "timestep must be an integer >= 0, got true"),
    ("mode-unknown", _set("mode", "triple"), 'mode must be one of single, multi, got "triple"'),
    ("tasks-null", _set("tasks", None), "tasks must be a JSON array, got null"),
    ("tolerance-string", _set("tolerance.depth", "x"), 'tolerance.depth must be a finite number >= 0, got "x"'),
    ("files-list", _set("files", ["a"]), "files must be a JSON object"),
    ("features-item", _set("features[0]", 3), "features[0] must be a JSON object, got 3"),
    ("version", _set("format_version", "1"), 'artifact format version "1" is not supported'),
    ("flops-string", _set("components.fp32.unet.flops_per_row", "5"),
     'components.fp32.unet.flops_per_row must be an integer >= 0, got "5"'),
    ("flops-negative", _set("components.fp32.decoder.flops_per_row", -1),
     "components.fp32.decoder.flops_per_row must be an integer >= 0, got -1"),
]


@pytest.fixture(scope="module")
def good(tiny_artifacts):
    return json.loads((tiny_artifacts / MANIFEST_NAME).read_text())


def _write(tmp_path, good, edit):
    if callable(edit):
        doc = copy.deepcopy(good)
        edit(doc)
    else:
        doc = edit
    (tmp_path / MANIFEST_NAME).write_text(json.dumps(doc))
    return tmp_path


def test_the_good_manifest_round_trips(good):
    assert json.loads(json.dumps(Manifest.from_dict(good).to_dict())) == good


@pytest.mark.parametrize("edit,expected", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_a_broken_manifest_is_one_error_naming_the_key(tmp_path, good, edit, expected):
    directory = _write(tmp_path, good, edit)
    with pytest.raises(StableMTLError) as e:
        Manifest.load(directory)
    message = str(e.value)
    assert expected in message and str(directory / MANIFEST_NAME) in message and "\n" not in message


@pytest.mark.parametrize("edit,expected", [c[1:] for c in CASES[:3] + CASES[11:12]], ids=[c[0] for c in CASES[:3] + CASES[11:12]])
def test_doctor_reports_a_broken_manifest_in_one_line(tmp_path, good, edit, expected, capsys):
    from stablemtl_edge.runtime.cli_doctor import main

    directory = _write(tmp_path, good, edit)
    assert main(["--artifacts", str(directory), "--no-run"]) == 1
    out = capsys.readouterr()
    lines = [line for line in out.out.splitlines() if "manifest" in line]
    assert len(lines) == 1 and "[fail]" in lines[0] and expected in lines[0]
    assert "Traceback" not in out.out + out.err


def test_the_self_check_refuses_what_the_runtime_refuses(tmp_path, good, capsys):
    from stablemtl_edge.runtime.cli_doctor import main

    directory = _write(tmp_path, good, _set("profile.height", -64))
    assert main(["--artifacts", str(directory), "--verify"]) == 1
    lines = [line for line in capsys.readouterr().out.splitlines() if "manifest" in line]
    assert len(lines) == 1 and "profile.height must be a positive multiple of 64, got -64" in lines[0]


def test_flops_are_optional_and_shared_across_precisions(good):
    """An artifact exported before the FLOP count still loads (n/a); an entry without a count (an int8 graph
    from calibration) takes the count of the same component in another precision set."""
    assert all(isinstance(e["flops_per_row"], int) and e["flops_per_row"] > 0
               for comps in good["components"].values() for e in comps.values())
    older = copy.deepcopy(good)
    for comps in older["components"].values():
        for e in comps.values():
            del e["flops_per_row"]
    m = Manifest.from_dict(older)
    assert all(m.flops_per_row(c) is None for c in m.components[Precision.FP32])
    partial = copy.deepcopy(good)
    partial["components"]["fp32"]["unet"]["flops_per_row"] = None
    m = Manifest.from_dict(partial)
    assert m.components[Precision.FP32][Component.UNET].flops_per_row is None
    assert m.flops_per_row("unet") == good["components"]["fp16"]["unet"]["flops_per_row"]
