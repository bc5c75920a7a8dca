"""Train the built-in VLA from scratch: `python -m vla_ros.policies.builtin.train --data builtin_data`.

Reads the recipe (recipe.py), records episodes if the data folder is empty (collect.py), trains a tiny SmolVLA
with flow matching on CPU, and writes a LeRobot-layout checkpoint with per-robot normalization statistics plus a
training log (loss curve, wall time, recipe) beside the weights.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Callable, Sequence
from contextlib import contextmanager, nullcontext
from pathlib import Path

import numpy as np

from vla_ros.core.features import STATE, TASK, image_key, image_mask_key
from vla_ros.policies.builtin import SHIPPED_CHECKPOINTS
from vla_ros.policies.builtin.collect import collect, load_shards
from vla_ros.policies.builtin.recipe import CAMERA_KEYS, RECIPES, VOCABULARY, ModelRecipe, Recipe, TrainRecipe

FINETUNE_SHIFT_PX = 4  # image translation for fine-tuning data, whose cameras' geometry we do not know
EPS = 1e-6


def normalization_stats(data: dict[str, np.ndarray], mask: np.ndarray) -> dict[str, np.ndarray]:
    """LeRobot normalizer keys (mean/std) over the samples in `mask`; padded dimensions get std 1."""
    stats = {}
    for key, values in (("observation.state", data["state"][mask]), ("action", data["action"][mask])):
        flat = values.reshape(-1, values.shape[-1]).astype(np.float64)
        std = flat.std(axis=0)
        stats[f"{key}.mean"] = flat.mean(axis=0).astype(np.float32)
        stats[f"{key}.std"] = np.where(std < EPS, 1.0, std).astype(np.float32)
    return stats


def grounding_targets(data: dict[str, np.ndarray], *, tcp_offset: bool) -> np.ndarray:
    """(N, 2 + 2 * colours [+ 2]): the instructed cube's table position, then every cube's (recipe colour order),
    then, with `tcp_offset`, the instructed cube's table position relative to the tool centre point's."""
    targets = [data["goal"], data["cubes"].reshape(len(data["cubes"]), -1)]
    if tcp_offset:
        if "tcp" not in data:
            raise KeyError("the episode shards have no 'tcp' (recorded before it was added): record them again "
                           "into an empty --data folder")
        targets.append(data["goal"] - data["tcp"][:, :2])
    return np.concatenate(targets, axis=1)


def target_normalization(targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mean, std) per dimension of one robot's grounding targets; used in training only."""
    std = targets.std(axis=0)
    return targets.mean(axis=0).astype(np.float32), np.where(std < EPS, 1.0, std).astype(np.float32)


class Batches:
    """Random training batches, balanced over (robot, task) groups, as lists of policy observations + actions."""

    def __init__(self, data: dict[str, np.ndarray], seed: int, task_weights: dict[str, float], *,
                 early_samples: int = 0, early_weight: float = 1.0, camera_keys: tuple[str, ...] = CAMERA_KEYS,
                 max_shift_px: dict[str, int] | int = FINETUNE_SHIFT_PX):
        """`max_shift_px`: random translation of each camera's images, up to this many pixels either way."""
        self.data = data
        self.camera_keys = camera_keys
        self.max_shift_px = (max_shift_px if isinstance(max_shift_px, dict)
                             else dict.fromkeys(camera_keys, max_shift_px))
        self.rng = np.random.default_rng(seed)
        task = np.array([text.split(" ")[0] for text in data["instruction"]])
        keys = np.char.add(np.char.add(data["robot"].astype(str), "/"), task)
        names = sorted(set(keys))
        self.groups = [np.flatnonzero(keys == key) for key in names]
        weights = np.array([task_weights.get(name.split("/")[1], 1.0) for name in names])
        self.group_weights = weights / weights.sum()
        sample_weights = np.where(position_in_episode(data) < early_samples, early_weight, 1.0)
        self.sample_probabilities = [sample_weights[g] / sample_weights[g].sum() for g in self.groups]

    def draw(self, batch_size: int) -> np.ndarray:
        """Indices of the samples of one batch."""
        groups = self.rng.choice(len(self.groups), size=batch_size, p=self.group_weights)
        return np.array([self.rng.choice(self.groups[g], p=self.sample_probabilities[g]) for g in groups])

    def sample(self, batch_size: int) -> tuple[list[dict], np.ndarray, np.ndarray | None]:
        """(observations, action chunks, grounding targets; None where the data has none)."""
        indices = self.draw(batch_size)
        observations = []
        for i in indices:
            observation = sample_observation(self.data, i, self.camera_keys)
            for key in self.camera_keys:
                observation[image_key(key)] = self._shifted(observation[image_key(key)], self.max_shift_px[key])
            observations.append(observation)
        targets = self.data["grounding_target"][indices] if "grounding_target" in self.data else None
        return observations, self.data["action"][indices], targets

    def _shifted(self, image: np.ndarray, shift: int) -> np.ndarray:
        if shift == 0:
            return image
        dy, dx = self.rng.integers(-shift, shift + 1, size=2)
        padded = np.pad(image, ((shift,) * 2, (shift,) * 2, (0, 0)), mode="edge")
        h, w = image.shape[:2]
        return padded[shift + dy: shift + dy + h, shift + dx: shift + dx + w]


