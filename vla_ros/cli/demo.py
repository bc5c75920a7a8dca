"""`vla-ros demo`: the closed loop of `vla_ros.sim.closed_loop` over episodes, with a video, a plot and a report.

The loop runs on simulated time; inference is charged the measured wall time of `predict_chunk` (unless
turned off) plus an artificial `--latency-ms` (see `vla_ros.sim.closed_loop`). Because the measured time is
charged, a busy machine slows the policy as it would on a robot: the report says when that happened.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

import numpy as np

from vla_ros.bench.machine import CpuTimes, busy_fraction, load_average, load_warning
from vla_ros.bench.stats import progress_bar, summarize_ms
from vla_ros.cli.arguments import require_count, require_milliseconds, scene_colors
from vla_ros.core.pipeline import ActionPipeline, PipelineConfig
from vla_ros.core.scheduler import MergeStrategy
from vla_ros.policies.device import add_device_arguments, available_cpus
from vla_ros.policies.factory import DEFAULT_POLICY, PolicyOptions, make_policy
from vla_ros.sim.closed_loop import EpisodeLog, InferenceMode, LoopSettings, run_episode
from vla_ros.sim.episodes import episode_task, make_world
from vla_ros.sim.robots import SIM_ROBOT_HELP, load_simulated_embodiment
from vla_ros.sim.tasks import TASK_TEMPLATES

VIDEO_FRAME_SIZE = (240, 320)  # (H, W) of each camera in the video
CAPTION_HEIGHT = 48  # px: the caption sits above the cameras, never over the scene (288 px: a multiple of 8)
OUTCOME_HOLD_S = 1.0  # the last frame of an episode stays this long with its outcome


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--robot", default="so101", help=SIM_ROBOT_HELP)
    parser.add_argument("--task", default="touch", choices=sorted(TASK_TEMPLATES), help="task family")
    parser.add_argument("--episodes", type=int, default=10, help="number of episodes")
    parser.add_argument("--policy", default=DEFAULT_POLICY,
                        help="builtin, expert (the simulator's scripted expert, not a VLA), a checkpoint directory "
                             "or ws://host:port")
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
    parser.add_argument("--video-episodes", type=int, default=2,
                        help="the first N episodes go into the video (0: no video; each rendered tick costs time)")
    parser.add_argument("--dry-run", action="store_true", help="compute commands but never send them")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


class DemoVideo:
    """Frames of the first episodes: the cameras side by side under a caption with the episode and its instruction,
    and, at each episode's end, its outcome held for `OUTCOME_HOLD_S`."""

    def __init__(self, *, episodes: int, fps: float):
        self.episodes = episodes
        self.fps = fps
        self.frames: list[np.ndarray] = []
        self.seeds: list[int] = []
        self._caption = ""
        self._last: np.ndarray | None = None

    def start_episode(self, index: int, seed: int, instruction: str) -> None:
        self.seeds.append(seed)
        self._caption = f"episode {index + 1}/{self.episodes} (seed {seed}): {instruction}"
        self._last = None

    def add(self, images: dict[str, np.ndarray], now: float) -> None:
        import cv2

        height, width = VIDEO_FRAME_SIZE
        tiles = [cv2.resize(images[name], (width, height), interpolation=cv2.INTER_AREA) for name in sorted(images)]
        scene = np.hstack(tiles)
        self._last = scene
        self.frames.append(self._compose(scene, f"t = {now:4.1f} s", (200, 200, 200)))

    def end_episode(self, log: EpisodeLog) -> None:
        if self._last is None:
            return
        outcome = (f"SUCCESS after {log.duration_s:.1f} s", (60, 220, 60)) if log.success else (
            f"FAILED: not done in {log.duration_s:.1f} s", (240, 70, 60))
        self.frames.extend([self._compose(self._last, *outcome)] * max(1, round(OUTCOME_HOLD_S * self.fps)))

    def _compose(self, scene: np.ndarray, status: str, status_color: tuple[int, int, int]) -> np.ndarray:
        import cv2

        bar = np.full((CAPTION_HEIGHT, scene.shape[1], 3), 24, dtype=np.uint8)
        font = cv2.FONT_HERSHEY_SIMPLEX
        cv2.putText(bar, self._caption, (8, 17), font, 0.5, (255, 255, 255), 1, cv2.LINE_AA)
        cv2.putText(bar, status, (8, 37), font, 0.5, status_color, 1, cv2.LINE_AA)
        return np.vstack([bar, scene])


