"""What LeRobot's policy checkpoint format gives every LeRobot-format policy here (SmolVLA, pi0/pi0.5).

config.json's input/output features and plain settings, the normalization modes and their statistics files,
model.safetensors, and finding a hub id in the local Hugging Face cache. Kept light: torch, safetensors and
huggingface_hub are imported by the functions that need them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vla_ros.core.errors import ConfigError, PolicyError
from vla_ros.core.features import ACTION, IMAGES_PREFIX, STATE, TASK, PolicyObservation

if TYPE_CHECKING:
    import numpy as np

FEATURE_TYPES = ("STATE", "VISUAL", "ACTION", "ENV", "LANGUAGE", "REWARD")
WEIGHTS_FILE = "model.safetensors"
NORMALIZATION_EPS = 1e-8  # LeRobot's normalizer default
# Statistics each mode reads (LeRobot's names): MEAN_STD maps mean/std to 0/1, the others map low/high to -1/1.
MODE_STATS = {"MEAN_STD": ("mean", "std"), "MIN_MAX": ("min", "max"), "QUANTILES": ("q01", "q99"),
              "QUANTILE10": ("q10", "q90")}
# How camera frames reach the model: "exact" (LeRobot's float resize inside the policy) or "fast" (OpenCV's
# uint8 resize in the adapter: cheaper, and the actions move; see docs/policies.md).
IMAGE_RESIZES = ("exact", "fast")


# -- config.json -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Feature:
    type: str  # one of FEATURE_TYPES
    shape: tuple[int, ...]  # images (3, H, W) as recorded; state and action (D,)


class LeRobotFeatures:
    """The features of a LeRobot policy config (its `input_features` and `output_features`), and what follows
    from them; mixed into the policies' config dataclasses."""

    input_features: dict[str, Feature]
    output_features: dict[str, Feature]

    @property
    def state_dim(self) -> int:
        return self.input_features[STATE].shape[0]

    @property
    def action_dim(self) -> int:
        return self.output_features[ACTION].shape[0]

    @property
    def image_features(self) -> list[str]:
        """observation.images.* keys in config order: the order LeRobot feeds present cameras to the model."""
        return [key for key, feature in self.input_features.items() if feature.type == "VISUAL"]

    @property
    def camera_keys(self) -> tuple[str, ...]:
        return tuple(key[len(IMAGES_PREFIX):] for key in self.image_features)

    def _check_features(self, fail: Callable[[str, str], None], policy: str) -> None:
        """A (D,) state input, a (D,) action output and at least one camera named observation.images.<camera>;
        `fail(key, message)` raises, `policy` names the policy in the message."""
        state = self.input_features.get(STATE)
        if state is None or state.type != "STATE" or len(state.shape) != 1:
            fail("input_features", f"{policy} needs a STATE input feature '{STATE}' of shape (D,), got "
                 f"{state.type + ' ' + str(list(state.shape)) if state else 'none'}")
        action = self.output_features.get(ACTION)
        if action is None or action.type != "ACTION" or len(action.shape) != 1:
            fail("output_features", f"{policy} needs an ACTION output feature '{ACTION}' of shape (D,)")
        if not self.image_features:
            fail("input_features", f"{policy} needs at least one VISUAL input feature ({IMAGES_PREFIX}<camera>)")
        for key in self.image_features:
            if not key.startswith(IMAGES_PREFIX):
                fail("input_features", f"image feature '{key}' must be named {IMAGES_PREFIX}<camera>")


def _parse_features(key: str, value: Any, source: str) -> dict[str, Feature]:
    """config.json's input_features or output_features: {name: {type, shape}}."""
    if not isinstance(value, Mapping):
        raise ConfigError(f"expected an object of features, got {value!r}", source=source, key=key)
    features = {}
    for name, spec in value.items():
        if not isinstance(spec, Mapping) or spec.get("type") not in FEATURE_TYPES or not isinstance(
            spec.get("shape"), list | tuple
        ):
            raise ConfigError(f"feature '{name}' needs a type ({', '.join(FEATURE_TYPES)}) and a shape list, "
                              f"got {spec!r}", source=source, key=key)
        if not all(isinstance(n, int) and n > 0 for n in spec["shape"]):
            raise ConfigError(f"feature '{name}': shape must be positive integers, got {spec['shape']}",
                              source=source, key=key)
        features[name] = Feature(spec["type"], tuple(spec["shape"]))
    return features


def _parse_setting(key: str, value: Any, default: Any, source: str) -> Any:
    """A plain config.json value, checked against the type of its default (bool, int, float or str)."""
    def fail(expected: str) -> ConfigError:
        return ConfigError(f"expected {expected}, got {value!r}", source=source, key=key)

    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise fail("true or false")
        return value
    if isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise fail("an integer")
        return value
    if isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise fail("a number")
        return float(value)
    if isinstance(default, str):
        if not isinstance(value, str):
            raise fail("a string")
        return value
    return value


# -- checkpoint files ------------------------------------------------------------------------------------------


def _read_stats(path: Path) -> dict[str, np.ndarray]:
    """A normalizer step's statistics file (flat keys, e.g. "observation.state.mean")."""
    from safetensors.numpy import load_file

    try:
        return dict(load_file(str(path)))
    except Exception as exc:  # noqa: BLE001 - safetensors raises several types for corrupt files
        raise ConfigError(f"cannot read normalization stats: {exc}", source=str(path)) from exc


def _read_weights(directory: Path) -> tuple[dict, Path]:
    """The checkpoint's model.safetensors (as torch tensors on the CPU) and its path."""
    from safetensors.torch import load_file

    weights_path = directory / WEIGHTS_FILE
    if not weights_path.is_file():
        raise ConfigError(f"{directory} has no {WEIGHTS_FILE}")
    try:
        weights = load_file(str(weights_path))
    except Exception as exc:  # noqa: BLE001 - safetensors raises several types for corrupt files
        raise PolicyError(f"cannot read {weights_path}: {exc}") from exc
    return weights, weights_path


def _skipped_initialization():
    """Skip random initialization of weights that the checkpoint overwrites (seconds for the full-size model)."""
    try:
        from transformers.initialization import no_init_weights
    except ImportError:  # transformers 4.x: initialize, only slower
        return contextlib.nullcontext()
    return no_init_weights()


def _hub_cache_dir(name: str) -> Path | None:
    """The local Hugging Face cache's copy of hub id `name` (a config.json in it), or None; never downloads."""
    if name.count("/") != 1 or name.startswith((".", "/")):
        return None
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        return None
    try:
        path = Path(snapshot_download(name, local_files_only=True))
    except Exception:  # noqa: BLE001 - every failure means "not cached"; the caller says what to do
        return None
    return path if (path / "config.json").is_file() else None


# -- observations ----------------------------------------------------------------------------------------------


def _observation_tasks(observations: Sequence[PolicyObservation]) -> list[str]:
    """The instruction of each observation; PolicyError when one is not a string."""
    tasks = []
    for observation in observations:
        task = observation.get(TASK)
        if not isinstance(task, str):
            raise PolicyError(f"observation '{TASK}' must be an instruction string, got {type(task).__name__}")
        tasks.append(task)
    return tasks
