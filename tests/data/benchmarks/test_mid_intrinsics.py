import cv2
import numpy as np
import pytest

from stablemtl_edge.data.benchmarks import MidIntrinsicsReader


def _write(d, name="everett_kitchen2_dir_0_mip2"):
    d.mkdir(parents=True, exist_ok=True)
    h, w = 16, 16
    cv2.imwrite(str(d / f"{name}.jpg"), np.full((h, w, 3), 128, np.uint8))
    albedo = np.zeros((h, w, 3), np.uint8)
    albedo[:, 8:] = (200, 100, 50)  # RGB
    cv2.imwrite(str(d / f"{name}_albedo.jpg"), albedo[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 100])
    shading = np.full((h, w, 3), (100, 150, 200), np.uint8)
    cv2.imwrite(str(d / f"{name}_shading.jpg"), shading[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 100])
    return name


def test_albedo_shading_and_validity(tmp_path):
    name = _write(tmp_path / "scene")
    reader = MidIntrinsicsReader(tmp_path)
    assert len(reader) == 1  # _albedo / _shading files are not samples
    s = reader[0]
    a, sh = s.labels["albedo"], s.labels["shading"]
    assert a.value.shape == (16, 16, 3) and sh.value.shape == (16, 16)
    np.testing.assert_allclose(a.value[4, 12], np.array([200, 100, 50]) / 255, atol=3 / 255)
    grey = (0.3 * 100 + 0.59 * 150 + 0.11 * 200) / 255
    assert sh.value[8, 8] == pytest.approx(grey, abs=3 / 255)
    assert not a.valid[:, :7].any() and a.valid[:, 9:].all()
    (tmp_path / "list.txt").write_text(f"scene/{name}.jpg\n")
    assert len(MidIntrinsicsReader(tmp_path, tmp_path / "list.txt")) == 1
