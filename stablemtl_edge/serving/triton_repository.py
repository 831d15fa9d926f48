"""``stablemtl-export triton``: a Triton Inference Server model repository written from an artifact's manifest.

Layout (Triton's own conventions: one folder per model, ``config.pbtxt`` beside numbered versions)::

    REPO/
      README.md
      stablemtl/config.pbtxt  1/model.py  artifact/      the frame pipeline (Python backend)
      encoder_fp32/config.pbtxt  1/model.onnx            each component on the onnxruntime backend
      decoder_fp32_trt/config.pbtxt  1/model.plan        each built TensorRT engine on the tensorrt backend

Component configs take names, dtypes and dims from the manifest: a graph whose inputs and outputs all
lead with the symbolic batch dimension gets ``max_batch_size`` (the profile's largest batch) and dynamic
batching; a graph fed a per-call tensor (the broadcast auxiliary features of ``unet_main``) is served
unbatched. The ``stablemtl`` model (:mod:`.triton_model`) runs the torch-free scheduler; by default on
onnxruntime inside its own process (all that a Python-backend-only server offers), and with ``executor:
bls`` through Triton's BLS calls to the component models, which is the GPU-server path. Files are linked
(symbolic links, the default: a repository next to its artifact) or copied (``--copy``: a repository to
mount into NVIDIA's container or ship to another host). Torch-free and Triton-free: plain files only.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..atomic import atomic_directory, atomic_write_text
from ..errors import StableMTLError
from ..artifact.digest import file_sha256
from ..artifact.engine_cache import cached_entries, read_record
from ..artifact.layout import ENGINE_FILE, MANIFEST_NAME
from ..artifact.manifest import Component, ComponentEntry, Manifest, Precision, TensorSpec
from ..records import KeyEnum
from ..tasks import NUM_TASKS, TASK_NAMES
from . import contract

__all__ = ["Executor", "InstanceKind", "WireType", "RepositoryOptions", "RepositoryResult", "write_repository",
           "component_config", "frame_model_config", "model_name", "PROTOCOL"]

PROTOCOL = 1  # contract.PROTOCOL_VERSION written into the frame model's config
REPOSITORY_KIND = "triton-repository"
ARTIFACT_DIR = "artifact"  # inside the stablemtl model folder
_TRITON_DTYPE = {"float32": "TYPE_FP32", "float16": "TYPE_FP16", "int64": "TYPE_INT64", "int32": "TYPE_INT32",
                 "uint8": "TYPE_UINT8", "bool": "TYPE_BOOL"}
_MODEL_PY = '''"""Triton loads this file; the model lives in the installed package (stablemtl-edge)."""

from stablemtl_edge.serving.triton_model import TritonPythonModel  # noqa: F401
'''


class Executor(KeyEnum):
    """How the ``stablemtl`` model runs the components: onnxruntime in its own process, or BLS calls."""

    INPROCESS = "inprocess"
    BLS = "bls"


class WireType(KeyEnum):
    """The dtype of the task images the frame model sends: float32 (exact), or float16, which halves the bytes
    per frame (7 x 3 x H x W x 4 = 16.5 MB at 384x512 in float32) at an error of at most 2.5e-4 on [-1, 1],
    far inside the end-to-end tolerances an export records (1e-2 or more)."""

    FLOAT32 = "float32"
    FLOAT16 = "float16"


class InstanceKind(KeyEnum):
    """Where the component models' instances run (Triton's ``instance_group.kind``)."""

    GPU = "gpu"
    CPU = "cpu"

    @property
    def triton(self) -> str:
        return f"KIND_{self.value.upper()}"


@dataclass(frozen=True)
class RepositoryOptions:
    """What the repository serves and how.

    Attributes:
        precisions: the precisions to write component models for (default: every exported one).
        precision: the one the ``stablemtl`` model runs.
        instances: instances per model (per GPU for ``KIND_GPU``; Triton spreads them over the GPUs).
        kind: component instances on GPUs (the serving host) or CPUs.
        dynamic_batching: batch concurrent requests of a batchable component model.
        max_queue_delay_us: how long the dynamic batcher waits to fill a batch.
        executor: ``inprocess`` (onnxruntime inside the Python model) or ``bls`` (the component models).
        copy: copy the files instead of linking them.
        max_streams: sequences (camera streams) one ``stablemtl`` instance holds state for at once.
        stream_idle_s: a stream that sends nothing for this long is released by the sequence batcher.
        wire: the dtype of the task images on the wire.
    """

    precisions: tuple[Precision, ...] | None = None
    precision: Precision = Precision.FP32
    instances: int = 1
    kind: InstanceKind = InstanceKind.GPU
    dynamic_batching: bool = True
    max_queue_delay_us: int = 500
    executor: Executor = Executor.INPROCESS
    copy: bool = False
    max_streams: int = 16
    stream_idle_s: float = 60.0
    wire: WireType = WireType.FLOAT32


@dataclass
class RepositoryResult:
    """What :func:`write_repository` wrote: model name -> its folder."""

    directory: Path
    models: dict[str, Path] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)  # engines left out, with the reason


def model_name(component: Component, precision: Precision, engine: bool = False) -> str:
    """``encoder_fp32``, or ``encoder_fp16_trt`` for a TensorRT engine."""
    return f"{component.value}_{precision.value}{'_trt' if engine else ''}"


# -- config.pbtxt text ------------------------------------------------------------------------------------
def _q(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _dims(shape: Iterable[int | str]) -> str:
    return "[ " + ", ".join(str(d) if isinstance(d, int) and d >= 0 else "-1" for d in shape) + " ]"


def _tensor(spec: TensorSpec, batched: bool, optional: bool = False) -> str:
    dtype = _TRITON_DTYPE.get(spec.dtype)
    if dtype is None:
        raise StableMTLError(f"tensor `{spec.name}` has dtype {spec.dtype}, which has no Triton type; re-export the model")
    shape = spec.shape[1:] if batched else spec.shape
    body = [f"name: {_q(spec.name)}", f"data_type: {dtype}"]
    if batched and not shape:  # a per-row scalar ([batch]): Triton wants one dim, reshaped away
        body += ["dims: [ 1 ]", "reshape: { shape: [ ] }"]
    else:
        body.append(f"dims: {_dims(shape)}")
    if optional:
        body.append("optional: true")
    return "  {\n    " + "\n    ".join(body) + "\n  }"


def _io(kind: str, tensors: Sequence[str]) -> str:
    return f"{kind} [\n" + ",\n".join(tensors) + "\n]"


def _parameters(values: dict[str, str]) -> str:
    return "\n".join(f"parameters: {{ key: {_q(k)} value: {{ string_value: {_q(v)} }} }}" for k, v in values.items())


def _batchable(entry: ComponentEntry, manifest: Manifest) -> bool:
    """True when every input and output leads with one symbolic batch dimension Triton may batch along."""
    if entry.component is Component.UNET_MAIN and manifest.aux_broadcast:
        return False  # features enter once per call (batch 1) while the sample has k rows
    leads = {t.shape[0] if t.shape else None for t in (*entry.inputs, *entry.outputs)}
    return len(leads) == 1 and isinstance(next(iter(leads)), str)


def component_config(entry: ComponentEntry, manifest: Manifest, options: RepositoryOptions, name: str,
                     engine: bool = False) -> str:
    """The ``config.pbtxt`` of one component model (onnxruntime, or tensorrt for a built engine)."""
    batched = _batchable(entry, manifest)
    lines = [f"name: {_q(name)}",
             'backend: "tensorrt"' if engine else 'backend: "onnxruntime"',
             f"default_model_filename: {_q('model.plan' if engine else 'model.onnx')}",
             f"max_batch_size: {manifest.profile.max_batch if batched else 0}",
             _io("input", [_tensor(t, batched) for t in entry.inputs]),
             _io("output", [_tensor(t, batched) for t in entry.outputs]),
             f"instance_group [ {{ count: {options.instances} kind: "
             f"{InstanceKind.GPU.triton if engine else options.kind.triton} }} ]"]
    if batched and options.dynamic_batching:
        preferred = sorted({1, manifest.profile.opt_batch, manifest.profile.max_batch})
        lines.append(f"dynamic_batching {{ preferred_batch_size: [ {', '.join(map(str, preferred))} ] "
                     f"max_queue_delay_microseconds: {options.max_queue_delay_us} }}")
    return "\n".join(lines) + "\n"


def frame_model_config(manifest: Manifest, manifest_sha256: str, options: RepositoryOptions) -> str:
    """The ``config.pbtxt`` of the ``stablemtl`` frame model (see :mod:`.contract`)."""
    h, w = manifest.profile.height, manifest.profile.width
    frame = lambda n, opt=False: _tensor(TensorSpec(n, "uint8", (h, w, 3)), False, opt)  # noqa: E731
    numbers = lambda n, dims: ("  {\n    " + f"name: {_q(n)}\n    data_type: TYPE_INT32\n    dims: [ {dims} ]\n"
                                 "    optional: true\n  }")  # noqa: E731
    inputs = [frame(contract.FRAME1, True), frame(contract.FRAME2, True), numbers(contract.TASK_IDS, -1),
              numbers(contract.MODE, 1), numbers(contract.RATES, NUM_TASKS), numbers(contract.AUX_REUSE, 1)]
    outputs = [_tensor(TensorSpec(task, options.wire.value, (3, h, w)), False) for task in manifest.tasks]
    outputs += [_tensor(TensorSpec(contract.FRAME_INDEX, "int64", (1,)), False),
                _tensor(TensorSpec(contract.STAGE_MS, "float32", (len(contract.STAGES),)), False)]
    control = (
        f"  control_input [\n"
        f"    {{ name: {_q(contract.START)} control [ {{ kind: CONTROL_SEQUENCE_START int32_false_true: [ 0, 1 ] }} ] }},\n"
        f"    {{ name: {_q(contract.END)} control [ {{ kind: CONTROL_SEQUENCE_END int32_false_true: [ 0, 1 ] }} ] }},\n"
        f"    {{ name: {_q(contract.CORRID)} control [ {{ kind: CONTROL_SEQUENCE_CORRID data_type: TYPE_UINT64 }} ] }}\n"
        f"  ]"
    )
    params = {
        "artifact": ARTIFACT_DIR,
        "precision": options.precision.value,
        "executor": options.executor.value,
        "max_streams": str(options.max_streams),
        "wire": options.wire.value,
        contract.MANIFEST_SHA256: manifest_sha256,
        contract.PROTOCOL_VERSION: str(PROTOCOL),
    }
    if options.executor is Executor.BLS:
        for c in manifest.mode.components:
            params[f"model_{c.value}"] = model_name(c, options.precision)
            # a batched model takes per-row scalars as [B, 1] (reshaped to [B] inside): BLS must send them so
            params[f"batched_{c.value}"] = str(_batchable(manifest.entry(options.precision, c), manifest)).lower()
    lines = [f"name: {_q(contract.MODEL_NAME)}", 'backend: "python"', "max_batch_size: 0",
             _io("input", inputs), _io("output", outputs),
             "sequence_batching {\n"
             f"  max_sequence_idle_microseconds: {int(options.stream_idle_s * 1e6)}\n"
             f"  oldest {{ max_candidate_sequences: {options.max_streams} }}\n" + control + "\n}",
             f"instance_group [ {{ count: {options.instances} kind: KIND_CPU }} ]",
             _parameters(params)]
    return "\n".join(lines) + "\n"


# -- files ------------------------------------------------------------------------------------------------
def _place(src: Path, dst: Path, copy: bool) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if copy:
        shutil.copy2(src, dst)
    else:
        os.symlink(src.resolve(), dst)


def _engines(artifact: Path, precisions: Sequence[Precision]) -> tuple[list[tuple[str, Path]], list[str]]:
    """(model name, plan) for every built engine of ``precisions``; several engines of one component
    (built for several GPUs) get the key's first characters in their names."""
    found: dict[tuple[Component, Precision], list[tuple[str, Path]]] = {}
    skipped = []
    for directory in cached_entries(artifact):
        try:
            record = read_record(directory)
        except StableMTLError as e:
            skipped.append(f"{directory.name}: {e}")
            continue
        plan = directory / ENGINE_FILE
        if record.precision not in precisions or not plan.is_file():
            continue
        found.setdefault((record.component, record.precision), []).append((record.key, plan))
    out = []
    for (component, precision), plans in sorted(found.items(), key=lambda kv: (kv[0][0].value, kv[0][1].value)):
        base = model_name(component, precision, engine=True)
        out += [(base if len(plans) == 1 else f"{base}_{key[:8]}", plan) for key, plan in plans]
    return out, skipped


