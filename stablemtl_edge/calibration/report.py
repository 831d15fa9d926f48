"""The calibration report: what was quantized, what was kept in floating point, and what it cost.

Written beside the int8 graphs as ``int8/calibration_report.json`` (machine-readable, strict JSON) and
``int8/calibration_report.md``. It states the host CPU's int8 support, read from ``/proc/cpuinfo``: on
an x86 CPU without VNNI (or an ARM one without the dot-product extension) onnxruntime's int8 kernels are
slower than fp32, so CPU timings here say nothing about int8 on the target GPU.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from ..artifact.layout import CALIBRATION_REPORT_JSON, CALIBRATION_REPORT_MD
from ..artifact.manifest import QdqTarget
from ..atomic import atomic_write_text
from ..cpu import INT8_CPU_FLAGS, CpuInt8Support, cpu_int8_support
from ..errors import StableMTLError
from ..records import JsonRecord
from .data import CalibrationRecord
from .gate import GateOptions, GateThresholds, PipelineRun, TaskVerdict
from .quantize import activation_format, float_format

__all__ = [
    "INT8_CPU_FLAGS",
    "CalibrationReport",
    "ComponentReport",
    "CpuInt8Support",
    "GateReport",
    "cpu_int8_support",
    "cpu_advice",
    "render_markdown",
    "write_report",
]

def cpu_advice(cpu: CpuInt8Support, ratio: dict[str, dict[str, float]], target: str) -> str:
    """The CPU note with the verdict of this run's own timing, so the advice never contradicts the table."""
    measured = [(m, x["total"]) for m, x in ratio.items() if x.get("total")]
    placed = ""
    if QdqTarget(target) is QdqTarget.TENSORRT:
        placed = ("; these graphs are placed for TensorRT, where onnxruntime runs most int8 Conv layers in float "
                  "on dequantized weights: for CPU deployment calibrate with `--target onnxruntime`")
    if not measured:
        return cpu.note + placed
    slower = [f"{m}-stream {t:.2f}x" for m, t in measured if t > 1.0]
    faster = [f"{m}-stream {t:.2f}x" for m, t in measured if t <= 1.0]
    verdict = []
    if slower:
        verdict.append(f"measured here, the int8 set is slower than fp32 ({', '.join(slower)} the fp32 time per frame)")
    if faster:
        verdict.append(f"measured here, the int8 set is faster than fp32 ({', '.join(faster)} the fp32 time per frame)")
    return f"{cpu.note}; {'; '.join(verdict)}{placed}"


@dataclass(frozen=True)
class ComponentReport:
    """One component of the int8 set: what it runs in, and what quantization did to it.

    Attributes:
        precision: the precision registered in the int8 set (``unchanged`` when the set lacks it).
        file: its graph, relative to the artifact.
        quantized_nodes: Conv/MatMul/Gemm layers with int8 Q/DQ inputs.
        excluded_layers: Conv/MatMul/Gemm layers a rule kept in floating point.
        excluded_nodes: every node a rule names (normalisation and softmax included).
        excluded_by_rule: rule key -> nodes it excluded (``sensitivity``: kept in float by the mixed search).
        note: ``int8``, ``int8, 2 block(s) kept in floating point``, ``failed gate, left at fp16`` or
            ``not selected``.
        quantized_layers: names of the layers in int8.
        excluded_layer_names: names of the layers kept in floating point.
        mixed: the mixed-precision search, when one ran: the blocks kept in float, int8 layers before and
            after, the proxy errors, the ranking and every try with its gate outcome.
    """

    precision: str
    file: str
    quantized_nodes: int = 0
    excluded_layers: int = 0
    excluded_nodes: tuple[str, ...] = ()
    excluded_by_rule: dict[str, int] = field(default_factory=dict)
    note: str = ""
    quantized_layers: tuple[str, ...] = ()
    excluded_layer_names: tuple[str, ...] = ()
    mixed: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"precision": self.precision, "file": self.file, "quantized_nodes": self.quantized_nodes,
                "excluded_layers": self.excluded_layers, "excluded_nodes": list(self.excluded_nodes),
                "excluded_by_rule": dict(self.excluded_by_rule), "note": self.note,
                "quantized_layers": list(self.quantized_layers), "excluded_layer_names": list(self.excluded_layer_names),
                "mixed": dict(self.mixed)}

    @classmethod
    def from_dict(cls, d: Any) -> ComponentReport:
        return cls(str(d["precision"]), str(d["file"]), int(d["quantized_nodes"]), int(d["excluded_layers"]),
                   tuple(str(n) for n in d["excluded_nodes"]),
                   {str(k): int(v) for k, v in d["excluded_by_rule"].items()}, str(d["note"]),
                   tuple(str(n) for n in d["quantized_layers"]), tuple(str(n) for n in d["excluded_layer_names"]),
                   dict(d["mixed"]))


