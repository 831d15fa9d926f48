"""Inference engines behind one runner interface (activate / infer / deactivate).

Backend modules import their engine lazily: importing this package needs neither onnxruntime, TensorRT
nor CUDA. The ``triton`` backend (:mod:`.triton`) is no runner: it replaces the whole scheduler.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ...errors import StableMTLError
from ...artifact.layout import ORT_TRT_CACHE
from ...artifact.manifest import ComponentEntry
from .base import Backend, BaseRunner
from .onnxruntime import OnnxRuntimeRunner, ProviderSpec
from .tensorrt import TensorRTRunner, engines_available, load_engine_for


__all__ = [
    "Backend",
    "BaseRunner",
    "OnnxRuntimeRunner",
    "TensorRTRunner",
    "create_runner",
    "engines_available",
    "load_engine_for",
]


def create_runner(
    backend: Backend,
    directory: str | Path,
    entry: ComponentEntry,
    providers: Sequence[ProviderSpec] | None = None,
    threads: int | None = None,
    io_binding: bool | None = None,
    cuda_graphs: bool = False,
    strict_providers: bool = False,
) -> BaseRunner:
    """An (inactive) runner for one component of an artifact directory."""
    if backend is Backend.TENSORRT:
        return TensorRTRunner(directory, entry, cuda_graphs=cuda_graphs)
    if backend is Backend.ONNXRUNTIME:
        return OnnxRuntimeRunner(
            Path(directory) / entry.file,
            entry,
            providers=providers,
            threads=threads,
            io_binding=io_binding,
            strict_providers=strict_providers,
            trt_cache_dir=Path(directory) / ORT_TRT_CACHE,
        )
    if backend is Backend.TRITON:
        raise StableMTLError("the triton backend runs whole frames on the server, not components: open it with "
                             "Runtime.from_artifacts(..., backend='triton', url=...)")
    raise ValueError(f"create_runner needs a concrete backend, got {backend}")
