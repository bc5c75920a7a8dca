"""Helpers of the ROS tests that bring robots up on ros2_control's mock hardware (`<robot>.launch.py sim:=mock`).

- `SwayPolicy` / `serve_sway`: a policy server that moves every arm joint a little back and forth from the
  observed state, for any robot, without a model or cameras, so that the policy node drives the real controllers;
- `MockLaunch`: `ros2 launch vla_ros <robot>.launch.py sim:=mock ...` as a child process in its own ROS domain;
- `Probe`: an rclpy node in that domain that asks the graph what a test needs (controllers, lifecycle, joints).
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import numpy as np

from vla_ros.core.adapter import EmbodimentAdapter
from vla_ros.core.embodiment import EmbodimentConfig, load_embodiment
from vla_ros.core.features import STATE, PolicyFeatures
from vla_ros.policies.base import Policy, PolicyMetadata
from vla_ros.policies.remote.server import PolicyServer, ServeConfig, ServerThread

SWAY_RAD = 0.05  # how far each arm joint moves per chunk, in joint units (rad or m)


class SwayPolicy(Policy):
    """Each chunk moves every arm joint (not the grippers) SWAY_RAD away from the observed state and back, the
    direction alternating from chunk to chunk."""

    def __init__(self, embodiment: EmbodimentConfig):
        n = len(embodiment.joint_names)
        features = PolicyFeatures(
            state_dim=n, action_dim=n, chunk_size=10, action_dt_s=embodiment.control_period_s, camera_keys=()
        )
        self.metadata = PolicyMetadata(
            name="sway",
            features=features,
            description="test policy: sways every arm joint",
            normalization={STATE: "IDENTITY"},
        )
        self.adapter = EmbodimentAdapter(embodiment, features)
        grippers = {g.joint for g in embodiment.grippers}
        self.arm = np.array([name not in grippers for name in embodiment.joint_names])
        self.sign = 1.0

    def reset(self, *, seed: int | None = None) -> None:
        pass

    def predict_chunk(self, observation, prefix=None) -> np.ndarray:
        state = self.adapter.state_from_policy(np.asarray(observation[STATE], dtype=np.float64))
        self.sign = -self.sign
        ramp = np.sin(np.linspace(0, np.pi, self.metadata.features.chunk_size))[:, None]
        targets = state + self.sign * SWAY_RAD * ramp * self.arm
        return self.adapter.robot_to_actions(targets, state).astype(np.float32)


def serve_sway(robot: str) -> tuple[ServerThread, str]:
    """A running server of `SwayPolicy` for `robot` and its ws:// address."""
    policy = SwayPolicy(load_embodiment(robot))
    server = ServerThread(PolicyServer(policy, ServeConfig(port=0), robot=robot)).start()
    return server, f"ws://127.0.0.1:{server.port}"


class MockLaunch:
    """`ros2 launch vla_ros <robot>.launch.py sim:=mock <arguments>` in ROS domain `domain`; output in `log`."""

    def __init__(self, robot: str, domain: int, log: Path, **arguments: str):
        self.robot, self.domain, self.log = robot, domain, log
        env = dict(os.environ, ROS_DOMAIN_ID=str(domain), PYTHONUNBUFFERED="1", RCUTILS_COLORIZED_OUTPUT="0")
        argv = [
            "ros2",
            "launch",
            "vla_ros",
            f"{robot}.launch.py",
            "sim:=mock",
            *(f"{name}:={value}" for name, value in arguments.items()),
        ]
        with open(log, "wb") as out:
            self.process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def interrupt(self, timeout_s: float = 30.0) -> int:
        """Ctrl-C, as an operator stops a launch; the exit code (killed after `timeout_s`: -9)."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGINT)
        try:
            return self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
            return -9


class Probe:
    """An rclpy node in domain `domain`, spun in a thread, for questions to the graph."""

    def __init__(self, domain: int, name: str = "vla_ros_test_probe"):
        import rclpy
        from rclpy.executors import SingleThreadedExecutor

        self.context = rclpy.Context()
        rclpy.init(context=self.context, domain_id=domain)
        self.node = rclpy.create_node(name, context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self._thread = threading.Thread(target=self.executor.spin, daemon=True)
        self._thread.start()
        self._clients: dict = {}

    def close(self) -> None:
        import rclpy

        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)
        self._thread.join(5)

    def call(self, service_type, name: str, request, timeout_s: float = 5.0):
        """The response of one service call, or None when the service is not there or does not answer."""
        client = self._clients.get(name) or self._clients.setdefault(name, self.node.create_client(service_type, name))
        if not client.wait_for_service(timeout_sec=timeout_s):
            return None
        future = client.call_async(request)
        deadline = time.monotonic() + timeout_s
        while not future.done() and time.monotonic() < deadline:
            time.sleep(0.02)
        return future.result() if future.done() else None

    def controller_states(self, manager: str) -> dict[str, str]:
        """Controller name -> state ("active", "inactive", ...) of controller manager `manager` (empty: no answer)."""
        from controller_manager_msgs.srv import ListControllers

        response = self.call(ListControllers, f"{manager}/list_controllers", ListControllers.Request())
        return {} if response is None else {c.name: c.state for c in response.controller}

    def publish_camera_images(self, embodiment: EmbodimentConfig, rate_hz: float = 10.0) -> None:
        """Stand in for the robot's cameras: a tiny black frame on each camera topic (a policy that reads no
        camera still needs every camera to report before the node assembles an observation)."""
        from rclpy.qos import qos_profile_sensor_data
        from sensor_msgs.msg import Image

        publishers = [
            self.node.create_publisher(Image, embodiment.camera_topic(camera), qos_profile_sensor_data)
            for camera in embodiment.cameras
        ]

        def publish() -> None:
            stamp = self.node.get_clock().now().to_msg()
            for publisher in publishers:
                msg = Image(height=4, width=4, encoding="rgb8", step=12, data=bytes(48))
                msg.header.stamp = stamp
                publisher.publish(msg)

        self.node.create_timer(1.0 / rate_hz, publish)

    def lifecycle_state(self, node: str) -> str:
        from lifecycle_msgs.srv import GetState

        response = self.call(GetState, f"{node}/get_state", GetState.Request())
        return "" if response is None else response.current_state.label

    def subscribe_joint_states(self, topic: str) -> dict[str, list[float]]:
        """name -> every position reported on `topic` from now on (filled in the background)."""
        from rclpy.qos import qos_profile_sensor_data
        from sensor_msgs.msg import JointState

        seen: dict[str, list[float]] = {}

        def record(msg) -> None:
            for name, position in zip(msg.name, msg.position, strict=False):
                seen.setdefault(name, []).append(position)

        self.node.create_subscription(JointState, topic, record, qos_profile_sensor_data)
        return seen


def wait_until(condition, timeout_s: float, period_s: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(period_s)
    return bool(condition())
