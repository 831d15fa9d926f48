"""The exported artifact: layout, manifest, parity records, references, reuse, third-party loading."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

from stablemtl_edge import StableMTLError
from stablemtl_edge.atomic import MARKER_NAME
from stablemtl_edge.export.artifacts import ExportRequest, export_artifacts
from stablemtl_edge.artifact.references import ReferenceSet
from stablemtl_edge.artifact.schedule import RowLimited, Scheduler
from stablemtl_edge.export.parity import OrtSessions
from stablemtl_edge.runtime.selfcheck import check_parity
from stablemtl_edge.tasks import TASKS
from stablemtl_edge.artifact.manifest import Component, Manifest, Mode, Precision, file_sha256
from stablemtl_edge.tasks import TASK_NAMES

POLYGRAPHY = Path(sys.executable).with_name("polygraphy")


def test_manifest_describes_every_component_and_file(tiny_artifacts):
    m = Manifest.load(tiny_artifacts)
    assert m.mode is Mode.MULTI and m.precisions() == (Precision.FP32, Precision.FP16)
    assert (m.profile.height, m.profile.width) == (64, 128)
    assert len(m.features) == 16
    m.verify_files(tiny_artifacts)
    on_disk = {p.relative_to(tiny_artifacts).as_posix() for p in tiny_artifacts.rglob("*") if p.is_file()}
    assert set(m.files) == on_disk - {"manifest.json", MARKER_NAME}  # the ownership marker is ours, not the model's
    for rel, digest in m.files.items():
        assert file_sha256(tiny_artifacts / rel) == digest
    for precision in m.precisions():
        for component in Mode.MULTI.components:
            e = m.entry(precision, component)
            assert e.file == f"{precision.value}/{component.value}.onnx"
            assert e.opset == 17 and e.exporter == "torchscript" and e.external_data is None
            assert e.parity["photo/latent" if component is not Component.DECODER else "photo/image"]["passed"]
    unet = m.entry("fp32", "unet")
    assert [t.name for t in unet.outputs] == ["latent"] + [f"feat_{i:02d}" for i in range(16)]
    assert unet.inputs[1].dtype == "int64" and unet.inputs[0].shape == ("batch", 12, 8, 16)
    assert m.entry("fp32", "encoder").inputs[0].dtype == "uint8"
    assert set(m.tolerance) == set(TASK_NAMES)


def test_graph_io_types_follow_the_contract(tiny_artifacts):
    for precision in ("fp32", "fp16"):
        g = onnx.load(str(tiny_artifacts / precision / "encoder.onnx"))
        assert g.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.UINT8
        assert g.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
        main = onnx.load(str(tiny_artifacts / precision / "unet_main.onnx"))
        assert [i.name for i in main.graph.input][:3] == ["sample", "task_id", "aux_feat_00"]
        assert all(o.type.tensor_type.elem_type == onnx.TensorProto.FLOAT for o in main.graph.output)
    half = onnx.load(str(tiny_artifacts / "fp16" / "unet.onnx"))
    types = {t.data_type for t in half.graph.initializer}
    assert onnx.TensorProto.FLOAT16 in types  # fp16 inside
    assert {n.op_type for n in half.graph.node} >= {"Cast"}


def test_parity_is_recorded_per_task_and_precision(tiny_artifacts):
    m = Manifest.load(tiny_artifacts)
    for precision in ("fp32", "fp16"):
        for mode in ("single", "multi"):
            for task in TASK_NAMES:
                rec = m.parity[precision][mode][task]
                assert rec["latent"]["passed"] and rec["image"]["passed"]
                assert rec["image"]["max_abs"] <= m.tolerance[task]
    assert m.parity["fp32"]["multi"]["depth"]["latent"]["max_abs"] < 1e-3
    assert m.parity["fp16"]["multi"]["depth"]["image"]["max_abs"] > m.parity["fp32"]["multi"]["depth"]["image"]["max_abs"]


def _run_schedule(manifest, runners, refs, mode):
    scheduler = Scheduler(manifest, {c: runners[c] for c in mode.components}, TASKS, mode)
    images = scheduler.predict(refs.frames[0], refs.frames[1], {})
    return scheduler.last_latents.copy(), np.stack([images[t.key] for t in TASKS])


def test_references_reproduce_through_the_schedule_and_multi_differs_from_single(tiny_artifacts):
    m = Manifest.load(tiny_artifacts)
    refs = ReferenceSet.load(tiny_artifacts, m)
    runners = OrtSessions(tiny_artifacts, m.components[Precision.FP32]).runners()
    for mode in (Mode.SINGLE, Mode.MULTI):
        latents, images = _run_schedule(m, runners, refs, mode)
        np.testing.assert_allclose(latents, refs.end_to_end[mode][0], atol=1e-4)
        np.testing.assert_allclose(images, refs.end_to_end[mode][1], atol=1e-3)
    # the fixture's task attention is active: the main stream changes the prediction
    assert np.abs(refs.end_to_end[Mode.MULTI][0] - refs.end_to_end[Mode.SINGLE][0]).max() > 1e-3


def test_schedule_split_into_single_rows_gives_the_same_results(tiny_artifacts):
    """The end-to-end check bounds its batch at large sizes; rows are independent in every graph."""
    m = Manifest.load(tiny_artifacts)
    refs = ReferenceSet.load(tiny_artifacts, m)
    sessions = OrtSessions(tiny_artifacts, m.components[Precision.FP32])
    calls = []

    class Counting:
        def __init__(self, runner):
            self.runner = runner

        def infer(self, feed, output_names=None):
            calls.append(len(next(iter(feed.values()))))
            return self.runner.infer(feed, output_names)

    whole_runners = sessions.runners()
    split_runners = {c: RowLimited(Counting(r), 1) for c, r in whole_runners.items()}
    for mode in (Mode.SINGLE, Mode.MULTI):
        whole = _run_schedule(m, whole_runners, refs, mode)
        calls.clear()
        split = _run_schedule(m, split_runners, refs, mode)
        assert max(calls) == 1 and len(calls) > 7
        for a, b in zip(whole, split):
            np.testing.assert_allclose(b, a, atol=1e-5)


def test_self_check_passes_without_torch_model(tiny_artifacts):
    results = check_parity(tiny_artifacts, Manifest.load(tiny_artifacts))
    assert set(results) == {Precision.FP32, Precision.FP16}
    for comparator in results.values():
        assert comparator.results and not comparator.failures()
        keys = {r.key for r in comparator.results}
        assert "e2e/multi/optical_flow/image" in keys and "unet_main/photo/latent" in keys


def test_reexport_with_same_inputs_reuses_everything(tiny_artifacts, tiny_checkpoint):
    before = {p: p.stat().st_mtime_ns for p in tiny_artifacts.rglob("*") if p.is_file()}
    result = export_artifacts(ExportRequest(str(tiny_checkpoint), tiny_artifacts, Mode.MULTI))
    assert result.up_to_date and not result.exported
    assert {p: p.stat().st_mtime_ns for p in tiny_artifacts.rglob("*") if p.is_file()} == before


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
@pytest.mark.parametrize("component", ["encoder", "unet", "unet_main", "decoder"])
def test_polygraphy_runs_each_graph(tiny_artifacts, precision, component):
    path = tiny_artifacts / precision / f"{component}.onnx"
    env = {**os.environ, "POLYGRAPHY_AUTOINSTALL_DEPS": "0"}
    proc = subprocess.run(
        [str(POLYGRAPHY), "run", str(path), "--onnxrt", "--input-shapes"]
        + _static_shapes(Manifest.load(tiny_artifacts), precision, component),
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "PASSED" in proc.stdout + proc.stderr


def _static_shapes(m: Manifest, precision: str, component: str) -> list[str]:
    """``name:[dims]`` with batch 2, for the symbolic dimensions polygraphy cannot guess."""
    shapes = []
    for t in m.entry(precision, component).inputs:
        dims = [2 if d == "batch" else d for d in t.shape]
        shapes.append(f"{t.name}:[{','.join(str(d) for d in dims)}]")
    return shapes


def test_partial_change_reexports_only_what_changed(tiny_artifacts, tiny_checkpoint, tmp_path):
    """Asking for fp32 only from an fp32+fp16 artifact reuses the fp32 graphs (hard links, same bytes)."""
    out = tmp_path / "art"
    shutil.copytree(tiny_artifacts, out)
    old = Manifest.load(out)
    result = export_artifacts(ExportRequest(str(tiny_checkpoint), out, Mode.MULTI, (Precision.FP32,), overwrite=True))
    assert not result.exported and sorted(result.reused) == sorted(f"fp32/{c.value}" for c in Mode.MULTI.components)
    new = Manifest.load(out)
    assert new.precisions() == (Precision.FP32,)
    assert new.entry("fp32", "unet").sha256 == old.entry("fp32", "unet").sha256
    assert not (out / "fp16").exists()


def test_export_refuses_multi_mode_for_a_single_stream_checkpoint(tmp_path):
    from stablemtl_edge.model.checkpoint import save_pretrained
    from stablemtl_edge.model.stablemtl import StableMTL

    ckpt = tmp_path / "single"
    save_pretrained(StableMTL.from_preset("tiny", multi_stream=False, seed=0), ckpt)
    with pytest.raises(StableMTLError, match="single-stream: export it with `--mode single`"):
        export_artifacts(ExportRequest(str(ckpt), tmp_path / "out", Mode.MULTI))
    assert not (tmp_path / "out").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]


def test_unet_main_takes_the_auxiliary_features_once_and_broadcasts_them(tiny_artifacts):
    """One (1, 7, N, C) copy per frame, whatever the number of main rows."""
    m = Manifest.load(tiny_artifacts)
    aux = [t for t in m.entry(Precision.FP32, Component.UNET_MAIN).inputs if t.name.startswith("aux_feat_")]
    assert len(aux) == 16 and all(t.shape[0] == 1 for t in aux) and m.aux_broadcast
    refs = ReferenceSet.load(tiny_artifacts, m)
    runners = OrtSessions(tiny_artifacts, m.components[Precision.FP32]).runners()
    scheduler = Scheduler(m, {c: runners[c] for c in Mode.MULTI.components}, TASKS, Mode.MULTI)
    assert all(t.shape[0] == 1 for t in scheduler._tiled)  # no k-fold copies held
    images = scheduler.predict(refs.frames[0], refs.frames[1], {})
    np.testing.assert_allclose(np.stack([images[t.key] for t in TASKS]), refs.end_to_end[Mode.MULTI][1], atol=1e-3)



def test_an_artifact_with_tiled_auxiliary_features_still_runs(tmp_path):
    from tests.runtime.artifact_zoo import ToyModel

    zoo = ToyModel()
    art = zoo.write(tmp_path / "tiled", Mode.MULTI)  # written the pre-broadcast way: (B, 7, N, C)
    m = Manifest.load(art)
    assert not m.aux_broadcast
    from stablemtl_edge.runtime import Runtime

    frame = np.random.default_rng(1).integers(0, 256, (zoo.height, zoo.width, 3), dtype=np.uint8)
    with Runtime.from_artifacts(art, tasks="all", mode="multi") as rt:
        assert all(t.shape[0] == 7 for t in rt.scheduler._tiled)
        assert set(rt.predict(frame, frame)) == set(TASK_NAMES)
