"""pi0 and pi0.5 checkpoint directories in LeRobot's layout (LeRobot >= 0.5), read without network access.

    config.json                       PI0Config / PI05Config, "type": "pi0" or "pi05"
    model.safetensors                 the policy's weights, keys "model.<parameter>" (LeRobot's module names)
    policy_preprocessor.json          the processor pipeline; its normalizer step names a stats file
    policy_preprocessor_step_<i>_normalizer_processor.safetensors
    policy_postprocessor.json         its unnormalizer step names the stats that unnormalize actions
    policy_postprocessor_step_<i>_unnormalizer_processor.safetensors

The tokenizer is PaliGemma's, named in the pipeline's tokenizer step (`google/paligemma-3b-pt-224`): found as a
directory inside the checkpoint, as an absolute path, in $VLA_ROS_PALIGEMMA_TOKENIZER or in the Hugging Face cache.
Every pipeline step must be one vla_ros reproduces; any other is refused by name.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from vla_ros.core.errors import ConfigError, PolicyError
from vla_ros.core.features import ACTION, STATE
from vla_ros.policies.lerobot_format import (
    NORMALIZATION_EPS,
    _hub_cache_dir,
    _read_stats,
    _read_weights,
    _skipped_initialization,
)
from vla_ros.policies.pi05.config import PiConfig
from vla_ros.policies.pi05.processor import Normalizer, PiProcessor

TOKENIZER_ENV = "VLA_ROS_PALIGEMMA_TOKENIZER"
WEIGHT_PREFIX = "model."
PREPROCESSOR_FILE = "policy_preprocessor.json"
POSTPROCESSOR_FILE = "policy_postprocessor.json"
# Steps that change nothing vla_ros computes (batching, devices, an empty rename) or that it reproduces.
PASSIVE_STEPS = {
    "to_batch_processor",
    "device_processor",
    "rename_observations_processor",
    "relative_actions_processor",
    "delta_actions_processor",  # LeRobot 0.5.1's name of the relative-actions step
    "absolute_actions_processor",
}
ACTION_OFFSET_STEPS = ("relative_actions_processor", "delta_actions_processor", "absolute_actions_processor")
PREPROCESSOR_STEPS = {
    "pi0": ["pi0_new_line_processor", "tokenizer_processor", "normalizer_processor"],
    "pi05": ["normalizer_processor", "pi05_prepare_state_tokenizer_processor_step", "tokenizer_processor"],
}
POSTPROCESSOR_STEPS = ["unnormalizer_processor"]
TOKENIZER_SETTINGS = {"padding_side": "right", "padding": "max_length", "truncation": True, "task_key": "task"}
# Tied weights: LeRobot may save PaliGemma's output head instead of the token embeddings (the same tensor).
TIED_EMBEDDINGS = (
    "paligemma_with_expert.paligemma.lm_head.weight",
    "paligemma_with_expert.paligemma.model.language_model.embed_tokens.weight",
)
VISION_TOWER = "paligemma_with_expert.paligemma.model.vision_tower."
SIGLIP_NESTING = "vision_model."
UNUSED_WEIGHTS = ("paligemma_with_expert.paligemma.lm_head.weight", "paligemma_with_expert.gemma_expert.lm_head.weight")


@dataclass
class PiCheckpoint:
    config: PiConfig
    model: object  # PiFlowModel, eval mode, on the requested device and dtype
    processor: PiProcessor
    directory: Path


def read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"cannot read: {exc}", source=str(path)) from exc
    if not isinstance(data, dict):
        raise ConfigError(f"expected a JSON object, got {type(data).__name__}", source=str(path))
    return data


def read_config(directory: Path) -> PiConfig:
    path = directory / "config.json"
    return PiConfig.from_dict(read_json(path), source=str(path))


def _steps(directory: Path, file_name: str, expected: list[str]) -> dict[str, dict]:
    """The pipeline's steps by registry name, after checking that they are the ones vla_ros reproduces, in order."""
    path = directory / file_name
    if not path.is_file():
        raise ConfigError(
            f"{directory} has no {file_name}: LeRobot >= 0.5 saves its processors beside the policy "
            "(preprocessor.save_pretrained, postprocessor.save_pretrained)"
        )
    steps = read_json(path).get("steps")
    if not isinstance(steps, list) or not all(isinstance(step, dict) for step in steps):
        raise ConfigError("expected a list of steps", source=str(path), key="steps")
    found: dict[str, dict] = {}
    order = []
    for step in steps:
        name = step.get("registry_name")
        config = step.get("config") or {}
        if name in ACTION_OFFSET_STEPS and config.get("enabled"):
            raise ConfigError(
                "enabled: relative actions are not supported for pi0 and pi0.5 by vla_ros; train with absolute actions",
                source=str(path),
                key=f"steps.{name}",
            )
        if name in PASSIVE_STEPS:
            if name == "rename_observations_processor" and config.get("rename_map"):
                raise ConfigError(
                    f"rename_map {config['rename_map']!r}: renamed inputs are not supported; name "
                    "the robot's cameras (policy_key) after the checkpoint's features instead",
                    source=str(path),
                    key="steps.rename_observations_processor",
                )
            continue
        if name not in expected or name in found:
            raise ConfigError(
                f"processor step {name!r} is not one vla_ros reproduces for this policy (expected "
                f"{', '.join(expected)} besides batching and device steps)",
                source=str(path),
                key="steps",
            )
        found[name] = step
        order.append(name)
    if order != expected:
        raise ConfigError(
            f"steps {order} differ from LeRobot's {expected} (missing or reordered)", source=str(path), key="steps"
        )
    return found


