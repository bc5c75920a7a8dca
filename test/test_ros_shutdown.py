"""Ctrl-C on a running policy node: it stops commanding (an explicit hold to the controllers), stops its timers and
threads before the ROS context goes away, and exits 0 without an error line.

Runs the node as the operator does, inside `so101.launch.py sim:=mock` (real controllers on mock hardware), driven
by a policy server in this process, and sends SIGINT to the launch, which forwards it to every node.
"""

from __future__ import annotations

import re

import pytest
from ros_graph import require

require("rclpy", "needs ROS 2 (rclpy): source a ROS 2 Jazzy setup")
require("controller_manager_msgs", "needs ros2_control (controller_manager_msgs)")
require("vla_ros.msg", "needs the colcon-built vla_ros (its generated interfaces)")

from ros_mock import MockLaunch, Probe, serve_sway, wait_until  # noqa: E402

from vla_ros.core.embodiment import load_embodiment  # noqa: E402

pytestmark = pytest.mark.ros

DOMAIN = 46
ERROR_LINE = re.compile(r"Traceback|RCLError|terminate called|Segmentation|\[ERROR\]|exception", re.IGNORECASE)


def test_ctrl_c_stops_the_policy_node_cleanly(tmp_path):
    server, url = serve_sway("so101")
    probe = Probe(DOMAIN)
    probe.publish_camera_images(load_embodiment("so101"))
    joints = probe.subscribe_joint_states("/joint_states")
    launch = MockLaunch("so101", DOMAIN, tmp_path / "launch.log", policy=url, sim_world="false", instruction="sway")
    try:
        assert wait_until(lambda: probe.lifecycle_state("/vla_policy") == "active", 120.0, period_s=1.0), (
            launch.output()[-4000:]
        )
        # Commanding: the arm moves under the controller before the interrupt.
        assert wait_until(
            lambda: len(values := joints.get("shoulder_pan", [])) > 1 and max(values) - min(values) > 0.01, 60.0
        ), launch.output()[-4000:]
    finally:
        code = launch.interrupt()
        probe.close()
        server.stop()
    output = launch.output()
    node_lines = [line for line in output.splitlines() if line.startswith("[policy_node")]
    # ros2_control_node itself dies of the second SIGINT (upstream rclcpp), so the launch's exit code says nothing
    # about ours: the policy node's own exit is what counts.
    del code
    assert any("process has finished cleanly" in line and "policy_node" in line for line in output.splitlines()), (
        output[-4000:]
    )
    errors = [line for line in node_lines if ERROR_LINE.search(line)]
    assert not errors, "\n".join(errors)
    # It said it stopped commanding, holding the arm.
    assert any("brakes to a hold" in line for line in node_lines), "\n".join(node_lines[-20:])
