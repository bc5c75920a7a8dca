"""`vla-ros record`: demonstrations as a LeRobot v3 dataset, from a robot's ROS 2 topics or from the simulator.

Every control tick of an episode becomes a frame: the measured joint positions (`observation.state`), the command
sent to the controllers or a leader arm's positions (`action`, absolute joint targets in the robot's units) and
each camera's image, with the instruction as the task. An interrupted run keeps the episodes already saved.

- From topics (default): keyboard control (Enter starts and stops an episode, d discards it, q quits), or
  `--episodes N --episode-seconds S` to record N episodes back to back; runs on rclpy or pip-only DDS.
- `--sim`: the MuJoCo simulator's scripted expert; only successful episodes are kept.
- `--from-bag BAG...`: rosbag2 (sqlite3, mcap) or ROS 1 bags, one episode each, through the same recorder.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from pathlib import Path

from vla_ros.bench.stats import progress_bar
from vla_ros.cli.arguments import require_count, scene_colors
from vla_ros.cli.nodes import dds_classes
from vla_ros.core.embodiment import available_robots, load_embodiment
from vla_ros.core.errors import ConfigError
from vla_ros.core.pipeline import ActionPipeline, PipelineConfig
from vla_ros.policies.factory import make_policy
from vla_ros.ros.backend import BACKEND_CHOICES, choose_backend
from vla_ros.sim.closed_loop import LoopSettings, run_episode
from vla_ros.sim.episodes import episode_task, make_world
from vla_ros.sim.robots import SIM_ROBOTS, load_simulated_embodiment
from vla_ros.sim.tasks import TASK_TEMPLATES

INPUTS_TIMEOUT_S = 30.0  # timed recording: how long to wait for the robot's topics before giving up


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sim", action="store_true", help="record the simulator's scripted expert, not topics")
    parser.add_argument("--from-bag", type=Path, nargs="+", metavar="BAG", help="convert bags, one episode each")
    parser.add_argument("--robot", default="so101", help=f"robot config name ({', '.join(available_robots())}) or "
                        f"YAML; --sim: {', '.join(SIM_ROBOTS)}")
    parser.add_argument("--task", choices=sorted(TASK_TEMPLATES), default="touch", help="task family")
    parser.add_argument("--colors", default="red,green,blue", help="cube colours in the scene (comma-separated)")
    parser.add_argument("--targets", help="colours the instructions name (default: all of --colors)")
    parser.add_argument("--episodes", type=int, default=20, help="episodes to record (--sim: successful ones)")
    parser.add_argument("--instruction", help="topics: the task of the episodes (the instruction demonstrated)")
    parser.add_argument("--episode-seconds", type=float, default=0.0,
                        help="topics: record --episodes episodes of this length back to back (0: keyboard control)")
    parser.add_argument("--leader-topic", default="", help="topics: a leader arm's JointState topic as the action "
                        "(default: the commands on the robot's joint_trajectory topics)")
    parser.add_argument("--use-sim-time", action="store_true", help="topics: follow /clock (simulators)")
    parser.add_argument("--backend", choices=BACKEND_CHOICES, default=None, help="topics: rclpy or dds")
    parser.add_argument("--domain-id", type=int, help="topics: ROS_DOMAIN_ID")
    parser.add_argument("--seed", type=int, default=5000, help="layout seed of the first episode")
    parser.add_argument("--image-size", type=int, nargs=2, metavar=("H", "W"),
                        help="recorded image size (--sim default 120 160, small is fast to render; topics default: "
                             "each camera's size in the robot config)")
    parser.add_argument("--out", type=Path, required=True, help="dataset folder (appends if it exists)")
    parser.add_argument("--no-progress", action="store_true")


def record(args: argparse.Namespace) -> dict:
    colors, targets = scene_colors(args.colors, args.targets)
    embodiment = load_simulated_embodiment(args.robot)
    height, width = args.image_size or (120, 160)
    world = make_world(embodiment, colors, camera_size=(height, width))
    policy = make_policy("expert", embodiment=embodiment, world=world)
    pipeline = ActionPipeline(embodiment, policy.metadata.features, PipelineConfig())
    settings = LoopSettings()
    writer = _writer(args.out, embodiment, {c.name: (height, width) for c in embodiment.cameras})
    saved, attempts = [], 0
    progress = progress_bar(args.episodes, disabled=args.no_progress)
    try:
        while len(saved) < args.episodes:
            seed = args.seed + attempts
            attempts += 1
            task = episode_task(args.task, targets, seed)
            writer.start_episode(task.instruction)

            def on_tick(now, measured, command, images):
                writer.add_frame(measured, command.positions, {c.name: images[c.name] for c in embodiment.cameras})

            log = run_episode(world, task, seed=seed, policy=policy, pipeline=pipeline, settings=settings,
                              on_tick=on_tick)
            if log.success:
                saved.append(writer.save_episode())
                progress.update(1)
            else:  # the expert rarely fails (a cube knocked away); a failed demonstration teaches the wrong thing
                writer.discard_episode()
                print(f"episode with seed {seed} failed: discarded", file=sys.stderr)
    finally:
        progress.close()
        writer.close()
    return {"dataset": str(args.out), "episodes_saved": len(saved), "attempts": attempts}


def record_topics(args: argparse.Namespace) -> dict:
    """Episodes from the robot's topics, controlled from the keyboard or timed."""
    from vla_ros.ros.recorder_core import NODE_NAME, RecorderCore

    embodiment, writer, recorder = _recorder(args)
    node, backend, spin, stop = _node(NODE_NAME, args)
    core = RecorderCore(node, backend, embodiment, recorder, leader_topic=args.leader_topic)
    print(f"recording {embodiment.robot} into {args.out}: action from {core.action_source}", file=sys.stderr)
    thread = threading.Thread(target=spin, daemon=True)
    thread.start()
    try:
        if args.episode_seconds > 0:
            _timed_episodes(recorder, node.get_clock(), args)
        else:
            _keyboard(recorder, args)
    finally:
        if recorder.status().recording:
            recorder.discard()  # an episode cut short is not a demonstration
        stop()
        thread.join(timeout=5.0)
        writer.close()
    status = recorder.status()
    return {"dataset": str(args.out), "episodes_saved": status.episodes_saved, "attempts": status.episodes_saved,
            "skipped_ticks": status.skipped}


