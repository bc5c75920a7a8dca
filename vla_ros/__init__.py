"""vla_ros: drive ROS 2 robot arms with Vision-Language-Action policies.

Folders follow the data flow: `core` (ROS-free embodiment adapters, chunk scheduling, safety,
trajectories), `policies` (one subpackage per backend), `ros` (thin rclpy nodes), `sim` (the MuJoCo
world) and `cli` (the `vla-ros` command).
"""

__version__ = "0.1.0"
