"""The artifact contract between export (writer) and runtime (reader): ``manifest.json`` and its records.

One artifact directory holds one exported model::

    manifest.json                 written last, atomically
    fp32/{encoder,unet,unet_main,decoder}.onnx
    fp16/...                      strongly-typed fp16 graphs, fp32 I/O
    int8/...                      QDQ graphs (calibration), fp32 I/O
    reference/                    inputs and expected outputs so a target can check itself
    engines/<key>/{engine.plan,engine.json}   TensorRT engines built on the target

Component I/O (``B`` = batch, ``H x W`` = processing resolution, ``h x w = H/8 x W/8``):

- ``encoder``: ``image`` uint8 (B, H, W, 3) RGB -> ``latent`` float32 (B, 4, h, w) (posterior mean x 0.18215)
- ``unet``: ``sample`` float32 (B, 12, h, w), ``task_id`` int64 (B,) -> ``latent`` (B, 4, h, w)
  [+ ``feat_00`` .. ``feat_15`` float32 (B, N_l, C_l) in a multi-stream export]
- ``unet_main``: ``sample``, ``task_id``, ``aux_feat_00`` .. ``aux_feat_15`` float32 (1, 7, N_l, C_l)
  (the auxiliary features of all seven tasks, canonical order, once per frame: the graph broadcasts them to
  the B main rows; the row's own task slot is ignored) -> ``latent`` (B, 4, h, w). Artifacts exported
  before the broadcast take them tiled, (B, 7, N_l, C_l); the I/O specs say which (:attr:`Manifest.aux_broadcast`)
- ``decoder``: ``latent`` (B, 4, h, w) -> ``image`` float32 (B, 3, H, W), clipped to [-1, 1]
- ``tiny_decoder`` (optional): the same I/O as ``decoder``, a distilled decoder at a tenth of its FLOPs or
  less; the runtime runs it in the decoder's place when asked (``decoder="tiny"``)

Frames of another size are letterboxed: resized with their aspect ratio kept to fit H x W, padded by
edge replication at the bottom/right, and predictions are cropped back and resized to the frame's size.
torch-free (the runtime reads this module).
"""

from __future__ import annotations

import enum
import json
import math
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .. import __version__
from ..atomic import atomic_write_text
from .digest import cached_sha256, file_sha256
from .layout import MANIFEST_NAME
from ..errors import StableMTLError
from ..records import KeyEnum
from ..tasks import TASK_NAMES

__all__ = [
    "FORMAT_VERSION",
    "MANIFEST_NAME",
    "Precision",
    "QdqTarget",
    "Component",
    "Mode",
    "TensorSpec",
    "ComponentEntry",
    "ShapeProfile",
    "FeatureSpec",
    "Manifest",
    "file_sha256",
    "ManifestSchemaError",
    "check_frame_size",
    "feature_name",
    "aux_feature_name",
]

FORMAT_VERSION = 1
NUM_FEATURES = 16
PIXEL_STEP = 64  # VAE 8x times UNet 8x down-sampling: a processing side must be a multiple of this


class Precision(KeyEnum):
    FP32 = "fp32"
    FP16 = "fp16"
    INT8 = "int8"


class QdqTarget(KeyEnum):
    """The runtime an int8 QDQ graph's Q/DQ placement is for (its entry's ``quantization.target``)."""

    TENSORRT = "tensorrt"
    ONNXRUNTIME = "onnxruntime"


class Component(KeyEnum):
    ENCODER = "encoder"
    UNET = "unet"
    UNET_MAIN = "unet_main"
    DECODER = "decoder"
    TINY_DECODER = "tiny_decoder"  # optional: a distilled stand-in for `decoder`


class Mode(KeyEnum):
    """``single``: one UNet pass per task. ``multi``: shared auxiliary passes + one main pass per task."""

    SINGLE = "single"
    MULTI = "multi"

    @property
    def components(self) -> tuple[Component, ...]:
        """The components this schedule runs, in pipeline order."""
        if self is Mode.MULTI:
            return (Component.ENCODER, Component.UNET, Component.UNET_MAIN, Component.DECODER)
        return (Component.ENCODER, Component.UNET, Component.DECODER)

    @property
    def serves(self) -> tuple[Mode, ...]:
        """The modes an artifact exported in this mode can run: a multi-stream one also runs single."""
        return (Mode.SINGLE, Mode.MULTI) if self is Mode.MULTI else (Mode.SINGLE,)


