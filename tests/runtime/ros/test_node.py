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
from rcl_interfaces.msg import Log  # noqa: E402
from rclpy.exceptions import InvalidParameterValueException  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.lifecycle import TransitionCallbackReturn  # noqa: E402
from rclpy.node import Node  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy  # noqa: E402
from sensor_msgs.msg import CompressedImage, Image  # noqa: E402
from std_msgs.msg import Header  # noqa: E402

from stablemtl_edge.artifact.manifest import Mode  # noqa: E402
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


def test_a_faster_publisher_makes_the_node_drop_not_queue(ros, artifacts):
    """Frames arrive faster than inference: the newest frame wins, older ones are counted as dropped."""
    node = start(ros, make_node(ros, artifact_dir=str(artifacts), tasks=["all"], input_qos="sensor_data"))
    depth = ros.listen("/stablemtl/depth/relative")
    pub = ros.helper.create_publisher(Image, "/image", QoSProfile(depth=1, reliability=ReliabilityPolicy.BEST_EFFORT))
    wait_for(lambda: pub.get_subscription_count() >= 1, what="the node's subscription")
    wait_for(lambda: ros.helper.count_publishers("/stablemtl/depth/relative") >= 1, what="the depth publisher")

    # 480 x 640 frames: inference, letterbox restore and publishing 9 topics take far longer per frame than
    # publishing one input message, so the publisher outruns the node.
    frames = photo_frames(4, (480, 640))
    messages = [numpy_to_image(frames[i % 4], "rgb8", Image, stamp(i)) for i in range(40)]
    for msg in messages:
        pub.publish(msg)
        time.sleep(0.002)

    def settled() -> bool:
        s = node.statistics()
        return s.received > 0 and s.processed + s.dropped + s.skipped + s.errors == s.received
    wait_for(settled, what="the node to finish the frame in flight")
    time.sleep(0.3)  # nothing else is on the way: the counts stay
    assert settled()
    stats = node.statistics()
    assert stats.errors == 0 and stats.skipped == 0
    assert stats.dropped >= 1, stats  # frames were replaced in the slot, not queued
    assert stats.processed < stats.received <= len(messages)
    # Latest wins: the last frame sent is the last one processed, and outputs come in stamp order.
    wait_for(lambda: _arrived({"d": depth}, "d", stamp(len(messages) - 1)), what="the newest frame's depth")
    secs = [m.header.stamp.sec for m in depth]
    assert secs == sorted(secs) and len(secs) == len(set(secs)) <= stats.processed
    assert stats.latency_max_ms >= stats.service_mean_ms > 0
    print(f"\nfast publisher: {stats}")


def test_compressed_input(ros, artifacts):
    node = start(ros, make_node(ros, artifact_dir=str(artifacts), tasks=["depth", "semantic"], compressed=True,
                                input_topic="camera/image_raw", semantic_color=False))
    boxes = {n: ros.listen(f"/stablemtl/{n}") for n in ("depth/relative", "semantic")}
    pub = ros.helper.create_publisher(CompressedImage, "/camera/image_raw/compressed", QoSProfile(depth=10))
    wait_for(lambda: pub.get_subscription_count() >= 1, what="the node's subscription")
    wait_for(lambda: ros.helper.count_publishers("/stablemtl/semantic") >= 1, what="outputs")
    assert ros.helper.count_publishers("/stablemtl/semantic/color") == 0

    frame = photo_frames(1)[0]
    ok, png = cv2.imencode(".png", frame[..., ::-1])
    pub.publish(CompressedImage(header=stamp(5), format="png", data=png.tobytes()))
    wait_for(lambda: all(boxes.values()), what="outputs of the compressed frame")
    with Runtime.from_artifacts(artifacts, tasks=["depth", "semantic"]) as direct:
        want = direct.infer(frame)
    assert same_stamp(boxes["depth/relative"][0].header, stamp(5))
    np.testing.assert_allclose(image_to_numpy(boxes["depth/relative"][0]), want["depth"], atol=1e-5)
    assert boxes["semantic"][0].encoding == "mono8"
    assert np.mean(image_to_numpy(boxes["semantic"][0]) != want["semantic"]) < 1e-3
    assert node.statistics().processed == 1


@pytest.fixture(scope="module")
def multi_artifacts(tmp_path_factory) -> Path:
    return ToyModel().write(tmp_path_factory.mktemp("toy_multi"), Mode.MULTI)


