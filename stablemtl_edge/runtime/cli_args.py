"""The runtime's argument group: the flags that describe a runtime, parsed into :class:`RuntimeOptions`.

``stablemtl-run``, ``stablemtl-bench``, ``stablemtl-doctor``, ``stablemtl-ros-bag`` and ``stablemtl-eval``
describe a runtime with the same flags (artifact directory, tasks, mode, backend, precision, providers,
per-task rates), so they are declared once here, next to the record the ROS node validates its parameters
with. It lives in ``runtime/`` (not ``cli/``) so that the export tools can use the CLI shell without
importing the runtime.
"""

from __future__ import annotations

import argparse
import itertools
from typing import Any

from ..errors import StableMTLError
from ..artifact.manifest import Manifest, Mode, Precision
from ..cli.parsers import parse_list, positive_int
from ..tasks import TASK_NAMES
from .backends.base import Backend
from .options import DecoderChoice, RuntimeOptions

__all__ = ["add_runtime_args", "runtime_options", "runtime_option_grid", "options_label"]


def options_label(options: RuntimeOptions) -> str:
    """``multi/onnxruntime/fp32`` (mode/backend/precision, ``+tiny`` with the distilled decoder), for tables."""
    mode = options.mode.value if options.mode is not None else "auto"
    tiny = "+tiny" if options.decoder is DecoderChoice.TINY else ""
    return f"{mode}/{options.backend.value}/{options.precision.value}{tiny}"


def add_runtime_args(parser: argparse.ArgumentParser, multiple: bool = False, stream: bool = True) -> None:
    """The runtime flags: tasks, mode, backend, precision, providers, decoder, and for streams rates and aux reuse.

    Args:
        parser: the tool's parser (a titled group is added to it).
        multiple: ``--mode``, ``--backend`` and ``--precision`` take comma-separated lists (benchmarks
            sweep their product); otherwise each takes one value.
        stream: offer ``--rates`` and ``--aux-reuse``; a tool that scores frames one by one (evaluation)
            leaves them out, since skipping a task or reusing features across frames has no meaning there.
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
        "`onnxruntime`, `tensorrt`, or `triton` (a Triton Inference Server runs the model: see --url)",
    )  # fmt: skip
    g.add_argument(
        "--url", default=None, metavar="URL",
        help="backend `triton`: the server, HOST:PORT (gRPC, Triton's port 8001) or http://HOST:8000; the "
        "--artifacts directory then needs only the manifest.json the server's repository was generated from",
    )  # fmt: skip
    g.add_argument("--precision", default="fp32", help=f"{some}graphs to run: fp32, fp16 or int8 (as exported)")
    g.add_argument(
        "--providers", default=None,
        help="onnxruntime providers in priority order, comma-separated (e.g. CUDAExecutionProvider,"
        "CPUExecutionProvider); default: CUDA when usable, else CPU",
    )  # fmt: skip
    g.add_argument(
        "--decoder", default="full", **({} if multiple else {"choices": DecoderChoice.choices()}),
        help=f"{some}`full`: the model's VAE decoder; `tiny`: the distilled decoder (a tenth of its FLOPs or "
        "less), when the artifact was exported with one",
    )  # fmt: skip
    if not multiple:  # a benchmark sweeps its own list of --decoder-rows
        g.add_argument(
            "--decoder-rows", default="auto", metavar="N",
            help="batch rows per decoder call: `auto` (one on onnxruntime's CPU provider, where that is faster; "
            "all of a frame's rows on a GPU), `all` or N",
        )  # fmt: skip
    if not stream:
        return
    g.add_argument(
        "--rates", action="append", default=[], metavar="TASK:N",
        help="run TASK every N-th frame (comma-separated or repeated, e.g. --rates semantic:3,albedo:5); "
        "other tasks run every frame",
    )  # fmt: skip
    g.add_argument(
        "--aux-reuse", type=positive_int, default=1, metavar="N",
        help="multi-stream: recompute the auxiliary features every N-th frame (1 = exact)",
    )  # fmt: skip


def _options(args: argparse.Namespace, mode: Any, backend: Any, precision: Any, decoder: Any = None,
             url: str | None = None, decoder_rows: Any = "auto") -> RuntimeOptions:
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
        rates=",".join(parse_list(getattr(args, "rates", []))),
        aux_reuse=getattr(args, "aux_reuse", 1),
        decoder=decoder if decoder is not None else getattr(args, "decoder", DecoderChoice.FULL),
        decoder_rows=decoder_rows,
        url=url,
    )


def runtime_options(args: argparse.Namespace) -> RuntimeOptions:
    """The runtime settings of a parser built with ``add_artifact_args`` + ``add_runtime_args``.

    An absent ``--mode`` means the artifact's own mode (read from its manifest).
    """
    values = {}
    for flag, cls, default in (("mode", Mode, None), ("backend", Backend, Backend.AUTO),
                               ("precision", Precision, Precision.FP32)):  # fmt: skip
        items = [cls.parse(v, flag) for v in parse_list(getattr(args, flag))]
        if len(items) > 1:
            raise StableMTLError(f"--{flag} takes one value here, got {', '.join(v.value for v in items)}")
        values[flag] = items[0] if items else default
    return _options(args, values["mode"], values["backend"], values["precision"], url=getattr(args, "url", None),
                    decoder_rows=getattr(args, "decoder_rows", "auto"))


def runtime_option_grid(args: argparse.Namespace) -> list[RuntimeOptions]:
    """Every (mode, backend, precision, decoder) combination of a parser built with
    ``add_runtime_args(multiple=True)``."""
    modes: list[Any] = [Mode.parse(v, "mode") for v in parse_list(args.mode)] or [None]
    backends = [Backend.parse(v, "backend") for v in parse_list(args.backend)] or [Backend.AUTO]
    precisions = [Precision.parse(v, "precision") for v in parse_list(args.precision)] or [Precision.FP32]
    decoders = [DecoderChoice.parse(v, "decoder") for v in parse_list(args.decoder)] or [DecoderChoice.FULL]
    url = getattr(args, "url", None)  # the address of the triton entries of the grid
    return [_options(args, m, b, p, d, url if b is Backend.TRITON else None)
            for m, b, p, d in itertools.product(modes, backends, precisions, decoders)]
