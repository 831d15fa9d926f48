"""``stablemtl-bench``: latency per stage, throughput and memory of the runtime, against the official schedule.

For every chosen (mode, backend, precision) it runs the runtime's schedule frame by frame and reports
per-stage latency percentiles (p50/p90/p99), frames per second, the runtime's own overhead outside model
calls, UNet rows per frame and peak RSS. As a baseline it runs the *official* schedule on the same
sessions: every task on its own, batch 1, its frames encoded again, 7 UNet passes per task in the
multi-stream model (6 auxiliary + 1 main) or 1 in the single-stream one, no sharing between tasks.
With ``--soak N`` it also streams N frames from a source twice as fast as inference (latest frame wins)
and reports p99 latency over mean service time and the slope of the resident memory.

Per component it reports the achieved FLOP/s (FLOPs per row, counted at export, times rows per frame over
time per frame) and its fraction of the machine's peak, measured in the same process by a one-second GEMM
probe through the same onnxruntime providers and threads (:mod:`.peak`), sampled again after each timed
frame: how far each component is from the limit. Beside it, the median over frames of the component's
rate over the GEMM rate of the same moment, which a shared machine's drifting load moves least. The decoder's rows per call (``--decoder-rows``: the backend's default, ``all`` or N) are shown,
and a list sweeps them.

The results are printed as Markdown tables and written as JSON. Nothing is asserted: this is a
measurement, its numbers depend on the machine.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import multiprocessing
import os
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import atomic_write_text
from ..errors import StableMTLError
from ..artifact.manifest import Component, Precision
from ..cli.parsers import nonnegative_float, nonnegative_int, parse_hw, parse_list, positive_int
from ..cli.shell import HelpFormatter, add_artifact_args, describe, run_cli
from .api import DECODER_ROWS_AUTO, Runtime, parse_decoder_rows
from .backends.base import Backend
from .backends.onnxruntime import OnnxRuntimeRunner
from .cli_args import add_runtime_args, options_label, runtime_option_grid
from .preprocess import Letterbox
from .official_schedule import OfficialSchedule
from .options import RuntimeOptions
from .peak import GemmProbe
from .sources import PatternSource, open_source
from .sinks import Sink, StreamItem
from .stream import DropPolicy, Stream

__all__ = [
    "BenchSettings",
    "bench_config",
    "config_label",
    "flop_rates",
    "flop_table",
    "gemm_probe",
    "soak",
    "current_rss_bytes",
    "peak_rss_bytes",
    "markdown",
    "main",
]

MODEL_STAGES = ("encoder", "unet", "unet_main", "decoder")
STAGES = ("preprocess",) + MODEL_STAGES + ("postprocess", "total")
_ROWS = ("encoder_rows", "unet_rows", "unet_main_rows", "decoder_rows")
_CALLS = ("encoder_calls", "unet_calls", "unet_main_calls", "decoder_calls")


# -- memory ------------------------------------------------------------------------------------------------------
def current_rss_bytes() -> int | None:
    """Resident set size of this process now (Linux ``/proc``; psutil elsewhere when installed)."""
    try:
        with open("/proc/self/statm", encoding="ascii") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError, AttributeError):
        pass
    try:
        import psutil
    except ImportError:
        return None
    return int(psutil.Process().memory_info().rss)


def peak_rss_bytes() -> int | None:
    """Peak resident set size of this process so far (``getrusage``; kilobytes on Linux, bytes on macOS)."""
    try:
        import resource
    except ImportError:
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak) if sys.platform == "darwin" else int(peak) * 1024


# -- the official schedule -----------------------------------------------------------------------------------------
# -- one configuration ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class BenchSettings:
    """What every configuration is measured on.

    Attributes:
        frames: timed frames per schedule.
        warmup: untimed frames first (session warm-up, allocator).
        size: frame size ``(H, W)``; None = the artifact's processing size.
        source: a source spec (:func:`.sources.open_source`) whose first frames are used, None = a test pattern.
        baseline: also time the official schedule.
        peak_seconds: time budget of the GEMM peak probe (0 = no probe: fractions of peak are n/a).
    """

    frames: int = 20
    warmup: int = 3
    size: tuple[int, int] | None = None
    source: str | None = None
    baseline: bool = True
    peak_seconds: float = 1.0


def _percentiles(values: Sequence[float]) -> dict[str, float]:
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        return {"mean": float("nan"), "p50": float("nan"), "p90": float("nan"), "p99": float("nan")}
    return {"mean": float(v.mean()), "p50": float(np.percentile(v, 50)), "p90": float(np.percentile(v, 90)),
            "p99": float(np.percentile(v, 99))}  # fmt: skip


def _frames(settings: BenchSettings, resolution: tuple[int, int], count: int) -> list[np.ndarray]:
    if settings.source is not None:
        src = open_source(settings.source, loop=True)
        with src:
            frames = []
            for frame in src:
                frames.append(frame.image)
                if len(frames) >= count:
                    break
        if not frames:
            raise StableMTLError(f"source `{settings.source}` gave no frames")
        return frames
    h, w = settings.size or resolution
    with PatternSource(h, w, frames=count) as src:
        return [f.image for f in src]


def config_label(options: RuntimeOptions, decoder_rows: int | str = DECODER_ROWS_AUTO) -> str:
    """:func:`.cli_args.options_label`, with ``+dec<N|all>`` when the decoder's rows per call were asked for."""
    rows = parse_decoder_rows(decoder_rows)
    return options_label(options) + ("" if rows == DECODER_ROWS_AUTO else f"+dec{rows}")


