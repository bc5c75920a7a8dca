"""The MuJoCo simulator as a ROS 2 robot on rclpy: `MujocoRobotCore` plus what needs rclpy.

The core (sim_core.py, shared with the pip-only DDS node) publishes /clock, joint states and cameras and takes
joint_trajectory topics. This node adds parameters, the action servers of the embodiment's action outputs
(FollowJointTrajectory, GripperCommand, ParallelGripperCommand, each with its controller's semantics), the ~/reset
service and run-time instruction changes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import rclpy
from builtin_interfaces.msg import Time
from control_msgs.action import FollowJointTrajectory, GripperCommand
from rcl_interfaces.msg import ParameterDescriptor, SetParametersResult
from rclpy.action import ActionServer, CancelResponse
from rclpy.action.server import ServerGoalHandle
from rclpy.clock import Clock, ClockType
from rclpy.node import Node
from rclpy.task import Future
from sensor_msgs.msg import JointState
from std_srvs.srv import Trigger

from vla_ros.core.embodiment import CommandInterface, OutputSpec, load_embodiment
from vla_ros.core.errors import ConfigError, VlaRosError
from vla_ros.core.trajectory import TrajectoryError
from vla_ros.ros.backend import rclpy_backend
from vla_ros.ros.control_actions import parallel_gripper_command
from vla_ros.ros.convert import joint_state_to_msg, seconds_to_stamp, trajectory_from_msg
from vla_ros.ros.sim_core import (
    NODE_NAME,
    MujocoRobotCore,
    SimNodeConfig,
    default_camera,
    default_publish_rate_hz,
)
from vla_ros.ros.spin import run_node
from vla_ros.sim.robots import SIM_ROBOTS

FEEDBACK_PERIOD_S = 0.05  # JTC's action_monitor_rate default, 20 Hz
# gripper_action_controller's defaults (ros2_controllers): stall_velocity_threshold, stall_timeout, allow_stalling
# false (a stalled goal is aborted, with `stalled` set). Its goal_tolerance of 0.01 joint units suits a revolute jaw
# (about 1% of the SO-101's range) but is a quarter of a Panda finger's travel: here it is a fraction of the range.
GRIPPER_GOAL_TOLERANCE = 0.01  # of the distance between the gripper's open and closed positions
GRIPPER_STALL_VELOCITY = 0.001  # joint units / s
GRIPPER_STALL_TIMEOUT_S = 1.0
_PAST = {"abort": "aborted", "canceled": "canceled", "succeed": "succeeded"}


class MujocoRobotNode(Node):
    """The simulated arm of `robot` on its table, as a ROS 2 robot (topics: see `MujocoRobotCore`).

    Parameters: robot, instruction (settable at run time: starts a new episode), seed, publish_rate_hz,
    camera_rate_hz, camera_width, camera_height, realtime_factor, render.
    Serves, per embodiment output: FollowJointTrajectory, GripperCommand and ParallelGripperCommand actions.
    Services: ~/reset (Trigger): a new episode with the next seed.
    """

    def __init__(self, *, node_name: str = NODE_NAME, **kwargs: Any):
        super().__init__(node_name, **kwargs)
        robot = self._declare("robot", "so101", "robot config: a name under config/robots/ or a YAML path; its "
                              f"`robot` must be a simulated arm ({', '.join(SIM_ROBOTS)})")
        embodiment = load_embodiment(robot)
        camera = default_camera(embodiment)
        config = SimNodeConfig(
            robot=robot,
            instruction=self._declare("instruction", SimNodeConfig.instruction,
                                      "task to set up, '<touch|pick up> the <colour> cube'; setting it starts a new "
                                      "episode", read_only=False),
            seed=self._declare("seed", 0, "random seed of the first episode's cube layout; each reset takes the next"),
            publish_rate_hz=self._declare("publish_rate_hz", default_publish_rate_hz(embodiment),
                                          "physics, /clock and joint state updates per simulated second"),
            camera_rate_hz=self._declare("camera_rate_hz", 10.0, "camera images per simulated second"),
            camera_width=self._declare("camera_width", camera.width, "rendered image width (px), all cameras"),
            camera_height=self._declare("camera_height", camera.height, "rendered image height (px)"),
            realtime_factor=self._declare("realtime_factor", 1.0, "simulated seconds per wall-clock second; 0: as "
                                          "fast as possible"),
            render=self._declare("render", True, "render and publish the cameras (software rendering costs "
                                 "15-35 ms per frame of two cameras)"),
            follow_joint_states=self._declare("follow_joint_states", False, "follow the robot's joint state topics "
                                              "(sim:=mock: ros2_control's mock hardware is the robot) instead of "
                                              "taking commands; stamps on this node's clock, no /clock"),
        )
        self.core = MujocoRobotCore(self, rclpy_backend(), embodiment, config, action_interfaces=True)
        self.embodiment, self.config, self.world = embodiment, config, self.core.world
        self.rejections = self.core.rejections
        self._goals: dict[str, _Goal] = {}  # output name -> its active action goal
        self._goal_outcomes: dict[bytes, Future] = {}  # goal id -> result, completed when the goal ends
        self.core.on_step.append(self._update_goals)
        self.core.on_new_episode.append(self._abort_goals)
        for output in self.core.outputs:
            if output.interface is not CommandInterface.JOINT_TRAJECTORY and not config.follow_joint_states:
                self._add_action_server(output)
        self.create_service(Trigger, "~/reset", self._on_reset)
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self.create_timer(self.core.wall_period_s, self.core.step, clock=Clock(clock_type=ClockType.STEADY_TIME))

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
    def cameras(self):
        return self.core.cameras

    @property
    def sim_time(self) -> float:
        return self.core.sim_time

    # --- episodes --------------------------------------------------------------------------------------------------

    def _on_reset(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        response.message = self.core.new_episode(self.core.task, "~/reset")
        response.success = True
        return response

    def _on_set_parameters(self, parameters: list[rclpy.parameter.Parameter]) -> SetParametersResult:
        for parameter in parameters:
            if parameter.name != "instruction":
                continue
            try:
                task = self.core.task_for(parameter.value)
            except VlaRosError as exc:
                return SetParametersResult(successful=False, reason=str(exc))
            self.core.new_episode(task, "instruction changed")
        return SetParametersResult(successful=True)

    # --- action goals ----------------------------------------------------------------------------------------------

    def _add_action_server(self, output: OutputSpec) -> None:
        if output.interface is CommandInterface.FOLLOW_JOINT_TRAJECTORY:
            action_type = FollowJointTrajectory
        elif output.interface is CommandInterface.GRIPPER_COMMAND:
            action_type = GripperCommand
        else:
            action_type = parallel_gripper_command()
        ActionServer(self, action_type, output.name, execute_callback=self._goal_result,
                     handle_accepted_callback=lambda handle, o=output: self._start_goal(o, handle),
                     cancel_callback=lambda _request: CancelResponse.ACCEPT)

    def _start_goal(self, output: OutputSpec, handle: ServerGoalHandle) -> None:
        """Execute a newly accepted goal; one that the controller would refuse is aborted with the reason."""
        goal = _Goal(handle=handle, output=output, last_moved=self.world.time)
        self._goal_outcomes[bytes(handle.goal_id.uuid)] = goal.outcome
        handle.execute()  # the execute callback waits for goal.outcome, which the physics timer completes
        try:
            if output.interface is CommandInterface.FOLLOW_JOINT_TRAJECTORY:
                trajectory = self.core.world_trajectory(output, trajectory_from_msg(handle.request.trajectory))
                self.world.send_trajectory(trajectory)
                start = self.world.time if trajectory.stamp == 0.0 else trajectory.stamp
                goal.end_time = start + trajectory.duration
            else:
                goal.target, goal.max_effort = _gripper_target(output, handle.request)
                self.core.move_gripper(output, goal.target)
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

    def _update_goals(self, stamp: Time) -> None:
        for goal in list(self._goals.values()):
            self._update_goal(goal, stamp)

    def _abort_goals(self, reason: str) -> None:
        for goal in list(self._goals.values()):
            self._finish(goal, "abort", f"the simulation was reset ({reason})")

    def _update_goal(self, goal: _Goal, stamp: Time) -> None:
        output, now = goal.output, self.world.time
        indices = [self.embodiment.joint_names.index(name) for name in output.joints]
        measured = self.world.joint_positions()[indices]
        if goal.handle.is_cancel_requested:
            self.core.hold(output, measured)
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

    def destroy_node(self) -> None:
        self.core.close()
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




def main(args: list[str] | None = None) -> None:
    """`ros2 run vla_ros sim_node [--ros-args -p robot:=panda ...]`."""
    run_node(MujocoRobotNode, NODE_NAME, args=args)


if __name__ == "__main__":
    main()