# -- schema: each value is checked where it is read, and a wrong one is named by its key path ------------
class ManifestSchemaError(StableMTLError):
    """A manifest value of the wrong type or range; ``detail`` names its key path (``profile.height``)."""

    def __init__(self, key: str, expected: str, value: Any) -> None:
        self.key = key
        self.detail = f"{key} must be {expected}, got {_show(value)}"
        super().__init__(f"{MANIFEST_NAME}: {self.detail}")


def _show(value: Any) -> str:
    try:
        text = json.dumps(value)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _get(d: Mapping[str, Any], key: str, where: str, default: Any = ...) -> Any:
    if key in d:
        return d[key]
    if default is ...:
        raise StableMTLError(f"{MANIFEST_NAME}: `{_join(where, key)}` is missing")
    return default


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _mapping(value: Any, key: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ManifestSchemaError(key, "a JSON object", value)
    return value


def _list(value: Any, key: str) -> list[Any]:
    if not isinstance(value, list):
        raise ManifestSchemaError(key, "a JSON array", value)
    return value


def _str(value: Any, key: str) -> str:
    if not isinstance(value, str) or not value:
        raise ManifestSchemaError(key, "a non-empty string", value)
    return value


def _int(value: Any, key: str, minimum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or (minimum is not None and value < minimum):
        raise ManifestSchemaError(key, "an integer" + (f" >= {minimum}" if minimum is not None else ""), value)
    return value


def _number(value: Any, key: str, minimum: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or (
        minimum is not None and value < minimum
    ):
        raise ManifestSchemaError(key, "a finite number" + (f" >= {minimum:g}" if minimum is not None else ""), value)
    return float(value)


def _enum(cls: type[enum.Enum], value: Any, key: str) -> Any:
    try:
        return cls(value)
    except ValueError:
        raise ManifestSchemaError(key, "one of " + ", ".join(m.value for m in cls), value) from None


def _digest(value: Any, key: str) -> str:
    if not isinstance(value, str) or not re.fullmatch(r"[0-9a-f]{64}", value):
        raise ManifestSchemaError(key, "a sha256 hex digest", value)
    return value


def _relative_file(value: Any, key: str) -> str:
    """A path inside the artifact: relative, POSIX, never leaving the directory."""
    if not isinstance(value, str) or not value or value.startswith("/") or "\\" in value or ".." in value.split("/"):
        raise ManifestSchemaError(key, "a relative path inside the artifact directory", value)
    return value


def _str_map(value: Any, key: str, check: Any = _str) -> dict[str, Any]:
    return {str(k): check(v, f"{key}.{k}") for k, v in _mapping(value, key).items()}


def check_frame_size(height: Any, width: Any, where: str = "profile") -> tuple[int, int]:
    """The one rule for a processing size: positive multiples of :data:`PIXEL_STEP` pixels."""
    for name, v in (("height", height), ("width", width)):
        if isinstance(v, bool) or not isinstance(v, int) or v <= 0 or v % PIXEL_STEP:
            raise ManifestSchemaError(_join(where, name), f"a positive multiple of {PIXEL_STEP}", v)
    return height, width


def feature_name(i: int) -> str:
    return f"feat_{i:02d}"


def aux_feature_name(i: int) -> str:
    return f"aux_feat_{i:02d}"


@dataclass(frozen=True)
class TensorSpec:
    """A graph input or output; symbolic dimensions are strings (``"batch"``)."""

    name: str
    dtype: str
    shape: tuple[int | str, ...]

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], where: str = "tensor") -> TensorSpec:
        d = _mapping(d, where)
        shape = _list(_get(d, "shape", where), f"{where}.shape")
        for i, dim in enumerate(shape):
            if not isinstance(dim, str) or not dim:
                _int(dim, f"{where}.shape[{i}]", 0)
        return cls(name=_str(_get(d, "name", where), f"{where}.name"), dtype=_str(_get(d, "dtype", where), f"{where}.dtype"),
                   shape=tuple(shape))


@dataclass(frozen=True)
class FeatureSpec:
    """One of the 16 self-attention feature taps, in the official task-attention order."""

    index: int
    layer: str
    channels: int
    downsample: int  # relative to the latent

    @property
    def name(self) -> str:
        return feature_name(self.index)

    def tokens(self, latent_hw: tuple[int, int]) -> int:
        h, w = latent_hw
        return -(-h // self.downsample) * -(-w // self.downsample)


@dataclass(frozen=True)
class ShapeProfile:
    """Processing resolution and batch range of the exported graphs.

    ``height``/``width`` are the optimal (and, for static graphs, the only) frame size in pixels;
    ``min_hw``/``max_hw`` are set when height and width are dynamic. ``max_batch`` covers the largest
    UNet call (7 rows: every task).
    """

    height: int
    width: int
    min_batch: int = 1
    opt_batch: int = 1
    max_batch: int = 7
    min_hw: tuple[int, int] | None = None
    max_hw: tuple[int, int] | None = None

    @property
    def dynamic_hw(self) -> bool:
        return self.min_hw is not None

    @property
    def latent_hw(self) -> tuple[int, int]:
        return self.height // 8, self.width // 8

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], where: str = "profile") -> ShapeProfile:
        d = _mapping(d, where)
        height, width = check_frame_size(_get(d, "height", where), _get(d, "width", where), where)
        batch = [_int(d.get(k, default), _join(where, k), 1) for k, default in
                 (("min_batch", 1), ("opt_batch", 1), ("max_batch", 7))]
        if not batch[0] <= batch[1] <= batch[2]:
            raise ManifestSchemaError(_join(where, "opt_batch"), f"within min_batch..max_batch ({batch[0]}..{batch[2]})",
                                      batch[1])
        hw = []
        for k in ("min_hw", "max_hw"):
            v = d.get(k)
            if v is not None:
                if not isinstance(v, list) or len(v) != 2:
                    raise ManifestSchemaError(_join(where, k), "null or [height, width]", v)
                v = check_frame_size(v[0], v[1], _join(where, k))
            hw.append(v)
        if (hw[0] is None) != (hw[1] is None):
            raise ManifestSchemaError(_join(where, "max_hw"), "set together with min_hw", d.get("max_hw"))
        if hw[0] is not None and not (hw[0][0] <= height <= hw[1][0] and hw[0][1] <= width <= hw[1][1]):
            raise ManifestSchemaError(_join(where, "height"), f"within min_hw..max_hw ({hw[0]}..{hw[1]})", [height, width])
        return cls(height, width, *batch, hw[0], hw[1])