def _normalizer(directory: Path, step: dict, pipeline: str, config: PiConfig, features: dict[str, int]) -> Normalizer:
    source = str(directory / pipeline)
    settings = step.get("config") or {}
    norm_map = settings.get("norm_map") or {}
    declared = settings.get("features") or {}
    if not isinstance(norm_map, dict) or not isinstance(declared, dict):
        raise ConfigError("norm_map and features must be objects", source=source, key=step.get("registry_name"))
    for feature_type, mode in norm_map.items():
        if feature_type == "VISUAL" and mode != "IDENTITY":
            raise ConfigError(
                f"VISUAL: {mode}: normalized images are not supported for pi0 and pi0.5 (LeRobot's "
                "pi0 and pi0.5 use IDENTITY)",
                source=source,
                key="norm_map",
            )
        if mode not in ("IDENTITY", "MEAN_STD", "MIN_MAX", "QUANTILES", "QUANTILE10"):
            raise ConfigError(f"{feature_type}: unknown normalization mode {mode!r}", source=source, key="norm_map")
    feature_types = {key: spec.get("type") for key, spec in declared.items() if isinstance(spec, dict)}
    state_file = step.get("state_file")
    stats = {}
    if state_file:
        path = directory / state_file
        if not path.is_file():
            raise ConfigError(f"its state file {state_file} is missing", source=source)
        stats = _read_stats(path)
    return Normalizer(
        feature_types,
        norm_map,
        stats,
        eps=float(settings.get("eps", NORMALIZATION_EPS)),
        source=str(directory / state_file) if state_file else source,
        widths={key: width for key, width in features.items() if key in feature_types},
    )


def resolve_tokenizer_dir(directory: Path, name: str) -> Path:
    """A local directory holding the tokenizer named `name`, found without network access."""
    path = Path(name).expanduser()
    local = path if path.is_absolute() else directory / path
    if (local / "tokenizer_config.json").is_file() or (local / "tokenizer.json").is_file():
        return local
    env = os.environ.get(TOKENIZER_ENV)
    if env:
        return Path(env).expanduser()
    cached = _hub_cache_dir(name)
    if cached is not None:
        return cached
    raise ConfigError(
        f"{directory}: the tokenizer '{name}' is not on this machine (looked in {local}, in ${TOKENIZER_ENV} and in "
        f"the Hugging Face cache). Download it once with `huggingface-cli download {name}` (the tokenizer files "
        f"are enough), or set {TOKENIZER_ENV} to a directory holding them",
        source=str(directory / PREPROCESSOR_FILE),
        key="tokenizer_name",
    )


def _tokenizer(directory: Path, step: dict, config: PiConfig):
    from transformers import AutoTokenizer

    source = str(directory / PREPROCESSOR_FILE)
    settings = step.get("config") or {}
    for key, value in TOKENIZER_SETTINGS.items():
        if settings.get(key, value) != value:
            raise ConfigError(
                f"{settings.get(key)!r}: vla_ros tokenizes as LeRobot's pi0 does ({key} {value!r})",
                source=source,
                key=f"tokenizer_processor.{key}",
            )
    if settings.get("max_length", config.tokenizer_max_length) != config.tokenizer_max_length:
        raise ConfigError(
            f"max_length {settings.get('max_length')} differs from config.json's tokenizer_max_length "
            f"{config.tokenizer_max_length}",
            source=source,
            key="tokenizer_processor.max_length",
        )
    name = settings.get("tokenizer_name") or "google/paligemma-3b-pt-224"
    tokenizer_dir = resolve_tokenizer_dir(directory, name)
    try:
        return AutoTokenizer.from_pretrained(str(tokenizer_dir), local_files_only=True)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot load the tokenizer from {tokenizer_dir}: {exc}") from exc


