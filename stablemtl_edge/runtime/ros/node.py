"""The ``stablemtl-ros`` node: camera images in, one ``sensor_msgs/Image`` topic per task out.

A managed (lifecycle) node, in the rhythm of ROS 2's ``lifecycle_py`` talker:

- ``configure`` loads the artifacts (seconds; a mistake fails the transition with a one-line reason) and
  creates the output publishers and ``/diagnostics``;
- ``activate`` subscribes to the input and starts the inference thread; ``deactivate`` undoes that;
- ``cleanup`` releases the runtime.

The subscription callback never blocks: it puts the message into a slot of one (latest frame wins; a
frame replaced before inference took it is counted as dropped) and returns. Inference, conversion and
publishing run on one worker thread. Each output carries the header (stamp, frame_id) of the input frame
it was computed from.

``main`` starts the node configured and active unless ``--no-autostart`` is given (then drive it with
``ros2 lifecycle set``).
"""

from __future__ import annotations

import argparse
import contextlib
import enum
import math
import sys
import threading
import time
import traceback
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ...errors import MissingDependencyError, StableMTLError
from ...artifact.manifest import Precision, parse_enum
from ...tasks import TASK_NAMES
from ..api import Runtime
from ..backends.base import Backend
from ..stream import DropPolicy, FrameSlot, LatencyWindow
from .image_conversions import frame_from_compressed, frame_from_image, numpy_to_image
from ..options import RuntimeOptions
from .outputs import AlbedoEncoding, FreshPredictions, OutputOptions, OutputTopic, output_topics

try:
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
    from rcl_interfaces.msg import ParameterDescriptor, SetParametersResult
    from rclpy.exceptions import InvalidParameterTypeException, InvalidParameterValueException
    from rclpy.executors import ExternalShutdownException
    from rclpy.lifecycle import Node as LifecycleNode
    from rclpy.lifecycle import Publisher, State, TransitionCallbackReturn
    from rclpy.parameter import Parameter
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
    from rclpy.subscription import Subscription
    from rclpy.timer import Timer
    from rclpy.utilities import remove_ros_args
    from sensor_msgs.msg import CompressedImage, Image
except ModuleNotFoundError as exc:  # a robot image without the extra
    raise MissingDependencyError((exc.name or "rclpy").split(".")[0], "ros", "the stablemtl-ros node") from exc

__all__ = ["InputQoS", "ReadAt", "NodeSettings", "NodeStatistics", "StableMTLNode", "PARAMETERS", "OUTPUT_QOS", "main"]


class InputQoS(str, enum.Enum):
    """QoS of the input subscription (history is always keep-last, depth ``qos_depth``).

    ``reliable`` (the default) is what a camera driver with default QoS publishes. It is the one setting
    under which frames from another process arrive whatever their size: Fast DDS splits a 720x1280 rgb8
    frame (2.7 MB) into fragments, and best effort drops the whole sample when one fragment misses the
    writer's 512 KB shared-memory segment or the socket buffer (measured on loopback: 0-2 of 5 frames
    arrived). Reliable re-sends the lost fragments instead. With keep-last 1 this cannot build a backlog:
    the reader keeps only the newest frame and a keep-last writer never blocks, so latency stays bounded by
    one frame plus a repair. ``sensor_data`` (best effort) is for drivers that publish best effort only (a
    reliable subscription does not match them); large frames then need the publisher's transport profile
    in docs/ros2.md.
    """

    SENSOR_DATA = "sensor_data"
    RELIABLE = "reliable"

    def __str__(self) -> str:
        return self.value

    def profile(self, depth: int) -> QoSProfile:
        reliability = ReliabilityPolicy.BEST_EFFORT if self is InputQoS.SENSOR_DATA else ReliabilityPolicy.RELIABLE
        return QoSProfile(
            history=HistoryPolicy.KEEP_LAST, depth=depth, reliability=reliability, durability=DurabilityPolicy.VOLATILE
        )


# A publisher on the input topic and no frame for this long: diagnostics and the log say why.
INPUT_STALL_S = 3.0

# Outputs: reliable (so both reliable and best-effort subscribers match), keep-last 1: a slow subscriber
# gets the newest prediction, never a backlog.
OUTPUT_QOS = QoSProfile(
    history=HistoryPolicy.KEEP_LAST,
    depth=1,
    reliability=ReliabilityPolicy.RELIABLE,
    durability=DurabilityPolicy.VOLATILE,
)


