"""The shell every command-line tool runs in: one error convention, clean stops, readable help.

Every console script's ``main`` goes through :func:`run_cli`:

- a :class:`StableMTLError` (a user mistake) becomes one ``error: ...`` line and exit status 1;
- a missing optional dependency becomes one line naming the extra that brings it;
- Ctrl-C, and SIGTERM (what systemd and ``docker stop`` send), stop without a traceback (130, 143);
- anything else is a bug in this package and keeps its traceback (the Polygraphy convention).

Imports neither torch nor the runtime: the export tools use it too.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import importlib.metadata
import logging
import re
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from ..errors import TENSORRT_INSTALL, StableMTLError

__all__ = ["run_cli", "HelpFormatter", "describe", "add_artifact_args", "extra_for_module", "missing_extra_message"]

DISTRIBUTION = "stablemtl-edge"

# Distributions whose import name differs from their name; the rest import as their name with `-` -> `_`.
_IMPORT_NAMES = {
    "scikit-image": "skimage",
    "pyyaml": "yaml",
    "ros-jazzy-rclpy": "rclpy",
    "ros-jazzy-sensor-msgs": "sensor_msgs",
    "ros-jazzy-diagnostic-msgs": "diagnostic_msgs",
    "onnxruntime-gpu": "onnxruntime",
    "cuda-python": "cuda",
    "opencv-python": "cv2",
    "opencv-python-headless": "cv2",
}
# Extras that only gather others (or serve development): never the one to name.
_UMBRELLA_EXTRAS = {"all", "dev"}
# Modules that come with the package's ROS extra through ROS itself rather than as a listed distribution.
_ROS_MODULES = {"rclpy", "sensor_msgs", "diagnostic_msgs", "std_msgs", "builtin_interfaces", "lifecycle_msgs",
                "rcl_interfaces", "rosidl_runtime_py"}  # fmt: skip


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """``--help`` shows real defaults (not None/False, nor twice) and keeps the description's line breaks."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if action.default in (None, False, [], argparse.SUPPRESS) or "default" in text:
            return text
        return super()._get_help_string(action)


def summary(doc: str | None) -> str | None:
    """A module docstring's summary paragraph as plain ``--help`` text, without reST markup."""
    return _plain(doc.strip().split("\n\n", 1)[0]) if doc else None


def describe(doc: str | None) -> str | None:
    """A module docstring's body (after its summary line) as plain ``--help`` text, without reST markup."""
    if not doc:
        return None
    return _plain(doc.split("\n\n", 1)[-1].strip() if "\n\n" in doc.strip() else doc.strip())


def _plain(body: str) -> str:
    body = re.sub(r":\w+:`[.~]?([^`<]+?)(?:\s*<[^>]*>)?`", r"\1", body)  # :mod:`.x`, :class:`~a.B`, :doc:`t <p>`
    body = re.sub(r"`([^`<]+?)\s*<[^>]*>`_+", r"\1", body)  # `text <url>`_
    body = re.sub(r"^\.\. \w+::.*$", "", body, flags=re.M)  # directives
    body = body.replace("``", "`").replace("::\n", ":\n")
    return re.sub(r"\n{3,}", "\n\n", body).strip()


def add_artifact_args(parser: argparse.ArgumentParser, required: bool = True) -> None:
    """``--artifacts DIR``: the directory ``stablemtl-export`` wrote (manifest.json + ONNX files)."""
    parser.add_argument(
        "--artifacts", "-a", type=Path, required=required, metavar="DIR",
        help="artifact directory written by `stablemtl-export` (holds manifest.json)",
    )  # fmt: skip


@functools.cache
def _extras_by_module() -> dict[str, str]:
    """Import name -> the first extra (in pyproject.toml's order) that installs it, from the package metadata."""
    try:
        requires = importlib.metadata.requires(DISTRIBUTION) or []
    except importlib.metadata.PackageNotFoundError:
        return {}
    found: dict[str, str] = {}
    base: set[str] = set()
    for req in requires:
        dist = re.match(r"[A-Za-z0-9_.-]+", req)
        if dist is None or dist.group(0).startswith(DISTRIBUTION):
            continue
        name = dist.group(0).lower()
        module = _IMPORT_NAMES.get(name, name.replace("-", "_"))
        extra = re.search(r"""extra\s*==\s*["']([^"']+)["']""", req)
        if extra is None:
            base.add(module)  # a broken base install, not a missing extra
        elif extra.group(1) not in _UMBRELLA_EXTRAS:
            found.setdefault(module, extra.group(1))
    return {m: e for m, e in found.items() if m not in base}


