"""The official size (issue 6, section 6): sd2 with random weights exports within 24 GB, parity 1e-3 on latents."""

import pytest

from stablemtl_edge.export.official_size import export_official_size
from stablemtl_edge.artifact.manifest import Mode


@pytest.mark.slow
def test_sd2_export_fits_and_matches(tmp_path):
    report = export_official_size(tmp_path / "sd2", Mode.SINGLE)
    assert report.external_data.get("unet") == "unet.onnx.data"  # the UNet is over 2 GB
    assert report.worst_latent_error <= 1e-3
    assert report.peak_rss_gib < 24
