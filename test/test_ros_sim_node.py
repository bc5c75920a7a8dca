"""MujocoRobotNode as a ROS 2 robot, against real rclpy and DDS: topics, actions, services, rates.

Each test class spins one simulator node and a probe node in a background executor, on a DDS domain of its own
(ROS_DOMAIN_IDS below), so that other test modules running alongside see nothing of it.
"""

from __future__ import annotations

import math
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from ros_graph import require

pytestmark = pytest.mark.ros

rclpy = require("rclpy", "needs ROS 2 (rclpy): source a ROS 2 Humble or Jazzy setup")
require("control_msgs", "needs control_msgs (ros-<distro>-control-msgs)")

from action_msgs.msg import GoalStatus  # noqa: E402
from control_msgs.action import FollowJointTrajectory, GripperCommand  # noqa: E402
from rcl_interfaces.msg import Parameter as ParameterMsg  # noqa: E402
from rcl_interfaces.msg import ParameterType, ParameterValue  # noqa: E402
from rcl_interfaces.srv import SetParameters  # noqa: E402
from rclpy.action import ActionClient  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data  # noqa: E402
from rosgraph_msgs.msg import Clock  # noqa: E402
from sensor_msgs.msg import CameraInfo, Image, JointState  # noqa: E402
from std_msgs.msg import Bool  # noqa: E402
from std_srvs.srv import Trigger  # noqa: E402
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint  # noqa: E402

from vla_ros.core.embodiment import config_dir  # noqa: E402
from vla_ros.ros.sim_node import MujocoRobotNode  # noqa: E402

ROS_DOMAIN_IDS = {"topics": 57, "actions": 58}
SO101_JOINTS = ["shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll", "gripper"]
ARM = SO101_JOINTS[:5]
COMMAND_QOS = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
LATCHED_QOS = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)


class Harness:
    """The simulator node plus a probe node, spun by one executor on a background thread."""

    def __init__(self, domain_id: int, **parameters):
        self.context = rclpy.Context()
        rclpy.init(context=self.context, domain_id=domain_id)
        self.node = MujocoRobotNode(
            context=self.context, parameter_overrides=[Parameter(k, value=v) for k, v in parameters.items()])
        self.probe = rclpy.create_node("sim_node_test_probe", context=self.context)
        self.received: dict[str, list] = {}
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.executor.add_node(self.probe)
        self._thread = threading.Thread(target=self.executor.spin, daemon=True)

    def start(self) -> Harness:
        self._thread.start()
        return self

    def record(self, msg_type, topic: str, qos=qos_profile_sensor_data) -> list:
        """(wall time, message) of everything arriving on `topic` from now on."""
        messages = self.received.setdefault(topic, [])
        self.probe.create_subscription(msg_type, topic, lambda msg: messages.append((time.monotonic(), msg)), qos)
        return messages

    def publisher(self, topic: str):
        publisher = self.probe.create_publisher(JointTrajectory, topic, COMMAND_QOS)
        wait_for(lambda: publisher.get_subscription_count() > 0, 10.0, f"the simulator to subscribe to {topic}")
        return publisher

    def latest_positions(self) -> dict[str, float]:
        msg = self.received["/joint_states"][-1][1]
        return dict(zip(msg.name, msg.position, strict=True))

    def call(self, client, request, timeout: float = 10.0):
        wait_for(client.service_is_ready, 10.0, f"service {client.srv_name}")
        future = client.call_async(request)
        wait_for(future.done, timeout, f"a response from {client.srv_name}")
        return future.result()

    def close(self) -> None:
        self.executor.shutdown()
        self._thread.join(timeout=5.0)
        self.node.destroy_node()
        self.probe.destroy_node()
        rclpy.shutdown(context=self.context)


def wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.01)


def trajectory(names, positions, duration: float, *, stamp_s: float = 0.0) -> JointTrajectory:
    msg = JointTrajectory(joint_names=list(names))
    msg.header.stamp.sec, msg.header.stamp.nanosec = int(stamp_s), int(round(stamp_s % 1 * 1e9))
    point = JointTrajectoryPoint(positions=[float(p) for p in positions])
    point.time_from_start.sec, point.time_from_start.nanosec = int(duration), int(round(duration % 1 * 1e9))
    msg.points = [point]
    return msg


