"""The ``stablemtl`` model that Triton's Python backend loads: the artifact's scheduler behind the
:mod:`.contract`.

One instance opens the artifact once and keeps a :class:`~stablemtl_edge.artifact.schedule.Scheduler` per
camera stream (Triton sequence), so tasks, mode, rates and streaming state are per stream while the
sessions are shared. The components run either on onnxruntime inside this process (``executor:
inprocess``, the default, and all that a server with only the Python backend can do) or as Triton's own
component models through BLS calls (``executor: bls``: on a GPU server they are the onnxruntime or
TensorRT models of the same repository, with their instance groups and dynamic batching). Only Triton
imports this module: ``triton_python_backend_utils`` exists inside its Python stub alone.
"""

from __future__ import annotations

import importlib
import json
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import StableMTLError
from ..artifact.manifest import Component, Manifest, Mode, Precision
from ..artifact.schedule import Runner, Scheduler
from ..runtime.api import Runtime
from ..runtime.backends.base import Backend
from ..runtime.options import RuntimeOptions
from ..tasks import NUM_TASKS, TASK_NAMES, TASKS, parse_tasks
from . import contract

__all__ = ["TritonPythonModel", "BlsRunner"]


class BlsRunner:
    """A component run as another model of the server, through a BLS request (the :class:`Runner` protocol)."""

    def __init__(self, pb: Any, model: str, batched: bool) -> None:
        self.pb, self.model, self.batched = pb, model, batched

    def infer(self, feed: Mapping[str, np.ndarray], output_names: Sequence[str] | None = None
              ) -> dict[str, np.ndarray]:
        names = list(output_names or ())
        request = self.pb.InferenceRequest(
            model_name=self.model, requested_output_names=names,
            inputs=[self.pb.Tensor.from_dlpack(k, self._wire(v).__dlpack__()) for k, v in feed.items()],
        )
        response = request.exec()  # blocking; on a GPU server the component models batch across streams
        if response.has_error():
            raise StableMTLError(f"model `{self.model}` failed: {response.error().message()}")
        return {n: np.from_dlpack(self.pb.get_output_tensor_by_name(response, n)) for n in names}

    def _wire(self, value: np.ndarray) -> np.ndarray:
        """A writable C array (DLPack before 1.0 cannot mark a read-only buffer, and a request's own frame is
        one), per-row scalars ``[B]`` as the ``[B, 1]`` a batched model's config declares."""
        value = np.require(value, requirements="CW")
        return value.reshape(-1, 1) if self.batched and value.ndim == 1 else value


def _array(pb: Any, request: Any, name: str) -> np.ndarray | None:
    """An input as numpy, through DLPack: the stub's ``as_numpy`` (pybind11 built against numpy 1) reads
    zeros under numpy 2, while DLPack carries the buffer whichever numpy is installed."""
    tensor = pb.get_input_tensor_by_name(request, name)
    return None if tensor is None else np.from_dlpack(tensor)


def _output(pb: Any, name: str, value: np.ndarray) -> Any:
    """An output tensor, through DLPack (see :func:`_array`). The tensor refers to ``value`` until the
    response is sent, so ``value`` must be an array of its own, not a scheduler buffer. The unversioned
    capsule is handed over, which every stub reads (numpy 2 offers a versioned one otherwise)."""
    return pb.Tensor.from_dlpack(name, np.ascontiguousarray(value).__dlpack__())


def _numbers(pb: Any, request: Any, name: str) -> list[int] | None:
    value = _array(pb, request, name)
    return None if value is None else [int(v) for v in value.reshape(-1)]


def _settings(pb: Any, request: Any) -> tuple[str, str | None, str, int]:
    """(tasks, mode, rates, aux_reuse) of a sequence's first request, in the runtime options' spelling."""
    ids = _numbers(pb, request, contract.TASK_IDS)
    codes = _numbers(pb, request, contract.MODE)
    rates = _numbers(pb, request, contract.RATES)
    reuse = _numbers(pb, request, contract.AUX_REUSE)
    if ids is not None and any(not 0 <= i < NUM_TASKS for i in ids):
        raise StableMTLError(f"`TASK_IDS` {ids} holds an index outside 0..{NUM_TASKS - 1} ({', '.join(TASK_NAMES)})")
    if codes is not None and (len(codes) != 1 or codes[0] not in range(len(contract.MODES))):
        raise StableMTLError(f"`MODE` must be 0 (single) or 1 (multi), got {codes}")
    if rates is not None and len(rates) != NUM_TASKS:
        raise StableMTLError(f"`RATES` must hold {NUM_TASKS} rates, one per task in canonical order, got {len(rates)}")
    tasks = ",".join(TASKS[i].key for i in ids) if ids is not None else "all"
    mode = contract.MODES[codes[0]].value if codes is not None else None
    rate_text = ",".join(f"{t.key}:{r}" for t, r in zip(TASKS, rates or ()) if r != 1)
    return tasks, mode, rate_text, reuse[0] if reuse else 1


