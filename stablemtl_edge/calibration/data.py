"""Calibration frames: where they come from, which ones are used, and a record of exactly what was used.

A calibration set is ``N`` pairs of consecutive frames ``(t, t+1)``: the flow tasks read both, so the UNet
is calibrated on real motion, not on a frame paired with itself. Frames come from an image folder, a
video file or a ROS 2 bag (read by the runtime's own sources), or from the procedural generator; a camera
is refused because a calibration must be reproducible.

Sampling is stratified: the ``L - 1`` possible start frames are cut into ``N`` equal strata and one start
is drawn per stratum with a seeded generator, so the pairs spread over the whole recording and the same
seed gives the same pairs. Every frame is letterboxed to the artifact's processing size with the
runtime's :class:`~stablemtl_edge.runtime.preprocess.Letterbox` (what the encoder really sees), and the
record lists the source, the chosen indices and the sha256 of every preprocessed frame; its digest keys
the cache of calibration ranges.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ..errors import StableMTLError
from ..records import JsonRecord
from ..runtime.preprocess import Letterbox
from ..runtime.sources import ImageFolderSource, Source, open_source

__all__ = [
    "PROCEDURAL",
    "CalibrationPair",
    "CalibrationRecord",
    "CalibrationSet",
    "PairRecord",
    "load_calibration_set",
    "stratified_starts",
]

#: The ``--calib-data`` value that selects the procedural generator.
PROCEDURAL = "procedural"
_PROCEDURAL_DOMAINS = ("indoor", "driving", "flying")
_PROCEDURAL_LENGTH = 10_000  # scenes per domain to draw from (the generator is endless-looking)
RECORD_VERSION = 1
_SAMPLING = "stratified: one start frame t drawn per equal stratum of the recording; pairs (t, t+1)"
_PREPROCESS = "runtime letterbox (aspect kept, edge padding bottom/right)"


@dataclass(frozen=True)
class CalibrationPair:
    """Two consecutive frames at the processing resolution.

    Attributes:
        index: position of ``frame1`` in its source (``frame2`` is ``index + 1``).
        name: where the frame came from (file name, topic, procedural sample id).
        frame1: uint8 RGB ``(H, W, 3)``, letterboxed exactly as the runtime does.
        frame2: uint8 RGB ``(H, W, 3)``, the next frame, letterboxed the same way.
    """

    index: int
    name: str
    frame1: np.ndarray = field(repr=False)
    frame2: np.ndarray = field(repr=False)


@dataclass(frozen=True)
class PairRecord:
    """One pair as recorded: its start index, its name and the sha256 of both preprocessed frames."""

    index: int
    name: str
    sha256: tuple[str, str]

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "name": self.name, "sha256": list(self.sha256)}

    @classmethod
    def from_dict(cls, d: Any) -> PairRecord:
        first, second = d["sha256"]
        return cls(int(d["index"]), str(d["name"]), (str(first), str(second)))


@dataclass(frozen=True)
class CalibrationRecord(JsonRecord):
    """Exactly which frames a calibration used, saved as ``int8/calibration_data.json``.

    Attributes:
        source: provenance of the frames (``kind``, ``spec``, ``description`` and what the kind adds:
            frame count and topic of a recording, domains of the procedural generator).
        seed: sampling seed.
        resolution: processing size ``(H, W)`` the frames were letterboxed to.
        pairs: the chosen pairs, in calibration order.
    """

    source: dict[str, Any]
    seed: int
    resolution: tuple[int, int]
    pairs: tuple[PairRecord, ...]
    sampling: str = _SAMPLING
    preprocess: str = _PREPROCESS
    version: int = RECORD_VERSION

    record_name: ClassVar[str] = "calibration set record (written by stablemtl-calibrate)"

    @property
    def size(self) -> int:
        return len(self.pairs)

    def content(self) -> dict[str, Any]:
        """The record without its digest: what the digest is computed over."""
        return {
            "version": self.version,
            "source": dict(self.source),
            "size": self.size,
            "seed": self.seed,
            "sampling": self.sampling,
            "resolution": list(self.resolution),
            "preprocess": self.preprocess,
            "pairs": [p.to_dict() for p in self.pairs],
        }

    @property
    def digest(self) -> str:
        """sha256 of the content (source, indices, frame hashes, resolution): equal digests, equal data."""
        text = json.dumps(self.content(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode("utf-8")).hexdigest()

    def to_dict(self) -> dict[str, Any]:
        return {**self.content(), "digest": self.digest}

    @classmethod
    def from_dict(cls, d: Any) -> CalibrationRecord:
        if d.get("version") != RECORD_VERSION:
            raise StableMTLError(f"calibration record version {d.get('version')!r} is not {RECORD_VERSION}: "
                                 "calibrate again with this version")
        height, width = d["resolution"]
        record = cls(
            source=dict(d["source"]), seed=int(d["seed"]), resolution=(int(height), int(width)),
            pairs=tuple(PairRecord.from_dict(p) for p in d["pairs"]), sampling=str(d["sampling"]),
            preprocess=str(d["preprocess"]), version=int(d["version"]),
        )
        if int(d["size"]) != record.size:
            raise StableMTLError(f"calibration record says {d['size']} pairs but lists {record.size}: "
                                 "the file was edited; calibrate again")
        if "digest" in d and d["digest"] != record.digest:
            raise StableMTLError("calibration record's digest does not match its content: the file was edited; "
                                 "calibrate again")
        return record


@dataclass(frozen=True)
class CalibrationSet:
    """The frame pairs used for calibration and the record that describes them."""

    pairs: tuple[CalibrationPair, ...]
    record: CalibrationRecord

    def __len__(self) -> int:
        return len(self.pairs)

    def __iter__(self) -> Iterator[CalibrationPair]:
        return iter(self.pairs)

    @property
    def digest(self) -> str:
        return self.record.digest

    def save(self, path: str | os.PathLike) -> Path:
        """Write the record (plus its digest) as JSON, atomically; read it back with ``CalibrationRecord.load``."""
        return self.record.save(path)


def _sha(frame: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(frame).tobytes()).hexdigest()


def stratified_starts(frames: int, size: int, seed: int) -> list[int]:
    """``size`` start indices of consecutive pairs among ``frames`` frames, one per equal stratum.

    Raises:
        StableMTLError: fewer than ``size + 1`` frames (not enough distinct pairs).
    """
    starts = frames - 1  # a pair (t, t+1) needs t + 1 < frames
    if size < 1:
        raise StableMTLError(f"the calibration size must be >= 1 frame pair, got {size}")
    if starts < size:
        raise StableMTLError(
            f"the calibration source has {frames} frame(s), i.e. {max(starts, 0)} consecutive pair(s), but "
            f"{size} pairs were asked for: lower --calib-size to at most {max(starts, 0)} or give a longer source"
        )
    rng = np.random.default_rng(seed)
    edges = np.linspace(0, starts, size + 1)
    out = []
    for k in range(size):
        lo, hi = int(np.ceil(edges[k])), int(np.ceil(edges[k + 1]))
        out.append(int(rng.integers(lo, max(hi, lo + 1))))
    return out


def _letterbox(image: np.ndarray, resolution: tuple[int, int]) -> np.ndarray:
    return Letterbox.fit(image.shape[:2], resolution).apply(image)


def _count_frames(source: Source) -> int:
    """Frames a recorded source holds (a folder lists its files; videos and bags are read through)."""
    source.open()
    if isinstance(source, ImageFolderSource):
        return len(source.files)
    n = 0
    while source.read() is not None:
        n += 1
    return n


def _from_source(spec: str, size: int, resolution: tuple[int, int], seed: int, topic: str | None) -> CalibrationSet:
    source = open_source(spec, topic=topic)
    if source.live:
        raise StableMTLError(
            f"`{spec}` is a live camera, which cannot give a reproducible calibration set: record a video or a "
            "ROS 2 bag first and pass that, or use `procedural`"
        )
    description = source.description
    try:
        total = _count_frames(source)
    finally:
        source.close()
    if total == 0:
        raise StableMTLError(
            f"{description} yielded no frames: the file is empty or cannot be decoded; "
            "check it with `stablemtl-run` or convert it (e.g. `ffmpeg -i IN -c:v mpeg4 OUT.mp4`)"
        )
    starts = stratified_starts(total, size, seed)
    wanted = set(starts) | {s + 1 for s in starts}
    frames: dict[int, tuple[np.ndarray, str]] = {}
    source = open_source(spec, topic=topic)
    try:
        for frame in source:
            if frame.index in wanted:
                frames[frame.index] = (_letterbox(frame.image, resolution), frame.name)
            if frame.index >= max(wanted):
                break
    finally:
        source.close()
    missing = sorted(wanted - set(frames))
    if missing:
        raise StableMTLError(
            f"{description} gave {total} frames when counted but stopped before frame {missing[0]} when read "
            "again: the recording is damaged; re-encode it or use an image folder"
        )
    pairs = tuple(CalibrationPair(s, frames[s][1], frames[s][0], frames[s + 1][0]) for s in starts)
    kind = type(source).__name__.removesuffix("Source").lower()
    record = _record(
        {"kind": kind, "spec": str(spec), "description": description, "frames": total, "topic": topic},
        pairs, resolution, seed,
    )
    return CalibrationSet(pairs, record)


def _procedural(size: int, resolution: tuple[int, int], seed: int) -> CalibrationSet:
    # numpy-only generator; imported here so reading a folder does not load the scene renderer.
    from ..data.procedural import Split, procedural_split

    if size < 1:
        raise StableMTLError(f"the calibration size must be >= 1 frame pair, got {size}")
    per_domain = [size // len(_PROCEDURAL_DOMAINS) + (k < size % len(_PROCEDURAL_DOMAINS))
                  for k in range(len(_PROCEDURAL_DOMAINS))]
    pairs = []
    for k, (domain, n) in enumerate(zip(_PROCEDURAL_DOMAINS, per_domain)):
        if n == 0:
            continue
        # The training split: held-out splits stay unseen for the accuracy gate.
        source = procedural_split(Split.TRAIN, domain, size=resolution, length=_PROCEDURAL_LENGTH,
                                  tasks=("optical_flow",))  # a flow label makes the generator render t+1
        for index in stratified_starts(_PROCEDURAL_LENGTH + 1, n, seed + k):
            sample = source[index]
            assert sample.frame2 is not None
            pairs.append(CalibrationPair(index, sample.name, _letterbox(sample.frame1, resolution),
                                         _letterbox(sample.frame2, resolution)))
    record = _record(
        {"kind": PROCEDURAL, "spec": PROCEDURAL, "description": "procedural generator, train split",
         "domains": list(_PROCEDURAL_DOMAINS)},
        pairs, resolution, seed,
    )
    return CalibrationSet(tuple(pairs), record)


def _record(source: dict[str, Any], pairs: list[CalibrationPair] | tuple[CalibrationPair, ...],
            resolution: tuple[int, int], seed: int) -> CalibrationRecord:
    return CalibrationRecord(
        source=source, seed=seed, resolution=(int(resolution[0]), int(resolution[1])),
        pairs=tuple(PairRecord(p.index, p.name, (_sha(p.frame1), _sha(p.frame2))) for p in pairs),
    )


def load_calibration_set(
    data: str | os.PathLike,
    size: int,
    resolution: tuple[int, int],
    seed: int = 0,
    topic: str | None = None,
) -> CalibrationSet:
    """Read and preprocess ``size`` calibration pairs.

    Args:
        data: ``procedural``, an image folder, a video file or a ROS 2 bag (directory or ``.mcap``/``.db3``).
        size: number of consecutive frame pairs (the source needs at least ``size + 1`` frames).
        resolution: the artifact's processing size ``(H, W)``; frames are letterboxed to it.
        seed: sampling seed (the same seed and source give the same pairs).
        topic: image topic of a bag with several.

    Raises:
        StableMTLError: missing or empty source, unreadable video, a camera, or fewer frames than asked.
    """
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)):
        raise StableMTLError(f"the calibration size must be an integer number of frame pairs, got {size!r}")
    spec = str(data)
    if spec.strip().lower() == PROCEDURAL:
        return _procedural(int(size), resolution, seed)
    return _from_source(spec, int(size), resolution, seed, topic)
