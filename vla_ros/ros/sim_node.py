"""The MuJoCo simulator as a ROS 2 robot: /clock, joint states and camera images out; trajectories and gripper goals in.

It stands in for a robot with its ros2_control controllers. The command inputs are the robot's `embodiment.outputs`
(joint_trajectory topics, FollowJointTrajectory and GripperCommand actions), each with its controller's semantics
(shared/reference/ros2-control.md), so a policy node drives it exactly as it drives hardware.

Time: physics runs on a wall-clock timer at `realtime_factor`, and every stamp this node writes or reads is simulated
time, published on /clock: run the other nodes with use_sim_time:=true. Rates are in simulated time. /clock never
goes back: a reset starts the next episode where the last one stopped.
"""

from __future__ import annotations

import math
import re
import threading
import time
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import rclpy
from builtin_interfaces.msg import Time
from control_msgs.action import FollowJointTrajectory, GripperCommand
from rcl_interfaces.msg import ParameterDescriptor, SetParametersResult
from rclpy.action import ActionServer, CancelResponse
from rclpy.action.server import ServerGoalHandle
from rclpy.clock import Clock, ClockType
from rclpy.exceptions import ParameterException
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from rclpy.task import Future
from rosgraph_msgs.msg import Clock as ClockMsg
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, JointState
from std_msgs.msg import Bool
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory as JointTrajectoryMsg

from vla_ros.core.embodiment import (
    CameraSpec,
    CommandInterface,
    EmbodimentConfig,
    ImageTransport,
    OutputSpec,
    load_embodiment,
)
from vla_ros.core.errors import ConfigError, VlaRosError, did_you_mean
from vla_ros.core.trajectory import JointTrajectory, TrajectoryError, TrajectoryPoint
from vla_ros.ros.control_actions import parallel_gripper_command
from vla_ros.ros.convert import (
    camera_info_to_msg,
    compressed_image_to_msg,
    image_to_msg,
    joint_state_to_msg,
    seconds_to_stamp,
    trajectory_from_msg,
)
from vla_ros.sim.robots import ROBOTS
from vla_ros.sim.tasks import Task, parse_instruction
from vla_ros.sim.world import SimWorld

if TYPE_CHECKING:
    import mujoco

NODE_NAME = "mujoco_robot"
DEFAULT_COLORS = ("red", "green", "blue")

# Falling further behind real time than this (simulated seconds) restarts the pacing instead of catching up in one
# long step: the simulation then runs slower than asked, and says so.
MAX_CATCH_UP_S = 0.1
# A new goal does not have to reach a held pose in any time; this only keeps the hold trajectory's one point > 0 s.
HOLD_TIME_S = 0.01
FEEDBACK_PERIOD_S = 0.05  # JTC's action_monitor_rate default, 20 Hz
# gripper_action_controller's defaults (ros2_controllers): stall_velocity_threshold, stall_timeout, allow_stalling
# false (a stalled goal is aborted, with `stalled` set). Its goal_tolerance of 0.01 joint units suits a revolute jaw
# (about 1% of the SO-101's range) but is a quarter of a Panda finger's travel: here it is a fraction of the range.
GRIPPER_GOAL_TOLERANCE = 0.01  # of the distance between the gripper's open and closed positions
GRIPPER_STALL_VELOCITY = 0.001  # joint units / s
GRIPPER_STALL_TIMEOUT_S = 1.0
REJECTION_LOG_INTERVAL_S = 10.0
_PAST = {"abort": "aborted", "canceled": "canceled", "succeed": "succeeded"}

SUPPORTED_INTERFACES = (CommandInterface.JOINT_TRAJECTORY, CommandInterface.FOLLOW_JOINT_TRAJECTORY,
                        CommandInterface.GRIPPER_COMMAND, CommandInterface.PARALLEL_GRIPPER_COMMAND)

