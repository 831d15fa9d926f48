"""The stablemtl-ros node with real rclpy and DDS on loopback, real ONNX artifacts and real photographs.

Every test gets its own rclpy context and ROS domain id, discovery limited to localhost, an executor
spinning on a background thread, and timeouts on every wait.
"""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest
from skimage import data as skdata

pytest.importorskip("rclpy", reason='rclpy not installed: pip install "stablemtl-edge[ros]"')
pytestmark = pytest.mark.ros

import rclpy  # noqa: E402
from builtin_interfaces.msg import Time  # noqa: E402
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus  # noqa: E402
from rclpy.exceptions import InvalidParameterValueException  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.lifecycle import TransitionCallbackReturn  # noqa: E402
from rclpy.node import Node  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rclpy.qos import QoSProfile, ReliabilityPolicy  # noqa: E402
from sensor_msgs.msg import CompressedImage, Image  # noqa: E402
from std_msgs.msg import Header  # noqa: E402

from stablemtl_edge.manifest import Mode  # noqa: E402
from stablemtl_edge.runtime import Runtime  # noqa: E402
from stablemtl_edge.runtime.ros.image_conversions import image_to_numpy, numpy_to_image  # noqa: E402
from stablemtl_edge.runtime.ros.node import StableMTLNode  # noqa: E402
from stablemtl_edge.runtime.ros.outputs import OutputOptions, output_topics  # noqa: E402
from tests.runtime.artifact_zoo import ToyModel  # noqa: E402

TIMEOUT = 20.0  # seconds; generous for 2 shared cores, never reached when things work
# Unique ROS domain ids per test and per pytest process (ids above 101 may collide with ephemeral ports).
_DOMAINS = itertools.count(1 + os.getpid() % 50)
REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory) -> Path:
    """A small real single-stream ONNX artifact directory (64 x 128 processing size, all 7 tasks)."""
    return ToyModel().write(tmp_path_factory.mktemp("toy_single"), Mode.SINGLE)


def photo_frames(n: int, size: tuple[int, int] = (120, 160)) -> list[np.ndarray]:
    """``n`` uint8 RGB frames of a real photograph (the astronaut), panning right by 6 pixels per frame."""
    h, w = size
    side = max(w + 6 * n, h + 10)
    img = cv2.resize(skdata.astronaut(), (side, side), interpolation=cv2.INTER_AREA)
    return [np.ascontiguousarray(img[10 : 10 + h, 6 * i : 6 * i + w]) for i in range(n)]


def wait_for(condition: Callable[[], bool], timeout: float = TIMEOUT, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.01)


class Ros:
    """One isolated ROS graph: a context on a fresh domain, an executor thread, a helper node."""

    def __init__(self) -> None:
        self.domain = next(_DOMAINS)
        self.context = rclpy.Context()
        rclpy.init(context=self.context, domain_id=self.domain)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.helper = Node("test_helper", context=self.context)
        self.executor.add_node(self.helper)
        self.nodes: list[Node] = [self.helper]
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()
        self._lock = threading.Lock()
        self.received: dict[str, list] = {}

    def _spin(self) -> None:
        try:
            self.executor.spin()
        except rclpy.executors.ExternalShutdownException:
            pass

    def add(self, node: Node) -> Node:
        self.nodes.append(node)
        self.executor.add_node(node)
        return node

    def listen(self, topic: str, msg_type=Image, qos: QoSProfile | None = None) -> list:
        """Collect every message on ``topic`` into a list (thread-safe append)."""
        box = self.received.setdefault(topic, [])

        def callback(msg) -> None:
            with self._lock:
                box.append(msg)

        self.helper.create_subscription(msg_type, topic, callback, qos or QoSProfile(depth=100))
        return box

    def close(self) -> None:
        self.executor.shutdown(timeout_sec=5.0)
        for node in self.nodes:
            node.destroy_node()
        self.context.try_shutdown()
        self._thread.join(timeout=5.0)


