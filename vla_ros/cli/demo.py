"""`vla-ros demo`: the closed loop sim -> observation -> adapter -> policy -> scheduler -> safety -> sim.

The loop runs on simulated time, and inference takes simulated time too: its latency is the measured wall
time of `predict_chunk` (unless turned off) plus an artificial `--latency-ms`. The world is frozen while
`predict_chunk` runs, so the policy sees the observation at the time it was taken; the chunk then becomes
available `latency` seconds of simulated time later, at the first control tick from then on.

- `sync`: the robot waits for each chunk: it brakes to a stop and holds (stall time) until the chunk
  arrives, then executes it from its first step, as if no time had passed (the controller's clock stands
  still while it waits).
- `async`: the robot keeps executing the queue meanwhile; on arrival the scheduler drops the chunk's steps
  that are already in the past and merges the rest (replace, blend, ensemble, or rtc).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

import numpy as np

from vla_ros.bench.stats import summarize_ms
from vla_ros.core.embodiment import available_robots, load_embodiment
from vla_ros.core.errors import ConfigError, PolicyError
from vla_ros.core.features import RobotObservation
from vla_ros.core.pipeline import ActionPipeline, ChunkRequest, PipelineConfig
from vla_ros.core.scheduler import MergeStrategy
from vla_ros.policies.base import Policy
from vla_ros.policies.device import add_device_arguments
from vla_ros.policies.factory import DEFAULT_POLICY, PolicyOptions, make_policy
from vla_ros.sim.tasks import TASK_TEMPLATES

VIDEO_FRAME_SIZE = (240, 320)  # (H, W) of each camera in the video


class InferenceMode(str, Enum):
    """How the control loop and inference share time (see the module docstring)."""

    SYNC = "sync"  # the robot holds while the policy computes
    ASYNC = "async"  # the robot executes the queue while the policy computes


@dataclass(frozen=True)
class LoopSettings:
    """How the closed loop charges inference time.

    - `inference`: sync or async (an `InferenceMode` or its value).
    - `added_latency_s`: artificial latency added to every chunk (s, >= 0), e.g. a slower GPU or a network.
    - `measure_latency`: also charge the measured wall time of `predict_chunk`; off, results do not depend
      on this machine's speed.
    """

    inference: InferenceMode = InferenceMode.ASYNC
    added_latency_s: float = 0.0
    measure_latency: bool = True

    def __post_init__(self) -> None:
        valid = [m.value for m in InferenceMode]
        if self.inference not in valid:
            raise ConfigError(f"inference must be one of {valid}, got {self.inference!r}", key="inference")
        object.__setattr__(self, "inference", InferenceMode(self.inference))
        if not (math.isfinite(self.added_latency_s) and self.added_latency_s >= 0):
            raise ConfigError(f"added latency must be >= 0 s, got {self.added_latency_s}", key="latency_ms")

    def describe(self) -> dict:
        """The latency model, for results files."""
        return {"inference": self.inference.value, "measured_wall_time": self.measure_latency,
                "added_ms": round(self.added_latency_s * 1e3, 3)}


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


@dataclass
class EpisodeLog:
    """One episode of the closed loop, tick by tick (tick k at `times[k]`, simulated s)."""

    seed: int
    instruction: str
    success: bool = False
    duration_s: float = 0.0
    steps: int = 0
    times: list[float] = field(default_factory=list)
    commanded: list[np.ndarray] = field(default_factory=list)  # (n,) safe command of each tick
    measured: list[np.ndarray] = field(default_factory=list)
    held: list[bool] = field(default_factory=list)  # the tick held for want of a chunk (no_action_hold)
    seam_ticks: list[int] = field(default_factory=list)  # ticks at which a chunk took over from an earlier one
    policy_ms: list[float] = field(default_factory=list)  # wall time of each predict_chunk
    latency_ms: list[float] = field(default_factory=list)  # latency charged to each chunk (simulated)
    overhead_ms: list[float] = field(default_factory=list)  # pipeline time of each tick, inference excluded
    interventions: Counter[str] = field(default_factory=Counter)
    policy_errors: Counter[str] = field(default_factory=Counter)  # message -> times predict_chunk raised it
    frames: list[np.ndarray] = field(default_factory=list)

    @property
    def stall_ticks(self) -> int:
        return sum(self.held)

    def summary(self) -> dict:
        return {"seed": self.seed, "instruction": self.instruction, "success": self.success,
                "duration_s": round(self.duration_s, 3), "steps": self.steps}


@dataclass
class _ChunkInFlight:
    actions: np.ndarray
    request: ChunkRequest
    ready_at: float  # simulated s: the first tick at or after it may use the chunk


def episode_task(task_family: str, colors: tuple[str, ...], seed: int):
    """The task of episode `seed`: a `task_family` task on a colour drawn from `colors` by the seed."""
    from vla_ros.sim.tasks import parse_instruction

    color = colors[np.random.default_rng(seed).integers(len(colors))]
    return parse_instruction(TASK_TEMPLATES[task_family].format(color=color))


def run_episode(world, task, *, seed: int, policy: Policy, pipeline: ActionPipeline, settings: LoopSettings,
                record_video: bool = False, on_tick: Callable | None = None) -> EpisodeLog:
    """Run one episode of `task` in `world` (reset with `seed`) until success or the task's time limit.

    `on_tick(now, measured, command, images)`, if given, sees every control tick with the cameras rendered
    (the demonstration recorder).
    """
    world.reset(task, seed=seed)
    policy.reset(seed=seed)  # a stochastic policy samples the same noise for the same episode
    pipeline.reset(world.joint_positions())
    log = EpisodeLog(seed=seed, instruction=task.instruction)
    period = pipeline.embodiment.control_period_s
    sync = settings.inference is InferenceMode.SYNC
    in_flight: _ChunkInFlight | None = None
    waited_s = 0.0  # sync: simulated time spent waiting for chunks, during which the controller's clock stood still
    chunks = 0
    while world.time < task.max_duration_s:
        now = world.time
        control_now = now - waited_s
        measured = world.joint_positions()
        wants_chunk = in_flight is None and pipeline.needs_chunk(control_now)
        images = world.render_cameras() if record_video or wants_chunk or on_tick else {}
        overhead = 0.0
        if wants_chunk:
            observation = RobotObservation(stamp=control_now, joint_names=world.joint_names, joint_positions=measured,
                                           images=images, instruction=task.instruction)
            t0 = time.perf_counter()
            batch, request = pipeline.prepare(observation, now=control_now)
            t1 = time.perf_counter()
            try:
                actions = policy.predict_chunk(batch, request.prefix)
            except PolicyError as exc:  # e.g. a policy server that went away: hold, count, ask again next tick
                pipeline.chunk_failed()
                log.policy_errors[str(exc)] += 1
                actions = None
            inference_s = time.perf_counter() - t1
            overhead += t1 - t0
            if actions is not None:
                latency_s = (inference_s if settings.measure_latency else 0.0) + settings.added_latency_s
                log.policy_ms.append(inference_s * 1e3)
                log.latency_ms.append(latency_s * 1e3)
                in_flight = _ChunkInFlight(actions, request, ready_at=now + latency_s)
        if in_flight is not None and now >= in_flight.ready_at - 1e-9:
            t0 = time.perf_counter()
            receipt = pipeline.accept_chunk(in_flight.actions, in_flight.request, now=control_now)
            overhead += time.perf_counter() - t0
            in_flight = None
            if chunks and receipt.queued_steps:
                log.seam_ticks.append(log.steps)  # a tick executes the step nearest to it: the new chunk's first
            chunks += 1
        waiting = sync and in_flight is not None
        t0 = time.perf_counter()
        command = pipeline.step(control_now, measured=measured, observation_stamp=control_now, hold=waiting)
        overhead += time.perf_counter() - t0
        log.overhead_ms.append(overhead * 1e3)
        log.interventions.update(command.report.interventions)
        log.held.append("no_action_hold" in command.report.interventions)
        if command.send:
            world.send_trajectory(command.trajectory)
        log.times.append(now)
        log.commanded.append(command.positions)
        log.measured.append(measured)
        if record_video:
            log.frames.append(_video_frame(images, task.instruction, now, success=log.success))
        if on_tick is not None:
            on_tick(now, measured, command, images)
        world.advance(period)
        if waiting:
            waited_s += period
        log.steps += 1
        if task.is_success(world):
            log.success = True
            break
    log.duration_s = world.time
    return log


def make_world(embodiment, colors: tuple[str, ...], camera_size: tuple[int, int] | None = None):
    """The simulated scene for `embodiment`, rendering (height, width) or its first camera's resolution."""
    from vla_ros.sim.world import SimWorld

    camera = embodiment.cameras[0]
    return SimWorld(embodiment.robot, camera_size=camera_size or (camera.height, camera.width), colors=colors)


def parse_colors(text: str) -> tuple[str, ...]:
    return tuple(c.strip() for c in text.split(",") if c.strip())


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
    for index in range(args.episodes):
        seed = args.seed + index
        task = episode_task(args.task, targets, seed)
        episodes.append(run_episode(world, task, seed=seed, policy=policy, pipeline=pipeline, settings=settings,
                                    record_video=index < args.video_episodes))
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
    frames = [frame for e in episodes for frame in e.frames]
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


def progress_bar(total: int, *, disabled: bool):
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
