"""Training episodes for the built-in VLA: the scripted expert drives the simulator through the real pipeline.

Each sample is what the policy would see at a control tick (the adapter's state and resized images, exactly as at
inference) and what the expert plans from there (a chunk in policy units). The executed chunks are sometimes offset
from the plan (DART), so the data shows how to return to the plan, not only how to follow it.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from vla_ros.core.embodiment import EmbodimentConfig, load_embodiment
from vla_ros.core.errors import parse_choices
from vla_ros.core.features import STATE, RobotObservation, image_key
from vla_ros.core.pipeline import ActionPipeline, PipelineConfig
from vla_ros.policies.builtin.recipe import CAMERA_KEYS, COLORS, RECIPES, DataRecipe, ModelRecipe, policy_features
from vla_ros.sim.robots import SIM_ROBOTS
from vla_ros.sim.tasks import TASK_TEMPLATES


@dataclass
class EpisodeSamples:
    states: list[np.ndarray]
    images: dict[str, list[np.ndarray]]
    actions: list[np.ndarray]
    tcp: list[np.ndarray]  # (3,) tool centre point (m, world frame) at each sample
    goal: np.ndarray  # (2,) table position (m, world frame) of the instructed cube at the start
    cubes: np.ndarray  # (colours, 2) table positions of every cube at the start, in the recipe's colour order
    success: bool


def episode_layout(recipe: DataRecipe, robot: str, task: str, index: int) -> tuple[int, str]:
    """(layout seed, target colour) of episode `index`: colours take turns, and every
    `recipe.instructions_per_layout` consecutive episodes share a layout."""
    robot_index = SIM_ROBOTS.index(robot)
    task_index = [name for name, _ in recipe.tasks].index(task)
    layout = index // recipe.instructions_per_layout
    return recipe.seed + 10_000 * robot_index + 1_000 * task_index + layout, recipe.colors[index % len(recipe.colors)]


def collect_episode(world, embodiment: EmbodimentConfig, instruction: str, seed: int, data: DataRecipe,
                    model: ModelRecipe, *, noise_seed: int | None = None) -> EpisodeSamples:
    """Run one expert episode in `world` (a SimWorld of `embodiment`, laid out by `seed`); return its samples."""
    from vla_ros.sim.experts import ScriptedExpert
    from vla_ros.sim.tasks import parse_instruction

    features = policy_features(model, embodiment.control_period_s)
    pipeline = ActionPipeline(embodiment, features, PipelineConfig())
    adapter = pipeline.adapter
    task = parse_instruction(instruction)
    world.reset(task, seed=seed)
    expert = ScriptedExpert(world, task)
    pipeline.reset(world.joint_positions())
    rng = np.random.default_rng(seed if noise_seed is None else noise_seed)
    arm = embodiment.arm_mask  # perturb arm joints only
    samples = EpisodeSamples(states=[], images={k: [] for k in CAMERA_KEYS}, actions=[], tcp=[],
                             goal=world.cube_pose(task.color)[0][:2].astype(np.float32),
                             cubes=np.array([world.cube_pose(c)[0][:2] for c in data.colors], dtype=np.float32),
                             success=False)
    tick = 0
    images = None
    while world.time < task.max_duration_s:
        now = world.time
        measured = world.joint_positions()
        record = tick % data.record_every_ticks == 0
        if record or pipeline.needs_chunk(now):
            if record or images is None:  # the expert plans from the simulator's state, not from the images
                images = world.render_cameras()
            observation = RobotObservation(stamp=now, joint_names=world.joint_names, joint_positions=measured,
                                           images=images, instruction=instruction)
            batch, request = pipeline.prepare(observation)
            targets = expert.plan(features.chunk_size, features.action_dt_s)
            actions = adapter.robot_to_actions(targets, request.state)
            if record:
                samples.states.append(batch[STATE].astype(np.float32))
                for key in CAMERA_KEYS:
                    samples.images[key].append(batch[image_key(key)])
                samples.actions.append(actions.astype(np.float32))
                samples.tcp.append(world.tcp_pose()[0].astype(np.float32))
            # prepare() marked a chunk as pending, so needs_chunk() is False from here on: a chunk is queued only
            # on ticks that do not record, and a recording tick that wanted one leaves it to the next tick.
            # (The shipped weights were trained on data made this way; queueing at once changes the data.)
            if not record:
                executed = targets
                if rng.random() < data.perturb_probability:
                    offset = rng.normal(0.0, data.perturb_std_rad, size=len(embodiment.joints)) * arm
                    executed = targets + offset
                pipeline.accept_chunk(adapter.robot_to_actions(executed, request.state), request, now=now)
            else:
                pipeline.chunk_failed()  # a recording-only observation: no chunk was meant to be queued
        command = pipeline.step(now, measured=measured, observation_stamp=now)
        world.send_trajectory(command.trajectory)
        world.advance(embodiment.control_period_s)
        tick += 1
        if task.is_success(world):
            samples.success = True
            break
    return samples


def collect_shard(robot: str, task: str, indices: list[int], data: DataRecipe, model: ModelRecipe,
                  out: Path) -> dict:
    """Episodes `indices` of (robot, task) into `out` (an .npz file); returns a summary."""
    from vla_ros.sim.world import SimWorld

    embodiment = load_embodiment(robot)
    world = SimWorld(robot, camera_size=data.render_size, colors=data.colors)
    states, actions, tcps, goals, cubes, episode_index, instructions = [], [], [], [], [], [], []
    images: dict[str, list[np.ndarray]] = {k: [] for k in CAMERA_KEYS}
    failures = 0
    start = time.perf_counter()
    for index in indices:
        seed, color = episode_layout(data, robot, task, index)
        instruction = TASK_TEMPLATES[task].format(color=color)
        episode = collect_episode(world, embodiment, instruction, seed, data, model,
                                  noise_seed=seed * 8 + index % 8)
        if not episode.success:  # the expert missed (rare): such an episode teaches nothing good
            failures += 1
            continue
        states += episode.states
        actions += episode.actions
        tcps += episode.tcp
        goals += [episode.goal] * len(episode.states)
        cubes += [episode.cubes] * len(episode.states)
        for key in CAMERA_KEYS:
            images[key] += episode.images[key]
        episode_index += [index] * len(episode.states)
        instructions += [instruction] * len(episode.states)
    world.close()
    np.savez(
        out,
        state=np.asarray(states, dtype=np.float32),
        action=np.asarray(actions, dtype=np.float32),
        tcp=np.asarray(tcps, dtype=np.float32).reshape(-1, 3),
        goal=np.asarray(goals, dtype=np.float32),
        cubes=np.asarray(cubes, dtype=np.float32),
        episode=np.asarray(episode_index, dtype=np.int32),
        instruction=np.asarray(instructions, dtype=str),
        **{f"image_{k}": np.asarray(v, dtype=np.uint8) for k, v in images.items()},
    )
    return {"robot": robot, "task": task, "episodes": len(indices) - failures, "expert_failures": failures,
            "samples": len(states), "seconds": round(time.perf_counter() - start, 1), "file": str(out)}


def collect(data: DataRecipe, model: ModelRecipe, out_dir: Path, *, workers: int = 2, shards_per_task: int = 4
            ) -> list[dict]:
    """All episodes of the recipe, as .npz shards in `out_dir` (existing shards are kept: collection resumes)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    jobs = []
    for task, count in data.tasks:  # task-major: the first task (touch) is complete soonest
        for robot in data.robots:
            for shard in range(shards_per_task):
                path = out_dir / f"{robot}_{task}_{shard}.npz"
                if not path.exists():
                    jobs.append((robot, task, list(range(shard, count, shards_per_task)), data, model, path))
    if workers <= 1:
        results = (collect_shard(*job) for job in jobs)
    else:
        # Spawned, not forked: a forked child inherits the parent's OpenMP and EGL state and can hang in it.
        pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"))
        results = (future.result() for future in [pool.submit(collect_shard, *job) for job in jobs])
    summaries = []
    for summary in results:
        summaries.append(summary)
        print(json.dumps(summary), file=sys.stderr, flush=True)
    if workers > 1:
        pool.shutdown()
    return summaries


