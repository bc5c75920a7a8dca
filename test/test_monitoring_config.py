"""The shipped rqt perspective and diagnostic aggregator config point at what the policy node really publishes.

rqt and the aggregator would start with a wrong topic or name and simply show nothing, so the checks are here,
where ROS is absent too: every plotted field is a field of PolicyStatus.msg, the image view watches the node's
debug image, and the aggregator's analyzer matches the name of the node's diagnostic status.
"""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
NODE_NAME = "vla_policy"  # launch/vla_ros.launch.py names the policy node so


def _launch_text() -> str:
    return (ROOT / "launch" / "vla_ros.launch.py").read_text(encoding="utf-8")


def _perspective() -> dict:
    return json.loads((ROOT / "config" / "vla_ros.perspective").read_text(encoding="utf-8"))


def _plugin_settings(perspective: dict, plugin: str) -> dict:
    group = perspective["groups"]["pluginmanager"]["groups"][f"plugin__{plugin.replace('/', '__')}__1"]
    keys = group["groups"]["plugin"]["keys"] if "plugin" in group["groups"] else {}
    return {name: ast.literal_eval(value["repr"]) for name, value in keys.items()}


def _status_fields() -> set[str]:
    fields = set()
    for line in (ROOT / "msg" / "PolicyStatus.msg").read_text(encoding="utf-8").splitlines():
        line = line.split("#")[0].strip()
        if line and "=" not in line:  # "type name"; constants have "="
            fields.add(line.split()[1])
    return fields


def test_the_launch_file_names_the_policy_node_as_the_configs_expect():
    assert f'name="{NODE_NAME}"' in _launch_text()


def test_every_running_plugin_of_the_perspective_has_its_settings_group():
    perspective = _perspective()
    manager = perspective["groups"]["pluginmanager"]
    running = ast.literal_eval(manager["keys"]["running-plugins"]["repr"])
    assert set(running) == {"rqt_robot_monitor/RobotMonitor", "rqt_plot/Plot", "rqt_image_view/ImageView"}
    assert set(manager["groups"]) == {f"plugin__{name.replace('/', '__')}__{serial}"
                                      for name, serials in running.items() for serial in serials}


def test_plotted_topics_are_numeric_fields_of_the_status_message():
    topics = _plugin_settings(_perspective(), "rqt_plot/Plot")["topics"]
    assert topics, "the plot shows nothing"
    fields = _status_fields()
    for topic in topics:
        match = re.fullmatch(rf"/{NODE_NAME}/status/(\w+)", topic)
        assert match, f"{topic} is not a field of /{NODE_NAME}/status"
        assert match.group(1) in fields, f"PolicyStatus has no field '{match.group(1)}' (fields: {sorted(fields)})"


def test_the_image_view_shows_what_the_model_sees():
    topic = _plugin_settings(_perspective(), "rqt_image_view/ImageView")["topic"]
    assert topic == f"/{NODE_NAME}/debug_image"
    node_source = (ROOT / "vla_ros" / "ros" / "policy_core.py").read_text(encoding="utf-8")
    assert '"~/debug_image"' in node_source


def test_the_aggregator_groups_the_policy_nodes_diagnostics():
    config = yaml.safe_load((ROOT / "config" / "diagnostic_aggregator.yaml").read_text(encoding="utf-8"))
    parameters = config["analyzers"]["ros__parameters"]  # aggregator_node's node name is "analyzers"
    analyzers = {name: value for name, value in parameters.items() if isinstance(value, dict)}
    assert analyzers["policy"]["type"] == "diagnostic_aggregator/GenericAnalyzer"
    # The node names its status "<node name>: policy", as diagnostic_updater names a task's status.
    assert any(f"{NODE_NAME}: policy".startswith(prefix) for prefix in analyzers["policy"]["startswith"])

