"""The policy node's topic logic, on any rclpy-shaped node: rclpy's (`policy_node`) or the pip-only DDS one.

Thin by design: subscriptions convert messages and hand them to `PolicyRunner`; the control timer publishes what
the runner returns to the robot's controllers; a status timer publishes ~/status and /diagnostics. Services, the
~/execute action and action-based outputs are rclpy's: the rclpy node adds them around this core.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from vla_ros.core.embodiment import CommandInterface, ImageTransport, OutputSpec, load_embodiment
from vla_ros.core.errors import ConfigError, ObservationError
from vla_ros.core.features import IMAGES_PREFIX
from vla_ros.core.pipeline import Command, PipelineConfig
from vla_ros.core.runner import PolicyRunner
from vla_ros.core.scheduler import MergeStrategy
from vla_ros.policies.base import Policy
from vla_ros.policies.factory import DEFAULT_POLICY, PolicyOptions, make_policy
from vla_ros.ros.backend import Backend
from vla_ros.ros.convert import (
    image_from_compressed_msg,
    image_from_msg,
    image_to_msg,
    joint_state_from_msg,
    joint_state_to_msg,
    seconds_to_stamp,
    stamp_to_seconds,
    trajectory_to_msg,
)

NODE_NAME = "vla_policy"

# name: (default, description). Declared once (rclpy parameters, or the pip-only node's YAML and flags).
PARAMETERS = {
    "robot": ("so101", "robot config name (config/robots/<name>.yaml) or path to a robot YAML"),
    "policy": (DEFAULT_POLICY, "policy spec: a checkpoint directory, builtin, expert (sim only), or a policy server: "
                               "ws://host:port (openpi), gr00t://host:port, openvla+http://host:port"),
    "instruction": ("", "language instruction to follow from activation on"),
    "dry_run": (False, "compute commands but publish them only to ~/preview"),
    "merge": (MergeStrategy.BLEND.value, "how a new chunk joins the queued one: replace, blend, ensemble or rtc"),
    "device": ("auto", "where a learned policy runs: auto, cpu, cuda, cuda:N or mps"),
    "dtype": ("auto", "model precision: auto (bfloat16 on capable GPUs, float32 on CPU), float32, bfloat16, float16"),
    "inference_threads": (-1, "CPU threads of the model's operations; -1: chosen from the model's size and the "
                              "cores (the log says what and why)"),
    "patch_positions": ("auto", "SmolVLA: the vision patch positions its weights were trained with: auto (from the "
                                "checkpoint's files, logged), transformers4 (LeRobot <= 0.4) or transformers5"),
    "image_resize": ("exact", "SmolVLA: exact (frames resized as LeRobot's robot loop does) or fast (OpenCV in the "
                              "adapter; moves the actions, docs/policies.md)"),
    "refill_threshold_steps": (-1, "ask for a new chunk when this many steps remain; -1: half a chunk"),
    "lookahead_steps": (10, "queued steps sent ahead in each joint_trajectory message, stamped with absolute time "
                            "and ending at rest (docs/ros2-control.md); -1: one point per tick, stamped 0"),
    "status_rate_hz": (2.0, "rate of ~/status and /diagnostics"),
    "success_topic": ("", "std_msgs/Bool topic saying the task succeeded (sim: /mujoco_robot/task_success); "
                          "ends ~/execute goals with success. Empty: goals end on timeout or cancel only"),
    "joint_command_topic": ("", "if set, publish every joint as sensor_msgs/JointState on this topic instead of "
                                "the robot config's outputs (Isaac Sim: /joint_command)"),
}

TOPIC_INTERFACES = (CommandInterface.JOINT_TRAJECTORY, CommandInterface.FORWARD_POSITION,
                    CommandInterface.JOINT_COMMAND)

# Sends one command to one controller: (command, the joint indices of this output, stamp message) -> None.
OutputSender = Callable[[Command, list, Any], None]


class PolicyNodeCore:
    """One robot, one policy, on `node`. `make_action_output` builds senders for action interfaces (rclpy only)."""

    def __init__(self, node: Any, backend: Backend, *, world: Any = None,
                 make_action_output: Callable[[OutputSpec], OutputSender] | None = None,
                 control_callback_group: Any = None):
        self.node = node
        self.backend = backend
        self.msg = backend.msg
        self._world = world  # only for the simulator's scripted expert, in the demo container
        self._make_action_output = make_action_output
        self._control_group = control_callback_group  # rclpy: the control tick never waits for sensors
        self.runner: PolicyRunner | None = None
        self.parameters: dict[str, Any] = {}
        self.successes = 0  # task-success messages seen (the ~/execute action ends on one)
        self.ticks = 0  # control ticks since start
        self._active_entities: list[tuple[str, Any]] = []
        self._logged_once: set[tuple[str, str]] = set()

    @property
    def logger(self):
        return self.node.get_logger()

    @property
    def active(self) -> bool:
        """Commanding: subscribed, with the control timer running."""
        return bool(self._active_entities)

    def now(self) -> float:
        return self.node.get_clock().now().nanoseconds * 1e-9

    # -- lifecycle -------------------------------------------------------------------------------------------------

    def configure(self, parameters: dict[str, Any], *, policy: Policy | None = None) -> None:
        """Load the robot and the policy and create the publishers; a VlaRosError says what is wrong.

        `policy`: an already built policy (a Python program embedding the node) instead of the `policy` spec.
        """
        unknown = sorted(set(parameters) - set(PARAMETERS))
        if unknown:
            raise ConfigError(f"unknown policy node parameters {unknown}; known: {sorted(PARAMETERS)}")
        self.parameters = {name: parameters.get(name, default) for name, (default, _) in PARAMETERS.items()}
        p = self.parameters
        self.embodiment = load_embodiment(p["robot"])
        outputs = self._outputs_spec()  # before loading a model: a config error fails fast
        if policy is None:
            threads = None if p["inference_threads"] == -1 else p["inference_threads"]
            options = PolicyOptions(device=p["device"], dtype=p["dtype"], threads=threads,
                                    patch_positions=p["patch_positions"], image_resize=p["image_resize"])
            policy = make_policy(p["policy"], embodiment=self.embodiment, world=self._world, options=options)
            if policy.metadata.threads is not None:
                self.logger.info(f"inference threads: {policy.metadata.threads} ({policy.metadata.threads_reason})")
        threshold = p["refill_threshold_steps"]
        lookahead = p["lookahead_steps"]
        config = PipelineConfig(merge=MergeStrategy(p["merge"]), dry_run=p["dry_run"],
                                refill_threshold_steps=None if threshold < 0 else threshold,
                                lookahead_steps=None if lookahead == -1 else lookahead)
        self.runner = PolicyRunner(self.embodiment, policy, pipeline_config=config, instruction=p["instruction"])
        node, msg = self.node, self.msg
        self._outputs = [(self._sender(output), [self.embodiment.joint_names.index(n) for n in output.joints])
                         for output in outputs]
        self._status_pub = node.create_publisher(msg.PolicyStatus, "~/status", self.backend.qos.default)
        self._diagnostics_pub = node.create_publisher(msg.DiagnosticArray, "/diagnostics", self.backend.qos.default)
        self._preview_pub = node.create_publisher(msg.JointState, "~/preview", self.backend.qos.default)
        self._chunk_pub = node.create_publisher(msg.ActionChunk, "~/chunk", self.backend.qos.default)
        self._debug_image_pub = node.create_publisher(msg.Image, "~/debug_image", self.backend.qos.sensor_data)
        if p["success_topic"]:
            # Volatile on purpose: a latched success from an earlier episode must not end a new goal.
            node.create_subscription(msg.Bool, p["success_topic"], self._on_success, self.backend.qos.default)
        self.logger.info(f"configured: robot '{self.embodiment.robot}', policy '{policy.metadata.name}' "
                         f"({policy.metadata.description})")

    def activate(self) -> None:
        node, msg, qos = self.node, self.msg, self.backend.qos
        self.runner.restart()  # from the measured position: the arm may have moved while the node was inactive
        entities = self._active_entities
        for source in self.embodiment.ros.joint_state_topics:
            entities.append(("subscription", node.create_subscription(
                msg.JointState, source.topic, lambda m, t=source.topic: self._on_joint_state(t, m), qos.sensor_data)))
        for camera in self.embodiment.cameras:
            compressed = camera.transport is ImageTransport.COMPRESSED
            entities.append(("subscription", node.create_subscription(
                msg.CompressedImage if compressed else msg.Image, self.embodiment.camera_topic(camera),
                lambda m, c=camera.name, z=compressed: self._on_image(c, m, compressed=z), qos.sensor_data)))
        entities.append(("subscription", node.create_subscription(
            msg.String, "~/instruction", self._on_instruction, qos.default)))
        control = {"callback_group": self._control_group} if self._control_group is not None else {}
        entities.append(("timer", node.create_timer(self.embodiment.control_period_s, self._on_control_tick,
                                                    **control)))
        entities.append(("timer", node.create_timer(1.0 / self.parameters["status_rate_hz"], self.publish_status)))
        self.logger.info(f"active: following '{self.runner.instruction}'"
                         + (" (dry run: commands go to ~/preview only)" if self.parameters["dry_run"] else ""))

    def deactivate(self) -> None:
        self.send_hold()
        self._stop_commanding()
        self.runner.pause()  # clears the queue; the controllers hold the last command they received
        self.logger.info("inactive: the arm holds its last command")

    def cleanup(self, *, inference_timeout_s: float = 5.0) -> None:
        """Stop commanding (with an explicit hold) and unload the policy, waiting at most `inference_timeout_s` for
        a chunk being computed."""
        if self.active:
            self.send_hold()
            self.logger.info("stopped commanding: the arm brakes to a hold")
        self._stop_commanding()
        if self.runner is not None:
            self.runner.close(timeout_s=inference_timeout_s)
            self.runner = None

    def send_hold(self) -> None:
        """Bring the arm to rest within the limits now, rather than let the controller finish the last lookahead:
        commanding stops (deactivate, cleanup, shutdown). Nothing is sent in a dry run or before the first command."""
        if self.runner is None or self.parameters.get("dry_run"):
            return
        clock_now = self.node.get_clock().now()
        command = self.runner.hold_command(clock_now.nanoseconds * 1e-9)
        if command is not None:
            stamp = clock_now.to_msg()
            for send, index in self._outputs:
                send(command, index, stamp)

    def _stop_commanding(self) -> None:
        for kind, entity in self._active_entities:
            if kind == "timer":
                entity.cancel()
                self.node.destroy_timer(entity)
            else:
                self.node.destroy_subscription(entity)
        self._active_entities.clear()

    # -- inputs ------------------------------------------------------------------------------------------------------

    def _on_joint_state(self, topic: str, msg) -> None:
        try:
            stamp, names, positions = joint_state_from_msg(msg)
        except ObservationError as exc:
            self.runner.count_undecodable(topic)
            self._warn_once(topic, "undecodable", str(exc))
            return
        drop = self.runner.add_joint_state(topic, stamp, names, positions)
        if drop is not None:
            self._warn_once(drop.source, drop.reason, drop.message)

    def _on_image(self, camera: str, msg, *, compressed: bool) -> None:
        try:
            decode = image_from_compressed_msg if compressed else image_from_msg
            image = decode(msg, source=f"camera '{camera}'")
        except ObservationError as exc:
            self.runner.count_undecodable(f"camera '{camera}'")
            self._warn_once(f"camera '{camera}'", "undecodable", str(exc))
            return
        drop = self.runner.add_image(camera, stamp_to_seconds(msg.header.stamp), image)
        if drop is not None:
            self._warn_once(drop.source, drop.reason, drop.message)

    def _on_instruction(self, msg) -> None:
        self.runner.set_instruction(msg.data)
        self.logger.info(f"new instruction: '{msg.data}'")

    def _on_success(self, msg) -> None:
        if msg.data:
            self.successes += 1

    def _warn_once(self, source: str, reason: str, message: str) -> None:
        # A faulty topic repeats its fault at sensor rate: say it once, count the rest (in /diagnostics).
        if (source, reason) not in self._logged_once:
            self._logged_once.add((source, reason))
            self.logger.warning(f"dropped a message from {source}: {message} "
                                "(further drops of this kind are only counted, see /diagnostics)")

    # -- control tick ------------------------------------------------------------------------------------------------

    def _on_control_tick(self) -> None:
        clock_now = self.node.get_clock().now()  # read once: every message of this tick carries the tick's time
        now = clock_now.nanoseconds * 1e-9
        if now <= 0.0:
            return  # use_sim_time before the first /clock message
        stamp = clock_now.to_msg()
        self.ticks += 1
        result = self.runner.tick(now)
        self._publish_previews(stamp)
        if result.command is None:
            return
        self._preview_pub.publish(joint_state_to_msg(
            self.msg.JointState, stamp=stamp, names=self.embodiment.joint_names,
            positions=result.command.positions))  # the ghost robot in rviz, and the dry-run output
        if result.command.send:
            for send, index in self._outputs:
                send(result.command, index, stamp)

    def _publish_previews(self, stamp) -> None:
        policy_input, chunk = self.runner.previews.take()
        msg = self.msg
        if policy_input is not None:
            for key, value in policy_input.items():
                if key.startswith(IMAGES_PREFIX) and not key.endswith(".mask"):  # the first camera the model sees
                    self._debug_image_pub.publish(image_to_msg(value, msg.Image, stamp=stamp, frame_id=key))
                    break
        if chunk is not None:
            observation_stamp, targets, latency = chunk
            self._chunk_pub.publish(msg.ActionChunk(
                header=msg.Header(stamp=seconds_to_stamp(observation_stamp, msg.Time)),
                joint_names=list(self.embodiment.joint_names), dt=self.runner.policy.metadata.features.action_dt_s,
                horizon=len(targets), positions=targets.ravel().tolist(), policy=self.parameters["policy"],
                inference_latency=latency))

    # -- outputs -----------------------------------------------------------------------------------------------------

    def _outputs_spec(self) -> tuple[OutputSpec, ...]:
        if self.parameters["joint_command_topic"]:
            return (OutputSpec(CommandInterface.JOINT_COMMAND, self.parameters["joint_command_topic"],
                               self.embodiment.joint_names),)
        for output in self.embodiment.outputs:
            if output.interface not in TOPIC_INTERFACES and self._make_action_output is None:
                raise ConfigError(
                    f"output {output.name} is a {output.interface.value} action, and actions need rclpy: run "
                    "with ROS 2 sourced, or command a joint_trajectory topic "
                    f"({', '.join(i.value for i in TOPIC_INTERFACES)} work without ROS)",
                    source=self.embodiment.source, key="ros.outputs")
        return self.embodiment.outputs

    def _sender(self, output: OutputSpec) -> OutputSender:
        node, msg, qos = self.node, self.msg, self.backend.qos.command
        interface = output.interface
        if interface is CommandInterface.JOINT_TRAJECTORY:
            publisher = node.create_publisher(msg.JointTrajectory, output.name, qos)

            def send(command: Command, index: list, stamp) -> None:
                publisher.publish(trajectory_to_msg(command.stream_trajectory, msg.JointTrajectory,
                                                    msg.JointTrajectoryPoint, joint_names=output.wire_joint_names,
                                                    joint_indices=index))
        elif interface is CommandInterface.FORWARD_POSITION:
            publisher = node.create_publisher(msg.Float64MultiArray, output.name, qos)

            def send(command: Command, index: list, stamp) -> None:
                publisher.publish(msg.Float64MultiArray(data=command.positions[index].tolist()))
        elif interface is CommandInterface.JOINT_COMMAND:
            publisher = node.create_publisher(msg.JointState, output.name, qos)

            def send(command: Command, index: list, stamp) -> None:
                publisher.publish(joint_state_to_msg(msg.JointState, stamp=stamp, names=output.wire_joint_names,
                                                     positions=command.positions[index]))
        else:
            send = self._make_action_output(output)
        return send

    # -- status ------------------------------------------------------------------------------------------------------

    def publish_status(self) -> None:
        runner, msg = self.runner, self.msg
        if runner is None:
            return
        clock_now = self.node.get_clock().now()
        now, stamp = clock_now.nanoseconds * 1e-9, clock_now.to_msg()
        stats = runner.stats
        state = msg.PolicyStatus.STATE_PAUSED if runner.paused else (
            msg.PolicyStatus.STATE_HOLDING if runner.last_hold_reason else msg.PolicyStatus.STATE_ACTIVE)
        measured, age = runner.assembler.measured_positions(now)
        self._status_pub.publish(msg.PolicyStatus(
            header=msg.Header(stamp=stamp), state=state, instruction=runner.instruction,
            policy=runner.policy.metadata.name, dry_run=self.parameters["dry_run"],
            control_rate=1.0 / self.embodiment.control_period_s,
            inference_latency=stats.inference_latency_s, inference_latency_mean=stats.inference_latency_mean_s,
            observation_age=age if measured is not None and math.isfinite(age) else -1.0,
            queue_depth=runner.pipeline.scheduler.remaining_steps(now),
            chunks_received=stats.chunks_received,
            safety_interventions=sum(runner.pipeline.safety.counters.values()),
            dropped_messages=runner.dropped_messages, hold_reason=runner.last_hold_reason))
        self._diagnostics_pub.publish(msg.DiagnosticArray(header=msg.Header(stamp=stamp),
                                                          status=[self._diagnose(now)]))

    def _diagnose(self, now: float):
        """One DiagnosticStatus named as diagnostic_updater names it ("<node>: policy"), for rqt_robot_monitor."""
        runner, msg = self.runner, self.msg
        Status = msg.DiagnosticStatus  # noqa: N806 - a message class
        if runner.last_error:
            level, message = Status.WARN, f"policy error: {runner.last_error}"
        elif runner.last_hold_reason:
            level, message = Status.WARN, f"holding: {runner.last_hold_reason}"
        else:
            level, message = Status.OK, "commanding"
        values = {
            "inference latency [s]": f"{runner.stats.inference_latency_s:.4f}",
            "inference latency mean [s]": f"{runner.stats.inference_latency_mean_s:.4f}",
            "queue depth [steps]": str(runner.pipeline.scheduler.remaining_steps(now)),
        }
        for topic, age in runner.assembler.ages(now).items():
            values[f"observation age {topic} [s]"] = f"{age:.3f}"
        for name, count in runner.pipeline.safety.counters.items():
            values[f"safety {name}"] = str(count)
        for source, reasons in runner.assembler.drops.items():
            for reason, count in reasons.items():
                values[f"dropped {source}: {reason}"] = str(count)
        for source, count in runner.undecodable.items():
            values[f"dropped {source}: undecodable"] = str(count)
        values["policy errors"] = str(runner.stats.policy_errors)
        return Status(level=level, name=f"{self.node.get_name()}: policy", message=message,
                      hardware_id=self.embodiment.robot,
                      values=[msg.KeyValue(key=key, value=value) for key, value in values.items()])
