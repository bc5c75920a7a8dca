"""`vla-ros bench closed-loop`: sync vs async inference and each merge strategy, under added latency.

Every cell of the grid modes x merges x latencies runs the demo's closed loop (`vla_ros.sim.closed_loop.run_episode`)
on the same episode seeds and reports success, task time, stall time, policy latency, and the jerk of the
commanded positions at chunk seams and within chunks.

Jerk at tick k is the third difference (x[k] - 3x[k-1] + 3x[k-2] - x[k-3]) / dt^3 of the commanded
positions, joint units / s^3. A *seam* is a tick at which a chunk took over from an earlier chunk of the
episode; a jump between ticks s-1 and s shows in the jerk at ticks s, s+1 and s+2, the *seam samples*.
*Within-chunk samples* are the others whose window k-3..k has no held tick (a stop while waiting for a
chunk is counted as stall time, not as jerk within a chunk). Figures are the RMS over samples and joints.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vla_ros.bench.stats import progress_bar, report_json, save_figure, summarize_ms
from vla_ros.core.embodiment import EmbodimentConfig
from vla_ros.core.errors import ConfigError, parse_choices
from vla_ros.core.pipeline import ActionPipeline, PipelineConfig
from vla_ros.core.scheduler import MergeStrategy
from vla_ros.policies.base import Policy
from vla_ros.policies.device import add_device_arguments
from vla_ros.policies.factory import DEFAULT_POLICY
from vla_ros.sim.closed_loop import EpisodeLog, InferenceMode, LoopSettings, run_episode
from vla_ros.sim.episodes import episode_task, make_world, parse_colors
from vla_ros.sim.robots import SIM_ROBOT_HELP, load_simulated_embodiment
from vla_ros.sim.tasks import TASK_TEMPLATES

JERK_WINDOW = 3  # a third difference spans ticks k-3..k


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--policy", default=DEFAULT_POLICY, help="policy spec (default: %(default)s)")
    parser.add_argument("--robot", default="so101", help=SIM_ROBOT_HELP)
    parser.add_argument("--task", default="touch", choices=sorted(TASK_TEMPLATES), help="task family")
    parser.add_argument("--episodes", type=int, default=5, help="episodes per cell (the same seeds in every cell)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the first episode; episode i uses seed+i")
    parser.add_argument("--colors", default="red,green,blue", help="cube colours in the scene (comma-separated)")
    parser.add_argument("--modes", default="sync,async", help="inference modes to compare (comma-separated)")
    parser.add_argument("--merges", default=",".join(m.value for m in MergeStrategy),
                        help="merge strategies to compare (comma-separated)")
    parser.add_argument("--latencies-ms", default="0,100,300",
                        help="artificial inference latencies to add, simulated ms (comma-separated)")
    parser.add_argument("--no-measured-latency", action="store_true",
                        help="do not charge predict_chunk's wall time as latency (only the artificial latency)")
    add_device_arguments(parser)
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--out", type=Path, default=Path("bench_out"), help="folder for the plot")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


@dataclass(frozen=True)
class JerkSamples:
    """Squared jerk values ((joint units / s^3)^2, one per joint and sample) split by where they fall."""

    seams: np.ndarray
    within_chunks: np.ndarray


def jerk_samples(commanded: np.ndarray, *, period_s: float, seam_ticks, held) -> JerkSamples:
    """Split the jerk of `commanded` (N, n) positions, one row per tick, into seam and within-chunk samples.

    `seam_ticks`: ticks at which a chunk took over; `held` (N,) bool: ticks that held for want of a chunk.
    See the module docstring for the definitions.
    """
    commanded = np.asarray(commanded, dtype=np.float64)
    count = len(commanded)
    if count <= JERK_WINDOW:
        empty = np.empty(0)
        return JerkSamples(seams=empty, within_chunks=empty)
    jerk = np.diff(commanded, n=JERK_WINDOW, axis=0) / period_s**JERK_WINDOW  # row i is tick i + 3
    ticks = np.arange(JERK_WINDOW, count)
    at_seam = np.zeros(count, dtype=bool)
    for seam in seam_ticks:
        at_seam[seam : seam + JERK_WINDOW] = True
    held = np.asarray(held, dtype=bool)
    # A window k-3..k touches a held tick when any of the last four ticks held.
    held_window = np.convolve(held.astype(int), np.ones(JERK_WINDOW + 1, dtype=int))[:count] > 0
    seam_rows = at_seam[ticks]
    within_rows = ~seam_rows & ~held_window[ticks]
    return JerkSamples(seams=(jerk[seam_rows] ** 2).ravel(), within_chunks=(jerk[within_rows] ** 2).ravel())


def _rms(squares: list[np.ndarray]) -> float | None:
    values = np.concatenate(squares) if squares else np.empty(0)
    return round(float(np.sqrt(values.mean())), 3) if values.size else None


def summarize_cell(episodes: list[EpisodeLog], *, period_s: float) -> dict:
    """The figures of one grid cell from its episodes."""
    samples = [jerk_samples(np.asarray(e.commanded), period_s=period_s, seam_ticks=e.seam_ticks, held=e.held)
               for e in episodes]
    successes = [e for e in episodes if e.success]
    return {
        "success_rate": round(len(successes) / max(1, len(episodes)), 3),
        "task_time_s": round(float(np.mean([e.duration_s for e in successes])), 3) if successes else None,
        "stall_time_s": round(float(np.mean([e.stall_ticks for e in episodes])) * period_s, 3) if episodes else 0.0,
        "jerk_rms": {"seams": _rms([s.seams for s in samples]),
                     "within_chunks": _rms([s.within_chunks for s in samples])},
        "seams": sum(len(e.seam_ticks) for e in episodes),
        "chunks": sum(len(e.policy_ms) for e in episodes),
        "policy_latency_ms": summarize_ms([ms for e in episodes for ms in e.policy_ms]),
        "charged_latency_ms": summarize_ms([ms for e in episodes for ms in e.latency_ms]),
        "episodes": [e.summary() for e in episodes],
    }


def _parse_latencies(text: str) -> list[float]:
    try:
        values = [float(item) for item in text.split(",") if item.strip()]
    except ValueError as exc:
        raise ConfigError(f"--latencies-ms must be numbers of milliseconds, comma-separated, got '{text}'") from exc
    if not values or any(not np.isfinite(v) or v < 0 for v in values):
        raise ConfigError(f"--latencies-ms must be one or more numbers >= 0, comma-separated, got '{text}'")
    return values


@dataclass(frozen=True)
class GridCell:
    """One configuration of the grid."""

    inference: str  # an InferenceMode value
    merge: str  # a MergeStrategy value
    added_latency_ms: float  # artificial latency added to each chunk


def run_grid(world, policy: Policy, embodiment: EmbodimentConfig, cells: list[GridCell], *, task_family: str,
             colors: tuple[str, ...], seeds: list[int], measure_latency: bool, progress=None) -> list[dict]:
    """The figures of each cell (`summarize_cell`, plus the cell's settings), every cell on the same `seeds`."""
    period = embodiment.control_period_s
    tasks = [episode_task(task_family, colors, seed) for seed in seeds]
    results = []
    for cell in cells:
        settings = LoopSettings(inference=cell.inference, added_latency_s=cell.added_latency_ms / 1e3,
                                     measure_latency=measure_latency)
        pipeline = ActionPipeline(embodiment, policy.metadata.features, PipelineConfig(merge=cell.merge),
                                  supports_prefix=policy.metadata.supports_prefix)
        episodes = []
        for seed, task in zip(seeds, tasks, strict=True):
            episodes.append(run_episode(world, task, seed=seed, policy=policy, pipeline=pipeline,
                                             settings=settings))
            if progress is not None:
                progress.update(1)
        results.append({"inference": settings.inference.value, "merge": MergeStrategy(cell.merge).value,
                        "merge_used": pipeline.merge.value, "added_latency_ms": cell.added_latency_ms,
                        **summarize_cell(episodes, period_s=period)})
    return results


def run(args: argparse.Namespace) -> dict:
    from vla_ros.policies.factory import PolicyOptions, make_policy

    modes = parse_choices(args.modes, [m.value for m in InferenceMode], option="--modes")
    merges = parse_choices(args.merges, [m.value for m in MergeStrategy], option="--merges")
    latencies_ms = _parse_latencies(args.latencies_ms)
    if args.episodes < 1:
        raise ConfigError(f"--episodes must be >= 1, got {args.episodes}")
    embodiment = load_simulated_embodiment(args.robot)
    colors = parse_colors(args.colors)
    world = make_world(embodiment, colors)
    policy = make_policy(args.policy, embodiment=embodiment, world=world,
                         options=PolicyOptions(device=args.device, dtype=args.dtype, threads=args.threads))
    seeds = [args.seed + i for i in range(args.episodes)]
    grid = [GridCell(mode, merge, latency) for mode in modes for merge in merges for latency in latencies_ms]
    progress = progress_bar(len(grid) * len(seeds), disabled=args.no_progress)
    try:
        cells = run_grid(world, policy, embodiment, grid, task_family=args.task, colors=colors, seeds=seeds,
                         measure_latency=not args.no_measured_latency, progress=progress)
    finally:
        progress.close()
        policy.close()
        world.close()
    return {
        "benchmark": "closed_loop",
        "robot": embodiment.robot,
        "task": args.task,
        "policy": policy.metadata.name,
        "policy_is_learned": policy.metadata.learned,
        "policy_description": policy.metadata.description,
        "control_rate_hz": embodiment.control_rate_hz,
        "episodes_per_cell": args.episodes,
        "seeds": seeds,
        "latency_model": {"measured_wall_time": not args.no_measured_latency, "added_ms": latencies_ms},
        "definitions": {
            "task_time_s": "mean simulated time to success, successful episodes only",
            "stall_time_s": "mean per episode of the time the arm held for want of a chunk",
            "jerk_rms": "RMS third difference of commanded positions / dt^3 (joint units/s^3): at ticks s..s+2 "
                        "of each seam s (a chunk taking over from an earlier one) vs within chunks (no hold)",
            "charged_latency_ms": "latency the loop charged per chunk: measured wall time (if on) + added",
        },
        "cells": cells,
    }


def plot(results: dict, path: Path) -> Path:
    """Success rate, task and stall time, and seam vs within-chunk jerk per cell, as a PNG at `path`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cells = results["cells"]
    labels = [f"{c['inference']}/{c['merge']}{'' if c['merge_used'] == c['merge'] else '→' + c['merge_used']}/"
              f"{c['added_latency_ms']:g}ms" for c in cells]
    x = np.arange(len(cells))
    width = 0.4
    fig, (top, middle, bottom) = plt.subplots(3, 1, figsize=(max(6.0, 0.45 * len(cells) + 2), 8.5), sharex=True)
    top.bar(x, [c["success_rate"] for c in cells], color="tab:green")
    top.set_ylabel("success rate")
    top.set_ylim(0, 1.05)
    middle.bar(x - width / 2, [c["task_time_s"] or 0.0 for c in cells], width, label="task time", color="tab:gray")
    middle.bar(x + width / 2, [c["stall_time_s"] for c in cells], width, label="stall time", color="tab:orange")
    middle.set_ylabel("s per episode")
    middle.legend(fontsize=8)
    seams = [c["jerk_rms"]["seams"] or 0.0 for c in cells]
    within = [c["jerk_rms"]["within_chunks"] or 0.0 for c in cells]
    bottom.bar(x - width / 2, seams, width, label="at seams", color="tab:red")
    bottom.bar(x + width / 2, within, width, label="within chunks", color="tab:blue")
    bottom.set_ylabel("RMS jerk [units/s³]")
    if max(seams + within) > 0:
        bottom.set_yscale("log")
    bottom.legend(fontsize=8)
    bottom.set_xticks(x, labels, rotation=60, ha="right", fontsize=7)
    fig.suptitle(f"closed loop: {results['policy']} on {results['robot']} '{results['task']}', "
                 f"{results['episodes_per_cell']} episodes per cell")
    return save_figure(fig, path, dpi=90)


def main(args: argparse.Namespace) -> int:
    results = run(args)
    results["plot"] = str(plot(results, args.out / f"closed_loop_{results['robot']}_{results['task']}.png"))
    report_json(results, args.json)
    return 0
