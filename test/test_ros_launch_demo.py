"""`ros2 launch vla_ros demo.launch.py` end to end (launch_testing): the simulated task succeeds headless.

Skipped where ROS 2 and a colcon build of vla_ros are not available.
"""

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
from std_msgs.msg import Bool  # noqa: E402
from trajectory_msgs.msg import JointTrajectory  # noqa: E402

from vla_ros.ros.launch_params import MUJOCO_SUCCESS_TOPIC  # noqa: E402

DOMAIN_ID = "79"
pytestmark = pytest.mark.ros


@pytest.mark.launch_test
def generate_test_description():
    os.environ["ROS_DOMAIN_ID"] = DOMAIN_ID  # the launched processes inherit it
    demo = PathJoinSubstitution([FindPackageShare("vla_ros"), "launch", "demo.launch.py"])
    return LaunchDescription([
        IncludeLaunchDescription(PythonLaunchDescriptionSource(demo),
                                 launch_arguments={"robot": "so101", "instruction": "touch the green cube"}.items()),
        launch_testing.actions.ReadyToTest(),
    ])


class TestDemoLaunch(unittest.TestCase):
    def test_trajectories_flow_and_the_task_succeeds(self):
        context = rclpy.Context()
        rclpy.init(context=context, domain_id=int(DOMAIN_ID))
        node = rclpy.create_node("demo_observer", context=context)
        executor = rclpy.executors.SingleThreadedExecutor(context=context)
        executor.add_node(node)
        trajectories, successes = [], []
        node.create_subscription(JointTrajectory, "/arm_controller/joint_trajectory", trajectories.append, 10)
        node.create_subscription(Bool, MUJOCO_SUCCESS_TOPIC, lambda m: successes.append(m.data), 10)
        try:
            deadline = time.monotonic() + 90.0
            while time.monotonic() < deadline and True not in successes:
                executor.spin_once(timeout_sec=0.1)
        finally:
            node.destroy_node()
            rclpy.shutdown(context=context)
        self.assertTrue(trajectories, "no trajectory reached /arm_controller/joint_trajectory")
        self.assertEqual(trajectories[-1].joint_names[0], "shoulder_pan")
        self.assertIn(True, successes, "the simulated task did not succeed within 90 s")
