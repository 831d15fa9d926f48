"""Export-time parity of the graphs with the torch model, and the references a target re-checks.

Every component runs in onnxruntime (CPU) on random inputs and on real photographs (scikit-image's
astronaut, coffee, chelsea, rocket and the motorcycle stereo pair, cropped and resized to the profile), and
the full pipeline runs per task in each mode through the runtime's own pass schedule
(:func:`~stablemtl_edge.artifact.references.check_references`); all results go through one
:class:`~stablemtl_edge.artifact.compare.Comparator`. The photograph inputs and torch outputs are stored as
the artifact's :class:`~stablemtl_edge.artifact.references.ReferenceSet`, which ``stablemtl-doctor --verify``
checks later on a target without torch or the checkpoint.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

import cv2
import numpy as np
import torch

from ..artifact.compare import Comparator
from ..artifact.manifest import Component, ComponentEntry, Mode, aux_feature_name
from ..artifact.references import Feeds, ReferenceSet
from ..errors import MissingDependencyError, StableMTLError
from ..model.stablemtl import StableMTL, unet_input
from ..tasks import NUM_TASKS, TASKS
from .components import ComponentSpec

__all__ = [
    "PHOTOGRAPHS",
    "photographs",
    "stereo_pair",
    "OrtSessions",
    "torch_runner",
    "build_references",
    "compare_component",
    "tiny_decoder_agreement",
]

PHOTOGRAPHS = ("astronaut", "coffee", "chelsea", "rocket")
RunFn = Callable[[Component, Feeds], Feeds]


# -- inputs --------------------------------------------------------------------------------------------------
def _fit(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Centre-crop to the target aspect ratio, then resize (area filter) to ``height x width``."""
    h, w = image.shape[:2]
    scale = min(h / height, w / width)
    ch, cw = int(round(height * scale)), int(round(width * scale))
    top, left = (h - ch) // 2, (w - cw) // 2
    crop = np.ascontiguousarray(image[top : top + ch, left : left + cw, :3])
    return cv2.resize(crop, (width, height), interpolation=cv2.INTER_AREA).astype(np.uint8)


def _skimage_data():  # noqa: ANN202
    try:
        import skimage.data
    except ImportError:
        raise MissingDependencyError("scikit-image", "export", "the photograph parity checks") from None
    return skimage.data


def photographs(height: int, width: int) -> np.ndarray:
    """The four scikit-image photographs as uint8 RGB ``[4, height, width, 3]``."""
    data = _skimage_data()
    return np.stack([_fit(getattr(data, name)(), height, width) for name in PHOTOGRAPHS])


def stereo_pair(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """scikit-image's motorcycle stereo pair (left, right): a real two-frame input for the flow tasks."""
    left, right, _ = _skimage_data().stereo_motorcycle()
    return _fit(left, height, width), _fit(right, height, width)


# -- running -------------------------------------------------------------------------------------------------
class OrtSessions:
    """onnxruntime CPU sessions for the components of one precision, opened on first use.

    The export-time checker: the graphs are checked where they were written, before an artifact exists for
    the runtime to open. :meth:`runner` gives the pass schedule a component as a runner.
    """

    def __init__(self, directory: str | Path, entries: Mapping[Component, ComponentEntry], threads: int = 0) -> None:
        self.directory = Path(directory)
        self.entries = dict(entries)
        self.threads = threads
        self.sessions: dict[Component, object] = {}

    def session(self, component: Component):  # noqa: ANN201
        import onnxruntime as ort

        if component not in self.sessions:
            entry = self.entries.get(component)
            if entry is None:
                raise StableMTLError(f"the artifact has no `{component.value}` component")
            path = self.directory / entry.file
            options = ort.SessionOptions()
            options.log_severity_level = 3
            if self.threads:
                options.intra_op_num_threads = self.threads
            try:
                self.sessions[component] = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
            except Exception as e:  # onnxruntime raises its own exception types for bad files
                first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                raise StableMTLError(
                    f"onnxruntime cannot load `{path}` ({first[:200]}); the file is corrupt: re-export the model"
                ) from None
        return self.sessions[component]

    def __call__(self, component: Component, feeds: Feeds, output_names: Sequence[str] | None = None) -> Feeds:
        session = self.session(component)
        names = list(output_names) if output_names is not None else [o.name for o in session.get_outputs()]
        return dict(zip(names, session.run(names, dict(feeds))))

    def runner(self, component: Component) -> _SessionRunner:
        return _SessionRunner(self, component)

    def runners(self) -> dict[Component, _SessionRunner]:
        return {c: self.runner(c) for c in self.entries}


class _SessionRunner:
    """One component of :class:`OrtSessions` with the :class:`~stablemtl_edge.artifact.schedule.Runner` call."""

    def __init__(self, sessions: OrtSessions, component: Component) -> None:
        self.sessions, self.component = sessions, component

    def infer(self, feed: Mapping[str, np.ndarray], output_names: Sequence[str] | None = None) -> Feeds:
        return self.sessions(self.component, dict(feed), output_names)


def torch_runner(model: StableMTL, specs: Mapping[Component, ComponentSpec]) -> RunFn:
    """The same ``run(component, feeds)`` interface over the torch wrappers (the reference)."""
    modules = {c: s.factory(model).eval() for c, s in specs.items()}

    @torch.no_grad()
    def run(component: Component, feeds: Feeds) -> Feeds:
        spec = specs[component]
        out = modules[component](*(torch.from_numpy(np.ascontiguousarray(feeds[n])) for n in spec.input_names))
        out = out if isinstance(out, tuple) else (out,)
        return {n: o.numpy() for n, o in zip(spec.output_names, out)}

    return run


# -- references ----------------------------------------------------------------------------------------------
def _photo_inputs(model: StableMTL, specs: Mapping[Component, ComponentSpec], height: int, width: int) -> dict[Component, Feeds]:
    """Real-image inputs per component: photographs, their latents, their auxiliary features."""
    photos = photographs(height, width)
    left, right = stereo_pair(height, width)
    with torch.no_grad():
        z = model.encode(np.concatenate([photos, left[None], right[None]]))
        ids = torch.tensor([1, 3, 2, 6], dtype=torch.long)  # depth, optical flow (stereo), semantic, shading
        rows = [unet_input(z[0:1]), unet_input(z[4:5], z[5:6]), unet_input(z[1:2]), unet_input(z[2:3])]
        samples = torch.cat(rows)
        inputs: dict[Component, Feeds] = {
            Component.ENCODER: {"image": photos},
            Component.UNET: {"sample": samples.numpy(), "task_id": ids.numpy()},
            Component.DECODER: {"latent": z[:4].numpy()},
        }
        if Component.UNET_MAIN in specs:
            # the auxiliary features of the first image for all seven tasks, once: the graph broadcasts them
            _, feats = model.run_auxiliary(samples[:1].expand(NUM_TASKS, -1, -1, -1), torch.arange(NUM_TASKS))
            main = {"sample": samples.numpy(), "task_id": ids.numpy()}
            for i, f in enumerate(feats):
                main[aux_feature_name(i)] = f[None].numpy()  # [1, 7, N, C]
            inputs[Component.UNET_MAIN] = main
    return {c: inputs[c] for c in specs if c in inputs}


def build_references(
    model: StableMTL, specs: Mapping[Component, ComponentSpec], height: int, width: int, modes: Iterable[Mode]
) -> ReferenceSet:
    """Torch outputs on the photograph inputs and the end-to-end results of every task in each mode."""
    run = torch_runner(model, specs)
    components = {}
    for c, feeds in _photo_inputs(model, specs, height, width).items():
        components[c] = (feeds, run(c, feeds))
    frames = stereo_pair(height, width)
    e2e = {}
    with torch.no_grad():
        for mode in modes:
            _, latents = model.predict_latents(frames[0], frames[1], None, mode)
            e2e[mode] = (latents.numpy(), model.decode(latents).numpy())
    if Component.TINY_DECODER in specs:
        # The distilled decoder is checked on what it decodes in service: the predicted task latents.
        feeds = {"latent": next(iter(e2e.values()))[0]}
        components[Component.TINY_DECODER] = (feeds, run(Component.TINY_DECODER, feeds))
    return ReferenceSet(components, frames, e2e)


def tiny_decoder_agreement(refs: ReferenceSet) -> dict[str, float]:
    """Per task, the mean absolute difference of the distilled decoder's image from the full decoder's
    (on the stored end-to-end latents, in [-1, 1] image units): what the manifest records beside it."""
    _, images = next(iter(refs.end_to_end.values()))
    tiny = refs.components[Component.TINY_DECODER][1]["image"]
    return {t.key: float(np.abs(tiny[t.index] - images[t.index]).mean()) for t in TASKS}


# -- checks --------------------------------------------------------------------------------------------------
def compare_component(
    comparator: Comparator, run: RunFn, spec: ComponentSpec, feeds: Feeds, expected: Feeds, label: str
) -> None:
    """Compare ``run`` on ``feeds`` with the expected outputs of every output of the component."""
    actual = run(spec.component, feeds)
    for name in spec.output_names:
        comparator.compare(f"{spec.component.value}/{label}/{name}", actual[name], expected[name])
