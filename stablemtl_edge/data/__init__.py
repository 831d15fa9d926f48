"""Training data: procedural scenes with exact ground truth and readers for the real training sets.

Every source is a :class:`SampleSource` of :class:`~stablemtl_edge.data.sample.Sample` records;
:class:`TaskMixture` draws a source per task with the official probabilities; :func:`procedural_clip` renders
continuous labelled video of one scene for demos and streaming evaluation. numpy (+ OpenCV, h5py for
Hypersim) only; the trainer wraps these in its torch data loader.
"""

from .clip import ProceduralClip, procedural_clip
from .dataset import OFFICIAL_MIX, Corpus, MixEntry, SampleSource, SkipBadSamples, TaskMixture, official_mixture
from .procedural import (
    AVAILABLE_TASKS,
    DOMAIN_TASKS,
    SPLIT_SEEDS,
    Domain,
    ProceduralSource,
    Split,
    procedural_mixture,
    procedural_split,
)

__all__ = [
    "SampleSource",
    "SkipBadSamples",
    "Corpus",
    "OFFICIAL_MIX",
    "MixEntry",
    "TaskMixture",
    "official_mixture",
    "Domain",
    "Split",
    "DOMAIN_TASKS",
    "AVAILABLE_TASKS",
    "SPLIT_SEEDS",
    "ProceduralSource",
    "procedural_split",
    "procedural_mixture",
    "ProceduralClip",
    "procedural_clip",
]
