"""Calibrate an artifact directory end to end: data, recorded inputs, QDQ graphs, accuracy gate, manifest.

    result = calibrate_artifact("artifacts/small", "drive.mp4", calib_size=32, options=QuantizeOptions("entropy"))

Steps, each with a one-line :class:`StableMTLError` for user mistakes:

1. read the manifest and check the fp32 graphs (the quantizer's input and the gate's reference);
2. load and letterbox the calibration pairs (:mod:`.data`);
3. unless every range is cached, run the fp32 pipeline on them and record each component's feeds
   (:mod:`.record`);
4. write ``int8/<component>.onnx`` for each chosen component (:mod:`.quantize`);
5. evaluate fp32, fp16 and int8 pipelines on held-out frames and judge each task's change with a paired
   bootstrap interval, adding frames while a verdict is open (:mod:`.gate`); when the int8 pipeline does
   not pass (a fail, or an interval still straddling the threshold at the frame cap), each component is
   tried alone in int8; one that does not pass keeps its most sensitive blocks in floating point, one
   more per try, until it passes (:mod:`.mixed`, at most ``mixed_tries`` gate runs), else it is left at
   fp16 (``fallback``); or the command fails at the first failed gate (``error``). The distilled decoder
   decodes only with ``decoder=tiny``, so it is judged there, against fp32 decoded by it, with the rest of
   the int8 set around it;
6. write the report, then the manifest (atomically, last) with the ``int8`` set: quantized components
   point at ``int8/``, the others at their fp16 graphs (fp32 when the artifact has none), each entry
   recording its true precision.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
import shutil
import sys
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime

from ..errors import StableMTLError
from ..artifact.manifest import Component, ComponentEntry, Manifest, Mode, Precision, file_sha256
from ..data.sample import Sample
from ..runtime.selfcheck import record_parity
from ..tasks import TASK_NAMES, parse_tasks
from ..artifact.layout import CALIBRATION_SET, INT8_DIR, calibration_file, external_data_name, graph_file
from .data import CalibrationSet, load_calibration_set
from .gate import Gate, GateOptions, GateRun, GateThresholds, OnGateFail, TaskVerdict, Verdict, heldout_samples
from .exclusions import unmatched_patterns
from .mixed import BlockSensitivity, OutputError, keep_in_float, rank_blocks
from .quantize import (QuantizedGraph, QuantizeOptions, activation_format, float_format, inspect_qdq,
                       quantize_component, remove_graph, write_qdq)
from .record import RecordedFeeds, record_feeds
from .report import CalibrationReport, ComponentReport, GateReport, cpu_int8_support, write_report

__all__ = ["CalibrationResult", "calibrate_artifact", "default_components"]

CACHE_DIR = calibration_file("cache")  # activation ranges per graph and calibration set, reused across runs
#: Gate tries of the mixed-precision search per failing component (each keeps one more block in float).
DEFAULT_MIXED_TRIES = 4
#: Recorded calibration feeds the sensitivity proxy runs on (spread over the set).
SENSITIVITY_FEEDS = 4


@dataclass(frozen=True)
class CalibrationResult:
    """What :func:`calibrate_artifact` did.

    Attributes:
        directory: the artifact directory.
        precisions: component -> precision registered in the manifest's ``int8`` set.
        fallbacks: component -> why it was left at its fallback precision.
        passed: the registered int8 set is within the gate for every task.
        report_json, report_md: the report files.
        report: the report's content.
    """

    directory: Path
    precisions: dict[str, str]
    fallbacks: dict[str, str]
    passed: bool
    report_json: Path
    report_md: Path
    report: CalibrationReport = field(repr=False)

    @property
    def quantized(self) -> tuple[str, ...]:
        return tuple(c for c, p in self.precisions.items() if p == Precision.INT8.value)


def default_components(manifest: Manifest) -> tuple[Component, ...]:
    """Every component of the int8 set: the encoder and decoder are 58-87% of a frame's FLOPs, and a
    component that does not pass stays at fp16 (or keeps its sensitive blocks in float) anyway."""
    return _set_components(manifest)


def _parse_components(names: Iterable[str | Component] | str | None, manifest: Manifest) -> tuple[Component, ...]:
    allowed = _set_components(manifest)
    if names is None:
        return allowed
    if isinstance(names, str):
        names = [n for n in names.split(",") if n.strip()]
    chosen = {Component.parse(n, "component") for n in names}
    bad = [c.value for c in chosen if c not in allowed]
    if bad:
        raise StableMTLError(
            f"component(s) {', '.join(bad)} are not part of this {manifest.mode.value}-stream artifact: choose from "
            f"{', '.join(c.value for c in allowed)}"
        )
    if not chosen:
        raise StableMTLError(f"no component to quantize: choose from {', '.join(c.value for c in allowed)}")
    return tuple(c for c in allowed if c in chosen)


def _check_patterns(directory: Path, manifest: Manifest, chosen: Sequence[Component], options: QuantizeOptions) -> None:
    """Every --exclude/--quantize pattern must match a node of some chosen graph (a typo is never ignored)."""
    patterns = [*options.exclude, *options.quantize]
    if not patterns:
        return
    graphs = {c.value: onnx.load(str(directory / manifest.entry(Precision.FP32, c).file), load_external_data=False)
              for c in chosen}
    bad = unmatched_patterns(patterns, graphs)
    if bad:
        raise StableMTLError(
            f"pattern `{bad[0]}` matches no node of {', '.join(graphs)}: give a node name or a shell glob over node "
            "names (e.g. `*/mid_block/*`) or a default rule key"
        )


def _cache_key(entry: ComponentEntry, calibration: CalibrationSet, options: QuantizeOptions,
               tasks: Sequence[str], mode: Mode) -> str:
    key = {"onnx_sha256": entry.sha256, "data": calibration.digest, "options": options.calibration_key(),
           "tasks": list(tasks), "mode": mode.value, "onnxruntime": onnxruntime.__version__}
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()


def _fallback_entry(manifest: Manifest, component: Component) -> ComponentEntry:
    """The graph a component keeps when it is not in int8: fp16 when exported, else fp32."""
    for precision in (Precision.FP16, Precision.FP32):
        entry = manifest.components.get(precision, {}).get(component)
        if entry is not None:
            return entry
    raise StableMTLError(f"the artifact has no fp16 or fp32 `{component.value}`; re-export the model")


def _int8_entry(directory: Path, rel: str, source: ComponentEntry, graph: QuantizedGraph,
                record: dict[str, Any]) -> ComponentEntry:
    model = onnx.load(str(directory / rel), load_external_data=False)
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), source.opset)
    return ComponentEntry(
        component=source.component,
        precision=Precision.INT8,
        file=rel,
        sha256=file_sha256(directory / rel),
        opset=int(opset),
        exporter=f"{source.exporter} + onnxruntime {onnxruntime.__version__} quantize_static (QDQ)",
        inputs=source.inputs,
        outputs=source.outputs,
        external_data=graph.external_data,
        quantization=record,
    )


def _cost(verdicts: Sequence[TaskVerdict], tasks: set[tuple[str, str]]) -> float:
    """The largest relative change (either way: the gate is two-sided) among ``tasks``."""
    changes = [abs(v.change) for v in verdicts if (v.mode, v.task) in tasks]
    return max((c if math.isfinite(c) else math.inf for c in changes), default=0.0)


def _describe_failures(verdicts: Sequence[TaskVerdict]) -> str:
    """Every task that did not pass, with its change, interval, frames and verdict."""
    return "; ".join(v.describe() for v in verdicts if not v.passed)


def _set_components(manifest: Manifest) -> tuple[Component, ...]:
    """The components an int8 set holds: the mode's, and the distilled decoder when it was exported."""
    tiny = any(Component.TINY_DECODER in manifest.components.get(p, {}) for p in (Precision.FP16, Precision.FP32))
    return (*manifest.mode.components, *((Component.TINY_DECODER,) if tiny else ()))


