"""The calibration report: what was quantized, what was kept in floating point, and what it cost.

Written beside the int8 graphs as ``int8/calibration_report.json`` (machine-readable, strict JSON) and
``int8/calibration_report.md``. It states the host CPU's int8 support, read from ``/proc/cpuinfo``: on
an x86 CPU without VNNI (or an ARM one without the dot-product extension) onnxruntime's int8 kernels are
slower than fp32, so CPU timings here say nothing about int8 on the target GPU.
"""

from __future__ import annotations

import json
import math
import os
import platform
from pathlib import Path
from typing import Any

from ..artifact.layout import CALIBRATION_REPORT_JSON, CALIBRATION_REPORT_MD
from ..atomic import atomic_write_text

__all__ = ["INT8_CPU_FLAGS", "cpu_int8_support", "cpu_advice", "render_markdown", "write_report"]

#: CPU flags that give fast int8 dot products (x86 VNNI, ARM dot product / int8 matrix multiply).
INT8_CPU_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8", "asimddp", "i8mm")


def cpu_int8_support(cpuinfo: str | os.PathLike = "/proc/cpuinfo") -> dict[str, Any]:
    """Which int8 dot-product extensions the host CPU has, from its feature flags.

    Returns:
        ``{"machine", "flags_found", "vnni", "source", "note"}``; ``vnni`` is None when the flags cannot
        be read (not Linux).
    """
    path = Path(cpuinfo)
    machine = platform.machine()
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return {"machine": machine, "flags_found": [], "vnni": None, "source": str(path),
                "note": f"cannot read {path}: int8 CPU support unknown"}
    flags: set[str] = set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() in ("flags", "features"):
            flags.update(value.split())
    found = [f for f in INT8_CPU_FLAGS if f in flags]
    if found:
        note = (f"this CPU has int8 dot-product instructions ({', '.join(found)}), so onnxruntime's int8 kernels "
                "can beat fp32 here; whether these graphs do is measured below")
    else:
        note = (
            f"this CPU ({machine}) has no VNNI (none of {', '.join(INT8_CPU_FLAGS)} in {path}), so onnxruntime "
            "runs int8 slower than fp32 here; the int8 graphs are for TensorRT on the target GPU, and the CPU "
            "timings below measure this machine only"
        )
    return {"machine": machine, "flags_found": found, "vnni": bool(found), "source": str(path), "note": note}


def cpu_advice(cpu: dict[str, Any], ratio: dict[str, dict[str, float]]) -> str:
    """The CPU note with the verdict of this run's own timing, so the advice never contradicts the table."""
    measured = [(m, x["total"]) for m, x in ratio.items() if x.get("total")]
    if not measured:
        return cpu["note"]
    slower = [f"{m}-stream {t:.2f}x" for m, t in measured if t > 1.0]
    faster = [f"{m}-stream {t:.2f}x" for m, t in measured if t <= 1.0]
    verdict = []
    if slower:
        verdict.append(f"measured here, the int8 set is slower than fp32 ({', '.join(slower)} the fp32 time per frame)")
    if faster:
        verdict.append(f"measured here, the int8 set is faster than fp32 ({', '.join(faster)} the fp32 time per frame)")
    return f"{cpu['note']}; {'; '.join(verdict)}"


def _fmt(x: Any, digits: int = 4) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    if isinstance(x, float):
        return f"{x:.{digits}f}"
    return str(x)


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{x * 100:+.2f}%"


