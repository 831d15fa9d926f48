"""The official inference schedule, the baseline ``stablemtl-bench`` measures the runtime's schedule against.

Same weights, same sessions, one task at a time: what the published method costs before the runtime's
shared encode and batched 7 + k rows (:class:`~stablemtl_edge.artifact.schedule.Scheduler`).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..artifact.manifest import Component, Mode, aux_feature_name, feature_name
from ..tasks import NUM_TASKS, TASKS, get_task

__all__ = ["OfficialSchedule"]


class OfficialSchedule:
    """The official inference schedule, run on an open runtime's own runners (same weights, same sessions).

    Per requested task, independently: encode frame t (and frame t-1 when a flow stream needs the pair),
    then single-stream: 1 UNet pass; multi-stream: 6 auxiliary UNet passes (the other tasks, batch 1 each,
    features kept) and 1 main pass; then decode, batch 1. Nothing is shared between tasks, which is what
    the runtime's scheduler saves.

    Args:
        runtime: an open ``Runtime``; its mode, tasks and runners are used.
    """

    def __init__(self, runtime: Any) -> None:
        self.runners = runtime.runners
        self.mode: Mode = runtime.mode
        self.tasks = tuple(get_task(t) for t in runtime.tasks)
        m = runtime.manifest
        self.c = m.latent_channels
        h, w = m.profile.latent_hw
        self._stack = [np.zeros((1, NUM_TASKS, f.tokens((h, w)), f.channels), np.float32) for f in m.features]
        self._feat_names = tuple(feature_name(f.index) for f in m.features)
        self._aux_names = tuple(aux_feature_name(f.index) for f in m.features)
        self.counters = dict.fromkeys(("encoder_rows", "unet_rows", "unet_main_rows", "decoder_rows"), 0)

    def _call(self, component: Component, feed: dict[str, np.ndarray], timings: dict[str, float],
              outputs: Sequence[str]) -> dict[str, np.ndarray]:  # fmt: skip
        start = time.perf_counter()
        out = self.runners[component].infer(feed, list(outputs))
        timings[component.value] = timings.get(component.value, 0.0) + (time.perf_counter() - start) * 1e3
        self.counters[f"{component.value}_rows"] += 1
        return out

    def _encode(self, image: np.ndarray, timings: dict[str, float]) -> np.ndarray:
        return self._call(Component.ENCODER, {"image": image[None]}, timings, ["latent"])["latent"].copy()

    def _sample(self, task_index: int, z: np.ndarray, pair: tuple[np.ndarray, np.ndarray] | None) -> np.ndarray:
        if TASKS[task_index].frames == 2 and pair is not None:
            first, second = pair
        else:
            first = second = z
        return np.concatenate([first, second, np.zeros_like(z)], axis=1)  # [1,12,h,w]

    def run(self, image: np.ndarray, previous: np.ndarray | None, timings: dict[str, float]) -> dict[str, np.ndarray]:
        """Every requested task on network-resolution frame t (flows on (t-1, t) when ``previous`` is given).

        Returns:
            task key -> decoded image ``(3, H, W)`` in [-1, 1], as the runtime's scheduler returns them.
        """
        out = {}
        for task in self.tasks:
            z = self._encode(image, timings)
            streams = (task.index,) if self.mode is Mode.SINGLE else tuple(range(NUM_TASKS))
            needs_pair = previous is not None and any(TASKS[s].frames == 2 for s in streams)
            pair = (self._encode(previous, timings), z) if needs_pair else None
            if task.frames == 2 and pair is None:
                continue  # a flow needs two frames
            tid = np.array([task.index], dtype=np.int64)
            feed = {"sample": self._sample(task.index, z, pair), "task_id": tid}
            if self.mode is Mode.SINGLE:
                latent = self._call(Component.UNET, feed, timings, ["latent"])["latent"]
            else:
                for stack in self._stack:
                    stack[:] = 0.0
                for a in range(NUM_TASKS):
                    if a == task.index:
                        continue
                    aux_feed = {"sample": self._sample(a, z, pair), "task_id": np.array([a], dtype=np.int64)}
                    feats = self._call(Component.UNET, aux_feed, timings, self._feat_names)
                    for name, stack in zip(self._feat_names, self._stack):
                        stack[0, a] = feats[name][0]
                for name, stack in zip(self._aux_names, self._stack):
                    feed[name] = stack
                latent = self._call(Component.UNET_MAIN, feed, timings, ["latent"])["latent"]
            image_out = self._call(Component.DECODER, {"latent": latent}, timings, ["image"])["image"]
            out[task.key] = image_out[0].copy()
        return out
