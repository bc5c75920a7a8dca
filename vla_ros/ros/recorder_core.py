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

from vla_ros.core.embodiment import CommandInterface, EmbodimentConfig, ImageTransport
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


class RecorderInputs:
    """Messages -> `EpisodeRecorder`, by topic: the same handling for live topics and for bag files.

    A bad message is dropped, counted per topic and logged once; recording goes on.
    """

    def __init__(self, embodiment: EmbodimentConfig, recorder: EpisodeRecorder, logger: Any, *,
                 leader_topic: str = ""):
        self.embodiment, self.recorder, self.logger = embodiment, recorder, logger
        self.dropped: dict[str, int] = {}
        self.joint_state_topics = {s.topic: s.prefix for s in embodiment.ros.joint_state_topics}
        self.camera_topics = {embodiment.camera_topic(c): (c.name, c.transport is ImageTransport.COMPRESSED)
                              for c in embodiment.cameras}
        self.leader_topic = leader_topic
        self.command_topics = {} if leader_topic else {
            o.name: o for o in embodiment.outputs if o.interface is CommandInterface.JOINT_TRAJECTORY}
        unwatched = [o.name for o in embodiment.outputs if not leader_topic and o.name not in self.command_topics]
        if unwatched:
            logger.warning(f"commands on {unwatched} are actions, which cannot be listened to: record with a leader "
                           "arm (--leader-topic) or command those joints by joint_trajectory topics")
        self.action_source = (f"leader arm on {leader_topic}" if leader_topic
                              else "commands on " + ", ".join(self.command_topics))

    def _drop(self, source: str, error: Exception) -> None:
        count = self.dropped[source] = self.dropped.get(source, 0) + 1
        if count == 1:
            self.logger.warning(f"dropped a message from {source}: {error} (further drops are only counted, see "
                                "~/status)")

    def on_joint_state(self, topic: str, msg) -> None:
        try:
            stamp, names, positions = joint_state_from_msg(msg)
            prefix = self.joint_state_topics[topic]
            self.recorder.add_joint_state(topic, stamp, [prefix + n for n in names], positions)
        except ObservationError as exc:
            self._drop(topic, exc)

    def on_image(self, topic: str, msg) -> None:
        camera, compressed = self.camera_topics[topic]
        try:
            decode = image_from_compressed_msg if compressed else image_from_msg
            image = decode(msg, source=f"camera '{camera}'")
            self.recorder.add_image(camera, stamp_to_seconds(msg.header.stamp), image)
        except ObservationError as exc:
            self._drop(f"camera '{camera}'", exc)

    def on_command(self, topic: str, msg) -> None:
        output = self.command_topics[topic]
        try:
            trajectory = trajectory_from_msg(msg)
            names = [output.prefix + name for name in trajectory.joint_names]
            # A streamed command's first point is where the arm is sent next: the action of this instant.
            self.recorder.add_action(names, trajectory.points[0].positions, source=output.name)
        except (ObservationError, TrajectoryError) as exc:
            self._drop(output.name, exc)

    def on_leader(self, topic: str, msg) -> None:
        try:
            _, names, positions = joint_state_from_msg(msg)
            self.recorder.add_action(list(names), positions, source=topic)
        except ObservationError as exc:
            self._drop(topic, exc)


class RecorderCore:
    def __init__(self, node: Any, backend: Backend, embodiment: EmbodimentConfig, recorder: EpisodeRecorder, *,
                 leader_topic: str = ""):
        self.node, self.msg, self.recorder = node, backend.msg, recorder
        self.inputs = inputs = RecorderInputs(embodiment, recorder, node.get_logger(), leader_topic=leader_topic)
        self.action_source = inputs.action_source
        msg, qos = self.msg, backend.qos
        for topic in inputs.joint_state_topics:
            node.create_subscription(msg.JointState, topic, lambda m, t=topic: inputs.on_joint_state(t, m),
                                     qos.sensor_data)
        for topic, (_, compressed) in inputs.camera_topics.items():
            node.create_subscription(msg.CompressedImage if compressed else msg.Image, topic,
                                     lambda m, t=topic: inputs.on_image(t, m), qos.sensor_data)
        if leader_topic:
            node.create_subscription(msg.JointState, leader_topic, lambda m: inputs.on_leader(leader_topic, m),
                                     qos.sensor_data)
        for topic in inputs.command_topics:
            node.create_subscription(msg.JointTrajectory, topic, lambda m, t=topic: inputs.on_command(t, m),
                                     qos.command)
        self._status_pub = node.create_publisher(msg.String, "~/status", qos.default)
        node.create_timer(embodiment.control_period_s, self._on_tick)
        node.create_timer(1.0, self.publish_status)

    def _on_tick(self) -> None:
        now = self.node.get_clock().now().nanoseconds * 1e-9
        if now > 0.0:  # use_sim_time before the first /clock message
            self.recorder.tick(now)

    def publish_status(self) -> None:
        status = self.recorder.status()
        self._status_pub.publish(self.msg.String(data=json.dumps({
            "recording": status.recording, "task": status.task, "frames": status.frames,
            "episodes_saved": status.episodes_saved, "skipped_ticks": status.skipped,
            "dropped": self.inputs.dropped})))