@dataclass
class ComponentEntry:
    """One ONNX file of the artifact, as the manifest records it."""

    component: Component
    precision: Precision
    file: str  # relative to the artifact directory, POSIX separators
    sha256: str
    opset: int
    exporter: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    external_data: str | None = None
    parity: dict[str, Any] = field(default_factory=dict)
    quantization: dict[str, Any] | None = None
    flops_per_row: int | None = None  # torch FlopCounterMode at export, one batch row at the export size

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["component"] = self.component.value
        d["precision"] = self.precision.value
        return d

    @property
    def qdq_target(self) -> QdqTarget | None:
        """Who the Q/DQ placement of a quantized graph is for (entries written before the choice: TensorRT)."""
        if not (self.quantization or {}).get("quantized", True) or self.precision is not Precision.INT8:
            return None
        return QdqTarget.parse((self.quantization or {}).get("target", QdqTarget.TENSORRT.value), "Q/DQ target")

    def paths(self) -> list[str]:
        """The files of this component, relative to the artifact: the graph, then its external data."""
        if not self.external_data:
            return [self.file]
        return [self.file, f"{Path(self.file).parent.as_posix()}/{self.external_data}"]

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], where: str = "component") -> ComponentEntry:
        d = _mapping(d, where)
        external = d.get("external_data")
        if external is not None and (not isinstance(external, str) or "/" in external or external in ("", ".", "..")):
            raise ManifestSchemaError(f"{where}.external_data", "null or a file name beside the graph", external)
        quantization, flops = d.get("quantization"), d.get("flops_per_row")
        return cls(
            component=_enum(Component, _get(d, "component", where), f"{where}.component"),
            precision=_enum(Precision, _get(d, "precision", where), f"{where}.precision"),
            file=_relative_file(_get(d, "file", where), f"{where}.file"),
            sha256=_digest(_get(d, "sha256", where), f"{where}.sha256"),
            opset=_int(_get(d, "opset", where), f"{where}.opset", 1),
            exporter=_str(_get(d, "exporter", where), f"{where}.exporter"),
            inputs=tuple(TensorSpec.from_dict(t, f"{where}.inputs[{i}]")
                         for i, t in enumerate(_list(_get(d, "inputs", where), f"{where}.inputs"))),
            outputs=tuple(TensorSpec.from_dict(t, f"{where}.outputs[{i}]")
                          for i, t in enumerate(_list(_get(d, "outputs", where), f"{where}.outputs"))),
            external_data=external,
            parity=dict(_mapping(d.get("parity") or {}, f"{where}.parity")),
            quantization=None if quantization is None else dict(_mapping(quantization, f"{where}.quantization")),
            flops_per_row=None if flops is None else _int(flops, f"{where}.flops_per_row", 0),
        )


