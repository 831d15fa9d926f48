"""Argument groups shared by the runtime's command-line tools, and their common entry-point shape.

``stablemtl-run``, ``stablemtl-bench``, ``stablemtl-doctor`` and the ROS node describe a runtime with the
same flags (artifact directory, tasks, mode, backend, precision, providers, per-task rates), so they are
declared once here and parsed into the runtime-settings record that the ROS node validates its parameters
with (:class:`stablemtl_edge.runtime.options.RuntimeOptions`; it imports neither rclpy nor rosbags),
which opens the runtime with ``RuntimeOptions.open()``.
Every tool's ``main`` goes through :func:`run_cli`: a :class:`StableMTLError` becomes one ``error: ...``
line and exit status 1, Ctrl-C exits with 130 without a traceback, anything else is a bug and keeps its
traceback.
"""

from __future__ import annotations

import argparse
import itertools
import logging
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ..errors import StableMTLError
from ..artifact.manifest import Manifest, Mode, Precision, parse_enum
from ..tasks import TASK_NAMES
from ..runtime.backends.base import Backend
from ..runtime.options import RuntimeOptions

__all__ = [
    "add_artifact_args",
    "add_runtime_args",
    "runtime_options",
    "runtime_option_grid",
    "options_label",
    "parse_list",
    "run_cli",
    "HelpFormatter",
    "describe",
]


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """``--help`` shows real defaults (not None/False, nor twice) and keeps the description's line breaks."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if action.default in (None, False, [], argparse.SUPPRESS) or "default" in text:
            return text
        return super()._get_help_string(action)


def describe(doc: str | None) -> str | None:
    """A module docstring's body (after its summary line) as plain ``--help`` text, without reST markup."""
    if not doc:
        return None
    body = doc.split("\n\n", 1)[-1].strip()
    body = re.sub(r":\w+:`[.~]?([^`]+)`", r"\1", body)
    return body.replace("``", "`")


def parse_list(text: str | Sequence[str] | None) -> list[str]:
    """``"a,b"`` or ``["a", "b,c"]`` -> ``["a", "b", "c"]`` (empty items dropped)."""
    if text is None:
        return []
    items = [text] if isinstance(text, str) else list(text)
    return [p.strip() for item in items for p in str(item).split(",") if p.strip()]


def options_label(options: RuntimeOptions) -> str:
    """``multi/onnxruntime/fp32`` (mode/backend/precision), for tables and logs."""
    return f"{options.mode.value}/{options.backend.value}/{options.precision.value}"


def add_artifact_args(parser: argparse.ArgumentParser, required: bool = True) -> None:
    """``--artifacts DIR``: the directory ``stablemtl-export`` wrote (manifest.json + ONNX files)."""
    parser.add_argument(
        "--artifacts", "-a", type=Path, required=required, metavar="DIR",
        help="artifact directory written by `stablemtl-export` (holds manifest.json)",
    )  # fmt: skip


def add_runtime_args(parser: argparse.ArgumentParser, multiple: bool = False) -> None:
    """The runtime flags: tasks, mode, backend, precision, providers, rates, aux reuse.

    Args:
        parser: the tool's parser (a titled group is added to it).
        multiple: ``--mode``, ``--backend`` and ``--precision`` take comma-separated lists (benchmarks
            sweep their product); otherwise each takes one value.
    """
    g = parser.add_argument_group("runtime")
    some = "comma-separated list of " if multiple else ""
    g.add_argument(
        "--tasks", "-t", default="all",
        help=f"comma-separated tasks or `all`; from: {', '.join(TASK_NAMES)}",
    )  # fmt: skip
    g.add_argument(
        "--mode", default=None,
        help=f"{some}schedule: `single` (one UNet row per task) or `multi` (shared auxiliary stream + main "
        "stream; needs a multi-stream artifact); default: the artifact's mode",
    )  # fmt: skip
    g.add_argument(
        "--backend", default="auto",
        help=f"{some}engine: `auto` (TensorRT when installed and engines are cached, else onnxruntime), "
        "`onnxruntime` or `tensorrt`",
    )  # fmt: skip
    g.add_argument("--precision", default="fp32", help=f"{some}graphs to run: fp32, fp16 or int8 (as exported)")
    g.add_argument(
        "--providers", default=None,
        help="onnxruntime providers in priority order, comma-separated (e.g. CUDAExecutionProvider,"
        "CPUExecutionProvider); default: CUDA when usable, else CPU",
    )  # fmt: skip
    g.add_argument(
        "--rates", action="append", default=[], metavar="TASK:N",
        help="run TASK every N-th frame (comma-separated or repeated, e.g. --rates semantic:3,albedo:5); "
        "other tasks run every frame",
    )  # fmt: skip
    g.add_argument(
        "--aux-reuse", type=int, default=1, metavar="N",
        help="multi-stream: recompute the auxiliary features every N-th frame (1 = exact)",
    )  # fmt: skip


def _options(args: argparse.Namespace, mode: Any, backend: Any, precision: Any) -> RuntimeOptions:
    if getattr(args, "artifacts", None) is None:
        raise StableMTLError("no artifact directory: pass --artifacts DIR (written by `stablemtl-export`)")
    if mode is None:  # the best schedule the artifact offers
        mode = Manifest.load(args.artifacts).mode
    return RuntimeOptions.parse(
        args.artifacts,
        tasks=args.tasks,
        mode=mode,
        backend=backend,
        precision=precision,
        providers=args.providers,
        rates=",".join(parse_list(args.rates)),
        aux_reuse=args.aux_reuse,
    )


def runtime_options(args: argparse.Namespace) -> RuntimeOptions:
    """The runtime settings of a parser built with ``add_artifact_args`` + ``add_runtime_args``.

    An absent ``--mode`` means the artifact's own mode (read from its manifest).
    """
    values = {}
    for flag, cls, default in (("mode", Mode, None), ("backend", Backend, Backend.AUTO),
                               ("precision", Precision, Precision.FP32)):  # fmt: skip
        items = [parse_enum(cls, v, flag) for v in parse_list(getattr(args, flag))]
        if len(items) > 1:
            raise StableMTLError(f"--{flag} takes one value here, got {', '.join(v.value for v in items)}")
        values[flag] = items[0] if items else default
    return _options(args, values["mode"], values["backend"], values["precision"])


def runtime_option_grid(args: argparse.Namespace) -> list[RuntimeOptions]:
    """Every (mode, backend, precision) combination of a parser built with ``add_runtime_args(multiple=True)``."""
    modes: list[Any] = [parse_enum(Mode, v, "mode") for v in parse_list(args.mode)] or [None]
    backends = [parse_enum(Backend, v, "backend") for v in parse_list(args.backend)] or [Backend.AUTO]
    precisions = [parse_enum(Precision, v, "precision") for v in parse_list(args.precision)] or [Precision.FP32]
    return [_options(args, m, b, p) for m, b, p in itertools.product(modes, backends, precisions)]


def run_cli(
    body: Callable[[argparse.Namespace], int], parser: argparse.ArgumentParser, argv: Sequence[str] | None
) -> int:
    """Parse ``argv`` and run ``body(args)`` with the house error convention.

    Returns:
        ``body``'s exit status; 1 after a :class:`StableMTLError` (printed as ``error: ...``); 130 on Ctrl-C.
    """
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if getattr(args, "verbose", False) else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        return body(args)
    except StableMTLError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