def sample_observation(data: dict[str, np.ndarray], index: int, camera_keys: tuple[str, ...] = CAMERA_KEYS) -> dict:
    """Training sample `index` as the policy observation it was recorded from (state, instruction, images)."""
    return {STATE: data["state"][index], TASK: str(data["instruction"][index]),
            **{image_key(key): data[f"image_{key}"][index] for key in camera_keys},
            **{image_mask_key(key): True for key in camera_keys}}


def position_in_episode(data: dict[str, np.ndarray]) -> np.ndarray:
    """Index of each sample within its episode (samples of an episode are stored one after another).

    Episode numbers restart in every shard, so a new robot or instruction starts a new episode too.
    """
    episode = data["episode"]
    starts = np.r_[True, episode[1:] != episode[:-1]]
    for key in ("robot", "instruction"):
        if key in data:
            starts[1:] |= data[key][1:] != data[key][:-1]
    start_index = np.maximum.accumulate(np.where(starts, np.arange(len(episode)), 0))
    return np.arange(len(episode)) - start_index


def learning_rate(step: int, recipe) -> float:
    """Linear warm-up, then cosine decay to 10% of the peak."""
    if step < recipe.warmup_steps:
        return recipe.learning_rate * (step + 1) / recipe.warmup_steps
    progress = (step - recipe.warmup_steps) / max(1, recipe.steps - recipe.warmup_steps)
    return recipe.learning_rate * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0))))


class GroundingReadout:
    """Where the model thinks the cubes are: a training-only readout that teaches it to look.

    At an episode's first ticks only the images and the colour word tell the cubes apart, and the expert's first
    motions toward different cubes barely differ; later the arm's own heading gives the target away. Flow matching
    alone therefore learns to follow the heading and ignore the words. Regressing the instructed cube's table
    position from the observation gives every sample a target that only grounding the words in the images can
    meet. Regressing every cube's position beside it (no words needed) teaches the vision encoder to find cubes
    first: with it, the instructed cube is found on unseen layouts (to about 2 cm on the so101) after about 1,000
    steps; without it, it was still at chance after 2,000.

    The readout is the velocity the action expert predicts for an all-zero chunk at t=1, averaged over the chunk,
    in the padded action dimensions just past the robot's: no new parameters, and nothing the policy outputs
    (padded dimensions are dropped at inference). Their inputs to the expert are zeroed and kept at zero, so that
    whatever those dimensions drift to while sampling does not reach the real actions.
    """

    def __init__(self, model, action_dim: int, target_stats: dict[str, tuple[np.ndarray, np.ndarray]]):
        import torch

        self.model = model
        width = len(next(iter(target_stats.values()))[0])
        self.dims = slice(action_dim, action_dim + width)
        self.stats = target_stats  # robot -> (mean, std) of its grounding targets
        weight = model.action_in_proj.weight  # (expert hidden, max_action_dim)
        mask = torch.ones_like(weight)
        mask[:, action_dim:] = 0
        with torch.no_grad():
            weight.mul_(mask)
        weight.register_hook(lambda grad: grad * mask)

    def loss(self, cache, robot: str, targets: np.ndarray):
        """Mean squared error of the read-out targets, in units of the robot's spread of each."""
        import torch

        mean, std = self.stats[robot]
        return ((self._normalized(cache) - torch.as_tensor((targets - mean) / std)) ** 2).mean()

    def positions(self, cache, robot: str) -> np.ndarray:
        """(batch, targets) what the readout says, in the targets' units (m): the named cube's table position first."""
        import torch

        mean, std = self.stats[robot]
        with torch.no_grad():
            return self._normalized(cache).numpy() * std + mean

    def _normalized(self, cache):
        import torch

        batch = cache.pad_masks.shape[0]
        config = self.model.config
        zeros = torch.zeros(batch, config.chunk_size, config.max_action_dim)
        return self.model.velocity(cache, zeros, torch.ones(batch))[:, :, self.dims].mean(dim=1)


