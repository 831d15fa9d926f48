"""The torch-free runtime: backends, scheduler, streaming, visualisation, ROS 2 node."""
