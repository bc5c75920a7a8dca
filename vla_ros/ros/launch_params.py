"""Launch arguments -> node parameters. Pure Python, so that launch logic is tested where ROS is absent.

Launch files pass strings; this module validates them at start-up (an unknown robot or simulator fails
the launch with a message, not a node mid-motion) and returns plain parameter dicts.
"""

from __future__ import annotations

from vla_ros.core.embodiment import load_embodiment
from vla_ros.core.errors import ConfigError, did_you_mean
from vla_ros.sim.robots import SIM_ROBOTS

SIM_CHOICES = ("mujoco", "mock", "gazebo", "isaac", "none")
ISAAC_JOINT_COMMAND_TOPIC = "/joint_command"  # the Isaac Sim ROS 2 bridge's articulation controller input
MUJOCO_SUCCESS_TOPIC = "/mujoco_robot/task_success"  # published by vla_ros.ros.sim_node


def parse_bool(value: str | bool, *, argument: str) -> bool:
    if isinstance(value, bool):
        return value
    lowered = value.strip().lower()
    if lowered in ("true", "1", "yes", "on"):
        return True
    if lowered in ("false", "0", "no", "off"):
        return False
    raise ConfigError(f"launch argument {argument}:='{value}' is not a boolean: use true or false")


def uses_sim_time(sim: str, use_sim_time: str | bool) -> bool:
    """Simulators publish /clock; every node must then use it, whatever the argument says."""
    return sim in ("mujoco", "gazebo", "isaac") or parse_bool(use_sim_time, argument="use_sim_time")


def policy_node_parameters(*, robot: str, sim: str, policy: str, instruction: str, dry_run: str | bool,
                           use_sim_time: str | bool) -> dict:
    """Parameters of the policy node for one launch; raises ConfigError for a bad robot or simulator."""
    if sim not in SIM_CHOICES:
        raise ConfigError(f"launch argument sim:='{sim}' is unknown." + did_you_mean(sim, SIM_CHOICES))
    embodiment = load_embodiment(robot)  # fail the launch, not the node, on a bad robot config
    parameters = {
        "robot": robot,
        "policy": policy,
        "instruction": instruction,
        "dry_run": parse_bool(dry_run, argument="dry_run"),
        "use_sim_time": uses_sim_time(sim, use_sim_time),
    }
    if sim == "isaac":
        parameters["joint_command_topic"] = ISAAC_JOINT_COMMAND_TOPIC
    if sim == "mujoco" or sim == "mock" and mock_follower_parameters(robot=robot, instruction=instruction):
        parameters["success_topic"] = MUJOCO_SUCCESS_TOPIC
    if sim == "mujoco" and embodiment.robot not in SIM_ROBOTS:
        raise ConfigError(f"sim:=mujoco has models of {', '.join(SIM_ROBOTS)} only, not '{embodiment.robot}': "
                          "use sim:=mock (its real controllers on mock hardware), sim:=gazebo, sim:=isaac or sim:=none")
    return parameters


def sim_node_parameters(*, robot: str, instruction: str) -> dict:
    return {"robot": robot, "instruction": instruction or "touch the red cube", "use_sim_time": False}


def mock_follower_parameters(*, robot: str, instruction: str) -> dict | None:
    """sim:=mock: parameters of the MuJoCo world following /joint_states (cameras, task success), or None where the
    simulator has no model of the robot (the controllers then run without cameras)."""
    from vla_ros.sim.robots import ROBOTS

    embodiment = load_embodiment(robot)
    if embodiment.robot not in ROBOTS:
        return None
    return {"robot": robot, "instruction": instruction or "touch the red cube", "use_sim_time": False,
            "follow_joint_states": True}
