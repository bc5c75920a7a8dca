"""The whole stack with no hardware: the MuJoCo robot node and the policy node, headless unless rviz:=true."""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, IncludeLaunchDescription
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.substitutions import FindPackageShare


def generate_launch_description():
    base = PathJoinSubstitution([FindPackageShare("vla_ros"), "launch", "vla_ros.launch.py"])
    forwarded = ("robot", "policy", "instruction", "dry_run", "rviz", "monitor")
    return LaunchDescription([
        DeclareLaunchArgument("robot", default_value="so101", choices=["so101", "panda"]),
        DeclareLaunchArgument("policy", default_value="expert"),
        DeclareLaunchArgument("instruction", default_value="touch the red cube"),
        DeclareLaunchArgument("dry_run", default_value="false", choices=["true", "false"]),
        DeclareLaunchArgument("rviz", default_value="false", choices=["true", "false"]),
        DeclareLaunchArgument("monitor", default_value="false", choices=["true", "false"]),
        IncludeLaunchDescription(
            PythonLaunchDescriptionSource(base),
            launch_arguments={"sim": "mujoco", **{name: LaunchConfiguration(name) for name in forwarded}}.items(),
        ),
    ])
