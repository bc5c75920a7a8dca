"""pi0/pi0.5 pre- and post-processing as LeRobot's processor pipelines do it, from the checkpoint's own files.

pi0: the instruction plus a newline is the prompt; the normalized state, zero-padded, is the expert's state token.
pi0.5: the normalized state (quantiles by default, in [-1, 1]) is cut into 256 bins and written into the prompt,
"Task: <instruction>, State: <bins>;\\nAction: ". Images: [0, 1], resized with centred black padding to the
model's resolution when they differ, then scaled to [-1, 1]; a missing camera becomes a -1 image, masked out.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch import Tensor

from vla_ros.core.errors import ConfigError, PolicyError
from vla_ros.core.features import ACTION, STATE, PolicyObservation, image_key, image_mask_key
from vla_ros.policies.lerobot_format import MODE_STATS, NORMALIZATION_EPS, _observation_tasks
from vla_ros.policies.pi05.config import PiConfig

STATE_BINS = 256  # openpi's PaligemmaTokenizer


class Normalizer:
    """LeRobot's (un)normalizer step: per-feature modes by feature type, stats under "<feature>.<stat>" keys."""

    def __init__(
        self,
        features: Mapping[str, str],
        norm_map: Mapping[str, str],
        stats: Mapping[str, np.ndarray],
        *,
        eps: float = NORMALIZATION_EPS,
        source: str,
        widths: Mapping[str, int],
    ):
        self.features = dict(features)  # feature key -> feature type ("STATE", "ACTION", "VISUAL", ...)
        self.norm_map = dict(norm_map)
        self.eps = eps
        self.source = source
        self.stats = {key: torch.as_tensor(np.asarray(value, dtype=np.float32)) for key, value in stats.items()}
        for key, width in widths.items():
            mode = self.mode(key)
            for name in MODE_STATS.get(mode, ()):
                value = self.stats.get(f"{key}.{name}")
                if value is None:
                    raise ConfigError(
                        f"{self.features.get(key)} normalization {mode} of '{key}' needs '{key}.{name}',"
                        f" which is missing (found: {', '.join(sorted(self.stats)) or 'nothing'})",
                        source=source,
                    )
                if tuple(value.shape) != (width,):
                    raise ConfigError(
                        f"'{key}.{name}' has shape {tuple(value.shape)}; '{key}' has {width} values", source=source
                    )
                if not torch.isfinite(value).all():
                    raise ConfigError(f"'{key}.{name}' holds non-finite values", source=source)

    def mode(self, key: str) -> str:
        return self.norm_map.get(self.features.get(key, ""), "IDENTITY")

    def __call__(self, values: Tensor, key: str, *, inverse: bool = False) -> Tensor:
        mode = self.mode(key)
        if mode == "IDENTITY" or key not in self.features:
            return values
        low_name, high_name = MODE_STATS[mode]
        low, high = self.stats[f"{key}.{low_name}"], self.stats[f"{key}.{high_name}"]
        if mode == "MEAN_STD":
            return values * high + low if inverse else (values - low) / (high + self.eps)
        span = torch.where(high - low == 0, torch.tensor(self.eps, dtype=values.dtype), high - low)
        if mode == "MIN_MAX":
            return (values + 1) / 2 * span + low if inverse else 2 * (values - low) / span - 1
        return (values + 1.0) * span / 2.0 + low if inverse else 2.0 * (values - low) / span - 1.0


