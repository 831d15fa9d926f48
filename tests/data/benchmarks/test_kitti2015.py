import cv2
import numpy as np
import pytest

from stablemtl_edge.errors import StableMTLError
from stablemtl_edge.data.benchmarks import Kitti2015Reader
from stablemtl_edge.data.benchmarks.kitti2015 import decode_flow_png, encode_flow_png, read_calibration

FX, CX, CY, BASELINE = 721.5377, 609.5593, 172.854, 0.54
P2 = [FX, 0, CX, 44.85728, 0, FX, CY, 0.2163791, 0, 0, 1, 0.002745884]
P3 = [FX, 0, CX, 44.85728 - FX * BASELINE, 0, FX, CY, 0.2163791, 0, 0, 1, 0.002745884]


def _calib_text():
    fmt = lambda v: " ".join(f"{x:.12e}" for x in v)  # noqa: E731
    return f"calib_time: 09-Jan-2012 13:57:47\ncorner_dist: 9.950000e-02\nP_rect_02: {fmt(P2)}\nP_rect_03: {fmt(P3)}\n"


def test_flow_png_round_trip(tmp_path):
    rng = np.random.default_rng(8)
    flow = np.round(rng.uniform(-300, 300, (5, 7, 2)) * 64) / 64
    valid = rng.random((5, 7)) > 0.3
    cv2.imwrite(str(tmp_path / "f.png"), encode_flow_png(flow, valid))
    back, v = decode_flow_png(cv2.imread(str(tmp_path / "f.png"), cv2.IMREAD_UNCHANGED))
    np.testing.assert_array_equal(v, valid)
    np.testing.assert_allclose(back[valid], flow[valid])


def test_flow_channel_order_in_file(tmp_path):
    # KITTI's devkit writes R = u, G = v, B = valid; OpenCV sees that file as BGR.
    png = np.zeros((1, 1, 3), np.uint16)
    png[0, 0] = (1, 2**15 - 64, 2**15 + 128)  # B valid, G = v = -1, R = u = +2
    flow, valid = decode_flow_png(png)
    np.testing.assert_allclose(flow[0, 0], [2.0, -1.0]) and valid[0, 0]


def _write_pair(root, calib_root, fid="000000"):
    h, w = 8, 12
    for d in ("image_2", "flow_occ", "disp_occ_0", "disp_occ_1"):
        (root / d).mkdir(parents=True, exist_ok=True)
    (calib_root / "calib_cam_to_cam").mkdir(parents=True, exist_ok=True)
    (calib_root / "calib_cam_to_cam" / f"{fid}.txt").write_text(_calib_text())
    cv2.imwrite(str(root / "image_2" / f"{fid}_10.png"), np.full((h, w, 3), 10, np.uint8))
    cv2.imwrite(str(root / "image_2" / f"{fid}_11.png"), np.full((h, w, 3), 20, np.uint8))
    # every pixel sees a point at 10 m that moves by a known 3-D displacement (OpenCV axes)
    motion = np.array([0.4, -0.2, -1.5])
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    z0 = np.full((h, w), 10.0)
    p0 = np.stack([(xs - CX) * z0 / FX, (ys - CY) * z0 / FX, z0], axis=-1)
    p1 = p0 + motion
    u = FX * p1[..., 0] / p1[..., 2] + CX - xs
    v = FX * p1[..., 1] / p1[..., 2] + CY - ys
    valid = np.ones((h, w), bool)
    valid[0, 0] = False
    cv2.imwrite(str(root / "flow_occ" / f"{fid}_10.png"), encode_flow_png(np.dstack([u, v]), valid))
    d0 = np.round(FX * BASELINE / z0 * 256).astype(np.uint16)
    d1 = np.round(FX * BASELINE / p1[..., 2] * 256).astype(np.uint16)
    d1[2, 3] = 0  # unknown disparity at t+1
    cv2.imwrite(str(root / "disp_occ_0" / f"{fid}_10.png"), d0)
    cv2.imwrite(str(root / "disp_occ_1" / f"{fid}_10.png"), d1)
    return motion, np.dstack([u, v]), valid


def test_scene_flow_from_disparities_and_calibration(tmp_path):
    motion, flow, valid = _write_pair(tmp_path / "training", tmp_path / "calib" / "training")
    reader = Kitti2015Reader(tmp_path / "training", tmp_path / "calib" / "training")
    s = reader[0]
    assert s.frame2 is not None and s.frame2[0, 0, 0] == 20
    of = s.labels["optical_flow"]
    np.testing.assert_array_equal(of.valid, valid)
    np.testing.assert_allclose(of.value[valid], flow[valid], atol=1 / 128)
    sf = s.labels["scene_flow"]
    assert not sf.valid[0, 0] and not sf.valid[2, 3] and sf.valid.sum() == valid.size - 2
    # quantisation: disparity to 1/256 px, flow to 1/64 px
    np.testing.assert_allclose(sf.value[sf.valid], np.broadcast_to(motion, (sf.valid.sum(), 3)), atol=0.03)
    np.testing.assert_allclose(s.intrinsics, [[FX, 0, CX], [0, FX, CY], [0, 0, 1]])


def test_calibration_parse_and_flow_only_without_calib(tmp_path):
    _write_pair(tmp_path / "training", tmp_path / "calib")
    calib = read_calibration(tmp_path / "calib" / "calib_cam_to_cam" / "000000.txt")
    assert calib.baseline == pytest.approx(BASELINE)
    s = Kitti2015Reader(tmp_path / "training")[0]
    assert set(s.labels) == {"optical_flow"}
    (tmp_path / "bad.txt").write_text("P_rect_02: 1 2 3\n")
    with pytest.raises(StableMTLError, match="P_rect_02"):
        read_calibration(tmp_path / "bad.txt")
