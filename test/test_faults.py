"""The fault and bad-input suite: the policy node's logic on a real DDS graph (pip-only backend, loopback) fed bad
data and failures by a scripted robot. For every fault: the node keeps running, the arm holds without a jump, the
event is counted (diagnostics) and logged once in words, and commanding resumes when the fault clears.

The policy is a test stand-in (the policy is not what is tested): each chunk holds the observed arm pose and
nudges shoulder_pan, so a moving arm shows commanding and a constant one shows holding.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("cyclonedds", reason="needs the cyclonedds wheel (pip install -e '.[dds]')")
pytest.importorskip("rosbags", reason="needs rosbags (pip install -e '.[dds]')")

from polling import wait_for

from vla_ros.core.adapter import EmbodimentAdapter  # noqa: E402
from vla_ros.core.embodiment import load_embodiment  # noqa: E402
from vla_ros.core.errors import ConfigError, VlaRosError  # noqa: E402
from vla_ros.core.features import STATE, PolicyFeatures  # noqa: E402
from vla_ros.dds.messages import message_type  # noqa: E402
from vla_ros.dds.node import DdsGraph, DdsNode  # noqa: E402
from vla_ros.dds.qos import QosSpec  # noqa: E402
from vla_ros.policies.base import Policy, PolicyMetadata  # noqa: E402
from vla_ros.ros.backend import dds_backend  # noqa: E402
from vla_ros.ros.policy_core import PolicyNodeCore  # noqa: E402

LOOPBACK_CONFIG = Path(__file__).resolve().parents[1] / "config" / "cyclonedds_loopback.xml"
DOMAIN_ID = 69
SO101 = load_embodiment("so101")
JOINTS = list(SO101.joint_names)
ARM_TOPIC = "/arm_controller/joint_trajectory"
JointState, Image, JointTrajectory = (message_type(f"{t}") for t in (
    "sensor_msgs/msg/JointState", "sensor_msgs/msg/Image", "trajectory_msgs/msg/JointTrajectory"))
Time = message_type("builtin_interfaces/msg/Time")


class NudgingPolicy(Policy):
    """Hold the observed pose, shoulder_pan 0.02 rad further per step; can be told to fail or to be slow."""

    def __init__(self):
        self.features = PolicyFeatures(state_dim=6, action_dim=6, chunk_size=10,
                                       action_dt_s=SO101.control_period_s, camera_keys=("front", "wrist"))
        self.metadata = PolicyMetadata(name="nudge", features=self.features, learned=False)
        self.adapter = EmbodimentAdapter(SO101, self.features)
        self.fail = False
        self.delay_s = 0.0

    def reset(self, *, seed=None) -> None:
        pass

    def predict_chunk(self, observation, prefix=None) -> np.ndarray:
        if self.delay_s:
            time.sleep(self.delay_s)
        if self.fail:
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        state = self.adapter.state_from_policy(observation[STATE])
        targets = np.repeat(state[None], self.features.chunk_size, axis=0)
        targets[:, 0] += 0.02 * np.arange(1, self.features.chunk_size + 1)
        return self.adapter.robot_to_actions(targets, state)


@dataclass
class Robot:
    """A scripted so101 on DDS: joint states at 100 Hz and two cameras at 15 Hz, with faults on request."""

    node: DdsNode
    positions: np.ndarray = field(default_factory=lambda: SO101.home.copy())
    image_fault: str = ""  # "", "encoding", "step", "size", "empty"
    joint_fault: str = ""  # "", "misspelled", "all_unknown", "missing", "nan", "inf", "old", "duplicate"
    clock_offset_s: float = 0.0
    cameras_on: bool = True
    commands: list = field(default_factory=list)

    def __post_init__(self):
        self.joint_pub = self.node.create_publisher(JointState, "/joint_states", QosSpec(depth=5))
        self.image_pubs = {c.name: self.node.create_publisher(Image, c.topic, QosSpec(depth=2)) for c in SO101.cameras}
        self.node.create_subscription(JointTrajectory, ARM_TOPIC, self._on_command, QosSpec(depth=10))
        self.node.create_timer(0.01, self._publish_joints)
        self.node.create_timer(1 / 15, self._publish_images)
        self._last_stamp = self._good_stamp = None

    def stamp(self):
        t = time.time() + self.clock_offset_s
        return Time(sec=int(t), nanosec=int((t % 1) * 1e9))

    def _on_command(self, msg) -> None:
        positions = np.array(msg.points[0].positions)
        self.commands.append((time.monotonic(), positions))
        self.positions[:5] = positions  # a perfect controller

    def _publish_joints(self) -> None:
        names, positions = list(JOINTS), self.positions.copy()
        stamp = self.stamp()
        if self.joint_fault == "misspelled":
            names[0] = "shoulder_pann"
        elif self.joint_fault == "all_unknown":
            names = [f"left_{name}" for name in names]
        elif self.joint_fault == "missing":
            names, positions = names[1:], positions[1:]
        elif self.joint_fault == "nan":
            positions[2] = np.nan
        elif self.joint_fault == "inf":
            positions[2] = np.inf
        elif self.joint_fault == "old":  # 50 ms before the last good message: out of order (not a clock jump)
            t = self._good_stamp.sec + self._good_stamp.nanosec * 1e-9 - 0.05
            stamp = Time(sec=int(t), nanosec=int((t % 1) * 1e9))
        elif self.joint_fault == "duplicate" and self._last_stamp is not None:
            stamp = self._last_stamp
        if not self.joint_fault:
            self._good_stamp = stamp
        self._last_stamp = stamp
        msg = JointState(name=names, position=positions.tolist())
        msg.header.stamp = stamp
        self.joint_pub.publish(msg)

    def _publish_images(self) -> None:
        if not self.cameras_on:
            return
        for publisher in self.image_pubs.values():
            height, width = 48, 64
            msg = Image(height=height, width=width, encoding="rgb8", step=width * 3,
                        data=bytes(np.full(height * width * 3, 100, np.uint8)))
            msg.header.stamp = self.stamp()
            if self.image_fault == "encoding":
                msg.encoding = "yuv422"
            elif self.image_fault == "step":
                msg.step = width * 3 - 2
            elif self.image_fault == "size":
                msg.data = msg.data[: len(msg.data) // 2]
            elif self.image_fault == "empty":
                msg.data = b""
            publisher.publish(msg)

    def moves(self, seconds: float = 1.0) -> float:
        """How far shoulder_pan was commanded in the last `seconds`."""
        now = time.monotonic()
        recent = [p[0] for t, p in self.commands if t > now - seconds]
        return max(recent) - min(recent) if recent else 0.0

    def max_step(self, since: float) -> float:
        """The largest change between consecutive commands since `since`: a jump shows here."""
        recent = [p for t, p in self.commands if t > since]
        return max((np.abs(b - a).max() for a, b in zip(recent, recent[1:], strict=False)), default=0.0)


@pytest.fixture(scope="module")
def graph():
    import os

    previous = os.environ.get("CYCLONEDDS_URI")
    os.environ["CYCLONEDDS_URI"] = LOOPBACK_CONFIG.as_uri()
    graph = DdsGraph(DOMAIN_ID)
    yield graph
    graph.close()
    if previous is None:
        os.environ.pop("CYCLONEDDS_URI", None)
    else:
        os.environ["CYCLONEDDS_URI"] = previous


@pytest.fixture
def loop(graph, caplog):
    """The policy node (PolicyNodeCore on DdsNode) and the scripted robot, each spinning on its own thread."""
    caplog.set_level(logging.WARNING)
    policy = NudgingPolicy()
    node = DdsNode("vla_policy", graph)
    core = PolicyNodeCore(node, dds_backend())
    core.configure({"robot": "so101", "instruction": "touch the red cube"}, policy=policy)
    core.activate()
    robot = Robot(DdsNode("scripted_so101", graph))
    threads = [threading.Thread(target=n.spin, daemon=True) for n in (node, robot.node)]
    for thread in threads:
        thread.start()
    assert wait_for(lambda: robot.moves() > 0.05), "the healthy loop never commanded the arm"
    yield core, robot, policy, caplog
    for n in (node, robot.node):
        n.destroy_node()
    for thread in threads:
        thread.join(timeout=5.0)
    core.cleanup()


def held_then_recovered(core, robot, start_fault, clear_fault, *, hold_s: float = 1.0) -> tuple[float, float]:
    """Inject a fault, check the arm holds (commands constant, no jump), clear it, check commanding resumes.

    Returns (how far the arm was commanded while held, the largest step between commands); the hold reason the
    node gave is in `core.seen_hold_reason`.
    """
    start_fault()
    assert wait_for(lambda: core.runner.last_hold_reason != ""), "the node never held"
    time.sleep(0.3)  # the hold settles: the queue drains
    core.seen_hold_reason = core.runner.last_hold_reason
    since = time.monotonic()
    time.sleep(hold_s)
    held = robot.moves(hold_s)
    assert core.runner is not None and core.active  # the node is still up
    clear_fault()
    assert wait_for(lambda: core.runner.last_hold_reason == "" and robot.moves(0.5) > 0.02), \
        f"no recovery: {core.runner.last_hold_reason}"
    return held, robot.max_step(since)


def logged_once(caplog, text: str) -> bool:
    return sum(text in record.getMessage() for record in caplog.records) == 1


STEP_LIMIT = 0.08  # rad per control tick: the safety filter's velocity limit keeps any command step below this


@pytest.mark.parametrize("fault, counted_as, log_text", [
    ("encoding", "camera 'front': undecodable", "yuv422"),
    ("step", "camera 'front': undecodable", "step"),
    ("size", "camera 'front': undecodable", "bytes"),
    ("empty", "camera 'front': undecodable", "bytes"),
])
def test_malformed_images_are_dropped_counted_and_the_arm_holds(loop, fault, counted_as, log_text):
    core, robot, _, caplog = loop
    held, step = held_then_recovered(core, robot, lambda: setattr(robot, "image_fault", fault),
                                     lambda: setattr(robot, "image_fault", ""))
    assert held < 1e-6 and step < STEP_LIMIT
    assert core.runner.undecodable["camera 'front'"] > 3
    assert logged_once(caplog, "dropped a message from camera 'front'")
    assert log_text in caplog.text


@pytest.mark.parametrize("fault, reason", [
    ("all_unknown", "none of its names"), ("nan", "non-finite"), ("inf", "non-finite"),
    ("old", "older than the latest accepted one"), ("duplicate", "repeats"),
])
def test_bad_joint_states_are_dropped_counted_and_logged_once(loop, fault, reason):
    core, robot, _, caplog = loop
    before = core.runner.dropped_messages
    robot.joint_fault = fault
    assert wait_for(lambda: core.runner.dropped_messages > before + 3)
    time.sleep(0.5)
    robot.joint_fault = ""
    assert wait_for(lambda: core.runner.last_hold_reason == "" and robot.moves(0.5) > 0.02)
    warnings = [r.getMessage() for r in caplog.records if "dropped a message from /joint_states" in r.getMessage()]
    assert len(warnings) == 1 and reason in warnings[0], warnings  # said once, not at 100 Hz


@pytest.mark.parametrize("fault, named", [
    ("all_unknown", "joint"), ("nan", "joint"), ("old", "joint"),
    # Extra names are normal (joint_states often carry other joints); a robot joint left out goes stale, by name.
    ("misspelled", "shoulder_pan"), ("missing", "shoulder_pan"),
])
def test_bad_or_missing_joint_states_hold_the_arm_without_a_jump_saying_why(loop, fault, named):
    core, robot, _, _ = loop
    held, step = held_then_recovered(core, robot, lambda: setattr(robot, "joint_fault", fault),
                                     lambda: setattr(robot, "joint_fault", ""))
    assert held < 1e-6 and step < STEP_LIMIT
    assert named in core.seen_hold_reason


def test_camera_drop_out_holds_and_recovers(loop):
    core, robot, _, _ = loop
    held, step = held_then_recovered(core, robot, lambda: setattr(robot, "cameras_on", False),
                                     lambda: setattr(robot, "cameras_on", True))
    assert held < 1e-6 and step < STEP_LIMIT


def test_a_clock_jump_resets_the_observations_and_the_loop_recovers(loop):
    core, robot, _, _ = loop
    since = time.monotonic()
    robot.clock_offset_s = -30.0  # a simulator reset: every stamp jumps back
    assert wait_for(lambda: core.runner.assembler.counters.get("clock_jumps", 0) >= 1
                    or core.runner.last_hold_reason != "", 5.0)
    time.sleep(1.5)
    # The node's own clock did not jump (wall time): stamps now look 30 s old, so it holds; once the robot's clock
    # is back, it recovers. Either way, no jump in the commands.
    robot.clock_offset_s = 0.0
    assert wait_for(lambda: core.runner.last_hold_reason == "" and robot.moves(0.5) > 0.02)
    assert robot.max_step(since) < STEP_LIMIT


def test_a_policy_that_raises_holds_counts_and_recovers(loop):
    core, robot, policy, _ = loop
    held, step = held_then_recovered(core, robot, lambda: setattr(policy, "fail", True),
                                     lambda: setattr(policy, "fail", False))
    assert held < 1e-6 and step < STEP_LIMIT
    assert core.runner.stats.policy_errors > 0 and "illegal memory access" in core.runner.last_error


def test_a_policy_slower_than_its_chunk_holds_between_chunks_without_a_jump(loop):
    core, robot, policy, _ = loop
    since = time.monotonic()
    policy.delay_s = 0.6  # chunks of 10 steps at 30 Hz last 0.33 s
    time.sleep(3.0)
    assert robot.max_step(since) < STEP_LIMIT
    assert robot.moves(3.0) > 0.02  # still progresses, chunk by chunk
    policy.delay_s = 0.0


def test_a_vanishing_robot_makes_the_node_hold_until_it_is_back(loop, graph):
    core, robot, _, _ = loop
    since = time.monotonic()
    robot.node.destroy_node()  # the DDS peer goes away: no more joint states or images
    assert wait_for(lambda: "stale" in core.runner.last_hold_reason or "no joint state" in
                    core.runner.last_hold_reason or core.runner.last_hold_reason != "", 5.0)
    assert core.active
    replacement = Robot(DdsNode("scripted_so101_again", graph))
    thread = threading.Thread(target=replacement.node.spin, daemon=True)
    thread.start()
    assert wait_for(lambda: replacement.moves(0.5) > 0.02), core.runner.last_hold_reason
    assert robot.max_step(since) < STEP_LIMIT and replacement.max_step(since) < STEP_LIMIT
    replacement.node.destroy_node()
    thread.join(timeout=5.0)


@pytest.mark.parametrize("parameters, message", [
    ({"robot": "so1O1"}, "unknown robot 'so1O1'"),
    ({"robot": "so101", "merge": "average"}, "average"),
    ({"robot": "so101", "policy": "/no/such/checkpoint"}, "/no/such/checkpoint"),
    ({"robot": "so101", "polcy": "builtin"}, "unknown policy node parameters ['polcy']"),
    ({"robot": "panda"}, "actions need rclpy"),
])
def test_config_errors_fail_at_configure_with_the_problem_named(graph, parameters, message):
    node = DdsNode("vla_policy_misconfigured", graph)
    core = PolicyNodeCore(node, dds_backend())
    with pytest.raises((ConfigError, VlaRosError, ValueError)) as error:
        core.configure(parameters)
    assert message in str(error.value)
    assert core.runner is None and not core.active  # nothing started, nothing published
    node.destroy_node()