@pytest.fixture
def ros(monkeypatch):
    monkeypatch.setenv("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    graph = Ros()
    yield graph
    graph.close()


def make_node(ros: Ros, **params) -> StableMTLNode:
    overrides = [Parameter(k, value=v) for k, v in params.items()]
    return StableMTLNode(context=ros.context, parameter_overrides=overrides)


def start(ros: Ros, node: StableMTLNode) -> StableMTLNode:
    assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
    assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
    ros.add(node)
    return node


def stamp(i: int) -> Header:
    return Header(stamp=Time(sec=1_700_000_000 + i, nanosec=1000 + i), frame_id="camera_optical")


def same_stamp(a: Header, b: Header) -> bool:
    return (a.stamp.sec, a.stamp.nanosec, a.frame_id) == (b.stamp.sec, b.stamp.nanosec, b.frame_id)


def test_outputs_equal_the_runtime_with_encodings_shapes_and_headers(ros, artifacts):
    options = OutputOptions(semantic_color=True, debug=True)
    node = start(ros, make_node(ros, artifact_dir=str(artifacts), tasks=["all"], debug=True, diagnostics_period=0.2))
    topics = output_topics("all", options)
    boxes = {t.name: ros.listen(f"/stablemtl/{t.name}") for t in topics}
    diagnostics = ros.listen("/diagnostics", DiagnosticArray)
    pub = ros.helper.create_publisher(Image, "/image", QoSProfile(depth=10))
    wait_for(lambda: pub.get_subscription_count() >= 1, what="the node's subscription")
    wait_for(lambda: all(ros.helper.count_publishers(f"/stablemtl/{t.name}") >= 1 for t in topics), what="outputs")

    frames = photo_frames(3)
    with Runtime.from_artifacts(artifacts, tasks="all", mode="single") as direct:
        expected = [direct.infer(f) for f in frames]
    # Frame 2 goes out as bgr8 (the node must honour the encoding); before it, a depth image the node
    # must skip (logged once) without stopping.
    messages = [
        numpy_to_image(frames[0], "rgb8", Image, stamp(0)),
        numpy_to_image(frames[1], "rgb8", Image, stamp(1)),
        numpy_to_image(np.ones((8, 8), np.float32), "32FC1", Image, stamp(99)),
        numpy_to_image(frames[2][..., ::-1], "bgr8", Image, stamp(2)),
    ]
    frame_of = [0, 1, None, 2]
    for msg, index in zip(messages, frame_of):
        pub.publish(msg)
        if index is None:
            wait_for(lambda: node.statistics().skipped == 1, what="the unsupported message to be skipped")
            continue
        want = {t.name for t in topics if t.task in expected[index].predictions}
        wait_for(lambda: all(_arrived(boxes, n, stamp(index)) for n in want), what=f"outputs of frame {index}")

    for t in topics:
        got = boxes[t.name]
        indices = [i for i in range(3) if t.task in expected[i].predictions]
        assert [(m.header.stamp.sec, m.header.stamp.nanosec) for m in got] == [
            (stamp(i).stamp.sec, stamp(i).stamp.nanosec) for i in indices
        ], t.name
        for msg, i in zip(got, indices):
            assert msg.encoding == t.encoding.value and msg.header.frame_id == "camera_optical"
            value = image_to_numpy(msg)
            want = t.convert(expected[i].predictions[t.task].value)
            assert value.shape == want.shape and value.shape[:2] == frames[i].shape[:2]
            assert value.dtype == want.dtype
            if value.dtype == np.float32:
                np.testing.assert_allclose(value, want, atol=1e-5, equal_nan=True, err_msg=t.name)
            else:
                assert np.mean(value != want) < 1e-3, t.name  # ids/colours: exact but for float ties
    assert "optical_flow" not in expected[0].predictions and len(boxes["optical_flow"]) == 2

    stats = node.statistics()
    assert (stats.received, stats.processed, stats.skipped, stats.errors) == (4, 3, 1, 0)
    wait_for(lambda: any(s.values for d in diagnostics for s in d.status if _value(s, "frames_processed") == "3"),
             what="a diagnostics message after the frames")
    status = next(s for d in diagnostics for s in d.status if _value(s, "frames_processed") == "3")
    assert status.name == "/stablemtl: inference"
    assert {"fps", "latency_mean_ms", "latency_max_ms", "frames_dropped", "frames_skipped"} <= {
        kv.key for kv in status.values
    }
    assert _value(status, "frames_skipped") == "1" and status.level in (DiagnosticStatus.OK, DiagnosticStatus.WARN)


def _arrived(boxes: dict[str, list], name: str, header: Header) -> bool:
    return any(same_stamp(m.header, header) for m in list(boxes[name]))


def _value(status, key: str) -> str | None:
    return next((kv.value for kv in status.values if kv.key == key), None)
