"""The torch-free runtime on a real export equals the torch reference predictor.

Frames are taken at odd camera sizes too: the runtime letterboxes them, so the comparison is made on the
processing-size frame (where the reference runs) and on a letterboxed one against the runtime's own
crop-and-resize of the reference.
"""

import numpy as np
import pytest

from stablemtl_edge.artifact.manifest import Manifest
from stablemtl_edge.runtime import Runtime
from stablemtl_edge.tasks import TASK_NAMES

torch = pytest.importorskip("torch", reason="the torch reference needs the `export` extra")


@pytest.fixture(scope="module")
def reference(tiny_checkpoint):
    from stablemtl_edge.model.checkpoint import load_pretrained

    return load_pretrained(tiny_checkpoint)


@pytest.fixture(scope="module")
def frames(tiny_artifacts):
    from skimage import data

    m = Manifest.load(tiny_artifacts)
    h, w = m.profile.height, m.profile.width
    photo = data.astronaut()
    return photo[100 : 100 + h, 150 : 150 + w].copy(), photo[102 : 102 + h, 154 : 154 + w].copy()


def _max_error(task, a, b):
    if task == "semantic":
        return float((a != b).mean())  # share of pixels whose class differs
    return float(np.abs(a.astype(np.float64) - b).max())


@pytest.mark.parametrize("mode", ["single", "multi"])
def test_runtime_predict_equals_the_torch_reference(tiny_artifacts, reference, frames, mode):
    f1, f2 = frames
    want = reference.predict(f1, f2, mode=mode)
    manifest = Manifest.load(tiny_artifacts)
    with Runtime.from_artifacts(tiny_artifacts, mode=mode, backend="onnxruntime") as rt:
        got = rt.predict(f1, f2)
        counters = rt.counters
    assert set(got) == set(TASK_NAMES)
    for task in TASK_NAMES:
        assert got[task].shape == want[task].shape, task
        err = _max_error(task, got[task], want[task])
        # semantic: nearest-colour decoding may flip a pixel sitting on a colour boundary
        limit = 0.01 if task == "semantic" else manifest.tolerance.get(task, 1e-3)
        assert err <= limit, f"{task} ({mode}): {err} > {limit}"
    assert counters["unet_rows"] == 7
    assert counters["unet_main_rows"] == (7 if mode == "multi" else 0)


def test_streaming_single_stream_flow_uses_the_previous_frame(tiny_artifacts, reference, frames):
    f1, f2 = frames
    want = reference.predict(f1, f2, tasks=["optical_flow", "depth"], mode="single")
    with Runtime.from_artifacts(tiny_artifacts, tasks=["depth", "optical_flow"], mode="single") as rt:
        first = rt.infer(f1)
        assert "optical_flow" not in first and "depth" in first
        second = rt.infer(f2)
    tol = Manifest.load(tiny_artifacts).tolerance
    assert _max_error("optical_flow", second.predictions["optical_flow"].value, want["optical_flow"]) <= tol.get("optical_flow", 1e-3)
    assert _max_error("depth", first.predictions["depth"].value, want["depth"]) <= tol.get("depth", 1e-3)