def ground(model, batches: dict[str, Batches], processors: dict, train: TrainRecipe, readout: GroundingReadout, *,
           log: dict) -> None:
    """The grounding stage: `train.grounding_steps` of goal regression alone, from episodes' first samples."""
    import torch

    model.train()
    parameters = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(parameters, lr=train.grounding_learning_rate, weight_decay=train.weight_decay)
    robots = sorted(batches)
    started, running = time.perf_counter(), 0.0
    for step in range(train.grounding_steps):
        robot = robots[step % len(robots)]
        observations, _, targets = batches[robot].sample(train.batch_size)
        cache = model.encode_prefix(**processors[robot].preprocess(observations))
        loss = readout.loss(cache, robot, targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(parameters, train.grad_clip)
        optimizer.step()
        running += loss.item()
        if (step + 1) % 50 == 0:
            elapsed = time.perf_counter() - started
            log["grounding_loss"].append({"step": step + 1, "loss": running / 50, "seconds": round(elapsed, 1)})
            print(f"grounding step {step + 1}/{train.grounding_steps}  goal loss {running / 50:.4f}  "
                  f"{elapsed / (step + 1):.2f} s/step", file=sys.stderr, flush=True)
            running = 0.0
    model.eval()


class WeightAverage:
    """Exponential moving average of a model's trainable weights, updated after every optimizer step.

    The last steps' weights still wander with the noise of single batches, and where they stop is a matter of
    luck; their average is not. Early on, the decay is min(decay, (1 + n) / (10 + n)) after n updates, so the
    average is not anchored to the first weights.
    """

    def __init__(self, model, decay: float):
        import torch

        self.decay = decay
        self.parameters = [p for p in model.parameters() if p.requires_grad]
        with torch.no_grad():
            self.average = [p.detach().clone() for p in self.parameters]
        self.updates = 0

    def update(self) -> None:
        import torch

        self.updates += 1
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))
        with torch.no_grad():
            torch._foreach_lerp_(self.average, [p.detach() for p in self.parameters], 1.0 - decay)

    def apply(self) -> None:
        """Put the averaged weights into the model for good (at the end of training)."""
        import torch

        with torch.no_grad():
            for parameter, average in zip(self.parameters, self.average, strict=True):
                parameter.copy_(average)

    def state_dict(self) -> dict:
        """The average and its update count, to resume from (safetensors-ready tensors)."""
        import torch

        return {**{f"average.{i}": a.detach().contiguous() for i, a in enumerate(self.average)},
                "updates": torch.tensor(self.updates)}

    def load_state_dict(self, state: dict) -> None:
        import torch

        with torch.no_grad():
            for i, average in enumerate(self.average):
                average.copy_(state[f"average.{i}"])
        self.updates = int(state["updates"])

    @contextmanager
    def applied(self):
        """The model holds the averaged weights inside the block, its own outside."""
        import torch

        with torch.no_grad():
            own = [p.detach().clone() for p in self.parameters]
        self.apply()
        try:
            yield
        finally:
            with torch.no_grad():
                for parameter, weights in zip(self.parameters, own, strict=True):
                    parameter.copy_(weights)