@dataclass
class Manifest:
    """Everything a runtime needs to know about an artifact directory.

    Attributes:
        preset: the model preset's dictionary (``ModelPreset.to_dict()``).
        mode: ``multi`` when the artifact has ``unet_main`` (it then also serves ``single``).
        tasks: task keys in canonical order (the task id of a graph is the index in this list).
        components: ``{precision: {component: entry}}``.
        features: the 16 feature taps (multi-stream only).
        tolerance: per-task end-to-end tolerance (max abs error on the decoded image) that a backend must
            meet against the references.
        files: sha256 of every file of the artifact (relative POSIX path -> digest), references and
            external data included; engines are not listed (they carry their own ``engine.json``).
        references: reference name (``encoder``, ..., ``end_to_end``) -> ``.npz`` file under ``reference/``
            holding torch inputs (``in.<name>``) and outputs (``out.<name>``) so a target can check itself.
        parity: end-to-end errors measured at export, ``{precision: {mode: {task: {output: figures}}}}``.
    """

    preset: dict[str, Any]
    mode: Mode
    profile: ShapeProfile
    components: dict[Precision, dict[Component, ComponentEntry]] = field(default_factory=dict)
    features: tuple[FeatureSpec, ...] = ()
    tasks: tuple[str, ...] = TASK_NAMES
    latent_scale: float = 0.18215
    latent_channels: int = 4
    timestep: int = 999
    preprocess: dict[str, Any] = field(
        default_factory=lambda: {"resize": "letterbox", "pad": "edge", "align": "top-left"}
    )
    tolerance: dict[str, float] = field(default_factory=dict)
    source: dict[str, Any] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)
    references: dict[str, str] = field(default_factory=dict)
    parity: dict[str, Any] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION
    producer: dict[str, str] = field(default_factory=lambda: {"package": "stablemtl-edge", "version": __version__})

    # -- queries -----------------------------------------------------------------------------------------
    def precisions(self) -> tuple[Precision, ...]:
        return tuple(p for p in Precision if p in self.components)

    @property
    def aux_broadcast(self) -> bool:
        """True when ``unet_main`` takes the auxiliary features once per frame, ``(1, 7, N, C)``, and broadcasts
        them in the graph; False for artifacts that take them tiled per main row, ``(B, 7, N, C)``."""
        for comps in self.components.values():
            entry = comps.get(Component.UNET_MAIN)
            if entry is not None:
                aux = [t for t in entry.inputs if t.name == aux_feature_name(0)]
                return bool(aux) and aux[0].shape[0] == 1
        return False

    def flops_per_row(self, component: Component | str) -> int | None:
        """FLOPs of one batch row of ``component`` as counted at export (a multiply-add counts 2), or None for
        an artifact exported before the count. The computation is the same in every precision set, so an
        entry without a count (an int8 graph from calibration) takes that of the fp32 or fp16 one."""
        component = Component.parse(component, "component")
        counts = [e.flops_per_row for comps in self.components.values() if (e := comps.get(component)) is not None]
        return next((n for n in counts if n is not None), None)

    def recorded_parity(self, precision: Precision | str) -> dict[str, dict[str, Any]]:
        """Every error recorded for a precision set, keyed as the comparator keys them (``unet/photo/latent``
        from the entries, ``e2e/multi/depth/image`` from ``parity``)."""
        precision = Precision.parse(precision, "precision")
        out: dict[str, dict[str, Any]] = {}
        for c, e in self.components.get(precision, {}).items():
            out.update({f"{c.value}/{k}": v for k, v in (e.parity or {}).items()})
        for mode, tasks in (self.parity.get(precision.value) or {}).items():
            for task, outputs in tasks.items():
                out.update({f"e2e/{mode}/{task}/{o}": v for o, v in outputs.items()})
        return out

    def component_precisions(self, precision: Precision | str) -> dict[Component, Precision]:
        """What each component of a precision set really runs in: an int8 set keeps the components that
        were not quantized, or failed the accuracy gate, in fp16 (or fp32)."""
        return {c: e.precision for c, e in self.components[Precision.parse(precision, "precision")].items()}

    def describe_precision(self, precision: Precision | str) -> str:
        """``fp16`` when every component runs in it, else which runs in what and why, e.g.
        ``int8 set: encoder fp16 (not selected for int8), unet int8 (mixed: 2 blocks in floating point),
        decoder fp16 (failed the int8 gate)``."""
        precision = Precision.parse(precision, "precision")
        entries = self.components[precision]

        def mixed(e: ComponentEntry) -> int:  # blocks the sensitivity search kept in floating point
            return len(((e.quantization or {}).get("mixed") or {}).get("blocks_in_float", ()))

        # TensorRT's placement is the default; graphs placed for onnxruntime say so wherever the set is named.
        placed = (" (Q/DQ for onnxruntime)" if any(e.qdq_target is QdqTarget.ONNXRUNTIME for e in entries.values())
                  else "")
        if all(e.precision is precision and not mixed(e) for e in entries.values()):
            return precision.value + placed
        parts = []
        for c in Component:
            e = entries.get(c)
            if e is None:
                continue
            why = ""
            if e.precision is not precision:
                reason = str((e.quantization or {}).get("reason", ""))
                why = " (failed the int8 gate)" if "gate" in reason else f" ({reason})" if reason else ""
            elif mixed(e):
                why = f" (mixed: {mixed(e)} block{'s' if mixed(e) > 1 else ''} in floating point)"
            parts.append(f"{c.value} {e.precision.value}{why}")
        return f"{precision.value} set{placed}: " + ", ".join(parts)

    def entry(self, precision: Precision | str, component: Component | str) -> ComponentEntry:
        precision = Precision.parse(precision, "precision")
        component = Component.parse(component, "component")
        if precision not in self.components:
            have = ", ".join(p.value for p in self.precisions()) or "none"
            raise StableMTLError(
                f"the artifact has no {precision.value} components (it has: {have})"
                + ("; int8 graphs come from `stablemtl-calibrate -a <artifact dir>`" if precision is Precision.INT8 else
                   f"; export them with `stablemtl-export export <checkpoint> --out <artifact dir> --precision "
                   f"{precision.value}`")
            )
        try:
            return self.components[precision][component]
        except KeyError:
            raise StableMTLError(
                f"the artifact has no {precision.value} `{component.value}` component "
                f"(mode {self.mode.value}); re-export with the right --mode"
            ) from None

    # -- persistence -------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "format_version": self.format_version,
            "producer": dict(self.producer),
            "preset": self.preset,
            "mode": self.mode.value,
            "tasks": list(self.tasks),
            "latent_scale": self.latent_scale,
            "latent_channels": self.latent_channels,
            "timestep": self.timestep,
            "profile": self.profile.to_dict(),
            "preprocess": dict(self.preprocess),
            "features": [asdict(f) for f in self.features],
            "tolerance": dict(self.tolerance),
            "source": dict(self.source),
            "files": dict(self.files),
            "references": dict(self.references),
            "parity": dict(self.parity),
            "components": {
                p.value: {c.value: e.to_dict() for c, e in comps.items()} for p, comps in self.components.items()
            },
        }

    def save(self, directory: str | os.PathLike) -> Path:
        """Write ``manifest.json`` atomically (call it last, after every file it names is in place)."""
        path = Path(directory) / MANIFEST_NAME
        atomic_write_text(path, json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n")
        return path

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Manifest:
        """Check every value's type and range while reading it: a wrong one is one error naming its key."""
        if not isinstance(d, Mapping):
            raise ManifestSchemaError("the top level", "a JSON object", d)
        version = d.get("format_version")
        if version != FORMAT_VERSION or isinstance(version, bool):
            raise StableMTLError(
                f"artifact format version {_show(version)} is not supported by this stablemtl-edge "
                f"(which reads version {FORMAT_VERSION}); re-export the model with this version"
            )
        tasks = tuple(_str(t, f"tasks[{i}]") for i, t in enumerate(_list(_get(d, "tasks", ""), "tasks")))
        if tasks != TASK_NAMES:
            raise StableMTLError(f"artifact task order {tasks} differs from the canonical {TASK_NAMES}")
        components: dict[Precision, dict[Component, ComponentEntry]] = {}
        for p, comps in _mapping(d.get("components", {}), "components").items():
            prec = _enum(Precision, p, "components.<precision>")
            components[prec] = {}
            for c, e in _mapping(comps, f"components.{p}").items():
                comp = _enum(Component, c, f"components.{p}.<component>")
                entry = ComponentEntry.from_dict(e, f"components.{p}.{c}")
                if entry.component is not comp:  # its precision may differ: an int8 set keeps unquantized graphs
                    raise ManifestSchemaError(f"components.{p}.{c}.component", c, entry.component.value)
                components[prec][comp] = entry
        features = []
        for i, f in enumerate(_list(d.get("features", []), "features")):
            key = f"features[{i}]"
            f = _mapping(f, key)
            features.append(FeatureSpec(
                index=_int(_get(f, "index", key), f"{key}.index", 0), layer=_str(_get(f, "layer", key), f"{key}.layer"),
                channels=_int(_get(f, "channels", key), f"{key}.channels", 1),
                downsample=_int(_get(f, "downsample", key), f"{key}.downsample", 1),
            ))
        return cls(
            preset=dict(_mapping(_get(d, "preset", ""), "preset")),
            mode=_enum(Mode, _get(d, "mode", ""), "mode"),
            profile=ShapeProfile.from_dict(_get(d, "profile", "")),
            components=components,
            features=tuple(features),
            tasks=tasks,
            latent_scale=_number(_get(d, "latent_scale", ""), "latent_scale"),
            latent_channels=_int(_get(d, "latent_channels", ""), "latent_channels", 1),
            timestep=_int(_get(d, "timestep", ""), "timestep", 0),
            preprocess=dict(_mapping(d.get("preprocess", {}), "preprocess")),
            tolerance=_str_map(d.get("tolerance", {}), "tolerance", lambda v, k: _number(v, k, 0.0)),
            source=dict(_mapping(d.get("source", {}), "source")),
            files={_relative_file(k, "files.<path>"): v for k, v in _str_map(d.get("files", {}), "files", _digest).items()},
            references={k: _relative_file(v, f"references.{k}") for k, v in _str_map(d.get("references", {}), "references").items()},
            parity=dict(_mapping(d.get("parity", {}), "parity")),
            format_version=version,
            producer=_str_map(d.get("producer", {}), "producer", lambda v, k: str(v)),
        )

    @classmethod
    def load(cls, directory: str | os.PathLike) -> Manifest:
        """Read ``DIR/manifest.json``; a missing or malformed file is a one-line error naming the path."""
        path = Path(directory) / MANIFEST_NAME
        if not Path(directory).is_dir():
            raise StableMTLError(f"artifact directory `{directory}` does not exist; run `stablemtl-export` first")
        if not path.is_file():
            raise StableMTLError(
                f"`{path}` is missing: `{directory}` is not a complete artifact directory "
                "(an interrupted export leaves none); run `stablemtl-export` again"
            )
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as e:
            raise StableMTLError(f"`{path}` is not readable JSON ({type(e).__name__}: {e}); re-export the model") from None
        try:
            return cls.from_dict(data)
        except ManifestSchemaError as e:
            raise StableMTLError(f"`{path}`: {e.detail}; re-export the model") from None
        except StableMTLError as e:
            raise StableMTLError(f"`{path}`: {str(e).removeprefix(MANIFEST_NAME + ': ')}") from None

    def verify_files(
        self,
        directory: str | os.PathLike,
        precisions: Iterable[Precision] | None = None,
        components: Iterable[Component] | None = None,
    ) -> None:
        """Check that every graph and external-data file exists and has the recorded sha256.

        Large files go through the digest cache (:mod:`.digest`): unchanged since the last check, they are
        not read again; any change to their bytes changes their ctime and they are re-hashed.
        """
        wanted_c = set(components) if components is not None else None
        for p in precisions if precisions is not None else self.precisions():
            for c, e in self.components.get(p, {}).items():
                if wanted_c is not None and c not in wanted_c:
                    continue
                for rel in e.paths():
                    expected = e.sha256 if rel == e.file else self.files.get(rel)
                    path = Path(directory) / rel
                    if not path.is_file():
                        raise StableMTLError(f"`{path}` named by the manifest is missing; re-export the model")
                    if expected is None:
                        raise StableMTLError(
                            f"`{path}`: the manifest records no sha256 for this external data file, so it cannot "
                            "be checked; re-export the model"
                        )
                    digest = cached_sha256(path)
                    if digest != expected:
                        raise StableMTLError(
                            f"`{path}` does not match the manifest (sha256 {digest[:12]}... != {expected[:12]}...): "
                            "the file was changed or truncated; re-export the model"
                        )