def test_multi_stream_mode_and_task_rates(ros, multi_artifacts):
    """Multi-stream, semantic every 2nd frame: each prediction goes out once, stamped with its own frame."""
    start(ros, make_node(ros, artifact_dir=str(multi_artifacts), mode="multi", tasks=["depth", "semantic"],
                         semantic_color=False, **{"rates.semantic": 2}))
    boxes = {n: ros.listen(f"/stablemtl/{n}") for n in ("depth/relative", "semantic")}
    pub = ros.helper.create_publisher(Image, "/image", QoSProfile(depth=10))
    wait_for(lambda: pub.get_subscription_count() >= 1, what="the node's subscription")
    wait_for(lambda: ros.helper.count_publishers("/stablemtl/semantic") >= 1, what="outputs")
    frames = photo_frames(3)
    for i, frame in enumerate(frames):
        pub.publish(numpy_to_image(frame, "rgb8", Image, stamp(i)))
        wait_for(lambda: _arrived(boxes, "depth/relative", stamp(i)), what=f"depth of frame {i}")
    with Runtime.from_artifacts(multi_artifacts, tasks=["depth", "semantic"], mode="multi",
                                rates={"semantic": 2}) as direct:
        expected = [direct.infer(f) for f in frames]
    wait_for(lambda: _arrived(boxes, "semantic", stamp(2)), what="semantic of frame 2")
    assert [m.header.stamp.sec for m in boxes["semantic"]] == [stamp(0).stamp.sec, stamp(2).stamp.sec]
    for msg, i in zip(boxes["depth/relative"], range(3)):
        np.testing.assert_allclose(image_to_numpy(msg), expected[i]["depth"], atol=1e-5)
    for msg, i in zip(boxes["semantic"], (0, 2)):
        assert np.mean(image_to_numpy(msg) != expected[i]["semantic"]) < 1e-3


def test_parameters_are_validated_and_locked_while_in_use(ros, artifacts):
    with pytest.raises(InvalidParameterValueException, match="unknown task `sky`: valid tasks are normal"):
        make_node(ros, tasks=["depth", "sky"])
    with pytest.raises(InvalidParameterValueException, match="rate of `semantic` must be an integer >= 1"):
        make_node(ros, **{"rates.semantic": 0})

    node = ros.add(make_node(ros))
    refused = node.set_parameters([Parameter("mode", value="triple")])[0]
    assert not refused.successful and "unknown mode `triple`: choose from single, multi" in refused.reason
    refused = node.set_parameters([Parameter("input_qos", value="fast")])[0]
    assert not refused.successful and "choose from sensor_data, reliable" in refused.reason
    refused = node.set_parameters([Parameter("albedo_encoding", value="rgba8")])[0]
    assert not refused.successful and "choose from 32FC3, rgb8" in refused.reason

    # Unconfigured and no artifact directory: configure fails with the reason, the node stays usable.
    assert node.trigger_configure() == TransitionCallbackReturn.FAILURE
    assert node.set_parameters([Parameter("artifact_dir", value=str(artifacts / "nope"))])[0].successful
    assert node.trigger_configure() == TransitionCallbackReturn.FAILURE
    assert node.set_parameters([Parameter("artifact_dir", value=str(artifacts))])[0].successful
    assert node.set_parameters([Parameter("tasks", value="depth,normal")])[0].successful  # a string works too
    assert node.set_parameters([Parameter("rates.normal", value=2)])[0].successful
    assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
    assert node.settings().runtime.tasks == ("normal", "depth")
    assert node.settings().runtime.rates == {"normal": 2}

    locked = node.set_parameters([Parameter("tasks", value=["semantic"])])[0]
    assert not locked.successful and "`tasks` is read when the node is configured" in locked.reason
    assert node.set_parameters([Parameter("input_topic", value="cam")])[0].successful  # read at activate
    assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
    wait_for(lambda: ros.helper.count_subscribers("/cam") >= 1, what="the subscription on the new topic")
    locked = node.set_parameters([Parameter("input_topic", value="other")])[0]
    assert not locked.successful and "deactivate" in locked.reason
    assert node.trigger_deactivate() == TransitionCallbackReturn.SUCCESS
    wait_for(lambda: ros.helper.count_subscribers("/cam") == 0, what="the subscription to go")
    assert node.trigger_cleanup() == TransitionCallbackReturn.SUCCESS
    assert node.set_parameters([Parameter("tasks", value=["semantic"])])[0].successful


