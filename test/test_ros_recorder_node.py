"""The recorder node on rclpy, recording the demo's closed loop (MuJoCo robot node + policy node) by service."""

from __future__ import annotations

import threading
import time

import pytest
from ros_graph import require

pytestmark = pytest.mark.ros

rclpy = require("rclpy", "needs ROS 2 (rclpy): source a ROS 2 Humble or Jazzy setup")
require("vla_ros.msg", "needs vla_ros built with colcon (its interfaces are generated)")
require("pyarrow", "needs pyarrow (pip install pyarrow in the ROS Python environment)")
require("imageio_ffmpeg", "needs imageio-ffmpeg")

from rclpy.executors import MultiThreadedExecutor  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from std_srvs.srv import Trigger  # noqa: E402

from vla_ros.datasets.lerobot import read_dataset, validate_dataset  # noqa: E402
from vla_ros.ros.launch_params import MUJOCO_SUCCESS_TOPIC  # noqa: E402
from vla_ros.ros.policy_node import PolicyNode  # noqa: E402
from vla_ros.ros.recorder_node import RecorderNode  # noqa: E402
from vla_ros.ros.sim_node import MujocoRobotNode  # noqa: E402

DOMAIN_ID = 73
INSTRUCTION = "touch the green cube"


def test_episodes_are_started_stopped_and_discarded_by_service(tmp_path):
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=DOMAIN_ID)
    sim = MujocoRobotNode(context=context, parameter_overrides=[
        Parameter("instruction", value=INSTRUCTION), Parameter("seed", value=2),
        Parameter("camera_width", value=160), Parameter("camera_height", value=120)])
    policy = PolicyNode(world=sim.world, context=context, parameter_overrides=[
        Parameter("policy", value="expert"), Parameter("instruction", value=INSTRUCTION),
        Parameter("use_sim_time", value=True), Parameter("success_topic", value=MUJOCO_SUCCESS_TOPIC)])
    out = tmp_path / "dataset"
    recorder = RecorderNode(context=context, parameter_overrides=[
        Parameter("out", value=str(out)), Parameter("instruction", value=INSTRUCTION),
        Parameter("image_height", value=60), Parameter("image_width", value=80),
        Parameter("use_sim_time", value=True)])
    probe = rclpy.create_node("recorder_probe", context=context)
    executor = MultiThreadedExecutor(context=context)
    for node in (sim, policy, recorder, probe):
        executor.add_node(node)
    thread = threading.Thread(target=executor.spin, daemon=True)
    thread.start()

    def call(service: str) -> Trigger.Response:
        client = probe.create_client(Trigger, f"/vla_recorder/{service}")
        assert client.wait_for_service(timeout_sec=10.0), f"{service} not offered"
        future = client.call_async(Trigger.Request())
        deadline = time.monotonic() + 10.0
        while not future.done() and time.monotonic() < deadline:
            time.sleep(0.01)
        return future.result()

    try:
        policy.trigger_configure()
        policy.trigger_activate()
        refused = call("stop")
        assert not refused.success and "not recording" in refused.message
        assert call("start").success
        time.sleep(1.5)
        saved = call("stop")
        assert saved.success and saved.message.startswith("episode 0 saved"), saved.message
        assert call("start").success
        time.sleep(0.5)
        assert call("discard").success
        assert not call("discard").success
    finally:
        executor.shutdown()
        thread.join(timeout=5.0)
        for node in (policy, recorder, sim, probe):
            node.destroy_node()
        rclpy.shutdown(context=context)
    validate_dataset(out, joint_names=list(sim.embodiment.joint_names), camera_keys=["front", "wrist"])
    dataset = read_dataset(out)
    assert len(dataset.episodes) == 1  # the discarded one is gone
    episode = dataset.episode(0)
    assert episode.task == INSTRUCTION and len(episode) >= 20  # 1.5 s at 30 Hz, less start-up ticks
