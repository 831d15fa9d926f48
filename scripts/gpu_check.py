"""The Python half of ``scripts/gpu_check.sh``: what the package's command-line tools do not offer.

The shell script drives the check step by step through the project's own tools (export, calibration,
engine build, bench); this module holds the few pieces they lack, each a subcommand:

- ``probe``: versions, onnxruntime providers and GPU (the doctor's own checks), and whether TensorRT and a
  CUDA device are usable here, with the reason when not (the dry run records it on every GPU step);
- ``checkpoint``: a random-weight multi-stream checkpoint of a preset (sd2 for the real check);
- ``has``: whether an artifact holds graphs of a precision (or a component of them);
- ``parity``: the stored references (computed by onnxruntime at export) through onnxruntime or through the
  TensorRT engines, as numbers per comparison (``stablemtl-doctor --verify`` runs the onnxruntime half);
- ``cuda-graphs``: frame time on the TensorRT backend with CUDA graphs off and on (``stablemtl-bench``
  has no flag for it);
- ``record`` / ``report``: one JSON line per step, then ``gpu_check.json`` and the summary table.

Only ``checkpoint`` imports torch; the rest runs on the runtime's base install.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from stablemtl_edge.atomic import atomic_write_text
from stablemtl_edge.cli.parsers import parse_precisions, positive_int
from stablemtl_edge.cli.shell import run_cli
from stablemtl_edge.errors import StableMTLError

STATUSES = ("ok", "failed", "timeout", "skipped")


def _write_json(path: Path | None, data: Any) -> None:
    text = json.dumps(data, indent=2) + "\n"
    if path is None:
        print(text, end="")
    else:
        atomic_write_text(path, text)


# -- probe ---------------------------------------------------------------------------------------------------------
def gpu_missing() -> list[str]:
    """Why TensorRT engines cannot be built and run here (empty when they can)."""
    from stablemtl_edge import cuda
    from stablemtl_edge.export.tensorrt import TENSORRT_MISSING

    why = [] if importlib.util.find_spec("tensorrt") is not None else [TENSORRT_MISSING]
    try:
        cuda.device_info(0)
    except StableMTLError as e:
        why.append(f"no usable CUDA device: {e}")
    return why


def _probe(args: argparse.Namespace) -> int:
    from stablemtl_edge.runtime.cli_doctor import environment_checks, provider_checks

    missing = gpu_missing()
    print("TensorRT and a CUDA device are usable here" if not missing else "; ".join(missing))
    _write_json(args.json, {
        "gpu_ready": not missing,
        "missing": missing,
        "checks": [c.to_dict() for c in environment_checks() + provider_checks()],
    })  # fmt: skip
    return 0


# -- checkpoint ----------------------------------------------------------------------------------------------------
def _checkpoint(args: argparse.Namespace) -> int:
    """A random multi-stream checkpoint (seeded); an existing one of the same preset is reused."""
    from stablemtl_edge.model.checkpoint import read_config, save_pretrained
    from stablemtl_edge.model.stablemtl import StableMTL

    out = Path(args.out)
    if (out / "config.json").is_file():
        have = read_config(out)["preset"]["name"]
        if have != args.preset:
            raise StableMTLError(f"`{out}` holds a `{have}` checkpoint, not `{args.preset}`: remove it or pick --work")
        print(f"reusing the random {args.preset} checkpoint at {out}")
        return 0
    start = time.monotonic()
    model = StableMTL.from_preset(args.preset, multi_stream=True, seed=args.seed)
    save_pretrained(model, out)
    params = sum(p.numel() for p in model.parameters())
    print(f"random {args.preset} checkpoint ({params / 1e6:.0f} M parameters) at {out} in "
          f"{time.monotonic() - start:.0f} s")  # fmt: skip
    return 0


# -- has -----------------------------------------------------------------------------------------------------------
def _has(args: argparse.Namespace) -> int:
    """Exit 0 when the artifact has graphs of ``precision`` (and ``component`` among them), else 1."""
    from stablemtl_edge.artifact.manifest import Manifest

    manifest = Manifest.load(args.artifacts)
    values = {p.value: p for p in manifest.precisions()}
    comps = manifest.components[values[args.precision]] if args.precision in values else {}
    return 0 if comps and (args.component is None or any(c.value == args.component for c in comps)) else 1


# -- parity --------------------------------------------------------------------------------------------------------
def _parity(args: argparse.Namespace) -> int:
    from stablemtl_edge.artifact.compare import to_jsonable
    from stablemtl_edge.artifact.manifest import Manifest
    from stablemtl_edge.runtime.backends.base import Backend
    from stablemtl_edge.runtime.selfcheck import check_parity

    def say(message: str) -> None:
        print(f"parity: {message}", file=sys.stderr, flush=True)

    directory = Path(args.artifacts)
    manifest = Manifest.load(directory)
    precisions = parse_precisions(args.precision)
    results = check_parity(directory, manifest, precisions, args.threads, progress=say,
                           backend=Backend.parse(args.backend, "backend"))
    report = {}
    for precision, comparator in results.items():
        worst = max(comparator.results, key=lambda r: r.max_abs / max(r.limit, 1e-30))
        failures = comparator.failures()
        report[precision.value] = {
            "backend": args.backend,
            "passed": not failures,
            "comparisons": len(comparator.results),
            "failed": [r.key for r in failures],
            "worst": {"key": worst.key, **worst.to_dict()},
            "results": to_jsonable(comparator.results),
        }
        print(f"{precision.value} via {args.backend}: {len(comparator.results) - len(failures)}/"
              f"{len(comparator.results)} within tolerance; closest to its limit: {worst.line()}")  # fmt: skip
    _write_json(args.json, report)
    return 0 if all(r["passed"] for r in report.values()) else 1


# -- CUDA graphs ---------------------------------------------------------------------------------------------------
def _cuda_graphs(args: argparse.Namespace) -> int:
    """Per-frame wall time on TensorRT with CUDA graphs off, then on, on the same frames, per configuration."""
    from stablemtl_edge.runtime.api import Runtime
    from stablemtl_edge.runtime.sources import PatternSource

    records = []
    for config in args.config:
        mode, _, tasks = config.partition("/")
        for graphs in (False, True):
            with Runtime.from_artifacts(args.artifacts, tasks=tasks or "all", mode=mode, backend="tensorrt",
                                        precision=args.precision, decoder=args.decoder, cuda_graphs=graphs) as rt:
                h, w = rt.resolution
                with PatternSource(h, w, frames=args.warmup + args.frames) as src:
                    frames = [f.image for f in src]
                times = []
                for i, frame in enumerate(frames):
                    start = time.perf_counter()
                    rt.infer(frame)
                    if i >= args.warmup:
                        times.append((time.perf_counter() - start) * 1e3)
                ms = np.asarray(times)
                records.append({
                    "config": config, "cuda_graphs": graphs, "mode": rt.mode.value, "tasks": list(rt.tasks),
                    "precision": args.precision, "decoder": args.decoder, "frames": args.frames,
                    "engines": rt.describe(),
                    "wall_ms": {"mean": float(ms.mean()), "p50": float(np.percentile(ms, 50)),
                                "p90": float(np.percentile(ms, 90))},
                })  # fmt: skip
            print(f"{config} {args.precision}/{args.decoder}, CUDA graphs {'on' if graphs else 'off'}: "
                  f"{records[-1]['wall_ms']['p50']:.2f} ms/frame p50")  # fmt: skip
    ratios = {r["config"]: r["wall_ms"]["mean"] for r in records if r["cuda_graphs"]}
    ratios = {c: on / next(r["wall_ms"]["mean"] for r in records if r["config"] == c and not r["cuda_graphs"])
              for c, on in ratios.items()}  # fmt: skip
    _write_json(args.json, {"configs": records, "on_over_off": ratios})
    return 0


# -- record / report -----------------------------------------------------------------------------------------------
def _record(args: argparse.Namespace) -> int:
    """Append one step's outcome (and its result JSON, when the step wrote one) to the steps file.

    A step that did not pass carries a reason; every step carries its last line of output as a note.
    """
    if args.status not in STATUSES:
        raise StableMTLError(f"step status `{args.status}` is not one of {', '.join(STATUSES)}")
    result = None
    if args.result is not None and args.result.is_file():
        result = json.loads(args.result.read_text(encoding="utf-8"))
    line = {"name": args.name, "status": args.status, "seconds": round(args.seconds, 1), "budget_s": args.budget,
            "reason": args.reason or None, "note": args.note or None, "result": result}  # fmt: skip
    with open(args.steps, "a", encoding="utf-8") as f:
        f.write(json.dumps(line) + "\n")
    return 0


def figures(result: Any) -> str | None:
    """The headline numbers of a step's result JSON (bench, CUDA graphs, parity), None for other results."""
    if not isinstance(result, dict):
        return None
    if "results" in result and isinstance(result["results"], list):  # stablemtl-bench
        return "; ".join(f"{r['config']} {r['wall_ms']['p50']:.1f} ms" for r in result["results"])
    if "on_over_off" in result:
        return "; ".join(f"{c}: graphs on / off {v:.2f}" for c, v in result["on_over_off"].items())
    if result and all(isinstance(v, dict) and "comparisons" in v for v in result.values()):  # parity
        return "; ".join(f"{p} {v['comparisons'] - len(v['failed'])}/{v['comparisons']} within tolerance "
                         f"(worst {v['worst']['key']} {v['worst']['max_abs']:.2g})" for p, v in result.items())  # fmt: skip
    return None