@dataclass(frozen=True)
class GateReport:
    """What the gate judged and how.

    Attributes:
        heldout: the held-out set, in words.
        thresholds: the allowed relative changes.
        options: frame counts and bootstrap settings.
        modes: the modes judged.
        int8: every task of every mode with every selected component in int8.
        final: the same for the set as registered.
        ablations: component -> verdicts with only that component in int8 (run when ``int8`` fails).
        tiny_decoder: the set decoded by the distilled decoder (``decoder=tiny``) against fp32 decoded by it,
            as registered (empty when the distilled decoder was not calibrated).
    """

    heldout: str
    thresholds: GateThresholds
    options: GateOptions
    modes: tuple[str, ...]
    int8: tuple[TaskVerdict, ...]
    final: tuple[TaskVerdict, ...]
    ablations: dict[str, tuple[TaskVerdict, ...]] = field(default_factory=dict)
    tiny_decoder: tuple[TaskVerdict, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"heldout": self.heldout, "thresholds": self.thresholds.to_dict(), "options": self.options.to_dict(),
                "modes": list(self.modes),
                "int8": [v.to_dict() for v in self.int8], "final": [v.to_dict() for v in self.final],
                "ablations": {c: [v.to_dict() for v in vs] for c, vs in self.ablations.items()},
                "tiny_decoder": [v.to_dict() for v in self.tiny_decoder]}

    @classmethod
    def from_dict(cls, d: Any) -> GateReport:
        def verdicts(items: Any) -> tuple[TaskVerdict, ...]:
            return tuple(TaskVerdict.from_dict(v) for v in items)

        return cls(str(d["heldout"]), GateThresholds.from_dict(d["thresholds"]), GateOptions.from_dict(d["options"]),
                   tuple(str(m) for m in d["modes"]),
                   verdicts(d["int8"]), verdicts(d["final"]),
                   {str(c): verdicts(vs) for c, vs in d["ablations"].items()}, verdicts(d["tiny_decoder"]))


@dataclass(frozen=True)
class CalibrationReport(JsonRecord):
    """Everything one calibration did and measured (``int8/calibration_report.json``).

    Attributes:
        artifact: the artifact directory.
        verdict: one line (``PASS: ...``, ``FALLBACK: ...``, ``FAILED: ...``).
        messages: what happened to each component that did not make it into int8.
        cpu: the host CPU's int8 support.
        method: activation range calibration (``percentile (99.999)``).
        target: the runtime the Q/DQ placement is for (:class:`~.quantize.QdqTarget`).
        calibration: the calibration frames.
        gate: the accuracy gate's verdicts.
        components: component -> what it runs in and what quantization did.
        runs: every pipeline evaluated, in order.
        int8_fp32_time_ratio: mode -> ``{"total", "unet"}`` int8 / fp32 CPU time per frame, the int8 set as
            registered (the run ``timed``).
        timed: label of the run that ratio timed.
        tasks: the tasks judged, in canonical order.
    """

    artifact: str
    verdict: str
    messages: tuple[str, ...]
    cpu: CpuInt8Support
    method: str
    target: str
    calibration: CalibrationRecord
    gate: GateReport
    components: dict[str, ComponentReport]
    runs: tuple[PipelineRun, ...]
    int8_fp32_time_ratio: dict[str, dict[str, float]]
    tasks: tuple[str, ...]
    timed: str = ""

    # 2: bootstrap intervals, frames and a three-way verdict per task; 3: layer names, the mixed-precision
    # search per component, the distilled decoder's verdicts; 4: the Q/DQ target
    FORMAT_VERSION: ClassVar[int] = 4
    record_name: ClassVar[str] = "calibration report (written by stablemtl-calibrate)"

    def to_dict(self) -> dict[str, Any]:
        return {
            "format_version": self.FORMAT_VERSION,
            "artifact": self.artifact,
            "verdict": self.verdict,
            "messages": list(self.messages),
            "cpu": self.cpu.to_dict(),
            "method": self.method,
            "target": self.target,
            "calibration": self.calibration.to_dict(),
            "gate": self.gate.to_dict(),
            "components": {c: v.to_dict() for c, v in self.components.items()},
            "runs": [r.to_dict() for r in self.runs],
            "int8_fp32_time_ratio": {m: dict(x) for m, x in self.int8_fp32_time_ratio.items()},
            "tasks": list(self.tasks),
            "timed": self.timed,
        }

    @classmethod
    def from_dict(cls, d: Any) -> CalibrationReport:
        if d.get("format_version") != cls.FORMAT_VERSION:
            raise StableMTLError(f"calibration report format version {d.get('format_version')!r} is not "
                                 f"{cls.FORMAT_VERSION}: calibrate again with this version")
        return cls(
            artifact=str(d["artifact"]), verdict=str(d["verdict"]), messages=tuple(str(m) for m in d["messages"]),
            cpu=CpuInt8Support.from_dict(d["cpu"]), method=str(d["method"]),
            target=str(d["target"]),
            calibration=CalibrationRecord.from_dict(d["calibration"]), gate=GateReport.from_dict(d["gate"]),
            components={str(c): ComponentReport.from_dict(v) for c, v in d["components"].items()},
            runs=tuple(PipelineRun.from_dict(r) for r in d["runs"]),
            int8_fp32_time_ratio={str(m): {str(k): float(v) for k, v in x.items()}
                                  for m, x in d["int8_fp32_time_ratio"].items()},
            tasks=tuple(str(t) for t in d["tasks"]),
            timed=str(d["timed"]),
        )


