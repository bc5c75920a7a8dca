"""`vla-ros finetune`: a SmolVLA checkpoint (the built-in one included) trained further on a LeRobot dataset.

Every frame of the dataset becomes a training sample the way the robot would see it at run time: the recorded
joint positions and camera images go through the embodiment adapter exactly as live observations do (joint
selection, units, padding, resize-with-pad), and the next `chunk_size` recorded commands become the action chunk
in policy units (deltas taken against that frame's state for delta joints, and for every arm joint where the
checkpoint predicts relative actions, as the built-in one does). Full fine-tuning suits small models;
`--lora-rank` trains low-rank adapters of the attention projections instead, for large ones. The result is a
checkpoint directory that `vla-ros demo --policy <dir>` and the policy node load.

Several datasets can be mixed with weights (`--dataset new:0.5 --dataset old:0.5`): a dataset's weight is its share
of the training batches, so that a new skill is learned beside a replay of what the checkpoint was trained on
instead of over it; within a dataset every sample is equally likely, so its tasks keep their proportions. A
dataset is a LeRobot dataset (`vla-ros record`) or the built-in VLA's training episodes as
`python -m vla_ros.policies.builtin.collect` records them (.npz shards, both arms, deterministic), which replays
exactly what the built-in checkpoint learned from.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from vla_ros.core.embodiment import EmbodimentConfig, load_embodiment
from vla_ros.core.errors import ConfigError
from vla_ros.core.features import STATE, PolicyFeatures, RobotObservation, image_key
from vla_ros.policies.builtin.recipe import TrainRecipe

RESUME_DIR = "resume"  # inside the output directory: weights, optimizer and step of the last periodic checkpoint
AVERAGE_FILE = "average.safetensors"  # in RESUME_DIR, with --ema-decay: the weight average so far


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
    # Weight of the built-in VLA's grounding loss (train.GroundingReadout: where the instructed cube and every cube
    # are) beside flow matching, on the datasets that record cube positions; 0: flow matching alone.
    grounding_weight: float = 0.0
    # Each episode's first TrainRecipe.early_samples samples are drawn this many times as often (1: as often as the
    # rest), as the built-in recipe trains: there the words and images are the only clue to the target.
    early_weight: float = 1.0
    # Decay of the exponential moving average of the weights that the output holds (train.WeightAverage), as the
    # built-in recipe trains; 0: the last step's weights.
    ema_decay: float = 0.0

    def __post_init__(self) -> None:
        if self.steps < 0:
            raise ConfigError(f"--steps must be 0 or more (0: only the datasets' normalization stats), "
                              f"got {self.steps}", key="--steps")
        if not (self.grounding_weight >= 0 and np.isfinite(self.grounding_weight)):
            raise ConfigError(f"--grounding-weight must be 0 or more, got {self.grounding_weight}",
                              key="--grounding-weight")
        if not (self.early_weight >= 1 and np.isfinite(self.early_weight)):
            raise ConfigError(f"--early-weight must be 1 or more (1: every sample alike), got {self.early_weight}",
                              key="--early-weight")
        if not 0 <= self.ema_decay < 1:
            raise ConfigError(f"--ema-decay must be at least 0 (0: no average) and below 1, got {self.ema_decay}",
                              key="--ema-decay")

    def train_recipe(self) -> TrainRecipe:
        return replace(TrainRecipe(), steps=self.steps, batch_size=self.batch_size, learning_rate=self.learning_rate,
                       warmup_steps=self.warmup_steps, seed=self.seed, task_weights=(),
                       early_weight=self.early_weight, grounding_weight=self.grounding_weight,
                       ema_decay=self.ema_decay)  # the recipe's early_samples: with early_weight 1 all alike


@dataclass(frozen=True)
class DatasetShare:
    """A dataset to fine-tune on and its weight: its share of the batches, relative to the other datasets'."""

    path: Path
    weight: float = 1.0

    def __post_init__(self) -> None:
        if not (self.weight > 0 and np.isfinite(self.weight)):
            raise ConfigError(f"the weight of dataset {self.path} must be a positive number, got {self.weight}",
                              key="--dataset")

    @classmethod
    def parse(cls, text: str) -> DatasetShare:
        """'PATH' (weight 1) or 'PATH:WEIGHT', e.g. 'yellow_so101:0.5'."""
        path, separator, weight = text.rpartition(":")
        if separator:
            try:
                return cls(Path(path), float(weight))
            except ValueError:
                pass  # a colon inside the path, no weight
        return cls(Path(text))


