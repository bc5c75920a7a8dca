"""`vla-ros finetune`: a SmolVLA checkpoint (the built-in one included) trained further on a LeRobot dataset.

Every frame of the dataset becomes a training sample the way the robot would see it at run time: the recorded
joint positions and camera images go through the embodiment adapter exactly as live observations do (joint
selection, units, padding, resize-with-pad), and the next `chunk_size` recorded commands become the action chunk
in policy units (deltas taken against that frame's state for delta joints, and for every arm joint where the
checkpoint predicts relative actions, as the built-in one does). Full fine-tuning suits small models;
`--lora-rank` trains low-rank adapters of the attention projections instead, for large ones. The result is a
checkpoint directory that `vla-ros demo --policy <dir>` and the policy node load.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from vla_ros.core.embodiment import EmbodimentConfig, load_embodiment
from vla_ros.core.errors import ConfigError
from vla_ros.core.features import STATE, RobotObservation, image_key
from vla_ros.policies.builtin.recipe import TrainRecipe

RESUME_DIR = "resume"  # inside the output directory: weights, optimizer and step of the last periodic checkpoint


@dataclass(frozen=True)
class FinetuneConfig:
    steps: int = 2000
    batch_size: int = 32
    learning_rate: float = 3e-4
    warmup_steps: int = 100
    lora_rank: int = 0  # 0: full fine-tuning
    lora_alpha: float = 16.0
    checkpoint_every: int = 500
    stats: str = "dataset"  # normalization of the fine-tuned robot: from the dataset, or the checkpoint's
    seed: int = 0
    threads: int | None = None

    def train_recipe(self) -> TrainRecipe:
        return replace(TrainRecipe(), steps=self.steps, batch_size=self.batch_size, learning_rate=self.learning_rate,
                       warmup_steps=self.warmup_steps, seed=self.seed, task_weights=(), early_samples=0,
                       early_weight=1.0)


def dataset_samples(dataset_dir: Path, embodiment: EmbodimentConfig, features) -> dict[str, np.ndarray]:
    """The dataset's frames as training samples in policy units (the layout `Batches` samples from)."""
    from vla_ros.core.pipeline import ActionPipeline, PipelineConfig
    from vla_ros.datasets.lerobot import read_dataset, validate_dataset

    cameras = {camera.policy_key: camera.name for camera in embodiment.cameras}
    missing = [key for key in features.camera_keys if key not in cameras]
    if missing:
        raise ConfigError(f"the policy expects cameras {list(features.camera_keys)}, but {embodiment.robot}'s config "
                          f"maps no camera to {missing}", source=embodiment.source, key="cameras")
    validate_dataset(dataset_dir, joint_names=list(embodiment.joint_names),
                     camera_keys=[cameras[key] for key in features.camera_keys])
    dataset = read_dataset(dataset_dir)
    pipeline = ActionPipeline(embodiment, features, PipelineConfig())
    columns: dict[str, list] = {"state": [], "action": [], "episode": [], "instruction": [],
                                **{f"image_{key}": [] for key in features.camera_keys}}
    horizon = features.chunk_size
    for info in dataset.episodes:
        episode = dataset.episode(info.index)
        frames = {key: dataset.episode_frames(info.index, cameras[key]) for key in features.camera_keys}
        # Past the episode's end the arm holds its last command: the chunk repeats it.
        padded = np.concatenate([episode.action, np.repeat(episode.action[-1:], horizon - 1, axis=0)])
        for t in range(len(episode)):
            observation = RobotObservation(
                stamp=float(episode.timestamp[t]), joint_names=embodiment.joint_names,
                joint_positions=episode.state[t].astype(np.float64),
                images={cameras[key]: frames[key][t] for key in features.camera_keys}, instruction=episode.task)
            pipeline.reset(observation.joint_positions)
            batch, request = pipeline.prepare(observation)
            actions = pipeline.adapter.robot_to_actions(padded[t:t + horizon].astype(np.float64), request.state)
            columns["state"].append(batch[STATE].astype(np.float32))
            columns["action"].append(actions.astype(np.float32))
            columns["episode"].append(info.index)
            columns["instruction"].append(episode.task)
            for key in features.camera_keys:
                columns[f"image_{key}"].append(batch[image_key(key)])
    data = {name: np.asarray(values) for name, values in columns.items()}
    data["robot"] = np.full(len(data["state"]), embodiment.robot)
    return data


