"""ONNX Runtime runner: CPU, CUDA and TensorRT execution providers behind the runner interface.

onnxruntime is imported when a runner is activated, not at module import. Providers are checked twice:
a requested provider that this onnxruntime build lacks is refused with both lists; a provider that the
build lists but cannot actually start (``onnxruntime-gpu`` without a driver falls back to the CPU
silently) is detected from ``session.get_providers()``, reported in :attr:`OnnxRuntimeRunner.fallback`
and warned about. On a GPU provider inputs and outputs go through I/O binding.
"""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any, Union

import numpy as np

from ...errors import MissingDependencyError, StableMTLError
from ...artifact.manifest import ComponentEntry
from .base import BaseRunner

__all__ = ["OnnxRuntimeRunner", "available_providers", "default_providers", "ProviderSpec"]

ProviderSpec = Union[str, tuple[str, dict[str, Any]]]
CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
TENSORRT = "TensorrtExecutionProvider"
_GPU_PROVIDERS = {CUDA, TENSORRT}
_DEVICE = {CUDA: "cuda", TENSORRT: "cuda", CPU: "cpu"}


def _ort() -> ModuleType:
    try:
        return importlib.import_module("onnxruntime")
    except ImportError:
        raise MissingDependencyError("onnxruntime", "gpu", "the onnxruntime backend") from None


def available_providers() -> list[str]:
    """Providers this onnxruntime build lists (not a promise that they can start: see the module doc)."""
    return list(_ort().get_available_providers())


def default_providers() -> list[str]:
    """CUDA then CPU when the build has CUDA, else CPU alone.

    The TensorRT provider is only used when asked for: its first session builds engines for minutes.
    """
    have = available_providers()
    return [CUDA, CPU] if CUDA in have else [CPU]


def _provider_name(p: ProviderSpec) -> str:
    return p if isinstance(p, str) else p[0]


class OnnxRuntimeRunner(BaseRunner):
    """Runs one ONNX component with onnxruntime.

    Args:
        path: the ``.onnx`` file (its sha256 is checked by the caller against the manifest).
        entry: the component's manifest record.
        providers: provider names or ``(name, options)`` pairs in priority order; None = best available.
        threads: intra-op threads (None = onnxruntime's default, all cores).
        io_binding: bind inputs/outputs explicitly (default: on when a GPU provider is granted).
        strict_providers: raise instead of warning when the first requested provider was not granted.
        trt_cache_dir: where the TensorRT execution provider caches its engines when it is asked for by
            name only (None = no cache: every session rebuilds them).
        spin_wait: let idle intra-op threads spin after a run. Off by default: a frame runs four sessions
            in turn with Python work between them, and spinning pools of the sessions not running steal
            the cores from the one that is (3-5x slower frames measured on 2 cores).
    """

    def __init__(
        self,
        path: str | Path,
        entry: ComponentEntry,
        providers: Sequence[ProviderSpec] | None = None,
        threads: int | None = None,
        io_binding: bool | None = None,
        strict_providers: bool = False,
        trt_cache_dir: str | Path | None = None,
        spin_wait: bool = False,
    ) -> None:
        super().__init__(entry)
        self.trt_cache_dir = Path(trt_cache_dir) if trt_cache_dir is not None else None
        self.spin_wait = spin_wait
        self.path = Path(path)
        self.requested = list(providers) if providers is not None else None
        self.threads = threads
        self.io_binding = io_binding
        self.strict_providers = strict_providers
        self.providers: list[str] = []  # granted, in priority order
        self.fallback: str | None = None
        self._session: Any = None
        self._binding: Any = None
        self._device = "cpu"

    def describe(self) -> str:
        granted = ",".join(self.providers) or "inactive"
        return f"onnxruntime[{granted}]({self.name})"

    def activate_impl(self) -> None:
        ort = _ort()
        requested = self.requested if self.requested is not None else default_providers()
        if not requested:
            raise StableMTLError("the onnxruntime provider list is empty: give at least CPUExecutionProvider")
        have = ort.get_available_providers()
        unknown = [_provider_name(p) for p in requested if _provider_name(p) not in have]
        if unknown:
            raise StableMTLError(
                f"onnxruntime provider(s) {', '.join(unknown)} are not in this onnxruntime build "
                f"(available: {', '.join(have)}); install onnxruntime-gpu for CUDA/TensorRT or ask for "
                "CPUExecutionProvider"
            )
        if self.trt_cache_dir is not None and TENSORRT in requested:
            self.trt_cache_dir.mkdir(parents=True, exist_ok=True)
            trt_options = {"trt_engine_cache_enable": True, "trt_engine_cache_path": str(self.trt_cache_dir)}
            requested = [(TENSORRT, trt_options) if p == TENSORRT else p for p in requested]
        options = ort.SessionOptions()
        options.log_severity_level = 3
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if self.threads is not None:
            options.intra_op_num_threads = int(self.threads)
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if self.spin_wait else "0")
        if not self.path.is_file():
            raise StableMTLError(f"`{self.path}` is missing; re-export the model")
        try:
            self._session = ort.InferenceSession(str(self.path), sess_options=options, providers=requested)
        except Exception as e:  # onnxruntime raises its own pybind exception types for corrupt models
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise StableMTLError(
                f"onnxruntime cannot load `{self.path}` ({first}); the file is corrupt or was exported for "
                "another onnxruntime version: re-export the model"
            ) from None
        self.providers = list(self._session.get_providers())
        first = _provider_name(requested[0])
        self.fallback = None
        if first not in self.providers:
            self.fallback = (
                f"{self.name}: {first} was requested but onnxruntime granted {', '.join(self.providers)} "
                "(no usable GPU or driver?); running on the fallback"
            )
            if self.strict_providers:
                self._session = None
                raise StableMTLError(self.fallback)
            warnings.warn(self.fallback, RuntimeWarning, stacklevel=3)
        self._device = _DEVICE.get(self.providers[0], "cpu")
        use_binding = self.io_binding if self.io_binding is not None else self.providers[0] in _GPU_PROVIDERS
        self._binding = self._session.io_binding() if use_binding else None
        graph_inputs = {i.name for i in self._session.get_inputs()}
        if graph_inputs != set(self._inputs):
            self._session = None
            raise StableMTLError(
                f"`{self.path}` has inputs {sorted(graph_inputs)} but the manifest says {sorted(self._inputs)}; "
                "the artifact directory is inconsistent: re-export the model"
            )

    def infer_impl(self, feed: Mapping[str, np.ndarray], output_names: tuple[str, ...]) -> dict[str, np.ndarray]:
        if self._binding is None:
            values = self._session.run(list(output_names), dict(feed))
            return dict(zip(output_names, values))
        binding = self._binding
        binding.clear_binding_inputs()
        binding.clear_binding_outputs()
        for name, x in feed.items():
            binding.bind_cpu_input(name, np.ascontiguousarray(x))
        for name in output_names:
            binding.bind_output(name, self._device)
        self._session.run_with_iobinding(binding)
        return dict(zip(output_names, binding.copy_outputs_to_cpu()))

    def deactivate_impl(self) -> None:
        self._binding = None
        self._session = None
