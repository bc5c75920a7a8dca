"""`ros2 launch vla_ros demo.launch.py` end to end: the simulated task succeeds headless, and Ctrl-C ends it cleanly.

Needs ROS 2 and a colcon build of vla_ros (skipped without them, failed without them in CI).
"""

from __future__ import annotations

import time

import pytest
from ros_graph import BUILD_HINT, ROS_SETUP_HINT, observer, require, ros_launch

require("rclpy", ROS_SETUP_HINT)
require("vla_ros.msg", BUILD_HINT)

from std_msgs.msg import Bool  # noqa: E402
from trajectory_msgs.msg import JointTrajectory  # noqa: E402

from vla_ros.ros.launch_params import MUJOCO_SUCCESS_TOPIC  # noqa: E402

DOMAIN_ID = 79
pytestmark = pytest.mark.ros


def test_trajectories_flow_and_the_task_succeeds():
    trajectories, successes = [], []
    arguments = {"robot": "so101", "instruction": "touch the green cube"}
    with ros_launch("vla_ros", "demo.launch.py", arguments, domain_id=DOMAIN_ID) as launched, \
            observer("demo_observer", domain_id=DOMAIN_ID) as (node, executor):
        node.create_subscription(JointTrajectory, "/arm_controller/joint_trajectory", trajectories.append, 10)
        node.create_subscription(Bool, MUJOCO_SUCCESS_TOPIC, lambda m: successes.append(m.data), 10)
        deadline = time.monotonic() + 120.0
        while time.monotonic() < deadline and True not in successes and launched.process.poll() is None:
            executor.spin_once(timeout_sec=0.1)
        assert trajectories, f"no trajectory reached /arm_controller/joint_trajectory:\n{launched.output()[-3000:]}"
        assert trajectories[-1].joint_names[0] == "shoulder_pan"
        assert True in successes, f"the simulated task did not succeed within 120 s:\n{launched.output()[-3000:]}"
