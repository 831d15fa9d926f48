"""TensorRT engine building on the target (TensorRT 10 / 11 Python API), strongly typed.

Each graph of the requested precision (fp16 graphs, or int8 QDQ graphs from calibration) is parsed into a
*strongly-typed* network, so TensorRT follows the types written in the ONNX (TensorRT 11 has no other
mode; TensorRT 10 on JetPack 6 supports it too). The optimisation profile comes from the manifest's
:class:`~stablemtl_edge.artifact.manifest.ShapeProfile`; the builder optimisation level, workspace limit and a
timing cache (``engines/timing.cache``, shared by builds on one machine) are options; build phases are
reported through ``IProgressMonitor`` when this TensorRT has it. Engines go to the cache of
:mod:`stablemtl_edge.artifact.engine_cache`: a cached engine is reused only when its key and plan match.

Only :func:`build_engines` and the classes it uses touch TensorRT; the shape translation is plain data.
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from ..atomic import atomic_path, atomic_write_bytes
from ..errors import StableMTLError
from ..artifact.manifest import (Component, ComponentEntry, FeatureSpec, Manifest, Precision, QdqTarget, ShapeProfile,
                                 file_sha256)
from ..artifact.layout import ENGINE_FILE, ENGINES_DIR, TIMING_CACHE_FILE
from ..artifact.engine_cache import (
    CacheStatus,
    EngineKey,
    EngineRecord,
    EngineTarget,
    engine_dir,
    validate,
    write_record,
)

__all__ = [
    "TENSORRT_MISSING",
    "BuildOptions",
    "BuiltEngine",
    "profile_shapes",
    "probe_target",
    "build_engines",
]

TENSORRT_MISSING = (
    "TensorRT is not installed: building engines needs an NVIDIA GPU with TensorRT 10+ (JetPack on Jetson, "
    "or `pip install tensorrt` from NVIDIA's package index on a workstation)"
)
Shape = tuple[int, ...]
Say = Callable[[str], None]


def _tensorrt() -> ModuleType:
    try:
        return importlib.import_module("tensorrt")
    except ImportError:
        raise StableMTLError(TENSORRT_MISSING) from None


@dataclass(frozen=True)
class BuildOptions:
    """Builder settings (recorded in ``engine.json``; they are not part of the key).

    Attributes:
        optimization_level: TensorRT's builder optimisation level, 0 (fast build) to 5 (slow, fastest engine).
        workspace_gib: limit of the workspace memory pool.
        timing_cache: timing cache file; None = ``DIR/engines/timing.cache``.
        rebuild: rebuild even when a matching engine is cached.
    """

    optimization_level: int = 3
    workspace_gib: float = 4.0
    timing_cache: Path | None = None
    rebuild: bool = False

    def __post_init__(self) -> None:
        if not 0 <= self.optimization_level <= 5:
            raise StableMTLError(f"--optimization-level {self.optimization_level} is outside 0..5")
        if self.workspace_gib <= 0:
            raise StableMTLError(f"--workspace {self.workspace_gib} GiB must be positive")


@dataclass(frozen=True)
class BuiltEngine:
    component: Component
    precision: Precision
    plan: Path
    reused: bool


def _dims(profile: ShapeProfile, features: tuple[FeatureSpec, ...]) -> dict[str, tuple[int, int, int]]:
    """(min, opt, max) of every symbolic dimension name the exported graphs use."""
    lo = profile.min_hw or (profile.height, profile.width)
    opt = (profile.height, profile.width)
    hi = profile.max_hw or (profile.height, profile.width)
    dims = {
        "batch": (profile.min_batch, profile.opt_batch, profile.max_batch),
        "height": (lo[0], opt[0], hi[0]),
        "width": (lo[1], opt[1], hi[1]),
        "latent_height": (lo[0] // 8, opt[0] // 8, hi[0] // 8),
        "latent_width": (lo[1] // 8, opt[1] // 8, hi[1] // 8),
    }
    for f in features:
        dims[f"tokens_{f.index:02d}"] = tuple(f.tokens((hw[0] // 8, hw[1] // 8)) for hw in (lo, opt, hi))  # type: ignore[assignment]
    return dims


def profile_shapes(
    entry: ComponentEntry, profile: ShapeProfile, features: tuple[FeatureSpec, ...]
) -> dict[str, tuple[Shape, Shape, Shape]]:
    """The optimisation profile of one graph: ``{input name: (min, opt, max)}`` from the manifest.

    Raises:
        StableMTLError: an input dimension the profile does not describe (a manifest from another version).
    """
    dims = _dims(profile, features)
    shapes = {}
    for t in entry.inputs:
        mins, opts, maxs = [], [], []
        for d in t.shape:
            if isinstance(d, int):
                triple = (d, d, d)
            elif d in dims:
                triple = dims[d]
            else:
                raise StableMTLError(
                    f"{entry.component.value}: input `{t.name}` has a dimension `{d}` the shape profile does not "
                    "describe; re-export the model with this version"
                )
            mins.append(triple[0])
            opts.append(triple[1])
            maxs.append(triple[2])
        shapes[t.name] = (tuple(mins), tuple(opts), tuple(maxs))
    return shapes


def probe_target(trt: ModuleType, device: int = 0) -> EngineTarget:
    """This machine's TensorRT version and GPU (name, compute capability) through cuda-python."""
    from .. import cuda

    name, cc = cuda.device_info(device)
    return EngineTarget(str(trt.__version__), name, cc)


