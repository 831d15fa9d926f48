"""``stablemtl-eval``: score exported artifacts on a zero-shot benchmark or the procedural held-out split.

Prints a Markdown table, optionally writes JSON / Markdown files, the trivial-baseline floor and delta_m
against a previous result. Runs on any backend of :class:`stablemtl_edge.runtime.Runtime`.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

from ..errors import StableMTLError
from ..cli.parsers import parse_hw, positive_int
from ..cli.shell import HelpFormatter, add_artifact_args, run_cli, summary
from ..data.sample import Sample
from ..runtime.cli_args import add_runtime_args, runtime_options
from ..data.benchmarks import (
    CityscapesReader,
    DiodeReader,
    EvalCrop,
    Kitti2015Reader,
    KittiDepthReader,
    MidIntrinsicsReader,
)
from .delta_m import delta_m
from .evaluate import evaluate, fit_trivial_baseline
from .results import EvalResult
from ..records import KeyEnum

__all__ = ["BenchmarkName", "main", "open_samples"]


class BenchmarkName(KeyEnum):
    """Sample sets the CLI can evaluate on."""

    CITYSCAPES = "cityscapes"
    DIODE = "diode"
    KITTI_EIGEN = "kitti-eigen"
    KITTI2015 = "kitti2015"
    MID_INTRINSICS = "mid-intrinsics"
    PROCEDURAL = "procedural"


# Tasks each benchmark can label (KITTI 2015 scene flow needs --calib-root).
_BENCHMARK_TASKS = {
    BenchmarkName.CITYSCAPES: ("semantic",),
    BenchmarkName.DIODE: ("normal", "depth"),
    BenchmarkName.KITTI_EIGEN: ("depth",),
    BenchmarkName.KITTI2015: ("optical_flow", "scene_flow"),
    BenchmarkName.MID_INTRINSICS: ("albedo", "shading"),
}


class _FirstN(Sequence):
    """The first ``n`` samples of a sequence, loaded lazily (keeps the reader's one-frame-at-a-time)."""

    def __init__(self, samples: Sequence[Sample], n: int | None) -> None:
        self.samples = samples
        self.n = len(samples) if n is None else min(n, len(samples))

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i):  # type: ignore[override]
        if not 0 <= i < self.n:
            raise IndexError(i)
        return self.samples[i]

    def __iter__(self) -> Iterator[Sample]:
        for i in range(self.n):
            yield self.samples[i]


def _size(text: str | None) -> tuple[int, int] | None:
    return None if text is None else parse_hw(text, "--size", "256x512")


def _need(value, flag: str, benchmark: BenchmarkName):
    if value is None:
        raise StableMTLError(f"benchmark `{benchmark}` needs {flag}: see `stablemtl-eval --help`")
    return value


def open_samples(args: argparse.Namespace) -> tuple[Sequence[Sample], tuple[str, ...]]:
    """The sample sequence and the tasks it labels, from the parsed command line."""
    bench = BenchmarkName(args.benchmark)
    if bench is BenchmarkName.PROCEDURAL:
        from ..data.procedural import procedural_split  # numpy-only; imported only when asked

        size = _size(args.size) or (128, 160)
        source = procedural_split(args.split, args.domain, size=size, length=args.frames or 64)
        return _FirstN(source, len(source)), tuple(source.tasks)
    data = _need(args.data, "--data", bench)
    if bench is BenchmarkName.CITYSCAPES:
        reader = CityscapesReader(data, size=_size(args.size))
    elif bench is BenchmarkName.DIODE:
        reader = DiodeReader(data)
    elif bench is BenchmarkName.KITTI_EIGEN:
        split_file = _need(args.split_file, "--split-file", bench)
        reader = KittiDepthReader(split_file, data, args.depth_root, EvalCrop(args.crop))
    elif bench is BenchmarkName.KITTI2015:
        reader = Kitti2015Reader(data, args.calib_root)
    else:
        reader = MidIntrinsicsReader(data, args.split_file)
    tasks = _BENCHMARK_TASKS[bench]
    if bench is BenchmarkName.KITTI2015 and args.calib_root is None:
        tasks = ("optical_flow",)
    return _FirstN(reader, args.frames), tasks


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="stablemtl-eval",
        description=summary(__doc__),
        formatter_class=HelpFormatter,
    )
    add_artifact_args(p)
    g = p.add_argument_group("sample set")
    g.add_argument("--benchmark", required=True, choices=[b.value for b in BenchmarkName], help="what to evaluate on")
    g.add_argument("--data", type=Path, help="benchmark root (KITTI Eigen: raw recordings; KITTI 2015: `training`)")
    g.add_argument("--split-file", type=Path, help="KITTI Eigen test list; optional image list for MID Intrinsics")
    g.add_argument("--depth-root", type=Path, help="KITTI Eigen projected depth root (default: --data)")
    g.add_argument("--calib-root", type=Path, help="KITTI 2015 calibration `training` folder (enables scene flow)")
    crops = [c.value for c in EvalCrop]
    g.add_argument("--crop", default=EvalCrop.GARG.value, choices=crops, help="KITTI Eigen evaluation region")
    g.add_argument("--size", help="HxW: Cityscapes evaluation size (paper: 256x512); procedural image size")
    g.add_argument("--domain", default="driving", help="procedural domain: indoor, driving or flying")
    g.add_argument("--split", default="val", help="procedural split: val or test (never train)")
    g.add_argument("--frames", type=positive_int, help="evaluate the first N frames only (procedural: N frames, default 64)")
    add_runtime_args(p, stream=False)
    g = p.add_argument_group("evaluation")
    g.add_argument("--threads", type=positive_int, default=None, help="onnxruntime intra-op threads (default: all cores)")
    g = p.add_argument_group("output")
    g.add_argument("--json", type=Path, help="write the result here (JSON)")
    g.add_argument("--markdown", type=Path, help="write the Markdown table here")
    g.add_argument("--baseline", type=Path, help="a previous result JSON: report delta_m against it")
    g.add_argument("--trivial", action="store_true", help="also score constant predictions on the same frames")
    g.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return p


