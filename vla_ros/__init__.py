"""vla_ros: drive ROS 2 robot arms with Vision-Language-Action policies.

Folders follow the data flow: `core` (ROS-free embodiment adapters, chunk scheduling, safety,
trajectories), `policies` (one subpackage per backend), `ros` (thin rclpy nodes), `sim` (the MuJoCo
world) and `cli` (the `vla-ros` command).
"""

from pkgutil import extend_path

# colcon generates vla_ros.msg/srv/action into its install tree. Where this copy of the package comes first on the
# path (a pip or editable install next to a sourced colcon workspace), the generated modules are found there too.
__path__ = extend_path(__path__, __name__)

__version__ = "0.1.0"
