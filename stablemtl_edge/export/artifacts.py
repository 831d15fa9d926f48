"""The artifact directory writer: export, convert, verify, then write ``manifest.json`` last, atomically.

The whole directory is built under a temporary name (:func:`stablemtl_edge.atomic.atomic_directory`) and
moved into place only when every graph passed its parity checks, so a failed or interrupted export leaves
the previous artifact (or nothing) behind. Each graph carries a fingerprint of what produced it
(checkpoint digest, preset, mode, profile, exporter, opset, precision, library versions); re-running the
export with the same inputs finds every fingerprint unchanged and files intact and does nothing, and a
partial change re-exports only what changed (unchanged files are hard-linked from the previous artifact).
"""

from __future__ import annotations

import gc

import hashlib
import json
import os
import shutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import onnx
import torch

from .. import __version__
from ..atomic import MARKER_NAME, atomic_directory, check_replaceable, owned_kind
from ..errors import StableMTLError
from ..artifact.manifest import (
    MANIFEST_NAME,
    Component,
    ComponentEntry,
    Manifest,
    Mode,
    Precision,
    ShapeProfile,
    file_sha256,
)
from ..artifact.digest import cached_sha256
from ..artifact.layout import ENGINES_DIR, graph_file
from ..model.checkpoint import CONFIG_NAME, WEIGHTS_NAME, load_pretrained, resolve_checkpoint
from ..model.tiny_decoder import CONFIG_NAME as TINY_CONFIG
from ..model.tiny_decoder import WEIGHTS_NAME as TINY_WEIGHTS
from ..model.tiny_decoder import load_tiny_decoder, read_tiny_decoder_record
from ..model.stablemtl import StableMTL
from ..tasks import TASKS
from ..artifact.compare import Comparator, default_comparator, round_up
from ..artifact.references import Feeds, ReferenceSet, check_references
from .components import ComponentSpec, component_specs, feature_specs
from .flops import flops_per_row
from ..fp16 import convert_to_fp16
from .onnx_export import ExportOptions, export_component
from .parity import OrtSessions, build_references, compare_component, tiny_decoder_agreement, torch_runner

__all__ = ["ExportRequest", "ExportResult", "export_artifacts", "checkpoint_digest"]

TOLERANCE_FLOOR = 1e-2  # smallest end-to-end image tolerance handed to backends (TensorRT's TF32/fp16 tactics)
Progress = Callable[[str], None]


AUTO = "auto"


def resolve_tiny_decoder(request: ExportRequest, checkpoint: Path, model: StableMTL) -> tuple[Path | None, Any]:
    """The distilled decoder to export, or ``(None, None)``; refused when it was distilled from other weights."""
    if request.tiny_decoder is None:
        return None, None
    auto = request.tiny_decoder == AUTO
    folder = checkpoint if auto else Path(request.tiny_decoder)
    if auto and not (folder / TINY_CONFIG).is_file():
        return None, None
    record = read_tiny_decoder_record(folder)
    teacher = record.get("teacher", {}).get("weights_sha256")
    ours = file_sha256(checkpoint / WEIGHTS_NAME)
    if teacher != ours:
        raise StableMTLError(
            f"the distilled decoder in `{folder}` was distilled from other weights (sha256 "
            f"{str(teacher)[:12]}... != {ours[:12]}... of `{checkpoint / WEIGHTS_NAME}`): distill it again from "
            "this checkpoint with `stablemtl-train distill-decoder`"
        )
    return folder, load_tiny_decoder(folder)


def checkpoint_digest(directory: Path, tiny_decoder: Path | None = None) -> str:
    """sha256 over the checkpoint's config and weights: what a re-export compares."""
    h = hashlib.sha256()
    files = [directory / CONFIG_NAME, directory / WEIGHTS_NAME]
    if tiny_decoder is not None:
        files += [tiny_decoder / TINY_CONFIG, tiny_decoder / TINY_WEIGHTS]
    for path in files:
        h.update(path.name.encode())
        h.update(file_sha256(path).encode() if path.is_file() else b"missing")
    return h.hexdigest()


