"""SmolVLA's config.json, as LeRobot writes it: the fields that shape the model and its processing.

Keys that do not change the actions (optimizer and scheduler presets, hub settings, ...) are kept as they are,
so that `from_dict(d).to_dict() == d` and a checkpoint we write still loads in LeRobot. Any other key, or a
value vla_ros does not implement, is refused by name: a checkpoint runs as LeRobot runs it or not at all.

vla_ros's own settings (relative actions, padding, patch positions) live in vla_ros.json beside config.json,
which LeRobot does not read; older checkpoints kept them in config.json as `vla_ros_<name>`, still read here.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from vla_ros.core.errors import ConfigError
from vla_ros.policies.lerobot_format import Feature, LeRobotFeatures, _parse_features, _parse_setting

CHECKPOINT_TYPE = "smolvla"
NORMALIZATION_MODES = ("IDENTITY", "MEAN_STD", "MIN_MAX", "QUANTILES", "QUANTILE10")
ATTENTION_MODES = ("cross_attn", "self_attn")
LANGUAGE_PADDINGS = ("longest", "max_length")
VLA_ROS_PREFIX = "vla_ros_"  # our keys in config.json before they moved to vla_ros.json
# config.json keys of LeRobot's SmolVLA (0.4 - 0.6) that do not change the actions at inference.
SETTINGS_KEYS = frozenset({
    "device", "use_amp", "push_to_hub", "repo_id", "private", "tags", "license", "pretrained_path",
    "pretrained_revision", "optimizer_lr", "optimizer_betas", "optimizer_eps", "optimizer_weight_decay",
    "optimizer_grad_clip_norm", "scheduler_warmup_steps", "scheduler_decay_steps", "scheduler_decay_lr",
    "compile_model", "compile_mode", "rtc_config", "use_peft",
})


def _default_features() -> dict[str, Feature]:
    return {}


@dataclass
class SmolVLAConfig(LeRobotFeatures):
    """LeRobot's SmolVLAConfig fields (lerobot 0.4.x) with LeRobot's defaults."""

    input_features: dict[str, Feature] = field(default_factory=_default_features)
    output_features: dict[str, Feature] = field(default_factory=_default_features)
    n_obs_steps: int = 1
    chunk_size: int = 50
    n_action_steps: int = 50
    normalization_mapping: dict[str, str] = field(
        default_factory=lambda: {"VISUAL": "IDENTITY", "STATE": "MEAN_STD", "ACTION": "MEAN_STD"}
    )
    max_state_dim: int = 32
    max_action_dim: int = 32
    resize_imgs_with_padding: tuple[int, int] | None = (512, 512)  # (width, height), LeRobot's argument order
    empty_cameras: int = 0
    adapt_to_pi_aloha: bool = False
    use_delta_joint_actions_aloha: bool = False
    tokenizer_max_length: int = 48
    num_steps: int = 10
    use_cache: bool = True
    freeze_vision_encoder: bool = True
    train_expert_only: bool = True
    train_state_proj: bool = True
    vlm_model_name: str = "HuggingFaceTB/SmolVLM2-500M-Video-Instruct"
    load_vlm_weights: bool = False
    add_image_special_tokens: bool = False
    attention_mode: str = "cross_attn"
    prefix_length: int = -1
    pad_language_to: str = "longest"
    num_expert_layers: int = -1  # <= 0: as many as the VLM keeps
    num_vlm_layers: int = 16  # <= 0: all of the VLM's text layers
    self_attn_every_n_layers: int = 2
    expert_width_multiplier: float = 0.75
    min_period: float = 4e-3
    max_period: float = 4.0
    extra: dict[str, Any] = field(default_factory=dict)  # LeRobot's SETTINGS_KEYS present, written back unchanged
    vla_ros: dict[str, Any] = field(default_factory=dict)  # vla_ros.json: our settings, which LeRobot never reads
    source: str = "<SmolVLAConfig>"  # where the values came from, for error messages

    def __post_init__(self) -> None:
        # Callers (and old checkpoints) may still pass our settings as vla_ros_<name> keys: they belong in vla_ros.
        for key in [k for k in self.extra if k.startswith(VLA_ROS_PREFIX)]:
            self.vla_ros.setdefault(key[len(VLA_ROS_PREFIX):], self.extra.pop(key))
        self.validate()

    # -- derived values ----------------------------------------------------------------------------------------

    # state_dim, action_dim, image_features, camera_keys: LeRobotFeatures

    @property
    def image_size(self) -> tuple[int, int] | None:
        """(H, W) the model sees images at, or None to keep the camera's size."""
        if self.resize_imgs_with_padding is None:
            return None
        width, height = self.resize_imgs_with_padding
        return (height, width)

    def normalization_mode(self, feature_type: str) -> str:
        return self.normalization_mapping.get(feature_type, "IDENTITY")

    # -- (de)serialization -------------------------------------------------------------------------------------

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str = "config.json") -> SmolVLAConfig:
        """Parse LeRobot's config.json content; unknown keys go to `extra`. Raises ConfigError naming the key."""
        if not isinstance(data, Mapping):
            raise ConfigError(f"expected a JSON object, got {type(data).__name__}", source=source)
        kind = data.get("type", CHECKPOINT_TYPE)
        if kind != CHECKPOINT_TYPE:
            raise ConfigError(f"this is a '{kind}' checkpoint, not '{CHECKPOINT_TYPE}'", source=source, key="type")
        known = {f.name: f for f in fields(cls) if f.name not in ("extra", "vla_ros", "source")}
        values: dict[str, Any] = {}
        extra: dict[str, Any] = {}
        for key, value in data.items():
            if key == "type":
                continue
            if key not in known:
                if key not in SETTINGS_KEYS and not key.startswith(VLA_ROS_PREFIX):
                    raise ConfigError(f"unknown key '{key}' (value {value!r}): vla_ros does not know what LeRobot does "
                                      "with it, and refuses to run the checkpoint rather than run it differently. A "
                                      "newer LeRobot may have written it: update vla_ros", source=source, key=key)
                extra[key] = value
                continue
            values[key] = _parse_value(key, value, known[key].default, source)
        return cls(**values, extra=extra, source=source)

    def to_dict(self) -> dict[str, Any]:
        """config.json content in LeRobot's layout (features as {type, shape} with list shapes)."""
        out: dict[str, Any] = {"type": CHECKPOINT_TYPE}
        for f in fields(self):
            if f.name in ("extra", "vla_ros", "source"):
                continue
            value = getattr(self, f.name)
            if f.name in ("input_features", "output_features"):
                value = {key: {"type": ft.type, "shape": list(ft.shape)} for key, ft in value.items()}
            elif isinstance(value, tuple):
                value = list(value)
            elif isinstance(value, dict):
                value = dict(value)
            out[f.name] = value
        out.update(self.extra)
        return out

    # -- validation --------------------------------------------------------------------------------------------

    def validate(self) -> None:
        def fail(key: str, message: str) -> None:
            raise ConfigError(message, source=self.source, key=key)

        self._check_features(fail, "SmolVLA")
        for name in ("chunk_size", "n_action_steps", "max_state_dim", "max_action_dim", "tokenizer_max_length",
                     "num_steps", "n_obs_steps"):
            if getattr(self, name) < 1:
                fail(name, f"must be >= 1, got {getattr(self, name)}")
        if self.n_action_steps > self.chunk_size:
            fail("n_action_steps", f"{self.n_action_steps} is more than chunk_size {self.chunk_size}")
        if self.state_dim > self.max_state_dim:
            fail("max_state_dim", f"{self.max_state_dim} is smaller than the state width {self.state_dim}")
        if self.action_dim > self.max_action_dim:
            fail("max_action_dim", f"{self.max_action_dim} is smaller than the action width {self.action_dim}")
        if self.resize_imgs_with_padding is not None and (
            len(self.resize_imgs_with_padding) != 2 or min(self.resize_imgs_with_padding) < 1
        ):
            fail("resize_imgs_with_padding", f"expected [width, height] > 0, got {self.resize_imgs_with_padding}")
        for feature_type, mode in self.normalization_mapping.items():
            if mode not in NORMALIZATION_MODES:
                fail("normalization_mapping", f"{feature_type}: mode '{mode}' is not one of "
                     f"{', '.join(NORMALIZATION_MODES)}")
        if self.attention_mode not in ATTENTION_MODES:
            fail("attention_mode", f"'{self.attention_mode}' is not one of {', '.join(ATTENTION_MODES)}")
        if self.pad_language_to not in LANGUAGE_PADDINGS:
            fail("pad_language_to", f"'{self.pad_language_to}' is not one of {', '.join(LANGUAGE_PADDINGS)}")
        if not (self.expert_width_multiplier > 0 and math.isfinite(self.expert_width_multiplier)):
            fail("expert_width_multiplier", f"must be > 0, got {self.expert_width_multiplier}")
        if not 0 < self.min_period < self.max_period:
            fail("min_period", f"need 0 < min_period < max_period, got {self.min_period}, {self.max_period}")
        if self.n_obs_steps != 1:
            fail("n_obs_steps", f"{self.n_obs_steps}: vla_ros feeds SmolVLA one observation per chunk, as LeRobot's "
                 "SmolVLA does; a checkpoint asking for more is not one vla_ros can run")
        if self.extra.get("use_peft"):
            fail("use_peft", "true: the checkpoint holds PEFT adapters, which vla_ros does not load; merge them into "
                 "the weights with LeRobot first (or fine-tune with `vla-ros finetune --lora-rank`)")
        if self.adapt_to_pi_aloha or self.use_delta_joint_actions_aloha:
            fail("adapt_to_pi_aloha", "the pi-internal ALOHA conversions are not supported by vla_ros: describe the "
                 "robot's units in its embodiment YAML instead")
        if not self.vlm_model_name:
            fail("vlm_model_name", "names no VLM")


def _parse_value(key: str, value: Any, default: Any, source: str) -> Any:
    def fail(expected: str) -> ConfigError:
        return ConfigError(f"expected {expected}, got {value!r}", source=source, key=key)

    if key in ("input_features", "output_features"):
        return _parse_features(key, value, source)
    if key == "normalization_mapping":
        if not isinstance(value, Mapping) or not all(isinstance(v, str) for v in value.values()):
            raise fail("an object of feature type -> normalization mode")
        return dict(value)
    if key == "resize_imgs_with_padding":
        if value is None:
            return None
        if not isinstance(value, list | tuple) or not all(isinstance(v, int) for v in value):
            raise fail("[width, height] or null")
        return tuple(value)
    return _parse_setting(key, value, default, source)
