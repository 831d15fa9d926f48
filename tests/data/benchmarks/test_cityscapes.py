import cv2
import numpy as np
import pytest

from stablemtl_edge.errors import StableMTLError
from stablemtl_edge.data.benchmarks import CityscapesReader
from stablemtl_edge.tasks import IGNORE_ID


def _write(root, city="aachen", stem="aachen_000000_000019"):
    img_dir = root / "leftImg8bit" / "val" / city
    gt_dir = root / "gtFine" / "val" / city
    img_dir.mkdir(parents=True)
    gt_dir.mkdir(parents=True)
    rgb = np.zeros((8, 16, 3), np.uint8)
    rgb[..., 0] = 200  # red in RGB
    cv2.imwrite(str(img_dir / f"{stem}_leftImg8bit.png"), rgb[..., ::-1])
    ids = np.array([[7, 11, 17, 19, 20, 21, 23, 26, 27, 28, 8, 24, 29, 0, 33, 31]] * 8, np.uint8)
    cv2.imwrite(str(gt_dir / f"{stem}_gtFine_labelIds.png"), ids)
    # distractors the reader must not pick up
    cv2.imwrite(str(gt_dir / f"{stem}_gtFine_color.png"), rgb)
    return rgb


def test_label_ids_map_to_the_eight_classes(tmp_path):
    rgb = _write(tmp_path)
    reader = CityscapesReader(tmp_path)
    assert len(reader) == 1
    s = reader[0]
    np.testing.assert_array_equal(s.frame1, rgb)  # RGB order
    lab = s.label("semantic")
    i = IGNORE_ID
    np.testing.assert_array_equal(lab.value[0], [0, 1, 2, 3, 4, 5, 6, 7, 7, 7, i, i, i, i, i, i])
    np.testing.assert_array_equal(lab.valid, lab.value != IGNORE_ID)
    assert s.domain == "cityscapes" and s.frame2 is None


def test_resize_to_evaluation_size_uses_nearest_for_labels(tmp_path):
    _write(tmp_path)
    s = CityscapesReader(tmp_path, size=(4, 8))[0]
    assert s.frame1.shape == (4, 8, 3)
    assert set(np.unique(s.labels["semantic"].value)) <= {0, 1, 2, 3, 4, 5, 6, 7, IGNORE_ID}


def test_empty_folder_is_a_user_error(tmp_path):
    with pytest.raises(StableMTLError, match="no Cityscapes images"):
        CityscapesReader(tmp_path)
