"""The policy node commanding through actions, closed loop against the MuJoCo robot node's action servers.

Real rclpy and DDS: the so101 is configured with a FollowJointTrajectory arm and a GripperCommand or
ParallelGripperCommand gripper (as Kortex and Franka arms are). The expert must finish its task through those
actions alone, and the action servers' status topics must show the goals the node sent.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
import yaml
from ros_graph import require

pytestmark = pytest.mark.ros

rclpy = require("rclpy", "needs ROS 2 (rclpy): source a ROS 2 Humble or Jazzy setup")
require("control_msgs", "needs control_msgs (ros-<distro>-control-msgs)")
require("vla_ros.msg", "needs vla_ros built with colcon (its interfaces are generated)")

from action_msgs.msg import GoalStatus, GoalStatusArray  # noqa: E402
from rclpy.executors import MultiThreadedExecutor  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from std_msgs.msg import Bool  # noqa: E402

from vla_ros.core.embodiment import config_dir  # noqa: E402
from vla_ros.ros.launch_params import MUJOCO_SUCCESS_TOPIC  # noqa: E402
from vla_ros.ros.policy_node import PolicyNode  # noqa: E402
from vla_ros.ros.sim_node import MujocoRobotNode  # noqa: E402

DOMAIN_ID = 71
ARM_ACTION = "/arm_controller/follow_joint_trajectory"
GRIPPER_ACTION = "/gripper_controller/gripper_cmd"


def _has_parallel_gripper_command() -> bool:
    try:
        from control_msgs.action import ParallelGripperCommand  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.fixture(params=["gripper_command", "parallel_gripper_command"])
def action_robot(request, tmp_path):
    if request.param == "parallel_gripper_command" and not _has_parallel_gripper_command():
        pytest.skip("this ROS distribution's control_msgs has no ParallelGripperCommand (it came with Jazzy)")
    config = yaml.safe_load((config_dir() / "robots" / "so101.yaml").read_text(encoding="utf-8"))
    config["ros"]["outputs"] = [
        {"interface": "follow_joint_trajectory", "name": ARM_ACTION},
        {"interface": request.param, "name": GRIPPER_ACTION, "joints": ["gripper"]},
    ]
    path = tmp_path / f"so101_{request.param}.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def test_the_expert_finishes_its_task_through_action_goals_alone(action_robot: Path):
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=DOMAIN_ID)
    instruction = "pick up the red cube"  # opens and closes the gripper, so both actions must work
    sim = MujocoRobotNode(context=context, parameter_overrides=[
        Parameter("robot", value=str(action_robot)), Parameter("instruction", value=instruction),
        Parameter("seed", value=3), Parameter("camera_width", value=160), Parameter("camera_height", value=120)])
    policy = PolicyNode(world=sim.world, context=context, parameter_overrides=[
        Parameter("robot", value=str(action_robot)), Parameter("policy", value="expert"),
        Parameter("instruction", value=instruction), Parameter("use_sim_time", value=True),
        Parameter("success_topic", value=MUJOCO_SUCCESS_TOPIC)])
    probe = rclpy.create_node("action_outputs_probe", context=context)
    goals: dict[str, dict[bytes, int]] = {ARM_ACTION: {}, GRIPPER_ACTION: {}}
    success = threading.Event()

    def on_status(action: str, msg: GoalStatusArray) -> None:
        for status in msg.status_list:
            goals[action][bytes(status.goal_info.goal_id.uuid)] = status.status

    for action in goals:
        probe.create_subscription(GoalStatusArray, f"{action}/_action/status",
                                  lambda msg, action=action: on_status(action, msg), 10)
    probe.create_subscription(Bool, MUJOCO_SUCCESS_TOPIC, lambda msg: msg.data and success.set(), 10)
    executor = MultiThreadedExecutor(context=context)
    for node in (sim, policy, probe):
        executor.add_node(node)
    thread = threading.Thread(target=executor.spin, daemon=True)
    thread.start()
    try:
        policy.trigger_configure()
        policy.trigger_activate()
        assert success.wait(timeout=60.0), (
            f"the task did not succeed within 60 s; goals seen: arm {len(goals[ARM_ACTION])}, "
            f"gripper {len(goals[GRIPPER_ACTION])}")
        time.sleep(0.3)  # the last status messages
        arm, gripper = goals[ARM_ACTION].values(), goals[GRIPPER_ACTION].values()
        # The arm is streamed as goals, each preempting the one before, at the control rate.
        assert len(arm) > 20
        assert GoalStatus.STATUS_ABORTED in arm  # preempted goals end as aborted, as in joint_trajectory_controller
        # The gripper gets a goal only when its target changes: open for the approach, then closing on the cube.
        assert 2 <= len(gripper) < len(arm)
    finally:
        executor.shutdown()
        thread.join(timeout=5.0)
        for node in (policy, sim, probe):
            node.destroy_node()
        rclpy.shutdown(context=context)
