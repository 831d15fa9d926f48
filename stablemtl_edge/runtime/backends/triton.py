"""The ``triton`` backend: the whole schedule runs on a Triton Inference Server's ``stablemtl`` model.

:class:`TritonScheduler` stands where the in-process :class:`~stablemtl_edge.artifact.schedule.Scheduler`
stands in :class:`~stablemtl_edge.runtime.api.Runtime` (same ``step`` / ``predict`` / ``reset``), so the
letterbox, the task decoding, rates' held predictions and every :class:`Prediction` stay exactly what the
in-process runtime does; only the network-resolution frames and the decoded task images cross the wire
(:mod:`stablemtl_edge.serving.contract`). A stream is a Triton sequence: the server keeps its state, so
flows, rates and auxiliary-feature reuse behave as in-process. ``tritonclient`` is imported on connect:
``pip install "stablemtl-edge[triton]"``.

URLs: ``grpc://HOST:PORT`` or ``HOST:PORT`` (gRPC, Triton's port 8001; what Isaac ROS speaks) and
``http://HOST:PORT`` (port 8000).
"""

from __future__ import annotations

import importlib
import secrets
from collections.abc import Mapping, Sequence
from types import ModuleType
from typing import Any

import numpy as np

from ...errors import MissingDependencyError, StableMTLError
from ...artifact.digest import file_sha256
from ...artifact.layout import MANIFEST_NAME
from ...artifact.manifest import Manifest, Mode
from ...tasks import TASKS, TaskSpec
from ...serving import contract

__all__ = ["TritonScheduler", "parse_url"]

_SUPPORTED_PROTOCOL = "1"  # serving.triton_repository.PROTOCOL, as the config parameter spells it


def parse_url(url: str | None) -> tuple[str, str]:
    """``(protocol, host:port)`` from ``grpc://h:p``, ``http://h:p`` or ``h:p`` (gRPC)."""
    if not url:
        raise StableMTLError("the triton backend needs the server's address: pass --url HOST:PORT (gRPC, "
                             "Triton's port 8001) or http://HOST:8000")
    scheme, sep, rest = url.partition("://")
    protocol, address = (scheme.lower(), rest) if sep else ("grpc", url)
    if protocol not in ("grpc", "http") or not address or ":" not in address:
        raise StableMTLError(f"`--url {url}` is not grpc://HOST:PORT, http://HOST:PORT or HOST:PORT")
    return protocol, address.rstrip("/")


def _client_module(protocol: str) -> ModuleType:
    try:
        return importlib.import_module(f"tritonclient.{protocol}")
    except ImportError:
        raise MissingDependencyError("tritonclient", "triton", "the triton backend") from None


