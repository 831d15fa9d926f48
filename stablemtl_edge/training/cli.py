"""``stablemtl-train``: train a stage, write a sample pool, evaluate a model, or package a release.

    stablemtl-train --stage vae --output runs/vae --steps 800          # same as `stablemtl-train train ...`
    stablemtl-train --config recipe.yaml --stage single --init-from runs/vae/model --output runs/single
    accelerate launch -m stablemtl_edge.training.cli --stage single ...  # several processes / GPUs / nodes
    stablemtl-train pool --output pools --count indoor=1200,driving=1000,flying=600
    stablemtl-train evaluate --model runs/multi/model --output metrics.json
    stablemtl-train release --model runs/multi/model --output stablemtl_edge/weights/demo
    stablemtl-train distill-decoder --model runs/multi/model --out runs/tiny --steps 2000 --source drive.mp4

A YAML config file supplies defaults for any training flag (keys are the flag names with ``_``); flags
given on the command line win.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from ..errors import StableMTLError
from ..cli.shell import HelpFormatter, describe, run_cli, summary
from ..cli.parsers import (fraction, hw, new_or_dir, nonnegative_float, nonnegative_int, parse_pairs, positive_float,
                           positive_int)
from ..data.allocator import retain_freed_memory

__all__ = ["main", "build_parser"]

SUBCOMMANDS = ("train", "pool", "evaluate", "release", "distill-decoder")


_size = hw


def _add_train(sub: argparse._SubParsersAction) -> None:
    from .optim import OptimConfig

    d = OptimConfig()
    p = sub.add_parser("train", help="train one stage (the default command)",
                       formatter_class=HelpFormatter)
    p.add_argument("--config", type=Path, help="YAML file of defaults for these flags (keys with `_`)")
    p.add_argument("--stage", choices=("vae", "single", "multi"), default="single",
                   help="vae: train the autoencoder (small presets); single: stage 1; multi: stage 2")
    p.add_argument("--preset", default="small", help="model preset of a fresh `vae` run (small, tiny, sd2)")
    p.add_argument("--init-from", help="the previous stage's model directory (<run>/model); needed by single and multi")
    p.add_argument("--output", type=Path, help="run directory: checkpoints, train.jsonl, validation.jsonl, model/")
    p.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in --output")
    p.add_argument("--steps", type=positive_int, default=1000, help="total optimizer steps")
    p.add_argument("--batch", type=positive_int, default=8, help="samples per micro-batch per process")
    p.add_argument("--accumulation", type=positive_int, default=1, help="micro-batches per optimizer step")
    p.add_argument("--seed", type=nonnegative_int, default=0, help="seeds initialisation, sampling and augmentation")
    p.add_argument("--tasks", help="comma-separated tasks to train (default: every task the data label)")
    p.add_argument("--data", action="append", metavar="SOURCE",
                   help="repeatable: `procedural` (live scenes), `pool=DIR`, `hypersim=DIR`, `vkitti2=DIR`, "
                        "`flyingthings3d=DIR`; corpora without a source fall back to procedural scenes only if "
                        "`procedural` is given (default: procedural)")
    p.add_argument("--procedural-length", type=positive_int, default=10_000, help="distinct procedural scenes per domain")
    p.add_argument("--no-validation", action="store_true", help="skip validation on the procedural val split")
    p.add_argument("--lr", type=positive_float, default=d.lr, help="peak learning rate (Adam)")
    p.add_argument("--warmup", type=nonnegative_int, default=d.warmup, help="linear warm-up steps")
    p.add_argument("--decay-horizon", type=positive_int, default=d.decay_horizon,
                   help="step at which the exponential decay reaches --final-ratio")
    p.add_argument("--final-ratio", type=fraction, default=d.final_ratio, help="learning-rate floor relative to --lr")
    p.add_argument("--clip", type=nonnegative_float, default=d.clip, help="gradient-norm clip (0: off)")
    p.add_argument("--resolution", type=_size, help="training resolution HxW (default: the preset's)")
    p.add_argument("--crop", type=_size, help="random crop HxW out of the resolution (vae default 64x64)")
    p.add_argument("--no-augment", action="store_true", help="disable flips and colour jitter")
    p.add_argument("--checkpoint-every", type=positive_int, default=500, help="steps between checkpoints")
    p.add_argument("--keep-checkpoints", type=positive_int, default=2, help="checkpoints kept on disk")
    p.add_argument("--validate-every", type=nonnegative_int, default=0, help="steps between validations (0: at the end only)")
    p.add_argument("--val-per-source", type=positive_int, default=8, help="validation samples per domain")
    p.add_argument("--mixed-precision", choices=("auto", "no", "fp16", "bf16"), default="auto",
                   help="auto: bf16/fp16 on GPUs that have it, fp32 on CPU")
    p.add_argument("--threads", type=positive_int, help="torch CPU threads per process")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _add_pool(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("pool", help="render procedural samples once into .npz pools",
                       formatter_class=HelpFormatter)
    p.add_argument("--output", type=Path, required=True, help="directory; one sub-directory per domain")
    p.add_argument("--count", default="indoor=1200,driving=1000,flying=600", help="samples per domain")
    p.add_argument("--resolution", type=_size, default=(128, 192), help="image size HxW")
    p.add_argument("--split", default="train", choices=("train", "val", "test"), help="procedural split")


def _add_evaluate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="held-out procedural metrics vs the trivial baseline, with delta_m",
                       formatter_class=HelpFormatter)
    p.add_argument("--model", default="demo", help="model directory or bundled name")
    p.add_argument("--split", default="test", choices=("val", "test"), help="procedural split")
    p.add_argument("--per-domain", type=positive_int, default=48, help="samples per domain")
    p.add_argument("--output", type=Path, help="JSON report (Markdown is printed)")
    p.add_argument("--threads", type=positive_int, help="torch CPU threads")


def _add_release(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("release", help="copy a model as an fp16 checkpoint (the bundled-model format)",
                       formatter_class=HelpFormatter)
    p.add_argument("--model", required=True, help="trained model directory (<run>/model)")
    p.add_argument("--output", type=Path, required=True, help="destination directory")
    p.add_argument("--dtype", choices=("fp16", "fp32"), default="fp16", help="storage precision")
    p.add_argument("--overwrite", action="store_true", help="replace a checkpoint of ours already at --output")


def _add_distill(sub: argparse._SubParsersAction) -> None:
    from ..calibration.gate import DEFAULT_GATE_FRAMES, DEFAULT_GATE_MAX_FRAMES  # the int8 gate's own defaults

    p = sub.add_parser("distill-decoder", help="train a tiny task decoder to copy the model's VAE decoder (no labels)",
                       formatter_class=HelpFormatter)
    p.add_argument("--model", default="demo", help="the teacher: model directory or bundled name")
    p.add_argument("--out", "--output", dest="out", type=new_or_dir, required=True,
                   help="run directory: checkpoints, distill.jsonl, tiny_decoder.safetensors + .json")
    p.add_argument("--steps", type=positive_int, default=2000, help="optimizer steps")
    p.add_argument("--batch-size", type=positive_int, default=2,
                   help="frame pairs per step per process (each decodes every task's latent)")
    p.add_argument("--lr", type=positive_float, default=1e-3,
                   help="peak learning rate (Adam; warm-up over 5%% of the steps, then cosine to a tenth)")
    p.add_argument("--source", default="procedural",
                   help="`procedural` (generated scenes), or an image folder, a video file or a ROS 2 bag of "
                        "your camera")
    p.add_argument("--size", type=_size, help="processing size HxW, multiples of 64 (default: the model's)")
    p.add_argument("--seed", type=nonnegative_int, default=0, help="seeds the student's initialisation")
    p.add_argument("--checkpoint-every", type=positive_int, default=250, help="steps between checkpoints")
    p.add_argument("--pairs", type=positive_int, default=None,
                   help="distinct frame pairs, cycled, their teacher outputs computed once and kept in memory "
                        "(about 2 MB per pair at 128x192): most of a step's time is the teacher (default: new "
                        "pairs every step)")
    p.add_argument("--resume", action="store_true", help="continue from the latest good checkpoint in --out")
    g = p.add_argument_group("accuracy gate (tiny vs full decoder, held-out procedural frames with ground truth)")
    g.add_argument("--gate-frames", type=positive_int, default=DEFAULT_GATE_FRAMES,
                   help="held-out frames judged first, and added at a time while a task's interval straddles 2%%")
    g.add_argument("--gate-max-frames", type=positive_int, default=DEFAULT_GATE_MAX_FRAMES,
                   help="the most held-out frames a verdict may use (then: inconclusive)")
    g.add_argument("--no-gate", action="store_true", help="skip the gate (decoder_gate.{json,md} in --out)")
    p.add_argument("--mixed-precision", choices=("auto", "no", "fp16", "bf16"), default="auto",
                   help="of the student (the teacher runs in fp32); auto: bf16/fp16 on GPUs, fp32 on CPU")
    p.add_argument("--threads", type=positive_int, help="torch CPU threads per process")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="stablemtl-train", description=summary(__doc__),
                                     formatter_class=HelpFormatter, epilog=describe(__doc__))
    sub = parser.add_subparsers(dest="command")
    _add_train(sub)
    _add_pool(sub)
    _add_evaluate(sub)
    _add_release(sub)
    _add_distill(sub)
    return parser


def _parse_data(values: list[str] | None, procedural_length: int, validate: bool) -> Any:
    from .sources import DataConfig

    values = values or ["procedural"]
    kw: dict[str, Any] = {"procedural": False, "pools": [], "procedural_length": procedural_length,
                          "validate": validate}
    for v in values:
        name, _, path = v.partition("=")
        name = name.strip().lower()
        if name == "procedural" and not path:
            kw["procedural"] = True
        elif name == "pool" and path:
            kw["pools"].append(path)
        elif name in ("hypersim", "vkitti2", "flyingthings3d") and path:
            kw[name] = path
        else:
            raise StableMTLError(
                f"--data `{v}` not understood: use procedural, pool=DIR, hypersim=DIR, vkitti2=DIR or flyingthings3d=DIR"
            )
    kw["pools"] = tuple(kw["pools"])
    return DataConfig(**kw)


def _apply_config_file(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    args = parser.parse_args(argv)
    if getattr(args, "config", None) is None:
        return args
    import yaml

    path: Path = args.config
    if not path.is_file():
        raise StableMTLError(f"config file `{path}` does not exist")
    try:
        values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise StableMTLError(f"`{path}` is not valid YAML ({e})") from None
    if not isinstance(values, dict):
        raise StableMTLError(f"`{path}` must be a mapping of flag names to values")
    train_parser = parser._subparsers._group_actions[0].choices["train"]  # noqa: SLF001 (argparse has no API)
    known = {a.dest: a for a in train_parser._actions}  # noqa: SLF001
    defaults = {}
    for key, value in values.items():
        dest = str(key).replace("-", "_")
        if dest not in known or dest in ("help", "config"):
            raise StableMTLError(f"`{path}`: unknown key `{key}`; keys are the training flags, e.g. steps, batch, lr")
        if dest in ("resolution", "crop") and isinstance(value, str):
            value = _size(value)
        if dest == "data" and isinstance(value, str):
            value = [value]
        defaults[dest] = value
    train_parser.set_defaults(**defaults)
    return parser.parse_args(argv)


def _run_train(args: argparse.Namespace) -> int:
    from .optim import OptimConfig
    from .trainer import TrainConfig, train

    if args.output is None:
        raise StableMTLError("--output is required (the run directory)")
    config = TrainConfig(
        stage=args.stage, output=args.output, preset=args.preset, init_from=args.init_from, steps=args.steps,
        batch=args.batch, accumulation=args.accumulation, seed=args.seed,
        tasks=tuple(t for t in args.tasks.split(",") if t.strip()) if args.tasks else None,
        data=_parse_data(args.data, args.procedural_length, not args.no_validation),
        optim=OptimConfig(lr=args.lr, warmup=args.warmup, decay_horizon=args.decay_horizon,
                          final_ratio=args.final_ratio, clip=args.clip),
        resolution=tuple(args.resolution) if args.resolution else None,
        crop=tuple(args.crop) if args.crop else None, augment=not args.no_augment,
        checkpoint_every=args.checkpoint_every, keep_checkpoints=args.keep_checkpoints,
        validate_every=args.validate_every, val_per_source=args.val_per_source,
        precision=args.mixed_precision, progress=not args.no_progress,
    )
    model_dir = train(config, resume=args.resume)
    if int(os.environ.get("RANK", "0")) == 0:  # once, not per process
        print(f"trained `{config.stage}` for {config.steps} steps: {model_dir}")
    return 0


def _run_pool(args: argparse.Namespace) -> int:
    from ..data.procedural import procedural_split
    from .pool import write_pool

    for domain, n in parse_pairs(args.count, "--count", "DOMAIN=N (indoor, driving, flying)", "driving=64", "="):
        if not n.isdigit() or int(n) < 1:
            raise StableMTLError(f"--count `{domain}={n}`: N must be a whole number of samples >= 1")
        source = procedural_split(args.split, domain, size=tuple(args.resolution), length=int(n))
        write_pool(source, args.output / source.domain, int(n))
    print(f"pools written under {args.output}")
    return 0


def _run_evaluate(args: argparse.Namespace) -> int:
    from .report import heldout_report

    report = heldout_report(args.model, args.split, args.per_domain)
    print(report.markdown)
    if args.output:
        from ..atomic import atomic_write_text

        atomic_write_text(args.output, json.dumps(report.to_dict(), indent=2) + "\n")
        print(f"written: {args.output}")
    return 0


def _run_release(args: argparse.Namespace) -> int:
    from .report import release_model

    path = release_model(args.model, args.output, args.dtype, overwrite=args.overwrite)
    size = sum(f.stat().st_size for f in path.iterdir()) / 1e6
    print(f"released {args.model} -> {path} ({size:.1f} MB, {args.dtype})")
    return 0


def _run_distill(args: argparse.Namespace) -> int:
    from ..calibration.gate import GateOptions
    from .decoder_gate import GATE_JSON, GATE_MD, DecoderGateReport
    from .distill import DistillConfig, distill_decoder

    config = DistillConfig(model=args.model, output=args.out, steps=args.steps, batch=args.batch_size, lr=args.lr,
                           source=args.source, size=tuple(args.size) if args.size else None, seed=args.seed,
                           checkpoint_every=args.checkpoint_every, precision=args.mixed_precision,
                           progress=not args.no_progress, pairs=args.pairs)
    gate = None if args.no_gate else GateOptions(args.gate_frames, args.gate_max_frames)
    out = distill_decoder(config, resume=args.resume, gate=gate)
    if int(os.environ.get("RANK", "0")) == 0:
        record = json.loads((out / "tiny_decoder.json").read_text(encoding="utf-8"))
        print(f"distilled the decoder of {args.model} for {config.steps} steps "
              f"(final loss {record['final_loss']:.4f}): {out / 'tiny_decoder.safetensors'}")
        if gate is not None:
            report = DecoderGateReport.load(out / GATE_JSON)
            print(f"{report.summary()}: {out / GATE_MD}")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in SUBCOMMANDS + ("-h", "--help"):
        argv = ["train", *argv]
    retain_freed_memory()  # samples are generated here: reuse freed arrays instead of faulting them back in

    def body(args: argparse.Namespace) -> int:
        threads = getattr(args, "threads", None)
        if threads:
            import torch

            torch.set_num_threads(threads)
        return {"train": _run_train, "pool": _run_pool, "evaluate": _run_evaluate, "release": _run_release,
                "distill-decoder": _run_distill}[args.command](args)

    return run_cli(body, build_parser(), argv, parse=_apply_config_file, extra="train")

if __name__ == "__main__":
    sys.exit(main())
