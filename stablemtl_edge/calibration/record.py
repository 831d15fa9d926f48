"""Record the inputs each component really sees, by running the exported fp32 pipeline itself.

The runtime's scheduler decides what every component is fed (batched task rows, frame pairs for the
flows, the stacked auxiliary features of the main stream); re-creating those feeds here would be a
second scheduler that could drift from the first. Instead a :class:`FeedRecorder` observes the runners
of a real :class:`~stablemtl_edge.runtime.Runtime` (``BaseRunner.add_observer``) while it predicts every
task on every calibration pair, and writes each feed to disk: a full-size UNet's auxiliary features are
hundreds of megabytes per call, too many to hold for a whole calibration set. :class:`RecordedFeeds`
hands them to onnxruntime's calibrator one at a time.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
from onnxruntime.quantization import CalibrationDataReader

from ..errors import StableMTLError
from ..artifact.manifest import Component, ComponentEntry, Manifest, Precision
from ..runtime.api import Runtime
from ..runtime.backends.base import Backend
from ..tasks import TaskName
from .data import CalibrationSet

__all__ = ["FeedRecorder", "RecordedFeeds", "record_feeds"]


class FeedRecorder:
    """A runner observer that saves every feed of the chosen components as ``.npz`` files.

    Args:
        root: directory receiving ``<component>/<n>.npz``.
        components: which components to record.
    """

    def __init__(self, root: str | Path, components: Iterable[Component]) -> None:
        self.root = Path(root)
        self.files: dict[Component, list[Path]] = {c: [] for c in components}
        for c in self.files:
            (self.root / c.value).mkdir(parents=True, exist_ok=True)

    def __call__(self, entry: ComponentEntry, feed: Mapping[str, np.ndarray]) -> None:
        files = self.files.get(entry.component)
        if files is None:
            return
        path = self.root / entry.component.value / f"{len(files):06d}.npz"
        np.savez(path, **{name: np.asarray(value) for name, value in feed.items()})  # copies the buffers
        files.append(path)


class RecordedFeeds(CalibrationDataReader):
    """onnxruntime's calibration reader over recorded feeds, loading one file at a time.

    ``set_range`` restricts it to a slice (onnxruntime calibrates slice by slice with
    ``CalibStridedMinMax``, merging the ranges, so memory stays bounded).
    """

    def __init__(self, files: Sequence[Path]) -> None:
        self.files = list(files)
        self._next = 0
        self._end = len(self.files)

    def __len__(self) -> int:
        return len(self.files)

    def set_range(self, start_index: int, end_index: int) -> None:
        self._next = max(0, start_index)
        self._end = min(end_index, len(self.files))

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._next >= self._end:
            return None
        with np.load(self.files[self._next]) as data:
            feed = {name: data[name] for name in data.files}
        self._next += 1
        return feed

    def rewind(self) -> None:
        self.set_range(0, len(self.files))


def record_feeds(
    directory: str | Path,
    manifest: Manifest,
    calibration: CalibrationSet,
    components: Iterable[Component],
    root: str | Path,
    tasks: Iterable[str | TaskName] | None = None,
    threads: int | None = None,
    progress: bool = True,
) -> dict[Component, list[Path]]:
    """Run the fp32 pipeline on every calibration pair and record the feeds of ``components``.

    The artifact runs in its own mode (multi-stream when it has a main stream, so the main UNet sees the
    auxiliary features it will see in service) with every task of ``tasks`` on each pair; the flows read
    the pair, the one-frame tasks its first frame.

    Args:
        directory: artifact directory with fp32 components.
        manifest: its manifest.
        calibration: the frame pairs.
        components: components whose inputs to record.
        root: where the ``.npz`` files go (the caller removes them).
        tasks: tasks to run (None = all seven).
        threads: onnxruntime intra-op threads (None = all cores).
        progress: tqdm bar on stderr.

    Returns:
        Component -> recorded feed files, in call order.
    """
    components = tuple(components)
    recorder = FeedRecorder(root, components)
    with Runtime.from_artifacts(
        directory, tasks=tasks, mode=manifest.mode, backend=Backend.ONNXRUNTIME, precision=Precision.FP32,
        providers=["CPUExecutionProvider"], threads=threads, manifest=manifest,
    ) as rt:
        missing = [c.value for c in components if c not in rt.runners]
        if missing:
            raise StableMTLError(
                f"the {rt.mode.value}-stream pipeline does not run {', '.join(missing)}: "
                f"calibrate only components among {', '.join(c.value for c in rt.runners)}"
            )
        for c in components:
            rt.runners[c].add_observer(recorder)
        for pair in _bar(calibration.pairs, progress):
            rt.predict(pair.frame1, pair.frame2)
    return recorder.files


def _bar(items: Sequence, progress: bool) -> Iterable:
    if not progress:
        return items
    from tqdm import tqdm

    return tqdm(items, desc="calibration: recording fp32 inputs", unit="pair", leave=False)
