"""The ``stablemtl-ros`` node's parameters: names, types, defaults, help, when each is read, and their check.

The single source for the node's declarations, its on-set validation, ``stablemtl-ros --help`` and
docs/ros2.md. rclpy-free, so the schema can be read (and tested) without ROS.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ...artifact.manifest import Precision
from ...errors import StableMTLError
from ...tasks import TASK_NAMES
from ..backends.base import Backend
from ..options import RuntimeOptions
from .outputs import AlbedoEncoding, OutputOptions
from ...records import KeyEnum

__all__ = ["InputQoS", "ReadAt", "ParameterSpec", "PARAMETERS", "NodeSettings", "help_table", "type_error"]


class InputQoS(KeyEnum):
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


class ReadAt(KeyEnum):
    """The transition that reads a parameter; while its effect is in use the parameter cannot change."""

    CONFIGURE = "configure"  #: locked while configured (runtime and publishers exist)
    ACTIVATE = "activate"  #: locked while active (the subscription exists)


@dataclass(frozen=True)
class ParameterSpec:
    """One ROS parameter: default (which fixes its type unless ``dynamic``), help text, when it is read."""

    default: Any
    description: str
    read_at: ReadAt
    dynamic: bool = False

    @property
    def accepts(self) -> str:
        """What a value of this parameter is, for messages ("an integer >= 1")."""
        if self.dynamic:
            return "a list of strings or a string"
        if isinstance(self.default, bool):
            return "true or false"
        if isinstance(self.default, int):
            return "an integer >= 1"
        if isinstance(self.default, float):
            return "a number with a decimal point (e.g. 2.0)"
        return "a string"


_TYPE_NAMES = {bool: "true/false", int: "an integer", float: "a number", str: "a string", list: "a list"}


def type_error(name: str, value: Any = None) -> str:
    """The one-line message for a parameter given a value of the wrong type (``-p rates.semantic:=abc``)."""
    spec = PARAMETERS[name]
    got = "" if value is None else f" got `{value}` ({_TYPE_NAMES.get(type(value), type(value).__name__)}):"
    return f"parameter `{name}`{got} it takes {spec.accepts}: {spec.description}"


# name -> declaration; the single source for declaration, validation, --help and docs/ros2.md.
_C, _A = ReadAt.CONFIGURE, ReadAt.ACTIVATE
PARAMETERS: dict[str, ParameterSpec] = {
    "artifact_dir": ParameterSpec("", "artifact directory written by stablemtl-export (holds manifest.json)", _C),
    "tasks": ParameterSpec(["all"], f"tasks to run: `all` or a list of {', '.join(TASK_NAMES)}", _C, dynamic=True),
    "mode": ParameterSpec(
        "", "single (one UNet pass per task) or multi (multi-stream); empty = the artifact's mode", _C
    ),
    "backend": ParameterSpec(Backend.AUTO.value, "auto, onnxruntime, tensorrt or triton (a Triton server: see url)", _C),
    "url": ParameterSpec("", "backend triton: the server, HOST:PORT (gRPC) or http://HOST:PORT; empty otherwise", _C),
    "precision": ParameterSpec(Precision.FP32.value, "fp32, fp16 or int8 (which exported graphs to load)", _C),
    "providers": ParameterSpec("", "comma-separated onnxruntime providers; empty = best available", _C),
    **{
        f"rates.{task}": ParameterSpec(1, f"run {task} every N-th processed frame", _C)
        for task in TASK_NAMES
    },
    "aux_reuse": ParameterSpec(1, "multi-stream: recompute auxiliary features every N frames (1 = exact)", _C),
    "decoder": ParameterSpec("full", "full (the VAE decoder) or tiny (the distilled decoder, when exported)", _C),
    "decoder_rows": ParameterSpec("auto", "rows per decoder call: auto (the backend's faster default), all or N", _C),
    "semantic_color": ParameterSpec(True, "also publish ~/semantic/color (rgb8 palette picture)", _C),
    "albedo_encoding": ParameterSpec(AlbedoEncoding.FLOAT32.value, "32FC3 (linear [0, 1]) or rgb8 for ~/albedo", _C),
    "debug": ParameterSpec(False, "also publish ~/debug/<task>, colourised rgb8 pictures for rviz", _C),
    "input_topic": ParameterSpec("image", "input topic (remappable); with `compressed`, <input_topic>/compressed", _A),
    "compressed": ParameterSpec(False, "subscribe to sensor_msgs/CompressedImage on <input_topic>/compressed", _A),
    "input_qos": ParameterSpec(
        InputQoS.RELIABLE.value, "reliable (every frame size arrives) or sensor_data (best effort publishers)", _A
    ),
    "qos_depth": ParameterSpec(1, "input queue depth (keep-last); 1 = always the newest frame", _A),
    "diagnostics_period": ParameterSpec(1.0, "seconds between /diagnostics messages", _A),
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
            decoder=v["decoder"],
            decoder_rows=v["decoder_rows"],
            standing_rates=True,  # one declared parameter per task
            url=str(v["url"]).strip() or None,
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
            input_qos=InputQoS.parse(v["input_qos"], "input_qos"),
            qos_depth=int(v["qos_depth"]),
            diagnostics_period=period,
        )

    @property
    def subscription_topic(self) -> str:
        return f"{self.input_topic.rstrip('/')}/compressed" if self.compressed else self.input_topic


def help_table() -> str:
    """The parameter list and an example, for ``stablemtl-ros --help``."""
    rows = [f"  {name:<20} {p.default!s:<12} {p.description}" for name, p in PARAMETERS.items()]
    return (
        "ROS parameters (--ros-args -p name:=value):\n" + "\n".join(rows) + "\n\n"
        "Example:\n  stablemtl-ros --ros-args -p artifact_dir:=artifacts/small -p tasks:=[depth,normal] "
        "-r image:=/camera/color/image_raw"
    )
