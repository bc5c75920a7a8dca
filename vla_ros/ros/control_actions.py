"""control_msgs action types that not every ROS 2 distribution has, looked up when a robot config asks for them."""

from __future__ import annotations

from vla_ros.core.errors import ConfigError


def parallel_gripper_command() -> type:
    """control_msgs/action/ParallelGripperCommand, or a ConfigError naming the alternative (checked at start-up)."""
    try:
        from control_msgs.action import ParallelGripperCommand
    except ImportError:  # control_msgs older than Jazzy's
        raise ConfigError("parallel_gripper_command needs control_msgs/action/ParallelGripperCommand, which this ROS "
                          "distribution lacks (it came with Jazzy): use gripper_command") from None
    return ParallelGripperCommand
