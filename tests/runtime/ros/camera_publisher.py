"""A camera driver stand-in for the node tests: a separate process publishing rgb8 photographs on ``/image``.

A separate process, because publishers and subscriptions in one process talk intra-process and never
meet the transport limits (shared-memory segment, socket buffers) that a real camera driver meets.

    python -m tests.runtime.ros.camera_publisher --size 720x1280 --count 5 --reliability reliable

It waits up to ``--wait`` seconds for a matched subscription, publishes, prints ``sent N`` on stdout
and stays alive ``--linger`` seconds (reliable delivery repairs lost fragments from the writer's history).
"""

from __future__ import annotations

import argparse
import sys
import time

import cv2
import numpy as np
import rclpy
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image
from skimage import data as skdata


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", default="720x1280", help="HxW")
    parser.add_argument("--count", type=int, default=5)
    parser.add_argument("--period", type=float, default=0.2, help="seconds between frames")
    parser.add_argument("--reliability", choices=("reliable", "best_effort"), default="reliable")
    parser.add_argument("--wait", type=float, default=10.0, help="seconds to wait for a matched subscription")
    parser.add_argument("--linger", type=float, default=3.0)
    args = parser.parse_args()
    h, w = (int(v) for v in args.size.split("x"))
    rclpy.init()
    node = Node("camera_publisher")
    reliability = ReliabilityPolicy.RELIABLE if args.reliability == "reliable" else ReliabilityPolicy.BEST_EFFORT
    pub = node.create_publisher(Image, "/image", QoSProfile(depth=1, reliability=reliability))
    deadline = time.monotonic() + args.wait
    while pub.get_subscription_count() < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)  # let the subscription's side of discovery finish too
    pixels = np.ascontiguousarray(cv2.resize(skdata.astronaut(), (w, h), interpolation=cv2.INTER_LINEAR))
    msg = Image(height=h, width=w, encoding="rgb8", step=3 * w, data=pixels.tobytes())
    msg.header.frame_id = "camera_optical"
    for i in range(args.count):
        msg.header.stamp.sec = 1_700_000_000 + i
        pub.publish(msg)
        time.sleep(args.period)
    print(f"sent {args.count} matched {pub.get_subscription_count()}", flush=True)
    time.sleep(args.linger)
    node.destroy_node()
    rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