def gemm_probe(rt: Runtime, seconds: float) -> tuple[GemmProbe | None, str]:
    """The GEMM probe through the runtime's own onnxruntime providers and threads, run for ``seconds``; or
    None and why not."""
    if seconds <= 0:
        return None, "no GEMM probe (--peak-seconds 0)"
    runner = rt.runners[Component.ENCODER]
    if not isinstance(runner, OnnxRuntimeRunner):
        return None, f"no GEMM probe for the {rt.backend.value} backend (onnxruntime only)"
    probe = GemmProbe(runner.providers, runner.threads)
    probe.run_for(seconds)
    return probe, ""


def flop_rates(rt: Runtime, stages: Mapping[str, Sequence[float]], rows: Mapping[str, float],
               calls: Mapping[str, float], peaks: Mapping[str, Mapping[str, Any]],
               gemm: Sequence[Mapping[str, float]]) -> dict[str, dict[str, Any]]:
    """Per component: FLOPs per row (from the manifest), rows per frame and call, achieved FLOP/s, its
    fraction of the probe's peak in the component's precision (fp32's when that precision was not probed),
    and the median over frames of its rate in the frame over the GEMM rate sampled right after it (the
    figure a drifting load on a shared machine moves least)."""
    out = {}
    for slot, runner in rt.runners.items():
        entry = runner.entry
        flops = entry.flops_per_row if entry.flops_per_row is not None else rt.manifest.flops_per_row(entry.component)
        times, n = np.asarray(stages[slot.value], dtype=np.float64) * 1e-3, rows[f"{slot.value}_rows"]
        ms = float(times.mean()) * 1e3
        counted = flops is not None and n > 0 and bool(np.all(times > 0))
        achieved = flops * n / (ms * 1e-3) if counted else None
        key = entry.precision.value if entry.precision.value in peaks else Precision.FP32.value
        peak = peaks.get(key, {}).get("flops_per_s")
        same = None
        if counted and peak is not None and len(gemm) == len(times):
            same = float(np.median(flops * n / times / np.array([g[key] for g in gemm])))
        out[slot.value] = {
            "graph": entry.component.value,
            "precision": entry.precision.value,
            "flops_per_row": flops,
            "rows_per_frame": n,
            "rows_per_call": n / c if (c := calls[f"{slot.value}_calls"]) else None,
            "ms_per_frame": ms,
            "achieved_flops_per_s": achieved,
            "peak_precision": key if peak is not None else None,
            "fraction_of_peak": achieved / peak if achieved is not None and peak else None,
            "fraction_of_gemm_same_moment": same,
        }
    return out


