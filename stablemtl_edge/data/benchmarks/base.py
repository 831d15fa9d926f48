"""The reader interface every zero-shot benchmark implements: a :class:`SampleSource` over a release folder.

Benchmarks and training sets are read through one base, so the evaluation, the trivial baseline and the
calibration set take either.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Iterator

from ...errors import StableMTLError
from ..dataset import SampleSource
from ..sample import Sample

__all__ = ["BenchmarkReader"]


class BenchmarkReader(SampleSource):
    """Lists a benchmark's files once at construction and loads one :class:`Sample` per index.

    Readers hold file names only, so iterating a benchmark keeps one frame in memory at a time, and the
    same reader can be iterated again (e.g. once to fit a trivial baseline, once to evaluate it).
    """

    #: Benchmark name used in results (``"cityscapes"``, ``"diode"`` ...); it is also the sample domain.
    name: str = ""
    #: Keys of the tasks the benchmark labels, canonical order (a sample lacks one where the release does,
    #: e.g. DIODE scans without normals, KITTI 2015 without calibration: no scene flow).
    labelled: tuple[str, ...] = ()

    @property
    def domain(self) -> str:
        return self.name

    @property
    def tasks(self) -> tuple[str, ...]:
        return self.labelled

    @abstractmethod
    def _load(self, index: int) -> Sample:
        """Sample ``index`` (already in range)."""

    def __getitem__(self, index: int) -> Sample:
        return self._load(self._check_index(index))

    def __iter__(self) -> Iterator[Sample]:
        for i in range(len(self)):
            yield self._load(i)

    @staticmethod
    def _require_items(items: list, root: object, what: str) -> list:
        if not items:
            raise StableMTLError(f"no {what} found under `{root}`: point the reader at the extracted release folder")
        return items
