"""sim:=mock descriptions without ROS: the controllers each robot config names, its URDF, and the shipped
config/controllers/<robot>.yaml kept in step with the generator."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml

from vla_ros.core.embodiment import load_embodiment
from vla_ros.core.errors import ConfigError, VlaRosError
from vla_ros.ros.mock_bringup import mock_processes
from vla_ros.ros.mock_control import JTC_PARAMETERS, control_groups, controllers_yaml_text, mock_urdf

ROOT = Path(__file__).resolve().parents[1]
ROBOTS = sorted(path.stem for path in (ROOT / "config" / "robots").glob("*.yaml"))


@pytest.mark.parametrize("robot", ROBOTS)
def test_shipped_controllers_file_is_the_generated_one(robot):
    shipped = (ROOT / "config" / "controllers" / f"{robot}.yaml").read_text(encoding="utf-8")
    assert shipped == controllers_yaml_text(load_embodiment(robot)), (
        f"config/controllers/{robot}.yaml is out of date: python -m vla_ros.ros.mock_control {robot} "
        f"> config/controllers/{robot}.yaml"
    )


@pytest.mark.parametrize("robot", ROBOTS)
def test_every_output_has_a_controller_and_every_joint_a_hardware_joint(robot):
    embodiment = load_embodiment(robot)
    document = yaml.safe_load(controllers_yaml_text(embodiment))
    groups = control_groups(embodiment)
    for output in embodiment.outputs:
        group = next(g for g in groups if output.name.startswith(g.namespace + "/"))
        controller = output.name.split("/")[-2]
        manager = document[group.node_name("controller_manager")]["ros__parameters"]
        assert controller in manager and "type" in manager[controller]
        parameters = document[group.node_name(controller)]["ros__parameters"]
        joints = parameters.get("joints") or [parameters["joint"]]
        assert joints == list(output.wire_joint_names)
    hardware = {name for g in groups for name, _ in g.joints}
    assert hardware == set(embodiment.joint_names)
    for group in groups:  # the URDF parses and declares every joint with its limits and home
        urdf = ET.fromstring(mock_urdf(embodiment, group))
        plugin = urdf.find("ros2_control/hardware/plugin")
        assert plugin is not None and plugin.text == "mock_components/GenericSystem"
        for robot_name, wire_name in group.joints:
            spec = next(j for j in embodiment.joints if j.name == robot_name)
            joint = urdf.find(f"joint[@name='{wire_name}']/limit")
            assert float(joint.get("lower")) == spec.position_limits[0]
            assert float(joint.get("upper")) == spec.position_limits[1]
            initial = urdf.find(f"ros2_control/joint[@name='{wire_name}']/state_interface[@name='position']/param")
            assert float(initial.text) == spec.home


def test_aloha_runs_one_controller_manager_per_follower():
    groups = control_groups(load_embodiment("aloha"))
    assert [g.namespace for g in groups] == ["/follower_left", "/follower_right"]
    assert [g.joint_state_topic for g in groups] == ["/follower_left/joint_states", "/follower_right/joint_states"]
    assert groups[0].joints[0] == ("left_waist", "waist")  # the follower's own names on the wire


def test_endpoints_named_otherwise_than_the_controllers_are_remapped():
    (fr3,) = control_groups(load_embodiment("fr3"))
    assert ("/franka_gripper/gripper_cmd", "/franka_gripper/gripper_action") in fr3.remappings
    (xarm,) = control_groups(load_embodiment("xarm7"))
    assert ("/joint_states", "/xarm/joint_states") in xarm.remappings  # the driver's hw_ns


def test_recommended_jtc_settings_are_in_every_trajectory_controller():
    document = yaml.safe_load(controllers_yaml_text(load_embodiment("so101")))
    for key, value in JTC_PARAMETERS.items():
        assert document["arm_controller"]["ros__parameters"][key] == value


def test_a_joint_state_command_output_has_no_mock_controller(tmp_path):
    config = (ROOT / "config" / "robots" / "so101.yaml").read_text(encoding="utf-8")
    config = config.replace(
        "interface: joint_trajectory, name: /arm_controller/joint_trajectory",
        "interface: joint_command, name: /joint_command",
    )
    path = tmp_path / "isaac_so101.yaml"
    path.write_text(config, encoding="utf-8")
    with pytest.raises(ConfigError, match="no ros2_control controller"):
        control_groups(load_embodiment(path))


def test_processes_use_the_robots_own_description_when_given(tmp_path):
    urdf = tmp_path / "so101.urdf"
    urdf.write_text("<robot name='mine'/>", encoding="utf-8")
    processes = mock_processes(load_embodiment("so101"), params_file="c.yaml", description_file=str(urdf))
    publisher = next(p for p in processes if p.executable == "robot_state_publisher")
    assert dict(publisher.parameters)["robot_description"] == "<robot name='mine'/>"
    with pytest.raises(VlaRosError, match="controller managers"):
        mock_processes(load_embodiment("aloha"), params_file="c.yaml", description_file=str(urdf))
