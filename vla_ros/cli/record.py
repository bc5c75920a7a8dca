"""`vla-ros record --sim`: demonstrations from the MuJoCo simulator's scripted expert, as a LeRobot v3 dataset.

Every control tick of an episode becomes a frame: the measured joint positions (`observation.state`), the command
sent to the controllers (`action`, absolute joint targets in the robot's units) and each camera's image, with the
instruction as the task. Only successful episodes are kept; an interrupted run keeps the episodes already saved.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from vla_ros.cli.demo import LoopSettings, episode_task, make_world, parse_colors, progress_bar, run_episode
from vla_ros.core.embodiment import available_robots, load_embodiment
from vla_ros.core.pipeline import ActionPipeline, PipelineConfig
from vla_ros.policies.factory import make_policy
from vla_ros.sim.tasks import TASK_TEMPLATES


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sim", action="store_true", required=True,
                        help="record the simulator's scripted expert (recording from ROS topics: not yet)")
    parser.add_argument("--robot", default="so101", help=f"simulated robot ({', '.join(available_robots())})")
    parser.add_argument("--task", choices=sorted(TASK_TEMPLATES), default="touch", help="task family")
    parser.add_argument("--colors", default="red,green,blue", help="cube colours in the scene (comma-separated)")
    parser.add_argument("--targets", help="colours the instructions name (default: all of --colors)")
    parser.add_argument("--episodes", type=int, default=20, help="successful episodes to record")
    parser.add_argument("--seed", type=int, default=5000, help="layout seed of the first episode")
    parser.add_argument("--image-size", type=int, nargs=2, default=[120, 160], metavar=("H", "W"),
                        help="rendered camera size (policies resize anyway; small is fast to render)")
    parser.add_argument("--out", type=Path, required=True, help="dataset folder (appends if it exists)")
    parser.add_argument("--no-progress", action="store_true")


def record(args: argparse.Namespace) -> dict:
    from vla_ros.datasets.lerobot import LeRobotDatasetWriter

    embodiment = load_embodiment(args.robot)
    colors = parse_colors(args.colors)
    targets = parse_colors(args.targets) if args.targets else colors
    height, width = args.image_size
    world = make_world(embodiment, colors, camera_size=(height, width))
    policy = make_policy("expert", embodiment=embodiment, world=world)
    pipeline = ActionPipeline(embodiment, policy.metadata.features, PipelineConfig())
    settings = LoopSettings()
    fps = round(1.0 / embodiment.control_period_s)
    writer = LeRobotDatasetWriter(
        args.out, fps=fps, robot_type=embodiment.robot, state_names=list(embodiment.joint_names),
        action_names=list(embodiment.joint_names), cameras={c.name: (height, width) for c in embodiment.cameras})
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
    return {"dataset": str(args.out), "episodes_saved": len(saved), "attempts": attempts, "fps": fps}


def main(args: argparse.Namespace) -> int:
    result = record(args)
    print(f"recorded {result['episodes_saved']} episodes ({result['attempts']} attempted) into {result['dataset']}")
    return 0
