"""``stablemtl-export``: checkpoint -> verified ONNX artifact; ``build`` TensorRT engines; imports.

Subcommands (``export`` is the default, so ``stablemtl-export demo --out DIR`` works)::

    stablemtl-export export CKPT --out DIR [--mode multi] [--precision fp32,fp16] [--resolution HxW]
    stablemtl-export build -a DIR --precision fp16|int8     (on the target, needs TensorRT)
    stablemtl-export import-official --single-stream PTH --multi-stream DIR|TAR --sd2 DIR --out CKPT
    stablemtl-export bench -a DIR                           (onnxruntime vs torch timing table)
    stablemtl-export triton -a DIR --out REPO               (a Triton Inference Server model repository)

An artifact re-checks itself on the target, without torch: ``stablemtl-doctor --artifacts DIR --verify``.

A :class:`StableMTLError` is printed as one ``error:`` line with exit status 1; anything else is a bug
and keeps its traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from ..errors import StableMTLError
from ..artifact.manifest import Mode, Precision, ShapeProfile
from ..cli.shell import HelpFormatter, add_artifact_args, run_cli
from ..cli.parsers import int_between, parse_hw, parse_precisions, positive_float, positive_int

__all__ = [
    "main", "build_parser", "parse_resolution", "parse_dynamic_hw"
]

COMMANDS = ("export", "verify", "build", "build-engine", "import-official", "bench", "triton")


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def parse_resolution(text: str) -> tuple[int, int]:
    """``HxW`` -> (H, W); both multiples of 64 (checked by the component specs with a clear message)."""
    h, w = parse_hw(text, "resolution", "384x512")
    from .components import check_resolution

    check_resolution(h, w)
    return h, w


def parse_dynamic_hw(text: str) -> tuple[tuple[int, int], tuple[int, int]]:
    """``MINHxMINW:MAXHxMAXW`` -> ((min_h, min_w), (max_h, max_w))."""
    lo, sep, hi = text.partition(":")
    if not sep:
        raise StableMTLError(f"--dynamic-hw `{text}` is not MIN:MAX (e.g. 256x320:512x768)")
    (a, b), (c, d) = parse_resolution(lo), parse_resolution(hi)
    if c < a or d < b:
        raise StableMTLError(f"--dynamic-hw `{text}`: the maximum is smaller than the minimum")
    return (a, b), (c, d)


def _progress_bar(desc: str):  # noqa: ANN202
    from tqdm import tqdm

    bar = tqdm(desc=desc, file=sys.stderr, bar_format="{desc}: {n} steps [{elapsed}] {postfix}", leave=False)

    def step(message: str) -> None:
        bar.set_postfix_str(message, refresh=False)
        bar.update(1)

    return bar, step


# -- export ----------------------------------------------------------------------------------------------------
def _export(args: argparse.Namespace) -> int:
    from .artifacts import ExportRequest, export_artifacts
    from .onnx_export import ExportOptions

    mode = Mode.parse(args.mode, "mode")
    profile = None
    if args.resolution or args.dynamic_hw:
        from ..model.checkpoint import read_config, resolve_checkpoint
        from ..config import ModelPreset

        h, w = parse_resolution(args.resolution) if args.resolution else (
            ModelPreset.from_dict(read_config(resolve_checkpoint(args.checkpoint))["preset"]).resolution
        )
        lo, hi = parse_dynamic_hw(args.dynamic_hw) if args.dynamic_hw else (None, None)
        if lo is not None and not (lo[0] <= h <= hi[0] and lo[1] <= w <= hi[1]):
            raise StableMTLError(f"--resolution {h}x{w} must lie inside --dynamic-hw {args.dynamic_hw}")
        profile = ShapeProfile(h, w, max_batch=args.max_batch, min_hw=lo, max_hw=hi)
    request = ExportRequest(
        checkpoint=args.checkpoint,
        out=Path(args.out),
        mode=mode,
        precisions=parse_precisions(args.precision),
        profile=profile,
        options=ExportOptions.for_exporter(args.exporter, args.opset),
        overwrite=args.overwrite,
        tiny_decoder=None if args.tiny_decoder == "none" else args.tiny_decoder,
    )
    bar, step = _progress_bar("export")
    try:
        result = export_artifacts(request, step)
    finally:
        bar.close()
    if result.up_to_date:
        print(f"{result.directory}: up to date, nothing exported")
        return 0
    print(_parity_table(result.manifest))
    reused = f", reused {len(result.reused)}" if result.reused else ""
    print(f"PASSED export -> {result.directory} (exported {len(result.exported)} graph(s){reused})")
    return 0


def _parity_table(manifest) -> str:  # noqa: ANN001
    """Markdown: per precision, mode and task, the end-to-end errors recorded in the manifest."""
    lines = ["| precision | mode | task | latent max | image max | image mean | tolerance |", "|---|---|---|---|---|---|---|"]
    for precision, modes in manifest.parity.items():
        for mode, tasks in modes.items():
            for task, outs in tasks.items():
                lat, img = outs["latent"], outs["image"]
                lines.append(
                    f"| {precision} | {mode} | {task} | {lat['max_abs']:.2e} | {img['max_abs']:.2e} | "
                    f"{img['mean_abs']:.2e} | {manifest.tolerance.get(task, float('nan')):.2g} |"
                )
    return "\n".join(lines)


# -- verify (moved) -------------------------------------------------------------------------------------------
def _verify(args: argparse.Namespace) -> int:
    raise StableMTLError(
        f"the self-check moved to the runtime, so a target checks itself with the base install: run "
        f"`stablemtl-doctor --artifacts {args.directory} --verify`"
    )


# -- build -----------------------------------------------------------------------------------------------------
def _build(args: argparse.Namespace) -> int:
    from .tensorrt import BuildOptions, build_engines

    options = BuildOptions(
        optimization_level=args.optimization_level,
        workspace_gib=args.workspace,
        timing_cache=Path(args.timing_cache) if args.timing_cache else None,
        rebuild=args.rebuild,
    )
    records = build_engines(args.artifacts, Precision.parse(args.precision, "precision"), options, _say)
    for rec in records:
        print(f"{rec.component.value}/{rec.precision.value}: {rec.plan}")
    print(f"PASSED build {args.artifacts} ({len(records)} engine(s))")
    return 0


# -- import-official -------------------------------------------------------------------------------------------
def _import_official(args: argparse.Namespace) -> int:
    from ..model.checkpoint import save_pretrained
    from ..model.official import import_official

    model = import_official(args.single_stream, args.sd2, args.multi_stream, preset=args.preset, progress=_say,
                            embeddings=args.embeddings)
    save_pretrained(model, args.out, overwrite=args.overwrite)
    if args.write_embeddings:
        from ..model.embeddings import save_task_embeddings

        save_task_embeddings(args.write_embeddings, model.unet.task_embeddings, model.unet.task_lengths, str(args.sd2))
        print(f"task embeddings -> {args.write_embeddings} (pass it as --embeddings to skip the text encoder)")
    print(f"PASSED import -> {args.out} ({'multi' if model.multi_stream else 'single'}-stream)")
    return 0


def _bench(args: argparse.Namespace) -> int:
    from .bench import run_bench

    run_bench(args.artifacts, Path(args.json) if args.json else None, args.repeats, args.threads, _say)
    return 0


# -- triton ----------------------------------------------------------------------------------------------------
def _triton(args: argparse.Namespace) -> int:
    from ..serving.triton_repository import Executor, InstanceKind, RepositoryOptions, WireType, write_repository

    options = RepositoryOptions(
        precisions=parse_precisions(args.precisions) if args.precisions else None,
        precision=Precision.parse(args.precision, "precision"),
        instances=args.instances,
        kind=InstanceKind.parse(args.kind, "kind"),
        dynamic_batching=not args.no_dynamic_batching,
        max_queue_delay_us=args.max_queue_delay_us,
        executor=Executor.parse(args.executor, "executor"),
        copy=args.copy,
        max_streams=args.max_streams,
        wire=WireType.parse(args.wire, "wire"),
    )
    result = write_repository(args.artifacts, Path(args.out), options, overwrite=args.overwrite)
    for reason in result.skipped:
        _say(f"engine left out: {reason}")
    print(f"PASSED triton -> {result.directory} ({len(result.models)} models: {', '.join(sorted(result.models))})")
    return 0


def build_parser() -> argparse.ArgumentParser:
    fmt = HelpFormatter
    parser = argparse.ArgumentParser(
        prog="stablemtl-export",
        description="Export a StableMTL checkpoint to verified ONNX artifacts and build TensorRT engines.",
        formatter_class=fmt,
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("export", help="checkpoint -> ONNX artifact directory (the default command)", formatter_class=fmt)
    p.add_argument("checkpoint", nargs="?", default="demo", help="checkpoint directory or a bundled model name")
    p.add_argument("--out", required=True, help="artifact directory to write")
    p.add_argument("--tiny-decoder", default="auto", metavar="DIR|auto|none",
                   help="distilled decoder to export as the optional `tiny_decoder` component (a folder written by "
                        "`stablemtl-train distill-decoder`); auto: the checkpoint's own when it has one")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an artifact of ours already at --out (atomically, once the new one is verified)")
    p.add_argument("--mode", default="multi", choices=[m.value for m in Mode],
                   help="multi also exports the main stream (and serves single-stream)")
    p.add_argument("--precision", default="fp32,fp16",
                   help="comma-separated precisions; fp32 is always written (fp16 is derived from it)")
    p.add_argument("--resolution", default=None,
                   help="processing resolution HxW, multiples of 64 (default: the preset's)")
    p.add_argument("--dynamic-hw", default=None,
                   help="make height/width dynamic within MINHxMINW:MAXHxMAXW (default: static)")
    p.add_argument("--max-batch", type=positive_int, default=7, help="largest batch of the shape profile (7 = every task)")
    p.add_argument("--exporter", default="torchscript", choices=["torchscript", "dynamo"],
                   help="torch.onnx exporter (dynamo needs opset >= 18)")
    p.add_argument("--opset", type=positive_int, default=None, help="ONNX opset (default: 17 torchscript, 18 dynamo)")
    p.set_defaults(func=_export)

    p = sub.add_parser("verify", help="moved: `stablemtl-doctor --artifacts DIR --verify` (runs on the target)",
                       formatter_class=fmt)
    p.add_argument("directory")
    p.set_defaults(func=_verify)

    p = sub.add_parser("build", aliases=["build-engine"], formatter_class=fmt,
                       help="build TensorRT engines on this machine (needs TensorRT 10+ and an NVIDIA GPU)")
    add_artifact_args(p)
    p.add_argument("--precision", default="fp16", choices=["fp32", "fp16", "int8"],
                   help="which graphs to build (strongly typed: fp16 graphs, or int8 QDQ graphs)")
    p.add_argument("--optimization-level", type=int_between(0, 5), default=3, help="TensorRT builder optimisation level 0-5")
    p.add_argument("--workspace", type=positive_float, default=4.0, help="workspace memory pool limit in GiB")
    p.add_argument("--timing-cache", default=None, help="timing cache file (default: DIR/engines/timing.cache)")
    p.add_argument("--rebuild", action="store_true", help="rebuild even when a matching engine is cached")
    p.set_defaults(func=_build)

    p = sub.add_parser("import-official", formatter_class=fmt,
                       help="convert the official release (.pth + multi-stream + SD2) into a checkpoint")
    p.add_argument("--single-stream", required=True, help="single_stream_unet.pth")
    p.add_argument("--multi-stream", default=None, help="multi-stream directory or multi_stream.tar.gz")
    p.add_argument("--sd2", required=True, help="diffusers-format stable-diffusion-2 directory (vae, text encoder)")
    p.add_argument("--preset", default="sd2", help="architecture preset of the checkpoint")
    p.add_argument("--out", required=True, help="checkpoint directory to write")
    p.add_argument("--overwrite", action="store_true", help="replace a checkpoint of ours already at --out")
    p.add_argument("--embeddings", default=None, metavar="FILE",
                   help="precomputed task embeddings (safetensors keyed by task name) instead of the text encoder")
    p.add_argument("--write-embeddings", default=None, metavar="FILE",
                   help="also write the seven task embeddings to FILE, for later imports with --embeddings")
    p.set_defaults(func=_import_official)

    p = sub.add_parser("bench", formatter_class=fmt,
                       help="onnxruntime-CPU time over torch-eager time per component (Markdown + JSON)")
    add_artifact_args(p)  # its checkpoint must be readable: torch runs it
    p.add_argument("--json", default=None, help="write results here (default: DIR/bench.json is not written)")
    p.add_argument("--repeats", type=positive_int, default=5, help="timed runs per component and engine")
    p.add_argument("--threads", type=positive_int, default=2, help="threads for both torch and onnxruntime")
    p.set_defaults(func=_bench)

    p = sub.add_parser("triton", formatter_class=fmt,
                       help="artifact -> a Triton Inference Server model repository (components + frame model)")
    add_artifact_args(p)
    p.add_argument("--out", required=True, help="model repository to write")
    p.add_argument("--overwrite", action="store_true", help="replace a repository of ours already at --out")
    p.add_argument("--precision", default="fp32", help="the precision the `stablemtl` frame model runs")
    p.add_argument("--precisions", default=None,
                   help="comma-separated precisions to write component models for (default: every exported one)")
    p.add_argument("--instances", type=positive_int, default=1, help="instances per model (per GPU for GPU models)")
    p.add_argument("--kind", default="gpu", choices=["gpu", "cpu"], help="where component model instances run")
    p.add_argument("--no-dynamic-batching", action="store_true", help="serve batchable components without batching")
    p.add_argument("--max-queue-delay-us", type=positive_int, default=500,
                   help="how long the dynamic batcher waits to fill a batch, microseconds")
    p.add_argument("--executor", default="inprocess", choices=["inprocess", "bls"],
                   help="how the frame model runs the components: onnxruntime in its own process, or BLS calls "
                        "to the component models (the GPU-server path)")
    p.add_argument("--max-streams", type=positive_int, default=16,
                   help="camera streams (Triton sequences) one frame-model instance keeps state for")
    p.add_argument("--wire", default="float32", choices=["float32", "float16"],
                   help="dtype of the task images the frame model sends: float16 halves the bytes per frame, within "
                        "the export's tolerance")
    p.add_argument("--copy", action="store_true",
                   help="copy the files (a self-contained folder to mount or ship) instead of linking them")
    p.set_defaults(func=_triton)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] not in COMMANDS and argv[0] not in ("-h", "--help"):
        argv.insert(0, "export")
    return run_cli(lambda args: args.func(args), build_parser(), argv, extra="export")

if __name__ == "__main__":
    sys.exit(main())