def write_repository(artifact_dir: str | os.PathLike, out: str | os.PathLike, options: RepositoryOptions = RepositoryOptions(),
                     overwrite: bool = False) -> RepositoryResult:
    """Write a Triton model repository for ``artifact_dir`` at ``out`` (atomically: all or nothing).

    Raises:
        StableMTLError: no manifest, a precision the artifact lacks, or ``out`` holds something else.
    """
    artifact = Path(artifact_dir)
    if not (artifact / MANIFEST_NAME).is_file():
        raise StableMTLError(f"`{artifact}` holds no {MANIFEST_NAME}: pass a directory written by `stablemtl-export`")
    manifest = Manifest.load(artifact)
    precisions = options.precisions or manifest.precisions()
    missing = [p.value for p in (*precisions, options.precision) if p not in manifest.components]
    if missing:
        raise StableMTLError(
            f"`{artifact}` has no {', '.join(sorted(set(missing)))} graphs (it has "
            f"{', '.join(p.value for p in manifest.precisions())}): pick one of those with --precision"
        )
    if options.instances < 1 or options.max_streams < 1:
        raise StableMTLError("`instances` and `max_streams` must be integers >= 1")
    result = RepositoryResult(Path(out))
    with atomic_directory(out, REPOSITORY_KIND, overwrite) as tmp:
        for precision in precisions:
            for component, entry in manifest.components[precision].items():
                name = model_name(component, precision)
                folder = tmp / name
                for rel in entry.paths():  # the graph as model.onnx, external data under its own name
                    target = "model.onnx" if rel == entry.file else Path(rel).name
                    _place(artifact / rel, folder / "1" / target, options.copy)
                atomic_write_text(folder / "config.pbtxt", component_config(entry, manifest, options, name))
                result.models[name] = Path(out) / name
        engines, result.skipped = _engines(artifact, precisions)
        for name, plan in engines:
            record = read_record(plan.parent)
            entry = manifest.entry(record.precision, record.component)
            _place(plan, tmp / name / "1" / "model.plan", options.copy)
            atomic_write_text(tmp / name / "config.pbtxt", component_config(entry, manifest, options, name, engine=True))
            result.models[name] = Path(out) / name
        frame = tmp / contract.MODEL_NAME
        served = [p for e in manifest.components[options.precision].values() for p in e.paths()]
        for rel in [MANIFEST_NAME, *served]:  # what the in-process executor opens (and verifies)
            _place(artifact / rel, frame / ARTIFACT_DIR / rel, options.copy)
        atomic_write_text(frame / "1" / "model.py", _MODEL_PY)
        atomic_write_text(frame / "config.pbtxt",
                          frame_model_config(manifest, file_sha256(artifact / MANIFEST_NAME), options))
        result.models[contract.MODEL_NAME] = Path(out) / contract.MODEL_NAME
        atomic_write_text(tmp / "README.md", readme(manifest, result, options))
    return result


