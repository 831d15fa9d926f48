"""The runtime a user embeds in a node: open an artifact directory, feed camera frames, get predictions.

    rt = Runtime.from_artifacts("artifacts/small", tasks=["depth", "normal"], mode="single")
    res = rt.infer(frame, layout="bgr")          # streaming; res.predictions["depth"].value

Opening goes through small steps, each failing with a one-line :class:`StableMTLError`: read the
manifest, check the requested mode/precision/components exist, verify the files' sha256, pick the
backend, activate one runner per component. torch-free: numpy, OpenCV and onnxruntime or TensorRT.
"""

from __future__ import annotations

import importlib.util
import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from types import TracebackType

import cv2
import numpy as np

from ..errors import StableMTLError
from ..artifact.manifest import Component, Manifest, Mode, Precision
from ..tasks import TaskName, TaskSpec, get_task, parse_tasks
from .backends import Backend, BaseRunner, create_runner, engines_available
from .backends.onnxruntime import CPU, ProviderSpec
from .options import DECODER_ROWS_ALL, DECODER_ROWS_AUTO, DecoderChoice, RuntimeOptions, parse_decoder_rows
from .prediction import FrameResult, Prediction
from .preprocess import Layout, Letterbox, parse_layout, to_rgb
from ..artifact.schedule import Scheduler

log = logging.getLogger(__name__)

__all__ = ["Runtime", "DECODER_ROWS_AUTO", "DECODER_ROWS_ALL", "parse_decoder_rows"]

_EPS = 1e-6
_SUM3 = np.ones((1, 3), np.float32)  # cv2.transform: per-pixel channel sum
_STAGES = ("preprocess", "encoder", "unet", "unet_main", "decoder", "postprocess", "total")


def _default_decoder_rows(backend: Backend, runner: BaseRunner) -> tuple[int | None, str]:
    """Rows per decoder call when none is asked for, and why: one on onnxruntime's CPU provider, where
    seven batch-1 calls of the bundled model's decoder took 1152 ms against 1524 ms for one batch-7 call
    (seven rows' full-resolution activations leave the cache); the whole batch on a GPU, which wants it."""
    device = backend.value
    if backend is Backend.ONNXRUNTIME:
        providers = getattr(runner, "providers", None) or [CPU]
        if providers[0] == CPU:
            return 1, "auto: onnxruntime CPU"
        device = f"onnxruntime {providers[0]}"
    return None, f"auto: {device}"