def bench_config(options: RuntimeOptions, settings: BenchSettings,
                 decoder_rows: int | str = DECODER_ROWS_AUTO) -> dict[str, Any]:
    """Measure one configuration in this process; returns a JSON-ready record."""
    rss0 = current_rss_bytes()
    with Runtime.from_options(options, decoder_rows=decoder_rows) as rt:
        probe, peak_note = gemm_probe(rt, settings.peak_seconds)
        gemm: list[dict[str, float]] = []  # GEMM rates sampled after each timed frame
        frames = _frames(settings, rt.resolution, settings.warmup + settings.frames)
        n = len(frames)
        ours: dict[str, list[float]] = {s: [] for s in STAGES}
        wall: list[float] = []
        rows_before: dict[str, int] = {}
        for i in range(settings.warmup + settings.frames):
            if i == settings.warmup:
                rows_before = rt.counters
            start = time.perf_counter()
            res = rt.infer(frames[i % n])
            elapsed = (time.perf_counter() - start) * 1e3
            if i >= settings.warmup:
                wall.append(elapsed)
                for s in STAGES:
                    ours[s].append(res.timings_ms.get(s, 0.0))
                if probe is not None:
                    gemm.append(probe.sample())
        counted = rt.counters
        peaks = {p: g.to_dict() for p, g in probe.peaks().items()} if probe is not None else {}
        if probe is not None:
            peak_note = ", ".join(f"{p} {g['flops_per_s'] / 1e9:.0f} GFLOP/s ({g['provider']}, {g['n']}x{g['n']}, "
                                  f"best of {g['calls']})" for p, g in peaks.items())
        rows = {k: (counted[k] - rows_before[k]) / settings.frames for k in _ROWS}
        calls = {k: (counted[k] - rows_before[k]) / settings.frames for k in _CALLS}
        stages_ms = {s: _percentiles(ours[s]) for s in STAGES}
        model = [sum(ours[s][j] for s in MODEL_STAGES) for j in range(settings.frames)]
        overhead = [t - m for t, m in zip(ours["total"], model)]
        record: dict[str, Any] = {
            "config": config_label(options, decoder_rows),
            "mode": rt.mode.value,
            "backend": rt.backend.value,
            "precision": rt.precision.value,
            "precision_set": rt.describe_precision(),
            "component_precisions": rt.component_precisions(),
            "tasks": list(rt.tasks),
            "engines": rt.describe(),
            "fallbacks": rt.fallbacks(),
            "frame_hw": list(frames[0].shape[:2]),
            "resolution": list(rt.resolution),
            "frames": settings.frames,
            "stages_ms": stages_ms,
            "wall_ms": _percentiles(wall),
            "fps": 1e3 / float(np.mean(wall)),
            "overhead_ms": _percentiles(overhead),
            "overhead_pct": 100.0 * float(np.mean(overhead)) / float(np.mean(ours["total"])),
            "rows_per_frame": rows,
            "calls_per_frame": calls,
            "decoder_rows_per_call": rt.decoder_rows,  # None: all of a frame's rows in one call
            "decoder_batching": rt.decoder_batching,
            "gemm_peak": peaks,
            "gemm_peak_note": peak_note,
            "flops": flop_rates(rt, ours, rows, calls, peaks, gemm),
        }
        if settings.baseline:
            official = OfficialSchedule(rt)
            prep = float(np.mean(ours["preprocess"])) + float(np.mean(ours["postprocess"]))
            boxes: dict[tuple[int, int], Letterbox] = {}
            net = []
            for f in frames:
                box = boxes.setdefault(f.shape[:2], Letterbox.fit(f.shape[:2], rt.resolution))
                net.append(box.apply(f))
            times: dict[str, list[float]] = {s: [] for s in MODEL_STAGES}
            model_total = []
            for i in range(settings.warmup + settings.frames):
                if i == settings.warmup:
                    official.counters = dict.fromkeys(_ROWS, 0)
                t: dict[str, float] = {}
                official.run(net[i % n], net[(i - 1) % n] if i > 0 else None, t)
                if i >= settings.warmup:
                    for s in MODEL_STAGES:
                        times[s].append(t.get(s, 0.0))
                    model_total.append(sum(t.values()))
            # Pre/post-processing (letterbox, decoding, resizing back) is the same work in both schedules.
            official_total = [m + prep for m in model_total]
            record["official"] = {
                "stages_ms": {s: _percentiles(times[s]) for s in MODEL_STAGES},
                "total_ms": _percentiles(official_total),
                "rows_per_frame": {k: v / settings.frames for k, v in official.counters.items()},
            }
            record["ratio_vs_official"] = float(np.mean(ours["total"])) / float(np.mean(official_total))
    record["rss_mb"] = {
        "before": rss0 / 2**20 if rss0 is not None else None,
        "peak": (p / 2**20) if (p := peak_rss_bytes()) is not None else None,
    }
    return record