def goal_result(client: ActionClient, goal, timeout: float = 10.0, *, cancel_after_s: float | None = None,
                feedback: list | None = None):
    """(status, result) of sending `goal` and waiting for it to end; optionally cancel it after a while."""
    wait_for(client.server_is_ready, 10.0, "the action server")
    sent = client.send_goal_async(goal, feedback_callback=None if feedback is None else feedback.append)
    wait_for(sent.done, 5.0, "the goal to be accepted")
    handle = sent.result()
    assert handle.accepted
    if cancel_after_s is not None:
        time.sleep(cancel_after_s)
        cancelled = handle.cancel_goal_async()
        wait_for(cancelled.done, 5.0, "the cancel response")
    result = handle.get_result_async()
    wait_for(result.done, timeout, "the goal's result")
    return result.result().status, result.result().result


# --- the so101 as configured: joint_trajectory topics, cameras ----------------------------------------------------


@pytest.fixture(scope="class")
def sim():
    harness = Harness(ROS_DOMAIN_IDS["topics"], camera_width=160, camera_height=120)
    harness.record(JointState, "/joint_states")
    harness.record(Clock, "/clock", QoSProfile(depth=10, reliability=ReliabilityPolicy.BEST_EFFORT))
    for camera in ("front", "wrist"):
        harness.record(Image, f"/camera/{camera}/image_raw")
        harness.record(CameraInfo, f"/camera/{camera}/camera_info")
    harness.start()
    wait_for(lambda: len(harness.received["/joint_states"]) > 10, 10.0, "joint states")
    yield harness
    harness.close()


