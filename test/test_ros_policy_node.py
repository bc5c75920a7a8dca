"""The policy node against real rclpy: a scripted robot publishes joint states and images, the test listens on
the controller topics. Skipped where ROS 2 is not installed."""

from __future__ import annotations

import os
import threading
import time

import numpy as np
import pytest
from polling import wait_for
from ros_graph import require

require("rclpy", "needs ROS 2 (rclpy): source a ROS 2 Humble or Jazzy setup")
require("vla_ros.msg", "needs vla_ros built with colcon (its interfaces are generated)")

import rclpy  # noqa: E402
from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from lifecycle_msgs.msg import State  # noqa: E402
from rclpy.executors import MultiThreadedExecutor  # noqa: E402
from rclpy.node import Node  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rclpy.qos import QoSProfile, ReliabilityPolicy  # noqa: E402
from sensor_msgs.msg import Image, JointState  # noqa: E402
from std_msgs.msg import Bool  # noqa: E402
from std_srvs.srv import Trigger  # noqa: E402
from trajectory_msgs.msg import JointTrajectory  # noqa: E402

from vla_ros.action import ExecuteInstruction  # noqa: E402
from vla_ros.core.embodiment import load_embodiment  # noqa: E402
from vla_ros.msg import PolicyStatus  # noqa: E402
from vla_ros.ros.policy_node import PolicyNode  # noqa: E402
from vla_ros.sim.world import SimWorld  # noqa: E402

pytestmark = pytest.mark.ros
DOMAIN_ID = 67
ARM_TOPIC = "/arm_controller/joint_trajectory"
GRIPPER_TOPIC = "/gripper_controller/joint_trajectory"


class ScriptedRobot(Node):
    """Publishes so101 joint states and camera images at a fixed rate; records what the controllers receive."""

    def __init__(self, context, embodiment):
        super().__init__("scripted_robot", context=context)
        self.embodiment = embodiment
        self.positions = embodiment.home.copy()
        self.names = list(reversed(embodiment.joint_names))  # any order: the node matches by name
        self.publish_images = True
        self.bad_image = False
        self.arm, self.gripper = [], []
        self.lock = threading.Lock()
        self.joint_pub = self.create_publisher(JointState, "/joint_states", 10)
        self.success_pub = self.create_publisher(Bool, "/scripted_robot/task_success", 10)
        self.image_pubs = {c.name: self.create_publisher(Image, embodiment.camera_topic(c), 10)
                           for c in embodiment.cameras}
        reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        self.create_subscription(JointTrajectory, ARM_TOPIC, lambda m: self._record(self.arm, m), reliable)
        self.create_subscription(JointTrajectory, GRIPPER_TOPIC, lambda m: self._record(self.gripper, m), reliable)
        self.create_timer(1 / 50, self._publish)
        self.image = np.full((120, 160, 3), 90, dtype=np.uint8)

    def _record(self, store, msg):
        with self.lock:
            store.append((time.monotonic(), msg))

    def _publish(self):
        stamp = self.get_clock().now().to_msg()
        order = [self.embodiment.joint_names.index(n) for n in self.names]
        self.joint_pub.publish(JointState(header=_header(stamp), name=self.names,
                                          position=self.positions[order].tolist()))
        if not self.publish_images:
            return
        for pub in self.image_pubs.values():
            msg = Image(header=_header(stamp), height=120, width=160, encoding="rgb8", step=160 * 3,
                        data=self.image.tobytes())
            if self.bad_image:
                msg.encoding = "yuv422"  # unsupported: must be dropped and counted
            pub.publish(msg)

    def received(self, store, since):
        with self.lock:
            return [msg for t, msg in store if t >= since]


def _header(stamp):
    from std_msgs.msg import Header

    return Header(stamp=stamp)


@pytest.fixture(scope="module")
def graph():
    os.environ["ROS_DOMAIN_ID"] = str(DOMAIN_ID)
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=DOMAIN_ID)
    embodiment = load_embodiment("so101")
    world = SimWorld("so101", render=False)  # the expert plans on it; the scripted robot stands in for the arm
    from vla_ros.sim.tasks import parse_instruction

    world.reset(parse_instruction("touch the red cube"), seed=1)
    node = PolicyNode(world=world, context=context, parameter_overrides=[
        Parameter("robot", value="so101"), Parameter("policy", value="expert"),
        Parameter("instruction", value="touch the red cube"),
        Parameter("success_topic", value="/scripted_robot/task_success")])
    robot = ScriptedRobot(context, embodiment)
    listener = Node("listener", context=context)
    executor = MultiThreadedExecutor(context=context)
    for n in (node, robot, listener):
        executor.add_node(n)
    thread = threading.Thread(target=executor.spin, daemon=True)
    thread.start()
    yield node, robot, listener
    executor.shutdown()
    node.destroy_node()
    robot.destroy_node()
    listener.destroy_node()
    rclpy.shutdown(context=context)


def call(listener, service, srv_type=Trigger):
    client = listener.create_client(srv_type, service)
    assert client.wait_for_service(timeout_sec=5.0), f"{service} not offered"
    future = client.call_async(srv_type.Request())
    assert wait_for(future.done), f"{service} did not answer"
    return future.result()


