"""The policy node: a lifecycle node that runs a VLA policy on a ROS 2 robot.

Thin by design: subscriptions convert messages and hand them to `PolicyRunner`; the control timer
publishes what the runner returns to the robot's controllers. Lifecycle:

    configure   load the robot config and the policy (other callbacks keep running meanwhile)
    activate    subscribe and start commanding
    deactivate  stop commanding: the arm holds its last command; the queue is cleared
    cleanup     unload the policy
"""

from __future__ import annotations

import math
import time

import rclpy
from control_msgs.action import FollowJointTrajectory, GripperCommand
from diagnostic_msgs.msg import DiagnosticStatus
from diagnostic_updater import Updater
from rclpy.action import ActionClient, ActionServer
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import CompressedImage, Image, JointState
from std_msgs.msg import Bool, Float64MultiArray, String
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from vla_ros.action import ExecuteInstruction
from vla_ros.core.embodiment import CommandInterface, ImageTransport, OutputSpec, load_embodiment
from vla_ros.core.errors import ObservationError, VlaRosError
from vla_ros.core.features import IMAGES_PREFIX
from vla_ros.core.pipeline import Command, PipelineConfig
from vla_ros.core.runner import PolicyRunner
from vla_ros.core.scheduler import MergeStrategy
from vla_ros.msg import ActionChunk, PolicyStatus
from vla_ros.policies.factory import DEFAULT_POLICY, PolicyOptions, make_policy
from vla_ros.ros.control_actions import parallel_gripper_command
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
from vla_ros.srv import SetInstruction

# name: (default, description). Declared once; everything else reads them through `_param`.
PARAMETERS = {
    "robot": ("so101", "robot config name (config/robots/<name>.yaml) or path to a robot YAML"),
    "policy": (DEFAULT_POLICY, "policy spec: a checkpoint directory, ws://host:port, builtin, or expert (sim only)"),
    "instruction": ("", "language instruction to follow from activation on"),
    "dry_run": (False, "compute commands but publish them only to ~/preview"),
    "merge": (MergeStrategy.BLEND.value, "how a new chunk joins the queued one: replace, blend, ensemble or rtc"),
    "device": ("auto", "where a learned policy runs: auto, cpu, cuda, cuda:N or mps"),
    "dtype": ("auto", "model precision: auto (bfloat16 on capable GPUs, float32 on CPU), float32, bfloat16, float16"),
    "refill_threshold_steps": (-1, "ask for a new chunk when this many steps remain; -1: half a chunk"),
    "status_rate_hz": (2.0, "rate of ~/status and /diagnostics"),
    "success_topic": ("", "std_msgs/Bool topic saying the task succeeded (sim: /mujoco_robot/task_success); "
                          "ends ~/execute goals with success. Empty: goals end on timeout or cancel only"),
    "joint_command_topic": ("", "if set, publish every joint as sensor_msgs/JointState on this topic instead of "
                                "the robot config's outputs (Isaac Sim: /joint_command)"),
}

COMMAND_QOS = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)  # controllers ignore best-effort


