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
- ``unet_main``: ``sample``, ``task_id``, ``aux_feat_00`` .. ``aux_feat_15`` float32 (B, 7, N_l, C_l)
  (the auxiliary features of all seven tasks, canonical order; the row's own task slot is ignored)
  -> ``latent`` (B, 4, h, w)
- ``decoder``: ``latent`` (B, 4, h, w) -> ``image`` float32 (B, 3, H, W), clipped to [-1, 1]

Frames of another size are letterboxed: resized with their aspect ratio kept to fit H x W, padded by
edge replication at the bottom/right, and predictions are cropped back and resized to the frame's size.
torch-free (the runtime reads this module).
"""

from __future__ import annotations

import enum
import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .. import __version__
from ..atomic import atomic_write_text
from ..errors import StableMTLError
from ..tasks import TASK_NAMES

__all__ = [
    "FORMAT_VERSION",
    "MANIFEST_NAME",
    "Precision",
    "Component",
    "Mode",
    "TensorSpec",
    "ComponentEntry",
    "ShapeProfile",
    "FeatureSpec",
    "Manifest",
    "file_sha256",
    "feature_name",
    "aux_feature_name",
]

FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
NUM_FEATURES = 16


class Precision(str, enum.Enum):
    FP32 = "fp32"
    FP16 = "fp16"
    INT8 = "int8"

    def __str__(self) -> str:
        return self.value


class Component(str, enum.Enum):
    ENCODER = "encoder"
    UNET = "unet"
    UNET_MAIN = "unet_main"
    DECODER = "decoder"

    def __str__(self) -> str:
        return self.value


class Mode(str, enum.Enum):
    """``single``: one UNet pass per task. ``multi``: shared auxiliary passes + one main pass per task."""

    SINGLE = "single"
    MULTI = "multi"

    def __str__(self) -> str:
        return self.value


def parse_enum(cls: type[enum.Enum], value: Any, what: str) -> Any:
    """Parse a short key into an enum member, naming the valid keys on failure."""
    if isinstance(value, cls):
        return value
    try:
        return cls(str(value).strip().lower())
    except ValueError:
        valid = ", ".join(m.value for m in cls)
        raise StableMTLError(f"unknown {what} `{value}`: choose from {valid}") from None


def feature_name(i: int) -> str:
    return f"feat_{i:02d}"


def aux_feature_name(i: int) -> str:
    return f"aux_feat_{i:02d}"


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


@dataclass(frozen=True)
class TensorSpec:
    """A graph input or output; symbolic dimensions are strings (``"batch"``)."""

    name: str
    dtype: str
    shape: tuple[int | str, ...]

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TensorSpec:
        return cls(name=d["name"], dtype=d["dtype"], shape=tuple(d["shape"]))


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
    def from_dict(cls, d: Mapping[str, Any]) -> ShapeProfile:
        d = dict(d)
        for k in ("min_hw", "max_hw"):
            if d.get(k) is not None:
                d[k] = tuple(d[k])
        return cls(**d)


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

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["component"] = self.component.value
        d["precision"] = self.precision.value
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ComponentEntry:
        return cls(
            component=parse_enum(Component, d["component"], "component"),
            precision=parse_enum(Precision, d["precision"], "precision"),
            file=d["file"],
            sha256=d["sha256"],
            opset=int(d["opset"]),
            exporter=d["exporter"],
            inputs=tuple(TensorSpec.from_dict(t) for t in d["inputs"]),
            outputs=tuple(TensorSpec.from_dict(t) for t in d["outputs"]),
            external_data=d.get("external_data"),
            parity=dict(d.get("parity") or {}),
            quantization=d.get("quantization"),
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

    def entry(self, precision: Precision | str, component: Component | str) -> ComponentEntry:
        precision = parse_enum(Precision, precision, "precision")
        component = parse_enum(Component, component, "component")
        if precision not in self.components:
            have = ", ".join(p.value for p in self.precisions()) or "none"
            raise StableMTLError(
                f"the artifact has no {precision.value} components (it has: {have}); "
                f"export them with `stablemtl-export --precision {precision.value}`"
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
        version = d.get("format_version")
        if version != FORMAT_VERSION:
            raise StableMTLError(
                f"artifact format version {version} is not supported by this stablemtl-edge "
                f"(which reads version {FORMAT_VERSION}); re-export the model with this version"
            )
        tasks = tuple(d["tasks"])
        if tasks != TASK_NAMES:
            raise StableMTLError(f"artifact task order {tasks} differs from the canonical {TASK_NAMES}")
        components: dict[Precision, dict[Component, ComponentEntry]] = {}
        for p, comps in d.get("components", {}).items():
            prec = parse_enum(Precision, p, "precision")
            components[prec] = {parse_enum(Component, c, "component"): ComponentEntry.from_dict(e) for c, e in comps.items()}
        return cls(
            preset=dict(d["preset"]),
            mode=parse_enum(Mode, d["mode"], "mode"),
            profile=ShapeProfile.from_dict(d["profile"]),
            components=components,
            features=tuple(FeatureSpec(**f) for f in d.get("features", ())),
            tasks=tasks,
            latent_scale=float(d["latent_scale"]),
            latent_channels=int(d["latent_channels"]),
            timestep=int(d["timestep"]),
            preprocess=dict(d.get("preprocess", {})),
            tolerance={k: float(v) for k, v in d.get("tolerance", {}).items()},
            source=dict(d.get("source", {})),
            files={str(k): str(v) for k, v in d.get("files", {}).items()},
            references={str(k): str(v) for k, v in d.get("references", {}).items()},
            parity=dict(d.get("parity", {})),
            format_version=version,
            producer=dict(d.get("producer", {})),
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
            return cls.from_dict(data)
        except StableMTLError:
            raise
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
            raise StableMTLError(f"`{path}` is malformed ({type(e).__name__}: {e}); re-export the model") from None

    def verify_files(
        self,
        directory: str | os.PathLike,
        precisions: Iterable[Precision] | None = None,
        components: Iterable[Component] | None = None,
    ) -> None:
        """Check that every named file exists and has the recorded sha256."""
        wanted_c = set(components) if components is not None else None
        for p in precisions if precisions is not None else self.precisions():
            for c, e in self.components.get(p, {}).items():
                if wanted_c is not None and c not in wanted_c:
                    continue
                path = Path(directory) / e.file
                if not path.is_file():
                    raise StableMTLError(f"`{path}` named by the manifest is missing; re-export the model")
                digest = file_sha256(path)
                if digest != e.sha256:
                    raise StableMTLError(
                        f"`{path}` does not match the manifest (sha256 {digest[:12]}... != {e.sha256[:12]}...): "
                        "the file was changed or truncated; re-export the model"
                    )
