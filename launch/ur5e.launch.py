"""The policy node for the ur5e (vla_ros.launch.py with robot:=ur5e); arguments as there, e.g. sim:=mujoco."""

from launch import LaunchDescription
from launch.actions import IncludeLaunchDescription
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import PathJoinSubstitution
from launch_ros.substitutions import FindPackageShare


def generate_launch_description():
    base = PathJoinSubstitution([FindPackageShare("vla_ros"), "launch", "vla_ros.launch.py"])
    return LaunchDescription([
        IncludeLaunchDescription(PythonLaunchDescriptionSource(base), launch_arguments={"robot": "ur5e"}.items()),
    ])
