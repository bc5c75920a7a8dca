"""What a pi0 checkpoint directory holds, read and validated before any weight is loaded.

The backend loads checkpoints in transformers' format: `config.json` with `model_type: pi0`
(PI0ForConditionalGeneration.save_pretrained), and beside it what PI0Processor.save_pretrained writes:
`processor_config.json` (the dataset's state/action mean and std, image settings) and the tokenizer files.

Camera names: a transformers PI0 config does not name its cameras, only their order. `camera_keys` in
config.json (a list, kept by save_pretrained as an extra attribute) names them; without it, openpi's pi0
names are assumed. A robot YAML feeds image i of the model through the camera whose `policy_key` is
`camera_keys[i]`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vla_ros.core.errors import ConfigError, MissingDependencyError, PolicyError
from vla_ros.core.features import IMAGES_PREFIX

MIN_TRANSFORMERS = (5, 4)  # the first release with PI0Config, PI0ForConditionalGeneration and PI0Processor
# openpi's pi0 image inputs, in the order its models were trained with.
OPENPI_CAMERA_KEYS = ("base_0_rgb", "left_wrist_0_rgb", "right_wrist_0_rgb")
PROCESSOR_CONFIG = "processor_config.json"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model")  # either: fast (tokenizers) or sentencepiece


def require_transformers():
    """The transformers module, or an error saying which version to install."""
    try:
        import transformers
    except ImportError as exc:
        raise MissingDependencyError("transformers>=5.4", "policies", "The pi0 policy") from exc
    match = re.match(r"(\d+)\.(\d+)", transformers.__version__)
    if match is None or tuple(int(part) for part in match.groups()) < MIN_TRANSFORMERS:
        raise PolicyError(
            f"the pi0 policy needs transformers >= {'.'.join(map(str, MIN_TRANSFORMERS))} (its PI0 classes), "
            f"but transformers {transformers.__version__} is installed: pip install 'transformers>=5.4'"
        )
    return transformers


def read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a JSON object, found {type(data).__name__}")
    return data


def check_transformers_format(path: Path, config: dict) -> None:
    """Refuse what is not a transformers-format pi0 checkpoint (LeRobot's format loads in vla_ros.policies.pi05)."""
    if config.get("model_type") != "pi0" or "vlm_config" not in config:
        raise ConfigError(
            "not a transformers-format pi0 checkpoint (model_type 'pi0' with a vlm_config, saved with "
            "PI0ForConditionalGeneration.save_pretrained and PI0Processor.save_pretrained)",
            source=str(path / "config.json"), key="model_type")


def camera_keys_of(path: Path, config: dict) -> tuple[str, ...]:
    """The policy camera keys of the model's images, in the model's image order."""
    keys = config.get("camera_keys")
    if keys is None:
        return OPENPI_CAMERA_KEYS
    if not (isinstance(keys, list) and keys and all(isinstance(k, str) and k for k in keys)):
        raise ConfigError(f"expected a non-empty list of camera names, got {keys!r}",
                          source=str(path / "config.json"), key="camera_keys")
    keys = tuple(k.removeprefix(IMAGES_PREFIX) for k in keys)
    if len(set(keys)) != len(keys):
        raise ConfigError(f"camera names repeat: {list(keys)}", source=str(path / "config.json"), key="camera_keys")
    return keys


@dataclass(frozen=True)
class NormalizationStats:
    """The training dataset's statistics: the model sees (x - mean) / (std + 1e-8), like PI0Processor."""

    state_mean: np.ndarray  # (state_dim,) policy units
    state_std: np.ndarray
    action_mean: np.ndarray  # (action_dim,) policy units
    action_std: np.ndarray

    @property
    def state_dim(self) -> int:
        return len(self.state_mean)

    @property
    def action_dim(self) -> int:
        return len(self.action_mean)


def read_stats(processor_config: dict, *, source: str, max_state_dim: int, max_action_dim: int) -> NormalizationStats:
    """Mean and std of state and actions from processor_config.json; every key required, widths checked."""
    arrays = {}
    for key in ("state_mean", "state_std", "actions_mean", "actions_std"):
        value = processor_config.get(key)
        if value is None:
            raise ConfigError(
                "the checkpoint has no normalization statistics: save the PI0Processor with the training dataset's "
                "state_mean, state_std, actions_mean and actions_std", source=source, key=key)
        array = np.asarray(value, dtype=np.float32)
        if array.ndim != 1 or array.size == 0 or not np.all(np.isfinite(array)):
            raise ConfigError(f"expected a list of finite numbers, got {value!r}", source=source, key=key)
        arrays[key] = array
    for feature, limit in (("state", max_state_dim), ("actions", max_action_dim)):
        mean, std = arrays[f"{feature}_mean"], arrays[f"{feature}_std"]
        if mean.shape != std.shape:
            raise ConfigError(f"{feature}_mean has {mean.size} values but {feature}_std has {std.size}",
                              source=source, key=f"{feature}_std")
        if mean.size > limit:
            raise ConfigError(f"{feature}_mean has {mean.size} values, more than the model's width {limit} "
                              f"(max_{'state' if feature == 'state' else 'action'}_dim in config.json)",
                              source=source, key=f"{feature}_mean")
        if np.any(std < 0):
            raise ConfigError(f"{feature}_std has negative values", source=source, key=f"{feature}_std")
    return NormalizationStats(arrays["state_mean"], arrays["state_std"], arrays["actions_mean"], arrays["actions_std"])


def check_processor_files(path: Path) -> dict:
    """processor_config.json's content, after checking that it and a tokenizer are present."""
    processor_path = path / PROCESSOR_CONFIG
    if not processor_path.is_file():
        raise ConfigError(
            f"the pi0 checkpoint has no {PROCESSOR_CONFIG}: save the PI0Processor (tokenizer and the dataset's "
            f"state/action mean and std) beside the model with processor.save_pretrained('{path}')",
            source=str(path))
    if not any((path / name).is_file() for name in TOKENIZER_FILES):
        raise ConfigError(
            f"the pi0 checkpoint has no tokenizer ({' or '.join(TOKENIZER_FILES)}): save the PI0Processor, which "
            f"holds the PaliGemma tokenizer, with processor.save_pretrained('{path}')", source=str(path))
    return read_json(processor_path)
