"""Readers of the real training sets, checked on small fixtures written in the exact release formats."""

from __future__ import annotations

import logging

import h5py
import numpy as np
import pytest

from stablemtl_edge.errors import StableMTLError
from stablemtl_edge.data.dataset import SkipBadSamples
from stablemtl_edge.data.flyingthings3d import FOCAL_PX, FlyingThings3DSource
from stablemtl_edge.data.formats import read_pfm, read_png16, write_pfm, write_png16, write_rgb
from stablemtl_edge.data.hypersim import HypersimSource, hypersim_focal, tonemap_scale
from stablemtl_edge.data.vkitti2 import VKITTI2_CLASSES, VKitti2Source

H, W = 12, 16
RNG = np.random.default_rng(0)


# --------------------------------------------------------------------------------------------- formats
def test_pfm_round_trip_and_big_endian(tmp_path):
    a = RNG.normal(size=(H, W, 3)).astype(np.float32)
    write_pfm(tmp_path / "a.pfm", a)
    np.testing.assert_array_equal(read_pfm(tmp_path / "a.pfm"), a)
    # Big-endian files (positive scale) store rows bottom-to-top too.
    g = RNG.normal(size=(H, W)).astype(np.float32)
    (tmp_path / "b.pfm").write_bytes(f"Pf\n{W} {H}\n1.0\n".encode() + g[::-1].astype(">f4").tobytes())
    np.testing.assert_array_equal(read_pfm(tmp_path / "b.pfm"), g)


