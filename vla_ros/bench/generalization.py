"""`vla-ros bench generalization`: success on what training never showed, one axis at a time.

Each axis changes one thing from the built-in VLA's training conditions and keeps the rest:
- layouts: cube layouts of seeds 0.. (training used seeds from 1000), scene and instructions as in training;
- colour: a yellow cube joins red, green and blue, and every instruction names it;
- distractors: non-cube objects and a cube of colours the instructions never name join the three cubes;
- lighting: the key light dimmed, moved to the other side, and every light tinted warm (and each half alone:
  dim-light, warm-light);
- camera: the front camera moved a few centimetres and turned a few degrees;
- arm: the held-out arms (not among the training arms) on the layouts axis's conditions.

The perturbation axes run on the arms the policy was trained on (`--trained-robots`), the arm axis on the others.
Every cell runs the same episode seeds, so the cells differ only in what their axis changes. By default the
loop does not charge inference's wall time to simulated time (`LoopSettings.measure_latency` off): success then
does not depend on how busy the machine is, and a rerun gives the same table.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from vla_ros.bench.closed_loop import summarize_cell
from vla_ros.bench.machine import CpuTimes, busy_fraction, load_average
from vla_ros.bench.stats import progress_bar, report_json, save_figure
from vla_ros.core.errors import ConfigError, parse_choices
from vla_ros.core.pipeline import ActionPipeline, PipelineConfig
from vla_ros.policies.builtin.recipe import COLORS as TRAINING_COLORS
from vla_ros.policies.builtin.recipe import DataRecipe
from vla_ros.policies.device import add_device_arguments, available_cpus
from vla_ros.policies.factory import DEFAULT_POLICY
from vla_ros.sim.closed_loop import LoopSettings, run_episode
from vla_ros.sim.episodes import episode_task, make_world
from vla_ros.sim.robots import SIM_ROBOTS, load_simulated_embodiment
from vla_ros.sim.tasks import TASK_TEMPLATES
from vla_ros.sim.variation import Distractor, SceneVariation


@dataclass(frozen=True)
class Axis:
    """One column of the table: the scene and instructions of its cells, and what differs from training."""

    name: str
    title: str  # the table's column header
    what: str  # exactly what changes, for the table's notes
    colors: tuple[str, ...] = TRAINING_COLORS  # cubes in the scene
    targets: tuple[str, ...] | None = None  # colours instructions name (None: every cube's)
    variation: SceneVariation | None = None
    held_out_arms: bool = False  # runs on the arms the policy was not trained on, not on the trained ones

    def describe(self) -> str:
        return self.what + (f" ({self.variation.describe()})" if self.variation is not None else "")


DISTRACTORS = SceneVariation(distractors=(Distractor("cylinder", "orange"), Distractor("sphere", "purple"),
                                          Distractor("cube", "purple")))
# The key light mirrored across the arm's x axis (from the left instead of the right, so shadows fall the other
# way) at half brightness; every light warm (tungsten-like); and both, the lighting axis. The two halves are axes
# of their own so that a drop on the lighting axis can be traced to one of them.
DIM_LIGHT = SceneVariation(key_light_scale=0.5, key_light_position_m=(0.6, 0.8, 2.0),
                           key_light_direction=(-0.25, -0.35, -1.0))
WARM_LIGHT = SceneVariation(light_tint=(1.0, 0.85, 0.65))
LIGHTING = replace(DIM_LIGHT, light_tint=WARM_LIGHT.light_tint)
CAMERA = SceneVariation(camera_shift_m=(0.02, -0.02, 0.01), camera_pan_deg=3.0, camera_tilt_deg=3.0)

AXES: dict[str, Axis] = {axis.name: axis for axis in (
    Axis("layouts", "held-out layouts", "cube layouts of seeds the training never used (it used seeds >= 1000); "
         "red, green and blue cubes, as in training"),
    Axis("colour", "unseen colour", "a yellow cube (a colour never in training) joins red, green and blue, and every "
         "instruction names yellow", colors=(*TRAINING_COLORS, "yellow"), targets=("yellow",)),
    Axis("distractors", "distractors", "three more objects on the table, placed with the cubes, of colours the "
         "instructions never name", variation=DISTRACTORS),
    Axis("lighting", "lighting", "the key light at half brightness and moved to the other side of the arm, every "
         "light tinted warm", variation=LIGHTING),
    Axis("dim-light", "dim, moved key light", "the lighting axis without the tint: the key light at half brightness "
         "and moved to the other side of the arm", variation=DIM_LIGHT),
    Axis("warm-light", "warm light", "the lighting axis's tint alone: every light tinted warm", variation=WARM_LIGHT),
    Axis("camera", "camera pose", f"the front camera moved {CAMERA.camera_shift_cm:.1f} cm and turned "
         f"{CAMERA.camera_pan_deg:g} deg sideways and {CAMERA.camera_tilt_deg:g} deg down", variation=CAMERA),
    Axis("arm", "held-out arm", "an arm the policy was not trained on, on held-out layouts (as the layouts axis)",
         held_out_arms=True),
)}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--policy", default=DEFAULT_POLICY, help="policy spec")
    parser.add_argument("--robots", default=",".join(SIM_ROBOTS), help="simulated arms, comma-separated")
    parser.add_argument("--trained-robots", default=",".join(DataRecipe().robots),
                        help="the arms the policy was trained on (default: the built-in VLA's): the perturbation "
                             "axes run on these, the 'arm' axis on the others of --robots")
    parser.add_argument("--axes", default=",".join(AXES), help="axes to measure, comma-separated")
    parser.add_argument("--task", default="touch", choices=sorted(TASK_TEMPLATES), help="task family")
    parser.add_argument("--episodes", type=int, default=20, help="episodes per cell (the same seeds in every cell)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the first episode; episode i uses seed+i (the built-in VLA trained on >= 1000)")
    parser.add_argument("--measured-latency", action="store_true",
                        help="charge predict_chunk's wall time to simulated time, as the demo does (success then "
                             "depends on the machine's load)")
    add_device_arguments(parser)
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--plot", type=Path, default=Path("bench_out/generalization.png"), help="the PNG to write")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def plan_cells(robots: list[str], trained: list[str], axes: list[str]) -> list[tuple[str, Axis]]:
    """(robot, axis) of every cell: perturbation axes on the trained arms, the arm axis on the others."""
    cells = []
    for robot in robots:
        held_out = robot not in trained
        cells += [(robot, AXES[name]) for name in axes if AXES[name].held_out_arms == held_out]
    if not cells:
        raise ConfigError(f"no cell to run: --axes {','.join(axes)} on --robots {','.join(robots)} (the 'arm' axis "
                          f"needs an arm outside --trained-robots {','.join(trained)}, the others one inside it)")
    return cells


def run_cell(policy_spec: str, robot: str, axis: Axis, *, task_family: str, seeds: list[int],
             settings: LoopSettings, options, progress=None) -> dict:
    """Success and timing of one (robot, axis) cell over `seeds`, in a world built for it."""
    from vla_ros.policies.factory import make_policy

    embodiment = load_simulated_embodiment(robot)
    targets = axis.targets or axis.colors
    started = time.perf_counter()
    world = make_world(embodiment, axis.colors, variation=axis.variation)
    policy = make_policy(policy_spec, embodiment=embodiment, world=world, options=options)
    try:
        pipeline = ActionPipeline(embodiment, policy.metadata.features, PipelineConfig(),
                                  supports_prefix=policy.metadata.supports_prefix)
        episodes = []
        for seed in seeds:
            task = episode_task(task_family, targets, seed)
            episodes.append(run_episode(world, task, seed=seed, policy=policy, pipeline=pipeline, settings=settings))
            if progress is not None:
                progress.update(1)
                progress.set_postfix(cell=f"{robot}/{axis.name}")
    finally:
        policy.close()
        world.close()
    summary = summarize_cell(episodes, period_s=embodiment.control_period_s)
    return {
        "robot": robot,
        "axis": axis.name,
        "held_out_arm": axis.held_out_arms,
        "success_rate": summary["success_rate"],
        "successes": sum(e.success for e in episodes),
        "episodes_run": len(episodes),
        "task_time_s": summary["task_time_s"],
        "policy_latency_ms": summary["policy_latency_ms"],
        "wall_time_s": round(time.perf_counter() - started, 1),
        "episodes": summary["episodes"],
    }


def run(args: argparse.Namespace) -> dict:
    from vla_ros.policies.factory import PolicyOptions

    if args.episodes < 1:  # as the other benches: bench code does not import the CLI
        raise ConfigError(f"--episodes must be 1 or more, got {args.episodes}")
    robots = list(dict.fromkeys(parse_choices(args.robots, list(SIM_ROBOTS), option="--robots")))
    trained = list(dict.fromkeys(parse_choices(args.trained_robots, list(SIM_ROBOTS), option="--trained-robots")))
    axes = list(dict.fromkeys(parse_choices(args.axes, list(AXES), option="--axes")))
    cells = plan_cells(robots, trained, axes)
    seeds = [args.seed + i for i in range(args.episodes)]
    settings = LoopSettings(measure_latency=args.measured_latency)
    options = PolicyOptions(device=args.device, dtype=args.dtype, threads=args.threads)
    load_before, cpu_start, started = load_average(), CpuTimes.now(), time.perf_counter()
    progress = progress_bar(len(cells) * len(seeds), disabled=args.no_progress)
    try:
        results = [run_cell(args.policy, robot, axis, task_family=args.task, seeds=seeds, settings=settings,
                            options=options, progress=progress) for robot, axis in cells]
    finally:
        progress.close()
    return {
        "benchmark": "generalization",
        "policy": args.policy,
        "task": args.task,
        "episodes_per_cell": args.episodes,
        "seeds": seeds,
        "trained_robots": trained,
        "latency_model": settings.describe(),
        "axes": {name: AXES[name].describe() for name in axes},
        "machine": {
            "cores": available_cpus(),
            "load_average_1min_before": load_before,
            "load_average_1min_at_end": load_average(),
            "cpu_busy_fraction": busy_fraction(cpu_start, CpuTimes.now()),
        },
        "wall_time_s": round(time.perf_counter() - started, 1),
        "cells": results,
    }


def _cell_text(cell: dict | None) -> str:
    return "-" if cell is None else f"{cell['success_rate']:.2f} ({cell['successes']}/{cell['episodes_run']})"


def table(results: dict) -> str:
    """A Markdown table: a row per arm, a column per axis (the held-out arms' figure in the first column)."""
    cells = {(c["robot"], c["axis"]): c for c in results["cells"]}
    robots = list(dict.fromkeys(c["robot"] for c in results["cells"]))
    perturbations = [name for name in results["axes"] if not AXES[name].held_out_arms]
    columns = perturbations or ["layouts"]
    lines = ["| arm | " + " | ".join(AXES[name].title for name in columns) + " |",
             "|---|" + "---|" * len(columns)]
    for robot in robots:
        if (robot, "arm") in cells:
            row = [_cell_text(cells[(robot, "arm")])] + ["-"] * (len(columns) - 1)
            lines.append(f"| {robot} (held-out arm) | " + " | ".join(row) + " |")
        else:
            lines.append(f"| {robot} | " + " | ".join(_cell_text(cells.get((robot, name))) for name in columns) + " |")
    return "\n".join(lines)


def notes(results: dict) -> str:
    """One line per axis: exactly what it changes."""
    return "\n".join(f"- {AXES[name].title}: {what}" for name, what in results["axes"].items())


def plot(results: dict, path: Path) -> Path:
    """Success per axis as grouped bars, one colour per arm; the held-out arms under 'held-out arm'."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    axes = list(results["axes"])
    robots = list(dict.fromkeys(c["robot"] for c in results["cells"]))
    cells = {(c["robot"], c["axis"]): c for c in results["cells"]}
    colors = plt.get_cmap("tab10")
    fig, axis = plt.subplots(figsize=(max(6.0, 1.4 * len(axes) + 2), 3.8))
    labelled = set()
    for position, name in enumerate(axes):
        present = [robot for robot in robots if (robot, name) in cells]  # each group as wide as its arms
        width = 0.8 / max(1, len(present))
        for slot, robot in enumerate(present):
            bars = axis.bar(position - 0.4 + width * (slot + 0.5), cells[(robot, name)]["success_rate"], width,
                            color=colors(robots.index(robot)), label=None if robot in labelled else robot)
            axis.bar_label(bars, fmt="%.2f", fontsize=6)  # a zero shows as "0.00", not as no bar at all
            labelled.add(robot)
    axis.set_xticks(np.arange(len(axes)), [AXES[name].title for name in axes], fontsize=9)
    axis.set_ylabel("success rate")
    axis.set_ylim(0, 1.2)  # room for the labels over full bars
    axis.legend(fontsize=8, ncols=min(len(robots), 6), loc="upper right")
    latency = "measured latency charged" if results["latency_model"]["measured_wall_time"] else "no measured latency"
    axis.set_title(f"vla-ros bench generalization: {results['policy']}, '{results['task']}', "
                   f"{results['episodes_per_cell']} episodes per cell (seeds {results['seeds'][0]}-"
                   f"{results['seeds'][-1]}), {latency}", fontsize=9)
    return save_figure(fig, path, dpi=90)


def main(args: argparse.Namespace) -> int:
    results = run(args)
    results["plot"] = str(plot(results, args.plot))
    report_json(results, args.json)
    machine = results["machine"]
    print(f"\n{table(results)}\n\n{notes(results)}\n\nmachine: load average {machine['load_average_1min_before']} -> "
          f"{machine['load_average_1min_at_end']} on {machine['cores']} cores, CPU busy "
          f"{machine['cpu_busy_fraction']}; {results['wall_time_s']:.0f} s wall; plot {results['plot']}",
          file=sys.stderr)
    return 0