def render_markdown(report: dict[str, Any]) -> str:
    """The report as Markdown: verdict, CPU note, per-task metrics, per-component nodes, timings."""
    lines = [f"# int8 calibration report: `{report['artifact']}`", ""]
    lines += [f"**Verdict:** {report['verdict']}", ""]
    for message in report.get("messages", []):
        lines.append(f"- {message}")
    lines += ["", f"**CPU:** {cpu_advice(report['cpu'], report.get('int8_fp32_time_ratio') or {})}", ""]
    cal = report["calibration"]
    per_task = report["gate"]["thresholds"]["per_task"]
    lines += [
        "## Calibration",
        "",
        f"- data: {cal['source']['description']} ({cal['size']} frame pairs, seed {cal['seed']}, digest "
        f"`{cal['digest'][:16]}`)",
        f"- method: {report['method']}; activations int8 symmetric per-tensor, weights int8 symmetric "
        "per-channel, zero point 0 everywhere",
        f"- held-out set: {report['gate']['heldout']}",
        f"- threshold: {report['gate']['thresholds']['default'] * 100:.2f}% relative change of each task's main "
        "metric" + (f", per task {per_task}" if per_task else ""),
        "",
        "## Per-task main metric (fp32 / fp16 / int8)",
        "",
    ]
    runs = report["runs"]
    labels = [r["label"] for r in runs]
    final = {(v["mode"], v["task"]): v for v in report["gate"]["final"]}
    lines += ["`int8`: every selected component in int8; `int8[c]`: only `c` in int8 (run when the int8 pipeline "
              "fails, to find the culprit); *registered*: the int8 set as written to the manifest.", ""]
    for mode in report["gate"]["modes"]:
        lines += [f"### {mode}-stream", "",
                  "| task | metric | " + " | ".join(labels) + " | int8 change | int8 gate | registered change |",
                  "|---|---|" + "---:|" * len(labels) + "---:|---|---:|"]
        for v in (v for v in report["gate"]["int8"] if v["mode"] == mode):
            values = []
            for r in runs:
                res = r["results"].get(mode, {}).get("tasks", {}).get(v["task"])
                values.append(_fmt(res["metrics"][v["metric"]]) if res else "n/a")
            verdict = "pass" if v["passed"] else "FAIL"
            registered = final.get((mode, v["task"]), {}).get("relative_change")
            lines.append(f"| {v['task']} | {v['metric']} | " + " | ".join(values)
                         + f" | {_pct(v['relative_change'])} | {verdict} (<= {v['threshold'] * 100:.2f}%) | "
                         + f"{_pct(registered)} |")
        lines.append("")
    lines += ["## Components", "",
              "Quantized layers: Conv/MatMul/Gemm with int8 Q/DQ inputs. Excluded layers: Conv/MatMul/Gemm kept "
              "in floating point by a rule. Excluded nodes: every node a rule names (normalisation and softmax "
              "included).", "",
              "| component | precision | graph | quantized layers | excluded layers | excluded nodes | "
              "excluded nodes by rule | note |", "|---|---|---|---:|---:|---:|---|---|"]
    for name, comp in report["components"].items():
        rules = ", ".join(f"{k} {v}" for k, v in comp.get("excluded_by_rule", {}).items()) or "-"
        lines.append(
            f"| {name} | {comp['precision']} | `{comp['file']}` | {comp.get('quantized_nodes', 0)} | "
            f"{comp.get('excluded_layers', 0)} | {len(comp.get('excluded_nodes', []))} | {rules} | "
            f"{comp.get('note', '')} |"
        )
    lines += ["", "## CPU time on this machine (stateless prediction of every task, ms per frame)", "",
              "| pipeline | mode | total | UNet calls |", "|---|---|---:|---:|"]
    for r in runs:
        for mode, ms in r["ms_per_frame"].items():
            lines.append(f"| {r['label']} | {mode} | {_fmt(ms, 1)} | {_fmt(r['unet_ms_per_frame'][mode], 1)} |")
    ratio = report.get("int8_fp32_time_ratio") or {}
    if ratio:
        lines += ["", "int8 / fp32 CPU time on this machine: " + ", ".join(
            f"{m}-stream {_fmt(x['total'], 2)}x per frame, {_fmt(x['unet'], 2)}x in the UNet calls"
            for m, x in ratio.items()
        ) + (" (no VNNI here: see the CPU note)" if report["cpu"]["vnni"] is False else "")]
    lines += ["", "## Excluded nodes", ""]
    for name, comp in report["components"].items():
        excluded = comp.get("excluded_nodes", [])
        if excluded:
            lines += [f"<details><summary>{name}: {len(excluded)} nodes</summary>", "", "```"]
            lines += excluded
            lines += ["```", "", "</details>", ""]
    return "\n".join(lines).rstrip() + "\n"


def write_report(directory: str | os.PathLike, report: dict[str, Any]) -> tuple[Path, Path]:
    """Write the JSON and Markdown reports into ``directory`` atomically; returns their paths."""
    directory = Path(directory)
    json_path, md_path = directory / CALIBRATION_REPORT_JSON, directory / CALIBRATION_REPORT_MD
    atomic_write_text(json_path, json.dumps(report, indent=2, allow_nan=False) + "\n")
    atomic_write_text(md_path, render_markdown(report))
    return json_path, md_path