def _candidate(manifest: Manifest, entries: dict[Component, ComponentEntry], int8: Iterable[Component],
               isolated: bool = False) -> Manifest:
    """``manifest`` with an ``int8`` set: ``int8`` components from ``entries``, the rest at fallback, or at
    fp32 when ``isolated`` (the gate then measures the int8 error of ``int8`` alone, not that of fp16)."""
    keep = set(int8)
    comps = {c: entries[c] if c in keep else
             manifest.entry(Precision.FP32, c) if isolated else _fallback_entry(manifest, c)
             for c in _set_components(manifest)}
    components = {p: dict(v) for p, v in manifest.components.items() if p is not Precision.INT8}
    components[Precision.INT8] = comps
    return replace(manifest, components=components)


def calibrate_artifact(
    directory: str | os.PathLike,
    calib_data: str | os.PathLike = "procedural",
    calib_size: int = 16,
    *,
    options: QuantizeOptions = QuantizeOptions(),
    components: Iterable[str | Component] | str | None = None,
    thresholds: GateThresholds = GateThresholds(),
    on_gate_fail: OnGateFail | str = OnGateFail.FALLBACK,
    gate_samples: Sequence[Sample] | None = None,
    gate_name: str = "",
    gate: GateOptions = GateOptions(),
    mixed_tries: int = DEFAULT_MIXED_TRIES,
    tasks: Iterable[str] | str | None = None,
    seed: int = 0,
    topic: str | None = None,
    threads: int | None = None,
    progress: bool = True,
) -> CalibrationResult:
    """Quantize an exported artifact to int8 QDQ, check it against fp32 and register it.

    Args:
        directory: artifact directory with fp32 graphs (and usually fp16 ones).
        calib_data: ``procedural``, an image folder, a video file or a ROS 2 bag.
        calib_size: number of consecutive frame pairs used for calibration.
        options: calibration method and exclusions.
        components: components to quantize (default: every component of the set, the distilled decoder
            included when the artifact has one).
        thresholds: allowed relative change of each task's main metric.
        on_gate_fail: ``fallback`` keeps failing components at fp16; ``error`` raises and leaves the
            manifest unchanged (the report is still written).
        gate_samples: labelled held-out samples (default: the procedural test split); the gate reads them
            in order, at most ``gate.max_frames``.
        gate_name: name of ``gate_samples`` for the report.
        gate: held-out frames judged first and at most, and the bootstrap settings; an inconclusive
            verdict counts as not passed.
        mixed_tries: gate runs the mixed-precision search may spend on one failing component (0: none,
            a failing component goes straight to its fallback).
        tasks: tasks run during calibration and scored by the gate (default all seven).
        seed: calibration sampling seed.
        topic: image topic when ``calib_data`` is a bag with several.
        threads: onnxruntime intra-op threads (None = all cores).
        progress: progress bars on stderr.

    Raises:
        StableMTLError: bad input, or a failed gate with ``on_gate_fail=error``.
    """
    directory = Path(directory)
    on_gate_fail = OnGateFail.parse(on_gate_fail, "--on-gate-fail value")
    if isinstance(mixed_tries, bool) or not isinstance(mixed_tries, int) or mixed_tries < 0:
        raise StableMTLError(f"the mixed-precision search's tries must be an integer >= 0, got {mixed_tries!r}")
    manifest = Manifest.load(directory)
    if Precision.FP32 not in manifest.components:
        raise StableMTLError(
            f"`{directory}` has no fp32 graphs: int8 calibration quantizes the fp32 graphs and checks against "
            "them; re-export with `stablemtl-export --precision fp32,fp16`"
        )
    chosen = _parse_components(components, manifest)
    task_keys = tuple(t.key for t in parse_tasks(tasks))
    manifest.verify_files(directory, [Precision.FP32])
    _check_patterns(directory, manifest, chosen, options)
    resolution = (manifest.profile.height, manifest.profile.width)
    calibration = load_calibration_set(calib_data, calib_size, resolution, seed=seed, topic=topic)
    if gate_samples is None:
        samples: Sequence[Sample] = heldout_samples(resolution, gate.max_frames)
    else:
        samples = gate_samples if isinstance(gate_samples, Sequence) else list(gate_samples)
    heldout = ((gate_name or "user samples") + f" ({len(samples)} frames)" if gate_samples is not None else
               f"procedural test split at {resolution[0]}x{resolution[1]}")
    if not samples:
        raise StableMTLError("the gate's held-out samples are empty: give at least one labelled sample")

    int8_dir = directory / INT8_DIR
    int8_dir.mkdir(parents=True, exist_ok=True)
    # Candidate graphs live in a staging folder until the gate has spoken: a failed run leaves the
    # registered int8 graphs (if any) untouched.
    stage = Path(tempfile.mkdtemp(prefix=".candidate-", dir=int8_dir))
    try:
        return _calibrate(directory, manifest, chosen, task_keys, calibration, samples, heldout, stage, options,
                          thresholds, gate, on_gate_fail, mixed_tries, threads, progress)
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def _calibrate(directory: Path, manifest: Manifest, chosen: tuple[Component, ...], task_keys: tuple[str, ...],
               calibration: CalibrationSet, samples: Sequence[Sample], heldout: str, stage: Path,
               options: QuantizeOptions, thresholds: GateThresholds, gate_options: GateOptions,
               on_gate_fail: OnGateFail, mixed_tries: int, threads: int | None, progress: bool) -> CalibrationResult:
    int8_dir = directory / INT8_DIR
    fp32 = {c: manifest.entry(Precision.FP32, c) for c in chosen}
    caches = {}
    for c in chosen:
        key = _cache_key(fp32[c], calibration, options, task_keys, manifest.mode)
        caches[c] = directory / CACHE_DIR / f"{c.value}-{key[:24]}.json"
    feeds: dict[Component, list[Path]] = {}
    recordings = itertools.count()

    def record(components: Iterable[Component]) -> None:
        """Record the feeds of ``components`` not recorded yet, in one run of the fp32 pipeline."""
        need = [c for c in components if c not in feeds]
        if not need:
            return
        sources = [c for c in _set_components(manifest) if c in {_feed_source(n) for n in need}]
        recorded = record_feeds(directory, manifest, calibration, sources, stage / f".feeds-{next(recordings)}",
                                task_keys, threads, progress)
        feeds.update({c: recorded[_feed_source(c)] for c in need})

    record([c for c in chosen if not caches[c].is_file()])
    graphs: dict[Component, QuantizedGraph] = {}
    staged: dict[Component, Path] = {}  # each graph in its own folder: its external data keeps its final name
    for c in chosen:
        cached = caches[c].is_file()
        if progress:
            print(f"calibration: quantizing {c.value} ({options.method.value}, Q/DQ for {options.target.value}"
                  f"{', cached ranges' if cached else ''})",
                  file=sys.stderr, flush=True)
        staged[c] = stage / c.value / f"{c.value}.onnx"
        graphs[c] = quantize_component(directory / fp32[c].file, staged[c], None if cached else RecordedFeeds(feeds[c]),
                                       options, caches[c], c.value, preprocessed=stage / f".float-{c.value}")
    base_record = {
        "method": options.method.value,
        **({"percentile": options.percentile} if options.method.value == "percentile" else {}),
        "target": options.target.value,
        "activations": activation_format(options.target), "weights": "int8, symmetric, per-channel",
        "float": float_format(options.target),
        "format": "QDQ", "calibration_set": {"file": calibration_file(CALIBRATION_SET), "digest": calibration.digest,
                                             "size": len(calibration), "source": calibration.record.source},
    }

    def rel(path: Path) -> str:
        return path.relative_to(directory).as_posix()

    entries = {c: _int8_entry(directory, rel(staged[c]), fp32[c], graphs[c], {**base_record, **graphs[c].record()})
               for c in chosen}

    # -- gate ----------------------------------------------------------------------------------------------
    modes = manifest.mode.serves
    labelled = {key for s in samples for key in s.labels}
    gate_tasks = tuple(t for t in task_keys if t in labelled)  # a flow needs frame 2: only score what is labelled
    if not gate_tasks:
        raise StableMTLError(
            f"the held-out samples label none of the calibrated tasks ({', '.join(task_keys)}): give labelled "
            "samples for at least one of them"
        )
    runs: list[GateRun] = []

    def trial(label: str, m: Manifest, precision: Precision, decoder: str = "full") -> GateRun:
        run = GateRun(directory, m, precision, label, modes, gate_tasks, threads, progress, decoder)
        runs.append(run)
        return run

    reference = trial("fp32", manifest, Precision.FP32)
    gate = Gate(reference, samples, thresholds, gate_options, progress)
    heldout += (f", {gate.first} frames first, {gate_options.frames} more at a time while a verdict is "
                f"inconclusive, up to {gate.cap}")
    reference.extend(samples, gate.first)
    fp16 = None
    if Precision.FP16 in manifest.components:
        fp16 = trial("fp16", manifest, Precision.FP16)
        fp16.extend(samples, gate.first)  # shown beside the others; judged only when it is what gets registered
    fallbacks: dict[str, str] = {}
    messages: list[str] = []
    ablations: dict[str, list[TaskVerdict]] = {}
    searches: dict[str, dict[str, Any]] = {}

    def search(c: Component, others: Sequence[Component], judge: Gate, decoder: str,
               failures: str) -> tuple[GateRun, list[TaskVerdict]] | None:
        """Keep the most sensitive blocks of ``c`` in float, one more per try, until ``others + c`` passes."""
        if mixed_tries < 1:
            return None
        record([c])
        qdq = onnx.load(str(stage / f".float-{c.value}" / "qdq.onnx"))  # float part fp32: the surgery's input
        flt = onnx.load(str(stage / f".float-{c.value}" / "pre.onnx"))
        files = feeds[c]
        n = min(SENSITIVITY_FEEDS, len(files))
        picks = sorted({round(i * (len(files) - 1) / max(n - 1, 1)) for i in range(n)})
        if progress:
            print(f"calibration: {c.value} failed the gate; ranking its blocks by leave-one-out output error",
                  file=sys.stderr, flush=True)
        proxy = OutputError(flt, [_load_feed(files[i]) for i in picks], threads)
        base, ranked = rank_blocks(qdq, flt, graphs[c].quantized, proxy)
        helpful = [s for s in ranked if s.gain > 0]
        log: dict[str, Any] = {
            "proxy": "relative L2 error of the component's outputs against fp32, mean over recorded calibration "
                     "feeds, with one block at a time in floating point (leave-one-out)",
            "feeds": len(picks), "int8_error": base, "blocks": len(ranked), "max_tries": mixed_tries,
            "failed_in_int8": failures, "ranking": [s.to_dict() for s in ranked[:12]], "tries": [],
        }
        searches[c.value] = log
        floated: list[BlockSensitivity] = []
        for s in helpful[:mixed_tries]:
            floated.append(s)
            layers = [name for b in floated for name in b.layers]
            model = keep_in_float(qdq, flt, layers)
            path = stage / f"{c.value}-mixed-{len(floated)}" / f"{c.value}.onnx"
            path.parent.mkdir()
            proxy_error = proxy(model)
            data = write_qdq(model, path, options.target)
            summary = inspect_qdq(model)
            graph = replace(graphs[c], quantized=summary.quantized, qdq_nodes=summary.qdq_nodes, external_data=data,
                            excluded={**graphs[c].excluded, **{name: "sensitivity" for name in layers}},
                            excluded_layers=(*graphs[c].excluded_layers, *layers))
            mixed = {"blocks_in_float": [b.block for b in floated], "layers_in_float": len(layers),
                     "int8_layers_before": len(graphs[c].quantized), "int8_layers_after": len(summary.quantized),
                     "proxy_error_before": base, "proxy_error_after": proxy_error}
            entry = _int8_entry(directory, rel(path), fp32[c], graph, {**base_record, **graph.record(), "mixed": mixed})
            del model
            run = trial(f"int8[{c.value}: {len(floated)} block(s) float]",
                        _candidate(manifest, {**entries, c: entry}, [*others, c], isolated=True), Precision.INT8,
                        decoder)
            verdicts = judge.judge(run)
            passed = all(v.passed for v in verdicts)
            log["tries"].append({"blocks_in_float": len(floated), "proxy_error": mixed["proxy_error_after"],
                                 "passed": passed, "failures": _describe_failures(verdicts)})
            if passed:
                entries[c], graphs[c], staged[c] = entry, graph, path
                return run, verdicts
        return None

    def settle(lane: Sequence[Component], others: Sequence[Component], judge: Gate, decoder: str,
               label: str) -> tuple[list[TaskVerdict], list[Component], GateRun | None, list[TaskVerdict] | None]:
        """Judge ``lane`` in int8 (``others`` in int8 around it); a failing component is searched for a mixed
        graph that passes, else left at fallback. Returns the first verdicts, what passed, the final run."""
        first = trial(label, _candidate(manifest, entries, [*others, *lane]), Precision.INT8, decoder)
        verdicts = judge.judge(first)
        if all(v.passed for v in verdicts):
            return verdicts, list(lane), first, verdicts
        failures = _describe_failures(verdicts)
        if on_gate_fail is OnGateFail.ERROR:
            report = _report(directory, calibration, options, thresholds, gate_options, heldout, modes, runs,
                             verdicts, verdicts, ablations, entries, {}, manifest, chosen,
                             [f"{label} pipeline did not pass the gate: " + failures,
                              "manifest left unchanged (--on-gate-fail error)"],
                             "FAILED: the int8 pipeline did not pass the gate; nothing registered", searches)
            _, md = write_report(int8_dir, report)
            raise StableMTLError(
                f"int8 did not pass the accuracy gate ({failures}); the manifest is unchanged; see `{md}`; raise "
                "--gate-threshold or --gate-max-frames, add --exclude patterns, try --method entropy or use "
                "--on-gate-fail fallback"
            )
        # Each component alone in int8, the others at fp32 (or in int8 when already settled): the int8 error
        # of that component, apart from any error of the fp16 graphs the others would fall back to.
        kept = list(lane)
        alone: dict[Component, list[TaskVerdict]] = {}  # each kept component's own verdicts, as it is kept
        for c in lane:
            run = trial(f"int8[{c.value}]", _candidate(manifest, entries, [*others, c], isolated=True),
                        Precision.INT8, decoder)
            ablations[c.value] = alone[c] = judge.judge(run)
            if not all(v.passed for v in ablations[c.value]):
                why = _describe_failures(ablations[c.value])
                found = search(c, others, judge, decoder, why)
                if found is None:
                    kept.remove(c)
                    fallbacks[c.value] = why
                else:
                    alone[c] = found[1]
        if not kept:
            return verdicts, [], None, None
        final = trial(f"{label} (registered)", _candidate(manifest, entries, [*others, *kept]), Precision.INT8,
                      decoder)
        final_verdicts = judge.judge(final)
        while not all(v.passed for v in final_verdicts) and len(kept) > 1:
            # Each passes alone, together they do not: their errors add up. Leave out the one whose own
            # error is largest on what the set fails, and judge the rest again (one trial per component).
            failing = {(v.mode, v.task) for v in final_verdicts if not v.passed}
            costs = {c: _cost(alone[c], failing) for c in kept}
            worst = max(kept, key=costs.__getitem__)
            kept.remove(worst)
            mixed = (entries[worst].quantization or {}).get("mixed")
            how = f"with {len(mixed['blocks_in_float'])} block(s) in floating point" if mixed else "in int8"
            fallbacks[worst.value] = (f"passes {how} alone, but the set with {', '.join(c.value for c in kept)} "
                                      f"in int8 too does not ({_describe_failures(final_verdicts)}); of those, "
                                      f"it costs the most alone ({costs[worst] * 100:.2f}%)")
            final = trial(f"{label} (registered, {worst.value} at fallback)",
                          _candidate(manifest, entries, [*others, *kept]), Precision.INT8, decoder)
            final_verdicts = judge.judge(final)
        if not all(v.passed for v in final_verdicts):
            rest = [c.value for c in lane if c not in kept]  # at fallback now (the tiny decoder is judged apart)
            if fp16 is not None and rest and decoder == "full":
                fp16_verdicts = judge.judge(fp16)
                if not all(v.passed for v in fp16_verdicts):
                    messages.append("fp16 itself does not pass the gate against fp32 ("
                                    + _describe_failures(fp16_verdicts) + "): a component left at fp16 costs the "
                                    "set that accuracy; calibrate every component (the default) to keep them in int8")
            for c in kept:
                fallbacks[c.value] = (f"passes in int8 with the rest at fp32, but not in the set with "
                                      f"{', '.join(rest) or 'nothing'} at fallback: " + _describe_failures(final_verdicts))
            return verdicts, [], None, None
        return verdicts, kept, final, final_verdicts

    main = [c for c in chosen if c is not Component.TINY_DECODER]
    registered: GateRun | None = None  # the set as registered, with the full decoder: what the time ratio times
    kept: list[Component] = []
    all_verdicts: list[TaskVerdict] = []
    final_verdicts: Sequence[TaskVerdict] | None = None
    if main:
        all_verdicts, kept, registered, final_verdicts = settle(main, [], gate, "full", "int8")
    if final_verdicts is None:
        final_verdicts = gate.judge(fp16 or reference)  # nothing in int8 here: the set runs its fallback graphs
    tiny_verdicts: list[TaskVerdict] = []
    if Component.TINY_DECODER in chosen:
        # The distilled decoder only decodes with decoder=tiny: judged there, against fp32 decoded by it too,
        # with the rest of the int8 set as registered around it.
        tiny_ref = trial("fp32 (tiny decoder)", manifest, Precision.FP32, "tiny")
        tiny_gate = Gate(tiny_ref, samples, thresholds, gate_options, progress)
        first, tiny_kept, _, tiny_final = settle([Component.TINY_DECODER], kept, tiny_gate, "tiny",
                                                 "int8 (tiny decoder)")
        tiny_verdicts = tiny_final or first
        all_verdicts = all_verdicts or first
        kept += tiny_kept
    for name, why in fallbacks.items():
        fb = _fallback_entry(manifest, Component(name))
        tried = searches.get(name)
        tail = (f"; keeping up to {len(tried['tries'])} of its most sensitive blocks in floating point did not pass "
                "either" if tried and tried["tries"] and not any(t["passed"] for t in tried["tries"]) else "")
        messages.append(f"{name} did not pass the gate ({why}){tail}; left at {fb.precision.value} (`{fb.file}`), "
                        "its int8 graph discarded")
    for c in kept:
        mixed = (entries[c].quantization or {}).get("mixed")
        if mixed:
            messages.append(f"{c.value} failed the gate in int8; with {len(mixed['blocks_in_float'])} block(s) kept in "
                            f"floating point ({', '.join(mixed['blocks_in_float'])}) it passes: "
                            f"{mixed['int8_layers_after']} of {mixed['int8_layers_before']} layers stay in int8")
    judged = [*all_verdicts, *(v for vs in ablations.values() for v in vs), *final_verdicts, *tiny_verdicts]
    if any(v.verdict is Verdict.INCONCLUSIVE for v in judged):
        messages.append("an inconclusive verdict (at the frame cap, an interval still straddling the threshold "
                        "or too few frames of the task) counts as not passed: more held-out frames "
                        "(--gate-max-frames) can settle it")
    # Commit: move the kept graphs out of the staging folder; registered graphs of the others go away.
    for c in chosen:
        final_rel = graph_file(Precision.INT8, c)
        if c in kept:
            graph = graphs[c]
            if graph.external_data:
                os.replace(staged[c].parent / graph.external_data, int8_dir / graph.external_data)
            elif (directory / external_data_name(final_rel)).exists():
                (directory / external_data_name(final_rel)).unlink()
            os.replace(staged[c], directory / final_rel)
            entries[c] = replace(entries[c], file=final_rel)
        else:
            remove_graph(directory / final_rel)
    calibration.save(directory / calibration_file(CALIBRATION_SET))
    final_manifest = _candidate(manifest, entries, kept)
    fallback_precision = _fallback_entry(manifest, chosen[0]).precision.value
    if kept:
        verdict = (f"PASS: {', '.join(c.value for c in kept)} in int8"
                   + (f"; {', '.join(fallbacks)} left at {fallback_precision}" if fallbacks else "")
                   + "; every task's interval within the gate")
    else:
        verdict = (f"FALLBACK: no component passed the gate in int8; the int8 set runs the {fallback_precision} "
                   "graphs")
    report = _report(directory, calibration, options, thresholds, gate_options, heldout, modes, runs, all_verdicts,
                     final_verdicts, ablations, entries, fallbacks, final_manifest, chosen, messages, verdict, searches,
                     tiny_verdicts, registered.label if registered else (fp16.label if fp16 else None))
    json_path, md_path = write_report(int8_dir, report)
    # Record the int8 set: entries for fallbacks say why, files list the int8 graphs.
    comps = final_manifest.components[Precision.INT8]
    for name, why in fallbacks.items():
        c = Component(name)
        reason = f"did not pass the int8 accuracy gate: {why}"
        comps[c] = replace(comps[c], quantization={"quantized": False, "reason": reason})
    for c in _set_components(manifest):
        if c not in chosen:
            comps[c] = replace(comps[c], quantization={"quantized": False, "reason": "not selected for int8"})
    files = {k: v for k, v in final_manifest.files.items() if not k.startswith(f"{INT8_DIR}/")}
    for c in kept:
        e = comps[c]
        e.quantization = {**(e.quantization or {}), "gate": {"passed": True, "thresholds": thresholds.to_dict(),
                                                             "options": gate_options.to_dict()}}
        files[e.file] = e.sha256
        if e.external_data:
            data = calibration_file(e.external_data)
            files[data] = file_sha256(directory / data)
    final_manifest = replace(final_manifest, files=files)
    # What a target's self-check holds the int8 set to: its errors on the stored references, now.
    final_manifest = record_parity(directory, final_manifest, Precision.INT8, threads)
    final_manifest.save(directory)  # last, atomically
    precisions = {c.value: comps[c].precision.value for c in _set_components(manifest)}
    passed = all(v.passed for v in final_verdicts) and all(v.passed for v in tiny_verdicts)
    return CalibrationResult(directory, precisions, fallbacks, passed, json_path, md_path, report)


