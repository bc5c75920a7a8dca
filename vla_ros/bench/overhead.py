"""`vla-ros bench overhead`: per-step cost of everything in the control path except the model forward.

Stages, worst case on purpose: every step decodes every camera from a raw sensor_msgs/Image-style buffer (bgr8,
as most camera drivers publish), builds a full policy observation (joint selection by name, units, padding,
resize-with-pad), and a new chunk is merged every half chunk, as in asynchronous inference.

`--image-resize exact` (the default, as SmolVLA checkpoints from LeRobot run): the adapter hands frames over at
their native size and the policy makes each model image as LeRobot's robot path does (float conversion, bilinear
resize with padding, in torch); that is the stage `policy_images`, counted in the total although it runs in the
inference worker, before the model's forward. `fast`: OpenCV's resize in the adapter (`prepare`), as before.

Side by side (`--compare`), on the same stream (every camera delivers a frame every control tick):
- vla_ros as the node runs it: `PolicyRunner` decodes each image as it arrives and builds the policy
  observation only when a chunk is due;
- the same pipeline without that: the policy observation is built every tick (the stages above);
- a straightforward implementation: per tick, cv_bridge-style conversion (frombuffer, reshape, cvtColor) and
  resize-with-pad of every camera, a state vector found by name in Python, per-joint clamping in Python.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from vla_ros.bench.stats import save_figure, summarize_ms
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
    parser.add_argument("--image-resize", choices=["exact", "fast"], default="exact",
                        help="exact: the policy resizes frames as LeRobot does (torch); fast: OpenCV in the adapter")
    parser.add_argument("--compare", action="store_true", help="also run the side-by-side comparison")
    parser.add_argument("--out", type=Path, default=Path("bench_out"), help="folder for the plot")


def _setup(robot: str, n_cameras: int, image_size: tuple[int, int], chunk_size: int, image_resize: str = "fast"):
    """(embodiment with `n_cameras` 640x480 cameras, policy features, a raw bgr8 frame per camera, the joint names
    as the robot reports them) of the benchmark's robot."""
    base = load_embodiment(robot)
    cameras = tuple(CameraSpec(name=name, policy_key=name, width=640, height=480) for name in CAMERA_NAMES[:n_cameras])
    embodiment = replace(base, cameras=cameras)
    features = PolicyFeatures(state_dim=32, action_dim=32, chunk_size=chunk_size,
                              action_dt_s=embodiment.control_period_s, camera_keys=tuple(c.name for c in cameras),
                              image_size=image_size, image_padding="top_left",
                              resizes_images=image_resize == "exact")
    rng = np.random.default_rng(0)
    raw = {c.name: rng.integers(0, 255, size=480 * 640 * 3, dtype=np.uint8).tobytes() for c in cameras}
    # The robot reports its joints in another order plus a mimic finger: selection by name is part of the cost.
    names = tuple(reversed(embodiment.joint_names)) + ("panda_finger_joint2",)
    return embodiment, features, raw, names


def measure(robot: str, n_cameras: int, *, steps: int, image_size: tuple[int, int], chunk_size: int,
            raw_ms: bool = False, image_resize: str = "fast") -> dict | list[float]:
    """Per-stage cost of the pipeline with the observation built every step; `raw_ms`: the per-step totals."""
    embodiment, features, raw, names = _setup(robot, n_cameras, image_size, chunk_size, image_resize)
    model_image = None
    if features.resizes_images:
        from vla_ros.policies.smolvla.processor import model_image
    pipeline = ActionPipeline(embodiment, features, PipelineConfig(merge=MergeStrategy.BLEND))
    period = embodiment.control_period_s
    home = embodiment.home
    pipeline.reset(home)
    refill_every = chunk_size // 2
    stages = {"decode": [], "prepare": [], "policy_images": [], "accept_chunk": [], "step": [], "total": []}
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
        if model_image is not None:
            for key in features.camera_keys:
                model_image(batch[f"observation.images.{key}"], image_size)
        t_images = time.perf_counter()
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
            stages["policy_images"].append(t_images - t2)
            stages["accept_chunk"].append(accept)
            stages["step"].append(t4 - t3)
            stages["total"].append((t1 - t0) + (t2 - t1) + (t_images - t2) + accept + (t4 - t3))
    if raw_ms:
        return list(np.asarray(stages["total"]) * 1e3)
    return {
        "cameras": n_cameras,
        "camera_resolution": [480, 640],
        "policy_image_size": list(image_size),
        "image_resize": image_resize,
        "stages_ms": {name: summarize_ms(np.asarray(values) * 1e3) for name, values in stages.items()},
    }


class _InstantPolicy:
    """Stands in for the model: a smooth chunk around the observed state, returned at once."""

    def __init__(self, embodiment, features):
        from vla_ros.core.adapter import EmbodimentAdapter
        from vla_ros.policies.base import PolicyMetadata

        self.metadata = PolicyMetadata(name="instant", features=features, learned=False)
        self._adapter = EmbodimentAdapter(embodiment, features)

    def reset(self, *, seed=None) -> None:
        pass

    def predict_chunk(self, observation, prefix=None) -> np.ndarray:
        state = self._adapter.state_from_policy(observation["observation.state"])
        features = self.metadata.features
        targets = state + 0.01 * np.sin(np.arange(features.chunk_size)[:, None] * features.action_dt_s)
        return self._adapter.robot_to_actions(targets, state)