def optimize(model, batches: dict[str, Batches], processors: dict, train: TrainRecipe, *, action_dim: int,
             log: dict, start_step: int = 0, optimizer=None, checkpoint_every: int = 0,
             on_checkpoint: Callable[[int], None] | None = None, progress=None,
             readout: GroundingReadout | None = None, average: WeightAverage | None = None,
             order: Sequence[str] | None = None):
    """Flow-matching steps `start_step`..`train.steps` on the trainable parameters of `model`; returns the optimizer.

    One robot per batch (its own normalization), robots taking turns; `order` (keys of `batches`, cycled by step
    number) draws some more often than others, as fine-tuning on weighted datasets does. Appends the mean loss of
    every 50 steps to log["loss"]; calls `on_checkpoint(step)` every `checkpoint_every` steps (not at the last).
    With a `readout`, its goal loss, weighted by `train.grounding_weight`, is added to every step whose batch has
    grounding targets (batches of datasets that record no cube positions have none). With an
    `average`, it is updated after every step.
    """
    import torch

    model.train()
    parameters = [p for p in model.parameters() if p.requires_grad]
    if optimizer is None:
        optimizer = torch.optim.AdamW(parameters, lr=train.learning_rate, weight_decay=train.weight_decay)
    robots = list(order) if order else sorted(batches)
    started, running, running_goal, goal_steps = time.perf_counter(), 0.0, 0.0, 0
    for step in range(start_step, train.steps):
        robot = robots[step % len(robots)]
        observations, actions, grounding = batches[robot].sample(train.batch_size)
        inputs = processors[robot].preprocess(observations)
        targets = processors[robot].normalize_actions(actions)
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, train)
        cache = model.encode_prefix(**inputs)
        loss = model.flow_matching_loss_on_prefix(cache, targets)[:, :, :action_dim].mean()  # the rest is padding
        total = loss
        if readout is not None and grounding is not None:
            goal_loss = readout.loss(cache, robot, grounding)
            total = loss + train.grounding_weight * goal_loss
            running_goal += goal_loss.item()
            goal_steps += 1
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        torch.nn.utils.clip_grad_norm_(parameters, train.grad_clip)
        optimizer.step()
        if average is not None:
            average.update()
        running += loss.item()
        if progress is not None:
            progress.update(1)
        if (step + 1) % 50 == 0:
            elapsed = time.perf_counter() - started
            entry = {"step": step + 1, "loss": running / 50, "seconds": round(elapsed, 1)}
            message = f"step {step + 1}/{train.steps}  loss {running / 50:.4f}"
            if goal_steps:
                entry["goal_loss"] = running_goal / goal_steps
                message += f"  goal loss {running_goal / goal_steps:.4f}"
            log["loss"].append(entry)
            if progress is not None:
                progress.set_postfix(loss=f"{running / 50:.4f}")
            else:
                print(f"{message}  {elapsed / (step + 1 - start_step):.2f} s/step", file=sys.stderr, flush=True)
            running, running_goal, goal_steps = 0.0, 0.0, 0
        if on_checkpoint and checkpoint_every and (step + 1) % checkpoint_every == 0 and step + 1 < train.steps:
            model.eval()
            on_checkpoint(step + 1)
            model.train()
    model.eval()
    return optimizer


