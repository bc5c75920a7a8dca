"""`vla-ros bench grounding`: does a policy go for the cube its instruction names?

At the first tick of an episode the observation (cameras, joint state) is the same whichever cube the
instruction names: only the words differ. For every layout the policy is asked for a first chunk once per cube
colour, and each chunk is compared with the scripted expert's first chunk toward every cube. A chunk is grounded
when the nearest expert chunk is the one toward the instructed cube; chance is one in the number of colours.

It takes seconds where a closed-loop evaluation takes minutes, and it tells "does not read the instruction"
apart from "reaches imprecisely", which success rates mix up. Layout seeds start at 0, like `vla-ros demo`'s
episodes, so the built-in VLA (trained on seeds from 1000 on) is measured on layouts it never saw.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from vla_ros.bench.stats import report_json
from vla_ros.core.embodiment import EmbodimentConfig
from vla_ros.core.features import RobotObservation
from vla_ros.core.pipeline import ActionPipeline, PipelineConfig
from vla_ros.policies.base import Policy
from vla_ros.sim.episodes import make_world, parse_colors
from vla_ros.sim.robots import SIM_ROBOT_HELP, load_simulated_embodiment
from vla_ros.sim.tasks import TASK_TEMPLATES, parse_instruction


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from vla_ros.policies.device import add_device_arguments

    parser.add_argument("--policy", default="builtin", help="policy spec (default: %(default)s)")
    parser.add_argument("--robot", default="so101", help=SIM_ROBOT_HELP)
    parser.add_argument("--task", default="touch", choices=sorted(TASK_TEMPLATES), help="task family")
    parser.add_argument("--layouts", type=int, default=20, help="cube layouts (each asked once per colour)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the first layout; layout i uses seed+i")
    parser.add_argument("--colors", default="red,green,blue", help="cube colours in the scene (comma-separated)")
    parser.add_argument("--json", type=Path, help="write the results here")
    add_device_arguments(parser)


def first_chunks(policy: Policy, pipeline: ActionPipeline, world, instruction: str, seed: int
                 ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(the policy's first chunk, the expert's first chunk toward each cube), absolute joint targets (H, n).

    `world` is reset to layout `seed` with the arm at its start pose, and `pipeline` (built for `policy`) to that
    pose; the expert chunks have the policy's length.
    """
    from vla_ros.sim.experts import ScriptedExpert

    task = parse_instruction(instruction)
    world.reset(task, seed=seed)
    policy.reset(seed=seed)
    pipeline.reset(world.joint_positions())
    observation = RobotObservation(stamp=0.0, joint_names=world.joint_names, joint_positions=world.joint_positions(),
                                   images=world.render_cameras(), instruction=instruction)
    batch, request = pipeline.prepare(observation, now=0.0)
    chunk = pipeline.adapter.actions_to_robot(policy.predict_chunk(batch, request.prefix), request.state)
    experts = {}
    for color in world.cube_colors:
        expert_task = parse_instruction(instruction.replace(task.color, color))
        experts[color] = ScriptedExpert(world, expert_task).plan(len(chunk), policy.metadata.features.action_dt_s)
    return chunk, experts


def measure(policy: Policy, embodiment: EmbodimentConfig, world, *, task_family: str, layouts: int, seed: int
            ) -> dict:
    """Grounding accuracy and instruction sensitivity of `policy` over `layouts` layouts of `world`."""
    arm = embodiment.arm_mask
    colors = tuple(world.cube_colors)
    pipeline = ActionPipeline(embodiment, policy.metadata.features, PipelineConfig(),
                              supports_prefix=policy.metadata.supports_prefix)
    grounded = asked = 0
    sensitivities = []
    per_layout = []
    for layout_seed in range(seed, seed + layouts):
        chunks, references = {}, None
        for color in colors:
            chunks[color], references = first_chunks(
                policy, pipeline, world, TASK_TEMPLATES[task_family].format(color=color), layout_seed)
        nearest = {}
        for color, chunk in chunks.items():
            distances = {c: float(np.abs(chunk[:, arm] - ref[:, arm]).mean()) for c, ref in references.items()}
            nearest[color] = min(distances, key=distances.get)
            grounded += nearest[color] == color
            asked += 1
        predicted = np.stack([chunks[c][:, arm] for c in colors])
        expert = np.stack([references[c][:, arm] for c in colors])
        expert_spread = np.abs(expert - expert.mean(axis=0)).mean()
        sensitivities.append(float(np.abs(predicted - predicted.mean(axis=0)).mean() / max(expert_spread, 1e-9)))
        per_layout.append({"seed": layout_seed, "nearest_expert_chunk": nearest})
    return {
        "grounding_accuracy": grounded / max(1, asked),
        "chance": 1 / len(colors),
        # How much the first chunk changes with the instruction, relative to how much the expert's changes:
        # near 0, the policy ignores the words; near 1, it moves as differently as the expert does.
        "instruction_sensitivity": float(np.mean(sensitivities)) if sensitivities else 0.0,
        "layouts": per_layout,
    }


def run(args: argparse.Namespace) -> dict:
    from vla_ros.policies.factory import PolicyOptions, make_policy

    embodiment = load_simulated_embodiment(args.robot)
    world = make_world(embodiment, parse_colors(args.colors))
    policy = make_policy(args.policy, embodiment=embodiment, world=world,
                         options=PolicyOptions(device=args.device, dtype=args.dtype, threads=args.threads))
    started = time.perf_counter()
    try:
        results = measure(policy, embodiment, world, task_family=args.task, layouts=args.layouts, seed=args.seed)
    finally:
        policy.close()
        world.close()
    return {"robot": embodiment.robot, "task": args.task, "policy": policy.metadata.name,
            "policy_description": policy.metadata.description, "colors": list(world.cube_colors),
            "seconds": round(time.perf_counter() - started, 1), **results}


def main(args: argparse.Namespace) -> int:
    report_json(run(args), args.json)
    return 0
