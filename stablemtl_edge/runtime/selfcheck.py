"""An artifact checks itself on the target: every file's sha256, then its references through the runtime.

Needs only the base install (numpy, onnxruntime): no torch, no checkpoint. The graphs run in the runtime's
own onnxruntime runners and pass schedule (:func:`~stablemtl_edge.artifact.references.check_references`),
so what passes here is what serves frames. Every file is read once for its digest, in full (no digest
cache: this is the deep check). ``stablemtl-doctor --artifacts DIR --verify`` runs it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from pathlib import Path

from ..artifact.compare import Comparator, Tolerance, default_comparator
from ..artifact.digest import file_sha256
from ..artifact.manifest import Manifest, Precision
from ..artifact.references import ReferenceSet, check_references
from ..errors import StableMTLError
from ..tasks import TASK_NAMES
from .backends import create_runner
from .backends.base import Backend, BaseRunner

__all__ = ["check_files", "check_parity", "record_parity"]


def check_files(directory: str | Path, manifest: Manifest, progress: Callable[[str], None] = lambda _: None) -> int:
    """Hash every file the manifest lists, once and in full; return how many were checked.

    Raises:
        StableMTLError: a missing or changed file, or a graph or external-data file the manifest does not
            list (it could not be checked).
    """
    directory = Path(directory)
    listed = dict(manifest.files)
    for comps in manifest.components.values():
        for e in comps.values():
            for rel in e.paths():
                if rel not in listed:
                    raise StableMTLError(f"`{directory / rel}`: the manifest records no sha256 for it, so it cannot "
                                         "be checked; re-export the model")
    for i, (rel, digest) in enumerate(sorted(listed.items())):
        path = directory / rel
        progress(f"sha256 {i + 1}/{len(listed)}: {rel}")
        if not path.is_file():
            raise StableMTLError(f"`{path}` named by the manifest is missing; re-export the model")
        actual = file_sha256(path)
        if actual != digest:
            raise StableMTLError(f"`{path}` does not match the manifest (sha256 {actual[:12]}... != {digest[:12]}...): "
                                 "the file was changed or truncated; re-export the model")
    return len(listed)


def check_parity(
    directory: str | Path,
    manifest: Manifest,
    precisions: Iterable[Precision] | None = None,
    threads: int | None = None,
    overrides: Mapping[str, float] | None = None,
    progress: Callable[[str], None] = lambda _: None,
    backend: Backend = Backend.ONNXRUNTIME,
) -> dict[Precision, Comparator]:
    """The stored references per precision through onnxruntime (CPU), or through the cached TensorRT engines:
    components, then every task end to end. int8 is held to what calibration recorded
    (:func:`record_parity`), fp32 and fp16 to the export's bounds.

    Failures are recorded in the returned comparators (``failures()``), not raised; files are not hashed
    here (:func:`check_files` does that once).
    """
    directory = Path(directory)
    refs = ReferenceSet.load(directory, manifest)
    results = {}
    for precision in precisions or manifest.precisions():
        recorded = manifest.recorded_parity(precision) if precision is Precision.INT8 else None
        comparator = default_comparator(precision, manifest.tolerance, overrides, recorded)
        _run_references(comparator, directory, manifest, precision, refs, threads, progress, backend)
        results[precision] = comparator
    return results


def record_parity(
    directory: str | Path,
    manifest: Manifest,
    precision: Precision,
    threads: int | None = None,
    progress: Callable[[str], None] = lambda _: None,
) -> Manifest:
    """``manifest`` with the errors of ``precision``'s graphs on the stored references recorded (per component
    in the entries that run in ``precision``, end to end in ``parity``): what a later :func:`check_parity`
    holds them to.

    Calibration calls it once the int8 set is final; nothing is judged here (the accuracy gate did that).
    """
    directory = Path(directory)
    comparator = Comparator({}, Tolerance(math.inf))
    refs = ReferenceSet.load(directory, manifest)
    _run_references(comparator, directory, manifest, precision, refs, threads, progress, Backend.ONNXRUNTIME)
    entries = {c: replace(e, parity=comparator.summary(prefix=f"{c.value}/")) if e.precision is precision else e
               for c, e in manifest.components[precision].items()}  # a fallback graph keeps its export record
    end_to_end = {m.value: {t: comparator.summary(prefix=f"e2e/{m.value}/{t}/") for t in TASK_NAMES}
                  for m in manifest.mode.serves}
    return replace(manifest, components={**manifest.components, precision: entries},
                   parity={**manifest.parity, precision.value: end_to_end})


def _run_references(comparator: Comparator, directory: Path, manifest: Manifest, precision: Precision,
                    refs: ReferenceSet, threads: int | None, progress: Callable[[str], None], backend: Backend) -> None:
    runners: dict = {}
    try:
        for c in manifest.components[precision]:  # the optional tiny_decoder included
            entry = manifest.entry(precision, c)
            runner: BaseRunner = (create_runner(backend, directory, entry) if backend is Backend.TENSORRT else
                                  create_runner(Backend.ONNXRUNTIME, directory, entry,
                                                providers=["CPUExecutionProvider"], threads=threads))
            runner.activate()
            runners[c] = runner
        check_references(comparator, manifest, runners, refs, progress=progress, label=f"{precision.value}/")
    finally:
        for r in runners.values():
            r.deactivate()