def _progress_monitor(trt: ModuleType, say: Say) -> Any:
    """An ``IProgressMonitor`` printing build phases (TensorRT >= 10), or None on older versions."""
    base = getattr(trt, "IProgressMonitor", None)
    if base is None:
        return None

    class PhaseMonitor(base):  # type: ignore[misc, valid-type]
        def __init__(self) -> None:
            base.__init__(self)
            self.steps: dict[str, int] = {}

        def phase_start(self, phase_name: str, parent_phase: str | None, num_steps: int) -> None:
            self.steps[phase_name] = num_steps
            indent = "  " if parent_phase else ""
            say(f"{indent}{phase_name} ({num_steps} steps)")

        def step_complete(self, phase_name: str, step: int) -> bool:
            return True  # never cancel

        def phase_finish(self, phase_name: str) -> None:
            self.steps.pop(phase_name, None)

    return PhaseMonitor()


def _build_one(
    trt: ModuleType,
    onnx_path: Path,
    shapes: dict[str, tuple[Shape, Shape, Shape]],
    options: BuildOptions,
    cache_path: Path,
    say: Say,
) -> bytes:
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise StableMTLError(f"TensorRT cannot parse `{onnx_path}`: {errors[:400]}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(options.workspace_gib * 1024**3))
    config.builder_optimization_level = options.optimization_level
    monitor = _progress_monitor(trt, say)
    if monitor is not None:
        config.progress_monitor = monitor
    cache = config.create_timing_cache(cache_path.read_bytes() if cache_path.is_file() else b"")
    config.set_timing_cache(cache, ignore_mismatch=False)
    profile = builder.create_optimization_profile()
    for name, (lo, opt, hi) in shapes.items():
        profile.set_shape(name, lo, opt, hi)
    config.add_optimization_profile(profile)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise StableMTLError(f"TensorRT failed to build `{onnx_path}` (see its log above)")
    atomic_write_bytes(cache_path, bytes(config.get_timing_cache().serialize()))
    return bytes(plan)


def _check_placement(directory: Path, manifest: Manifest, precision: Precision) -> None:
    """Refuse int8 graphs placed for onnxruntime before TensorRT's parser fails on their uint8 Q/DQ."""
    placed = [c.value for c, e in manifest.components[precision].items()
              if e.qdq_target is QdqTarget.ONNXRUNTIME]
    if placed:
        raise StableMTLError(
            f"`{directory}`: the int8 graphs of {', '.join(placed)} are placed for onnxruntime (uint8 activations), "
            "which TensorRT does not take: calibrate again with `stablemtl-calibrate --target tensorrt`"
        )


def build_engines(
    directory: Path, precision: Precision, options: BuildOptions = BuildOptions(), say: Say = lambda _: None
) -> list[BuiltEngine]:
    """Build (or reuse) the engines of every component of ``precision`` in the artifact ``directory``.

    Raises:
        StableMTLError: TensorRT missing, no graphs of this precision, a changed ONNX file, a failed build.
    """
    manifest = Manifest.load(directory)
    if precision not in manifest.components:
        have = ", ".join(p.value for p in manifest.precisions())
        hint = "run `stablemtl-calibrate` first" if precision is Precision.INT8 else "re-export with it"
        raise StableMTLError(f"`{directory}` has no {precision.value} graphs (it has {have}); {hint}")
    _check_placement(directory, manifest, precision)
    trt = _tensorrt()
    manifest.verify_files(directory, [precision])
    target = probe_target(trt)
    say(f"building {precision.value} engines for {target.describe()}")
    cache_path = options.timing_cache or directory / ENGINES_DIR / TIMING_CACHE_FILE
    built = []
    for component, entry in manifest.components[precision].items():
        key = EngineKey(entry.sha256, precision, manifest.profile, target)
        check = validate(directory, key, component)
        if check and not options.rebuild:
            say(f"{component.value}: cached engine {check.directory.name[:12]} matches, reused")
            built.append(BuiltEngine(component, precision, check.plan, True))
            continue
        if check.status in (CacheStatus.MISMATCH, CacheStatus.CORRUPT):
            say(f"{component.value}: rebuilding ({check.reason})")
        shapes = profile_shapes(entry, manifest.profile, manifest.features)
        say(f"{component.value}: building from {entry.file}")
        start = time.monotonic()
        plan = _build_one(trt, directory / entry.file, shapes, options, cache_path, say)
        out = engine_dir(directory, key)
        with atomic_path(out / ENGINE_FILE) as tmp:
            tmp.write_bytes(plan)
        build = {**asdict(options), "timing_cache": str(cache_path), "seconds": round(time.monotonic() - start, 1),
                 "shapes": {k: [list(s) for s in v] for k, v in shapes.items()}}
        write_record(out, EngineRecord.for_key(key, component, file_sha256(out / ENGINE_FILE), build))
        built.append(BuiltEngine(component, precision, out / ENGINE_FILE, False))
    return built