class ReadAt(str, enum.Enum):
    """The transition that reads a parameter; while its effect is in use the parameter cannot change."""

    CONFIGURE = "configure"  #: locked while configured (runtime and publishers exist)
    ACTIVATE = "activate"  #: locked while active (the subscription exists)

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class _Param:
    """One ROS parameter: default (which fixes its type unless ``dynamic``), help text, when it is read."""

    default: Any
    description: str
    read_at: ReadAt
    dynamic: bool = False


# name -> declaration; the single source for declaration, validation, --help and docs/ros2.md.
_C, _A = ReadAt.CONFIGURE, ReadAt.ACTIVATE
PARAMETERS: dict[str, _Param] = {
    "artifact_dir": _Param("", "artifact directory written by stablemtl-export (holds manifest.json)", _C),
    "tasks": _Param(["all"], f"tasks to run: `all` or a list of {', '.join(TASK_NAMES)}", _C, dynamic=True),
    "mode": _Param("", "single (one UNet pass per task) or multi (multi-stream); empty = the artifact's mode", _C),
    "backend": _Param(Backend.AUTO.value, "auto, onnxruntime or tensorrt", _C),
    "precision": _Param(Precision.FP32.value, "fp32, fp16 or int8 (which exported graphs to load)", _C),
    "providers": _Param("", "comma-separated onnxruntime providers; empty = best available", _C),
    **{
        f"rates.{task}": _Param(1, f"run {task} every N-th processed frame", _C)
        for task in TASK_NAMES
    },
    "aux_reuse": _Param(1, "multi-stream: recompute auxiliary features every N frames (1 = exact)", _C),
    "semantic_color": _Param(True, "also publish ~/semantic/color (rgb8 palette picture)", _C),
    "albedo_encoding": _Param(AlbedoEncoding.FLOAT32.value, "32FC3 (linear [0, 1]) or rgb8 for ~/albedo", _C),
    "debug": _Param(False, "also publish ~/debug/<task>, colourised rgb8 pictures for rviz", _C),
    "input_topic": _Param("image", "input topic (remappable); with `compressed`, <input_topic>/compressed", _A),
    "compressed": _Param(False, "subscribe to sensor_msgs/CompressedImage on <input_topic>/compressed", _A),
    "input_qos": _Param(
        InputQoS.RELIABLE.value, "reliable (every frame size arrives) or sensor_data (best effort publishers)", _A
    ),
    "qos_depth": _Param(1, "input queue depth (keep-last); 1 = always the newest frame", _A),
    "diagnostics_period": _Param(1.0, "seconds between /diagnostics messages", _A),
}


@dataclass(frozen=True)
class NodeSettings:
    """All parameters, validated (:meth:`from_values` raises a :class:`StableMTLError` naming the fix)."""

    runtime: RuntimeOptions
    outputs: OutputOptions
    input_topic: str
    compressed: bool
    input_qos: InputQoS
    qos_depth: int
    diagnostics_period: float

    @classmethod
    def from_values(cls, values: Mapping[str, Any]) -> NodeSettings:
        v = {name: values.get(name, p.default) for name, p in PARAMETERS.items()}
        runtime = RuntimeOptions.parse(
            v["artifact_dir"],
            v["tasks"],
            v["mode"],
            v["backend"],
            v["precision"],
            v["providers"],
            {task: v[f"rates.{task}"] for task in TASK_NAMES},
            v["aux_reuse"],
        )
        topic = str(v["input_topic"]).strip()
        if not topic:
            raise StableMTLError("`input_topic` is empty: name the camera's image topic (or remap `image`)")
        if int(v["qos_depth"]) < 1:
            raise StableMTLError(f"`qos_depth` must be >= 1 (1 = newest frame only), got {v['qos_depth']}")
        period = float(v["diagnostics_period"])
        if not (math.isfinite(period) and period > 0):
            raise StableMTLError(f"`diagnostics_period` must be a positive number of seconds, got {period}")
        return cls(
            runtime=runtime,
            outputs=OutputOptions(
                semantic_color=bool(v["semantic_color"]),
                albedo_encoding=AlbedoEncoding.parse(v["albedo_encoding"]),
                debug=bool(v["debug"]),
            ),
            input_topic=topic,
            compressed=bool(v["compressed"]),
            input_qos=parse_enum(InputQoS, v["input_qos"], "input_qos"),
            qos_depth=int(v["qos_depth"]),
            diagnostics_period=period,
        )

    @property
    def subscription_topic(self) -> str:
        return f"{self.input_topic.rstrip('/')}/compressed" if self.compressed else self.input_topic