@dataclass(frozen=True)
class ExportRequest:
    """What to export.

    Attributes:
        checkpoint: a checkpoint directory or a bundled model name (``demo``).
        out: the artifact directory.
        mode: ``multi`` also exports ``unet_main`` (and serves single-stream too).
        precisions: fp32 is always written (the others are derived from and checked against it).
        profile: resolution and batch range.
        options: exporter and opset.
        overwrite: replace an artifact of ours at ``out`` when something changed (an up-to-date one is
            left as it is either way); anything else at ``out`` is always refused.
        tiny_decoder: a folder with a distilled decoder of this model (``stablemtl-train
            distill-decoder``), exported as the optional ``tiny_decoder`` component; ``auto`` = the
            checkpoint's own when it holds one, None = none.
    """

    checkpoint: str
    out: Path
    mode: Mode = Mode.MULTI
    precisions: tuple[Precision, ...] = (Precision.FP32, Precision.FP16)
    profile: ShapeProfile | None = None
    options: ExportOptions = field(default_factory=ExportOptions)
    overwrite: bool = False
    tiny_decoder: str | Path | None = AUTO

    def __post_init__(self) -> None:
        wanted = [Precision.FP32] + [p for p in self.precisions if p is not Precision.FP32]
        if Precision.INT8 in wanted:
            raise StableMTLError(
                "int8 graphs come from calibration, not from export: export fp32 first, then run "
                "`stablemtl-calibrate`"
            )
        object.__setattr__(self, "precisions", tuple(dict.fromkeys(wanted)))


@dataclass
class ExportResult:
    manifest: Manifest
    directory: Path
    reused: list[str]
    exported: list[str]
    comparators: dict[Precision, Comparator]

    @property
    def up_to_date(self) -> bool:
        return not self.exported