def summary_table(report: dict) -> str:
    """The steps as a Markdown table: status, time against budget, and what it found or why not."""
    lines = [f"gpu check ({'dry run' if report['dry_run'] else 'device'}): {report['preset']} at {report['size']}, "
             f"{report['seconds']:.0f} s of {report['budget_s']} s", "",
             "| step | status | s / budget | note |", "|---|---|---|---|"]  # fmt: skip
    for s in report["steps"]:
        note = (s["reason"] or figures(s["result"]) or s["note"] or "").replace("|", "/")
        lines.append(f"| {s['name']} | {s['status']} | {s['seconds']:.0f} / {s['budget_s']} | {note[:240]} |")
    return "\n".join(lines)


def _report(args: argparse.Namespace) -> int:
    steps = [json.loads(line) for line in args.steps.read_text(encoding="utf-8").splitlines() if line.strip()]
    meta = dict(item.split("=", 1) for item in args.meta)
    report = {
        "dry_run": args.dry_run, "preset": meta.get("preset"), "size": meta.get("size"), "meta": meta,
        "seconds": args.seconds, "budget_s": args.budget,
        "counts": {s: sum(1 for x in steps if x["status"] == s) for s in STATUSES},
        "steps": steps,
    }  # fmt: skip
    table = summary_table(report)
    args.out.mkdir(parents=True, exist_ok=True)
    _write_json(args.out / "gpu_check.json", report)
    atomic_write_text(args.out / "summary.md", table + "\n")
    print(table)
    return 0