def load_shards(out_dir: Path) -> dict[str, np.ndarray]:
    """Every shard of `out_dir` concatenated, with a `robot` name per sample."""
    parts: dict[str, list[np.ndarray]] = {}
    for path in sorted(out_dir.glob("*.npz")):
        with np.load(path, allow_pickle=False) as shard:
            n = len(shard["state"])
            for key in shard.files:
                parts.setdefault(key, []).append(shard[key])
            parts.setdefault("robot", []).append(np.full(n, path.stem.split("_")[0]))
    if not parts:
        raise FileNotFoundError(f"no training shards (*.npz) in {out_dir}")
    return {key: np.concatenate(value) for key, value in parts.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Record the built-in VLA's training episodes.")
    parser.add_argument("--out", type=Path, default=Path("builtin_data"))
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--recipe", choices=sorted(RECIPES), default="builtin",
                        help="builtin: the shipped model's episodes; generalist: five arms, one held out")
    parser.add_argument("--robots", metavar="ROBOT[,ROBOT...]",
                        help="record these simulated arms the way the recipe records its own (same episodes per "
                             "task, instructions, noise), e.g. the held-out arm's demonstrations to fine-tune on "
                             "(default: the recipe's arms)")
    parser.add_argument("--instructions-per-layout", type=int, choices=range(1, len(COLORS) + 1),
                        help="episodes recorded on each cube layout, each told another colour (default: the "
                             "recipe's); 1 gives as many layouts as episodes")
    parser.add_argument("--seed", type=int,
                        help="base seed of the cube layouts (default: the recipe's); another one records new "
                             "layouts, to check a model on layouts it was not trained on")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    recipe = RECIPES[args.recipe]
    data = recipe.data
    if args.robots:
        data = replace(data, robots=tuple(dict.fromkeys(parse_choices(args.robots, list(SIM_ROBOTS),
                                                                      option="--robots"))))
    if args.instructions_per_layout:
        data = replace(data, instructions_per_layout=args.instructions_per_layout)
    if args.seed is not None:
        data = replace(data, seed=args.seed)
    summaries = collect(data, recipe.model, args.out, workers=args.workers)
    total = sum(s["samples"] for s in summaries)
    print(f"{total} samples in {time.perf_counter() - start:.0f} s -> {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
