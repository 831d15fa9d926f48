"""Benchmark: onnxruntime-CPU time over torch-eager time per component, on the same inputs.

``stablemtl-export bench -a DIR`` (or ``python -m stablemtl_edge.export.bench -a DIR``) times each fp32 graph of
an artifact in onnxruntime and the torch wrapper it was exported from (the checkpoint recorded in the
manifest), on the artifact's reference inputs, with the same thread count, and prints a Markdown table
(ratio = onnxruntime / torch; the goal is <= 0.7) and optionally writes JSON. Timing is a command, never
a test assertion.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ..errors import StableMTLError
from ..cli.parsers import positive_int
from ..cli.shell import HelpFormatter, add_artifact_args, run_cli, summary
from ..artifact.manifest import Manifest, Precision

__all__ = ["GOAL", "run_bench", "main"]

GOAL = 0.7


def _time(fn: Callable[[], Any], repeats: int) -> float:
    fn()  # warm-up: allocations, lazy initialisation
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def run_bench(
    directory: Path, json_path: Path | None = None, repeats: int = 5, threads: int = 2,
    say: Callable[[str], None] = lambda _: None,
) -> list[dict[str, Any]]:
    """Time every fp32 component; print the table; return (and optionally write) the rows."""
    import torch

    from ..config import ModelPreset
    from ..model.checkpoint import load_pretrained
    from .components import component_specs
    from ..artifact.references import ReferenceSet
    from .parity import OrtSessions, torch_runner

    manifest = Manifest.load(directory)
    checkpoint = manifest.source.get("checkpoint")
    if not checkpoint:
        raise StableMTLError(f"`{directory}` does not record its checkpoint; re-export it with this version")
    torch.set_num_threads(threads)
    model = load_pretrained(checkpoint)
    specs = component_specs(ModelPreset.from_dict(manifest.preset), manifest.mode, manifest.profile)
    reference = torch_runner(model, specs)
    ort_run = OrtSessions(directory, manifest.components[Precision.FP32], threads=threads)
    refs = ReferenceSet.load(directory, manifest)
    rows = []
    for component in specs:
        feeds, _ = refs.components[component]
        say(f"timing {component.value} (batch {next(iter(feeds.values())).shape[0]})")
        t_torch = _time(lambda: reference(component, feeds), repeats)
        t_ort = _time(lambda: ort_run(component, feeds), repeats)
        rows.append({
            "component": component.value,
            "batch": int(next(iter(feeds.values())).shape[0]),
            "torch_ms": t_torch * 1e3,
            "onnxruntime_ms": t_ort * 1e3,
            "ratio": t_ort / t_torch,
            "meets_goal": t_ort / t_torch <= GOAL,
        })
    print(f"| component | batch | torch eager ms | onnxruntime CPU ms | ratio (goal <= {GOAL}) |")
    print("|---|---|---|---|---|")
    for r in rows:
        mark = "" if r["meets_goal"] else " (above goal)"
        print(f"| {r['component']} | {r['batch']} | {r['torch_ms']:.1f} | {r['onnxruntime_ms']:.1f} | {r['ratio']:.2f}{mark} |")
    if json_path is not None:
        json_path.write_text(json.dumps({"threads": threads, "repeats": repeats, "rows": rows}, indent=2) + "\n")
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=summary(__doc__), formatter_class=HelpFormatter)
    add_artifact_args(parser)
    parser.add_argument("--json", default=None)
    parser.add_argument("--repeats", type=positive_int, default=5)
    parser.add_argument("--threads", type=positive_int, default=2)

    def body(args: argparse.Namespace) -> int:
        run_bench(args.artifacts, Path(args.json) if args.json else None, args.repeats, args.threads,
                  lambda m: print(m, file=sys.stderr))
        return 0

    return run_cli(body, parser, argv)


if __name__ == "__main__":
    sys.exit(main())
