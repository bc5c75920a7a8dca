"""The ghost robot: with description_file:=<urdf>, the policy node's ~/preview drives frames preview/* on /tf."""

from __future__ import annotations

import os
import time
import unittest

import pytest

pytest.importorskip("launch_testing", reason="needs ROS 2 (launch_testing): source a ROS 2 Humble or Jazzy setup")
pytest.importorskip("vla_ros.msg", reason="needs vla_ros built with colcon (its interfaces are generated)")

import launch_testing  # noqa: E402
import rclpy  # noqa: E402
import rclpy.executors  # noqa: E402
from launch import LaunchDescription  # noqa: E402
from launch.actions import IncludeLaunchDescription  # noqa: E402
from launch.launch_description_sources import PythonLaunchDescriptionSource  # noqa: E402
from launch.substitutions import PathJoinSubstitution  # noqa: E402
from launch_ros.substitutions import FindPackageShare  # noqa: E402
from sensor_msgs.msg import JointState  # noqa: E402
from std_msgs.msg import Header  # noqa: E402
from tf2_msgs.msg import TFMessage  # noqa: E402

DOMAIN_ID = "83"
URDF = """<robot name="two_link">
  <link name="base"/><link name="upper"/><link name="lower"/>
  <joint name="shoulder_pan" type="revolute"><parent link="base"/><child link="upper"/>
    <axis xyz="0 0 1"/><limit lower="-2" upper="2" effort="1" velocity="1"/></joint>
  <joint name="shoulder_lift" type="revolute"><parent link="upper"/><child link="lower"/>
    <origin xyz="0 0 0.1"/><axis xyz="0 1 0"/><limit lower="-2" upper="2" effort="1" velocity="1"/></joint>
</robot>"""
pytestmark = pytest.mark.ros


@pytest.mark.launch_test
def generate_test_description():
    os.environ["ROS_DOMAIN_ID"] = DOMAIN_ID
    path = "/tmp/vla_ros_test_two_link.urdf"
    with open(path, "w", encoding="utf-8") as f:
        f.write(URDF)
    base = PathJoinSubstitution([FindPackageShare("vla_ros"), "launch", "vla_ros.launch.py"])
    return LaunchDescription([
        IncludeLaunchDescription(PythonLaunchDescriptionSource(base), launch_arguments={
            "robot": "so101", "sim": "none", "autostart": "false", "description_file": path}.items()),
        launch_testing.actions.ReadyToTest(),
    ])


class TestGhostRobot(unittest.TestCase):
    def test_preview_joint_states_become_preview_frames(self):
        context = rclpy.Context()
        rclpy.init(context=context, domain_id=int(DOMAIN_ID))
        node = rclpy.create_node("ghost_observer", context=context)
        executor = rclpy.executors.SingleThreadedExecutor(context=context)
        executor.add_node(node)
        frames = set()
        node.create_subscription(TFMessage, "/tf", lambda m: frames.update(t.child_frame_id for t in m.transforms), 10)
        preview = node.create_publisher(JointState, "/vla_policy/preview", 10)
        try:
            deadline = time.monotonic() + 20.0
            while time.monotonic() < deadline and "preview/lower" not in frames:
                preview.publish(JointState(header=Header(stamp=node.get_clock().now().to_msg()),
                                           name=["shoulder_pan", "shoulder_lift"], position=[0.3, -0.2]))
                executor.spin_once(timeout_sec=0.1)
        finally:
            node.destroy_node()
            rclpy.shutdown(context=context)
        self.assertIn("preview/lower", frames)
