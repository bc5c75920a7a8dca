"""`python -m vla_ros.bench.mock_closed_loop`: a policy closing the loop through ros2_control's real controllers.

Runs `ros2 launch vla_ros <robot>.launch.py sim:=mock policy:=<policy>`: the policy node commands
joint_trajectory_controller on mock hardware, and the MuJoCo world follows /joint_states, renders the cameras and
judges the task. Per episode: deactivate the policy node (it brakes to a hold), drive the arm home through the
controllers, lay out the next scene (`mujoco_robot/reset`: the next seed), reset and activate the policy, and wait
for the task's success or its timeout. Prints the success rate and per-episode times as JSON.
"""

from __future__ import annotations

import argparse
import os
import platform
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from vla_ros.bench.stats import report_json
from vla_ros.core.embodiment import CommandInterface, load_embodiment
from vla_ros.core.trajectory import build_trajectory
from vla_ros.sim.tasks import parse_instruction

HOME_S = 2.0  # time to drive the arm home between episodes


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--robot", default="so101")
    parser.add_argument("--policy", default="builtin")
    parser.add_argument("--instruction", default="touch the red cube")
    parser.add_argument("--episodes", type=int, default=10)
    parser.add_argument("--domain", type=int, default=int(os.environ.get("ROS_DOMAIN_ID", "43")))
    parser.add_argument("--startup-timeout", type=float, default=600.0, help="s to wait for the policy to load")
    parser.add_argument(
        "--timeout", type=float, default=None, help="s of wall-clock time per episode (default: the task's own timeout)"
    )
    parser.add_argument("--json", type=Path, default=None)


class _Graph:
    """The bench's rclpy node in the launch's domain."""

    def __init__(self, domain: int, robot: str):
        import rclpy
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import DurabilityPolicy, QoSProfile
        from std_msgs.msg import Bool
        from trajectory_msgs.msg import JointTrajectory

        self.context = rclpy.Context()
        rclpy.init(context=self.context, domain_id=domain)
        self.node = rclpy.create_node("vla_ros_mock_closed_loop", context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.success = False
        latched = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self.node.create_subscription(
            Bool, "/mujoco_robot/task_success", lambda m: setattr(self, "success", self.success or m.data), latched
        )
        self.embodiment = load_embodiment(robot)
        self.trajectory_outputs = [
            (self.node.create_publisher(JointTrajectory, o.name, 10), o)
            for o in self.embodiment.outputs
            if o.interface is CommandInterface.JOINT_TRAJECTORY
        ]
        self._thread = threading.Thread(target=self.executor.spin, daemon=True)
        self._thread.start()

    def call(self, service_type, name: str, request, timeout_s: float = 30.0):
        client = self.node.create_client(service_type, name)
        try:
            if not client.wait_for_service(timeout_sec=timeout_s):
                raise RuntimeError(f"service {name} is not offered")
            future = client.call_async(request)
            deadline = time.monotonic() + timeout_s
            while not future.done():
                if time.monotonic() > deadline:
                    raise RuntimeError(f"service {name} did not answer within {timeout_s} s")
                time.sleep(0.02)
            return future.result()
        finally:
            self.node.destroy_client(client)

    def trigger(self, name: str) -> None:
        from std_srvs.srv import Trigger

        response = self.call(Trigger, name, Trigger.Request())
        if not response.success:
            raise RuntimeError(f"{name}: {response.message}")

    def lifecycle(self, transition: str) -> None:
        from lifecycle_msgs.msg import Transition
        from lifecycle_msgs.srv import ChangeState

        response = self.call(
            ChangeState, "/vla_policy/change_state", ChangeState.Request(transition=Transition(label=transition))
        )
        if not response.success:
            raise RuntimeError(f"the policy node refused '{transition}'")

    def state(self) -> str:
        from lifecycle_msgs.srv import GetState

        try:
            return self.call(GetState, "/vla_policy/get_state", GetState.Request(), timeout_s=5.0).current_state.label
        except RuntimeError:
            return ""

    def drive_home(self) -> None:
        """One trajectory per arm/gripper controller to the robot config's home pose (stamp 0: start now)."""
        from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

        from vla_ros.ros.convert import trajectory_to_msg

        embodiment = self.embodiment
        home = build_trajectory(embodiment.joint_names, embodiment.home, HOME_S)
        for publisher, output in self.trajectory_outputs:
            index = [embodiment.joint_names.index(name) for name in output.joints]
            publisher.publish(
                trajectory_to_msg(
                    home,
                    JointTrajectory,
                    JointTrajectoryPoint,
                    joint_names=output.wire_joint_names,
                    joint_indices=index,
                )
            )

    def close(self) -> None:
        import rclpy

        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)


def run(
    *,
    robot: str,
    policy: str,
    instruction: str,
    episodes: int,
    domain: int,
    startup_timeout_s: float,
    log: Path,
    timeout_s: float | None = None,
) -> dict:
    timeout_s = parse_instruction(instruction).max_duration_s if timeout_s is None else timeout_s
    env = dict(os.environ, ROS_DOMAIN_ID=str(domain), PYTHONUNBUFFERED="1")
    argv = [
        "ros2",
        "launch",
        "vla_ros",
        f"{robot}.launch.py",
        "sim:=mock",
        f"policy:={policy}",
        f"instruction:={instruction}",
    ]
    with open(log, "wb") as out:
        launch = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    graph = _Graph(domain, robot)
    results = []
    try:
        start = time.monotonic()
        while graph.state() != "active":
            if launch.poll() is not None or time.monotonic() - start > startup_timeout_s:
                raise RuntimeError(f"the launch did not bring the policy node up; see {log}")
            time.sleep(1.0)
        startup_s = time.monotonic() - start
        for episode in range(episodes):
            graph.lifecycle("deactivate")  # the node brakes to a hold and stops commanding
            graph.drive_home()
            time.sleep(HOME_S + 0.5)
            graph.trigger("/mujoco_robot/reset")  # the next seed's layout, the world's arm where the hardware is
            graph.trigger("/vla_policy/reset")
            graph.success = False
            graph.lifecycle("activate")
            began = time.monotonic()
            while not graph.success and time.monotonic() - began < timeout_s:
                time.sleep(0.05)
            results.append(
                {"episode": episode, "success": graph.success, "seconds": round(time.monotonic() - began, 2)}
            )
            print(results[-1], flush=True)
    finally:
        graph.close()
        if launch.poll() is None:
            os.killpg(launch.pid, signal.SIGINT)
            try:
                launch.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(launch.pid, signal.SIGKILL)
    successes = sum(r["success"] for r in results)
    return {
        "robot": robot,
        "policy": policy,
        "instruction": instruction,
        "episodes": len(results),
        "successes": successes,
        "success_rate": successes / max(len(results), 1),
        "timeout_s": timeout_s,
        "startup_s": round(startup_s, 1),
        "results": results,
        "machine": platform.platform(),
        "load_average_1_5_15": [round(x, 2) for x in os.getloadavg()],
        "log": str(log),
    }


def main(args: argparse.Namespace) -> int:
    log = Path(tempfile.mkdtemp(prefix="vla_ros_mock_closed_loop_")) / "launch.log"
    report_json(
        run(
            robot=args.robot,
            policy=args.policy,
            instruction=args.instruction,
            episodes=args.episodes,
            domain=args.domain,
            startup_timeout_s=args.startup_timeout,
            log=log,
            timeout_s=args.timeout,
        ),
        args.json,
    )
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser)
    raise SystemExit(main(parser.parse_args()))
