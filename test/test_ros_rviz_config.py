"""config/vla_ros.rviz and config/vla_ros.perspective name only topics (with their types) and frames that exist:
checked against the running graph of `so101.launch.py sim:=mock` (real controllers, the policy node, the robot and
ghost robot descriptions), without a display. rviz2 and rqt themselves are not needed.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest
import yaml
from ros_graph import require

require("rclpy", "needs ROS 2 (rclpy): source a ROS 2 Jazzy setup")
require("controller_manager_msgs", "needs ros2_control (controller_manager_msgs)")
require("vla_ros.msg", "needs the colcon-built vla_ros (its generated interfaces)")

from ros_mock import MockLaunch, Probe, serve_sway, wait_until  # noqa: E402

from vla_ros.core.embodiment import load_embodiment  # noqa: E402

pytestmark = pytest.mark.ros

ROOT = Path(__file__).resolve().parents[1]
DOMAIN = 44
# The message type each rviz display class reads from its topic.
DISPLAY_TYPES = {
    "rviz_default_plugins/RobotModel": "std_msgs/msg/String",
    "rviz_default_plugins/Image": "sensor_msgs/msg/Image",
    "rviz_default_plugins/Camera": "sensor_msgs/msg/Image",
    "rviz_default_plugins/JointState": "sensor_msgs/msg/JointState",
    "rviz_default_plugins/TF": "tf2_msgs/msg/TFMessage",
}


def rviz_topics() -> tuple[dict[str, str], str]:
    """{topic: type} of every display of the rviz config, and its fixed frame."""
    config = yaml.safe_load((ROOT / "config" / "vla_ros.rviz").read_text(encoding="utf-8"))
    manager = config["Visualization Manager"]
    topics = {}
    for display in manager["Displays"]:
        for key, value in display.items():
            if key.endswith("Topic") and isinstance(value, dict) and value.get("Value"):
                assert display["Class"] in DISPLAY_TYPES, f"add the message type of {display['Class']} here"
                topics[value["Value"]] = DISPLAY_TYPES[display["Class"]]
    return topics, manager["Global Options"]["Fixed Frame"]


def perspective_topics() -> dict[str, str]:
    """{topic: type} that the rqt perspective's plugins read (plots read fields of a topic)."""
    perspective = json.loads((ROOT / "config" / "vla_ros.perspective").read_text(encoding="utf-8"))
    plugins = perspective["groups"]["pluginmanager"]["groups"]
    topics = {"/diagnostics": "diagnostic_msgs/msg/DiagnosticArray"}  # the robot monitor's, through the aggregator
    for name, group in plugins.items():
        keys = group["groups"].get("plugin", {}).get("keys", {})
        settings = {key: ast.literal_eval(value["repr"]) for key, value in keys.items()}
        if "ImageView" in name:
            topics[settings["topic"]] = "sensor_msgs/msg/Image"
        for field in settings.get("topics", []) if "Plot" in name else []:
            topics[field.rsplit("/", 1)[0]] = "vla_ros/msg/PolicyStatus"
    return topics


def test_every_topic_and_frame_of_the_rviz_and_rqt_configs_exists_on_the_mock_graph(tmp_path):
    wanted, fixed_frame = rviz_topics()
    wanted |= perspective_topics()
    assert "/robot_description" in wanted and "/vla_policy/debug_image" in wanted
    server, url = serve_sway("so101")
    probe = Probe(DOMAIN)
    probe.publish_camera_images(load_embodiment("so101"))
    frames: set[str] = set()
    from tf2_msgs.msg import TFMessage

    probe.node.create_subscription(
        TFMessage, "/tf", lambda m: frames.update(t.header.frame_id for t in m.transforms), 10
    )
    launch = MockLaunch("so101", DOMAIN, tmp_path / "launch.log", policy=url, sim_world="false")
    try:

        def graph() -> dict[str, list[str]]:
            return dict(probe.node.get_topic_names_and_types())

        def missing() -> dict[str, str]:
            topics = graph()
            return {topic: kind for topic, kind in wanted.items() if kind not in topics.get(topic, [])}

        assert wait_until(lambda: not missing(), 120.0, period_s=1.0), (
            f"not on the graph (topic: type): {missing()}; the graph has {sorted(graph())}\n{launch.output()[-3000:]}"
        )
        # The fixed frame is the root of the robot's TF tree (robot_state_publisher, from the mock joint states), and
        # the ghost robot's frames carry the preview/ prefix.
        assert wait_until(lambda: fixed_frame in frames and f"preview/{fixed_frame}" in frames, 30.0), sorted(frames)
    finally:
        launch.interrupt()
        probe.close()
        server.stop()
