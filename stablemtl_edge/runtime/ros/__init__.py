"""ROS 2 integration: image message conversions, the ``stablemtl-ros`` node and offline bag processing.

Importing this package needs neither rclpy nor rosbags: :mod:`.image_conversions` works on any message
object with the ``sensor_msgs`` fields, :mod:`.bag` needs ``rosbags`` and :mod:`.node` needs rclpy (both
come with ``pip install "stablemtl-edge[ros]"``). The two entry points below load them only when run, so
on a machine without the extra they print what to install instead of a traceback.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from ...errors import MissingDependencyError

__all__ = ["main", "bag_main"]


def main(args: Sequence[str] | None = None) -> int:
    """``stablemtl-ros``: run the node (see :func:`.node.main`)."""
    try:
        from .node import main as node_main
    except MissingDependencyError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return node_main(args)


def bag_main(argv: Sequence[str] | None = None) -> int:
    """``stablemtl-ros-bag``: process a bag offline (see :func:`.bag.main`)."""
    try:
        from .bag import main as run_bag
    except MissingDependencyError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return run_bag(argv)