def test_corrupt_and_missing_files_name_the_path(tmp_path):
    write_pfm(tmp_path / "t.pfm", np.zeros((H, W), np.float32))
    (tmp_path / "t.pfm").write_bytes((tmp_path / "t.pfm").read_bytes()[:-10])
    with pytest.raises(StableMTLError, match=r"corrupt PFM file `.*t\.pfm`.*truncated"):
        read_pfm(tmp_path / "t.pfm")
    (tmp_path / "x.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(StableMTLError, match=r"corrupt .*x\.png"):
        read_png16(tmp_path / "x.png")
    with pytest.raises(StableMTLError, match=r"missing .*nope\.png` does not exist"):
        read_png16(tmp_path / "nope.png")


# --------------------------------------------------------------------------------------------- Hypersim
def _h5(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        f.create_dataset("dataset", data=array)


def _hypersim(root, frames=2):
    images = root / "ai_001_001" / "images"
    f = hypersim_focal(W)
    u = np.arange(W) - (W - 1) / 2
    v = np.arange(H) - (H - 1) / 2
    ray_len = np.sqrt(u[None] ** 2 + v[:, None] ** 2 + f**2) / f
    truth = []
    for i in range(frames):
        planar = RNG.uniform(1.0, 5.0, (H, W)).astype(np.float32)
        planar[0, 0] = np.nan  # no geometry
        normal = RNG.normal(size=(H, W, 3)).astype(np.float32)
        normal /= np.linalg.norm(normal, axis=-1, keepdims=True)
        albedo = RNG.uniform(0, 1, (H, W, 3)).astype(np.float16)
        illum = RNG.uniform(0, 3, (H, W, 3)).astype(np.float16)
        color = (albedo.astype(np.float32) * illum.astype(np.float32))
        write_rgb(images / "scene_cam_00_final_preview" / f"frame.{i:04d}.tonemap.jpg",
                  RNG.integers(0, 255, (H, W, 3), dtype=np.uint8))
        _h5(images / "scene_cam_00_geometry_hdf5" / f"frame.{i:04d}.depth_meters.hdf5", planar * ray_len)
        _h5(images / "scene_cam_00_geometry_hdf5" / f"frame.{i:04d}.normal_cam.hdf5", normal * 2.0)
        _h5(images / "scene_cam_00_final_hdf5" / f"frame.{i:04d}.diffuse_reflectance.hdf5", albedo)
        _h5(images / "scene_cam_00_final_hdf5" / f"frame.{i:04d}.diffuse_illumination.hdf5", illum)
        _h5(images / "scene_cam_00_final_hdf5" / f"frame.{i:04d}.color.hdf5", color)
        truth.append((planar, normal, albedo.astype(np.float32), illum.astype(np.float32), color))
    return truth


def test_hypersim_decodes_depth_normals_albedo_shading(tmp_path):
    truth = _hypersim(tmp_path)
    src = HypersimSource(tmp_path)
    assert len(src) == 2 and src.tasks == ("normal", "depth", "albedo", "shading")
    s = src[1]
    planar, normal, albedo, illum, color = truth[1]
    assert s.frame1.shape == (H, W, 3) and s.domain == "hypersim" and s.frame2 is None
    d = s.labels["depth"]
    assert not d.valid[0, 0] and d.valid.sum() == H * W - 1
    np.testing.assert_allclose(d.value[d.valid], planar[d.valid], rtol=1e-5)
    # Normals: unit, facing the camera (OpenGL: dot with the viewing ray < 0), same line as the file.
    n = s.labels["normal"].value
    f = hypersim_focal(W)
    u, v = np.meshgrid((np.arange(W) - (W - 1) / 2) / f, (np.arange(H) - (H - 1) / 2) / f)
    ray = np.stack([u, -v, -np.ones_like(u)], -1)
    assert ((n * ray).sum(-1) <= 0).all()
    np.testing.assert_allclose(np.abs((n * normal).sum(-1)), 1.0, atol=1e-5)
    np.testing.assert_allclose(s.labels["albedo"].value, np.clip(albedo, 0, 1), atol=1e-6)
    scale = np.power(0.8, 2.2) / np.percentile(color @ np.array([0.3, 0.59, 0.11]), 90)
    assert tonemap_scale(color) == pytest.approx(scale)
    expect = np.clip((illum @ np.array([0.3, 0.59, 0.11], np.float32)) * scale, 0, 1)
    np.testing.assert_allclose(s.labels["shading"].value, expect, atol=1e-5)
    assert s.encode("shading")[0].shape == (H, W, 3)


def test_hypersim_missing_file_and_root(tmp_path):
    _hypersim(tmp_path, frames=1)
    (tmp_path / "ai_001_001/images/scene_cam_00_geometry_hdf5/frame.0000.normal_cam.hdf5").unlink()
    with pytest.raises(StableMTLError, match=r"normal_cam.*frame\.0000\.normal_cam\.hdf5` does not exist"):
        HypersimSource(tmp_path)[0]
    with pytest.raises(StableMTLError, match="Hypersim root"):
        HypersimSource(tmp_path / "absent")
    (tmp_path / "ai_001_001/images/scene_cam_00_final_hdf5/frame.0000.color.hdf5").write_bytes(b"garbage")
    with pytest.raises(StableMTLError, match=r"corrupt Hypersim color .*color\.hdf5"):
        HypersimSource(tmp_path, tasks=["shading"])[0]


# --------------------------------------------------------------------------------------------- vKITTI2
def _encode_flow(flow, valid):
    out = np.zeros(flow.shape[:2] + (3,), np.uint16)
    out[..., 0] = np.rint((flow[..., 0] / (W - 1) + 1) / 2 * 65535)
    out[..., 1] = np.rint((flow[..., 1] / (H - 1) + 1) / 2 * 65535)
    out[..., 2] = valid
    return out


def _vkitti(root, split_tars=False, frames=3):
    def d(mod, tar):
        base = root / f"vkitti_2.0.3_{tar}" if split_tars else root
        return base / "Scene01" / "clone" / "frames" / mod / "Camera_0"

    text = (root / "vkitti_2.0.3_textgt" if split_tars else root) / "Scene01" / "clone"
    text.mkdir(parents=True, exist_ok=True)
    lines = "".join(f"{k} {r} {g} {b}\n" for k, (r, g, b) in VKITTI2_CLASSES.items())
    (text / "colors.txt").write_text("Category r g b\n" + lines)
    (text / "intrinsic.txt").write_text("frame cameraID K[0,0] K[1,1] K[0,2] K[1,2]\n" + "".join(
        f"{i} {c} 20.0 20.0 {(W - 1) / 2} {(H - 1) / 2}\n" for i in range(frames) for c in (0, 1)))
    truth = []
    names = list(VKITTI2_CLASSES)
    for i in range(frames):
        write_rgb(d("rgb", "rgb") / f"rgb_{i:05d}.jpg", RNG.integers(0, 255, (H, W, 3), dtype=np.uint8))
        depth_cm = RNG.integers(100, 20000, (H, W)).astype(np.uint16)
        depth_cm[:2] = 65535  # sky
        write_png16(d("depth", "depth") / f"depth_{i:05d}.png", depth_cm)
        cls = RNG.integers(0, len(names), (H, W))
        seg = np.array([VKITTI2_CLASSES[names[c]] for c in cls.ravel()], np.uint8).reshape(H, W, 3)
        write_rgb(d("classSegmentation", "classSegmentation") / f"classgt_{i:05d}.png", seg)
        flow = RNG.uniform(-5, 5, (H, W, 2))
        fvalid = RNG.random((H, W)) > 0.2
        write_png16(d("forwardFlow", "forwardFlow") / f"flow_{i:05d}.png", _encode_flow(flow, fvalid))
        sf = RNG.uniform(-3, 3, (H, W, 3))
        write_png16(d("forwardSceneFlow", "forwardSceneFlow") / f"sceneFlow_{i:05d}.png",
                    np.rint((sf / 10 + 1) / 2 * 65535).astype(np.uint16))
        truth.append((depth_cm, [names[c] for c in cls.ravel()], flow, fvalid, sf))
    return truth


@pytest.mark.parametrize("split_tars", [False, True])
def test_vkitti2_official_decodings(tmp_path, split_tars):
    truth = _vkitti(tmp_path, split_tars)
    src = VKitti2Source(tmp_path)
    assert len(src) == 2  # the last frame has no next frame for the flows
    s = src[1]
    depth_cm, cls, flow, fvalid, sf = truth[1]
    assert s.frame2 is not None and s.domain == "vkitti2"
    assert tuple(s.labels) == ("normal", "depth", "semantic", "optical_flow", "scene_flow")
    d = s.labels["depth"]
    assert not d.valid[:2].any() and d.valid[2:].all()
    np.testing.assert_allclose(d.value[d.valid], depth_cm[d.valid] / 100.0, rtol=1e-6)
    ours = {"Road": 0, "Building": 1, "Pole": 2, "TrafficLight": 3, "TrafficSign": 4, "Tree": 5, "Vegetation": 5,
            "Sky": 6, "Car": 7, "Van": 7, "Truck": 7}
    expect = np.array([ours.get(c, 255) for c in cls], np.uint8).reshape(H, W)
    np.testing.assert_array_equal(s.labels["semantic"].value, expect)
    f = s.labels["optical_flow"]
    np.testing.assert_array_equal(f.valid, fvalid)
    np.testing.assert_allclose(f.value[fvalid], flow[fvalid], atol=(W - 1) / 65535 + 1e-6)
    g = s.labels["scene_flow"]
    np.testing.assert_array_equal(g.valid, fvalid)
    np.testing.assert_allclose(g.value[fvalid], sf[fvalid], atol=10 / 65535 + 1e-6)
    np.testing.assert_allclose(s.intrinsics[0, 0], 20.0)
    assert s.labels["normal"].valid.dtype == bool


def test_vkitti2_normals_from_a_planar_depth(tmp_path):
    _vkitti(tmp_path, frames=2)
    # Overwrite the depth of frame 0 with a fronto-parallel wall: normals must be (0, 0, 1) in OpenGL.
    path = tmp_path / "Scene01/clone/frames/depth/Camera_0/depth_00000.png"
    write_png16(path, np.full((H, W), 500, np.uint16))
    n = VKitti2Source(tmp_path, tasks=["normal"])[0].labels["normal"]
    assert n.valid[1:-1, 1:-1].all() and not n.valid[0].any()
    np.testing.assert_allclose(n.value[n.valid], np.tile([0.0, 0.0, 1.0], (n.valid.sum(), 1)), atol=1e-6)


def test_bad_sample_in_a_long_run_is_skipped_and_counted(tmp_path, caplog):
    _vkitti(tmp_path, frames=4)
    (tmp_path / "Scene01/clone/frames/forwardFlow/Camera_0/flow_00001.png").write_bytes(b"broken")
    src = SkipBadSamples(VKitti2Source(tmp_path, tasks=["optical_flow"]))
    with caplog.at_level(logging.WARNING):
        names = [src[i].name for i in range(len(src))]
    assert src.skipped == 1 and list(src.bad) == [1]
    assert "flow_00001.png" in src.bad[1] and "flow_00001.png" in caplog.text
    assert names[1].endswith("rgb_00002.jpg")  # replaced by the next sample
    with pytest.raises(StableMTLError, match="corrupt vKITTI2 forward flow PNG .*flow_00001.png"):
        src.source[1]


def test_vkitti2_missing_modality_names_directory(tmp_path):
    _vkitti(tmp_path, frames=2)
    import shutil

    shutil.rmtree(tmp_path / "Scene01/clone/frames/forwardSceneFlow")
    with pytest.raises(StableMTLError, match="missing Virtual KITTI 2 scene_flow directory.*forwardSceneFlow"):
        VKitti2Source(tmp_path)[0]
    assert VKitti2Source(tmp_path, tasks=["depth", "semantic"])[0].frame2 is None


# --------------------------------------------------------------------------------------------- FlyingThings3D
def _ft3d(root, frames=3):
    rel = ("TRAIN", "A", "0000")
    f, b = FOCAL_PX, 1.0
    u, v = np.meshgrid(np.arange(W, dtype=np.float64), np.arange(H, dtype=np.float64))
    cx, cy = (W - 1) / 2, (H - 1) / 2
    truth = []
    for i in range(frames):
        write_rgb(root.joinpath("frames_cleanpass", *rel, "left", f"{6 + i:04d}.png"),
                  RNG.integers(0, 255, (H, W, 3), dtype=np.uint8))
        z1 = RNG.uniform(100, 400, (H, W))
        P1 = np.stack([(u - cx) * z1 / f, (v - cy) * z1 / f, z1], -1)
        sf = RNG.uniform(-5, 5, (H, W, 3))
        P2 = P1 + sf
        u2, v2 = f * P2[..., 0] / P2[..., 2] + cx, f * P2[..., 1] / P2[..., 2] + cy
        flow = np.stack([u2 - u, v2 - v, np.zeros((H, W))], -1)
        disp = f * b / z1
        dchange = f * b / P2[..., 2] - disp
        name = f"OpticalFlowIntoFuture_{6 + i:04d}_L.pfm"
        write_pfm(root.joinpath("optical_flow", *rel, "into_future", "left", name), flow)
        write_pfm(root.joinpath("disparity", *rel, "left", f"{6 + i:04d}.pfm"), disp)
        write_pfm(root.joinpath("disparity_change", *rel, "into_future", "left", f"{6 + i:04d}.pfm"), dchange)
        truth.append((flow[..., :2], sf))
    return truth


def test_flyingthings3d_flow_and_scene_flow_from_disparity(tmp_path):
    truth = _ft3d(tmp_path)
    src = FlyingThings3DSource(tmp_path)
    assert len(src) == 2 and src.tasks == ("optical_flow", "scene_flow")
    s = src[0]
    flow, sf = truth[0]
    assert s.frame2 is not None and s.domain == "flyingthings3d"
    np.testing.assert_allclose(s.labels["optical_flow"].value, flow, atol=1e-4)
    g = s.labels["scene_flow"]
    assert g.valid.all()
    # float32 disparities at 100-400 units: relative precision ~1e-6 of depth.
    np.testing.assert_allclose(g.value, sf, atol=5e-3)


def test_flyingthings3d_errors(tmp_path):
    _ft3d(tmp_path, frames=2)
    disp = tmp_path / "disparity/TRAIN/A/0000/left/0006.pfm"
    disp.write_bytes(b"PX\n1 1\n")
    with pytest.raises(StableMTLError, match=r"corrupt PFM file `.*0006\.pfm`"):
        FlyingThings3DSource(tmp_path)[0]
    assert "scene_flow" not in FlyingThings3DSource(tmp_path, tasks=["optical_flow"])[0].labels
    with pytest.raises(StableMTLError, match="FlyingThings3D cannot label depth"):
        FlyingThings3DSource(tmp_path, tasks=["depth"])
    with pytest.raises(StableMTLError, match="FlyingThings3D frames.*frames_finalpass"):
        FlyingThings3DSource(tmp_path, render_pass="final")
