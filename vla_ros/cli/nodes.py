"""`vla-ros run` (the policy node) and `vla-ros sim` (the MuJoCo robot node) as plain processes.

Each runs on rclpy where it imports (a sourced ROS 2) and otherwise on vla_ros's own Cyclone DDS participant, which
joins the same ROS 2 graph with no ROS install (`--backend` overrides the choice). Parameters come from the same
YAML as `ros2 launch` uses (`--params-file config/vla_policy.yaml`), then from flags.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import signal
import threading
import time
from pathlib import Path
from typing import Any

import yaml

from vla_ros.core.errors import ConfigError, MissingDependencyError
from vla_ros.policies.device import parse_threads
from vla_ros.ros.backend import BACKEND_CHOICES, choose_backend
from vla_ros.sim.robots import SIM_ROBOT_HELP, load_simulated_embodiment


def node_parameters(path: Path | None, node_name: str) -> dict[str, Any]:
    """The `ros__parameters` of `node_name` (or of `/**`) in a ROS 2 parameter YAML file."""
    if path is None:
        return {}
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read parameter file {path}: {exc}") from None
    parameters: dict[str, Any] = {}
    for key in ("/**", node_name, f"/{node_name}"):
        section = data.get(key, {})
        if not isinstance(section, dict) or not isinstance(section.get("ros__parameters", {}), dict):
            raise ConfigError(f"{path}: '{key}' must hold a 'ros__parameters' mapping")
        parameters.update(section.get("ros__parameters", {}))
    return parameters


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """`name:=value` pairs (as `ros2 run --ros-args -p`), values parsed as YAML scalars."""
    overrides = {}
    for item in items:
        name, separator, value = item.partition(":=")
        if not separator or not name:
            raise ConfigError(f"--param '{item}' is not name:=value")
        overrides[name] = yaml.safe_load(value) if value else ""
    return overrides


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--backend", choices=BACKEND_CHOICES, default=None,
                        help="rclpy (ROS 2 sourced) or dds (pip only); default: $VLA_ROS_BACKEND, else rclpy if it "
                             "imports")
    parser.add_argument("--domain-id", type=int, help="ROS_DOMAIN_ID (default: $ROS_DOMAIN_ID, else 0)")
    parser.add_argument("--duration", type=float, default=0.0, help="stop after this many seconds (0: run until "
                        "Ctrl-C)")


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--robot", default="so101", help="robot config name or YAML path")
    parser.add_argument("--policy", help="policy spec (default: the node's, builtin)")
    parser.add_argument("--instruction", help="language instruction")
    parser.add_argument("--params-file", type=Path, help="ROS 2 parameter YAML (section vla_policy)")
    parser.add_argument("--param", action="append", default=[], metavar="NAME:=VALUE", help="set a node parameter")
    parser.add_argument("--threads", type=parse_threads, metavar="N|auto",
                        help="CPU threads of the model's operations (parameter inference_threads; default auto: "
                             "chosen from the model's size and the cores, and logged)")
    parser.add_argument("--dry-run", action="store_true", help="publish commands only to ~/preview")
    parser.add_argument("--use-sim-time", action="store_true", help="follow /clock (simulators)")
    _add_common(parser)


def add_sim_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--robot", default="so101", help=SIM_ROBOT_HELP)
    parser.add_argument("--instruction", default="touch the red cube", help="task to set up")
    parser.add_argument("--seed", type=int, default=0, help="cube layout seed")
    parser.add_argument("--camera-width", type=int, help="rendered width (default: the robot config's)")
    parser.add_argument("--camera-height", type=int, help="rendered height (default: the robot config's)")
    parser.add_argument("--camera-rate-hz", type=float, default=10.0, help="images per simulated second")
    parser.add_argument("--realtime-factor", type=float, default=1.0, help="simulated s per wall-clock s")
    parser.add_argument("--no-render", action="store_true", help="no cameras")
    parser.add_argument("--serve-expert", type=int, metavar="PORT",
                        help="also serve the scripted expert (it reads this simulator's ground truth) at "
                             "ws://127.0.0.1:PORT, for `vla-ros run --policy ws://127.0.0.1:PORT`")
    _add_common(parser)


def run_main(args: argparse.Namespace) -> int:
    from vla_ros.ros.policy_core import NODE_NAME

    parameters = node_parameters(args.params_file, NODE_NAME)
    parameters["robot"] = args.robot
    for name in ("policy", "instruction"):
        if getattr(args, name) is not None:
            parameters[name] = getattr(args, name)
    if args.dry_run:
        parameters["dry_run"] = True
    if args.threads is not None:
        parameters["inference_threads"] = args.threads
    parameters.update(parse_overrides(args.param))
    backend = choose_backend(args.backend)
    if backend == "rclpy":
        return _run_rclpy_policy(parameters, args)
    DdsGraph, DdsNode = dds_classes()
    from vla_ros.ros.backend import dds_backend
    from vla_ros.ros.policy_core import PolicyNodeCore

    _log_to_stderr()
    graph = DdsGraph(args.domain_id)
    node = DdsNode(NODE_NAME, graph, use_sim_time=args.use_sim_time)
    core = PolicyNodeCore(node, dds_backend())
    core.configure(parameters)  # a config error fails here, before anything moves
    core.activate()
    node.get_logger().info(f"on Cyclone DDS (pip-only backend), domain {graph.domain_id}")
    try:
        _spin(node, args.duration)
    finally:
        core.cleanup()
        node.destroy_node()
    return 0


def sim_main(args: argparse.Namespace) -> int:
    from vla_ros.ros.sim_core import NODE_NAME, SimNodeConfig, default_camera, default_publish_rate_hz

    embodiment = load_simulated_embodiment(args.robot)
    camera = default_camera(embodiment)
    config = SimNodeConfig(
        robot=args.robot, instruction=args.instruction, seed=args.seed,
        publish_rate_hz=default_publish_rate_hz(embodiment), camera_rate_hz=args.camera_rate_hz,
        camera_width=args.camera_width or camera.width, camera_height=args.camera_height or camera.height,
        realtime_factor=args.realtime_factor, render=not args.no_render)
    backend = choose_backend(args.backend)
    if backend == "rclpy":
        return _run_rclpy_sim(config, args)
    DdsGraph, DdsNode = dds_classes()
    from vla_ros.ros.backend import dds_backend
    from vla_ros.ros.sim_core import MujocoRobotCore

    _log_to_stderr()
    graph = DdsGraph(args.domain_id)
    node = DdsNode(NODE_NAME, graph)
    core = MujocoRobotCore(node, dds_backend(), embodiment, config)
    node.create_timer(core.wall_period_s, core.step)
    node.get_logger().info(f"on Cyclone DDS (pip-only backend), domain {graph.domain_id}")
    try:
        with _expert_served(core.world, embodiment, args.serve_expert):
            _spin(node, args.duration)
    finally:
        core.close()
        node.destroy_node()
    return 0


@contextlib.contextmanager
def _expert_served(world, embodiment, port: int | None):
    """With a port: the scripted expert of `world` served at ws://127.0.0.1:port while the block runs."""
    if port is None:
        yield
        return
    from vla_ros.policies.factory import make_policy
    from vla_ros.policies.remote.server import PolicyServer, ServeConfig, ServerThread

    policy = make_policy("expert", embodiment=embodiment, world=world)
    server = ServerThread(PolicyServer(policy, ServeConfig(host="127.0.0.1", port=port), robot=embodiment.robot))
    server.start()
    print(f"serving the scripted expert at {server.url}", flush=True)
    try:
        yield
    finally:
        server.stop()