# Commands, as JTC subscribes: reliable (a best-effort publisher never connects), keep last 10.
COMMAND_QOS = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
# Sensors are published reliable: a reliable publisher matches both reliable subscribers (rviz, ros2 topic echo) and
# sensor-data (best-effort) ones, where a best-effort publisher would match only the latter. Keep-last keeps a slow
# subscriber from holding anything up for long.
SENSOR_QOS = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
IMAGE_QOS = QoSProfile(depth=2, reliability=ReliabilityPolicy.RELIABLE)
CLOCK_QOS = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE)
LATCHED_QOS = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)


@dataclass(frozen=True)
class SimNodeConfig:
    """The node's parameters (see `MujocoRobotNode`), checked once."""

    robot: str = "so101"
    instruction: str = "touch the red cube"
    seed: int = 0
    publish_rate_hz: float = 100.0
    camera_rate_hz: float = 10.0
    camera_width: int = 640
    camera_height: int = 480
    realtime_factor: float = 1.0
    render: bool = True

    def __post_init__(self) -> None:
        def fail(name: str, message: str) -> None:
            raise ConfigError(f"{message}, got {getattr(self, name)!r}", key=name)

        if not (math.isfinite(self.publish_rate_hz) and self.publish_rate_hz > 0):
            fail("publish_rate_hz", "must be > 0 Hz (simulated time)")
        if not (math.isfinite(self.camera_rate_hz) and self.camera_rate_hz > 0):
            fail("camera_rate_hz", "must be > 0 Hz (simulated time); to turn the cameras off set render:=false")
        for name in ("camera_width", "camera_height"):
            if getattr(self, name) <= 0:
                fail(name, "must be > 0 pixels")
        if not (math.isfinite(self.realtime_factor) and self.realtime_factor >= 0):
            fail("realtime_factor", "must be >= 0 (1: real time, 0: as fast as possible)")
        if self.seed < 0:
            fail("seed", "must be >= 0")