def test_lifecycle_configure_activate_and_commands_reach_the_controllers(graph):
    node, robot, _ = graph
    assert node._state_machine.current_state[1] == "unconfigured"
    node.trigger_configure()
    assert node._state_machine.current_state[1] == "inactive"
    start = time.monotonic()
    time.sleep(0.3)
    assert not robot.received(robot.arm, start), "an inactive node must not command"
    node.trigger_activate()
    assert node._state_machine.current_state[0] == State.PRIMARY_STATE_ACTIVE
    assert wait_for(lambda: len(robot.received(robot.arm, start)) > 10), "no trajectories on the arm controller"
    msg = robot.received(robot.arm, start)[-1]
    assert list(msg.joint_names) == ["shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll"]
    # A stamped lookahead (docs/ros2-control.md): absolute time, one point per period from the last command sent,
    # velocities for cubic splines, ending at rest.
    assert msg.header.stamp.sec > 0
    times = [p.time_from_start.sec + p.time_from_start.nanosec * 1e-9 for p in msg.points]
    assert len(msg.points) >= 3 and times[0] == pytest.approx(1 / 30, abs=1e-6)
    assert np.all(np.diff(times) > 0) and np.diff(times)[:2] == pytest.approx([1 / 30, 1 / 30], abs=1e-6)
    assert all(len(p.velocities) == 5 for p in msg.points) and not any(msg.points[-1].velocities)
    point = msg.points[1]  # the command of the tick that sent it
    gripper = robot.received(robot.gripper, start)
    assert gripper and list(gripper[-1].joint_names) == ["gripper"]
    # The expert moves away from home: the commands move too.
    first = np.array(robot.received(robot.arm, start)[0].points[0].positions)
    assert np.abs(np.array(point.positions) - first).max() > 1e-3


def test_stale_camera_holds_and_recovers(graph):
    node, robot, _ = graph
    robot.publish_images = False
    time.sleep(1.5)  # camera_timeout_s 0.5 s, then the queued chunk runs out
    since = time.monotonic()
    time.sleep(0.5)
    held = [np.array(m.points[0].positions) for m in robot.received(robot.arm, since)]
    assert held, "commands must continue (holding) while the camera is stale"
    assert np.abs(held[-1] - held[0]).max() < 1e-6, "the arm must hold still"
    assert "camera" in node.runner.last_hold_reason
    robot.publish_images = True
    assert wait_for(lambda: node.runner.last_hold_reason == ""), node.runner.last_hold_reason


def test_bad_images_are_dropped_counted_and_the_node_keeps_running(graph):
    node, robot, _ = graph
    before = node.runner.dropped_messages
    robot.bad_image = True
    assert wait_for(lambda: node.runner.dropped_messages >= before + 5)
    robot.bad_image = False
    since = time.monotonic()
    assert wait_for(lambda: len(robot.received(robot.arm, since)) > 5), "the node stopped commanding"


def test_pause_resume_services(graph):
    node, robot, listener = graph
    assert call(listener, "/vla_policy/pause").success
    assert wait_for(lambda: node.runner.last_hold_reason == "paused")
    since = time.monotonic()
    time.sleep(0.8)  # a moving arm brakes within its acceleration limits, then holds
    held = [np.array(m.points[0].positions) for m in robot.received(robot.arm, since)]
    assert np.abs(held[-1] - held[-5]).max() < 1e-6
    assert call(listener, "/vla_policy/resume").success
    assert wait_for(lambda: node.runner.last_hold_reason == "")


def test_status_and_diagnostics_publish(graph):
    _, _, listener = graph
    statuses, diagnostics = [], []
    listener.create_subscription(PolicyStatus, "/vla_policy/status", statuses.append, 10)
    listener.create_subscription(DiagnosticArray, "/diagnostics", diagnostics.append, 10)
    assert wait_for(lambda: statuses and diagnostics, timeout_s=5.0)
    assert statuses[-1].policy == "expert" and statuses[-1].chunks_received > 0
    keys = {kv.key for status in diagnostics[-1].status for kv in status.values}
    assert "inference latency [s]" in keys and "queue depth [steps]" in keys


def execute(listener, instruction, timeout):
    from rclpy.action import ActionClient

    client = ActionClient(listener, ExecuteInstruction, "/vla_policy/execute")
    assert client.wait_for_server(timeout_sec=5.0)
    sent = client.send_goal_async(ExecuteInstruction.Goal(instruction=instruction, timeout=timeout))
    assert wait_for(sent.done)
    return sent.result().get_result_async()


def test_execute_instruction_times_out_and_holds(graph):
    node, _, listener = graph
    result = execute(listener, "touch the blue cube", 0.5)
    assert wait_for(result.done)
    assert not result.result().result.success
    assert "timeout after 0.5 s" in result.result().result.message
    assert node.runner.instruction == "touch the blue cube" and node.runner.paused
    node.runner.resume()


def test_execute_instruction_succeeds_on_the_success_topic(graph):
    _, robot, listener = graph
    result = execute(listener, "touch the red cube", 10.0)
    time.sleep(0.5)
    robot.success_pub.publish(Bool(data=True))
    assert wait_for(result.done)
    outcome = result.result().result
    assert outcome.success and outcome.message == "succeeded" and outcome.steps > 0


def test_deactivate_stops_commanding(graph):
    node, robot, _ = graph
    node.trigger_deactivate()
    time.sleep(0.2)
    since = time.monotonic()
    time.sleep(0.5)
    assert not robot.received(robot.arm, since)
    node.trigger_cleanup()
    assert node.runner is None and node._state_machine.current_state[1] == "unconfigured"
