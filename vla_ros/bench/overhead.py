"""`vla-ros bench overhead`: per-step cost of everything in the control path except the model forward.

Worst case on purpose: every step decodes every camera from a raw sensor_msgs/Image-style buffer (bgr8,
as most camera drivers publish), builds a full policy observation (joint selection by name, units,
padding, resize-with-pad), and a new chunk is merged every half chunk, as in asynchronous inference.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from dataclasses import replace

import numpy as np

from vla_ros.bench.stats import summarize_ms
from vla_ros.core.embodiment import CameraSpec, load_embodiment
from vla_ros.core.features import PolicyFeatures, RobotObservation
from vla_ros.core.images import decode_raw_image
from vla_ros.core.pipeline import ActionPipeline, PipelineConfig
from vla_ros.core.scheduler import MergeStrategy

CAMERA_NAMES = ("front", "wrist", "side")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--robot", default="panda")
    parser.add_argument("--cameras", type=int, nargs="+", default=[1, 3], choices=[1, 2, 3])
    parser.add_argument("--steps", type=int, default=3000, help="measured steps per configuration")
    parser.add_argument("--image-size", type=int, nargs=2, default=[224, 224], metavar=("H", "W"),
                        help="policy image size (pi0: 224 224, SmolVLA: 512 512)")
    parser.add_argument("--chunk-size", type=int, default=50)


def measure(robot: str, n_cameras: int, *, steps: int, image_size: tuple[int, int], chunk_size: int) -> dict:
    base = load_embodiment(robot)
    cameras = tuple(CameraSpec(name=name, policy_key=name, width=640, height=480) for name in CAMERA_NAMES[:n_cameras])
    embodiment = replace(base, cameras=cameras)
    features = PolicyFeatures(state_dim=32, action_dim=32, chunk_size=chunk_size,
                              action_dt_s=embodiment.control_period_s, camera_keys=tuple(c.name for c in cameras),
                              image_size=image_size)
    pipeline = ActionPipeline(embodiment, features, PipelineConfig(merge=MergeStrategy.BLEND))
    rng = np.random.default_rng(0)
    raw = {c.name: rng.integers(0, 255, size=480 * 640 * 3, dtype=np.uint8).tobytes() for c in cameras}
    # The robot reports its joints in another order plus a mimic finger: selection by name is part of the cost.
    names = tuple(reversed(embodiment.joint_names)) + ("panda_finger_joint2",)
    period = embodiment.control_period_s
    home = embodiment.home
    pipeline.reset(home)
    refill_every = chunk_size // 2
    stages = {"decode": [], "prepare": [], "accept_chunk": [], "step": [], "total": []}
    for k in range(steps + 200):
        now = k * period
        positions = np.append(home[::-1], 0.04) + 1e-3 * np.sin(now)
        t0 = time.perf_counter()
        images = {name: decode_raw_image(data, height=480, width=640, step=640 * 3, encoding="bgr8", source=name)
                  for name, data in raw.items()}
        t1 = time.perf_counter()
        observation = RobotObservation(stamp=now, joint_names=names, joint_positions=positions, images=images,
                                       instruction="pick up the red cube")
        batch, request = pipeline.prepare(observation)
        t2 = time.perf_counter()
        accept = 0.0
        if k % refill_every == 0:
            # Stands in for the model: a smooth chunk around home, in policy units (deltas for panda's arm).
            actions = pipeline.adapter.robot_to_actions(
                home + 0.05 * np.sin(now + np.arange(chunk_size)[:, None] * period), request.state)
            t_accept = time.perf_counter()
            pipeline.accept_chunk(actions, request, now=now)
            accept = time.perf_counter() - t_accept
        t3 = time.perf_counter()
        pipeline.step(now, measured=home, observation_stamp=now)
        t4 = time.perf_counter()
        if k >= 200:  # warm-up: caches, allocator
            stages["decode"].append(t1 - t0)
            stages["prepare"].append(t2 - t1)
            stages["accept_chunk"].append(accept)
            stages["step"].append(t4 - t3)
            stages["total"].append((t1 - t0) + (t2 - t1) + accept + (t4 - t3))
    return {
        "cameras": n_cameras,
        "camera_resolution": [480, 640],
        "policy_image_size": list(image_size),
        "stages_ms": {name: summarize_ms(np.asarray(values) * 1e3) for name, values in stages.items()},
    }


def main(args: argparse.Namespace) -> int:
    results = {
        "benchmark": "overhead",
        "machine": {"cpu": platform.processor() or platform.machine(), "python": platform.python_version()},
        "robot": args.robot,
        "steps": args.steps,
        "configurations": [
            measure(args.robot, n, steps=args.steps, image_size=tuple(args.image_size), chunk_size=args.chunk_size)
            for n in args.cameras
        ],
    }
    print(json.dumps(results, indent=2))
    return 0
