"""Load benchmark of a Triton server's ``stablemtl`` model: 1..N concurrent camera streams against the
in-process runtime on the same frames.

    python -m stablemtl_edge.serving.load_bench --artifacts DIR --url HOST:8001 --clients 1,2,4 --json load.json

Each client is one camera stream (its own runtime, so its own Triton sequence) that sends its frames as
fast as the answers come back; all clients start together. Per client count it reports throughput, the
latency percentiles over every frame of every client, the worst client's p99 / p50 (starvation shows as a
large ratio) and the server's own stage time per frame; the in-process runtime on the same frames gives the
server's overhead. The count of frames bounds each level and ``--max-seconds`` its time. Prints a Markdown
table and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import atomic_write_text
from ..cli.parsers import parse_list, positive_float, positive_int
from ..cli.shell import HelpFormatter, add_artifact_args, describe, run_cli
from ..errors import StableMTLError
from ..runtime.api import Runtime
from ..runtime.backends.triton import parse_url

__all__ = ["main", "run_load", "latency_summary"]

_SERVER_STAGES = ("encoder", "unet", "unet_main", "decoder")


def latency_summary(ms: Sequence[float]) -> dict[str, float]:
    v = np.asarray(ms, np.float64)
    if v.size == 0:
        return {"n": 0, "mean": float("nan"), "p50": float("nan"), "p99": float("nan")}
    return {"n": int(v.size), "mean": float(v.mean()), "p50": float(np.percentile(v, 50)),
            "p99": float(np.percentile(v, 99))}


def _frames(n: int, shape: tuple[int, int], seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (*shape, 3), dtype=np.uint8) for _ in range(n)]


def _stream(rt: Runtime, images: Sequence[np.ndarray], warmup: int, deadline: float) -> tuple[list[float], list[float]]:
    """(client ms per frame, server stage ms per frame) after ``warmup`` untimed frames."""
    wall, server = [], []
    for i, image in enumerate(images):
        if time.monotonic() > deadline:
            break
        start = time.perf_counter()
        result = rt.infer(image)
        if i >= warmup:
            wall.append((time.perf_counter() - start) * 1e3)
            server.append(sum(result.timings_ms.get(s, 0.0) for s in _SERVER_STAGES))
    return wall, server


def run_load(artifact: Path, url: str, clients: Sequence[int], frames: int, tasks: str, mode: str | None,
             warmup: int = 2, max_seconds: float = 60.0) -> dict[str, Any]:
    """The benchmark's record: ``in_process`` and one entry per client count."""
    probe = Runtime.from_artifacts(artifact, tasks=tasks, mode=mode, backend="onnxruntime")
    shape = probe.resolution
    with probe:
        wall, stages = _stream(probe, _frames(frames + warmup, shape, 0), warmup, time.monotonic() + max_seconds)
    record: dict[str, Any] = {
        "artifact": str(artifact), "url": url, "tasks": tasks, "mode": mode or "artifact", "frames": frames,
        "frame_hw": list(shape), "in_process": {**latency_summary(wall), "stage_ms": latency_summary(stages)},
        "levels": [],
    }
    for n in clients:
        runtimes = [Runtime.from_artifacts(artifact, tasks=tasks, mode=mode, backend="triton", url=url) for _ in range(n)]
        per_client: list[tuple[list[float], list[float]]] = [([], [])] * n
        barrier = threading.Barrier(n + 1)
        errors: list[BaseException] = []

        def client(i: int) -> None:
            try:
                images = _frames(frames + warmup, shape, 100 + i)
                barrier.wait()
                per_client[i] = _stream(runtimes[i], images, warmup, time.monotonic() + max_seconds)
            except BaseException as e:  # noqa: BLE001  # re-raised below on the main thread
                errors.append(e)

        threads = [threading.Thread(target=client, args=(i,)) for i in range(n)]
        for t in threads:
            t.start()
        barrier.wait()
        start = time.perf_counter()
        for t in threads:
            t.join()
        elapsed = time.perf_counter() - start
        for rt in runtimes:
            rt.close()
        if errors:
            raise errors[0]
        walls = [ms for w, _ in per_client for ms in w]
        servers = [ms for _, s in per_client for ms in s]
        ratios = [latency_summary(w)["p99"] / latency_summary(w)["p50"] for w, _ in per_client if w]
        record["levels"].append({
            "clients": n, **latency_summary(walls), "fps": (len(walls) + warmup * n) / elapsed,
            "worst_p99_over_p50": max(ratios) if ratios else float("nan"),
            "server_stage_ms": latency_summary(servers),
            "overhead_ms_p50": latency_summary(walls)["p50"] - record["in_process"]["p50"],
        })
    return record


def table(record: dict[str, Any]) -> str:
    base = record["in_process"]
    lines = [f"in-process: p50 {base['p50']:.1f} ms, p99 {base['p99']:.1f} ms ({base['n']} frames, "
             f"{record['frame_hw'][0]}x{record['frame_hw'][1]}, tasks {record['tasks']}, mode {record['mode']})", "",
             "| clients | fps | p50 ms | p99 ms | worst client p99/p50 | server stages p50 ms | p50 / in-process |",
             "|---|---|---|---|---|---|---|"]
    for lv in record["levels"]:
        lines.append(f"| {lv['clients']} | {lv['fps']:.1f} | {lv['p50']:.1f} | {lv['p99']:.1f} | "
                     f"{lv['worst_p99_over_p50']:.2f} | {lv['server_stage_ms']['p50']:.1f} | "
                     f"{lv['p50'] / base['p50']:.2f}x |")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m stablemtl_edge.serving.load_bench", description=describe(__doc__),
                                formatter_class=HelpFormatter)
    add_artifact_args(p)
    p.add_argument("--url", required=True, help="the server: HOST:PORT (gRPC) or http://HOST:PORT")
    p.add_argument("--clients", default="1,2,4", help="comma-separated concurrent stream counts")
    p.add_argument("--frames", type=positive_int, default=30, help="timed frames per client and level")
    p.add_argument("--warmup", type=positive_int, default=2, help="untimed frames per client before timing")
    p.add_argument("--tasks", default="all", help="tasks every stream asks for")
    p.add_argument("--mode", default=None, help="single or multi (default: the artifact's mode)")
    p.add_argument("--max-seconds", type=positive_float, default=60.0, help="time bound per level")
    p.add_argument("--json", type=Path, default=None, help="write the record here")
    return p


def _run(args: argparse.Namespace) -> int:
    parse_url(args.url)
    clients = [positive_int(c) for c in parse_list(args.clients)]
    if not clients:
        raise StableMTLError("--clients needs at least one count, e.g. 1,2,4")
    record = run_load(args.artifacts, args.url, clients, args.frames, args.tasks, args.mode, args.warmup,
                      args.max_seconds)
    print(table(record))
    if args.json is not None:
        atomic_write_text(args.json, json.dumps(record, indent=2) + "\n")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(_run, build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
