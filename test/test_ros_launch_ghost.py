"""The ghost robot: with description_file:=<urdf>, the policy node's ~/preview drives frames preview/* on /tf.

Needs ROS 2 and a colcon build of vla_ros (skipped without them, failed without them in CI).
"""

from __future__ import annotations

import time

import pytest
from ros_graph import BUILD_HINT, ROS_SETUP_HINT, observer, require, ros_launch

require("rclpy", ROS_SETUP_HINT)
require("vla_ros.msg", BUILD_HINT)

from sensor_msgs.msg import JointState  # noqa: E402
from std_msgs.msg import Header  # noqa: E402
from tf2_msgs.msg import TFMessage  # noqa: E402

DOMAIN_ID = 83
URDF = """<robot name="two_link">
  <link name="base"/><link name="upper"/><link name="lower"/>
  <joint name="shoulder_pan" type="revolute"><parent link="base"/><child link="upper"/>
    <axis xyz="0 0 1"/><limit lower="-2" upper="2" effort="1" velocity="1"/></joint>
  <joint name="shoulder_lift" type="revolute"><parent link="upper"/><child link="lower"/>
    <origin xyz="0 0 0.1"/><axis xyz="0 1 0"/><limit lower="-2" upper="2" effort="1" velocity="1"/></joint>
</robot>"""
pytestmark = pytest.mark.ros


def test_preview_joint_states_become_preview_frames(tmp_path):
    urdf = tmp_path / "two_link.urdf"
    urdf.write_text(URDF, encoding="utf-8")
    arguments = {"robot": "so101", "sim": "none", "autostart": "false", "description_file": str(urdf)}
    frames = set()
    with ros_launch("vla_ros", "vla_ros.launch.py", arguments, domain_id=DOMAIN_ID) as launched, \
            observer("ghost_observer", domain_id=DOMAIN_ID) as (node, executor):
        node.create_subscription(TFMessage, "/tf", lambda m: frames.update(t.child_frame_id for t in m.transforms), 10)
        preview = node.create_publisher(JointState, "/vla_policy/preview", 10)
        deadline = time.monotonic() + 30.0
        while time.monotonic() < deadline and "preview/lower" not in frames:
            preview.publish(JointState(header=Header(stamp=node.get_clock().now().to_msg()),
                                       name=["shoulder_pan", "shoulder_lift"], position=[0.3, -0.2]))
            executor.spin_once(timeout_sec=0.1)
        assert "preview/lower" in frames, f"no preview/lower frame on /tf within 30 s:\n{launched.output()[-3000:]}"
