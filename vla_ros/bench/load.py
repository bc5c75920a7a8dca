"""`vla-ros bench load`: the demo's closed loop on a quiet machine and beside a busy loop on every core.

A robot's computer is rarely idle (camera drivers, rviz, a browser): this benchmark runs the same episodes twice
per robot, each seed first as the machine is, then while `CpuHog` keeps every core busy (the arms interleaved
episode by episode), and reports success, chunk latency (wall time of `predict_chunk`, p50/p99) and stall time side
by side, with the machine's load during each arm.
Measured latency is charged to simulated time, as in `vla-ros demo`, so a slow chunk costs what it would cost a
real robot. Targets: loaded p50 latency within 2x of idle, loaded success within 0.1 of idle.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from vla_ros.bench.closed_loop import summarize_cell
from vla_ros.bench.machine import CpuHog, CpuTimes, load_average
from vla_ros.bench.stats import progress_bar, report_json, save_figure
from vla_ros.core.errors import ConfigError
from vla_ros.core.pipeline import ActionPipeline, PipelineConfig
from vla_ros.policies.device import add_device_arguments, available_cpus
from vla_ros.policies.factory import DEFAULT_POLICY
from vla_ros.sim.closed_loop import LoopSettings, run_episode
from vla_ros.sim.episodes import episode_task, make_world, parse_colors
from vla_ros.sim.robots import SIM_ROBOTS, load_simulated_embodiment
from vla_ros.sim.tasks import TASK_TEMPLATES

TARGET_LATENCY_RATIO = 2.0  # loaded p50 / idle p50
TARGET_SUCCESS_DROP = 0.1  # idle success - loaded success


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--policy", default=DEFAULT_POLICY, help="policy spec")
    parser.add_argument(
        "--robots", default="so101,panda", help="simulated robots, comma-separated (the built-in VLA knows these two)"
    )
    parser.add_argument("--task", default="touch", choices=sorted(TASK_TEMPLATES), help="task family")
    parser.add_argument("--episodes", type=int, default=10, help="episodes per arm (idle and loaded, same seeds)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the first episode; episode i uses seed+i")
    parser.add_argument("--colors", default="red,green,blue", help="cube colours in the scene (comma-separated)")
    parser.add_argument(
        "--hog-processes",
        type=int,
        default=available_cpus(),
        help="busy-loop processes in the loaded arm (default: one per core)",
    )
    parser.add_argument(
        "--max-minutes",
        type=float,
        default=60.0,
        help="stop starting episodes after this long; the busy loops end by then at the latest",
    )
    parser.add_argument(
        "--hogs-in-bench-session",
        action="store_true",
        help="run the busy loops in the benchmark's own session, where they compete with inference thread by thread "
        "(default: each in a session of its own, as other programs run)",
    )
    add_device_arguments(parser)
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--out", type=Path, default=Path("bench_out"), help="folder for the plot")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


class _Arm:
    """The episodes of one arm and the machine's load while they ran."""

    def __init__(self) -> None:
        self.episodes: list = []
        self.busy = 0  # CPU jiffies, every process
        self.total = 0
        self.loads: list[float] = []  # 1-minute load average after each episode
        self.wall_s = 0.0

    def run(self, run_one) -> None:
        start, started = CpuTimes.now(), time.perf_counter()
        self.episodes.append(run_one())
        end = CpuTimes.now()
        self.wall_s += time.perf_counter() - started
        if start is not None and end is not None:
            self.busy += end.busy - start.busy
            self.total += end.total - start.total
        if (load := load_average()) is not None:
            self.loads.append(load)

    def summary(self, period_s: float) -> dict:
        return {
            "episodes_run": len(self.episodes),
            "wall_time_s": round(self.wall_s, 1),
            "machine": {
                "load_average_1min": round(float(np.mean(self.loads)), 2) if self.loads else None,
                "cpu_busy_fraction": round(self.busy / self.total, 3) if self.total else None,
            },
            **summarize_cell(self.episodes, period_s=period_s),
        }


