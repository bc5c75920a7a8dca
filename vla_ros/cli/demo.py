"""`vla-ros demo`: the closed loop of `vla_ros.sim.closed_loop` over episodes, with a video, a plot and a report.

The loop runs on simulated time; inference is charged the measured wall time of `predict_chunk` (unless
turned off) plus an artificial `--latency-ms` (see `vla_ros.sim.closed_loop`).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

import numpy as np

from vla_ros.bench.stats import progress_bar, summarize_ms
from vla_ros.core.embodiment import available_robots, load_embodiment
from vla_ros.core.pipeline import ActionPipeline, PipelineConfig
from vla_ros.core.scheduler import MergeStrategy
from vla_ros.policies.device import add_device_arguments
from vla_ros.policies.factory import DEFAULT_POLICY, PolicyOptions, make_policy
from vla_ros.sim.closed_loop import EpisodeLog, InferenceMode, LoopSettings, run_episode
from vla_ros.sim.episodes import episode_task, make_world, parse_colors
from vla_ros.sim.tasks import TASK_TEMPLATES

VIDEO_FRAME_SIZE = (240, 320)  # (H, W) of each camera in the video


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--robot", default="so101", help=f"robot config name ({', '.join(available_robots())})")
    parser.add_argument("--task", default="touch", choices=sorted(TASK_TEMPLATES), help="task family")
    parser.add_argument("--episodes", type=int, default=10, help="number of episodes")
    parser.add_argument("--policy", default=DEFAULT_POLICY, help="policy spec (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the first episode; episode i uses seed+i")
    parser.add_argument("--colors", default="red,green,blue", help="cube colours in the scene (comma-separated)")
    parser.add_argument("--targets", help="colours the instructions name (comma-separated; default: all of --colors)")
    parser.add_argument("--merge", default=MergeStrategy.BLEND.value, choices=[m.value for m in MergeStrategy],
                        help="how a new chunk joins the queue; rtc needs a flow-matching policy (else replace)")
    parser.add_argument("--inference", default=InferenceMode.ASYNC.value, choices=[m.value for m in InferenceMode],
                        help="sync: the robot waits for each chunk; async: it executes the queue meanwhile")
    parser.add_argument("--latency-ms", type=float, default=0.0,
                        help="artificial inference latency added to every chunk (simulated ms)")
    parser.add_argument("--no-measured-latency", action="store_true",
                        help="do not charge predict_chunk's wall time as latency (only the artificial latency)")
    add_device_arguments(parser)
    parser.add_argument("--refill-threshold", type=int, default=-1, metavar="STEPS",
                        help="ask for a new chunk when this many steps remain (-1: half a chunk)")
    parser.add_argument("--json", type=Path, help="write machine-readable results here")
    parser.add_argument("--out", type=Path, default=Path("demo_out"), help="folder for the video and plot")
    parser.add_argument("--video-episodes", type=int, default=2, help="episodes to include in the video (0: none)")
    parser.add_argument("--dry-run", action="store_true", help="compute commands but never send them")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> dict:
    embodiment = load_embodiment(args.robot)
    settings = LoopSettings(inference=args.inference, added_latency_s=args.latency_ms / 1e3,
                            measure_latency=not args.no_measured_latency)
    colors = parse_colors(args.colors)
    targets = parse_colors(args.targets) if args.targets else colors
    world = make_world(embodiment, colors)
    policy = make_policy(args.policy, embodiment=embodiment, world=world,
                         options=PolicyOptions(device=args.device, dtype=args.dtype, threads=args.threads))
    pipeline = ActionPipeline(
        embodiment, policy.metadata.features,
        PipelineConfig(merge=MergeStrategy(args.merge), dry_run=args.dry_run,
                       refill_threshold_steps=None if args.refill_threshold < 0 else args.refill_threshold),
        supports_prefix=policy.metadata.supports_prefix,
    )
    period = embodiment.control_period_s
    label = "scripted expert (ground truth, not a VLA)" if not policy.metadata.learned else policy.metadata.description
    print(f"vla-ros demo: robot {embodiment.robot}, task '{args.task}', policy '{policy.metadata.name}': {label}; "
          f"{settings.inference.value} inference, merge {pipeline.merge.value}", file=sys.stderr)
    if policy.metadata.threads is not None:
        print(f"vla-ros demo: {policy.metadata.threads} inference thread(s): {policy.metadata.threads_reason}",
              file=sys.stderr)

    episodes: list[EpisodeLog] = []
    progress = progress_bar(args.episodes, disabled=args.no_progress)
    frames: list[np.ndarray] = []
    for index in range(args.episodes):
        seed = args.seed + index
        task = episode_task(args.task, targets, seed)
        on_tick = None
        if index < args.video_episodes:
            def on_tick(now, measured, command, images, instruction=task.instruction):
                frames.append(_video_frame(images, instruction, now))
        episodes.append(run_episode(world, task, seed=seed, policy=policy, pipeline=pipeline, settings=settings,
                                    on_tick=on_tick))
        progress.update(1)
        progress.set_postfix(success=f"{sum(e.success for e in episodes)}/{len(episodes)}")
    progress.close()

    interventions = sum((e.interventions for e in episodes), Counter())
    policy_errors = sum((e.policy_errors for e in episodes), Counter())
    results = {
        "robot": embodiment.robot,
        "task": args.task,
        "policy": policy.metadata.name,
        "policy_is_learned": policy.metadata.learned,
        "policy_description": policy.metadata.description,
        "policy_device": policy.metadata.device,
        "policy_load_time_s": round(policy.metadata.load_time_s, 3),
        "merge": args.merge,
        "merge_used": pipeline.merge.value,
        "refill_threshold_steps": pipeline.scheduler.config.refill_threshold_steps,
        "inference": settings.inference.value,
        "latency_model": settings.describe(),
        "dry_run": args.dry_run,
        "success_rate": sum(e.success for e in episodes) / max(1, len(episodes)),
        "episodes": [e.summary() for e in episodes],
        "policy_latency_ms": summarize_ms([ms for e in episodes for ms in e.policy_ms]),
        "charged_latency_ms": summarize_ms([ms for e in episodes for ms in e.latency_ms]),
        "pipeline_overhead_ms": summarize_ms([ms for e in episodes for ms in e.overhead_ms]),
        "stall_time_s": round(sum(e.stall_ticks for e in episodes) * period, 3),
        "safety_interventions": dict(sorted(interventions.items())),
        "policy_errors": dict(policy_errors),  # the arm held while these lasted
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
        f"policy latency      mean {latency['mean']:.2f} ms  p99 {latency['p99']:.2f} ms  (per chunk, wall time)\n"
        f"charged latency     mean {results['charged_latency_ms']['mean']:.2f} ms  ({results['inference']} inference, "
        f"merge {results['merge_used']})\n"
        f"pipeline overhead   mean {overhead['mean']:.3f} ms  p99 {overhead['p99']:.3f} ms  (per step, no inference)\n"
        f"stall time {results['stall_time_s']:.2f} s   safety interventions {results['safety_interventions']}"
    )
    for message, count in results["policy_errors"].items():
        print(f"policy failed {count}x (the arm held meanwhile): {message}")
    for key in ("video", "plot"):
        if key in results:
            print(f"{key}: {results[key]}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")
        print(f"json: {args.json}")
    return 0


def _video_frame(images: dict[str, np.ndarray], instruction: str, now: float) -> np.ndarray:
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
