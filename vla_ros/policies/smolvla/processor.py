"""SmolVLA's pre- and post-processing: observations to model tensors, normalized actions back to policy units.

One object serves inference and training, so both see the same normalization, tokenization and image scaling.
Normalization follows LeRobot's normalizer (MEAN_STD: (x - mean) / (std + eps), unnormalized as x * std + mean).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from vla_ros.core.embodiment import EmbodimentConfig
from vla_ros.core.errors import ConfigError, PolicyError
from vla_ros.core.features import ACTION, STATE, PolicyObservation, image_key, image_mask_key
from vla_ros.policies.lerobot_format import MODE_STATS, NORMALIZATION_EPS, _observation_tasks
from vla_ros.policies.smolvla.config import SmolVLAConfig


class Normalization:
    """One of LeRobot's (un)normalizer steps: modes per feature type, the features it touches, their statistics.

    `modes`: LeRobot's norm_map, feature type -> mode (a type it lacks is IDENTITY). `features`: feature key ->
    type, the keys the step transforms. `stats`: flat keys, e.g. {"observation.state.mean": (S,), "action.std":
    (A,), "observation.images.front.mean": (3, 1, 1)}. `only_keys`: LeRobot's normalize_observation_keys.
    The arithmetic is LeRobot's, operation for operation.
    """

    def __init__(self, modes: Mapping[str, str], features: Mapping[str, str], stats: Mapping[str, np.ndarray | Tensor],
                 *, eps: float = NORMALIZATION_EPS, source: str = "normalization stats",
                 only_keys: Sequence[str] | None = None):
        self.modes, self.features, self.eps, self.source = dict(modes), dict(features), float(eps), source
        self.only_keys = None if only_keys is None else frozenset(only_keys)
        self.stats = {key: torch.as_tensor(np.asarray(value, dtype=np.float32)) for key, value in stats.items()}

    def with_stats(self, stats: Mapping[str, np.ndarray | Tensor], *, source: str) -> Normalization:
        """The same step with `stats` replacing its statistics of the features they name (the others stay)."""
        return Normalization(self.modes, self.features, {**self.stats, **stats}, eps=self.eps, source=source,
                             only_keys=None if self.only_keys is None else sorted(self.only_keys))

    def mode(self, key: str) -> str:
        """The mode applied to feature `key` ("IDENTITY" where the step does not touch it)."""
        feature_type = self.features.get(key)
        if feature_type is None or (self.only_keys is not None and key != ACTION and key not in self.only_keys):
            return "IDENTITY"
        return self.modes.get(feature_type, "IDENTITY")

    def check(self, shapes: Mapping[str, tuple[int, ...]]) -> None:
        """Refuse missing, misshapen or non-finite statistics of the features in `shapes` (key -> shape)."""
        for key, shape in shapes.items():
            mode = self.mode(key)
            for name in MODE_STATS.get(mode, ()):
                value = self.stats.get(f"{key}.{name}")
                if value is None:
                    raise ConfigError(f"{self.features[key]} normalization {mode} needs '{key}.{name}', which is "
                                      f"missing (found: {', '.join(sorted(self.stats)) or 'nothing'})",
                                      source=self.source)
                if tuple(value.shape) != tuple(shape):
                    raise ConfigError(f"'{key}.{name}' has shape {tuple(value.shape)}, the checkpoint's {key} has "
                                      f"shape {tuple(shape)}", source=self.source)
                if not torch.isfinite(value).all():
                    raise ConfigError(f"'{key}.{name}' holds non-finite values", source=self.source)

    def apply(self, values: Tensor, key: str, *, inverse: bool = False) -> Tensor:
        mode = self.mode(key)
        if mode == "IDENTITY":
            return values
        low_name, high_name = MODE_STATS[mode]
        low = self.stats[f"{key}.{low_name}"].to(values.device, values.dtype)
        high = self.stats[f"{key}.{high_name}"].to(values.device, values.dtype)
        if mode == "MEAN_STD":
            return values * high + low if inverse else (values - low) / (high + self.eps)
        span = high - low
        span = torch.where(span == 0, torch.tensor(self.eps, device=values.device, dtype=values.dtype), span)
        if inverse:  # LeRobot writes MIN_MAX and the quantile modes' inverses in different orders
            return (values + 1) / 2 * span + low if mode == "MIN_MAX" else (values + 1.0) * span / 2.0 + low
        return 2 * (values - low) / span - 1


def config_normalization(config: SmolVLAConfig, stats: Mapping[str, np.ndarray | Tensor], *, actions_only: bool = False,
                         eps: float = NORMALIZATION_EPS, source: str = "normalization stats") -> Normalization:
    """The (un)normalizer LeRobot's make_smolvla_pre_post_processors builds from config.json."""
    features = {key: f.type for key, f in config.output_features.items()}
    if not actions_only:
        features = {**{key: f.type for key, f in config.input_features.items()}, **features}
    return Normalization(config.normalization_mapping, features, stats, eps=eps, source=source)


