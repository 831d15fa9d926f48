"""Recording the feeds each component really sees, through runner observers of the real runtime."""

from __future__ import annotations

import numpy as np
import pytest

from stablemtl_edge.calibration.data import load_calibration_set
from stablemtl_edge.calibration.record import RecordedFeeds, record_feeds
from stablemtl_edge.errors import StableMTLError
from stablemtl_edge.artifact.manifest import Component, Manifest, Mode, Precision
from stablemtl_edge.runtime import Runtime
from stablemtl_edge.tasks import NUM_TASKS, TASKS
from tests.runtime.artifact_zoo import HEIGHT, WIDTH, ToyModel


def test_observer_sees_every_feed_and_can_be_removed(tmp_path):
    art = ToyModel().write(tmp_path / "art", Mode.SINGLE)
    seen = []

    def observer(entry, feed):
        seen.append((entry.component, {k: v.copy() for k, v in feed.items()}))

    frame = np.full((HEIGHT, WIDTH, 3), 90, np.uint8)
    with Runtime.from_artifacts(art, tasks="depth,normal") as rt:
        rt.runners[Component.UNET].add_observer(observer)
        rt.predict(frame)
        rt.runners[Component.UNET].remove_observer(observer)
        rt.predict(frame)
    assert [c for c, _ in seen] == [Component.UNET]
    np.testing.assert_array_equal(seen[0][1]["task_id"], [0, 1])  # normal, depth in canonical order


def test_record_feeds_runs_the_multi_stream_pipeline_on_pairs(tmp_path):
    toy = ToyModel()
    art = toy.write(tmp_path / "art", Mode.MULTI)
    calib = load_calibration_set("procedural", 2, (HEIGHT, WIDTH))
    files = record_feeds(art, Manifest.load(art), calib, [Component.UNET, Component.UNET_MAIN], tmp_path / "rec",
                         progress=False)
    assert set(files) == {Component.UNET, Component.UNET_MAIN}
    assert len(files[Component.UNET]) == len(files[Component.UNET_MAIN]) == 2  # one call each per pair
    reader = RecordedFeeds(files[Component.UNET])
    first = reader.get_next()
    assert reader.get_next() is not None and reader.get_next() is None
    # The auxiliary call: every task, [z(t), z(t+1) for flows else z(t), zeros].
    np.testing.assert_array_equal(first["task_id"], np.arange(NUM_TASKS))
    sample = first["sample"]
    pair = calib.pairs[0]
    z1 = toy.np_encoder(pair.frame1[None])[0]
    z2 = toy.np_encoder(pair.frame2[None])[0]
    for t in TASKS:
        np.testing.assert_allclose(sample[t.index, :4], z1, atol=1e-5)
        np.testing.assert_allclose(sample[t.index, 4:8], z2 if t.frames == 2 else z1, atol=1e-5)
        assert not sample[t.index, 8:].any()
    main = RecordedFeeds(files[Component.UNET_MAIN]).get_next()
    assert main["aux_feat_00"].shape[:2] == (NUM_TASKS, NUM_TASKS)  # every main task, all 7 auxiliary slots
    _, feats = toy.np_unet(sample, first["task_id"])
    np.testing.assert_allclose(main["aux_feat_00"][0], feats[0], atol=1e-5)  # the real auxiliary features


def test_recording_needs_fp32(tmp_path):
    art = ToyModel().write(tmp_path / "art", Mode.SINGLE, precision=Precision.FP16)
    calib = load_calibration_set("procedural", 1, (HEIGHT, WIDTH))
    with pytest.raises(StableMTLError, match="no fp32"):
        record_feeds(art, Manifest.load(art), calib, [Component.UNET], tmp_path / "rec", progress=False)