def finetune(spec: str, dataset_dir: Path, out_dir: Path, *, robot: str, config: FinetuneConfig,
             resume: bool = False, progress: bool = True) -> dict:
    import torch
    from safetensors.torch import load_file, save_file

    from vla_ros.policies.builtin.train import Batches, normalization_stats, optimize, plot_loss
    from vla_ros.policies.factory import BUILTIN_CHECKPOINT
    from vla_ros.policies.lora import add_lora, merge_lora
    from vla_ros.policies.smolvla.checkpoint import NORM_STATS_DIR, load_checkpoint, load_robot_stats, save_checkpoint
    from vla_ros.policies.smolvla.policy import SmolVLAPolicy

    source = BUILTIN_CHECKPOINT if spec == "builtin" else Path(spec)
    if not (source / "config.json").is_file() or json.loads((source / "config.json").read_text()).get("type") \
            != "smolvla":
        raise ConfigError(f"fine-tuning takes a SmolVLA checkpoint directory or 'builtin'; {spec} is not one "
                          "(pi0: fine-tune with openpi or LeRobot and load the result here)")
    embodiment = load_embodiment(robot)
    torch.manual_seed(config.seed)
    if config.threads:
        torch.set_num_threads(config.threads)
    checkpoint = load_checkpoint(source)
    policy = SmolVLAPolicy(checkpoint, action_dt_s=embodiment.control_period_s, embodiment=embodiment, warmup=False)
    features, model = policy.metadata.features, checkpoint.model

    started = time.perf_counter()
    data = dataset_samples(dataset_dir, embodiment, features)
    if policy.relative_actions is not None:
        data["action"] = policy.relative_actions.to_model(data["action"], data["state"])
    if config.stats == "dataset":
        stats = normalization_stats(data, np.ones(len(data["state"]), dtype=bool))
        processor = checkpoint.processor.with_stats(stats, source=f"dataset {dataset_dir}")
    else:
        processor, stats = policy.processor, None
    if config.lora_rank:
        add_lora(model, rank=config.lora_rank, alpha=config.lora_alpha)
    train = config.train_recipe()
    log = {"source": str(source), "dataset": str(dataset_dir), "robot": robot, "config": asdict(config),
           "samples": int(len(data["state"])), "episodes": int(len(set(data["episode"].tolist()))),
           "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
           "parameters": sum(p.numel() for p in model.parameters()), "loss": [],
           "samples_seconds": round(time.perf_counter() - started, 1)}
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=train.learning_rate,
                                  weight_decay=train.weight_decay)
    start_step = 0
    resume_dir = out_dir / RESUME_DIR
    if resume and (resume_dir / "state.json").is_file():
        state = json.loads((resume_dir / "state.json").read_text(encoding="utf-8"))
        if state["config"] != asdict(config):
            raise ConfigError(f"{resume_dir} was written with other settings ({state['config']}): resume with the same "
                              "settings, or fine-tune into a new --out")
        model.load_state_dict(load_file(str(resume_dir / "model.safetensors")))
        optimizer.load_state_dict(_optimizer_state_from_files(resume_dir))
        start_step, log["loss"] = state["step"], state["loss"]
        print(f"resuming from step {start_step} ({resume_dir})", file=sys.stderr)

    def save_resume_point(step: int) -> None:
        resume_dir.mkdir(parents=True, exist_ok=True)
        save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()},
                  str(resume_dir / "model.safetensors"))
        _optimizer_state_to_files(optimizer.state_dict(), resume_dir)
        # state.json last: a resume point is complete once it exists
        (resume_dir / "state.json").write_text(json.dumps({"step": step, "config": asdict(config),
                                                           "loss": log["loss"]}), encoding="utf-8")

    batches = {robot: Batches(data, seed=config.seed + start_step, task_weights={}, camera_keys=features.camera_keys)}
    bar = _progress(train.steps, start_step) if progress else None
    train_started = time.perf_counter()
    optimize(model, batches, {robot: processor}, train, action_dim=features.action_dim, log=log,
             start_step=start_step, optimizer=optimizer, checkpoint_every=config.checkpoint_every,
             on_checkpoint=save_resume_point, progress=bar)
    if bar is not None:
        bar.close()
    log["train_seconds"] = round(time.perf_counter() - train_started, 1)
    if config.lora_rank:
        log["lora_layers_merged"] = merge_lora(model)

    robot_stats = {path.stem: load_robot_stats(source, path.stem)
                   for path in sorted((source / NORM_STATS_DIR).glob("*.safetensors"))}
    if stats is not None:
        robot_stats[robot] = stats
    save_checkpoint(out_dir, checkpoint.config, model, checkpoint.processor, robot_stats=robot_stats)
    (out_dir / "finetune_log.json").write_text(json.dumps(log, indent=1) + "\n", encoding="utf-8")
    plot_loss(log, out_dir / "finetune_loss.png",
              title=f"fine-tuning on {dataset_dir.name}, {log['trainable_parameters'] / 1e6:.2f}M trainable")
    return log


