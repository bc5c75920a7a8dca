"""Embodiment configs: the shipped robots load, and every kind of mistake fails at load naming file, key and value."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import yaml

from vla_ros.core.embodiment import (
    ActionMode,
    PolicyUnit,
    available_robots,
    config_dir,
    embodiment_from_dict,
    load_embodiment,
)
from vla_ros.core.errors import ConfigError


@pytest.fixture
def so101_dict() -> dict:
    with (config_dir() / "robots" / "so101.yaml").open() as f:
        return yaml.safe_load(f)


@pytest.mark.parametrize("robot", available_robots())
def test_every_shipped_robot_loads(robot):
    embodiment = load_embodiment(robot)
    assert embodiment.robot == robot
    assert np.all(embodiment.lower_limits < embodiment.upper_limits)
    assert np.all((embodiment.home >= embodiment.lower_limits) & (embodiment.home <= embodiment.upper_limits))


def test_so101_fields():
    so101 = load_embodiment("so101")
    assert so101.joint_names == ("shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll", "gripper")
    assert so101.control_period_s == pytest.approx(1 / 30)
    assert so101.gripper_joints == ("gripper",)
    assert so101.joints[0].policy_unit is PolicyUnit.RANGE_M100_100
    assert [c.policy_key for c in so101.cameras] == ["front", "wrist"]


def test_panda_arm_is_delta_gripper_absolute():
    panda = load_embodiment("panda")
    assert panda.delta_mask.tolist() == [True] * 7 + [False]
    assert panda.joints[-1].action is ActionMode.ABSOLUTE


def test_arm_mask_leaves_out_every_gripper():
    assert load_embodiment("so101").arm_mask.tolist() == [True] * 5 + [False]
    aloha = load_embodiment("aloha")  # two arms, a gripper each
    grippers = [name for name, arm in zip(aloha.joint_names, aloha.arm_mask, strict=True) if not arm]
    assert grippers == list(aloha.gripper_joints)
    assert len(aloha.gripper_joints) == 2


def test_load_by_path(tmp_path: Path, so101_dict):
    path = tmp_path / "myarm.yaml"
    so101_dict["robot"] = "myarm"
    path.write_text(yaml.safe_dump(so101_dict))
    assert load_embodiment(path).robot == "myarm"


def test_unknown_robot_suggests_the_closest():
    with pytest.raises(ConfigError, match=r"unknown robot 'so10'.*Did you mean 'so101'"):
        load_embodiment("so10")


def _error(data: dict) -> str:
    with pytest.raises(ConfigError) as info:
        embodiment_from_dict(data, source="robots/test.yaml")
    return str(info.value)


def test_unknown_key_names_file_key_and_suggestion(so101_dict):
    so101_dict["joints"][2]["velocity_limt"] = 3.0
    message = _error(so101_dict)
    assert "robots/test.yaml" in message
    assert "joints[2].velocity_limt" in message
    assert "velocity_limit" in message


def test_unknown_top_level_key(so101_dict):
    so101_dict["control_rate"] = 30
    assert "key 'control_rate'" in _error(so101_dict)


def test_missing_required_key(so101_dict):
    del so101_dict["joints"][0]["home"]
    assert "joints[0].home" in _error(so101_dict) and "missing" in _error(so101_dict)


@pytest.mark.parametrize(
    ("mutate", "key", "value_text"),
    [
        (lambda d: d["joints"][1].update(position_limits=[1.0, -1.0]), "joints[1].position_limits", "[1.0, -1.0]"),
        (lambda d: d["joints"][1].update(velocity_limit=0.0), "joints[1].velocity_limit", "0.0"),
        (lambda d: d["joints"][1].update(acceleration_limit=-2.0), "joints[1].acceleration_limit", "-2.0"),
        (lambda d: d["joints"][1].update(home=5.0), "joints[1].home", "5.0"),
        (lambda d: d["joints"][1].update(name="shoulder_pan"), "joints[1].name", "shoulder_pan"),
        (lambda d: d["joints"][1].update(policy_unit="radians"), "joints[1].policy_unit", "radians"),
        (lambda d: d["joints"][1].update(policy_unit="gripper_0_1"), "joints[1].policy_unit", "gripper_0_1"),
        (lambda d: d["joints"][1].update(velocity_limit="fast"), "joints[1].velocity_limit", "fast"),
        (lambda d: d["grippers"][0].update(joint="jaw"), "grippers[0].joint", "jaw"),
        (lambda d: d["grippers"][0].update(open=3.0), "grippers[0].open", "3.0"),
        (lambda d: d.update(control_rate_hz=0), "control_rate_hz", "0"),
        (lambda d: d["cameras"][1].update(policy_key="front"), "cameras[1].policy_key", "front"),
        (lambda d: d["safety"].update(observation_timeout_s=0), "safety.observation_timeout_s", "0"),
    ],
)
def test_impossible_values_name_key_and_value(so101_dict, mutate, key, value_text):
    data = copy.deepcopy(so101_dict)
    mutate(data)
    message = _error(data)
    assert key in message, message
    assert value_text in message, message


def test_meters_joint_cannot_use_degrees():
    data = yaml.safe_load((config_dir() / "robots" / "panda.yaml").read_text())
    data["joints"][7]["policy_unit"] = "deg"
    assert "joints[7].policy_unit" in _error(data)


def test_not_a_mapping(tmp_path: Path):
    path = tmp_path / "bad.yaml"
    path.write_text("- just\n- a list\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_embodiment(path)


def test_yaml_tags_are_not_executed(tmp_path: Path):
    path = tmp_path / "evil.yaml"
    path.write_text("robot: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_embodiment(path)


@pytest.mark.parametrize("robot", available_robots())
def test_example_observation_is_valid(robot):
    embodiment = load_embodiment(robot)
    observation = embodiment.example_observation(seed=3, instruction="touch the red cube")
    assert observation.joint_names == embodiment.joint_names
    assert np.all(observation.joint_positions >= embodiment.lower_limits)
    assert np.all(observation.joint_positions <= embodiment.upper_limits)
    for camera in embodiment.cameras:
        assert observation.images[camera.name].shape == (camera.height, camera.width, 3)


def test_ros_outputs_default_to_one_trajectory_controller(so101_dict):
    so101_dict.pop("ros", None)
    embodiment = embodiment_from_dict(so101_dict)
    (output,) = embodiment.outputs
    assert output.interface.value == "joint_trajectory" and output.joints == embodiment.joint_names
    assert [s.topic for s in embodiment.ros.joint_state_topics] == ["/joint_states"]


def test_ros_output_without_joints_takes_the_rest(so101_dict):
    so101_dict["ros"] = {"outputs": [
        {"interface": "joint_trajectory", "name": "/arm_controller/joint_trajectory"},
        {"interface": "gripper_command", "name": "/gripper_controller/gripper_cmd", "joints": ["gripper"],
         "max_effort": 5.0},
    ]}
    arm, gripper = embodiment_from_dict(so101_dict).outputs
    assert arm.joints == ("shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll")
    assert gripper.joints == ("gripper",) and gripper.max_effort == 5.0


@pytest.mark.parametrize(
    ("outputs", "key", "text"),
    [
        ([{"interface": "joint_trajectory", "name": "/a", "joints": ["shoulder_pan", "elbo_flex"]}],
         "ros.outputs[0].joints", "Did you mean 'elbow_flex'"),
        ([{"interface": "joint_trajectory", "name": "/a", "joints": ["shoulder_pan"]},
          {"interface": "forward_position", "name": "/b", "joints": ["shoulder_pan"]}],
         "ros.outputs[1].joints", "already commanded by ros.outputs[0]"),
        ([{"interface": "joint_trajectory", "name": "/a", "joints": ["shoulder_pan"]}],
         "ros.outputs", "not commanded by any output"),
        ([{"interface": "gripper_command", "name": "/g", "joints": ["wrist_roll"]},
          {"interface": "joint_trajectory", "name": "/a"}],
         "ros.outputs[0].joints", "exactly one gripper joint"),
        ([{"interface": "joint_trajectory", "name": "/a", "max_effort": 3.0}],
         "ros.outputs[0].max_effort", "only gripper actions"),
        ([{"interface": "trajectory", "name": "/a"}], "ros.outputs[0].interface", "joint_trajectory"),
    ],
)
def test_bad_ros_outputs_fail_at_load(so101_dict, outputs, key, text):
    so101_dict["ros"] = {"outputs": outputs}
    message = _error(so101_dict)
    assert key in message and text in message, message


def test_camera_topics_and_transport(so101_dict):
    so101_dict["cameras"][0]["topic"] = "/cam/front/image_raw"
    so101_dict["cameras"][0]["transport"] = "compressed"
    so101_dict["cameras"][1].pop("topic", None)
    embodiment = embodiment_from_dict(so101_dict)
    assert embodiment.camera_topic(embodiment.cameras[0]) == "/cam/front/image_raw/compressed"
    assert embodiment.camera_topic(embodiment.cameras[1]) == "/wrist/image_raw"


def test_bimanual_prefixes(so101_dict):
    so101_dict["ros"] = {
        "joint_state_topics": ["/joint_states", {"topic": "/follower_left/joint_states", "prefix": "left_"}],
        "outputs": [{"interface": "joint_trajectory", "name": "/a"}],
    }
    plain, prefixed = embodiment_from_dict(so101_dict).ros.joint_state_topics
    assert (plain.topic, plain.prefix) == ("/joint_states", "")
    assert (prefixed.topic, prefixed.prefix) == ("/follower_left/joint_states", "left_")


def test_output_prefix_is_stripped_on_the_wire(so101_dict):
    for joint in so101_dict["joints"]:
        joint["name"] = "left_" + joint["name"]
    so101_dict["grippers"][0]["joint"] = "left_gripper"
    so101_dict["ros"] = {"outputs": [{"interface": "forward_position", "name": "/a", "prefix": "left_"}]}
    (output,) = embodiment_from_dict(so101_dict).outputs
    assert output.wire_joint_names[0] == "shoulder_pan" and output.joints[0] == "left_shoulder_pan"
    so101_dict["ros"]["outputs"][0]["prefix"] = "right_"
    assert "does not start with the output's prefix 'right_'" in _error(so101_dict)


def test_per_joint_tracking_error_overrides_the_default():
    panda = load_embodiment("panda")
    limits = panda.tracking_error_limits
    assert limits[:7].tolist() == [panda.safety.max_tracking_error] * 7
    assert limits[7] == pytest.approx(0.02)  # the finger is in metres: 0.6 "joint units" would be no cap at all


def test_per_joint_tracking_error_needs_a_default(so101_dict):
    so101_dict["safety"].pop("max_tracking_error")
    so101_dict["joints"][5]["max_tracking_error"] = 0.1
    assert "set safety.max_tracking_error too" in _error(so101_dict)
    so101_dict["joints"][5].pop("max_tracking_error")
    assert embodiment_from_dict(so101_dict).tracking_error_limits is None


def test_joint_state_topics_must_be_a_list(so101_dict):
    so101_dict["ros"]["joint_state_topics"] = "/joint_states"
    message = _error(so101_dict)
    assert "ros.joint_state_topics" in message and "expected a list" in message
