"""`vla-ros demo`: the closed loop sim -> observation -> adapter -> policy -> scheduler -> safety -> sim.

The loop runs on simulated time: the simulator is paused while the policy thinks, so results do not
depend on this machine's speed, and latencies are measured on the wall clock beside it.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vla_ros.bench.stats import summarize_ms
from vla_ros.core.embodiment import available_robots, load_embodiment
from vla_ros.core.features import RobotObservation
from vla_ros.core.pipeline import ActionPipeline, PipelineConfig
from vla_ros.core.scheduler import MergeStrategy
from vla_ros.policies.factory import DEFAULT_POLICY, make_policy

TASK_TEMPLATES = {"touch": "touch the {color} cube", "pick": "pick up the {color} cube"}
VIDEO_FRAME_SIZE = (240, 320)  # (H, W) of each camera in the video


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--robot", default="so101", help=f"robot config name ({', '.join(available_robots())})")
    parser.add_argument("--task", default="touch", choices=sorted(TASK_TEMPLATES), help="task family")
    parser.add_argument("--episodes", type=int, default=10, help="number of episodes")
    parser.add_argument("--policy", default=DEFAULT_POLICY, help="policy spec (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the first episode; episode i uses seed+i")
    parser.add_argument("--colors", default="red,green,blue", help="cube colours in the scene (comma-separated)")
    parser.add_argument("--merge", default=MergeStrategy.BLEND.value, choices=[m.value for m in MergeStrategy])
    parser.add_argument("--json", type=Path, help="write machine-readable results here")
    parser.add_argument("--out", type=Path, default=Path("demo_out"), help="folder for the video and plot")
    parser.add_argument("--video-episodes", type=int, default=2, help="episodes to include in the video (0: none)")
    parser.add_argument("--dry-run", action="store_true", help="compute commands but never send them")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


@dataclass
class EpisodeLog:
    seed: int
    instruction: str
    success: bool = False
    duration_s: float = 0.0
    steps: int = 0
    times: list[float] = field(default_factory=list)
    commanded: list[np.ndarray] = field(default_factory=list)
    measured: list[np.ndarray] = field(default_factory=list)

    def summary(self) -> dict:
        return {"seed": self.seed, "instruction": self.instruction, "success": self.success,
                "duration_s": round(self.duration_s, 3), "steps": self.steps}


def run(args: argparse.Namespace) -> dict:
    from vla_ros.sim.tasks import parse_instruction
    from vla_ros.sim.world import SimWorld

    embodiment = load_embodiment(args.robot)
    colors = tuple(c.strip() for c in args.colors.split(",") if c.strip())
    camera = embodiment.cameras[0]
    world = SimWorld(embodiment.robot, camera_size=(camera.height, camera.width), colors=colors)
    policy = make_policy(args.policy, embodiment=embodiment, world=world)
    pipeline = ActionPipeline(
        embodiment, policy.metadata.features, PipelineConfig(merge=MergeStrategy(args.merge), dry_run=args.dry_run)
    )
    period = embodiment.control_period_s
    label = "scripted expert (ground truth, not a VLA)" if not policy.metadata.learned else policy.metadata.description
    print(f"vla-ros demo: robot {embodiment.robot}, task '{args.task}', policy '{policy.metadata.name}': {label}",
          file=sys.stderr)

    policy_ms: list[float] = []
    overhead_ms: list[float] = []
    stall_ticks = 0
    interventions: Counter[str] = Counter()
    episodes: list[EpisodeLog] = []
    frames: list[np.ndarray] = []
    progress = _progress(args.episodes, disabled=args.no_progress)

    for index in range(args.episodes):
        seed = args.seed + index
        color = colors[np.random.default_rng(seed).integers(len(colors))]
        task = parse_instruction(TASK_TEMPLATES[args.task].format(color=color))
        world.reset(task, seed=seed)
        policy.reset()
        pipeline.reset(world.joint_positions())
        log = EpisodeLog(seed=seed, instruction=task.instruction)
        record_video = index < args.video_episodes
        while world.time < task.max_duration_s:
            now = world.time
            measured = world.joint_positions()
            images = world.render_cameras() if record_video or pipeline.needs_chunk(now) else {}
            overhead = 0.0
            if pipeline.needs_chunk(now):
                observation = RobotObservation(stamp=now, joint_names=world.joint_names, joint_positions=measured,
                                               images=images, instruction=task.instruction)
                t0 = time.perf_counter()
                batch, request = pipeline.prepare(observation)
                t1 = time.perf_counter()
                actions = policy.predict_chunk(batch)
                t2 = time.perf_counter()
                pipeline.accept_chunk(actions, request, now=now)
                overhead += (t1 - t0) + (time.perf_counter() - t2)
                policy_ms.append((t2 - t1) * 1e3)
            t0 = time.perf_counter()
            command = pipeline.step(now, measured=measured, observation_stamp=now)
            overhead += time.perf_counter() - t0
            overhead_ms.append(overhead * 1e3)
            interventions.update(command.report.interventions)
            stall_ticks += "no_action_hold" in command.report.interventions
            if command.send:
                world.send_trajectory(command.trajectory)
            log.times.append(now)
            log.commanded.append(command.positions)
            log.measured.append(measured)
            if record_video:
                frames.append(_video_frame(images, task.instruction, now, success=log.success))
            world.advance(period)
            log.steps += 1
            if task.is_success(world):
                log.success = True
                break
        log.duration_s = world.time
        episodes.append(log)
        progress.update(1)
        progress.set_postfix(success=f"{sum(e.success for e in episodes)}/{len(episodes)}")
    progress.close()

    results = {
        "robot": embodiment.robot,
        "task": args.task,
        "policy": policy.metadata.name,
        "policy_is_learned": policy.metadata.learned,
        "policy_description": policy.metadata.description,
        "merge": args.merge,
        "dry_run": args.dry_run,
        "success_rate": sum(e.success for e in episodes) / max(1, len(episodes)),
        "episodes": [e.summary() for e in episodes],
        "policy_latency_ms": summarize_ms(policy_ms),
        "pipeline_overhead_ms": summarize_ms(overhead_ms),
        "stall_time_s": round(stall_ticks * period, 3),
        "safety_interventions": dict(sorted(interventions.items())),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    if frames:
        video_stem = args.out / f"demo_{embodiment.robot}_{args.task}"
        results["video"] = str(_write_video(frames, video_stem, fps=1 / period))
    if episodes:
        plot_path = args.out / f"joints_{embodiment.robot}_{args.task}.png"
        results["plot"] = str(_plot_joints(episodes[0], embodiment.joint_names, plot_path))
    return results


def main(args: argparse.Namespace) -> int:
    results = run(args)
    latency, overhead = results["policy_latency_ms"], results["pipeline_overhead_ms"]
    print(
        f"\nsuccess rate {results['success_rate']:.2f} over {len(results['episodes'])} episodes "
        f"({results['policy']}{'' if results['policy_is_learned'] else ': scripted expert, not a VLA'})\n"
        f"policy latency      mean {latency['mean']:.2f} ms  p99 {latency['p99']:.2f} ms  (per chunk)\n"
        f"pipeline overhead   mean {overhead['mean']:.3f} ms  p99 {overhead['p99']:.3f} ms  (per step, no inference)\n"
        f"stall time {results['stall_time_s']:.2f} s   safety interventions {results['safety_interventions']}"
    )
    for key in ("video", "plot"):
        if key in results:
            print(f"{key}: {results[key]}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")
        print(f"json: {args.json}")
    return 0


def _progress(total: int, *, disabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc="episodes", unit="ep", disable=disabled, file=sys.stderr)


def _video_frame(images: dict[str, np.ndarray], instruction: str, now: float, *, success: bool) -> np.ndarray:
    import cv2

    height, width = VIDEO_FRAME_SIZE
    tiles = [cv2.resize(images[name], (width, height), interpolation=cv2.INTER_AREA) for name in sorted(images)]
    frame = np.ascontiguousarray(np.hstack(tiles))
    cv2.putText(frame, f"{instruction}  t={now:4.1f}s", (6, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1,
                cv2.LINE_AA)
    return frame


def _write_video(frames: list[np.ndarray], stem: Path, *, fps: float) -> Path:
    import imageio.v2 as imageio

    try:
        path = stem.with_suffix(".mp4")
        imageio.mimwrite(path, frames, fps=fps, macro_block_size=8)
    except Exception:  # noqa: BLE001 - no ffmpeg backend: a GIF still shows the run
        path = stem.with_suffix(".gif")
        imageio.mimwrite(path, frames[::2], duration=2 / fps)
    return path


def _plot_joints(log: EpisodeLog, joint_names: tuple[str, ...], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    times = np.asarray(log.times)
    commanded, measured = np.asarray(log.commanded), np.asarray(log.measured)
    n = len(joint_names)
    fig, axes = plt.subplots(n, 1, figsize=(8, 1.6 * n), sharex=True)
    for i, axis in enumerate(np.atleast_1d(axes)):
        axis.plot(times, commanded[:, i], label="commanded", linewidth=1.5)
        axis.plot(times, measured[:, i], label="measured", linewidth=1.0, linestyle="--")
        axis.set_ylabel(joint_names[i], rotation=0, ha="right", fontsize=8)
    np.atleast_1d(axes)[0].legend(loc="upper right", fontsize=8)
    np.atleast_1d(axes)[-1].set_xlabel("time [s]")
    fig.suptitle(f"{log.instruction} (seed {log.seed}, {'success' if log.success else 'failure'})")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
