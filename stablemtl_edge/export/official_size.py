"""The official-size check: the sd2 preset (random weights) through every step a user runs, each measured.

``python -m stablemtl_edge.export.official_size --out DIR --mode multi`` writes random sd2 weights in the
official release layout (``single_stream_unet.pth``, ``multi_stream/`` with ``config.yaml``, an SD2 ``vae/``
folder and precomputed task embeddings), then runs the user's commands, each in its own process so that
its peak resident memory is its own: ``stablemtl-export import-official``, ``stablemtl-export export``
(fp32 + fp16, external data, parity against torch), ``stablemtl-doctor --verify`` per precision (the
torch-free self-check against the stored torch references) and ``stablemtl-run`` on a real photograph pair.
It prints a table (time, peak RSS, the import's peak against the bytes of the model it builds) and writes
JSON. The slow test ``tests/export/test_official_size.py`` runs the same steps at single stream.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ..artifact.manifest import Manifest, Mode, Precision
from ..cli.parsers import parse_hw, parse_list, parse_precisions
from ..cli.shell import run_cli
from ..errors import StableMTLError

if TYPE_CHECKING:
    from ..model.stablemtl import StableMTL

__all__ = ["STEPS", "StepResult", "OfficialSizeReport", "write_release_layout", "run_official_size", "main"]

#: The steps, in order; ``--steps`` picks a prefix-closed subset (each reads what the previous wrote).
STEPS = ("write", "import", "export", "verify", "run")
PHOTO_PAIR = ("motorcycle_left.png", "motorcycle_right.png")  # a real stereo pair shipped by scikit-image
GIB = 1024**3


@dataclass(frozen=True)
class StepResult:
    """One step as its own process: the command, its exit status, wall time and peak resident memory."""

    name: str
    command: list[str]
    returncode: int
    seconds: float
    peak_rss_gib: float


@dataclass
class OfficialSizeReport:
    mode: str
    resolution: str
    precisions: list[str]
    steps: list[StepResult] = field(default_factory=list)
    checkpoint_gib: float | None = None  # model.safetensors: the fp32 bytes of the imported model
    files_gib: dict[str, float] = field(default_factory=dict)
    external_data: dict[str, str] = field(default_factory=dict)
    worst_e2e_error: dict[str, float] = field(default_factory=dict)  # precision -> max |image| error vs torch

    @property
    def ok(self) -> bool:
        return all(s.returncode == 0 for s in self.steps)

    def step(self, name: str) -> StepResult | None:
        return next((s for s in self.steps if s.name == name), None)

    def import_ratio(self) -> float | None:
        """Peak RSS of the import against the fp32 bytes of the model it builds (target <= 1.3)."""
        step = self.step("import")
        if step is None or not self.checkpoint_gib:
            return None
        return step.peak_rss_gib / self.checkpoint_gib

    def markdown(self) -> str:
        lines = [
            f"sd2 preset (random weights), {self.mode}-stream, {self.resolution}, {', '.join(self.precisions)}",
            "",
            "| step | exit | time | peak RSS |",
            "|---|---:|---:|---:|",
        ]
        for s in self.steps:
            lines.append(f"| {s.name} | {s.returncode} | {s.seconds / 60:.1f} min | {s.peak_rss_gib:.1f} GiB |")
        ratio = self.import_ratio()
        if ratio is not None:
            lines += ["", f"import peak / fp32 model bytes ({self.checkpoint_gib:.2f} GiB): {ratio:.2f}x"]
        if self.files_gib:
            lines += ["", "files: " + ", ".join(f"{k} {v:.2f} GiB" for k, v in sorted(self.files_gib.items()))]
        if self.worst_e2e_error:
            lines += ["", "worst end-to-end image error against torch: "
                      + ", ".join(f"{p} {e:.2e}" for p, e in self.worst_e2e_error.items())]
        return "\n".join(lines) + "\n"


# -- the release layout -----------------------------------------------------------------------------------
def write_release_layout(root: Path, multi_stream: bool, seed: int = 0, preset: str = "sd2") -> StableMTL:
    """Random weights in the layout of the official release (see ``shared/official-checkpoint.md``).

    The task-attention outputs are drawn non-zero, so a multi-stream import and export exercise the
    branch. Returns the model that was written.
    """
    import torch
    import yaml

    from ..model.embeddings import save_task_embeddings
    from ..model.stablemtl import StableMTL
    from ..model.unet import ATTENTION_LAYERS, self_attention_path
    from ..tasks import TASK_NAMES

    model = StableMTL.from_preset(preset, multi_stream=multi_stream, seed=seed)
    root.mkdir(parents=True, exist_ok=True)
    torch.save(model.unet.unet.state_dict(), root / "single_stream_unet.pth")
    model.vae.vae.save_pretrained(root / "stable-diffusion-2" / "vae")
    save_task_embeddings(root / "task_embeddings.safetensors", model.unet.task_embeddings, model.unet.task_lengths)
    if not multi_stream:
        return model
    main = model.main
    generator = torch.Generator().manual_seed(seed + 1)
    state = dict(main.unet.unet.state_dict())
    for i, layer in enumerate(ATTENTION_LAYERS):
        module = main.task_attention[i]
        with torch.no_grad():
            module.to_out_task.weight.copy_(torch.randn(module.to_out_task.weight.shape, generator=generator) * 0.02)
        for key, value in module.state_dict().items():
            state[f"{self_attention_path(layer)}.{key}"] = value
    unet_dir = root / "multi_stream" / "checkpoint" / "latest" / "unet"
    unet_dir.mkdir(parents=True, exist_ok=True)
    torch.save(state, unet_dir / "diffusion_pytorch_model.bin")
    heads = main.task_attention[0].heads
    config = {"trainer": {"output_types": list(TASK_NAMES), "n_attns": heads}}
    (root / "multi_stream" / "config.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    return model


# -- measured steps ---------------------------------------------------------------------------------------
# Linux charges a child with the resident size of the process it was forked from (the copy it execs away),
# so a child of a large parent would report the parent's size: a bare interpreter forks the command and
# hands back the command's own ``wait4`` usage.
_LAUNCHER = """
import os, sys
pid = os.fork()
if pid == 0:
    try:
        os.execvp(sys.argv[2], sys.argv[2:])
    finally:
        os._exit(127)