class TritonScheduler:
    """The schedule of one stream, run remotely (the interface of the in-process scheduler).

    Build it with :meth:`connect`. One instance is one camera stream (one sequence); not thread-safe:
    give each client thread its own runtime.
    """

    def __init__(self, client: Any, module: ModuleType, url: str, tasks: Sequence[TaskSpec], mode: Mode,
                 rates: Mapping[str, int], aux_reuse: int) -> None:
        self.client, self.module, self.url = client, module, url
        self.tasks, self.mode = tuple(tasks), mode
        self.rates, self.aux_reuse = dict(rates), int(aux_reuse)
        self.counters = {"frames": 0, "requests": 0}
        self.server_ms: dict[str, float] = {}  # the last request's stage times on the server
        rate_of = [self.rates.get(t.key, 1) for t in TASKS]
        self._settings = {
            contract.TASK_IDS: np.asarray([t.index for t in self.tasks], np.int32),
            contract.MODE: np.asarray([contract.MODES.index(mode)], np.int32),
            contract.RATES: np.asarray(rate_of, np.int32),
            contract.AUX_REUSE: np.asarray([self.aux_reuse], np.int32),
        }
        self._errors = importlib.import_module("tritonclient.utils").InferenceServerException
        self._sequence = 0
        self._frame_index = -1

    @classmethod
    def connect(cls, url: str | None, manifest: Manifest, directory: Any, tasks: Sequence[TaskSpec], mode: Mode,
                rates: Mapping[str, int], aux_reuse: int) -> TritonScheduler:
        """Reach the server, check that its ``stablemtl`` model is ready and serves this very manifest.

        Raises:
            StableMTLError: no server at ``url``, the model not loaded, another artifact or contract version.
        """
        protocol, address = parse_url(url)
        module = _client_module(protocol)
        utils = importlib.import_module("tritonclient.utils")
        where = f"{protocol}://{address}"
        client = module.InferenceServerClient(address)
        try:
            ready = client.is_server_ready()
            model_ready = ready and client.is_model_ready(contract.MODEL_NAME)
            config = client.get_model_config(contract.MODEL_NAME, **({"as_json": True} if protocol == "grpc" else {}))
        except (utils.InferenceServerException, OSError, ValueError) as e:  # refused, or not Triton's API there
            client.close()
            hint = " (gRPC is Triton's port 8001; use http://HOST:8000 for HTTP)" if protocol == "grpc" else ""
            why = e.message() if isinstance(e, utils.InferenceServerException) else f"{type(e).__name__}: {e}"
            raise StableMTLError(f"no Triton server answers at {where}: {why}{hint}") from None
        if not model_ready:
            client.close()
            raise StableMTLError(f"the Triton server at {where} has no ready `{contract.MODEL_NAME}` model: start it "
                                 "on a repository from `stablemtl-export triton` (see its README.md)")
        config = config.get("config", config)
        params = {k: v.get("string_value", v.get("stringValue", "")) for k, v in config.get("parameters", {}).items()}
        if params.get(contract.PROTOCOL_VERSION) != _SUPPORTED_PROTOCOL:
            client.close()
            raise StableMTLError(
                f"the `{contract.MODEL_NAME}` model at {where} speaks contract version "
                f"{params.get(contract.PROTOCOL_VERSION)}, this client {_SUPPORTED_PROTOCOL}: regenerate the "
                "repository with this version's `stablemtl-export triton`"
            )
        local = file_sha256(f"{directory}/{MANIFEST_NAME}")
        if params.get(contract.MANIFEST_SHA256) != local:
            client.close()
            raise StableMTLError(
                f"the Triton server at {where} serves another artifact than `{directory}` (manifest sha256 "
                f"{str(params.get(contract.MANIFEST_SHA256))[:12]} there, {local[:12]} here): point --artifacts at "
                "the artifact the repository was generated from"
            )
        return cls(client, module, where, tasks, mode, rates, aux_reuse)

    # -- the scheduler interface -------------------------------------------------------------------------
    @property
    def frame_index(self) -> int:
        return self._frame_index

    def reset(self) -> None:
        """Forget the stream: end its sequence on the server; the next frame starts a new one."""
        self._end()
        self._frame_index = -1

    def _end(self) -> None:
        """End the open sequence with a frameless request (the server frees the stream's state and its
        sequence slot at once, instead of after the idle timeout)."""
        sequence, self._sequence = self._sequence, 0
        if sequence:
            self._request([], [], sequence, False, True)

    def step(self, image: np.ndarray, timings: dict[str, float]) -> tuple[int, dict[str, np.ndarray]]:
        """Streaming: frame t of this stream -> ``(t, {task: image (3, H, W) in [-1, 1]})`` of the tasks due."""
        start = self._sequence == 0
        if start:
            self._sequence = secrets.randbits(63) | 1
        out = self._infer({contract.FRAME1: image}, self._sequence, start, False, timings)
        self._frame_index = int(out.pop(contract.FRAME_INDEX)[0])
        return self._frame_index, out

    def predict(self, image1: np.ndarray, image2: np.ndarray | None, timings: dict[str, float]
                ) -> dict[str, np.ndarray]:
        """Stateless: a one-request sequence (flows on ``image1 -> image2``); this stream is untouched."""
        feed = {contract.FRAME1: image1}
        if image2 is not None:
            feed[contract.FRAME2] = image2
        out = self._infer(feed, secrets.randbits(63) | 1, True, True, timings)
        out.pop(contract.FRAME_INDEX)
        return out

    def _infer(self, frames: dict[str, np.ndarray], sequence: int, start: bool, end: bool,
               timings: dict[str, float]) -> dict[str, np.ndarray]:
        m = self.module
        feed = dict(frames, **self._settings) if start else frames
        inputs = []
        for name, value in feed.items():
            tensor = m.InferInput(name, list(value.shape), "UINT8" if value.dtype == np.uint8 else "INT32")
            tensor.set_data_from_numpy(np.ascontiguousarray(value))
            inputs.append(tensor)
        names = [t.key for t in self.tasks] + [contract.FRAME_INDEX, contract.STAGE_MS]
        result = self._request(inputs, [m.InferRequestedOutput(n) for n in names], sequence, start, end)
        self.counters["frames"] += 1
        got = {n: result.as_numpy(n) for n in names}
        stages = got.pop(contract.STAGE_MS)
        self.server_ms = {c.value: float(ms) for c, ms in zip(contract.STAGES, stages)}
        for stage, ms in self.server_ms.items():
            timings[stage] = timings.get(stage, 0.0) + ms
        return {k: v.astype(np.float32, copy=False) for k, v in got.items() if v is not None}  # float16 wire too

    def _request(self, inputs: list[Any], outputs: list[Any], sequence: int, start: bool, end: bool) -> Any:
        try:
            result = self.client.infer(contract.MODEL_NAME, inputs, outputs=outputs or None, sequence_id=sequence,
                                       sequence_start=start, sequence_end=end)
        except self._errors as e:
            raise StableMTLError(f"Triton server {self.url}: {e.message() or e}") from None
        self.counters["requests"] += 1
        return result

    # -- life cycle --------------------------------------------------------------------------------------
    def describe(self) -> str:
        return f"triton[{self.url}]({contract.MODEL_NAME})"

    def close(self) -> None:
        """End the stream and close the connection."""
        try:
            self._end()
        finally:
            self.client.close()