@dataclass(frozen=True)
class NodeStatistics:
    """Counters since activation. ``received = processed + dropped + skipped + errors (+ 1 in flight)``.

    Attributes:
        received: input messages handed to the node by the middleware.
        processed: frames inferred and published.
        dropped: frames replaced by a newer one before inference took them (latest frame wins).
        skipped: messages that are not a usable camera frame (unsupported encoding, corrupt data).
        errors: frames whose inference failed.
        latency_mean_ms / latency_max_ms: message received -> outputs published.
        service_mean_ms: the runtime's ``infer`` alone.
    """

    received: int
    processed: int
    dropped: int
    skipped: int
    errors: int
    latency_mean_ms: float
    latency_max_ms: float
    service_mean_ms: float


class StableMTLNode(LifecycleNode):
    """StableMTL as a managed ROS 2 node (see the module docstring for its life cycle).

    Args:
        node_name: the node's name; outputs are published under ``~/`` (its private namespace).
        input_qos: a QoS profile for the input that overrides the ``input_qos``/``qos_depth`` parameters.
        **kwargs: passed to ``rclpy`` (``context``, ``namespace``, ``parameter_overrides``, ``cli_args``).

    Raises:
        rclpy.exceptions.InvalidParameterValueException: a parameter given at start-up is invalid (the
            message carries the reason).
    """

    def __init__(self, node_name: str = "stablemtl", *, input_qos: QoSProfile | None = None, **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)
        self._input_qos_override = input_qos
        self._runtime: Runtime | None = None
        self._topics: dict[str, list[OutputTopic]] = {}
        self._outputs: dict[str, Publisher] = {}
        self._diagnostics: Publisher | None = None
        self._subscription: Subscription | None = None
        self._input_reliable = True
        self._diag_timer: Timer | None = None
        self._slot: FrameSlot[tuple[Any, int]] | None = None
        self._worker: threading.Thread | None = None
        self._fresh: FreshPredictions[Any] = FreshPredictions()
        self._lock = threading.Lock()
        self._reported: set[str] = set()
        self._reset_statistics()
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self.declare_parameters(
            "",
            [
                (name, p.default, ParameterDescriptor(description=p.description, dynamic_typing=p.dynamic))
                for name, p in PARAMETERS.items()
            ],
        )

    # -- parameters --------------------------------------------------------------------------------------
    def _current_values(self) -> dict[str, Any]:
        return {name: self.get_parameter(name).value for name in PARAMETERS if self.has_parameter(name)}

    def _on_set_parameters(self, params: list[Parameter]) -> SetParametersResult:
        """Accept a change only if the whole configuration stays valid and the value is not in use."""
        changes = {p.name: p.value for p in params if p.name in PARAMETERS}
        for name in changes:
            read_at = PARAMETERS[name].read_at
            configure = read_at is ReadAt.CONFIGURE
            if (self._runtime if configure else self._subscription) is not None:
                state, undo = ("configured", "deactivate and clean up") if configure else ("active", "deactivate")
                return SetParametersResult(
                    successful=False,
                    reason=f"`{name}` is read when the node is {read_at}d and the node is {state}: {undo}, "
                    f"set it, then {read_at} again",
                )
        try:
            NodeSettings.from_values({**self._current_values(), **changes})
        except StableMTLError as exc:
            return SetParametersResult(successful=False, reason=str(exc))
        return SetParametersResult(successful=True)

    def settings(self) -> NodeSettings:
        """The current parameters, validated."""
        return NodeSettings.from_values(self._current_values())

    # -- life cycle --------------------------------------------------------------------------------------
    def on_configure(self, state: State) -> TransitionCallbackReturn:
        try:
            if not str(self.get_parameter("artifact_dir").value).strip():
                raise StableMTLError(
                    "the `artifact_dir` parameter is not set: pass --ros-args -p artifact_dir:=<directory "
                    "written by stablemtl-export>"
                )
            settings = self.settings()
            runtime = settings.runtime.open()
        except StableMTLError as exc:
            self.get_logger().error(f"configure failed: {exc}")
            return TransitionCallbackReturn.FAILURE
        except Exception:  # our bug; rclpy would turn it into ERROR without a word
            self.get_logger().error(f"configure failed:\n{traceback.format_exc()}")
            return TransitionCallbackReturn.ERROR
        self._runtime = runtime
        topics = output_topics(runtime.tasks, settings.outputs)
        self._topics = {}
        for t in topics:
            self._topics.setdefault(t.task, []).append(t)
            self._outputs[t.name] = self.create_lifecycle_publisher(Image, f"~/{t.name}", OUTPUT_QOS)
        self._diagnostics = self.create_lifecycle_publisher(DiagnosticArray, "/diagnostics", 10)
        engines = ", ".join(sorted(set(runtime.describe().values())))
        self.get_logger().info(
            f"configured: {', '.join(runtime.tasks)} ({runtime.mode}, {settings.runtime.precision}) "
            f"on {engines}; processing size {runtime.resolution[1]}x{runtime.resolution[0]}"
        )
        for message in runtime.fallbacks():
            self.get_logger().warning(message)
        return super().on_configure(state)

    def on_activate(self, state: State) -> TransitionCallbackReturn:
        try:
            settings = self.settings()
        except StableMTLError as exc:
            self.get_logger().error(f"activate failed: {exc}")
            return TransitionCallbackReturn.FAILURE
        result = super().on_activate(state)  # publishers first, so the first frame's outputs go out
        if result != TransitionCallbackReturn.SUCCESS:
            return result
        self._runtime.reset()  # a new stream: no flow between a frame before and one after a pause
        self._fresh.reset()
        self._reset_statistics()
        self._slot = FrameSlot(DropPolicy.LATEST)
        self._worker = threading.Thread(target=self._work, args=(self._slot,), name="stablemtl-inference", daemon=True)
        self._worker.start()
        qos = self._input_qos_override or settings.input_qos.profile(settings.qos_depth)
        msg_type = CompressedImage if settings.compressed else Image
        self._subscription = self.create_subscription(msg_type, settings.subscription_topic, self._on_image, qos)
        self._input_reliable = qos.reliability == ReliabilityPolicy.RELIABLE
        self._diag_timer = self.create_timer(settings.diagnostics_period, self._publish_diagnostics)
        self.get_logger().info(
            f"active: {msg_type.__name__} from {self._subscription.topic_name} -> "
            f"{self.get_fully_qualified_name()}/{{{', '.join(self._outputs)}}}"
        )
        return result

    def on_deactivate(self, state: State) -> TransitionCallbackReturn:
        self._stop_input()
        return super().on_deactivate(state)

    def on_cleanup(self, state: State) -> TransitionCallbackReturn:
        self._release()
        return super().on_cleanup(state)

    def on_shutdown(self, state: State) -> TransitionCallbackReturn:
        self._stop_input()
        self._release()
        return TransitionCallbackReturn.SUCCESS

    def on_error(self, state: State) -> TransitionCallbackReturn:
        self.get_logger().error(f"error in state {state.label}: releasing the runtime")
        self._stop_input()
        self._release()
        return TransitionCallbackReturn.SUCCESS

    def destroy_node(self) -> None:
        """Stop the worker and release the runtime whatever the state, then destroy the node."""
        self._stop_input()
        self._release()
        super().destroy_node()

    def _stop_input(self) -> None:
        if self._subscription is not None:
            self.destroy_subscription(self._subscription)
            self._subscription = None
        if self._diag_timer is not None:
            self.destroy_timer(self._diag_timer)
            self._diag_timer = None
        if self._slot is not None:
            self._slot.close(discard=True)
        if self._worker is not None:
            self._worker.join()  # finishes the frame in flight (one inference at most)
            self._worker = None

    def _release(self) -> None:
        for pub in self._outputs.values():
            self.destroy_lifecycle_publisher(pub)
        self._outputs = {}
        if self._diagnostics is not None:
            self.destroy_lifecycle_publisher(self._diagnostics)
            self._diagnostics = None
        if self._runtime is not None:
            self._runtime.close()
            self._runtime = None

    # -- data path ---------------------------------------------------------------------------------------
    def _on_image(self, msg: Any) -> None:
        """Subscription callback: hand over and return at once (the worker infers)."""
        with self._lock:
            self._received += 1
            self._last_input = time.monotonic()
        if self._slot is not None:
            self._slot.put((msg, time.perf_counter_ns()))

    def _work(self, slot: FrameSlot[tuple[Any, int]]) -> None:
        while (item := slot.get()) is not None:
            try:
                self._process(*item)
            except Exception:  # our bug: keep its traceback in the log and keep serving frames
                if not self.context.ok():
                    return  # ROS is shutting down (Ctrl-C) while a frame was in flight
                with self._lock:
                    self._errors += 1
                self.get_logger().error(f"inference failed:\n{traceback.format_exc()}")

    def _report_once(self, text: str) -> None:
        if text not in self._reported:
            self._reported.add(text)
            self.get_logger().warning(text)

    def _process(self, msg: Any, received_ns: int) -> None:
        to_frame = frame_from_compressed if isinstance(msg, CompressedImage) else frame_from_image
        try:
            frame, layout = to_frame(msg)
        except StableMTLError as exc:
            with self._lock:
                self._skipped += 1
            self._report_once(f"skipping input messages: {exc} (reported once)")
            return
        start = time.perf_counter_ns()
        try:
            result = self._runtime.infer(frame, layout=layout.value)
        except StableMTLError as exc:
            with self._lock:
                self._errors += 1
            self._report_once(f"cannot process a frame: {exc} (reported once)")
            return
        service_ns = time.perf_counter_ns() - start
        self._fresh.add_frame(result.frame_index, msg.header)
        for pred, header in self._fresh.take(result):
            for t in self._topics.get(pred.task, ()):
                self._outputs[t.name].publish(numpy_to_image(t.convert(pred.value), t.encoding, Image, header))
        latency_ms = (time.perf_counter_ns() - received_ns) / 1e6
        with self._lock:
            self._processed += 1
            self._latency_ms.add(latency_ms)
            self._service_ms.add(service_ns / 1e6)

    # -- statistics and diagnostics ----------------------------------------------------------------------
    def _reset_statistics(self) -> None:
        with self._lock:
            self._received = self._processed = self._skipped = self._errors = 0
            self._last_input = time.monotonic()  # activation counts as the start of the wait
            self._latency_ms = LatencyWindow(1000)
            self._service_ms = LatencyWindow(1000)
            self._last_report: tuple[float, int, int, int] = (time.monotonic(), 0, 0, 0)

    def statistics(self) -> NodeStatistics:
        """Counters and latencies since the last activation."""
        with self._lock:
            return NodeStatistics(
                received=self._received,
                processed=self._processed,
                dropped=self._slot.dropped if self._slot is not None else 0,
                skipped=self._skipped,
                errors=self._errors,
                latency_mean_ms=self._latency_ms.mean,
                latency_max_ms=self._latency_ms.max,
                service_mean_ms=self._service_ms.mean,
            )

    def _input_stall(self) -> str | None:
        """Why frames do not arrive though a publisher is on the input topic, or None if they do (or none is)."""
        sub = self._subscription
        if sub is None or time.monotonic() - self._last_input < INPUT_STALL_S:
            return None
        publishers = self.get_publishers_info_by_topic(sub.topic_name)
        if not publishers:
            return None
        topic, waited = sub.topic_name, f"no frame for {INPUT_STALL_S:.0f} s"
        best_effort = [p.node_name for p in publishers if p.qos_profile.reliability == ReliabilityPolicy.BEST_EFFORT]
        profile = "the large-frame Fast DDS profile of docs/ros2.md to the camera driver"
        if self._input_reliable and best_effort and sub.get_publisher_count() == 0:
            return (
                f"{waited}: the publisher on {topic} ({', '.join(best_effort)}) offers best effort and the input "
                f"is reliable, so they do not connect: set -p input_qos:=sensor_data (frames above 200 KB then "
                f"also need {profile})"
            )
        if sub.get_publisher_count() == 0:
            return f"{waited}: the publisher on {topic} does not match the input's QoS (see `ros2 topic info -v {topic}`)"
        if not self._input_reliable:
            return (
                f"{waited} from the matched publisher on {topic}: best effort loses frames larger than the "
                f"middleware's shared-memory segment or socket buffer: set -p input_qos:=reliable (the default; "
                f"the publisher must offer reliable) or give {profile}"
            )
        return f"{waited} from the matched publisher on {topic}: it has stopped sending (is the camera running?)"

    def _publish_diagnostics(self) -> None:
        if self._diagnostics is None or self._runtime is None:
            return
        stall = self._input_stall()
        if stall is not None:
            self._report_once(stall)
        stats = self.statistics()
        now = time.monotonic()
        last_t, last_processed, last_skipped, last_errors = self._last_report
        self._last_report = (now, stats.processed, stats.skipped, stats.errors)
        fps = (stats.processed - last_processed) / max(now - last_t, 1e-9)
        if stats.errors > last_errors:
            level, summary = DiagnosticStatus.ERROR, "inference failed on some frames (see the node's log)"
        elif stall is not None:
            level, summary = DiagnosticStatus.WARN, stall
        elif stats.processed == last_processed:
            level, summary = DiagnosticStatus.WARN, f"no frames processed from {self._subscription.topic_name}"
        elif stats.skipped > last_skipped:
            level, summary = DiagnosticStatus.WARN, "some input messages are not usable camera frames"
        else:
            level, summary = DiagnosticStatus.OK, f"{fps:.1f} fps, latency {stats.latency_mean_ms:.0f} ms"
        values = {
            "fps": f"{fps:.2f}",
            "latency_mean_ms": f"{stats.latency_mean_ms:.1f}",
            "latency_max_ms": f"{stats.latency_max_ms:.1f}",
            "service_mean_ms": f"{stats.service_mean_ms:.1f}",
            "frames_received": str(stats.received),
            "frames_processed": str(stats.processed),
            "frames_dropped": str(stats.dropped),
            "frames_skipped": str(stats.skipped),
            "errors": str(stats.errors),
            "tasks": ",".join(self._runtime.tasks),
            "engine": ", ".join(sorted(set(self._runtime.describe().values()))),
        }
        msg = DiagnosticArray()
        msg.header.stamp = self.get_clock().now().to_msg()
        msg.status = [
            DiagnosticStatus(
                level=level,
                name=f"{self.get_fully_qualified_name()}: inference",
                message=summary,
                hardware_id=values["engine"],
                values=[KeyValue(key=k, value=v) for k, v in values.items()],
            )
        ]
        self._diagnostics.publish(msg)


