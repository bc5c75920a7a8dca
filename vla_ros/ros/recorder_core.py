"""The demonstration recorder's topic logic, on any rclpy-shaped node (rclpy's, or the pip-only DDS one).

Subscribes to what the policy node subscribes to (the embodiment's joint states and cameras) plus the action
source: the controllers' command topics of the embodiment (whoever commands the arm: a policy, a teleoperation
stack) or a leader arm's JointState topic. A control-rate timer hands every tick to `EpisodeRecorder`; ~/status
reports progress once a second. Episodes are started, stopped and discarded by the owner: keyboard (vla-ros
record) or services (the rclpy node).
"""

from __future__ import annotations

import json
from typing import Any

from vla_ros.core.embodiment import CommandInterface, EmbodimentConfig, ImageTransport, OutputSpec
from vla_ros.core.errors import ObservationError
from vla_ros.core.recording import EpisodeRecorder
from vla_ros.core.trajectory import TrajectoryError
from vla_ros.ros.backend import Backend
from vla_ros.ros.convert import (
    image_from_compressed_msg,
    image_from_msg,
    joint_state_from_msg,
    stamp_to_seconds,
    trajectory_from_msg,
)

NODE_NAME = "vla_recorder"


class RecorderCore:
    def __init__(self, node: Any, backend: Backend, embodiment: EmbodimentConfig, recorder: EpisodeRecorder, *,
                 leader_topic: str = ""):
        self.node, self.msg, self.embodiment, self.recorder = node, backend.msg, embodiment, recorder
        self.logger = node.get_logger()
        self.dropped: dict[str, int] = {}
        msg, qos = self.msg, backend.qos
        for source in embodiment.ros.joint_state_topics:
            node.create_subscription(msg.JointState, source.topic,
                                     lambda m, s=source: self._on_joint_state(s.topic, s.prefix, m), qos.sensor_data)
        for camera in embodiment.cameras:
            compressed = camera.transport is ImageTransport.COMPRESSED
            node.create_subscription(msg.CompressedImage if compressed else msg.Image, embodiment.camera_topic(camera),
                                     lambda m, c=camera.name, z=compressed: self._on_image(c, m, z), qos.sensor_data)
        if leader_topic:
            node.create_subscription(msg.JointState, leader_topic, lambda m: self._on_leader(leader_topic, m),
                                     qos.sensor_data)
            self.action_source = f"leader arm on {leader_topic}"
        else:
            watched = [o for o in embodiment.outputs if o.interface is CommandInterface.JOINT_TRAJECTORY]
            for output in watched:
                node.create_subscription(msg.JointTrajectory, output.name,
                                         lambda m, o=output: self._on_command(o, m), qos.command)
            unwatched = [o.name for o in embodiment.outputs if o not in watched]
            if unwatched:
                self.logger.warning(f"commands on {unwatched} are actions, which cannot be listened to: record with a "
                                    "leader arm (--leader-topic) or command those joints by joint_trajectory topics")
            self.action_source = "commands on " + ", ".join(o.name for o in watched)
        self._status_pub = node.create_publisher(msg.String, "~/status", qos.default)
        node.create_timer(embodiment.control_period_s, self._on_tick)
        node.create_timer(1.0, self.publish_status)

    def _now(self) -> float:
        return self.node.get_clock().now().nanoseconds * 1e-9

    def _drop(self, source: str, error: Exception) -> None:
        count = self.dropped[source] = self.dropped.get(source, 0) + 1
        if count == 1:
            self.logger.warning(f"dropped a message from {source}: {error} (further drops are only counted, see "
                                "~/status)")

    def _on_joint_state(self, topic: str, prefix: str, msg) -> None:
        try:
            stamp, names, positions = joint_state_from_msg(msg)
            self.recorder.add_joint_state(topic, stamp, [prefix + n for n in names], positions)
        except ObservationError as exc:
            self._drop(topic, exc)

    def _on_image(self, camera: str, msg, compressed: bool) -> None:
        try:
            decode = image_from_compressed_msg if compressed else image_from_msg
            image = decode(msg, source=f"camera '{camera}'")
            self.recorder.add_image(camera, stamp_to_seconds(msg.header.stamp), image)
        except ObservationError as exc:
            self._drop(f"camera '{camera}'", exc)

    def _on_command(self, output: OutputSpec, msg) -> None:
        try:
            trajectory = trajectory_from_msg(msg)
            names = [output.prefix + name for name in trajectory.joint_names]
            # A streamed command's first point is where the arm is sent next: the action of this instant.
            self.recorder.add_action(names, trajectory.points[0].positions, source=output.name)
        except (ObservationError, TrajectoryError) as exc:
            self._drop(output.name, exc)

    def _on_leader(self, topic: str, msg) -> None:
        try:
            _, names, positions = joint_state_from_msg(msg)
            self.recorder.add_action(list(names), positions, source=topic)
        except ObservationError as exc:
            self._drop(topic, exc)

    def _on_tick(self) -> None:
        now = self._now()
        if now > 0.0:  # use_sim_time before the first /clock message
            self.recorder.tick(now)

    def publish_status(self) -> None:
        status = self.recorder.status()
        self._status_pub.publish(self.msg.String(data=json.dumps({
            "recording": status.recording, "task": status.task, "frames": status.frames,
            "episodes_saved": status.episodes_saved, "skipped_ticks": status.skipped, "dropped": self.dropped})))
