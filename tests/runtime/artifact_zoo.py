"""A zoo of tiny, real ONNX artifacts that honour the manifest contract, and broken ones.

The graphs are built with ``onnx.helper`` and do simple deterministic math whose numpy twin lives in
:class:`ToyModel`, so the runtime's batching, stacking, letterbox and decoding can be checked number by
number against an independent row-by-row re-computation:

- ``encoder``: uint8 NHWC -> [-1, 1] -> 8x8 average pool -> 1x1 conv to 4 channels;
- ``unet``: ``tanh(conv1x1(sample) + E[task_id])``; feature l = conv1x1(avgpool_ds(sample)) + T_l[task_id]
  flattened to (B, N_l, C_l);
- ``unet_main``: like ``unet`` plus, per layer, the token maximum of the 7 auxiliary slots weighted by
  distinct per-slot weights (the row's own slot weighted 0) projected to 4 channels;
- ``decoder``: ``clip(conv1x1(latent), -1, 1)`` upsampled 8x (nearest).

Each broken artifact is paired with the one-line error the runtime must give.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from stablemtl_edge.config import get_preset
from stablemtl_edge.artifact.manifest import (
    MANIFEST_NAME,
    Component,
    ComponentEntry,
    FeatureSpec,
    Manifest,
    Mode,
    Precision,
    ShapeProfile,
    TensorSpec,
    aux_feature_name,
    feature_name,
    file_sha256,
)
from stablemtl_edge.tasks import NUM_TASKS, TASKS

OPSET = 17
HEIGHT, WIDTH = 64, 128  # the tiny preset's resolution; latent 8 x 16
PRESET = get_preset("tiny")


def feature_specs() -> tuple[FeatureSpec, ...]:
    return tuple(
        FeatureSpec(index=i, layer=f"block_{i:02d}.attn1", channels=c, downsample=d)
        for i, (c, d) in enumerate(zip(PRESET.attention_channels, PRESET.attention_downsample))
    )


def _init(name: str, x: np.ndarray) -> onnx.TensorProto:
    return numpy_helper.from_array(np.ascontiguousarray(x), name)


def _vi(name: str, elem: int, shape: tuple) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, elem, list(shape))


_ELEM = {"float32": TensorProto.FLOAT, "int64": TensorProto.INT64, "uint8": TensorProto.UINT8}


@dataclass
class ToyModel:
    """Weights of the toy components and their numpy twins."""

    height: int = HEIGHT
    width: int = WIDTH
    seed: int = 0

    def __post_init__(self) -> None:
        rng = np.random.default_rng(self.seed)
        f32 = np.float32
        self.features = feature_specs()
        self.We = rng.normal(0, 0.6, (4, 3)).astype(f32)
        self.be = rng.normal(0, 0.1, 4).astype(f32)
        self.Wu = rng.normal(0, 0.4, (4, 12)).astype(f32)
        self.bu = rng.normal(0, 0.1, 4).astype(f32)
        self.E = rng.normal(0, 0.5, (NUM_TASKS, 4)).astype(f32)
        self.Wf = [rng.normal(0, 0.3, (f.channels, 12)).astype(f32) for f in self.features]
        self.Tf = [rng.normal(0, 0.3, (NUM_TASKS, f.channels)).astype(f32) for f in self.features]
        self.Wm = rng.normal(0, 0.4, (4, 12)).astype(f32)
        self.bm = rng.normal(0, 0.1, 4).astype(f32)
        self.Em = rng.normal(0, 0.5, (NUM_TASKS, 4)).astype(f32)
        slot = (np.arange(NUM_TASKS, dtype=f32) + 1.0) / NUM_TASKS
        self.M = (slot[None, :] * (1.0 - np.eye(NUM_TASKS, dtype=f32))).astype(f32)  # row = own task
        self.P = [rng.normal(0, 0.5, (f.channels, 4)).astype(f32) for f in self.features]
        self.Wd = rng.normal(0, 0.7, (3, 4)).astype(f32)
        self.bd = rng.normal(0, 0.1, 3).astype(f32)

    @property
    def latent_hw(self) -> tuple[int, int]:
        return self.height // 8, self.width // 8

    # -- numpy twins -------------------------------------------------------------------------------------
    def np_encoder(self, image: np.ndarray) -> np.ndarray:
        b, h, w, _ = image.shape
        x = image.astype(np.float32).transpose(0, 3, 1, 2) * np.float32(1 / 127.5) - 1.0
        p = x.reshape(b, 3, h // 8, 8, w // 8, 8).mean(axis=(3, 5))
        return np.einsum("oc,bchw->bohw", self.We, p) + self.be[None, :, None, None]

    def np_unet(self, sample: np.ndarray, task_id: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
        lat = np.tanh(np.einsum("oc,bchw->bohw", self.Wu, sample) + self.bu[None, :, None, None]
                      + self.E[task_id][:, :, None, None])
        feats = []
        b, c, h, w = sample.shape
        for f, W, T in zip(self.features, self.Wf, self.Tf):
            d = f.downsample
            p = sample.reshape(b, c, h // d, d, w // d, d).mean(axis=(3, 5)).reshape(b, c, -1)
            feats.append(np.einsum("oc,bcn->bno", W, p) + T[task_id][:, None, :])
        return lat.astype(np.float32), feats

    def np_unet_main(self, sample: np.ndarray, task_id: np.ndarray, aux: list[np.ndarray]) -> np.ndarray:
        ctx = np.zeros((sample.shape[0], 4), np.float32)
        for a, P in zip(aux, self.P):
            peak = a.max(axis=2)  # [B,7,C]
            ctx += np.einsum("bs,bsc->bc", self.M[task_id], peak) @ P
        pre = np.einsum("oc,bchw->bohw", self.Wm, sample) + self.bm[None, :, None, None]
        return np.tanh(pre + self.Em[task_id][:, :, None, None] + ctx[:, :, None, None]).astype(np.float32)

    def np_decoder(self, latent: np.ndarray) -> np.ndarray:
        y = np.clip(np.einsum("oc,bchw->bohw", self.Wd, latent) + self.bd[None, :, None, None], -1.0, 1.0)
        return np.repeat(np.repeat(y, 8, axis=2), 8, axis=3).astype(np.float32)

    def reference(
        self, image1: np.ndarray, image2: np.ndarray | None, tasks: list[str], mode: Mode, stream: bool = False
    ) -> dict:
        """Decoded images ``(3, H, W)`` per task, one row at a time (no batching, no sharing).

        Flows read ``(image1, image2)``; one-frame tasks (main and auxiliary rows) read ``image1``, or
        ``image2`` when ``stream`` (the streaming rule: frame t-1, t = image1, image2).
        """
        z1 = self.np_encoder(image1[None])
        z2 = self.np_encoder(image2[None]) if image2 is not None else None
        zs = z2 if stream and z2 is not None else z1
        zeros = np.zeros_like(z1)

        def row(t):
            if t.frames == 2 and z2 is not None:
                return np.concatenate([z1, z2, zeros], axis=1)
            return np.concatenate([zs, zs, zeros], axis=1)

        out = {}
        for t in TASKS:
            if t.key not in tasks:
                continue
            tid = np.array([t.index])
            if mode is Mode.SINGLE:
                lat, _ = self.np_unet(row(t), tid)
            else:
                per_task = [self.np_unet(row(a), np.array([a.index]))[1] for a in TASKS]
                aux = [np.stack([per_task[a][layer][0] for a in range(NUM_TASKS)])[None]
                       for layer in range(len(self.features))]
                lat = self.np_unet_main(row(t), tid, aux)
            out[t.key] = self.np_decoder(lat)[0]
        return out

    # -- ONNX graphs -------------------------------------------------------------------------------------
    def graphs(self, mode: Mode) -> dict[Component, onnx.ModelProto]:
        h, w = self.latent_hw
        H, W = self.height, self.width
        out = {Component.ENCODER: self._encoder(H, W, h, w), Component.UNET: self._unet(mode, h, w),
               Component.DECODER: self._decoder(H, W, h, w)}
        if mode is Mode.MULTI:
            out[Component.UNET_MAIN] = self._unet_main(h, w)
        return out

    @staticmethod
    def _model(nodes, name, inputs, outputs, inits) -> onnx.ModelProto:
        graph = helper.make_graph(nodes, name, inputs, outputs, inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="artifact_zoo")
        model.ir_version = 8
        onnx.checker.check_model(model)
        return model

    def _encoder(self, H, W, h, w):
        nodes = [
            helper.make_node("Cast", ["image"], ["xf"], to=TensorProto.FLOAT),
            helper.make_node("Transpose", ["xf"], ["xt"], perm=[0, 3, 1, 2]),
            helper.make_node("Mul", ["xt", "inv"], ["xs"]),
            helper.make_node("Sub", ["xs", "one"], ["xn"]),
            helper.make_node("AveragePool", ["xn"], ["p"], kernel_shape=[8, 8], strides=[8, 8]),
            helper.make_node("Conv", ["p", "We", "be"], ["latent"]),
        ]
        inits = [_init("inv", np.array(1 / 127.5, np.float32)), _init("one", np.array(1.0, np.float32)),
                 _init("We", self.We[:, :, None, None]), _init("be", self.be)]
        return self._model(nodes, "encoder", [_vi("image", TensorProto.UINT8, ("batch", H, W, 3))],
                           [_vi("latent", TensorProto.FLOAT, ("batch", 4, h, w))], inits)

    def _base_unet(self, prefix, W, b, E):
        nodes = [
            helper.make_node("Conv", ["sample", f"{prefix}W", f"{prefix}b"], [f"{prefix}c"]),
            helper.make_node("Gather", [f"{prefix}E", "task_id"], [f"{prefix}e"], axis=0),
            helper.make_node("Unsqueeze", [f"{prefix}e", "axes23"], [f"{prefix}e4"]),
            helper.make_node("Add", [f"{prefix}c", f"{prefix}e4"], [f"{prefix}pre"]),
        ]
        inits = [_init(f"{prefix}W", W[:, :, None, None]), _init(f"{prefix}b", b), _init(f"{prefix}E", E),
                 _init("axes23", np.array([2, 3], np.int64))]
        return nodes, inits, f"{prefix}pre"

    def _unet(self, mode, h, w):
        nodes, inits, pre = self._base_unet("u", self.Wu, self.bu, self.E)
        nodes.append(helper.make_node("Tanh", [pre], ["latent"]))
        outputs = [_vi("latent", TensorProto.FLOAT, ("batch", 4, h, w))]
        if mode is Mode.MULTI:
            inits.append(_init("axes1", np.array([1], np.int64)))
            for f, Wf, Tf in zip(self.features, self.Wf, self.Tf):
                i, d, c = f.index, f.downsample, f.channels
                nodes += [
                    helper.make_node("AveragePool", ["sample"], [f"p{i}"], kernel_shape=[d, d], strides=[d, d]),
                    helper.make_node("Conv", [f"p{i}", f"Wf{i}"], [f"c{i}"]),
                    helper.make_node("Reshape", [f"c{i}", f"shape{i}"], [f"r{i}"]),
                    helper.make_node("Transpose", [f"r{i}"], [f"t{i}"], perm=[0, 2, 1]),
                    helper.make_node("Gather", [f"Tf{i}", "task_id"], [f"g{i}"], axis=0),
                    helper.make_node("Unsqueeze", [f"g{i}", "axes1"], [f"gu{i}"]),
                    helper.make_node("Add", [f"t{i}", f"gu{i}"], [feature_name(i)]),
                ]
                inits += [_init(f"Wf{i}", Wf[:, :, None, None]), _init(f"Tf{i}", Tf),
                          _init(f"shape{i}", np.array([0, c, -1], np.int64))]
                outputs.append(_vi(feature_name(i), TensorProto.FLOAT, ("batch", f.tokens((h, w)), c)))
        inputs = [_vi("sample", TensorProto.FLOAT, ("batch", 12, h, w)), _vi("task_id", TensorProto.INT64, ("batch",))]
        return self._model(nodes, "unet", inputs, outputs, inits)

    def _unet_main(self, h, w):
        nodes, inits, pre = self._base_unet("m", self.Wm, self.bm, self.Em)
        nodes += [helper.make_node("Gather", ["M", "task_id"], ["slotw"], axis=0),
                  helper.make_node("Unsqueeze", ["slotw", "axes1"], ["slotw3"])]  # [B,1,7]
        inits += [_init("M", self.M), _init("axes1", np.array([1], np.int64)),
                  _init("ctxshape", np.array([0, 4, 1, 1], np.int64))]
        inputs = [_vi("sample", TensorProto.FLOAT, ("batch", 12, h, w)), _vi("task_id", TensorProto.INT64, ("batch",))]
        terms = []
        for f, P in zip(self.features, self.P):
            i = f.index
            name = aux_feature_name(i)
            inputs.append(_vi(name, TensorProto.FLOAT, ("batch", NUM_TASKS, f.tokens((h, w)), f.channels)))
            nodes += [
                helper.make_node("ReduceMax", [name], [f"mean{i}"], axes=[2], keepdims=0),  # [B,7,C]
                helper.make_node("MatMul", ["slotw3", f"mean{i}"], [f"wsum{i}"]),  # [B,1,C]
                helper.make_node("MatMul", [f"wsum{i}", f"P{i}"], [f"proj{i}"]),  # [B,1,4]
            ]
            inits.append(_init(f"P{i}", P))
            terms.append(f"proj{i}")
        nodes += [helper.make_node("Sum", terms, ["ctx"]),
                  helper.make_node("Reshape", ["ctx", "ctxshape"], ["ctx4"]),
                  helper.make_node("Add", [pre, "ctx4"], ["pre2"]),
                  helper.make_node("Tanh", ["pre2"], ["latent"])]
        return self._model(nodes, "unet_main", inputs, [_vi("latent", TensorProto.FLOAT, ("batch", 4, h, w))], inits)

    def _decoder(self, H, W, h, w):
        nodes = [
            helper.make_node("Conv", ["latent", "Wd", "bd"], ["y"]),
            helper.make_node("Clip", ["y", "lo", "hi"], ["yc"]),
            helper.make_node("Resize", ["yc", "", "scales"], ["image"], mode="nearest"),
        ]
        inits = [_init("Wd", self.Wd[:, :, None, None]), _init("bd", self.bd), _init("lo", np.array(-1.0, np.float32)),
                 _init("hi", np.array(1.0, np.float32)), _init("scales", np.array([1, 1, 8, 8], np.float32))]
        return self._model(nodes, "decoder", [_vi("latent", TensorProto.FLOAT, ("batch", 4, h, w))],
                           [_vi("image", TensorProto.FLOAT, ("batch", 3, H, W))], inits)

    # -- artifact directory ------------------------------------------------------------------------------
    def write(self, directory: str | Path, mode: Mode = Mode.MULTI, precision: Precision = Precision.FP32) -> Path:
        """Write ``directory`` as an exporter would: ONNX files first, ``manifest.json`` last."""
        directory = Path(directory)
        entries = {}
        for comp, model in self.graphs(mode).items():
            rel = f"{precision.value}/{comp.value}.onnx"
            path = directory / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            onnx.save(model, str(path))
            g = model.graph
            entries[comp] = ComponentEntry(
                component=comp, precision=precision, file=rel, sha256=file_sha256(path), opset=OPSET,
                exporter="artifact_zoo",
                inputs=tuple(_spec(v) for v in g.input), outputs=tuple(_spec(v) for v in g.output),
            )
        manifest = Manifest(
            preset=PRESET.to_dict(), mode=mode, profile=ShapeProfile(self.height, self.width),
            components={precision: entries}, features=self.features if mode is Mode.MULTI else (),
        )
        manifest.save(directory)
        return directory


def _spec(v: onnx.ValueInfoProto) -> TensorSpec:
    t = v.type.tensor_type
    dtype = {TensorProto.FLOAT: "float32", TensorProto.INT64: "int64", TensorProto.UINT8: "uint8"}[t.elem_type]
    shape = tuple(d.dim_param if d.dim_param else d.dim_value for d in t.shape.dim)
    return TensorSpec(v.name, dtype, shape)


# -- broken artifacts ---------------------------------------------------------------------------------------
def truncate_component(directory: Path, component: Component = Component.UNET) -> None:
    """Cut an ONNX file in half and record the new hash, so only loading can notice."""
    manifest = Manifest.load(directory)
    entry = manifest.entry(Precision.FP32, component)
    path = directory / entry.file
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    entry.sha256 = file_sha256(path)
    manifest.save(directory)


def tamper_component(directory: Path, component: Component = Component.DECODER) -> None:
    """Change one byte of an ONNX file behind the manifest's back."""
    path = directory / Manifest.load(directory).entry(Precision.FP32, component).file
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))


def remove_manifest(directory: Path) -> None:
    (directory / MANIFEST_NAME).unlink()


def remove_component(directory: Path, component: Component = Component.ENCODER) -> None:
    (directory / Manifest.load(directory).entry(Precision.FP32, component).file).unlink()


# (name, how to break a valid multi-stream artifact, regex of the expected one-line error)
BROKEN: tuple[tuple[str, Callable[[Path], None], str], ...] = (
    ("truncated_onnx", truncate_component, r"onnxruntime cannot load `.*unet\.onnx` .*re-export the model"),
    ("wrong_sha256", tamper_component, r"decoder\.onnx` does not match the manifest \(sha256 .*re-export the model"),
    ("missing_manifest", remove_manifest, r"manifest\.json` is missing: .* run `stablemtl-export` again"),
    ("missing_onnx", remove_component, r"encoder\.onnx` named by the manifest is missing; re-export the model"),
)


def copy_artifact(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst
