"""Which data a run trains and validates on: procedural scenes, sample pools, or the real training sets.

Every source stands for one of the official corpora (Hypersim, Virtual KITTI 2, FlyingThings3D), either
itself or through its procedural stand-in (``indoor``, ``driving``, ``flying``), and the per-task mix is
the official one (:func:`..data.dataset.official_mixture`). Validation always uses the procedural
``val`` split of the domains being trained, which never shares a scene with training data.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import StableMTLError
from ..data.dataset import Corpus, SampleSource, SkipBadSamples, TaskMixture, official_mixture
from ..data.procedural import procedural_split
from .pool import POOL_META, NpzPool

__all__ = ["DataConfig", "build_sources", "corpus_of_domain", "expand_pools"]

_DOMAIN_CORPUS = {c.procedural_domain: c for c in Corpus} | {c.value: c for c in Corpus}


def corpus_of_domain(domain: str) -> Corpus:
    try:
        return _DOMAIN_CORPUS[domain]
    except KeyError:
        raise StableMTLError(
            f"domain `{domain}` stands for no training corpus: expected one of {', '.join(sorted(_DOMAIN_CORPUS))}"
        ) from None


@dataclass(frozen=True)
class DataConfig:
    """Training data.

    Attributes:
        procedural: render procedural scenes on the fly for corpora without another source.
        pools: pool directories written by ``stablemtl-train pool`` (or a directory holding several).
        hypersim, vkitti2, flyingthings3d: roots of the real datasets.
        procedural_length: distinct procedural scenes per domain.
        validate: validate on the procedural ``val`` split.
    """

    procedural: bool = True
    pools: tuple[str, ...] = ()
    hypersim: str | None = None
    vkitti2: str | None = None
    flyingthings3d: str | None = None
    procedural_length: int = 10_000
    validate: bool = True

    def to_dict(self) -> dict[str, Any]:
        return {"procedural": self.procedural, "pools": list(self.pools), "hypersim": self.hypersim,
                "vkitti2": self.vkitti2, "flyingthings3d": self.flyingthings3d,
                "procedural_length": self.procedural_length, "validate": self.validate}


def expand_pools(paths: Sequence[str | Path]) -> list[Path]:
    """Pool directories, where a directory without ``pool.json`` contributes its pool sub-directories."""
    out = []
    for p in map(Path, paths):
        if (p / POOL_META).is_file():
            out.append(p)
            continue
        subs = sorted(q for q in p.iterdir() if (q / POOL_META).is_file()) if p.is_dir() else []
        if not subs:
            raise StableMTLError(f"`{p}` is not a sample pool and holds none: write one with `stablemtl-train pool`")
        out.extend(subs)
    return out


def _real_source(corpus: Corpus, root: str) -> SampleSource:
    if corpus is Corpus.HYPERSIM:
        from ..data.hypersim import HypersimSource

        return HypersimSource(root)
    if corpus is Corpus.VKITTI2:
        from ..data.vkitti2 import VKitti2Source

        return VKitti2Source(root)
    from ..data.flyingthings3d import FlyingThings3DSource

    return FlyingThings3DSource(root)


def build_sources(config: DataConfig, resolution: tuple[int, int],
                  tasks: Sequence[str] | None = None) -> tuple[TaskMixture, list[SampleSource]]:
    """The training mixture and the validation sources.

    Priority per corpus: the real dataset root, then a pool, then (when ``procedural``) live procedural
    scenes at the training resolution.
    """
    by_corpus: dict[Corpus, SampleSource] = {}
    for pool in expand_pools(config.pools):
        source = NpzPool(pool)
        by_corpus[corpus_of_domain(source.domain)] = source
    for corpus in Corpus:
        root = getattr(config, corpus.value)
        if root is not None:
            by_corpus[corpus] = SkipBadSamples(_real_source(corpus, root))
    if config.procedural:
        for corpus in Corpus:
            if corpus not in by_corpus:
                by_corpus[corpus] = procedural_split("train", corpus.procedural_domain, size=resolution,
                                                     length=config.procedural_length)
    if not by_corpus:
        raise StableMTLError("no training data: pass --data procedural, --pool DIR or a dataset root")
    mixture = official_mixture(by_corpus, tasks)
    val = []
    if config.validate:
        val = [procedural_split("val", c.procedural_domain, size=resolution) for c in Corpus if c in by_corpus]
    return mixture, val