def run(args: argparse.Namespace) -> dict:
    require_count(args.episodes, "--episodes")
    require_count(args.video_episodes, "--video-episodes", minimum=0)
    require_milliseconds(args.latency_ms, "--latency-ms")
    colors, targets = scene_colors(args.colors, args.targets)
    embodiment = load_simulated_embodiment(args.robot)
    settings = LoopSettings(inference=args.inference, added_latency_s=args.latency_ms / 1e3,
                            measure_latency=not args.no_measured_latency)
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
    video = DemoVideo(episodes=args.episodes, fps=1 / period)
    progress = progress_bar(args.episodes, disabled=args.no_progress)
    cpu_start = CpuTimes.now()
    for index in range(args.episodes):
        seed = args.seed + index
        task = episode_task(args.task, targets, seed)
        filmed = index < args.video_episodes
        if filmed:
            video.start_episode(index, seed, task.instruction)
        log = run_episode(world, task, seed=seed, policy=policy, pipeline=pipeline, settings=settings,
                          on_tick=(lambda now, measured, command, images: video.add(images, now)) if filmed else None)
        if filmed:
            video.end_episode(log)
        episodes.append(log)
        progress.write(_episode_line(log, index, args.episodes), file=sys.stdout)
        progress.update(1)
        progress.set_postfix(success=f"{sum(e.success for e in episodes)}/{len(episodes)}")
    progress.close()

    interventions = sum((e.interventions for e in episodes), Counter())
    policy_errors = sum((e.policy_errors for e in episodes), Counter())
    policy_ms = [ms for e in episodes for ms in e.policy_ms]
    machine = {"cores": available_cpus(), "load_average_1min_at_end": load_average(),
               "cpu_busy_fraction": busy_fraction(cpu_start, CpuTimes.now())}
    charged = settings.measure_latency and policy.metadata.learned  # the expert's wall time is negligible
    results = {
        "robot": embodiment.robot,
        "task": args.task,
        "policy": policy.metadata.name,
        "policy_is_learned": policy.metadata.learned,
        "policy_description": policy.metadata.description,
        "policy_device": policy.metadata.device,
        "policy_threads": policy.metadata.threads,
        "policy_load_time_s": round(policy.metadata.load_time_s, 3),
        "merge": args.merge,
        "merge_used": pipeline.merge.value,
        "refill_threshold_steps": pipeline.scheduler.config.refill_threshold_steps,
        "inference": settings.inference.value,
        "latency_model": settings.describe(),
        "dry_run": args.dry_run,
        "success_rate": sum(e.success for e in episodes) / len(episodes),
        "episodes": [e.summary() for e in episodes],
        "policy_latency_ms": summarize_ms(policy_ms),
        "charged_latency_ms": summarize_ms([ms for e in episodes for ms in e.latency_ms]),
        "pipeline_overhead_ms": summarize_ms([ms for e in episodes for ms in e.overhead_ms]),
        "stall_time_s": round(sum(e.stall_ticks for e in episodes) * period, 3),
        "safety_interventions": dict(sorted(interventions.items())),
        "policy_errors": dict(policy_errors),  # the arm held while these lasted
        "machine": machine,
        "load_warning": load_warning(policy_ms, load_1min=machine["load_average_1min_at_end"],
                                     cpus=machine["cores"], threads=policy.metadata.threads) if charged else None,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    if video.frames:
        video_path = _write_video(video.frames, args.out / f"demo_{embodiment.robot}_{args.task}", fps=video.fps)
        results["video"] = str(video_path.resolve())
        results["video_seeds"] = video.seeds
    plot_path = args.out / f"joints_{embodiment.robot}_{args.task}.png"
    results["plot"] = str(_plot_joints(episodes[0], embodiment, plot_path).resolve())
    results["plot_seed"] = episodes[0].seed
    return results


def main(args: argparse.Namespace) -> int:
    results = run(args)
    latency, overhead = results["policy_latency_ms"], results["pipeline_overhead_ms"]
    print(
        f"\nsuccess rate {results['success_rate']:.2f} over {len(results['episodes'])} episodes "
        f"({results['policy']}{'' if results['policy_is_learned'] else ': scripted expert, not a VLA'})\n"
        f"policy latency      p50 {latency['p50']:.2f} ms  p99 {latency['p99']:.2f} ms  (per chunk, wall time)\n"
        f"charged latency     mean {results['charged_latency_ms']['mean']:.2f} ms  ({results['inference']} inference, "
        f"merge {results['merge_used']})\n"
        f"pipeline overhead   mean {overhead['mean']:.3f} ms  p99 {overhead['p99']:.3f} ms  (per step, no inference)\n"
        f"stall time {results['stall_time_s']:.2f} s   safety interventions {results['safety_interventions']}"
    )
    for message, count in results["policy_errors"].items():
        print(f"policy failed {count}x (the arm held meanwhile): {message}")
    if results["load_warning"]:
        print(f"note: {results['load_warning']}")
    episodes = len(results["episodes"])
    print("written:")
    if "video" in results:
        seeds = results["video_seeds"]
        covered = "every episode" if len(seeds) == episodes else (
            f"episodes 1-{len(seeds)} of {episodes}; --video-episodes {episodes} films them all")
        print(f"  video  {results['video']}  ({covered})")
    else:
        print("  video  none (--video-episodes 0)")
    print(f"  plot   {results['plot']}  (joints of episode 1, seed {results['plot_seed']}: commanded vs measured)")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")
        print(f"  json   {args.json.resolve()}")
    return 0


def _episode_line(log: EpisodeLog, index: int, total: int) -> str:
    """One line per episode: what it was asked, what happened, how long the policy took."""
    outcome = f"success in {log.duration_s:.1f} s" if log.success else f"failed (not done in {log.duration_s:.1f} s)"
    latency = f", chunk latency p50 {np.percentile(log.policy_ms, 50):.0f} ms" if log.policy_ms else ""
    return f"episode {index + 1}/{total} (seed {log.seed}) {log.instruction}: {outcome}{latency}"


def _write_video(frames: list[np.ndarray], stem: Path, *, fps: float) -> Path:
    import imageio.v2 as imageio

    try:
        path = stem.with_suffix(".mp4")
        imageio.mimwrite(path, frames, fps=fps, macro_block_size=8)
    except Exception:  # noqa: BLE001 - no ffmpeg backend: a GIF still shows the run
        path = stem.with_suffix(".gif")
        imageio.mimwrite(path, frames[::2], duration=2 / fps)
    return path


def _plot_joints(log: EpisodeLog, embodiment, path: Path) -> Path:
    """Commanded and measured position of every joint over one episode, each in its unit."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    times = np.asarray(log.times)
    commanded, measured = np.asarray(log.commanded), np.asarray(log.measured)
    joints = embodiment.joints
    fig, axes = plt.subplots(len(joints), 1, figsize=(8, 1.6 * len(joints)), sharex=True)
    for i, axis in enumerate(np.atleast_1d(axes)):
        axis.plot(times, commanded[:, i], label="commanded", linewidth=1.5)
        axis.plot(times, measured[:, i], label="measured", linewidth=1.0, linestyle="--")
        axis.set_ylabel(f"{joints[i].name}\n[{joints[i].unit.value}]", rotation=0, ha="right", fontsize=8)
    np.atleast_1d(axes)[0].legend(loc="upper right", fontsize=8)
    np.atleast_1d(axes)[-1].set_xlabel("simulated time [s]")
    outcome = f"success after {log.duration_s:.1f} s" if log.success else f"failure, stopped at {log.duration_s:.1f} s"
    fig.suptitle(f"{embodiment.robot}: {log.instruction} (seed {log.seed}, {outcome})")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
