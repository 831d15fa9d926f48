"""Procedural video clips: consecutive frames chain exactly, labels are exact, the camera moves smoothly."""

from __future__ import annotations

import numpy as np
import pytest

from stablemtl_edge.errors import StableMTLError
from tests.data.flow_checks import check_flow_warps_frame2_onto_frame1, check_scene_flow_projects_to_optical_flow
from stablemtl_edge.data.clip import ProceduralClip, procedural_clip
from stablemtl_edge.data.procedural import AVAILABLE_TASKS, Domain

SIZE = (48, 64)
FRAMES = 4


@pytest.fixture(scope="module", params=[d.value for d in Domain])
def clip(request):
    c = procedural_clip(request.param, SIZE, frames=FRAMES, seed=3, noise=0.0)  # noise-free, as the pair tests
    return c, list(c)


def test_consecutive_samples_chain_exactly_and_carry_every_available_label(clip):
    c, samples = clip
    assert len(samples) == FRAMES == len(c) and len(c.poses) == FRAMES + 1
    for t, s in enumerate(samples):
        assert tuple(s.labels) == AVAILABLE_TASKS[Domain(c.domain)]
        assert s.frame1.shape == SIZE + (3,) and s.frame2.shape == SIZE + (3,)
        np.testing.assert_array_equal(s.frame1, c.image(t))
        np.testing.assert_array_equal(s.frame2, c.image(t + 1))
    for a, b in zip(samples, samples[1:]):
        np.testing.assert_array_equal(a.frame2, b.frame1)


def test_random_access_and_a_new_object_give_the_same_samples(clip):
    c, samples = clip
    again = ProceduralClip(c.domain, SIZE, frames=FRAMES, seed=3, noise=0.0)
    for t in reversed(range(FRAMES)):  # reverse order: no reuse of a cached next image
        s = again[t]
        np.testing.assert_array_equal(s.frame1, samples[t].frame1)
        np.testing.assert_array_equal(s.frame2, samples[t].frame2)
        for key, lab in s.labels.items():
            np.testing.assert_array_equal(lab.value, samples[t].labels[key].value)
            np.testing.assert_array_equal(lab.valid, samples[t].labels[key].valid)
    other = procedural_clip(c.domain, SIZE, frames=FRAMES, seed=4, noise=0.0)
    assert not np.array_equal(other[0].frame1, samples[0].frame1)
    noisy = procedural_clip(c.domain, SIZE, frames=2, seed=3)  # sensor noise is drawn per frame: still chained
    np.testing.assert_array_equal(noisy[0].frame2, noisy[1].frame1)
    np.testing.assert_array_equal(noisy[1].frame1, procedural_clip(c.domain, SIZE, frames=2, seed=3)[1].frame1)


def test_flows_are_exact_between_consecutive_frames(clip):
    c, samples = clip
    for s in samples[:2]:
        check_flow_warps_frame2_onto_frame1(s)
        check_scene_flow_projects_to_optical_flow(s)
    if c.domain == "driving":  # vehicles drive: their scene flow differs from the static world's
        r = c.render(0)
        moving = np.array([p.motion is not None for p in c._prims])[np.maximum(r.prim1, 0)] & r.hit
        assert moving.any() and samples[0].labels["optical_flow"].valid[moving].any()


def test_the_camera_moves_smoothly(clip):
    c, samples = clip
    long = ProceduralClip(c.domain, SIZE, frames=40, seed=3)  # poses only: nothing is rendered
    pos = np.stack([p.pos for p in long.poses])
    steps = np.diff(pos, axis=0)
    assert np.linalg.norm(steps, axis=1).max() < 1.2  # metres per frame
    # Smooth: the step changes far less from frame to frame than it is long (no jumps or jitter).
    assert np.linalg.norm(np.diff(steps, axis=0), axis=1).max() < 0.1 * np.linalg.norm(steps, axis=1).max() + 1e-3
    angles = [np.degrees(np.arccos(np.clip((np.trace(a.rot.T @ b.rot) - 1) / 2, -1, 1)))
              for a, b in zip(long.poses, long.poses[1:])]
    assert max(angles) < 2.0 and np.abs(np.diff(angles)).max() < 0.5
    # And in the images: consecutive flows are alike (median end-point change well under a pixel).
    for a, b in zip(samples, samples[1:]):
        fa, fb = a.labels["optical_flow"], b.labels["optical_flow"]
        both = fa.valid & fb.valid
        assert np.median(np.linalg.norm(fa.value[both] - fb.value[both], axis=-1)) < 0.5


def test_clip_user_errors_are_one_line():
    with pytest.raises(StableMTLError, match="frames >= 1"):
        procedural_clip("driving", SIZE, frames=0)
    with pytest.raises(StableMTLError, match="cannot label semantic"):
        procedural_clip("indoor", SIZE, tasks=["semantic"])
    with pytest.raises(StableMTLError, match="unknown procedural domain"):
        procedural_clip("forest", SIZE)
    with pytest.raises(IndexError):
        procedural_clip("flying", SIZE, frames=2)[2]