def _run_main(args: list[str], env_extra: dict[str, str] | None = None, **popen) -> subprocess.Popen:
    env = {**os.environ, "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST", "ROS_DOMAIN_ID": str(next(_DOMAINS)),
           "PYTHONUNBUFFERED": "1", **(env_extra or {})}
    code = "import sys; from stablemtl_edge.runtime.ros import main; sys.exit(main(sys.argv))"
    return subprocess.Popen([sys.executable, "-c", code, *args], env=env, cwd=REPO, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **popen)


def test_main_runs_until_ctrl_c_and_exits_cleanly(artifacts):
    proc = _run_main(["--ros-args", "-p", f"artifact_dir:={artifacts}", "-p", "tasks:=[depth]"])
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stderr), daemon=True)
    reader.start()
    try:
        wait_for(lambda: any("active:" in line for line in lines), what="the node to become active")
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=TIMEOUT) == 0
    finally:
        proc.kill()
    reader.join(timeout=5)
    text = "".join(lines)
    assert "Traceback" not in text and "/stablemtl/{depth/relative}" in text


def test_main_reports_user_mistakes_in_one_line():
    proc = _run_main(["--ros-args", "-p", "mode:=triple"])
    _, err = proc.communicate(timeout=TIMEOUT)
    assert proc.returncode == 1 and "error:" in err and "choose from single, multi" in err and "Traceback" not in err
    proc = _run_main([])  # no artifact directory
    _, err = proc.communicate(timeout=TIMEOUT)
    assert proc.returncode == 1 and "the `artifact_dir` parameter is not set" in err and "Traceback" not in err