class PiProcessor:
    """Observations to model inputs and model outputs to actions, for one pi0/pi0.5 checkpoint."""

    def __init__(self, config: PiConfig, tokenizer, normalizer: Normalizer, unnormalizer: Normalizer):
        self.config = config
        self.tokenizer = tokenizer
        self.normalizer = normalizer
        self.unnormalizer = unnormalizer

    def prompts(self, tasks: Sequence[str], normalized_state: Tensor) -> list[str]:
        if not self.config.is_pi05:
            return [task if task.endswith("\n") else f"{task}\n" for task in tasks]
        bins = np.digitize(normalized_state.cpu().numpy(), bins=np.linspace(-1, 1, STATE_BINS + 1)[:-1]) - 1
        prompts = []
        for task, row in zip(tasks, bins, strict=True):
            cleaned = task.strip().replace("_", " ").replace("\n", " ")
            prompts.append(f"Task: {cleaned}, State: {' '.join(map(str, row))};\nAction: ")
        return prompts

    def tokenize(self, prompts: Sequence[str]) -> tuple[Tensor, Tensor]:
        encoded = self.tokenizer(
            list(prompts),
            max_length=self.config.tokenizer_max_length,
            truncation=True,
            padding="max_length",
            padding_side="right",
            return_tensors="pt",
        )
        return encoded["input_ids"], encoded["attention_mask"].to(torch.bool)

    def preprocess(self, observations: Sequence[PolicyObservation]) -> dict:
        """images, image_masks, tokens, token_masks, state (pi0; None for pi0.5) for a batch of observations."""
        if not observations:
            raise PolicyError("no observations to preprocess")
        width = self.config.state_dim
        states = []
        for observation in observations:
            state = np.asarray(observation.get(STATE), dtype=np.float32)
            if state.shape != (width,):
                raise PolicyError(f"'{STATE}' of shape {state.shape}, the checkpoint takes ({width},)")
            states.append(state)
        state = self.normalizer(torch.from_numpy(np.stack(states)), STATE)
        tokens, token_masks = self.tokenize(self.prompts(_observation_tasks(observations), state))
        images, image_masks = self._images(observations)
        padded_state = None
        if not self.config.is_pi05:
            padded_state = state.new_zeros((state.shape[0], self.config.max_state_dim))
            padded_state[:, :width] = state
        return {
            "images": images,
            "image_masks": image_masks,
            "tokens": tokens,
            "token_masks": token_masks,
            "state": padded_state,
        }

    def _images(self, observations: Sequence[PolicyObservation]) -> tuple[list[Tensor], list[Tensor]]:
        """Cameras present in every observation first (config order), then the missing ones, as LeRobot orders them.

        A camera is missing when its mask is False; within one batch every observation must agree.
        """
        present, missing = [], []
        for camera in self.config.camera_keys:
            masks = [
                bool(observation.get(image_mask_key(camera), image_key(camera) in observation))
                for observation in observations
            ]
            if all(masks):
                present.append(camera)
            elif not any(masks):
                missing.append(camera)
            else:
                raise PolicyError(f"camera '{camera}' is missing from some observations of the batch only")
        if not present:
            raise PolicyError(
                f"no camera image: the policy reads {', '.join(self.config.camera_keys)} and needs at least one of them"
            )
        images, masks = [], []
        for camera in present:
            pixels = []
            for observation in observations:
                image = np.asarray(observation[image_key(camera)])
                if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
                    raise PolicyError(
                        f"'{image_key(camera)}': expected (H, W, 3) uint8, got {image.shape} {image.dtype}"
                    )
                pixels.append(torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float() / 255.0)
            if len({tuple(p.shape) for p in pixels}) > 1:
                raise PolicyError(f"'{image_key(camera)}': images of different sizes in one batch")
            images.append(self._scaled(torch.stack(pixels)) * 2.0 - 1.0)
            masks.append(torch.ones(len(observations), dtype=torch.bool))
        for _ in missing:
            images.append(torch.ones_like(images[-1]) * -1)
            masks.append(torch.zeros(len(observations), dtype=torch.bool))
        return images, masks

    def _scaled(self, pixels: Tensor) -> Tensor:
        """(B, 3, H, W) in [0, 1] at the model's resolution: openpi's resize_with_pad (bilinear, centred, black)."""
        height, width = self.config.image_resolution
        current_height, current_width = pixels.shape[2:]
        if (current_height, current_width) == (height, width):
            return pixels
        ratio = max(current_width / width, current_height / height)
        resized_height, resized_width = int(current_height / ratio), int(current_width / ratio)
        resized = torch.nn.functional.interpolate(
            pixels, size=(resized_height, resized_width), mode="bilinear", align_corners=False
        ).clamp(0.0, 1.0)
        top, extra_h = divmod(height - resized_height, 2)
        left, extra_w = divmod(width - resized_width, 2)
        return torch.nn.functional.pad(resized, (left, left + extra_w, top, top + extra_h), value=0.0)

    def unnormalize_actions(self, actions: Tensor) -> np.ndarray:
        """(B, H, max_action_dim) model output -> (B, H, action_dim) float32 in policy units."""
        actions = actions[..., : self.config.action_dim].detach().to(device="cpu", dtype=torch.float32)
        return self.unnormalizer(actions, ACTION, inverse=True).numpy()