class MujocoRobotNode(Node):
    """The simulated arm of `robot` on its table, as a ROS 2 robot.

    Parameters: robot, instruction (settable at run time: starts a new episode), seed, publish_rate_hz,
    camera_rate_hz, camera_width, camera_height, realtime_factor, render.
    Publishes: /clock; the embodiment's joint state topics (JointState, position and velocity); per camera its image
    topic (Image rgb8; also CompressedImage JPEG on <topic>/compressed for cameras with compressed transport) and
    <topic base>/camera_info; ~/task_success (Bool, latched).
    Subscribes / serves, per embodiment output: JointTrajectory topics, FollowJointTrajectory, GripperCommand and
    ParallelGripperCommand actions. Services: ~/reset (Trigger): a new episode with the next seed.
    """

    def __init__(self, *, node_name: str = NODE_NAME, **kwargs: Any):
        super().__init__(node_name, **kwargs)
        robot = self._declare("robot", "so101", "robot config: a name under config/robots/ or a YAML path; its "
                              "`robot` must be a simulated arm (so101, panda)")
        self.embodiment: EmbodimentConfig = load_embodiment(robot)
        first_camera = self.embodiment.cameras[0] if self.embodiment.cameras else CameraSpec("", "", 640, 480)
        self.config = SimNodeConfig(
            robot=robot,
            instruction=self._declare("instruction", SimNodeConfig.instruction,
                                      "task to set up, '<touch|pick up> the <colour> cube'; setting it starts a new "
                                      "episode", read_only=False),
            seed=self._declare("seed", 0, "random seed of the first episode's cube layout; each reset takes the next"),
            publish_rate_hz=self._declare("publish_rate_hz", max(100.0, 2 * self.embodiment.control_rate_hz),
                                          "physics, /clock and joint state updates per simulated second"),
            camera_rate_hz=self._declare("camera_rate_hz", 10.0, "camera images per simulated second"),
            camera_width=self._declare("camera_width", first_camera.width, "rendered image width (px), all cameras"),
            camera_height=self._declare("camera_height", first_camera.height, "rendered image height (px)"),
            realtime_factor=self._declare("realtime_factor", 1.0, "simulated seconds per wall-clock second; 0: as "
                                          "fast as possible"),
            render=self._declare("render", True, "render and publish the cameras (software rendering costs "
                                 "15-35 ms per frame of two cameras)"),
        )
        outputs = _checked_outputs(self.embodiment)
        task = parse_instruction(self.config.instruction)
        self.world = SimWorld(
            self.embodiment.robot,
            camera_size=(self.config.camera_height, self.config.camera_width),
            render=False,  # the camera thread renders, with a GL context of its own
            colors=tuple(dict.fromkeys((*DEFAULT_COLORS, task.color))),
            joint_groups=tuple(output.joints for output in outputs),
        )
        _check_joints_and_cameras(self.embodiment, self.world)
        self.rejections = RejectionLog(self.get_logger())
        self._task: Task = task
        self._episode = 0
        self._time_offset = 0.0  # /clock time at the start of this episode: /clock = offset + world.time
        self._task_success: bool | None = None
        self._goals: dict[str, _Goal] = {}  # output name -> its active action goal
        self._goal_outcomes: dict[bytes, Future] = {}  # goal id -> result, completed when the goal ends
        self.world.reset(task, self.config.seed)

        self._clock_pub = self.create_publisher(ClockMsg, "/clock", CLOCK_QOS)
        # Each joint state topic reports the joints with its prefix, under their names without it.
        self._joint_state_pubs = []
        for source in self.embodiment.ros.joint_state_topics:
            indices = [i for i, name in enumerate(self.embodiment.joint_names) if name.startswith(source.prefix)]
            names = [self.embodiment.joint_names[i][len(source.prefix):] for i in indices]
            self._joint_state_pubs.append((self.create_publisher(JointState, source.topic, SENSOR_QOS), names, indices))
        self._success_pub = self.create_publisher(Bool, "~/task_success", LATCHED_QOS)
        for output in outputs:
            self._add_command_input(output)
        self.create_service(Trigger, "~/reset", self._on_reset)
        self.add_on_set_parameters_callback(self._on_set_parameters)

        self.cameras: CameraPublisher | None = None
        if self.config.render and self.embodiment.cameras:
            self.cameras = CameraPublisher(self, self.world.model, self.embodiment, self.config)
        self._next_frame_time = 0.0  # world time

        # Physics is paced by a steady wall clock, never by the node's ROS clock: with use_sim_time that would be the
        # /clock this node publishes itself, and nothing would ever start.
        sim_period_s = 1.0 / self.config.publish_rate_hz
        self._sim_period_s = sim_period_s
        wall_period_s = sim_period_s / self.config.realtime_factor if self.config.realtime_factor > 0 else 0.0
        self._anchor_wall, self._anchor_sim = time.monotonic(), self.world.time
        self.lagging_steps = 0
        self.create_timer(wall_period_s, self._step, clock=Clock(clock_type=ClockType.STEADY_TIME))
        self.get_logger().info(
            f"simulating {self.embodiment.robot} ({self.embodiment.source}) for '{task.instruction}', seed "
            f"{self.config.seed}: joint states at {self.config.publish_rate_hz:g} Hz, "
            + (f"{len(self.embodiment.cameras)} cameras {self.config.camera_width}x{self.config.camera_height} at "
               f"{self.config.camera_rate_hz:g} Hz" if self.cameras else "no cameras")
            + f", realtime factor {self.config.realtime_factor:g}; commands: "
            + ", ".join(f"{o.name} ({o.interface.value})" for o in outputs)
        )

    def _declare(self, name: str, default: Any, description: str, *, read_only: bool = True) -> Any:
        if not isinstance(default, float):
            return self.declare_parameter(
                name, default, ParameterDescriptor(description=description, read_only=read_only)).value
        # `-p publish_rate_hz:=100` arrives as an integer: accept it for a float parameter.
        value = self.declare_parameter(name, default, ParameterDescriptor(
            description=description, read_only=read_only, dynamic_typing=True)).value
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"expected a number, got {value!r}", key=name)
        return float(value)

    @property
    def sim_time(self) -> float:
        """Simulated time since start-up (s): what /clock says."""
        return self._time_offset + self.world.time

    # --- physics ---------------------------------------------------------------------------------------------------

    def _step(self) -> None:
        if self.config.realtime_factor > 0:
            wall = time.monotonic()
            duration = self._anchor_sim + (wall - self._anchor_wall) * self.config.realtime_factor - self.world.time
            if duration > MAX_CATCH_UP_S:
                self.lagging_steps += 1
                if self.lagging_steps == 1:
                    self.get_logger().warning(
                        f"the simulation cannot keep up with realtime_factor {self.config.realtime_factor:g} on this "
                        "machine and runs slower: lower camera_rate_hz, camera_width/camera_height or realtime_factor")
                duration = self._sim_period_s
                self._anchor_wall, self._anchor_sim = wall, self.world.time + duration
        else:
            duration = self._sim_period_s
        with self.world.lock:
            self.world.advance(max(duration, 0.0))
            positions, velocities = self.world.joint_positions(), self.world.joint_velocities()

        stamp = seconds_to_stamp(self.sim_time, Time)
        self._clock_pub.publish(ClockMsg(clock=stamp))
        for publisher, names, indices in self._joint_state_pubs:
            publisher.publish(joint_state_to_msg(JointState, stamp=stamp, names=names, positions=positions[indices],
                                                 velocities=velocities[indices]))
        for goal in list(self._goals.values()):
            self._update_goal(goal, stamp)
        self._publish_task_success()
        if self.cameras is not None and self.world.time >= self._next_frame_time:
            self.cameras.post(stamp, self.world.data.qpos)
            self._next_frame_time += 1.0 / self.config.camera_rate_hz
            if self._next_frame_time <= self.world.time:  # fell behind: no burst of frames to catch up
                self._next_frame_time = self.world.time + 1.0 / self.config.camera_rate_hz

    def _publish_task_success(self) -> None:
        success = self._task.is_success(self.world)
        if success != self._task_success:
            self._task_success = success
            self._success_pub.publish(Bool(data=success))
            if success:
                self.get_logger().info(f"task '{self._task.instruction}' succeeded at {self.world.time:.2f} s")

    # --- episodes --------------------------------------------------------------------------------------------------

    def _new_episode(self, task: Task, reason: str) -> str:
        for goal in list(self._goals.values()):
            self._finish(goal, "abort", f"the simulation was reset ({reason})")
        self._episode += 1
        seed = self.config.seed + self._episode
        with self.world.lock:
            self._time_offset += self.world.time
            self.world.reset(task, seed)
        self._task = task
        self._anchor_wall, self._anchor_sim = time.monotonic(), self.world.time
        self._next_frame_time = 0.0
        self._task_success = None
        self._publish_task_success()
        message = f"episode {self._episode}: '{task.instruction}', seed {seed}, from {self.sim_time:.3f} s sim time"
        self.get_logger().info(f"{message} ({reason})")
        return message

    def _on_reset(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        response.message = self._new_episode(self._task, "~/reset")
        response.success = True
        return response

    def _on_set_parameters(self, parameters: list[rclpy.parameter.Parameter]) -> SetParametersResult:
        for parameter in parameters:
            if parameter.name != "instruction":
                continue
            try:
                task = parse_instruction(parameter.value)
                if task.color not in self.world.cube_colors:
                    raise ConfigError(f"this world has cubes {list(self.world.cube_colors)} only, not {task.color}: "
                                      f"restart the node with instruction:='{parameter.value}'")
            except VlaRosError as exc:
                return SetParametersResult(successful=False, reason=str(exc))
            self._new_episode(task, "instruction changed")
        return SetParametersResult(successful=True)

    # --- command inputs --------------------------------------------------------------------------------------------

    def _add_command_input(self, output: OutputSpec) -> None:
        interface = output.interface
        if interface is CommandInterface.JOINT_TRAJECTORY:
            self.create_subscription(JointTrajectoryMsg, output.name,
                                     lambda msg, o=output: self._on_trajectory(o, msg), COMMAND_QOS)
            return
        if interface is CommandInterface.FOLLOW_JOINT_TRAJECTORY:
            action_type = FollowJointTrajectory
        elif interface is CommandInterface.GRIPPER_COMMAND:
            action_type = GripperCommand
        else:
            action_type = parallel_gripper_command()
        ActionServer(self, action_type, output.name, execute_callback=self._goal_result,
                     handle_accepted_callback=lambda handle, o=output: self._start_goal(o, handle),
                     cancel_callback=lambda _request: CancelResponse.ACCEPT)

    def _on_trajectory(self, output: OutputSpec, msg: JointTrajectoryMsg) -> None:
        try:
            self.world.send_trajectory(self._world_trajectory(output, trajectory_from_msg(msg)))
        except TrajectoryError as exc:
            self.rejections.add(output.name, exc)

    def _world_trajectory(self, output: OutputSpec, trajectory: JointTrajectory) -> JointTrajectory:
        """`trajectory` in the controller's names and on /clock -> in the world's joint names and time."""
        wire_names = output.wire_joint_names
        unknown = [name for name in trajectory.joint_names if name not in wire_names]
        if unknown:
            raise TrajectoryError(f"trajectory rejected: unknown joints {unknown} for {output.name}."
                                  + did_you_mean(unknown[0], wire_names))
        stamp = trajectory.stamp - self._time_offset if trajectory.stamp != 0.0 else 0.0
        return replace(trajectory, joint_names=tuple(output.prefix + name for name in trajectory.joint_names),
                       stamp=stamp)

    def _start_goal(self, output: OutputSpec, handle: ServerGoalHandle) -> None:
        """Execute a newly accepted goal; one that the controller would refuse is aborted with the reason."""
        goal = _Goal(handle=handle, output=output, last_moved=self.world.time)
        self._goal_outcomes[bytes(handle.goal_id.uuid)] = goal.outcome
        handle.execute()  # the execute callback waits for goal.outcome, which the physics timer completes
        try:
            if output.interface is CommandInterface.FOLLOW_JOINT_TRAJECTORY:
                trajectory = self._world_trajectory(output, trajectory_from_msg(handle.request.trajectory))
                self.world.send_trajectory(trajectory)
                start = self.world.time if trajectory.stamp == 0.0 else trajectory.stamp
                goal.end_time = start + trajectory.duration
            else:
                goal.target, goal.max_effort = _gripper_target(output, handle.request)
                self._move_gripper(output, goal.target)
        except TrajectoryError as exc:
            self.rejections.add(output.name, exc)
            self._finish(goal, "abort", str(exc))
            return
        previous = self._goals.get(output.name)
        if previous is not None:
            self._finish(previous, "abort", "preempted by a newer goal")
        self._goals[output.name] = goal

    async def _goal_result(self, handle: ServerGoalHandle) -> Any:
        # Runs outside the node's callback group: it only waits, and touches neither the world nor the goals.
        return await self._goal_outcomes.pop(bytes(handle.goal_id.uuid))

    def _update_goal(self, goal: _Goal, stamp: Time) -> None:
        output, now = goal.output, self.world.time
        indices = [self.embodiment.joint_names.index(name) for name in output.joints]
        measured = self.world.joint_positions()[indices]
        if goal.handle.is_cancel_requested:
            self._hold(output, measured)
            self._finish(goal, "canceled", "cancelled on request")
        elif output.interface is CommandInterface.FOLLOW_JOINT_TRAJECTORY:
            if now >= goal.end_time:
                self._finish(goal, "succeed", "")
            elif now >= goal.next_feedback:
                goal.next_feedback = now + FEEDBACK_PERIOD_S
                desired = self.world.desired_joint_state()[0][indices]
                feedback = FollowJointTrajectory.Feedback(joint_names=list(output.wire_joint_names))
                feedback.header.stamp = stamp
                feedback.desired.positions = desired.tolist()
                feedback.actual.positions = measured.tolist()
                feedback.error.positions = (desired - measured).tolist()
                goal.handle.publish_feedback(feedback)
        else:
            gripper = self.embodiment.gripper_of(output.joints[0])
            if abs(goal.target - measured[0]) < GRIPPER_GOAL_TOLERANCE * abs(gripper.open - gripper.closed):
                self._finish(goal, "succeed", "", reached_goal=True)
            elif abs(self.world.joint_velocities()[indices[0]]) > GRIPPER_STALL_VELOCITY:
                goal.last_moved = now
            elif now - goal.last_moved > GRIPPER_STALL_TIMEOUT_S:
                self._finish(goal, "abort", "stalled", stalled=True)

    def _finish(self, goal: _Goal, outcome: str, error: str, *, reached_goal: bool = False,
                stalled: bool = False) -> None:
        """End `goal` with `outcome` ('succeed', 'abort' or 'canceled') and hand its result to the client."""
        if self._goals.get(goal.output.name) is goal:
            del self._goals[goal.output.name]
        result = self._result(goal, error, reached_goal=reached_goal, stalled=stalled)
        getattr(goal.handle, outcome)()
        if outcome != "succeed":
            self.get_logger().info(f"{goal.output.name}: goal {_PAST[outcome]}: {error}")
        goal.outcome.set_result(result)

    def _result(self, goal: _Goal, error: str, *, reached_goal: bool, stalled: bool) -> Any:
        output = goal.output
        interface = output.interface
        if interface is CommandInterface.FOLLOW_JOINT_TRAJECTORY:
            # As JTC: SUCCESSFUL when done or cancelled, INVALID_GOAL when refused, preempted or reset.
            failed = error and not goal.handle.is_cancel_requested
            code = FollowJointTrajectory.Result.INVALID_GOAL if failed else FollowJointTrajectory.Result.SUCCESSFUL
            return FollowJointTrajectory.Result(error_code=code, error_string=error)
        index = self.embodiment.joint_names.index(output.joints[0])
        position = float(self.world.joint_positions()[index])
        if interface is CommandInterface.GRIPPER_COMMAND:
            return GripperCommand.Result(position=position, effort=goal.max_effort, stalled=stalled,
                                         reached_goal=reached_goal)
        result = parallel_gripper_command().Result(stalled=stalled, reached_goal=reached_goal)
        result.state = joint_state_to_msg(JointState, stamp=seconds_to_stamp(self.sim_time, Time),
                                          names=output.wire_joint_names, positions=np.array([position]),
                                          velocities=self.world.joint_velocities()[[index]])
        return result

    def _move_gripper(self, output: OutputSpec, target: float) -> None:
        """Send the gripper to `target` at its velocity limit, as its servo would move."""
        index = self.embodiment.joint_names.index(output.joints[0])
        current = self.world.desired_joint_state()[0][index]
        duration = max(abs(target - current) / self.embodiment.velocity_limits[index], HOLD_TIME_S)
        self.world.send_trajectory(JointTrajectory(
            joint_names=output.joints, points=(TrajectoryPoint(np.array([target]), duration),)))

    def _hold(self, output: OutputSpec, positions: np.ndarray) -> None:
        """Stop `output`'s joints at `positions`, as a controller does on cancel."""
        self.world.send_trajectory(JointTrajectory(
            joint_names=output.joints, points=(TrajectoryPoint(np.asarray(positions, float), HOLD_TIME_S),)))

    def destroy_node(self) -> None:
        if self.cameras is not None:
            self.cameras.close()
        super().destroy_node()


@dataclass(eq=False)
class _Goal:
    """An action goal being executed."""

    handle: ServerGoalHandle
    output: OutputSpec
    outcome: Future = field(default_factory=Future)  # the result, set when the goal ends
    end_time: float = math.inf  # trajectory goals: world time at which the trajectory has been executed
    next_feedback: float = 0.0
    target: float = 0.0  # gripper goals: joint units
    max_effort: float = 0.0
    last_moved: float = 0.0  # gripper goals: world time at which the gripper last moved


def _gripper_target(output: OutputSpec, goal: Any) -> tuple[float, float]:
    """(position in joint units, max effort) of a GripperCommand or ParallelGripperCommand goal."""
    command = goal.command
    if output.interface is CommandInterface.GRIPPER_COMMAND:
        position, effort = command.position, command.max_effort
    else:
        names = list(command.name)
        if len(command.position) != 1 or names not in ([], list(output.wire_joint_names)):
            raise TrajectoryError(f"a ParallelGripperCommand for {output.name} needs one position for joint "
                                  f"{output.wire_joint_names[0]}, got names {names} and positions "
                                  f"{list(command.position)}")
        position, effort = command.position[0], command.effort[0] if len(command.effort) else 0.0
    if not math.isfinite(position):
        raise TrajectoryError(f"gripper position must be finite, got {position}")
    return float(position), float(effort)


class RejectionLog:
    """Counts rejected commands per source and kind; logs the first of each kind in full, later ones as a count at
    most every REJECTION_LOG_INTERVAL_S. A kind is the error message with its numbers blanked out."""

    def __init__(self, logger: Any):
        self._logger = logger
        self.counts: dict[tuple[str, str], int] = {}
        self._last_logged: dict[tuple[str, str], float] = {}

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def add(self, source: str, error: Exception) -> None:
        key = (source, re.sub(r"\d+(\.\d+)?", "#", str(error)))
        count = self.counts[key] = self.counts.get(key, 0) + 1
        now = time.monotonic()
        if count == 1 or now - self._last_logged[key] >= REJECTION_LOG_INTERVAL_S:
            self._last_logged[key] = now
            self._logger.warning(f"{source}: command dropped ({count} of this kind so far): {error}")


class CameraPublisher:
    """Renders the cameras and publishes their images on a thread of its own.

    A GL context works only on the thread that made it current, while executor callbacks may run on any thread; and
    rendering (15-35 ms for two cameras in software) would otherwise hold up the physics and joint states. The physics
    timer posts the joint positions of each frame due; a frame still waiting when the next is posted is skipped.
    """

    def __init__(self, node: Node, model: mujoco.MjModel, embodiment: EmbodimentConfig, config: SimNodeConfig):
        # Imported here, not at the top: MuJoCo reads MUJOCO_GL when first imported, which vla_ros.sim sets first.
        import mujoco

        self._mujoco = mujoco
        self._model, self._data = model, mujoco.MjData(model)
        self._size = (config.camera_height, config.camera_width)
        self._cameras = []
        for camera in embodiment.cameras:
            topic = camera.topic or f"/{camera.name}/image_raw"
            compressed = None
            if camera.transport is ImageTransport.COMPRESSED:
                compressed = node.create_publisher(CompressedImage, f"{topic}/compressed", IMAGE_QOS)
            fovy = math.radians(model.cam_fovy[model.camera(camera.name).id])
            self._cameras.append(_Camera(
                name=camera.name, frame_id=f"{camera.name}_camera_optical_frame",
                image=node.create_publisher(Image, topic, IMAGE_QOS), compressed=compressed,
                info=node.create_publisher(CameraInfo, f"{topic.rsplit('/', 1)[0]}/camera_info", IMAGE_QOS),
                focal_px=config.camera_height / 2 / math.tan(fovy / 2)))
        self._logger, self._context = node.get_logger(), node.context
        self._condition = threading.Condition()
        self._pending: tuple[Time, np.ndarray] | None = None
        self._stopping = False
        self.frames_published = 0
        self.frames_skipped = 0
        self._started = threading.Event()
        self._start_error: Exception | None = None
        self._thread = threading.Thread(target=self._run, name="camera_render", daemon=True)
        self._thread.start()
        self._started.wait()
        if self._start_error is not None:
            raise self._start_error

    def post(self, stamp: Time, qpos: np.ndarray) -> None:
        """Render the scene with these joint positions (the world's full qpos) for `stamp`."""
        with self._condition:
            if self._pending is not None:
                self.frames_skipped += 1
            self._pending = (stamp, qpos.copy())
            self._condition.notify()

    def close(self) -> None:
        with self._condition:
            self._stopping = True
            self._condition.notify()
        self._thread.join(timeout=5.0)

    def _run(self) -> None:
        height, width = self._size
        try:
            renderer = self._mujoco.Renderer(self._model, height, width)
        except Exception as exc:  # noqa: BLE001 - GL errors come as several types, all of them reported here
            self._start_error = ConfigError(
                f"MuJoCo cannot render {width}x{height} images ({exc}): set MUJOCO_GL=egl or osmesa in the "
                "environment, or start the node with render:=false")
            self._started.set()
            return
        self._started.set()
        try:
            while True:
                with self._condition:
                    self._condition.wait_for(lambda: self._pending is not None or self._stopping)
                    if self._stopping:
                        return
                    (stamp, qpos), self._pending = self._pending, None
                self._data.qpos[:] = qpos
                self._mujoco.mj_forward(self._model, self._data)
                for camera in self._cameras:
                    renderer.update_scene(self._data, camera=camera.name)
                    self._publish(camera, renderer.render(), stamp)
                self.frames_published += 1
        except Exception as exc:  # noqa: BLE001 - a dead camera thread must say why
            if self._context.ok():  # else ROS was shut down (Ctrl-C) before close() stopped this thread
                self._logger.error(f"camera rendering stopped: {type(exc).__name__}: {exc}")
        finally:
            renderer.close()

    def _publish(self, camera: _Camera, rgb: np.ndarray, stamp: Time) -> None:
        height, width = rgb.shape[:2]
        camera.image.publish(image_to_msg(rgb, Image, stamp=stamp, frame_id=camera.frame_id))
        if camera.compressed is not None:
            camera.compressed.publish(compressed_image_to_msg(rgb, CompressedImage, stamp=stamp,
                                                              frame_id=camera.frame_id))
        # MuJoCo's fovy is vertical and pixels are square; the principal point is the image centre.
        camera.info.publish(camera_info_to_msg(
            CameraInfo, stamp=stamp, frame_id=camera.frame_id, width=width, height=height,
            fx=camera.focal_px, fy=camera.focal_px, cx=(width - 1) / 2, cy=(height - 1) / 2))


@dataclass(frozen=True)
class _Camera:
    name: str
    frame_id: str
    image: Any  # publishers
    compressed: Any
    info: Any
    focal_px: float


def _checked_outputs(embodiment: EmbodimentConfig) -> tuple[OutputSpec, ...]:
    if embodiment.robot not in ROBOTS:
        raise ConfigError(f"the MuJoCo simulator has no model of '{embodiment.robot}', only of {', '.join(ROBOTS)}: "
                          "simulate other robots in Gazebo or Isaac Sim", source=embodiment.source, key="robot")
    for output in embodiment.outputs:
        if output.interface not in SUPPORTED_INTERFACES:
            raise ConfigError(
                f"the simulator takes no {output.interface.value} commands ({output.name}); it offers "
                + ", ".join(i.value for i in SUPPORTED_INTERFACES), source=embodiment.source, key="ros.outputs")
    return embodiment.outputs


def _check_joints_and_cameras(embodiment: EmbodimentConfig, world: SimWorld) -> None:
    if set(embodiment.joint_names) != set(world.joint_names):
        raise ConfigError(f"names joints {list(embodiment.joint_names)}, but the simulated {world.robot} has "
                          f"{list(world.joint_names)}", source=embodiment.source, key="joints")
    for i, camera in enumerate(embodiment.cameras):
        if camera.name not in world.camera_names:
            raise ConfigError(f"the simulated {world.robot} has no camera '{camera.name}'."
                              + did_you_mean(camera.name, world.camera_names), source=embodiment.source,
                              key=f"cameras[{i}].name")


def main(args: list[str] | None = None) -> None:
    """`ros2 run vla_ros sim_node [--ros-args -p robot:=panda ...]`."""
    rclpy.init(args=args)
    try:
        try:
            node = MujocoRobotNode()
        except (VlaRosError, ParameterException) as exc:
            rclpy.logging.get_logger(NODE_NAME).fatal(str(exc))
            raise SystemExit(1) from None
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        try:
            executor.spin()
        finally:
            executor.shutdown()
            node.destroy_node()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        rclpy.try_shutdown()


if __name__ == "__main__":
    main()