def readme(manifest: Manifest, result: RepositoryResult, options: RepositoryOptions) -> str:
    """How to start this repository in NVIDIA's container and how it scales."""
    models = "\n".join(f"- `{name}`" for name in sorted(result.models))
    tasks = ", ".join(manifest.tasks) if manifest.tasks else ", ".join(TASK_NAMES)
    h, w = manifest.profile.height, manifest.profile.width
    link_note = ("Files are copied: the folder is self-contained." if options.copy else
                 "Files are symbolic links into the artifact: mount the artifact at the same path inside the "
                 "container, or regenerate with `--copy` before shipping the folder.")
    return f"""# Triton model repository (stablemtl-edge)

Generated by `stablemtl-export triton` from a {manifest.mode.value}-stream artifact at {h}x{w}. Models:

{models}

{link_note}

## Start it on a GPU host

    docker run --gpus all --rm --shm-size=1g -p 8000:8000 -p 8001:8001 -p 8002:8002 \\
      -v $PWD:/models nvcr.io/nvidia/tritonserver:<yy.mm>-py3 \\
      bash -c "pip install /models/stablemtl_edge-*.whl && tritonserver --model-repository=/models"

The `stablemtl` model is a Python-backend model that imports `stablemtl-edge`, so the package (its base
install: numpy, OpenCV, onnxruntime) goes into the container: above from a wheel put beside the models
(`pip wheel --no-deps .`), better in an image built `FROM` the Triton one. Health: `GET :8000/v2/health/ready`; metrics
(Prometheus): `:8002/metrics`. Component models that a server cannot load (no GPU for a `tensorrt`
model, an engine built for another GPU) can be left out with `--model-control-mode=explicit
--load-model=stablemtl --load-model=...`.

## Clients

`stablemtl-run --backend triton --url HOST:8001 --artifacts ARTIFACT ...` (gRPC; `http://HOST:8000` for
HTTP), or `Runtime.from_artifacts(ARTIFACT, backend="triton", url="HOST:8001")`: the same predictions as
the in-process runtime. The client letterboxes frames to {h}x{w} and decodes the task images; only the
artifact's `manifest.json` is needed on the client, and it must be the one the server serves (its sha256
is the `{contract.MANIFEST_SHA256}` parameter of `stablemtl/config.pbtxt`).

The `stablemtl` model is stateful over a Triton sequence (one camera stream per correlation ID): inputs
`FRAME1` (uint8 [{h}, {w}, 3] RGB), optional `FRAME2`, `TASK_IDS` (canonical indices of {tasks}),
`MODE` (0 single, 1 multi), `RATES` (one per task), `AUX_REUSE`, all int32; outputs one {options.wire.value}
[3, {h}, {w}] image per computed task (named by the task, in [-1, 1]; `--wire float16` halves the bytes),
`FRAME_INDEX` and `STAGE_MS`. A one-request sequence (start and end set) is stateless; a request with END
and no `FRAME1` closes a stream.

## Scaling

- `instance_group` `count` is per GPU for `KIND_GPU` models: raise it (`--instances N`) to overlap
  requests; Triton places instances on every visible GPU. The `stablemtl` model holds each stream's state
  on one instance (the sequence batcher keeps a stream there), up to {options.max_streams} streams each.
- Batchable component models have dynamic batching (`--no-dynamic-batching` to turn it off); with
  `executor: bls` the frame model's calls from several streams meet there.
- More hosts: run one server per host behind a load balancer (or a Kubernetes Service) with session
  affinity on the client connection, because a stream's state lives on one server.
"""
