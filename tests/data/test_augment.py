"""Augmentation and resizing keep labels consistent with the frames (checked on exact procedural data)."""

from __future__ import annotations

import numpy as np
import pytest

from stablemtl_edge.errors import StableMTLError
from stablemtl_edge.data.sample import Label, Sample
from stablemtl_edge.data.augment import Augmentation, color_jitter, hflip, resize_sample, vflip
from stablemtl_edge.data.procedural import AVAILABLE_TASKS, Domain, ProceduralSource

SIZE = (32, 40)


@pytest.fixture(scope="module")
def driving() -> Sample:
    return ProceduralSource("driving", SIZE, 4, seed=3, tasks=AVAILABLE_TASKS[Domain.DRIVING], noise=0.0)[0]


def _projection_error(s: Sample) -> np.ndarray:
    """|projected scene flow - optical flow| in pixels on valid pixels, through the sample's intrinsics."""
    K = s.intrinsics.astype(np.float64)
    d, sf, fl = s.labels["depth"], s.labels["scene_flow"], s.labels["optical_flow"]
    H, W = d.value.shape
    u, v = np.meshgrid(np.arange(W), np.arange(H))
    z = np.where(d.valid, d.value, 1.0)
    P = np.stack([(u - K[0, 2]) / K[0, 0] * z, (v - K[1, 2]) / K[1, 1] * z, z], -1) + sf.value
    m = fl.valid & d.valid
    assert m.sum() > 50
    du = K[0, 0] * P[..., 0][m] / P[..., 2][m] + K[0, 2] - u[m] - fl.value[..., 0][m]
    dv = K[1, 1] * P[..., 1][m] / P[..., 2][m] + K[1, 2] - v[m] - fl.value[..., 1][m]
    return np.hypot(du, dv)


@pytest.mark.parametrize("flip", [hflip, vflip])
def test_flips_keep_geometry_consistent(driving, flip):
    f = flip(driving)
    assert _projection_error(f).max() < 2e-3
    axis = 1 if flip is hflip else 0
    comp = 0 if flip is hflip else 1
    np.testing.assert_array_equal(f.frame1, np.flip(driving.frame1, axis))
    np.testing.assert_array_equal(f.labels["semantic"].value, np.flip(driving.labels["semantic"].value, axis))
    n0, n1 = driving.labels["normal"].value, f.labels["normal"].value
    np.testing.assert_array_equal(n1[..., comp], -np.flip(n0, axis)[..., comp])
    np.testing.assert_array_equal(n1[..., 2], np.flip(n0, axis)[..., 2])
    np.testing.assert_array_equal(flip(f).frame1, driving.frame1)  # an involution


def test_hflip_normals_match_the_mirrored_depth():
    # After a flip, the normal of a surface must still agree with the (flipped) depth's gradient.
    s = hflip(ProceduralSource("indoor", SIZE, 2, seed=1, noise=0.0)[0])
    K = s.intrinsics.astype(np.float64)
    z = s.labels["depth"].value.astype(np.float64)
    H, W = z.shape
    u, v = np.meshgrid(np.arange(W), np.arange(H))
    P = np.stack([(u - K[0, 2]) / K[0, 0] * z, (v - K[1, 2]) / K[1, 1] * z, z], -1)
    n = np.cross(P[1:-1, 2:] - P[1:-1, :-2], P[2:, 1:-1] - P[:-2, 1:-1])
    n = n / np.linalg.norm(n, axis=-1, keepdims=True) * np.array([1, -1, -1])
    gt = s.labels["normal"].value[1:-1, 1:-1]
    cos = np.abs((n * gt).sum(-1))
    assert np.median(cos) > 0.999


def test_color_jitter_same_map_on_both_frames(driving):
    j = color_jitter(driving, 1.1, 0.9, 1.2)
    assert not np.array_equal(j.frame1, driving.frame1)
    # Identical pixels in the two frames stay identical after jitter.
    same = (driving.frame1 == driving.frame2).all(-1)
    assert same.any()
    np.testing.assert_array_equal(j.frame1[same], j.frame2[same])
    assert j.labels is driving.labels


def test_augmentation_recipe_per_task_and_domain():
    flying = ProceduralSource("flying", SIZE, 2, seed=2, noise=0.0)[0]
    aug = Augmentation(hflip_prob=0.0, vflip_prob=1.0, jitter_prob=0.0)
    rng = np.random.default_rng(0)
    np.testing.assert_array_equal(aug(flying, "optical_flow", rng).frame1, np.flip(flying.frame1, 0))
    indoor = ProceduralSource("indoor", SIZE, 2, seed=2)[0]
    np.testing.assert_array_equal(aug(indoor, "depth", rng).frame1, indoor.frame1)  # no vflip outside flows
    with pytest.raises(StableMTLError, match="hflip_prob must be a probability"):
        Augmentation(hflip_prob=2.0)


def test_resize_scales_flow_keeps_ids_and_masks(driving):
    r = resize_sample(driving, (16, 20))
    assert r.frame1.shape == (16, 20, 3) and r.frame2.shape == (16, 20, 3)
    ids = r.labels["semantic"].value
    assert set(np.unique(ids)) <= set(np.unique(driving.labels["semantic"].value))  # nearest: no new ids
    # Flow halves with the image and the downsized sample stays geometrically consistent (up to the
    # difference between nearest-sampled depth and area-averaged flow inside each 2x2 block).
    err = _projection_error(r)
    assert np.median(err) < 0.05 and np.percentile(err, 90) < 0.2
    fl = r.labels["optical_flow"]
    assert np.abs(fl.value[fl.valid]).max() <= np.abs(driving.labels["optical_flow"].value).max() / 2 + 1e-4
    n = r.labels["normal"]
    np.testing.assert_allclose(np.linalg.norm(n.value[n.valid], axis=-1), 1.0, atol=1e-5)


def test_resize_never_mixes_invalid_pixels():
    value = np.ones((4, 4), np.float32)
    value[:, :2] = 100.0  # invalid garbage
    valid = np.ones((4, 4), bool)
    valid[:, :2] = False
    s = Sample(np.zeros((4, 4, 3), np.uint8), None, {"shading": Label(value, valid)}, "test")
    r = resize_sample(s, (2, 2))
    assert r.labels["shading"].valid.tolist() == [[False, True], [False, True]]
    np.testing.assert_allclose(r.labels["shading"].value[:, 1], 1.0)
