"""ROS 2 integration: image message conversions, the ``stablemtl-ros`` node and offline bag processing.

Importing this package needs neither rclpy nor rosbags: :mod:`.image_conversions` works on any message
object with the ``sensor_msgs`` fields, :mod:`.bag` needs ``rosbags`` and :mod:`.node` needs rclpy (both
come with ``pip install "stablemtl-edge[ros]"``).
"""
