"""The TensorRT engine cache: key, ``engine.json`` record, and the decision whether a cached engine may run.

Engines live in ``DIR/engines/<key>/{engine.plan,engine.json}``. The key is the sha256 of everything an
engine is tied to: the ONNX file's sha256, the precision, the shape profile, the TensorRT version, the GPU
name and its compute capability. The builder (``stablemtl-export build``) writes records through
:func:`write_record`; the runtime's TensorRT backend finds and checks them through :func:`validate`.
A record that differs from what is expected in any field, or whose plan is missing or changed, is never
used: the builder rebuilds it, the runtime refuses it with what differs and the command that rebuilds it.

torch-free and TensorRT-free: keys and records are plain data, testable anywhere.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import StableMTLError
from ..records import JsonRecord
from .layout import ENGINE_FILE, ENGINES_DIR, RECORD_FILE
from .manifest import Component, Precision, ShapeProfile, file_sha256
from ..records import KeyEnum

__all__ = [
    "EngineTarget",
    "EngineKey",
    "EngineRecord",
    "CacheStatus",
    "CacheCheck",
    "engine_dir",
    "write_record",
    "read_record",
    "validate",
    "check_entry",
    "cached_entries",
    "rebuild_command",
]


@dataclass(frozen=True)
class EngineTarget:
    """The machine side of the key: which TensorRT and which GPU an engine is built for."""

    tensorrt_version: str
    gpu_name: str
    compute_capability: str  # "8.7"

    def describe(self) -> str:
        return f"TensorRT {self.tensorrt_version} on {self.gpu_name} (sm {self.compute_capability})"


@dataclass(frozen=True)
class EngineKey:
    """Everything an engine depends on; its :meth:`digest` names the cache directory."""

    onnx_sha256: str
    precision: Precision
    profile: ShapeProfile
    target: EngineTarget

    def fields(self) -> dict[str, Any]:
        return {
            "onnx_sha256": self.onnx_sha256,
            "precision": self.precision.value,
            "profile": json.loads(json.dumps(self.profile.to_dict())),  # as stored: tuples become lists
            "tensorrt_version": self.target.tensorrt_version,
            "gpu_name": self.target.gpu_name,
            "compute_capability": self.target.compute_capability,
        }

    def digest(self) -> str:
        canonical = json.dumps(self.fields(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class EngineRecord(JsonRecord):
    """The content of ``engine.json``: the key fields, the component, the plan's digest and build facts."""

    record_name = "TensorRT engine record (engine.json)"

    key: str
    component: Component
    precision: Precision
    onnx_sha256: str
    profile: dict[str, Any]
    tensorrt_version: str
    gpu_name: str
    compute_capability: str
    plan_sha256: str
    build: dict[str, Any]

    @classmethod
    def for_key(cls, key: EngineKey, component: Component, plan_sha256: str, build: Mapping[str, Any]) -> EngineRecord:
        f = key.fields()
        return cls(
            key=key.digest(),
            component=component,
            precision=key.precision,
            onnx_sha256=f["onnx_sha256"],
            profile=f["profile"],
            tensorrt_version=f["tensorrt_version"],
            gpu_name=f["gpu_name"],
            compute_capability=f["compute_capability"],
            plan_sha256=plan_sha256,
            build=dict(build),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "component": self.component.value,
            "precision": self.precision.value,
            "onnx_sha256": self.onnx_sha256,
            "profile": self.profile,
            "tensorrt_version": self.tensorrt_version,
            "gpu_name": self.gpu_name,
            "compute_capability": self.compute_capability,
            "plan_sha256": self.plan_sha256,
            "build": self.build,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> EngineRecord:
        return cls(
            key=str(d["key"]),
            component=Component.parse(d["component"], "component"),
            precision=Precision.parse(d["precision"], "precision"),
            onnx_sha256=str(d["onnx_sha256"]),
            profile=dict(d["profile"]),
            tensorrt_version=str(d["tensorrt_version"]),
            gpu_name=str(d["gpu_name"]),
            compute_capability=str(d["compute_capability"]),
            plan_sha256=str(d["plan_sha256"]),
            build=dict(d.get("build", {})),
        )

    @property
    def target(self) -> EngineTarget:
        return EngineTarget(self.tensorrt_version, self.gpu_name, self.compute_capability)


class CacheStatus(KeyEnum):
    VALID = "valid"
    MISSING = "missing"
    MISMATCH = "mismatch"  # the record is for another ONNX / precision / profile / TensorRT / GPU
    CORRUPT = "corrupt"  # unreadable record, missing or changed plan


@dataclass(frozen=True)
class CacheCheck:
    """The verdict on ``engines/<key>/``; truthy only when the engine may be used."""

    status: CacheStatus
    directory: Path
    reason: str = ""
    record: EngineRecord | None = None

    def __bool__(self) -> bool:
        return self.status is CacheStatus.VALID

    @property
    def plan(self) -> Path:
        return self.directory / ENGINE_FILE


def engine_dir(artifact_dir: str | Path, key: EngineKey) -> Path:
    return Path(artifact_dir) / ENGINES_DIR / key.digest()


def rebuild_command(artifact_dir: str | Path, precision: Precision) -> str:
    return f"stablemtl-export build -a {artifact_dir} --precision {precision.value}"


def write_record(directory: Path, record: EngineRecord) -> Path:
    """Write ``engine.json`` atomically (after the plan it describes is in place)."""
    return record.save(directory / RECORD_FILE)


def read_record(directory: Path) -> EngineRecord:
    return EngineRecord.load(directory / RECORD_FILE)


def validate(artifact_dir: str | Path, key: EngineKey, component: Component) -> CacheCheck:
    """Check the cache entry of ``key``: present, record equal to the key in every field, plan intact."""
    return check_entry(engine_dir(artifact_dir, key), key, component)


def cached_entries(artifact_dir: str | Path) -> list[Path]:
    """Every ``engines/<key>/`` directory that holds a record (whatever it was built for)."""
    root = Path(artifact_dir) / ENGINES_DIR
    return sorted(p.parent for p in root.glob(f"*/{RECORD_FILE}")) if root.is_dir() else []


def check_entry(directory: Path, key: EngineKey, component: Component) -> CacheCheck:
    """Check one cache directory against ``key``; the reason names every field that differs."""
    if not (directory / RECORD_FILE).is_file():
        return CacheCheck(CacheStatus.MISSING, directory, f"no engine cached for key {key.digest()[:12]}")
    try:
        record = read_record(directory)
    except StableMTLError as e:
        return CacheCheck(CacheStatus.CORRUPT, directory, str(e))
    expected = key.fields()
    got = {k: getattr(record, k) if k != "precision" else record.precision.value for k in expected}
    different = [k for k in expected if got[k] != expected[k]]
    if record.key != key.digest():
        different.insert(0, "key")
    if record.component is not component:
        different.append("component")
    if different:
        what = ", ".join(different)
        detail = ""
        if {"tensorrt_version", "gpu_name", "compute_capability"} & set(different):
            detail = f": built for {record.target.describe()}, this is {key.target.describe()}"
        return CacheCheck(CacheStatus.MISMATCH, directory, f"`{directory.name}` differs in {what}{detail}", record)
    if directory.name != record.key:  # copied or renamed: the builder and the loader look under the key only
        return CacheCheck(CacheStatus.MISMATCH, directory,
                          f"`{directory.name}` holds the engine of key {record.key[:12]} under another name (copied "
                          f"or renamed): move it to `{ENGINES_DIR}/{record.key}`", record)
    plan = directory / ENGINE_FILE
    if not plan.is_file():
        return CacheCheck(CacheStatus.CORRUPT, directory, f"`{plan}` is missing", record)
    if file_sha256(plan) != record.plan_sha256:
        return CacheCheck(CacheStatus.CORRUPT, directory, f"`{plan}` changed since it was built (sha256 differs)", record)
    return CacheCheck(CacheStatus.VALID, directory, "", record)
