"""Throughput benchmark of the procedural generator: labelled pairs per second on one core.

    python -m stablemtl_edge.data.bench --size 128x160 --count 100 --json bench.json

Each domain renders ``count`` consecutive samples of its training split with its official label set
(``--tasks all`` labels everything the domain can), ``repeat`` times. The process is pinned to one CPU
core by default, so the figure is per core. As with ``timeit``, the headline is the best pass (the least
disturbed by other processes on a shared machine); the median pass and CPU time are reported beside it.
Like ``stablemtl-train``, it keeps freed memory for reuse (:mod:`.allocator`; ``--system-malloc`` to
measure without). Prints a table and writes the same numbers as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Sequence

import numpy as np

from ..atomic import atomic_write_text
from ..errors import StableMTLError
from ..cli.parsers import nonnegative_int, parse_hw, positive_int
from ..cli.shell import HelpFormatter, run_cli
from .allocator import retain_freed_memory
from .procedural import AVAILABLE_TASKS, DOMAIN_TASKS, Domain, parse_domain, procedural_split

__all__ = ["main", "run_benchmark"]


def run_benchmark(domains: Sequence[Domain], size: tuple[int, int], count: int, repeat: int = 3,
                  warmup: int = 2, all_tasks: bool = False, progress: bool = True) -> list[dict]:
    """Render ``count`` samples per domain ``repeat`` times; one result row per domain."""
    from tqdm import tqdm

    rows = []
    for domain in domains:
        tasks = AVAILABLE_TASKS[domain] if all_tasks else DOMAIN_TASKS[domain]
        source = procedural_split("train", domain, size=size, length=count + warmup, tasks=tasks)
        for i in range(warmup):
            source[count + i]
        walls, cpus, valid = [], [], []
        bar = tqdm(total=count * repeat, desc=f"{domain}", file=sys.stderr, disable=not progress, leave=False)
        for _ in range(repeat):
            wall0, cpu0 = time.perf_counter(), time.process_time()
            for i in range(count):
                sample = source[i]
                valid.append(np.mean([lab.valid.mean() for lab in sample.labels.values()]))
                bar.update()
            walls.append(time.perf_counter() - wall0)
            cpus.append(time.process_time() - cpu0)
        bar.close()
        best, median = min(walls), float(np.median(walls))
        rows.append({
            "domain": domain.value,
            "tasks": list(tasks),
            "two_frames": any(t in ("optical_flow", "scene_flow") for t in tasks),
            "samples": count,
            "repeat": repeat,
            "wall_s_per_pass": walls,
            "cpu_s_per_pass": cpus,
            "pairs_per_s": count / best,
            "pairs_per_s_median_pass": count / median,
            "ms_per_pair": 1000 * best / count,
            "ms_per_pair_cpu_median": 1000 * float(np.median(cpus)) / count,
            "mean_valid_fraction": float(np.mean(valid)),
        })
    return rows


def _table(rows: list[dict], size: tuple[int, int]) -> str:
    head = (f"{'domain':<8} {'tasks':<48} {'pairs/s':>8} {'ms/pair':>8} {'pairs/s (median pass)':>22} "
            f"{'valid':>6}")
    lines = [f"procedural generator at {size[0]}x{size[1]}, one core", head, "-" * len(head)]
    for r in rows:
        lines.append(f"{r['domain']:<8} {','.join(r['tasks']):<48} {r['pairs_per_s']:>8.1f} {r['ms_per_pair']:>8.1f} "
                     f"{r['pairs_per_s_median_pass']:>22.1f} {r['mean_valid_fraction']:>6.2f}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m stablemtl_edge.data.bench",
        description="Measure how many labelled procedural samples per second one CPU core produces.",
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--size", default="128x160", help="image size HEIGHTxWIDTH")
    parser.add_argument("--domains", default="indoor,driving,flying", help="comma-separated procedural domains")
    parser.add_argument("--count", type=positive_int, default=100, help="samples rendered per domain")
    parser.add_argument("--repeat", type=positive_int, default=3, help="timed passes over the samples (best is reported)")
    parser.add_argument("--warmup", type=nonnegative_int, default=2, help="samples rendered first and not timed")
    parser.add_argument("--tasks", choices=("official", "all"), default="official",
                        help="label each domain's official task set or every task it can label")
    parser.add_argument("--json", default="procedural_bench.json", help="where to write the results")
    parser.add_argument("--no-pin", action="store_true", help="do not pin the process to one CPU core")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument("--system-malloc", action="store_true",
                        help="leave glibc's allocator at its defaults (freed arrays go back to the kernel)")
    return run_cli(_run, parser, argv)


def _run(args: argparse.Namespace) -> int:
    size = parse_hw(args.size, "--size", "128x160")
    if args.count < 1 or args.repeat < 1:
        raise StableMTLError(f"--count and --repeat must be >= 1, got {args.count} and {args.repeat}")
    domains = [parse_domain(d) for d in args.domains.split(",") if d.strip()]
    core = None
    if not args.no_pin and hasattr(os, "sched_setaffinity"):
        core = min(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {core})
    retained = False if args.system_malloc else retain_freed_memory()
    rows = run_benchmark(domains, size, args.count, args.repeat, args.warmup, args.tasks == "all", not args.quiet)
    print(_table(rows, size))
    report = {
        "size": list(size),
        "pinned_core": core,
        "retained_freed_memory": retained,
        "cpu_count": os.cpu_count(),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "results": rows,
    }
    atomic_write_text(args.json, json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
