"""The artifact's stored ground truth, and the one check that runs it through the pass schedule.

At export, torch computes the outputs of every component on real photographs and the end-to-end result of
every task in each mode; they are stored under ``reference/`` (uncompressed ``.npz``: byte-identical for
identical arrays, so a re-export can reuse them and their sha256). :func:`check_references` feeds them to
any set of runners through :class:`~.schedule.Scheduler`: export runs it on its fresh graphs, and
``stablemtl-doctor --verify`` on a target with only the base install, so both check the pipeline that
serves frames rather than a copy of it. numpy only.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import StableMTLError
from ..tasks import NUM_TASKS, TASKS
from .compare import Comparator
from .layout import END_TO_END, REFERENCE_DIR, reference_file
from .manifest import Component, Manifest, Mode
from .schedule import RowLimited, Runner, Scheduler

__all__ = ["Feeds", "ReferenceSet", "check_references", "E2E_PIXELS_PER_CALL"]

Feeds = dict[str, np.ndarray]
# Pixels per call in the end-to-end check: two frames at the official 384x512. All seven rows in one call
# needed more than 24 GB of RAM in onnxruntime at that size.
E2E_PIXELS_PER_CALL = 2 * 384 * 512


@dataclass
class ReferenceSet:
    """Photograph inputs and torch outputs per component, and the end-to-end frames and results."""

    components: dict[Component, tuple[Feeds, Feeds]]
    frames: tuple[np.ndarray, np.ndarray]
    end_to_end: dict[Mode, tuple[np.ndarray, np.ndarray]]  # mode -> (latents, images) for all 7 tasks

    def save(self, directory: str | Path) -> dict[str, str]:
        """Write ``reference/<name>.npz``; return ``{name: relative file}`` for the manifest."""
        directory = Path(directory)
        (directory / REFERENCE_DIR).mkdir(parents=True, exist_ok=True)
        files = {}
        for component, (inputs, outputs) in self.components.items():
            files[component.value] = _save(directory, component.value, inputs, outputs)
        outputs = {}
        for mode, (latents, images) in self.end_to_end.items():
            outputs[f"{mode.value}.latent"], outputs[f"{mode.value}.image"] = latents, images
        files[END_TO_END] = _save(directory, END_TO_END, {"frame1": self.frames[0], "frame2": self.frames[1]}, outputs)
        return files

    @classmethod
    def load(cls, directory: str | Path, manifest: Manifest) -> ReferenceSet:
        """The references the manifest names (components without one are left out)."""
        directory = Path(directory)
        if END_TO_END not in manifest.references:
            raise StableMTLError(f"`{directory}` holds no reference data; re-export it with this version")
        components = {}
        for c in Component:
            if c.value in manifest.references:
                components[c] = _load(directory / manifest.references[c.value])
        inputs, outputs = _load(directory / manifest.references[END_TO_END])
        try:
            frames = (inputs["frame1"], inputs["frame2"])
            e2e = {m: (outputs[f"{m.value}.latent"], outputs[f"{m.value}.image"]) for m in manifest.mode.serves}
        except KeyError as e:
            raise StableMTLError(f"`{directory / manifest.references[END_TO_END]}` lacks {e}; re-export the model") from None
        return cls(components, frames, e2e)


def _save(directory: Path, name: str, inputs: Mapping[str, np.ndarray], outputs: Mapping[str, np.ndarray]) -> str:
    rel = reference_file(name)
    arrays = {f"in.{k}": v for k, v in inputs.items()} | {f"out.{k}": v for k, v in outputs.items()}
    with open(directory / rel, "wb") as f:
        np.savez(f, **arrays)
    return rel


def _load(path: Path) -> tuple[Feeds, Feeds]:
    try:
        with np.load(path) as data:
            inputs = {k[3:]: data[k] for k in data.files if k.startswith("in.")}
            outputs = {k[4:]: data[k] for k in data.files if k.startswith("out.")}
    except (OSError, ValueError) as e:
        raise StableMTLError(f"reference `{path}` cannot be read ({e}); re-export the model") from None
    return inputs, outputs


def check_references(
    comparator: Comparator,
    manifest: Manifest,
    runners: Mapping[Component, Runner],
    refs: ReferenceSet,
    modes: Iterable[Mode] | None = None,
    progress: Callable[[str], None] = lambda _: None,
    label: str = "",
) -> Comparator:
    """Every component on its photograph reference, then all seven tasks end to end per mode.

    Results land in ``comparator`` under ``<component>/photo/<output>`` and
    ``e2e/<mode>/<task>/{latent,image}``; a failure is recorded, not raised (``comparator.check`` does).
    """
    for component, runner in runners.items():
        if component not in refs.components:
            continue
        progress(f"{label}{component.value} (photographs)")
        feeds, expected = refs.components[component]
        actual = runner.infer(feeds)
        for name, value in expected.items():
            if name not in actual:
                raise StableMTLError(f"`{component.value}` has no output `{name}` that its reference holds; "
                                     "the artifact is inconsistent: re-export it")
            comparator.compare(f"{component.value}/photo/{name}", actual[name], value)
    frame1, frame2 = refs.frames
    rows = max(1, E2E_PIXELS_PER_CALL // (frame1.shape[0] * frame1.shape[1]))
    limited = {c: RowLimited(r, rows) for c, r in runners.items()}
    for mode in modes if modes is not None else manifest.mode.serves:
        progress(f"{label}end to end ({mode.value}-stream, all tasks)")
        latents, images = refs.end_to_end[mode]
        scheduler = Scheduler(manifest, {c: limited[c] for c in mode.components}, TASKS, mode)  # the full decoder
        out = scheduler.predict(np.ascontiguousarray(frame1), np.ascontiguousarray(frame2), {})
        if scheduler.last_latents is None or len(out) != NUM_TASKS:
            raise StableMTLError(f"the {mode.value}-stream schedule returned {len(out)} of {NUM_TASKS} tasks")
        for t in TASKS:
            comparator.compare(f"e2e/{mode.value}/{t.key}/latent", scheduler.last_latents[t.index], latents[t.index])
            comparator.compare(f"e2e/{mode.value}/{t.key}/image", out[t.key], images[t.index])
    return comparator