class TritonPythonModel:
    """Triton's Python-backend entry points: ``initialize``, ``execute``, ``finalize``."""

    def initialize(self, args: dict[str, str]) -> None:
        self.pb = importlib.import_module("triton_python_backend_utils")
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        self.directory = Path(args["model_repository"]) / params.get("artifact", "artifact")
        self.precision = Precision.parse(params.get("precision", "fp32"), "precision")
        self.max_streams = int(params.get("max_streams", "16"))
        self.wire = np.dtype(params.get("wire", "float32"))  # the task images' dtype on the wire
        self.manifest = Manifest.load(self.directory)
        self.runtime: Runtime | None = None
        if params.get("executor", "inprocess") == "bls":
            components = self.manifest.mode.components
            self.runners: dict[Component, Runner] = {
                c: BlsRunner(self.pb, params[f"model_{c.value}"], params[f"batched_{c.value}"] == "true")
                for c in components}
            self.decoder_rows: int | None = None  # the decoder model batches on the server
        else:
            self.runtime = Runtime.from_artifacts(self.directory, tasks="all", mode=None, backend=Backend.ONNXRUNTIME,
                                                  precision=self.precision)
            self.runners, self.decoder_rows = dict(self.runtime.runners), self.runtime.decoder_rows
        self.streams: OrderedDict[int, Scheduler] = OrderedDict()

    # -- streams -----------------------------------------------------------------------------------------
    def _open(self, request: Any) -> Scheduler:
        """A scheduler with the settings of a sequence's first request, checked as the runtime checks them."""
        tasks, mode, rates, aux_reuse = _settings(self.pb, request)
        options = RuntimeOptions.parse(self.directory, tasks, mode, Backend.ONNXRUNTIME, self.precision, None, rates,
                                       aux_reuse)
        mode = options.mode or self.manifest.mode
        if mode is Mode.MULTI and self.manifest.mode is not Mode.MULTI:
            raise StableMTLError("this server serves a single-stream artifact: send mode `single`")
        if mode is Mode.SINGLE and options.aux_reuse != 1:
            raise StableMTLError("`aux_reuse` applies to the multi-stream mode only; leave it at 1 with mode `single`")
        return Scheduler(self.manifest, self.runners, parse_tasks(options.tasks), mode, options.rates,
                         options.aux_reuse, self.decoder_rows)

    def _serve(self, request: Any) -> list[Any]:
        pb = self.pb
        start, end = (bool((_numbers(pb, request, n) or [0])[0]) for n in (contract.START, contract.END))
        stream = (_numbers(pb, request, contract.CORRID) or [0])[0]
        frame1, frame2 = _array(pb, request, contract.FRAME1), _array(pb, request, contract.FRAME2)
        if frame1 is None:
            if end and not start:  # a stream closing: release its state, nothing to compute
                self.streams.pop(stream, None)
                return []
            raise StableMTLError("`FRAME1` is missing: only a request that ends its stream may omit it")
        timings: dict[str, float] = {}
        if start:
            scheduler = self._open(request)
        elif stream in self.streams:
            scheduler = self.streams[stream]
            self.streams.move_to_end(stream)
        else:
            raise StableMTLError(
                f"stream {stream} has no state on this instance (never started, ended, or evicted after "
                f"{self.max_streams} newer streams): start a new sequence"
            )
        if start and end:  # a one-request sequence: stateless
            images = scheduler.predict(frame1, frame2, timings)
            index = 0
        else:
            if frame2 is not None:
                raise StableMTLError("`FRAME2` belongs to one-request (stateless) sequences; a stream sends one frame per request")
            index, images = scheduler.step(frame1, timings)
            if start:
                self.streams[stream] = scheduler
                while len(self.streams) > self.max_streams:
                    self.streams.popitem(last=False)
        if end:
            self.streams.pop(stream, None)
        stages = np.asarray([timings.get(c.value, 0.0) for c in contract.STAGES], np.float32)
        # astype copies: the scheduler reuses its buffers before the responses of a batch of requests are sent
        return [_output(pb, k, v.astype(self.wire)) for k, v in images.items()] + [
            _output(pb, contract.FRAME_INDEX, np.asarray([index], np.int64)), _output(pb, contract.STAGE_MS, stages)]

    # -- Triton entry points -----------------------------------------------------------------------------
    def execute(self, requests: list[Any]) -> list[Any]:
        """One response per request; a user mistake fails that request alone, with its one-line message."""
        responses = []
        for request in requests:
            try:
                outputs = self._serve(request)
            except StableMTLError as e:
                responses.append(self.pb.InferenceResponse(output_tensors=[], error=self.pb.TritonError(str(e))))
                continue
            responses.append(self.pb.InferenceResponse(output_tensors=outputs))
        return responses

    def finalize(self) -> None:
        self.streams.clear()
        if self.runtime is not None:
            self.runtime.close()
