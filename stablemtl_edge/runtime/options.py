"""The runtime settings shared by the ROS node's parameters and the bag command's flags, checked in one place.

The node validates a parameter change with :meth:`RuntimeOptions.parse` before accepting it, and opens the
runtime with :meth:`RuntimeOptions.open` when it is configured; ``stablemtl-ros-bag`` builds the same
record from its command line.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import StableMTLError
from ..artifact.manifest import Mode, Precision
from ..cli.parsers import parse_pairs
from ..tasks import TASK_NAMES, get_task, parse_tasks
from .api import Runtime
from .backends.base import Backend

__all__ = ["RuntimeOptions", "parse_rates"]


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
        rates[key] = _positive_int(rate, f"rate of `{key}`", "run every N-th frame")
    return rates


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
    """

    artifact_dir: Path
    tasks: tuple[str, ...] = TASK_NAMES
    mode: Mode | None = None
    backend: Backend = Backend.AUTO
    precision: Precision = Precision.FP32
    providers: tuple[str, ...] | None = None
    rates: dict[str, int] = field(default_factory=dict)
    aux_reuse: int = 1

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
    ) -> RuntimeOptions:
        """Validate loosely typed settings (ROS parameters, command-line strings).

        Rates of tasks that are not requested are dropped, as are rates of 1 (the default).

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
        return cls(
            artifact_dir=Path(artifact_dir),
            tasks=keys,
            mode=Mode.parse(mode, "mode") if mode not in (None, "") else None,
            backend=Backend.parse(backend, "backend"),
            precision=Precision.parse(precision, "precision"),
            providers=provider_list or None,
            rates={k: v for k, v in parse_rates(rates).items() if k in keys and v != 1},
            aux_reuse=_positive_int(aux_reuse, "aux_reuse", "1 = exact"),
        )

    def open(self) -> Runtime:
        """Load the artifacts (seconds: sessions are created and hashes checked)."""
        if not str(self.artifact_dir) or not self.artifact_dir.is_dir():
            raise StableMTLError(
                f"artifact directory `{self.artifact_dir}` does not exist: pass the directory that "
                "`stablemtl-export` wrote (it holds manifest.json)"
            )
        return Runtime.from_artifacts(
            self.artifact_dir,
            tasks=list(self.tasks),
            mode=self.mode,
            backend=self.backend.value,
            precision=self.precision,
            providers=list(self.providers) if self.providers else None,
            rates=dict(self.rates) or None,
            aux_reuse=self.aux_reuse,
        )