def run_arms(
    world,
    policy,
    embodiment,
    *,
    task_family: str,
    colors: tuple[str, ...],
    seeds: list[int],
    hog_processes: int,
    hogs_in_bench_session: bool = False,
    deadline: float,
    progress=None,
) -> tuple[dict, dict]:
    """(idle, loaded) figures: each seed runs as the machine is, then again beside the busy loops.

    Interleaving the arms episode by episode keeps a change in the rest of the machine's load (other jobs
    starting or ending) from landing on one arm only.
    """
    pipeline = ActionPipeline(
        embodiment, policy.metadata.features, PipelineConfig(), supports_prefix=policy.metadata.supports_prefix
    )
    settings = LoopSettings()
    idle, loaded = _Arm(), _Arm()
    for seed in seeds:
        if time.monotonic() > deadline:
            break
        task = episode_task(task_family, colors, seed)

        def run_one(task=task, seed=seed):
            return run_episode(world, task, seed=seed, policy=policy, pipeline=pipeline, settings=settings)

        idle.run(run_one)
        hog = CpuHog(
            hog_processes,
            max_seconds=max(1.0, deadline - time.monotonic()) + 120,
            own_sessions=not hogs_in_bench_session,
        )
        with hog:
            loaded.run(run_one)
        if progress is not None:
            progress.update(2)
    period = embodiment.control_period_s
    return idle.summary(period), loaded.summary(period)


def compare(idle: dict, loaded: dict) -> dict:
    """Loaded against idle, and whether the targets hold."""
    idle_p50, loaded_p50 = idle["policy_latency_ms"]["p50"], loaded["policy_latency_ms"]["p50"]
    ratio = round(loaded_p50 / idle_p50, 2) if idle_p50 > 0 else None
    drop = round(idle["success_rate"] - loaded["success_rate"], 3)
    return {
        "latency_p50_ratio": ratio,
        "success_drop": drop,
        "latency_within_target": ratio is not None and ratio <= TARGET_LATENCY_RATIO,
        "success_within_target": drop <= TARGET_SUCCESS_DROP,
    }


def _robots(text: str) -> list:
    names = [r.strip() for r in text.split(",") if r.strip()]
    if not names:
        raise ConfigError(f"--robots is empty: give one or more of {', '.join(SIM_ROBOTS)}, comma-separated")
    return [load_simulated_embodiment(name) for name in names]


def run(args: argparse.Namespace) -> dict:
    from vla_ros.policies.factory import PolicyOptions, make_policy

    robots = _robots(args.robots)
    if args.episodes < 1:
        raise ConfigError(f"--episodes must be 1 or more, got {args.episodes}")
    if args.hog_processes < 1:
        raise ConfigError(f"--hog-processes must be 1 or more, got {args.hog_processes}")
    colors = parse_colors(args.colors)
    seeds = [args.seed + i for i in range(args.episodes)]
    deadline = time.monotonic() + args.max_minutes * 60
    progress = progress_bar(2 * len(robots) * len(seeds), disabled=args.no_progress)
    results = {
        "benchmark": "load",
        "policy": args.policy,
        "task": args.task,
        "episodes_per_arm": args.episodes,
        "seeds": seeds,
        "cores": available_cpus(),
        "hogs_in_bench_session": args.hogs_in_bench_session,
        "hog_processes": args.hog_processes,
        "load_average_1min_before": load_average(),
        "robots": [],
    }
    try:
        for embodiment in robots:
            world = make_world(embodiment, colors)
            policy = make_policy(
                args.policy,
                embodiment=embodiment,
                world=world,
                options=PolicyOptions(device=args.device, dtype=args.dtype, threads=args.threads),
            )
            try:
                idle, loaded = run_arms(
                    world,
                    policy,
                    embodiment,
                    task_family=args.task,
                    colors=colors,
                    seeds=seeds,
                    hog_processes=args.hog_processes,
                    hogs_in_bench_session=args.hogs_in_bench_session,
                    deadline=deadline,
                    progress=progress,
                )
            finally:
                policy.close()
                world.close()
            results["robots"].append(
                {
                    "robot": embodiment.robot,
                    "inference_threads": policy.metadata.threads,
                    "threads_reason": policy.metadata.threads_reason,
                    "idle": idle,
                    "loaded": loaded,
                    "loaded_vs_idle": compare(idle, loaded),
                }
            )
    finally:
        progress.close()
    results["definitions"] = {
        "policy_latency_ms": "wall time of each predict_chunk (charged to simulated time, as in the demo)",
        "stall_time_s": "mean per episode of the time the arm held for want of a chunk",
        "cpu_busy_fraction": "share of all cores' time busy during the arm's episodes (/proc/stat), every process",
        "load_average_1min": "mean over the arm's episodes of the 1-minute load average at each episode's end",
        "targets": f"loaded p50 latency <= {TARGET_LATENCY_RATIO}x idle; loaded success >= idle - "
        f"{TARGET_SUCCESS_DROP}",
    }
    return results


def table(results: dict) -> str:
    """A Markdown table of the results, one row per robot and arm."""
    lines = [
        "| robot | arm | success | latency p50 / p99 (ms) | stall (s/episode) | load avg | CPU busy |",
        "|---|---|---|---|---|---|---|",
    ]
    for entry in results["robots"]:
        for arm in ("idle", "loaded"):
            cell = entry[arm]
            latency = cell["policy_latency_ms"]
            machine = cell["machine"]
            lines.append(
                f"| {entry['robot']} | {arm} | {cell['success_rate']:.2f} ({cell['episodes_run']} ep) | "
                f"{latency['p50']:.0f} / {latency['p99']:.0f} | {cell['stall_time_s']:.2f} | "
                f"{machine['load_average_1min']} | {machine['cpu_busy_fraction']} |"
            )
    return "\n".join(lines)


def plot(results: dict, path: Path) -> Path:
    """Success, latency p50/p99 and stall per robot, idle next to loaded."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    robots = [entry["robot"] for entry in results["robots"]]
    x = np.arange(len(robots))
    width = 0.38
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.4))
    for offset, arm, color in ((-width / 2, "idle", "tab:blue"), (width / 2, "loaded", "tab:red")):
        cells = [entry[arm] for entry in results["robots"]]
        axes[0].bar(x + offset, [c["success_rate"] for c in cells], width, color=color, label=arm)
        p50 = np.array([c["policy_latency_ms"]["p50"] for c in cells])
        p99 = np.array([c["policy_latency_ms"]["p99"] for c in cells])
        axes[1].bar(x + offset, p50, width, color=color, label=f"{arm} p50")
        axes[1].errorbar(x + offset, p50, yerr=[np.zeros_like(p50), p99 - p50], fmt="none", ecolor="black", capsize=4)
        axes[2].bar(x + offset, [c["stall_time_s"] for c in cells], width, color=color, label=arm)
    for axis, label in zip(
        axes, ("success rate", "chunk latency [ms] (bar p50, whisker p99)", "stall [s per episode]"), strict=True
    ):
        axis.set_xticks(x, robots)
        axis.set_ylabel(label, fontsize=8)
        axis.legend(fontsize=7)
    axes[0].set_ylim(0, 1.05)
    fig.suptitle(
        f"vla-ros bench load: {results['policy']}, {results['episodes_per_arm']} episodes per arm, "
        f"{results['hog_processes']} busy loops on {results['cores']} cores"
        f"{' in its session' if results['hogs_in_bench_session'] else ', each its own program'}",
        fontsize=10,
    )
    return save_figure(fig, path, dpi=90)


def main(args: argparse.Namespace) -> int:
    results = run(args)
    results["plot"] = str(plot(results, args.out / f"load_{results['task']}.png"))
    report_json(results, args.json)
    print(table(results), file=sys.stderr)
    return 0
