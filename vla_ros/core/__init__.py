"""ROS-free core: embodiment adapters, chunk scheduling, safety and trajectories.

Imports no rclpy, no torch and no message types: everything here is tested on any machine.
"""