def test_without_ros_the_entry_point_names_the_extra_and_the_rest_imports():
    """In a process where rclpy and rosbags cannot be imported."""
    code = (
        "import sys; sys.modules['rclpy'] = None; sys.modules['rosbags'] = None\n"
        "import stablemtl_edge.runtime, stablemtl_edge.runtime.ros.image_conversions\n"
        "import stablemtl_edge.runtime.ros.outputs\n"
        "from stablemtl_edge.runtime.ros import main, bag_main\n"
        "sys.exit(10 * main(['stablemtl-ros']) + bag_main(['in', 'out', '--artifacts', 'x']))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, text=True, capture_output=True, timeout=60)
    assert proc.returncode == 11, proc.stderr
    assert proc.stderr.count('pip install "stablemtl-edge[ros]"') == 2 and "Traceback" not in proc.stderr
    assert "`rclpy` is not installed" in proc.stderr and "`rosbags` is not installed" in proc.stderr


def _doc_block(containing: str) -> str:
    text = (REPO / "docs" / "ros2.md").read_text()
    blocks = [b.split("```", 1)[0] for b in text.split("```python\n")[1:]]
    return next(b for b in blocks if containing in b)


def test_the_documented_embedding_example_runs(ros, artifacts):
    namespace: dict = {}
    exec(_doc_block("class DepthNode"), namespace)  # noqa: S102 - our own documentation
    node = ros.add(namespace["DepthNode"](artifacts=str(artifacts), context=ros.context))
    box = ros.listen("/depth/relative")
    pub = ros.helper.create_publisher(Image, "/image", QoSProfile(depth=10))
    wait_for(lambda: pub.get_subscription_count() >= 1 and ros.helper.count_publishers("/depth/relative") >= 1,
             what="the example node")
    frame = photo_frames(1)[0]
    pub.publish(numpy_to_image(frame, "rgb8", Image, stamp(7)))
    wait_for(lambda: len(box) == 1, what="the example's depth")
    with Runtime.from_artifacts(artifacts, tasks=["depth"]) as direct:
        np.testing.assert_allclose(image_to_numpy(box[0]), direct.infer(frame)["depth"], atol=1e-5)
    assert same_stamp(box[0].header, stamp(7))
    node.runtime.close()


def test_the_docs_list_every_parameter_and_topic():
    from stablemtl_edge.runtime.ros.node import PARAMETERS

    text = (REPO / "docs" / "ros2.md").read_text()
    for name in PARAMETERS:
        assert f"`{name}`" in text or name.startswith("rates."), name
    assert "`rates.normal` ... `rates.shading`" in text
    for t in output_topics("all", OutputOptions(debug=True)):
        assert f"`~/{t.name}`" in text or t.name.startswith("debug/"), t.name
        assert f"| {t.encoding.value}" in text or t.name.startswith("debug/") or t.name == "albedo"
    assert "`~/debug/<task>`" in text and 'pip install "stablemtl-edge[ros]"' in text


def _camera(size: str, count: int, reliability: str, ros: Ros, profile: Path | None = None,
            **extra) -> subprocess.Popen:
    """The camera stand-in (tests/runtime/ros/camera_publisher.py) in its own process on ``ros``'s domain.

    ``profile``: a Fast DDS XML profile file for the publisher's process.
    """
    env = {**os.environ, "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST", "ROS_DOMAIN_ID": str(ros.domain)}
    if profile is not None:
        env["FASTRTPS_DEFAULT_PROFILES_FILE"] = str(profile)
    flags = [f"--{k}={v}" for k, v in extra.items()]
    return subprocess.Popen(
        [sys.executable, "-m", "tests.runtime.ros.camera_publisher", f"--size={size}", f"--count={count}",
         f"--reliability={reliability}", *flags],
        env=env, cwd=REPO, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )


@pytest.mark.parametrize("size", ["720x1280", "1080x1920"])
def test_large_frames_from_a_camera_process_arrive_with_the_default_qos(ros, artifacts, size):
    """A camera driver in another process (default, reliable QoS): every HD frame reaches the node.

    With a best-effort input these frames were lost: Fast DDS fragments them and drops the whole sample
    when one fragment misses (the writer's 512 KB shared-memory segment, the socket buffer).
    """
    node = start(ros, make_node(ros, artifact_dir=str(artifacts), tasks=["depth"], diagnostics_period=0.5))
    depth = ros.listen("/stablemtl/depth/relative")
    camera = _camera(size, 5, "reliable", ros)
    try:
        out, err = camera.communicate(timeout=60)
    finally:
        camera.kill()
    assert camera.returncode == 0 and "sent 5 matched 1" in out, err
    wait_for(lambda: node.statistics().received == 5, what=f"5 {size} frames (got {node.statistics()})")
    wait_for(lambda: len(depth) >= 1, what="a depth image")
    stats = node.statistics()
    assert stats.errors == 0 and stats.skipped == 0 and stats.processed >= 1
    h, w = (int(v) for v in size.split("x"))
    assert image_to_numpy(depth[-1]).shape == (h, w)
    print(f"\n{size}: received {stats.received}/5, processed {stats.processed}, dropped {stats.dropped}")


def test_the_documented_transport_profile_lets_large_best_effort_frames_arrive(ros, artifacts, tmp_path):
    """A best-effort-only camera driver started with the Fast DDS profile of docs/ros2.md: 1080p arrives."""
    text = (REPO / "docs" / "ros2.md").read_text()
    profile = tmp_path / "large_frames.xml"
    profile.write_text(text.split("```xml\n", 1)[1].split("```", 1)[0])
    node = start(ros, make_node(ros, artifact_dir=str(artifacts), tasks=["depth"], input_qos="sensor_data"))
    camera = _camera("1080x1920", 5, "best_effort", ros, profile=profile)
    try:
        out, err = camera.communicate(timeout=60)
    finally:
        camera.kill()
    assert camera.returncode == 0 and "sent 5 matched 1" in out, err
    wait_for(lambda: node.statistics().received == 5, what=f"5 best-effort frames (got {node.statistics()})")


def test_zero_size_frames_are_skipped_input_not_inference_errors(ros, artifacts):
    node = start(ros, make_node(ros, artifact_dir=str(artifacts), tasks=["depth"], diagnostics_period=0.2))
    diagnostics = ros.listen("/diagnostics", DiagnosticArray)
    pub = ros.helper.create_publisher(Image, "/image", QoSProfile(depth=10))
    wait_for(lambda: pub.get_subscription_count() >= 1, what="the node's subscription")
    empty = [Image(header=stamp(i), height=h, width=w, encoding="rgb8", step=3 * w) for i, (h, w) in
             enumerate([(0, 0), (480, 0), (0, 640)])]
    for msg in empty:
        pub.publish(msg)
        time.sleep(0.05)
    wait_for(lambda: node.statistics().skipped == 3, what=f"3 skipped frames (got {node.statistics()})")
    assert node.statistics().errors == 0
    wait_for(lambda: any(_value(s, "frames_skipped") == "3" for d in diagnostics for s in d.status),
             what="diagnostics counting the skipped frames")
    levels = {s.level for d in diagnostics for s in d.status}
    assert DiagnosticStatus.ERROR not in levels and DiagnosticStatus.WARN in levels


@pytest.mark.parametrize(
    ("input_qos", "camera", "count", "advice"),
    [
        ("reliable", "best_effort", 50, "set -p input_qos:=sensor_data"),  # QoS mismatch: never connect
        ("reliable", "reliable", 0, "it has stopped sending"),  # matched, silent
    ],
)
def test_a_publisher_whose_frames_do_not_arrive_is_diagnosed(ros, artifacts, input_qos, camera, count, advice):
    """A camera process on the input topic, no frame reaching the node: WARN with the cause within seconds.

    (Large best-effort frames at 5-30 Hz lose most frames here but not all, so they are not a stall.)
    """
    # A name of its own: rcl routes a logger to /rosout by node name, process-wide, and earlier tests'
    # `stablemtl` nodes (other contexts, destroyed) would take its log lines.
    name = f"stablemtl_stall_{ros.domain}"
    node = start(ros, StableMTLNode(name, context=ros.context, parameter_overrides=[
        Parameter(k, value=v) for k, v in dict(artifact_dir=str(artifacts), tasks=["depth"], input_qos=input_qos,
                                               diagnostics_period=0.5).items()]))
    diagnostics = ros.listen("/diagnostics", DiagnosticArray)
    log = ros.listen("/rosout", Log, QoSProfile(depth=100, durability=DurabilityPolicy.TRANSIENT_LOCAL))
    proc = _camera("720x1280", count, camera, ros, wait=2, period=0.2, linger=15)
    try:
        wait_for(lambda: sum(advice in s.message for d in list(diagnostics) for s in d.status) >= 3,
                 what=f"diagnostics advising `{advice}` (three periods)")
    finally:
        proc.kill()
        proc.communicate()
    status = next(s for d in diagnostics for s in d.status if advice in s.message)
    assert status.level == DiagnosticStatus.WARN and "no frame for 3 s" in status.message
    def warnings() -> list:
        return [m for m in list(log) if m.name == name and advice in m.msg]
    wait_for(lambda: warnings(), what=f"the log warning advising `{advice}` on /rosout ({len(log)} log lines)")
    assert len(warnings()) == 1 and warnings()[0].level == Log.WARN  # logged once, not every period
    assert node.statistics().received == 0


@pytest.mark.parametrize(
    ("param", "named", "accepted"),
    [
        ("tasks:=5", "parameter `tasks`", "choose from normal, depth"),
        ("rates.semantic:=abc", "parameter `rates.semantic` got `abc` (a string)", "it takes an integer >= 1"),
        ("diagnostics_period:=2", "parameter `diagnostics_period` got `2` (an integer)", "a number with a decimal"),
        ("debug:=3", "parameter `debug`", "it takes true or false"),
    ],
)
def test_a_parameter_of_the_wrong_type_or_value_is_one_line_and_the_node_does_not_start(artifacts, param, named,
                                                                                      accepted):
    proc = _run_main(["--ros-args", "-p", f"artifact_dir:={artifacts}", "-p", param])
    out, err = proc.communicate(timeout=TIMEOUT)
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert proc.returncode == 1 and "Traceback" not in err and "active:" not in err + out, err
    assert len(errors) == 1 and named in errors[0] and accepted in errors[0], err


def test_the_parameter_schema_lives_in_its_own_rclpy_free_module():
    code = (
        "import sys; sys.modules['rclpy'] = None\n"
        "from stablemtl_edge.runtime.ros.parameters import PARAMETERS, NodeSettings, help_table\n"
        "assert 'rates.semantic' in PARAMETERS and 'input_qos' in help_table()\n"
        "assert NodeSettings.from_values({'artifact_dir': 'x'}).input_qos.value == 'reliable'\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, text=True, capture_output=True, timeout=60)
    assert proc.returncode == 0, proc.stderr


def test_the_triton_backend_takes_its_server_from_the_url_parameter():
    from stablemtl_edge.errors import StableMTLError
    from stablemtl_edge.runtime.ros.parameters import NodeSettings

    settings = NodeSettings.from_values({"artifact_dir": "x", "backend": "triton", "url": " gpu:8001 "})
    assert settings.runtime.backend.value == "triton" and settings.runtime.url == "gpu:8001"
    with pytest.raises(StableMTLError, match="backend `triton` needs the server's address"):
        NodeSettings.from_values({"artifact_dir": "x", "backend": "triton"})
    with pytest.raises(StableMTLError, match="runs in this process"):
        NodeSettings.from_values({"artifact_dir": "x", "backend": "onnxruntime", "url": "gpu:8001"})
