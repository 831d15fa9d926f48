"""Exceptions that separate user mistakes from our bugs.

A :class:`StableMTLError` is something the user can fix (a missing file, an unknown task, an engine built
for another GPU). Command-line tools print it as one line and exit non-zero; anything else is a bug in
this package and keeps its traceback (the Polygraphy convention).
"""

from __future__ import annotations


class StableMTLError(Exception):
    """A problem the user can fix; the message says what was wrong and what to do."""


# No extra of ours brings TensorRT: it comes with the platform (JetPack) or NVIDIA's wheels.
TENSORRT_INSTALL = "on a Jetson it comes with JetPack; elsewhere `pip install tensorrt` (NVIDIA's wheels, CUDA 12)"


class MissingDependencyError(StableMTLError):
    """An optional dependency is not installed; the message names the extra that provides it."""

    def __init__(self, module: str, extra: str | None, purpose: str = "", install: str | None = None) -> None:
        why = f" (needed for {purpose})" if purpose else ""
        how = install or f'install it with `pip install "stablemtl-edge[{extra}]"`'
        super().__init__(f"`{module}` is not installed{why}: {how}")
        self.module = module
        self.extra = extra
