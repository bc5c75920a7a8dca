"""Where a policy's simulated episodes end, relative to the cube it was told to touch.

A success rate says how often; this says how the rest fail. Per episode (seeds 0..N-1, the demo's layouts), one
JSON line: success, the tool centre point's closest approach to the named cube in the table plane, and where it
ends: the offset from the cube split into radial (away from the arm's base, which is at the origin) and
tangential parts, and its height above the cube's centre (a touch ends about half a cube plus a pad above it).

    python tools/where_episodes_end.py --policy <checkpoint> --robot xarm7 --episodes 30 > where.jsonl

Latency is not charged (as `vla-ros demo --no-measured-latency`), so the result does not depend on the load.
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from vla_ros.core.pipeline import ActionPipeline, PipelineConfig
from vla_ros.policies.factory import PolicyOptions, make_policy
from vla_ros.sim.closed_loop import LoopSettings, run_episode
from vla_ros.sim.episodes import episode_task, make_world, parse_colors
from vla_ros.sim.robots import load_simulated_embodiment


def end_of_episode(track: np.ndarray, goal: np.ndarray) -> dict:
    """Closest approach and final offset of a (ticks, 3) TCP track from the cube centre `goal` (3,), in cm."""
    planar = np.linalg.norm(track[:, :2] - goal[:2], axis=1)
    outward = goal[:2] / np.linalg.norm(goal[:2])
    sideways = np.array([-outward[1], outward[0]])
    offset = track[-1, :2] - goal[:2]
    return {"closest_cm": round(100 * planar.min(), 1), "final_cm": round(100 * planar[-1], 1),
            "radial_cm": round(100 * offset @ outward, 1), "tangential_cm": round(100 * offset @ sideways, 1),
            "height_above_cube_cm": round(100 * (track[-1, 2] - goal[2]), 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--policy", default="builtin")
    parser.add_argument("--robot", default="so101")
    parser.add_argument("--task", default="touch")
    parser.add_argument("--episodes", type=int, default=30)
    parser.add_argument("--colors", default="red,green,blue")
    args = parser.parse_args()

    embodiment = load_simulated_embodiment(args.robot)
    colors = parse_colors(args.colors)
    world = make_world(embodiment, colors)
    policy = make_policy(args.policy, embodiment=embodiment, world=world, options=PolicyOptions(threads=1))
    pipeline = ActionPipeline(embodiment, policy.metadata.features, PipelineConfig(),
                              supports_prefix=policy.metadata.supports_prefix)
    track: list[np.ndarray] = []
    advance = world.advance

    def advance_and_track(dt: float) -> None:  # the TCP at every physics tick the loop advances
        advance(dt)
        track.append(world.tcp_pose()[0].copy())

    world.advance = advance_and_track
    try:
        for seed in range(args.episodes):
            task = episode_task(args.task, colors, seed)
            track.clear()
            log = run_episode(world, task, seed=seed, policy=policy, pipeline=pipeline,
                              settings=LoopSettings(measure_latency=False))
            goal = world.cube_pose(task.color)[0]
            print(json.dumps({"seed": seed, "color": task.color, "success": log.success,
                              "duration_s": round(log.duration_s, 1), **end_of_episode(np.array(track), goal)}),
                  flush=True)
    finally:
        policy.close()
        world.close()


if __name__ == "__main__":
    main()
