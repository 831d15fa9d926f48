"""Geometry consistency of the procedural scenes: the labels agree with each other and with the images."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from stablemtl_edge.errors import StableMTLError
from stablemtl_edge.sample import Sample
from stablemtl_edge.tasks import get_task
from stablemtl_edge.training.data.procedural import (
    DOMAIN_TASKS,
    SPLIT_SEEDS,
    Domain,
    ProceduralSource,
    procedural_split,
    srgb_encode,
)

SIZE = (48, 64)
ALL_FLOW = ("depth", "normal", "optical_flow", "scene_flow", "albedo", "shading")


def _source(domain: str, tasks=None, noise: float = 0.0, seed: int = 5) -> ProceduralSource:
    return ProceduralSource(domain, size=SIZE, length=8, seed=seed, tasks=tasks, noise=noise)


@pytest.mark.parametrize("domain", [d.value for d in Domain])
def test_official_label_sets_and_units(domain):
    sample = _source(domain, noise=0.01)[0]
    assert isinstance(sample, Sample)
    assert sample.domain == domain
    assert tuple(sample.labels) == DOMAIN_TASKS[Domain(domain)]
    assert sample.frame1.shape == SIZE + (3,) and sample.frame1.dtype == np.uint8
    two = any(get_task(t).frames == 2 for t in sample.labels)
    assert (sample.frame2 is not None) == two
    for key, lab in sample.labels.items():
        assert lab.valid.shape == SIZE and lab.valid.dtype == bool
        assert lab.valid.mean() > 0.2, key
        image, valid = sample.encode(key)  # every label goes through the task codec
        assert image.shape == SIZE + (3,) and np.abs(image).max() <= 1.0
        assert valid.any()
    if "normal" in sample.labels:
        n = sample.labels["normal"]
        np.testing.assert_allclose(np.linalg.norm(n.value[n.valid], axis=1), 1.0, atol=1e-5)
        # Visible surfaces face the camera: the normal opposes the pixel's viewing ray (OpenGL axes).
        K = sample.intrinsics
        u, v = np.meshgrid(np.arange(SIZE[1]), np.arange(SIZE[0]))
        ray_gl = np.stack([(u - K[0, 2]) / K[0, 0], -(v - K[1, 2]) / K[1, 1], -np.ones(SIZE)], axis=-1)
        assert ((n.value * ray_gl).sum(-1)[n.valid] < 0).all()
    if "semantic" in sample.labels:
        ids = sample.labels["semantic"].value
        assert set(np.unique(ids)) <= set(range(8)) | {255}
        assert 6 in ids and 0 in ids  # sky and road in every street


def test_deterministic_per_seed_and_index_and_splits_differ():
    a, b = _source("driving", noise=0.01), _source("driving", noise=0.01)
    np.testing.assert_array_equal(a[3].frame1, b[3].frame1)
    np.testing.assert_array_equal(a[3].labels["optical_flow"].value, b[3].labels["optical_flow"].value)
    assert not np.array_equal(a[3].frame1, a[4].frame1)
    frames = {s: procedural_split(s, "indoor", SIZE, 4)[0].frame1 for s in ("train", "val", "test")}
    assert len({f.tobytes() for f in frames.values()}) == 3
    assert procedural_split("val", "indoor", SIZE, 4).seed == SPLIT_SEEDS["val"]


def test_user_errors_are_one_line():
    with pytest.raises(StableMTLError, match="unknown procedural domain `forest`"):
        ProceduralSource("forest")
    with pytest.raises(StableMTLError, match="cannot label semantic"):
        ProceduralSource("indoor", tasks=["semantic"])
    with pytest.raises(StableMTLError, match="at least 8x8"):
        ProceduralSource("indoor", size=(4, 4))


def _backproject(depth: np.ndarray, K: np.ndarray) -> np.ndarray:
    H, W = depth.shape
    u, v = np.meshgrid(np.arange(W), np.arange(H))
    return np.stack([(u - K[0, 2]) / K[0, 0] * depth, (v - K[1, 2]) / K[1, 1] * depth, depth], axis=-1)


@pytest.mark.parametrize("domain", ["indoor", "driving", "flying"])
def test_normals_agree_with_depth_gradient_on_smooth_surfaces(domain):
    src = _source(domain, tasks=("depth", "normal"))
    errors = []
    for i in range(2):
        r = src.render(i)
        depth = np.where(r.hit, r.depth, 1.0)  # sky (inf) is masked out below through prim1
        P = _backproject(depth, r.intrinsics.astype(np.float64))  # OpenCV camera frame
        dx = P[1:-1, 2:] - P[1:-1, :-2]
        dy = P[2:, 1:-1] - P[:-2, 1:-1]
        n = np.cross(dx, dy)
        n /= np.linalg.norm(n, axis=-1, keepdims=True)
        n_gl = n * np.array([1.0, -1.0, -1.0])
        n_gl *= np.sign((n_gl * r.normal[1:-1, 1:-1]).sum(-1, keepdims=True))
        # Smooth: the whole 3x3 neighbourhood lies on one primitive with no depth jump.
        prim = r.prim1
        same = np.ones_like(prim[1:-1, 1:-1], dtype=bool)
        for dv in (-1, 0, 1):
            for du in (-1, 0, 1):
                same &= prim[1 + dv : prim.shape[0] - 1 + dv, 1 + du : prim.shape[1] - 1 + du] == prim[1:-1, 1:-1]
        same &= prim[1:-1, 1:-1] >= 0
        # ... and away from box edges and cylinder rims, where the normal is discontinuous.
        gt = r.normal
        for dv in (-1, 0, 1):
            for du in (-1, 0, 1):
                nb = gt[1 + dv : gt.shape[0] - 1 + dv, 1 + du : gt.shape[1] - 1 + du]
                same &= (nb * gt[1:-1, 1:-1]).sum(-1) > np.cos(np.deg2rad(10))
        cos = np.clip((n_gl * gt[1:-1, 1:-1]).sum(-1), -1, 1)
        errors.append(np.degrees(np.arccos(cos[same])))
    err = np.concatenate(errors)
    assert err.size > 500
    assert np.median(err) < 0.5 and np.percentile(err, 95) < 3.0, (np.median(err), np.percentile(err, 95))


@pytest.mark.parametrize("domain", ["driving", "flying", "indoor"])
def test_warping_frame2_by_flow_reproduces_frame1(domain):
    src = _source(domain, tasks=ALL_FLOW)
    checked = 0
    for i in range(2):
        s = src[i]
        flow = s.labels["optical_flow"]
        H, W = SIZE
        u, v = np.meshgrid(np.arange(W, dtype=np.float32), np.arange(H, dtype=np.float32))
        f1 = s.frame1.astype(np.float32)
        warped = cv2.remap(s.frame2.astype(np.float32), u + flow.value[..., 0], v + flow.value[..., 1],
                           cv2.INTER_LINEAR)
        # Bilinear interpolation across a texture or object edge is not exact: compare away from edges.
        edges = cv2.dilate((cv2.Canny(s.frame2, 40, 80) > 0).astype(np.uint8), np.ones((3, 3), np.uint8))
        far_from_edge = cv2.remap(edges.astype(np.float32), u + flow.value[..., 0], v + flow.value[..., 1],
                                  cv2.INTER_NEAREST) == 0
        m = flow.valid & far_from_edge
        err = np.abs(warped - f1).mean(-1)[m]
        zero = np.abs(s.frame2.astype(np.float32) - f1).mean(-1)[m]
        assert err.size > 200
        # Only shading changes of rotating objects and 8-bit rounding remain.
        assert np.median(err) < 2.0 and np.mean(err) < 4.0, (np.median(err), np.mean(err))
        assert np.mean(err) < 0.5 * np.mean(zero) or np.mean(zero) < 2.0
        checked += err.size
    assert checked > 0


@pytest.mark.parametrize("domain", ["driving", "flying"])
def test_scene_flow_projects_to_optical_flow(domain):
    src = _source(domain, tasks=ALL_FLOW)
    for i in range(2):
        s = src[i]
        K = s.intrinsics.astype(np.float64)
        sf = s.labels["scene_flow"]
        flow = s.labels["optical_flow"]
        np.testing.assert_array_equal(sf.valid, flow.valid)
        d = s.labels["depth"]
        P1 = _backproject(np.where(d.valid, d.value, 1.0).astype(np.float64), K)
        P2 = P1 + sf.value
        H, W = SIZE
        u, v = np.meshgrid(np.arange(W), np.arange(H))
        u2 = K[0, 0] * P2[..., 0] / P2[..., 2] + K[0, 2]
        v2 = K[1, 1] * P2[..., 1] / P2[..., 2] + K[1, 2]
        m = flow.valid
        assert m.sum() > 200
        np.testing.assert_allclose(u2[m] - u[m], flow.value[m][:, 0], atol=2e-3)
        np.testing.assert_allclose(v2[m] - v[m], flow.value[m][:, 1], atol=2e-3)
        assert np.abs(flow.value[m]).max() > 0.5  # there is motion to check


def test_flow_validity_marks_out_of_frame_and_occluded_points():
    src = _source("driving", tasks=ALL_FLOW)
    s = src[1]
    flow, depth = s.labels["optical_flow"], s.labels["depth"]
    H, W = SIZE
    u, v = np.meshgrid(np.arange(W), np.arange(H))
    u2, v2 = u + flow.value[..., 0], v + flow.value[..., 1]
    assert ((u2[flow.valid] >= 0) & (u2[flow.valid] <= W - 1) & (v2[flow.valid] >= 0) & (v2[flow.valid] <= H - 1)).all()
    assert not flow.valid[~depth.valid].any()  # sky has no point to follow
    assert (depth.valid & ~flow.valid).sum() > 0  # forward motion pushes the near road out of frame


@pytest.mark.parametrize("domain", ["indoor", "driving"])
def test_albedo_times_shading_is_the_linear_image(domain):
    src = _source(domain, tasks=("albedo", "shading", "depth"))
    r = src.render(0)
    linear = r.albedo * r.shading[..., None]
    np.testing.assert_allclose(r.linear1[r.hit], linear[r.hit], atol=1e-6)
    assert r.shading[r.hit].min() >= 0 and r.shading.max() <= 1 and r.albedo.max() <= 1
    # With noise off, the frame is exactly that linear image tone-mapped and rounded to 8 bits.
    display = srgb_encode(linear) * 255.0
    assert np.abs(r.frame1[r.hit].astype(np.float64) - display[r.hit]).max() <= 0.5 + 1e-6


@pytest.mark.parametrize("domain", ["indoor", "driving", "flying"])
def test_culled_occlusion_query_equals_brute_force(domain):
    """The culling in first_hit_depth (screen rectangles, depth bounds, plane sides, rooms) loses nothing."""
    from stablemtl_edge.training.data.procedural import build_scene
    from stablemtl_edge.training.data.raycast import first_hit_depth

    scene = build_scene(domain, *SIZE, np.random.default_rng(11))
    cam = scene.cam2
    rng = np.random.default_rng(0)
    n = 3000
    uv = rng.uniform([0, 0], [SIZE[1] - 1, SIZE[0] - 1], (n, 2))
    z = rng.uniform(0.2, 60.0, n)
    K = cam.K
    pts = np.stack([(uv[:, 0] - K[0, 2]) / K[0, 0] * z, (uv[:, 1] - K[1, 2]) / K[1, 1] * z, z])
    fast = first_hit_depth(cam, scene.prims, 1, pts)
    dirs = (cam.pose.rot @ (pts / z)).astype(np.float32)
    brute = np.full(n, np.inf, dtype=np.float32)
    for prim in scene.prims:
        pose = prim.pose_at(1)
        t = prim.intersect(pose.rot.T @ (cam.pose.pos - pose.pos), pose.rot.T.astype(np.float32) @ dirs)
        brute = np.minimum(brute, t)
    # Culling may skip surfaces beyond the query point only; the visibility verdict must be identical.
    np.testing.assert_array_equal(fast >= z * (1 - 1e-4), brute >= z * (1 - 1e-4))
    hidden = brute < z * (1 - 1e-4)
    assert hidden.any() and (~hidden).any()
    np.testing.assert_allclose(fast[hidden], brute[hidden], rtol=1e-6)
