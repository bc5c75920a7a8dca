"""Launch arguments -> node parameters, checked where ROS is absent too."""

from __future__ import annotations

import pytest

from vla_ros.core.errors import ConfigError
from vla_ros.ros.launch_params import mock_follower_parameters, parse_bool, policy_node_parameters, uses_sim_time


def params(**overrides):
    arguments = {"robot": "so101", "sim": "mujoco", "policy": "expert", "instruction": "touch the red cube",
                 "dry_run": "false", "use_sim_time": "false"} | overrides
    return policy_node_parameters(**arguments)


def test_mujoco_forces_sim_time():
    assert params() == {"robot": "so101", "policy": "expert", "instruction": "touch the red cube",
                        "dry_run": False, "use_sim_time": True, "success_topic": "/mujoco_robot/task_success"}


def test_real_hardware_uses_wall_time_unless_asked():
    assert params(sim="none")["use_sim_time"] is False
    assert params(sim="none", use_sim_time="true")["use_sim_time"] is True


def test_isaac_publishes_joint_command():
    assert params(sim="isaac")["joint_command_topic"] == "/joint_command"
    assert "joint_command_topic" not in params(sim="gazebo")


def test_dry_run_parsing():
    assert params(dry_run="True")["dry_run"] is True
    with pytest.raises(ConfigError, match="dry_run:='maybe' is not a boolean"):
        params(dry_run="maybe")
    assert parse_bool(True, argument="x") is True
    assert uses_sim_time("none", "0") is False


def test_bad_sim_and_robot_fail_the_launch():
    with pytest.raises(ConfigError, match="sim:='mujoc' is unknown.*Did you mean 'mujoco'"):
        params(sim="mujoc")
    with pytest.raises(ConfigError, match="unknown robot 'so11'"):
        params(robot="so11")


def test_mock_runs_on_wall_time_and_the_world_judges_only_robots_it_has():
    so101 = params(sim="mock", policy="builtin")
    assert so101["use_sim_time"] is False and so101["success_topic"] == "/mujoco_robot/task_success"
    assert mock_follower_parameters(robot="so101", instruction="") == {
        "robot": "so101", "instruction": "touch the red cube", "use_sim_time": False, "follow_joint_states": True}
    # No MuJoCo model of the UR5e: its controllers run without a world, and no success topic is awaited.
    assert mock_follower_parameters(robot="ur5e", instruction="") is None
    assert "success_topic" not in params(robot="ur5e", sim="mock", policy="builtin")