class TestTopics:
    def test_joint_states_name_every_joint_at_the_publish_rate(self, sim):
        states = sim.received["/joint_states"]
        start = len(states)
        time.sleep(1.0)
        window = states[start:]
        rate = (len(window) - 1) / (window[-1][0] - window[0][0])
        assert 70 <= rate <= 130, f"joint states at {rate:.1f} Hz, expected about 100"
        msg = window[-1][1]
        assert list(msg.name) == SO101_JOINTS
        assert len(msg.position) == len(msg.velocity) == 6
        assert all(math.isfinite(p) for p in msg.position)

    def test_clock_advances_in_real_time_and_stamps_are_sim_time(self, sim):
        clocks = sim.received["/clock"]
        start = len(clocks)
        time.sleep(1.0)
        window = [(wall, msg.clock.sec + msg.clock.nanosec * 1e-9) for wall, msg in clocks[start:]]
        sim_times = [t for _, t in window]
        assert sim_times == sorted(sim_times)
        factor = (window[-1][1] - window[0][1]) / (window[-1][0] - window[0][0])
        assert 0.8 <= factor <= 1.2, f"realtime factor {factor:.2f}, expected 1"
        state = sim.received["/joint_states"][-1][1]
        stamp = state.header.stamp.sec + state.header.stamp.nanosec * 1e-9
        assert abs(stamp - sim_times[-1]) < 0.2  # sim time, not wall-clock time (which is ~1.8e9 s)

    def test_cameras_publish_rgb8_images_of_the_requested_size_with_camera_info(self, sim):
        for camera in ("front", "wrist"):
            images = sim.received[f"/camera/{camera}/image_raw"]
            start = len(images)
            time.sleep(1.0)
            window = images[start:]
            assert 6 <= len(window) <= 14, f"{camera}: {len(window)} images in 1 s, expected about 10"
            msg = window[-1][1]
            assert (msg.width, msg.height, msg.encoding, msg.step) == (160, 120, "rgb8", 480)
            pixels = np.frombuffer(bytes(msg.data), np.uint8).reshape(120, 160, 3)
            assert pixels.std() > 5  # a scene, not a blank buffer
            info = sim.received[f"/camera/{camera}/camera_info"][-1][1]
            assert (info.width, info.height) == (160, 120)
            assert info.k[0] > 0 and info.k[0] == info.k[4]
            assert info.header.frame_id == msg.header.frame_id

    def test_arm_and_gripper_trajectories_move_their_joints_independently(self, sim):
        arm_target = [0.3, -0.6, 0.7, 0.5, 0.2]
        arm = sim.publisher("/arm_controller/joint_trajectory")
        gripper = sim.publisher("/gripper_controller/joint_trajectory")
        arm.publish(trajectory(ARM, arm_target, 1.0))
        time.sleep(0.3)
        # The gripper's own controller: the arm keeps following its trajectory meanwhile.
        gripper.publish(trajectory(["gripper"], [0.8], 0.3))
        targets = dict(zip(SO101_JOINTS, [*arm_target, 0.8], strict=True))
        wait_for(lambda: all(abs(sim.latest_positions()[j] - t) < 0.05 for j, t in targets.items()), 5.0,
                 f"the arm to reach {targets}")

    def test_a_trajectory_with_an_unknown_joint_is_counted_and_dropped(self, sim):
        arm = sim.publisher("/arm_controller/joint_trajectory")
        wait_for(lambda: max(map(abs, sim.received["/joint_states"][-1][1].velocity)) < 0.01, 5.0, "the arm to rest")
        before = dict(sim.latest_positions())
        rejected = sim.node.rejections.total
        arm.publish(trajectory(["shoulder_pan", "shoulder_lift", "elbow", "wrist_flex", "wrist_roll"],
                               [0.0, 0.0, 0.0, 0.0, 0.0], 0.5))
        arm.publish(trajectory(ARM, [0.0, math.nan, 0.0, 0.0, 0.0], 0.5))
        wait_for(lambda: sim.node.rejections.total == rejected + 2, 5.0, "both trajectories to be rejected")
        kinds = [kind for source, kind in sim.node.rejections.counts if source == "/arm_controller/joint_trajectory"]
        assert any("unknown joints ['elbow']" in kind and "elbow_flex" in kind for kind in kinds)
        assert any("NaN" in kind for kind in kinds)
        count = len(sim.received["/joint_states"])
        time.sleep(0.5)
        assert len(sim.received["/joint_states"]) > count + 20  # still publishing
        after = sim.latest_positions()
        assert all(abs(after[j] - before[j]) < 0.02 for j in ARM), (before, after)  # and still holding

    def test_task_success_is_latched_and_reset_starts_the_next_seed_without_turning_back_the_clock(self, sim):
        successes = sim.record(Bool, "/mujoco_robot/task_success", LATCHED_QOS)  # subscribing late: latched
        wait_for(lambda: successes, 5.0, "the latched task_success")
        assert successes[-1][1].data is False
        before = sim.received["/clock"][-1][1].clock
        response = sim.call(sim.probe.create_client(Trigger, "/mujoco_robot/reset"), Trigger.Request())
        assert response.success and "seed 1" in response.message
        time.sleep(0.2)
        after = sim.received["/clock"][-1][1].clock
        assert (after.sec, after.nanosec) > (before.sec, before.nanosec)
        home = [0.0, -1.0, 1.0, 0.9, 0.0, 0.0]  # so101.yaml
        wait_for(lambda: all(abs(sim.latest_positions()[j] - h) < 0.05 for j, h in zip(SO101_JOINTS, home,
                                                                                       strict=True)),
                 2.0, "the arm to be back home")

    def test_instruction_parameter_starts_a_new_episode_and_refuses_unknown_tasks(self, sim):
        client = sim.probe.create_client(SetParameters, "/mujoco_robot/set_parameters")

        def set_instruction(text: str):
            value = ParameterValue(type=ParameterType.PARAMETER_STRING, string_value=text)
            request = SetParameters.Request(parameters=[ParameterMsg(name="instruction", value=value)])
            return sim.call(client, request).results[0]

        refused = set_instruction("dance with the red cube")
        assert not refused.successful and "touch the <colour> cube" in refused.reason
        accepted = set_instruction("pick up the blue cube")
        assert accepted.successful, accepted.reason
        assert sim.node.get_parameter("instruction").value == "pick up the blue cube"


# --- an embodiment with a FollowJointTrajectory arm and a GripperCommand gripper ----------------------------------


@pytest.fixture(scope="class")
def action_sim(tmp_path_factory):
    config = yaml.safe_load((config_dir() / "robots" / "so101.yaml").read_text(encoding="utf-8"))
    config["ros"]["outputs"] = [
        {"interface": "follow_joint_trajectory", "name": "/arm_controller/follow_joint_trajectory"},
        {"interface": "gripper_command", "name": "/gripper_controller/gripper_cmd", "joints": ["gripper"]},
    ]
    path = Path(tmp_path_factory.mktemp("robots")) / "so101_actions.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    harness = Harness(ROS_DOMAIN_IDS["actions"], robot=str(path), render=False)
    harness.record(JointState, "/joint_states")
    harness.arm = ActionClient(harness.probe, FollowJointTrajectory, "/arm_controller/follow_joint_trajectory")
    harness.gripper = ActionClient(harness.probe, GripperCommand, "/gripper_controller/gripper_cmd")
    harness.start()
    wait_for(lambda: len(harness.received["/joint_states"]) > 10, 10.0, "joint states")
    yield harness
    harness.arm.destroy()
    harness.gripper.destroy()
    harness.close()