def labelled_tasks(spec: str, requested: Sequence[str], available: Sequence[str], benchmark: str) -> tuple[str, ...]:
    """The tasks to score: every labelled one for ``all``, else the requested ones, each of which must be labelled."""
    if str(spec).strip().lower() == "all":
        tasks = tuple(t for t in requested if t in available)
        if not tasks:
            raise StableMTLError(f"`{benchmark}` labels {', '.join(available)}, which the artifact does not serve")
        return tasks
    unlabelled = [t for t in requested if t not in available]
    if unlabelled:
        raise StableMTLError(
            f"`{benchmark}` labels {', '.join(available)}, not {', '.join(unlabelled)}: ask for labelled tasks "
            "or leave --tasks out to score all of them"
        )
    return tuple(requested)


def run(args: argparse.Namespace) -> str:
    """Evaluate and return the report text (Markdown)."""
    from ..runtime import Runtime  # the runtime is torch-free; imported here so `--help` stays instant

    if args.split == "train":
        raise StableMTLError("the procedural `train` split is what the model learnt from: evaluate on `val` or `test`")
    options = runtime_options(args)  # validated against the artifact before any frame is read
    samples, available = open_samples(args)
    tasks = labelled_tasks(args.tasks, options.tasks, available, args.benchmark)
    options = dataclasses.replace(options, tasks=tasks)
    name = args.benchmark
    if name == BenchmarkName.PROCEDURAL.value:
        name = f"{name}:{args.domain}:{args.split}"
    with Runtime.from_options(options, threads=args.threads) as rt:
        result = evaluate(rt, samples, tasks, benchmark=name, progress=not args.no_progress)
        info = {"artifacts": str(args.artifacts), "precision": rt.describe_precision(), "mode": rt.mode.value,
                "decoder": str(options.decoder)}
        info.update({f"runner.{k}": v for k, v in rt.describe().items()})
    report = []
    if args.baseline is not None:
        info["delta_m_vs"] = str(args.baseline)
        info["delta_m"] = f"{delta_m(result, args.baseline):.4f}"
    result = EvalResult(result.benchmark, result.tasks, info)
    report.append(result.to_markdown())
    if "delta_m" in info:
        report.append(f"delta_m vs `{args.baseline}`: {float(info['delta_m']):+.2f}%\n")
    if args.trivial:
        trivial = fit_trivial_baseline(samples)
        floor = evaluate(trivial, samples, tasks, benchmark=f"{name} (trivial baseline)", progress=False)
        report.append(floor.to_markdown())
        report.append(f"delta_m of the model vs the trivial baseline: {delta_m(result, floor):+.2f}%\n")
    text = "\n".join(report)
    if args.json is not None:
        result.save(args.json)
    if args.markdown is not None:
        from ..atomic import atomic_write_text

        atomic_write_text(args.markdown, text)
    return text


def main(argv: Sequence[str] | None = None) -> int:
    def body(args: argparse.Namespace) -> int:
        print(run(args))
        return 0

    return run_cli(body, build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
