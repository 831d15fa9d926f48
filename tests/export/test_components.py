"""Component specs, both exporters, dynamic height/width, the comparator."""

import numpy as np
import onnxruntime as ort
import pytest
import torch

from stablemtl_edge import StableMTLError
from stablemtl_edge.artifact.compare import Comparator, Tolerance, parse_tolerances
from stablemtl_edge.export.components import check_resolution, component_specs
from stablemtl_edge.export.onnx_export import ExportOptions, Exporter, export_component
from stablemtl_edge.artifact.manifest import Component, Mode, ShapeProfile
from stablemtl_edge.model.stablemtl import StableMTL


@pytest.fixture(scope="module")
def tiny_model():
    return StableMTL.from_preset("tiny", multi_stream=True, seed=0)


@pytest.mark.parametrize("hw", [(100, 128), (64, 96), (0, 64), (32, 64)])
def test_resolutions_the_unet_cannot_take_are_refused(hw):
    with pytest.raises(StableMTLError, match="multiple of 64"):
        check_resolution(*hw)


def test_specs_follow_the_manifest_contract(tiny_model):
    static = component_specs(tiny_model.preset, Mode.MULTI, ShapeProfile(64, 128))
    assert list(static) == [Component.ENCODER, Component.UNET, Component.UNET_MAIN, Component.DECODER]
    main = static[Component.UNET_MAIN]
    assert main.input_names[:3] == ["sample", "task_id", "aux_feat_00"] and len(main.inputs) == 18
    assert main.inputs[2].shape == (1, 7, 8 * 16, 32)  # once per frame, broadcast to the batch in the graph
    assert "aux_feat_06" not in main.dynamic_axes() and main.dynamic_axes()["sample"] == {0: "batch"}
    dyn = component_specs(tiny_model.preset, Mode.MULTI, ShapeProfile(128, 128, min_hw=(64, 64), max_hw=(256, 256)))
    assert dyn[Component.ENCODER].inputs[0].shape == ("batch", "height", "width", 3)
    assert dyn[Component.UNET].dynamic_axes()["feat_06"] == {0: "batch", 1: "tokens_06"}
    single = component_specs(tiny_model.preset, Mode.SINGLE, ShapeProfile(64, 128))
    assert Component.UNET_MAIN not in single and single[Component.UNET].output_names == ["latent"]
    with pytest.raises(StableMTLError, match="multiple of 64"):
        component_specs(tiny_model.preset, Mode.SINGLE, ShapeProfile(64, 128, min_hw=(32, 64), max_hw=(64, 128)))


def test_opset_must_suit_the_exporter():
    with pytest.raises(StableMTLError, match="dynamo"):
        ExportOptions(Exporter.DYNAMO, 17)
    assert ExportOptions.for_exporter("dynamo").opset == 18


def _parity(model, spec, path, batch, hw=None):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    g = torch.Generator().manual_seed(3)
    args = spec.example(batch, g)
    if hw is not None:  # encoder at another frame size
        args = (torch.randint(0, 256, (batch, hw[0], hw[1], 3), generator=g, dtype=torch.uint8),)
    got = session.run(None, {n: a.numpy() for n, a in zip(spec.input_names, args)})
    with torch.no_grad():
        want = spec.factory(model)(*args)
    return float(np.abs(got[0] - want.numpy()).max()), got[0].shape


@pytest.mark.parametrize("exporter", ["torchscript", "dynamo"])
def test_vae_components_export_with_both_exporters(tiny_model, tmp_path, exporter):
    specs = component_specs(tiny_model.preset, Mode.MULTI, ShapeProfile(64, 128))
    options = ExportOptions.for_exporter(exporter)
    for component in (Component.ENCODER, Component.DECODER):
        path = tmp_path / f"{component.value}.onnx"
        assert export_component(tiny_model, specs[component], path, options) is None
        err, shape = _parity(tiny_model, specs[component], path, batch=3)
        assert err < 1e-4 and shape[0] == 3


def test_dynamic_height_width(tiny_model, tmp_path):
    profile = ShapeProfile(128, 128, min_hw=(64, 64), max_hw=(192, 256))
    spec = component_specs(tiny_model.preset, Mode.SINGLE, profile)[Component.ENCODER]
    path = tmp_path / "encoder.onnx"
    export_component(tiny_model, spec, path, ExportOptions())
    for hw in ((64, 192), (192, 64)):
        err, shape = _parity(tiny_model, spec, path, batch=1, hw=hw)
        assert err < 1e-4 and shape == (1, 4, hw[0] // 8, hw[1] // 8)


def test_comparator_reports_needed_tolerance_and_flags_nan():
    c = Comparator({"unet": Tolerance(1e-3), "depth": Tolerance(0.02), "feat": Tolerance(0, 0.1)}, Tolerance(1e-4))
    a = np.zeros((2, 3))
    assert c.compare("unet/photo/latent", a + 5e-4, a)
    r = c.compare("e2e/multi/depth/image", a + 0.03, a)
    assert not r and r.required_atol == pytest.approx(0.03) and r.tolerance.atol == 0.02
    assert c.compare("unet_main/photo/feat_03", a + 1.05, a + 1.0).tolerance.rtol == 0.1  # by output name
    bad = a.copy()
    bad[0, 0] = np.nan
    assert not c.compare("decoder/random/image", bad, a).finite
    assert len(c.failures()) == 2
    with pytest.raises(StableMTLError, match="2 of 4 parity checks failed"):
        c.check("test")
    tol, default = parse_tolerances(["depth:0.02", "0.5"], Tolerance(1e-3))
    assert tol == {"depth": Tolerance(0.02)} and default == Tolerance(0.5)
    with pytest.raises(StableMTLError):
        parse_tolerances(["depth:x"], Tolerance(1e-3))