class SmolVLAProcessor:
    """Normalization statistics and tokenizer of one SmolVLA checkpoint.

    `normalizer`: the preprocessor's step (state, images, and actions for training); `unnormalizer`: the
    postprocessor's, which turns the model's actions back into policy units (its statistics may differ).
    Plain stats (LeRobot's flat keys) stand for both, with config.json's modes.
    """

    def __init__(self, config: SmolVLAConfig, stats: Mapping[str, np.ndarray | Tensor] | Normalization, tokenizer, *,
                 eps: float = NORMALIZATION_EPS, stats_source: str = "normalization stats",
                 tokenizer_dir: Path | None = None, unnormalizer: Normalization | None = None):
        self.config = config
        self.tokenizer = tokenizer
        self.tokenizer_dir = tokenizer_dir  # copied into checkpoints as is, so that any transformers reads it
        if not isinstance(stats, Normalization):
            stats = config_normalization(config, stats, eps=eps, source=stats_source)
        self.normalizer = stats
        self.unnormalizer = unnormalizer or config_normalization(config, stats.stats, actions_only=True,
                                                                 eps=stats.eps, source=stats.source)
        self.normalizer.check(self._shapes())
        self.unnormalizer.check({ACTION: (config.action_dim,)})

    @property
    def eps(self) -> float:
        return self.normalizer.eps

    @property
    def stats(self) -> dict[str, Tensor]:
        return self.normalizer.stats

    @property
    def stats_source(self) -> str:
        return self.normalizer.source

    def _shapes(self) -> dict[str, tuple[int, ...]]:
        shapes = {STATE: (self.config.state_dim,), ACTION: (self.config.action_dim,)}
        for key in self.config.image_features:
            shapes[key] = (3, 1, 1)
        return shapes

    def with_stats(self, stats: Mapping[str, np.ndarray | Tensor], *, source: str) -> SmolVLAProcessor:
        """The same processor with other statistics for both steps (per-robot normalization)."""
        return SmolVLAProcessor(self.config, self.normalizer.with_stats(stats, source=source), self.tokenizer,
                                tokenizer_dir=self.tokenizer_dir,
                                unnormalizer=self.unnormalizer.with_stats(stats, source=source))

    def modes(self) -> dict[str, str]:
        """Mode per feature key, for metadata: state (and images, where normalized) as the preprocessor normalizes
        them, actions as the postprocessor unnormalizes them."""
        out = {STATE: self.normalizer.mode(STATE), ACTION: self.unnormalizer.mode(ACTION)}
        for key in self.config.image_features:
            if self.normalizer.mode(key) != "IDENTITY":
                out[key] = self.normalizer.mode(key)
        return out

    # -- normalization -----------------------------------------------------------------------------------------

    def normalize_state(self, state: np.ndarray | Tensor) -> Tensor:
        """(B, state_dim) policy units -> (B, max_state_dim) float32, normalized and zero-padded."""
        state = torch.as_tensor(np.asarray(state, dtype=np.float32))
        if state.ndim != 2 or state.shape[1] != self.config.state_dim:
            raise PolicyError(f"state of shape {tuple(state.shape)}, expected (B, {self.config.state_dim})")
        return _pad_last(self.normalizer.apply(state, STATE), self.config.max_state_dim)

    def normalize_actions(self, actions: np.ndarray | Tensor) -> Tensor:
        """(B, chunk_size, action_dim) policy units -> (B, chunk_size, max_action_dim) float32 normalized, padded.

        With the preprocessor's statistics, as LeRobot normalizes training targets."""
        actions = torch.as_tensor(np.asarray(actions, dtype=np.float32))
        if actions.ndim != 3 or actions.shape[2] != self.config.action_dim:
            raise PolicyError(f"actions of shape {tuple(actions.shape)}, expected (B, H, {self.config.action_dim})")
        return _pad_last(self.normalizer.apply(actions, ACTION), self.config.max_action_dim)

    def unnormalize_actions(self, actions: Tensor) -> np.ndarray:
        """(B, H, max_action_dim) model output -> (B, H, action_dim) float32 numpy in policy units (postprocessor)."""
        actions = actions[..., : self.config.action_dim].detach().to(device="cpu", dtype=torch.float32)
        return self.unnormalizer.apply(actions, ACTION, inverse=True).numpy()

    # -- observations ------------------------------------------------------------------------------------------

    def tokenize(self, tasks: Sequence[str]) -> tuple[Tensor, Tensor]:
        """(tokens (B, T) int64, mask (B, T) bool) of the instructions, each ending in a newline as in training."""
        texts = [task if task.endswith("\n") else f"{task}\n" for task in tasks]
        encoded = self.tokenizer(texts, max_length=self.config.tokenizer_max_length, truncation=True,
                                 padding=self.config.pad_language_to, padding_side="right", return_tensors="pt")
        return encoded["input_ids"].to(torch.int64), encoded["attention_mask"].to(torch.bool)

    def preprocess(self, observations: Sequence[PolicyObservation]) -> dict:
        """Model inputs for a batch of observations: images, image_masks, lang_tokens, lang_masks, state.

        Images arrive (H, W, 3) uint8 at any size and leave as (B, 3, H, W) float32 in [-1, 1] at the config's
        size, one tensor per camera in config order, made as LeRobot's robot path makes them (`_model_image`).
        """
        if not observations:
            raise PolicyError("no observations to preprocess")
        images, image_masks = [], []
        for camera, key in zip(self.config.camera_keys, self.config.image_features, strict=True):
            pixels, masks = [], []
            for observation in observations:
                image = observation.get(image_key(camera))
                if image is None:
                    raise PolicyError(f"observation lacks '{image_key(camera)}' (the policy reads cameras "
                                      f"{', '.join(self.config.camera_keys)}); a missing camera must come as a zero "
                                      "image with its mask False")
                image = np.asarray(image)
                if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
                    raise PolicyError(f"'{image_key(camera)}': expected (H, W, 3) uint8, got {image.shape} "
                                      f"{image.dtype}")
                pixels.append(self._model_image(image, key))
                masks.append(bool(observation.get(image_mask_key(camera), True)))
            images.append(torch.stack(pixels) * 2.0 - 1.0)
            image_masks.append(torch.tensor(masks, dtype=torch.bool))
        lang_tokens, lang_masks = self.tokenize(_observation_tasks(observations))
        state = self.normalize_state(np.stack([np.asarray(o[STATE], dtype=np.float32) for o in observations]))
        return {"images": images, "image_masks": image_masks, "lang_tokens": lang_tokens, "lang_masks": lang_masks,
                "state": state}

    def _model_image(self, image: np.ndarray, key: str) -> Tensor:
        return model_image(image, self.config.image_size, normalize=lambda pixels: self.normalizer.apply(pixels, key))