# -- streaming soak ---------------------------------------------------------------------------------------------
class _RssProbe(Sink):
    """Samples RSS every ``every`` written frames (on the output thread)."""

    def __init__(self, every: int) -> None:
        self.every = every
        self.samples: list[tuple[int, int]] = []  # (processed frame count, rss bytes)
        self._n = 0

    def write(self, item: StreamItem) -> None:
        self._n += 1
        if self._n % self.every == 0 and (rss := current_rss_bytes()) is not None:
            self.samples.append((self._n, rss))


def soak(
    options: RuntimeOptions, frames: int, size: tuple[int, int] | None = None, calibrate: int = 10
) -> dict[str, Any]:
    """Stream ``frames`` frames from a test pattern paced at twice the inference rate, latest frame wins.

    Args:
        options: the configuration to run.
        frames: frames the source produces (about half are processed, the rest dropped).
        size: frame size, None = the artifact's processing size.
        calibrate: frames inferred first, on the same runtime after two warm-up frames, whose median time
            sets the source's rate (``2 * 1000 / median_ms`` fps).

    Returns:
        Counts, latency percentiles, p99 latency over mean service time, and the RSS slope (MB per 1,000
        processed frames, least squares over the second half of the run, after warm-up).
    """
    probe = _RssProbe(every=10)
    with Runtime.from_options(options) as rt:
        h, w = size or rt.resolution
        with PatternSource(h, w, frames=2 + calibrate) as src:
            times = []
            for f in src:
                start = time.perf_counter()
                rt.infer(f.image)
                times.append((time.perf_counter() - start) * 1e3)
        times = times[2:]  # the first calls of a session allocate and are slow
        rt.reset()
        pace = 2.0 * 1e3 / float(np.median(times))
        stream = Stream(PatternSource(h, w), rt, [probe], policy=DropPolicy.LATEST, pace_fps=pace, max_frames=frames)
        stats = stream.run()
    slope = None
    half = probe.samples[len(probe.samples) // 2 :]
    if len(half) >= 3:
        x = np.array([s[0] for s in half], dtype=np.float64)
        y = np.array([s[1] for s in half], dtype=np.float64) / 2**20
        slope = float(np.polyfit(x, y, 1)[0] * 1000.0)
    return {
        "config": options_label(options),
        "source_fps": pace,
        **stats.to_dict(),
        "p99_over_service": stats.latency_p99_ms / stats.service_mean_ms,
        "rss_mb_first": probe.samples[0][1] / 2**20 if probe.samples else None,
        "rss_mb_last": probe.samples[-1][1] / 2**20 if probe.samples else None,
        "rss_slope_mb_per_1000_frames": slope,
    }


# -- report ------------------------------------------------------------------------------------------------
def _fmt(x: Any, spec: str = ".1f") -> str:
    return "-" if x is None or (isinstance(x, float) and not np.isfinite(x)) else format(x, spec)


def markdown(results: Sequence[Mapping[str, Any]], soak_result: Mapping[str, Any] | None = None) -> str:
    """The results as Markdown tables: summary, per-stage percentiles, and the soak."""
    lines = [
        "| config | tasks | frame | ms/frame p50 / p90 / p99 | fps | overhead ms (%) | UNet rows/frame | "
        "official ms/frame | official UNet rows | ours / official | peak RSS MB |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    mixed = [r for r in results if r.get("precision_set", r["precision"]) != r["precision"]]
    for r in results:
        w = r["wall_ms"]
        rows = r["rows_per_frame"]["unet_rows"] + r["rows_per_frame"]["unet_main_rows"]
        off = r.get("official")
        off_rows = off["rows_per_frame"]["unet_rows"] + off["rows_per_frame"]["unet_main_rows"] if off else None
        lines.append(
            f"| {r['config']} | {len(r['tasks'])} | {r['frame_hw'][0]}x{r['frame_hw'][1]} | "
            f"{_fmt(w['p50'])} / {_fmt(w['p90'])} / {_fmt(w['p99'])} | {_fmt(r['fps'], '.2f')} | "
            f"{_fmt(r['overhead_ms']['mean'], '.2f')} ({_fmt(r['overhead_pct'], '.1f')}%) | {_fmt(rows, 'g')} | "
            f"{_fmt(off['total_ms']['mean']) if off else '-'} | {_fmt(off_rows, 'g')} | "
            f"{_fmt(r.get('ratio_vs_official'), '.3f')} | {_fmt(r['rss_mb']['peak'], '.0f')} |"
        )
    # A precision set that is not what its name says (an int8 set with fp16 fallbacks) is spelled out.
    lines += [""] + [f"{r['config']}: {r['precision_set']}" for r in mixed] if mixed else []
    lines += [""] + [f"{r['config']}: decoder {r['decoder_batching']}" for r in results if "decoder_batching" in r]
    lines += flop_table(results)
    lines += ["", "| config | stage | p50 ms | p90 ms | p99 ms |", "|---|---|---|---|---|"]
    for r in results:
        for s in STAGES:
            p = r["stages_ms"][s]
            if s in MODEL_STAGES and p["p99"] == 0.0:
                continue  # a stage this mode does not run
            cells = " | ".join(_fmt(p[q], ".2f") for q in ("p50", "p90", "p99"))
            lines.append(f"| {r['config']} | {s} | {cells} |")
    if soak_result is not None:
        s = soak_result
        lines += [
            "",
            "| soak config | source fps | captured | processed | dropped | latency p50 / p99 ms | mean service ms | "
            "p99 / service | RSS first -> last MB | RSS slope MB/1000 frames |",
            "|---|---|---|---|---|---|---|---|---|---|",
            f"| {s['config']} | {_fmt(s['source_fps'], '.1f')} | {s['captured']} | {s['processed']} | {s['dropped']} | "
            f"{_fmt(s['latency_p50_ms'])} / {_fmt(s['latency_p99_ms'])} | {_fmt(s['service_mean_ms'])} | "
            f"{_fmt(s['p99_over_service'], '.2f')} | "
            f"{_fmt(s['rss_mb_first'], '.0f')} -> {_fmt(s['rss_mb_last'], '.0f')} | "
            f"{_fmt(s['rss_slope_mb_per_1000_frames'], '.2f')} |",
        ]
    return "\n".join(lines)


def flop_table(results: Sequence[Mapping[str, Any]]) -> list[str]:
    """Per component: GFLOP per row, rows per frame and call, achieved GFLOP/s and its fraction of the peak
    (n/a where the artifact records no FLOPs or no probe ran), then each configuration's probe."""
    lines = ["", "| config | component | GFLOP/row | rows/frame | rows/call | ms/frame | GFLOP/s | fraction of peak | "
             "of GEMM, same moment |", "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        for slot, f in r.get("flops", {}).items():
            name = slot if f["graph"] == slot else f"{slot} ({f['graph']})"
            per_row = f["flops_per_row"] / 1e9 if f["flops_per_row"] is not None else None
            rate = f["achieved_flops_per_s"] / 1e9 if f["achieved_flops_per_s"] is not None else None
            share = (f"{f['fraction_of_peak']:.2f} of {f['peak_precision']}" if f["fraction_of_peak"] is not None
                     else "n/a")
            same = f["fraction_of_gemm_same_moment"]
            lines.append(
                f"| {r['config']} | {name} | {_fmt(per_row, '.3g') if per_row is not None else 'n/a'} | "
                f"{_fmt(f['rows_per_frame'], 'g')} | {_fmt(f['rows_per_call'], '.3g')} | "
                f"{_fmt(f['ms_per_frame'], '.2f')} | {_fmt(rate, '.1f') if rate is not None else 'n/a'} | {share} | "
                f"{_fmt(same, '.2f') if same is not None else 'n/a'} |"
            )
    notes = [f"{r['config']}: GEMM peak {r['gemm_peak_note']}" for r in results if "gemm_peak_note" in r]
    return lines + ([""] + notes if notes else [])


def _isolated(options: RuntimeOptions, settings: BenchSettings, decoder_rows: int | str) -> dict[str, Any]:
    """Run :func:`bench_config` in a fresh process, so its peak RSS is its own."""
    ctx = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=ctx) as pool:
        return pool.submit(bench_config, options, settings, decoder_rows).result()


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="stablemtl-bench", description=describe(__doc__),
                                formatter_class=HelpFormatter)  # fmt: skip
    add_artifact_args(p)
    add_runtime_args(p, multiple=True)
    b = p.add_argument_group("benchmark")
    b.add_argument("--frames", type=positive_int, default=20, help="timed frames per configuration and schedule")
    b.add_argument("--warmup", type=nonnegative_int, default=3, help="untimed frames first")
    b.add_argument("--size", default=None, metavar="HxW", help="frame size (default: the artifact's resolution)")
    b.add_argument(
        "--source", default=None, help="take frames from this source (video, folder...) instead of a test pattern"
    )
    b.add_argument("--no-baseline", action="store_true", help="skip the official schedule")
    b.add_argument(
        "--decoder-rows", default=DECODER_ROWS_AUTO, metavar="LIST",
        help="comma-separated rows per decoder call to sweep: `auto` (the backend's default: 1 on onnxruntime's "
             "CPU provider, all of a frame's rows elsewhere), `all` (one call) or N; `1,all` times both",
    )  # fmt: skip
    b.add_argument(
        "--peak-seconds", type=nonnegative_float, default=1.0, metavar="S",
        help="time budget of the GEMM peak probe each configuration's fraction of peak is measured against "
             "(0 = no probe)",
    )  # fmt: skip
    b.add_argument("--no-isolate", action="store_true",
                   help="measure every configuration in this process (peak RSS is then cumulative)")  # fmt: skip
    b.add_argument(
        "--soak", type=nonnegative_int, default=0, metavar="N",
        help="also stream N frames of a source twice as fast as inference (first configuration)",
    )  # fmt: skip
    b.add_argument("--json", type=Path, default=None, help="also write the results here (JSON)")
    b.add_argument("--markdown", type=Path, default=None, help="also write the tables to this file")
    return p


def _parse_size(text: str | None) -> tuple[int, int] | None:
    return None if text is None else parse_hw(text, "--size", "375x1242")


def _bench(args: argparse.Namespace) -> int:
    if args.frames < 1 or args.warmup < 0 or args.soak < 0:
        raise StableMTLError("--frames must be >= 1, --warmup and --soak >= 0")
    settings = BenchSettings(args.frames, args.warmup, _parse_size(args.size), args.source, not args.no_baseline,
                             args.peak_seconds)
    decoder_rows = [parse_decoder_rows(v) for v in parse_list(args.decoder_rows)] or [DECODER_ROWS_AUTO]
    grid = [(o, d) for o in runtime_option_grid(args) for d in decoder_rows]
    if any(o.backend is Backend.TRITON for o, _ in grid):  # its components run on the server, out of sight
        raise StableMTLError("stablemtl-bench times each component in this process; for a Triton server use "
                             "`python -m stablemtl_edge.serving.load_bench --artifacts DIR --url HOST:PORT`")
    results = []
    for i, (options, rows) in enumerate(grid, 1):
        print(f"[{i}/{len(grid)}] {config_label(options, rows)}: {settings.frames} frames"
              f"{' + official schedule' if settings.baseline else ''}", file=sys.stderr, flush=True)  # fmt: skip
        results.append(bench_config(options, settings, rows) if args.no_isolate
                       else _isolated(options, settings, rows))
    soak_result = None
    if args.soak:
        print(
            f"soak: {args.soak} frames at twice the inference rate ({options_label(grid[0][0])})",
            file=sys.stderr, flush=True,
        )  # fmt: skip
        soak_result = soak(grid[0][0], args.soak, settings.size)
    table = markdown(results, soak_result)
    print(table)
    if args.json is not None:
        atomic_write_text(args.json, json.dumps({"results": results, "soak": soak_result}, indent=2) + "\n")
        print(f"wrote {args.json}", file=sys.stderr)
    if args.markdown is not None:
        atomic_write_text(args.markdown, table + "\n")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(_bench, build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