def _fmt(x: Any, digits: int = 4) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    if isinstance(x, float):
        return f"{x:.{digits}f}"
    return str(x)


def _pct(x: float | None) -> str:
    return "n/a" if x is None or math.isnan(x) else f"{x * 100:+.2f}%"


def render_markdown(report: CalibrationReport) -> str:
    """The report as Markdown: verdict, CPU note, per-task metrics, per-component nodes, timings."""
    lines = [f"# int8 calibration report: `{report.artifact}`", ""]
    lines += [f"**Verdict:** {report.verdict}", ""]
    for message in report.messages:
        lines.append(f"- {message}")
    lines += ["", f"**CPU:** {cpu_advice(report.cpu, report.int8_fp32_time_ratio, report.target)}", ""]
    cal, gate = report.calibration, report.gate
    per_task = dict(gate.thresholds.per_task)
    lines += [
        "## Calibration",
        "",
        f"- data: {cal.source['description']} ({cal.size} frame pairs, seed {cal.seed}, digest "
        f"`{cal.digest[:16]}`)",
        f"- method: {report.method}; Q/DQ placed for {report.target}: activations {activation_format(QdqTarget(report.target))}, "
        f"weights int8 symmetric per-channel (zero point 0), the other layers {float_format(QdqTarget(report.target))}",
        f"- held-out set: {gate.heldout}",
        f"- threshold: {gate.thresholds.default * 100:.2f}% relative change of each task's main "
        "metric" + (f", per task {per_task}" if per_task else ""),
        f"- verdict: a paired bootstrap ({gate.options.resamples} resamples of the frames, seed "
        f"{gate.options.seed}) gives a {gate.options.confidence * 100:g}% interval of each change; *pass* when it "
        "lies within the threshold, *fail* when it lies beyond, otherwise frames are added up to the cap and "
        "the verdict is *inconclusive*, which counts as not passed (the component stays at its fallback "
        f"precision); a task seen on fewer than {gate.options.min_frames} frames is inconclusive unless unchanged",
        "",
        "## Per-task main metric (fp32 / fp16 / int8)",
        "",
    ]
    labels = [r.label for r in report.runs]
    final = {(v.mode, v.task): v for v in gate.final}
    lines += ["`int8`: every selected component in int8; `int8[c]`: only `c` in int8 (run when the int8 pipeline "
              "does not pass, to find the culprit); *registered*: the int8 set as written to the manifest. Each "
              "column is that pipeline over every frame it ran; the change, its interval and the verdict compare "
              "int8 with fp32 on the frames in the *frames* column.", ""]
    for mode in gate.modes:
        lines += [f"### {mode}-stream", "",
                  "| task | metric | " + " | ".join(labels)
                  + " | int8 change | interval | frames | int8 gate | registered change |",
                  "|---|---|" + "---:|" * len(labels) + "---:|---:|---:|---|---:|"]
        for v in (v for v in gate.int8 if v.mode == mode):
            values = []
            for r in report.runs:
                res = r.results[mode].tasks.get(v.task) if mode in r.results else None
                values.append(_fmt(getattr(res.metrics, v.metric)) if res else "n/a")
            verdict = v.verdict.value if v.passed else v.verdict.value.upper()
            registered = final[(mode, v.task)].change if (mode, v.task) in final else None
            lines.append(f"| {v.task} | {v.metric} | " + " | ".join(values)
                         + f" | {_pct(v.change)} | [{_pct(v.low)}, {_pct(v.high)}] | {v.frames} | {verdict} "
                         + f"(<= {v.threshold * 100:.2f}%) | {_pct(registered)} |")
        lines.append("")
    lines += ["## Components", "",
              "Quantized layers: Conv/MatMul/Gemm with int8 Q/DQ inputs. Excluded layers: Conv/MatMul/Gemm kept "
              "in floating point by a rule. Excluded nodes: every node a rule names (normalisation and softmax "
              "included).", "",
              "| component | precision | graph | quantized layers | excluded layers | excluded nodes | "
              "excluded nodes by rule | note |", "|---|---|---|---:|---:|---:|---|---|"]
    for name, comp in report.components.items():
        rules = ", ".join(f"{k} {v}" for k, v in comp.excluded_by_rule.items()) or "-"
        lines.append(
            f"| {name} | {comp.precision} | `{comp.file}` | {comp.quantized_nodes} | "
            f"{comp.excluded_layers} | {len(comp.excluded_nodes)} | {rules} | {comp.note} |"
        )
    lines += ["", "## CPU time on this machine (stateless prediction of every task, ms per frame)", "",
              "| pipeline | mode | total | UNet calls |", "|---|---|---:|---:|"]
    for r in report.runs:
        for mode, ms in r.ms_per_frame.items():
            lines.append(f"| {r.label} | {mode} | {_fmt(ms, 1)} | {_fmt(r.unet_ms_per_frame[mode], 1)} |")
    ratio = report.int8_fp32_time_ratio
    if ratio:
        lines += ["", f"int8 / fp32 CPU time on this machine (`{report.timed}`, the int8 set as registered): " + ", ".join(
            f"{m}-stream {_fmt(x['total'], 2)}x per frame, {_fmt(x['unet'], 2)}x in the UNet calls"
            for m, x in ratio.items()
        ) + (" (no VNNI here: see the CPU note)" if report.cpu.vnni is False else "")]
    if gate.tiny_decoder:
        lines += ["", "## Decoded by the distilled decoder", "",
                  "The set as registered with `decoder=tiny`, against fp32 decoded by the distilled decoder:", ""]
        lines += [f"- {v.describe()}" for v in gate.tiny_decoder]
    searched = {n: c.mixed for n, c in report.components.items() if c.mixed}
    if searched:
        lines += ["", "## Mixed precision", "",
                  "A component that fails the gate in int8 has its blocks ranked by the relative L2 error of its "
                  "outputs against fp32 on recorded calibration feeds, with one block at a time back in floating "
                  "point (leave-one-out); the most sensitive are then kept in floating point one more per try, "
                  "each try judged by the gate.", "",
                  "| component | blocks kept in float | int8 layers before -> after | proxy error before -> after | "
                  "gate tries |", "|---|---|---:|---:|---:|"]
        for name, m in searched.items():
            search = m.get("search", {})
            blocks = ", ".join(f"`{b}`" for b in m.get("blocks_in_float", ())) or "none passed"
            layers = (f"{m['int8_layers_before']} -> {m['int8_layers_after']}" if "int8_layers_after" in m else
                      f"{report.components[name].quantized_nodes} -> 0")
            errors = (f"{_fmt(m['proxy_error_before'])} -> {_fmt(m['proxy_error_after'])}" if "proxy_error_after" in m
                      else _fmt(search.get("int8_error")))
            lines.append(f"| {name} | {blocks} | {layers} | {errors} | {len(search.get('tries', ()))} |")
        for name, m in searched.items():
            for t in m.get("search", {}).get("tries", ()):
                lines.append(f"- {name}, {t['blocks_in_float']} block(s) in float: proxy {_fmt(t['proxy_error'])}, "
                             f"{'pass' if t['passed'] else 'not passed: ' + t['failures']}")
    lines += ["", "## Quantized and excluded layers", ""]
    for name, comp in report.components.items():
        for title, layers in (("in int8", comp.quantized_layers), ("kept in floating point", comp.excluded_layer_names)):
            if layers:
                lines += [f"<details><summary>{name}: {len(layers)} layers {title}</summary>", "", "```"]
                lines += layers
                lines += ["```", "", "</details>", ""]
    lines += ["", "## Excluded nodes", ""]
    for name, comp in report.components.items():
        if comp.excluded_nodes:
            lines += [f"<details><summary>{name}: {len(comp.excluded_nodes)} nodes</summary>", "", "```"]
            lines += comp.excluded_nodes
            lines += ["```", "", "</details>", ""]
    return "\n".join(lines).rstrip() + "\n"


def write_report(directory: str | os.PathLike, report: CalibrationReport) -> tuple[Path, Path]:
    """Write the JSON and Markdown reports into ``directory`` atomically; returns their paths."""
    directory = Path(directory)
    json_path, md_path = directory / CALIBRATION_REPORT_JSON, directory / CALIBRATION_REPORT_MD
    report.save(json_path)
    atomic_write_text(md_path, render_markdown(report))
    return json_path, md_path
