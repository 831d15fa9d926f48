import cv2
import numpy as np
import pytest

from stablemtl_edge.errors import StableMTLError
from stablemtl_edge.eval import TrivialBaseline, evaluate, fit_trivial_baseline, resize_prediction
from stablemtl_edge.data.sample import Label, Sample
from stablemtl_edge.tasks import IGNORE_ID


def _samples(n=3, h=16, w=24):
    rng = np.random.default_rng(7)
    out = []
    for i in range(n):
        # piecewise-constant labels so that a half-resolution prediction upsamples without error
        blocks = lambda c: np.kron(rng.random((h // 2, w // 2, c)), np.ones((2, 2, 1)))  # noqa: E731
        depth = 1.0 + 9.0 * blocks(1)[..., 0]
        normal = blocks(3) - 0.5
        normal[..., 2] = 1.0
        normal /= np.linalg.norm(normal, axis=-1, keepdims=True)
        sem = np.kron(rng.integers(0, 8, (h // 2, w // 2)), np.ones((2, 2), dtype=np.int64)).astype(np.uint8)
        sem[0:2, 0:2] = IGNORE_ID
        flow = 20.0 * (blocks(2) - 0.5)
        sf = blocks(3) - 0.5
        albedo = 0.1 + 0.8 * blocks(3)
        shading = 0.1 + 0.8 * blocks(1)[..., 0]
        ones = np.ones((h, w), bool)
        labels = {
            "depth": Label(depth.astype(np.float32), ones),
            "normal": Label(normal.astype(np.float32), ones),
            "semantic": Label(sem, sem != IGNORE_ID),
            "optical_flow": Label(flow.astype(np.float32), ones),
            "scene_flow": Label(sf.astype(np.float32), ones),
            "albedo": Label(albedo.astype(np.float32), ones),
            "shading": Label(shading.astype(np.float32), ones),
        }
        frame = (rng.random((h, w, 3)) * 255).astype(np.uint8)
        out.append(Sample(frame, frame.copy(), labels, domain="unit", name=str(i)))
    return out


class HalfResolutionOracle:
    """Predicts each sample's labels, turned into runtime units, at half resolution (nearest sub-sampling)."""

    def __init__(self, samples):
        self.by_frame = {s.frame1.tobytes(): s for s in samples}

    def predict(self, frame1, frame2=None):
        lab = {k: v.value[::2, ::2] for k, v in self.by_frame[frame1.tobytes()].labels.items()}
        d = lab["depth"]
        return {
            "depth": (d - d.min()) / (d.max() - d.min()),
            "normal": lab["normal"],
            "semantic": np.where(lab["semantic"] == IGNORE_ID, 0, lab["semantic"]).astype(np.uint8),
            "optical_flow": lab["optical_flow"] / np.abs(lab["optical_flow"]).max(axis=(0, 1)),
            "scene_flow": lab["scene_flow"] / np.abs(lab["scene_flow"]).max(axis=(0, 1)),
            "albedo": lab["albedo"] * 0.5,
            "shading": lab["shading"] * 0.5,
        }


def test_low_resolution_predictions_are_resized_to_the_labels():
    samples = _samples()
    oracle = HalfResolutionOracle(samples)
    res = evaluate(oracle, samples, None, benchmark="unit", progress=False)
    assert list(res.tasks) == ["normal", "depth", "semantic", "optical_flow", "scene_flow", "albedo", "shading"]
    assert res["depth"].frames == 3 and res.benchmark == "unit"
    # nearest-neighbour upsampling of 2x2 blocks is exact for class ids
    assert res["semantic"].metrics.miou == 1.0 and res["semantic"].metrics.pixel_accuracy == 1.0

    class UpsampledByOpenCV:  # the same predictions, brought to label size by the test itself
        def predict(self, frame1, frame2=None):
            h, w = frame1.shape[:2]
            out = {}
            for k, v in oracle.predict(frame1).items():
                up = cv2.resize(v.astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR)
                out[k] = up / np.linalg.norm(up, axis=-1, keepdims=True) if k == "normal" else up
            out["semantic"] = cv2.resize(oracle.predict(frame1)["semantic"], (w, h), interpolation=cv2.INTER_NEAREST)
            return out

    ref = evaluate(UpsampledByOpenCV(), samples, None, progress=False)
    for task in res.tasks:
        for name, value in res[task].scalars().items():
            assert value == pytest.approx(ref[task].scalars()[name], rel=1e-5, abs=1e-6), (task, name)


def test_oracle_at_label_resolution_is_exact():
    samples = _samples()
    oracle = HalfResolutionOracle(samples)

    class FullRes:
        def predict(self, frame1, frame2=None):
            s = oracle.by_frame[frame1.tobytes()]
            return {k: resize_prediction(k, v, s.frame1.shape[:2]) for k, v in oracle.predict(frame1).items()} | {
                "normal": s.labels["normal"].value,
                "depth": s.labels["depth"].value / 10.0,
                "optical_flow": s.labels["optical_flow"].value / 10.0,
                "scene_flow": s.labels["scene_flow"].value * 2.0,
                "albedo": s.labels["albedo"].value * 0.5,
                "shading": s.labels["shading"].value * 0.5,
            }

    res = evaluate(FullRes(), samples, "depth,normal,semantic,optical_flow,scene_flow,albedo,shading", progress=False)
    assert res["depth"].metrics.abs_rel == pytest.approx(0.0, abs=1e-6)
    assert res["normal"].metrics.mean == pytest.approx(0.0, abs=0.05)
    assert res["optical_flow"].metrics.epe == pytest.approx(0.0, abs=1e-4)
    assert res["scene_flow"].metrics.epe3d == pytest.approx(0.0, abs=1e-6)
    assert res["albedo"].metrics.rmse == pytest.approx(0.0, abs=1e-6)
    assert res["shading"].metrics.ssim == pytest.approx(1.0)


def test_trivial_baseline_through_the_same_metrics():
    samples = _samples()
    base = fit_trivial_baseline(samples)
    counts = np.bincount(np.concatenate([s.labels["semantic"].value[s.labels["semantic"].valid] for s in samples]), minlength=8)
    assert base.semantic_class == counts.argmax()
    res = evaluate(base, samples, ["depth", "semantic", "optical_flow"], progress=False)
    gt = [s.labels["depth"].value.astype(np.float64) for s in samples]
    expected = np.mean([np.mean(np.abs(g.mean() - g) / g) for g in gt])
    assert res["depth"].metrics.abs_rel == pytest.approx(expected, rel=1e-5)
    flows = np.concatenate([np.linalg.norm(s.labels["optical_flow"].value, axis=-1).ravel() for s in samples])
    assert res["optical_flow"].metrics.epe == pytest.approx(flows.mean(), rel=1e-5)
    assert res["semantic"].metrics.pixel_accuracy == pytest.approx(counts.max() / counts.sum())


def test_missing_prediction_and_bad_shape_are_user_errors():
    samples = _samples(1)

    class OnlyDepth:
        def predict(self, frame1, frame2=None):
            return {"depth": np.zeros(frame1.shape[:2] + (3,), np.float32)}

    with pytest.raises(StableMTLError, match="no `normal`"):
        evaluate(OnlyDepth(), samples, ["normal"], progress=False)
    with pytest.raises(StableMTLError, match="has shape"):
        evaluate(OnlyDepth(), samples, ["depth"], progress=False)


def test_resize_prediction_modes():
    sem = np.array([[0, 7], [3, 1]], dtype=np.uint8)
    up = resize_prediction("semantic", sem, (4, 4))
    assert up.dtype == np.uint8 and set(np.unique(up)) == {0, 1, 3, 7}
    n = resize_prediction("normal", np.dstack([np.ones((2, 2)), np.zeros((2, 2)), np.ones((2, 2))]), (3, 5))
    np.testing.assert_allclose(np.linalg.norm(n, axis=-1), 1.0, rtol=1e-6)
    assert isinstance(TrivialBaseline().predict(np.zeros((3, 4, 3), np.uint8))["shading"], np.ndarray)
