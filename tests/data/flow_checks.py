"""Flow checks shared by the pair and clip tests of the procedural generator."""

from __future__ import annotations

import cv2
import numpy as np

from stablemtl_edge.data.sample import Sample


def backproject(depth: np.ndarray, K: np.ndarray) -> np.ndarray:
    """Camera-frame points ``(H, W, 3)`` of a planar depth map (OpenCV axes)."""
    H, W = depth.shape
    u, v = np.meshgrid(np.arange(W), np.arange(H))
    return np.stack([(u - K[0, 2]) / K[0, 0] * depth, (v - K[1, 2]) / K[1, 1] * depth, depth], axis=-1)


def check_flow_warps_frame2_onto_frame1(s: Sample) -> int:
    """Warp ``frame2`` by the optical flow label and compare with ``frame1`` away from edges; returns the
    number of pixels checked."""
    flow = s.labels["optical_flow"]
    H, W = s.frame1.shape[:2]
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
    return err.size


def check_scene_flow_projects_to_optical_flow(s: Sample) -> None:
    """``project(X1 + scene_flow)`` lands on the pixel plus its optical flow."""
    K = s.intrinsics.astype(np.float64)
    sf = s.labels["scene_flow"]
    flow = s.labels["optical_flow"]
    np.testing.assert_array_equal(sf.valid, flow.valid)
    d = s.labels["depth"]
    P1 = backproject(np.where(d.valid, d.value, 1.0).astype(np.float64), K)
    P2 = P1 + sf.value
    H, W = d.value.shape
    u, v = np.meshgrid(np.arange(W), np.arange(H))
    u2 = K[0, 0] * P2[..., 0] / P2[..., 2] + K[0, 2]
    v2 = K[1, 1] * P2[..., 1] / P2[..., 2] + K[1, 2]
    m = flow.valid
    assert m.sum() > 200
    np.testing.assert_allclose(u2[m] - u[m], flow.value[m][:, 0], atol=2e-3)
    np.testing.assert_allclose(v2[m] - v[m], flow.value[m][:, 1], atol=2e-3)
