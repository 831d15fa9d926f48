"""``stablemtl-doctor``: what this machine can run, and whether an artifact directory is sound.

Reports versions (Python, numpy, OpenCV, onnxruntime, TensorRT, CUDA), the onnxruntime providers that
*really* start (a tiny session is created on each one and ``get_providers()`` checked, since e.g.
onnxruntime-gpu lists CUDA and silently falls back to CPU without a driver), the GPU, OpenCV's window and
video support, and, with ``--artifacts``, the manifest, every file's sha256, the cached TensorRT engines
against this machine, and one real inference per precision. ``--verify`` makes the artifact checks deep
(:mod:`.selfcheck`): every file hashed in full, and the stored references run through the runtime per
precision, components and every task end to end. Exit status 1 when any check fails.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import importlib.util
import json
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np

from ..atomic import atomic_write_text
from ..errors import StableMTLError
from ..artifact.manifest import Manifest, Precision
from ..cli.parsers import parse_precisions, parse_tolerance_overrides, positive_int
from ..cli.shell import HelpFormatter, add_artifact_args, describe, run_cli
from .sinks import opencv_has_gui
from ..records import KeyEnum

__all__ = [
    "Status",
    "Check",
    "environment_checks",
    "provider_checks",
    "artifact_checks",
    "probe_model",
    "render",
    "main",
]


class Status(KeyEnum):
    OK = "ok"
    WARN = "warn"  #: works, but not as well as it could (a fallback, a missing optional piece)
    FAIL = "fail"  #: broken: the exit status becomes 1
    SKIP = "skip"  #: not applicable here


@dataclass(frozen=True)
class Check:
    """One line of the report."""

    section: str
    name: str
    status: Status
    detail: str

    def to_dict(self) -> dict[str, str]:
        d = asdict(self)
        d["status"] = self.status.value
        return d


# -- a tiny ONNX model without the `onnx` package (the robot's image has only onnxruntime) -----------------
def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field(number: int, value: bytes | str | int) -> bytes:
    """One protobuf field: varint for ints, length-delimited for bytes/str/sub-messages."""
    if isinstance(value, int):
        return _varint(number << 3) + _varint(value)
    data = value.encode() if isinstance(value, str) else value
    return _varint(number << 3 | 2) + _varint(len(data)) + data


def _tensor_value_info(name: str, dims: Sequence[int]) -> bytes:
    shape = b"".join(_field(1, _field(1, d)) for d in dims)  # TensorShapeProto.dim{dim_value}
    tensor_type = _field(1, 1) + _field(2, shape)  # elem_type FLOAT, shape
    return _field(1, name) + _field(2, _field(1, tensor_type))  # ValueInfoProto{name, type{tensor_type}}


def probe_model() -> bytes:
    """A serialized ONNX model ``y = x + x`` (float32 (1, 4), opset 13, IR 7), written field by field.

    The field numbers are those of ``onnx.proto`` (ModelProto: ir_version 1, producer_name 2, graph 7,
    opset_import 8; GraphProto: node 1, name 2, input 11, output 12; NodeProto: input 1, output 2,
    name 3, op_type 4).
    """
    node = _field(1, "x") + _field(1, "x") + _field(2, "y") + _field(3, "add") + _field(4, "Add")
    graph = (
        _field(1, node) + _field(2, "stablemtl-doctor-probe")
        + _field(11, _tensor_value_info("x", (1, 4))) + _field(12, _tensor_value_info("y", (1, 4)))
    )  # fmt: skip
    opset = _field(1, "") + _field(2, 13)
    return _field(1, 7) + _field(2, "stablemtl-doctor") + _field(7, graph) + _field(8, opset)


# -- checks --------------------------------------------------------------------------------------------------
def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def _opencv_videoio() -> str:
    """Video back-ends this OpenCV really has, for cameras, reading files/streams and writing."""
    reg = cv2.videoio_registry

    def names(backends: Sequence[int]) -> str:
        return ",".join(sorted({reg.getBackendName(b) for b in backends if reg.hasBackend(b)})) or "none"

    return (f"cameras {names(reg.getCameraBackends())}; read {names(reg.getStreamBackends())}; "
            f"write {names(reg.getWriterBackends())}")  # fmt: skip


def environment_checks() -> list[Check]:
    """Python, numpy, OpenCV (window, video I/O), onnxruntime, TensorRT, CUDA and the GPU."""
    s = "environment"
    checks = [
        Check(s, "python", Status.OK, f"{platform.python_version()} ({sys.executable})"),
        Check(s, "platform", Status.OK, f"{platform.system()} {platform.machine()}"),
        Check(s, "numpy", Status.OK, np.__version__),
        Check(s, "opencv", Status.OK, f"{cv2.__version__}; video I/O: {_opencv_videoio()}"),
    ]
    if opencv_has_gui():
        checks.append(Check(s, "opencv window", Status.OK, "cv2.imshow works: stablemtl-run --show is available"))
    else:
        checks.append(Check(s, "opencv window", Status.SKIP,
                            "no GUI (headless OpenCV or no display): use --output-video; for a window install "
                            "the `gui` extra"))  # fmt: skip
    try:
        import onnxruntime as ort

        checks.append(Check(s, "onnxruntime", Status.OK, f"{ort.__version__} (device {ort.get_device()})"))
    except ImportError:
        checks.append(
            Check(s, "onnxruntime", Status.FAIL, "not installed: `pip install onnxruntime` (or onnxruntime-gpu)")
        )
    if _version("onnxruntime") and _version("onnxruntime-gpu"):
        both = "both onnxruntime and onnxruntime-gpu are installed; they overwrite each other: keep one"
        checks.append(Check(s, "onnxruntime packages", Status.WARN, both))
    try:
        trt = importlib.import_module("tensorrt")
        checks.append(Check(s, "tensorrt", Status.OK, str(trt.__version__)))
    except ImportError:
        how = "not installed (JetPack, or `pip install tensorrt` from NVIDIA's index)"
        checks.append(Check(s, "tensorrt", Status.SKIP, how))
    except Exception as e:  # a broken TensorRT install raises OSError/RuntimeError from its loader
        checks.append(Check(s, "tensorrt", Status.FAIL, f"installed but does not import: {_first_line(e)}"))
    checks += _cuda_checks()
    return checks


def _cuda_checks() -> list[Check]:
    s = "environment"
    from .. import cuda

    try:
        rt = cuda.cudart()
    except StableMTLError:
        return [Check(s, "cuda", Status.SKIP, "cuda-python not installed (the `gpu` extra)")] + _nvidia_smi()
    checks = []
    for what, call in (("cuda runtime", rt.cudaRuntimeGetVersion), ("cuda driver", rt.cudaDriverGetVersion)):
        status, version = call()
        if status == rt.cudaError_t.cudaSuccess and version:
            checks.append(Check(s, what, Status.OK, f"{version // 1000}.{version % 1000 // 10}"))
        else:
            checks.append(Check(s, what, Status.WARN, "not available (no NVIDIA driver?)"))
    try:
        name, cc = cuda.device_info(0)
        checks.append(Check(s, "gpu", Status.OK, f"{name}, compute capability {cc}"))
    except StableMTLError as e:
        checks.append(Check(s, "gpu", Status.SKIP, f"no CUDA device: {_first_line(e)}"))
    return checks


def _nvidia_smi() -> list[Check]:
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return [Check("environment", "gpu", Status.SKIP, "no NVIDIA GPU found (no nvidia-smi)")]
    try:
        out = subprocess.run([exe, "--query-gpu=name,driver_version,compute_cap", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20, check=True).stdout.strip()  # fmt: skip
    except (OSError, subprocess.SubprocessError) as e:
        return [Check("environment", "gpu", Status.WARN, f"nvidia-smi failed: {_first_line(e)}")]
    return [Check("environment", "gpu", Status.OK, line.strip()) for line in out.splitlines() if line.strip()]


def provider_checks() -> list[Check]:
    """Start a session of :func:`probe_model` on every listed provider and check that it really runs there."""
    s = "onnxruntime providers"
    try:
        import onnxruntime as ort
    except ImportError:
        return [Check(s, "providers", Status.FAIL, "onnxruntime is not installed")]
    model = probe_model()
    x = np.arange(4, dtype=np.float32).reshape(1, 4)
    checks = []
    for provider in ort.get_available_providers():
        if provider == "AzureExecutionProvider":  # a remote-endpoint provider, not a device
            continue
        options = ort.SessionOptions()
        options.log_severity_level = 4
        try:
            session = ort.InferenceSession(model, sess_options=options, providers=[provider])
            granted = session.get_providers()
            (y,) = session.run(["y"], {"x": x})
        except Exception as e:  # onnxruntime raises pybind errors when a provider's libraries are missing
            checks.append(Check(s, provider, Status.FAIL, f"listed but cannot start: {_first_line(e)}"))
            continue
        if granted[0] != provider:
            fell = f"listed but onnxruntime fell back to {granted[0]} (missing driver/libraries?)"
            checks.append(Check(s, provider, Status.WARN, fell))
        elif not np.array_equal(y, 2 * x):
            checks.append(Check(s, provider, Status.FAIL, f"runs but computed {y.tolist()} for x + x"))
        else:
            checks.append(Check(s, provider, Status.OK, "session created and ran on it"))
    return checks


def artifact_checks(directory: Path, run: bool = True, verify: VerifyOptions | None = None) -> list[Check]:
    """Manifest, sha256 of every file, cached TensorRT engines, and (``run``) one inference per precision;
    with ``verify``, the deep self-check instead of the digest-cache file check and the one-frame run."""
    s = f"artifacts {directory}"
    try:
        manifest = Manifest.load(directory)
    except StableMTLError as e:
        return [Check(s, "manifest", Status.FAIL, str(e))]
    p = manifest.profile
    precisions = "; ".join(manifest.describe_precision(x) for x in manifest.precisions())
    summary = (
        f"format {manifest.format_version}, {manifest.mode.value}-stream, {p.height}x{p.width}, "
        f"batch {p.min_batch}..{p.max_batch}, precisions {precisions}"
    )
    checks = [Check(s, "manifest", Status.OK, summary)]
    if verify is not None:
        return checks + _verify_checks(directory, manifest, verify, s) + _engine_checks(directory, manifest, s)
    sound = []
    for prec in manifest.precisions():
        try:
            manifest.verify_files(directory, [prec])
        except StableMTLError as e:
            checks.append(Check(s, f"{prec.value} files", Status.FAIL, str(e)))
            continue
        comps = ", ".join(c.value for c in manifest.components[prec])
        checks.append(Check(s, f"{prec.value} files", Status.OK, f"sha256 verified: {comps}"))
        sound.append(prec)
    checks += _engine_checks(directory, manifest, s)
    if run:
        for prec in sound:
            checks.append(_run_check(directory, manifest, prec, s))
    return checks


@dataclass(frozen=True)
class VerifyOptions:
    """What ``--verify`` checks: which precisions, with which tolerance overrides, on how many threads."""

    precisions: tuple[Precision, ...] | None = None
    overrides: dict[str, float] | None = None
    threads: int | None = None
    verbose: bool = False


def _verify_checks(directory: Path, manifest: Manifest, options: VerifyOptions, section: str) -> list[Check]:
    from .selfcheck import check_files, check_parity

    def say(message: str) -> None:
        print(f"verify: {message}", file=sys.stderr, flush=True)

    try:
        n = check_files(directory, manifest, say)
    except StableMTLError as e:
        return [Check(section, "files", Status.FAIL, str(e))]
    checks = [Check(section, "files", Status.OK, f"{n} files, sha256 in full")]
    precisions = options.precisions or manifest.precisions()
    missing = [p.value for p in precisions if p not in manifest.components]
    if missing:
        have = ", ".join(p.value for p in manifest.precisions())
        return checks + [Check(section, "parity", Status.FAIL, f"no {', '.join(missing)} graphs here (it has {have})")]
    try:
        results = check_parity(directory, manifest, precisions, options.threads, options.overrides, say)
    except StableMTLError as e:
        return checks + [Check(section, "parity", Status.FAIL, str(e))]
    for precision, comparator in results.items():
        failures = comparator.failures()
        worst = max(comparator.results, key=lambda r: r.max_abs)
        detail = f"{len(comparator.results)} comparisons, worst {worst.key} max {worst.max_abs:.3g}"
        if failures:
            detail = f"{len(failures)} of {len(comparator.results)} failed: " + "; ".join(r.line() for r in failures[:3])
        checks.append(Check(section, f"{precision.value} parity", Status.FAIL if failures else Status.OK, detail))
        if options.verbose:
            checks += [Check(section, f"  {r.key}", Status.OK if r.passed else Status.FAIL, r.line())
                       for r in comparator.results]
    return checks


def _engine_checks(directory: Path, manifest: Manifest, section: str) -> list[Check]:
    from .backends.tensorrt import find_engines, load_engine_for

    found = [(prec, comp, find_engines(directory, comp, prec))
             for prec in manifest.precisions() for comp in manifest.components[prec]]  # fmt: skip
    found = [f for f in found if f[2]]
    if not found:
        return [Check(section, "tensorrt engines", Status.SKIP,
                      "none cached (build them on the target: `stablemtl-export build-engine`)")]  # fmt: skip
    if importlib.util.find_spec("tensorrt") is None:
        n = sum(len(f[2]) for f in found)
        why = f"{n} cached engine(s), but TensorRT is not installed here to check them against this GPU"
        return [Check(section, "tensorrt engines", Status.WARN, why)]
    checks = []
    for prec, comp, _ in found:
        try:
            engine = load_engine_for(directory, comp, prec)
            checks.append(Check(section, f"engine {comp.value}/{prec.value}", Status.OK, f"usable: {engine.plan}"))
        except StableMTLError as e:
            checks.append(Check(section, f"engine {comp.value}/{prec.value}", Status.FAIL, str(e)))
    return checks


def _run_check(directory: Path, manifest: Manifest, prec: Precision, section: str) -> Check:
    from .api import Runtime
    from .backends.base import Backend
    from .sources import PatternSource

    name = f"{prec.value} inference"
    try:
        with Runtime.from_artifacts(directory, mode=manifest.mode, precision=prec, backend=Backend.ONNXRUNTIME,
                                    verify=False) as rt:  # fmt: skip
            with PatternSource(manifest.profile.height, manifest.profile.width, frames=2) as src:
                frames = [f.image for f in src]
            rt.infer(frames[0])
            start = time.perf_counter()
            res = rt.infer(frames[1])
            ms = (time.perf_counter() - start) * 1e3
            bad = [k for k, pr in res.predictions.items() if not np.all(np.isfinite(pr.value))]
            engines = sorted(set(rt.describe().values()))
            fallbacks = rt.fallbacks()
    except StableMTLError as e:
        return Check(section, name, Status.FAIL, str(e))
    if bad:
        return Check(section, name, Status.FAIL, f"non-finite predictions for {', '.join(bad)}")
    if len(res.predictions) != len(rt.tasks):
        return Check(section, name, Status.FAIL, f"got {sorted(res.predictions)} of {list(rt.tasks)}")
    status = Status.WARN if fallbacks else Status.OK
    detail = f"{manifest.mode.value}-stream, all {len(res.predictions)} tasks, {ms:.0f} ms/frame on "
    detail += "; ".join(engines)
    return Check(section, name, status, detail + ("; " + "; ".join(fallbacks) if fallbacks else ""))


# -- report ------------------------------------------------------------------------------------------------------
def render(checks: Sequence[Check]) -> str:
    lines = []
    section = None
    width = max((len(c.name) for c in checks), default=10)
    for c in checks:
        if c.section != section:
            section = c.section
            lines.append(f"\n{section}")
        lines.append(f"  [{c.status.value:>4}] {c.name:<{width}}  {c.detail}")
    fails = sum(c.status is Status.FAIL for c in checks)
    warns = sum(c.status is Status.WARN for c in checks)
    lines.append(f"\n{'FAILED' if fails else 'PASSED'}: {fails} failure(s), {warns} warning(s)")
    return "\n".join(lines).lstrip("\n")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="stablemtl-doctor", description=describe(__doc__),
                                formatter_class=HelpFormatter)  # fmt: skip
    add_artifact_args(p, required=False)
    p.add_argument("--no-run", action="store_true", help="with --artifacts: skip the one-frame inference per precision")
    p.add_argument("--verify", action="store_true",
                   help="with --artifacts: the deep self-check (full sha256, stored references through the runtime)")
    p.add_argument("--precision", default=None, help="with --verify: comma-separated precisions (default: all)")
    p.add_argument("--tolerance", action="append", default=[], metavar="NAME:ATOL",
                   help="with --verify: override the absolute tolerance of a task (end to end) or a component, "
                        "e.g. depth:0.02")
    p.add_argument("--threads", type=positive_int, default=None, help="with --verify: onnxruntime threads (default: all)")
    p.add_argument("--verbose", action="store_true", help="with --verify: list every comparison")
    p.add_argument("--json", type=Path, default=None, help="also write the checks to this JSON file")
    return p


def _doctor(args: argparse.Namespace) -> int:
    checks = environment_checks() + provider_checks()
    verify_flags = [f for f, on in (("--precision", args.precision), ("--tolerance", args.tolerance),
                                    ("--threads", args.threads), ("--verbose", args.verbose)) if on]
    if verify_flags and not args.verify:
        raise StableMTLError(f"{', '.join(verify_flags)} apply to `--verify`: add it, or drop them")
    if args.verify and args.artifacts is None:
        raise StableMTLError("`--verify` checks an artifact: give it with `--artifacts DIR`")
    verify = None
    if args.verify:
        verify = VerifyOptions(parse_precisions(args.precision) if args.precision else None,
                               parse_tolerance_overrides(args.tolerance), args.threads, args.verbose)
    if args.artifacts is not None:
        checks += artifact_checks(args.artifacts, run=not args.no_run, verify=verify)
    print(render(checks))
    if args.json is not None:
        atomic_write_text(args.json, json.dumps([c.to_dict() for c in checks], indent=2) + "\n")
    return 1 if any(c.status is Status.FAIL for c in checks) else 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(_doctor, build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
