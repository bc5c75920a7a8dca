"""LeRobot's PI0Config / PI05Config (config.json, `"type": "pi0"` or `"pi05"`): the fields that shape the model.

Both policies share one layout: a PaliGemma VLM (SigLIP + Gemma) beside a smaller Gemma action expert, sized by
named variants. Keys this backend does not read (optimizer, scheduler, hub settings, ...) are kept in `extra`.
Anything that would change the actions and that vla_ros does not implement is refused with its key and value.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from vla_ros.core.errors import ConfigError
from vla_ros.policies.lerobot_format import Feature, LeRobotFeatures, _parse_features, _parse_setting

logger = logging.getLogger(__name__)

POLICY_TYPES = ("pi0", "pi05")
DTYPES = ("float32", "bfloat16")
# Key LeRobot >= 0.5.1 writes into every pi0/pi05 config.json; 0.4.x and 0.5.0 write identical configs. 0.4.x's pi
# code ran on a patched transformers branch and differs (image padding value, the state padded into the pi0.5
# prompt); vla_ros reproduces LeRobot >= 0.5.
RELEASE_MARKER_KEY = "use_relative_actions"


@dataclass(frozen=True)
class GemmaVariant:
    """openpi's Gemma sizes (LeRobot's `get_gemma_config`)."""

    width: int
    depth: int
    mlp_dim: int
    num_heads: int
    num_kv_heads: int
    head_dim: int


# The variants LeRobot accepts for paligemma_variant and action_expert_variant.
GEMMA_VARIANTS = {
    "gemma_300m": GemmaVariant(width=1024, depth=18, mlp_dim=4096, num_heads=8, num_kv_heads=1, head_dim=256),
    "gemma_2b": GemmaVariant(width=2048, depth=18, mlp_dim=16_384, num_heads=8, num_kv_heads=1, head_dim=256),
}
# LeRobot's vision tower: transformers' default PaliGemma SigLIP (so400m/14) with these fields set.
VISION_OVERRIDES = {"intermediate_size": 4304}
VISION_DEFAULTS = {"hidden_size": 1152, "num_hidden_layers": 27, "num_attention_heads": 16, "patch_size": 14}
VOCAB_SIZE = 257_152  # PaliGemma's vocabulary, fixed in LeRobot's code
# LeRobot reshapes the joint attention output to 8 heads whatever the variant says (`1 * 8 * head_dim`).
ATTENTION_HEADS = 8


@dataclass
class PiConfig(LeRobotFeatures):
    """The fields of LeRobot's PI0Config/PI05Config (LeRobot >= 0.5) that vla_ros reads, with LeRobot's defaults."""

    type: str
    input_features: dict[str, Feature]
    output_features: dict[str, Feature]
    paligemma_variant: str = "gemma_2b"
    action_expert_variant: str = "gemma_300m"
    dtype: str = "float32"
    n_obs_steps: int = 1
    chunk_size: int = 50
    n_action_steps: int = 50
    max_state_dim: int = 32
    max_action_dim: int = 32
    num_inference_steps: int = 10
    min_period: float = 4e-3
    max_period: float = 4.0
    image_resolution: tuple[int, int] = (224, 224)
    tokenizer_max_length: int = 48  # pi0's default; pi0.5's is 200
    normalization_mapping: dict[str, str] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    source: str = "config.json"

    @property
    def is_pi05(self) -> bool:
        return self.type == "pi05"

    # state_dim, action_dim, image_features, camera_keys: LeRobotFeatures

    @property
    def vlm(self) -> GemmaVariant:
        return GEMMA_VARIANTS[self.paligemma_variant]

    @property
    def expert(self) -> GemmaVariant:
        return GEMMA_VARIANTS[self.action_expert_variant]

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str = "config.json") -> PiConfig:
        if not isinstance(data, Mapping):
            raise ConfigError(f"expected a JSON object, got {type(data).__name__}", source=source)
        kind = data.get("type")
        if kind not in POLICY_TYPES:
            raise ConfigError(
                f"this is a {kind!r} checkpoint, not one of {', '.join(POLICY_TYPES)}", source=source, key="type"
            )
        if RELEASE_MARKER_KEY not in data:
            logger.warning(
                "%s: no '%s' key, so this %s checkpoint was saved by LeRobot 0.4.x or 0.5.0, and its files do not "
                "say which. Running LeRobot >= 0.5's pi code (0.5.0 included); LeRobot 0.4.x ran on a patched "
                "transformers branch that vla_ros does not reproduce (another padding value for resized images; the "
                "zero-padded state in the pi0.5 prompt). Re-save a 0.4.x checkpoint with LeRobot >= 0.5.1 to silence "
                "this",
                source,
                RELEASE_MARKER_KEY,
                kind,
            )
        defaults = {"tokenizer_max_length": 200 if kind == "pi05" else 48}
        known = {
            "input_features",
            "output_features",
            "paligemma_variant",
            "action_expert_variant",
            "dtype",
            "n_obs_steps",
            "chunk_size",
            "n_action_steps",
            "max_state_dim",
            "max_action_dim",
            "num_inference_steps",
            "min_period",
            "max_period",
            "image_resolution",
            "tokenizer_max_length",
            "normalization_mapping",
        }
        values: dict[str, Any] = {}
        extra: dict[str, Any] = {}
        for key, value in data.items():
            if key == "type":
                continue
            if key not in known:
                extra[key] = value
            elif key in ("input_features", "output_features"):
                values[key] = _parse_features(key, value, source)
            elif key == "image_resolution":
                if not (
                    isinstance(value, list | tuple)
                    and len(value) == 2
                    and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value)
                ):
                    raise ConfigError(f"expected [height, width] > 0, got {value!r}", source=source, key=key)
                values[key] = tuple(value)
            elif key == "normalization_mapping":
                if not isinstance(value, Mapping):
                    raise ConfigError(f"expected an object, got {value!r}", source=source, key=key)
                values[key] = dict(value)
            else:
                default = getattr(cls, key) if key not in defaults else defaults[key]
                values[key] = _parse_setting(key, value, default, source)
        for key, value in defaults.items():
            values.setdefault(key, value)
        for key in ("input_features", "output_features"):
            values.setdefault(key, {})
        config = cls(type=kind, **values, extra=extra, source=source)
        config.validate()
        return config

    def validate(self) -> None:
        def fail(key: str, message: str) -> None:
            raise ConfigError(message, source=self.source, key=key)

        for key in ("paligemma_variant", "action_expert_variant"):
            if getattr(self, key) not in GEMMA_VARIANTS:
                fail(key, f"'{getattr(self, key)}' is not one of {', '.join(GEMMA_VARIANTS)}")
        if self.vlm.depth != self.expert.depth or self.vlm.head_dim != self.expert.head_dim:
            fail(
                "action_expert_variant",
                f"'{self.action_expert_variant}' and '{self.paligemma_variant}' differ in "
                "depth or head size; the expert attends jointly with the VLM layer by layer",
            )
        if self.dtype not in DTYPES:
            fail("dtype", f"'{self.dtype}' is not one of {', '.join(DTYPES)}")
        self._check_features(fail, self.type)
        for name in (
            "chunk_size",
            "n_action_steps",
            "max_state_dim",
            "max_action_dim",
            "num_inference_steps",
            "tokenizer_max_length",
        ):
            if getattr(self, name) < 1:
                fail(name, f"must be >= 1, got {getattr(self, name)}")
        if self.n_obs_steps != 1:
            fail("n_obs_steps", f"{self.n_obs_steps}: vla_ros feeds one observation per chunk, as LeRobot's pi0 does")
        if self.n_action_steps > self.chunk_size:
            fail("n_action_steps", f"{self.n_action_steps} is more than chunk_size {self.chunk_size}")
        if self.state_dim > self.max_state_dim:
            fail("max_state_dim", f"{self.max_state_dim} is smaller than the state width {self.state_dim}")
        if self.action_dim > self.max_action_dim:
            fail("max_action_dim", f"{self.max_action_dim} is smaller than the action width {self.action_dim}")
        if self.image_resolution[0] != self.image_resolution[1]:
            fail("image_resolution", f"{list(self.image_resolution)}: PaliGemma takes square images")
        if not 0 < self.min_period < self.max_period:
            fail("min_period", f"need 0 < min_period < max_period, got {self.min_period}, {self.max_period}")
        if self.extra.get(RELEASE_MARKER_KEY):
            fail(
                RELEASE_MARKER_KEY,
                "true: relative actions (LeRobot's relative/absolute action steps) are not "
                "supported by vla_ros for pi0/pi0.5; train with absolute actions",
            )