_, status, usage = os.wait4(pid, 0)
with open(sys.argv[1], "w") as f:
    f.write(f"{os.waitstatus_to_exitcode(status)} {usage.ru_maxrss}")
"""


def measured(name: str, command: list[str]) -> StepResult:
    """Run one command as a child and measure its wall time and its own peak resident memory."""
    with tempfile.TemporaryDirectory() as scratch:
        result = Path(scratch) / "usage"
        start = time.monotonic()
        launcher = subprocess.run([sys.executable, "-S", "-c", _LAUNCHER, str(result), *command], check=False)
        seconds = time.monotonic() - start
        if not result.is_file():
            return StepResult(name, command, launcher.returncode or 1, seconds, float("nan"))
        code, kib = result.read_text().split()
    return StepResult(name, command, int(code), seconds, int(kib) / 1024**2)


def _module(name: str, *args: object) -> list[str]:
    return [sys.executable, "-m", name, *map(str, args)]


def _photo_folder(folder: Path) -> Path:
    from skimage import data

    source = Path(data.__file__).parent
    folder.mkdir(parents=True, exist_ok=True)
    for name in PHOTO_PAIR:
        shutil.copyfile(source / name, folder / name)
    return folder


def run_official_size(
    out: Path,
    mode: Mode = Mode.MULTI,
    resolution: tuple[int, int] = (384, 512),
    precisions: Sequence[Precision] = (Precision.FP32, Precision.FP16),
    steps: Sequence[str] = STEPS,
    progress: Callable[[str], None] = lambda _: None,
) -> OfficialSizeReport:
    """Run ``steps`` under ``out`` (``release/``, ``checkpoint/``, ``artifacts/``, ``photos/``, ``run/``).

    A failing step ends the run (the next ones read what it writes); the report keeps what was measured.
    """
    unknown = [s for s in steps if s not in STEPS]
    if unknown:
        raise StableMTLError(f"unknown step `{unknown[0]}`: choose from {', '.join(STEPS)}")
    release, ckpt, art = out / "release", out / "checkpoint", out / "artifacts"
    h, w = resolution
    multi = mode is Mode.MULTI
    report = OfficialSizeReport(mode.value, f"{h}x{w}", [p.value for p in precisions])
    commands: list[tuple[str, list[str]]] = []
    if "write" in steps:
        commands.append(("write release layout", _module("stablemtl_edge.export.official_size", "--write-release", release, "--mode", mode)))
    if "import" in steps:
        command = _module("stablemtl_edge.export.cli", "import-official", "--single-stream",
                          release / "single_stream_unet.pth", "--sd2", release / "stable-diffusion-2",
                          "--embeddings", release / "task_embeddings.safetensors", "--out", ckpt, "--overwrite")
        commands.append(("import", command + (["--multi-stream", str(release / "multi_stream")] if multi else [])))
    if "export" in steps:
        commands.append(("export", _module("stablemtl_edge.export.cli", "export", ckpt, "--out", art, "--mode", mode,
                                           "--precision", ",".join(p.value for p in precisions),
                                           "--resolution", f"{h}x{w}", "--tiny-decoder", "none", "--overwrite")))
    if "verify" in steps:
        for p in precisions:
            commands.append((f"verify {p.value}", _module("stablemtl_edge.runtime.cli_doctor", "--artifacts", art,
                                                          "--verify", "--no-run", "--precision", p)))
    if "run" in steps:
        photos = _photo_folder(out / "photos")
        p = precisions[-1]
        commands.append((f"run {p.value} (photograph pair)", _module(
            "stablemtl_edge.runtime.cli_run", photos, "--artifacts", art, "--mode", mode, "--precision", p,
            "--backend", "onnxruntime", "--max-frames", len(PHOTO_PAIR), "--drop", "none", "--quiet",
            "--output-dir", out / "run", "--stats-json", out / "run_stats.json")))
    for name, command in commands:
        progress(f"== {name}: {' '.join(command)}")
        result = measured(name, command)
        report.steps.append(result)
        progress(f"== {name}: exit {result.returncode}, {result.seconds:.0f} s, peak RSS {result.peak_rss_gib:.2f} GiB")
        if result.returncode != 0:
            break
    _describe_outputs(report, ckpt, art)
    return report


def _describe_outputs(report: OfficialSizeReport, ckpt: Path, art: Path) -> None:
    weights = ckpt / "model.safetensors"
    if weights.is_file():
        report.checkpoint_gib = weights.stat().st_size / GIB
    if not (art / "manifest.json").is_file():
        return
    manifest = Manifest.load(art)
    for precision, entries in manifest.components.items():
        for component, entry in entries.items():
            size = sum((art / f).stat().st_size for f in entry.paths() if (art / f).is_file())
            report.files_gib[f"{precision.value}/{component.value}"] = size / GIB
            if entry.external_data:
                report.external_data[f"{precision.value}/{component.value}"] = entry.external_data
    for precision, modes in (manifest.parity or {}).items():
        report.worst_e2e_error[precision] = max(
            (v["image"]["max_abs"] for tasks in modes.values() for v in tasks.values()), default=float("nan"))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m stablemtl_edge.export.official_size",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="working directory (release files, checkpoint, artifacts)")
    parser.add_argument("--mode", default=Mode.MULTI.value, choices=Mode.choices())
    parser.add_argument("--resolution", default="384x512", help="export resolution HxW (multiples of 64)")
    parser.add_argument("--precision", default="fp32,fp16", help="comma-separated precisions to export and verify")
    parser.add_argument("--steps", default=",".join(STEPS), help=f"comma-separated steps among {', '.join(STEPS)}")
    parser.add_argument("--json", type=Path, default=None, help="also write the report as JSON here")
    parser.add_argument("--keep", action="store_true", help="keep the files (tens of GB) under --out")
    parser.add_argument("--write-release", type=Path, default=None, metavar="DIR",
                        help="only write random sd2 weights in the release layout to DIR (the `write` step)")

    def body(args: argparse.Namespace) -> int:
        mode = Mode.parse(args.mode, "mode")
        if args.write_release is not None:
            write_release_layout(args.write_release, multi_stream=mode is Mode.MULTI)
            return 0
        if args.out is None:
            raise StableMTLError("pass --out DIR (a new directory for the release files, checkpoint and artifacts)")
        if args.out.exists() and any(args.out.iterdir()) and "write" in parse_list(args.steps):
            raise StableMTLError(f"`{args.out}` is not empty: pass a new directory, or --steps without `write` "
                                 "to reuse what an earlier run wrote there")
        try:
            report = run_official_size(
                args.out, mode, parse_hw(args.resolution, "--resolution"), parse_precisions(args.precision),
                parse_list(args.steps), lambda m: print(m, file=sys.stderr, flush=True))
        finally:
            if not args.keep:
                for name in ("release", "checkpoint", "artifacts", "photos", "run"):
                    shutil.rmtree(args.out / name, ignore_errors=True)
        print(report.markdown())
        if args.json:
            report_dict = {**asdict(report), "import_ratio": report.import_ratio(), "ok": report.ok}
            args.json.write_text(json.dumps(report_dict, indent=2) + "\n", encoding="utf-8")
        return 0 if report.ok else 1

    return run_cli(body, parser, argv)


if __name__ == "__main__":
    sys.exit(main())
