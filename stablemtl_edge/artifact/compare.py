"""One comparator for every accuracy check: export parity, fp16 against fp32, the int8 gate.

Results are keyed ``<component or e2e>/<what>/<output>`` (``unet/photo/latent``, ``e2e/multi/depth/image``);
tolerances are looked up by the longest matching key prefix or by a task name anywhere in the key, so
``depth:0.02`` sets the end-to-end tolerance of depth. Each result says whether it passed and the
tolerance that would have been needed (Polygraphy's ``OutputCompareResult`` idea), and NaN/Inf fail first.
numpy only: calibration and an on-target self-check use it without torch.
"""

from __future__ import annotations

import math

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import StableMTLError
from .manifest import Mode, Precision

__all__ = ["Tolerance", "Comparison", "Comparator", "default_comparator", "recorded_tolerances", "round_up",
           "parse_tolerances", "to_jsonable"]


@dataclass(frozen=True)
class Tolerance:
    """Passes when ``max|actual - expected| <= atol + rtol * max|expected|``."""

    atol: float
    rtol: float = 0.0

    def limit(self, expected_peak: float) -> float:
        return self.atol + self.rtol * expected_peak


@dataclass(frozen=True)
class Comparison:
    """The outcome of one comparison; truthy when it passed."""

    key: str
    max_abs: float
    mean_abs: float
    expected_peak: float
    tolerance: Tolerance
    finite: bool = True

    @property
    def limit(self) -> float:
        return self.tolerance.limit(self.expected_peak)

    @property
    def passed(self) -> bool:
        return self.finite and self.max_abs <= self.limit

    @property
    def required_atol(self) -> float:
        """The smallest absolute tolerance (at this rtol) that would have passed."""
        return max(0.0, self.max_abs - self.tolerance.rtol * self.expected_peak)

    def __bool__(self) -> bool:
        return self.passed

    def to_dict(self) -> dict[str, Any]:
        return {
            "max_abs": self.max_abs,
            "mean_abs": self.mean_abs,
            "expected_peak": self.expected_peak,
            "atol": self.tolerance.atol,
            "rtol": self.tolerance.rtol,
            "required_atol": self.required_atol,
            "finite": self.finite,
            "passed": self.passed,
        }

    def line(self) -> str:
        verdict = "PASSED" if self.passed else "FAILED"
        nan = "" if self.finite else " (NaN/Inf in output)"
        return (
            f"{verdict} {self.key}: max {self.max_abs:.3g} mean {self.mean_abs:.3g} "
            f"(limit {self.limit:.3g}, needed atol {self.required_atol:.3g}){nan}"
        )


@dataclass
class Comparator:
    """Compares arrays under per-key tolerances and keeps every result.

    Args:
        tolerances: key prefix (``unet``, ``unet/photo/feat``) or task name (``depth``) -> tolerance.
        default: used when no key matches.
    """

    tolerances: Mapping[str, Tolerance] = field(default_factory=dict)
    default: Tolerance = Tolerance(1e-3)
    results: list[Comparison] = field(default_factory=list)

    def tolerance(self, key: str) -> Tolerance:
        parts = key.split("/")
        for n in range(len(parts), 0, -1):  # longest prefix first
            prefix = "/".join(parts[:n])
            if prefix in self.tolerances:
                return self.tolerances[prefix]
        for part in reversed(parts):  # then an output or task name in the key (``feat_03`` matches ``feat``)
            for name in (part, part.rstrip("0123456789").rstrip("_")):
                if name in self.tolerances:
                    return self.tolerances[name]
        return self.default

    def compare(self, key: str, actual: np.ndarray, expected: np.ndarray) -> Comparison:
        actual = np.asarray(actual, dtype=np.float64)
        expected = np.asarray(expected, dtype=np.float64)
        if actual.shape != expected.shape:
            raise StableMTLError(f"{key}: output shape {actual.shape} differs from the reference {expected.shape}")
        finite = bool(np.isfinite(actual).all())
        diff = np.abs(actual - expected)
        result = Comparison(
            key=key,
            max_abs=float(diff.max()) if finite and diff.size else (float("inf") if not finite else 0.0),
            mean_abs=float(diff.mean()) if finite and diff.size else (float("inf") if not finite else 0.0),
            expected_peak=float(np.abs(expected).max()) if expected.size else 0.0,
            tolerance=self.tolerance(key),
            finite=finite,
        )
        self.results.append(result)
        return result

    def failures(self) -> list[Comparison]:
        return [r for r in self.results if not r.passed]

    def summary(self, prefix: str = "") -> dict[str, dict[str, Any]]:
        """``{key without prefix: result dict}`` for the results under ``prefix``."""
        return {r.key[len(prefix) :]: r.to_dict() for r in self.results if r.key.startswith(prefix)}

    def check(self, what: str) -> None:
        """Raise one line naming the worst failure (and how many failed) if anything failed."""
        bad = self.failures()
        if bad:
            worst = max(bad, key=lambda r: r.max_abs - r.limit)
            raise StableMTLError(
                f"{what}: {len(bad)} of {len(self.results)} parity checks failed, worst {worst.line()}"
            )


