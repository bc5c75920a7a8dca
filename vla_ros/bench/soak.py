"""`vla-ros bench soak`: the policy node's logic driving the simulator in real time, for a long time.

`PolicyRunner` (what the policy node runs: observation assembly, the action pipeline, inference on its own
thread) drives the MuJoCo arm on a wall-clock control loop; the simulator plays the robot, its joint states fed
every tick and its cameras at 10 Hz, on one continuous clock across episodes (a new layout when an episode
succeeds or times out). Reported: resident memory over time (growth after warm-up), control deadlines missed (a
tick that starts later than its period after its schedule), tick durations, chunks, episodes and successes.
Goals: memory growth <= 5%, missed deadlines <= 1%.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

from vla_ros.bench.stats import save_figure, summarize_ms

CAMERA_PERIOD_S = 0.1  # 10 Hz cameras, as the MuJoCo robot node publishes them
MEMORY_SAMPLE_S = 5.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--minutes", type=float, default=30.0, help="how long to run (wall clock)")
    parser.add_argument("--warmup-minutes", type=float, default=2.0, help="memory growth is measured from here")
    parser.add_argument("--robot", default="so101")
    parser.add_argument("--policy", default="builtin", help="policy spec (default: builtin)")
    parser.add_argument("--image-size", type=int, nargs=2, default=[120, 160], metavar=("H", "W"),
                        help="rendered camera size")
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--out", type=Path, default=Path("soak_out"), help="folder for the plot")


def resident_bytes() -> int:
    with open("/proc/self/statm", encoding="ascii") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def run(args: argparse.Namespace) -> dict:
    from vla_ros.core.embodiment import load_embodiment
    from vla_ros.core.runner import PolicyRunner
    from vla_ros.policies.factory import PolicyOptions, make_policy
    from vla_ros.sim.episodes import episode_task, make_world

    embodiment = load_embodiment(args.robot)
    world = make_world(embodiment, ("red", "green", "blue"), camera_size=tuple(args.image_size))
    policy = make_policy(args.policy, embodiment=embodiment, world=world, options=PolicyOptions(device="cpu"))
    runner = PolicyRunner(embodiment, policy)
    period = embodiment.control_period_s
    seed, offset = 0, 0.0  # the robot's clock: offset + world.time, continuous across episodes
    task = episode_task("touch", ("red", "green", "blue"), seed)
    world.reset(task, seed=seed)
    runner.set_instruction(task.instruction)
    episodes, successes, ticks, missed = 0, 0, 0, 0
    tick_ms, lateness_ms, memory = [], [], []
    next_frame = 0.0
    started = time.monotonic()
    end = started + args.minutes * 60
    next_memory, schedule = started, started
    while True:
        now_wall = time.monotonic()
        if now_wall >= end:
            break
        lateness = now_wall - schedule
        lateness_ms.append(lateness * 1e3)
        if lateness > period:
            missed += 1
        t0 = time.perf_counter()
        stamp = offset + world.time
        runner.add_joint_state("/joint_states", stamp, world.joint_names, world.joint_positions())
        if world.time >= next_frame:
            for camera, image in world.render_cameras().items():
                runner.add_image(camera, stamp, image)
            next_frame += CAMERA_PERIOD_S
        result = runner.tick(stamp)
        if result.command is not None and result.command.send:
            world.send_trajectory(result.command.trajectory)
        world.advance(period)
        ticks += 1
        if task.is_success(world) or world.time >= task.max_duration_s:
            successes += task.is_success(world)
            episodes += 1
            seed += 1
            offset += world.time
            task = episode_task("touch", ("red", "green", "blue"), seed)
            world.reset(task, seed=seed)
            runner.reset()
            runner.set_instruction(task.instruction)
            next_frame = 0.0
        tick_ms.append((time.perf_counter() - t0) * 1e3)
        if now_wall >= next_memory:
            memory.append((round(now_wall - started, 1), resident_bytes()))
            next_memory += MEMORY_SAMPLE_S
        schedule += period
        if schedule < time.monotonic() - period:  # far behind: start afresh, as a ROS timer does, no burst
            schedule = time.monotonic()
        time.sleep(max(0.0, schedule - time.monotonic()))
    runner.close()
    memory.append((round(time.monotonic() - started, 1), resident_bytes()))
    after_warmup = [m for t, m in memory if t >= args.warmup_minutes * 60] or [memory[-1][1]]
    growth = (after_warmup[-1] - after_warmup[0]) / after_warmup[0]
    results = {
        "benchmark": "soak",
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                    "python": platform.python_version()},
        "robot": args.robot, "policy": policy.metadata.name, "minutes": args.minutes,
        "warmup_minutes": args.warmup_minutes, "control_rate_hz": round(1 / period, 2),
        "ticks": ticks, "missed_deadlines": missed, "missed_fraction": round(missed / max(1, ticks), 5),
        "tick_ms": summarize_ms(tick_ms), "lateness_ms": summarize_ms(lateness_ms),
        "episodes": episodes, "successes": successes, "chunks": runner.stats.chunks_received,
        "policy_errors": runner.stats.policy_errors,
        "inference_latency_mean_ms": round(runner.stats.inference_latency_mean_s * 1e3, 2),
        "rss_mb": {"start": round(memory[0][1] / 2**20, 1),
                   "after_warmup": round(after_warmup[0] / 2**20, 1), "end": round(memory[-1][1] / 2**20, 1),
                   "max": round(max(m for _, m in memory) / 2**20, 1)},
        "rss_growth_after_warmup": round(growth, 4),
        "goals": {"rss_growth_le_5pct": growth <= 0.05, "missed_le_1pct": missed / max(1, ticks) <= 0.01},
        "memory_samples": memory,
    }
    results["plot"] = str(_plot(results, args.out / f"soak_{args.robot}.png"))
    return results


def _plot(results: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    times, rss = zip(*results["memory_samples"], strict=True)
    fig, axis = plt.subplots(figsize=(6, 3))
    axis.plot(np.array(times) / 60, np.array(rss) / 2**20)
    axis.axvline(results["warmup_minutes"], color="grey", linestyle="--", label="end of warm-up")
    axis.set_xlabel("minutes")
    axis.set_ylabel("resident memory [MB]")
    axis.set_title(f"soak: {results['ticks']} ticks, {results['missed_fraction'] * 100:.2f}% missed, "
                   f"RSS {results['rss_growth_after_warmup'] * 100:+.1f}%")
    axis.legend()
    return save_figure(fig, path, dpi=80)


def main(args: argparse.Namespace) -> int:
    results = run(args)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    print(json.dumps({k: v for k, v in results.items() if k != "memory_samples"}, indent=2))
    return 0
