"""The record conventions shared by every stage: a key enum, and JSON records saved atomically.

A :class:`KeyEnum` is a closed set of short lower-case keys (a precision, a mode, a backend) that reads
the same in a manifest, on a command line and in a ROS parameter: ``str(member)`` is its key, ``parse``
accepts any case and names the valid keys when a value is wrong, ``choices`` feeds argparse and the ROS
parameter schema. A :class:`JsonRecord` is a dataclass with ``to_dict`` / ``from_dict`` that saves and
loads itself as strict JSON through the atomic writer, so a half-written record never replaces a good one.
"""

from __future__ import annotations

import enum
from abc import ABC, abstractmethod
import json
import math
import os
from pathlib import Path
from typing import Any, TypeVar

from .atomic import atomic_write_text
from .errors import StableMTLError

__all__ = ["KeyEnum", "JsonRecord", "dump_json", "load_json"]

E = TypeVar("E", bound="KeyEnum")
R = TypeVar("R", bound="JsonRecord")


class KeyEnum(str, enum.Enum):
    """A short key that prints as itself (``f"{Precision.FP16}" == "fp16"``)."""

    def __str__(self) -> str:
        return self.value

    @classmethod
    def parse(cls: type[E], value: Any, what: str | None = None) -> E:
        """``value`` (a member or its key, any case) as a member; one line naming the valid keys otherwise."""
        if isinstance(value, cls):
            return value
        try:
            return cls(str(value).strip().lower())
        except ValueError:
            label = what or cls.__name__
            raise StableMTLError(f"unknown {label} `{value}`: choose from {', '.join(cls.choices())}") from None

    @classmethod
    def choices(cls) -> tuple[str, ...]:
        return tuple(m.value for m in cls)


def _strict(value: Any) -> Any:
    """Non-finite floats as null: JSON has no NaN, and a reader in another language must parse the file."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _strict(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_strict(v) for v in value]
    if isinstance(value, enum.Enum):
        return value.value
    return value


def dump_json(path: str | os.PathLike, data: Any) -> Path:
    """Write ``data`` as indented strict JSON, atomically."""
    path = Path(path)
    atomic_write_text(path, json.dumps(_strict(data), indent=2, allow_nan=False) + "\n")
    return path


def load_json(path: str | os.PathLike, what: str) -> Any:
    """Read a JSON file; one line naming the file and what it should be when it cannot be read."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise StableMTLError(f"`{path}` is missing: it should hold the {what}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise StableMTLError(f"`{path}` is not a readable {what} ({e})") from None


class JsonRecord(ABC):
    """Save/load symmetry for records with ``to_dict`` and ``from_dict`` (diffusers' config convention)."""

    #: what the record is, in error messages ("engine record", "evaluation result")
    record_name = "record"

    @abstractmethod
    def to_dict(self) -> dict[str, Any]:
        """The record as plain JSON types."""

    @classmethod
    @abstractmethod
    def from_dict(cls: type[R], d: Any) -> R:
        """The mirror of :meth:`to_dict`; a wrong field raises (``load`` names the file)."""

    def save(self, path: str | os.PathLike) -> Path:
        return dump_json(path, self.to_dict())

    @classmethod
    def load(cls: type[R], path: str | os.PathLike) -> R:
        data = load_json(path, cls.record_name)
        try:
            return cls.from_dict(data)
        except StableMTLError as e:
            raise StableMTLError(f"`{path}`: {e}") from None
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise StableMTLError(f"`{path}` is not a valid {cls.record_name} ({type(e).__name__}: {e}); "
                                 "write it again with this version") from None
