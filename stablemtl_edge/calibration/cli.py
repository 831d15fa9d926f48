"""``stablemtl-calibrate``: int8 QDQ graphs for an exported artifact, checked by a per-task accuracy gate.

Examples::

    stablemtl-calibrate -a artifacts/small --calib-data procedural --calib-size 16
    stablemtl-calibrate -a artifacts/small --calib-data drive.mp4 --calib-size 64 --method entropy \\
        --gate-threshold 0.02 --gate-threshold depth:0.05 --on-gate-fail error
    stablemtl-calibrate -a artifacts/small --gate-frames 48 --gate-max-frames 192
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from ..errors import StableMTLError
from ..cli.parsers import nonnegative_int, percentile, positive_int
from ..cli.shell import HelpFormatter, add_artifact_args, run_cli, summary
from ..artifact.manifest import Component, QdqTarget
from .calibrate import DEFAULT_MIXED_TRIES, calibrate_artifact
from .exclusions import DEFAULT_RULES
from .gate import (
    DEFAULT_GATE_FRAMES,
    DEFAULT_GATE_MAX_FRAMES,
    DEFAULT_THRESHOLD,
    GateOptions,
    GateThresholds,
    OnGateFail,
)
from .quantize import CalibMethod, QuantizeOptions

__all__ = ["build_parser", "main", "gate_samples_from_benchmark"]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="stablemtl-calibrate",
        description=summary(__doc__),
        formatter_class=HelpFormatter,
    )
    add_artifact_args(p)  # its fp32 graphs are what is quantized
    g = p.add_argument_group("calibration data")
    g.add_argument("--calib-data", default="procedural",
                   help="`procedural`, an image folder, a video file or a ROS 2 bag (directory, .mcap or .db3)")
    g.add_argument("--calib-size", type=positive_int, default=16,
                   help="consecutive frame pairs (t, t+1) drawn evenly from the source (needs N+1 frames)")
    g.add_argument("--topic", help="image topic of a bag with several")
    g.add_argument("--seed", type=nonnegative_int, default=0, help="sampling seed (same seed and data: same frames)")
    g.add_argument("--tasks", default="all", help="tasks run during calibration and scored by the gate")
    q = p.add_argument_group("quantization")
    q.add_argument("--method", default=CalibMethod.MINMAX.value, choices=[m.value for m in CalibMethod],
                   help="activation range calibration")
    q.add_argument("--percentile", type=percentile, default=99.999, help="clipping percentile of --method percentile")
    q.add_argument("--target", default=QdqTarget.TENSORRT.value, choices=QdqTarget.choices(),
                   help="the runtime the Q/DQ placement is for: tensorrt (symmetric int8 on layer inputs, what a "
                        "TensorRT engine build wants) or onnxruntime (uint8 activations and Q/DQ on Conv outputs, "
                        "which onnxruntime's CPU provider fuses into int8 kernels; TensorRT refuses it)")
    q.add_argument("--components", default=None,
                   help="comma-separated components to quantize (default: every component of the artifact, the "
                        f"distilled decoder included; choose among {', '.join(c.value for c in Component)})")
    rules = ", ".join(r.key for r in DEFAULT_RULES)
    q.add_argument("--exclude", action="append", default=[], metavar="PATTERN",
                   help="keep nodes matching this name or shell glob in floating point (repeatable), "
                        "e.g. '*/mid_block/*'")
    q.add_argument("--quantize", action="append", default=[], metavar="RULE|PATTERN",
                   help=f"drop a default exclusion rule ({rules}) or force matching nodes into int8 (repeatable)")
    q.add_argument("--no-default-exclusions", action="store_true",
                   help="quantize every Conv/MatMul/Gemm except those given with --exclude")
    a = p.add_argument_group("accuracy gate")
    a.add_argument("--gate-threshold", action="append", default=[], metavar="[TASK:]REL",
                   help=f"allowed relative change of a task's main metric against fp32 (default {DEFAULT_THRESHOLD}; "
                        "repeatable, e.g. 0.02 and depth:0.05)")
    a.add_argument("--on-gate-fail", default=OnGateFail.FALLBACK.value, choices=[o.value for o in OnGateFail],
                   help="fallback: leave failing components at fp16; error: fail and leave the manifest unchanged")
    a.add_argument("--gate-frames", type=positive_int, default=DEFAULT_GATE_FRAMES,
                   help="held-out frames judged first, and added at a time while a task's bootstrap interval "
                        "straddles its threshold")
    a.add_argument("--gate-max-frames", type=positive_int, default=DEFAULT_GATE_MAX_FRAMES,
                   help="the most held-out frames a verdict may use; an interval still straddling the threshold "
                        "there is inconclusive, which counts as not passed (the component stays at fp16)")
    a.add_argument("--mixed-tries", type=nonnegative_int, default=DEFAULT_MIXED_TRIES,
                   help="gate runs per failing component for the mixed-precision search, which keeps its most "
                        "sensitive blocks in floating point one more per try (0: a failing component goes to fp16)")
    a.add_argument("--gate-benchmark", help="score on a labelled benchmark instead (a stablemtl-eval benchmark name)")
    a.add_argument("--gate-data", type=Path, help="root of --gate-benchmark")
    p.add_argument("--threads", type=positive_int, help="onnxruntime intra-op threads (default: all cores)")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    return p


def gate_samples_from_benchmark(artifacts: Path, benchmark: str, data: Path | None, frames: int):
    """Labelled samples of a ``stablemtl-eval`` benchmark, opened by the evaluation CLI's own code."""
    from ..eval.cli import build_parser as eval_parser
    from ..eval.cli import open_samples

    argv = ["--artifacts", str(artifacts), "--benchmark", benchmark, "--frames", str(frames)]
    if data is not None:
        argv += ["--data", str(data)]
    try:
        args = eval_parser().parse_args(argv)
    except SystemExit:
        raise StableMTLError(f"unknown --gate-benchmark `{benchmark}`: see `stablemtl-eval --help`") from None
    samples, _ = open_samples(args)
    return samples


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(_calibrate, build_parser(), argv)


def _calibrate(args: argparse.Namespace) -> int:
    options = QuantizeOptions(
        method=args.method, percentile=args.percentile, target=args.target, exclude=tuple(args.exclude),
        quantize=tuple(args.quantize), default_exclusions=not args.no_default_exclusions,
    )
    thresholds = GateThresholds.parse(args.gate_threshold)
    gate = GateOptions(frames=args.gate_frames, max_frames=args.gate_max_frames)
    samples = None
    if args.gate_benchmark:
        samples = gate_samples_from_benchmark(args.artifacts, args.gate_benchmark, args.gate_data, gate.max_frames)
    result = calibrate_artifact(
        args.artifacts, args.calib_data, args.calib_size, options=options, components=args.components,
        thresholds=thresholds, on_gate_fail=args.on_gate_fail, gate_samples=samples,
        gate_name=args.gate_benchmark or "", gate=gate, mixed_tries=args.mixed_tries, tasks=args.tasks, seed=args.seed,
        topic=args.topic, threads=args.threads, progress=not args.quiet,
    )
    report = result.report
    print(report.verdict)
    for message in report.messages:
        print(f"  {message}")
    for name, comp in report.components.items():
        print(f"  {name}: {comp.precision} ({comp.quantized_nodes} layers in int8, "
              f"{comp.excluded_layers} layers kept in floating point{'; ' + comp.note if 'block' in comp.note else ''})")
    print(f"  {report.cpu.note}")
    print(f"report: {result.report_md}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