def arm_goal(positions, duration: float, names=ARM) -> FollowJointTrajectory.Goal:
    return FollowJointTrajectory.Goal(trajectory=trajectory(names, positions, duration))


class TestActions:
    def test_a_follow_joint_trajectory_goal_succeeds_once_executed(self, action_sim):
        target = [-0.3, -0.5, 0.6, 0.4, -0.2]
        start, feedback = time.monotonic(), []
        status, result = goal_result(action_sim.arm, arm_goal(target, 0.8), feedback=feedback)
        assert status == GoalStatus.STATUS_SUCCEEDED
        assert result.error_code == FollowJointTrajectory.Result.SUCCESSFUL
        assert time.monotonic() - start >= 0.7  # not before the trajectory's end
        positions = action_sim.latest_positions()
        assert all(abs(positions[j] - t) < 0.05 for j, t in zip(ARM, target, strict=True))
        assert len(feedback) >= 5  # 20 Hz, as JTC's action_monitor_rate
        assert list(feedback[-1].feedback.joint_names) == ARM and len(feedback[-1].feedback.desired.positions) == 5

    def test_an_invalid_goal_is_aborted_with_the_reason(self, action_sim):
        status, result = goal_result(action_sim.arm, arm_goal([0.0] * 5, 0.5, names=[*ARM[:4], "wrist_rol"]))
        assert status == GoalStatus.STATUS_ABORTED
        assert result.error_code == FollowJointTrajectory.Result.INVALID_GOAL
        assert "unknown joints ['wrist_rol']" in result.error_string and "wrist_roll" in result.error_string

    def test_a_new_goal_preempts_the_running_one(self, action_sim):
        wait_for(action_sim.arm.server_is_ready, 10.0, "the action server")
        first = action_sim.arm.send_goal_async(arm_goal([0.5, -0.5, 0.5, 0.5, 0.5], 3.0))
        wait_for(first.done, 5.0, "the first goal to be accepted")
        first_result = first.result().get_result_async()
        status, result = goal_result(action_sim.arm, arm_goal([0.1, -0.8, 0.9, 0.7, 0.0], 0.5))
        assert status == GoalStatus.STATUS_SUCCEEDED
        wait_for(first_result.done, 5.0, "the first goal's result")
        assert first_result.result().status == GoalStatus.STATUS_ABORTED
        assert "preempted" in first_result.result().result.error_string

    def test_a_cancelled_goal_stops_the_arm_where_it_is(self, action_sim):
        start = action_sim.latest_positions()["shoulder_pan"]
        status, _ = goal_result(action_sim.arm, arm_goal([start + 1.0, -0.8, 0.9, 0.7, 0.0], 2.0), cancel_after_s=0.5)
        assert status == GoalStatus.STATUS_CANCELED
        stopped = action_sim.latest_positions()["shoulder_pan"]
        time.sleep(0.5)
        assert abs(action_sim.latest_positions()["shoulder_pan"] - stopped) < 0.02
        assert abs(stopped - start) < 0.6  # nowhere near the goal's end

    def test_a_gripper_command_moves_the_gripper_and_reports_reaching_the_goal(self, action_sim):
        goal = GripperCommand.Goal()
        goal.command.position, goal.command.max_effort = 0.9, 2.0
        status, result = goal_result(action_sim.gripper, goal)
        assert status == GoalStatus.STATUS_SUCCEEDED
        assert result.reached_goal and not result.stalled
        assert abs(result.position - 0.9) < 0.015  # within the goal tolerance, 1% of the range
        # The jaw's position servo may ring past the goal for a moment after reaching it: it must settle there.
        wait_for(lambda: abs(action_sim.latest_positions()["gripper"] - 0.9) < 0.01, 2.0, "the jaw to settle at 0.9")