def weighted_order(weights: dict[str, float], length: int = 1000) -> list[str]:
    """`length` keys drawn in proportion to `weights`, spread evenly (smooth weighted round-robin): batch i of a
    fine-tuning comes from source order[i % length]."""
    total = sum(weights.values())
    credit = dict.fromkeys(weights, 0.0)
    order = []
    for _ in range(length):
        for key, weight in weights.items():
            credit[key] += weight / total
        chosen = max(credit, key=credit.get)
        credit[chosen] -= 1.0
        order.append(chosen)
    return order


def task_shares(samples: dict[str, np.ndarray]) -> dict[str, float]:
    """Each task's weight in a dataset's batches: its number of samples, so that a replay keeps the mix of tasks
    it was recorded with (the built-in episodes: 300 touch, 30 pick per arm)."""
    tasks, counts = np.unique([str(text).split(" ")[0] for text in samples["instruction"]], return_counts=True)
    return {task: float(count) for task, count in zip(tasks.tolist(), counts.tolist(), strict=True)}


def shard_samples(shard_dir: Path) -> dict[str, dict[str, np.ndarray]]:
    """The built-in VLA's training episodes (collect.py's .npz shards) per robot. Their actions are in policy units
    already, as the run-time adapter makes them."""
    from vla_ros.policies.builtin.collect import load_shards

    data = load_shards(shard_dir)
    return {robot: {key: value[data["robot"] == robot] for key, value in data.items()}
            for robot in sorted(set(data["robot"].tolist()))}


def check_shard_shapes(shard_dir: Path, samples: dict[str, np.ndarray], features: PolicyFeatures) -> None:
    """ConfigError where training shards were recorded for a model of other image or action sizes."""
    for key in features.camera_keys:
        size = samples[f"image_{key}"].shape[1:3] if f"image_{key}" in samples else None
        if size != tuple(features.image_size):
            raise ConfigError(f"the training episodes in {shard_dir} hold {key} images of {size}, but the policy takes "
                              f"{tuple(features.image_size)}: record them for this model's recipe")
    if samples["action"].shape[1:] != (features.chunk_size, features.action_dim):
        raise ConfigError(f"the training episodes in {shard_dir} hold action chunks of {samples['action'].shape[1:]}, "
                          f"but the policy predicts ({features.chunk_size}, {features.action_dim})")


def load_share(share: DatasetShare, features_for: Callable[[str], PolicyFeatures], *, robot: str | None
               ) -> dict[str, dict[str, np.ndarray]]:
    """The samples of one dataset per robot: a LeRobot dataset (of `robot`, default its robot_type) or training
    shards. `features_for(robot)`: what the policy consumes and produces on that robot."""
    if (share.path / "meta" / "info.json").is_file():
        robot = robot or dataset_robot(share.path)
        return {robot: dataset_samples(share.path, load_embodiment(robot), features_for(robot))}
    if share.path.is_dir() and any(share.path.glob("*.npz")):
        shards = shard_samples(share.path)
        for name, samples in shards.items():
            check_shard_shapes(share.path, samples, features_for(name))
        return shards
    raise ConfigError(f"{share.path} is neither a LeRobot dataset (no meta/info.json) nor the built-in VLA's "
                      "training episodes (no *.npz): record one with `vla-ros record` or `python -m "
                      "vla_ros.policies.builtin.collect --out <dir>`", key="--dataset")


def grounding_readout(model, sources: dict[str, tuple[str, dict[str, np.ndarray]]], action_dim: int):
    """The built-in VLA's grounding readout over the sources that record where the cubes were (training shards),
    their samples given `grounding_target`s; ConfigError where none does. Each robot's targets are normalized by
    their spread over all of that robot's labelled samples, as in training."""
    from vla_ros.policies.builtin.train import GroundingReadout

    labelled = {key: (robot, samples) for key, (robot, samples) in sources.items()
                if {"goal", "cubes", "tcp"} <= samples.keys()}
    if not labelled:
        raise ConfigError("--grounding-weight needs datasets that record where the cubes are: the built-in VLA's "
                          "training episodes (python -m vla_ros.policies.builtin.collect); LeRobot datasets do not",
                          key="--grounding-weight")
    per_robot = grounding_scales(labelled.values())
    # optimize() names a batch by its source key
    return GroundingReadout(model, action_dim, {key: per_robot[robot] for key, (robot, _) in labelled.items()})