def side_by_side(robot: str, n_cameras: int, *, steps: int, image_size: tuple[int, int], chunk_size: int) -> dict:
    """Per-tick cost (ms) of the three implementations in the module docstring, on the same input stream."""
    import cv2

    from vla_ros.core.images import resize_with_pad
    from vla_ros.core.runner import PolicyRunner

    embodiment, features, raw, names = _setup(robot, n_cameras, image_size, chunk_size)
    home, period = embodiment.home, embodiment.control_period_s
    lower, upper = embodiment.lower_limits, embodiment.upper_limits

    def positions_at(now: float) -> np.ndarray:
        return np.append(home[::-1], 0.04) + 1e-3 * np.sin(now)

    runner = PolicyRunner(embodiment, _InstantPolicy(embodiment, features), instruction="pick up the red cube")
    timings: dict[str, list[float]] = {"vla_ros": [], "prepare_every_tick": [], "straightforward": []}
    for k in range(steps + 200):
        now = k * period
        t0 = time.perf_counter()
        runner.add_joint_state("/joint_states", now, names, positions_at(now))
        for name, data in raw.items():
            runner.add_image(name, now, decode_raw_image(data, height=480, width=640, step=640 * 3,
                                                         encoding="bgr8", source=name))
        runner.tick(now)
        if k >= 200:
            timings["vla_ros"].append(time.perf_counter() - t0)
        while runner.inference_in_flight:  # the instant policy: keep the stream identical for every implementation
            time.sleep(0)
    runner.close()
    timings["prepare_every_tick"] = [t / 1e3 for t in
                                     measure(robot, n_cameras, steps=steps, image_size=image_size,
                                             chunk_size=chunk_size, raw_ms=True)]

    queue: list[list[float]] = []
    for k in range(steps + 200):
        now = k * period
        t0 = time.perf_counter()
        images = {}
        for name, data in raw.items():  # cv_bridge's imgmsg_to_cv2 for bgr8, then to RGB
            bgr = np.frombuffer(data, dtype=np.uint8).reshape(480, 640, 3)
            images[name] = resize_with_pad(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), image_size).astype(np.float32) / 255
        positions = positions_at(now)
        state = [float(positions[list(names).index(joint)]) for joint in embodiment.joint_names]
        if not queue:  # a new chunk: the model's output, one Python list per step
            queue = [[s + 0.01 * np.sin(i * period) for s in state] for i in range(chunk_size // 2)]
        target = queue.pop(0)
        command = [min(max(value, lo), hi) for value, lo, hi in zip(target, lower, upper, strict=True)]
        _ = (images, command)
        if k >= 200:
            timings["straightforward"].append(time.perf_counter() - t0)
    summary = {name: summarize_ms(np.asarray(values) * 1e3) for name, values in timings.items()}
    fastest = summary["vla_ros"]["mean"]
    return {"cameras": n_cameras, "per_tick_ms": summary,
            "ratio_to_vla_ros": {name: round(s["mean"] / fastest, 1) for name, s in summary.items()}}


def _plot(results: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    configurations = results["configurations"]
    fig, axes = plt.subplots(1, 2 if "side_by_side" in results else 1, figsize=(10, 3.5), squeeze=False)
    stages = ["decode", "prepare", "policy_images", "accept_chunk", "step"]
    for i, config in enumerate(configurations):
        bottom = 0.0
        for stage in stages:
            value = config["stages_ms"][stage]["mean"]
            axes[0][0].bar(i, value, bottom=bottom, label=stage if i == 0 else None)
            bottom += value
    axes[0][0].set_xticks(range(len(configurations)), [f"{c['cameras']} camera(s)" for c in configurations])
    axes[0][0].set_ylabel("mean ms per step")
    axes[0][0].set_title("per-stage cost, observation built every step")
    axes[0][0].legend()
    if "side_by_side" in results:
        for j, comparison in enumerate(results["side_by_side"]):
            names = list(comparison["per_tick_ms"])
            means = [comparison["per_tick_ms"][n]["mean"] for n in names]
            axes[0][1].bar(np.arange(len(names)) + 0.4 * j, means, width=0.4,
                           label=f"{comparison['cameras']} camera(s)")
            axes[0][1].set_xticks(range(len(names)), names)
        axes[0][1].set_ylabel("mean ms per control tick")
        axes[0][1].set_title("side by side")
        axes[0][1].legend()
    return save_figure(fig, path, dpi=80)


def main(args: argparse.Namespace) -> int:
    results = {
        "benchmark": "overhead",
        "machine": {"cpu": platform.processor() or platform.machine(), "python": platform.python_version()},
        "robot": args.robot,
        "steps": args.steps,
        "configurations": [
            measure(args.robot, n, steps=args.steps, image_size=tuple(args.image_size), chunk_size=args.chunk_size,
                    image_resize=args.image_resize)
            for n in args.cameras
        ],
    }
    if args.compare:
        results["side_by_side"] = [side_by_side(args.robot, n, steps=args.steps, image_size=tuple(args.image_size),
                                                chunk_size=args.chunk_size) for n in args.cameras]
    results["plot"] = str(_plot(results, args.out / f"overhead_{args.robot}.png"))
    print(json.dumps(results, indent=2))
    return 0
