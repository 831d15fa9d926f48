"""A fixed pool of samples written to ``.npz`` files once, so slow sources are not re-rendered every epoch.

The procedural generator costs 40-200 ms per frame pair on one CPU core, more than a small model's
training step; writing a few thousand samples once and training from the files removes that cost from
every step. A pool is a directory of ``NNNNNN.npz`` files plus ``pool.json`` (domain, tasks, origin).
Writing is resumable (existing files are kept) and each file is written atomically. numpy only.
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..atomic import atomic_path, atomic_write_text
from ..errors import StableMTLError
from ..data.sample import Label, Sample
from ..data.dataset import SampleSource

__all__ = ["write_pool", "NpzPool", "POOL_META"]

POOL_META = "pool.json"


def _file(directory: Path, index: int) -> Path:
    return directory / f"{index:06d}.npz"


def _sample_arrays(sample: Sample) -> dict[str, np.ndarray]:
    arrays = {"frame1": sample.frame1}
    if sample.frame2 is not None:
        arrays["frame2"] = sample.frame2
    if sample.intrinsics is not None:
        arrays["intrinsics"] = np.asarray(sample.intrinsics, dtype=np.float64)
    for key, label in sample.labels.items():
        arrays[f"label.{key}"] = np.asarray(label.value)
        arrays[f"valid.{key}"] = np.asarray(label.valid, dtype=bool)
    return arrays


def write_pool(source: SampleSource, directory: str | Path, count: int, progress: bool = True) -> Path:
    """Write samples ``0 .. count-1`` of ``source`` to ``directory`` (skipping files already there).

    Args:
        source: any sample source (deterministic, so an interrupted write can resume).
        directory: output directory; ``pool.json`` is written last.
        count: number of samples, at most ``len(source)``.
        progress: tqdm bar on stderr.
    """
    if not 0 < count <= len(source):
        raise StableMTLError(f"pool size must be in 1..{len(source)} for {source!r}, got {count}")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    indices = range(count)
    if progress:
        from tqdm import tqdm

        indices = tqdm(indices, desc=f"pool {source.domain}", unit="sample")
    for i in indices:
        path = _file(directory, i)
        if path.is_file():
            continue
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, **_sample_arrays(source[i]))
    meta = {"domain": source.domain, "tasks": list(source.tasks), "count": count, "origin": repr(source)}
    atomic_write_text(directory / POOL_META, json.dumps(meta, indent=2) + "\n")
    return directory


class NpzPool(SampleSource):
    """Reads a pool written by :func:`write_pool`.

    Args:
        directory: the pool directory.
        tasks: optional subset of the pool's tasks to expose (others are not loaded).
    """

    def __init__(self, directory: str | Path, tasks: Sequence[str] | None = None) -> None:
        self.directory = Path(directory)
        meta_path = self.directory / POOL_META
        if not meta_path.is_file():
            raise StableMTLError(
                f"`{meta_path}` is missing: `{self.directory}` is not a complete sample pool (write it with "
                "`stablemtl-train pool`)"
            )
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        self._domain = str(meta["domain"])
        self._count = int(meta["count"])
        have = tuple(meta["tasks"])
        if tasks is not None:
            missing = [t for t in tasks if t not in have]
            if missing:
                raise StableMTLError(f"pool `{self.directory}` does not label {', '.join(missing)} (it labels {', '.join(have)})")
            have = tuple(t for t in have if t in tasks)
        self._tasks = have

    @property
    def domain(self) -> str:
        return self._domain

    @property
    def tasks(self) -> tuple[str, ...]:
        return self._tasks

    def __len__(self) -> int:
        return self._count

    def __getitem__(self, index: int) -> Sample:
        i = self._check_index(index)
        path = _file(self.directory, i)
        try:
            with np.load(path, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
        except (OSError, ValueError, zipfile.BadZipFile) as e:
            raise StableMTLError(f"pool file `{path}` could not be read ({e}); rewrite the pool") from None
        labels = {t: Label(arrays[f"label.{t}"], arrays[f"valid.{t}"]) for t in self._tasks}
        return Sample(
            frame1=arrays["frame1"],
            frame2=arrays.get("frame2"),
            labels=labels,
            domain=self._domain,
            name=f"{path}",
            intrinsics=arrays.get("intrinsics"),
        )
