"""`vla-ros bench inference`: time per action chunk, and load time, of SmolVLA- and pi0-size policies.

The models have the published sizes and are built from configs, nothing downloaded: a SmolVLA-size model
(LeRobot's SmolVLA defaults: SmolVLM2-500M backbone, 2 cameras at 512x512, chunk 50, 10 flow steps) and a
pi0-size one (transformers' PI0Config defaults: PaliGemma 3B and a 300M action expert, openpi's 3 cameras
at 224x224, chunk 50, 10 flow steps). Their weights are zeros: a forward pass costs the same whatever the
values, and drawing random numbers for 3.5B parameters would take longer than reading a checkpoint.

A chunk is timed as the node calls the policy: from an adapter-ready observation (images already resized)
through the policy's own processing (tokenizer, normalization) and every flow step, to numpy actions.
Load time is building the model on the device (allocating and filling its weights) plus one warm-up chunk;
loading a real checkpoint replaces the filling by reading the weights from disk.
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from vla_ros.bench.stats import report_json, save_figure, summarize_ms
from vla_ros.core.adapter import EmbodimentAdapter
from vla_ros.core.embodiment import CameraSpec, EmbodimentConfig, load_embodiment
from vla_ros.core.errors import ConfigError, MissingDependencyError, parse_choices
from vla_ros.policies.base import Policy
from vla_ros.policies.device import (
    add_device_arguments,
    apply_threads,
    import_torch,
    plan_threads,
    select_device,
    select_dtype,
)

INSTRUCTION = "pick up the red cube and put it in the box"
LOAD_TIME_INCLUDES = ("building the model on the device with {weights} weights (allocation and filling; a real "
                      "checkpoint is read from disk instead) plus one warm-up chunk")


@dataclass(frozen=True)
class ModelSpec:
    name: str
    description: str
    camera_keys: tuple[str, ...]
    approx_parameters: float  # of the full-size model, to refuse runs that cannot fit in memory
    build: Callable  # (tiny, robot, device, dtype) -> (Policy with metadata.load_time_s set, parameter count)


def _build_pi0(tiny: bool, robot: EmbodimentConfig, device, dtype) -> tuple[Policy, int]:
    from vla_ros.policies.pi0.policy import Pi0Policy
    from vla_ros.policies.pi0.random_model import random_pi0

    started = time.perf_counter()
    n_joints = len(robot.joints)
    model, processor = random_pi0(tiny=tiny, state_dim=n_joints, action_dim=n_joints, chunk_size=50,
                                  num_inference_steps=10, camera_keys=MODELS["pi0"].camera_keys, device=device,
                                  dtype=dtype, random_weights=tiny)
    policy = Pi0Policy(model, processor, camera_keys=MODELS["pi0"].camera_keys, action_dt_s=robot.control_period_s,
                       source="random tiny weights" if tiny else "zero weights", warmup=True, load_started_s=started)
    return policy, sum(p.numel() for p in model.parameters())


# SmolVLM2-500M-Video-Instruct, the backbone LeRobot's SmolVLA loads by name: SigLIP-B/16 at 512x512, pixel
# shuffle by 4 (64 tokens per image), a SmolLM2-360M text model of which SmolVLA keeps the first 16 layers.
SMOLVLM2_500M = {"image_size": 512, "patch_size": 16, "vision_hidden": 768, "vision_layers": 12, "vision_heads": 12,
                 "vision_intermediate": 3072, "text_hidden": 960, "text_layers": 32, "heads": 15, "kv_heads": 5,
                 "text_intermediate": 2560, "vocab_size": 49280, "scale_factor": 4, "max_position_embeddings": 8192}


def _build_smolvla(tiny: bool, robot: EmbodimentConfig, device, dtype) -> tuple[Policy, int]:
    import tempfile

    import torch
    from transformers.initialization import no_init_weights

    from vla_ros.policies.smolvla.checkpoint import SmolVLACheckpoint
    from vla_ros.policies.smolvla.modeling import SmolVLAModel
    from vla_ros.policies.smolvla.policy import SmolVLAPolicy
    from vla_ros.policies.smolvla.processor import SmolVLAProcessor
    from vla_ros.policies.smolvla.tiny import build_word_tokenizer, tiny_smolvla_config, tiny_vlm_config

    started = time.perf_counter()
    n_joints = len(robot.joints)
    with tempfile.TemporaryDirectory() as folder:
        tokenizer = build_word_tokenizer(INSTRUCTION.split(), folder)
    sizes = {"vocab_size": len(tokenizer), "text_layers": 2} if tiny else SMOLVLM2_500M
    vlm_config = tiny_vlm_config(**sizes)
    # LeRobot's SmolVLA defaults but for the features: 16 VLM layers, expert at 0.75 width, 48 tokens.
    config = tiny_smolvla_config(state_dim=n_joints, action_dim=n_joints, camera_keys=MODELS["smolvla"].camera_keys,
                                 image_size=32 if tiny else 512, text_layers=2 if tiny else 16, chunk_size=50,
                                 num_steps=10, tokenizer_max_length=48, train_from_scratch=False)
    if tiny:
        torch.manual_seed(0)
        model = SmolVLAModel(config, vlm_config).to(device=device, dtype=dtype)
    else:
        default_dtype = torch.get_default_dtype()
        torch.set_default_dtype(dtype)
        try:
            with torch.device(device), no_init_weights():
                model = SmolVLAModel(config, vlm_config)
        finally:
            torch.set_default_dtype(default_dtype)
        with torch.no_grad():
            for parameter in model.parameters():
                parameter.zero_()
    stats = {f"{feature}.{name}": np.full(n_joints, value, dtype=np.float32)
             for feature in ("observation.state", "action") for name, value in (("mean", 0.0), ("std", 1.0))}
    processor = SmolVLAProcessor(config, stats, tokenizer)
    source = Path("random tiny weights" if tiny else "zero weights")
    policy = SmolVLAPolicy(SmolVLACheckpoint(config, model.eval(), processor, source, source),
                           action_dt_s=robot.control_period_s, warmup=True, load_started_s=started)
    return policy, sum(p.numel() for p in model.parameters())


MODELS = {
    "smolvla": ModelSpec("smolvla", "SmolVLA size: SmolVLM2-500M (16 layers) + expert, 2 cameras 512x512, chunk 50, "
                         "10 flow steps", ("front", "wrist"), 0.45e9, _build_smolvla),
    "pi0": ModelSpec("pi0", "pi0 size: PaliGemma 3B + 300M expert, 3 cameras 224x224, chunk 50, 10 flow steps",
                     ("base_0_rgb", "left_wrist_0_rgb", "right_wrist_0_rgb"), 3.5e9, _build_pi0),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--models", default=",".join(MODELS), help=f"comma-separated, of {', '.join(MODELS)} "
                        "(default: all)")
    add_device_arguments(parser, dtype_help="auto: bfloat16/float16 on GPUs, float32 on the CPU; pi0 size needs "
                         "~14 GB in float32")
    parser.add_argument("--repeats", type=int, default=5, help="timed chunks per model, after the warm-up")
    parser.add_argument("--robot", default="so101", help="robot whose joints fill the state (cameras are the model's)")
    parser.add_argument("--tiny", action="store_true", help="tiny models of the same architectures (for tests)")
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--plot", type=Path, help="bar plot PNG (default: beside --json, with .png)")


def parse_models(text: str) -> list[str]:
    return parse_choices(text, sorted(MODELS), option="--models")


def _check_memory(spec: ModelSpec, device, dtype, *, tiny: bool) -> None:
    """Refuse a CPU run that would exhaust the memory (Linux kills the process without a word)."""
    if tiny or device.type != "cpu" or not hasattr(os, "sysconf"):
        return
    try:
        available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):
        return
    needed = spec.approx_parameters * dtype.itemsize * 1.15  # activations and the allocator's slack
    if needed > available:
        raise ConfigError(f"{spec.name} size in {str(dtype).removeprefix('torch.')} needs about {needed / 1e9:.0f} "
                          f"GB of memory, {available / 1e9:.0f} GB are free: use --dtype bfloat16, or leave it out "
                          "with --models")


def _observation(policy: Policy, robot: EmbodimentConfig) -> dict:
    """An observation through the real adapter, from a robot whose cameras feed every camera of the model."""
    features = policy.metadata.features
    cameras = tuple(CameraSpec(name=key, policy_key=key, width=640, height=480) for key in features.camera_keys)
    robot = replace(robot, cameras=cameras)
    batch, _ = EmbodimentAdapter(robot, features).to_policy_observation(
        robot.example_observation(seed=0, instruction=INSTRUCTION))
    return batch


def measure(name: str, *, tiny: bool, robot: EmbodimentConfig, device, dtype, repeats: int) -> dict:
    spec = MODELS[name]
    _check_memory(spec, device, dtype, tiny=tiny)
    policy, parameters = spec.build(tiny, robot, device, dtype)
    try:
        batch = _observation(policy, robot)
        policy.reset()
        chunk_ms = []
        for _ in range(repeats):
            started = time.perf_counter()
            policy.predict_chunk(batch)  # returns numpy: the device has finished
            chunk_ms.append((time.perf_counter() - started) * 1e3)
        meta = policy.metadata
        summary = summarize_ms(chunk_ms)
        summary = {"p50": summary["p50"], "p90": round(float(np.percentile(chunk_ms, 90)), 4), **summary}
        return {
            "model": name,
            "description": spec.description if not tiny else f"tiny model of the {name} architecture",
            "parameters": int(parameters),
            "cameras": len(meta.features.camera_keys),
            "image_size": list(meta.features.image_size) if meta.features.image_size else None,
            "chunk_size": meta.features.chunk_size,
            "device": meta.device,
            "dtype": meta.dtype,
            "load_time_s": round(meta.load_time_s, 3),
            "chunk_ms": summary,
            "actions_per_s_at_p50": round(meta.features.chunk_size / (summary["p50"] / 1e3), 2),
        }
    finally:
        policy.close()
        del policy
        gc.collect()


def plot(results: dict, path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise MissingDependencyError("matplotlib", "sim", "The benchmark's plot") from exc
    models = results["models"]
    names = [m["model"] for m in models]
    p50 = [m["chunk_ms"]["p50"] for m in models]
    p90 = [m["chunk_ms"]["p90"] for m in models]
    worst = [m["chunk_ms"]["max"] for m in models]
    loads = [m["load_time_s"] for m in models]
    scale, unit = (1e-3, "s") if max(p50) > 5000 else (1.0, "ms")
    p50, p90, worst = (np.asarray(values) * scale for values in (p50, p90, worst))
    figure, (left, right) = plt.subplots(1, 2, figsize=(9, 3.6))
    x = np.arange(len(names))
    left.bar(x, p50, color="tab:blue", label="p50")
    left.errorbar(x, p50, yerr=[np.zeros(len(x)), p90 - p50], fmt="none", ecolor="black", capsize=6,
                  label="to p90")
    left.scatter(x, worst, marker="_", s=300, color="tab:red", label="max", zorder=3)
    left.set_xticks(x, names)
    left.set_ylabel(f"time per chunk ({unit})")
    left.legend(fontsize=8)
    right.bar(x, loads, color="tab:gray")
    right.set_xticks(x, names)
    right.set_ylabel("load + warm-up (s)")
    figure.suptitle(f"vla-ros bench inference: {results['device']}, {results['dtype']}, "
                    f"{results['repeats']} chunks{' (tiny models)' if results['tiny'] else ''}", fontsize=10)
    save_figure(figure, path, dpi=110)


def main(args: argparse.Namespace) -> int:
    names = parse_models(args.models)
    if args.repeats < 1:
        raise ConfigError(f"--repeats must be >= 1, got {args.repeats}")
    torch = import_torch()
    device = select_device(args.device)
    dtype = select_dtype(device, args.dtype)
    robot = load_embodiment(args.robot)
    # One plan for the largest model asked for: torch's thread pools are per process.
    largest = max(MODELS[name].approx_parameters for name in names) * dtype.itemsize
    threads = plan_threads(args.threads, device_type=device.type, weights_bytes=0 if args.tiny else int(largest))
    apply_threads(threads)
    print(f"vla-ros bench inference: {threads.describe()}", file=sys.stderr)
    results = {
        "benchmark": "inference",
        "machine": {"cpu": platform.processor() or platform.machine(), "python": platform.python_version(),
                    "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
                    "threads_reason": threads.reason,
                    "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None},
        "device": str(device),
        "dtype": str(dtype).removeprefix("torch."),
        "repeats": args.repeats,
        "tiny": args.tiny,
        "load_time_includes": LOAD_TIME_INCLUDES.format(weights="random" if args.tiny else "zero"),
        "chunk_time_includes": "the policy's processing (tokenizer, normalization) and every flow step",
        "models": [],
    }
    for name in names:
        print(f"vla-ros bench inference: {name}{' (tiny)' if args.tiny else ''} on {device}, "
              f"{results['dtype']}...", file=sys.stderr)
        results["models"].append(measure(name, tiny=args.tiny, robot=robot, device=device, dtype=dtype,
                                         repeats=args.repeats))
    report_json(results, args.json)
    plot_path = args.plot or (args.json.with_suffix(".png") if args.json is not None else None)
    if plot_path is not None:
        plot(results, plot_path)
    return 0
