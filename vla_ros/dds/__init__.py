"""Pip-only ROS 2 mode: talk to a ROS 2 graph (rmw_cyclonedds_cpp, Humble or Jazzy) through the `cyclonedds`
Python wheel, with no ROS install. `messages` builds the ROS message classes from their .msg definitions.
"""