def build_config(model: ModelRecipe):
    """The SmolVLA config of the built-in model: every part trains (there is no pretrained backbone to keep)."""
    from vla_ros.core.features import ACTION
    from vla_ros.policies.smolvla.config import Feature, SmolVLAConfig
    from vla_ros.policies.smolvla.policy import IMAGE_PADDING_KEY, RELATIVE_ACTIONS_KEY

    image = Feature("VISUAL", (3, model.image_size, model.image_size))
    return SmolVLAConfig(
        input_features={"observation.state": Feature("STATE", (model.state_dim,)),
                        **{image_key(key): image for key in CAMERA_KEYS}},
        output_features={ACTION: Feature("ACTION", (model.action_dim,))},
        chunk_size=model.chunk_size,
        n_action_steps=model.chunk_size // 2,
        max_state_dim=model.max_state_dim,
        max_action_dim=model.max_action_dim,
        resize_imgs_with_padding=(model.image_size, model.image_size),
        tokenizer_max_length=model.tokenizer_max_length,
        num_steps=model.num_flow_steps,
        freeze_vision_encoder=False,
        train_expert_only=False,
        num_vlm_layers=model.text_layers,
        expert_width_multiplier=model.expert_width_multiplier,
        vlm_model_name="vlm",
        vla_ros={IMAGE_PADDING_KEY: "center",  # trained on the adapter's centred padding, not LeRobot's
                 RELATIVE_ACTIONS_KEY: {robot: "arm_joints" for robot in model.relative_action_robots}},
    )


def build_model(model: ModelRecipe, tokenizer_dir: Path):
    """(config, network, tokenizer) of a freshly initialised built-in model."""
    from vla_ros.policies.smolvla.modeling import SmolVLAModel
    from vla_ros.policies.smolvla.tiny import build_word_tokenizer, tiny_vlm_config

    tokenizer = build_word_tokenizer(VOCABULARY, tokenizer_dir, model_max_length=model.tokenizer_max_length)
    vlm_config = tiny_vlm_config(
        image_size=model.image_size, patch_size=model.patch_size, vision_hidden=model.vision_hidden,
        vision_layers=model.vision_layers, vision_heads=model.vision_heads, text_hidden=model.text_hidden,
        text_layers=model.text_layers, heads=model.text_heads, kv_heads=model.text_kv_heads,
        vocab_size=len(tokenizer),
    )
    config = build_config(model)
    return config, SmolVLAModel(config, vlm_config), tokenizer