def record_bags(args: argparse.Namespace) -> dict:
    from vla_ros.datasets.bags import convert_bag
    from vla_ros.ros.recorder_core import RecorderInputs

    embodiment, writer, recorder = _recorder(args)
    inputs = RecorderInputs(embodiment, recorder, _StderrLogger(), leader_topic=args.leader_topic)
    saved = []
    try:
        for bag in args.from_bag:
            index = convert_bag(bag, _topic_handlers(inputs), recorder, instruction=args.instruction,
                                control_period_s=embodiment.control_period_s)
            print(f"{bag}: " + (f"episode {index}" if index is not None else
                                f"no frame ({recorder.status().skipped}): nothing saved"), file=sys.stderr)
            if index is not None:
                saved.append(index)
    finally:
        writer.close()
    return {"dataset": str(args.out), "episodes_saved": len(saved), "attempts": len(args.from_bag),
            "dropped": inputs.dropped}


def _recorder(args: argparse.Namespace):
    """(embodiment, dataset writer, EpisodeRecorder) of a recording from topics or bags."""
    from vla_ros.core.recording import EpisodeRecorder

    if not args.instruction:
        raise ConfigError("--instruction is required: the task the episodes demonstrate")
    embodiment = load_embodiment(args.robot)
    sizes = {c.name: tuple(args.image_size) if args.image_size else (c.height, c.width) for c in embodiment.cameras}
    writer = _writer(args.out, embodiment, sizes)
    return embodiment, writer, EpisodeRecorder(embodiment, writer, image_sizes=sizes)


def _topic_handlers(inputs) -> dict:
    """Topic -> handler of a `RecorderInputs`: what the recorder node subscribes to, for reading a bag."""
    handlers = {**{t: inputs.on_joint_state for t in inputs.joint_state_topics},
                **{t: inputs.on_image for t in inputs.camera_topics},
                **{t: inputs.on_command for t in inputs.command_topics}}
    if inputs.leader_topic:
        handlers[inputs.leader_topic] = inputs.on_leader
    return handlers