def _fingerprint(parts: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def _library_versions(precision: Precision) -> dict[str, str]:
    versions = {"stablemtl-edge": __version__, "torch": torch.__version__, "onnx": onnx.__version__}
    if precision is Precision.FP16:
        import onnxconverter_common

        versions["onnxconverter-common"] = onnxconverter_common.__version__
    return versions


def _link(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _previous(out: Path) -> Manifest | None:
    """The manifest of an existing artifact at ``out``, if it is readable (else it is simply replaced)."""
    if not (out / MANIFEST_NAME).is_file():
        return None
    try:
        return Manifest.load(out)
    except StableMTLError:
        return None


def _intact(directory: Path, manifest: Manifest, files: Iterable[str]) -> bool:
    return all((directory / f).is_file() and cached_sha256(directory / f) == manifest.files.get(f) for f in files)


def export_artifacts(request: ExportRequest, progress: Progress = lambda _: None) -> ExportResult:
    """Export, convert, verify and write the artifact directory described by ``request``.

    Raises:
        StableMTLError: a missing or damaged checkpoint, an impossible resolution, a single-stream
            checkpoint asked for ``multi``, or a parity failure (then nothing at ``out`` changes).
    """
    if owned_kind(request.out) != "artifact":  # refuse a foreign --out before the long work, not after
        check_replaceable(Path(request.out), "artifact", request.overwrite)
    directory = resolve_checkpoint(request.checkpoint)
    model = load_pretrained(request.checkpoint)
    preset = model.preset
    profile = request.profile or ShapeProfile(*preset.resolution)
    if request.mode is Mode.MULTI and not model.multi_stream:
        raise StableMTLError(
            f"checkpoint `{request.checkpoint}` is single-stream: export it with `--mode single`"
        )
    tiny_dir, tiny = resolve_tiny_decoder(request, directory, model)
    specs = component_specs(preset, request.mode, profile, tiny)  # refuses impossible resolutions
    digest = checkpoint_digest(directory, tiny_dir)
    base = {
        "checkpoint": digest,
        "preset": preset.to_dict(),
        "mode": request.mode.value,
        "profile": profile.to_dict(),
        "exporter": request.options.exporter.value,
        "opset": request.options.opset,
    }
    fingerprints = {
        f"{p.value}/{c.value}": _fingerprint({**base, "precision": p.value, "component": c.value, **_library_versions(p)})
        for p in request.precisions
        for c in specs
    }
    ref_fingerprint = _fingerprint({**base, "references": 1, "torch": torch.__version__})

    out = Path(request.out)
    previous = _previous(out)
    reusable: dict[str, ComponentEntry] = {}
    if previous is not None:
        old_prints = previous.source.get("fingerprints", {})
        for p, comps in previous.components.items():
            for c, e in comps.items():
                key = f"{p.value}/{c.value}"
                if old_prints.get(key) == fingerprints.get(key) and _intact(out, previous, e.paths()):
                    reusable[key] = e
    refs_reusable = (
        previous is not None
        and previous.source.get("references_fingerprint") == ref_fingerprint
        and _intact(out, previous, previous.references.values())
    )
    same_graphs = previous is not None and {
        f"{p.value}/{c.value}" for p in previous.precisions() if p in (Precision.FP32, Precision.FP16)
        for c in previous.components[p]
    } == set(fingerprints)
    if previous is not None and same_graphs and refs_reusable and set(reusable) >= set(fingerprints):
        progress(f"{out} is up to date (same checkpoint, options and files): nothing to export")
        return ExportResult(previous, out, sorted(fingerprints), [], {})

    reused, exported = [], []
    with atomic_directory(out, kind="artifact", overwrite=request.overwrite) as tmp:
        progress(f"counting FLOPs per row at {profile.height}x{profile.width}")
        flops = flops_per_row(model, specs)
        entries: dict[Precision, dict[Component, ComponentEntry]] = {p: {} for p in request.precisions}
        for precision in request.precisions:
            for component, spec in specs.items():
                key = f"{precision.value}/{component.value}"
                rel = graph_file(precision, component)
                if key in reusable:
                    for f in reusable[key].paths():
                        _link(out / f, tmp / f)
                    entries[precision][component] = replace(reusable[key], flops_per_row=flops[component])
                    reused.append(key)
                    continue
                progress(f"exporting {key}")
                if precision is Precision.FP32:
                    data = export_component(model, spec, tmp / rel, request.options)
                else:
                    data = convert_to_fp16(tmp / graph_file(Precision.FP32, component), tmp / rel)
                entries[precision][component] = ComponentEntry(
                    component=component,
                    precision=precision,
                    file=rel,
                    sha256=file_sha256(tmp / rel),
                    opset=request.options.opset,
                    exporter=request.options.exporter.value,
                    inputs=spec.inputs,
                    outputs=spec.outputs,
                    external_data=data,
                    flops_per_row=flops[component],
                )
                exported.append(key)

        progress("computing torch reference outputs (photographs, every task)")
        modes = request.mode.serves
        refs = build_references(model, specs, profile.height, profile.width, modes)
        if refs_reusable and previous is not None:
            for f in previous.references.values():
                _link(out / f, tmp / f)
            references_files = dict(previous.references)
        else:
            references_files = refs.save(tmp)

        # What the pass schedule reads of the manifest (sizes, feature taps) is known before the checks.
        draft = Manifest(
            preset=preset.to_dict(),
            mode=request.mode,
            profile=profile,
            components=entries,
            features=feature_specs(preset) if request.mode is Mode.MULTI else (),
            latent_scale=model.vae.scale,
            latent_channels=int(preset.vae["latent_channels"]),
        )
        random_checks = _random_checks(model, specs)
        source = dict(model.source)
        # From here on only onnxruntime runs: the torch weights (8 GB at the official size) go first, so the
        # fp32 and fp16 sessions never share the memory with them.
        del model
        gc.collect()
        comparators = _verify(tmp, specs, entries, refs, draft, random_checks, progress)
        parity: dict[str, Any] = {}
        worst: dict[str, float] = {t.key: 0.0 for t in TASKS}
        for precision, comparator in comparators.items():
            for component, entry in entries[precision].items():
                entry.parity = comparator.summary(prefix=f"{component.value}/")
            parity[precision.value] = {}
            for mode in modes:
                parity[precision.value][mode.value] = {
                    t.key: comparator.summary(prefix=f"e2e/{mode.value}/{t.key}/") for t in TASKS
                }
                for t in TASKS:
                    worst[t.key] = max(worst[t.key], parity[precision.value][mode.value][t.key]["image"]["max_abs"])
            comparator.check(f"{precision.value} parity with the torch model")

        carried = _carry_over(out, tmp, previous, reused, fingerprints, progress)
        for p, comps in carried.items():
            entries[p] = comps

        manifest = replace(
            draft,
            components=entries,
            tolerance={k: round_up(max(TOLERANCE_FLOOR, 2.0 * v)) for k, v in worst.items()},
            source={
                "checkpoint": str(request.checkpoint),
                "checkpoint_sha256": digest,
                "model": {k: v for k, v in source.items() if isinstance(v, (str, int, float, bool)) or v is None},
                "exporter": request.options.exporter.value,
                "opset": request.options.opset,
                "libraries": _library_versions(Precision.FP16 if Precision.FP16 in request.precisions else Precision.FP32),
                "fingerprints": fingerprints,
                "references_fingerprint": ref_fingerprint,
                **({"tiny_decoder": _tiny_record(tiny_dir, refs)} if tiny_dir is not None else {}),
            },
            references=references_files,
            parity=parity,
        )
        manifest.files = {
            p.relative_to(tmp).as_posix(): file_sha256(p)
            for p in sorted(tmp.rglob("*"))
            if p.is_file() and p.relative_to(tmp).parts[0] != ENGINES_DIR and p.name not in (MANIFEST_NAME, MARKER_NAME)
        }
        manifest.save(tmp)
    return ExportResult(manifest, out, reused, exported, comparators)


def _tiny_record(folder: Path, refs: ReferenceSet) -> dict[str, Any]:
    """What the manifest says of the distilled decoder: where it came from and how close it decodes."""
    record = read_tiny_decoder_record(folder)
    keep = {k: record[k] for k in ("teacher", "mode", "steps", "final_loss", "size", "source") if k in record}
    return {**keep, "folder": str(folder), "image_mae_vs_full_decoder": tiny_decoder_agreement(refs)}


def _random_checks(model: StableMTL, specs: dict[Component, ComponentSpec]) -> dict[Component, tuple[Feeds, Feeds]]:
    """Random inputs per component and the torch model's outputs on them."""
    reference = torch_runner(model, specs)
    generator = torch.Generator().manual_seed(1234)
    checks = {}
    for c, s in specs.items():
        feeds = {n: a.numpy() for n, a in zip(s.input_names, s.example(2, generator))}
        checks[c] = (feeds, reference(c, feeds))
    return checks


def _verify(
    directory: Path,
    specs: dict[Component, ComponentSpec],
    entries: dict[Precision, dict[Component, ComponentEntry]],
    refs: ReferenceSet,
    manifest: Manifest,
    random_checks: dict[Component, tuple[Feeds, Feeds]],
    progress: Progress,
) -> dict[Precision, Comparator]:
    """onnxruntime vs torch: per component on random inputs, then the references through the schedule, one
    precision's sessions open at a time."""
    results = {}
    for precision, comps in entries.items():
        comparator = default_comparator(precision)
        sessions = OrtSessions(directory, comps)
        for component, spec in specs.items():
            progress(f"verifying {precision.value}/{component.value} (random inputs)")
            feeds, expected = random_checks[component]
            compare_component(comparator, sessions, spec, feeds, expected, "random")
        check_references(comparator, manifest, sessions.runners(), refs, progress=progress,
                         label=f"verifying {precision.value}/")
        results[precision] = comparator
        del sessions  # before the next precision's sessions open
        gc.collect()
    return results


def _carry_over(
    out: Path, tmp: Path, previous: Manifest | None, reused: list[str], fingerprints: dict[str, str], progress: Progress
) -> dict[Precision, dict[Component, ComponentEntry]]:
    """Keep what other tools added to the previous artifact when it is still valid.

    Engines are kept as they are (each carries its own key, checked before use). int8 graphs are kept
    only when every fp32 graph they were calibrated from is unchanged.
    """
    if previous is None:
        return {}
    if (out / ENGINES_DIR).is_dir():
        for f in (out / ENGINES_DIR).rglob("*"):
            if f.is_file():
                _link(f, tmp / f.relative_to(out))
    carried = {}
    fp32_keys = [k for k in fingerprints if k.startswith(f"{Precision.FP32.value}/")]
    for p in previous.precisions():
        if p in (Precision.FP32, Precision.FP16):
            continue
        if all(k in reused for k in fp32_keys):
            files = [f for e in previous.components[p].values() for f in e.paths()]
            if _intact(out, previous, files) or all((out / f).is_file() for f in files):
                for f in files:
                    _link(out / f, tmp / f)
                carried[p] = previous.components[p]
                continue
        progress(f"dropping the {p.value} graphs: they were made from the previous fp32 graphs; re-run calibration")
    return carried