def grounding_scales(parts: Iterable[tuple[str, dict[str, np.ndarray]]]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Robot -> (mean, std) of its grounding targets over all of its (robot, samples) `parts`, the readout's units;
    each part's samples are given their `grounding_target`s."""
    from vla_ros.policies.builtin.train import grounding_targets, target_normalization

    tcp_offset = TrainRecipe().grounding_tcp_offset  # the readout's layout the built-in checkpoints were trained on
    targets: dict[str, list[np.ndarray]] = {}
    for robot, samples in parts:
        samples["grounding_target"] = grounding_targets(samples, tcp_offset=tcp_offset)
        targets.setdefault(robot, []).append(samples["grounding_target"])
    return {robot: target_normalization(np.concatenate(values)) for robot, values in targets.items()}


def dataset_robot(dataset_dir: Path) -> str:
    """The robot_type a LeRobot dataset names."""
    info = dataset_dir / "meta" / "info.json"
    if not info.is_file():
        raise ConfigError(f"{dataset_dir} is not a LeRobot dataset (no meta/info.json)")
    robot = json.loads(info.read_text(encoding="utf-8")).get("robot_type") or ""
    if not robot:
        raise ConfigError(f"{info} names no robot_type: pass --robot")
    return robot


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


def finetune(spec: str, datasets: Path | Sequence[DatasetShare], out_dir: Path, *, robot: str | None = None,
             config: FinetuneConfig, resume: bool = False, progress: bool = True,
             patch_positions: str | None = None) -> dict:
    """Fine-tune checkpoint `spec` ('builtin' or a directory) on one dataset or on several with weights.

    `patch_positions`: overrides the vision patch positions found from the checkpoint's files (a checkpoint
    saved by LeRobot <= 0.4 needs "transformers4"); the output's vla_ros.json records the ones trained with.

    `robot`: the robot of the LeRobot datasets (default: the robot_type each one names); training shards name
    their robots themselves. Each robot gets its own normalization and its batches are one robot at a time, as in
    training; a dataset's weight is split evenly over the robots in it.
    """
    import torch
    from safetensors.torch import load_file, save_file

    from vla_ros.policies.builtin.train import Batches, WeightAverage, normalization_stats, optimize, plot_loss
    from vla_ros.policies.factory import SHIPPED_POLICIES, shipped_checkpoint
    from vla_ros.policies.lora import add_lora, merge_lora
    from vla_ros.policies.smolvla.checkpoint import NORM_STATS_DIR, load_checkpoint, load_robot_stats, save_checkpoint
    from vla_ros.policies.smolvla.policy import SmolVLAPolicy

    shares = [DatasetShare(datasets)] if isinstance(datasets, Path) else list(datasets)
    if not shares:
        raise ConfigError("no dataset to fine-tune on: give --dataset at least once", key="--dataset")
    source = shipped_checkpoint(spec) if spec in SHIPPED_POLICIES else Path(spec)
    if not (source / "config.json").is_file() or json.loads((source / "config.json").read_text()).get("type") \
            != "smolvla":
        raise ConfigError(f"fine-tuning takes a SmolVLA checkpoint directory, 'builtin' or 'builtin-generalist'; "
                          f"{spec} is not one (pi0: fine-tune with openpi or LeRobot and load the result here)")
    torch.manual_seed(config.seed)
    if config.threads:
        torch.set_num_threads(config.threads)
    checkpoint = load_checkpoint(source, patch_positions=patch_positions)
    model = checkpoint.model
    policies: dict[str, SmolVLAPolicy] = {}  # one per robot: its stats in the checkpoint, its relative actions

    def policy_for(name: str) -> SmolVLAPolicy:
        if name not in policies:
            embodiment = load_embodiment(name)
            policies[name] = SmolVLAPolicy(checkpoint, action_dt_s=embodiment.control_period_s,
                                           embodiment=embodiment, warmup=False)
        return policies[name]

    started = time.perf_counter()
    sources: dict[str, tuple[str, dict[str, np.ndarray]]] = {}  # source key -> (robot, samples)
    weights: dict[str, float] = {}
    for index, share in enumerate(shares):
        per_robot = load_share(share, lambda name: policy_for(name).metadata.features, robot=robot)
        for name, samples in per_robot.items():
            relative = policy_for(name).relative_actions
            if relative is not None:
                samples["action"] = relative.to_model(samples["action"], samples["state"])
            key = name if len(shares) == 1 and len(per_robot) == 1 else f"{index}:{share.path.name}/{name}"
            sources[key] = (name, samples)
            weights[key] = share.weight / len(per_robot)
    robots = sorted({name for name, _ in sources.values()})
    features = policy_for(robots[0]).metadata.features
    processors, new_stats = {}, {}
    for name in robots:
        if config.stats == "dataset":
            parts = [samples for owner, samples in sources.values() if owner == name]
            merged = {key: np.concatenate([part[key] for part in parts]) for key in ("state", "action")}
            new_stats[name] = normalization_stats(merged, np.ones(len(merged["state"]), dtype=bool))
            processors[name] = checkpoint.processor.with_stats(
                new_stats[name], source=f"datasets {', '.join(str(share.path) for share in shares)}")
        else:
            processors[name] = policy_for(name).processor
    readout = grounding_readout(model, sources, features.action_dim) if config.grounding_weight else None
    if config.lora_rank:
        add_lora(model, rank=config.lora_rank, alpha=config.lora_alpha)
    train = config.train_recipe()
    samples_per_source = {key: int(len(samples["state"])) for key, (_, samples) in sources.items()}
    log = {"source": str(source), "dataset": ", ".join(str(share.path) for share in shares),
           "datasets": [{"path": str(share.path), "weight": share.weight} for share in shares],
           "robot": ", ".join(robots), "config": asdict(config),
           "samples": sum(samples_per_source.values()), "samples_per_source": samples_per_source,
           "batch_share": {key: round(weight / sum(weights.values()), 4) for key, weight in weights.items()},
           "episodes": sum(len(set(samples["episode"].tolist())) for _, samples in sources.values()),
           "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
           "parameters": sum(p.numel() for p in model.parameters()), "loss": [],
           "samples_seconds": round(time.perf_counter() - started, 1)}
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=train.learning_rate,
                                  weight_decay=train.weight_decay)
    average = WeightAverage(model, train.ema_decay) if train.ema_decay else None
    start_step = 0
    resume_dir = out_dir / RESUME_DIR
    if resume and (resume_dir / "state.json").is_file():
        state = json.loads((resume_dir / "state.json").read_text(encoding="utf-8"))
        if state["config"] != asdict(config):
            raise ConfigError(f"{resume_dir} was written with other settings ({state['config']}): resume with the same "
                              "settings, or fine-tune into a new --out")
        model.load_state_dict(load_file(str(resume_dir / "model.safetensors")))
        optimizer.load_state_dict(_optimizer_state_from_files(resume_dir))
        if average is not None:
            average.load_state_dict(load_file(str(resume_dir / AVERAGE_FILE)))
        start_step, log["loss"] = state["step"], state["loss"]
        print(f"resuming from step {start_step} ({resume_dir})", file=sys.stderr)

    def save_resume_point(step: int) -> None:
        resume_dir.mkdir(parents=True, exist_ok=True)
        save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()},
                  str(resume_dir / "model.safetensors"))
        _optimizer_state_to_files(optimizer.state_dict(), resume_dir)
        if average is not None:
            save_file(average.state_dict(), str(resume_dir / AVERAGE_FILE))
        # state.json last: a resume point is complete once it exists
        (resume_dir / "state.json").write_text(json.dumps({"step": step, "config": asdict(config),
                                                           "loss": log["loss"]}), encoding="utf-8")

    batches = {key: Batches(samples, seed=config.seed + start_step + i, task_weights=task_shares(samples),
                            camera_keys=features.camera_keys, early_samples=train.early_samples,
                            early_weight=train.early_weight)
               for i, (key, (_, samples)) in enumerate(sources.items())}
    bar = _progress(train.steps, start_step) if progress else None
    train_started = time.perf_counter()
    optimize(model, batches, {key: processors[name] for key, (name, _) in sources.items()}, train,
             action_dim=features.action_dim, log=log, start_step=start_step, optimizer=optimizer,
             checkpoint_every=config.checkpoint_every, on_checkpoint=save_resume_point, progress=bar,
             order=weighted_order(weights) if len(sources) > 1 else None, readout=readout, average=average)
    if bar is not None:
        bar.close()
    log["train_seconds"] = round(time.perf_counter() - train_started, 1)
    if average is not None:
        average.apply()  # before LoRA merges: with LoRA, the average is the adapters'
    if config.lora_rank:
        log["lora_layers_merged"] = merge_lora(model)

    robot_stats = {path.stem: load_robot_stats(source, path.stem)
                   for path in sorted((source / NORM_STATS_DIR).glob("*.safetensors"))}
    robot_stats.update(new_stats)
    save_checkpoint(out_dir, checkpoint.config, model, checkpoint.processor, robot_stats=robot_stats)
    (out_dir / "finetune_log.json").write_text(json.dumps(log, indent=1) + "\n", encoding="utf-8")
    mix = " + ".join(share.path.name + (f" ({share.weight:g})" if len(shares) > 1 else "") for share in shares)
    plot_loss(log, out_dir / "finetune_loss.png",
              title=f"fine-tuning on {mix}, {log['trainable_parameters'] / 1e6:.2f}M trainable")
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
    parser.add_argument("--policy", default="builtin",
                        help="SmolVLA checkpoint directory, builtin or builtin-generalist")
    parser.add_argument("--dataset", type=DatasetShare.parse, action="append", required=True, metavar="PATH[:WEIGHT]",
                        help="LeRobot v3 dataset (vla-ros record) or the built-in VLA's training episodes "
                             "(python -m vla_ros.policies.builtin.collect); repeat to mix datasets, WEIGHT being a "
                             "dataset's share of the batches (default 1), e.g. --dataset new:0.5 --dataset old:0.5")
    parser.add_argument("--robot", help="robot config of the LeRobot datasets (default: each one's robot_type)")
    parser.add_argument("--out", type=Path, required=True, help="checkpoint directory to write")
    parser.add_argument("--steps", type=int, default=defaults.steps,
                        help="optimizer steps (each one batch); 0 copies the weights and adds the datasets' "
                             "normalization stats: a new robot's stats without training")
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size, help="samples per optimizer step")
    parser.add_argument("--lr", type=float, default=defaults.learning_rate,
                        help="peak learning rate (AdamW): linear warm-up to it, then cosine decay to 10%% of it")
    parser.add_argument("--lora-rank", type=int, default=0, help="train rank-r adapters only (0: every weight)")
    parser.add_argument("--checkpoint-every", type=int, default=defaults.checkpoint_every,
                        help="steps between resume points")
    parser.add_argument("--stats", choices=["dataset", "checkpoint"], default=defaults.stats,
                        help="normalization statistics for the robot")
    parser.add_argument("--grounding-weight", type=float, default=defaults.grounding_weight,
                        help="also train the built-in VLA's grounding readout (where the instructed cube and every "
                             "cube are), with this weight beside flow matching, on datasets that record the cubes "
                             "(its training episodes); 0: flow matching alone")
    parser.add_argument("--early-weight", type=float, default=defaults.early_weight,
                        help=f"draw each episode's first {TrainRecipe.early_samples} samples this many times as often "
                             "as the rest, as the built-in recipe trains (4): there nothing but the words and images "
                             "tell the target (default 1: every sample alike)")
    parser.add_argument("--ema-decay", type=float, default=defaults.ema_decay,
                        help="write an exponential moving average of the weights with this decay, as the built-in "
                             "recipe trains (0.998), instead of the last step's (default 0)")
    parser.add_argument("--resume", action="store_true", help="continue from <out>/resume")
    parser.add_argument("--threads", type=int, help="torch CPU threads")
    parser.add_argument("--patch-positions", choices=["auto", "transformers4", "transformers5"], default="auto",
                        help="SmolVLA's vision patch positions (auto: from the checkpoint's files; a checkpoint "
                             "saved by LeRobot <= 0.4 needs transformers4)")
    parser.add_argument("--no-progress", action="store_true")


def main(args: argparse.Namespace) -> int:
    config = FinetuneConfig(steps=args.steps, batch_size=args.batch_size, learning_rate=args.lr,
                            lora_rank=args.lora_rank, checkpoint_every=args.checkpoint_every, stats=args.stats,
                            threads=args.threads, grounding_weight=args.grounding_weight,
                            early_weight=args.early_weight, ema_decay=args.ema_decay)
    log = finetune(args.policy, args.dataset, args.out, robot=args.robot, config=config, resume=args.resume,
                   progress=not args.no_progress, patch_positions=args.patch_positions)
    if config.steps == 0:
        print(f"wrote {args.out}: the same weights, with normalization stats from {log['samples']} samples of "
              f"{log['episodes']} episodes ({log['robot']})")
        return 0
    final = f", final loss {log['loss'][-1]['loss']:.4f}" if log["loss"] else ""  # logged every 50 steps
    print(f"wrote {args.out}: {log['samples']} samples from {log['episodes']} episodes, "
          f"{log['train_seconds'] / 60:.1f} min{final}")
    return 0