def model_image(image: np.ndarray, size: tuple[int, int] | None, *, normalize=None) -> Tensor:
    """(3, H, W) float32 at `size`, before SigLIP's [-1, 1] scaling, from an (h, w, 3) uint8 RGB camera frame.

    LeRobot's steps in its order: the frame becomes float32 / 255 (its robot loop), is normalized (`normalize`,
    its preprocessor's VISUAL mode), then resized with padding by the policy: bilinear, aspect ratio kept, black
    bars on the top and left only.
    """
    # Channels first while still uint8 (a quarter of the bytes to move); the values are LeRobot's either way.
    pixels = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).contiguous().to(torch.float32) / 255
    if normalize is not None:
        pixels = normalize(pixels)
    if size is None or tuple(pixels.shape[1:]) == tuple(size):
        return pixels
    height, width = pixels.shape[1:]
    ratio = max(width / size[1], height / size[0])
    resized_height, resized_width = int(height / ratio), int(width / ratio)
    resized = torch.nn.functional.interpolate(pixels[None], size=(resized_height, resized_width), mode="bilinear",
                                              align_corners=False)[0]
    return torch.nn.functional.pad(resized, (size[1] - resized_width, 0, size[0] - resized_height, 0), value=0.0)


class RelativeActions:
    """Arm joints' actions as offsets from the state of the observation they were predicted from.

    An absolute target must restate where the arm is in every action, and a small network blurs it toward the
    poses it saw most (the arm drifts while it should hold still over a cube); an offset of zero means stay.
    Grippers stay absolute: "closed" is the same command whatever the jaw's width. Applied in policy units,
    before normalization, as openpi's delta-action transform is; dimensions past the robot's joints are padding.
    Joints the robot's config already declares `action: delta` (the panda's arm) reach the policy as offsets
    through the adapter, and are not shifted a second time: this is for robots whose config is absolute because
    their other policies expect it (LeRobot's so101).
    """

    def __init__(self, embodiment: EmbodimentConfig):
        self.mask = embodiment.arm_mask & ~embodiment.delta_mask

    def to_model(self, actions: np.ndarray, state: np.ndarray) -> np.ndarray:
        """(..., H, action_dim) absolute policy-unit actions, (..., state_dim) states -> what the network predicts."""
        return self._shift(actions, state, -1.0)

    def from_model(self, actions: np.ndarray, state: np.ndarray) -> np.ndarray:
        """Mirror of `to_model`: the network's actions back to absolute policy units."""
        return self._shift(actions, state, 1.0)

    def _shift(self, actions: np.ndarray, state: np.ndarray, sign: float) -> np.ndarray:
        n = len(self.mask)
        actions = np.array(actions, dtype=np.float32)
        offsets = np.where(self.mask, np.asarray(state, dtype=np.float32)[..., :n], 0.0)
        actions[..., :n] += sign * offsets[..., None, :]
        return actions


def _pad_last(values: Tensor, width: int) -> Tensor:
    if values.shape[-1] == width:
        return values
    padded = values.new_zeros((*values.shape[:-1], width))
    padded[..., : values.shape[-1]] = values
    return padded


def batch_to(batch: dict, device, dtype: torch.dtype | None = None) -> dict:
    """`preprocess`'s output on `device`; float tensors in `dtype` when given (images and state)."""

    def move(value):
        if isinstance(value, list):
            return [move(v) for v in value]
        if dtype is not None and value.is_floating_point():
            return value.to(device=device, dtype=dtype)
        return value.to(device)

    return {key: move(value) for key, value in batch.items()}
