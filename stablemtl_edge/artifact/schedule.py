"""The pass schedule: which components run on which rows, once per frame (DESIGN.md section 2).

It is part of the artifact contract: the runtime serves frames with it, and the export-time and on-target
checks run the stored references through it, so there is one pipeline and every backend meets it.

Per frame the encoder runs once (batch 1) and the latent is kept for the next frame, so flow tasks (which
read the pair t-1, t) cost no second encode. UNet rows are ``[z(frame1), z(frame2 or frame1 again),
zeros(4)]`` on channels with ``task_id`` = canonical task index.

- single-stream: ONE batched ``unet`` call over the k due tasks;
- multi-stream: ONE batched auxiliary ``unet`` call over the tasks whose features are needed (all 7 when
  k >= 2, the 6 others when k = 1), its 16 features stacked per layer into ``(1, 7, N_l, C_l)`` in
  canonical order (zeros in slots not computed) and fed once to ONE batched ``unet_main`` call, which
  broadcasts them to its k rows (artifacts exported before the broadcast get them tiled to
  ``(k, 7, N_l, C_l)``);
- then the ``decoder`` over the k latents: ONE batched call, or calls of ``decoder_rows`` rows each (the
  runtime picks per backend: on onnxruntime's CPU provider seven batch-1 calls beat one batch-7 call, whose
  full-resolution activations do not stay in cache).

So a frame costs k UNet rows single-stream and 7 + k (k = 1: 6 + 1) multi-stream, against 7 per task in
the official schedule.

Streaming multi-stream rows share one auxiliary call, so every main task at frame t attends to one-frame
streams computed on t and flow streams computed on (t-1, t) (on the first frame: (t, t)). A stateless
reference run differs slightly: ``predict(t-1, t)`` computes the one-frame streams on t-1, and
``predict(t)`` the flow streams on (t, t). Matching both exactly would cost extra auxiliary rows per frame;
single-stream results are identical either way. Per-task rates skip tasks on some frames; the auxiliary
features can be reused for ``aux_reuse`` frames. The scheduler speaks only to :class:`Runner` (the
runtime's :class:`~stablemtl_edge.runtime.backends.base.BaseRunner` is one) and works on
network-resolution arrays; letterbox and decoding live in :mod:`stablemtl_edge.runtime.api`.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Protocol

import numpy as np

from ..errors import StableMTLError
from ..tasks import NUM_TASKS, TASKS, TaskSpec
from .manifest import Component, Manifest, Mode, aux_feature_name, feature_name

__all__ = ["Runner", "RowLimited", "Scheduler", "COUNTER_KEYS"]


class Runner(Protocol):
    """What the schedule needs of an engine: run a feed dict, return the named outputs."""

    def infer(self, feed: Mapping[str, np.ndarray], output_names: Sequence[str] | None = None
              ) -> dict[str, np.ndarray]: ...


class RowLimited:
    """A runner whose calls are split into calls of at most ``rows`` batch rows.

    Every graph of the contract treats batch rows independently, so splitting changes no value; it bounds
    the activation memory (seven UNet rows at the official 384x512 need more than 24 GB in onnxruntime).
    """

    def __init__(self, runner: Runner, rows: int) -> None:
        self.runner, self.rows = runner, max(1, int(rows))

    def infer(self, feed: Mapping[str, np.ndarray], output_names: Sequence[str] | None = None
              ) -> dict[str, np.ndarray]:
        n = max(len(v) for v in feed.values())
        if n <= self.rows:
            return self.runner.infer(feed, output_names)

        def rows(i: int) -> dict[str, np.ndarray]:  # inputs given once per call (broadcast features) stay whole
            return {k: v[i : i + self.rows] if len(v) == n else v for k, v in feed.items()}

        parts = [{k: v.copy() for k, v in self.runner.infer(rows(i), output_names).items()}
                 for i in range(0, n, self.rows)]
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}

COUNTER_KEYS = (
    "frames",
    "encoder_rows",
    "unet_rows",
    "unet_main_rows",
    "decoder_rows",
    "encoder_calls",
    "unet_calls",
    "unet_main_calls",
    "decoder_calls",
)
_LATENT = ("latent",)
_FRAMES = {t.index: t.frames for t in TASKS}  # canonical index -> 1 or 2 frames


class Scheduler:
    """Runs the components of one artifact on network-resolution frames.

    Args:
        manifest: the artifact's manifest (latent size, feature taps).
        runners: active runners keyed by component (``unet_main`` only for multi-stream).
        tasks: requested tasks, canonical order.
        mode: single- or multi-stream.
        rates: task key -> run every n-th frame (missing = 1).
        aux_reuse: multi-stream: recompute the auxiliary features every n-th frame (1 = exact).
        decoder_rows: batch rows per decoder call (None = all the frame's rows in one call). Rows are
            independent, so the images are the same either way, to float rounding.
    """

    def __init__(
        self,
        manifest: Manifest,
        runners: Mapping[Component, Runner],
        tasks: Sequence[TaskSpec],
        mode: Mode,
        rates: Mapping[str, int] | None = None,
        aux_reuse: int = 1,
        decoder_rows: int | None = None,
    ) -> None:
        self.manifest = manifest
        self.runners = dict(runners)
        self.tasks = tuple(tasks)
        self.mode = mode
        self.rates = {t.index: int((rates or {}).get(t.key, 1)) for t in self.tasks}
        self.aux_reuse = int(aux_reuse)
        if any(r < 1 for r in self.rates.values()) or self.aux_reuse < 1:
            raise StableMTLError("task rates and `aux_reuse` must be integers >= 1")
        if decoder_rows is not None and (type(decoder_rows) is not int or decoder_rows < 1):
            raise StableMTLError(f"`decoder_rows` must be an integer >= 1 or None (one call), got {decoder_rows!r}")
        self.decoder_rows = decoder_rows
        self._images: np.ndarray | None = None  # [7,3,H,W], the decoder calls' rows gathered (split calls only)
        need = [Component.ENCODER, Component.UNET, Component.DECODER]
        if mode is Mode.MULTI:
            need.append(Component.UNET_MAIN)
        missing = [c.value for c in need if c not in self.runners]
        if missing:
            raise StableMTLError(f"the {mode.value}-stream schedule needs runners for {', '.join(missing)}")
        self._uses_pairs = any(t.frames == 2 for t in self.tasks)
        c = manifest.latent_channels
        h, w = manifest.profile.latent_hw
        self._c = c
        # [z(frame1), z(frame2), zeros]; the zero third stays zero forever.
        self._sample = np.zeros((NUM_TASKS, 3 * c, h, w), np.float32)  # [7,12,h,w]
        self._aux_sample = np.zeros((NUM_TASKS, 3 * c, h, w), np.float32)  # [7,12,h,w]
        self._latents = [np.zeros((1, c, h, w), np.float32) for _ in range(2)]  # ping-pong t-1 / t
        if mode is Mode.MULTI:
            if len(manifest.features) == 0:
                raise StableMTLError("the manifest lists no feature taps: it is not a multi-stream artifact")
            shapes = [(f.tokens((h, w)), f.channels) for f in manifest.features]
            # Row 0 of each buffer is the stacked features (1, 7, N_l, C_l), all a broadcasting unet_main
            # takes; for an older (tiled) artifact rows 1.. repeat it for the other main tasks.
            self._broadcast = manifest.aux_broadcast
            k_max = 1 if self._broadcast else len(self.tasks)
            self._tiled = [np.zeros((k_max, NUM_TASKS) + s, np.float32) for s in shapes]  # [k,7,N_l,C_l]
            self._stack = [t[:1] for t in self._tiled]  # [1,7,N_l,C_l] views
            self._feat_names = tuple(feature_name(f.index) for f in manifest.features)
            self._aux_names = tuple(aux_feature_name(f.index) for f in manifest.features)
            self._aux_outputs = self._feat_names  # the auxiliary latents are not needed
        self.counters = dict.fromkeys(COUNTER_KEYS, 0)
        self.last_latents: np.ndarray | None = None  # UNet latents of the last computed frame (checks, debugging)
        self.reset()

    # -- state -------------------------------------------------------------------------------------------
    def reset(self) -> None:
        """Forget the stream: the next frame is a first frame (no flows, rates restart)."""
        self.frame_index = -1
        self._have_prev = False
        self._cur = 0
        self._last_run: dict[int, int] = {}
        self._aux_frame: int | None = None  # stream frame of the cached auxiliary features
        self._aux_slots: frozenset[int] = frozenset()
        self._tiled_rows = 1  # leading rows of self._tiled that hold the current stack

    def due(self, frame_index: int, have_prev: bool) -> tuple[TaskSpec, ...]:
        """Tasks to compute at ``frame_index``: rate reached, and flows only when a previous frame exists."""
        out = []
        for t in self.tasks:
            if t.frames == 2 and not have_prev:
                continue
            last = self._last_run.get(t.index)
            if last is None or frame_index - last >= self.rates[t.index]:
                out.append(t)
        return tuple(out)

    # -- public steps ------------------------------------------------------------------------------------
    def step(self, image: np.ndarray, timings: dict[str, float]) -> tuple[int, dict[str, np.ndarray]]:
        """Streaming: one network-resolution frame t -> decoded images of the tasks due at t.

        Args:
            image: uint8 RGB ``(H, W, 3)`` at the processing resolution.
            timings: stage -> milliseconds, accumulated in place.

        Returns:
            ``(frame_index, {task: image (3, H, W) float32 in [-1, 1]})``; the arrays are valid until the
            next call.
        """
        self.frame_index += 1
        t = self.frame_index
        self.counters["frames"] += 1
        due = self.due(t, self._have_prev)
        if not due and not self._uses_pairs:
            return t, {}
        prev = self._latents[self._cur]
        self._cur ^= 1
        cur = self._latents[self._cur]
        np.copyto(cur, self._encode(image, timings))
        pair = (prev, cur) if self._have_prev else None
        self._have_prev = True
        if not due:
            return t, {}
        for task in due:
            self._last_run[task.index] = t
        return t, self._run(cur, pair, due, t, timings)

    def predict(
        self, image1: np.ndarray, image2: np.ndarray | None, timings: dict[str, float]
    ) -> dict[str, np.ndarray]:
        """Stateless: every requested task on frame 1 (flows on the pair 1 -> 2); stream state untouched."""
        self.counters["frames"] += 1
        z1 = self._encode(image1, timings).copy()
        pair = None
        if image2 is not None and (self._uses_pairs or self.mode is Mode.MULTI):  # else frame 2 is unused
            pair = (z1, self._encode(image2, timings))
        due = tuple(t for t in self.tasks if t.frames == 1 or pair is not None)
        return self._run(z1, pair, due, None, timings)  # frame_index None: fresh auxiliary features

    # -- passes ------------------------------------------------------------------------------------------
    def _call(self, component: Component, feed: dict[str, np.ndarray], rows: int, timings: dict[str, float],
              outputs: tuple[str, ...] | None = None) -> dict[str, np.ndarray]:
        start = time.perf_counter()
        out = self.runners[component].infer(feed, outputs)
        timings[component.value] = timings.get(component.value, 0.0) + (time.perf_counter() - start) * 1e3
        self.counters[f"{component.value}_rows"] += rows
        self.counters[f"{component.value}_calls"] += 1
        return out

    def _encode(self, image: np.ndarray, timings: dict[str, float]) -> np.ndarray:
        return self._call(Component.ENCODER, {"image": image[None]}, 1, timings, _LATENT)["latent"]  # [1,4,h,w]

    def _fill(self, buf: np.ndarray, tasks: Sequence[int], z: np.ndarray,
              pair: tuple[np.ndarray, np.ndarray] | None) -> np.ndarray:
        """Write the 12-channel rows of ``tasks`` into ``buf`` and return the filled slice."""
        c = self._c
        for row, task in enumerate(tasks):
            if pair is not None and _FRAMES[task] == 2:
                buf[row, :c] = pair[0][0]
                buf[row, c : 2 * c] = pair[1][0]
            else:
                buf[row, :c] = z[0]
                buf[row, c : 2 * c] = z[0]
        return buf[: len(tasks)]  # [B,12,h,w]

    def _run(self, z: np.ndarray, pair: tuple[np.ndarray, np.ndarray] | None, due: Sequence[TaskSpec],
             frame_index: int | None, timings: dict[str, float]) -> dict[str, np.ndarray]:
        if not due:
            return {}
        idx = tuple(t.index for t in due)
        task_id = np.asarray(idx, dtype=np.int64)  # [k]
        if self.mode is Mode.SINGLE:
            feed = {"sample": self._fill(self._sample, idx, z, pair), "task_id": task_id}
            latents = self._call(Component.UNET, feed, len(idx), timings, _LATENT)["latent"]  # [k,4,h,w]
        else:
            self._auxiliary(z, pair, idx, frame_index, timings)
            k = len(idx)
            if not self._broadcast and self._tiled_rows < k:
                for tiled in self._tiled:
                    tiled[self._tiled_rows : k] = tiled[0]  # [k,7,N_l,C_l]
                self._tiled_rows = k
            feed = {"sample": self._fill(self._sample, idx, z, pair), "task_id": task_id}
            for name, tiled in zip(self._aux_names, self._tiled):
                feed[name] = tiled[:1] if self._broadcast else tiled[:k]
            latents = self._call(Component.UNET_MAIN, feed, k, timings, _LATENT)["latent"]  # [k,4,h,w]
        self.last_latents = latents
        images = self._decode(latents, timings)  # [k,3,H,W]
        return {t.key: images[i] for i, t in enumerate(due)}  # each [3,H,W]

    def _decode(self, latents: np.ndarray, timings: dict[str, float]) -> np.ndarray:
        """The k latents' images: one call, or calls of ``decoder_rows`` rows gathered into one buffer (a
        runner may reuse its output buffer on the next call)."""
        k = len(latents)
        step = self.decoder_rows or k
        if step >= k:
            return self._call(Component.DECODER, {"latent": latents}, k, timings, ("image",))["image"]
        for i in range(0, k, step):
            rows = latents[i : i + step]
            part = self._call(Component.DECODER, {"latent": rows}, len(rows), timings, ("image",))["image"]
            if self._images is None or self._images.shape[1:] != part.shape[1:]:
                self._images = np.empty((NUM_TASKS,) + part.shape[1:], np.float32)
            self._images[i : i + len(part)] = part
        return self._images[:k]

    def _auxiliary(self, z: np.ndarray, pair: tuple[np.ndarray, np.ndarray] | None, main: tuple[int, ...],
                   frame_index: int | None, timings: dict[str, float]) -> None:
        """Make ``self._stack`` hold the auxiliary features the main tasks ``main`` attend to."""
        slots = frozenset(range(NUM_TASKS)) if len(main) >= 2 else frozenset(range(NUM_TASKS)) - {main[0]}
        fresh = (
            frame_index is not None and self._aux_frame is not None and frame_index - self._aux_frame < self.aux_reuse
        )
        if fresh and slots <= self._aux_slots:
            return
        aux = tuple(sorted(slots))
        # On a first frame the flow streams see (t, t): no motion, which is what a static scene gives.
        feed = {"sample": self._fill(self._aux_sample, aux, z, pair), "task_id": np.asarray(aux, dtype=np.int64)}
        out = self._call(Component.UNET, feed, len(aux), timings, self._aux_outputs)
        for name, stack in zip(self._feat_names, self._stack):
            feat = out[name]  # [A,N_l,C_l]
            if feat.shape[1:] != stack.shape[2:]:
                raise StableMTLError(
                    f"`unet` output `{name}` has shape {feat.shape}, the manifest's feature taps say "
                    f"(B, {stack.shape[2]}, {stack.shape[3]}); the artifact is inconsistent: re-export it"
                )
            if slots != self._aux_slots:
                stack[0] = 0.0
            stack[0, list(aux)] = feat  # canonical slots
        self._aux_slots = slots
        self._aux_frame = frame_index  # None after a stateless call: the stream recomputes next frame
        self._tiled_rows = 1

