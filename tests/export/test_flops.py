"""FLOPs per row are counted on the exported torch modules at the export size and recorded per component."""

import pytest

from stablemtl_edge.artifact.manifest import Component, Manifest, Mode, ShapeProfile
from stablemtl_edge.config import ModelPreset
from stablemtl_edge.export.components import component_specs
from stablemtl_edge.export.flops import count_flops
from stablemtl_edge.model.checkpoint import load_pretrained
from stablemtl_edge.model.tiny_decoder import full_decoder_flops


@pytest.fixture(scope="module")
def model(tiny_checkpoint):
    return load_pretrained(tiny_checkpoint)


def test_the_count_is_per_row_and_the_manifest_records_it(model, tiny_artifacts):
    m = Manifest.load(tiny_artifacts)
    specs = component_specs(model.preset, Mode.MULTI, m.profile)
    for component, spec in specs.items():
        one = count_flops(model, spec)
        assert one > 0 and count_flops(model, spec, rows=3) == 3 * one, component  # rows are independent
        for precision in m.precisions():  # the same computation in every precision set
            assert m.entry(precision, component).flops_per_row == one, (precision, component)
        assert m.flops_per_row(component) == one


def test_the_decoder_count_agrees_with_an_independent_count(tiny_artifacts):
    """The exported decoder wrapper on real weights vs the preset's VAE decoder built on the meta device."""
    m = Manifest.load(tiny_artifacts)
    assert m.flops_per_row("decoder") == full_decoder_flops(ModelPreset.from_dict(m.preset), m.profile.latent_hw)


def test_the_count_follows_the_export_size(model):
    h, w = model.preset.resolution
    small = component_specs(model.preset, Mode.SINGLE, ShapeProfile(h, w))[Component.DECODER]
    large = component_specs(model.preset, Mode.SINGLE, ShapeProfile(2 * h, w))[Component.DECODER]
    # convolutions scale with the pixels, the VAE's mid-block attention with their square
    assert 2 * count_flops(model, small) <= count_flops(model, large) < 4 * count_flops(model, small)
