"""``stablemtl-demo``: the whole toolkit on the bundled model, the way a newcomer would run it.

Every step is one of the package's own command-line tools, run as a child process and echoed, so each
line of the demo can be re-run by hand: export (fp32, fp16; multi-stream, which also serves
single-stream), int8 calibration with its accuracy gate, verification, the torch-free runtime on two
clips (a procedural scene with ground truth and a slow pan over real photographs), evaluation of every
precision on the procedural held-out split, the benchmark and the doctor. Everything lands in one folder.
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from .artifact.layout import CALIBRATION_REPORT_MD, calibration_file
from .artifact.manifest import Component, Manifest, Precision
from .atomic import prepare_output_directory
from .errors import StableMTLError
from .cli.parsers import parse_hw, positive_int
from .cli.shell import HelpFormatter, describe, run_cli, summary

__all__ = ["main", "write_photo_pan", "write_procedural_clip"]

# console script -> module, so the demo runs inside whatever environment runs it
TOOLS = {
    "stablemtl-export": "stablemtl_edge.export.cli",
    "stablemtl-calibrate": "stablemtl_edge.calibration.cli",
    "stablemtl-run": "stablemtl_edge.runtime.cli_run",
    "stablemtl-eval": "stablemtl_edge.eval.cli",
    "stablemtl-bench": "stablemtl_edge.runtime.cli_bench",
    "stablemtl-doctor": "stablemtl_edge.runtime.cli_doctor",
}


class Demo:
    """Runs the steps, timing each and keeping the log of commands."""

    def __init__(self, out: Path, steps: int) -> None:
        self.out = out
        self.steps = steps
        self.done = 0
        self.log: list[tuple[str, str, float, int]] = []

    def step(self, title: str) -> None:
        self.done += 1
        print(f"\n[{self.done}/{self.steps}] {title}", flush=True)

    def run(self, tool: str, *args: str | Path, check: bool = True) -> int:
        argv = [str(a) for a in args]
        shown = " ".join([tool, *map(shlex.quote, argv)])
        print(f"  $ {shown}", flush=True)
        start = time.perf_counter()
        rc = subprocess.call([sys.executable, "-m", TOOLS[tool], *argv])
        took = time.perf_counter() - start
        self.log.append((tool, shown, took, rc))
        if rc != 0 and check:
            raise StableMTLError(f"`{tool}` failed (exit {rc}); the command above reproduces it")
        return rc


def write_procedural_clip(folder: Path, frames: int, size: tuple[int, int], seed: int = 7) -> Path:
    """A driving clip with ground truth, as PNG frames (lossless: the runtime sees the exact pixels)."""
    from .data.clip import procedural_clip

    folder.mkdir(parents=True, exist_ok=True)
    for i, sample in enumerate(procedural_clip("driving", size=size, frames=frames, seed=seed)):
        cv2.imwrite(str(folder / f"{i:04d}.png"), cv2.cvtColor(sample.frame1, cv2.COLOR_RGB2BGR))
    return folder


def write_photo_pan(path: Path, frames: int, size: tuple[int, int] = (240, 320)) -> Path:
    """A slow pan across scikit-image's photographs, written as a video file."""
    from skimage import data

    h, w = size
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10, (w, h))
    if not writer.isOpened():
        raise StableMTLError(f"cannot write `{path}`: this OpenCV has no mp4v encoder")
    photos = [data.astronaut(), data.coffee(), data.chelsea()]
    per = max(frames // len(photos), 2)
    for photo in photos:
        scale = 1.15 * max(h / photo.shape[0], w / photo.shape[1])  # cover the window, leave room to pan
        big = cv2.resize(photo, (int(photo.shape[1] * scale), int(photo.shape[0] * scale)), interpolation=cv2.INTER_AREA)
        span_x, span_y = big.shape[1] - w, big.shape[0] - h
        for i in range(per):
            x = int(round(span_x * i / (per - 1)))
            y = int(round(span_y * 0.5))
            writer.write(cv2.cvtColor(np.ascontiguousarray(big[y : y + h, x : x + w]), cv2.COLOR_RGB2BGR))
    writer.release()
    return path


def video_frame_png(video: Path, png: Path, index: int | None = None) -> Path | None:
    cap = cv2.VideoCapture(str(video))
    n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    cap.set(cv2.CAP_PROP_POS_FRAMES, n // 2 if index is None else index)
    ok, frame = cap.read()
    cap.release()
    if not ok:
        return None
    cv2.imwrite(str(png), frame)
    return png


def trivial_baseline(domain: str, size: str, frames: int) -> dict:
    """The best constant predictions on the same held-out frames ``stablemtl-eval`` scores."""
    from .eval.evaluate import evaluate, fit_trivial_baseline
    from .data.procedural import procedural_split

    h, w = parse_hw(size)
    samples = procedural_split("test", domain, size=(h, w), length=frames)
    constant = fit_trivial_baseline(samples)
    return evaluate(constant, samples, samples.tasks, benchmark="trivial", progress=False).to_dict()


def accuracy_table(results: dict[str, dict[str, dict]]) -> str:
    """One Markdown table: rows = (task, domain), columns = configuration, cells = the task's main metric.

    Args:
        results: configuration -> domain -> the ``stablemtl-eval`` JSON of that run.
    """
    from .eval.results import MAIN_METRIC

    configs = list(results)
    rows: list[tuple[str, str]] = []
    for per_domain in results.values():
        for domain, r in per_domain.items():
            rows += [(t, domain) for t in r["tasks"] if (t, domain) not in rows]
    lines = ["| task | domain | metric | " + " | ".join(configs) + " |", "|---|---|---|" + "---|" * len(configs)]
    for task, domain in rows:
        metric = MAIN_METRIC[task]
        cells = []
        for c in configs:
            t = results[c].get(domain, {}).get("tasks", {}).get(task)
            cells.append("-" if t is None else f"{t['metrics'][metric]:.4g}")
        lines.append(f"| {task} | {domain} | {metric} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


DECODER_GATE = 0.02  # the distilled decoder may worsen a task's main metric by at most 2%


def decoder_gate(full: dict[str, dict], tiny: dict[str, dict], threshold: float = DECODER_GATE) -> str:
    """The distilled decoder against the full one on held-out frames with ground truth, per task and domain:
    the main metric's relative change and a verdict (Markdown)."""
    from .eval.delta_m import relative_changes
    from .eval.results import EvalResult

    lines = ["", "", f"## Distilled decoder against the full decoder (multi-stream fp32; gate: each task's main "
             f"metric at most {threshold * 100:.0f}% worse)", "",
             "| task | domain | metric | full | tiny | change (+ = better) | verdict |", "|---|---|---|---:|---:|---:|---|"]
    missed = []
    for domain in full:
        a, b = EvalResult.from_dict(full[domain]), EvalResult.from_dict(tiny[domain])
        for (task, metric), change in relative_changes(b, a).items():
            ok = change >= -threshold
            missed += [] if ok else [f"{task} ({domain})"]
            lines.append(f"| {task} | {domain} | {metric} | {a[task].scalars()[metric]:.4g} | "
                         f"{b[task].scalars()[metric]:.4g} | {change * 100:+.1f}% | {'pass' if ok else 'MISS'} |")
    verdict = ("every task within the gate" if not missed else
               f"the distilled decoder misses the gate on {', '.join(missed)}: keep `--decoder full` for those tasks")
    return "\n".join(lines) + f"\n\nVerdict: {verdict}.\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="stablemtl-demo",
        description=summary(__doc__),
        epilog=describe(__doc__),
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--out", type=Path, default=Path("out/demo"), help="output folder")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an earlier demo's output folder (anything else there is never removed)")
    parser.add_argument("--checkpoint", default="demo", help="checkpoint directory or bundled model name")
    parser.add_argument("--clip-frames", type=positive_int, default=36, help="frames of each demo clip")
    parser.add_argument("--eval-frames", type=positive_int, default=8, help="held-out frames per domain for the report")
    parser.add_argument("--calib-size", type=positive_int, default=16, help="calibration frames for int8")
    return run_cli(_run, parser, argv)


def _run(args: argparse.Namespace) -> int:
    out: Path = prepare_output_directory(args.out, "demo", overwrite=args.overwrite)
    art = out / "artifacts"
    demo = Demo(out, steps=8)
    started = time.perf_counter()

    demo.step("export the bundled model to ONNX (multi-stream, fp32 + fp16) with parity checks")
    demo.run("stablemtl-export", "export", args.checkpoint, "--out", art, "--mode", "multi", "--precision", "fp32,fp16")

    # The demo runs on this CPU, so its int8 graphs are placed for onnxruntime (TensorRT users keep the default).
    demo.step("int8: calibrate on procedural frames, write QDQ graphs for onnxruntime, run the per-task accuracy gate")
    demo.run(
        "stablemtl-calibrate", "--artifacts", art, "--calib-data", "procedural", "--calib-size", str(args.calib_size),
        "--target", "onnxruntime", "--quiet",
    )
    shutil.copy(art / calibration_file(CALIBRATION_REPORT_MD), out / "int8_report.md")

    demo.step("verify every artifact against the torch reference and its recorded figures")
    demo.run("stablemtl-doctor", "--artifacts", art, "--verify")

    demo.step("make the demo clips (procedural driving scene with ground truth; pan over real photographs)")
    manifest = Manifest.load(art)
    sets = {p: manifest.describe_precision(p) for p in ("fp32", "fp16", "int8")}
    tiny = Component.TINY_DECODER in manifest.components[Precision.FP32]  # the checkpoint ships a distilled decoder
    size = (manifest.profile.height, manifest.profile.width)
    clip = write_procedural_clip(out / "clips" / "procedural", args.clip_frames, size)
    pan = write_photo_pan(out / "clips" / "photos.mp4", args.clip_frames)
    print(f"  wrote {clip} and {pan}")

    demo.step("run the torch-free runtime on both clips (multi-stream, all tasks) -> montage videos")
    for name, source in (("procedural", clip), ("photos", pan)):
        video = out / f"montage_{name}.mp4"
        demo.run(
            "stablemtl-run", source, "--artifacts", art, "--mode", "multi", "--drop", "none",
            "--output-video", video, "--stats-json", out / f"run_{name}.json", "--quiet",
        )
        video_frame_png(video, out / f"montage_{name}.png")

    demo.step("accuracy on the procedural held-out split: fp32 / fp16 / int8, single- and multi-stream")
    configs = [("single", "fp32", "full"), ("multi", "fp32", "full"), ("multi", "fp16", "full"),
               ("multi", "int8", "full")] + ([("multi", "fp32", "tiny")] if tiny else [])
    results: dict[str, dict[str, dict]] = {}
    size = f"{manifest.profile.height}x{manifest.profile.width}"
    for domain in ("driving", "indoor"):
        for mode, precision, decoder in configs:
            path = out / "accuracy" / f"{mode}_{precision}_{decoder}_{domain}.json"
            demo.run(
                "stablemtl-eval", "--artifacts", art, "--benchmark", "procedural", "--domain", domain, "--split", "test",
                "--size", size, "--frames", str(args.eval_frames), "--precision", precision, "--mode", mode,
                "--decoder", decoder, "--json", path, "--no-progress",
            )
            label = f"{mode} {precision}" if sets[precision] == precision else f"{mode} {precision} set*"
            label += " tiny decoder" if decoder == "tiny" else ""
            results.setdefault(label, {})[domain] = json.loads(path.read_text())
        results.setdefault("trivial baseline", {})[domain] = trivial_baseline(domain, size, args.eval_frames)
    report = (
        "# Accuracy on the procedural held-out split\n\n"
        "Main metric per task (depth AbsRel, normal mean angle in degrees, semantic mIoU, optical flow EPE in "
        "pixels and scene flow EPE3d in metres after the per-channel scale fit, albedo/shading RMSE).\n\n"
        + accuracy_table(results)
        + "".join(f"\n\n\\* {text}" for p, text in sets.items() if text != p)
        + (decoder_gate(results["multi fp32"], results["multi fp32 tiny decoder"]) if tiny else "")
    )
    (out / "accuracy.md").write_text(report)
    print(report)

    demo.step("benchmark the runtime (ours vs the official schedule, same sessions)")
    demo.run(
        "stablemtl-bench", "--artifacts", art, "--mode", "single,multi", "--precision", "fp32,fp16",
        "--frames", "10", "--json", out / "bench.json", "--markdown", out / "bench.md",
    )
    if tiny:  # the same frames through the distilled decoder, beside the full one
        demo.run(
            "stablemtl-bench", "--artifacts", art, "--mode", "single,multi", "--precision", "fp32",
            "--decoder", "full,tiny", "--frames", "10", "--no-baseline", "--json", out / "bench_decoder.json",
            "--markdown", out / "bench_decoder.md",
        )

    demo.step("doctor: this machine, its providers, and the artifact")
    demo.run("stablemtl-doctor", "--artifacts", art, "--json", out / "doctor.json", check=False)

    total = time.perf_counter() - started
    lines = [
        "# stablemtl-edge demo",
        "",
        f"Finished in {total / 60:.1f} min. Everything is in `{out}`:",
        "",
        f"- artifacts (ONNX graphs + manifest): `{art}`; precision sets: {'; '.join(sets.values())}",
        f"- montage videos: `{out / 'montage_procedural.mp4'}`, `{out / 'montage_photos.mp4'}`",
        f"- accuracy report: `{out / 'accuracy.md'}`; int8 gate report: `{out / 'int8_report.md'}`",
        f"- benchmark: `{out / 'bench.md'}`"
        + (f", full vs distilled decoder: `{out / 'bench_decoder.md'}`" if tiny else "")
        + f"; doctor: `{out / 'doctor.json'}`",
        "",
        "Commands run:",
        "",
        *[f"    {shown}    # {took:.0f} s" for _, shown, took, _ in demo.log],
    ]
    try:
        import tensorrt  # noqa: F401

        lines += ["", f"TensorRT is installed: build engines with `stablemtl-export build -a {art} --precision fp16`."]
    except ImportError:
        lines += [
            "",
            "TensorRT is not installed here, so no engines were built. On a GPU machine (e.g. a Jetson with "
            "JetPack 6), copy the artifact folder and run:",
            "",
            f"    stablemtl-export build -a {art} --precision fp16",
            f"    stablemtl-calibrate -a {art} --target tensorrt   # the demo's int8 graphs are placed for onnxruntime",
            f"    stablemtl-export build -a {art} --precision int8",
            f"    stablemtl-run 0 --artifacts {art} --backend tensorrt --precision fp16 --mode multi --show",
        ]
    summary = "\n".join(lines) + "\n"
    (out / "SUMMARY.md").write_text(summary)
    print("\n" + summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
