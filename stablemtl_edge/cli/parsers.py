"""Value parsers shared by every tool: one rule per kind of value, one message per mistake.

The ``parse_*`` functions raise :class:`StableMTLError` (for values from config files, ROS parameters and
the Python API). The argparse types raise ``ArgumentTypeError``, which argparse prints as
``prog: error: argument --flag: ...`` with exit status 2, so a bad number never reaches a tool's body
(``nan`` and ``inf`` parse as floats in Python and would otherwise pass every ``<= 0`` check).
"""

from __future__ import annotations

import argparse
import math
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

from ..artifact.manifest import Component, Precision
from ..errors import StableMTLError
from ..tasks import get_task

__all__ = [
    "parse_hw",
    "parse_pairs",
    "parse_list",
    "hw",
    "int_at_least",
    "positive_int",
    "nonnegative_int",
    "positive_float",
    "nonnegative_float",
    "finite_float",
    "fraction",
    "percentile",
    "int_between",
    "new_or_dir",
    "as_type",
    "parse_precisions",
    "parse_tolerance_overrides",
]

T = TypeVar("T")
_HW = re.compile(r"^\s*(\d+)\s*[xX]\s*(\d+)\s*$")


def parse_hw(text: object, what: str = "size", example: str = "384x512") -> tuple[int, int]:
    """``"HxW"`` -> ``(H, W)``, both integers >= 1 (a pair of numbers is taken as it is)."""
    if isinstance(text, (tuple, list)) and len(text) == 2:
        text = f"{text[0]}x{text[1]}"
    m = _HW.match(str(text))
    if m is None or int(m.group(1)) < 1 or int(m.group(2)) < 1:
        raise StableMTLError(f"{what} must read HxW in pixels (e.g. {example}), got `{text}`")
    return int(m.group(1)), int(m.group(2))


def parse_list(text: str | Sequence[str] | None) -> list[str]:
    """``"a,b"`` or ``["a", "b,c"]`` -> ``["a", "b", "c"]`` (empty items dropped)."""
    if text is None:
        return []
    items = [text] if isinstance(text, str) else list(text)
    return [p.strip() for item in items for p in str(item).split(",") if p.strip()]


def parse_pairs(
    text: str | Sequence[str] | None, what: str, form: str, example: str, sep: str = ":"
) -> list[tuple[str, str]]:
    """``"a:1,b:2"`` (or repeated flags, each comma-separated) -> ``[("a", "1"), ("b", "2")]``, stripped.

    Args:
        text: the flag's value(s).
        what: the flag, for the message (``--rates``).
        form: what an item looks like (``task:N``).
        example: a valid item (``semantic:3``).
        sep: the separator between key and value.

    Raises:
        StableMTLError: an item without ``sep``, or with an empty key or value.
    """
    pairs = []
    for item in parse_list(text):
        key, found, value = item.partition(sep)
        if not found or not key.strip() or not value.strip():
            raise StableMTLError(f"{what} `{item}` must read {form}, for example {example}")
        pairs.append((key.strip(), value.strip()))
    return pairs


def as_type(parse: Callable[[str], T], name: str) -> Callable[[str], T]:
    """An argparse type from a ``parse_*`` function: its StableMTLError becomes argparse's one-line error."""

    def convert(text: str) -> T:
        try:
            return parse(text)
        except StableMTLError as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    convert.__name__ = name  # argparse names the type in its "invalid ... value" message
    return convert


hw = as_type(parse_hw, "HxW")


def int_at_least(low: int) -> Callable[[str], int]:
    """An integer flag that must be ``>= low``."""

    def parse(text: str) -> int:
        try:
            n = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"`{text}` is not an integer (expected one >= {low})") from None
        if n < low:
            raise argparse.ArgumentTypeError(f"must be an integer >= {low}, got {n}")
        return n

    parse.__name__ = f"integer >= {low}"
    return parse


positive_int = int_at_least(1)
nonnegative_int = int_at_least(0)


def _float_where(ok: Callable[[float], bool], rule: str) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            x = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"`{text}` is not a number (expected {rule})") from None
        if not math.isfinite(x) or not ok(x):
            raise argparse.ArgumentTypeError(f"must be {rule}, got `{text}`")
        return x

    parse.__name__ = rule
    return parse


finite_float = _float_where(lambda x: True, "a finite number")
positive_float = _float_where(lambda x: x > 0, "a finite number > 0")
nonnegative_float = _float_where(lambda x: x >= 0, "a finite number >= 0")
fraction = _float_where(lambda x: 0 < x <= 1, "a number > 0 and <= 1")
percentile = _float_where(lambda x: 0 < x <= 100, "a percentile > 0 and <= 100")


def int_between(low: int, high: int) -> Callable[[str], int]:
    """An integer flag in ``[low, high]``."""
    at_least = int_at_least(low)

    def parse(text: str) -> int:
        n = at_least(text)
        if n > high:
            raise argparse.ArgumentTypeError(f"must be an integer from {low} to {high}, got {n}")
        return n

    parse.__name__ = f"integer from {low} to {high}"
    return parse


def new_or_dir(text: str) -> Path:
    """An output directory: an existing directory or a path that does not exist yet (never a file)."""
    path = Path(text)
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"`{text}` is an existing file, not a directory: pass a directory")
    return path


def parse_tolerance_overrides(specs: Sequence[str]) -> dict[str, float]:
    """``TASK:ATOL`` or ``COMPONENT:ATOL`` pairs; an unknown name is refused with the valid ones."""
    out = {}
    for name, value in parse_pairs(specs, "--tolerance", "NAME:ATOL", "depth:0.02"):
        if name not in {c.value for c in Component}:
            name = get_task(name).key  # raises with the seven task names
        try:
            atol = float(value)
        except ValueError:
            atol = math.nan
        if not math.isfinite(atol) or atol < 0:
            raise StableMTLError(f"--tolerance `{name}:{value}`: the tolerance must be a finite number >= 0")
        out[name] = atol
    return out


def parse_precisions(text: str) -> tuple[Precision, ...]:
    return tuple(Precision.parse(p, "precision") for p in text.split(",") if p.strip())
