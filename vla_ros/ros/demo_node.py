"""`ros2 run vla_ros demo_node`: the MuJoCo robot node and the policy node in one process.

The scripted expert plans with the simulator's ground truth, so when it is the policy both nodes share
the world; they still talk only through ROS topics (joint states, images, trajectories, /clock). A
learned policy needs no such sharing: launch `sim_node` and `policy_node` separately.
"""

from __future__ import annotations

import argparse
import sys

import rclpy
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.parameter import Parameter
from rclpy.utilities import remove_ros_args

from vla_ros.ros.launch_params import MUJOCO_SUCCESS_TOPIC
from vla_ros.ros.policy_node import PolicyNode
from vla_ros.ros.sim_node import MujocoRobotNode
from vla_ros.sim.robots import SIM_ROBOTS


def main(args=None) -> None:
    parser = argparse.ArgumentParser(prog="demo_node", description=__doc__.splitlines()[0])
    parser.add_argument("--robot", default="so101", choices=SIM_ROBOTS)
    parser.add_argument("--instruction", default="touch the red cube")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dry-run", action="store_true")
    options = parser.parse_args(remove_ros_args(sys.argv if args is None else args)[1:])

    rclpy.init(args=args)
    sim = MujocoRobotNode(parameter_overrides=[
        Parameter("robot", value=options.robot), Parameter("instruction", value=options.instruction),
        Parameter("seed", value=options.seed)])
    policy = PolicyNode(world=sim.world, parameter_overrides=[
        Parameter("robot", value=options.robot), Parameter("policy", value="expert"),
        Parameter("instruction", value=options.instruction), Parameter("dry_run", value=options.dry_run),
        Parameter("use_sim_time", value=True), Parameter("success_topic", value=MUJOCO_SUCCESS_TOPIC)])
    executor = MultiThreadedExecutor()
    executor.add_node(sim)
    executor.add_node(policy)
    try:
        policy.trigger_configure()
        policy.trigger_activate()
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        policy.destroy_node()
        sim.destroy_node()
        rclpy.try_shutdown()


if __name__ == "__main__":
    main()
