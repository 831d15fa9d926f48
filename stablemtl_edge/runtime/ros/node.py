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
import sys
import threading
import time
import traceback
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from ...errors import MissingDependencyError, StableMTLError
from ..api import Runtime
from ..stats import LatencyWindow
from ..stream import DropPolicy, FrameSlot
from .image_conversions import frame_from_compressed, frame_from_image, numpy_to_image
from .outputs import FreshPredictions, OutputTopic, output_topics
from .parameters import PARAMETERS, InputQoS, NodeSettings, ReadAt, help_table, type_error

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

__all__ = [
    "InputQoS", "ReadAt", "NodeSettings", "NodeStatistics", "NodeParameterError", "StableMTLNode", "PARAMETERS",
    "OUTPUT_QOS", "input_profile", "main",
]


def input_profile(qos: InputQoS, depth: int) -> QoSProfile:
    """The input subscription's QoS: keep-last ``depth``, volatile, reliability as ``qos`` says (see InputQoS)."""
    reliability = ReliabilityPolicy.BEST_EFFORT if qos is InputQoS.SENSOR_DATA else ReliabilityPolicy.RELIABLE
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST, depth=depth, reliability=reliability, durability=DurabilityPolicy.VOLATILE
    )


class NodeParameterError(StableMTLError, InvalidParameterValueException):
    """A start-up parameter is invalid: one line naming it and what it takes (``main`` prints it)."""

    def __init__(self, message: str) -> None:
        Exception.__init__(self, message)


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
        self._refusal = ""
        for name, p in PARAMETERS.items():
            descriptor = ParameterDescriptor(description=p.description, dynamic_typing=p.dynamic)
            try:
                self.declare_parameter(name, p.default, descriptor)
            except InvalidParameterTypeException:
                override = getattr(self, "_parameter_overrides", {}).get(name)  # rclpy keeps `-p` values here
                raise NodeParameterError(type_error(name, getattr(override, "value", None))) from None
            except InvalidParameterValueException:
                raise NodeParameterError(f"parameter `{name}`: {self._refusal}") from None

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
            self._refusal = str(exc)
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
            runtime = Runtime.from_options(settings.runtime)
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
        qos = self._input_qos_override or input_profile(settings.input_qos, settings.qos_depth)
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
            return f"{waited}: the publisher on {topic} does not match the input's QoS (`ros2 topic info -v {topic}`)"
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
        epilog=help_table(),
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
            except (StableMTLError, InvalidParameterValueException, InvalidParameterTypeException) as exc:
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
