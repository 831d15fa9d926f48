"""The dataset interface shared by every source, bad-sample skipping, and the per-task source mixture.

Every source (procedural or a real dataset reader) is a :class:`SampleSource`: a random-access sequence
of :class:`~stablemtl_edge.data.sample.Sample` records that labels a fixed set of tasks. The trainer draws a
task first (task-gradient isolation, DESIGN.md section 2) and then a source for that task with fixed
probabilities; :class:`TaskMixture` does the second step. numpy only.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import StableMTLError
from .sample import Sample
from ..tasks import TaskName, get_task, parse_tasks
from ..records import KeyEnum

__all__ = [
    "SampleSource",
    "SkipBadSamples",
    "Corpus",
    "OFFICIAL_MIX",
    "MixEntry",
    "TaskMixture",
    "official_mixture",
    "select_tasks",
]

log = logging.getLogger(__name__)


def select_tasks(tasks: Sequence[str | TaskName] | None, offered: Sequence[str], name: str) -> tuple[str, ...]:
    """Validate a requested task subset against what a source ``name`` offers (None = all offered)."""
    if tasks is None:
        return tuple(offered)
    keys = tuple(t.key for t in parse_tasks(list(tasks)))
    bad = [k for k in keys if k not in offered]
    if bad:
        raise StableMTLError(f"{name} cannot label {', '.join(bad)}: choose from {', '.join(offered)}")
    return keys


class SampleSource(ABC):
    """A random-access collection of labelled samples of one domain."""

    @property
    @abstractmethod
    def domain(self) -> str:
        """Name of the data domain (``"indoor"``, ``"vkitti2"`` ...), copied into every sample."""

    @property
    @abstractmethod
    def tasks(self) -> tuple[str, ...]:
        """Keys of the tasks every sample of this source labels, in canonical order."""

    @abstractmethod
    def __len__(self) -> int: ...

    @abstractmethod
    def __getitem__(self, index: int) -> Sample:
        """Load sample ``index``; a missing or corrupt file raises :class:`StableMTLError` naming it."""

    def labels(self, task: str | TaskName) -> bool:
        return get_task(task).key in self.tasks

    def _check_index(self, index: int, length: int | None = None) -> int:
        """``index`` (negative counts from the end) into ``0 .. length - 1``; ``length`` defaults to len."""
        n = len(self) if length is None else length
        i = int(index)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"index {index} out of range for {type(self).__name__} of length {n}")
        return i

    def __repr__(self) -> str:
        return f"{type(self).__name__}(domain={self.domain!r}, tasks={self.tasks}, len={len(self)})"


class SkipBadSamples(SampleSource):
    """Wraps a source so that one unreadable sample is reported and skipped instead of ending a long run.

    A sample whose loading raises :class:`StableMTLError` is logged, counted (:attr:`skipped`, and per
    index in :attr:`bad`), and replaced by the next index. After ``max_consecutive`` failures in a row
    the data are assumed broken as a whole and the error is raised. Counters are per process: with
    data-loader workers, each worker keeps its own.
    """

    def __init__(self, source: SampleSource, max_consecutive: int = 16) -> None:
        if max_consecutive < 1:
            raise StableMTLError(f"max_consecutive must be >= 1, got {max_consecutive}")
        self.source = source
        self.max_consecutive = int(max_consecutive)
        self.skipped = 0
        self.bad: dict[int, str] = {}

    @property
    def domain(self) -> str:
        return self.source.domain

    @property
    def tasks(self) -> tuple[str, ...]:
        return self.source.tasks

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int) -> Sample:
        n = len(self.source)
        i = self._check_index(index)
        last: StableMTLError | None = None
        for attempt in range(min(self.max_consecutive, n)):
            j = (i + attempt) % n
            try:
                return self.source[j]
            except StableMTLError as exc:
                last = exc
                self.skipped += 1
                self.bad[j] = str(exc)
                log.warning("skipping bad sample %d of %s (%d skipped so far): %s", j, self.source.domain,
                            self.skipped, exc)
        raise StableMTLError(
            f"{min(self.max_consecutive, n)} consecutive bad samples in {self.source.domain} starting at index "
            f"{i}; last error: {last}"
        )


class Corpus(KeyEnum):
    """The official training sets; each has a procedural stand-in (:attr:`procedural_domain`)."""

    HYPERSIM = "hypersim"
    VKITTI2 = "vkitti2"
    FLYINGTHINGS3D = "flyingthings3d"

    @property
    def procedural_domain(self) -> str:
        return {"hypersim": "indoor", "vkitti2": "driving", "flyingthings3d": "flying"}[self.value]


# Source probabilities per task in the official recipe (DESIGN.md section 2).
OFFICIAL_MIX: dict[str, tuple[tuple[Corpus, float], ...]] = {
    "normal": ((Corpus.HYPERSIM, 0.9), (Corpus.VKITTI2, 0.1)),
    "depth": ((Corpus.HYPERSIM, 0.9), (Corpus.VKITTI2, 0.1)),
    "semantic": ((Corpus.VKITTI2, 1.0),),
    "optical_flow": ((Corpus.VKITTI2, 0.5), (Corpus.FLYINGTHINGS3D, 0.5)),
    "scene_flow": ((Corpus.VKITTI2, 0.5), (Corpus.FLYINGTHINGS3D, 0.5)),
    "albedo": ((Corpus.HYPERSIM, 1.0),),
    "shading": ((Corpus.HYPERSIM, 1.0),),
}


@dataclass(frozen=True)
class MixEntry:
    source: SampleSource
    probability: float


class TaskMixture:
    """For each task, the sources that label it and the probability of drawing each.

    Args:
        entries: task -> sequence of ``(source, weight)``; weights are normalised per task. Every source
            must label the task it is listed under.
    """

    def __init__(self, entries: Mapping[str | TaskName, Sequence[tuple[SampleSource, float]]]) -> None:
        self._mix: dict[str, tuple[MixEntry, ...]] = {}
        for task, pairs in entries.items():
            key = get_task(task).key
            pairs = [(s, float(w)) for s, w in pairs if float(w) > 0]
            if not pairs:
                raise StableMTLError(f"task `{key}` has no source with a positive weight in the mixture")
            for source, _ in pairs:
                if not source.labels(key):
                    raise StableMTLError(
                        f"source {source!r} does not label `{key}` (it labels {', '.join(source.tasks)})"
                    )
                if len(source) == 0:
                    raise StableMTLError(f"source {source!r} for `{key}` is empty: check its dataset root")
            total = sum(w for _, w in pairs)
            self._mix[key] = tuple(MixEntry(s, w / total) for s, w in pairs)

    @property
    def tasks(self) -> tuple[str, ...]:
        """Tasks the mixture can serve, in canonical order."""
        return tuple(sorted(self._mix, key=lambda k: get_task(k).index))

    def entries(self, task: str | TaskName) -> tuple[MixEntry, ...]:
        key = get_task(task).key
        try:
            return self._mix[key]
        except KeyError:
            raise StableMTLError(
                f"no training source labels `{key}`: the mixture serves {', '.join(self.tasks)}"
            ) from None

    def pick(self, task: str | TaskName, rng: np.random.Generator) -> tuple[SampleSource, int]:
        """Draw a source with the task's probabilities and a uniform index in it (nothing is loaded)."""
        entries = self.entries(task)
        k = 0 if len(entries) == 1 else int(rng.choice(len(entries), p=[e.probability for e in entries]))
        source = entries[k].source
        return source, int(rng.integers(len(source)))

    def draw(self, task: str | TaskName, rng: np.random.Generator) -> Sample:
        """Load one sample for ``task``; each rank or worker passes its own generator."""
        source, index = self.pick(task, rng)
        return source[index]


def official_mixture(sources: Mapping[Corpus | str, SampleSource],
                     tasks: Sequence[str | TaskName] | None = None) -> TaskMixture:
    """The official per-task mix over the given corpora (real readers or procedural stand-ins).

    Corpora that are not given drop out and the remaining weights of a task are renormalised; a requested
    task left with no source raises. ``tasks`` defaults to every task some given corpus can serve.
    """
    by_corpus = {Corpus(str(k).lower()): v for k, v in sources.items()}
    wanted = None if tasks is None else {get_task(t).key for t in tasks}
    entries: dict[str, list[tuple[SampleSource, float]]] = {}
    for task, mix in OFFICIAL_MIX.items():
        if wanted is not None and task not in wanted:
            continue
        pairs = [(by_corpus[c], w) for c, w in mix if c in by_corpus and by_corpus[c].labels(task)]
        if pairs:
            entries[task] = pairs
        elif wanted is not None:
            need = " or ".join(c.value for c, _ in mix)
            raise StableMTLError(f"task `{task}` needs a {need} source, none was given")
    if not entries:
        raise StableMTLError("no task can be served by the given sources")
    return TaskMixture(entries)