@functools.cache
def _included_extras(extra: str) -> frozenset[str]:
    """``extra`` and every extra it pulls in (``train`` -> {train, export})."""
    try:
        requires = importlib.metadata.requires(DISTRIBUTION) or []
    except importlib.metadata.PackageNotFoundError:
        return frozenset({extra})
    found, todo = {extra}, [extra]
    while todo:
        current = todo.pop()
        for req in requires:
            nested = re.match(rf"{re.escape(DISTRIBUTION)}\[([^\]]+)\]", req)
            if nested and re.search(rf"""extra\s*==\s*["']{re.escape(current)}["']""", req):
                for name in nested.group(1).split(","):
                    if name.strip() not in found:
                        found.add(name.strip())
                        todo.append(name.strip())
    return frozenset(found)


def extra_for_module(module: str) -> str | None:
    """The extra that brings top-level module ``module`` (``torch`` -> ``export``), or None if none does."""
    top = module.partition(".")[0]
    extras = _extras_by_module()
    if top in extras:
        return extras[top]
    return "ros" if top in _ROS_MODULES and "rclpy" in extras else None


def missing_extra_message(tool: str, module: str, tool_extra: str | None = None) -> str | None:
    """``<tool> needs the <extra> extra ...`` for a missing optional module; None for a module no extra brings.

    ``tool_extra`` (the extra the tool comes with) is named instead when it brings the module too.
    """
    top = module.partition(".")[0]
    if top == "tensorrt":  # from JetPack or NVIDIA's index, not from an extra
        return f"{tool} needs TensorRT (`tensorrt` is not installed): {TENSORRT_INSTALL}"
    extra = extra_for_module(top)
    if extra is None:
        return None
    if tool_extra is not None and extra in _included_extras(tool_extra):
        extra = tool_extra
    return f'{tool} needs the {extra} extra (`{top}` is not installed): pip install "{DISTRIBUTION}[{extra}]"'


class _Terminated(KeyboardInterrupt):
    """SIGTERM, delivered like Ctrl-C so that every ``finally`` and ``except KeyboardInterrupt`` runs."""


def _raise_terminated(signum: int, frame: object) -> None:
    raise _Terminated()


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM stops the tool the way Ctrl-C does; the previous handler comes back afterwards."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be set from the main thread
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_cli(
    body: Callable[[argparse.Namespace], int],
    parser: argparse.ArgumentParser | Callable[[], argparse.ArgumentParser],
    argv: Sequence[str] | None,
    parse: Callable[[argparse.ArgumentParser, Sequence[str] | None], argparse.Namespace] | None = None,
    *,
    prog: str | None = None,
    extra: str | None = None,
) -> int:
    """Parse ``argv`` and run ``body(args)`` under the house error convention.

    Args:
        body: the tool.
        parser: its parser, or a function building it (when building it needs an optional dependency,
            so that its absence, even for ``--help``, is reported like any other).
        argv: the arguments (None = ``sys.argv[1:]``).
        parse: replaces ``parser.parse_args`` (for tools that merge a config file); may raise StableMTLError.
        prog: the tool's name in messages (default: the parser's ``prog``).
        extra: the extra the tool is installed with: a missing module that it brings names it (the
            training tool says ``train`` for torch, not ``export``).

    Returns:
        ``body``'s exit status; 1 after a :class:`StableMTLError` or a missing extra (printed as one
        ``error: ...`` line); 130 on Ctrl-C; 143 on SIGTERM; 2 for bad flags (argparse's own).
    """
    tool = prog or (parser.prog if isinstance(parser, argparse.ArgumentParser) else Path(sys.argv[0]).name)
    with _sigterm_as_interrupt():
        try:
            if not isinstance(parser, argparse.ArgumentParser):
                parser = parser()
            args = parse(parser, argv) if parse is not None else parser.parse_args(argv)
            logging.basicConfig(
                level=logging.DEBUG if getattr(args, "verbose", False) else logging.INFO,
                format="%(levelname)s %(name)s: %(message)s",
                stream=sys.stderr,
            )
            return body(args)
        except StableMTLError as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
        except ModuleNotFoundError as e:
            message = missing_extra_message(tool, e.name or "", extra)
            if message is None:
                raise  # not an optional dependency: a bug, keep the traceback
            print(f"error: {message}", file=sys.stderr)
            return 1
        except _Terminated:
            print("terminated", file=sys.stderr)
            return 143
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            return 130
