"""Exceptions that separate user mistakes from our bugs.

A :class:`StableMTLError` is something the user can fix (a missing file, an unknown task, an engine built
for another GPU). Command-line tools print it as one line and exit non-zero; anything else is a bug in
this package and keeps its traceback (the Polygraphy convention).
"""

from __future__ import annotations


class StableMTLError(Exception):
    """A problem the user can fix; the message says what was wrong and what to do."""


class MissingDependencyError(StableMTLError):
    """An optional dependency is not installed; the message names the extra that provides it."""

    def __init__(self, module: str, extra: str, purpose: str = "") -> None:
        why = f" (needed for {purpose})" if purpose else ""
        super().__init__(
            f"`{module}` is not installed{why}: install it with `pip install \"stablemtl-edge[{extra}]\"`"
        )
        self.module = module
        self.extra = extra