def _help_epilog() -> str:
    rows = [f"  {name:<20} {p.default!s:<12} {p.description}" for name, p in PARAMETERS.items()]
    return (
        "ROS parameters (--ros-args -p name:=value):\n" + "\n".join(rows) + "\n\n"
        "Example:\n  stablemtl-ros --ros-args -p artifact_dir:=artifacts/small -p tasks:=[depth,normal] "
        "-r image:=/camera/color/image_raw"
    )


@contextlib.contextmanager
def _ros(args: Sequence[str] | None) -> Iterator[None]:
    """``with rclpy.init(args=args):`` of newer rclpy; Jazzy's ``rclpy.init`` returns None."""
    rclpy.init(args=args)
    try:
        yield
    finally:
        rclpy.try_shutdown()


def main(args: Sequence[str] | None = None) -> int:
    """``stablemtl-ros``: run the node until Ctrl-C.

    Args:
        args: the full command line as rclpy takes it (program name first); None = ``sys.argv``.
    """
    argv = list(sys.argv if args is None else args)
    parser = argparse.ArgumentParser(
        prog="stablemtl-ros",
        description="StableMTL dense predictions (depth, normals, semantics, flows, intrinsics) as ROS 2 topics.",
        epilog=_help_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--no-autostart",
        action="store_true",
        help="stay unconfigured; drive the node with `ros2 lifecycle set /stablemtl configure|activate`",
    )
    options = parser.parse_args(remove_ros_args(args=argv)[1:])
    try:
        with _ros(argv):
            try:
                node = StableMTLNode()
            except (InvalidParameterValueException, InvalidParameterTypeException) as exc:
                print(f"error: {exc}", file=sys.stderr)
                return 1
            try:
                if not options.no_autostart:
                    if node.trigger_configure() != TransitionCallbackReturn.SUCCESS:
                        return 1  # the reason is in the log
                    if node.trigger_activate() != TransitionCallbackReturn.SUCCESS:
                        return 1
                rclpy.spin(node)
            finally:
                node.destroy_node()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    return 0