def train(recipe: Recipe, data_dir: Path, out_dir: Path, *, workers: int = 2, threads: int | None = None,
          eval_every: int = 0) -> dict:
    import torch

    from vla_ros.core.embodiment import load_embodiment
    from vla_ros.policies.smolvla.checkpoint import save_checkpoint
    from vla_ros.policies.smolvla.processor import RelativeActions, SmolVLAProcessor

    started = time.perf_counter()
    if not any(data_dir.glob("*.npz")):
        print(f"no episodes in {data_dir}: recording them (about 6 minutes on 2 cores)", file=sys.stderr)
        collect(recipe.data, recipe.model, data_dir, workers=workers)
    collect_s = time.perf_counter() - started
    data = load_shards(data_dir)
    robots = sorted(set(data["robot"].tolist()))
    for robot in [robot for robot in robots if robot in recipe.model.relative_action_robots]:
        rows = data["robot"] == robot
        relative = RelativeActions(load_embodiment(robot))
        data["action"][rows] = relative.to_model(data["action"][rows], data["state"][rows])
    robot_stats = {robot: normalization_stats(data, data["robot"] == robot) for robot in robots}
    all_stats = normalization_stats(data, np.ones(len(data["state"]), dtype=bool))

    torch.manual_seed(recipe.train.seed)
    torch.set_num_threads(threads or recipe.train.threads)
    tokenizer_dir = out_dir / "vlm"
    config, model, tokenizer = build_model(recipe.model, tokenizer_dir)
    processors = {robot: SmolVLAProcessor(config, stats, tokenizer, tokenizer_dir=tokenizer_dir)
                  for robot, stats in robot_stats.items()}
    default_processor = SmolVLAProcessor(config, all_stats, tokenizer, tokenizer_dir=tokenizer_dir)
    log = {"recipe": recipe.to_dict(), "samples": {r: int((data["robot"] == r).sum()) for r in robots},
           "parameters": sum(p.numel() for p in model.parameters()), "torch": torch.__version__, "loss": []}
    print(f"training {log['parameters'] / 1e6:.2f}M parameters on {log['samples']} samples", file=sys.stderr)
    data["grounding_target"] = grounding_targets(data, tcp_offset=recipe.train.grounding_tcp_offset)
    target_stats = {robot: target_normalization(data["grounding_target"][data["robot"] == robot])
                    for robot in robots}

    def batches_per_robot(rows: np.ndarray, **weighting) -> dict[str, Batches]:
        return {robot: Batches({k: v[rows & (data["robot"] == robot)] for k, v in data.items()},
                               seed=recipe.train.seed + i, task_weights=dict(recipe.train.task_weights),
                               max_shift_px=dict(recipe.train.max_image_shift_px), **weighting)
                for i, robot in enumerate(robots)}

    batches = batches_per_robot(np.ones(len(data["state"]), dtype=bool), early_samples=recipe.train.early_samples,
                                early_weight=recipe.train.early_weight)

    train_started = time.perf_counter()
    readout = GroundingReadout(model, recipe.model.action_dim, target_stats)
    if recipe.train.grounding_steps:
        first_batches = batches_per_robot(position_in_episode(data) < recipe.train.grounding_samples)
        log["grounding_loss"] = []
        ground(model, first_batches, processors, recipe.train, readout, log=log)
    average = WeightAverage(model, recipe.train.ema_decay) if recipe.train.ema_decay else None

    def averaged():
        return average.applied() if average is not None else nullcontext()

    def save_intermediate(step: int) -> None:
        with averaged():
            save_checkpoint(out_dir.with_name(f"{out_dir.name}_step{step}"), config, model, default_processor,
                            robot_stats=robot_stats)

    optimize(model, batches, processors, recipe.train, action_dim=recipe.model.action_dim, log=log,
             checkpoint_every=eval_every, on_checkpoint=save_intermediate,
             readout=readout if recipe.train.grounding_weight else None, average=average)
    log["train_seconds"] = round(time.perf_counter() - train_started, 1)
    log["collect_seconds"] = round(collect_s, 1)
    with averaged():
        save_checkpoint(out_dir, config, model, default_processor, robot_stats=robot_stats)
    (out_dir / "training_log.json").write_text(json.dumps(log, indent=1) + "\n", encoding="utf-8")
    plot_loss(log, out_dir / "training_loss.png",
              title=f"built-in VLA, {log['parameters'] / 1e6:.2f}M parameters, {log['train_seconds'] / 60:.0f} min")
    return log


def plot_loss(log: dict, path: Path, *, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axis = plt.subplots(figsize=(6, 3))
    axis.plot([p["step"] for p in log["loss"]], [p["loss"] for p in log["loss"]])
    axis.set_yscale("log")
    axis.set_xlabel("step")
    axis.set_ylabel("flow-matching loss")
    axis.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Train the built-in VLA from scratch (recipe.py).")
    parser.add_argument("--data", type=Path, default=Path("builtin_data"), help="episode shards (recorded if empty)")
    parser.add_argument("--recipe", choices=sorted(RECIPES), default="builtin",
                        help="builtin: the shipped two-arm model; generalist: five arms, the gen3 held out")
    parser.add_argument("--out", type=Path, help="checkpoint directory to write (default: the shipped one of --recipe)")
    parser.add_argument("--steps", type=int, help="override the recipe's step count (for quick trials)")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: the recipe's)")
    parser.add_argument("--eval-every", type=int, default=0, help="also write <out>_step<N> checkpoints")
    args = parser.parse_args(argv)
    recipe = RECIPES[args.recipe]
    out = args.out or SHIPPED_CHECKPOINTS[args.recipe]
    if args.steps:
        from dataclasses import replace

        recipe = replace(recipe, train=replace(recipe.train, steps=args.steps))
    log = train(recipe, args.data, out, threads=args.threads, eval_every=args.eval_every)
    print(f"wrote {out} after {log['train_seconds'] / 60:.1f} min of training", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