class PolicyNode(LifecycleNode):
    def __init__(self, *, world=None, **kwargs):
        super().__init__("vla_policy", **kwargs)
        for name, (default, description) in PARAMETERS.items():
            self.declare_parameter(name, default, _descriptor(description))
        self._world = world  # only for the simulator's scripted expert, in the demo container
        self.runner: PolicyRunner | None = None
        self._control_group = MutuallyExclusiveCallbackGroup()  # the control tick never waits for sensors
        self._active_entities = []
        self._logged_once: set[tuple[str, str]] = set()
        self._last_gripper_goal: dict[str, float] = {}
        self._ticks = 0  # control ticks since start

    def _param(self, name: str):
        return self.get_parameter(name).value

    # -- lifecycle -------------------------------------------------------------------------------------------------

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            self.embodiment = load_embodiment(self._param("robot"))
            options = PolicyOptions(device=self._param("device"), dtype=self._param("dtype"))
            policy = make_policy(self._param("policy"), embodiment=self.embodiment, world=self._world, options=options)
            threshold = self._param("refill_threshold_steps")
            config = PipelineConfig(merge=MergeStrategy(self._param("merge")), dry_run=self._param("dry_run"),
                                    refill_threshold_steps=None if threshold < 0 else threshold)
            self.runner = PolicyRunner(self.embodiment, policy, pipeline_config=config,
                                       instruction=self._param("instruction"))
        except (VlaRosError, ValueError) as exc:
            self.get_logger().error(f"configuration failed: {exc}")
            return TransitionCallbackReturn.FAILURE
        self._make_outputs()
        self._status_pub = self.create_publisher(PolicyStatus, "~/status", 10)
        self._preview_pub = self.create_publisher(JointState, "~/preview", 10)
        self._chunk_pub = self.create_publisher(ActionChunk, "~/chunk", 10)
        self._debug_image_pub = self.create_publisher(Image, "~/debug_image", qos_profile_sensor_data)
        self._diagnostics = Updater(self, period=1.0 / self._param("status_rate_hz"))
        self._diagnostics.setHardwareID(self.embodiment.robot)
        self._diagnostics.add("policy", self._diagnose)
        self.create_service(Trigger, "~/pause", self._on_pause)
        self.create_service(Trigger, "~/resume", self._on_resume)
        self.create_service(Trigger, "~/reset", self._on_reset)
        self.create_service(SetInstruction, "~/set_instruction", self._on_set_instruction)
        self._successes = 0  # task-success messages seen; a goal succeeds on one that arrives after it started
        if self._param("success_topic"):
            # Volatile on purpose: a latched success from an earlier episode must not end a new goal.
            self.create_subscription(Bool, self._param("success_topic"), self._on_success, 10)
        self._execute_server = ActionServer(self, ExecuteInstruction, "~/execute", self._execute,
                                            callback_group=ReentrantCallbackGroup())
        self.get_logger().info(f"configured: robot '{self.embodiment.robot}', policy '{policy.metadata.name}' "
                               f"({policy.metadata.description})")
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        runner = self.runner
        runner.resume()
        entities = self._active_entities
        for source in self.embodiment.ros.joint_state_topics:
            entities.append(self.create_subscription(
                JointState, source.topic, lambda msg, t=source.topic: self._on_joint_state(t, msg),
                qos_profile_sensor_data))
        for camera in self.embodiment.cameras:
            compressed = camera.transport is ImageTransport.COMPRESSED
            entities.append(self.create_subscription(
                CompressedImage if compressed else Image, self.embodiment.camera_topic(camera),
                lambda msg, c=camera.name, z=compressed: self._on_image(c, msg, compressed=z), qos_profile_sensor_data))
        entities.append(self.create_subscription(String, "~/instruction", self._on_instruction, 10))
        entities.append(self.create_timer(self.embodiment.control_period_s, self._on_control_tick,
                                          callback_group=self._control_group))
        entities.append(self.create_timer(1.0 / self._param("status_rate_hz"), self._publish_status))
        self.get_logger().info(f"active: following '{runner.instruction}'"
                               + (" (dry run: commands go to ~/preview only)" if self._param("dry_run") else ""))
        return super().on_activate(state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_commanding()
        self.runner.pause()  # clears the queue; the controllers hold the last command they received
        self.get_logger().info("inactive: the arm holds its last command")
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_commanding()
        if self.runner is not None:
            self.runner.close()
            self.runner = None
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        return self.on_cleanup(state)

    def _stop_commanding(self) -> None:
        for entity in self._active_entities:
            if hasattr(entity, "cancel"):
                entity.cancel()
                self.destroy_timer(entity)
            else:
                self.destroy_subscription(entity)
        self._active_entities.clear()

    # -- inputs ------------------------------------------------------------------------------------------------------

    def _on_joint_state(self, topic: str, msg: JointState) -> None:
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

    def _on_instruction(self, msg: String) -> None:
        self.runner.set_instruction(msg.data)
        self.get_logger().info(f"new instruction: '{msg.data}'")

    def _warn_once(self, source: str, reason: str, message: str) -> None:
        # A faulty topic repeats its fault at sensor rate: say it once, count the rest (in /diagnostics).
        if (source, reason) not in self._logged_once:
            self._logged_once.add((source, reason))
            self.get_logger().warning(f"dropped a message from {source}: {message} "
                                      "(further drops of this kind are only counted, see /diagnostics)")

    # -- control tick ------------------------------------------------------------------------------------------------

    def _now(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def _on_control_tick(self) -> None:
        now = self._now()
        if now <= 0.0:
            return  # use_sim_time before the first /clock message
        self._ticks += 1
        result = self.runner.tick(now)
        self._publish_previews()
        if result.command is None:
            return
        self._publish_preview(result.command)
        if result.command.send:
            self._publish_command(result.command)

    def _publish_previews(self) -> None:
        policy_input, chunk = self.runner.previews.take()
        stamp = self.get_clock().now().to_msg()
        if policy_input is not None:
            for key, value in policy_input.items():
                if key.startswith(IMAGES_PREFIX) and not key.endswith(".mask"):  # the first camera the model sees
                    self._debug_image_pub.publish(image_to_msg(value, Image, stamp=stamp, frame_id=key))
                    break
        if chunk is not None:
            observation_stamp, targets, latency = chunk
            self._chunk_pub.publish(ActionChunk(
                header=_header(seconds_to_stamp(observation_stamp, type(stamp))),
                joint_names=list(self.embodiment.joint_names), dt=self.runner.policy.metadata.features.action_dt_s,
                horizon=len(targets), positions=targets.ravel().tolist(), policy=self._param("policy"),
                inference_latency=latency))

    def _make_outputs(self) -> None:
        self._outputs = []
        outputs = self.embodiment.outputs
        if self._param("joint_command_topic"):
            outputs = (OutputSpec(CommandInterface.JOINT_COMMAND, self._param("joint_command_topic"),
                                  self.embodiment.joint_names),)
        for output in outputs:
            interface = output.interface
            if interface is CommandInterface.JOINT_TRAJECTORY:
                handle = self.create_publisher(JointTrajectory, output.name, COMMAND_QOS)
            elif interface is CommandInterface.FORWARD_POSITION:
                handle = self.create_publisher(Float64MultiArray, output.name, COMMAND_QOS)
            elif interface is CommandInterface.JOINT_COMMAND:
                handle = self.create_publisher(JointState, output.name, COMMAND_QOS)
            elif interface is CommandInterface.FOLLOW_JOINT_TRAJECTORY:
                handle = ActionClient(self, FollowJointTrajectory, output.name)
            elif interface is CommandInterface.GRIPPER_COMMAND:
                handle = ActionClient(self, GripperCommand, output.name)
            elif interface is CommandInterface.PARALLEL_GRIPPER_COMMAND:
                handle = ActionClient(self, parallel_gripper_command(), output.name)
            else:
                raise VlaRosError(f"output interface '{interface.value}' is not supported by the rclpy node yet")
            index = [self.embodiment.joint_names.index(name) for name in output.joints]
            self._outputs.append((output, handle, index))

    def _publish_command(self, command: Command) -> None:
        stamp = self.get_clock().now().to_msg()
        for output, handle, index in self._outputs:
            positions = command.positions[index]
            interface = output.interface
            if interface in (CommandInterface.JOINT_TRAJECTORY, CommandInterface.FOLLOW_JOINT_TRAJECTORY):
                # header.stamp 0: start at the controller's next update (a streaming command is never in the past).
                msg = trajectory_to_msg(command.trajectory, JointTrajectory, JointTrajectoryPoint,
                                        joint_names=output.wire_joint_names, joint_indices=index)
                if interface is CommandInterface.JOINT_TRAJECTORY:
                    handle.publish(msg)
                elif handle.server_is_ready():
                    handle.send_goal_async(FollowJointTrajectory.Goal(trajectory=msg))  # a new goal preempts
            elif interface is CommandInterface.FORWARD_POSITION:
                handle.publish(Float64MultiArray(data=positions.tolist()))
            elif interface is CommandInterface.JOINT_COMMAND:
                handle.publish(joint_state_to_msg(JointState, stamp=stamp, names=output.wire_joint_names,
                                                  positions=positions))
            elif interface in (CommandInterface.GRIPPER_COMMAND, CommandInterface.PARALLEL_GRIPPER_COMMAND):
                self._send_gripper(output, handle, float(positions[0]))

    def _send_gripper(self, output, client: ActionClient, position: float) -> None:
        # A gripper action is a goal, not a stream: send only when the target really changes.
        last = self._last_gripper_goal.get(output.name)
        if last is not None and abs(position - last) < 1e-3 or not client.server_is_ready():
            return
        max_effort = output.max_effort if output.max_effort is not None else 0.0
        if output.interface is CommandInterface.GRIPPER_COMMAND:
            goal = GripperCommand.Goal()
            goal.command.position, goal.command.max_effort = position, max_effort
        else:  # ParallelGripperCommand: a JointState command; an empty effort means the controller's own limit
            goal = parallel_gripper_command().Goal()
            goal.command.name, goal.command.position = list(output.wire_joint_names), [position]
            goal.command.effort = [max_effort] if output.max_effort is not None else []
        client.send_goal_async(goal)
        self._last_gripper_goal[output.name] = position

    def _publish_preview(self, command: Command) -> None:
        # The ghost robot in rviz (robot_state_publisher on ~/preview) and the dry-run output.
        self._preview_pub.publish(joint_state_to_msg(JointState, stamp=self.get_clock().now().to_msg(),
                                                     names=self.embodiment.joint_names, positions=command.positions))

    # -- services, status, diagnostics -------------------------------------------------------------------------------

    def _on_success(self, msg: Bool) -> None:
        if msg.data:
            self._successes += 1

    def _execute(self, goal_handle):
        """Follow the goal's instruction until the success topic says so, the timeout passes, or a cancel."""
        request = goal_handle.request
        result = ExecuteInstruction.Result()
        if self.runner is None or not self._active_entities:
            goal_handle.abort()
            result.message = "the policy node is not active: configure and activate it first"
            return result
        self.runner.set_instruction(request.instruction)
        self.runner.resume()
        successes, ticks, start = self._successes, self._ticks, time.monotonic()
        feedback = ExecuteInstruction.Feedback()
        while True:
            elapsed = time.monotonic() - start
            result.steps, result.elapsed = self._ticks - ticks, elapsed
            if self._successes > successes:
                goal_handle.succeed()
                result.success, result.message = True, "succeeded"
                return result
            if goal_handle.is_cancel_requested:
                self.runner.pause()
                goal_handle.canceled()
                result.message = "cancelled: the arm holds"
                return result
            if request.timeout > 0 and elapsed >= request.timeout:
                self.runner.pause()
                goal_handle.abort()
                result.message = f"timeout after {request.timeout:.1f} s: the arm holds"
                return result
            feedback.steps, feedback.elapsed = result.steps, elapsed
            feedback.queue_depth = self.runner.pipeline.scheduler.remaining_steps(self._now())
            goal_handle.publish_feedback(feedback)
            time.sleep(0.1)

    def _on_pause(self, request, response):
        self.runner.pause()
        response.success, response.message = True, "paused: the arm holds"
        return response

    def _on_resume(self, request, response):
        self.runner.resume()
        response.success, response.message = True, "resumed"
        return response

    def _on_reset(self, request, response):
        self.runner.reset()
        response.success, response.message = True, "chunk queue cleared"
        return response

    def _on_set_instruction(self, request, response):
        self.runner.set_instruction(request.instruction)
        response.success, response.message = True, f"following '{request.instruction}'"
        return response

    def _publish_status(self) -> None:
        runner = self.runner
        if runner is None:
            return
        now = self.get_clock().now()
        stats = runner.stats
        state = PolicyStatus.STATE_PAUSED if runner.paused else (
            PolicyStatus.STATE_HOLDING if runner.last_hold_reason else PolicyStatus.STATE_ACTIVE)
        measured, age = runner.assembler.measured_positions(now.nanoseconds * 1e-9)
        self._status_pub.publish(PolicyStatus(
            header=_header(now.to_msg()), state=state, instruction=runner.instruction,
            policy=runner.policy.metadata.name, dry_run=self._param("dry_run"),
            control_rate=1.0 / self.embodiment.control_period_s,
            inference_latency=stats.inference_latency_s, inference_latency_mean=stats.inference_latency_mean_s,
            observation_age=age if measured is not None and math.isfinite(age) else -1.0,
            queue_depth=runner.pipeline.scheduler.remaining_steps(now.nanoseconds * 1e-9),
            chunks_received=stats.chunks_received,
            safety_interventions=sum(runner.pipeline.safety.counters.values()),
            dropped_messages=runner.dropped_messages, hold_reason=runner.last_hold_reason))

    def _diagnose(self, status):
        runner = self.runner
        if runner is None:
            status.summary(DiagnosticStatus.STALE, "not configured")
            return status
        if runner.last_error:
            status.summary(DiagnosticStatus.WARN, f"policy error: {runner.last_error}")
        elif runner.last_hold_reason:
            status.summary(DiagnosticStatus.WARN, f"holding: {runner.last_hold_reason}")
        else:
            status.summary(DiagnosticStatus.OK, "commanding")
        now = self.get_clock().now().nanoseconds * 1e-9
        status.add("inference latency [s]", f"{runner.stats.inference_latency_s:.4f}")
        status.add("inference latency mean [s]", f"{runner.stats.inference_latency_mean_s:.4f}")
        status.add("queue depth [steps]", str(runner.pipeline.scheduler.remaining_steps(now)))
        for topic, age in runner.assembler.ages(now).items():
            status.add(f"observation age {topic} [s]", f"{age:.3f}")
        for name, count in runner.pipeline.safety.counters.items():
            status.add(f"safety {name}", str(count))
        for source, reasons in runner.assembler.drops.items():
            for reason, count in reasons.items():
                status.add(f"dropped {source}: {reason}", str(count))
        for source, count in runner.undecodable.items():
            status.add(f"dropped {source}: undecodable", str(count))
        status.add("policy errors", str(runner.stats.policy_errors))
        return status


def _descriptor(description: str):
    from rcl_interfaces.msg import ParameterDescriptor

    return ParameterDescriptor(description=description)


def _header(stamp):
    from std_msgs.msg import Header

    return Header(stamp=stamp)


def main(args=None) -> None:
    rclpy.init(args=args)
    node = PolicyNode()
    executor = MultiThreadedExecutor()
    executor.add_node(node)
    try:
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()


if __name__ == "__main__":
    main()