# -- command line --------------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="gpu_check.py", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("probe", help="versions, providers, GPU; whether TensorRT engines can run here")
    s.add_argument("--json", type=Path, default=None)
    s.set_defaults(body=_probe)
    s = sub.add_parser("checkpoint", help="a random-weight multi-stream checkpoint")
    s.add_argument("--preset", required=True)
    s.add_argument("--out", type=Path, required=True)
    s.add_argument("--seed", type=int, default=0)
    s.set_defaults(body=_checkpoint)
    s = sub.add_parser("has", help="exit 0 when the artifact has graphs of a precision (and a component)")
    s.add_argument("artifacts", type=Path)
    s.add_argument("precision")
    s.add_argument("--component", default=None)
    s.set_defaults(body=_has)
    s = sub.add_parser("parity", help="stored references through onnxruntime or TensorRT, per comparison")
    s.add_argument("artifacts", type=Path)
    s.add_argument("--precision", default="fp16")
    s.add_argument("--backend", choices=("onnxruntime", "tensorrt"), default="onnxruntime")
    s.add_argument("--threads", type=positive_int, default=None)
    s.add_argument("--json", type=Path, default=None)
    s.set_defaults(body=_parity)
    s = sub.add_parser("cuda-graphs", help="TensorRT frame time with CUDA graphs off and on")
    s.add_argument("artifacts", type=Path)
    s.add_argument("--config", action="append", required=True, metavar="MODE/TASKS",
                   help="a mode and its tasks, e.g. single/depth or multi/all (repeatable)")
    s.add_argument("--precision", default="fp16")
    s.add_argument("--decoder", default="full")
    s.add_argument("--frames", type=positive_int, default=10)
    s.add_argument("--warmup", type=int, default=3)
    s.add_argument("--json", type=Path, default=None)
    s.set_defaults(body=_cuda_graphs)
    s = sub.add_parser("record", help="append one step's outcome to the steps file")
    s.add_argument("--steps", type=Path, required=True)
    s.add_argument("--name", required=True)
    s.add_argument("--status", required=True)
    s.add_argument("--seconds", type=float, required=True)
    s.add_argument("--budget", type=int, required=True)
    s.add_argument("--reason", default="", help="why a step did not pass (skipped, failed, timed out)")
    s.add_argument("--note", default="", help="the step's last line of output")
    s.add_argument("--result", type=Path, default=None)
    s.set_defaults(body=_record)
    s = sub.add_parser("report", help="gpu_check.json and summary.md from the steps file")
    s.add_argument("--steps", type=Path, required=True)
    s.add_argument("--out", type=Path, required=True)
    s.add_argument("--seconds", type=float, required=True)
    s.add_argument("--budget", type=int, required=True)
    s.add_argument("--dry-run", action="store_true")
    s.add_argument("--meta", nargs="*", default=[], metavar="KEY=VALUE")
    s.set_defaults(body=_report)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(lambda args: args.body(args), build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
