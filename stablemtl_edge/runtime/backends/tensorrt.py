"""Native TensorRT runner (TensorRT 10 / 11 Python API) and the engine-cache lookup.

Engines live in ``DIR/engines/<key>/{engine.plan,engine.json}``; the export step builds them on the
target. The key and the record are defined once, in :mod:`..engine_cache`, shared with the builder.

:func:`load_engine_for` is the single place that decides whether a cached engine may run here: same ONNX
(sha256), precision, shape profile, TensorRT version, GPU and compute capability, intact plan. Anything
else is refused with what differs and the command that rebuilds it; a stale engine is never used.

TensorRT and cuda-python are imported when a runner is activated, so this module imports anywhere.
Device memory is allocated once for the largest profile shape; all work is ordered on one CUDA stream,
optionally replayed from a CUDA graph captured per input-shape set.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from ...errors import TENSORRT_INSTALL, MissingDependencyError, StableMTLError
from ...artifact.manifest import Component, ComponentEntry, Manifest, Precision
from ...artifact.layout import ENGINES_DIR, RECORD_FILE
from ...artifact.engine_cache import (
    EngineKey,
    EngineRecord,
    EngineTarget,
    cached_entries,
    check_entry,
    read_record,
    rebuild_command,
    validate,
)
from ... import cuda
from .base import BaseRunner

__all__ = [
    "probe_target",
    "CachedEngine",
    "load_engine_for",
    "find_engines",
    "engines_available",
    "TensorRTRunner",
]

def _trt() -> ModuleType:
    try:
        return importlib.import_module("tensorrt")
    except ImportError:
        raise MissingDependencyError("tensorrt", None, "the TensorRT backend", install=TENSORRT_INSTALL) from None


def _numpy_dtype(trt: ModuleType, dtype: Any) -> np.dtype:
    """numpy dtype of a TensorRT tensor type (the I/O types our graphs use)."""
    table = {"FLOAT": np.float32, "HALF": np.float16, "INT8": np.int8, "UINT8": np.uint8, "INT32": np.int32,
             "INT64": np.int64, "BOOL": np.bool_}
    for name, np_type in table.items():
        if getattr(trt.DataType, name, None) == dtype:
            return np.dtype(np_type)
    raise StableMTLError(f"TensorRT tensor type {dtype} has no numpy equivalent; rebuild the engine with fp32 I/O")


@dataclass(frozen=True)
class CachedEngine:
    """A verified engine: the plan file and its record."""

    plan: Path
    record: EngineRecord


def probe_target(device: int = 0) -> EngineTarget:
    """This machine's TensorRT version and GPU (needs tensorrt and cuda-python)."""
    trt = _trt()
    name, cc = cuda.device_info(device)
    return EngineTarget(str(trt.__version__), name, cc)


def find_engines(manifest_dir: str | Path, component: Component | str, precision: Precision | str) -> list[Path]:
    """``engine.json`` files under ``DIR/engines`` recorded for this component and precision."""
    component = Component.parse(component, "component")
    precision = Precision.parse(precision, "precision")
    found = []
    for directory in cached_entries(manifest_dir):
        try:
            record = read_record(directory)
        except StableMTLError:
            continue
        if record.component is component and record.precision is precision:
            found.append(directory / RECORD_FILE)
    return found


def load_engine_for(
    manifest_dir: str | Path,
    component: Component | str,
    precision: Precision | str,
    target: EngineTarget | None = None,
) -> CachedEngine:
    """The cached engine of ``component``/``precision`` that may run on this machine, or a clear refusal.

    The key (ONNX sha256, precision, shape profile, TensorRT version, GPU) is computed by
    :mod:`..engine_cache`, the same code the builder uses; any other cached engine is explained, never used.

    Raises:
        StableMTLError: no engine, or every cached engine differs from the manifest or this machine.
    """
    directory = Path(manifest_dir)
    component = Component.parse(component, "component")
    precision = Precision.parse(precision, "precision")
    manifest = Manifest.load(directory)
    entry = manifest.entry(precision, component)
    key = EngineKey(entry.sha256, precision, manifest.profile, target or probe_target())
    check = validate(directory, key, component)
    if check:
        return CachedEngine(check.plan, check.record)
    what = f"{component.value}/{precision.value}"
    rebuild = f"rebuild it with `{rebuild_command(directory, precision)}`"
    others = [p.parent for p in find_engines(directory, component, precision)]
    if not others:
        raise StableMTLError(f"no TensorRT engine for {what} under `{directory / ENGINES_DIR}`; {rebuild}")
    reasons = [check_entry(d, key, component).reason for d in others]
    raise StableMTLError(f"no usable TensorRT engine for {what}: {'; '.join(reasons)}; {rebuild}")


def engines_available(manifest_dir: str | Path, components: Iterable[Component], precision: Precision) -> bool:
    """True when every component has at least one cached engine record (not yet checked against this GPU)."""
    return all(find_engines(manifest_dir, c, precision) for c in components)