def _feed_source(component: Component) -> Component:
    """Whose recorded feeds calibrate ``component``: the distilled decoder reads the full decoder's inputs."""
    return Component.DECODER if component is Component.TINY_DECODER else component


def _load_feed(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as data:
        return {name: data[name] for name in data.files}


def _report(directory: Path, calibration: CalibrationSet, options: QuantizeOptions, thresholds: GateThresholds,
            gate_options: GateOptions, heldout: str, modes: Sequence[Mode], runs: Sequence[GateRun],
            int8_verdicts: Sequence[TaskVerdict],
            final_verdicts: Sequence[TaskVerdict], ablations: dict[str, list[TaskVerdict]],
            entries: dict[Component, ComponentEntry], fallbacks: dict[str, str], final: Manifest,
            chosen: Sequence[Component], messages: list[str], verdict: str,
            searches: dict[str, dict[str, Any]], tiny_verdicts: Sequence[TaskVerdict] = (),
            timed: str | None = None) -> CalibrationReport:
    """``timed``: the run whose time per frame is the int8 set's (as registered; None: none ran)."""
    components: dict[str, ComponentReport] = {}
    registered = final.components.get(Precision.INT8, {})
    for c in _set_components(final):
        q = (entries[c].quantization or {}) if c in chosen else {}
        reg = registered.get(c)
        mixed = q.get("mixed") if reg is not None and reg.precision is Precision.INT8 else None
        note = (f"int8, {len(mixed['blocks_in_float'])} block(s) kept in floating point" if mixed else
                "int8" if reg is not None and reg.precision is Precision.INT8 else
                f"failed gate, left at {reg.precision.value}" if c.value in fallbacks and reg is not None else
                "not selected")
        components[c.value] = ComponentReport(
            precision=reg.precision.value if reg is not None else "unchanged",
            file=reg.file if reg is not None else "",
            quantized_nodes=int(q.get("quantized_nodes", 0)),
            excluded_layers=int(q.get("excluded_layers", 0)),
            excluded_nodes=tuple(q.get("excluded_nodes", ())),
            excluded_by_rule=dict(q.get("excluded_by_rule", {})),
            note=note,
            quantized_layers=tuple(q.get("quantized_layers", ())),
            excluded_layer_names=tuple(q.get("excluded_layer_names", ())),
            mixed={**(mixed or {}), **({"search": searches[c.value]} if c.value in searches else {})},
        )
    ratio = {}
    records = [r.record() for r in runs]
    fp32 = records[0]
    int8 = next((r for r in records if r.label == timed), None)
    if int8 is not None:
        ratio = {
            m: {"total": int8.ms_per_frame[m] / fp32.ms_per_frame[m],
                "unet": int8.unet_ms_per_frame[m] / fp32.unet_ms_per_frame[m]}
            for m in fp32.ms_per_frame if fp32.ms_per_frame[m] > 0 and fp32.unet_ms_per_frame[m] > 0
        }
    return CalibrationReport(
        artifact=str(directory),
        verdict=verdict,
        messages=tuple(messages),
        cpu=cpu_int8_support(),
        method=options.method.value
        + (f" (percentile {options.percentile})" if options.method.value == "percentile" else ""),
        target=options.target.value,
        calibration=calibration.record,
        gate=GateReport(
            heldout=heldout, thresholds=thresholds, options=gate_options, modes=tuple(m.value for m in modes),
            int8=tuple(int8_verdicts),
            final=tuple(final_verdicts), ablations={c: tuple(vs) for c, vs in ablations.items()},
            tiny_decoder=tuple(tiny_verdicts),
        ),
        components=components,
        runs=tuple(records),
        int8_fp32_time_ratio=ratio,
        timed=timed or "",
        tasks=tuple(sorted({v.task for v in final_verdicts}, key=TASK_NAMES.index)),
    )