class _StderrLogger:
    def warning(self, message: str) -> None:
        print(f"warning: {message}", file=sys.stderr)


def _writer(out: Path, embodiment, sizes):
    from vla_ros.datasets.lerobot import LeRobotDatasetWriter

    return LeRobotDatasetWriter(
        out, fps=round(1.0 / embodiment.control_period_s), robot_type=embodiment.robot,
        state_names=list(embodiment.joint_names), action_names=list(embodiment.joint_names), cameras=sizes)


def _timed_episodes(recorder, clock, args: argparse.Namespace) -> None:
    # Timed episodes start only once the topics deliver: the first one must not be spent waiting for discovery.
    deadline = time.monotonic() + INPUTS_TIMEOUT_S
    while missing := recorder.missing_inputs(clock.now().nanoseconds * 1e-9):
        if time.monotonic() > deadline:
            raise ConfigError(f"nothing to record after {INPUTS_TIMEOUT_S:g} s: {missing}. Check that the robot's "
                              "topics are published (and --use-sim-time if they come from a simulator)")
        time.sleep(0.05)
    for _ in range(args.episodes):
        recorder.start(args.instruction)
        time.sleep(args.episode_seconds)
        index = recorder.stop()
        print(f"episode {index} saved" if index is not None else "no frame recorded: check the topics "
              f"({recorder.status().skipped})", file=sys.stderr)


def _keyboard(recorder, args: argparse.Namespace) -> None:
    print("Enter: start/stop an episode   d Enter: discard it   q Enter: quit", file=sys.stderr)
    done = threading.Event()
    threading.Thread(target=_show_progress, args=(recorder, args.episodes, done), daemon=True).start()
    try:
        _keyboard_commands(recorder, args)
    finally:
        done.set()


def _show_progress(recorder, episodes: int, done: threading.Event) -> None:
    """One status line, rewritten twice a second while an episode records."""
    while not done.wait(0.5):
        status = recorder.status()
        if status.recording:
            skipped = sum(status.skipped.values())
            print(f"\r● episode {status.episodes_saved + 1}/{episodes}: {status.frames} frames"
                  + (f", {skipped} ticks skipped (see ~/status)" if skipped else "") + "   ", end="", file=sys.stderr,
                  flush=True)


def _keyboard_commands(recorder, args: argparse.Namespace) -> None:
    while recorder.status().episodes_saved < args.episodes:
        command = sys.stdin.readline()
        if not command or command.strip() == "q":
            return
        status = recorder.status()
        if command.strip() == "d" and status.recording:
            recorder.discard()
            print("\nepisode discarded", file=sys.stderr)
        elif status.recording:
            index = recorder.stop()
            print(f"\nepisode {index} saved ({status.frames} frames)" if index is not None else "\nno frame: not saved",
                  file=sys.stderr)
        else:
            recorder.start(args.instruction)
            print(f"recording '{args.instruction}'... (Enter to stop)", file=sys.stderr)


def _node(name: str, args: argparse.Namespace):
    """(node, backend, spin, stop) on the chosen middleware."""
    from vla_ros.ros.backend import dds_backend, rclpy_backend

    if choose_backend(args.backend) == "rclpy":
        import rclpy
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.parameter import Parameter

        rclpy.init(domain_id=args.domain_id) if args.domain_id is not None else rclpy.init()
        node = rclpy.create_node(name, parameter_overrides=[Parameter("use_sim_time", value=args.use_sim_time)])
        executor = SingleThreadedExecutor()
        executor.add_node(node)

        def stop() -> None:
            executor.shutdown()
            node.destroy_node()
            rclpy.try_shutdown()
        return node, rclpy_backend(), executor.spin, stop
    DdsGraph, DdsNode = dds_classes()
    node = DdsNode(name, DdsGraph(args.domain_id), use_sim_time=args.use_sim_time)
    return node, dds_backend(), node.spin, node.destroy_node


def main(args: argparse.Namespace) -> int:
    require_count(args.episodes, "--episodes")
    result = record(args) if args.sim else record_bags(args) if args.from_bag else record_topics(args)
    print(f"recorded {result['episodes_saved']} episodes ({result['attempts']} attempted) into {result['dataset']}")
    return 0
