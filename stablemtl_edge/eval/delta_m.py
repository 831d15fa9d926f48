"""Multi-task gain over a baseline: delta_m = (100 / T) * sum_t s_t * (M_t - B_t) / B_t.

s_t = +1 where higher is better and -1 where lower is better (the sign each metric carries in
:mod:`stablemtl_edge.eval.results`); by default one term per task, its main metric.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence

from ..errors import StableMTLError
from ..tasks import get_task
from .results import MAIN_METRIC, EvalResult, higher_is_better

__all__ = ["delta_m", "relative_changes"]


def delta_m(
    result: EvalResult,
    baseline: EvalResult | str | os.PathLike,
    metrics: Mapping[str, Sequence[str]] | None = None,
) -> float:
    """Relative gain of ``result`` over ``baseline`` in percent (positive = better).

    Args:
        result: the evaluated model.
        baseline: the reference, or the path of its JSON result file.
        metrics: task key -> metric names to include; None = the main metric of every task present in
            both results.

    Raises:
        StableMTLError: a requested task or metric is missing, or a baseline value is zero or NaN.
    """
    terms = relative_changes(result, baseline, metrics)
    return 100.0 * sum(terms.values()) / len(terms)


def relative_changes(
    result: EvalResult,
    baseline: EvalResult | str | os.PathLike,
    metrics: Mapping[str, Sequence[str]] | None = None,
) -> dict[tuple[str, str], float]:
    """``s_t * (M_t - B_t) / B_t`` per (task, metric), as fractions: positive = better than the baseline.

    What an accuracy gate reads per task (e.g. the distilled decoder against the full one); arguments and
    errors as :func:`delta_m`.
    """
    base = baseline if isinstance(baseline, EvalResult) else EvalResult.load(baseline)
    if metrics is None:
        shared = [k for k in result.tasks if k in base.tasks]
        if not shared:
            raise StableMTLError(
                f"no task in common between `{result.benchmark}` ({', '.join(result.tasks) or 'none'}) and the "
                f"baseline `{base.benchmark}` ({', '.join(base.tasks) or 'none'}): evaluate the same tasks"
            )
        metrics = {k: (MAIN_METRIC[k],) for k in shared}
    terms: dict[tuple[str, str], float] = {}
    for task, names in metrics.items():
        key = get_task(task).key
        for name in names:
            sign = 1.0 if higher_is_better(key, name) else -1.0
            m = result[key].scalars()[name]
            b = base[key].scalars()[name]
            if not math.isfinite(b) or b == 0.0 or not math.isfinite(m):
                raise StableMTLError(
                    f"cannot compute delta_m on {key}.{name}: model {m}, baseline {b} (the baseline must be a "
                    "finite non-zero number): drop this metric or re-run the evaluation"
                )
            terms[(key, name)] = sign * (m - b) / b
    return terms
