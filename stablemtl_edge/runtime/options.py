"""The runtime settings, typed and checked in one place under one rule set.

:meth:`RuntimeOptions.parse` turns loosely typed values (Python arguments, command-line strings, ROS
parameters) into one validated record; :meth:`Runtime.from_artifacts` parses its arguments with it, every
command-line tool builds it through :mod:`.cli_args`, the ROS node validates a parameter change with it
before accepting it, and :meth:`Runtime.from_options` opens it. A mistake gets the same one-line message
whichever door it came through.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import StableMTLError
from ..artifact.manifest import Mode, Precision
from ..cli.parsers import parse_pairs
from ..records import KeyEnum
from ..tasks import TASK_NAMES, get_task, parse_tasks
from .backends.base import Backend

DECODER_ROWS_AUTO = "auto"  # the backend's recorded default (``api._default_decoder_rows``)
DECODER_ROWS_ALL = "all"  # every due row in one call


def parse_decoder_rows(value: int | str | None) -> int | str:
    """``auto``, ``all`` or a positive number of rows per decoder call (an int, or its digits)."""
    text = str(value).strip().lower() if value is not None else DECODER_ROWS_AUTO
    if text in (DECODER_ROWS_AUTO, DECODER_ROWS_ALL):
        return text
    if not isinstance(value, bool) and text.isdigit() and int(text) >= 1:
        return int(text)
    raise StableMTLError(
        f"`decoder_rows` must be `auto` (the default for the backend), `all` (one call) or an integer >= 1, got "
        f"`{value}`"
    )

__all__ = ["RuntimeOptions", "DecoderChoice", "parse_rates", "check_rates"]


class DecoderChoice(KeyEnum):
    """Which decoder turns latents into task images: the model's own VAE decoder, or the distilled one
    (``tiny_decoder``, a tenth of its FLOPs or less) when the artifact has it."""

    FULL = "full"
    TINY = "tiny"


def parse_rates(text: str | Mapping[str, int] | None) -> dict[str, int]:
    """Per-task rates from ``"semantic:3,albedo:2"`` (or a mapping): run that task every N-th frame.

    Raises:
        StableMTLError: an unknown task, a missing ``:``, or a rate that is not an integer >= 1.
    """
    if not text:
        return {}
    if not isinstance(text, (str, Mapping)):
        raise StableMTLError(f"rates must read task:N (e.g. semantic:3), got {text!r}")
    items = text.items() if isinstance(text, Mapping) else parse_pairs(text, "rate", "task:N", "semantic:3")
    rates: dict[str, int] = {}
    for task, rate in items:
        key = get_task(task).key
        rates[key] = _positive_int(rate, f"the rate of `{key}`", "run every N-th frame")
    return rates


def check_rates(rates: str | Mapping[str, int] | None, tasks: Iterable[str], standing: bool = False) -> dict[str, int]:
    """:func:`parse_rates`, then each rate checked against the requested tasks.

    A rate above 1 for a task that is not requested is a mistake (it would do nothing) and is refused; a
    rate of 1 is the default and is dropped. ``standing``: the rates are standing settings, one per task
    (the ROS node's ``rates.<task>`` parameters), so those of tasks not requested are checked but unused.
    """
    keys = tuple(tasks)
    parsed = parse_rates(rates)
    if standing:
        parsed = {k: v for k, v in parsed.items() if k in keys}
    stray = [k for k, v in parsed.items() if k not in keys and v != 1]
    if stray:
        raise StableMTLError(
            f"a rate is given for `{stray[0]}`, which is not among the requested tasks ({', '.join(keys)}): "
            "request the task or drop its rate"
        )
    return {k: v for k, v in parsed.items() if v != 1}


def _positive_int(value: object, what: str, meaning: str) -> int:
    try:
        n = int(str(value).strip()) if not isinstance(value, (bool, float)) else 0
    except ValueError:
        n = 0
    if n < 1:
        raise StableMTLError(f"{what} must be an integer >= 1 ({meaning}), got `{value}`")
    return n


@dataclass(frozen=True)
class RuntimeOptions:
    """What :meth:`Runtime.from_artifacts` is called with; every field already validated.

    Attributes:
        artifact_dir: exported artifact directory (``manifest.json`` inside).
        tasks: task keys in canonical order.
        mode: single- or multi-stream; None = what the artifact serves (multi for a multi-stream artifact).
        backend: inference engine.
        precision: which exported precision to load.
        providers: onnxruntime execution providers, or None for the best available.
        rates: task -> run every N-th frame (tasks absent run every frame).
        aux_reuse: multi-stream auxiliary-feature reuse interval (1 = exact).
        decoder: the full VAE decoder or the distilled ``tiny_decoder``.
        decoder_rows: batch rows per decoder call: ``auto`` (the backend's default), ``all`` or N.
        url: backend ``triton``: the server, ``HOST:PORT`` (gRPC) or ``http://HOST:PORT``.
    """

    artifact_dir: Path
    tasks: tuple[str, ...] = TASK_NAMES
    mode: Mode | None = None
    backend: Backend = Backend.AUTO
    precision: Precision = Precision.FP32
    providers: tuple[str, ...] | None = None
    rates: dict[str, int] = field(default_factory=dict)
    aux_reuse: int = 1
    decoder: DecoderChoice = DecoderChoice.FULL
    decoder_rows: int | str = DECODER_ROWS_AUTO
    url: str | None = None

    @classmethod
    def parse(
        cls,
        artifact_dir: str | os.PathLike,
        tasks: str | Iterable[str] | None = None,
        mode: str | Mode | None = None,
        backend: str | Backend = Backend.AUTO,
        precision: str | Precision = Precision.FP32,
        providers: str | Iterable[str] | None = None,
        rates: str | Mapping[str, int] | None = None,
        aux_reuse: int = 1,
        *,
        decoder: str | DecoderChoice = DecoderChoice.FULL,
        decoder_rows: int | str = DECODER_ROWS_AUTO,
        standing_rates: bool = False,
        url: str | None = None,
    ) -> RuntimeOptions:
        """Validate loosely typed settings (ROS parameters, command-line strings).

        Rates of 1 (the default) are dropped; a rate above 1 for a task that is not requested is refused, as
        is ``aux_reuse`` above 1 with mode ``single`` (it applies to the multi-stream mode only).
        ``standing_rates``: see :func:`check_rates`. ``url`` belongs to backend ``triton`` alone, which
        needs it; the server picks the decoder and providers, so those keep their defaults there.

        Raises:
            StableMTLError: the first invalid value, with the valid choices.
        """
        if isinstance(tasks, (list, tuple)) and len(tasks) == 1 and isinstance(tasks[0], str):
            tasks = tasks[0]  # ["all"] or ["depth,normal"] from a ROS string-array parameter
        specs = parse_tasks(tasks)
        keys = tuple(s.key for s in specs)
        if isinstance(providers, str):
            providers = [p.strip() for p in providers.split(",")]
        provider_list = tuple(p for p in (providers or ()) if p)
        parsed_mode = Mode.parse(mode, "mode") if mode not in (None, "") else None
        reuse = _positive_int(aux_reuse, "`aux_reuse`", "1 = exact")
        if parsed_mode is Mode.SINGLE and reuse != 1:
            raise StableMTLError("`aux_reuse` applies to the multi-stream mode only; leave it at 1 with mode `single`")
        parsed_backend = Backend.parse(backend, "backend")
        parsed_decoder = DecoderChoice.parse(decoder, "decoder")
        rows = parse_decoder_rows(decoder_rows)
        url = url.strip() if url else None
        if parsed_backend is Backend.TRITON:
            if not url:
                raise StableMTLError("backend `triton` needs the server's address: pass --url HOST:PORT (gRPC, port "
                                     "8001) or http://HOST:8000")
            if provider_list or parsed_decoder is not DecoderChoice.FULL or rows != DECODER_ROWS_AUTO:
                raise StableMTLError("with backend `triton` the server chooses providers and decoder (see the "
                                     "repository's config.pbtxt): drop --providers / --decoder / --decoder-rows")
        elif url:
            raise StableMTLError(f"`--url` is the triton backend's server address; backend `{parsed_backend.value}` "
                                 "runs in this process: drop --url or use --backend triton")
        return cls(
            artifact_dir=Path(artifact_dir),
            tasks=keys,
            mode=parsed_mode,
            backend=parsed_backend,
            precision=Precision.parse(precision, "precision"),
            providers=provider_list or None,
            rates=check_rates(rates, keys, standing_rates),
            aux_reuse=reuse,
            decoder=parsed_decoder,
            decoder_rows=rows,
            url=url,
        )

    def check_directory(self) -> None:
        """Refuse a directory that does not exist, before anything slow happens."""
        if not str(self.artifact_dir) or not self.artifact_dir.is_dir():
            raise StableMTLError(
                f"artifact directory `{self.artifact_dir}` does not exist: pass the directory that "
                "`stablemtl-export` wrote (it holds manifest.json)"
            )
