import cv2
import numpy as np
import pytest

from stablemtl_edge.errors import StableMTLError
from stablemtl_edge.data.benchmarks import DiodeReader


def _write_scan(root, scene="indoors", name="00019_00183_indoors_000_010", normals=True):
    d = root / scene / "scene_00019" / "scan_00183"
    d.mkdir(parents=True)
    h, w = 6, 8
    cv2.imwrite(str(d / f"{name}.png"), np.full((h, w, 3), 90, np.uint8))
    depth = np.linspace(0.5, 20.0, h * w, dtype=np.float32).reshape(h, w, 1)
    np.save(d / f"{name}_depth.npy", depth)
    mask = np.ones((h, w), np.float32)
    mask[0, :] = 0
    np.save(d / f"{name}_depth_mask.npy", mask)
    if normals:
        n = np.zeros((h, w, 3), np.float32)
        n[:3] = (0.0, 0.0, -1.0)  # OpenCV axes: facing the camera
        n[3:5] = (0.0, -1.0, 0.0)  # OpenCV axes: pointing up (y down)
        n[5] = 0.0  # no normal
        np.save(d / f"{name}_normal.npy", n)
    return depth[..., 0], mask > 0


def test_depth_mask_and_normal_convention(tmp_path):
    depth, mask = _write_scan(tmp_path)
    s = DiodeReader(tmp_path)[0]
    np.testing.assert_array_equal(s.labels["depth"].value, depth)
    np.testing.assert_array_equal(s.labels["depth"].valid, mask)
    n = s.labels["normal"]
    np.testing.assert_array_equal(n.value[0, 0], [0, 0, 1])  # OpenGL: towards the camera
    np.testing.assert_array_equal(n.value[3, 0], [0, 1, 0])  # OpenGL: y up
    assert n.valid[:5].all() and not n.valid[5].any()
    assert s.domain == "diode"


def test_a_benchmark_is_a_sample_source_like_the_training_sets(tmp_path):
    from stablemtl_edge.data.dataset import SampleSource

    _write_scan(tmp_path)
    reader = DiodeReader(tmp_path)
    assert isinstance(reader, SampleSource) and reader.domain == "diode" and reader.labels("normal")
    assert set(reader[-1].labels) == set(reader.tasks) == {"depth", "normal"}
    with pytest.raises(IndexError):
        reader[len(reader)]


def test_scans_without_normals_have_depth_only_and_scene_filter(tmp_path):
    _write_scan(tmp_path, scene="outdoor", name="00022_00194_outdoor_000_000", normals=False)
    _write_scan(tmp_path, scene="indoors")
    assert len(DiodeReader(tmp_path)) == 2
    only_out = DiodeReader(tmp_path, scenes=("outdoor",))
    assert len(only_out) == 1 and set(only_out[0].labels) == {"depth"}


def test_missing_depth_file_is_a_user_error(tmp_path):
    _write_scan(tmp_path)
    next(tmp_path.rglob("*_depth.npy")).unlink()
    with pytest.raises(StableMTLError, match="DIODE depth"):
        DiodeReader(tmp_path)[0]


def test_normals_in_another_convention_are_refused(tmp_path):
    _write_scan(tmp_path)
    path = next(tmp_path.rglob("*_normal.npy"))
    np.save(path, -np.load(path))  # surfaces facing away from the camera after the fix
    with pytest.raises(StableMTLError, match="point away from the camera"):
        DiodeReader(tmp_path)[0]