def parse_tolerances(specs: Iterable[str], default: Tolerance) -> tuple[dict[str, Tolerance], Tolerance]:
    """Parse ``[<key>:]<atol>`` strings (``depth:0.02``, ``0.01``); a bare number replaces the default."""
    out: dict[str, Tolerance] = {}
    for spec in specs:
        key, _, value = spec.rpartition(":")
        try:
            atol = float(value)
        except ValueError:
            raise StableMTLError(f"tolerance `{spec}` is not `[<task or key>:]<atol>` (e.g. depth:0.02)") from None
        if atol < 0:
            raise StableMTLError(f"tolerance `{spec}` is negative")
        if key:
            out[key] = Tolerance(atol)
        else:
            default = Tolerance(atol)
    return out, default


def to_jsonable(results: Iterable[Comparison]) -> dict[str, dict[str, Any]]:
    return {r.key: r.to_dict() for r in results}


#: Margin over what calibration measured, and the smallest tolerance a recorded figure gives.
RECORDED_MARGIN, RECORDED_FLOOR = 2.0, 1e-3


def recorded_tolerances(recorded: Mapping[str, Mapping[str, Any]]) -> dict[str, Tolerance]:
    """Per key, twice the error recorded when the graphs were made (at least :data:`RECORDED_FLOOR`).

    int8 graphs are accepted by the accuracy gate on task metrics, not by an a-priori bound on pixels: a
    target re-checking them asks that they still compute what they computed then (another backend, a
    damaged file or a different kernel shows as an error beyond the margin).
    """
    out = {}
    for key, figures in recorded.items():
        out[key] = Tolerance(round_up(max(RECORDED_FLOOR, RECORDED_MARGIN * float(figures["max_abs"]))))
    return out


def round_up(x: float, digits: int = 2) -> float:
    """Round a tolerance up to two significant digits (readable, never below the measurement)."""
    if x <= 0:
        return 0.0
    scale = 10 ** (digits - 1 - math.floor(math.log10(x)))
    return math.ceil(x * scale) / scale


def default_comparator(
    precision: Precision,
    task_tolerances: Mapping[str, float] | None = None,
    overrides: Mapping[str, float] | None = None,
    recorded: Mapping[str, Mapping[str, Any]] | None = None,
) -> Comparator:
    """The parity tolerances of a precision, as export checks them and a target re-checks them.

    fp32 must match torch to 1e-3 on latents (the bound for the official size) and to a quarter of an
    8-bit level on decoded images in [-1, 1] (2e-3: the official-size decoder, 384x512 with random
    weights, differs by up to 1.2e-3 on single values, 2e-5 on average); features get a relative term
    because their magnitude grows with the model. fp16 graphs are compared with the fp32 torch model, so
    their bounds are those of half precision: they are recorded rather than tuned, and the decoded-image
    bound is what the runtime tolerance is derived from.

    Args:
        task_tolerances: the manifest's recorded end-to-end image tolerance per task (used where the
            precision sets none).
        overrides: a task key or a component name -> absolute tolerance replacing the recorded one.
        recorded: int8: the errors calibration measured per key (:meth:`Manifest.recorded_parity`); each
            key's tolerance is :func:`recorded_tolerances` of it. Without them int8 keeps a loose bound.
    """
    if precision is Precision.FP32:
        comparator = Comparator(
            {"feat": Tolerance(1e-3, 1e-3), "aux_feat": Tolerance(1e-3, 1e-3), "image": Tolerance(2e-3, 1e-4)},
            Tolerance(1e-3, 1e-4),
        )
    elif precision is Precision.FP16:
        comparator = Comparator(
            {"feat": Tolerance(5e-2, 2e-2), "image": Tolerance(1.5e-1), "e2e": Tolerance(1.5e-1)}, Tolerance(5e-2, 2e-2)
        )
    else:
        comparator = Comparator(recorded_tolerances(recorded or {}), Tolerance(1e-1, 5e-2))
    for name, atol in (overrides or {}).items():
        comparator.tolerances[name] = Tolerance(atol)  # a component prefix, or a task name in e2e keys
        for mode in Mode:
            for out in ("latent", "image"):
                comparator.tolerances[f"e2e/{mode.value}/{name}/{out}"] = Tolerance(atol)
    for task, atol in (task_tolerances or {}).items():
        for mode in Mode:
            comparator.tolerances.setdefault(f"e2e/{mode.value}/{task}/image", Tolerance(atol))
    return comparator