def read_processor(directory: Path, config: PiConfig) -> PiProcessor:
    """The pre- and post-processing of a checkpoint, from its own pipeline files and stats."""
    pre = _steps(directory, PREPROCESSOR_FILE, PREPROCESSOR_STEPS[config.type])
    post = _steps(directory, POSTPROCESSOR_FILE, POSTPROCESSOR_STEPS)
    widths = {STATE: config.state_dim, ACTION: config.action_dim}
    normalizer = _normalizer(directory, pre["normalizer_processor"], PREPROCESSOR_FILE, config, widths)
    unnormalizer = _normalizer(
        directory, post["unnormalizer_processor"], POSTPROCESSOR_FILE, config, {ACTION: config.action_dim}
    )
    return PiProcessor(config, _tokenizer(directory, pre["tokenizer_processor"], config), normalizer, unnormalizer)


def load_weights(model, weights: dict, *, config: PiConfig, source: str) -> None:
    """LeRobot's weights into `model` by name; every tensor the model needs must be there, with its shape."""
    ours = {key.removeprefix(WEIGHT_PREFIX): value for key, value in weights.items()}
    # LeRobot's key fixes for checkpoints converted from openpi (its _fix_pytorch_state_dict_keys).
    renames = (
        {"action_time_mlp_in.": "time_mlp_in.", "action_time_mlp_out.": "time_mlp_out."}
        if config.is_pi05
        else {"time_mlp_in.": "action_time_mlp_in.", "time_mlp_out.": "action_time_mlp_out."}
    )
    for key in list(ours):
        for old, new in renames.items():
            if key.startswith(old):
                ours[key.replace(old, new, 1)] = ours.pop(key)
        if config.is_pi05 and key.startswith("state_proj."):
            ours.pop(key)
    head, embeddings = TIED_EMBEDDINGS
    if embeddings not in ours and head in ours:
        ours[embeddings] = ours[head]
    for key in UNUSED_WEIGHTS:
        ours.pop(key, None)
    expected = model.state_dict()
    ours = {_vision_key(key, expected): value for key, value in ours.items()}
    missing = sorted(set(expected) - set(ours))
    unexpected = sorted(set(ours) - set(expected))
    if missing or unexpected:

        def few(keys):
            return ", ".join(WEIGHT_PREFIX + k for k in keys[:4]) + (
                f" and {len(keys) - 4} more" if len(keys) > 4 else ""
            )

        parts = ([f"{len(missing)} missing ({few(missing)})"] if missing else []) + (
            [f"{len(unexpected)} unexpected ({few(unexpected)})"] if unexpected else []
        )
        raise PolicyError(
            f"{source}: the weights do not match the {config.type} architecture in config.json "
            f"(paligemma_variant {config.paligemma_variant}, action_expert_variant "
            f"{config.action_expert_variant}): {'; '.join(parts)}"
        )
    wrong = [
        f"{WEIGHT_PREFIX}{key} {tuple(ours[key].shape)} (expected {tuple(value.shape)})"
        for key, value in expected.items()
        if tuple(ours[key].shape) != tuple(value.shape)
    ]
    if wrong:
        raise PolicyError(
            f"{source}: {len(wrong)} weights have the wrong shape for config.json's variants and "
            f"max_state_dim/max_action_dim: {', '.join(wrong[:4])}"
        )
    model.load_state_dict(ours, strict=True)


def _vision_key(key: str, expected) -> str:
    """SigLIP's weight names with or without `vision_model.`: transformers releases nest its modules differently."""
    if key in expected or not key.startswith(VISION_TOWER):
        return key
    rest = key[len(VISION_TOWER) :]
    other = rest.removeprefix(SIGLIP_NESTING) if rest.startswith(SIGLIP_NESTING) else SIGLIP_NESTING + rest
    return VISION_TOWER + other if VISION_TOWER + other in expected else key


def load_checkpoint(directory: str | os.PathLike, *, device="cpu", dtype=None) -> PiCheckpoint:
    """Config, model and processor of a LeRobot pi0/pi0.5 checkpoint directory."""
    import torch

    from vla_ros.policies.pi05.modeling import PiFlowModel

    directory = Path(directory)
    config = read_config(directory)
    processor = read_processor(directory, config)
    weights, weights_path = _read_weights(directory)
    with _skipped_initialization():
        model = PiFlowModel(config)
    load_weights(model, weights, config=config, source=str(weights_path))
    model.to(device=device, dtype=dtype if dtype is not None else torch.float32)
    model.eval()
    return PiCheckpoint(config, model, processor, directory)
