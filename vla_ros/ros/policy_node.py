"""The policy node on rclpy: a lifecycle node that runs a VLA policy on a ROS 2 robot.

The topic logic is `PolicyNodeCore` (shared with the pip-only DDS node); this shell adds what needs rclpy: the
lifecycle, parameters, services (~/pause, ~/resume, ~/reset, ~/set_instruction), the ~/execute action and the
action-based outputs (FollowJointTrajectory, GripperCommand, ParallelGripperCommand). Lifecycle:

    configure   load the robot config and the policy (other callbacks keep running meanwhile)
    activate    subscribe and start commanding
    deactivate  stop commanding: the arm holds its last command; the queue is cleared
    cleanup     unload the policy
"""

from __future__ import annotations

import time

from control_msgs.action import FollowJointTrajectory, GripperCommand
from rclpy.action import ActionClient, ActionServer
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.executors import MultiThreadedExecutor
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from vla_ros.action import ExecuteInstruction
from vla_ros.core.embodiment import CommandInterface, OutputSpec
from vla_ros.core.errors import VlaRosError
from vla_ros.core.pipeline import Command
from vla_ros.ros.backend import rclpy_backend
from vla_ros.ros.control_actions import parallel_gripper_command
from vla_ros.ros.convert import trajectory_to_msg
from vla_ros.ros.policy_core import NODE_NAME, PARAMETERS, PolicyNodeCore
from vla_ros.ros.spin import run_node
from vla_ros.srv import SetInstruction


class PolicyNode(LifecycleNode):
    def __init__(self, *, world=None, **kwargs):
        super().__init__(NODE_NAME, **kwargs)
        for name, (default, description) in PARAMETERS.items():
            self.declare_parameter(name, default, _descriptor(description))
        self.core = PolicyNodeCore(self, rclpy_backend(), world=world, make_action_output=self._action_output,
                                   control_callback_group=MutuallyExclusiveCallbackGroup())
        self._last_gripper_goal: dict[str, float] = {}
        self._services_created = False

    @property
    def runner(self):
        return self.core.runner

    # -- lifecycle -------------------------------------------------------------------------------------------------

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            self.core.configure({name: self.get_parameter(name).value for name in PARAMETERS})
        except (VlaRosError, ValueError) as exc:
            self.get_logger().error(f"configuration failed: {exc}")
            return TransitionCallbackReturn.FAILURE
        if not self._services_created:  # a configure after cleanup reuses them
            self._services_created = True
            self.create_service(Trigger, "~/pause", self._on_pause)
            self.create_service(Trigger, "~/resume", self._on_resume)
            self.create_service(Trigger, "~/reset", self._on_reset)
            self.create_service(SetInstruction, "~/set_instruction", self._on_set_instruction)
            self._execute_server = ActionServer(self, ExecuteInstruction, "~/execute", self._execute,
                                                callback_group=ReentrantCallbackGroup())
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.core.activate()
        return super().on_activate(state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.core.deactivate()
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        # A chunk still being computed is of no use any more: do not make launch wait for it (it escalates to
        # SIGTERM after 5 s).
        self.core.cleanup(inference_timeout_s=0.5)
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        return self.on_cleanup(state)

    def on_process_exit(self) -> None:
        """Ctrl-C: stop commanding (the arm brakes to a hold), the timers and the inference thread, while the ROS
        context is still valid (run_node calls this after spinning stops)."""
        # A chunk still being computed is of no use any more: do not make launch wait for it (it escalates to
        # SIGTERM after 5 s).
        self.core.cleanup(inference_timeout_s=0.5)

    # -- action outputs ----------------------------------------------------------------------------------------------

    def _action_output(self, output: OutputSpec):
        interface = output.interface
        if interface is CommandInterface.FOLLOW_JOINT_TRAJECTORY:
            client = ActionClient(self, FollowJointTrajectory, output.name)

            def send(command: Command, index: list, stamp) -> None:
                if client.server_is_ready():  # a new goal preempts the running one
                    client.send_goal_async(FollowJointTrajectory.Goal(trajectory=trajectory_to_msg(
                        command.stream_trajectory, JointTrajectory, JointTrajectoryPoint,
                        joint_names=output.wire_joint_names, joint_indices=index)))
            return send
        if interface in (CommandInterface.GRIPPER_COMMAND, CommandInterface.PARALLEL_GRIPPER_COMMAND):
            gripper = GripperCommand if interface is CommandInterface.GRIPPER_COMMAND else parallel_gripper_command()
            client = ActionClient(self, gripper, output.name)
            return lambda command, index, stamp: self._send_gripper(output, client, float(command.positions[index][0]))
        raise VlaRosError(f"output interface '{interface.value}' is not supported by the rclpy node yet")

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

    # -- services and the ~/execute action ---------------------------------------------------------------------------

    def _execute(self, goal_handle):
        """Follow the goal's instruction until the success topic says so, the timeout passes, or a cancel."""
        request = goal_handle.request
        result = ExecuteInstruction.Result()
        core = self.core
        if core.runner is None or not core.active:
            goal_handle.abort()
            result.message = "the policy node is not active: configure and activate it first"
            return result
        core.runner.set_instruction(request.instruction)
        core.runner.resume()
        successes, ticks, start = core.successes, core.ticks, time.monotonic()
        feedback = ExecuteInstruction.Feedback()
        while True:
            elapsed = time.monotonic() - start
            result.steps, result.elapsed = core.ticks - ticks, elapsed
            if core.successes > successes:
                goal_handle.succeed()
                result.success, result.message = True, "succeeded"
                return result
            if goal_handle.is_cancel_requested:
                core.runner.pause()
                goal_handle.canceled()
                result.message = "cancelled: the arm holds"
                return result
            if request.timeout > 0 and elapsed >= request.timeout:
                core.runner.pause()
                goal_handle.abort()
                result.message = f"timeout after {request.timeout:.1f} s: the arm holds"
                return result
            feedback.steps, feedback.elapsed = result.steps, elapsed
            feedback.queue_depth = core.runner.pipeline.scheduler.remaining_steps(core.now())
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


def _descriptor(description: str):
    from rcl_interfaces.msg import ParameterDescriptor

    return ParameterDescriptor(description=description)


def main(args: list[str] | None = None) -> None:
    run_node(PolicyNode, NODE_NAME, args=args, executor=MultiThreadedExecutor, exit_after=True)


if __name__ == "__main__":
    main()
