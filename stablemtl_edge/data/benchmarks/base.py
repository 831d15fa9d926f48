"""The reader interface every zero-shot benchmark implements: an indexable sequence of Samples."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence

from ...errors import StableMTLError
from ..sample import Sample

__all__ = ["BenchmarkReader"]


class BenchmarkReader(ABC, Sequence):
    """Lists a benchmark's files once at construction and loads one :class:`Sample` per index.

    Readers hold file names only, so iterating a benchmark keeps one frame in memory at a time, and the
    same reader can be iterated again (e.g. once to fit a trivial baseline, once to evaluate it).
    """

    #: Benchmark name used in results (``"cityscapes"``, ``"diode"`` ...).
    name: str = ""

    @abstractmethod
    def __len__(self) -> int: ...

    @abstractmethod
    def _load(self, index: int) -> Sample: ...

    def __getitem__(self, index: int) -> Sample:  # type: ignore[override]
        n = len(self)
        if not -n <= index < n:
            raise IndexError(f"{self.name} has {n} samples, index {index} is out of range")
        return self._load(index % n)

    def __iter__(self) -> Iterator[Sample]:
        for i in range(len(self)):
            yield self._load(i)

    @staticmethod
    def _require_items(items: list, root: object, what: str) -> list:
        if not items:
            raise StableMTLError(f"no {what} found under `{root}`: point the reader at the extracted release folder")
        return items