class Runtime:
    """A loaded artifact with its runners and streaming state.

    Build it with :meth:`from_artifacts`. ``infer`` is stateful (frame t of a stream, flows on (t-1, t));
    ``predict`` is stateless (evaluation). Not thread-safe: call it from one thread.
    """

    def __init__(
        self,
        manifest: Manifest,
        directory: Path,
        runners: Mapping[Component, BaseRunner],
        tasks: Sequence[TaskSpec],
        mode: Mode,
        precision: Precision,
        backend: Backend,
        rates: Mapping[str, int] | None = None,
        aux_reuse: int = 1,
        decoder_rows: int | str = DECODER_ROWS_AUTO,
        scheduler: Scheduler | None = None,
    ) -> None:
        self.manifest = manifest
        self.directory = directory
        self.runners = dict(runners)
        self.mode = mode
        self.precision = precision
        self.backend = backend
        self._specs = tuple(tasks)
        self.rates = dict(rates or {})  # validated by RuntimeOptions: requested tasks, integers >= 1
        rows = parse_decoder_rows(decoder_rows)
        if scheduler is not None:  # backend `triton`: a remote schedule (runtime/backends/triton.py)
            self.decoder_rows, why = None, "on the server"
        elif rows == DECODER_ROWS_AUTO:
            self.decoder_rows, why = _default_decoder_rows(backend, self.runners[Component.DECODER])
        else:
            self.decoder_rows, why = (None if rows == DECODER_ROWS_ALL else rows), "asked"
        #: How the decoder is batched and why, e.g. ``1 row per call (auto: onnxruntime CPU)``.
        self.decoder_batching = (
            f"{self.decoder_rows} row{'s' if self.decoder_rows > 1 else ''} per call ({why})"
            if self.decoder_rows is not None else f"all rows in one call ({why})"
        )
        self.scheduler = scheduler or Scheduler(manifest, self.runners, self._specs, mode, self.rates, aux_reuse,
                                                self.decoder_rows)
        self._letterbox: Letterbox | None = None
        self._held: dict[str, Prediction] = {}
        self._warned_size_change = False
        self._closed = False

    # -- construction ------------------------------------------------------------------------------------
    @classmethod
    def from_artifacts(
        cls,
        path: str | Path,
        tasks: str | Iterable[str | TaskName] | None = None,
        mode: Mode | str | None = Mode.SINGLE,
        backend: Backend | str = Backend.AUTO,
        precision: Precision | str = Precision.FP32,
        providers: Sequence[ProviderSpec] | None = None,
        rates: Mapping[str, int] | None = None,
        aux_reuse: int = 1,
        *,
        decoder: str = "full",
        decoder_rows: int | str = DECODER_ROWS_AUTO,
        threads: int | None = None,
        verify: bool = True,
        io_binding: bool | None = None,
        cuda_graphs: bool = False,
        strict_providers: bool = False,
        manifest: Manifest | None = None,
        url: str | None = None,
    ) -> Runtime:
        """Open an artifact directory and activate its runners.

        Args:
            path: artifact directory (``manifest.json``, see :mod:`stablemtl_edge.artifact.manifest`).
            tasks: task keys, a comma-separated string, ``"all"``, or None (all 7); canonical order is kept.
            mode: ``single`` (one UNet row per task) or ``multi`` (needs a multi-stream artifact); None =
                what the artifact serves (the command-line tools' and the ROS node's default).
            backend: ``auto`` (native TensorRT when installed and engines are cached, else onnxruntime),
                ``onnxruntime`` or ``tensorrt``.
            precision: which exported graphs (or engines) to run.
            providers: onnxruntime providers in priority order (None = CUDA when usable, else CPU).
            rates: task key -> run every n-th frame in :meth:`infer` (default 1).
            aux_reuse: multi-stream: recompute the auxiliary features every n-th frame (1 = exact).
            decoder: ``full`` (the VAE decoder) or ``tiny`` (the distilled decoder, when the artifact has one).
            decoder_rows: batch rows per decoder call: ``auto`` (1 on onnxruntime's CPU provider, all of a
                frame's rows elsewhere; see :attr:`decoder_batching`), ``all`` or an integer >= 1.
            threads: onnxruntime intra-op threads per session (None = all cores).
            verify: check every file's sha256 against the manifest (seconds for the sd2 model).
            io_binding: onnxruntime I/O binding (None = on for GPU providers).
            cuda_graphs: TensorRT: capture each shape's launch in a CUDA graph.
            strict_providers: raise instead of warning when onnxruntime falls back to another provider.
            manifest: use this manifest instead of ``path/manifest.json`` (files still resolve against
                ``path``): lets int8 calibration check candidate graphs before their manifest is written.
            url: backend ``triton``: the server (``HOST:PORT`` gRPC or ``http://HOST:PORT``); only the
                manifest of ``path`` is read, the server runs the model.
        """
        options = RuntimeOptions.parse(path, tasks, mode, backend, precision, None, rates, aux_reuse, decoder=decoder,
                                       decoder_rows=decoder_rows, url=url)
        return cls.from_options(options, providers=providers, threads=threads, verify=verify, io_binding=io_binding,
                                cuda_graphs=cuda_graphs, strict_providers=strict_providers, manifest=manifest)

    @classmethod
    def from_options(
        cls,
        options: RuntimeOptions,
        *,
        providers: Sequence[ProviderSpec] | None = None,
        threads: int | None = None,
        verify: bool = True,
        io_binding: bool | None = None,
        cuda_graphs: bool = False,
        strict_providers: bool = False,
        manifest: Manifest | None = None,
        decoder_rows: int | str | None = None,
    ) -> Runtime:
        """Open validated settings (what every command-line tool and the ROS node build); keyword arguments
        as in :meth:`from_artifacts`, ``providers`` and ``decoder_rows`` overriding the options' own."""
        directory = options.artifact_dir
        # refused before any session opens
        decoder_rows = parse_decoder_rows(options.decoder_rows if decoder_rows is None else decoder_rows)
        if manifest is None:
            options.check_directory()
            manifest = Manifest.load(directory)
        mode = manifest.mode if options.mode is None else options.mode
        precision, backend, aux_reuse = options.precision, options.backend, options.aux_reuse
        if providers is None and options.providers:
            providers = list(options.providers)
        specs = parse_tasks(options.tasks)
        if mode is Mode.MULTI and manifest.mode is not Mode.MULTI:
            raise StableMTLError(
                f"`{directory}` is a single-stream artifact: use mode `single`, or export a multi-stream "
                "checkpoint with `stablemtl-export --mode multi`"
            )
        if mode is Mode.SINGLE and aux_reuse != 1:  # the artifact's own mode, known only now
            raise StableMTLError("`aux_reuse` applies to the multi-stream mode only; leave it at 1 with mode `single`")
        if backend is Backend.TRITON:  # the server runs the whole schedule; no local graphs are opened
            from .backends.triton import TritonScheduler

            remote = TritonScheduler.connect(options.url, manifest, directory, specs, mode, options.rates, aux_reuse)
            return cls(manifest, directory, {}, specs, mode, precision, backend, options.rates, aux_reuse,
                       scheduler=remote)  # type: ignore[arg-type]  # the Scheduler interface, remotely
        components = mode.components
        entries = {c: manifest.entry(precision, c) for c in components}
        if options.decoder is DecoderChoice.TINY:
            # The distilled decoder takes the decoder's place: same I/O, the schedule is unchanged.
            if Component.TINY_DECODER not in manifest.components.get(precision, {}):
                raise StableMTLError(
                    f"`decoder=tiny`: the {precision.value} graphs of `{directory}` include no distilled decoder; "
                    "distill one with `stablemtl-train distill-decoder` and export with `--tiny-decoder DIR`, or "
                    "use decoder `full`"
                )
            entries[Component.DECODER] = manifest.entry(precision, Component.TINY_DECODER)
        if verify:
            manifest.verify_files(directory, [precision], [e.component for e in entries.values()])
        if backend is Backend.AUTO:
            backend = Backend.ONNXRUNTIME
            if providers is None and importlib.util.find_spec("tensorrt") is not None:
                if engines_available(directory, [e.component for e in entries.values()], precision):
                    backend = Backend.TENSORRT
        if backend is Backend.TENSORRT and providers is not None:
            raise StableMTLError("`providers` are onnxruntime settings: drop them or use backend `onnxruntime`")
        runners: dict[Component, BaseRunner] = {}
        try:
            for c, entry in entries.items():
                runner = create_runner(
                    backend,
                    directory,
                    entry,
                    providers=providers,
                    threads=threads,
                    io_binding=io_binding,
                    cuda_graphs=cuda_graphs,
                    strict_providers=strict_providers,
                )
                runner.activate()
                runners[c] = runner
            return cls(manifest, directory, runners, specs, mode, precision, backend, options.rates, aux_reuse,
                       decoder_rows)
        except BaseException:
            for r in runners.values():
                r.deactivate()
            raise

    # -- properties --------------------------------------------------------------------------------------
    @property
    def tasks(self) -> tuple[str, ...]:
        return tuple(t.key for t in self._specs)

    @property
    def resolution(self) -> tuple[int, int]:
        """Processing size ``(H, W)`` in pixels (frames are letterboxed to it)."""
        return self.manifest.profile.height, self.manifest.profile.width

    @property
    def counters(self) -> dict[str, int]:
        """Pass counters: ``frames`` and ``<component>_rows`` / ``<component>_calls`` since opening."""
        return dict(self.scheduler.counters)

    @property
    def frame_index(self) -> int:
        """Index of the last frame given to :meth:`infer` (-1 before the first)."""
        return self.scheduler.frame_index

    def describe(self) -> dict[str, str]:
        """Component -> the engine and device really running it (e.g. ``onnxruntime[CPUExecutionProvider]``)."""
        if not self.runners:  # backend `triton`
            return {c.value: self.scheduler.describe() for c in self.mode.components}  # type: ignore[attr-defined]
        return {c.value: r.describe() for c, r in self.runners.items()}

    def component_precisions(self) -> dict[str, str]:
        """Component -> the precision its graph really runs in (an int8 set keeps some in fp16 or fp32)."""
        return {c.value: r.entry.precision.value for c, r in self.runners.items()}

    def describe_precision(self) -> str:
        """``fp16``, or for a mixed set which component runs in what and why (see the manifest)."""
        return self.manifest.describe_precision(self.precision)

    def fallbacks(self) -> list[str]:
        """Messages of runners that did not get the provider asked for (empty when none fell back)."""
        return [m for r in self.runners.values() if (m := getattr(r, "fallback", None))]

    # -- inference ---------------------------------------------------------------------------------------
    def infer(self, frame: np.ndarray, layout: Layout | str = Layout.RGB) -> FrameResult:
        """Process frame t of a stream.

        Args:
            frame: uint8 ``(H, W, 3)`` RGB/BGR, ``(H, W)`` grey or ``(H, W, 4)`` RGBA/BGRA, any size.
            layout: ``rgb``, ``bgr``, ``rgba``, ``bgra`` or ``gray``.

        Returns:
            The tasks computed at t or still valid from earlier frames (rates), at the frame's resolution.
            A change of frame size restarts the stream (no flows on that frame).
        """
        self._check_open()
        start = time.perf_counter()
        timings = dict.fromkeys(_STAGES, 0.0)
        rgb = to_rgb(frame, layout)
        box = self._letterbox
        if box is None or (box.src_h, box.src_w) != rgb.shape[:2]:
            if box is not None:
                self._size_changed((box.src_h, box.src_w), rgb.shape[:2])
            box = self._letterbox = Letterbox.fit(rgb.shape[:2], self.resolution)
            self.scheduler.reset()
            self._held = {}
        image = box.apply(rgb)
        t1 = time.perf_counter()
        timings["preprocess"] = (t1 - start) * 1e3
        index, images = self.scheduler.step(image, timings)
        t2 = time.perf_counter()
        for key, img in images.items():
            self._held[key] = Prediction(key, self._finish(key, img, box), index)
        timings["postprocess"] = (time.perf_counter() - t2) * 1e3
        timings["total"] = (time.perf_counter() - start) * 1e3
        return FrameResult(index, dict(self._held), timings)

    def _size_changed(self, old: tuple[int, int], new: tuple[int, int]) -> None:
        """Say once why flow tasks go missing when frames change size (a folder of mixed photos)."""
        flows = [t.key for t in self._specs if t.frames == 2]
        if flows and not self._warned_size_change:
            self._warned_size_change = True
            log.warning(
                "frame size changed from %dx%d to %dx%d: %s need two consecutive frames of one size, so they are "
                "left out of each frame that follows a size change (said once); give the frames one size to keep "
                "them", *old, *new, ", ".join(flows),
            )

    def predict(
        self, frame1: np.ndarray, frame2: np.ndarray | None = None, layout: Layout | str = Layout.RGB
    ) -> dict[str, np.ndarray]:
        """Stateless prediction of every requested task on ``frame1`` (evaluation).

        Args:
            frame1: the frame (layouts as in :meth:`infer`).
            frame2: the next frame (t+1), required when a flow task is requested; same size as ``frame1``.
            layout: layout of both frames.

        Returns:
            Task key -> value at ``frame1``'s resolution (see :class:`Prediction` for units).
        """
        self._check_open()
        layout = parse_layout(layout)
        rgb1 = to_rgb(frame1, layout, "frame1")
        rgb2 = None
        flows = [t.key for t in self._specs if t.frames == 2]
        if frame2 is not None:
            rgb2 = to_rgb(frame2, layout, "frame2")
            if rgb2.shape != rgb1.shape:
                raise StableMTLError(f"`frame2` has shape {rgb2.shape} but `frame1` has {rgb1.shape}; they must match")
        elif flows:
            raise StableMTLError(
                f"tasks {', '.join(flows)} need two frames: pass `frame2` (the next frame), "
                "or leave them out of `tasks`"
            )
        box = Letterbox.fit(rgb1.shape[:2], self.resolution)
        timings: dict[str, float] = {}
        images = self.scheduler.predict(box.apply(rgb1), box.apply(rgb2) if rgb2 is not None else None, timings)
        return {key: self._finish(key, img, box) for key, img in images.items()}

    def _finish(self, key: str, image: np.ndarray, box: Letterbox) -> np.ndarray:
        """Decoded image ``(3, H, W)`` -> the task's value at the camera's resolution."""
        spec = get_task(key)
        value = spec.codec.decode(box.crop(image.transpose(1, 2, 0)))  # (h, w, C) task units, padding cut
        if spec.name is TaskName.SEMANTIC:
            return box.resize_back(value, nearest=True)
        value = box.resize_back(value)
        if spec.name is TaskName.NORMAL and box.resampled:  # bilinear blending shortens the vectors
            norm = cv2.sqrt(cv2.transform(value * value, _SUM3)).reshape(value.shape[:2])  # (H, W)
            np.maximum(norm, _EPS, out=norm)
            value /= norm[..., None]
        return value

    def reset(self) -> None:
        """Forget the stream (the next :meth:`infer` is a first frame); counters are kept."""
        self.scheduler.reset()
        self._held = {}
        self._letterbox = None

    # -- life cycle --------------------------------------------------------------------------------------
    def _check_open(self) -> None:
        if self._closed:
            raise StableMTLError("this Runtime is closed; open another with Runtime.from_artifacts")

    def close(self) -> None:
        """Release every runner (sessions, engines, device memory)."""
        if self._closed:
            return
        self._closed = True
        for r in self.runners.values():
            r.deactivate()
        if not self.runners:  # backend `triton`: the server connection
            self.scheduler.close()  # type: ignore[attr-defined]

    def __enter__(self) -> Runtime:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
