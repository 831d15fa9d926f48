"""The one adapter between this package and CUDA: device memory, pinned host memory, a stream, graphs.

Written against cuda-python's runtime bindings (``cuda.bindings.runtime``, or ``cuda.cudart`` in
cuda-python < 12.6), imported on first use so that this module imports on a machine without CUDA. Every
call's status is checked; a failure is a :class:`CudaError` naming the call and CUDA's error name. The
TensorRT runner uses it, and the engine builder asks it which GPU it builds for; it lives outside both
stages so that export never imports the runtime.
"""

from __future__ import annotations

import ctypes
import importlib
from types import ModuleType
from typing import Any

import numpy as np

from .errors import MissingDependencyError, StableMTLError

__all__ = ["CudaError", "cudart", "device_info", "Stream", "DeviceBuffer", "PinnedBuffer", "GraphExec"]

_CUDART: ModuleType | None = None


class CudaError(StableMTLError):
    """A CUDA runtime call failed (no GPU, driver too old, out of memory...)."""


def cudart() -> ModuleType:
    """The cuda-python runtime module (imported once)."""
    global _CUDART
    if _CUDART is None:
        for name in ("cuda.bindings.runtime", "cuda.cudart"):
            try:
                _CUDART = importlib.import_module(name)
                break
            except ImportError:
                continue
        else:
            raise MissingDependencyError("cuda-python", "gpu", "CUDA memory of the TensorRT backend")
    return _CUDART


def _check(call: str, result: Any) -> Any:
    """cuda-python returns ``(status, *values)``; raise on a bad status, return the value(s)."""
    rt = cudart()
    status, values = (result[0], result[1:]) if isinstance(result, tuple) else (result, ())
    if status != rt.cudaError_t.cudaSuccess:
        name = rt.cudaGetErrorName(status)[1]
        name = name.decode() if isinstance(name, bytes) else str(name)
        raise CudaError(f"CUDA call {call} failed with {name}; check the GPU, driver and `nvidia-smi`")
    if not values:
        return None
    return values[0] if len(values) == 1 else values


def device_info(device: int = 0) -> tuple[str, str]:
    """``(gpu name, compute capability "major.minor")`` of a device."""
    rt = cudart()
    props = _check("cudaGetDeviceProperties", rt.cudaGetDeviceProperties(device))
    name = props.name.decode(errors="replace") if isinstance(props.name, bytes) else str(props.name)
    return name.rstrip("\x00").strip(), f"{props.major}.{props.minor}"


def set_device(device: int) -> None:
    _check("cudaSetDevice", cudart().cudaSetDevice(device))


class Stream:
    """One CUDA stream; everything of a runner is ordered on it."""

    def __init__(self) -> None:
        rt = cudart()
        self._stream = _check("cudaStreamCreate", rt.cudaStreamCreate())

    @property
    def raw(self) -> Any:
        return self._stream

    @property
    def handle(self) -> int:
        """The ``cudaStream_t`` as an integer (what TensorRT's ``execute_async_v3`` takes)."""
        return int(self._stream)

    def synchronize(self) -> None:
        _check("cudaStreamSynchronize", cudart().cudaStreamSynchronize(self._stream))

    def begin_capture(self) -> None:
        rt = cudart()
        mode = rt.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal
        _check("cudaStreamBeginCapture", rt.cudaStreamBeginCapture(self._stream, mode))

    def end_capture(self) -> GraphExec:
        rt = cudart()
        graph = _check("cudaStreamEndCapture", rt.cudaStreamEndCapture(self._stream))
        try:
            exec_ = _check("cudaGraphInstantiate", rt.cudaGraphInstantiate(graph, 0))
        finally:
            _check("cudaGraphDestroy", rt.cudaGraphDestroy(graph))
        return GraphExec(exec_)

    def close(self) -> None:
        if self._stream is not None:
            _check("cudaStreamDestroy", cudart().cudaStreamDestroy(self._stream))
            self._stream = None


class GraphExec:
    """An instantiated CUDA graph (one captured engine launch for one set of shapes)."""

    def __init__(self, exec_: Any) -> None:
        self._exec = exec_

    def launch(self, stream: Stream) -> None:
        _check("cudaGraphLaunch", cudart().cudaGraphLaunch(self._exec, stream.raw))

    def close(self) -> None:
        if self._exec is not None:
            _check("cudaGraphExecDestroy", cudart().cudaGraphExecDestroy(self._exec))
            self._exec = None


class DeviceBuffer:
    """``nbytes`` of device memory."""

    def __init__(self, nbytes: int) -> None:
        self.nbytes = int(max(nbytes, 1))
        self.ptr = int(_check("cudaMalloc", cudart().cudaMalloc(self.nbytes)))

    def upload(self, host: PinnedBuffer, nbytes: int, stream: Stream) -> None:
        rt = cudart()
        kind = rt.cudaMemcpyKind.cudaMemcpyHostToDevice
        _check("cudaMemcpyAsync(H2D)", rt.cudaMemcpyAsync(self.ptr, host.ptr, nbytes, kind, stream.raw))

    def download(self, host: PinnedBuffer, nbytes: int, stream: Stream) -> None:
        rt = cudart()
        kind = rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
        _check("cudaMemcpyAsync(D2H)", rt.cudaMemcpyAsync(host.ptr, self.ptr, nbytes, kind, stream.raw))

    def free(self) -> None:
        if self.ptr:
            _check("cudaFree", cudart().cudaFree(self.ptr))
            self.ptr = 0


class PinnedBuffer:
    """Page-locked host memory (asynchronous copies need it), viewed as numpy arrays."""

    def __init__(self, nbytes: int) -> None:
        self.nbytes = int(max(nbytes, 1))
        self.ptr = int(_check("cudaMallocHost", cudart().cudaMallocHost(self.nbytes)))
        self._bytes = np.frombuffer((ctypes.c_byte * self.nbytes).from_address(self.ptr), dtype=np.uint8)

    def view(self, dtype: np.dtype, shape: tuple[int, ...]) -> np.ndarray:
        """The first ``prod(shape)`` elements as an array of ``dtype`` and ``shape`` (no copy)."""
        n = int(np.prod(shape)) * np.dtype(dtype).itemsize
        return self._bytes[:n].view(dtype).reshape(shape)

    def free(self) -> None:
        if self.ptr:
            self._bytes = np.empty(0, np.uint8)
            _check("cudaFreeHost", cudart().cudaFreeHost(self.ptr))
            self.ptr = 0