def _optimizer_state_to_files(state: dict, directory: Path) -> None:
    """An optimizer state_dict as safetensors (its tensors) plus JSON (the rest): nothing is pickled."""
    from safetensors.torch import save_file

    tensors, scalars = {}, {}
    for parameter, values in state["state"].items():
        for name, value in values.items():
            key = f"{parameter}.{name}"
            if hasattr(value, "shape"):
                tensors[key] = value.detach().contiguous()
            else:
                scalars[key] = value
    save_file(tensors, str(directory / "optimizer.safetensors"))
    (directory / "optimizer.json").write_text(json.dumps({"param_groups": state["param_groups"], "scalars": scalars}),
                                              encoding="utf-8")


def _optimizer_state_from_files(directory: Path) -> dict:
    from safetensors.torch import load_file

    meta = json.loads((directory / "optimizer.json").read_text(encoding="utf-8"))
    state: dict[int, dict] = {}
    for key, value in [*load_file(str(directory / "optimizer.safetensors")).items(), *meta["scalars"].items()]:
        parameter, name = key.split(".", 1)
        state.setdefault(int(parameter), {})[name] = value
    return {"state": state, "param_groups": meta["param_groups"]}


def _progress(total: int, done: int):
    from tqdm import tqdm

    return tqdm(total=total, initial=done, unit="step", desc="fine-tuning")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = FinetuneConfig()
    parser.add_argument("--policy", default="builtin", help="SmolVLA checkpoint directory, or builtin")
    parser.add_argument("--dataset", type=Path, required=True, help="LeRobot v3 dataset (vla-ros record)")
    parser.add_argument("--robot", help="robot config (default: the dataset's robot_type)")
    parser.add_argument("--out", type=Path, required=True, help="checkpoint directory to write")
    parser.add_argument("--steps", type=int, default=defaults.steps, help="optimizer steps (each one batch)")
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size, help="samples per optimizer step")
    parser.add_argument("--lr", type=float, default=defaults.learning_rate,
                        help="peak learning rate (AdamW): linear warm-up to it, then cosine decay to 10%% of it")
    parser.add_argument("--lora-rank", type=int, default=0, help="train rank-r adapters only (0: every weight)")
    parser.add_argument("--checkpoint-every", type=int, default=defaults.checkpoint_every,
                        help="steps between resume points")
    parser.add_argument("--stats", choices=["dataset", "checkpoint"], default=defaults.stats,
                        help="normalization statistics for the robot")
    parser.add_argument("--resume", action="store_true", help="continue from <out>/resume")
    parser.add_argument("--threads", type=int, help="torch CPU threads")
    parser.add_argument("--no-progress", action="store_true")


def main(args: argparse.Namespace) -> int:
    robot = args.robot
    if robot is None:
        info = args.dataset / "meta" / "info.json"
        if not info.is_file():
            raise ConfigError(f"{args.dataset} is not a LeRobot dataset (no meta/info.json)")
        robot = json.loads(info.read_text(encoding="utf-8")).get("robot_type") or ""
        if not robot:
            raise ConfigError(f"{info} names no robot_type: pass --robot")
    config = FinetuneConfig(steps=args.steps, batch_size=args.batch_size, learning_rate=args.lr,
                            lora_rank=args.lora_rank, checkpoint_every=args.checkpoint_every, stats=args.stats,
                            threads=args.threads)
    log = finetune(args.policy, args.dataset, args.out, robot=robot, config=config, resume=args.resume,
                   progress=not args.no_progress)
    final = log["loss"][-1]["loss"] if log["loss"] else float("nan")
    print(f"wrote {args.out}: {log['samples']} samples from {log['episodes']} episodes, "
          f"{log['train_seconds'] / 60:.1f} min, final loss {final:.4f}")
    return 0