class TensorRTRunner(BaseRunner):
    """Runs one component from a cached TensorRT engine.

    Args:
        manifest_dir: the artifact directory (engines under ``engines/``).
        entry: the component's manifest record.
        cuda_graphs: capture the engine launch in a CUDA graph per input-shape set and replay it.
        device: CUDA device index.
        environment: override the probed TensorRT/GPU identity (None = probe).
    """

    def __init__(
        self,
        manifest_dir: str | Path,
        entry: ComponentEntry,
        cuda_graphs: bool = False,
        device: int = 0,
        environment: EngineTarget | None = None,
    ) -> None:
        super().__init__(entry)
        self.manifest_dir = Path(manifest_dir)
        self.cuda_graphs = cuda_graphs
        self.device = device
        self.environment = environment
        self.engine_path: Path | None = None
        self._engine: Any = None
        self._context: Any = None
        self._stream: cuda.Stream | None = None
        self._device_buf: dict[str, cuda.DeviceBuffer] = {}
        self._host_buf: dict[str, cuda.PinnedBuffer] = {}
        self._dtype: dict[str, np.dtype] = {}
        self._shapes: dict[str, tuple[int, ...]] = {}
        self._graphs: dict[tuple, cuda.GraphExec] = {}
        self._inputs_order: list[str] = []
        self._logger: Any = None
        self._runtime: Any = None

    def describe(self) -> str:
        graphs = ", CUDA graphs" if self.cuda_graphs else ""
        return f"tensorrt[{self.engine_path}{graphs}]({self.name})"

    def activate_impl(self) -> None:
        trt = _trt()
        cuda.set_device(self.device)
        env = self.environment or probe_target(self.device)
        cached = load_engine_for(self.manifest_dir, self.entry.component, self.entry.precision, env)
        self.engine_path = cached.plan
        # The logger and runtime must outlive the engine: keep references.
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        engine = self._runtime.deserialize_cuda_engine(cached.plan.read_bytes())
        if engine is None:
            raise StableMTLError(
                f"TensorRT could not deserialize `{cached.plan}` (see its log above); rebuild the engine"
            )
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        if set(inputs) != set(self._inputs) or not set(self.output_names) <= set(names):
            raise StableMTLError(
                f"engine `{cached.plan}` has tensors {names}, the manifest expects inputs {sorted(self._inputs)} "
                f"and outputs {list(self.output_names)}; rebuild the engine"
            )
        context = engine.create_execution_context()
        self._stream = cuda.Stream()
        # Size every buffer for the largest shapes of optimisation profile 0.
        for name in inputs:
            max_shape = tuple(engine.get_tensor_profile_shape(name, 0)[2])
            context.set_input_shape(name, max_shape)
        for name in names:
            dtype = _numpy_dtype(trt, engine.get_tensor_dtype(name))
            shape = tuple(context.get_tensor_shape(name))
            nbytes = int(np.prod(shape)) * dtype.itemsize
            self._dtype[name] = dtype
            self._device_buf[name] = cuda.DeviceBuffer(nbytes)
            self._host_buf[name] = cuda.PinnedBuffer(nbytes)
            context.set_tensor_address(name, self._device_buf[name].ptr)
        self._engine, self._context, self._inputs_order = engine, context, inputs

    def infer_impl(self, feed: Mapping[str, np.ndarray], output_names: tuple[str, ...]) -> dict[str, np.ndarray]:
        context, stream = self._context, self._stream
        assert stream is not None
        for name in self._inputs_order:
            x = feed[name]
            if self._shapes.get(name) != x.shape:
                if not context.set_input_shape(name, x.shape):
                    raise StableMTLError(f"{self.name}: input `{name}` shape {x.shape} is outside the engine's profile")
                self._shapes[name] = x.shape
            host = self._host_buf[name].view(self._dtype[name], x.shape)
            np.copyto(host, x, casting="same_kind")
            self._device_buf[name].upload(self._host_buf[name], host.nbytes, stream)
        if self.cuda_graphs:
            key = tuple(self._shapes[n] for n in self._inputs_order)
            graph = self._graphs.get(key)
            if graph is None:
                self._execute()  # a launch after a shape change does one-time setup that must not be captured
                stream.begin_capture()
                self._execute()
                graph = self._graphs[key] = stream.end_capture()
            graph.launch(stream)
        else:
            self._execute()
        out = {}
        for name in output_names:
            host = self._host_buf[name].view(self._dtype[name], tuple(context.get_tensor_shape(name)))
            self._device_buf[name].download(self._host_buf[name], host.nbytes, stream)
            out[name] = host
        stream.synchronize()
        return out

    def _execute(self) -> None:
        assert self._stream is not None
        if not self._context.execute_async_v3(self._stream.handle):
            raise StableMTLError(f"{self.name}: TensorRT execution failed (see the TensorRT log above)")

    def deactivate_impl(self) -> None:
        for g in self._graphs.values():
            g.close()
        self._graphs.clear()
        for b in (*self._device_buf.values(), *self._host_buf.values()):
            b.free()
        self._device_buf.clear()
        self._host_buf.clear()
        self._shapes.clear()
        self._context = None
        self._engine = None
        self._runtime = None
        if self._stream is not None:
            self._stream.close()
            self._stream = None
