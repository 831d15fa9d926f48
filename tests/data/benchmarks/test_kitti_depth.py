import cv2
import numpy as np
import pytest

from stablemtl_edge.errors import StableMTLError
from stablemtl_edge.data.benchmarks import EvalCrop, KittiDepthReader
from stablemtl_edge.data.benchmarks.kitti_depth import crop_mask


def _write(tmp_path):
    h, w = 375, 1242
    rgb_rel = "2011_09_26/2011_09_26_drive_0002_sync/image_02/data/0000000069.png"
    depth_rel = "2011_09_26_drive_0002_sync/proj_depth/groundtruth/image_02/0000000069.png"
    (tmp_path / "raw" / rgb_rel).parent.mkdir(parents=True)
    (tmp_path / "gt" / depth_rel).parent.mkdir(parents=True)
    rgb = np.zeros((h, w, 3), np.uint8)
    rgb[-1, :, 2] = 255  # blue bottom row (RGB)
    cv2.imwrite(str(tmp_path / "raw" / rgb_rel), rgb[..., ::-1])
    depth = np.zeros((h, w), np.uint16)
    depth[::3, ::5] = (12.5 * 256)  # sparse LiDAR returns, 12.5 m
    depth[-1, -1] = 65535
    cv2.imwrite(str(tmp_path / "gt" / depth_rel), depth)
    split = tmp_path / "eigen_test_files_with_gt.txt"
    split.write_text(f"{rgb_rel} {depth_rel} 721.5377\n{rgb_rel} None 721.5377\n\n")
    return split, depth


def test_projected_lidar_png_kb_crop_and_garg_region(tmp_path):
    split, raw = _write(tmp_path)
    reader = KittiDepthReader(split, tmp_path / "raw", tmp_path / "gt")
    assert len(reader) == 1  # the `None` line has no ground truth
    s = reader[0]
    assert s.frame1.shape == (352, 1216, 3) and s.frame1[-1, 0, 2] == 255
    lab = s.labels["depth"]
    top, left = 375 - 352, (1242 - 1216) // 2
    np.testing.assert_allclose(lab.value, raw[top:, left : left + 1216].astype(np.float32) / 256.0)
    assert lab.value.max() == pytest.approx(12.5)  # the 65535 return at the last column lies outside the kb crop
    region = crop_mask((352, 1216), EvalCrop.GARG)
    np.testing.assert_array_equal(lab.valid, region & (lab.value > 0))
    assert not lab.valid[:143].any()  # Garg crop starts at 0.40810811 * 352 = 143.65
    assert lab.valid[143:, 44:1172].any() and not lab.valid[:, :43].any()


def test_eigen_region_and_no_kb_crop(tmp_path):
    split, _ = _write(tmp_path)
    s = KittiDepthReader(split, tmp_path / "raw", tmp_path / "gt", crop=EvalCrop.EIGEN, kb_crop=False)[0]
    assert s.frame1.shape == (375, 1242, 3)
    rows = np.nonzero(crop_mask((375, 1242), EvalCrop.EIGEN).any(axis=1))[0]
    assert rows[0] == int(0.3324324 * 375) and rows[-1] == int(0.91351351 * 375) - 1


def test_bad_split_line(tmp_path):
    split = tmp_path / "s.txt"
    split.write_text("only_one_column.png\n")
    with pytest.raises(StableMTLError, match="expected"):
        KittiDepthReader(split, tmp_path)
