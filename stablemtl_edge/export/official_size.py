"""The official-size export check: the ``sd2`` preset (random weights) through the full export.

``python -m stablemtl_edge.export.official_size --out DIR`` writes a random sd2 checkpoint, exports it
fp32 (external data, since the UNet alone is 3.5 GB), runs the onnxruntime parity checks (1e-3 on
latents) and prints the wall time, the peak resident memory of this process and the worst errors. The
slow test ``tests/export/test_official_size.py`` runs the same function.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from ..atomic import remove_own_directory
from ..cli.shell import run_cli
from ..artifact.manifest import Mode, Precision

__all__ = ["OfficialSizeReport", "export_official_size", "main"]


@dataclass(frozen=True)
class OfficialSizeReport:
    seconds: float
    peak_rss_gib: float
    largest_file_gib: float
    external_data: dict[str, str]
    worst_latent_error: float
    worst_image_error: float
    mode: str

    def markdown(self) -> str:
        return (
            "| preset | mode | time | peak RSS | largest file | external data | max latent err | max image err |\n"
            "|---|---|---|---|---|---|---|---|\n"
            f"| sd2 (random) | {self.mode} | {self.seconds / 60:.1f} min | {self.peak_rss_gib:.1f} GiB | "
            f"{self.largest_file_gib:.2f} GiB | {', '.join(sorted(self.external_data.values())) or 'none'} | "
            f"{self.worst_latent_error:.2e} | {self.worst_image_error:.2e} |"
        )


def _peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2  # Linux reports KiB


def export_official_size(out: Path, mode: Mode = Mode.SINGLE, progress=lambda _: None) -> OfficialSizeReport:  # noqa: ANN001
    """Random sd2 checkpoint -> fp32 artifact at ``out`` (the checkpoint is written to ``out``.ckpt)."""
    import torch

    from ..model.checkpoint import save_pretrained
    from ..model.stablemtl import StableMTL
    from .artifacts import ExportRequest, export_artifacts

    start = time.monotonic()
    ckpt = out.with_name(out.name + ".ckpt")
    progress("building a random sd2 model")
    model = StableMTL.from_preset("sd2", multi_stream=mode is Mode.MULTI, seed=0)
    save_pretrained(model, ckpt)
    del model
    torch.set_num_threads(max(1, torch.get_num_threads()))
    result = export_artifacts(ExportRequest(str(ckpt), out, mode, (Precision.FP32,)), progress)
    manifest = result.manifest
    latents = [v["max_abs"] for k, v in result.comparators[Precision.FP32].summary().items() if k.endswith("latent")]
    images = [v["max_abs"] for k, v in result.comparators[Precision.FP32].summary().items() if k.endswith("image")]
    sizes = [p.stat().st_size for p in out.rglob("*") if p.is_file()]
    return OfficialSizeReport(
        seconds=time.monotonic() - start,
        peak_rss_gib=_peak_rss_gib(),
        largest_file_gib=max(sizes) / 1024**3,
        external_data={
            c.value: e.external_data for c, e in manifest.components[Precision.FP32].items() if e.external_data
        },
        worst_latent_error=max(latents),
        worst_image_error=max(images),
        mode=mode.value,
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="artifact directory (and OUT.ckpt for the checkpoint)")
    parser.add_argument("--mode", default="single", choices=[m.value for m in Mode])
    parser.add_argument("--json", default=None, help="also write the report as JSON here")
    parser.add_argument("--keep", action="store_true", help="keep the 3.5+ GB checkpoint and artifact")

    def body(args: argparse.Namespace) -> int:
        out = Path(args.out)
        written = [p for p in (out, out.with_name(out.name + ".ckpt")) if not p.exists()]  # never what was there
        try:
            report = export_official_size(out, Mode(args.mode), lambda m: print(m, file=sys.stderr, flush=True))
        finally:
            if not args.keep:
                for p in written:
                    remove_own_directory(p)
        print(report.markdown())
        if args.json:
            Path(args.json).write_text(json.dumps(asdict(report), indent=2) + "\n", encoding="utf-8")
        return 0

    return run_cli(body, parser, argv)


if __name__ == "__main__":
    sys.exit(main())