def dds_classes():
    """(DdsGraph, DdsNode), or an error naming the extra that brings Cyclone DDS."""
    try:
        from vla_ros.dds.node import DdsGraph, DdsNode
    except ImportError as exc:
        if not (exc.name or "").startswith("cyclonedds"):
            raise
        raise MissingDependencyError("cyclonedds", "dds", "Running a node without a sourced ROS 2 (the pip-only "
                                     "DDS backend)") from None
    return DdsGraph, DdsNode


def _log_to_stderr() -> None:
    logging.basicConfig(level=logging.INFO, format="[%(levelname)s] [%(created).3f] %(message)s")


def _spin(node, duration_s: float) -> None:
    """Spin until Ctrl-C, SIGTERM or `duration_s` (if > 0)."""
    if duration_s > 0:
        timer = threading.Timer(duration_s, node.shutdown)
        timer.daemon = True
        timer.start()
    signal.signal(signal.SIGTERM, lambda *_: node.shutdown())
    try:
        node.spin()
    except KeyboardInterrupt:
        node.shutdown()


def _run_rclpy_policy(parameters: dict[str, Any], args: argparse.Namespace) -> int:
    import rclpy
    from rclpy.executors import MultiThreadedExecutor
    from rclpy.parameter import Parameter

    from vla_ros.ros.policy_node import PolicyNode

    rclpy.init(domain_id=args.domain_id) if args.domain_id is not None else rclpy.init()
    overrides = [Parameter(k, value=v) for k, v in parameters.items()]
    if args.use_sim_time:
        overrides.append(Parameter("use_sim_time", value=True))
    node = PolicyNode(parameter_overrides=overrides)
    executor = MultiThreadedExecutor()
    executor.add_node(node)
    try:
        node.trigger_configure()
        node.trigger_activate()
        _spin_rclpy(executor, args.duration)
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


def _run_rclpy_sim(config, args: argparse.Namespace) -> int:
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.parameter import Parameter

    from vla_ros.ros.sim_node import MujocoRobotNode

    rclpy.init(domain_id=args.domain_id) if args.domain_id is not None else rclpy.init()
    names = ("robot", "instruction", "seed", "publish_rate_hz", "camera_rate_hz", "camera_width", "camera_height",
             "realtime_factor", "render")
    node = MujocoRobotNode(parameter_overrides=[Parameter(n, value=getattr(config, n)) for n in names])
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    try:
        with _expert_served(node.world, node.embodiment, args.serve_expert):
            _spin_rclpy(executor, args.duration)
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


def _spin_rclpy(executor, duration_s: float) -> None:
    deadline = time.monotonic() + duration_s if duration_s > 0 else float("inf")
    try:
        while time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.1)
    except KeyboardInterrupt:
        pass
