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
from vla_ros.core.features import ACTION, STATE, TASK, PolicyObservation, image_key, image_mask_key
from vla_ros.policies.smolvla.config import SmolVLAConfig

NORMALIZATION_EPS = 1e-8  # LeRobot's normalizer default
# Statistics each mode reads (LeRobot's names): MEAN_STD maps mean/std to 0/1, the others map low/high to -1/1.
MODE_STATS = {"MEAN_STD": ("mean", "std"), "MIN_MAX": ("min", "max"), "QUANTILES": ("q01", "q99"),
              "QUANTILE10": ("q10", "q90")}
NORMALIZED_FEATURES = ((STATE, "STATE"), (ACTION, "ACTION"))


class SmolVLAProcessor:
    """Normalization statistics and tokenizer of one SmolVLA checkpoint.

    `stats`: LeRobot's flat normalizer keys, e.g. {"observation.state.mean": (S,), "action.std": (A,)}.
    """

    def __init__(self, config: SmolVLAConfig, stats: Mapping[str, np.ndarray | Tensor], tokenizer, *,
                 eps: float = NORMALIZATION_EPS, stats_source: str = "normalization stats",
                 tokenizer_dir: Path | None = None):
        self.config = config
        self.tokenizer = tokenizer
        self.tokenizer_dir = tokenizer_dir  # copied into checkpoints as is, so that any transformers reads it
        self.eps = eps
        self.stats_source = stats_source
        self.stats = {key: torch.as_tensor(np.asarray(value, dtype=np.float32)) for key, value in stats.items()}
        self._check_stats()

    def with_stats(self, stats: Mapping[str, np.ndarray | Tensor], *, source: str) -> SmolVLAProcessor:
        """The same processor with other statistics (per-robot normalization)."""
        return SmolVLAProcessor(self.config, stats, self.tokenizer, eps=self.eps, stats_source=source,
                                tokenizer_dir=self.tokenizer_dir)

    def _check_stats(self) -> None:
        widths = {STATE: self.config.state_dim, ACTION: self.config.action_dim}
        for feature, feature_type in NORMALIZED_FEATURES:
            mode = self.config.normalization_mode(feature_type)
            for name in MODE_STATS.get(mode, ()):
                key = f"{feature}.{name}"
                value = self.stats.get(key)
                if value is None:
                    raise ConfigError(f"{feature_type} normalization {mode} needs '{key}', which is missing (found: "
                                      f"{', '.join(sorted(self.stats)) or 'nothing'})", source=self.stats_source)
                if tuple(value.shape) != (widths[feature],):
                    raise ConfigError(f"'{key}' has shape {tuple(value.shape)}, the checkpoint's {feature} has "
                                      f"{widths[feature]} dimensions", source=self.stats_source)
                if not torch.isfinite(value).all():
                    raise ConfigError(f"'{key}' holds non-finite values", source=self.stats_source)

    # -- normalization -----------------------------------------------------------------------------------------

    def _transform(self, values: Tensor, feature: str, feature_type: str, *, inverse: bool) -> Tensor:
        mode = self.config.normalization_mode(feature_type)
        if mode == "IDENTITY":
            return values
        low_name, high_name = MODE_STATS[mode]
        low = self.stats[f"{feature}.{low_name}"].to(values.device)
        high = self.stats[f"{feature}.{high_name}"].to(values.device)
        if mode == "MEAN_STD":
            return values * high + low if inverse else (values - low) / (high + self.eps)
        span = torch.where(high - low == 0, torch.full_like(high, self.eps), high - low)
        return (values + 1) / 2 * span + low if inverse else 2 * (values - low) / span - 1

    def normalize_state(self, state: np.ndarray | Tensor) -> Tensor:
        """(B, state_dim) policy units -> (B, max_state_dim) float32, normalized and zero-padded."""
        state = torch.as_tensor(np.asarray(state, dtype=np.float32))
        if state.ndim != 2 or state.shape[1] != self.config.state_dim:
            raise PolicyError(f"state of shape {tuple(state.shape)}, expected (B, {self.config.state_dim})")
        return _pad_last(self._transform(state, STATE, "STATE", inverse=False), self.config.max_state_dim)

    def normalize_actions(self, actions: np.ndarray | Tensor) -> Tensor:
        """(B, chunk_size, action_dim) policy units -> (B, chunk_size, max_action_dim) float32 normalized, padded."""
        actions = torch.as_tensor(np.asarray(actions, dtype=np.float32))
        if actions.ndim != 3 or actions.shape[2] != self.config.action_dim:
            raise PolicyError(f"actions of shape {tuple(actions.shape)}, expected (B, H, {self.config.action_dim})")
        return _pad_last(self._transform(actions, ACTION, "ACTION", inverse=False), self.config.max_action_dim)

    def unnormalize_actions(self, actions: Tensor) -> np.ndarray:
        """(B, H, max_action_dim) model output -> (B, H, action_dim) float32 numpy in policy units."""
        actions = actions[..., : self.config.action_dim].detach().to(device="cpu", dtype=torch.float32)
        return self._transform(actions, ACTION, "ACTION", inverse=True).numpy()

    # -- observations ------------------------------------------------------------------------------------------

    def tokenize(self, tasks: Sequence[str]) -> tuple[Tensor, Tensor]:
        """(tokens (B, T) int64, mask (B, T) bool) of the instructions, each ending in a newline as in training."""
        texts = [task if task.endswith("\n") else f"{task}\n" for task in tasks]
        encoded = self.tokenizer(texts, max_length=self.config.tokenizer_max_length, truncation=True,
                                 padding=self.config.pad_language_to, padding_side="right", return_tensors="pt")
        return encoded["input_ids"].to(torch.int64), encoded["attention_mask"].to(torch.bool)

    def preprocess(self, observations: Sequence[PolicyObservation]) -> dict:
        """Model inputs for a batch of observations: images, image_masks, lang_tokens, lang_masks, state.

        Images arrive (H, W, 3) uint8 and leave as (B, 3, H, W) float32 in [-1, 1], one tensor per camera in
        config order. The adapter already resized them with padding; an image of another size is resized here
        as LeRobot does it (see `_scaled_image`).
        """
        if not observations:
            raise PolicyError("no observations to preprocess")
        images, image_masks = [], []
        for camera in self.config.camera_keys:
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
                pixels.append(self._scaled_image(image))
                masks.append(bool(observation.get(image_mask_key(camera), True)))
            images.append(torch.stack(pixels) * 2.0 - 1.0)
            image_masks.append(torch.tensor(masks, dtype=torch.bool))
        tasks = []
        for observation in observations:
            task = observation.get(TASK)
            if not isinstance(task, str):
                raise PolicyError(f"observation '{TASK}' must be an instruction string, got {type(task).__name__}")
            tasks.append(task)
        lang_tokens, lang_masks = self.tokenize(tasks)
        state = self.normalize_state(np.stack([np.asarray(o[STATE], dtype=np.float32) for o in observations]))
        return {"images": images, "image_masks": image_masks, "lang_tokens": lang_tokens, "lang_masks": lang_masks,
                "state": state}


    def _scaled_image(self, image: np.ndarray) -> Tensor:
        """(3, H, W) float32 in [0, 1] at the config's size.

        Resizing follows LeRobot's SmolVLA exactly: bilinear, aspect ratio kept, black padding on the top and
        left only (vla_ros's adapter pads both sides evenly instead).
        """
        pixels = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).to(torch.float32) / 255.0
        size = self.config.image_size
        if size is None or tuple(pixels.shape[1:]) == size:
            return pixels
        height, width = pixels.shape[1:]
        ratio = max(width / size[1], height / size[0])
        resized_height, resized_width = int(height / ratio), int(width / ratio)
        resized = torch.nn.functional.interpolate(pixels[None], size=(resized_height, resized_width),
                                                  mode="bilinear", align_corners=False)[0]
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
